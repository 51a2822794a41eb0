/* The comparisons (topk_minus_one, top_p, expert_prune, capacity) against a direct
 * computation from their definitions on small random batches: which experts each token keeps,
 * their weights, the padding of unused slots, the capacity limit, the pruned experts, the
 * predicted energy of what runs; and the calls each refuses. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "thermoe/cost.h"
#include "thermoe/model.h"
#include "thermoe/route.h"

#define MAXE 16
#define MAXK 8
#define MAXT 64

typedef struct {
    double ef[MAXE], ep[MAXE];
    tmoe_analytic_cost c;
} costs;

/* energy = 0.04 J per expert touched + 0.002 J per token copy */
static tmoe_cost_provider make_costs(costs *k, int E) {
    for (int e = 0; e < E; e++) k->ef[e] = 0.04, k->ep[e] = 0.002;
    tmoe_analytic_cost c = {E, k->ef, k->ep, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    k->c = c;
    return tmoe_cost_analytic_provider(&k->c);
}

static tmoe_router *make_router(tmoe_route_strategy s, int E, int k, costs *kc,
                                void (*edit)(tmoe_router_config *)) {
    tmoe_router_config cfg = tmoe_router_config_default();
    cfg.strategy = s;
    cfg.num_experts = E;
    cfg.top_k = k;
    cfg.max_tokens = MAXT;
    if (edit) edit(&cfg);
    tmoe_cost_provider p = make_costs(kc, E);
    tmoe_router *r;
    tmoe_error err = {0};
    ASSERT_OK(tmoe_router_create(&cfg, &p, &r, &err), &err);
    return r;
}

static void random_logits(tmoe_rng *rng, float *z, int T, int E, double scale) {
    for (int i = 0; i < T * E; i++) z[i] = (float)(scale * tmoe_rng_normal(rng));
}

/* The direct computation: the token's experts in decreasing logit (ties to the lower index)
 * and its softmax over all E, in double. */
static void order_of(const float *z, int E, int *ord, double *p) {
    double mx = -INFINITY, s = 0.0;
    for (int e = 0; e < E; e++) mx = fmax(mx, z[e]);
    for (int e = 0; e < E; e++) s += exp(z[e] - mx);
    for (int e = 0; e < E; e++) p[e] = exp(z[e] - mx) / s;
    for (int e = 0; e < E; e++) ord[e] = e;
    for (int i = 1; i < E; i++) /* stable insertion sort by decreasing logit */
        for (int j = i; j > 0 && z[ord[j]] > z[ord[j - 1]]; j--) {
            int t = ord[j];
            ord[j] = ord[j - 1];
            ord[j - 1] = t;
        }
}

/* Token t's row: its first m slots are experts want[0..m) with weights p at them (divided by
 * their sum when renorm), slots m..k-1 the first expert at weight 0. */
static void check_row(const int32_t *idx, const float *w, int k, const int *want, int m,
                      const double *p, int renorm, int t) {
    double s = 0.0;
    for (int j = 0; j < m; j++) s += p[want[j]];
    for (int j = 0; j < k; j++) {
        int e = j < m ? want[j] : want[0];
        double wt = j < m ? (renorm ? p[want[j]] / s : p[want[j]]) : 0.0;
        if (idx[j] != e || fabs(w[j] - wt) > 1e-5)
            fail_msg("token %d slot %d: expert %d weight %.6g, expected expert %d weight %.6g", t,
                     j, idx[j], w[j], e, wt);
    }
}

/* Predicted energy of the selection from the counts of the copies that run: a padded copy
 * (weight 0) does not. */
static double energy_of(const costs *kc, const int32_t *idx, const float *w, int n, int E) {
    int cnt[MAXE] = {0};
    for (int i = 0; i < n; i++) cnt[idx[i]] += w[i] != 0.0f;
    double j = 0.0;
    for (int e = 0; e < E; e++)
        if (cnt[e]) j += kc->ef[e] + kc->ep[e] * cnt[e];
    return j;
}

/* ---- topk_minus_one ----------------------------------------------------------------------- */
static void test_topk_minus_one(void **state) {
    (void)state;
    tmoe_rng rng;
    tmoe_rng_seed(&rng, 5);
    for (int trial = 0; trial < 40; trial++) {
        int E = 3 + (int)tmoe_rng_below(&rng, 10), k = 2 + (int)tmoe_rng_below(&rng, 2);
        int T = 1 + (int)tmoe_rng_below(&rng, MAXT), renorm = trial % 2;
        costs kc;
        tmoe_router *r = make_router(TMOE_ROUTE_TOPK_MINUS_ONE, E, k, &kc, NULL);
        float z[MAXT * MAXE], w[MAXT * MAXK];
        int32_t idx[MAXT * MAXK];
        random_logits(&rng, z, T, E, 1.5);
        double pe;
        tmoe_error err = {0};
        ASSERT_OK(tmoe_router_route_explicit(r, z, T, renorm, NULL, idx, w, &pe, &err), &err);
        for (int t = 0; t < T; t++) {
            int ord[MAXE];
            double p[MAXE];
            order_of(z + t * E, E, ord, p);
            check_row(idx + t * k, w + t * k, k, ord, k - 1, p, renorm, t);
        }
        assert_true(fabs(pe - energy_of(&kc, idx, w, T * k, E)) <= 1e-12);
        tmoe_router_free(r);
    }
    /* k = 1 has nothing to keep */
    tmoe_router_config cfg = tmoe_router_config_default();
    cfg.strategy = TMOE_ROUTE_TOPK_MINUS_ONE;
    cfg.top_k = 1;
    costs kc;
    tmoe_cost_provider p = make_costs(&kc, cfg.num_experts);
    tmoe_router *r;
    tmoe_error err = {0};
    assert_int_equal(tmoe_router_create(&cfg, &p, &r, &err), TMOE_EINVAL);
    assert_non_null(strstr(err.msg, "top_k >= 2"));
}

/* ---- top_p ---------------------------------------------------------------------------- */
static double g_top_p;
static void set_top_p(tmoe_router_config *c) {
    c->top_p = g_top_p;
}

static void test_top_p(void **state) {
    (void)state;
    tmoe_rng rng;
    tmoe_rng_seed(&rng, 9);
    const double ps[] = {0.3, 0.6, 0.9, 1.0};
    int kept_hist[MAXK + 1] = {0};
    for (int trial = 0; trial < 48; trial++) {
        g_top_p = ps[trial % 4];
        int E = 4 + (int)tmoe_rng_below(&rng, 9), k = 1 + (int)tmoe_rng_below(&rng, 4);
        int T = 1 + (int)tmoe_rng_below(&rng, MAXT), renorm = (trial / 4) % 2;
        costs kc;
        tmoe_router *r = make_router(TMOE_ROUTE_TOP_P, E, k, &kc, set_top_p);
        float z[MAXT * MAXE], w[MAXT * MAXK];
        int32_t idx[MAXT * MAXK];
        random_logits(&rng, z, T, E, 2.5);
        double pe;
        tmoe_error err = {0};
        ASSERT_OK(tmoe_router_route_explicit(r, z, T, renorm, NULL, idx, w, &pe, &err), &err);
        for (int t = 0; t < T; t++) {
            int ord[MAXE];
            double p[MAXE], cum = 0.0;
            order_of(z + t * E, E, ord, p);
            int m = k;
            for (int j = 0; j < k; j++)
                if ((cum += p[ord[j]]) >= g_top_p) {
                    m = j + 1;
                    break;
                }
            kept_hist[m]++;
            check_row(idx + t * k, w + t * k, k, ord, m, p, renorm, t);
        }
        assert_true(fabs(pe - energy_of(&kc, idx, w, T * k, E)) <= 1e-12);
        tmoe_router_free(r);
    }
    /* the batches exercised both a token that keeps one expert and one that keeps several */
    int several = 0;
    for (int m = 2; m <= MAXK; m++) several += kept_hist[m];
    assert_true(kept_hist[1] > 0 && several > 0);
    /* a hand-made token: p = 0.98 on expert 2 keeps it alone at 0.9, both at 0.99 */
    float z[4] = {0.0f, 0.0f, 5.0f, 0.5f}, w[2];
    int32_t idx[2];
    const double want[2] = {0.9, 0.99};
    for (int i = 0; i < 2; i++) {
        g_top_p = want[i];
        costs kc;
        tmoe_router *r = make_router(TMOE_ROUTE_TOP_P, 4, 2, &kc, set_top_p);
        tmoe_error err = {0};
        ASSERT_OK(tmoe_router_route_explicit(r, z, 1, 1, NULL, idx, w, NULL, &err), &err);
        assert_int_equal(idx[0], 2);
        if (i == 0) {
            assert_int_equal(idx[1], 2);
            assert_true(w[0] == 1.0f && w[1] == 0.0f);
        } else {
            assert_int_equal(idx[1], 3);
            assert_true(w[1] > 0.0f && fabs(w[0] + w[1] - 1.0) < 1e-6);
        }
        tmoe_router_free(r);
    }
}

/* ---- expert_prune ------------------------------------------------------------------------ */
static int g_prune;
static void set_prune(tmoe_router_config *c) {
    c->prune_experts = g_prune;
}

static void test_expert_prune(void **state) {
    (void)state;
    tmoe_rng rng;
    tmoe_rng_seed(&rng, 13);
    for (int trial = 0; trial < 30; trial++) {
        int E = 4 + (int)tmoe_rng_below(&rng, 9), k = 1 + (int)tmoe_rng_below(&rng, 3);
        g_prune = (int)tmoe_rng_below(&rng, (uint32_t)(E - k + 1));
        int N = 40 + (int)tmoe_rng_below(&rng, 200), T = 1 + (int)tmoe_rng_below(&rng, MAXT);
        int renorm = trial % 2;
        costs kc;
        tmoe_router *r = make_router(TMOE_ROUTE_EXPERT_PRUNE, E, k, &kc, set_prune);
        /* a profile whose experts differ in popularity (a per-expert offset) */
        static float prof[256 * MAXE];
        float off[MAXE];
        for (int e = 0; e < E; e++) off[e] = (float)(1.5 * tmoe_rng_normal(&rng));
        random_logits(&rng, prof, N, E, 1.0);
        for (int i = 0; i < N * E; i++) prof[i] += off[i % E];
        unsigned char got[MAXE];
        assert_int_equal(tmoe_router_pruned(r, got), 0);
        tmoe_error err = {0};
        double kl = 0.0;
        ASSERT_OK(tmoe_router_fit_static(r, prof, N, T, &kl, &err), &err);
        assert_true(isnan(kl));
        assert_int_equal(tmoe_router_pruned(r, got), 1);
        /* direct: uses by the unbiased top-k; prune the least used, ties the higher index */
        long uses[MAXE] = {0};
        for (int i = 0; i < N; i++) {
            int ord[MAXE];
            double p[MAXE];
            order_of(prof + i * E, E, ord, p);
            for (int j = 0; j < k; j++) uses[ord[j]]++;
        }
        unsigned char want[MAXE] = {0};
        for (int n = 0; n < g_prune; n++) {
            int worst = -1;
            for (int e = 0; e < E; e++)
                if (!want[e] &&
                    (worst < 0 || uses[e] < uses[worst] || (uses[e] == uses[worst] && e > worst)))
                    worst = e;
            want[worst] = 1;
        }
        assert_memory_equal(got, want, (size_t)E);
        /* each token: its top-k among the kept, p over all E */
        float z[MAXT * MAXE], w[MAXT * MAXK];
        int32_t idx[MAXT * MAXK];
        random_logits(&rng, z, T, E, 1.5);
        ASSERT_OK(tmoe_router_route_explicit(r, z, T, renorm, NULL, idx, w, NULL, &err), &err);
        for (int t = 0; t < T; t++) {
            int ord[MAXE], keep[MAXE], m = 0;
            double p[MAXE];
            order_of(z + t * E, E, ord, p);
            for (int j = 0; j < E && m < k; j++)
                if (!want[ord[j]]) keep[m++] = ord[j];
            assert_int_equal(m, k);
            check_row(idx + t * k, w + t * k, k, keep, k, p, renorm, t);
        }
        tmoe_router_free(r);
    }
    /* without a fit, the first batch is the profile; too many pruned experts are refused */
    g_prune = 1;
    costs kc;
    tmoe_router *r = make_router(TMOE_ROUTE_EXPERT_PRUNE, 4, 2, &kc, set_prune);
    float z[2 * 4] = {3, 2, 1, 0, 3, 1, 2, 0}, w[4];
    int32_t idx[4];
    tmoe_error err = {0};
    ASSERT_OK(tmoe_router_route_explicit(r, z, 2, 1, NULL, idx, w, NULL, &err), &err);
    unsigned char got[4];
    assert_int_equal(tmoe_router_pruned(r, got), 1);
    assert_true(got[3] == 1 && !got[0] && !got[1] && !got[2]); /* expert 3 never in a top-2 */
    tmoe_router_free(r);
    tmoe_router_config cfg = tmoe_router_config_default();
    cfg.strategy = TMOE_ROUTE_EXPERT_PRUNE;
    cfg.num_experts = 8;
    cfg.top_k = 2;
    cfg.prune_experts = 7;
    tmoe_cost_provider p = make_costs(&kc, 8);
    assert_int_equal(tmoe_router_create(&cfg, &p, &r, &err), TMOE_EINVAL);
    assert_non_null(strstr(err.msg, "prune_experts"));
    /* the default prunes E / 4 */
    cfg.prune_experts = -1;
    ASSERT_OK(tmoe_router_create(&cfg, &p, &r, &err), &err);
    float z8[8] = {0, 1, 2, 3, 4, 5, 6, 7}, w8[2];
    int32_t i8[2];
    ASSERT_OK(tmoe_router_route_explicit(r, z8, 1, 1, NULL, i8, w8, NULL, &err), &err);
    unsigned char g8[8];
    assert_int_equal(tmoe_router_pruned(r, g8), 1);
    int np = 0;
    for (int e = 0; e < 8; e++) np += g8[e];
    assert_int_equal(np, 2);
    assert_true(g8[5] && g8[4]); /* 0..5 unused: ties prune the higher index */
    tmoe_router_free(r);
}

/* ---- capacity ----------------------------------------------------------------------------- */
static double g_cf;
static tmoe_overflow g_over;
static void set_cap(tmoe_router_config *c) {
    c->cap_factor = g_cf;
    c->cap_overflow = g_over;
}

static void test_capacity_drop(void **state) {
    (void)state;
    tmoe_rng rng;
    tmoe_rng_seed(&rng, 17);
    g_over = TMOE_OVERFLOW_DROP;
    long dropped_total = 0;
    for (int trial = 0; trial < 40; trial++) {
        g_cf = 0.5 + 0.25 * (trial % 4);
        int E = 2 + (int)tmoe_rng_below(&rng, 10), k = 1 + (int)tmoe_rng_below(&rng, 3);
        if (k > E) k = E;
        int T = 1 + (int)tmoe_rng_below(&rng, MAXT), renorm = trial % 2;
        costs kc;
        tmoe_router *r = make_router(TMOE_ROUTE_CAPACITY, E, k, &kc, set_cap);
        float z[MAXT * MAXE], w[MAXT * MAXK];
        int32_t idx[MAXT * MAXK];
        random_logits(&rng, z, T, E, 1.0);
        for (int t = 0; t < T; t++) z[t * E] += 1.0f; /* expert 0 popular: it overflows */
        double pe;
        tmoe_error err = {0};
        ASSERT_OK(tmoe_router_route_explicit(r, z, T, renorm, NULL, idx, w, &pe, &err), &err);
        int cap = (int)ceil(g_cf * T * k / E);
        if (cap < 1) cap = 1;
        /* direct: baseline top-k with the model's weights; copies by priority (slot, token);
         * one is kept when fewer than cap copies of its expert came before it */
        int ord[MAXT][MAXE], used[MAXE] = {0};
        double p[MAXT][MAXE];
        unsigned char kept[MAXT][MAXK];
        for (int t = 0; t < T; t++) order_of(z + t * E, E, ord[t], p[t]);
        for (int j = 0; j < k; j++)
            for (int t = 0; t < T; t++) {
                int e = ord[t][j];
                kept[t][j] = used[e] < cap;
                used[e] += kept[t][j];
                dropped_total += !kept[t][j];
            }
        for (int t = 0; t < T; t++) {
            int keep[MAXK], m = 0;
            double s = 0.0;
            for (int j = 0; j < k; j++) s += p[t][ord[t][j]];
            for (int j = 0; j < k; j++)
                if (kept[t][j]) keep[m++] = ord[t][j];
            for (int j = 0; j < k; j++) {
                int e = j < m ? keep[j] : m ? keep[0] : ord[t][0];
                double wt = j < m ? (renorm ? p[t][keep[j]] / s : p[t][keep[j]]) : 0.0;
                if (idx[t * k + j] != e || fabs(w[t * k + j] - wt) > 1e-5)
                    fail_msg("token %d slot %d: expert %d weight %.6g, expected %d %.6g", t, j,
                             idx[t * k + j], w[t * k + j], e, wt);
            }
        }
        /* the copies that carry weight stay within the capacity */
        int carried[MAXE] = {0};
        for (int i = 0; i < T * k; i++) carried[idx[i]] += w[i] > 0.0f;
        for (int e = 0; e < E; e++) assert_true(carried[e] <= cap);
        assert_true(fabs(pe - energy_of(&kc, idx, w, T * k, E)) <= 1e-12);
        tmoe_router_free(r);
    }
    assert_true(dropped_total > 0);
    /* slot-major priority: token 0 prefers (0, 1), token 1 prefers (1, 0), one copy per
     * expert: both keep their first choice and drop their second (token-major order would
     * have kept both of token 0's and dropped both of token 1's) */
    g_cf = 0.5; /* ceil(0.5 x 2 x 2 / 3) = 1 */
    costs kc;
    tmoe_router *r = make_router(TMOE_ROUTE_CAPACITY, 3, 2, &kc, set_cap);
    float z[6] = {2, 1, 0, 1, 2, 0}, w[4];
    int32_t idx[4];
    tmoe_error err = {0};
    ASSERT_OK(tmoe_router_route_explicit(r, z, 2, 1, NULL, idx, w, NULL, &err), &err);
    const int32_t want[4] = {0, 0, 1, 1};
    assert_memory_equal(idx, want, sizeof want);
    assert_true(w[0] > 0.5f && w[1] == 0.0f && w[2] > 0.5f && w[3] == 0.0f);
    tmoe_router_free(r);
}

static void test_capacity_next(void **state) {
    (void)state;
    tmoe_rng rng;
    tmoe_rng_seed(&rng, 21);
    g_over = TMOE_OVERFLOW_NEXT;
    long moved = 0, over = 0;
    for (int trial = 0; trial < 30; trial++) {
        g_cf = 1.0 + 0.25 * (trial % 3);
        int E = 3 + (int)tmoe_rng_below(&rng, 9), k = 1 + (int)tmoe_rng_below(&rng, 2);
        int T = 1 + (int)tmoe_rng_below(&rng, MAXT), renorm = trial % 2;
        costs kc;
        tmoe_router *r = make_router(TMOE_ROUTE_CAPACITY, E, k, &kc, set_cap);
        float z[MAXT * MAXE], w[MAXT * MAXK];
        int32_t idx[MAXT * MAXK];
        random_logits(&rng, z, T, E, 1.0);
        for (int t = 0; t < T; t++) z[t * E] += 1.5f;
        tmoe_error err = {0};
        ASSERT_OK(tmoe_router_route_explicit(r, z, T, renorm, NULL, idx, w, NULL, &err), &err);
        /* direct: tokens in order; a copy whose expert is full moves to the token's best
         * expert with room that it does not hold, else (the room is all with experts it
         * holds) to its best expert it does not hold, over the limit */
        int cap = (int)ceil(g_cf * T * k / E), cnt[MAXE] = {0};
        if (cap * E < T * k) cap = (T * k + E - 1) / E;
        for (int t = 0; t < T; t++) {
            int ord[MAXE], sel[MAXK];
            double p[MAXE], s = 0.0;
            order_of(z + t * E, E, ord, p);
            for (int j = 0; j < k; j++) sel[j] = ord[j];
            for (int j = 0; j < k; j++) {
                if (cnt[sel[j]] < cap) {
                    cnt[sel[j]]++;
                    continue;
                }
                int best = -1;
                for (int pass = 0; pass < 2 && best < 0; pass++)
                    for (int i = 0; i < E && best < 0; i++) {
                        int e = ord[i], held = 0;
                        for (int q = 0; q < k; q++) held |= sel[q] == e;
                        if (!held && (pass == 1 || cnt[e] < cap)) best = e;
                    }
                if (best >= 0) {
                    sel[j] = best;
                    moved++;
                    over += cnt[best] >= cap;
                }
                cnt[sel[j]]++;
            }
            for (int j = 0; j < k; j++) s += p[sel[j]];
            for (int j = 0; j < k; j++) {
                double wt = renorm ? p[sel[j]] / s : p[sel[j]];
                if (idx[t * k + j] != sel[j] || fabs(w[t * k + j] - wt) > 1e-5)
                    fail_msg("token %d slot %d: expert %d weight %.6g, expected %d %.6g", t, j,
                             idx[t * k + j], w[t * k + j], sel[j], wt);
            }
        }
        tmoe_router_free(r);
    }
    fprintf(stderr, "capacity next: %ld copies moved, %ld of them over the limit\n", moved, over);
    assert_true(over < moved);
    assert_true(moved > 0);
}

/* ---- what each call refuses; the load balancer counts what was routed ----------------- */
static void test_refusals(void **state) {
    (void)state;
    costs kc;
    float z[8] = {1, 0, 0, 0, 0, 1, 0, 0}, b[4], w[4];
    int32_t idx[4];
    tmoe_error err = {0};
    for (int s = TMOE_ROUTE_FIRST_COMPARISON; s < TMOE_ROUTE_STRATEGY_COUNT; s++) {
        tmoe_router *r = make_router((tmoe_route_strategy)s, 4, 2, &kc, NULL);
        assert_true(tmoe_route_strategy_is_comparison((tmoe_route_strategy)s));
        assert_int_equal(tmoe_router_route(r, z, 2, NULL, NULL, b, NULL, NULL, &err), TMOE_EINVAL);
        assert_non_null(strstr(err.msg, "tmoe_router_route_explicit"));
        assert_int_equal(tmoe_router_route_explicit(r, z, 0, 1, NULL, idx, w, NULL, &err),
                         TMOE_EINVAL);
        tmoe_router_free(r);
    }
    tmoe_router *r = make_router(TMOE_ROUTE_BASELINE, 4, 2, &kc, NULL);
    assert_false(tmoe_route_strategy_is_comparison(TMOE_ROUTE_MULTI_GPU_AWARE));
    assert_int_equal(tmoe_router_route_explicit(r, z, 2, 1, NULL, idx, w, NULL, &err), TMOE_EINVAL);
    assert_int_equal(tmoe_router_pruned(r, NULL), -1);
    assert_int_equal(tmoe_router_fit_static(r, z, 2, 2, NULL, &err), TMOE_OK);
    tmoe_router_free(r);
    r = make_router(TMOE_ROUTE_TOP_P, 4, 2, &kc, NULL);
    assert_int_equal(tmoe_router_fit_static(r, z, 2, 2, NULL, &err), TMOE_EINVAL);
    tmoe_router_free(r);
    tmoe_overflow o;
    assert_int_equal(tmoe_overflow_parse("next", &o), TMOE_OK);
    assert_int_equal(o, TMOE_OVERFLOW_NEXT);
    assert_int_equal(tmoe_overflow_parse("spill", &o), TMOE_EINVAL);
    assert_string_equal(tmoe_overflow_name(TMOE_OVERFLOW_DROP), "drop");
}

static void set_observe_lb(tmoe_router_config *c) {
    c->observe_selection = 1;
    c->lb_enabled = 1;
    c->lb_step = 0.1;
}

/* observe_selection: the caller reports what ran, once; the load balancer moves on it. */
static void test_observe(void **state) {
    (void)state;
    costs kc;
    tmoe_router *r = make_router(TMOE_ROUTE_TOPK_MINUS_ONE, 4, 2, &kc, set_observe_lb);
    float z[8] = {3, 0, 0, 0, 3, 0, 0, 0}, w[4];
    int32_t idx[4];
    tmoe_error err = {0};
    ASSERT_OK(tmoe_router_route_explicit(r, z, 2, 1, NULL, idx, w, NULL, &err), &err);
    const double *lb = tmoe_lb_bias(tmoe_router_lb(r));
    assert_true(lb[0] == 0.0);
    double pe;
    ASSERT_OK(tmoe_router_observe(r, idx, w, 2, &pe, &err), &err);
    assert_true(fabs(pe - energy_of(&kc, idx, w, 4, 4)) <= 1e-12);
    assert_true(lb[0] < 0.0); /* expert 0 took every copy */
    assert_int_equal(tmoe_router_observe(r, idx, w, 2, &pe, &err), TMOE_EINVAL);
    tmoe_router_free(r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_topk_minus_one), cmocka_unit_test(test_top_p),
        cmocka_unit_test(test_expert_prune),   cmocka_unit_test(test_capacity_drop),
        cmocka_unit_test(test_capacity_next),  cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_observe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
