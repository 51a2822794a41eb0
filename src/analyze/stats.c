/* Statistics for the analysis: summaries with t intervals, Welch's and paired t-tests, Holm
 * adjustment, effect sizes and seeded percentile bootstraps (GSL for the t distribution and
 * sorting); the percentile itself is core's tmoe_percentile_sorted. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <gsl/gsl_cdf.h>
#include <gsl/gsl_sort.h>
#include <gsl/gsl_statistics_double.h>

#include "thermoe/analyze.h"

tmoe_stats_summary tmoe_stats_summarize(const double *x, int n, double level) {
    TMOE_ASSERT(n >= 1 && level > 0.0 && level < 1.0);
    tmoe_stats_summary s = {
        .n = n, .mean = gsl_stats_mean(x, 1, (size_t)n), .sd = NAN, .ci_lo = NAN, .ci_hi = NAN};
    if (n >= 2) {
        s.sd = gsl_stats_sd_m(x, 1, (size_t)n, s.mean);
        double tq = gsl_cdf_tdist_Pinv(0.5 + level / 2.0, n - 1);
        double h = tq * s.sd / sqrt((double)n);
        s.ci_lo = s.mean - h;
        s.ci_hi = s.mean + h;
    }
    return s;
}

double tmoe_stats_skewness(const double *x, int n) {
    if (n < 3) return NAN;
    double m = gsl_stats_mean(x, 1, (size_t)n), m2 = 0.0, m3 = 0.0;
    for (int i = 0; i < n; i++) {
        double d = x[i] - m;
        m2 += d * d;
        m3 += d * d * d;
    }
    m2 /= n;
    m3 /= n;
    if (m2 <= 0.0) return NAN;
    return m3 / pow(m2, 1.5);
}

int tmoe_stats_welch(const double *a, int na, const double *b, int nb, double level,
                     tmoe_welch *out, tmoe_error *err) {
    if (na < 2 || nb < 2)
        return tmoe_errorf(err, TMOE_EINVAL,
                           "Welch's t-test needs 2+ values per group (got %d, %d)", na, nb);
    double ma = gsl_stats_mean(a, 1, (size_t)na), mb = gsl_stats_mean(b, 1, (size_t)nb);
    double va = gsl_stats_variance_m(a, 1, (size_t)na, ma) / na;
    double vb = gsl_stats_variance_m(b, 1, (size_t)nb, mb) / nb;
    double se = sqrt(va + vb);
    out->diff = mb - ma;
    if (se == 0.0) {
        /* Both groups constant: no spread, the test is undefined (reported as unknown rather
         * than as a certain difference). */
        out->t = out->df = out->p = NAN;
        out->ci_lo = out->ci_hi = out->diff;
        return TMOE_OK;
    }
    if (!isfinite(se) || !isfinite(out->diff)) {
        /* values so large that their spread overflows: no test */
        out->t = out->df = out->p = out->ci_lo = out->ci_hi = NAN;
        return TMOE_OK;
    }
    out->t = out->diff / se;
    /* Welch-Satterthwaite (va + vb)^2 / (va^2 / (na - 1) + vb^2 / (nb - 1)), written with
     * the share r = va / (va + vb) so that squaring tiny or huge variances can neither
     * underflow to 0/0 nor overflow: df stays in [min(na, nb) - 1, na + nb - 2] (GSL's t
     * distribution aborts the program on an infinite df). */
    double r = va / (va + vb);
    out->df = 1.0 / (r * r / (na - 1) + (1.0 - r) * (1.0 - r) / (nb - 1));
    out->p = 2.0 * gsl_cdf_tdist_Q(fabs(out->t), out->df);
    if (out->p > 1.0) out->p = 1.0;
    double tq = gsl_cdf_tdist_Pinv(0.5 + level / 2.0, out->df);
    out->ci_lo = out->diff - tq * se;
    out->ci_hi = out->diff + tq * se;
    return TMOE_OK;
}

int tmoe_stats_paired_t(const double *a, const double *b, int n, double level, tmoe_welch *out,
                        tmoe_error *err) {
    if (n < 2) return tmoe_errorf(err, TMOE_EINVAL, "a paired t-test needs 2+ pairs (got %d)", n);
    double md = 0.0;
    int same = 1; /* every pair differs by exactly the same amount: the sum below rounds (six
                     differences of -1 give md = -0.9999999999999999), so test it exactly */
    for (int i = 0; i < n; i++) {
        md += (b[i] - a[i]) / n;
        same &= (b[i] - a[i]) == (b[0] - a[0]);
    }
    if (same) md = b[0] - a[0];
    double ss = 0.0;
    for (int i = 0; i < n; i++) {
        double d = (b[i] - a[i]) - md;
        ss += d * d;
    }
    double se = same ? 0.0 : sqrt(ss / (n - 1) / n);
    out->diff = md;
    out->df = n - 1;
    if (se == 0.0 || !isfinite(se) || !isfinite(md)) {
        /* every pair differs by the same amount (or the values overflow): no test */
        out->t = out->p = NAN;
        out->ci_lo = out->ci_hi = se == 0.0 ? md : NAN;
        return TMOE_OK;
    }
    out->t = md / se;
    out->p = 2.0 * gsl_cdf_tdist_Q(fabs(out->t), out->df);
    if (out->p > 1.0) out->p = 1.0;
    double tq = gsl_cdf_tdist_Pinv(0.5 + level / 2.0, out->df);
    out->ci_lo = md - tq * se;
    out->ci_hi = md + tq * se;
    return TMOE_OK;
}

typedef struct {
    double p;
    int i;
} pidx;

static int pidx_cmp(const void *x, const void *y) {
    const pidx *a = x, *b = y;
    return (a->p > b->p) - (a->p < b->p);
}

void tmoe_stats_holm(const double *p, int n, double *p_adj) {
    pidx *v = malloc(sizeof *v * (size_t)(n > 0 ? n : 1));
    TMOE_ASSERT(v != NULL);
    int m = 0;
    for (int i = 0; i < n; i++) {
        p_adj[i] = NAN;
        if (!isnan(p[i])) v[m++] = (pidx){p[i], i};
    }
    qsort(v, (size_t)m, sizeof *v, pidx_cmp);
    double run = 0.0;
    for (int k = 0; k < m; k++) {
        double adj = (m - k) * v[k].p;
        if (adj > 1.0) adj = 1.0;
        if (adj < run) adj = run; /* monotone step-down */
        run = adj;
        p_adj[v[k].i] = adj;
    }
    free(v);
}

double tmoe_stats_cohen_d(const double *a, int na, const double *b, int nb) {
    if (na < 2 || nb < 2) return NAN;
    double ma = gsl_stats_mean(a, 1, (size_t)na), mb = gsl_stats_mean(b, 1, (size_t)nb);
    double va = gsl_stats_variance_m(a, 1, (size_t)na, ma);
    double vb = gsl_stats_variance_m(b, 1, (size_t)nb, mb);
    double sp = sqrt(((na - 1) * va + (nb - 1) * vb) / (na + nb - 2));
    if (sp == 0.0) return NAN;
    return (mb - ma) / sp;
}

double tmoe_stats_hedges_g(const double *a, int na, const double *b, int nb) {
    double d = tmoe_stats_cohen_d(a, na, b, nb);
    return d * (1.0 - 3.0 / (4.0 * (na + nb) - 9.0));
}

static double resample_mean(const double *x, int n, tmoe_rng *r) {
    double s = 0.0;
    for (int i = 0; i < n; i++) s += x[tmoe_rng_below(r, (uint32_t)n)];
    return s / n;
}

static void percentile_ci(double *v, int B, double level, double *lo, double *hi) {
    gsl_sort(v, 1, (size_t)B);
    *lo = tmoe_percentile_sorted(v, B, 100.0 * (1.0 - level) / 2.0);
    *hi = tmoe_percentile_sorted(v, B, 100.0 * (1.0 + level) / 2.0);
}

int tmoe_stats_bootstrap_mean_ci(const double *x, int n, int B, uint64_t seed, double level,
                                 double *lo, double *hi, tmoe_error *err) {
    if (n < 2 || B < 10)
        return tmoe_errorf(err, TMOE_EINVAL,
                           "bootstrap needs 2+ values and 10+ resamples (got %d, %d)", n, B);
    double *v = tmoe_malloc(sizeof *v * (size_t)B, err);
    if (!v) return TMOE_ENOMEM;
    tmoe_rng r;
    tmoe_rng_seed(&r, seed);
    for (int k = 0; k < B; k++) v[k] = resample_mean(x, n, &r);
    percentile_ci(v, B, level, lo, hi);
    free(v);
    return TMOE_OK;
}

int tmoe_stats_bootstrap_pct_ci(const double *a, int na, const double *b, int nb, int B,
                                uint64_t seed, double level, double *lo, double *hi,
                                tmoe_error *err) {
    if (na < 2 || nb < 2 || B < 10)
        return tmoe_errorf(err, TMOE_EINVAL,
                           "bootstrap needs 2+ values per group and 10+ resamples (got %d, %d, %d)",
                           na, nb, B);
    double *v = tmoe_malloc(sizeof *v * (size_t)B, err);
    if (!v) return TMOE_ENOMEM;
    tmoe_rng r;
    tmoe_rng_seed(&r, seed);
    int m = 0;
    for (int k = 0; k < B; k++) {
        double ma = resample_mean(a, na, &r), mb = resample_mean(b, nb, &r);
        if (ma != 0.0) v[m++] = 100.0 * (mb / ma - 1.0);
    }
    if (m < 10) {
        free(v);
        *lo = *hi = NAN;
        return tmoe_errorf(err, TMOE_EINVAL, "bootstrap of a %% change: baseline mean is zero");
    }
    percentile_ci(v, m, level, lo, hi);
    free(v);
    return TMOE_OK;
}
