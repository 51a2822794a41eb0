/* The whole engine, cuda backend against the cpu backend: fp16 / q4 / q2 / bf16 experts, fused and
 * unfused, relu and swiglu, the bandwidth-kernel path (with and without graph replay) and the
 * cuBLAS path for large batches. Fresh random inputs (THERMOE_TEST_SEED replays a run),
 * outputs poisoned with NaN and checked to be fully written, every element compared with
 * atol * rms(ref) + rtol * |ref| (tolerances of testutil.h). Skips when no CUDA device
 * answers. */
#include "testutil.h"

#include "thermoe/backend.h"
#ifdef THERMOE_HAVE_CUDA
#include "backend/cuda/cuda_ops.h"
#endif

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t g_seed = 0x5eed;

static int have_gpu(void) {
    tmoe_error err = {0};
    if (tmoe_backend_probe(TMOE_BACKEND_CUDA, &err) != TMOE_OK) {
        print_message("[  SKIPPED ] no CUDA backend here: %s\n", err.msg);
        return 0;
    }
    return 1;
}

typedef struct eng_case {
    tmoe_etype et;
    tmoe_impl impl;
    tmoe_act act;
    int E, k, T, moe_only, graphs;
    int mixed;     /* per-expert types fp16, q4, q2, bf16 in turn (et is then unused) */
    int auto_from; /* > 0: impl_auto with this crossover for et (q4/q2): fused or unfused per
                      step; both engines must choose alike */
} eng_case;

/* Where the two backends route a token to different experts, each difference must be a near
 * tie that their gate logits explain: with s = logits + bias, an expert the GPU took and the
 * CPU did not scores, on the CPU, within twice the token's largest logit difference of the
 * CPU's k-th choice; and that difference stays within TOL_F16 x (1 + max |logit|). A flip
 * anywhere else is a defect, however few (a fixed share of flips let a rare real one pass and
 * failed on two honest ties in 136 choices). */
static void check_flips(const char *what, tmoe_engine *cpu, tmoe_engine *gpu, const float *x, int T,
                        int moe_only, const float *bias, int E, int k, const int32_t *ic,
                        const int32_t *ig) {
    tmoe_error err = {0};
    float *lc = malloc(4 * (size_t)T * E), *lg = malloc(4 * (size_t)T * E);
    assert_non_null(lc);
    assert_non_null(lg);
    ASSERT_OK(tmoe_engine_begin(cpu, x, T, moe_only, &err), &err);
    ASSERT_OK(tmoe_engine_logits(cpu, lc, &err), &err);
    ASSERT_OK(tmoe_engine_begin(gpu, x, T, moe_only, &err), &err);
    ASSERT_OK(tmoe_engine_logits(gpu, lg, &err), &err);
    int nflip = 0;
    for (int t = 0; t < T; t++) {
        const float *a = lc + (size_t)t * E, *b = lg + (size_t)t * E;
        unsigned char inc[TMOE_MAX_EXPERTS] = {0};
        for (int j = 0; j < k; j++) inc[ic[t * k + j]] = 1;
        double dmax = 0.0, amax = 0.0, kth = INFINITY;
        for (int e = 0; e < E; e++) {
            double d = fabs((double)a[e] - b[e]);
            if (d > dmax) dmax = d;
            if (fabs(a[e]) > amax) amax = fabs(a[e]);
            double s = (double)a[e] + (bias ? bias[e] : 0.0f);
            if (inc[e] && s < kth) kth = s;
        }
        for (int j = 0; j < k; j++) {
            int e = ig[t * k + j];
            if (inc[e]) continue;
            nflip++;
            double margin = kth - ((double)a[e] + (bias ? bias[e] : 0.0f));
            if (!(dmax <= TOL_F16 * (1.0 + amax) && margin <= 2.0 * dmax + 1e-6))
                fail_msg("%s: token %d: the GPU took expert %d, %.6g below the CPU's k-th score, "
                         "where the gate logits differ by at most %.3g (not a tie)",
                         what, t, e, margin, dmax);
        }
    }
    if (nflip) print_message("%s: %d routing choice(s) differ, each a near tie\n", what, nflip);
    free(lc);
    free(lg);
}

static void run_case(const eng_case *c) {
    tmoe_error err = {0};
    tmoe_block_config bc = tmoe_block_config_default();
    bc.d_model = 256;
    bc.n_heads = 4;
    bc.d_ff = 512;
    bc.num_experts = c->E;
    bc.top_k = c->k;
    bc.group_size = 128;
    bc.seq_len = 64;
    bc.expert_type = c->et;
    tmoe_etype types[TMOE_MAX_EXPERTS];
    if (c->mixed) {
        for (int e = 0; e < c->E; e++) types[e] = (tmoe_etype)(e % TMOE_ET_COUNT);
        bc.expert_types = types;
    }
    bc.act = c->act;
    bc.renormalize = c->k > 2;
    bc.seed = g_seed + (uint64_t)c->T;
    tmoe_block *blk = NULL;
    ASSERT_OK(tmoe_block_create(&bc, &blk, &err), &err);
    tmoe_engine_config ec = tmoe_engine_config_default();
    ec.max_tokens = c->T;
    ec.impl = c->impl;
    ec.use_graphs = c->graphs;
    if (c->auto_from > 0) {
        ec.impl_auto = 1;
        ec.unfused_from[c->et] = c->auto_from;
    }
    tmoe_engine *cpu = NULL, *gpu = NULL;
    ec.backend = TMOE_BACKEND_CPU;
    ASSERT_OK(tmoe_engine_create(blk, &ec, &cpu, &err), &err);
    ec.backend = TMOE_BACKEND_CUDA;
    ASSERT_OK(tmoe_engine_create(blk, &ec, &gpu, &err), &err);

    tmoe_rng r;
    tmoe_rng_seed_stream(&r, g_seed, (uint64_t)c->T * 31 + c->E);
    int T = c->T, D = bc.d_model, E = c->E, k = c->k;
    float *x = malloc(4 * (size_t)T * D), *bias = malloc(4 * (size_t)E);
    float *yc = malloc(4 * (size_t)T * D), *yg = malloc(4 * (size_t)T * D);
    float *yg2 = malloc(4 * (size_t)T * D);
    int32_t *ic = malloc(4 * (size_t)T * k), *ig = malloc(4 * (size_t)T * k);
    float *wc = malloc(4 * (size_t)T * k), *wg = malloc(4 * (size_t)T * k);
    for (size_t i = 0; i < (size_t)T * D; i++) x[i] = tmoe_rng_uniform_sym(&r, 1.0f);
    for (int e = 0; e < E; e++) bias[e] = tmoe_rng_uniform_sym(&r, 0.3f);
    tu_poison(yc, 4 * (size_t)T * D);
    tu_poison(yg, 4 * (size_t)T * D);
    tu_poison(yg2, 4 * (size_t)T * D);
    tu_poison(ic, 4 * (size_t)T * k);
    tu_poison(ig, 4 * (size_t)T * k);
    tu_poison(wc, 4 * (size_t)T * k);
    tu_poison(wg, 4 * (size_t)T * k);
    char what[160];
    snprintf(what, sizeof what, "%s %s %s E=%d k=%d T=%d moe_only=%d graphs=%d auto_from=%d",
             c->mixed ? "mixed" : tmoe_etype_name(c->et), tmoe_impl_name(c->impl),
             tmoe_act_name(c->act), E, k, T, c->moe_only, c->graphs, c->auto_from);
    tmoe_moe_metrics mc = {.topk_idx = ic, .topk_w = wc}, mg = {.topk_idx = ig, .topk_w = wg};
    ASSERT_OK(tmoe_engine_forward(cpu, x, T, c->moe_only, bias, yc, &mc, &err), &err);
    ASSERT_OK(tmoe_engine_forward(gpu, x, T, c->moe_only, bias, yg, &mg, &err), &err);

    /* the same impl per type on both backends (the rule is a function of T) */
    for (int t = 0; t < TMOE_ET_COUNT; t++)
        if (mc.impl_used[t] != mg.impl_used[t])
            fail_msg("%s: %s experts ran impl %d on cpu, %d on cuda", what,
                     tmoe_etype_name((tmoe_etype)t), mc.impl_used[t], mg.impl_used[t]);
    if (c->auto_from > 0) {
        double per = tmoe_engine_tokens_per_active(T, k, E);
        int want = per >= c->auto_from ? TMOE_IMPL_UNFUSED : TMOE_IMPL_FUSED;
        if (mg.impl_used[c->et] != want)
            fail_msg("%s: %.1f tokens per expert, crossover %d: ran %d, want %d", what, per,
                     c->auto_from, mg.impl_used[c->et], want);
    }
    /* routing: same experts, or near ties the gate logits explain; same counts */
    int flips = 0;
    for (int i = 0; i < T * k; i++) flips += ic[i] != ig[i];
    if (flips) check_flips(what, cpu, gpu, x, T, c->moe_only, bias, E, k, ic, ig);
    if (!flips)
        for (int e = 0; e < E; e++)
            assert_int_equal(mc.tokens_per_expert[e], mg.tokens_per_expert[e]);
    /* every output element written, routing flips included */
    tu_assert_finite(what, yc, (size_t)T * D);
    tu_assert_finite(what, yg, (size_t)T * D);
    /* compare, on the tokens routed alike, the MoE contribution (y minus the residual stream)
     * with moe_only, else the block's output */
    float *ref = malloc(4 * (size_t)T * D), *got = malloc(4 * (size_t)T * D);
    size_t n = 0;
    for (int t = 0; t < T; t++) {
        int same = 1;
        for (int j = 0; j < k; j++) same &= ic[t * k + j] == ig[t * k + j];
        if (!same) continue;
        for (int i = 0; i < D; i++) {
            size_t o = (size_t)t * D + i;
            ref[n] = yc[o] - (c->moe_only ? x[o] : 0.0f);
            got[n] = yg[o] - (c->moe_only ? x[o] : 0.0f);
            n++;
        }
    }
    /* mixed blocks take the loosest (q4) tolerances */
    double atol, rtol;
    tu_gpu_tol(c->mixed ? TMOE_ET_Q4 : c->et, &atol, &rtol);
    tu_assert_close_f(what, got, ref, n, atol * tu_rms_f(ref, n), rtol);
    for (int i = 0; i < TMOE_OP_COUNT; i++)
        if (mg.op_ms[i] < 0.0) fail_msg("negative time for op %s", tmoe_op_name((tmoe_op)i));
    assert_true(mg.step_ms > 0.0);
    /* a second forward (graph replay when enabled) gives the same bits */
    ASSERT_OK(tmoe_engine_forward(gpu, x, T, c->moe_only, bias, yg2, &mg, &err), &err);
    tu_assert_finite(what, yg2, (size_t)T * D);
    assert_memory_equal(yg, yg2, 4 * (size_t)T * D);
    tmoe_engine_free(cpu);
    tmoe_engine_free(gpu);
    tmoe_block_free(blk);
    free(x), free(bias), free(yc), free(yg), free(yg2), free(ic), free(ig), free(wc), free(wg);
    free(ref), free(got);
}

static void test_engine_matrix(void **state) {
    (void)state;
    if (!have_gpu()) skip();
    int Ts[] = {1, 3, 17};
    for (int et = 0; et < TMOE_ET_COUNT; et++)
        for (int impl = 0; impl < TMOE_IMPL_COUNT; impl++) {
            if (!tmoe_etype_is_quant((tmoe_etype)et) && impl == TMOE_IMPL_UNFUSED) continue;
            for (int act = 0; act < TMOE_ACT_COUNT; act++)
                for (int i = 0; i < 3; i++) {
                    eng_case c = {(tmoe_etype)et, (tmoe_impl)impl, (tmoe_act)act, 8, 2,
                                  Ts[i],          i == 1,          i != 2,        0, 0};
                    run_case(&c);
                }
        }
}

static void test_engine_fine_grained(void **state) {
    (void)state;
    if (!have_gpu()) skip();
    eng_case a = {TMOE_ET_Q4, TMOE_IMPL_FUSED, TMOE_ACT_SWIGLU, 64, 8, 17, 0, 1, 0, 0};
    run_case(&a);
    eng_case b = {TMOE_ET_FP16, TMOE_IMPL_FUSED, TMOE_ACT_SWIGLU, 64, 8, 33, 1, 1, 0, 0};
    run_case(&b);
}

/* 1000 tokens, 8 experts top-2: 250 per expert, the cuBLAS path for fp16 / bf16 / unfused */
static void test_engine_large_batch(void **state) {
    (void)state;
    if (!have_gpu()) skip();
    eng_case c[] = {
        {TMOE_ET_FP16, TMOE_IMPL_FUSED, TMOE_ACT_SWIGLU, 8, 2, 1000, 1, 1, 0, 0},
        {TMOE_ET_Q4, TMOE_IMPL_UNFUSED, TMOE_ACT_RELU, 8, 2, 1000, 1, 1, 0, 0},
        {TMOE_ET_Q2, TMOE_IMPL_FUSED, TMOE_ACT_SWIGLU, 8, 2, 1000, 1, 1, 0, 0},
        {TMOE_ET_FP16, TMOE_IMPL_FUSED, TMOE_ACT_RELU, 8, 1, 64, 0, 1, 0, 0},
        {TMOE_ET_BF16, TMOE_IMPL_FUSED, TMOE_ACT_SWIGLU, 8, 2, 1000, 1, 1, 0, 0},
        {TMOE_ET_BF16, TMOE_IMPL_FUSED, TMOE_ACT_RELU, 8, 1, 64, 0, 1, 0, 0},
        /* attention over three sequences of seq_len 64, 64 and 22 tokens */
        {TMOE_ET_Q4, TMOE_IMPL_FUSED, TMOE_ACT_RELU, 8, 2, 150, 0, 1, 0, 0},
    };
#ifdef THERMOE_HAVE_CUDA
    long saved = tmoe_cuda_cublas_min_weights;
    tmoe_cuda_cublas_min_weights = 0; /* small test shapes: force the cuBLAS path */
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) run_case(&c[i]);
    tmoe_cuda_cublas_min_weights = saved;
#endif
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) run_case(&c[i]);
}

/* impl_auto: q4 / q2 experts fused or unfused per step from a crossover (50 tokens per
 * expert): 17 tokens over 8 experts (about 4 each) fused, 1000 (250 each) unfused, with and
 * without graphs, on the kernel and (minimum weights lowered) the cuBLAS path. */
static void test_engine_impl_auto(void **state) {
    (void)state;
    if (!have_gpu()) skip();
    eng_case c[] = {
        {TMOE_ET_Q4, TMOE_IMPL_FUSED, TMOE_ACT_SWIGLU, 8, 2, 17, 1, 1, 0, 50},
        {TMOE_ET_Q4, TMOE_IMPL_FUSED, TMOE_ACT_SWIGLU, 8, 2, 1000, 1, 1, 0, 50},
        {TMOE_ET_Q2, TMOE_IMPL_FUSED, TMOE_ACT_RELU, 8, 2, 17, 0, 0, 0, 50},
        {TMOE_ET_Q2, TMOE_IMPL_FUSED, TMOE_ACT_RELU, 8, 2, 1000, 0, 0, 0, 50},
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) run_case(&c[i]);
#ifdef THERMOE_HAVE_CUDA
    long saved = tmoe_cuda_cublas_min_weights;
    tmoe_cuda_cublas_min_weights = 0;
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) run_case(&c[i]);
    tmoe_cuda_cublas_min_weights = saved;
#endif
}

/* Experts of several types in one block: each type's launch must reach its experts wherever
 * they sit in the list of experts with tokens (all four types, every expert used). */
static void test_engine_mixed_types(void **state) {
    (void)state;
    if (!have_gpu()) skip();
    eng_case c[] = {
        {TMOE_ET_FP16, TMOE_IMPL_FUSED, TMOE_ACT_SWIGLU, 6, 2, 17, 1, 1, 1, 0},
        {TMOE_ET_FP16, TMOE_IMPL_FUSED, TMOE_ACT_RELU, 9, 3, 64, 0, 0, 1, 0},
        {TMOE_ET_FP16, TMOE_IMPL_UNFUSED, TMOE_ACT_SWIGLU, 6, 2, 33, 1, 1, 1, 0},
        {TMOE_ET_FP16, TMOE_IMPL_FUSED, TMOE_ACT_SWIGLU, 6, 2, 1000, 1, 1, 1, 0},
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) run_case(&c[i]);
}

int main(void) {
    g_seed = tu_seed(); /* fresh inputs every run, printed for a replay */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_engine_matrix),       cmocka_unit_test(test_engine_impl_auto),
        cmocka_unit_test(test_engine_fine_grained), cmocka_unit_test(test_engine_large_batch),
        cmocka_unit_test(test_engine_mixed_types),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    tu_close_summary();
    return rc;
}
