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

void tu_assert_close(const char *what, const float *got, const double *ref, size_t n, double atol,
                     double rtol) {
    size_t worst = 0;
    double worst_excess = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        double tol = atol + rtol * fabs(ref[i]);
        double d = fabs((double)got[i] - ref[i]);
        double excess = isnan(d) ? INFINITY : d - tol;
        if (excess > worst_excess) {
            worst_excess = excess;
            worst = i;
        }
    }
    if (worst_excess > 0.0)
        fail_msg("%s: element %zu got %.8g, want %.8g (|diff| %.3g > atol %.3g + rtol %.3g*|ref|)",
                 what, worst, (double)got[worst], ref[worst], fabs((double)got[worst] - ref[worst]),
                 atol, rtol);
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
           "set THERMOE_FIXTURES=DIR to a copy of shared/fixtures to run this test)\n", path);
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

void tu_poison(void *p, size_t n) { memset(p, 0xff, n); }

uint64_t tu_seed(void) {
    const char *s = getenv("THERMOE_TEST_SEED");
    uint64_t seed = s && *s ? strtoull(s, NULL, 10) : (uint64_t)tmoe_now_ns();
    fprintf(stderr, "random inputs: THERMOE_TEST_SEED=%llu\n", (unsigned long long)seed);
    return seed;
}
