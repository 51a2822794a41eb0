/* Each routing strategy moves selection the way it claims; the load balancer flattens a
 * skewed workload; a router told the selection that ran matches one that selects itself;
 * TTHA leaves routing alone when the targets do not bind and lowers a toy plant's power when
 * they do. Seeds fixed where a property is statistical. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "thermoe/model.h"
#include "thermoe/route.h"

#define MAXE 64
#define MAXT 64

/* Expert costs: energy = fixed + per_token * n, temp impact = per-token heat * n. */
typedef struct {
    double ef[MAXE], ep[MAXE], lf[MAXE], lp[MAXE], tp[MAXE];
    tmoe_analytic_cost c;
} costs;

static void make_costs(costs *k, int E, int costly, double factor) {
    for (int e = 0; e < E; e++) {
        double f = e == costly ? factor : 1.0;
        k->ef[e] = 0.04 * f;
        k->ep[e] = 0.002 * f;
        k->lf[e] = 0.09;
        k->lp[e] = 0.001;
        k->tp[e] = 0.05 * f;
    }
    tmoe_analytic_cost c = {E, k->ef, k->ep, NULL, k->lf, k->lp, NULL, NULL, k->tp, NULL};
    k->c = c;
}

static tmoe_router *make_router(tmoe_router_config cfg, costs *k) {
    tmoe_cost_provider p = tmoe_cost_analytic_provider(&k->c);
    tmoe_router *r;
    tmoe_error err = {0};
    ASSERT_OK(tmoe_router_create(&cfg, &p, &r, &err), &err);
    return r;
}

static void random_logits(tmoe_rng *rng, float *z, int T, int E, const double *offset) {
    for (int t = 0; t < T; t++)
        for (int e = 0; e < E; e++)
            z[t * E + e] = (float)(tmoe_rng_normal(rng) + (offset ? offset[e] : 0.0));
}

/* Route `batches` batches of T random tokens; count copies per expert. max_abs_bias gets the
 * largest |bias| seen. */
static void run_batches(tmoe_router *r, int batches, int T, int E, int k, const tmoe_hw_state *hw,
                        uint64_t seed, int64_t *counts, double *max_abs_bias) {
    tmoe_rng rng;
    tmoe_rng_seed(&rng, seed);
    float z[MAXT * MAXE], b[MAXE];
    int32_t sel[MAXT * 16];
    tmoe_error err = {0};
    memset(counts, 0, sizeof(int64_t) * E);
    double mb = 0.0;
    for (int i = 0; i < batches; i++) {
        random_logits(&rng, z, T, E, NULL);
        double pe;
        ASSERT_OK(tmoe_router_route(r, z, T, NULL, hw, b, sel, &pe, &err), &err);
        assert_true(isfinite(pe) && pe > 0.0);
        for (int j = 0; j < T * k; j++) counts[sel[j]]++;
        for (int e = 0; e < E; e++) mb = fmax(mb, fabs(b[e]));
    }
    if (max_abs_bias) *max_abs_bias = mb;
}

static tmoe_router_config base_cfg(tmoe_route_strategy s, int E, int k) {
    tmoe_router_config c = tmoe_router_config_default();
    c.strategy = s;
    c.num_experts = E;
    c.top_k = k;
    c.max_tokens = MAXT;
    return c;
}

/* A hardware state at the targets (pressure 1) or far below them (pressure < 0). */
static tmoe_hw_state hw_at(double power, double temp) {
    tmoe_hw_state h = tmoe_hw_state_unknown();
    h.power_w = power;
    h.gpu_temp_c = temp;
    h.gpu_util = 0.8;
    h.sm_clock_ratio = 1.0;
    h.throttled = 0;
    return h;
}

/* ---- expert j twice as costly is chosen less; equal costs give zero biases ---------------- */

static void check_costly_chosen_less(tmoe_route_strategy s, const tmoe_hw_state *hw) {
    const int E = 8, k = 2, T = 32, J = 3, B = 40;
    costs two, one;
    make_costs(&two, E, J, 2.0);
    make_costs(&one, E, -1, 1.0);
    tmoe_router_config cfg = base_cfg(s, E, k);
    cfg.kl_max = 0.1; /* a tight end that lets the biases move a fifth of the copies */
    tmoe_router *rb = make_router(base_cfg(TMOE_ROUTE_BASELINE, E, k), &two);
    tmoe_router *rs = make_router(cfg, &two);
    /* the per-expert biases alone (no set selection, whose exclusion bias is not a cost bias) */
    tmoe_router_config cfg_nb = cfg;
    cfg_nb.budget = TMOE_BUDGET_NONE;
    tmoe_router *re = make_router(cfg_nb, &one);
    int64_t cb[MAXE], cs[MAXE], ce[MAXE];
    double mb_equal;
    run_batches(rb, B, T, E, k, hw, 11, cb, NULL);
    run_batches(rs, B, T, E, k, hw, 11, cs, NULL);
    run_batches(re, B, T, E, k, hw, 11, ce, &mb_equal);
    if (!(cs[J] < cb[J] * 0.8))
        fail_msg("%s: costly expert %d chosen %lld times vs baseline %lld",
                 tmoe_route_strategy_name(s), J, (long long)cs[J], (long long)cb[J]);
    /* equal costs: zero biases (the TTHA adapter's own output excepted, which starts ~0) */
    double tol = s == TMOE_ROUTE_KERNEL_AWARE_TTHA ? 0.05 : 0.0;
    if (!(mb_equal <= tol))
        fail_msg("%s: equal costs gave |bias| up to %g", tmoe_route_strategy_name(s), mb_equal);
    tmoe_router_free(rb);
    tmoe_router_free(rs);
    tmoe_router_free(re);
}

static void test_costly_expert_static(void **state) {
    (void)state;
    check_costly_chosen_less(TMOE_ROUTE_STATIC_OPTIMAL, NULL);
}
static void test_costly_expert_kernel_aware(void **state) {
    (void)state;
    tmoe_hw_state hw = hw_at(420.0, 70.0); /* near the power target: cost biases engaged */
    check_costly_chosen_less(TMOE_ROUTE_KERNEL_AWARE_TTHA, &hw);
}
static void test_costly_expert_hierarchical(void **state) {
    (void)state;
    tmoe_hw_state cool = hw_at(100.0, 40.0), hot = hw_at(450.0, 80.0);
    check_costly_chosen_less(TMOE_ROUTE_HIERARCHICAL_ADAPTIVE, &cool);
    check_costly_chosen_less(TMOE_ROUTE_HIERARCHICAL_ADAPTIVE, &hot);
}
static void test_costly_expert_predictive(void **state) {
    (void)state;
    tmoe_hw_state hw = hw_at(300.0, 74.0);
    hw.pred_temp_c = 79.0; /* the monitor predicts an overshoot */
    check_costly_chosen_less(TMOE_ROUTE_PREDICTIVE_THERMAL, &hw);
}
static void test_costly_expert_multi_gpu(void **state) {
    (void)state;
    check_costly_chosen_less(TMOE_ROUTE_MULTI_GPU_AWARE, NULL);
}

/* ---- biases move tokens between running experts: they follow the marginal cost --------- */

/* Experts 0-1 are cheap to run at all (a quarter of the bytes, as q4) but cost more for each
 * token they take (dequantization), experts 2-3 the reverse (fp16). At 8 tokens an expert the
 * energy per token says 0-1 are cheaper; one more token costs more on 0-1. The cost biases
 * must favour 2-3 (moving a token there saves energy while all four run); the tiers, which
 * keep or drop whole experts, still rank 0-1 cheaper. */
static void test_biases_follow_marginal_cost(void **state) {
    (void)state;
    const int E = 4;
    double ef[4] = {0.01, 0.01, 0.04, 0.04}, ep[4] = {0.004, 0.004, 0.002, 0.002};
    tmoe_analytic_cost c = {E, ef, ep, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    tmoe_cost_provider p = tmoe_cost_analytic_provider(&c);
    tmoe_error err = {0};
    double b[4];
    ASSERT_OK(tmoe_route_cost_biases(&p, 8.0, E, 2.0, 0.0, NULL, b, &err), &err);
    assert_true(b[0] < 0.0 && b[1] < 0.0 && b[2] > 0.0 && b[3] > 0.0);
    assert_true(fabs(b[0] - b[1]) < 1e-12 && fabs(b[2] - b[3]) < 1e-12);
    /* hierarchical_adaptive under pressure drops the costlier tier by energy per token, the
     * fp16-like experts 2-3: no token is routed there */
    tmoe_router_config cfg = base_cfg(TMOE_ROUTE_HIERARCHICAL_ADAPTIVE, E, 1);
    cfg.num_tiers = 2;
    cfg.budget = TMOE_BUDGET_NONE;
    tmoe_router *r;
    ASSERT_OK(tmoe_router_create(&cfg, &p, &r, &err), &err);
    tmoe_hw_state hot = hw_at(450.0, 80.0);
    int64_t counts[MAXE];
    run_batches(r, 10, 16, E, 1, &hot, 5, counts, NULL);
    assert_true(counts[0] + counts[1] == 160 && counts[2] == 0 && counts[3] == 0);
    tmoe_router_free(r);
}

static void test_baseline_no_bias(void **state) {
    (void)state;
    costs two;
    make_costs(&two, 8, 3, 2.0);
    tmoe_router *r = make_router(base_cfg(TMOE_ROUTE_BASELINE, 8, 2), &two);
    int64_t c[MAXE];
    double mb;
    tmoe_hw_state hot = hw_at(700, 90);
    run_batches(r, 5, 16, 8, 2, &hot, 3, c, &mb);
    assert_true(mb == 0.0);
    tmoe_router_free(r);
}

static void test_static_kl_budget(void **state) {
    (void)state;
    const int E = 8, k = 2, N = 200;
    costs two;
    make_costs(&two, E, 5, 2.0);
    tmoe_router_config cfg = base_cfg(TMOE_ROUTE_STATIC_OPTIMAL, E, k);
    cfg.kl_bound = 0.02;
    tmoe_router *r = make_router(cfg, &two);
    tmoe_rng rng;
    tmoe_rng_seed(&rng, 21);
    float *z = malloc(sizeof(float) * N * E);
    assert_non_null(z);
    random_logits(&rng, z, N, E, NULL);
    double kl;
    tmoe_error err = {0};
    ASSERT_OK(tmoe_router_fit_static(r, z, N, 16, &kl, &err), &err);
    /* the fit spends its budget (nearly) and not more */
    if (!(kl <= cfg.kl_bound * (1 + 1e-9) && kl > 0.5 * cfg.kl_bound))
        fail_msg("KL %g, bound %g", kl, cfg.kl_bound);
    float b[MAXE];
    ASSERT_OK(tmoe_router_route(r, z, 16, NULL, NULL, b, NULL, NULL, &err), &err);
    /* the biases it routes with are the fitted ones, scaled where this batch's routing would
     * pass the budget (tmoe_set_bias_scale) */
    tmoe_set_result sr;
    assert_true(tmoe_router_last_set(r, &sr, NULL));
    fprintf(stderr, "static_optimal, kl budget: bias scale %g on a batch of 16\n", sr.bias_scale);
    assert_true(sr.bias_scale > 0.0);
    double bd[MAXE];
    for (int e = 0; e < E; e++) bd[e] = b[e] / sr.bias_scale;
    double kl2 = tmoe_route_mean_kl(z, N, E, bd, NULL);
    assert_true(fabs(kl2 - kl) < 1e-5);
    for (int e = 0; e < E; e++)
        if (e != 5) assert_true(b[5] < b[e]);
    free(z);
    tmoe_router_free(r);
}

/* ---- multi_gpu_aware: a hot or busy device sheds load ------------------------------------ */

static void test_multi_gpu_hot_device_sheds(void **state) {
    (void)state;
    const int E = 8, k = 2, T = 32;
    costs one;
    make_costs(&one, E, -1, 1.0);
    tmoe_router_config cfg = base_cfg(TMOE_ROUTE_MULTI_GPU_AWARE, E, k);
    cfg.num_devices = 2;
    cfg.link_j_per_token = 0.0;
    cfg.budget = TMOE_BUDGET_NONE; /* the device biases alone (the set: test_route_select) */
    tmoe_hw_state hw = hw_at(300, 60);
    hw.num_devices = 2;
    hw.dev_temp_c[0] = 55;
    hw.dev_temp_c[1] = 80; /* beyond the 75 C target */
    hw.dev_util[0] = hw.dev_util[1] = 0.5;
    tmoe_router *r = make_router(cfg, &one),
                *rb = make_router(base_cfg(TMOE_ROUTE_BASELINE, E, k), &one);
    int64_t c[MAXE], cb[MAXE];
    run_batches(r, 40, T, E, k, &hw, 5, c, NULL);
    run_batches(rb, 40, T, E, k, &hw, 5, cb, NULL);
    int64_t on1 = 0, on1b = 0, tot = 0;
    for (int e = 0; e < E; e++) { /* expert e lives on device e % 2 */
        if (e % 2) {
            on1 += c[e];
            on1b += cb[e];
        }
        tot += c[e];
    }
    if (!(on1 < 0.5 * on1b))
        fail_msg("hot device kept %lld of %lld copies (baseline %lld)", (long long)on1,
                 (long long)tot, (long long)on1b);
    /* equal devices: no bias */
    hw.dev_temp_c[1] = 55;
    double mb;
    run_batches(r, 3, T, E, k, &hw, 5, c, &mb);
    assert_true(mb == 0.0);
    /* a busy device (long queue) sheds load too */
    hw.dev_queue[0] = 0;
    hw.dev_queue[1] = 512;
    run_batches(r, 40, T, E, k, &hw, 5, c, NULL);
    on1 = 0;
    for (int e = 1; e < E; e += 2) on1 += c[e];
    assert_true(on1 < 0.5 * on1b);
    tmoe_router_free(r);
    tmoe_router_free(rb);
}

static void test_multi_gpu_link_cost(void **state) {
    (void)state;
    const int E = 8, k = 2, T = 32;
    costs one;
    make_costs(&one, E, -1, 1.0);
    tmoe_router_config cfg = base_cfg(TMOE_ROUTE_MULTI_GPU_AWARE, E, k);
    cfg.num_devices = 2;
    cfg.link_j_per_token = 0.002; /* as much as an expert's own energy per token */
    /* the biases alone: under a set budget they are scaled to it (tmoe_set_bias_scale) */
    cfg.budget = TMOE_BUDGET_NONE;
    tmoe_router *r = make_router(cfg, &one),
                *rb = make_router(base_cfg(TMOE_ROUTE_BASELINE, E, k), &one);
    int64_t c[MAXE], cb[MAXE], off = 0, offb = 0;
    run_batches(r, 30, T, E, k, NULL, 8, c, NULL);
    run_batches(rb, 30, T, E, k, NULL, 8, cb, NULL);
    for (int e = 1; e < E; e += 2) {
        off += c[e];
        offb += cb[e];
    }
    assert_true(off < 0.8 * offb);
    tmoe_router_free(r);
    tmoe_router_free(rb);
}

/* ---- hierarchical: the hot state excludes the costliest tier ------------------------------ */

static void test_hierarchical_tiers(void **state) {
    (void)state;
    const int E = 9, k = 2, T = 32;
    costs c3;
    make_costs(&c3, E, -1, 1.0);
    for (int e = 0; e < E; e++) { /* three cost levels: experts 0-2 cheap, 6-8 costly */
        double f = 1.0 + (e / 3);
        c3.ep[e] = 0.002 * f;
        c3.ef[e] = 0.04 * f;
        c3.tp[e] = 0.05 * f;
    }
    /* the tiers alone (no budget): dropped tiers are out */
    tmoe_router_config cn = base_cfg(TMOE_ROUTE_HIERARCHICAL_ADAPTIVE, E, k);
    cn.budget = TMOE_BUDGET_NONE;
    tmoe_router *r = make_router(cn, &c3);
    int64_t c[MAXE];
    tmoe_hw_state warm = hw_at(380, 60), hot = hw_at(300, 90);
    run_batches(r, 10, T, E, k, &warm, 2, c, NULL);
    for (int e = 6; e < 9; e++) assert_int_equal(c[e], 0); /* warm: costliest tier out */
    assert_true(c[3] + c[4] + c[5] > 0);
    run_batches(r, 10, T, E, k, &hot, 2, c, NULL);
    for (int e = 3; e < 9; e++) assert_int_equal(c[e], 0); /* hot: only the cheapest tier */
    /* explicit tiers (e.g. lower-precision copies as tier 0) */
    int tiers[9] = {1, 1, 1, 1, 0, 0, 1, 1, 1};
    tmoe_router_config cfg = cn;
    cfg.num_tiers = 2;
    cfg.expert_tier = tiers;
    tmoe_router *r2 = make_router(cfg, &c3);
    run_batches(r2, 10, T, E, k, &hot, 2, c, NULL);
    for (int e = 0; e < 9; e++)
        if (e != 4 && e != 5) assert_int_equal(c[e], 0);
    tmoe_router_free(r);
    tmoe_router_free(r2);
    /* under a budget the tiers yield where no set of the kept tiers meets it: every batch's
     * routing meets tau, and experts of the dropped tiers run where they must */
    cfg.budget = TMOE_BUDGET_TAU;
    r2 = make_router(cfg, &c3);
    tmoe_rng rng;
    tmoe_rng_seed(&rng, 3);
    float z[MAXT * MAXE], b[MAXE];
    int32_t sel[MAXT * 16];
    tmoe_error err = {0};
    int yielded = 0;
    for (int i = 0; i < 10; i++) {
        random_logits(&rng, z, T, E, NULL);
        ASSERT_OK(tmoe_router_route(r2, z, T, NULL, &hot, b, sel, NULL, &err), &err);
        tmoe_set_result res;
        double tau;
        assert_true(tmoe_router_last_set(r2, &res, &tau));
        assert_true(res.meets);
        for (int j = 0; j < T * k; j++) yielded |= sel[j] != 4 && sel[j] != 5;
    }
    assert_true(yielded);
    tmoe_router_free(r2);
}

/* ---- hierarchical: lower-precision copies run under pressure ------------------------------ */

/* Experts of equal cost (base) and their copies (copy) at f[e] times that. */
static void copy_costs(costs *base, costs *copy, int E, const double *f) {
    make_costs(base, E, -1, 1.0);
    make_costs(copy, E, -1, 1.0);
    for (int e = 0; e < E; e++) copy->ef[e] *= f[e], copy->ep[e] *= f[e], copy->tp[e] *= f[e];
}

/* Experts of equal cost; experts 0-3 have copies at half the cost, expert 4 one at twice the
 * cost. Cool: no copy runs. Warm: the four cheaper copies run, not expert 4's, no tier is
 * dropped, and the predicted energy bills each expert at its cost as run. Hot: the copies and
 * the costliest tier of the costs as run (experts 6 and 7 by rank). Other strategies and the
 * comparisons never run a copy. */
static void test_hierarchical_copies(void **state) {
    (void)state;
    const int E = 8, k = 2, T = 32;
    costs base, half;
    const double f[8] = {0.5, 0.5, 0.5, 0.5, 2.0, 2.0, 2.0, 2.0};
    copy_costs(&base, &half, E, f);
    tmoe_cost_provider pc = tmoe_cost_analytic_provider(&half.c);
    tmoe_cost_provider pb = tmoe_cost_analytic_provider(&base.c);
    unsigned char has[MAXE] = {1, 1, 1, 1, 1, 0, 0, 0};
    tmoe_router_config cfg = base_cfg(TMOE_ROUTE_HIERARCHICAL_ADAPTIVE, E, k);
    cfg.budget = TMOE_BUDGET_NONE; /* the tiers alone: the dropped tier is out */
    cfg.expert_copy = has;
    cfg.copy_cost = &pc;
    tmoe_router *r = make_router(cfg, &base);
    tmoe_error err = {0};
    tmoe_rng rng;
    tmoe_rng_seed(&rng, 7);
    float z[MAXT * MAXE], b[MAXE];
    int32_t sel[MAXT * 16];
    unsigned char use[MAXE];
    tmoe_hw_state cool = hw_at(100, 40), warm = hw_at(380, 60), hot = hw_at(300, 90);
    const tmoe_hw_state *hws[3] = {&cool, &warm, &hot};
    for (int h = 0; h < 3; h++)
        for (int i = 0; i < 5; i++) {
            random_logits(&rng, z, T, E, NULL);
            double pe;
            ASSERT_OK(tmoe_router_route(r, z, T, NULL, hws[h], b, sel, &pe, &err), &err);
            int n = tmoe_router_last_copies(r, use);
            assert_int_equal(n, h == 0 ? 0 : 4);
            for (int e = 0; e < E; e++) assert_int_equal(use[e], h > 0 && e < 4);
            int32_t cnt[MAXE] = {0};
            for (int j = 0; j < T * k; j++) cnt[sel[j]]++;
            if (h == 2) assert_true(cnt[6] == 0 && cnt[7] == 0);
            if (h == 1) assert_true(cnt[4] + cnt[5] + cnt[6] + cnt[7] > 0);
            /* the predicted energy: each expert that ran at its cost as run */
            double want = 0.0;
            for (int e = 0; e < E; e++) {
                if (!cnt[e]) continue;
                tmoe_expert_cost x;
                const tmoe_cost_provider *p = use[e] ? &pc : &pb;
                ASSERT_OK(p->expert_cost(p->ctx, e, cnt[e], &x, &err), &err);
                want += x.energy_j;
            }
            assert_true(fabs(pe - want) <= 1e-12 * want);
        }
    tmoe_router_free(r);
    /* strategies that do not run copies, at the hot state */
    const tmoe_route_strategy others[] = {TMOE_ROUTE_KERNEL_AWARE_TTHA,
                                          TMOE_ROUTE_PREDICTIVE_THERMAL, TMOE_ROUTE_TOP_P};
    for (size_t i = 0; i < sizeof others / sizeof *others; i++) {
        cfg.strategy = others[i];
        r = make_router(cfg, &base);
        random_logits(&rng, z, T, E, NULL);
        if (tmoe_route_strategy_is_comparison(others[i])) {
            float w[MAXT * 16];
            ASSERT_OK(tmoe_router_route_explicit(r, z, T, 1, &hot, sel, w, NULL, &err), &err);
        } else {
            ASSERT_OK(tmoe_router_route(r, z, T, NULL, &hot, b, sel, NULL, &err), &err);
        }
        assert_int_equal(tmoe_router_last_copies(r, use), 0);
        tmoe_router_free(r);
    }
    /* copies need their costs */
    cfg.strategy = TMOE_ROUTE_HIERARCHICAL_ADAPTIVE;
    cfg.copy_cost = NULL;
    assert_int_equal(tmoe_router_create(&cfg, &pb, &r, &err), TMOE_EINVAL);
    assert_non_null(strstr(err.msg, "expert_copy needs copy_cost"));
}

/* kernel_aware_ttha with copies: none at its base budget (g 0); while each batch draws over
 * the target, g climbs and the copies follow it, never fewer, up to all eight; under the
 * target they go again. */
static void test_ttha_copies_follow_power(void **state) {
    (void)state;
    const int E = 8, k = 2, T = 16;
    costs base, half;
    const double f[8] = {0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5};
    copy_costs(&base, &half, E, f);
    tmoe_cost_provider pc = tmoe_cost_analytic_provider(&half.c);
    unsigned char has[MAXE];
    memset(has, 1, sizeof has);
    tmoe_router_config cfg = base_cfg(TMOE_ROUTE_KERNEL_AWARE_TTHA, E, k);
    cfg.expert_copy = has;
    cfg.copy_cost = &pc;
    cfg.power_target_w = 300;
    tmoe_router *r = make_router(cfg, &base);
    tmoe_error err = {0};
    tmoe_rng rng;
    tmoe_rng_seed(&rng, 4);
    float z[MAXT * MAXE], b[MAXE];
    int32_t sel[MAXT * 16];
    tmoe_hw_state hw = hw_at(200, 40);
    tmoe_route_obs o = tmoe_route_obs_unknown();
    o.latency_ms = 10.0;
    o.throughput = 1600.0;
    o.dt_s = 0.01;
    int prev = 0, most = 0, rose = 0;
    for (int i = 0; i < 40; i++) {
        random_logits(&rng, z, T, E, NULL);
        ASSERT_OK(tmoe_router_route(r, z, T, NULL, &hw, b, sel, NULL, &err), &err);
        int n = tmoe_router_last_copies(r, NULL);
        if (i == 0) assert_int_equal(n, 0); /* g starts at the base budget */
        if (i < 20) {                       /* over the target: never fewer copies than before */
            assert_true(n >= prev);
            rose |= n > prev;
        }
        if (n > most) most = n;
        prev = n;
        o.power_w = i < 20 ? 450.0 : 150.0;
        ASSERT_OK(tmoe_router_update(r, &o, NULL, &err), &err);
    }
    assert_true(rose);
    assert_int_equal(most, E);
    assert_int_equal(prev, 0); /* back under the target: none */
    tmoe_router_free(r);
}

/* ---- predictive_thermal acts before the target is crossed -------------------------------- */

static void test_predictive_acts_early(void **state) {
    (void)state;
    const int E = 8, k = 2, T = 32, J = 3;
    costs two;
    make_costs(&two, E, J, 2.0);
    tmoe_router_config cfg = base_cfg(TMOE_ROUTE_PREDICTIVE_THERMAL, E, k);
    cfg.temp_target_c = 75;
    cfg.horizon_s = 5;
    cfg.budget = TMOE_BUDGET_NONE; /* the thermal biases alone (the set: test_route_select) */
    tmoe_router *r = make_router(cfg, &two),
                *rb = make_router(base_cfg(TMOE_ROUTE_BASELINE, E, k), &two);
    /* teach the thermal predictor a plant: tau 10 s, R 0.1 C/W, T_amb 30 C */
    tmoe_thermal_pred *tp = tmoe_router_thermal_pred(r);
    double Tc = 40, P = 200;
    tmoe_rng rng;
    tmoe_rng_seed(&rng, 9);
    for (int i = 0; i < 3000; i++) {
        if (i % 50 == 0) P = 100 + 500 * tmoe_rng_uniform(&rng);
        double tss = 30 + 0.1 * P;
        Tc = tss + (Tc - tss) * exp(-0.1 / 10);
        tmoe_route_obs o = tmoe_route_obs_unknown();
        o.power_w = P;
        o.temp_c = Tc;
        o.dt_s = 0.1;
        tmoe_error err = {0};
        ASSERT_OK(tmoe_router_update(r, &o, NULL, &err), &err);
    }
    /* 70 C now, below the target; at 600 W the plant heads to 90 C: 79 C in 5 s */
    tmoe_hw_state hw = hw_at(600, 70);
    double pred = tmoe_thermal_pred_predict_from(tp, 70, 5, 600);
    assert_true(pred > 76 && pred < 82);
    int64_t c[MAXE], cb[MAXE];
    double mb;
    run_batches(r, 30, T, E, k, &hw, 4, c, &mb);
    run_batches(rb, 30, T, E, k, &hw, 4, cb, NULL);
    assert_true(hw.gpu_temp_c < cfg.temp_target_c);
    assert_true(mb > 0.5);
    if (!(c[J] < 0.8 * cb[J]))
        fail_msg("predicted overshoot: costly expert %lld vs %lld", (long long)c[J],
                 (long long)cb[J]);
    /* at 250 W it heads to 55 C: no predicted overshoot, no bias */
    hw = hw_at(250, 70);
    run_batches(r, 5, T, E, k, &hw, 4, c, &mb);
    assert_true(mb == 0.0);
    tmoe_router_free(r);
    tmoe_router_free(rb);
}

/* ---- load balancer ------------------------------------------------------------------------- */

static double max_over_mean(const int64_t *c, int E) {
    double mx = 0, s = 0;
    for (int e = 0; e < E; e++) {
        mx = fmax(mx, (double)c[e]);
        s += (double)c[e];
    }
    return mx / (s / E);
}

static void test_load_balancer_zipf(void **state) {
    (void)state;
    const int E = 16, k = 2, T = 64;
    costs one;
    make_costs(&one, E, -1, 1.0);
    tmoe_router_config cfg = base_cfg(TMOE_ROUTE_BASELINE, E, k);
    cfg.lb_enabled = 1;
    cfg.lb_step = 0.05;
    tmoe_router *r = make_router(cfg, &one);
    double off[MAXE];
    for (int e = 0; e < E; e++) off[e] = 1.5 * log(1.0 / (e + 1)); /* Zipf-like popularity */
    tmoe_rng rng;
    tmoe_rng_seed(&rng, 77);
    float z[MAXT * MAXE];
    int32_t sel[MAXT * 16];
    int64_t first[MAXE] = {0}, last[MAXE] = {0};
    tmoe_error err = {0};
    for (int i = 0; i < 200; i++) {
        random_logits(&rng, z, T, E, off);
        ASSERT_OK(tmoe_router_route(r, z, T, NULL, NULL, NULL, sel, NULL, &err), &err);
        int64_t *c = i < 10 ? first : i >= 180 ? last : NULL;
        if (c)
            for (int j = 0; j < T * k; j++) c[sel[j]]++;
    }
    double r0 = max_over_mean(first, E), r1 = max_over_mean(last, E);
    print_message("load balancer: max/mean load %.2f (first 10 batches) -> %.2f (last 20)\n", r0,
                  r1);
    if (!(r0 > 3.0 && r1 <= 0.5 * r0)) fail_msg("max/mean load %.2f -> %.2f", r0, r1);
    tmoe_router_free(r);
}

/* A router told the selection that ran (observe_selection, as the runner does with the
 * engine's top-k) and given the unbiased top-k by its caller behaves exactly like one that
 * selects and counts on its own: same biases every batch (load balancer and TTHA updates
 * included), same predicted energy. */
static void observe_matches_own(tmoe_route_strategy st, tmoe_ttha_grad grad) {
    const int E = 8, k = 2, T = 32;
    costs kc;
    make_costs(&kc, E, 2, 3.0);
    tmoe_router_config cfg = base_cfg(st, E, k);
    cfg.lb_enabled = 1;
    cfg.lb_step = 0.05;
    cfg.grad_mode = grad;
    tmoe_router *own = make_router(cfg, &kc);
    cfg.observe_selection = 1;
    tmoe_router *obs = make_router(cfg, &kc);
    tmoe_rng rng;
    tmoe_rng_seed(&rng, 31);
    float z[MAXT * MAXE], ba[MAXE], bb[MAXE], w[MAXT * 16], w0[MAXT * 16];
    int32_t sel[MAXT * 16], idx[MAXT * 16], idx0[MAXT * 16];
    tmoe_hw_state hw = tmoe_hw_state_unknown();
    tmoe_error err = {0};
    for (int i = 0; i < 12; i++) {
        random_logits(&rng, z, T, E, NULL);
        hw.power_w = 380.0 + 5.0 * i;
        hw.gpu_temp_c = 68.0 + 0.5 * i;
        double pa, pb;
        ASSERT_OK(tmoe_router_route(own, z, T, NULL, &hw, ba, sel, &pa, &err), &err);
        /* the caller's unbiased top-k (its weights do not matter), then its own selection */
        tmoe_gate_topk(z, NULL, T, E, k, 0, 0, idx0, w0);
        ASSERT_OK(tmoe_router_route(obs, z, T, idx0, &hw, bb, NULL, NULL, &err), &err);
        assert_memory_equal(ba, bb, sizeof(float) * E);
        tmoe_gate_topk(z, bb, T, E, k, 1, 0, idx, w);
        assert_memory_equal(sel, idx, sizeof(int32_t) * T * k);
        ASSERT_OK(tmoe_router_observe(obs, idx, w, T, &pb, &err), &err);
        assert_true(pa == pb);
        tmoe_route_obs o = tmoe_route_obs_unknown();
        o.power_w = hw.power_w + 10.0;
        o.temp_c = hw.gpu_temp_c + 1.0;
        o.latency_ms = 1.0 + 0.01 * i;
        o.throughput = T / (o.latency_ms / 1000.0);
        o.period_s = o.dt_s = 0.01;
        tmoe_ttha_record ra, rb;
        ASSERT_OK(tmoe_router_update(own, &o, &ra, &err), &err);
        ASSERT_OK(tmoe_router_update(obs, &o, &rb, &err), &err);
        assert_true(ra.step == rb.step &&
                    (ra.total == rb.total || (isnan(ra.total) && isnan(rb.total))));
    }
    const double *la = tmoe_lb_bias(tmoe_router_lb(own)), *lb = tmoe_lb_bias(tmoe_router_lb(obs));
    assert_memory_equal(la, lb, sizeof(double) * E);
    tmoe_router_free(own);
    tmoe_router_free(obs);
}

static void test_observe_matches_own_selection(void **state) {
    (void)state;
    for (int s = 0; s < TMOE_ROUTE_FIRST_COMPARISON; s++) /* the comparisons select explicitly */
        observe_matches_own((tmoe_route_strategy)s, TMOE_TTHA_GRAD_SURROGATE);
    observe_matches_own(TMOE_ROUTE_KERNEL_AWARE_TTHA, TMOE_TTHA_GRAD_REINFORCE);
}

/* Misuse of observe and of the caller's unbiased selection is refused, router unchanged. */
static void test_observe_errors(void **state) {
    (void)state;
    const int E = 4, k = 2, T = 3;
    costs kc;
    make_costs(&kc, E, -1, 1.0);
    tmoe_router_config cfg = base_cfg(TMOE_ROUTE_KERNEL_AWARE_TTHA, E, k);
    cfg.lb_enabled = 1;
    tmoe_router *own = make_router(cfg, &kc);
    float z[3 * 4] = {0.1f, 0.2f, 0.3f, 0.4f, 1, 0, 0, 0, 0, 0, 1, 2};
    int32_t idx[3 * 2] = {3, 2, 0, 1, 3, 2}, bad[3 * 2] = {3, 2, 0, 4, 3, 2};
    tmoe_error err = {0};
    double pe;
    ASSERT_OK(tmoe_router_route(own, z, T, NULL, NULL, NULL, NULL, NULL, &err), &err);
    assert_int_equal(tmoe_router_observe(own, idx, NULL, T, &pe, &err), TMOE_EINVAL);
    assert_non_null(strstr(err.msg, "observe_selection"));
    assert_int_equal(tmoe_router_route(own, z, T, bad, NULL, NULL, NULL, NULL, &err), TMOE_EINVAL);
    assert_non_null(strstr(err.msg, "expert 4 of 4"));
    tmoe_router_free(own);

    cfg.observe_selection = 1;
    tmoe_router *r = make_router(cfg, &kc);
    /* nothing routed yet */
    assert_int_equal(tmoe_router_observe(r, idx, NULL, T, &pe, &err), TMOE_EINVAL);
    ASSERT_OK(tmoe_router_route(r, z, T, idx, NULL, NULL, NULL, NULL, &err), &err);
    assert_int_equal(tmoe_router_observe(r, idx, NULL, T - 1, &pe, &err), TMOE_EINVAL);
    assert_int_equal(tmoe_router_observe(r, bad, NULL, T, &pe, &err), TMOE_EINVAL);
    const double *lb = tmoe_lb_bias(tmoe_router_lb(r));
    for (int e = 0; e < E; e++)
        assert_true(lb[e] == 0.0); /* refused observations counted nothing */
    ASSERT_OK(tmoe_router_observe(r, idx, NULL, T, &pe, &err), &err);
    assert_true(isfinite(pe) && pe > 0.0);
    assert_true(lb[3] != 0.0 || lb[0] != 0.0);
    /* the same batch twice */
    assert_int_equal(tmoe_router_observe(r, idx, NULL, T, &pe, &err), TMOE_EINVAL);
    tmoe_router_free(r);

    /* a capacity limit acts on the router's own selection only */
    cfg.capacity_factor = 1.5;
    tmoe_cost_provider p = tmoe_cost_analytic_provider(&kc.c);
    assert_int_equal(tmoe_router_create(&cfg, &p, &r, &err), TMOE_EINVAL);
    assert_non_null(strstr(err.msg, "capacity"));
}

static void test_capacity_factor(void **state) {
    (void)state;
    const int E = 8, k = 2, T = 32;
    costs one;
    make_costs(&one, E, -1, 1.0);
    tmoe_router_config cfg = base_cfg(TMOE_ROUTE_BASELINE, E, k);
    cfg.capacity_factor = 1.25;
    tmoe_router *r = make_router(cfg, &one);
    double off[MAXE];
    for (int e = 0; e < E; e++) off[e] = -0.7 * e;
    tmoe_rng rng;
    tmoe_rng_seed(&rng, 3);
    float z[MAXT * MAXE];
    int32_t sel[MAXT * 16];
    tmoe_error err = {0};
    int cap = (int)ceil(1.25 * T * k / E);
    for (int i = 0; i < 20; i++) {
        random_logits(&rng, z, T, E, off);
        ASSERT_OK(tmoe_router_route(r, z, T, NULL, NULL, NULL, sel, NULL, &err), &err);
        int c[MAXE] = {0};
        for (int t = 0; t < T; t++) {
            assert_int_not_equal(sel[t * k], sel[t * k + 1]);
            for (int j = 0; j < k; j++) c[sel[t * k + j]]++;
        }
        for (int e = 0; e < E; e++) assert_true(c[e] <= cap);
    }
    tmoe_router_free(r);
}

/* ---- TTHA on a toy plant -------------------------------------------------------------------- */

/* Plant: 16 tokens every 10 ms; power = idle + energy of the experts touched / period;
 * temperature follows an RC stage; latency = sum of expert latencies. */
typedef struct {
    double idle_w, period_s, temp_c;
} plant;

static void plant_step(plant *p, const costs *k, const int32_t *sel, int T, int kk, int E,
                       tmoe_route_obs *o) {
    int n[MAXE] = {0};
    for (int i = 0; i < T * kk; i++) n[sel[i]]++;
    double en = 0, lat = 0;
    for (int e = 0; e < E; e++) {
        if (!n[e]) continue;
        en += k->ef[e] + k->ep[e] * n[e];
        lat += k->lf[e] + k->lp[e] * n[e];
    }
    double P = p->idle_w + en / p->period_s;
    double tss = 30 + 0.08 * P;
    p->temp_c = tss + (p->temp_c - tss) * exp(-p->period_s / 10.0);
    *o = tmoe_route_obs_unknown();
    o->power_w = P;
    o->temp_c = p->temp_c;
    o->latency_ms = lat;
    o->throughput = T / (lat / 1000.0);
    o->period_s = p->period_s;
    o->dt_s = p->period_s;
}

/* Mean plant power over the last `tail` of `n` batches; fills the max |bias| over the tail. */
static double run_plant(tmoe_router *r, const costs *k, int E, int n, int tail, double *mb_out,
                        double *agree_out, tmoe_router *ref) {
    const int T = 16, kk = 2;
    plant p = {100.0, 0.01, 45.0};
    tmoe_rng rng;
    tmoe_rng_seed(&rng, 1234);
    float z[MAXT * MAXE], b[MAXE];
    int32_t sel[MAXT * 16], selref[MAXT * 16];
    tmoe_error err = {0};
    double sum = 0, mb = 0;
    int64_t agree = 0, total = 0;
    tmoe_hw_state hw = tmoe_hw_state_unknown();
    tmoe_route_obs o = tmoe_route_obs_unknown();
    for (int i = 0; i < n; i++) {
        random_logits(&rng, z, T, E, NULL);
        hw.power_w = o.power_w;
        hw.gpu_temp_c = o.temp_c;
        ASSERT_OK(tmoe_router_route(r, z, T, NULL, &hw, b, sel, NULL, &err), &err);
        plant_step(&p, k, sel, T, kk, E, &o);
        ASSERT_OK(tmoe_router_update(r, &o, NULL, &err), &err);
        if (i >= n - tail) {
            sum += o.power_w;
            for (int e = 0; e < E; e++) mb = fmax(mb, fabs(b[e]));
            if (ref) {
                ASSERT_OK(tmoe_router_route(ref, z, T, NULL, NULL, NULL, selref, NULL, &err), &err);
                for (int t = 0; t < T; t++)
                    for (int j = 0; j < kk; j++) {
                        int found = 0;
                        for (int q = 0; q < kk; q++) found |= sel[t * kk + j] == selref[t * kk + q];
                        agree += found;
                        total++;
                    }
            }
        }
    }
    if (mb_out) *mb_out = mb;
    if (agree_out) *agree_out = total ? (double)agree / total : NAN;
    return sum / tail;
}

static void ttha_costs(costs *k, int E) {
    make_costs(k, E, -1, 1.0);
    for (int e = 0; e < E; e++) { /* per-token energy 1x .. 3x across experts */
        double f = 1.0 + 2.0 * e / (E - 1);
        k->ep[e] = 0.02 * f;
        k->ef[e] = 0.2 * f;
        k->tp[e] = 0.05 * f;
    }
}

static void test_ttha_targets_above_leave_routing(void **state) {
    (void)state;
    const int E = 8;
    costs k;
    ttha_costs(&k, E);
    tmoe_router_config cfg = base_cfg(TMOE_ROUTE_KERNEL_AWARE_TTHA, E, 2);
    cfg.power_target_w = 5000;
    cfg.temp_target_c = 150;
    cfg.budget = TMOE_BUDGET_NONE; /* the adapter's and cost biases (the set: test_route_select) */
    tmoe_router *r = make_router(cfg, &k),
                *rb = make_router(base_cfg(TMOE_ROUTE_BASELINE, E, 2), &k);
    double mb, agree;
    run_plant(r, &k, E, 300, 100, &mb, &agree, rb);
    print_message("targets above the draw: max |bias| %.4f, top-k agreement with baseline %.4f\n",
                  mb, agree);
    if (!(mb < 0.05 * cfg.max_bias && agree > 0.98))
        fail_msg("targets above the draw: max |bias| %.4f, top-k agreement %.4f", mb, agree);
    assert_int_equal(tmoe_router_history_len(r), 300);
    tmoe_router_free(r);
    tmoe_router_free(rb);
}

static void check_ttha_lowers_power(tmoe_ttha_grad mode, double cost_scale, int n) {
    const int E = 8;
    costs k;
    ttha_costs(&k, E);
    tmoe_router *rb = make_router(base_cfg(TMOE_ROUTE_BASELINE, E, 2), &k);
    double pbase = run_plant(rb, &k, E, n, 100, NULL, NULL, NULL);
    tmoe_router_config cfg = base_cfg(TMOE_ROUTE_KERNEL_AWARE_TTHA, E, 2);
    cfg.power_target_w = 0.85 * pbase;
    cfg.temp_target_c = 150;
    cfg.grad_mode = mode;
    cfg.cost_bias_scale = cost_scale;
    cfg.kl_max = 0.1; /* a tight end that admits 15% of the plant's power */
    cfg.lr = 1e-2;
    cfg.seed = 42;
    tmoe_router *r = make_router(cfg, &k);
    double mb;
    double pt = run_plant(r, &k, E, n, 100, &mb, NULL, NULL);
    print_message("TTHA %s, cost bias scale %g, %d updates: power %.1f W vs baseline %.1f W "
                  "(target %.1f W), max |bias| %.3f\n",
                  tmoe_ttha_grad_name(mode), cost_scale, n, pt, pbase, cfg.power_target_w, mb);
    if (!(pt < 0.98 * pbase))
        fail_msg("%s (cost bias scale %g): power %.1f W vs baseline %.1f W (target %.1f), max "
                 "|bias| %.3f",
                 tmoe_ttha_grad_name(mode), cost_scale, pt, pbase, cfg.power_target_w, mb);
    /* the history holds every loss term, the learning rate and the gradient norm */
    tmoe_ttha_record rec;
    assert_int_equal(tmoe_router_history_len(r), n);
    tmoe_error err = {0};
    ASSERT_OK(tmoe_router_history_get(r, 0, &rec), &err);
    assert_true(rec.lr < cfg.lr); /* warmup */
    ASSERT_OK(tmoe_router_history_get(r, n - 1, &rec), &err);
    assert_int_equal(rec.step, n - 1);
    assert_true(isfinite(rec.power_loss) && isfinite(rec.temp_loss) &&
                isfinite(rec.latency_penalty) && isfinite(rec.throughput_bonus) &&
                isfinite(rec.fidelity) && isfinite(rec.grad_norm));
    assert_true(fabs(rec.total - (rec.power_loss + rec.temp_loss + rec.latency_penalty -
                                  rec.throughput_bonus + rec.fidelity)) < 1e-12);
    assert_non_null(rec.biases);
    tmoe_router_free(r);
    tmoe_router_free(rb);
}

static void test_ttha_adapter_alone_lowers_power(void **state) {
    (void)state;
    check_ttha_lowers_power(TMOE_TTHA_GRAD_SURROGATE, 0.0, 400);
}
static void test_ttha_with_cost_biases_lowers_power(void **state) {
    (void)state;
    check_ttha_lowers_power(TMOE_TTHA_GRAD_SURROGATE, 1.0, 300);
}
static void test_ttha_reinforce_lowers_power(void **state) {
    (void)state;
    check_ttha_lowers_power(TMOE_TTHA_GRAD_REINFORCE, 0.0, 600);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_biases_follow_marginal_cost),
        cmocka_unit_test(test_baseline_no_bias),
        cmocka_unit_test(test_costly_expert_static),
        cmocka_unit_test(test_costly_expert_kernel_aware),
        cmocka_unit_test(test_costly_expert_hierarchical),
        cmocka_unit_test(test_costly_expert_predictive),
        cmocka_unit_test(test_costly_expert_multi_gpu),
        cmocka_unit_test(test_static_kl_budget),
        cmocka_unit_test(test_multi_gpu_hot_device_sheds),
        cmocka_unit_test(test_multi_gpu_link_cost),
        cmocka_unit_test(test_hierarchical_tiers),
        cmocka_unit_test(test_hierarchical_copies),
        cmocka_unit_test(test_ttha_copies_follow_power),
        cmocka_unit_test(test_predictive_acts_early),
        cmocka_unit_test(test_load_balancer_zipf),
        cmocka_unit_test(test_capacity_factor),
        cmocka_unit_test(test_observe_matches_own_selection),
        cmocka_unit_test(test_observe_errors),
        cmocka_unit_test(test_ttha_targets_above_leave_routing),
        cmocka_unit_test(test_ttha_adapter_alone_lowers_power),
        cmocka_unit_test(test_ttha_with_cost_biases_lowers_power),
        cmocka_unit_test(test_ttha_reinforce_lowers_power),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
