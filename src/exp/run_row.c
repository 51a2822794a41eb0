/* What a batch leaves behind: its batches.csv row (the update's loss terms are added when the
 * row is written, run_update.c) and its spans and counters in the combination's trace. */
#include <math.h>
#include <stdio.h>

#include "exp/runner_internal.h"

/* Fill r->row from the batch o of combination c (every column but the update's). */
void run_row_fill(run_ctx *r, const run_combo *c, const batch_out *o) {
    int T = o->tokens, E = r->blk_cfg.num_experts;
    tmoe_runlog_row *row = &r->row;
    tmoe_runlog_row_clear(row);
    tmoe_runlog_row_dbl(row, TMOE_RL_TIME, o->t_end_s);
    tmoe_runlog_row_str(row, TMOE_RL_RUN_ID, r->run_id);
    tmoe_runlog_row_int(row, TMOE_RL_REPEAT, c->repeat);
    tmoe_runlog_row_str(row, TMOE_RL_WORKLOAD, tmoe_workload_name(c->wl));
    tmoe_runlog_row_str(row, TMOE_RL_STRATEGY, tmoe_route_strategy_name(c->st));
    tmoe_runlog_row_str(row, TMOE_RL_EXPERT_TYPE,
                        r->blk_cfg.expert_types ? "mixed"
                                                : tmoe_etype_name(r->blk_cfg.expert_type));
    char shape[96];
    run_energy_shape(r, shape, sizeof shape);
    tmoe_runlog_row_str(row, TMOE_RL_ENERGY_EXPERT_SHAPE, shape);
    tmoe_runlog_row_dbl(row, TMOE_RL_BUDGET_TIGHTNESS, o->budget_g);
    double active = o->active_experts;
    if (isnan(active)) { /* the block: one routed step */
        active = 0.0;
        for (int e = 0; e < E; e++) active += o->m.tokens_per_expert[e] > 0;
    }
    tmoe_runlog_row_dbl(row, TMOE_RL_ACTIVE_EXPERTS, active);
    tmoe_runlog_row_dbl(row, TMOE_RL_IDLE_BEFORE_S, o->idle_before_s);
    tmoe_runlog_row_dbl(row, TMOE_RL_COPY_SHARE, o->copy_share);
    if (r->lm) {
        tmoe_runlog_row_dbl(row, TMOE_RL_NLL, o->nll);
        tmoe_runlog_row_dbl(row, TMOE_RL_NLL_BASELINE, o->nll_base);
        tmoe_runlog_row_int(row, TMOE_RL_TOKENS_SCORED, o->tokens_scored);
        tmoe_runlog_row_ints(row, TMOE_RL_LAYER_EXPERT_COUNTS, o->layer_counts, r->lm->n_moe * E);
    }
    /* what the step's q4/q2 experts ran (one impl for all of them unless types differ) */
    int used = -1, mixed = 0;
    for (int t = 0; t < TMOE_ET_COUNT; t++) {
        int u = o->m.impl_used[t];
        if (u < 0) continue;
        mixed |= used >= 0 && u != used;
        used = u;
    }
    tmoe_runlog_row_str(row, TMOE_RL_IMPL,
                        mixed       ? "fused+unfused"
                        : used >= 0 ? tmoe_impl_name((tmoe_impl)used)
                                    : tmoe_impl_name(r->cfg.impl));
    tmoe_runlog_row_int(row, TMOE_RL_BATCH_IDX, o->batch);
    tmoe_runlog_row_int(row, TMOE_RL_TOKENS, T);
    tmoe_runlog_row_dbl(row, TMOE_RL_LATENCY_MS, o->hw.latency_ms);
    tmoe_runlog_row_dbl(row, TMOE_RL_THROUGHPUT, T / o->period_s);
    tmoe_runlog_row_dbl(row, TMOE_RL_ENERGY_J, o->hw.energy_j);
    tmoe_runlog_row_dbl(row, TMOE_RL_ENERGY_J_PER_TOKEN, o->hw.energy_j / T);
    /* the log's names: the latest power times the window counts as integrated */
    tmoe_energy_method how =
        o->hw.method == TMOE_ENERGY_LATEST_POWER ? TMOE_ENERGY_INTEGRATED : o->hw.method;
    tmoe_runlog_row_str(row, TMOE_RL_ENERGY_METHOD, tmoe_energy_method_name(how));
    tmoe_runlog_row_dbl(row, TMOE_RL_POWER_AVG_W, o->hw.power_avg_w);
    tmoe_runlog_row_dbl(row, TMOE_RL_POWER_PEAK_W, o->hw.power_peak_w);
    tmoe_runlog_row_dbl(row, TMOE_RL_GPU_TEMP_START_C, o->hw.temp_start_c);
    tmoe_runlog_row_dbl(row, TMOE_RL_GPU_TEMP_END_C, o->hw.temp_end_c);
    tmoe_runlog_row_dbl(row, TMOE_RL_GPU_TEMP_PEAK_C, o->hw.temp_peak_c);
    tmoe_runlog_row_dbl(row, TMOE_RL_MEM_TEMP_C, o->hw.mem_temp_peak_c);
    tmoe_runlog_row_dbl(row, TMOE_RL_SM_CLOCK_MHZ, o->hw.sm_clock_mhz);
    tmoe_runlog_row_int(row, TMOE_RL_THROTTLE_REASONS, (long long)o->hw.throttle);
    tmoe_runlog_row_dbl(row, TMOE_RL_GPU_UTIL_PCT, o->hw.gpu_util_pct);
    tmoe_runlog_row_ints(row, TMOE_RL_EXPERT_USAGE_COUNTS, o->m.tokens_per_expert, E);
    tmoe_runlog_row_dbls(row, TMOE_RL_EXPERT_TIME_MS, o->hw.expert_ms, E);
    tmoe_runlog_row_dbl(row, TMOE_RL_PREDICTED_ENERGY_J, o->pred_energy_j);
    /* the block: E biases; the decoder LM: n_moe x E, layer-major */
    double bd[TMOE_LM_MAX_LAYERS * 8];
    int nb = o->bias_n > 0 ? o->bias_n : E;
    if (nb > (int)(sizeof bd / sizeof *bd)) nb = 0; /* does not fit a cell: unknown */
    for (int i = 0; i < nb; i++) bd[i] = o->bias ? o->bias[i] : 0.0;
    tmoe_runlog_row_dbls(row, TMOE_RL_BIASES, bd, nb);
    tmoe_runlog_row_dbl(row, TMOE_RL_TOPK_AGREEMENT, o->topk_agreement);
    tmoe_runlog_row_dbl(row, TMOE_RL_OUTPUT_REL_ERROR, o->rel_error);
    tmoe_runlog_row_str(row, TMOE_RL_TELEMETRY_SOURCE, tmoe_telemetry_source_name(r->tel));
    tmoe_runlog_row_dbls(row, TMOE_RL_DEVICE_ENERGY_J, o->hw.dev_energy_j, r->ndev);
    tmoe_runlog_row_dbls(row, TMOE_RL_DEVICE_POWER_AVG_W, o->hw.dev_power_avg_w, r->ndev);
    tmoe_runlog_row_dbls(row, TMOE_RL_DEVICE_TEMP_END_C, o->hw.dev_temp_end_c, r->ndev);
    int32_t dev_tok[TMOE_ROUTE_MAX_DEVICES] = {0};
    for (int e = 0; e < E; e++) dev_tok[r->placement.device[e]] += o->m.tokens_per_expert[e];
    tmoe_runlog_row_ints(row, TMOE_RL_DEVICE_TOKENS, dev_tok, r->placement.num_devices);
    tmoe_runlog_row_dbl(row, TMOE_RL_ENERGY_WINDOW_S, o->hw.period_s);
    /* epoch seconds, 3 decimals (ms): joins with nvidia-smi / DCGM timestamps */
    char wall[32] = "nan";
    if (!isnan(o->hw.wall_end_unix_s)) snprintf(wall, sizeof wall, "%.3f", o->hw.wall_end_unix_s);
    tmoe_runlog_row_str(row, TMOE_RL_WALL_TIME_UNIX_S, wall);
    tmoe_runlog_row_dbl(row, TMOE_RL_MEM_UTIL_PCT, o->hw.mem_util_pct);
    tmoe_runlog_row_dbl(row, TMOE_RL_MEM_CLOCK_MHZ, o->hw.mem_clock_mhz);
    tmoe_runlog_row_dbl(row, TMOE_RL_PCIE_RX_MBPS, o->hw.pcie_rx_mbps);
    tmoe_runlog_row_dbl(row, TMOE_RL_PCIE_TX_MBPS, o->hw.pcie_tx_mbps);
}

/* The batch in the trace: its ops laid end to end on the device track, the router on the
 * host track, and the samples of its window as counters; all on the monitor's clock in us
 * since the run began (r->t0_ns), the one clock of every trace of the run. */
void run_trace_batch(run_ctx *r, tmoe_trace *tr, const batch_out *o) {
    const batch_hw *hw = &o->hw;
    double t_dev_end = o->t_end_s;
    /* device track: the ops of the step laid end to end, ending when the batch ended */
    double total = 0.0;
    for (int op = 0; op < TMOE_OP_COUNT; op++)
        if (!isnan(hw->op_ms[op])) total += hw->op_ms[op];
    double ts = t_dev_end * 1e6 - total * 1e3;
    static const tmoe_op order[] = {TMOE_OP_NORM,     TMOE_OP_ATTN_QKV,       TMOE_OP_ATTN_CORE,
                                    TMOE_OP_ATTN_OUT, TMOE_OP_GATE_LINEAR,    TMOE_OP_GATE_TOPK,
                                    TMOE_OP_PERMUTE,  TMOE_OP_DEQUANT_UNPACK, TMOE_OP_LINEAR_FC1,
                                    TMOE_OP_RELU,     TMOE_OP_LINEAR_FC2,     TMOE_OP_COMBINE};
    char args[128];
    snprintf(args, sizeof args, "{\"batch\":%d}", o->batch);
    for (size_t i = 0; i < sizeof order / sizeof *order; i++) {
        double ms = hw->op_ms[order[i]];
        if (isnan(ms)) continue;
        tmoe_trace_span(tr, tmoe_op_name(order[i]), "op", 1, 1, ts, ms * 1e3, args);
        ts += ms * 1e3;
    }
    /* the router where it began on the run's one clock; its duration is host time (on the
     * simulated GPU the simulated clock does not advance while the host routes) */
    char rargs[160];
    snprintf(rargs, sizeof rargs, "{\"batch\":%d,\"dur_clock\":\"host\"}", o->batch);
    tmoe_trace_span(tr, "router", "host", 2, 1, o->host_ts_us, o->router_ms * 1e3, rargs);
    int64_t a = r->t0_ns + (int64_t)((t_dev_end - hw->period_s) * 1e9);
    int64_t e = r->t0_ns + (int64_t)(t_dev_end * 1e9);
    int n = tmoe_monitor_samples(r->mon, 0, a, e, r->samples, RUN_MAX_SAMPLES);
    /* a batch shorter than the sampling period holds no sample: show the latest reading at
     * its own time (counter tracks are steps from one reading to the next) */
    if (n == 0 && tmoe_monitor_latest(r->mon, 0, &r->samples[0]) == TMOE_OK) n = 1;
    for (int i = 0; i < n; i++) {
        const tmoe_sample *s = &r->samples[i];
        if (s->t_ns <= r->trace_last_ns) continue;
        r->trace_last_ns = s->t_ns;
        double us = (double)(s->t_ns - r->t0_ns) / 1e3;
        if (s->valid & TMOE_F_POWER_AVG)
            tmoe_trace_counter(tr, "power_w", 1, us, "avg", s->power_avg_w);
        if (s->valid & TMOE_F_POWER_INSTANT)
            tmoe_trace_counter(tr, "power_instant_w", 1, us, "instant", s->power_instant_w);
        if (s->valid & TMOE_F_GPU_TEMP)
            tmoe_trace_counter(tr, "gpu_temp_c", 1, us, "gpu", s->gpu_temp_c);
        if (s->valid & TMOE_F_MEM_TEMP)
            tmoe_trace_counter(tr, "mem_temp_c", 1, us, "hbm", s->mem_temp_c);
    }
}

tmoe_impl run_step_impl(const run_ctx *r, const tmoe_moe_metrics *m, tmoe_etype t) {
    return (unsigned)t < TMOE_ET_COUNT && m->impl_used[t] >= 0 ? (tmoe_impl)m->impl_used[t]
                                                               : r->cfg.impl;
}
