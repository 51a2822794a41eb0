/* Shared test helpers (see testutil.h). */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

double tu_rel_l2(const float *got, const double *ref, size_t n) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
    }
    if (den == 0.0) return num == 0.0 ? 0.0 : INFINITY;
    return sqrt(num / den);
}

/* The closest call of the passing checks (tu_close_summary). */
static struct {
    double ratio, got, ref, allowed;
    size_t index;
    char what[160];
} closest = {-1.0, 0.0, 0.0, 0.0, 0, ""};

static void assert_close_any(const char *what, const float *got, const double *refd,
                             const float *reff, size_t n, double atol, double rtol) {
    size_t bad = 0, imax = 0;
    double dmax = -1.0, best_ratio = -1.0, best_allowed = 0.0;
    size_t ibest = 0;
    for (size_t i = 0; i < n; i++) {
        double ref = refd ? refd[i] : (double)reff[i], g = (double)got[i];
        double allowed = atol + rtol * fabs(ref), d = fabs(g - ref);
        int finite = isfinite(g) && isfinite(ref);
        if (finite && d > dmax) {
            dmax = d;
            imax = i;
        }
        if (finite && d <= allowed) {
            double ratio = allowed > 0.0 ? d / allowed : 0.0;
            if (ratio > best_ratio) {
                best_ratio = ratio;
                best_allowed = allowed;
                ibest = i;
            }
            continue;
        }
        if (bad++ < TU_SHOW_MISMATCHES)
            print_error("%s: [%zu] got %.8g ref %.8g allowed %.3g (|diff| %.3g)\n", what, i, g, ref,
                        allowed, d);
    }
    if (bad) {
        if (dmax >= 0.0) {
            fail_msg("%s: %zu of %zu elements outside atol %.3g + rtol %.3g |ref|; largest "
                     "|diff| %.3g at [%zu] (got %.8g ref %.8g)",
                     what, bad, n, atol, rtol, dmax, imax, (double)got[imax],
                     refd ? refd[imax] : (double)reff[imax]);
        } else {
            fail_msg("%s: %zu of %zu elements outside atol %.3g + rtol %.3g |ref|, none finite",
                     what, bad, n, atol, rtol);
        }
    }
    if (best_ratio > closest.ratio) {
        closest.ratio = best_ratio;
        closest.index = ibest;
        closest.got = got[ibest];
        closest.ref = refd ? refd[ibest] : (double)reff[ibest];
        closest.allowed = best_allowed;
        snprintf(closest.what, sizeof closest.what, "%s", what);
    }
}

void tu_assert_close(const char *what, const float *got, const double *ref, size_t n, double atol,
                     double rtol) {
    assert_close_any(what, got, ref, NULL, n, atol, rtol);
}

void tu_assert_close_f(const char *what, const float *got, const float *ref, size_t n, double atol,
                       double rtol) {
    assert_close_any(what, got, NULL, ref, n, atol, rtol);
}

void tu_close_summary(void) {
    if (closest.ratio < 0.0) return;
    print_message("closest element to its tolerance: %s [%zu]: got %.8g ref %.8g, |diff| / "
                  "allowed = %.3g (allowed %.3g)\n",
                  closest.what, closest.index, closest.got, closest.ref, closest.ratio,
                  closest.allowed);
}

void tu_gpu_tol(tmoe_etype t, double *atol, double *rtol) {
    switch (t) {
    case TMOE_ET_Q4: *atol = TOL_GPU_Q4_ATOL, *rtol = TOL_GPU_Q4_RTOL; break;
    case TMOE_ET_Q2: *atol = TOL_GPU_Q2_ATOL, *rtol = TOL_GPU_Q2_RTOL; break;
    case TMOE_ET_BF16: *atol = TOL_GPU_BF16_ATOL, *rtol = TOL_GPU_BF16_RTOL; break;
    default: *atol = TOL_GPU_F16_ATOL, *rtol = TOL_GPU_F16_RTOL; break;
    }
}

double tu_rms_f(const float *x, size_t n) {
    double ss = 0.0;
    for (size_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
    return n ? sqrt(ss / (double)n) : 0.0;
}

void tu_assert_finite(const char *what, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            fail_msg("%s: element %zu of %zu is %g (not written, or not finite)", what, i, n,
                     (double)x[i]);
}

const char *tu_data(const char *rel) {
    static char buf[4][4096];
    static int i;
    char *b = buf[i++ % 4];
    snprintf(b, sizeof buf[0], "%s/tests/data/fixtures/%s", THERMOE_SOURCE_DIR, rel);
    return b;
}

const char *tu_fixture(const char *rel) {
    static char buf[4][4096];
    static int i;
    char *b = buf[i++ % 4];
    const char *dir = getenv("THERMOE_FIXTURES");
    if (!dir || !*dir) dir = THERMOE_FIXTURES_DIR;
    snprintf(b, sizeof buf[0], "%s/%s", dir, rel);
    return b;
}

int tu_fixture_missing(const char *rel) {
    const char *path = tu_fixture(rel);
    if (access(path, R_OK) == 0) return 0;
    printf("SKIP: fixture %s not found (files from other projects are not committed; "
           "set THERMOE_FIXTURES=DIR to a copy of shared/fixtures to run this test)\n",
           path);
    return 1;
}

static char tmpdir[256];

static void tu_cleanup(void) {
    if (!tmpdir[0]) return;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", tmpdir);
}

const char *tu_tmpdir(void) {
    if (!tmpdir[0]) {
        snprintf(tmpdir, sizeof tmpdir, "/tmp/thermoe-test-XXXXXX");
        if (!mkdtemp(tmpdir)) {
            perror("mkdtemp");
            abort();
        }
        atexit(tu_cleanup);
    }
    return tmpdir;
}

const char *tu_tmppath(const char *name) {
    static char buf[4][512];
    static int i;
    char *b = buf[i++ % 4];
    snprintf(b, 512, "%s/%s", tu_tmpdir(), name);
    return b;
}

void tu_poison(void *p, size_t n) {
    memset(p, 0xff, n);
}

uint64_t tu_seed(void) {
    const char *s = getenv("THERMOE_TEST_SEED");
    uint64_t seed = s && *s ? strtoull(s, NULL, 10) : (uint64_t)tmoe_now_ns();
    fprintf(stderr, "random inputs: THERMOE_TEST_SEED=%llu\n", (unsigned long long)seed);
    return seed;
}
