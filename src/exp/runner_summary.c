/* The summary table printed at the end of a run, computed from batches.csv as written
 * (so a resumed run summarises every row, not only those of the last process). */
#include <gsl/gsl_cdf.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "exp/runner_internal.h"

/* One batch's quality (decoder LM): mean NLL under the strategy and under baseline
 * routing on the same tokens, and how many tokens. */
typedef struct qrow {
    int sample; /* which distinct batch of windows (batch_idx mod the samples) */
    double nll, nllb, ts;
} qrow;

typedef struct agg {
    char wl[64], st[64];
    long n;
    double energy, tokens, tpeak, mpeak, agree, relerr, active;
    long nagree, nrel, nactive;
    double *idle; /* idle_before_window_s of the rows that have it */
    long nidle, icap;
    double *lat;
    long nlat, cap;
    qrow *q; /* the rows with nll, nll_baseline and tokens_scored known */
    long nq, qcap;
} agg;

/* Appends v to the growing array (*a, *n, *cap); TMOE_ENOMEM when it cannot grow. */
static int push_double(double **a, long *n, long *cap, double v, tmoe_error *err) {
    if (*n == *cap) {
        long c = *cap ? 2 * *cap : 256;
        double *na = realloc(*a, sizeof(double) * (size_t)c);
        if (!na) return tmoe_errorf(err, TMOE_ENOMEM, "out of memory");
        *a = na;
        *cap = c;
    }
    (*a)[(*n)++] = v;
    return TMOE_OK;
}

/* Percentile of sorted v (tmoe_percentile_sorted, as the analysis: R type 7). */
static double pct(const double *v, long n, double p) {
    return n == 0 ? NAN : tmoe_percentile_sorted(v, (int)n, p);
}

/* Table order: workloads, then strategies, in the order of their enums. */
static int rank(const agg *g) {
    tmoe_workload_kind w = TMOE_WL_COUNT;
    tmoe_route_strategy s = TMOE_ROUTE_STRATEGY_COUNT;
    tmoe_workload_parse(g->wl, &w);
    tmoe_route_strategy_parse(g->st, &s);
    return (int)w * 100 + (int)s;
}

static int cmp_agg(const void *a, const void *b) {
    return rank(a) - rank(b);
}

/* One combination (repeat, workload, strategy), in the order its first row was written. */
typedef struct combo_agg {
    int repeat, wl;
    char st[64];
    double energy, tokens, tpeak, t_first, t_last;
} combo_agg;

/* Average ranks (1-based) of v[0..n) into rk. */
static void ranks(const double *v, int n, double *rk) {
    for (int i = 0; i < n; i++) {
        double lo = 0, eq = 0;
        for (int j = 0; j < n; j++) lo += v[j] < v[i], eq += v[j] == v[i];
        rk[i] = lo + (eq + 1.0) / 2.0;
    }
}

double tmoe_spearman(const double *x, const double *y, int n) {
    double *b = malloc(sizeof(double) * 4 * (size_t)(n > 0 ? n : 1));
    if (!b) return NAN;
    double *xs = b, *ys = b + n, *rx = b + 2 * n, *ry = b + 3 * n;
    int m = 0;
    for (int i = 0; i < n; i++)
        if (!isnan(x[i]) && !isnan(y[i])) xs[m] = x[i], ys[m++] = y[i];
    double rho = NAN;
    if (m >= 3) {
        ranks(xs, m, rx);
        ranks(ys, m, ry);
        double mx = (m + 1) / 2.0, sxy = 0, sxx = 0, syy = 0;
        for (int i = 0; i < m; i++) {
            sxy += (rx[i] - mx) * (ry[i] - mx);
            sxx += (rx[i] - mx) * (rx[i] - mx);
            syy += (ry[i] - mx) * (ry[i] - mx);
        }
        if (sxx > 0 && syy > 0) rho = sxy / sqrt(sxx * syy);
    }
    free(b);
    return rho;
}

/* Spearman of run order with each combination's energy per token and peak GPU temperature,
 * each taken relative to its workload's mean over the run (so the workloads' block order
 * does not pass for an order effect); *shortest: the shortest combination (device-clock
 * s, first to last row). */
static void order_effects(const combo_agg *c, int n, double *rho_e, double *rho_t,
                          double *shortest) {
    double *b = malloc(sizeof(double) * 3 * (size_t)(n > 0 ? n : 1));
    *rho_e = *rho_t = NAN;
    *shortest = NAN;
    if (!b) return;
    double *ord = b, *e = b + n, *t = b + 2 * n;
    for (int i = 0; i < n; i++) {
        double se = 0, st = 0;
        int ne = 0, nt = 0;
        for (int j = 0; j < n; j++) {
            if (c[j].wl != c[i].wl) continue;
            double ej = c[j].tokens > 0 ? c[j].energy / c[j].tokens : NAN;
            if (!isnan(ej)) se += ej, ne++;
            if (!isnan(c[j].tpeak)) st += c[j].tpeak, nt++;
        }
        double ei = c[i].tokens > 0 ? c[i].energy / c[i].tokens : NAN;
        ord[i] = i;
        e[i] = ne && se > 0 ? ei / (se / ne) : NAN;
        t[i] = nt ? c[i].tpeak - st / nt : NAN;
        double d = c[i].t_last - c[i].t_first;
        if (!(*shortest <= d)) *shortest = d;
    }
    *rho_e = tmoe_spearman(ord, e, n);
    *rho_t = tmoe_spearman(ord, t, n);
    free(b);
}

/* Add the order correlations to metadata.json ("order_effects"); a failure only warns. */
static void meta_order(run_ctx *r, double shortest) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", r->dir, TMOE_RUNLOG_METADATA);
    json_error_t je;
    json_t *m = json_load_file(path, 0, &je);
    if (!m) {
        tmoe_log(TMOE_LOG_WARN, "%s: order effects not recorded: %s", path, je.text);
        return;
    }
#define JNUM(v) (isfinite(v) ? json_real(v) : json_null())
    json_object_set_new(
        m, "order_effects",
        json_pack("{s:s, s:o, s:o, s:o, s:o, s:o, s:b, s:o}", "design",
                  "williams per workload, workloads rotated per repeat",
                  "spearman_energy_per_token", JNUM(r->order_rho_energy), "spearman_gpu_temp_peak",
                  JNUM(r->order_rho_temp), "shortest_combination_s", JNUM(shortest), "cooldown_s",
                  json_real(r->cfg.cooldown_s), "warmup_s", JNUM(r->warm_s), "warmup_steady",
                  r->warm_steady, "warmup_power_w", JNUM(r->warm_power_w)));
#undef JNUM
    if (json_dump_file(m, path, JSON_INDENT(2) | JSON_SORT_KEYS))
        tmoe_log(TMOE_LOG_WARN, "%s: order effects not recorded", path);
    json_decref(m);
}

/* Mean and 95% Student-t half-width of v[0..n) (half NAN below 2 values). */
static void mean_ci(const double *v, int n, double *mean, double *half) {
    double s = 0.0, s2 = 0.0;
    for (int i = 0; i < n; i++) s += v[i];
    *mean = n ? s / n : NAN;
    for (int i = 0; i < n; i++) s2 += (v[i] - *mean) * (v[i] - *mean);
    *half = n >= 2 ? gsl_cdf_tdist_Pinv(0.975, n - 1.0) * sqrt(s2 / (n - 1.0) / n) : NAN;
}

/* The decoder LM's quality per workload and strategy: perplexity of the scored tokens under
 * the strategy and under baseline routing on the same tokens, and its change in % with a
 * 95% CI over the distinct text samples (batches of different windows; the rows of one sample
 * in several repeats or epochs are averaged first). The unit is the text, not the repeat:
 * every repeat replays the same windows through a deterministic model, so repeats differ in
 * the hardware's measurements, not in the quality, and a CI over them would be empty. The
 * change is paired: each sample's tokens under the strategy against the same tokens under
 * baseline routing. */
static void print_quality(run_ctx *r, const agg *a, int na) {
    int any = 0;
    for (int i = 0; i < na; i++) any |= a[i].nq > 0;
    if (!any) return;
    FILE *o = r->out;
    fprintf(o,
            "\nquality (decoder LM %s on %s): perplexity = exp(mean next-token NLL) of the "
            "batches' scored tokens; change vs baseline routing on the same tokens, 95%% CI over "
            "the distinct text samples (paired):\n",
            r->cfg.model_dir, r->cfg.tokens_path ? r->cfg.tokens_path : tmoe_run_default_tokens());
    fprintf(o, "%-16s %-22s %9s %11s %11s %9s %21s  %s\n", "workload", "strategy", "tokens",
            "perplexity", "baseline", "change", "95% CI", "CI unit");
    for (int i = 0; i < na; i++) {
        const agg *g = &a[i];
        if (!g->nq) continue;
        double sn = 0, sb = 0, st = 0;
        int same = 1;
        for (long j = 0; j < g->nq; j++) {
            sn += g->q[j].nll * g->q[j].ts;
            sb += g->q[j].nllb * g->q[j].ts;
            st += g->q[j].ts;
            same &= g->q[j].nll == g->q[j].nllb;
        }
        double ppl = exp(sn / st), pb = exp(sb / st), ch = 100.0 * (ppl / pb - 1.0);
        /* per distinct sample: the token-weighted change of its rows */
        double *v = malloc(sizeof(double) * (size_t)g->nq), m = NAN, half = NAN;
        int ns = 0;
        if (v) {
            unsigned char *done = calloc((size_t)g->nq, 1);
            for (long j = 0; j < g->nq && done; j++) {
                if (done[j]) continue;
                double a1 = 0, b1 = 0, t1 = 0;
                for (long k = j; k < g->nq; k++)
                    if (!done[k] && g->q[k].sample == g->q[j].sample) {
                        a1 += g->q[k].nll * g->q[k].ts, b1 += g->q[k].nllb * g->q[k].ts;
                        t1 += g->q[k].ts;
                        done[k] = 1;
                    }
                v[ns++] = 100.0 * (exp((a1 - b1) / t1) - 1.0);
            }
            free(done);
            mean_ci(v, ns, &m, &half);
            free(v);
        }
        char chs[24], ci[48], unit[64];
        snprintf(chs, sizeof chs, "%+.3f%%", ch);
        if (same) {
            snprintf(ci, sizeof ci, "-");
            snprintf(unit, sizeof unit, "%s",
                     strcmp(g->st, "baseline") ? "routing unchanged" : "the reference");
        } else {
            if (isnan(half))
                snprintf(ci, sizeof ci, "n/a");
            else
                snprintf(ci, sizeof ci, "[%+.3f, %+.3f]%%", m - half, m + half);
            snprintf(unit, sizeof unit, "%d text samples", ns);
        }
        fprintf(o, "%-16s %-22s %9.0f %11.4f %11.4f %9s %21s  %s\n", g->wl, g->st, st, ppl, pb, chs,
                ci, unit);
    }
}

/* Real telemetry: a strategy whose windows open after an idle gap that differs from plain
 * baseline's by more than RUN_IDLE_GAP_TOL_S (median over its rows, so that the rests before
 * combinations do not count) is said, with both: power readings lag (an H100's move every
 * 100 ms and trail a load step), so a window opened after a longer idle reads low
 * (bench/results/h100_harness_gap, where 54-87 ms read 25-43 J low; its A/A run after the fix
 * had medians 23-25 ms apart, from the host's own jitter, at +0.3% energy). a: idle sorted. */
#define RUN_IDLE_GAP_TOL_S 0.040
static void idle_warning(FILE *o, const agg *a, int na) {
    for (int i = 0; i < na; i++) {
        const agg *g = &a[i], *b = NULL;
        for (int j = 0; j < na; j++)
            if (!strcmp(a[j].wl, g->wl) && !strcmp(a[j].st, "baseline")) b = &a[j];
        if (!b || b == g || !g->nidle || !b->nidle) continue;
        double gi = pct(g->idle, g->nidle, 50), bi = pct(b->idle, b->nidle, 50);
        if (fabs(gi - bi) > RUN_IDLE_GAP_TOL_S)
            fprintf(o,
                    "WARNING: %s %s: its windows opened after %.1f ms of idle (median), "
                    "baseline's after %.1f ms; power readings lag, so a window after a longer "
                    "idle reads low: compare their energy with care (idle_before_window_s)\n",
                    g->wl, g->st, 1e3 * gi, 1e3 * bi);
    }
}

static double cell(const tmoe_csv *c, int col) {
    const char *s = tmoe_csv_field(c, col);
    if (!*s || !strcmp(s, "nan")) return NAN;
    return strtod(s, NULL);
}

int run_print_summary(run_ctx *r, tmoe_error *err) {
    tmoe_csv c;
    if (tmoe_csv_open_file(&c, r->csv_path, TMOE_RUNLOG_MAX_BYTES, err))
        return tmoe_error_prefix(err, TMOE_EIO, "cannot read back the rows for the summary");
    agg *a = NULL;
    combo_agg *ca = NULL;
    int na = 0, cap = 0, nca = 0, cacap = 0, rc = TMOE_OK;
    long nrec = 0;
    tmoe_error cerr = {0};
    for (;;) {
        int st = tmoe_csv_next(&c, &cerr);
        if (st == TMOE_ENOMEM) {
            rc = tmoe_errorf(err, TMOE_ENOMEM, "out of memory");
            break;
        }
        if (st) { /* not what the writer writes: the summary stops there */
            tmoe_log(TMOE_LOG_WARN, "%s: %s; the summary counts the rows before it", r->csv_path,
                     cerr.msg);
            break;
        }
        if (c.nfields == 0) break;
        if (++nrec == 1 || c.nfields != TMOE_RL_NCOLS) continue; /* the header; no row */
        const char *wl = tmoe_csv_field(&c, TMOE_RL_WORKLOAD);
        const char *st_name = tmoe_csv_field(&c, TMOE_RL_STRATEGY);
        int i;
        for (i = 0; i < na; i++)
            if (!strcmp(a[i].wl, wl) && !strcmp(a[i].st, st_name)) break;
        if (i == na) {
            if (na == cap) {
                cap = cap ? 2 * cap : 32;
                agg *n2 = realloc(a, sizeof *a * (size_t)cap);
                if (!n2) {
                    rc = tmoe_errorf(err, TMOE_ENOMEM, "out of memory");
                    break;
                }
                a = n2;
            }
            memset(&a[na], 0, sizeof a[na]);
            snprintf(a[na].wl, sizeof a[na].wl, "%s", wl);
            snprintf(a[na].st, sizeof a[na].st, "%s", st_name);
            a[na].tpeak = a[na].mpeak = NAN;
            na++;
        }
        int rep = atoi(tmoe_csv_field(&c, TMOE_RL_REPEAT)), k = nca - 1;
        tmoe_workload_kind wk = TMOE_WL_COUNT;
        tmoe_workload_parse(wl, &wk);
        while (k >= 0 &&
               !(ca[k].repeat == rep && ca[k].wl == (int)wk && !strcmp(ca[k].st, st_name)))
            k--;
        if (k < 0) {
            if (nca == cacap) {
                cacap = cacap ? 2 * cacap : 32;
                combo_agg *n2 = realloc(ca, sizeof *ca * (size_t)cacap);
                if (!n2) {
                    rc = tmoe_errorf(err, TMOE_ENOMEM, "out of memory");
                    break;
                }
                ca = n2;
            }
            k = nca++;
            memset(&ca[k], 0, sizeof ca[k]);
            ca[k].repeat = rep;
            ca[k].wl = (int)wk;
            snprintf(ca[k].st, sizeof ca[k].st, "%s", st_name);
            ca[k].tpeak = NAN;
            ca[k].t_first = cell(&c, TMOE_RL_TIME);
        }
        agg *g = &a[i];
        g->n++;
        double e = cell(&c, TMOE_RL_ENERGY_J), lat = cell(&c, TMOE_RL_LATENCY_MS);
        combo_agg *q = &ca[k];
        q->t_last = cell(&c, TMOE_RL_TIME);
        if (!isnan(e)) q->energy += e, q->tokens += cell(&c, TMOE_RL_TOKENS);
        if (!isnan(e)) {
            g->energy += e;
            g->tokens += cell(&c, TMOE_RL_TOKENS);
        }
        double tp = cell(&c, TMOE_RL_GPU_TEMP_PEAK_C), mp = cell(&c, TMOE_RL_MEM_TEMP_C);
        if (!isnan(tp) && !(g->tpeak >= tp)) g->tpeak = tp;
        if (!isnan(tp) && !(q->tpeak >= tp)) q->tpeak = tp;
        if (!isnan(mp) && !(g->mpeak >= mp)) g->mpeak = mp;
        double ag = cell(&c, TMOE_RL_TOPK_AGREEMENT), re = cell(&c, TMOE_RL_OUTPUT_REL_ERROR);
        if (!isnan(ag)) g->agree += ag, g->nagree++;
        if (!isnan(re)) g->relerr += re, g->nrel++;
        double ae = cell(&c, TMOE_RL_ACTIVE_EXPERTS);
        if (!isnan(ae)) g->active += ae, g->nactive++;
        double idle = cell(&c, TMOE_RL_IDLE_BEFORE_S);
        if (!isnan(idle) && (rc = push_double(&g->idle, &g->nidle, &g->icap, idle, err))) break;
        double nll = cell(&c, TMOE_RL_NLL), nllb = cell(&c, TMOE_RL_NLL_BASELINE),
               ts = cell(&c, TMOE_RL_TOKENS_SCORED);
        if (isfinite(nll) && isfinite(nllb) && ts > 0) {
            if (g->nq == g->qcap) {
                g->qcap = g->qcap ? 2 * g->qcap : 64;
                qrow *nq = realloc(g->q, sizeof *nq * (size_t)g->qcap);
                if (!nq) {
                    rc = tmoe_errorf(err, TMOE_ENOMEM, "out of memory");
                    break;
                }
                g->q = nq;
            }
            double bi = cell(&c, TMOE_RL_BATCH_IDX);
            int smp = isfinite(bi) && r->cfg.num_samples > 0
                          ? (int)fmod(bi, (double)r->cfg.num_samples)
                          : (int)g->nq;
            g->q[g->nq++] = (qrow){smp, nll, nllb, ts};
        }
        if (!isnan(lat) && (rc = push_double(&g->lat, &g->nlat, &g->cap, lat, err))) break;
    }
    tmoe_csv_free(&c);
    if (!rc) {
        qsort(a, (size_t)na, sizeof *a, cmp_agg);
        FILE *o = r->out;
        char shape[96];
        run_energy_shape(r, shape, sizeof shape);
        fprintf(o,
                "\nsummary (%s telemetry%s; energy per token over all batches of a "
                "combination, %s, at expert shape %s; temperatures are peaks; experts: the "
                "distinct experts a step's MoE layers ran, mean):\n",
                tmoe_telemetry_source_name(r->tel),
                r->sim ? ": SIMULATED H100, not a measurement" : "",
                r->lm ? "MoE layers (router, experts, combine) only" : "the MoE block", shape);
        fprintf(o, "%-16s %-22s %7s %12s %8s %9s %9s %7s %7s %7s %9s %7s\n", "workload", "strategy",
                "batches", "mJ/token", "vs base", "p50 ms", "p99 ms", "GPU C", "HBM C", "top-k",
                "out err", "experts");
        for (int i = 0; i < na; i++) {
            agg *g = &a[i];
            qsort(g->lat, (size_t)g->nlat, sizeof(double), tmoe_cmp_double);
            double ept = g->tokens > 0 ? g->energy / g->tokens * 1e3 : NAN, base = NAN;
            for (int j = 0; j < na; j++)
                if (!strcmp(a[j].wl, g->wl) && !strcmp(a[j].st, "baseline") && a[j].tokens > 0)
                    base = a[j].energy / a[j].tokens * 1e3;
            char vs[16] = "-";
            if (!isnan(base) && strcmp(g->st, "baseline"))
                snprintf(vs, sizeof vs, "%+.1f%%", 100.0 * (ept / base - 1.0));
            fprintf(o, "%-16s %-22s %7ld %12.4f %8s %9.4f %9.4f %7.1f %7.1f %7.3f %9.2e %7.2f\n",
                    g->wl, g->st, g->n, ept, vs, pct(g->lat, g->nlat, 50), pct(g->lat, g->nlat, 99),
                    g->tpeak, g->mpeak, g->nagree ? g->agree / g->nagree : NAN,
                    g->nrel ? g->relerr / g->nrel : NAN, g->nactive ? g->active / g->nactive : NAN);
        }
        print_quality(r, a, na);
        double shortest;
        order_effects(ca, nca, &r->order_rho_energy, &r->order_rho_temp, &shortest);
        /* rho is undefined (nan) when a quantity does not vary, e.g. whole-degree peaks */
        char rho_e[48] = "undefined (no variation)", rho_t[48] = "undefined (no variation)";
        if (!isnan(r->order_rho_energy))
            snprintf(rho_e, sizeof rho_e, "%+.2f", r->order_rho_energy);
        if (!isnan(r->order_rho_temp)) snprintf(rho_t, sizeof rho_t, "%+.2f", r->order_rho_temp);
        fprintf(o,
                "\norder: %d combinations; Spearman of run order with energy per token %s, "
                "with peak GPU temperature %s (each relative to its workload's mean); rest "
                "before each combination up to %g s; warm-up %s\n",
                nca, rho_e, rho_t, r->cfg.cooldown_s,
                r->cfg.steady_s <= 0.0 ? "off"
                : r->warm_steady       ? "until power was steady"
                                       : "cut at its bound, power not steady");
        if (fabs(r->order_rho_energy) > 0.5 || fabs(r->order_rho_temp) > 0.5)
            fprintf(o, "WARNING: the order of the run correlates with its results (|rho| > 0.5): "
                       "heat carried from one combination to the next may be billed to a "
                       "strategy; raise --cooldown and --repeats\n");
        if (nca > 1 && shortest < RUN_SLOW_THERMAL_S)
            fprintf(o,
                    "WARNING: the shortest combination ran %.3g s (device clock), less than the "
                    "GPU's slow thermal time constant (%.0f s): its peak temperatures say more "
                    "about where the run was than about the strategy; compare them only with "
                    "longer combinations (--num-samples-per-workload, --epochs)\n",
                    shortest, RUN_SLOW_THERMAL_S);
        for (int i = 0; i < na; i++)
            qsort(a[i].idle, (size_t)a[i].nidle, sizeof(double), tmoe_cmp_double);
        if (!r->sim) idle_warning(o, a, na);
        if (r->tel_faults)
            fprintf(o,
                    "\nTELEMETRY FAULTS: %ld of %ld batches were not measured (first at repeat %d "
                    "%s %s batch %d: %s); their energy and power are nan and left out of the "
                    "table above\n",
                    r->tel_faults, r->rows_logged, r->fault_combo.repeat,
                    tmoe_workload_name(r->fault_combo.wl),
                    tmoe_route_strategy_name(r->fault_combo.st), r->fault_batch, r->fault_reason);
        if (r->ndev_found > r->ndev)
            fprintf(o,
                    "\ntelemetry: %d devices found, devices 0-%d followed, %d-%d left out (at most "
                    "%d)\n",
                    r->ndev_found, r->ndev - 1, r->ndev, r->ndev_found - 1, r->ndev);
        fprintf(o,
                "\nfiles: %s (one row per batch), %s/%s, traces in %s/traces/ (open in "
                "ui.perfetto.dev)\n",
                r->csv_path, r->dir, TMOE_RUNLOG_METADATA, r->dir);
    }
    if (!rc) {
        double rho_e, rho_t, shortest;
        order_effects(ca, nca, &rho_e, &rho_t, &shortest);
        meta_order(r, shortest);
    }
    for (int i = 0; i < na; i++) free(a[i].lat), free(a[i].q), free(a[i].idle);
    free(a);
    free(ca);
    return rc;
}
