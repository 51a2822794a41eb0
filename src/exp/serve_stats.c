/* The serving replay's summary (docs/serve.md "Summary" and "Steady state"): the plateau
 * detector, the steady-state window of a replay, and the figures over a window (latency
 * percentiles, goodput under an SLO, energy per request and per generated token, power,
 * peak temperatures and time above the temperature target). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "thermoe/exp.h"

/* Whether bins [i, j] of one series form a plateau (see tmoe_steady_detect). */
static int plateau(const tmoe_steady_series *s, int i, int j) {
    double sum = 0.0, h1 = 0.0, h2 = 0.0;
    int n = j - i + 1, half = n / 2;
    for (int b = i; b <= j; b++) {
        if (!isfinite(s->x[b])) return 0;
        sum += s->x[b];
    }
    double mean = sum / n, band = fmax(s->rel_tol * fabs(mean), s->abs_tol);
    for (int b = i; b <= j; b++)
        if (fabs(s->x[b] - mean) > band) return 0;
    for (int b = 0; b < half; b++) {
        h1 += s->x[i + b];
        h2 += s->x[j - b];
    }
    return half < 1 || fabs(h2 / half - h1 / half) <= 0.5 * band;
}

int tmoe_steady_detect(const tmoe_steady_series *s, int ns, int nbins, int min_bins, int *first,
                       int *last) {
    if (min_bins < 2) min_bins = 2;
    for (int len = nbins; len >= min_bins; len--)
        for (int i = 0; i + len <= nbins; i++) {
            int ok = 1;
            for (int k = 0; k < ns && ok; k++) ok = plateau(&s[k], i, i + len - 1);
            if (ok) {
                *first = i;
                *last = i + len - 1;
                return 1;
            }
        }
    return 0;
}

/* Add v x (the share of [t0, t1] inside each bin) to acc, bins of width w from 0. */
static void spread(double *acc, int nb, double w, double t0, double t1, double v) {
    if (!(t1 > t0)) {
        int b = (int)(t0 / w);
        if (b >= 0 && b < nb) acc[b] += v;
        return;
    }
    int b0 = (int)(t0 / w), b1 = (int)(t1 / w);
    for (int b = b0 < 0 ? 0 : b0; b <= b1 && b < nb; b++) {
        double lo = fmax(t0, b * w), hi = fmin(t1, (b + 1) * w);
        if (hi > lo) acc[b] += v * (hi - lo) / (t1 - t0);
    }
}

/* The segments in nb bins of width w from 0: per bin the time-weighted requests in the system,
 * the average power (energy / w) and the time-weighted GPU and HBM peak temperatures (NAN
 * where no segment in the bin knew them). nb <= TMOE_SERVE_TIMELINE_BINS. */
static void bin_segments(const tmoe_serve_segment *seg, int nseg, int nb, double w, double *load,
                         double *power, double *gpu_c, double *mem_c) {
    enum { MAXB = TMOE_SERVE_TIMELINE_BINS };
    TMOE_ASSERT(nb <= MAXB);
    double cg[MAXB] = {0}, cm[MAXB] = {0};
    for (int b = 0; b < nb; b++) load[b] = power[b] = gpu_c[b] = mem_c[b] = 0.0;
    for (int i = 0; i < nseg; i++) {
        const tmoe_serve_segment *g = &seg[i];
        double d = g->t1_s - g->t0_s;
        spread(load, nb, w, g->t0_s, g->t1_s, g->in_system * d);
        spread(power, nb, w, g->t0_s, g->t1_s, isfinite(g->energy_j) ? g->energy_j : 0.0);
        if (isfinite(g->gpu_temp_peak_c)) {
            spread(gpu_c, nb, w, g->t0_s, g->t1_s, g->gpu_temp_peak_c * d);
            spread(cg, nb, w, g->t0_s, g->t1_s, d);
        }
        if (isfinite(g->mem_temp_peak_c)) {
            spread(mem_c, nb, w, g->t0_s, g->t1_s, g->mem_temp_peak_c * d);
            spread(cm, nb, w, g->t0_s, g->t1_s, d);
        }
    }
    for (int b = 0; b < nb; b++) {
        load[b] /= w;
        power[b] /= w;
        gpu_c[b] = cg[b] > 0.0 ? gpu_c[b] / cg[b] : NAN;
        mem_c[b] = cm[b] > 0.0 ? mem_c[b] / cm[b] : NAN;
    }
}

int tmoe_serve_steady_window(const tmoe_serve_segment *seg, int nseg, double t_end_s,
                             double *start_s, double *end_s, char *why, size_t why_len) {
    enum { NB = TMOE_SERVE_STEADY_BINS };
    *start_s = 0.0;
    *end_s = t_end_s;
    if (nseg < 4 * NB || !(t_end_s > 0.0)) {
        snprintf(why, why_len,
                 "no steady state: %d steps and waits are too few to cut the run into %d bins "
                 "(at least %d); figures over the whole run",
                 nseg, NB, 4 * NB);
        return 0;
    }
    double w = t_end_s / NB, load[NB], power[NB], temp[NB], mem[NB];
    bin_segments(seg, nseg, NB, w, load, power, temp, mem);
    /* a bin in which nothing was served (no request in the system: only idle waits) cannot be
     * part of a serving steady state: an idle stretch is level in every series */
    for (int b = 0; b < NB; b++)
        if (!(load[b] > 0.0)) load[b] = NAN;
    /* requests in the system within 25% (at least 0.5 requests), power within 15% (at least
     * 5 W), GPU temperature within 1.5 C of their means over the window */
    tmoe_steady_series s[3] = {{load, 0.25, 0.5}, {power, 0.15, 5.0}, {temp, 0.0, 1.5}};
    int first, last;
    if (!tmoe_steady_detect(s, 3, NB, TMOE_SERVE_STEADY_MIN, &first, &last)) {
        snprintf(why, why_len,
                 "no steady state: requests in the system, power and GPU temperature never "
                 "stayed level together, with requests served, for %d of %d bins of %.3g s; "
                 "figures over the whole run",
                 TMOE_SERVE_STEADY_MIN, NB, w);
        return 0;
    }
    *start_s = first * w;
    *end_s = (last + 1) * w;
    snprintf(why, why_len,
             "steady state in bins %d..%d of %d (%.3g s each): requests in the system, power "
             "and GPU temperature level together",
             first, last, NB, w);
    return 1;
}

static double pct_of(double *v, int n, double p) {
    return n < 1 ? NAN : tmoe_percentile_sorted(v, n, p);
}

void tmoe_serve_window_stats(const tmoe_serve_request *q, int n, const tmoe_serve_segment *seg,
                             int nseg, double start_s, double end_s, double slo_ttft_s,
                             double slo_tpot_s, double temp_target_c, tmoe_serve_stats *out) {
    tmoe_serve_stats o;
    memset(&o, 0, sizeof o);
    o.start_s = start_s;
    o.end_s = end_s;
    double *ttft = malloc(sizeof(double) * (size_t)(n + 1));
    double *tpot = malloc(sizeof(double) * (size_t)(n + 1));
    int nt = 0, np = 0;
    for (int i = 0; ttft && tpot && i < n; i++) {
        const tmoe_serve_request *x = &q[i];
        if (x->finish_s >= start_s && x->finish_s <= end_s) o.finished++;
        if (!(x->arrival_s >= start_s && x->arrival_s <= end_s)) continue;
        o.requests++;
        double a = x->first_token_s - x->arrival_s;
        double b = x->gen > 1 ? (x->finish_s - x->first_token_s) / (x->gen - 1) : NAN;
        if (isfinite(a)) ttft[nt++] = a;
        if (isfinite(b)) tpot[np++] = b;
        if (isfinite(a) && a <= slo_ttft_s && (x->gen <= 1 || (isfinite(b) && b <= slo_tpot_s)))
            o.slo_met++;
    }
    if (ttft && tpot) {
        qsort(ttft, (size_t)nt, sizeof *ttft, tmoe_cmp_double);
        qsort(tpot, (size_t)np, sizeof *tpot, tmoe_cmp_double);
    } else {
        nt = np = 0; /* out of memory: the percentiles are unknown */
    }
    o.ttft_p50_s = pct_of(ttft, nt, 50);
    o.ttft_p90_s = pct_of(ttft, nt, 90);
    o.ttft_p99_s = pct_of(ttft, nt, 99);
    o.tpot_p50_s = pct_of(tpot, np, 50);
    o.tpot_p90_s = pct_of(tpot, np, 90);
    o.tpot_p99_s = pct_of(tpot, np, 99);
    free(ttft);
    free(tpot);
    double len = end_s - start_s;
    o.goodput_rps = len > 0.0 ? o.slo_met / len : NAN;
    o.goodput_share = o.requests ? (double)o.slo_met / o.requests : NAN;
    o.power_peak_w = o.gpu_temp_peak_c = o.mem_temp_peak_c = NAN;
    int nseg_in = 0, gpu_known = 0, mem_known = 0, act_n = 0;
    double act_sum = 0.0;
    for (int i = 0; i < nseg; i++) {
        const tmoe_serve_segment *g = &seg[i];
        if (!(g->t1_s >= start_s && g->t1_s <= end_s)) continue;
        nseg_in++;
        double d = g->t1_s - g->t0_s;
        o.energy_j += g->energy_j;
        o.generated_tokens += g->generated;
        if (isfinite(g->power_peak_w) && !(g->power_peak_w <= o.power_peak_w))
            o.power_peak_w = g->power_peak_w;
        if (isfinite(g->gpu_temp_peak_c) && !(g->gpu_temp_peak_c <= o.gpu_temp_peak_c))
            o.gpu_temp_peak_c = g->gpu_temp_peak_c;
        if (isfinite(g->mem_temp_peak_c) && !(g->mem_temp_peak_c <= o.mem_temp_peak_c))
            o.mem_temp_peak_c = g->mem_temp_peak_c;
        if (isfinite(g->active_experts)) {
            act_sum += g->active_experts;
            act_n++;
        }
        gpu_known += isfinite(g->gpu_temp_peak_c);
        mem_known += isfinite(g->mem_temp_peak_c);
        if (g->gpu_temp_peak_c > temp_target_c) o.gpu_above_target_s += d;
        if (g->mem_temp_peak_c > temp_target_c) o.mem_above_target_s += d;
    }
    if (!nseg_in) o.energy_j = NAN;
    o.active_experts = act_n ? act_sum / act_n : NAN;
    if (!gpu_known || !isfinite(temp_target_c)) o.gpu_above_target_s = NAN;
    if (!mem_known || !isfinite(temp_target_c)) o.mem_above_target_s = NAN;
    o.j_per_request = o.finished ? o.energy_j / o.finished : NAN;
    o.j_per_generated_token = o.generated_tokens ? o.energy_j / (double)o.generated_tokens : NAN;
    o.power_avg_w = len > 0.0 ? o.energy_j / len : NAN;
    *out = o;
}

int tmoe_serve_write_timeline(const char *path, const tmoe_serve_request *q, int n,
                              const tmoe_serve_segment *seg, int nseg, double t_end_s,
                              double win_start_s, double win_end_s, tmoe_error *err) {
    enum { NB = TMOE_SERVE_TIMELINE_BINS };
    double w = t_end_s > 0.0 ? t_end_s / NB : 1.0;
    double arr[NB] = {0}, fin[NB] = {0}, load[NB], power[NB], tg[NB], tm[NB];
    for (int i = 0; i < n; i++) {
        int a = (int)fmin(fmax(q[i].arrival_s / w, 0.0), NB - 1);
        arr[a] += 1.0;
        if (isfinite(q[i].finish_s)) fin[(int)fmin(fmax(q[i].finish_s / w, 0.0), NB - 1)] += 1.0;
    }
    bin_segments(seg, nseg, NB, w, load, power, tg, tm);
    FILE *f = fopen(path, "w");
    if (!f) return tmoe_errorf(err, TMOE_EIO, "%s: cannot write", path);
    fprintf(f, "bin,t_start_s,t_end_s,arrivals,arrival_rate_per_s,finishes,in_system,"
               "power_avg_w,gpu_temp_c,mem_temp_c,steady,source\n");
    for (int b = 0; b < NB; b++) {
        double t0 = b * w, t1 = (b + 1) * w;
        fprintf(f, "%d,%.6f,%.6f,%.0f,%.6g,%.0f,%.6g,%.6g,%.6g,%.6g,%d,sim\n", b, t0, t1, arr[b],
                arr[b] / w, fin[b], load[b], power[b], tg[b], tm[b],
                t0 >= win_start_s - 1e-9 * w && t1 <= win_end_s + 1e-9 * w);
    }
    return fclose(f) ? tmoe_errorf(err, TMOE_EIO, "%s: write failed", path) : TMOE_OK;
}
