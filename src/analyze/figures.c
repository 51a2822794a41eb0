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
#include <limits.h>
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
    double w_in, h_in; /* size of the current figure in inches (0: 3.5 x 2.6, one column) */
    int panels, panel, panel_cols, panel_rows; /* small multiples: count, next, grid */
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
    c->w_in = c->h_in = 0.0;
    c->panels = c->panel = 0;
    return TMOE_OK;
}

/* The header rows of a .dat: what the figure is and its columns (gnuplot skips lines that
 * start with '#'). Any text from a log passes through dat_comment. */
__attribute__((format(printf, 2, 3))) static void dat_head(figctx *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("# ", c->dat);
    vfprintf(c->dat, fmt, ap);
    fputc('\n', c->dat);
    va_end(ap);
}

/* A name from a log inside a .dat comment: control characters (a newline would end the
 * comment) become '?'. */
static void dat_name(figctx *c, const char *s) {
    for (; *s; s++) fputc((unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s, c->dat);
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
    double w = c->w_in > 0.0 ? c->w_in : 3.5, h = c->h_in > 0.0 ? c->h_in : 2.6;
    /* fs: the base font size of the format, for scripts that scale their text */
    fprintf(g,
            "# %s (thermoe analyze). Data: %s.dat. Restyle freely, then render with\n"
            "#   gnuplot -e \"fmt='png'\" %s.gp     (fmt: png, pdf or svg)\n"
            "if (!exists(\"fmt\")) fmt = 'png'\n"
            "if (fmt eq 'pdf') {\n"
            "  fs = 7\n"
            "  set terminal pdfcairo size %.2fin,%.2fin font 'Sans,7' linewidth 1.5\n"
            "} else { if (fmt eq 'svg') {\n"
            "  fs = 13\n"
            "  set terminal svg size %d,%d font 'Sans,13' linewidth 1.5 background '#ffffff'\n"
            "} else {\n"
            "  fs = 19\n"
            "  set terminal pngcairo size %d,%d font 'Sans,19' linewidth 2.5\n"
            "} }\n"
            "set output '%s.'.fmt\n"
            "set termoption noenhanced\n"
            "# fN: the font at 0.N times the base size fs, for small multiples and keys\n"
            "f55 = sprintf(',%%g', fs * 0.55)\n"
            "f6 = sprintf(',%%g', fs * 0.6)\n"
            "f65 = sprintf(',%%g', fs * 0.65)\n"
            "f7 = sprintf(',%%g', fs * 0.7)\n"
            "f75 = sprintf(',%%g', fs * 0.75)\n"
            "f8 = sprintf(',%%g', fs * 0.8)\n"
            "f85 = sprintf(',%%g', fs * 0.85)\n"
            "f9 = sprintf(',%%g', fs * 0.9)\n",
            c->name, c->name, c->name, w, h, (int)lround(w * 200), (int)lround(h * 200),
            (int)lround(w * 300), (int)lround(h * 300), c->name);
    fputs("set title ", g);
    gp_str(g, title, GP_TITLE);
    if (c->simulated) fputs(".' (simulated telemetry)'", g);
    fputs("\nxl = ", g); /* the axis labels, also for the panels of small multiples */
    gp_str(g, xlabel, GP_TITLE);
    fputs("\nyl = ", g);
    gp_str(g, ylabel, GP_TITLE);
    fputs("\nset xlabel xl\nset ylabel yl", g);
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

/* Seconds since the first batch of its repeat for each row of g (in g's row order), NAN
 * where the row's time is unknown; NULL when out of memory. Rows of one repeat are one
 * contiguous range (unit_of_row never decreases). */
static double *group_elapsed(const tmoe_analysis *a, const analysis_group *g) {
    double *el = malloc(sizeof *el * (size_t)(g->nrows + 1));
    if (!el) return NULL;
    for (int lo = 0, hi; lo < g->nrows; lo = hi) {
        double t0 = INFINITY;
        for (hi = lo; hi < g->nrows && g->unit_of_row[hi] == g->unit_of_row[lo]; hi++) {
            double t = row_of(a, g, hi)->num[TMOE_RL_TIME];
            if (isfinite(t) && t < t0) t0 = t;
        }
        for (int k = lo; k < hi; k++) {
            double t = row_of(a, g, k)->num[TMOE_RL_TIME];
            el[k] = isfinite(t) && isfinite(t0) ? t - t0 : NAN;
        }
    }
    return el;
}

/* Whether any row of the groups has a known time: the time series then use seconds. */
static int groups_have_time(const tmoe_analysis *a, const analysis_group *const *gs, int ng) {
    for (int i = 0; i < ng; i++)
        for (int k = 0; gs[i] && k < gs[i]->nrows; k++)
            if (isfinite(row_of(a, gs[i], k)->num[TMOE_RL_TIME])) return 1;
    return 0;
}

/* Mean of column col at each batch index of the axis over the group's repeats: writes "x
 * value" lines, x the batch index, or with el (group_elapsed) the mean seconds since the
 * repeat's first batch at that index (indices with no known time are left out). sum, cnt,
 * sumx and cntx have ax->n entries. Returns points written. */
static int series_by_batch(figctx *c, const analysis_group *g, int col, const batch_axis *ax,
                           const double *el, double *sum, int *cnt, double *sumx, int *cntx) {
    const tmoe_analysis *a = c->a;
    for (int i = 0; i < ax->n; i++) {
        sum[i] = sumx[i] = 0.0;
        cnt[i] = cntx[i] = 0;
    }
    for (int k = 0; k < g->nrows; k++) {
        const tmoe_analyze_row *r = row_of(a, g, k);
        int i = axis_pos(ax, r->num[TMOE_RL_BATCH_IDX]);
        double v = r->num[col];
        if (i < 0 || !isfinite(v)) continue;
        cnt[i]++; /* running mean: finite for any finite values (a sum could overflow) */
        sum[i] += v / cnt[i] - sum[i] / cnt[i];
        if (el && isfinite(el[k])) {
            cntx[i]++;
            sumx[i] += el[k] / cntx[i] - sumx[i] / cntx[i];
        }
    }
    int n = 0;
    for (int i = 0; i < ax->n; i++) {
        if (!cnt[i] || (el && !cntx[i])) continue;
        double x = el ? sumx[i] : ax->idx[i], v = sum[i];
        fprintf(c->dat, "%.17g %.9g\n", x, v);
        range_add(c, x, v);
        n++;
    }
    return n;
}

/* Scratch for series_by_batch over an axis of n indices. */
typedef struct {
    double *sum, *sumx;
    int *cnt, *cntx;
} series_buf;

static int series_buf_init(series_buf *b, int n) {
    b->sum = malloc(sizeof *b->sum * (size_t)(n + 1));
    b->sumx = malloc(sizeof *b->sumx * (size_t)(n + 1));
    b->cnt = malloc(sizeof *b->cnt * (size_t)(n + 1));
    b->cntx = malloc(sizeof *b->cntx * (size_t)(n + 1));
    return b->sum && b->sumx && b->cnt && b->cntx ? 0 : -1;
}

static void series_buf_free(series_buf *b) {
    free(b->sum);
    free(b->sumx);
    free(b->cnt);
    free(b->cntx);
}

/* A tic step of 1, 2 or 5 times a power of ten giving at most about max intervals over
 * [lo, hi]; 0 when the span is empty or not finite. */
static double nice_step(double lo, double hi, int max) {
    double span = hi - lo;
    if (!(span > 0.0) || !isfinite(span)) return 0.0;
    double p = pow(10.0, floor(log10(span / max)));
    static const double m[] = {1.0, 2.0, 5.0, 10.0};
    for (int i = 0; i < 4; i++)
        if (span / (m[i] * p) <= max) return m[i] * p;
    return 10.0 * p;
}

/* Start a grid of n panels (small multiples) under one title; each panel then sets its own
 * title and plots (gp_panel_title). Text is scaled down from the format's base size fs, and
 * the x axis gets few tics so that small panels stay legible. */
static void gp_multiplot(figctx *c, const char *title, int n) {
    int cols = n <= 3 ? n : n == 4 ? 2 : 3, rows = (n + cols - 1) / cols;
    fputs("unset title\nunset key\n"
          "set tics font f7\n"
          "set xlabel font f75\n"
          "set ylabel font f75\n",
          c->gp);
    double st = nice_step(c->xmin, c->xmax, 3);
    if (st > 0.0) fprintf(c->gp, "set xtics %.9g\n", st);
    c->panel_cols = cols;
    c->panel_rows = rows;
    c->panels = n;
    c->panel = 0;
    fprintf(c->gp, "set multiplot layout %d,%d title ", rows, cols);
    gp_str(c->gp, title, GP_TITLE);
    if (c->simulated) fputs(".' (simulated telemetry)'", c->gp);
    fputs(" font f9\n", c->gp);
}

/* The title of the next panel of a grid; the axis labels only on the left column and the
 * bottom panel of each column. */
static void gp_panel_title(figctx *c, const char *t) {
    if (c->panels > 0) {
        int p = c->panel++, col = p % c->panel_cols;
        fprintf(c->gp, "set xlabel %s\nset ylabel %s\n",
                p + c->panel_cols >= c->panels ? "xl" : "''", col == 0 ? "yl" : "''");
    }
    fputs("set title ", c->gp);
    gp_str(c->gp, t, GP_LABEL);
    fputs(" font f8\n", c->gp);
}

/* ---- figure kinds ----------------------------------------------------------------------- */

/* Time series of one or two columns, small multiples: one panel per strategy (same axes in
 * every panel), the second column dashed (the figure title says which is which). x is the
 * mean time since the repeat's first batch (s), or the batch index for logs without time. */
static int fig_series(figctx *c, const char *kind, const char *w, const char *title,
                      const char *ylabel, int col, int col2, tmoe_error *err) {
    const tmoe_analysis *a = c->a;
    int rc = fig_begin(c, kind, w, NULL, err);
    if (rc) return rc;
    const analysis_group **gs = malloc(sizeof *gs * (size_t)(a->nstrategies + 1));
    batch_axis ax = {0};
    int use_time = 0;
    if (gs) {
        for (int s = 0; s < a->nstrategies; s++) gs[s] = grp(a, w, a->strategies[s]);
        if (axis_build(a, gs, a->nstrategies, &ax)) ax.idx = NULL;
        use_time = groups_have_time(a, gs, a->nstrategies);
    }
    free(gs);
    series_buf sb = {0};
    if (!ax.idx || series_buf_init(&sb, ax.n)) {
        free(ax.idx);
        series_buf_free(&sb);
        fig_drop(c);
        return tmoe_errorf(err, TMOE_ENOMEM, "out of memory");
    }
    dat_head(c, "%s per strategy: one block (index) per strategy%s, in the order of the script",
             ylabel, col2 >= 0 ? " and column (solid, then dashed)" : "");
    dat_head(c, "%s %s (mean over repeats at each batch index)",
             use_time ? "time_s(since_the_repeat's_first_batch)" : "batch_idx", "value");
    const char *sname[32];
    int blk_col[32], blk_panel[32], nb = 0, np = 0;
    for (int s = 0; s < a->nstrategies && np < 30; s++) {
        const analysis_group *g = grp(a, w, a->strategies[s]);
        if (!g) continue;
        double *el = use_time ? group_elapsed(a, g) : NULL;
        if (use_time && !el) {
            rc = tmoe_errorf(err, TMOE_ENOMEM, "out of memory");
            break;
        }
        int any = 0;
        for (int which = 0; which < 2; which++) {
            int cl = which ? col2 : col;
            if (cl < 0) continue;
            if (series_by_batch(c, g, cl, &ax, el, sb.sum, sb.cnt, sb.sumx, sb.cntx) > 0) {
                dat_block_end(c);
                sname[nb] = g->r.strategy;
                blk_panel[nb] = np;
                blk_col[nb++] = which;
                any = 1;
            }
        }
        free(el);
        np += any;
    }
    free(ax.idx);
    series_buf_free(&sb);
    if (rc || nb == 0) {
        fig_drop(c);
        return rc;
    }
    if ((rc = gp_begin(c, title, use_time ? "time in combination (s)" : "batch", ylabel, err)))
        return rc;
    gp_ranges(c, 1, 0);
    gp_multiplot(c, title, np);
    for (int p = 0, i = 0; p < np; p++) {
        const char *sn = NULL;
        for (int k = 0; k < nb; k++)
            if (blk_panel[k] == p) sn = sname[k];
        gp_panel_title(c, sn);
        fputs("plot \\\n", c->gp);
        int first = 1;
        for (; i < nb && blk_panel[i] == p; i++) {
            fprintf(c->gp, "%s  '%s.dat' index %d using 1:2 with lines lw 1.5 dt %d lc rgb '%s'",
                    first ? "" : ", \\\n", c->name, i, blk_col[i] ? 2 : 1,
                    strategy_color(sname[i]));
            gp_title(c->gp, NULL);
            first = 0;
        }
        fputc('\n', c->gp);
    }
    fputs("unset multiplot\n", c->gp);
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
    dat_head(c, "%s: one block (index) per strategy, in the order of the script", ylabel);
    dat_head(c, "x_position value ci_lo ci_hi (NaN: no CI)");
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
    double sc = tmoe_metric_scale(bar_metric);
    *lo = sc * m->ci_lo;
    *hi = sc * m->ci_hi;
    return sc * m->mean;
}

static double bar_pct_fn(const tmoe_analysis *a, const analysis_group *g, int gi, double *lo,
                         double *hi) {
    (void)a;
    *lo = *hi = NAN;
    return gi == 0 ? g->r.lat_p50 : gi == 1 ? g->r.lat_p90 : g->r.lat_p99;
}

/* Latency CCDF: the fraction of batches at least as slow as x, log scale, so the tail
 * (p99, p99.9) is as readable as the median. For sorted latencies v[0..n) the points are
 * (v[k], (n - k) / n): from 1 down to 1/n, never 0 (a log axis has no 0). */
static int fig_ccdf(figctx *c, const char *w, tmoe_error *err) {
    const tmoe_analysis *a = c->a;
    int rc = fig_begin(c, "latency_ccdf", w, NULL, err);
    if (rc) return rc;
    dat_head(c, "latency CCDF: one block (index) per strategy, in the order of the script");
    dat_head(c, "latency_ms fraction_of_batches_at_least_as_slow");
    const char *sname[64];
    int ns = 0, nmax = 1;
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
            double y = (double)(n - k) / n;
            fprintf(c->dat, "%.9g %.9g\n", v[k], y);
            range_add(c, v[k], y);
        }
        free(v);
        if (n) {
            dat_block_end(c);
            sname[ns++] = g->r.strategy;
            if (n > nmax) nmax = n;
        }
    }
    if (!ns) {
        fig_drop(c);
        return TMOE_OK;
    }
    char title[300], sw[GP_LABEL + 4];
    snprintf(title, sizeof title, "Latency CCDF, %s", short_name(sw, w));
    if ((rc = gp_begin(c, title, "batch latency (ms)", "fraction of batches >= latency", err)))
        return rc;
    c->ymin = c->ymax = NAN; /* y set below */
    gp_ranges(c, 1, 0);
    fprintf(c->gp, "set logscale y\nset yrange [%.9g:1.3]\nset format y '%%g'\nplot \\\n",
            0.5 / nmax);
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
    dat_head(c, "%s: column row value (%s)", title, cblabel);
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
        if (!rc) dat_head(c, "one block per strategy: expert total_time_ms");
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

/* The adapter over a repeat of g: every expert's learned bias against time (one line per
 * expert, coloured by expert index) and, when logged, the gradient norm of each update and
 * the learning rate, as small multiples. Each repeat's rows are a separate line (a blank
 * line between them in the .dat). Nothing when the log has no biases, norms or rates. */
static int fig_adapter(figctx *c, const char *w, const analysis_group *g, const double *el,
                       tmoe_error *err) {
    const tmoe_analysis *a = c->a;
    int E = list_len(a, g, TMOE_RL_BIASES), have_norm = 0, have_lr = 0, have_bias = 0;
    for (int k = 0; k < g->nrows; k++) {
        const tmoe_analyze_row *r = row_of(a, g, k);
        have_norm |= isfinite(r->num[TMOE_RL_TTHA_GRAD_NORM]);
        have_lr |= isfinite(r->num[TMOE_RL_TTHA_LR]);
        for (int e = 0; e < r->nlist[TMOE_RL_BIASES]; e++)
            have_bias |= isfinite(r->list[TMOE_RL_BIASES][e]);
    }
    if (!have_bias && !have_norm && !have_lr) return TMOE_OK;
    if (E > 0 && (size_t)g->nrows * (size_t)E > HEAT_MAX_CELLS) {
        char fname[256]; /* the names themselves may hold anything: say it by file name */
        fig_file_name(c, fname, sizeof fname, "ttha_adapter", w, g->r.strategy);
        tmoe_log(TMOE_LOG_WARN, "figure %s: %d batches x %d experts is too many points; left out",
                 fname, g->nrows, E);
        return TMOE_OK;
    }
    int rc = fig_begin(c, "ttha_adapter", w, g->r.strategy, err);
    if (rc) return rc;
    const char *xl = el ? "time_s(since_the_repeat's_first_batch)" : "batch_idx";
    dat_head(c,
             "TTHA adapter over the run. index 0: %s bias expert (one line per expert and "
             "repeat); index 1: %s grad_norm; index 2: %s learning_rate",
             xl, xl, xl);
    double bmin = INFINITY, bmax = -INFINITY, nmin = INFINITY, nmax = -INFINITY;
    double lmin = INFINITY, lmax = -INFINITY;
    int blocks[3] = {0, 0, 0};
    for (int part = 0; part < 3; part++) {
        int lines = 0;
        for (int e = 0; e < (part == 0 ? E : 1); e++)
            for (int lo = 0, hi; lo < g->nrows; lo = hi) {
                for (hi = lo + 1; hi < g->nrows && g->unit_of_row[hi] == g->unit_of_row[lo]; hi++)
                    ;
                int n = 0;
                for (int k = lo; k < hi; k++) {
                    const tmoe_analyze_row *r = row_of(a, g, k);
                    double x = el ? el[k] : r->num[TMOE_RL_BATCH_IDX];
                    double v = part == 1                      ? r->num[TMOE_RL_TTHA_GRAD_NORM]
                               : part == 2                    ? r->num[TMOE_RL_TTHA_LR]
                               : e < r->nlist[TMOE_RL_BIASES] ? r->list[TMOE_RL_BIASES][e]
                                                              : NAN;
                    if (!isfinite(x) || !isfinite(v)) continue;
                    if (part == 0)
                        fprintf(c->dat, "%.9g %.9g %d\n", x, v, e);
                    else
                        fprintf(c->dat, "%.9g %.9g\n", x, v);
                    double *mn = part == 0 ? &bmin : part == 1 ? &nmin : &lmin;
                    double *mx = part == 0 ? &bmax : part == 1 ? &nmax : &lmax;
                    *mn = fmin(*mn, v);
                    *mx = fmax(*mx, v);
                    range_add(c, x, NAN);
                    n++;
                }
                if (n) {
                    fputc('\n', c->dat); /* a new line per expert and repeat */
                    lines++;
                }
            }
        if (!lines) fputs("NaN NaN NaN\n", c->dat); /* keeps the index numbering */
        blocks[part] = lines;
        dat_block_end(c);
    }
    if (!blocks[0] && !blocks[1] && !blocks[2]) {
        fig_drop(c);
        return TMOE_OK;
    }
    char title[300], sw[GP_LABEL + 4], ss[GP_LABEL + 4];
    snprintf(title, sizeof title, "TTHA adapter, %s, %s", short_name(ss, g->r.strategy),
             short_name(sw, w));
    if ((rc = gp_begin(c, title, el ? "time in combination (s)" : "batch", "", err))) return rc;
    gp_ranges(c, 1, 0);
    int np = (blocks[0] > 0) + (blocks[1] > 0) + (blocks[2] > 0);
    gp_multiplot(c, title, np);
    for (int part = 0; part < 3; part++) {
        if (!blocks[part]) continue;
        double lo = part == 0 ? bmin : part == 1 ? nmin : lmin;
        double hi = part == 0 ? bmax : part == 1 ? nmax : lmax;
        pad(&lo, &hi, 0.06);
        if (isfinite(lo) && isfinite(hi)) fprintf(c->gp, "set yrange [%.9g:%.9g]\n", lo, hi);
        if (part == 0) {
            gp_panel_title(c, "bias per expert (colour: expert index)");
            fprintf(c->gp,
                    "set ylabel 'bias (logit units)'\nset palette defined (0 '#0072B2', "
                    "0.5 '#009E73', 1 '#E69F00')\nunset colorbox\nset cbrange [0:%d]\n"
                    "plot '%s.dat' index 0 using 1:2:3 with lines lw 1 lc palette "
                    "notitle\n",
                    E > 1 ? E - 1 : 1, c->name);
        } else {
            gp_panel_title(c, part == 1 ? "gradient norm of each update" : "learning rate");
            fprintf(c->gp,
                    "set ylabel '%s'\nplot '%s.dat' index %d using 1:2 with lines lw 1.5 lc rgb "
                    "'%s' notitle\n",
                    part == 1 ? "L2 norm" : "rate", c->name, part,
                    part == 1 ? "#000000" : "#777777");
        }
    }
    fputs("unset multiplot\n", c->gp);
    return gp_end(c, err);
}

/* TTHA loss terms of one group as small multiples (one panel per logged term, x in
 * seconds), then the adapter's biases (fig_adapter). Nothing without TTHA columns. */
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
    series_buf sb = {0};
    double *el = NULL;
    int have[6], nh = 0, rc = TMOE_OK;
    if (axis_build(a, &g, 1, &ax)) return tmoe_errorf(err, TMOE_ENOMEM, "out of memory");
    int nb = ax.n;
    if (nb == 0) goto out;
    if (groups_have_time(a, &g, 1) && !(el = group_elapsed(a, g))) {
        rc = tmoe_errorf(err, TMOE_ENOMEM, "out of memory");
        goto out;
    }
    char title[300], sw[GP_LABEL + 4], ss[GP_LABEL + 4];
    if ((rc = fig_begin(c, "ttha_loss", w, g->r.strategy, err))) goto out;
    if (series_buf_init(&sb, nb)) {
        fig_drop(c);
        rc = tmoe_errorf(err, TMOE_ENOMEM, "out of memory");
        goto out;
    }
    dat_head(c, "TTHA loss terms: one block per logged term (power, temperature, latency "
                "penalty, throughput bonus, fidelity, total; absent ones left out)");
    dat_head(c, "%s loss (mean over repeats at each batch index)",
             el ? "time_s(since_the_repeat's_first_batch)" : "batch_idx");
    double ylo[6], yhi[6];
    for (int k = 0; k < 6; k++) {
        double y0 = c->ymin, y1 = c->ymax;
        c->ymin = INFINITY;
        c->ymax = -INFINITY;
        have[k] = series_by_batch(c, g, cols[k], &ax, el, sb.sum, sb.cnt, sb.sumx, sb.cntx) > 0;
        ylo[k] = c->ymin;
        yhi[k] = c->ymax;
        c->ymin = fmin(y0, c->ymin);
        c->ymax = fmax(y1, c->ymax);
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
    if ((rc = gp_begin(c, title, el ? "time in combination (s)" : "batch", "loss term", err)))
        goto out;
    gp_ranges(c, 1, 0);
    gp_multiplot(c, title, nh);
    for (int k = 0, i = 0; k < 6; k++) {
        if (!have[k]) continue;
        gp_panel_title(c, lbl[k]);
        pad(&ylo[k], &yhi[k], 0.06); /* each term on its own scale */
        if (isfinite(ylo[k]) && isfinite(yhi[k]))
            fprintf(c->gp, "set yrange [%.9g:%.9g]\n", ylo[k], yhi[k]);
        fprintf(c->gp, "plot '%s.dat' index %d using 1:2 with lines lw 1.5 lc rgb '%s' notitle\n",
                c->name, i, col_color[k]);
        i++;
    }
    fputs("unset multiplot\n", c->gp);
    if ((rc = gp_end(c, err))) goto out;
    rc = fig_adapter(c, w, g, el, err);
out:
    free(ax.idx);
    free(el);
    series_buf_free(&sb);
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
    dat_head(c,
             "one block per strategy: %s energy_per_token_mJ; the last block: the Pareto "
             "frontier",
             fidelity ? "1-topk_agreement" : "latency_mean_ms");
    for (int s = 0; s < a->nstrategies && n < 64; s++) {
        const analysis_group *g = grp(a, w, a->strategies[s]);
        if (!g) continue;
        double x =
            fidelity ? 1.0 - g->r.m[TMOE_M_TOPK_AGREEMENT].mean : g->r.m[TMOE_M_LATENCY_MEAN].mean;
        double y =
            tmoe_metric_scale(TMOE_M_ENERGY_PER_TOKEN) * g->r.m[TMOE_M_ENERGY_PER_TOKEN].mean;
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
                       "energy per token (mJ)", err)))
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

/* ---- headline: forest plot of the change against the baseline ------------------------- */

#define FOREST_MAX_ROWS 120 /* workload x strategy rows drawn; the tables have every group */

static const struct {
    tmoe_metric m;
    const char *title;
    int pct; /* 1: the % change (perplexity), 0: the difference in the metric's unit */
} forest_panels[] = {
    {TMOE_M_ENERGY_PER_TOKEN, "energy per token (mJ)", 0},
    {TMOE_M_NLL, "perplexity (%)", 1},
    {TMOE_M_LATENCY_P99, "p99 latency (ms)", 0},
    {TMOE_M_GPU_TEMP_PEAK, "peak GPU temperature (C)", 0},
    {TMOE_M_MEM_TEMP_PEAK, "peak HBM temperature (C)", 0},
};
#define FOREST_PANELS ((int)(sizeof forest_panels / sizeof *forest_panels))

/* Repeats behind a comparison: pairs when paired, else the smaller side. */
static int forest_units(const tmoe_group_result *base, const tmoe_group_result *g, tmoe_metric m) {
    const tmoe_metric_result *r = &g->m[m];
    if (r->paired) return r->n_pairs;
    int nb = base ? base->m[m].n : 0;
    return r->n < nb ? r->n : nb;
}

static long rgb_of(const char *hex) {
    return strtol(hex + 1, NULL, 16);
}

/* One panel per metric (energy per token in mJ, perplexity in %, p99 latency in ms, peak
 * GPU and HBM temperature in C), one row per workload x strategy: the change against the
 * baseline of the workload (paired by repeat; perplexity paired on the same tokens) with
 * its 95% CI where there are 3+ repeats. With fewer the title says effect sizes only and
 * no CI is drawn. Routing-unchanged strategies are listed, with no point. */
static int fig_forest(figctx *c, int nfw, tmoe_error *err) {
    const tmoe_analysis *a = c->a;
    const analysis_group *rows[FOREST_MAX_ROWS];
    const tmoe_group_result *bases[FOREST_MAX_ROWS];
    int nr = 0, more = 0;
    for (int w = 0; w < nfw; w++)
        for (int s = 0; s < a->nstrategies && s < TMOE_ANALYZE_MAX_FIG_NAMES; s++) {
            const analysis_group *g = grp(a, a->workloads[w], a->strategies[s]);
            if (!g || strcmp(g->r.strategy, a->cfg.baseline) == 0) continue;
            if (nr == FOREST_MAX_ROWS) {
                more++;
                continue;
            }
            bases[nr] = tmoe_analysis_find(a, g->r.workload, a->cfg.baseline);
            rows[nr++] = g;
        }
    if (nr == 0) return TMOE_OK;
    if (more)
        tmoe_log(TMOE_LOG_WARN, "forest plot: %d more workload x strategy rows than the %d drawn",
                 more, FOREST_MAX_ROWS);
    int rc = fig_begin(c, "forest", NULL, NULL, err);
    if (rc) return rc;
    c->w_in = 7.0;
    c->h_in = fmin(20.0, fmax(2.6, 1.1 + 0.24 * nr));
    dat_head(c, "Change against the baseline of the same workload, one block (index) per panel:");
    for (int p = 0; p < FOREST_PANELS; p++)
        dat_head(c, "  index %d: %s, %s", p, tmoe_metric_name(forest_panels[p].m),
                 forest_panels[p].pct ? "perplexity change in % (paired on the same tokens)"
                                      : forest_panels[p].title);
    dat_head(c,
             "columns: y estimate ci_lo ci_hi n_repeats rgb (ci NaN: fewer than %d repeats; "
             "estimate NaN: routing unchanged or not logged)",
             TMOE_ANALYZE_MIN_REPEATS);
    for (int r = 0; r < nr; r++) {
        fprintf(c->dat, "# y %d: workload '", nr - 1 - r);
        dat_name(c, rows[r]->r.workload);
        fputs("' strategy '", c->dat);
        dat_name(c, rows[r]->r.strategy);
        fputs(rows[r]->r.routing_unchanged ? "' (routing unchanged)\n" : "'\n", c->dat);
    }
    double lo[FOREST_PANELS], hi[FOREST_PANELS];
    int finite[FOREST_PANELS], hasci[FOREST_PANELS], minu = INT_MAX, anyci = 0;
    for (int p = 0; p < FOREST_PANELS; p++) {
        lo[p] = hi[p] = 0.0; /* 0 stays in range: the line of no change */
        finite[p] = hasci[p] = 0;
        tmoe_metric m = forest_panels[p].m;
        double sc = forest_panels[p].pct ? 1.0 : tmoe_metric_scale(m);
        for (int r = 0; r < nr; r++) {
            const tmoe_metric_result *x = &rows[r]->r.m[m];
            double e = forest_panels[p].pct ? x->pct : sc * x->diff;
            double l = forest_panels[p].pct ? x->pct_lo : sc * x->diff_lo;
            double h = forest_panels[p].pct ? x->pct_hi : sc * x->diff_hi;
            int u = m == TMOE_M_NLL ? x->n_pairs : forest_units(bases[r], &rows[r]->r, m);
            if (rows[r]->r.routing_unchanged) e = l = h = NAN;
            fprintf(c->dat, "%d", nr - 1 - r);
            dat_val(c, e);
            dat_val(c, l);
            dat_val(c, h);
            fprintf(c->dat, " %d %ld\n", u, rgb_of(strategy_color(rows[r]->r.strategy)));
            if (!isfinite(e)) continue;
            finite[p]++;
            if (u < minu) minu = u;
            lo[p] = fmin(lo[p], isfinite(l) ? fmin(l, e) : e);
            hi[p] = fmax(hi[p], isfinite(h) ? fmax(h, e) : e);
            hasci[p] |= isfinite(l) && isfinite(h);
        }
        anyci |= hasci[p];
        dat_block_end(c);
    }
    char title[300];
    if (minu == INT_MAX)
        snprintf(title, sizeof title, "Change vs %s: nothing to compare", a->cfg.baseline);
    else if (minu < TMOE_ANALYZE_MIN_REPEATS)
        snprintf(title, sizeof title,
                 "Change vs %s. %d repeat%s: effect sizes only, no CI or p-value%s",
                 a->cfg.baseline, minu, minu == 1 ? "" : "s",
                 anyci ? " (bars only where 3+ repeats)" : "");
    else
        snprintf(title, sizeof title, "Change vs %s, 95%% CI over repeats (unit = repeat)",
                 a->cfg.baseline);
    if ((rc = gp_begin(c, title, "", "", err))) return rc;
    FILE *g = c->gp;
    /* a NaN CI is no CI: the point is left out of the error-bar plot, not drawn at an edge */
    fprintf(g,
            "set datafile missing 'NaN'\nset yrange [-0.6:%g]\nset grid noytics\nset border 1\n"
            "unset ylabel\n",
            nr - 0.4);
    fputs("unset title\nunset key\nset tics font f75\n", g);
    fprintf(g, "set multiplot layout 1,%d margins 0.24,0.985,%.4f,%.4f spacing 0.012,0 title ",
            FOREST_PANELS, 0.35 / c->h_in, 1.0 - 0.55 / c->h_in);
    gp_str(g, title, GP_TITLE);
    if (c->simulated) fputs(".' (simulated telemetry)'", g);
    fputs(" font f85\n", g);
    for (int p = 0; p < FOREST_PANELS; p++) {
        gp_panel_title(c, forest_panels[p].title);
        if (p == 0) {
            fputs("set ytics (", g);
            for (int r = 0; r < nr; r++) {
                char lbl[300];
                snprintf(lbl, sizeof lbl, "%s%s%s%s", a->nworkloads > 1 ? rows[r]->r.workload : "",
                         a->nworkloads > 1 ? ": " : "", rows[r]->r.strategy,
                         rows[r]->r.routing_unchanged ? " (unchanged)" : "");
                fputs(r ? ", " : "", g);
                gp_str_ex(g, lbl, GP_LABEL, 1);
                fprintf(g, " %d", nr - 1 - r);
            }
            fputs(") nomirror\n", g);
        } else
            fputs("set ytics 0,1 format '' scale 0 nomirror\n", g);
        double l = lo[p], h = hi[p];
        pad(&l, &h, 0.08);
        fprintf(g, "set xrange [%.9g:%.9g]\nset xtics font f65\n", l, h);
        fputs(
            "set arrow 1 from first 0, graph 0 to first 0, graph 1 nohead dt 2 lc rgb '#777777'\n",
            g);
        if (!finite[p]) {
            fputs("set label 1 'not in the log' at graph 0.5, graph 0.5 center\n", g);
            fprintf(g, "plot -1e9 notitle\nunset label 1\n");
            continue;
        }
        fprintf(
            g, "plot '%s.dat' index %d using 2:1:6 with points pt 7 ps 1.1 lc rgb variable notitle",
            c->name, p);
        if (hasci[p])
            fprintf(g,
                    ", \\\n  '' index %d using 2:1:3:4:6 with xerrorbars pt 7 ps 1.1 lw 1.5 lc rgb "
                    "variable notitle",
                    p);
        fputc('\n', g);
    }
    fputs("unset multiplot\n", g);
    return gp_end(c, err);
}

/* ---- whole-run timeline ------------------------------------------------------------------- */

static const tmoe_dataset *tl_ds;
static int tl_cmp(const void *x, const void *y) {
    const tmoe_analyze_row *a = tmoe_dataset_row(tl_ds, *(const int *)x),
                           *b = tmoe_dataset_row(tl_ds, *(const int *)y);
    double ta = a->num[TMOE_RL_TIME], tb = b->num[TMOE_RL_TIME];
    if (ta != tb) return (ta > tb) - (ta < tb);
    return (*(const int *)x > *(const int *)y) - (*(const int *)x < *(const int *)y);
}

#define TIMELINE_MAX_RUNS 8    /* run directories with a timeline figure */
#define TIMELINE_MAX_LABELS 40 /* workload labels on one timeline */

/* Power (top) and GPU / HBM temperature (bottom) over the whole run in seconds since its
 * start, each combination a segment in its strategy's colour, a dotted line and the name
 * where the workload changes: order effects and carry-over show as trends across
 * segments. One figure per run directory (the first TIMELINE_MAX_RUNS). */
static int fig_timeline(figctx *c, int src, int nsrc, tmoe_error *err) {
    const tmoe_analysis *a = c->a;
    const tmoe_dataset *ds = a->ds;
    int nrows = tmoe_dataset_nrows(ds), n = 0;
    int *ord = malloc(sizeof *ord * (size_t)(nrows + 1));
    if (!ord) return tmoe_errorf(err, TMOE_ENOMEM, "out of memory");
    for (int i = 0; i < nrows; i++) {
        const tmoe_analyze_row *r = tmoe_dataset_row(ds, i);
        if (r->source == src && isfinite(r->num[TMOE_RL_TIME])) ord[n++] = i;
    }
    if (n == 0) {
        free(ord);
        return TMOE_OK;
    }
    tl_ds = ds;
    qsort(ord, (size_t)n, sizeof *ord, tl_cmp);
    char tag[32];
    snprintf(tag, sizeof tag, "run%d", src);
    int rc = fig_begin(c, "timeline", nsrc > 1 ? tag : NULL, NULL, err);
    if (rc) {
        free(ord);
        return rc;
    }
    c->w_in = 7.0;
    c->h_in = 3.6;
    fputs("# Whole run: ", c->dat);
    dat_name(c, tmoe_dataset_run(ds, src)->dir);
    fputs("\n", c->dat);
    dat_head(c, "one block (index) per strategy, in the order of the script; within it one "
                "segment per combination (workload x strategy x repeat), a blank line between");
    dat_head(c, "time_s(since_run_start) power_avg_w gpu_temp_peak_c mem_temp_c");
    const char *sname[64];
    int ns = 0;
    double tmin = INFINITY, tmax = -INFINITY, pmin = INFINITY, pmax = -INFINITY;
    double cmin = INFINITY, cmax = -INFINITY;
    int have_mem = 0;
    for (int s = 0; s < a->nstrategies && ns < 64; s++) {
        const char *st = a->strategies[s];
        int pts = 0;
        const tmoe_analyze_row *prev = NULL;
        for (int k = 0; k < n; k++) {
            const tmoe_analyze_row *r = tmoe_dataset_row(ds, ord[k]);
            if (strcmp(r->str[TMOE_RL_STRATEGY], st) != 0) {
                prev = NULL; /* another combination ran in between: a new segment */
                continue;
            }
            if (prev && (strcmp(prev->str[TMOE_RL_WORKLOAD], r->str[TMOE_RL_WORKLOAD]) ||
                         strcmp(prev->str[TMOE_RL_RUN_ID], r->str[TMOE_RL_RUN_ID]) ||
                         !(prev->num[TMOE_RL_REPEAT] == r->num[TMOE_RL_REPEAT])))
                fputc('\n', c->dat);
            else if (!prev && pts)
                fputc('\n', c->dat);
            prev = r;
            double t = r->num[TMOE_RL_TIME], pw = r->num[TMOE_RL_POWER_AVG_W],
                   tg = r->num[TMOE_RL_GPU_TEMP_PEAK_C], tm = r->num[TMOE_RL_MEM_TEMP_C];
            fprintf(c->dat, "%.9g", t);
            dat_val(c, pw);
            dat_val(c, tg);
            dat_val(c, tm);
            fputc('\n', c->dat);
            tmin = fmin(tmin, t);
            tmax = fmax(tmax, t);
            if (isfinite(pw)) pmin = fmin(pmin, pw), pmax = fmax(pmax, pw);
            if (isfinite(tg)) cmin = fmin(cmin, tg), cmax = fmax(cmax, tg);
            if (isfinite(tm)) cmin = fmin(cmin, tm), cmax = fmax(cmax, tm), have_mem = 1;
            pts++;
        }
        if (pts) {
            dat_block_end(c);
            sname[ns++] = st;
        }
    }
    if (!ns || !(isfinite(pmin) || isfinite(cmin))) {
        free(ord);
        fig_drop(c);
        return TMOE_OK;
    }
    char title[300];
    snprintf(title, sizeof title, "Whole run%s%s: power and temperature over time",
             nsrc > 1 ? " " : "", nsrc > 1 ? tag : "");
    if ((rc = gp_begin(c, title, "time since run start (s)", "", err))) {
        free(ord);
        return rc;
    }
    FILE *g = c->gp;
    double t0 = tmin, t1 = tmax;
    pad(&t0, &t1, 0.01);
    /* the same margins in both panels so their time axes line up (the key sits right) */
    fprintf(g,
            "set xrange [%.9g:%.9g]\nunset title\nset lmargin at screen 0.08\n"
            "set rmargin at screen 0.84\n",
            t0, t1);
    fputs("set tics font f7\nset xlabel font f75\n"
          "set ylabel font f75\n",
          g);
    fputs("set multiplot layout 2,1 title ", g);
    gp_str(g, title, GP_TITLE);
    if (c->simulated) fputs(".' (simulated telemetry)'", g);
    fputs(" font f85\n", g);
    /* where the workload changes: a dotted line and its name (at most TIMELINE_MAX_LABELS) */
    int nl = 0;
    const char *wprev = NULL;
    for (int k = 0; k < n && nl < TIMELINE_MAX_LABELS; k++) {
        const tmoe_analyze_row *r = tmoe_dataset_row(c->a->ds, ord[k]);
        const char *wl = r->str[TMOE_RL_WORKLOAD];
        if (wprev && strcmp(wprev, wl) == 0) continue;
        wprev = wl;
        nl++;
        fprintf(g,
                "set arrow %d from first %.9g, graph 0 to first %.9g, graph 1 nohead dt 3 lc rgb "
                "'#999999'\nset label %d ",
                nl, r->num[TMOE_RL_TIME], r->num[TMOE_RL_TIME], nl);
        gp_str(g, wl, GP_TIC);
        fprintf(g,
                " at first %.9g, graph 0.95 left offset 0.3,0 font f55 "
                "tc rgb '#555555'\n",
                r->num[TMOE_RL_TIME]);
    }
    for (int panel = 0; panel < 2; panel++) {
        double y0 = panel ? cmin : pmin, y1 = panel ? cmax : pmax;
        if (!isfinite(y0)) {
            y0 = 0.0;
            y1 = 1.0;
        }
        pad(&y0, &y1, 0.08);
        fprintf(g, "set yrange [%.9g:%.9g]\nset ylabel '%s'\n", y0, y1,
                panel
                    ? (have_mem ? "temperature (C): GPU solid, HBM dashed" : "GPU temperature (C)")
                    : "average power (W)");
        if (panel == 0)
            fputs("set key outside right top vertical font f6\nunset xlabel\n", g);
        else {
            fputs("unset key\nset xlabel 'time since run start (s)'\nunset label\n", g);
        }
        fputs("plot \\\n", g);
        for (int i = 0; i < ns; i++) {
            if (panel == 0) {
                fprintf(g, "  '%s.dat' index %d using 1:2 with lines lw 1.2 lc rgb '%s'", c->name,
                        i, strategy_color(sname[i]));
                gp_title(g, isfinite(pmin) ? sname[i] : NULL);
            } else {
                fprintf(g, "  '%s.dat' index %d using 1:3 with lines lw 1.2 lc rgb '%s' notitle",
                        c->name, i, strategy_color(sname[i]));
                if (have_mem)
                    fprintf(g,
                            ", \\\n  '%s.dat' index %d using 1:4 with lines lw 1 dt 2 lc rgb '%s' "
                            "notitle",
                            c->name, i, strategy_color(sname[i]));
            }
            fputs(i + 1 < ns ? ", \\\n" : "\n", g);
        }
    }
    fputs("unset multiplot\n", g);
    free(ord);
    return gp_end(c, err);
}

/* ---- predicted vs measured energy ---------------------------------------------------------- */

/* Per batch: the cost model's predicted_energy_j against the measured (or simulated)
 * energy_j, both in mJ, one colour per strategy, the line of equality dashed. The axis
 * label names where the measured value came from. */
static int fig_energy_pred(figctx *c, tmoe_error *err) {
    const tmoe_analysis *a = c->a;
    int rc = fig_begin(c, "energy_pred_vs_meas", NULL, NULL, err);
    if (rc) return rc;
    dat_head(c, "energy per batch: one block (index) per strategy, in the order of the script");
    dat_head(c, "predicted_mJ(cost_model predicted_energy_j) measured_mJ(energy_j)");
    const char *sname[64];
    int ns = 0, sim = 0, meas = 0;
    double lo = INFINITY, hi = -INFINITY;
    for (int s = 0; s < a->nstrategies && ns < 64; s++) {
        int pts = 0;
        for (int w = 0; w < a->nworkloads; w++) {
            const analysis_group *g = grp(a, a->workloads[w], a->strategies[s]);
            for (int k = 0; g && k < g->nrows; k++) {
                const tmoe_analyze_row *r = row_of(a, g, k);
                double p = r->num[TMOE_RL_PREDICTED_ENERGY_J], m = r->num[TMOE_RL_ENERGY_J];
                if (!isfinite(p) || !isfinite(m)) continue;
                p *= 1e3;
                m *= 1e3;
                if (!isfinite(p) || !isfinite(m)) continue;
                fprintf(c->dat, "%.9g %.9g\n", p, m);
                lo = fmin(lo, fmin(p, m));
                hi = fmax(hi, fmax(p, m));
                const char *src = r->str[TMOE_RL_TELEMETRY_SOURCE];
                if (!*src) src = tmoe_dataset_run(a->ds, r->source)->telemetry_source;
                if (strcmp(src, "sim") == 0)
                    sim = 1;
                else
                    meas = 1;
                pts++;
            }
        }
        if (pts) {
            dat_block_end(c);
            sname[ns++] = a->strategies[s];
        }
    }
    if (!ns) {
        fig_drop(c);
        return TMOE_OK;
    }
    const char *ylab = sim && meas ? "energy per batch (mJ): measured (NVML) and simulated, mixed"
                       : sim       ? "energy per batch (mJ), simulated GPU"
                                   : "measured energy per batch (mJ), NVML";
    if ((rc = gp_begin(c, "Energy per batch: predicted vs measured",
                       "predicted energy per batch (mJ), cost model", ylab, err)))
        return rc;
    pad(&lo, &hi, 0.04);
    fprintf(c->gp,
            "set xrange [%.9g:%.9g]\nset yrange [%.9g:%.9g]\nset size ratio -1\n"
            "set key font f7\nset samples 2\nplot \\\n"
            "  x with lines dt 2 lw 1 lc rgb '#777777' title 'predicted = measured', \\\n",
            lo, hi, lo, hi);
    for (int i = 0; i < ns; i++) {
        fprintf(c->gp, "  '%s.dat' index %d using 1:2 with points pt 7 ps 0.5 lc rgb '%s'", c->name,
                i, strategy_color(sname[i]));
        gp_title(c->gp, sname[i]);
        fputs(i + 1 < ns ? ", \\\n" : "\n", c->gp);
    }
    return gp_end(c, err);
}

/* ---- serving replays ------------------------------------------------------------------------ */

#define SERVE_MAX_TIMELINES 8 /* serve runs with a timeline figure */

/* Runs of one strategy share its colour: the k-th of them gets dash type (and point type)
 * 1 + k (mod 5). */
static int serve_dash(const serve_set *sv, int i) {
    int k = 0;
    for (int j = 0; j < i; j++) k += strcmp(sv->r[j].strategy, sv->r[i].strategy) == 0;
    return 1 + k % 5;
}

/* CDF of a request latency (col of requests.csv, in ms), one line per serve run coloured by
 * its strategy: for sorted values v[0..n) the points (v[k], (k + 1) / n). */
static int fig_serve_cdf(figctx *c, const serve_set *sv, int col, const char *kind,
                         const char *what, tmoe_error *err) {
    int rc = fig_begin(c, kind, NULL, NULL, err);
    if (rc) return rc;
    dat_head(c, "%s CDF: one block (index) per serve run, in the order of the script", what);
    dat_head(c, "%s_ms fraction_of_requests_at_most_that", what);
    int blk[64], nb = 0;
    double vmin = INFINITY, vmax = -INFINITY;
    for (int i = 0; i < sv->n && nb < 64; i++) {
        const serve_run *r = &sv->r[i];
        double *v = malloc(sizeof *v * (size_t)(r->n + 1));
        if (!v) {
            fig_drop(c);
            return tmoe_errorf(err, TMOE_ENOMEM, "out of memory");
        }
        int n = 0;
        for (int k = 0; k < r->n; k++)
            if (isfinite(r->req[col][k])) v[n++] = r->req[col][k] * 1e3;
        qsort(v, (size_t)n, sizeof *v, tmoe_cmp_double);
        fputs("# run ", c->dat);
        dat_name(c, r->dir);
        fputc('\n', c->dat);
        for (int k = 0; k < n; k++) {
            fprintf(c->dat, "%.9g %.9g\n", v[k], (double)(k + 1) / n);
            range_add(c, v[k], (double)(k + 1) / n);
            if (v[k] > 0.0) vmin = fmin(vmin, v[k]);
            vmax = fmax(vmax, v[k]);
        }
        free(v);
        if (n) {
            dat_block_end(c);
            blk[nb++] = i;
        }
    }
    if (!nb) {
        fig_drop(c);
        return TMOE_OK;
    }
    char title[300], xl[200];
    snprintf(title, sizeof title, "%s CDF per strategy (serving replay)", what);
    snprintf(xl, sizeof xl, "%s (ms)", what);
    if ((rc = gp_begin(c, title, xl, "fraction of requests <= x", err))) return rc;
    int logx = vmin > 0.0 && vmax / vmin > 50.0 && c->xmin > 0.0;
    c->ymin = 0.0;
    c->ymax = 1.0;
    if (logx) {
        fprintf(c->gp, "set logscale x\nset xrange [%.9g:%.9g]\n", c->xmin / 1.3, c->xmax * 1.3);
        c->xmin = c->xmax = NAN;
    }
    gp_ranges(c, 1, 0);
    fputs("set key inside top left vertical font f7\nplot \\\n", c->gp);
    for (int b = 0; b < nb; b++) {
        char lb[300];
        fprintf(c->gp, "  '%s.dat' index %d using 1:2 with steps lw 1.5 dt %d lc rgb '%s'", c->name,
                b, serve_dash(sv, blk[b]), strategy_color(sv->r[blk[b]].strategy));
        gp_title(c->gp, serve_label(sv, blk[b], lb, sizeof lb));
        fputs(b + 1 < nb ? ", \\\n" : "\n", c->gp);
    }
    return gp_end(c, err);
}

/* Energy per request (its share of the steps' energy) against its prompt length. */
static int fig_serve_energy(figctx *c, const serve_set *sv, tmoe_error *err) {
    int rc = fig_begin(c, "serve_energy_prompt", NULL, NULL, err);
    if (rc) return rc;
    dat_head(c, "energy per request against prompt length: one block (index) per serve run");
    dat_head(c, "prompt_tokens energy_j(the request's share of each step's energy by tokens)");
    int blk[64], nb = 0;
    for (int i = 0; i < sv->n && nb < 64; i++) {
        const serve_run *r = &sv->r[i];
        int pts = 0;
        fputs("# run ", c->dat);
        dat_name(c, r->dir);
        fputc('\n', c->dat);
        for (int k = 0; k < r->n; k++) {
            double x = r->req[SERVE_REQ_PROMPT][k], y = r->req[SERVE_REQ_ENERGY][k];
            /* a request unfinished when a replay was stopped has only part of its energy */
            if (!isfinite(x) || !isfinite(y) || !isfinite(r->req[SERVE_REQ_FINISH][k])) continue;
            fprintf(c->dat, "%.9g %.9g\n", x, y);
            range_add(c, x, y);
            pts++;
        }
        if (pts) {
            dat_block_end(c);
            blk[nb++] = i;
        }
    }
    if (!nb) {
        fig_drop(c);
        return TMOE_OK;
    }
    if ((rc = gp_begin(
             c, "Energy per request against prompt length (serving replay)",
             "prompt tokens (as replayed)",
             c->simulated ? "energy per request (J, simulated)" : "energy per request (J)", err)))
        return rc;
    gp_ranges(c, 1, 1);
    fputs("set key inside top left vertical font f7\nplot \\\n", c->gp);
    for (int b = 0; b < nb; b++) {
        char lb[300];
        fprintf(c->gp, "  '%s.dat' index %d using 1:2 with points pt %d ps 0.4 lc rgb '%s'",
                c->name, b, 5 + 2 * serve_dash(sv, blk[b]), strategy_color(sv->r[blk[b]].strategy));
        gp_title(c->gp, serve_label(sv, blk[b], lb, sizeof lb));
        fputs(b + 1 < nb ? ", \\\n" : "\n", c->gp);
    }
    return gp_end(c, err);
}

/* One serve run over time: power (top) and GPU / HBM temperature (bottom) per bin of
 * timeline.csv, the arrival rate on the right axis of both (grey), the steady-state window
 * shaded. */
static int fig_serve_timeline(figctx *c, const serve_set *sv, int i, tmoe_error *err) {
    const serve_run *r = &sv->r[i];
    char tag[32];
    snprintf(tag, sizeof tag, "run%d", i);
    int rc = fig_begin(c, "serve_timeline", sv->n > 1 ? tag : NULL, NULL, err);
    if (rc) return rc;
    c->w_in = 7.0;
    c->h_in = 3.6;
    fputs("# serve run: ", c->dat);
    dat_name(c, r->dir);
    fputc('\n', c->dat);
    dat_head(c, "time_s(bin_middle) arrival_rate_per_s power_avg_w gpu_temp_c mem_temp_c");
    double pmin = INFINITY, pmax = -INFINITY, tmin = INFINITY, tmax = -INFINITY, amax = 0.0;
    int have_mem = 0;
    for (int b = 0; b < r->nbins; b++) {
        double t = 0.5 * (r->tl[SERVE_TL_T0][b] + r->tl[SERVE_TL_T1][b]);
        double a = r->tl[SERVE_TL_RATE][b], p = r->tl[SERVE_TL_POWER][b];
        double g = r->tl[SERVE_TL_GPU][b], m = r->tl[SERVE_TL_MEM][b];
        fprintf(c->dat, "%.9g", t);
        dat_val(c, a);
        dat_val(c, p);
        dat_val(c, g);
        dat_val(c, m);
        fputc('\n', c->dat);
        range_add(c, t, NAN);
        if (isfinite(p)) pmin = fmin(pmin, p), pmax = fmax(pmax, p);
        if (isfinite(g)) tmin = fmin(tmin, g), tmax = fmax(tmax, g);
        if (isfinite(m)) tmin = fmin(tmin, m), tmax = fmax(tmax, m), have_mem = 1;
        if (isfinite(a)) amax = fmax(amax, a);
    }
    if (!r->nbins || !isfinite(pmin)) {
        fig_drop(c);
        return TMOE_OK;
    }
    char title[400], lb[300];
    snprintf(title, sizeof title, "Serving replay %s: power and temperature, arrival rate (grey)",
             serve_label(sv, i, lb, sizeof lb));
    if ((rc = gp_begin(c, title, "time since the replay began (s)", "", err))) return rc;
    FILE *g = c->gp;
    double t0 = c->xmin, t1 = c->xmax;
    pad(&t0, &t1, 0.01);
    fprintf(g,
            "set xrange [%.9g:%.9g]\nunset title\nset lmargin at screen 0.09\n"
            "set rmargin at screen 0.88\nset tics font f7\nset xlabel font f75\n"
            "set ylabel font f75\nset y2label font f75\nset y2tics nomirror\nset key off\n"
            "set y2range [0:%.9g]\nset y2label 'arrivals per s'\n",
            t0, t1, amax > 0.0 ? amax * 1.15 : 1.0);
    if (isfinite(r->win_start_s) && isfinite(r->win_end_s) && r->win_end_s > r->win_start_s)
        fprintf(g,
                "set object 1 rect from first %.9g, graph 0 to first %.9g, graph 1 behind "
                "fc rgb '#%s' fs solid 0.25 noborder\n",
                r->win_start_s, r->win_end_s, r->steady ? "56B4E9" : "E69F00");
    fputs("set multiplot layout 2,1 title ", g);
    gp_str(g, title, GP_TITLE);
    fputs(r->steady ? ".' (shaded: the steady state)'" : ".' (no steady state: whole run)'", g);
    if (c->simulated) fputs(".' (simulated telemetry)'", g);
    fputs(" font f85\n", g);
    for (int panel = 0; panel < 2; panel++) {
        double y0 = panel ? tmin : pmin, y1 = panel ? tmax : pmax;
        if (!isfinite(y0)) y0 = 0.0, y1 = 1.0;
        pad(&y0, &y1, 0.08);
        fprintf(g, "set yrange [%.9g:%.9g]\nset ylabel '%s'\n", y0, y1,
                panel
                    ? (have_mem ? "temperature (C): GPU solid, HBM dashed" : "GPU temperature (C)")
                    : "average power (W)");
        fputs(panel ? "set xlabel 'time since the replay began (s)'\n" : "unset xlabel\n", g);
        fprintf(g,
                "plot '%s.dat' using 1:2 axes x1y2 with steps lw 1 lc rgb '#999999' notitle, \\\n",
                c->name);
        if (panel == 0)
            fprintf(g, "  '%s.dat' using 1:3 with lines lw 1.5 lc rgb '%s' notitle\n", c->name,
                    strategy_color(r->strategy));
        else {
            fprintf(g, "  '%s.dat' using 1:4 with lines lw 1.5 lc rgb '%s' notitle", c->name,
                    strategy_color(r->strategy));
            if (have_mem)
                fprintf(g, ", \\\n  '%s.dat' using 1:5 with lines lw 1 dt 2 lc rgb '%s' notitle",
                        c->name, strategy_color(r->strategy));
            fputc('\n', g);
        }
    }
    fputs("unset multiplot\n", g);
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
    return analysis_figures_ex(a, NULL, cfg, out, names, nnames, err);
}

int analysis_figures_ex(const tmoe_analysis *a, const serve_set *sv, const tmoe_analyze_config *cfg,
                        tmoe_figures_result *out, char ***names, int *nnames, tmoe_error *err) {
    tmoe_figures_result local;
    tmoe_figures_result *res = out ? out : &local;
    memset(res, 0, sizeof *res);
    tmoe_analyze_config dc = tmoe_analyze_config_default();
    if (!cfg) cfg = &dc;
    figctx c = {.a = a,
                .cfg = cfg,
                .res = res,
                .simulated = (a && tmoe_dataset_simulated(a->ds)) || (sv && sv->simulated)};
    const char *outdir = cfg->out_dir ? cfg->out_dir : "report";
    int rc = ensure_dir(outdir, err);
    snprintf(c.dir, sizeof c.dir, "%s/figures", outdir);
    if (!rc) rc = ensure_dir(c.dir, err);
    if (!rc && sv && sv->n) {
        rc = fig_serve_cdf(&c, sv, SERVE_REQ_TTFT, "serve_ttft_cdf", "TTFT", err);
        if (!rc) rc = fig_serve_cdf(&c, sv, SERVE_REQ_TPOT, "serve_tpot_cdf", "TPOT", err);
        if (!rc) rc = fig_serve_energy(&c, sv, err);
        for (int i = 0; i < sv->n && i < SERVE_MAX_TIMELINES && !rc; i++)
            rc = fig_serve_timeline(&c, sv, i, err);
    }
    /* a figure per workload (and per TTHA strategy) for the first names only: a log with
     * thousands of names must not write thousands of files; the tables have every group */
    int nfw = !a                                           ? 0
              : a->nworkloads < TMOE_ANALYZE_MAX_FIG_NAMES ? a->nworkloads
                                                           : TMOE_ANALYZE_MAX_FIG_NAMES;
    if (a && (a->nworkloads > nfw || a->nstrategies > TMOE_ANALYZE_MAX_FIG_NAMES))
        tmoe_log(TMOE_LOG_WARN,
                 "%d workloads and %d strategies: figures show the first %d of each (the tables "
                 "have all)",
                 a->nworkloads, a->nstrategies, TMOE_ANALYZE_MAX_FIG_NAMES);
    if (a) rc = rc ? rc : fig_forest(&c, nfw, err);
    for (int i = 0; a && i < tmoe_dataset_nruns(a->ds) && i < TIMELINE_MAX_RUNS && !rc; i++)
        rc = fig_timeline(&c, i, tmoe_dataset_nruns(a->ds), err);
    for (int w = 0; w < nfw && !rc; w++) {
        const char *wl = a->workloads[w];
        char title[300], sw[GP_LABEL + 4];
        short_name(sw, wl);
        snprintf(title, sizeof title, "Power, %s", sw);
        rc = fig_series(&c, "power", wl, title, "average power (W)", TMOE_RL_POWER_AVG_W, -1, err);
        snprintf(title, sizeof title, "Peak temperature, %s (solid GPU, dashed HBM)", sw);
        if (!rc)
            rc = fig_series(&c, "temperature", wl, title, "peak temperature (C)",
                            TMOE_RL_GPU_TEMP_PEAK_C, TMOE_RL_MEM_TEMP_C, err);
        if (!rc) rc = fig_ccdf(&c, wl, err);
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
    /* the overhead compares like with like: router host time as a share of a measured step;
     * on the simulated GPU the step time is simulated, so the host time is shown on its own */
    static const struct {
        tmoe_metric m;
        const char *name, *title;
    } bars[] = {{TMOE_M_ENERGY_PER_TOKEN, "energy_per_token", "Energy per token (mean, 95% CI)"},
                {TMOE_M_POWER_PEAK, "power_peak", "Peak power (mean, 95% CI)"},
                {TMOE_M_THROUGHPUT, "throughput", "Throughput (mean, 95% CI)"},
                {TMOE_M_OVERHEAD_PCT, "overhead", "Router host time, % of the measured step time"},
                {TMOE_M_ROUTER_MS, "overhead",
                 "Router host time per batch; the step time is simulated, so no % of it"}};
    for (size_t b = 0; a && b < sizeof bars / sizeof *bars && !rc; b++) {
        if (bars[b].m == (c.simulated ? TMOE_M_OVERHEAD_PCT : TMOE_M_ROUTER_MS)) continue;
        bar_metric = bars[b].m;
        rc = fig_bars(&c, bars[b].name, NULL, bars[b].title, tmoe_metric_label(bars[b].m),
                      (const char *const *)a->workloads, (const char *const *)a->workloads, nfw,
                      bar_metric_fn, err);
    }
    if (!rc && a) rc = fig_energy_pred(&c, err);
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
