/* Figures: for each, NAME.dat (data) and NAME.gp (a gnuplot script that picks its terminal
 * from the variable fmt) in OUT/figures, then rendered by running gnuplot. A render fails
 * when gnuplot exits non-zero or prints anything on stderr. Ranges are set explicitly so
 * that constant or single-point data never triggers gnuplot's autoscale warnings.
 *
 * Workload and strategy names come from run logs, possibly from other machines: they reach
 * a script only through gp_str (a single-quoted gnuplot string, in which gnuplot expands
 * nothing) and a file name only through fig_file_name; gnuplot is started without a shell. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gsl/gsl_sort.h>

#include "analyze/internal.h"

typedef struct {
    const tmoe_analysis *a;
    const tmoe_analyze_config *cfg;
    char dir[4096];
    int simulated;
    tmoe_figures_result *res;
    /* current figure: its data and script, each written whole or not at all */
    tmoe_atomic_file dat_af, gp_af;
    FILE *dat, *gp; /* dat_af.f and gp_af.f while open, else NULL */
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

/* Widen [lo, hi] by frac of its span on each side (by 5% of |lo| when it is empty). Near
 * the largest doubles the result may be infinite: gp_ranges then leaves the range to
 * gnuplot. */
static void pad(double *lo, double *hi, double frac) {
    double half = *hi / 2 - *lo / 2; /* half the span: no overflow */
    if (!(half > 0.5e-12 * fmax(fabs(*lo), fabs(*hi))) || half <= 0.0) {
        double d = fabs(*lo) > 0.0 ? 0.05 * fabs(*lo) : 1.0;
        *lo -= d;
        *hi += d;
    } else {
        *lo -= 2.0 * frac * half;
        *hi += 2.0 * frac * half;
    }
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0 when the bytes there are not one. */
static int utf8_len(const unsigned char *s) {
    unsigned char c = s[0];
    int n = c < 0x80                 ? 1
            : c >= 0xC2 && c <= 0xDF ? 2
            : c >= 0xE0 && c <= 0xEF ? 3
            : c >= 0xF0 && c <= 0xF4 ? 4
                                     : 0;
    if (n <= 1) return n;
    unsigned char lo = 0x80, hi = 0xBF; /* second byte: no overlong forms, no surrogates */
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
    if (s[1] < lo || s[1] > hi) return 0;
    for (int i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    return n;
}

/* Write s as one single-quoted gnuplot string literal: inside single quotes gnuplot expands
 * no backquote, macro or backslash, and the only escape is '' for a quote. Control
 * characters (a newline would end the command) become spaces and bytes that are not UTF-8
 * '?' (cairo warns about them); longer than max bytes, s is cut at a character and "..."
 * appended. tic: the string is a tic label, which gnuplot reads as a format, so '%' is
 * doubled. Every string that enters a script goes through here. */
static void gp_str_ex(FILE *f, const char *s, size_t max, int tic) {
    const unsigned char *p = (const unsigned char *)s;
    size_t used = 0;
    fputc('\'', f);
    while (*p) {
        int n = utf8_len(p);
        if (used + (n ? (size_t)n : 1) > max) {
            fputs("...", f);
            break;
        }
        if (n == 0) {
            fputc('?', f);
            p++;
            used++;
            continue;
        }
        if (n == 1) {
            if (*p == '\'')
                fputs("''", f);
            else if (*p == '%' && tic)
                fputs("%%", f);
            else
                fputc(*p < 0x20 || *p == 0x7f ? ' ' : *p, f);
        } else
            fwrite(p, 1, (size_t)n, f);
        p += n;
        used += (size_t)n;
    }
    fputc('\'', f);
}

static void gp_str(FILE *f, const char *s, size_t max) {
    gp_str_ex(f, s, max, 0);
}

#define GP_TIC 24    /* bytes of a name shown as a tic label */
#define GP_LABEL 48  /* bytes of a name shown in a legend or a title */
#define GP_TITLE 200 /* bytes of a title */

/* s cut to GP_LABEL bytes at a character boundary, "..." appended when cut; returns buf
 * (GP_LABEL + 4 bytes). For composing titles; gp_str still quotes the result. */
static const char *short_name(char *buf, const char *s) {
    size_t used = 0;
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int n = utf8_len(p);
        if (!n) n = 1;
        if (used + (size_t)n > GP_LABEL) {
            memcpy(buf + used, "...", 4);
            return buf;
        }
        memcpy(buf + used, p, (size_t)n);
        used += (size_t)n;
        p += n;
    }
    buf[used] = '\0';
    return buf;
}

static int plain_char(char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '_' || ch == '-';
}

static int plain_name(const char *s) {
    for (; *s; s++)
        if (!plain_char(*s)) return 0;
    return 1;
}

/* FNV-1a, 64 bits, of s including its terminating NUL (so "a","b" and "ab","" differ). */
static uint64_t fnv1a(uint64_t h, const char *s) {
    do {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ull;
    } while (*s++);
    return h;
}

/* The one place a figure's file name (without extension) is made, used for its .dat, .gp
 * and renders alike. KIND (a constant) with workload w and strategy s (either NULL):
 * "KIND_w_s" when w and s hold only [A-Za-z0-9_-] and the result is at most 100 bytes and
 * not taken; otherwise KIND, w and s with every other byte as '_', cut to 64 bytes, and 16
 * hex digits of a hash of the exact names, so names that differ get different files. A name
 * still taken (a hash collision, or a plain name equal to a hashed one) gets a counter. */
static void fig_file_name(const figctx *c, char *out, size_t n, const char *kind, const char *w,
                          const char *s) {
    TMOE_ASSERT(n >= 128 && plain_name(kind));
    int taken = 0;
    snprintf(out, n, "%s%s%s%s%s", kind, w ? "_" : "", w ? w : "", s ? "_" : "", s ? s : "");
    if ((!w || plain_name(w)) && (!s || plain_name(s)) && strlen(out) <= 100) {
        for (int i = 0; i < c->nnames && !taken; i++) taken = strcmp(c->names[i], out) == 0;
        if (!taken) return;
    }
    uint64_t h = fnv1a(fnv1a(fnv1a(0xcbf29ce484222325ull, kind), w ? w : ""), s ? s : "");
    out[64] = '\0';
    for (char *p = out + strlen(kind); *p; p++)
        if (!plain_char(*p)) *p = '_';
    size_t len = strlen(out);
    snprintf(out + len, n - len, "_%016llx", (unsigned long long)h);
    len = strlen(out);
    for (int k = 2;; k++) {
        taken = 0;
        for (int i = 0; i < c->nnames && !taken; i++) taken = strcmp(c->names[i], out) == 0;
        if (!taken) return;
        snprintf(out + len, n - len, "_%d", k);
    }
}

/* Start figure KIND of workload w and strategy s (either NULL): open its .dat. */
static int fig_begin(figctx *c, const char *kind, const char *w, const char *s, tmoe_error *err) {
    char path[4400];
    fig_file_name(c, c->name, sizeof c->name, kind, w, s);
    snprintf(path, sizeof path, "%s/%s.dat", c->dir, c->name);
    int rc = tmoe_atomic_open(&c->dat_af, path, err);
    if (rc) return rc;
    c->dat = c->dat_af.f;
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
    c->dat = NULL;
    int rc = tmoe_atomic_commit(&c->dat_af, err);
    if (rc) return rc;
    char path[4400];
    snprintf(path, sizeof path, "%s/%s.gp", c->dir, c->name);
    if ((rc = tmoe_atomic_open(&c->gp_af, path, err))) return rc;
    c->gp = c->gp_af.f;
    FILE *g = c->gp;
    fprintf(g,
            "# %s (thermoe analyze). Data: %s.dat. Restyle freely, then render with\n"
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
            "set termoption noenhanced\n",
            c->name, c->name, c->name, c->name);
    fputs("set title ", g);
    gp_str(g, title, GP_TITLE);
    if (c->simulated) fputs(".' (simulated telemetry)'", g);
    fputs("\nset xlabel ", g);
    gp_str(g, xlabel, GP_TITLE);
    fputs("\nset ylabel ", g);
    gp_str(g, ylabel, GP_TITLE);
    fputs("\nset key below horizontal\nset grid lc rgb '#dddddd'\nset border 3\n"
          "set tics nomirror\n",
          g);
    return TMOE_OK;
}

/* " title 'NAME'" for a plot element, or " notitle" when name is NULL. */
static void gp_title(FILE *f, const char *name) {
    if (!name) {
        fputs(" notitle", f);
        return;
    }
    fputs(" title ", f);
    gp_str(f, name, GP_LABEL);
}

static void gp_ranges(figctx *c, int xpad, int y_from_zero) {
    double x0 = c->xmin, x1 = c->xmax, y0 = c->ymin, y1 = c->ymax;
    if (isfinite(x0) && xpad) {
        pad(&x0, &x1, 0.03);
        if (isfinite(x0) && isfinite(x1)) fprintf(c->gp, "set xrange [%.9g:%.9g]\n", x0, x1);
    }
    if (isfinite(y0)) {
        if (y_from_zero && y0 >= 0.0) {
            y0 = 0.0;
            if (y1 <= 0.0) y1 = 1.0;
            y1 *= 1.12;
        } else
            pad(&y0, &y1, 0.06);
        if (isfinite(y0) && isfinite(y1)) fprintf(c->gp, "set yrange [%.9g:%.9g]\n", y0, y1);
    }
}

static int gp_end(figctx *c, tmoe_error *err) {
    c->gp = NULL;
    int rc = tmoe_atomic_commit(&c->gp_af, err);
    if (rc) return rc;
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

/* Abandon a figure with no data: its .dat is not written (one of the same name left by an
 * earlier report in this directory is removed). */
static void fig_drop(figctx *c) {
    if (c->dat) tmoe_atomic_abort(&c->dat_af);
    c->dat = NULL;
    char path[4400];
    snprintf(path, sizeof path, "%s/%s.dat", c->dir, c->name);
    remove(path);
}

/* ---- helpers over groups -------------------------------------------------------------- */

static const analysis_group *grp(const tmoe_analysis *a, const char *w, const char *s) {
    return analysis_group_find(a, w, s);
}

static const tmoe_analyze_row *row_of(const tmoe_analysis *a, const analysis_group *g, int k) {
    return tmoe_dataset_row(a->ds, g->rows[k]);
}

/* The batch indices present in the rows of some groups (finite, >= 0), ascending and
 * distinct: the x axis of the time series. Its size follows the rows, never the largest
 * index, and indices are compared as doubles, never converted. */
typedef struct {
    double *idx;
    int n;
} batch_axis;

static int cmp_dbl(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* Build the axis of groups gs[0..ng) (NULL entries skipped); -1 when out of memory. */
static int axis_build(const tmoe_analysis *a, const analysis_group *const *gs, int ng,
                      batch_axis *ax) {
    size_t cap = 1;
    for (int i = 0; i < ng; i++)
        if (gs[i]) cap += (size_t)gs[i]->nrows;
    ax->n = 0;
    ax->idx = malloc(sizeof *ax->idx * cap);
    if (!ax->idx) return -1;
    for (int i = 0; i < ng; i++)
        for (int k = 0; gs[i] && k < gs[i]->nrows; k++) {
            double b = tmoe_dataset_row(a->ds, gs[i]->rows[k])->num[TMOE_RL_BATCH_IDX];
            if (isfinite(b) && b >= 0.0) ax->idx[ax->n++] = b;
        }
    qsort(ax->idx, (size_t)ax->n, sizeof *ax->idx, cmp_dbl);
    int m = 0;
    for (int i = 0; i < ax->n; i++)
        if (m == 0 || ax->idx[i] != ax->idx[m - 1]) ax->idx[m++] = ax->idx[i];
    ax->n = m;
    return 0;
}

/* Position of batch index b on the axis, or -1. */
static int axis_pos(const batch_axis *ax, double b) {
    if (!isfinite(b)) return -1;
    const double *p = bsearch(&b, ax->idx, (size_t)ax->n, sizeof b, cmp_dbl);
    return p ? (int)(p - ax->idx) : -1;
}

/* Mean of column col at each batch index of the axis over the group's runs: writes "batch
 * value" lines. sum (the means) and cnt have ax->n entries. Returns points written. */
static int series_by_batch(figctx *c, const analysis_group *g, int col, const batch_axis *ax,
                           double *sum, int *cnt) {
    const tmoe_analysis *a = c->a;
    for (int i = 0; i < ax->n; i++) {
        sum[i] = 0.0;
        cnt[i] = 0;
    }
    for (int k = 0; k < g->nrows; k++) {
        const tmoe_analyze_row *r = row_of(a, g, k);
        int i = axis_pos(ax, r->num[TMOE_RL_BATCH_IDX]);
        double v = r->num[col];
        if (i < 0 || !isfinite(v)) continue;
        cnt[i]++; /* running mean: finite for any finite values (a sum could overflow) */
        sum[i] += v / cnt[i] - sum[i] / cnt[i];
    }
    int n = 0;
    for (int i = 0; i < ax->n; i++)
        if (cnt[i]) {
            double v = sum[i];
            fprintf(c->dat, "%.17g %.9g\n", ax->idx[i], v);
            range_add(c, ax->idx[i], v);
            n++;
        }
    return n;
}

/* ---- figure kinds ----------------------------------------------------------------------- */

/* Time series of one or two columns per strategy (second dashed, untitled: the figure title
 * says which is which). */
static int fig_series(figctx *c, const char *kind, const char *w, const char *title,
                      const char *ylabel, int col, int col2, tmoe_error *err) {
    const tmoe_analysis *a = c->a;
    int rc = fig_begin(c, kind, w, NULL, err);
    if (rc) return rc;
    const analysis_group **gs = malloc(sizeof *gs * (size_t)(a->nstrategies + 1));
    batch_axis ax = {0};
    if (gs) {
        for (int s = 0; s < a->nstrategies; s++) gs[s] = grp(a, w, a->strategies[s]);
        if (axis_build(a, gs, a->nstrategies, &ax)) ax.idx = NULL;
    }
    free(gs);
    double *sum = malloc(sizeof *sum * (size_t)(ax.n + 1));
    int *cnt = malloc(sizeof *cnt * (size_t)(ax.n + 1));
    if (!ax.idx || !sum || !cnt) {
        free(ax.idx);
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
            if (series_by_batch(c, g, cl, &ax, sum, cnt) > 0) {
                dat_block_end(c);
                sname[ns] = g->r.strategy;
                blk_col[ns++] = which;
            }
        }
    }
    free(ax.idx);
    free(sum);
    free(cnt);
    if (ns == 0) {
        fig_drop(c);
        return TMOE_OK;
    }
    if ((rc = gp_begin(c, title, "batch", ylabel, err))) return rc;
    gp_ranges(c, 1, 0);
    fprintf(c->gp, "plot \\\n");
    for (int i = 0; i < ns; i++) {
        fprintf(c->gp, "  '%s.dat' index %d using 1:2 with lines lw 1.5 dt %d lc rgb '%s'", c->name,
                i, blk_col[i] ? 2 : 1, strategy_color(sname[i]));
        gp_title(c->gp, blk_col[i] ? NULL : sname[i]);
        fputs(i + 1 < ns ? ", \\\n" : "\n", c->gp);
    }
    return gp_end(c, err);
}

/* Grouped bars: groups along x, one bar per strategy, optional CI error bars. */
typedef double (*bar_fn)(const tmoe_analysis *a, const analysis_group *g, int grp_idx, double *lo,
                         double *hi);

static int fig_bars(figctx *c, const char *kind, const char *w, const char *title,
                    const char *ylabel, const char *const *glabels, const char *const *gworkload,
                    int ngroups, bar_fn fn, tmoe_error *err) {
    const tmoe_analysis *a = c->a;
    int rc = fig_begin(c, kind, w, NULL, err);
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
    for (int gi = 0; gi < ngroups; gi++) {
        fputs(gi ? ", " : "", c->gp);
        gp_str_ex(c->gp, glabels[gi], GP_TIC, 1);
        fprintf(c->gp, " %d", gi);
    }
    /* workload names are long: slant them so neighbours never overlap at column width */
    fprintf(c->gp, ") rotate by -20 left\nset grid noxtics\n");
    c->xmin = INFINITY; /* x set above */
    gp_ranges(c, 0, c->ymin >= 0.0);
    fprintf(c->gp, "plot \\\n");
    /* error bars as capped vectors from lo to hi (yerrorbars leave a gap at the mean) */
    for (int i = 0; i < ns; i++) {
        fprintf(c->gp, "  '%s.dat' index %d using 1:2 with boxes lc rgb '%s'", c->name, i,
                strategy_color(sname[i]));
        gp_title(c->gp, sname[i]);
        fputs(i + 1 < ns || have_ci[i] ? ", \\\n" : "\n", c->gp);
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
    int rc = fig_begin(c, "latency_cdf", w, NULL, err);
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
    char title[300], sw[GP_LABEL + 4];
    snprintf(title, sizeof title, "Latency CDF, %s", short_name(sw, w));
    if ((rc = gp_begin(c, title, "batch latency (ms)", "fraction of batches", err))) return rc;
    c->ymin = 0.0;
    c->ymax = 1.0;
    gp_ranges(c, 1, 0);
    fprintf(c->gp, "set yrange [0:1.02]\nplot \\\n");
    for (int i = 0; i < ns; i++) {
        fprintf(c->gp, "  '%s.dat' index %d using 1:2 with steps lw 1.5 lc rgb '%s'", c->name, i,
                strategy_color(sname[i]));
        gp_title(c->gp, sname[i]);
        fputs(i + 1 < ns ? ", \\\n" : "\n", c->gp);
    }
    return gp_end(c, err);
}

/* Heatmap of a (rows x cols) matrix with row labels, drawn with boxxyerror (any size). */
static int fig_heat(figctx *c, const char *kind, const char *w, const char *s, const char *title,
                    const char *xlabel, const char *ylabel, const char *const *rlabels, int nr,
                    int nc, const double *m, int diverging, const char *cblabel, tmoe_error *err) {
    int rc = fig_begin(c, kind, w, s, err);
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
    fprintf(c->gp,
            "set cbrange [%.9g:%.9g]\nset xrange [-0.5:%g]\nset yrange [-0.5:%g]\n"
            "set grid noxtics noytics\nunset key\nset border 15\nset rmargin 9\n",
            lo, hi, nc - 0.5, nr - 0.5);
    fputs("set cblabel ", c->gp);
    gp_str(c->gp, cblabel, GP_TITLE);
    fputc('\n', c->gp);
    if (rlabels) {
        fprintf(c->gp, "set ytics (");
        for (int r = 0; r < nr; r++) {
            fputs(r ? ", " : "", c->gp);
            gp_str_ex(c->gp, rlabels[r], GP_TIC, 1);
            fprintf(c->gp, " %d", r);
        }
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
        for (int e = 0; e < E; e++) u[e] = tot > 0.0 ? u[e] / tot : NAN;
        sname[ns++] = g->r.strategy;
    }
    char title[300], sw[GP_LABEL + 4];
    snprintf(title, sizeof title, "Expert usage, %s", short_name(sw, w));
    int rc = fig_heat(c, "expert_usage", w, NULL, title, "expert", "", sname, ns, E, use, 0,
                      "share of token copies", err);
    if (!rc && have_t) {
        rc = fig_begin(c, "expert_time", w, NULL, err);
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
        snprintf(title, sizeof title, "Cumulative expert time, %s", short_name(sw, w));
        if (!rc) rc = gp_begin(c, title, "expert", "total time (ms)", err);
        if (!rc) {
            gp_ranges(c, 1, 1);
            fprintf(c->gp, "plot \\\n");
            for (int i = 0; i < nb; i++) {
                fprintf(c->gp,
                        "  '%s.dat' index %d using 1:2 with linespoints pt 7 ps 0.6 lw 1.5 lc rgb "
                        "'%s'",
                        c->name, i, strategy_color(tn[i]));
                gp_title(c->gp, tn[i]);
                fputs(i + 1 < nb ? ", \\\n" : "\n", c->gp);
            }
            rc = gp_end(c, err);
        }
    }
    free(use);
    free(tim);
    return rc;
}

#define HEAT_MAX_CELLS (1 << 22) /* a heat map larger than this is not drawn */

/* TTHA loss terms and learned biases of one group (none when it has no TTHA columns). */
static int fig_ttha_group(figctx *c, const char *w, const analysis_group *g, tmoe_error *err) {
    const tmoe_analysis *a = c->a;
    static const int cols[] = {TMOE_RL_TTHA_POWER_LOSS,      TMOE_RL_TTHA_TEMP_LOSS,
                               TMOE_RL_TTHA_LATENCY_PENALTY, TMOE_RL_TTHA_THROUGHPUT_BONUS,
                               TMOE_RL_TTHA_FIDELITY,        TMOE_RL_TTHA_TOTAL_LOSS};
    static const char *const lbl[] = {
        "power", "temperature", "latency penalty", "throughput bonus", "fidelity", "total"};
    static const char *const col_color[] = {"#D55E00", "#E69F00", "#0072B2",
                                            "#009E73", "#CC79A7", "#000000"};
    batch_axis ax = {0};
    double *sum = NULL, *m = NULL;
    int *cnt = NULL, *n = NULL, have[6], nh = 0, rc = TMOE_OK;
    if (axis_build(a, &g, 1, &ax)) return tmoe_errorf(err, TMOE_ENOMEM, "out of memory");
    int nb = ax.n;
    if (nb == 0) goto out;
    char title[300], sw[GP_LABEL + 4], ss[GP_LABEL + 4];
    if ((rc = fig_begin(c, "ttha_loss", w, g->r.strategy, err))) goto out;
    sum = malloc(sizeof *sum * (size_t)nb);
    cnt = malloc(sizeof *cnt * (size_t)nb);
    if (!sum || !cnt) {
        fig_drop(c);
        rc = tmoe_errorf(err, TMOE_ENOMEM, "out of memory");
        goto out;
    }
    for (int k = 0; k < 6; k++) {
        have[k] = series_by_batch(c, g, cols[k], &ax, sum, cnt) > 0;
        if (have[k]) {
            dat_block_end(c);
            nh++;
        }
    }
    if (!nh) {
        fig_drop(c);
        goto out;
    }
    snprintf(title, sizeof title, "TTHA loss, %s, %s", short_name(ss, g->r.strategy),
             short_name(sw, w));
    if ((rc = gp_begin(c, title, "batch", "loss term", err))) goto out;
    gp_ranges(c, 1, 0);
    fprintf(c->gp, "plot \\\n");
    for (int k = 0, i = 0; k < 6; k++) {
        if (!have[k]) continue;
        fprintf(c->gp, "  '%s.dat' index %d using 1:2 with lines lw 1.5 dt %d lc rgb '%s'", c->name,
                i, k == 5 ? 1 : 1 + (k % 3), col_color[k]);
        gp_title(c->gp, lbl[k]);
        fputs(i + 1 < nh ? ", \\\n" : "\n", c->gp);
        i++;
    }
    if ((rc = gp_end(c, err))) goto out;
    /* learned biases: batch (rows, in order of the axis) x expert */
    int E = list_len(a, g, TMOE_RL_BIASES);
    if (E == 0) goto out;
    if ((size_t)nb * (size_t)E > HEAT_MAX_CELLS) {
        char fname[256]; /* the names themselves may hold anything: say it by file name */
        fig_file_name(c, fname, sizeof fname, "biases", w, g->r.strategy);
        tmoe_log(TMOE_LOG_WARN,
                 "figure %s: %d batches x %d experts is too many cells to draw; left out", fname,
                 nb, E);
        goto out;
    }
    m = calloc((size_t)nb * (size_t)E, sizeof *m);
    n = calloc((size_t)nb * (size_t)E, sizeof *n);
    if (!m || !n) {
        rc = tmoe_errorf(err, TMOE_ENOMEM, "out of memory");
        goto out;
    }
    for (int k = 0; k < g->nrows; k++) {
        const tmoe_analyze_row *r = row_of(a, g, k);
        int b = axis_pos(&ax, r->num[TMOE_RL_BATCH_IDX]);
        if (b < 0) continue;
        for (int e = 0; e < r->nlist[TMOE_RL_BIASES] && e < E; e++)
            if (isfinite(r->list[TMOE_RL_BIASES][e])) {
                m[(size_t)b * (size_t)E + (size_t)e] += r->list[TMOE_RL_BIASES][e];
                n[(size_t)b * (size_t)E + (size_t)e]++;
            }
    }
    for (size_t i = 0; i < (size_t)nb * (size_t)E; i++) m[i] = n[i] ? m[i] / n[i] : NAN;
    snprintf(title, sizeof title, "Learned biases, %s, %s", short_name(ss, g->r.strategy),
             short_name(sw, w));
    rc = fig_heat(c, "biases", w, g->r.strategy, title, "expert", "batch", NULL, nb, E, m, 1,
                  "bias", err);
out:
    free(ax.idx);
    free(sum);
    free(cnt);
    free(m);
    free(n);
    return rc;
}

static int fig_ttha(figctx *c, const char *w, tmoe_error *err) {
    const tmoe_analysis *a = c->a;
    for (int s = 0; s < a->nstrategies && s < TMOE_ANALYZE_MAX_FIG_NAMES; s++) {
        const analysis_group *g = grp(a, w, a->strategies[s]);
        int rc = g ? fig_ttha_group(c, w, g, err) : TMOE_OK;
        if (rc) return rc;
    }
    return TMOE_OK;
}

/* Pareto scatter: x = metric or 1 - top-k agreement, y = energy per token; frontier drawn. */
static int fig_pareto(figctx *c, const char *w, int fidelity, tmoe_error *err) {
    const tmoe_analysis *a = c->a;
    char title[300], sw[GP_LABEL + 4];
    int rc = fig_begin(c, fidelity ? "pareto_fidelity" : "pareto_latency", w, NULL, err);
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
    for (int i = 0; i < nf; i++) fprintf(c->dat, "%.9g %.9g\n", px[idx[i]], py[idx[i]]);
    dat_block_end(c);
    snprintf(title, sizeof title, "Energy vs %s, %s", fidelity ? "fidelity" : "latency",
             short_name(sw, w));
    if ((rc = gp_begin(c, title,
                       fidelity ? "1 - top-k agreement with baseline" : "latency mean (ms)",
                       "energy per token (J)", err)))
        return rc;
    gp_ranges(c, 1, 0);
    fprintf(c->gp,
            "plot \\\n  '%s.dat' index %d using 1:2 with lines lw 1 dt 2 lc rgb '#777777' title "
            "'Pareto frontier', \\\n",
            c->name, n);
    for (int i = 0; i < n; i++) {
        fprintf(c->gp, "  '%s.dat' index %d using 1:2 with points pt 7 ps 2.4 lc rgb '%s'", c->name,
                i, strategy_color(sname[i]));
        gp_title(c->gp, sname[i]);
        fputs(i + 1 < n ? ", \\\n" : "\n", c->gp);
    }
    return gp_end(c, err);
}

/* ---- rendering -------------------------------------------------------------------------- */

/* Run PROG [-e EXPR] SCRIPT in directory dir (NULL: here) with stdin and stdout on
 * /dev/null and stderr into the file err_path (NULL: /dev/null); no shell is involved, so
 * nothing in a name or path is interpreted. Returns the wait status, or -1 when the process
 * could not be started. */
static int run_prog(const char *dir, const char *prog, const char *expr, const char *script,
                    const char *err_path) {
    int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null_fd < 0) return -1;
    int err_fd =
        err_path ? open(err_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644) : null_fd;
    if (err_fd < 0) {
        close(null_fd);
        return -1;
    }
    char *argv[5];
    int k = 0;
    argv[k++] = (char *)prog;
    if (expr) {
        argv[k++] = (char *)"-e";
        argv[k++] = (char *)expr;
    }
    if (script) argv[k++] = (char *)script;
    argv[k] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        /* child: only calls that are safe after fork, then exec */
        if (dup2(null_fd, 0) < 0 || dup2(null_fd, 1) < 0 || dup2(err_fd, 2) < 0) _exit(126);
        if (dir && chdir(dir) != 0) _exit(126);
        execvp(prog, argv);
        _exit(127);
    }
    if (err_fd != null_fd) close(err_fd);
    close(null_fd);
    if (pid < 0) return -1;
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) return -1;
    return st;
}

static int gnuplot_available(const char *prog) {
    int st = run_prog(NULL, prog, "exit", NULL, NULL);
    return st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static void render_all(figctx *c, char **names, int n) {
    static const struct {
        unsigned bit;
        const char *ext, *expr;
    } fmts[] = {{TMOE_FMT_PNG, "png", "fmt='png'"},
                {TMOE_FMT_PDF, "pdf", "fmt='pdf'"},
                {TMOE_FMT_SVG, "svg", "fmt='svg'"}};
    for (int i = 0; i < n; i++)
        for (int f = 0; f < 3; f++) {
            if (!(c->cfg->formats & fmts[f].bit)) continue;
            char errp[4400], script[300];
            snprintf(errp, sizeof errp, "%s/%s.%s.stderr", c->dir, names[i], fmts[f].ext);
            /* the script is named relative to the figures directory gnuplot runs in */
            snprintf(script, sizeof script, "%s.gp", names[i]);
            int st = run_prog(c->dir, c->cfg->gnuplot, fmts[f].expr, script, errp);
            char msg[600] = "";
            FILE *e = fopen(errp, "r");
            if (e) {
                size_t k = fread(msg, 1, sizeof msg - 1, e);
                msg[k] = '\0';
                fclose(e);
            }
            for (char *p = msg; *p; p++) /* one line, nothing for the terminal to interpret */
                if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = ' ';
            int ok = st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0 && msg[0] == '\0';
            if (ok) {
                remove(errp);
                c->res->n_rendered++;
            } else {
                if (!msg[0])
                    snprintf(msg, sizeof msg, "%s",
                             st == -1 ? "gnuplot could not be started" : "gnuplot failed");
                c->res->n_failed++;
                if (!c->res->first_failure[0])
                    snprintf(c->res->first_failure, sizeof c->res->first_failure, "%s.gp (%s): %s",
                             names[i], fmts[f].ext, msg);
                tmoe_log(TMOE_LOG_WARN, "figure %s.%s: %s", names[i], fmts[f].ext, msg);
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
    int rc = ensure_dir(outdir, err);
    snprintf(c.dir, sizeof c.dir, "%s/figures", outdir);
    if (!rc) rc = ensure_dir(c.dir, err);
    /* a figure per workload (and per TTHA strategy) for the first names only: a log with
     * thousands of names must not write thousands of files; the tables have every group */
    int nfw =
        a->nworkloads < TMOE_ANALYZE_MAX_FIG_NAMES ? a->nworkloads : TMOE_ANALYZE_MAX_FIG_NAMES;
    if (a->nworkloads > nfw || a->nstrategies > TMOE_ANALYZE_MAX_FIG_NAMES)
        tmoe_log(TMOE_LOG_WARN,
                 "%d workloads and %d strategies: figures show the first %d of each (the tables "
                 "have all)",
                 a->nworkloads, a->nstrategies, TMOE_ANALYZE_MAX_FIG_NAMES);
    for (int w = 0; w < nfw && !rc; w++) {
        const char *wl = a->workloads[w];
        char title[300], sw[GP_LABEL + 4];
        short_name(sw, wl);
        snprintf(title, sizeof title, "Power, %s", sw);
        rc = fig_series(&c, "power", wl, title, "average power (W)", TMOE_RL_POWER_AVG_W, -1, err);
        snprintf(title, sizeof title, "Temperature, %s (solid GPU, dashed HBM)", sw);
        if (!rc)
            rc = fig_series(&c, "temperature", wl, title, "peak temperature (C)",
                            TMOE_RL_GPU_TEMP_PEAK_C, TMOE_RL_MEM_TEMP_C, err);
        if (!rc) rc = fig_cdf(&c, wl, err);
        static const char *const pl[] = {"p50", "p90", "p99"};
        const char *pw[] = {wl, wl, wl};
        snprintf(title, sizeof title, "Latency percentiles, %s", sw);
        if (!rc)
            rc = fig_bars(&c, "latency_pct", wl, title, "batch latency (ms)", pl, pw, 3, bar_pct_fn,
                          err);
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
        rc = fig_bars(&c, bars[b].name, NULL, bars[b].title, tmoe_metric_label(bars[b].m),
                      (const char *const *)a->workloads, (const char *const *)a->workloads, nfw,
                      bar_metric_fn, err);
    }
    if (c.dat) fig_drop(&c);
    if (c.gp) tmoe_atomic_abort(&c.gp_af);
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
        for (int i = 0; i < c.nnames; i++) free(c.names[i]);
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
