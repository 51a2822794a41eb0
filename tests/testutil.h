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
#define TOL_F32 1e-5       /* fp32 arithmetic vs float64 reference */
#define TOL_F16 1e-2       /* fp16 operands, fp32 accumulation */
#define TOL_F16_ROUND 1e-3 /* one rounding to fp16 (2^-11 relative) on the way out */
#define TOL_F16_STEPS 4e-3 /* a few fp16 roundings on the way (attention, expert, block) */
/* bf16 weights and activations rounded to bf16 (2^-8 relative each, so up to 2^-7 per
 * product), fp32 accumulation: against a reference with the unrounded fp32 weights and fp16
 * activations */
#define TOL_BF16 1e-2

/* GPU against the CPU reference, element by element (tests/test_cuda_*.c):
 *     |got - ref| <= ATOL * rms(ref) + RTOL * |ref|   for every element,
 * rms(ref) (tu_rms_f) being the scale of the output compared, so that one allowance serves
 * relu outputs (~0.3), swiglu outputs (~0.05) and the MoE part of a block (~0.03) alike.
 * These tests used to bound the relative L2 error by TOL_F16 = 1e-2 for every expert type:
 * rms(got - ref) <= 1% of rms(ref), which one wrong element among thousands passes. Kept
 * element-wise, that budget gives each element 1% of the output's scale plus 1% of itself
 * (q4). fp16 and q2 get half of it: both sides multiply the same fp16 weights (q2's q * scale
 * with |q| <= 2 is exact in fp16), so they differ only by fp32 summation order and by one
 * fp16 ulp (<= 2^-10 |ref|) where an output or activation is rounded; q4 on the path for
 * groups that are not a multiple of 128 rounds q * scale to fp16 (up to 2^-12 per weight)
 * where the CPU keeps it exact. For scale: on the CPU, the block with fused q4 against unfused
 * q4 (every q * scale rounded to fp16, a coarser difference than GPU vs CPU) differs by at
 * most 2.7e-3 rms(ref) in any element (relu and swiglu, MoE part and whole block, 1 to 1000
 * tokens), while one dropped product of a 512-long dot product moves its element by about 4%
 * of rms(ref) and a dropped k-block of 16 by about 25%. Mixed-type blocks take q4's pair.
 * Each GPU test prints its closest element (tu_close_summary): the margins of a real run. */
#define TOL_GPU_F16_ATOL 5e-3
#define TOL_GPU_F16_RTOL 5e-3
#define TOL_GPU_Q4_ATOL 1e-2
#define TOL_GPU_Q4_RTOL 1e-2
#define TOL_GPU_Q2_ATOL 5e-3
#define TOL_GPU_Q2_RTOL 5e-3
/* q4 / q2 with int8 activations (tmoe_cuda_act8) against its reference tmoe_cpu_linear_q_act8:
 * both sides form the same integers and dot products, so they differ as fp16 does, by fp32
 * rounding and one fp16 ulp where an output is rounded: fp16's pair. */
#define TOL_GPU_ACT8_ATOL TOL_GPU_F16_ATOL
#define TOL_GPU_ACT8_RTOL TOL_GPU_F16_RTOL
/* bf16: both sides multiply the same bf16 weights by the same bf16-rounded activations, but an
 * activation the two sides computed one fp16 ulp apart (the fc1 output, the block's norm) can
 * round to neighbouring bf16 values, 2^-7 apart: q4's pair. */
#define TOL_GPU_BF16_ATOL 1e-2
#define TOL_GPU_BF16_RTOL 1e-2
/* The TOL_GPU_* pair of expert weight type t. */
void tu_gpu_tol(tmoe_etype t, double *atol, double *rtol);

/* ||got - ref||_2 / ||ref||_2 over n values (0 when both are zero). */
double tu_rel_l2(const float *got, const double *ref, size_t n);
/* Assert |got[i] - ref[i]| <= atol + rtol |ref[i]| for every i; a NaN or inf on either side
 * (an element left poisoned, say) fails. On failure prints the first TU_SHOW_MISMATCHES
 * mismatches (index, got, ref, allowed), how many there are and the largest difference, then
 * fails the test. */
#define TU_SHOW_MISMATCHES 8
void tu_assert_close(const char *what, const float *got, const double *ref, size_t n, double atol,
                     double rtol);
/* The same against a float reference (a CPU kernel's own output). */
void tu_assert_close_f(const char *what, const float *got, const float *ref, size_t n, double atol,
                       double rtol);
/* Print (cmocka print_message) the element that came closest to its allowance over every
 * tu_assert_close* that passed in this program: |diff| / allowed, where, got and ref. */
void tu_close_summary(void);
/* sqrt(mean(x^2)) over n values (0 for n = 0). */
double tu_rms_f(const float *x, size_t n);
/* Fail (naming what and the first index) unless every one of n floats is finite: outputs
 * are poisoned with NaN before a run, so this finds elements the run did not write. */
void tu_assert_finite(const char *what, const float *x, size_t n);
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

#define ASSERT_OK(expr, errp)                                                                      \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_ != 0) fail_msg("%s -> %d: %s", #expr, rc_, (errp)->msg);                           \
    } while (0)

#endif
