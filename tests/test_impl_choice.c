/* The engine's per-step choice of fused or unfused for quantized experts: the measured
 * crossover of a cost model (tmoe_cost_crossover), the rule (tmoe_engine_tokens_per_active,
 * tmoe_engine_choose_impl) and the CPU engine following it step by step (what ran is in the
 * metrics, and the output is the forced impl's, bit for bit). */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "thermoe/backend.h"
#include "thermoe/cost.h"

static tmoe_cost_entry entry(tmoe_op op, tmoe_etype et, tmoe_impl impl, int tokens, double ms) {
    tmoe_cost_entry e = {.op = op,
                         .expert_type = et,
                         .impl = impl,
                         .tokens = tokens,
                         .latency_median_ms = ms,
                         .latency_p90_ms = NAN,
                         .energy_board_j = NAN,
                         .energy_dynamic_j = NAN,
                         .avg_power_w = NAN,
                         .temp_impact_c_per_s = NAN,
                         .samples = 10};
    return e;
}

/* A cost model measured at every token count 1..64: q4 fused costs 0.010 t ms an expert,
 * unfused 0.1025 + 0.005 t (a dequant_unpack of fixed cost, then half the per-token cost), so
 * fused wins below 20.5 tokens and unfused from 21; at 3 tokens unfused dips below fused (a
 * noisy point the crossover must not take). q2: unfused never wins. */
static tmoe_cost_model *make_model(void) {
    tmoe_error err = {0};
    tmoe_cost_model *cm;
    ASSERT_OK(tmoe_cost_create(&cm, &err), &err);
    for (int t = 1; t <= 64; t++) {
        const tmoe_etype ets[2] = {TMOE_ET_Q4, TMOE_ET_Q2};
        for (int i = 0; i < 2; i++) {
            tmoe_etype et = ets[i];
            tmoe_cost_entry es[] = {
                entry(TMOE_OP_LINEAR_FC1, et, TMOE_IMPL_FUSED, t, 0.006 * t),
                entry(TMOE_OP_RELU, et, TMOE_IMPL_FUSED, t, 0.001 * t),
                entry(TMOE_OP_LINEAR_FC2, et, TMOE_IMPL_FUSED, t, 0.003 * t),
                entry(TMOE_OP_DEQUANT_UNPACK, et, TMOE_IMPL_UNFUSED, t,
                      et == TMOE_ET_Q4 && t == 3 ? 0.0 : 0.1025),
                entry(TMOE_OP_LINEAR_FC1, et, TMOE_IMPL_UNFUSED, t,
                      et == TMOE_ET_Q4 ? 0.003 * t : 0.012 * t),
                entry(TMOE_OP_RELU, et, TMOE_IMPL_UNFUSED, t, 0.0005 * t),
                entry(TMOE_OP_LINEAR_FC2, et, TMOE_IMPL_UNFUSED, t, 0.0015 * t),
            };
            for (size_t j = 0; j < sizeof es / sizeof *es; j++)
                ASSERT_OK(tmoe_cost_add(cm, &es[j], &err), &err);
        }
    }
    return cm;
}

static void test_crossover(void **state) {
    (void)state;
    tmoe_error err = {0};
    tmoe_cost_model *cm = make_model();
    int n = -1;
    ASSERT_OK(tmoe_cost_crossover(cm, TMOE_ET_Q4, TMOE_IMPL_FUSED, TMOE_IMPL_UNFUSED, 64, &n, &err),
              &err);
    assert_int_equal(n, 21);
    /* the other direction: fused is faster from 1 token up to 20, not at 64 */
    ASSERT_OK(tmoe_cost_crossover(cm, TMOE_ET_Q4, TMOE_IMPL_UNFUSED, TMOE_IMPL_FUSED, 20, &n, &err),
              &err);
    assert_int_equal(n, 4); /* 3 is the dip where unfused is faster */
    ASSERT_OK(tmoe_cost_crossover(cm, TMOE_ET_Q4, TMOE_IMPL_UNFUSED, TMOE_IMPL_FUSED, 64, &n, &err),
              &err);
    assert_int_equal(n, 0);
    /* beyond the measured range the lookups clamp: unfused still wins at 1000 */
    ASSERT_OK(
        tmoe_cost_crossover(cm, TMOE_ET_Q4, TMOE_IMPL_FUSED, TMOE_IMPL_UNFUSED, 1000, &n, &err),
        &err);
    assert_int_equal(n, 21);
    ASSERT_OK(tmoe_cost_crossover(cm, TMOE_ET_Q2, TMOE_IMPL_FUSED, TMOE_IMPL_UNFUSED, 64, &n, &err),
              &err);
    assert_int_equal(n, 0);
    /* a type the model lacks: an error naming it */
    assert_int_equal(
        tmoe_cost_crossover(cm, TMOE_ET_FP16, TMOE_IMPL_FUSED, TMOE_IMPL_UNFUSED, 64, &n, &err),
        TMOE_EINVAL);
    assert_non_null(strstr(err.msg, "fp16"));
    assert_int_equal(
        tmoe_cost_crossover(cm, TMOE_ET_Q4, TMOE_IMPL_FUSED, TMOE_IMPL_UNFUSED, 0, &n, &err),
        TMOE_EINVAL);
    tmoe_cost_free(cm);
}

static void test_rule(void **state) {
    (void)state;
    /* tokens per expert with tokens: 1 at one token, T k / E when every expert is busy */
    assert_true(fabs(tmoe_engine_tokens_per_active(1, 2, 8) - 1.0) < 1e-12);
    assert_true(fabs(tmoe_engine_tokens_per_active(4096, 2, 8) - 1024.0) < 1e-9);
    double mid = tmoe_engine_tokens_per_active(4, 2, 8); /* 8 copies over 8 (1 - 0.75^4) */
    assert_true(fabs(mid - 8.0 / (8.0 * (1.0 - pow(0.75, 4)))) < 1e-12);
    assert_true(fabs(tmoe_engine_tokens_per_active(5, 4, 4) - 5.0) < 1e-12);
    for (int T = 1; T < 200; T++) /* grows with T */
        assert_true(tmoe_engine_tokens_per_active(T + 1, 2, 8) >
                    tmoe_engine_tokens_per_active(T, 2, 8));

    tmoe_engine_config c = tmoe_engine_config_default();
    c.impl = TMOE_IMPL_FUSED;
    c.impl_auto = 1;
    c.unfused_from[TMOE_ET_Q4] = 21;
    assert_int_equal(tmoe_engine_choose_impl(&c, TMOE_ET_Q4, 20.9), TMOE_IMPL_FUSED);
    assert_int_equal(tmoe_engine_choose_impl(&c, TMOE_ET_Q4, 21.0), TMOE_IMPL_UNFUSED);
    assert_int_equal(tmoe_engine_choose_impl(&c, TMOE_ET_Q4, 5000.0), TMOE_IMPL_UNFUSED);
    /* no crossover for q2 (0 = never): the configured impl */
    assert_int_equal(tmoe_engine_choose_impl(&c, TMOE_ET_Q2, 5000.0), TMOE_IMPL_FUSED);
    /* fp16 / bf16 have one implementation */
    c.unfused_from[TMOE_ET_FP16] = 1;
    assert_int_equal(tmoe_engine_choose_impl(&c, TMOE_ET_FP16, 5000.0), TMOE_IMPL_FUSED);
    /* forced: the flag wins at every count */
    c.impl_auto = 0;
    c.impl = TMOE_IMPL_UNFUSED;
    assert_int_equal(tmoe_engine_choose_impl(&c, TMOE_ET_Q4, 1.0), TMOE_IMPL_UNFUSED);
    c.impl = TMOE_IMPL_FUSED;
    assert_int_equal(tmoe_engine_choose_impl(&c, TMOE_ET_Q4, 5000.0), TMOE_IMPL_FUSED);
}

/* The CPU engine, q4 experts (E 4, top-2), crossover at 21 tokens per expert from the cost
 * model above: 1 token (1 per expert) runs fused, 64 tokens (about 32 per expert) unfused; the
 * metrics say so, dequant_unpack is timed only in the unfused step, and each output equals
 * the forced impl's bit for bit. */
static void test_cpu_engine_follows(void **state) {
    (void)state;
    tmoe_error err = {0};
    tmoe_cost_model *cm = make_model();
    tmoe_block_config bc = tmoe_block_config_default();
    bc.d_model = 64;
    bc.n_heads = 4;
    bc.d_ff = 128;
    bc.num_experts = 4;
    bc.top_k = 2;
    bc.group_size = 32;
    bc.seq_len = 64;
    bc.expert_type = TMOE_ET_Q4;
    bc.seed = tu_seed();
    tmoe_block *blk;
    ASSERT_OK(tmoe_block_create(&bc, &blk, &err), &err);
    tmoe_engine_config ec = tmoe_engine_config_default();
    ec.backend = TMOE_BACKEND_CPU;
    ec.max_tokens = 64;
    ec.impl_auto = 1;
    ASSERT_OK(tmoe_cost_crossover(cm, TMOE_ET_Q4, TMOE_IMPL_FUSED, TMOE_IMPL_UNFUSED,
                                  ec.max_tokens * bc.top_k, &ec.unfused_from[TMOE_ET_Q4], &err),
              &err);
    assert_int_equal(ec.unfused_from[TMOE_ET_Q4], 21);
    tmoe_engine *aut, *fused, *unf;
    ASSERT_OK(tmoe_engine_create(blk, &ec, &aut, &err), &err);
    tmoe_engine_config ef = ec;
    ef.impl_auto = 0;
    ef.impl = TMOE_IMPL_FUSED;
    ASSERT_OK(tmoe_engine_create(blk, &ef, &fused, &err), &err);
    ef.impl = TMOE_IMPL_UNFUSED;
    ASSERT_OK(tmoe_engine_create(blk, &ef, &unf, &err), &err);
    tmoe_rng r;
    tmoe_rng_seed(&r, bc.seed);
    const int Ts[2] = {1, 64};
    for (int i = 0; i < 2; i++) {
        int T = Ts[i], D = bc.d_model;
        float *x = malloc(4 * (size_t)T * D), *ya = malloc(4 * (size_t)T * D),
              *yf = malloc(4 * (size_t)T * D);
        assert_true(x && ya && yf);
        for (size_t j = 0; j < (size_t)T * D; j++) x[j] = tmoe_rng_uniform_sym(&r, 1.0f);
        tu_poison(ya, 4 * (size_t)T * D);
        tu_poison(yf, 4 * (size_t)T * D);
        tmoe_moe_metrics ma = {0}, mf = {0};
        ASSERT_OK(tmoe_engine_forward(aut, x, T, 1, NULL, ya, &ma, &err), &err);
        tmoe_impl want = T == 1 ? TMOE_IMPL_FUSED : TMOE_IMPL_UNFUSED;
        ASSERT_OK(tmoe_engine_forward(want == TMOE_IMPL_FUSED ? fused : unf, x, T, 1, NULL, yf, &mf,
                                      &err),
                  &err);
        assert_int_equal(ma.impl_auto, 1);
        assert_int_equal(mf.impl_auto, 0);
        if (ma.impl_used[TMOE_ET_Q4] != (int)want)
            fail_msg("T = %d (%.2f tokens per expert): ran %s, want %s", T,
                     tmoe_engine_tokens_per_active(T, bc.top_k, bc.num_experts),
                     tmoe_impl_name((tmoe_impl)ma.impl_used[TMOE_ET_Q4]), tmoe_impl_name(want));
        assert_int_equal(mf.impl_used[TMOE_ET_Q4], (int)want);
        assert_int_equal(ma.impl_used[TMOE_ET_FP16], -1); /* no fp16 experts in this block */
        assert_int_equal(!isnan(ma.op_ms[TMOE_OP_DEQUANT_UNPACK]), want == TMOE_IMPL_UNFUSED);
        tu_assert_finite("auto output", ya, (size_t)T * D);
        assert_memory_equal(ya, yf, 4 * (size_t)T * D);
        free(x), free(ya), free(yf);
    }
    tmoe_engine_free(aut);
    tmoe_engine_free(fused);
    tmoe_engine_free(unf);
    /* a negative crossover is refused */
    ec.unfused_from[TMOE_ET_Q2] = -1;
    tmoe_engine *bad = NULL;
    assert_int_equal(tmoe_engine_create(blk, &ec, &bad, &err), TMOE_EINVAL);
    assert_non_null(strstr(err.msg, "unfused_from[q2]"));
    tmoe_block_free(blk);
    tmoe_cost_free(cm);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crossover),
        cmocka_unit_test(test_rule),
        cmocka_unit_test(test_cpu_engine_follows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
