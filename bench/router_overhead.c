/* Router overhead on this CPU at decode sizes: the expert-set selection alone
 * (tmoe_set_select, tau budget) and a whole route call of static_optimal (selection, biases
 * and the router's own top-k) for T = 1..256 tokens, E = 8 (k = 2), E = 64 and E = 128
 * (k = 8), with an analytic cost provider (fixed 0.04 J + 0.002 J/token per expert, +-50%
 * per expert). Median and p90 over many calls after a warm-up, in microseconds of host
 * time, and the H100 MoE layer step of bench/results/raw/bench_moe_2026-11-26_run9.md
 * (graph replay, kernel path) where one was measured, with the median's share of it.
 * Output: a Markdown table on stdout.
 * Usage: router_overhead [calls] [tau] [budget] [strategy] (defaults 500, 0.9, tau,
 * static_optimal; budget tau, top1 or kl: the kl budget is the router's kl_base, nats, given
 * in place of tau). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "thermoe/route.h"

static double pct(double *v, int n, double q) {
    qsort(v, (size_t)n, sizeof *v, tmoe_cmp_double);
    return v[(int)(q * (n - 1))];
}

/* H100 MoE layer step (us), mixtral E=8 k=2 and fine-grained E=128 k=8, by tokens; NAN where
 * none was measured. */
static double h100_step_us(int E, int T) {
    static const int toks[] = {1, 4, 16, 64, 256};
    static const double mix[] = {262.8, 717.5, 947.6, 1402.6, 2368.8};
    static const double fine[] = {63.3, 138.3, 365.8, 790.7, 872.0};
    for (int i = 0; i < 5; i++)
        if (toks[i] == T) return E == 8 ? mix[i] : E == 128 ? fine[i] : NAN;
    return NAN;
}

int main(int argc, char **argv) {
    int calls = 500, warm = 20;
    double tau = 0.9;
    if (argc > 1) {
        char *end;
        long v = strtol(argv[1], &end, 10);
        if (*end || v < 10 || v > 10000000) {
            fprintf(stderr, "usage: %s [calls >= 10] [tau in (0, 1]]\n", argv[0]);
            return 2;
        }
        calls = (int)v;
    }
    if (argc > 2) {
        char *end;
        tau = strtod(argv[2], &end);
        if (*end || !(tau > 0.0 && tau <= 1.0)) {
            fprintf(stderr, "usage: %s [calls >= 10] [tau in (0, 1]]\n", argv[0]);
            return 2;
        }
    }
    tmoe_budget_kind bk = TMOE_BUDGET_TAU;
    if (argc > 3 && (tmoe_budget_parse(argv[3], &bk) || bk == TMOE_BUDGET_NONE)) {
        fprintf(stderr, "usage: %s [calls] [tau or kl nats] [tau|top1|kl]\n", argv[0]);
        return 2;
    }
    tmoe_route_strategy strat = TMOE_ROUTE_STATIC_OPTIMAL;
    if (argc > 4 && (tmoe_route_strategy_parse(argv[4], &strat) || strat == TMOE_ROUTE_BASELINE ||
                     tmoe_route_strategy_is_comparison(strat))) {
        fprintf(stderr, "%s: strategy '%s': one of the set-selecting strategies\n", argv[0],
                argv[4]);
        return 2;
    }
    const int Ts[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512}, NT = 10;
    const int shapes[3][2] = {{8, 2}, {64, 8}, {128, 8}};
    double *ts = malloc(sizeof(double) * (size_t)calls),
           *tr = malloc(sizeof(double) * (size_t)calls);
    float *z = malloc(sizeof(float) * 512 * 128), *b = malloc(sizeof(float) * 128);
    int32_t *sel = malloc(sizeof(int32_t) * 512 * 8);
    if (!ts || !tr || !z || !b || !sel) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    printf("| E | k | T | path | |U| | |S| | select med us | select p90 us | route med us | "
           "H100 step us | select share | route share |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (int si = 0; si < 3; si++) {
        int E = shapes[si][0], k = shapes[si][1];
        double ef[128], ep[128];
        tmoe_rng rng;
        tmoe_rng_seed(&rng, 17);
        for (int e = 0; e < E; e++) {
            ef[e] = 0.04 * (0.5 + tmoe_rng_uniform(&rng));
            ep[e] = 0.002 * (0.5 + tmoe_rng_uniform(&rng));
        }
        tmoe_analytic_cost ac = {E, ef, ep, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
        tmoe_cost_provider p = tmoe_cost_analytic_provider(&ac);
        for (int ti = 0; ti < NT; ti++) {
            int T = Ts[ti];
            tmoe_error err = {0};
            tmoe_set_selector *s;
            tmoe_router *r;
            tmoe_router_config cfg = tmoe_router_config_default();
            cfg.strategy = strat;
            cfg.num_experts = E;
            cfg.top_k = k;
            cfg.max_tokens = T;
            cfg.budget = bk;
            cfg.tau_base = bk == TMOE_BUDGET_TAU ? tau : cfg.tau_base;
            cfg.kl_base = bk == TMOE_BUDGET_KL ? tau : cfg.kl_base;
            if (cfg.kl_max < cfg.kl_base) cfg.kl_max = cfg.kl_base;
            if (tmoe_set_selector_create(E, k, T, &s, &err) ||
                tmoe_router_create(&cfg, &p, &r, &err)) {
                fprintf(stderr, "setup: %s\n", err.msg);
                return 1;
            }
            tmoe_set_budget bud = {bk, tau, tau};
            unsigned char in_set[128];
            tmoe_set_result res = {0};
            double usum = 0.0, ssum = 0.0;
            int exact = 0;
            for (int i = 0; i < warm + calls; i++) {
                for (int j = 0; j < T * E; j++) z[j] = (float)tmoe_rng_normal(&rng);
                int64_t t0 = tmoe_now_ns();
                int rc = tmoe_set_select(s, &p, z, T, &bud, NULL, NULL, in_set, NULL, &err);
                int64_t t1 = tmoe_now_ns();
                if (!rc) rc = tmoe_router_route(r, z, T, NULL, NULL, b, sel, NULL, &err);
                int64_t t2 = tmoe_now_ns();
                if (rc) {
                    fprintf(stderr, "E %d T %d: %s\n", E, T, err.msg);
                    return 1;
                }
                if (i >= warm) {
                    ts[i - warm] = (t1 - t0) / 1e3;
                    tr[i - warm] = (t2 - t1) / 1e3;
                    tmoe_router_last_set(r, &res, NULL);
                    usum += res.union_size;
                    ssum += res.size;
                    exact += res.exact;
                }
            }
            double sm = pct(ts, calls, 0.5), s9 = pct(ts, calls, 0.9), rm = pct(tr, calls, 0.5);
            double h = h100_step_us(E, T);
            char hs[32] = "-", sh[32] = "-", rsh[32] = "-";
            if (isfinite(h)) {
                snprintf(hs, sizeof hs, "%.1f", h);
                snprintf(sh, sizeof sh, "%.2f%%", 100.0 * sm / h);
                snprintf(rsh, sizeof rsh, "%.2f%%", 100.0 * rm / h);
            }
            const char *path = exact == calls ? "exact" : exact == 0 ? "greedy" : "mixed";
            printf("| %d | %d | %d | %s | %.1f | %.1f | %.2f | %.2f | %.2f | %s | %s | %s |\n", E,
                   k, T, path, usum / calls, ssum / calls, sm, s9, rm, hs, sh, rsh);
            fflush(stdout);
            tmoe_set_selector_free(s);
            tmoe_router_free(r);
        }
    }
    free(ts);
    free(tr);
    free(z);
    free(b);
    free(sel);
    return 0;
}
