/* Router overhead per batch: route + update of every strategy at 16 tokens, for the
 * mixtral shape (E=8, k=2) and a fine-grained shape (E=128, k=8), with an analytic cost
 * provider (a cost model lookup costs more; see the note printed). Median and p90 over many
 * calls after a warm-up, in microseconds of host time.
 * Usage: router_overhead [calls] (default 2000). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "thermoe/route.h"

static double pct(double *v, int n, double q) {
    qsort(v, (size_t)n, sizeof *v, tmoe_cmp_double);
    return v[(int)(q * (n - 1))];
}

int main(int argc, char **argv) {
    int calls = 2000, warm = 50;
    if (argc > 1) {
        char *end;
        long v = strtol(argv[1], &end, 10);
        if (*end || v < 10 || v > 10000000) {
            fprintf(stderr, "usage: %s [calls >= 10]\n", argv[0]);
            return 2;
        }
        calls = (int)v;
    }
    const int T = 16;
    const int shapes[2][2] = {{8, 2}, {128, 8}};
    double *tr = malloc(sizeof(double) * (size_t)calls),
           *tu = malloc(sizeof(double) * (size_t)calls),
           *tt = malloc(sizeof(double) * (size_t)calls);
    float *z = malloc(sizeof(float) * T * 128);
    if (!tr || !tu || !tt || !z) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    printf("# router overhead per batch, T=%d tokens, %d calls (median / p90, us, host)\n", T,
           calls);
    printf("%-22s %-10s %4s %12s %12s %12s %12s\n", "strategy", "shape", "lb", "route_med",
           "update_med", "total_med", "total_p90");
    for (int si = 0; si < 2; si++) {
        int E = shapes[si][0], k = shapes[si][1];
        double ef[128], ep[128], lf[128], lp[128], tp[128];
        tmoe_rng rng;
        tmoe_rng_seed(&rng, 17);
        for (int e = 0; e < E; e++) {
            double f = 1.0 + tmoe_rng_uniform(&rng);
            ef[e] = 0.04 * f;
            ep[e] = 0.002 * f;
            lf[e] = 0.09 * f;
            lp[e] = 0.001 * f;
            tp[e] = 0.05 * f;
        }
        tmoe_analytic_cost ac = {E, ef, ep, NULL, lf, lp, NULL, NULL, tp, NULL};
        tmoe_cost_provider p = tmoe_cost_analytic_provider(&ac);
        for (int s = 0; s < TMOE_ROUTE_STRATEGY_COUNT; s++)
            for (int lb = 0; lb < 2; lb++) {
                if (lb && s != TMOE_ROUTE_BASELINE && s != TMOE_ROUTE_KERNEL_AWARE_TTHA) continue;
                tmoe_router_config cfg = tmoe_router_config_default();
                cfg.strategy = (tmoe_route_strategy)s;
                cfg.num_experts = E;
                cfg.top_k = k;
                cfg.max_tokens = T;
                cfg.lb_enabled = lb;
                cfg.num_devices = s == TMOE_ROUTE_MULTI_GPU_AWARE ? 4 : 1;
                tmoe_router *r;
                tmoe_error err = {0};
                if (tmoe_router_create(&cfg, &p, &r, &err)) {
                    fprintf(stderr, "router: %s\n", err.msg);
                    return 1;
                }
                tmoe_hw_state hw = tmoe_hw_state_unknown();
                hw.power_w = 420;
                hw.gpu_temp_c = 72;
                hw.gpu_util = 0.8;
                hw.sm_clock_ratio = 0.9;
                hw.throttled = 0;
                hw.num_devices = cfg.num_devices;
                for (int d = 0; d < hw.num_devices; d++) {
                    hw.dev_temp_c[d] = 60 + 5 * d;
                    hw.dev_power_w[d] = 300;
                    hw.dev_util[d] = 0.5;
                    hw.dev_queue[d] = 10 * d;
                }
                float b[128];
                int32_t sel[16 * 8];
                for (int i = 0; i < warm + calls; i++) {
                    for (int j = 0; j < T * E; j++) z[j] = (float)tmoe_rng_normal(&rng);
                    tmoe_route_obs o = tmoe_route_obs_unknown();
                    o.power_w = 400 + 40 * tmoe_rng_uniform(&rng);
                    o.temp_c = 70 + tmoe_rng_uniform(&rng);
                    o.latency_ms = 1.0;
                    o.throughput = 16000;
                    o.dt_s = 0.001;
                    double pe;
                    int64_t t0 = tmoe_now_ns();
                    int rc = tmoe_router_route(r, z, T, NULL, &hw, b, sel, &pe, &err);
                    int64_t t1 = tmoe_now_ns();
                    if (!rc) rc = tmoe_router_update(r, &o, NULL, &err);
                    int64_t t2 = tmoe_now_ns();
                    if (rc) {
                        fprintf(stderr, "%s: %s\n", tmoe_route_strategy_name(cfg.strategy),
                                err.msg);
                        return 1;
                    }
                    if (i >= warm) {
                        tr[i - warm] = (t1 - t0) / 1e3;
                        tu[i - warm] = (t2 - t1) / 1e3;
                        tt[i - warm] = (t2 - t0) / 1e3;
                    }
                }
                char shape[16];
                snprintf(shape, sizeof shape, "E%d,k%d", E, k);
                double rm = pct(tr, calls, 0.5), um = pct(tu, calls, 0.5);
                double tm = pct(tt, calls, 0.5), t9 = pct(tt, calls, 0.9);
                printf("%-22s %-10s %4s %12.2f %12.2f %12.2f %12.2f\n",
                       tmoe_route_strategy_name(cfg.strategy), shape, lb ? "on" : "off", rm, um, tm,
                       t9);
                tmoe_router_free(r);
            }
    }
    printf("# analytic cost provider; static_optimal's one-time fit is in the warm-up, not here\n");
    free(tr);
    free(tu);
    free(tt);
    free(z);
    return 0;
}
