/* Routing arithmetic: surrogate, REINFORCE, KL and MLP gradients against central finite differences
 * (double precision), the provider's central difference, the predicted energy, the thermal
 * predictor's fit, names, and the adapter weights file. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "thermoe/route.h"

#define TOL_GRAD 1e-5 /* relative L2 error of an analytic gradient vs central differences */
#define FD_STEP 1e-5  /* central difference step */
#define TOL_PROVIDER_FD 1e-5

static double rel_err(const double *a, const double *b, int n) {
    double num = 0.0, den = 0.0;
    for (int i = 0; i < n; i++) {
        num += (a[i] - b[i]) * (a[i] - b[i]);
        den += b[i] * b[i];
    }
    return den == 0.0 ? sqrt(num) : sqrt(num / den);
}

static double urand(tmoe_rng *r, double lo, double hi) {
    return lo + (hi - lo) * tmoe_rng_uniform(r);
}

typedef struct {
    double v[9][64];
    tmoe_analytic_cost c;
} costs;

static void random_costs(costs *k, int E, tmoe_rng *r) {
    for (int f = 0; f < 9; f++)
        for (int e = 0; e < E; e++) k->v[f][e] = urand(r, 0.1, 2.0);
    tmoe_analytic_cost c = {E,       k->v[0], k->v[1], k->v[2], k->v[3],
                            k->v[4], k->v[5], k->v[6], k->v[7], k->v[8]};
    k->c = c;
}

static void test_surrogate_gradient(void **state) {
    (void)state;
    tmoe_rng r;
    tmoe_rng_seed(&r, (uint64_t)tmoe_now_ns());
    for (int trial = 0; trial < 5; trial++) {
        int E = 4 + (int)tmoe_rng_below(&r, 12), T = 1 + (int)tmoe_rng_below(&r, 20);
        int k = 1 + (int)tmoe_rng_below(&r, E < 4 ? E : 4);
        costs kc;
        random_costs(&kc, E, &r);
        float z[20 * 16];
        double b[16], g[16], fd[16];
        for (int i = 0; i < T * E; i++) z[i] = (float)urand(&r, -3, 3);
        for (int e = 0; e < E; e++) b[e] = urand(&r, -2, 2);
        tmoe_surrogate s = {tmoe_cost_analytic_provider(&kc.c),
                            k,
                            urand(&r, 0.3, 2.0),
                            urand(&r, 0.5, 2.0),
                            urand(&r, -1, 1),
                            urand(&r, -1, 1),
                            urand(&r, 0, 2)};
        tmoe_error err = {0};
        double L;
        ASSERT_OK(tmoe_route_surrogate(&s, z, T, E, b, &L, g, NULL, NULL, &err), &err);
        for (int e = 0; e < E; e++) {
            double lp, lm, keep = b[e];
            b[e] = keep + FD_STEP;
            ASSERT_OK(tmoe_route_surrogate(&s, z, T, E, b, &lp, NULL, NULL, NULL, &err), &err);
            b[e] = keep - FD_STEP;
            ASSERT_OK(tmoe_route_surrogate(&s, z, T, E, b, &lm, NULL, NULL, NULL, &err), &err);
            b[e] = keep;
            fd[e] = (lp - lm) / (2 * FD_STEP);
        }
        double re = rel_err(g, fd, E);
        if (!(re < TOL_GRAD))
            fail_msg("surrogate gradient: E=%d T=%d k=%d rel err %.3g", E, T, k, re);
    }
}

/* REINFORCE: the mean of the estimator over Gaussian explorations of the surrogate loss
 * (antithetic pairs +noise / -noise, each scored against the loss at b as the baseline)
 * against central finite differences of the same loss. The estimator is unbiased for the
 * smoothed loss; with sigma 1e-3 the smoothing bias is far below the sampling error of
 * 50000 pairs (about 1% here), which TOL_REINFORCE bounds. */
#define TOL_REINFORCE 0.05
static void test_reinforce_gradient(void **state) {
    (void)state;
    tmoe_rng r;
    tmoe_rng_seed(&r, (uint64_t)tmoe_now_ns());
    int E = 6, T = 12, k = 2;
    costs kc;
    random_costs(&kc, E, &r);
    float z[12 * 6];
    double b[6], bp[6], bm[6], noise[6], g[6], sum[6] = {0}, fd[6];
    for (int i = 0; i < T * E; i++) z[i] = (float)urand(&r, -2, 2);
    for (int e = 0; e < E; e++) b[e] = urand(&r, -1, 1);
    tmoe_surrogate s = {tmoe_cost_analytic_provider(&kc.c), k, 1.0, 1.0, 1.0, 0.5, 0.0};
    tmoe_error err = {0};
    double L0, lp, lm;
    ASSERT_OK(tmoe_route_surrogate(&s, z, T, E, b, &L0, NULL, NULL, NULL, &err), &err);
    for (int e = 0; e < E; e++) {
        memcpy(bp, b, sizeof b);
        bp[e] += FD_STEP;
        memcpy(bm, b, sizeof b);
        bm[e] -= FD_STEP;
        ASSERT_OK(tmoe_route_surrogate(&s, z, T, E, bp, &lp, NULL, NULL, NULL, &err), &err);
        ASSERT_OK(tmoe_route_surrogate(&s, z, T, E, bm, &lm, NULL, NULL, NULL, &err), &err);
        fd[e] = (lp - lm) / (2 * FD_STEP);
    }
    const double sigma = 1e-3;
    const int pairs = 50000;
    for (int n = 0; n < pairs; n++) {
        for (int e = 0; e < E; e++) noise[e] = sigma * tmoe_rng_normal(&r);
        for (int sign = -1; sign <= 1; sign += 2) {
            for (int e = 0; e < E; e++) {
                bp[e] = b[e] + sign * noise[e];
                noise[e] *= sign;
            }
            ASSERT_OK(tmoe_route_surrogate(&s, z, T, E, bp, &lp, NULL, NULL, NULL, &err), &err);
            tmoe_route_reinforce_grad(lp, L0, noise, E, sigma, g);
            for (int e = 0; e < E; e++) {
                sum[e] += g[e];
                noise[e] *= sign;
            }
        }
    }
    for (int e = 0; e < E; e++) sum[e] /= 2.0 * pairs;
    double re = rel_err(sum, fd, E);
    if (!(re < TOL_REINFORCE)) fail_msg("REINFORCE mean vs finite differences: rel err %.3g", re);
    /* a wrong scale (sigma instead of sigma^2) or sign is far outside the tolerance */
    assert_true(rel_err(fd, sum, E) < 1.0);
}

static void test_kl_gradient_and_zero(void **state) {
    (void)state;
    tmoe_rng r;
    tmoe_rng_seed(&r, (uint64_t)tmoe_now_ns() ^ 0x55);
    int E = 9, T = 7;
    float z[63];
    double b[9], g[9], fd[9], zero[9] = {0}, shift[9];
    for (int i = 0; i < T * E; i++) z[i] = (float)urand(&r, -4, 4);
    for (int e = 0; e < E; e++) {
        b[e] = urand(&r, -3, 3);
        shift[e] = 1.75;
    }
    assert_true(fabs(tmoe_route_mean_kl(z, T, E, zero, NULL)) < 1e-12);
    /* a constant shift does not change the softmax */
    assert_true(fabs(tmoe_route_mean_kl(z, T, E, shift, NULL)) < 1e-12);
    assert_true(tmoe_route_mean_kl(z, T, E, b, g) > 0.0);
    for (int e = 0; e < E; e++) {
        double keep = b[e];
        b[e] = keep + FD_STEP;
        double lp = tmoe_route_mean_kl(z, T, E, b, NULL);
        b[e] = keep - FD_STEP;
        double lm = tmoe_route_mean_kl(z, T, E, b, NULL);
        b[e] = keep;
        fd[e] = (lp - lm) / (2 * FD_STEP);
    }
    double re = rel_err(g, fd, E);
    if (!(re < TOL_GRAD)) fail_msg("KL gradient rel err %.3g", re);
}

static void test_mlp_gradient(void **state) {
    (void)state;
    tmoe_rng r;
    tmoe_rng_seed(&r, (uint64_t)tmoe_now_ns() ^ 0x99);
    int in = 3 * 6 + 6, H = 9, E = 6;
    tmoe_ttha_mlp *m;
    tmoe_error err = {0};
    ASSERT_OK(tmoe_ttha_mlp_create(in, H, E, 1.5, 7, &m, &err), &err);
    int np = tmoe_ttha_mlp_num_params(m);
    double *p = tmoe_ttha_mlp_params(m);
    for (int i = 0; i < np; i++) p[i] = urand(&r, -0.8, 0.8);
    double x[24], w[6], bias[6], *g = calloc((size_t)np, sizeof(double)),
                                 *fd = calloc((size_t)np, sizeof(double));
    assert_non_null(g);
    assert_non_null(fd);
    for (int i = 0; i < in; i++) x[i] = urand(&r, -2, 2);
    for (int e = 0; e < E; e++) w[e] = urand(&r, -1, 1);
    tmoe_ttha_mlp_forward(m, x, bias);
    for (int e = 0; e < E; e++) assert_true(fabs(bias[e]) <= 1.5);
    tmoe_ttha_mlp_backward(m, w, g);
    for (int i = 0; i < np; i++) {
        double keep = p[i], lp = 0.0, lm = 0.0;
        p[i] = keep + FD_STEP;
        tmoe_ttha_mlp_forward(m, x, bias);
        for (int e = 0; e < E; e++) lp += w[e] * bias[e];
        p[i] = keep - FD_STEP;
        tmoe_ttha_mlp_forward(m, x, bias);
        for (int e = 0; e < E; e++) lm += w[e] * bias[e];
        p[i] = keep;
        fd[i] = (lp - lm) / (2 * FD_STEP);
    }
    double re = rel_err(g, fd, np);
    if (!(re < TOL_GRAD)) fail_msg("MLP gradient rel err %.3g over %d params", re, np);
    free(g);
    free(fd);
    tmoe_ttha_mlp_free(m);
    tmoe_ttha_mlp_free(NULL);
}

static void test_provider_central_difference(void **state) {
    (void)state;
    tmoe_rng r;
    tmoe_rng_seed(&r, (uint64_t)tmoe_now_ns() ^ 0x1234);
    costs kc;
    random_costs(&kc, 5, &r);
    tmoe_cost_provider exact = tmoe_cost_analytic_provider(&kc.c), fdp = exact;
    fdp.expert_cost_deriv = NULL;
    tmoe_error err = {0};
    double ns[] = {0.0, 0.4, 1.0, 7.5, 300.0};
    for (int e = 0; e < 5; e++)
        for (int i = 0; i < 5; i++) {
            tmoe_expert_cost a, da, b, db;
            ASSERT_OK(tmoe_route_cost_eval(&exact, e, ns[i], &a, &da, &err), &err);
            ASSERT_OK(tmoe_route_cost_eval(&fdp, e, ns[i], &b, &db, &err), &err);
            assert_true(a.energy_j == b.energy_j);
            double tol = TOL_PROVIDER_FD * (1.0 + fabs(da.energy_j));
            /* one-sided at n = 0: first order, step 1e-3 */
            if (ns[i] == 0.0) tol = 2e-3 * (1.0 + fabs(da.energy_j));
            if (fabs(da.energy_j - db.energy_j) > tol ||
                fabs(da.latency_ms - db.latency_ms) > tol * 10)
                fail_msg("expert %d n %g: d energy %.9g vs %.9g", e, ns[i], da.energy_j,
                         db.energy_j);
        }
}

static void test_energy_loss(void **state) {
    (void)state;
    double fixed[3] = {1.0, 2.0, 3.0}, per[3] = {0.5, 0.25, 1.0};
    tmoe_analytic_cost c = {3, fixed, per, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    tmoe_cost_provider p = tmoe_cost_analytic_provider(&c);
    /* T=2, k=2: token 0 -> (0, 1) probs (0.75, 0.25); token 1 -> (0, 2) probs (0.5, 0.5) */
    int32_t idx[4] = {0, 1, 0, 2};
    float prob[4] = {0.75f, 0.25f, 0.5f, 0.5f};
    double out;
    tmoe_error err = {0};
    ASSERT_OK(tmoe_route_energy_loss(&p, idx, prob, 2, 2, 3, &out, &err), &err);
    /* energies at counts: e0 (2 tok) 2.0, e1 (1) 2.25, e2 (1) 4.0 */
    double want = 0.75 * 2.0 + 0.25 * 2.25 + 0.5 * 2.0 + 0.5 * 4.0;
    assert_true(fabs(out - want) < 1e-12);
    idx[3] = 3;
    assert_int_equal(tmoe_route_energy_loss(&p, idx, prob, 2, 2, 3, &out, &err), TMOE_EINVAL);
}

static void test_thermal_predictor_fit(void **state) {
    (void)state;
    tmoe_thermal_pred_config cfg = tmoe_thermal_pred_config_default();
    tmoe_thermal_pred *tp;
    tmoe_error err = {0};
    ASSERT_OK(tmoe_thermal_pred_create(&cfg, &tp, &err), &err);
    assert_true(isnan(tmoe_thermal_pred_predict(tp, 1.0, 100.0)));
    /* plant: exact first-order response, tau 8 s, R 0.09 C/W, T_amb 31 C, 20 Hz samples */
    const double tau = 8.0, R = 0.09, amb = 31.0, dt = 0.05;
    tmoe_rng r;
    tmoe_rng_seed(&r, 5);
    double T = 35.0, P = 100.0;
    for (int i = 0; i < 4000; i++) {
        if (i % 40 == 0) P = urand(&r, 80.0, 650.0);
        double tss = amb + R * P;
        T = tss + (T - tss) * exp(-dt / tau);
        tmoe_thermal_pred_update(tp, P, T, dt);
    }
    double ftau, fr, famb;
    assert_true(tmoe_thermal_pred_params(tp, &ftau, &fr, &famb) > 100);
    /* the Euler regression on 50 ms steps is biased by ~dt/(2 tau) = 0.3% */
    if (fabs(ftau / tau - 1) > 0.03 || fabs(fr / R - 1) > 0.03 || fabs(famb - amb) > 1.0)
        fail_msg("fit tau %.3f R %.4f amb %.2f (want %.1f %.3f %.1f)", ftau, fr, famb, tau, R, amb);
    double want = amb + R * 500 + (T - amb - R * 500) * exp(-5.0 / tau);
    double got = tmoe_thermal_pred_predict(tp, 5.0, 500.0);
    if (fabs(got - want) > 1.0) fail_msg("predict 5 s at 500 W: %.2f, want %.2f", got, want);
    double imp = tmoe_thermal_pred_impact(tp, 100.0, 1e6);
    if (fabs(imp - R * 100.0) > 0.5)
        fail_msg("steady impact of 100 W: %.3f, want %.3f", imp, R * 100);
    assert_int_equal(tmoe_thermal_pred_update(tp, NAN, 50.0, 0.1), 0);
    tmoe_thermal_pred_free(tp);
    tmoe_thermal_pred_free(NULL);
    cfg.forgetting = 1.5;
    assert_int_equal(tmoe_thermal_pred_create(&cfg, &tp, &err), TMOE_EINVAL);
}

static void test_names(void **state) {
    (void)state;
    for (int s = 0; s < TMOE_ROUTE_STRATEGY_COUNT; s++) {
        tmoe_route_strategy got;
        assert_int_equal(tmoe_route_strategy_parse(tmoe_route_strategy_name(s), &got), TMOE_OK);
        assert_int_equal((int)got, s);
    }
    tmoe_route_strategy bad;
    assert_int_equal(tmoe_route_strategy_parse("fastest", &bad), TMOE_EINVAL);
    tmoe_ttha_grad g;
    assert_int_equal(tmoe_ttha_grad_parse("reinforce", &g), TMOE_OK);
    assert_int_equal(g, TMOE_TTHA_GRAD_REINFORCE);
    assert_int_equal(tmoe_ttha_grad_parse("adam", &g), TMOE_EINVAL);
    tmoe_lr_schedule ls;
    assert_int_equal(tmoe_lr_schedule_parse("step", &ls), TMOE_OK);
    assert_int_equal(ls, TMOE_LR_STEP);
}

/* ---- adapter weights file ---------------------------------------------------------------- */

static tmoe_router *ttha_router(int E, tmoe_analytic_cost *c, uint64_t seed) {
    tmoe_router_config cfg = tmoe_router_config_default();
    cfg.strategy = TMOE_ROUTE_KERNEL_AWARE_TTHA;
    cfg.num_experts = E;
    cfg.top_k = 2;
    cfg.max_tokens = 64;
    cfg.seed = seed;
    cfg.budget = TMOE_BUDGET_NONE; /* the file holds the MLP; the budget's state is not in it */
    tmoe_cost_provider p = tmoe_cost_analytic_provider(c);
    tmoe_router *r;
    tmoe_error err = {0};
    ASSERT_OK(tmoe_router_create(&cfg, &p, &r, &err), &err);
    return r;
}

static void test_save_load(void **state) {
    (void)state;
    tmoe_rng rng;
    tmoe_rng_seed(&rng, (uint64_t)tmoe_now_ns() ^ 0x777);
    costs kc;
    random_costs(&kc, 8, &rng);
    tmoe_router *a = ttha_router(8, &kc.c, 3), *b = ttha_router(8, &kc.c, 4);
    float z[16 * 8], ba[8], bb[8];
    for (int i = 0; i < 16 * 8; i++) z[i] = (float)tmoe_rng_normal(&rng);
    tmoe_hw_state hw = tmoe_hw_state_unknown();
    hw.power_w = 500;
    hw.gpu_temp_c = 70;
    tmoe_error err = {0};
    for (int i = 0; i < 30; i++) { /* move the weights away from their initial values */
        ASSERT_OK(tmoe_router_route(a, z, 16, NULL, &hw, ba, NULL, NULL, &err), &err);
        tmoe_route_obs o = tmoe_route_obs_unknown();
        o.power_w = 500;
        o.temp_c = 70;
        o.latency_ms = 1.0;
        o.throughput = 16000;
        ASSERT_OK(tmoe_router_update(a, &o, NULL, &err), &err);
    }
    const char *path = tu_tmppath("ttha.bin");
    ASSERT_OK(tmoe_router_ttha_save(a, path, &err), &err);
    ASSERT_OK(tmoe_router_ttha_load(b, path, &err), &err);
    ASSERT_OK(tmoe_router_route(a, z, 16, NULL, &hw, ba, NULL, NULL, &err), &err);
    ASSERT_OK(tmoe_router_route(b, z, 16, NULL, &hw, bb, NULL, NULL, &err), &err);
    for (int e = 0; e < 8; e++) assert_true(ba[e] == bb[e]);

    /* wrong shape */
    costs k16;
    random_costs(&k16, 16, &rng);
    tmoe_router *c = ttha_router(16, &k16.c, 3);
    assert_int_equal(tmoe_router_ttha_load(c, path, &err), TMOE_EFORMAT);
    assert_non_null(strstr(err.msg, "E=8"));
    /* truncated */
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    unsigned char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    assert_true(n > 100);
    const char *bad = tu_tmppath("bad.bin");
    f = fopen(bad, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, n / 2, f), n / 2);
    fclose(f);
    assert_int_equal(tmoe_router_ttha_load(b, bad, &err), TMOE_EFORMAT);
    /* garbage */
    f = fopen(bad, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite("not weights at all", 1, 18, f), 18);
    fclose(f);
    assert_int_equal(tmoe_router_ttha_load(b, bad, &err), TMOE_EFORMAT);
    assert_non_null(strstr(err.msg, "TMOETTHA"));
    /* missing */
    assert_int_equal(tmoe_router_ttha_load(b, tu_tmppath("none.bin"), &err), TMOE_EIO);
    /* refused loads leave b's weights as loaded */
    ASSERT_OK(tmoe_router_route(b, z, 16, NULL, &hw, bb, NULL, NULL, &err), &err);
    ASSERT_OK(tmoe_router_route(a, z, 16, NULL, &hw, ba, NULL, NULL, &err), &err);
    for (int e = 0; e < 8; e++) assert_true(ba[e] == bb[e]);
    tmoe_router_free(a);
    tmoe_router_free(b);
    tmoe_router_free(c);
    tmoe_router_free(NULL);
}

static void test_bad_config(void **state) {
    (void)state;
    double one[4] = {1, 1, 1, 1};
    tmoe_analytic_cost c = {4, one, one, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    tmoe_cost_provider p = tmoe_cost_analytic_provider(&c);
    tmoe_router_config cfg = tmoe_router_config_default();
    cfg.num_experts = 4;
    cfg.top_k = 5;
    tmoe_router *r;
    tmoe_error err = {0};
    assert_int_equal(tmoe_router_create(&cfg, &p, &r, &err), TMOE_EINVAL);
    assert_non_null(strstr(err.msg, "top_k"));
    assert_null(r);
    cfg.top_k = 2;
    cfg.max_tokens = 4;
    ASSERT_OK(tmoe_router_create(&cfg, &p, &r, &err), &err);
    float z[40] = {0};
    int32_t sel[20];
    assert_int_equal(tmoe_router_route(r, z, 5, NULL, NULL, NULL, sel, NULL, &err), TMOE_EINVAL);
    tmoe_router_free(r);
}

/* Every strategy runs on the smallest shape with default settings. */
static void test_small_shape_all_strategies(void **state) {
    (void)state;
    double fixed[2] = {1.0, 2.0}, per[2] = {0.1, 0.3};
    tmoe_analytic_cost c = {2, fixed, per, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    tmoe_cost_provider p = tmoe_cost_analytic_provider(&c);
    for (int s = 0; s < TMOE_ROUTE_FIRST_COMPARISON; s++) { /* comparisons: test_route_compare */
        tmoe_router_config cfg = tmoe_router_config_default();
        cfg.strategy = (tmoe_route_strategy)s;
        cfg.num_experts = 2;
        cfg.top_k = 1;
        cfg.lb_enabled = 1;
        tmoe_router *r;
        tmoe_error err = {0};
        ASSERT_OK(tmoe_router_create(&cfg, &p, &r, &err), &err);
        float z[6] = {0.5f, -0.5f, 0.0f, 0.0f, -1.0f, 1.0f}, b[2];
        int32_t sel[3];
        double pe;
        tmoe_hw_state hw = tmoe_hw_state_unknown();
        hw.power_w = 500;
        hw.gpu_temp_c = 80;
        ASSERT_OK(tmoe_router_route(r, z, 3, NULL, &hw, b, sel, &pe, &err), &err);
        for (int t = 0; t < 3; t++) assert_true(sel[t] == 0 || sel[t] == 1);
        assert_true(isfinite(pe) && isfinite(b[0]) && isfinite(b[1]));
        tmoe_route_obs o = tmoe_route_obs_unknown();
        o.power_w = 500;
        ASSERT_OK(tmoe_router_update(r, &o, NULL, &err), &err);
        tmoe_router_free(r);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_surrogate_gradient),
        cmocka_unit_test(test_reinforce_gradient),
        cmocka_unit_test(test_kl_gradient_and_zero),
        cmocka_unit_test(test_mlp_gradient),
        cmocka_unit_test(test_provider_central_difference),
        cmocka_unit_test(test_energy_loss),
        cmocka_unit_test(test_thermal_predictor_fit),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_save_load),
        cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_small_shape_all_strategies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
