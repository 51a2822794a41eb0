/* One batch: route -> engine -> meter -> log. The gate runs on the engine, the router sets
 * the biases, the engine runs the MoE layer with them, the meter measures the window (the
 * simulated GPU billed from the cost model first), and the row is filled for the log. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exp/runner_internal.h"

/* Open-loop arrivals: wait (idle) until the next batch arrives; simulated time advances, on
 * NVML the thread sleeps, until a stop request. */
static void wait_for_arrival(run_ctx *r, int tokens) {
    if (r->cfg.arrival_rate <= 0.0) return;
    double u = tmoe_rng_uniform(&r->arrivals);
    r->next_arrival_s += -log(1.0 - u) * tokens / r->cfg.arrival_rate;
    double now = run_now_s(r);
    if (now >= r->next_arrival_s) return; /* the device is behind: no idle time */
    for (double left = r->next_arrival_s - now;
         (left = tmoe_meter_wait(r->meter, left)) > 0.0 && !run_stop_requested;) {
    }
}

/* Fraction of chosen (token, expert) pairs shared by two selections (order ignored). */
double run_topk_agreement(const int32_t *a, const int32_t *b, int T, int k) {
    long same = 0;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < k; i++)
            for (int j = 0; j < k; j++)
                if (a[t * k + i] == b[t * k + j]) {
                    same++;
                    break;
                }
    return (double)same / ((double)T * k);
}

static double rel_error(const float *y, const float *y0, size_t n) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)y[i] - y0[i];
        num += d * d;
        den += (double)y0[i] * y0[i];
    }
    return den > 0.0 ? sqrt(num / den) : (num > 0.0 ? INFINITY : 0.0);
}

/* Route: the engine's attention and gate give the logits; the previous batch's update (and
 * row) is finished; the router sets r->bias from the hardware snapshot and the unbiased
 * selection r->idx0 (also the fidelity reference). */
static int route(run_ctx *r, const run_combo *c, batch_out *o, tmoe_error *err) {
    int T = o->tokens, E = r->blk_cfg.num_experts, k = r->blk_cfg.top_k;
    int rc = tmoe_engine_begin(r->eng, r->x, T, r->cfg.moe_only, err);
    if (!rc) rc = tmoe_engine_logits(r->eng, r->logits, err);
    if (rc) return rc;
    if ((rc = run_update_finish(r, err))) return rc; /* the previous batch's update and row */
    tmoe_hw_state hs = run_hw_snapshot(r, r->cfg.router.horizon_s);
    /* the unbiased routing of the batch, computed once: the router's current load
     * (kernel_aware_ttha) and the fidelity reference */
    tmoe_gate_topk(r->logits, NULL, T, E, k, r->blk_cfg.renormalize, 0, r->idx0, r->w0);
    int64_t m0 = tmoe_monitor_now_ns(r->mon); /* the run's one clock (the trace's) */
    int64_t h0 = tmoe_now_ns();
    rc = tmoe_router_route(r->router, r->logits, T, r->idx0, &hs, r->bias, NULL, NULL, err);
    o->budget_g = tmoe_router_budget_tightness(r->router);
    if (rc) return tmoe_error_prefix(err, rc, "router %s", tmoe_route_strategy_name(c->st));
    o->router_ms = (double)(tmoe_now_ns() - h0) / 1e6;
    o->host_ts_us = (double)(m0 - r->t0_ns) / 1e3;
    return TMOE_OK;
}

/* Engine: the MoE layer with the router's biases (none for the plain baseline); the
 * selection that ran goes back to the router (load balancer, predicted energy). */
static int engine(run_ctx *r, const run_combo *c, batch_out *o, tmoe_error *err) {
    o->m = (tmoe_moe_metrics){.topk_idx = r->idx, .topk_w = r->w};
    o->bias = c->st == TMOE_ROUTE_BASELINE && !r->cfg.load_balancer ? NULL : r->bias;
    int rc = tmoe_engine_moe(r->eng, o->bias, &o->m, err);
    if (!rc) rc = tmoe_engine_output(r->eng, r->y, err);
    if (rc) return rc;
    int64_t h1 = tmoe_now_ns();
    o->pred_energy_j = NAN;
    rc = tmoe_router_observe(r->router, r->idx, r->w, o->tokens, &o->pred_energy_j, err);
    if (rc) return tmoe_error_prefix(err, rc, "router %s", tmoe_route_strategy_name(c->st));
    o->observe_ms = (double)(tmoe_now_ns() - h1) / 1e6;
    return TMOE_OK;
}

/* Meter: the simulated GPU is billed the step from the cost model (on NVML the engine's
 * own timings stand), then the window is closed and read. */
static int meter(run_ctx *r, const tmoe_meter_window *win, batch_out *o, tmoe_error *err) {
    batch_hw *hw = &o->hw;
    int rc;
    if (r->sim) {
        rc = r->lm ? run_lm_bill(r, o, hw, err)
                   : run_bill(r, &o->m, o->tokens, r->cfg.moe_only, hw, err);
        if (rc) return tmoe_error_prefix(err, rc, "billing the batch to the simulated GPU");
    } else {
        hw->latency_ms = o->m.step_ms;
        memcpy(hw->op_ms, o->m.op_ms, sizeof hw->op_ms);
        memcpy(hw->expert_ms, o->m.expert_ms, sizeof hw->expert_ms);
    }
    o->t_end_s = run_now_s(r);
    tmoe_meter_reading rd;
    if ((rc = tmoe_meter_end(r->meter, win, &rd, err))) return rc;
    run_hw_from_reading(r, &rd, hw);
    o->period_s = hw->period_s > 0.0 ? hw->period_s : hw->latency_ms / 1e3;
    r->last_latency_ms = hw->latency_ms;
    return TMOE_OK;
}

/* Fidelity against the unbiased routing of the same batch (every fidelity_every batches:
 * the engine runs the MoE layer again without biases). Where the step that ran was the
 * unbiased one its error is 0; on real hardware that pass runs anyway, so that the next
 * batch's window follows the same work whatever the strategy (bench/results/h100_harness_gap),
 * and the error is measured (0 where the engine is deterministic). */
static int fidelity(run_ctx *r, batch_out *o, tmoe_error *err) {
    int T = o->tokens, D = r->blk_cfg.d_model, k = r->blk_cfg.top_k;
    o->topk_agreement = run_topk_agreement(r->idx, r->idx0, T, k);
    o->rel_error = NAN;
    if (r->cfg.fidelity_every <= 0 || o->batch % r->cfg.fidelity_every != 0) return TMOE_OK;
    if (o->bias == NULL && r->sim) {
        o->rel_error = 0.0; /* the unbiased step is the one that ran */
        return TMOE_OK;
    }
    int rc = tmoe_engine_moe(r->eng, NULL, NULL, err);
    if (!rc) rc = tmoe_engine_output(r->eng, r->y0, err);
    if (rc) return rc;
    o->rel_error = rel_error(r->y, r->y0, (size_t)T * D);
    return TMOE_OK;
}

/* Whether this batch's CUDA kernels go into its trace (CUPTI; a CUDA build on the CUDA
 * backend). A tracer that cannot start is said once and not tried again. */
static int ktrace_begin(run_ctx *r, tmoe_trace *tr) {
    if (!tr || r->ktrace_off) return 0;
    int cuda =
        r->lm ? r->lm->gpu != NULL : r->eng && !strcmp(tmoe_engine_backend_name(r->eng), "cuda");
    if (!cuda) return 0;
    tmoe_error e = {0};
    if (tmoe_ktrace_start(&e)) {
        tmoe_log(TMOE_LOG_WARN, "traces without CUDA kernels: %s", e.msg);
        r->ktrace_off = 1;
        return 0;
    }
    return 1;
}

/* Stop the tracer and write the batch's kernels as spans (pid 3, one track per device) on
 * the run's one clock: CUPTI's clock is mapped onto the monitor's by one pair of readings
 * taken together after the batch (both are steady clocks; the pair's own gap, a few us,
 * bounds the error). */
static void ktrace_end(run_ctx *r, tmoe_trace *tr, int batch) {
    tmoe_kernel_rec *recs = NULL;
    int n = 0;
    int64_t k_now = 0;
    tmoe_error e = {0};
    int rc = tmoe_ktrace_stop(&recs, &n, &e);
    int64_t m0 = tmoe_monitor_now_ns(r->mon);
    if (!rc) rc = tmoe_ktrace_clock_ns(&k_now, &e);
    int64_t m1 = tmoe_monitor_now_ns(r->mon);
    if (rc) {
        tmoe_log(TMOE_LOG_WARN, "traces without CUDA kernels: %s", e.msg);
        r->ktrace_off = 1;
        free(recs);
        return;
    }
    int64_t off = (m0 + m1) / 2 - k_now;
    for (int i = 0; i < n; i++) {
        const tmoe_kernel_rec *k = &recs[i];
        char args[200];
        snprintf(args, sizeof args,
                 "{\"batch\":%d,\"grid\":[%d,%d,%d],\"block\":[%d,%d,%d],\"clock\":\"cupti\"}",
                 batch, k->grid[0], k->grid[1], k->grid[2], k->block[0], k->block[1], k->block[2]);
        tmoe_trace_span(tr, k->name, "kernel", 3, k->device,
                        (double)(k->start_ns + off - r->t0_ns) / 1e3,
                        (double)(k->end_ns - k->start_ns) / 1e3, args);
    }
    free(recs);
}

int run_batch(run_ctx *r, const run_combo *c, int b, int logged, tmoe_trace *tr, tmoe_error *err) {
    const tmoe_workload *w = &r->wl[c->wl];
    batch_out *o = &r->cur;
    memset(o, 0, sizeof *o);
    o->batch = b;
    o->nll = o->nll_base = o->budget_g = o->active_experts = o->copy_share = NAN;
    int rc = TMOE_OK;
    if (r->lm) { /* the decoder LM on windows of text: routing happens inside its forward */
        if ((rc = run_lm_fill(r, c, b % r->cfg.num_samples, o, err))) return rc;
    } else {
        o->tokens = w->tokens;
        o->bias_n = r->blk_cfg.num_experts;
        tmoe_workload_batch(w, r->blk, b % r->cfg.num_samples, r->x);
    }

    int kt = ktrace_begin(r, tr);
    tmoe_meter_window win;
    o->idle_before_s = run_now_s(r) - r->last_win_end_s; /* NAN before the first window */
    tmoe_meter_begin(r->meter, &win);
    wait_for_arrival(r, o->tokens);
    if (r->lm) {
        rc = run_lm_forward(r, c, o, err);
    } else {
        rc = route(r, c, o, err);
        if (!rc) rc = engine(r, c, o, err);
    }
    if (!rc) rc = meter(r, &win, o, err);
    if (!rc) r->last_win_end_s = o->t_end_s;
    if (kt) ktrace_end(r, tr, b);
    if (!rc) rc = r->lm ? run_lm_quality(r, c, o, err) : fidelity(r, o, err);
    if (rc) return rc;

    /* the router learns from what the meter saw, while the next batch is prepared */
    tmoe_route_obs obs = tmoe_route_obs_unknown();
    /* the batch window's own power (its energy over its period), not a ~1 s average */
    obs.power_w = isfinite(o->hw.energy_j) && o->period_s > 0.0 ? o->hw.energy_j / o->period_s
                                                                : o->hw.power_avg_w;
    obs.temp_c = o->hw.temp_end_c;
    obs.latency_ms = o->hw.latency_ms;
    obs.throughput = o->tokens / o->period_s;
    obs.period_s = o->period_s;
    obs.dt_s = o->period_s;
    run_update_post(r, &obs);

    /* log */
    if (tr) run_trace_batch(r, tr, o);
    if (!logged) return TMOE_OK;
    run_check_telemetry(r, c, b, &o->hw);
    run_row_fill(r, c, o);
    r->row_pending = 1; /* written by run_update_finish with the update's loss terms */
    r->row_route_ms = o->router_ms + o->observe_ms;
    return TMOE_OK;
}
