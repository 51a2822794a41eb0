/* Figures: for each, NAME.dat (data) and NAME.gp (a gnuplot script that picks its terminal
 * from the variable fmt) in OUT/figures, then rendered by running gnuplot. A render fails
 * when gnuplot exits non-zero or prints anything on stderr. Ranges are set explicitly so
 * that constant or single-point data never triggers gnuplot's autoscale warnings. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <gsl/gsl_sort.h>

#include "analyze/internal.h"

typedef struct {
    const tmoe_analysis *a;
    const tmoe_analyze_config *cfg;
    char dir[4096];
    int simulated;
    tmoe_figures_result *res;
    /* current figure */
    FILE *dat, *gp;
    char name[256];
    double xmin, xmax, ymin, ymax;
    int nblocks;
    char **names; /* figures written, in order */
    int nnames, capnames;
} figctx;

static void range_add(figctx *c, double x, double y) {
    if (isfinite(x)) {
        if (x < c->xmin) c->xmin = x;
        if (x > c->xmax) c->xmax = x;
    }
    if (isfinite(y)) {
        if (y < c->ymin) c->ymin = y;
        if (y > c->ymax) c->ymax = y;
    }
}

static void pad(double *lo, double *hi, double frac) {
    double span = *hi - *lo;
    if (!(span > 1e-12 * fmax(fabs(*lo), fabs(*hi))) || span <= 0.0) {
        double d = fabs(*lo) > 0.0 ? 0.05 * fabs(*lo) : 1.0;
        *lo -= d;
        *hi += d;
    } else {
        *lo -= frac * span;
        *hi += frac * span;
    }
}

static int fig_begin(figctx *c, const char *name, tmoe_error *err) {
    char path[4400];
    /* file names: workload/strategy names come from the CSV, keep only safe characters */
    snprintf(c->name, sizeof c->name, "%s", name);
    for (char *p = c->name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-'))
            *p = '_';
    snprintf(path, sizeof path, "%s/%s.dat", c->dir, name);
    c->dat = fopen(path, "w");
    if (!c->dat) return tmoe_errorf(err, TMOE_EIO, "%s: cannot write: %s", path, strerror(errno));
    c->gp = NULL;
    c->xmin = c->ymin = INFINITY;
    c->xmax = c->ymax = -INFINITY;
    c->nblocks = 0;
    return TMOE_OK;
}

static void dat_block_end(figctx *c) {
    fputs("\n\n", c->dat);
    c->nblocks++;
}

static void dat_val(figctx *c, double v) {
    if (isfinite(v))
        fprintf(c->dat, " %.9g", v);
    else
        fputs(" NaN", c->dat);
}

/* Close the data file and open the script with the common prelude. */
static int gp_begin(figctx *c, const char *title, const char *xlabel, const char *ylabel,
                    tmoe_error *err) {
    if (fclose(c->dat) != 0) {
        c->dat = NULL;
        return tmoe_errorf(err, TMOE_EIO, "%s/%s.dat: write failed", c->dir, c->name);
    }
    c->dat = NULL;
    char path[4400];
    snprintf(path, sizeof path, "%s/%s.gp", c->dir, c->name);
    c->gp = fopen(path, "w");
    if (!c->gp) return tmoe_errorf(err, TMOE_EIO, "%s: cannot write: %s", path, strerror(errno));
    FILE *g = c->gp;
    fprintf(g,
            "# %s: %s (thermoe analyze). Data: %s.dat. Restyle freely, then render with\n"
            "#   gnuplot -e \"fmt='png'\" %s.gp     (fmt: png, pdf or svg)\n"
            "if (!exists(\"fmt\")) fmt = 'png'\n"
            "if (fmt eq 'pdf') {\n"
            "  set terminal pdfcairo size 3.5in,2.6in font 'Sans,7' linewidth 1.5\n"
            "} else { if (fmt eq 'svg') {\n"
            "  set terminal svg size 700,520 font 'Sans,13' linewidth 1.5 background '#ffffff'\n"
            "} else {\n"
            "  set terminal pngcairo size 1050,780 font 'Sans,19' linewidth 2.5\n"
            "} }\n"
            "set output '%s.'.fmt\n"
            "set termoption noenhanced\n"
            "set title '%s%s'\n"
            "set xlabel '%s'\nset ylabel '%s'\n"
            "set key below horizontal\nset grid lc rgb '#dddddd'\nset border 3\n"
            "set tics nomirror\n",
            c->name, title, c->name, c->name, c->name, title,
            c->simulated ? " (simulated telemetry)" : "", xlabel, ylabel);
    return TMOE_OK;
}

static void gp_ranges(figctx *c, int xpad, int y_from_zero) {
    double x0 = c->xmin, x1 = c->xmax, y0 = c->ymin, y1 = c->ymax;
    if (isfinite(x0) && xpad) {
        pad(&x0, &x1, 0.03);
        fprintf(c->gp, "set xrange [%.9g:%.9g]\n", x0, x1);
    }
    if (isfinite(y0)) {
        if (y_from_zero && y0 >= 0.0) {
            y0 = 0.0;
            if (y1 <= 0.0) y1 = 1.0;
            y1 *= 1.12;
        } else
            pad(&y0, &y1, 0.06);
        fprintf(c->gp, "set yrange [%.9g:%.9g]\n", y0, y1);
    }
}

static int gp_end(figctx *c, tmoe_error *err) {
    int bad = ferror(c->gp);
    if ((fclose(c->gp) != 0) | bad) {
        c->gp = NULL;
        return tmoe_errorf(err, TMOE_EIO, "%s/%s.gp: write failed", c->dir, c->name);
    }
    c->gp = NULL;
    char **q = realloc(c->names, sizeof *q * (size_t)(c->nnames + 1));
    char *d = strdup(c->name);
    if (!q || !d) {
        free(d);
        if (q) c->names = q;
        return tmoe_errorf(err, TMOE_ENOMEM, "out of memory");
    }
    c->names = q;
    c->names[c->nnames++] = d;
    c->res->n_figures++;
    return TMOE_OK;
}

/* Abandon a figure with no data (removes its .dat). */
static void fig_drop(figctx *c) {
    if (c->dat) fclose(c->dat);
    c->dat = NULL;
    char path[4400];
    snprintf(path, sizeof path, "%s/%s.dat", c->dir, c->name);
    remove(path);
}

/* ---- helpers over groups -------------------------------------------------------------- */

static const analysis_group *grp(const tmoe_analysis *a, const char *w, const char *s) {
    for (int i = 0; i < a->ng; i++)
        if (strcmp(a->g[i].r.workload, w) == 0 && strcmp(a->g[i].r.strategy, s) == 0)
            return &a->g[i];
    return NULL;
}

static const tmoe_analyze_row *row_of(const tmoe_analysis *a, const analysis_group *g, int k) {
    return tmoe_dataset_row(a->ds, g->rows[k]);
}

static int max_batch(const tmoe_analysis *a, const analysis_group *g) {
    int mx = -1;
    for (int k = 0; k < g->nrows; k++) {
        double b = row_of(a, g, k)->num[TMOE_RL_BATCH_IDX];
        if (isfinite(b) && b >= 0 && b < 1e7 && (int)b > mx) mx = (int)b;
    }
    return mx;
}

/* Mean of column col at each batch index over the group's runs: writes "batch value" lines.
 * Returns points written. */
static int series_by_batch(figctx *c, const analysis_group *g, int col, double *sum, int *cnt,
                           int nb) {
    const tmoe_analysis *a = c->a;
    for (int i = 0; i < nb; i++) {
        sum[i] = 0.0;
        cnt[i] = 0;
    }
    for (int k = 0; k < g->nrows; k++) {
        const tmoe_analyze_row *r = row_of(a, g, k);
        double b = r->num[TMOE_RL_BATCH_IDX], v = r->num[col];
        if (!isfinite(b) || b < 0 || (int)b >= nb || !isfinite(v)) continue;
        sum[(int)b] += v;
        cnt[(int)b]++;
    }
    int n = 0;
    for (int i = 0; i < nb; i++)
        if (cnt[i]) {
            double v = sum[i] / cnt[i];
            fprintf(c->dat, "%d %.9g\n", i, v);
            range_add(c, i, v);
            n++;
        }
    return n;
}

/* ---- figure kinds ----------------------------------------------------------------------- */

/* Time series of one or two columns per strategy (second dashed, untitled: the figure title
 * says which is which). */
static int fig_series(figctx *c, const char *w, const char *name, const char *title,
                      const char *ylabel, int col, int col2, tmoe_error *err) {
    const tmoe_analysis *a = c->a;
    int rc = fig_begin(c, name, err);
    if (rc) return rc;
    int nb = 0;
    for (int s = 0; s < a->nstrategies; s++) {
        const analysis_group *g = grp(a, w, a->strategies[s]);
        if (g && max_batch(a, g) + 1 > nb) nb = max_batch(a, g) + 1;
    }
    double *sum = malloc(sizeof *sum * (size_t)(nb + 1));
    int *cnt = malloc(sizeof *cnt * (size_t)(nb + 1));
    if (!sum || !cnt) {
        free(sum);
        free(cnt);
        fig_drop(c);
        return tmoe_errorf(err, TMOE_ENOMEM, "out of memory");
    }
    const char *sname[32];
    int blk_col[32], ns = 0;
    for (int s = 0; s < a->nstrategies && ns < 30; s++) {
        const analysis_group *g = grp(a, w, a->strategies[s]);
        if (!g) continue;
        for (int which = 0; which < 2; which++) {
            int cl = which ? col2 : col;
            if (cl < 0) continue;
            if (series_by_batch(c, g, cl, sum, cnt, nb) > 0) {
                dat_block_end(c);
                sname[ns] = g->r.strategy;
                blk_col[ns++] = which;
            }
        }
    }
    free(sum);
    free(cnt);
    if (ns == 0) {
        fig_drop(c);
        return TMOE_OK;
    }
    if ((rc = gp_begin(c, title, "batch", ylabel, err))) return rc;
    gp_ranges(c, 1, 0);
    fprintf(c->gp, "plot \\\n");
    for (int i = 0; i < ns; i++)
        fprintf(c->gp,
                "  '%s.dat' index %d using 1:2 with lines lw 1.5 dt %d lc rgb '%s' %s%s%s%s\n",
                c->name, i, blk_col[i] ? 2 : 1, strategy_color(sname[i]),
                blk_col[i] ? "notitle" : "title '", blk_col[i] ? "" : sname[i],
                blk_col[i] ? "" : "'", i + 1 < ns ? ", \\" : "");
    return gp_end(c, err);
}

/* Grouped bars: groups along x, one bar per strategy, optional CI error bars. */
typedef double (*bar_fn)(const tmoe_analysis *a, const analysis_group *g, int grp_idx, double *lo,
                         double *hi);

static int fig_bars(figctx *c, const char *name, const char *title, const char *ylabel,
                    const char *const *glabels, const char *const *gworkload, int ngroups,
                    bar_fn fn, tmoe_error *err) {
    const tmoe_analysis *a = c->a;
    int rc = fig_begin(c, name, err);
    if (rc) return rc;
    int S = a->nstrategies;
    double width = 0.8 / (S > 0 ? S : 1);
    const char *sname[64];
    int ns = 0, have_ci[64];
    for (int s = 0; s < S && ns < 64; s++) {
        int n = 0, ci = 0;
        for (int gi = 0; gi < ngroups; gi++) {
            const analysis_group *g = grp(a, gworkload[gi], a->strategies[s]);
            if (!g) continue;
            double lo = NAN, hi = NAN, v = fn(a, g, gi, &lo, &hi);
            if (!isfinite(v)) continue;
            double x = gi + (s - (S - 1) / 2.0) * width;
            fprintf(c->dat, "%.6f", x);
            dat_val(c, v);
            dat_val(c, lo);
            dat_val(c, hi);
            fputc('\n', c->dat);
            range_add(c, x, v);
            range_add(c, x, isfinite(hi) ? hi : v);
            range_add(c, x, isfinite(lo) ? lo : v);
            ci |= isfinite(lo) && isfinite(hi);
            n++;
        }
        if (n) {
            dat_block_end(c);
            have_ci[ns] = ci;
            sname[ns++] = a->strategies[s];
        }
    }
    if (ns == 0) {
        fig_drop(c);
        return TMOE_OK;
    }
    if ((rc = gp_begin(c, title, "", ylabel, err))) return rc;
    fprintf(c->gp,
            "set xrange [-0.6:%g]\nset style fill solid 0.85 border lc rgb '#333333'\n"
            "set boxwidth %.6f absolute\nset xtics (",
            ngroups - 0.4, width * 0.9);
    for (int gi = 0; gi < ngroups; gi++)
        fprintf(c->gp, "%s'%s' %d", gi ? ", " : "", glabels[gi], gi);
    /* workload names are long: slant them so neighbours never overlap at column width */
    fprintf(c->gp, ") rotate by -20 left\nset grid noxtics\n");
    c->xmin = INFINITY; /* x set above */
    gp_ranges(c, 0, c->ymin >= 0.0);
    fprintf(c->gp, "plot \\\n");
    /* error bars as capped vectors from lo to hi (yerrorbars leave a gap at the mean) */
    for (int i = 0; i < ns; i++) {
        fprintf(c->gp, "  '%s.dat' index %d using 1:2 with boxes lc rgb '%s' title '%s'%s\n",
                c->name, i, strategy_color(sname[i]), sname[i],
                i + 1 < ns || have_ci[i] ? ", \\" : "");
        if (have_ci[i])
            fprintf(
                c->gp,
                "  '%s.dat' index %d using 1:3:(0):($4-$3) with vectors heads size screen 0.008,90 "
                "lc rgb '#333333' lw 1 notitle%s\n",
                c->name, i, i + 1 < ns ? ", \\" : "");
    }
    return gp_end(c, err);
}

static tmoe_metric bar_metric;
static double bar_metric_fn(const tmoe_analysis *a, const analysis_group *g, int gi, double *lo,
                            double *hi) {
    (void)a;
    (void)gi;
    const tmoe_metric_result *m = &g->r.m[bar_metric];
    *lo = m->ci_lo;
    *hi = m->ci_hi;
    return m->mean;
}

static double bar_pct_fn(const tmoe_analysis *a, const analysis_group *g, int gi, double *lo,
                         double *hi) {
    (void)a;
    *lo = *hi = NAN;
    return gi == 0 ? g->r.lat_p50 : gi == 1 ? g->r.lat_p90 : g->r.lat_p99;
}

static int fig_cdf(figctx *c, const char *w, tmoe_error *err) {
    const tmoe_analysis *a = c->a;
    char name[256];
    snprintf(name, sizeof name, "latency_cdf_%s", w);
    int rc = fig_begin(c, name, err);
    if (rc) return rc;
    const char *sname[64];
    int ns = 0;
    for (int s = 0; s < a->nstrategies && ns < 64; s++) {
        const analysis_group *g = grp(a, w, a->strategies[s]);
        if (!g) continue;
        double *v = malloc(sizeof *v * (size_t)(g->nrows + 1));
        if (!v) {
            fig_drop(c);
            return tmoe_errorf(err, TMOE_ENOMEM, "out of memory");
        }
        int n = 0;
        for (int k = 0; k < g->nrows; k++) {
            double x = row_of(a, g, k)->num[TMOE_RL_LATENCY_MS];
            if (isfinite(x)) v[n++] = x;
        }
        qsort(v, (size_t)n, sizeof *v, tmoe_cmp_double);
        for (int k = 0; k < n; k++) {
            fprintf(c->dat, "%.9g %.9g\n", v[k], (k + 1.0) / n);
            range_add(c, v[k], (k + 1.0) / n);
        }
        free(v);
        if (n) {
            dat_block_end(c);
            sname[ns++] = g->r.strategy;
        }
    }
    if (!ns) {
        fig_drop(c);
        return TMOE_OK;
    }
    char title[300];
    snprintf(title, sizeof title, "Latency CDF, %s", w);
    if ((rc = gp_begin(c, title, "batch latency (ms)", "fraction of batches", err))) return rc;
    c->ymin = 0.0;
    c->ymax = 1.0;
    gp_ranges(c, 1, 0);
    fprintf(c->gp, "set yrange [0:1.02]\nplot \\\n");
    for (int i = 0; i < ns; i++)
        fprintf(c->gp, "  '%s.dat' index %d using 1:2 with steps lw 1.5 lc rgb '%s' title '%s'%s\n",
                c->name, i, strategy_color(sname[i]), sname[i], i + 1 < ns ? ", \\" : "");
    return gp_end(c, err);
}

/* Heatmap of a (rows x cols) matrix with row labels, drawn with boxxyerror (any size). */
static int fig_heat(figctx *c, const char *name, const char *title, const char *xlabel,
                    const char *ylabel, const char *const *rlabels, int nr, int nc, const double *m,
                    int diverging, const char *cblabel, tmoe_error *err) {
    int rc = fig_begin(c, name, err);
    if (rc) return rc;
    double lo = INFINITY, hi = -INFINITY;
    int n = 0;
    for (int r = 0; r < nr; r++)
        for (int k = 0; k < nc; k++) {
            double v = m[r * nc + k];
            if (!isfinite(v)) continue;
            fprintf(c->dat, "%d %d %.9g\n", k, r, v);
            lo = fmin(lo, v);
            hi = fmax(hi, v);
            n++;
        }
    if (!n) {
        fig_drop(c);
        return TMOE_OK;
    }
    dat_block_end(c);
    if ((rc = gp_begin(c, title, xlabel, ylabel, err))) return rc;
    if (diverging) {
        double e = fmax(fabs(lo), fabs(hi));
        if (e <= 0.0) e = 1.0;
        lo = -e;
        hi = e;
        fprintf(c->gp, "set palette defined (0 '#0072B2', 0.5 '#ffffff', 1 '#D55E00')\n");
    } else {
        if (hi - lo <= 1e-12 * fmax(1.0, fabs(hi))) {
            lo = fmin(lo, 0.0);
            hi = lo + (hi > lo ? hi - lo : 1.0);
        }
        fprintf(c->gp, "set palette defined (0 '#440154', 0.25 '#3B528B', 0.5 '#21908C', 0.75 "
                       "'#5DC863', 1 '#FDE725')\n");
    }
    fprintf(
        c->gp,
        "set cbrange [%.9g:%.9g]\nset cblabel '%s'\nset xrange [-0.5:%g]\nset yrange [-0.5:%g]\n"
        "set grid noxtics noytics\nunset key\nset border 15\nset rmargin 9\n",
        lo, hi, cblabel, nc - 0.5, nr - 0.5);
    if (rlabels) {
        fprintf(c->gp, "set ytics (");
        for (int r = 0; r < nr; r++)
            fprintf(c->gp, "%s'%s' %d", r ? ", " : "", rlabels[r], r);
        fprintf(c->gp, ")\n");
    }
    if (nc > 16) fprintf(c->gp, "set xtics %d\n", nc / 8);
    fprintf(c->gp,
            "plot '%s.dat' using 1:2:(0.5):(0.5):3 with boxxyerror fs solid 1.0 noborder lc "
            "palette notitle\n",
            c->name);
    return gp_end(c, err);
}

static int list_len(const tmoe_analysis *a, const analysis_group *g, int col) {
    int mx = 0;
    for (int k = 0; k < g->nrows; k++)
        if (row_of(a, g, k)->nlist[col] > mx) mx = row_of(a, g, k)->nlist[col];
    return mx;
}

static int fig_experts(figctx *c, const char *w, tmoe_error *err) {
    const tmoe_analysis *a = c->a;
    int E = 0, ns = 0;
    const char *sname[64];
    for (int s = 0; s < a->nstrategies; s++) {
        const analysis_group *g = grp(a, w, a->strategies[s]);
        if (!g) continue;
        int e = list_len(a, g, TMOE_RL_EXPERT_USAGE_COUNTS),
            t = list_len(a, g, TMOE_RL_EXPERT_TIME_MS);
        E = e > E ? e : E;
        E = t > E ? t : E;
    }
    if (E == 0) return TMOE_OK;
    double *use = calloc((size_t)a->nstrategies * (size_t)E, sizeof *use);
    double *tim = calloc((size_t)a->nstrategies * (size_t)E, sizeof *tim);
    if (!use || !tim) {
        free(use);
        free(tim);
        return tmoe_errorf(err, TMOE_ENOMEM, "out of memory");
    }
    int have_t = 0;
    for (int s = 0; s < a->nstrategies && ns < 64; s++) {
        const analysis_group *g = grp(a, w, a->strategies[s]);
        if (!g) continue;
        double *u = &use[ns * E], *t = &tim[ns * E], tot = 0.0;
        for (int k = 0; k < g->nrows; k++) {
            const tmoe_analyze_row *r = row_of(a, g, k);
            for (int e = 0; e < r->nlist[TMOE_RL_EXPERT_USAGE_COUNTS] && e < E; e++)
                if (isfinite(r->list[TMOE_RL_EXPERT_USAGE_COUNTS][e])) {
                    u[e] += r->list[TMOE_RL_EXPERT_USAGE_COUNTS][e];
                    tot += r->list[TMOE_RL_EXPERT_USAGE_COUNTS][e];
                }
            for (int e = 0; e < r->nlist[TMOE_RL_EXPERT_TIME_MS] && e < E; e++)
                if (isfinite(r->list[TMOE_RL_EXPERT_TIME_MS][e])) {
                    t[e] += r->list[TMOE_RL_EXPERT_TIME_MS][e];
                    have_t = 1;
                }
        }
        for (int e = 0; e < E; e++)
            u[e] = tot > 0.0 ? u[e] / tot : NAN;
        sname[ns++] = g->r.strategy;
    }
    char name[300], title[300];
    snprintf(name, sizeof name, "expert_usage_%s", w);
    snprintf(title, sizeof title, "Expert usage, %s", w);
    int rc =
        fig_heat(c, name, title, "expert", "", sname, ns, E, use, 0, "share of token copies", err);
    if (!rc && have_t) {
        snprintf(name, sizeof name, "expert_time_%s", w);
        rc = fig_begin(c, name, err);
        int nb = 0;
        const char *tn[64];
        for (int s = 0; !rc && s < ns; s++) {
            for (int e = 0; e < E; e++) {
                fprintf(c->dat, "%d %.9g\n", e, tim[s * E + e]);
                range_add(c, e, tim[s * E + e]);
            }
            dat_block_end(c);
            tn[nb++] = sname[s];
        }
        snprintf(title, sizeof title, "Cumulative expert time, %s", w);
        if (!rc) rc = gp_begin(c, title, "expert", "total time (ms)", err);
        if (!rc) {
            gp_ranges(c, 1, 1);
            fprintf(c->gp, "plot \\\n");
            for (int i = 0; i < nb; i++)
                fprintf(c->gp,
                        "  '%s.dat' index %d using 1:2 with linespoints pt 7 ps 0.6 lw 1.5 lc rgb "
                        "'%s' title '%s'%s\n",
                        c->name, i, strategy_color(tn[i]), tn[i], i + 1 < nb ? ", \\" : "");
            rc = gp_end(c, err);
        }
    }
    free(use);
    free(tim);
    return rc;
}

static int fig_ttha(figctx *c, const char *w, tmoe_error *err) {
    const tmoe_analysis *a = c->a;
    static const int cols[] = {TMOE_RL_TTHA_POWER_LOSS,      TMOE_RL_TTHA_TEMP_LOSS,
                               TMOE_RL_TTHA_LATENCY_PENALTY, TMOE_RL_TTHA_THROUGHPUT_BONUS,
                               TMOE_RL_TTHA_FIDELITY,        TMOE_RL_TTHA_TOTAL_LOSS};
    static const char *const lbl[] = {
        "power", "temperature", "latency penalty", "throughput bonus", "fidelity", "total"};
    static const char *const col_color[] = {"#D55E00", "#E69F00", "#0072B2",
                                            "#009E73", "#CC79A7", "#000000"};
    for (int s = 0; s < a->nstrategies; s++) {
        const analysis_group *g = grp(a, w, a->strategies[s]);
        if (!g) continue;
        int nb = max_batch(a, g) + 1;
        if (nb <= 0) continue;
        char name[300], title[300];
        snprintf(name, sizeof name, "ttha_loss_%s_%s", w, g->r.strategy);
        int rc = fig_begin(c, name, err);
        if (rc) return rc;
        double *sum = malloc(sizeof *sum * (size_t)nb);
        int *cnt = malloc(sizeof *cnt * (size_t)nb), have[6], nh = 0;
        if (!sum || !cnt) {
            free(sum);
            free(cnt);
            fig_drop(c);
            return tmoe_errorf(err, TMOE_ENOMEM, "out of memory");
        }
        for (int k = 0; k < 6; k++) {
            have[k] = series_by_batch(c, g, cols[k], sum, cnt, nb) > 0;
            if (have[k]) {
                dat_block_end(c);
                nh++;
            }
        }
        free(sum);
        free(cnt);
        if (!nh) {
            fig_drop(c);
            continue;
        }
        snprintf(title, sizeof title, "TTHA loss, %s, %s", g->r.strategy, w);
        if ((rc = gp_begin(c, title, "batch", "loss term", err))) return rc;
        gp_ranges(c, 1, 0);
        fprintf(c->gp, "plot \\\n");
        for (int k = 0, i = 0; k < 6; k++) {
            if (!have[k]) continue;
            fprintf(
                c->gp,
                "  '%s.dat' index %d using 1:2 with lines lw 1.5 dt %d lc rgb '%s' title '%s'%s\n",
                c->name, i, k == 5 ? 1 : 1 + (k % 3), col_color[k], lbl[k],
                i + 1 < nh ? ", \\" : "");
            i++;
        }
        if ((rc = gp_end(c, err))) return rc;
        /* learned biases: batch x expert */
        int E = list_len(a, g, TMOE_RL_BIASES);
        if (E == 0) continue;
        double *m = calloc((size_t)nb * (size_t)E, sizeof *m);
        int *n = calloc((size_t)nb * (size_t)E, sizeof *n);
        if (!m || !n) {
            free(m);
            free(n);
            return tmoe_errorf(err, TMOE_ENOMEM, "out of memory");
        }
        for (int k = 0; k < g->nrows; k++) {
            const tmoe_analyze_row *r = row_of(a, g, k);
            double b = r->num[TMOE_RL_BATCH_IDX];
            if (!isfinite(b) || b < 0 || (int)b >= nb) continue;
            for (int e = 0; e < r->nlist[TMOE_RL_BIASES] && e < E; e++)
                if (isfinite(r->list[TMOE_RL_BIASES][e])) {
                    m[(int)b * E + e] += r->list[TMOE_RL_BIASES][e];
                    n[(int)b * E + e]++;
                }
        }
        for (int i = 0; i < nb * E; i++)
            m[i] = n[i] ? m[i] / n[i] : NAN;
        snprintf(name, sizeof name, "biases_%s_%s", w, g->r.strategy);
        snprintf(title, sizeof title, "Learned biases, %s, %s", g->r.strategy, w);
        rc = fig_heat(c, name, title, "expert", "batch", NULL, nb, E, m, 1, "bias", err);
        free(m);
        free(n);
        if (rc) return rc;
    }
    return TMOE_OK;
}

/* Pareto scatter: x = metric or 1 - top-k agreement, y = energy per token; frontier drawn. */
static int fig_pareto(figctx *c, const char *w, int fidelity, tmoe_error *err) {
    const tmoe_analysis *a = c->a;
    char name[300], title[300];
    snprintf(name, sizeof name, "pareto_%s_%s", fidelity ? "fidelity" : "latency", w);
    int rc = fig_begin(c, name, err);
    if (rc) return rc;
    double px[64], py[64];
    const char *sname[64];
    int n = 0;
    for (int s = 0; s < a->nstrategies && n < 64; s++) {
        const analysis_group *g = grp(a, w, a->strategies[s]);
        if (!g) continue;
        double x =
            fidelity ? 1.0 - g->r.m[TMOE_M_TOPK_AGREEMENT].mean : g->r.m[TMOE_M_LATENCY_MEAN].mean;
        double y = g->r.m[TMOE_M_ENERGY_PER_TOKEN].mean;
        if (!isfinite(x) || !isfinite(y)) continue;
        fprintf(c->dat, "%.9g %.9g\n", x, y);
        dat_block_end(c);
        range_add(c, x, y);
        px[n] = x;
        py[n] = y;
        sname[n++] = g->r.strategy;
    }
    if (!n) {
        fig_drop(c);
        return TMOE_OK;
    }
    /* frontier: points not dominated (lower or equal in both, better in one), by x */
    int idx[64], nf = 0;
    for (int i = 0; i < n; i++) {
        int dom = 0;
        for (int j = 0; j < n && !dom; j++)
            dom = j != i && px[j] <= px[i] && py[j] <= py[i] && (px[j] < px[i] || py[j] < py[i]);
        if (!dom) idx[nf++] = i;
    }
    for (int i = 1; i < nf; i++)
        for (int j = i; j > 0 && px[idx[j]] < px[idx[j - 1]]; j--) {
            int t = idx[j];
            idx[j] = idx[j - 1];
            idx[j - 1] = t;
        }
    for (int i = 0; i < nf; i++)
        fprintf(c->dat, "%.9g %.9g\n", px[idx[i]], py[idx[i]]);
    dat_block_end(c);
    snprintf(title, sizeof title, "Energy vs %s, %s", fidelity ? "fidelity" : "latency", w);
    if ((rc = gp_begin(c, title,
                       fidelity ? "1 - top-k agreement with baseline" : "latency mean (ms)",
                       "energy per token (J)", err)))
        return rc;
    gp_ranges(c, 1, 0);
    fprintf(c->gp,
            "plot \\\n  '%s.dat' index %d using 1:2 with lines lw 1 dt 2 lc rgb '#777777' title "
            "'Pareto frontier', \\\n",
            c->name, n);
    for (int i = 0; i < n; i++)
        fprintf(c->gp,
                "  '%s.dat' index %d using 1:2 with points pt 7 ps 2.4 lc rgb '%s' title '%s'%s\n",
                c->name, i, strategy_color(sname[i]), sname[i], i + 1 < n ? ", \\" : "");
    return gp_end(c, err);
}

/* ---- rendering -------------------------------------------------------------------------- */

static int gnuplot_available(const char *prog) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "'%s' -e 'exit' >/dev/null 2>&1", prog);
    int st = system(cmd);
    return st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static void render_all(figctx *c, char **names, int n) {
    static const struct {
        unsigned bit;
        const char *ext;
    } fmts[] = {{TMOE_FMT_PNG, "png"}, {TMOE_FMT_PDF, "pdf"}, {TMOE_FMT_SVG, "svg"}};
    for (int i = 0; i < n; i++)
        for (int f = 0; f < 3; f++) {
            if (!(c->cfg->formats & fmts[f].bit)) continue;
            char cmd[9000], errp[4400];
            snprintf(errp, sizeof errp, "%s/%s.%s.stderr", c->dir, names[i], fmts[f].ext);
            /* the redirection is relative to the figures directory the command cd's into */
            snprintf(cmd, sizeof cmd,
                     "cd '%s' && '%s' -e \"fmt='%s'\" '%s.gp' 2>'%s.%s.stderr' </dev/null",
                     c->dir, c->cfg->gnuplot, fmts[f].ext, names[i], names[i], fmts[f].ext);
            int st = system(cmd);
            char msg[600] = "";
            FILE *e = fopen(errp, "r");
            if (e) {
                size_t k = fread(msg, 1, sizeof msg - 1, e);
                msg[k] = '\0';
                fclose(e);
            }
            for (char *p = msg; *p; p++)
                if (*p == '\n') *p = ' ';
            int ok = st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0 && msg[0] == '\0';
            if (ok) {
                remove(errp);
                c->res->n_rendered++;
            } else {
                c->res->n_failed++;
                if (!c->res->first_failure[0])
                    snprintf(c->res->first_failure, sizeof c->res->first_failure, "%s.gp (%s): %s",
                             names[i], fmts[f].ext, msg[0] ? msg : "gnuplot failed");
                tmoe_log(TMOE_LOG_WARN, "figure %s.%s: %s", names[i], fmts[f].ext,
                         msg[0] ? msg : "gnuplot failed");
            }
        }
}

int analysis_figures(const tmoe_analysis *a, const tmoe_analyze_config *cfg,
                     tmoe_figures_result *out, char ***names, int *nnames, tmoe_error *err) {
    tmoe_figures_result local;
    tmoe_figures_result *res = out ? out : &local;
    memset(res, 0, sizeof *res);
    tmoe_analyze_config dc = tmoe_analyze_config_default();
    if (!cfg) cfg = &dc;
    figctx c = {.a = a, .cfg = cfg, .res = res, .simulated = tmoe_dataset_simulated(a->ds)};
    const char *outdir = cfg->out_dir ? cfg->out_dir : "report";
    if (strchr(outdir, '\'') || (cfg->gnuplot && strchr(cfg->gnuplot, '\'')))
        return tmoe_errorf(err, TMOE_EINVAL, "%s: paths with a single quote are not supported",
                           outdir);
    int rc = ensure_dir(outdir, err);
    snprintf(c.dir, sizeof c.dir, "%s/figures", outdir);
    if (!rc) rc = ensure_dir(c.dir, err);
    for (int w = 0; w < a->nworkloads && !rc; w++) {
        const char *wl = a->workloads[w];
        char name[300], title[300];
        snprintf(name, sizeof name, "power_%s", wl);
        snprintf(title, sizeof title, "Power, %s", wl);
        rc = fig_series(&c, wl, name, title, "average power (W)", TMOE_RL_POWER_AVG_W, -1, err);
        snprintf(name, sizeof name, "temperature_%s", wl);
        snprintf(title, sizeof title, "Temperature, %s (solid GPU, dashed HBM)", wl);
        if (!rc)
            rc = fig_series(&c, wl, name, title, "peak temperature (C)", TMOE_RL_GPU_TEMP_PEAK_C,
                            TMOE_RL_MEM_TEMP_C, err);
        if (!rc) rc = fig_cdf(&c, wl, err);
        static const char *const pl[] = {"p50", "p90", "p99"};
        const char *pw[] = {wl, wl, wl};
        snprintf(name, sizeof name, "latency_pct_%s", wl);
        snprintf(title, sizeof title, "Latency percentiles, %s", wl);
        if (!rc) rc = fig_bars(&c, name, title, "batch latency (ms)", pl, pw, 3, bar_pct_fn, err);
        if (!rc) rc = fig_experts(&c, wl, err);
        if (!rc) rc = fig_ttha(&c, wl, err);
        if (!rc) rc = fig_pareto(&c, wl, 0, err);
        if (!rc) rc = fig_pareto(&c, wl, 1, err);
    }
    static const struct {
        tmoe_metric m;
        const char *name, *title;
    } bars[] = {{TMOE_M_ENERGY_PER_TOKEN, "energy_per_token", "Energy per token (mean, 95% CI)"},
                {TMOE_M_POWER_PEAK, "power_peak", "Peak power (mean, 95% CI)"},
                {TMOE_M_THROUGHPUT, "throughput", "Throughput (mean, 95% CI)"},
                {TMOE_M_OVERHEAD_PCT, "overhead", "Router + TTHA overhead (% of step time)"}};
    for (size_t b = 0; b < sizeof bars / sizeof *bars && !rc; b++) {
        bar_metric = bars[b].m;
        rc = fig_bars(&c, bars[b].name, bars[b].title, tmoe_metric_label(bars[b].m),
                      (const char *const *)a->workloads, (const char *const *)a->workloads,
                      a->nworkloads, bar_metric_fn, err);
    }
    if (c.dat) fig_drop(&c);
    if (c.gp) fclose(c.gp);
    if (!rc && cfg->gnuplot && cfg->gnuplot[0] && cfg->formats) {
        res->gnuplot_found = gnuplot_available(cfg->gnuplot);
        if (res->gnuplot_found)
            render_all(&c, c.names, c.nnames);
        else
            tmoe_log(TMOE_LOG_WARN,
                     "'%s' could not be run: figure scripts written to %s, not rendered",
                     cfg->gnuplot, c.dir);
    }
    if (rc || !names) {
        for (int i = 0; i < c.nnames; i++)
            free(c.names[i]);
        free(c.names);
    } else {
        *names = c.names;
        *nnames = c.nnames;
    }
    return rc;
}

int tmoe_analysis_write_figures(const tmoe_analysis *a, const tmoe_analyze_config *cfg,
                                tmoe_figures_result *out, tmoe_error *err) {
    return analysis_figures(a, cfg, out, NULL, NULL, err);
}
