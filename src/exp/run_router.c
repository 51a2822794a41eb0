/* The router of each combination (strategy, workload, seed, warm start, static fit) and
 * the baseline calibration the TTHA losses are measured against. */
#include <math.h>
#include <stdlib.h>

#include "thermoe/exp.h"
#include "exp/runner_internal.h"

int run_make_router(run_ctx *r, tmoe_route_strategy st, tmoe_workload_kind wl, uint64_t seed,
                    tmoe_error *err) {
    int rc0 = run_update_finish(r, err); /* the old router may still be learning */
    if (rc0) return rc0;
    tmoe_router_free(r->router);
    r->router = NULL;
    if (r->lm) return run_lm_make_routers(r, st, wl, seed, err); /* one per MoE layer */
    tmoe_router_config rc = r->cfg.router;
    rc.strategy = st;
    rc.num_experts = r->blk_cfg.num_experts;
    rc.top_k = r->blk_cfg.top_k;
    rc.max_tokens = r->max_tokens;
    rc.latency_base_ms = r->base_latency_ms[wl];
    rc.throughput_base = r->base_throughput[wl];
    rc.num_devices = r->ranks > 1 ? r->ranks : r->ndev;
    rc.expert_device = r->expert_dev;
    if (r->ranks > 1) {
        rc.home_device = r->rank;
        rc.link_j_per_token = run_link_j_per_copy(r, rc.link_j_per_token);
    }
    rc.seed = seed;
    rc.lb_enabled = r->cfg.load_balancer;
    rc.observe_selection = 1; /* the engine selects; run_batch reports it */
    int c = tmoe_router_create(&rc, &r->provider, &r->router, err);
    if (c) return tmoe_error_prefix(err, c, "creating router %s", tmoe_route_strategy_name(st));
    if (st == TMOE_ROUTE_KERNEL_AWARE_TTHA && r->cfg.ttha_warm_start) {
        c = tmoe_router_ttha_load(r->router, r->cfg.ttha_warm_start, err);
        if (c) return tmoe_error_prefix(err, c, "TTHA warm start");
    }
    if (st == TMOE_ROUTE_STATIC_OPTIMAL) {
        /* workload profile: the gate logits of calibration batches disjoint from the scored
         * ones (those are samples 0..num_samples-1; the profile takes the next indices) */
        const tmoe_workload *w = &r->wl[wl];
        int nprof = r->cfg.num_samples < 4 ? r->cfg.num_samples : 4, E = r->blk_cfg.num_experts;
        float *prof = tmoe_malloc(sizeof(float) * (size_t)nprof * w->tokens * E, err);
        if (!prof) return TMOE_ENOMEM;
        for (int i = 0; i < nprof && !c; i++) {
            tmoe_workload_batch(w, r->blk, r->cfg.num_samples + i, r->x);
            c = tmoe_engine_begin(r->eng, r->x, w->tokens, r->cfg.moe_only, err);
            if (!c) c = tmoe_engine_logits(r->eng, prof + (size_t)i * w->tokens * E, err);
        }
        double kl = NAN;
        if (!c) c = tmoe_router_fit_static(r->router, prof, nprof * w->tokens, w->tokens, &kl, err);
        free(prof);
        if (c) return tmoe_error_prefix(err, c, "fitting static_optimal biases");
        tmoe_log(TMOE_LOG_INFO, "static_optimal on %s: expected KL %.4g nats (bound %.4g)",
                 tmoe_workload_name(wl), kl, r->cfg.router.kl_bound);
    }
    return TMOE_OK;
}

/* Baseline latency and throughput per workload, for the TTHA latency penalty and
 * throughput bonus (recorded in the metadata). */
int run_calibrate(run_ctx *r, tmoe_error *err) {
    for (int wl = 0; wl < TMOE_WL_COUNT; wl++) {
        r->base_latency_ms[wl] = r->base_throughput[wl] = NAN;
        if (!r->cfg.workloads[wl]) continue;
        int rc = run_make_router(r, TMOE_ROUTE_BASELINE, (tmoe_workload_kind)wl, r->cfg.seed, err);
        if (rc) return rc;
        run_combo c = {.repeat = -1, .wl = (tmoe_workload_kind)wl, .st = TMOE_ROUTE_BASELINE};
        int n = 4;
        double lat = 0.0, per = 0.0;
        for (int b = 0; b < n; b++) {
            double t0 = run_now_s(r);
            rc = run_batch(r, &c, b, 0, NULL, err);
            if (rc)
                return tmoe_error_prefix(err, rc, "baseline calibration of %s",
                                         tmoe_workload_name((tmoe_workload_kind)wl));
            lat += r->last_latency_ms;
            per += run_now_s(r) - t0;
        }
        r->base_latency_ms[wl] = lat / n;
        r->base_throughput[wl] = r->wl[wl].tokens * n / per;
    }
    return TMOE_OK;
}
