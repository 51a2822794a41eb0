/* Shared test helpers: cmocka includes, tolerance checks, fixtures and temp paths. */
#ifndef THERMOE_TESTUTIL_H
#define THERMOE_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "thermoe/core.h"

/* Named tolerances (relative to the reference's scale). */
#define TOL_F32 1e-5  /* fp32 arithmetic vs float64 reference */
#define TOL_F16 1e-2  /* fp16 operands, fp32 accumulation */
#define TOL_F16_ROUND 1e-3 /* one rounding to fp16 (2^-11 relative) on the way out */
#define TOL_F16_STEPS 4e-3 /* a few fp16 roundings on the way (attention, expert, block) */

/* ||got - ref||_2 / ||ref||_2 over n values (0 when both are zero). */
double tu_rel_l2(const float *got, const double *ref, size_t n);
/* Assert max_i |got-ref| <= atol + rtol |ref|; prints the worst element and fails. */
void tu_assert_close(const char *what, const float *got, const double *ref, size_t n, double atol,
                     double rtol);
/* ctest's skip status: tests that cannot run here (a file or tool absent) return it, and
 * CMake sets SKIP_RETURN_CODE to it for them. */
#define TU_SKIP 77
/* Path of a measurement committed with the project: tests/data/fixtures/<rel>. */
const char *tu_data(const char *rel);
/* Path of a fixture from another project, not committed here (nsys/, traces/): the env
 * THERMOE_FIXTURES, else the configured THERMOE_FIXTURES_DIR (../shared/fixtures). */
const char *tu_fixture(const char *rel);
/* 1 when tu_fixture(rel) cannot be read, after printing a SKIP line naming the file and the
 * THERMOE_FIXTURES variable; 0 when it is there. */
int tu_fixture_missing(const char *rel);
/* A fresh temporary directory (removed by tu_cleanup) and a path inside it. */
const char *tu_tmpdir(void);
const char *tu_tmppath(const char *name);
/* Seed for fresh random inputs: THERMOE_TEST_SEED if set, else the clock; printed to stderr
 * so that a failure can be replayed. */
uint64_t tu_seed(void);
/* Fill with poison bit patterns (NaN for floats) to detect unwritten outputs. */
void tu_poison(void *p, size_t n);

#define ASSERT_OK(expr, errp) \
    do { \
        int rc_ = (expr); \
        if (rc_ != 0) fail_msg("%s -> %d: %s", #expr, rc_, (errp)->msg); \
    } while (0)

#endif
