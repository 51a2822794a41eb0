/* Statistics of the analysis against reference values computed with SciPy 1.17.1 /
 * NumPy 2.4.6 / statsmodels (the exact calls are in the comments), to TOL_STATS. */
#include <math.h>
#include <stdlib.h>

#include "testutil.h"
#include "thermoe/analyze.h"

#define TOL_STATS 1e-6 /* absolute, on values of order 1-10 (p-values: absolute too) */

static const double A[] = {10.2, 11.5, 9.8, 10.9, 12.1, 10.4, 11.0};
static const double B[] = {12.3, 13.1, 11.8, 14.0, 12.7, 13.5};
#define NA 7
#define NB 6

static void near(const char *what, double got, double want) {
    if (!(fabs(got - want) <= TOL_STATS))
        fail_msg("%s: got %.12g, want %.12g (tolerance %g)", what, got, want, TOL_STATS);
}

/* r = scipy.stats.ttest_ind(b, a, equal_var=False)
 *   -> statistic 4.64290721726121, pvalue 0.000779718296277897, df 10.635343547183
 * r.confidence_interval(0.95) -> (1.0778525937948, 3.03643312049092)
 * (statsmodels ttest_ind(b, a, usevar='unequal') gives the same t, p, df.) */
static void test_welch(void **state) {
    (void)state;
    tmoe_welch w;
    tmoe_error err = {0};
    ASSERT_OK(tmoe_stats_welch(A, NA, B, NB, 0.95, &w, &err), &err);
    near("t", w.t, 4.64290721726121);
    near("p", w.p, 0.000779718296277897);
    near("df", w.df, 10.635343547183);
    near("ci_lo", w.ci_lo, 1.0778525937948);
    near("ci_hi", w.ci_hi, 3.03643312049092);
    /* symmetric: swapping the groups flips t and keeps p */
    tmoe_welch w2;
    ASSERT_OK(tmoe_stats_welch(B, NB, A, NA, 0.95, &w2, &err), &err);
    near("t swapped", w2.t, -4.64290721726121);
    near("p swapped", w2.p, 0.000779718296277897);
    assert_int_not_equal(tmoe_stats_welch(A, 1, B, NB, 0.95, &w, &err), TMOE_OK);
}

/* a.mean() = 10.8428571428571, a.std(ddof=1) = 0.789212989539036,
 * scipy.stats.t.interval(0.95, 6, loc=mean, scale=sd/sqrt(7)) =
 * (10.1129568649646, 11.5727574207497) */
static void test_summary(void **state) {
    (void)state;
    tmoe_stats_summary s = tmoe_stats_summarize(A, NA, 0.95);
    assert_int_equal(s.n, NA);
    near("mean", s.mean, 10.8428571428571);
    near("sd", s.sd, 0.789212989539036);
    near("ci_lo", s.ci_lo, 10.1129568649646);
    near("ci_hi", s.ci_hi, 11.5727574207497);
    tmoe_stats_summary one = tmoe_stats_summarize(A, 1, 0.95);
    assert_true(isnan(one.sd) && isnan(one.ci_lo));
}

/* x = [3.1, 0.4, 7.7, 2.2, 9.9, 5.0, 1.3, 8.8, 4.6, 6.0, 2.9];
 * numpy.percentile(x, p) (default linear = R type 7) for p = 0, 10, 25, 50, 90, 99, 100:
 * 0.4, 1.3, 2.55, 4.6, 8.8, 9.79, 9.9;  scipy.stats.skew(x) = 0.310631144261345 */
static void test_percentile_skew(void **state) {
    (void)state;
    double x[] = {3.1, 0.4, 7.7, 2.2, 9.9, 5.0, 1.3, 8.8, 4.6, 6.0, 2.9};
    int n = 11;
    near("skew", tmoe_stats_skewness(x, n), 0.310631144261345);
    qsort(x, (size_t)n, sizeof *x, tmoe_cmp_double);
    const double p[] = {0, 10, 25, 50, 90, 99, 100};
    const double want[] = {0.4, 1.3, 2.55, 4.6, 8.8, 9.79, 9.9};
    for (int i = 0; i < 7; i++) near("percentile", tmoe_percentile_sorted(x, n, p[i]), want[i]);
    near("percentile n=1", tmoe_percentile_sorted(x, 1, 73.0), x[0]);
}

/* statsmodels.stats.multitest.multipletests([0.01, 0.04, 0.03, 0.005, 0.20], method='holm')[1]
 *   -> [0.04, 0.09, 0.09, 0.025, 0.2] */
static void test_holm(void **state) {
    (void)state;
    const double p[] = {0.01, 0.04, 0.03, 0.005, 0.20, NAN};
    const double want[] = {0.04, 0.09, 0.09, 0.025, 0.2};
    double adj[6];
    tmoe_stats_holm(p, 6, adj);
    for (int i = 0; i < 5; i++) near("holm", adj[i], want[i]);
    assert_true(isnan(adj[5]));
}

/* Pooled sd sp = sqrt(((na-1) var(a) + (nb-1) var(b)) / (na+nb-2)), d = (mean b - mean a)/sp,
 * g = d (1 - 3/(4(na+nb) - 9)), evaluated with numpy: d = 2.58669565788441, g = 2.40622851896224 */
static void test_effect_size(void **state) {
    (void)state;
    near("cohen d", tmoe_stats_cohen_d(A, NA, B, NB), 2.58669565788441);
    near("hedges g", tmoe_stats_hedges_g(A, NA, B, NB), 2.40622851896224);
}

/* Bootstrap: seeded (same seed, same interval), brackets the mean, and its coverage of a
 * known mean over fresh normal samples is near the nominal 95%. */
static void test_bootstrap(void **state) {
    (void)state;
    tmoe_error err = {0};
    double lo1, hi1, lo2, hi2;
    ASSERT_OK(tmoe_stats_bootstrap_mean_ci(A, NA, 2000, 7, 0.95, &lo1, &hi1, &err), &err);
    ASSERT_OK(tmoe_stats_bootstrap_mean_ci(A, NA, 2000, 7, 0.95, &lo2, &hi2, &err), &err);
    assert_true(lo1 == lo2 && hi1 == hi2);
    assert_true(lo1 < 10.8428571428571 && hi1 > 10.8428571428571);
    ASSERT_OK(tmoe_stats_bootstrap_pct_ci(A, NA, B, NB, 2000, 3, 0.95, &lo1, &hi1, &err), &err);
    double pct = 100.0 * ((12.3 + 13.1 + 11.8 + 14.0 + 12.7 + 13.5) / 6 / 10.8428571428571 - 1.0);
    assert_true(lo1 < pct && pct < hi1 && lo1 > 0.0);
    tmoe_rng r;
    tmoe_rng_seed(&r, 99);
    int cover = 0, trials = 300;
    double x[30];
    for (int t = 0; t < trials; t++) {
        for (int i = 0; i < 30; i++) x[i] = 5.0 + tmoe_rng_normal(&r);
        ASSERT_OK(tmoe_stats_bootstrap_mean_ci(x, 30, 500, (uint64_t)t, 0.95, &lo1, &hi1, &err),
                  &err);
        cover += lo1 <= 5.0 && 5.0 <= hi1;
    }
    double rate = (double)cover / trials;
    if (rate < 0.88 || rate > 0.99) fail_msg("bootstrap coverage %.3f outside [0.88, 0.99]", rate);
}

/* Welch's test on values whose variances would underflow or overflow when squared (a
 * run log can hold any finite value): df stays finite and within its bounds, p in [0, 1]
 * or unknown, and GSL is never handed an infinite df (its error handler aborts). */
static void test_welch_extreme_scales(void **state) {
    (void)state;
    static const double scales[] = {1e-300, 1e-170, 1e-162, 1e-160, 1e-100,
                                    1e100,  1e160,  1e200,  1e300};
    for (size_t i = 0; i < sizeof scales / sizeof *scales; i++) {
        double s = scales[i];
        double a[] = {0.0, s, 2.0 * s}, b[] = {5.0 * s, 5.0 * s, 5.0 * s + s};
        tmoe_welch w;
        tmoe_error err = {0};
        ASSERT_OK(tmoe_stats_welch(a, 3, b, 3, 0.95, &w, &err), &err);
        if (isnan(w.df)) {
            assert_true(isnan(w.p));
            continue;
        }
        if (!(w.df >= 2.0 - 1e-9 && w.df <= 4.0 + 1e-9))
            fail_msg("scale %g: df %g outside [2, 4]", s, w.df);
        if (!(w.p >= 0.0 && w.p <= 1.0)) fail_msg("scale %g: p = %g", s, w.p);
        /* the test does not depend on the unit: same t and df as at scale 1 (where the
         * variances are normal numbers, not denormals that have lost their digits) */
        if (s < 1e-150 || s > 1e150) continue;
        double a1[] = {0.0, 1.0, 2.0}, b1[] = {5.0, 5.0, 6.0};
        tmoe_welch w1;
        ASSERT_OK(tmoe_stats_welch(a1, 3, b1, 3, 0.95, &w1, &err), &err);
        if (fabs(w.t - w1.t) > 1e-9 * fabs(w1.t) || fabs(w.df - w1.df) > 1e-9 * w1.df)
            fail_msg("scale %g: t %g df %g, at scale 1 t %g df %g", s, w.t, w.df, w1.t, w1.df);
    }
}

/* Paired t-test: d = {1, 2, 2, 3}, mean 2, sd sqrt(2/3), t = 2 / (sd / 2) with 3 df; the
 * two-sided p from the closed-form t(3) distribution. Identical differences give no test. */
static void test_paired_t(void **state) {
    (void)state;
    const double a[] = {1, 2, 3, 4}, b[] = {2, 4, 5, 7};
    tmoe_welch w;
    tmoe_error err = {0};
    ASSERT_OK(tmoe_stats_paired_t(a, b, 4, 0.95, &w, &err), &err);
    near("diff", w.diff, 2.0);
    near("t", w.t, 4.898979485566356);
    near("df", w.df, 3.0);
    near("p", w.p, 0.016276603459428607);
    assert_true(w.ci_lo < 2.0 && w.ci_hi > 2.0 && w.ci_lo > 0.0);
    const double c[] = {2, 3, 4, 5};
    ASSERT_OK(tmoe_stats_paired_t(a, c, 4, 0.95, &w, &err), &err);
    assert_true(isnan(w.p) && isnan(w.t));
    /* six peaks each 1 C lower: the mean of the differences rounds in a sum, the test must
     * still see no spread (it gave t = -2e16 and a CI of [-1, -1]) */
    const double h[] = {55, 55, 55, 55, 55, 55}, g[] = {54, 54, 54, 54, 54, 54};
    ASSERT_OK(tmoe_stats_paired_t(h, g, 6, 0.95, &w, &err), &err);
    assert_true(isnan(w.p) && isnan(w.t));
    assert_true(w.diff == -1.0 && w.ci_lo == -1.0 && w.ci_hi == -1.0);
    assert_int_equal(tmoe_stats_paired_t(a, b, 1, 0.95, &w, NULL), TMOE_EINVAL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_paired_t),  cmocka_unit_test(test_welch),
        cmocka_unit_test(test_summary),   cmocka_unit_test(test_percentile_skew),
        cmocka_unit_test(test_holm),      cmocka_unit_test(test_effect_size),
        cmocka_unit_test(test_bootstrap), cmocka_unit_test(test_welch_extreme_scales),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
