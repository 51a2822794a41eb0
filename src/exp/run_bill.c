/* Simulated billing: the work of one MoE step, looked up in the cost model, billed to the
 * simulated GPU(s) through the meter. */
#include <math.h>

#include "thermoe/ep.h"
#include "exp/runner_internal.h"

int run_bill_expert(run_ctx *r, int e, tmoe_etype t, tmoe_impl im, int n, double *busy_ms,
                    double *dyn_j, batch_hw *hw, tmoe_error *err) {
    tmoe_op seq[4];
    int nseq = tmoe_expert_op_sequence(t, im, seq);
    for (int i = 0; i < nseq; i++) {
        tmoe_cost_value v;
        int rc = tmoe_cost_lookup(r->cm, seq[i], t, im, n, &v, err);
        if (rc) return rc;
        *busy_ms += v.latency_ms;
        *dyn_j += v.energy_dynamic_j;
        hw->expert_ms[e] += v.latency_ms;
        hw->op_ms[seq[i]] =
            isnan(hw->op_ms[seq[i]]) ? v.latency_ms : hw->op_ms[seq[i]] + v.latency_ms;
    }
    return TMOE_OK;
}

/* Bill the batch's work to the simulated GPU(s): each expert's op sequence at its token
 * count from the cost model, on the device the placement puts the expert on, plus the
 * MoE layer's other ops the cost model has, on device 0. Returns the step latency (ms):
 * the devices work in parallel, each serially. Expert-parallel: the simulated GPU is this
 * rank's (device 0), billed for this rank's experts at the rows they ran (every rank's
 * copies); other ranks' GPUs are their own processes' to bill. */
int run_bill(run_ctx *r, const tmoe_moe_metrics *m, int T, int moe_only, batch_hw *hw,
             tmoe_error *err) {
    double busy_ms[TMOE_ROUTE_MAX_DEVICES] = {0}, dyn_j[TMOE_ROUTE_MAX_DEVICES] = {0};
    int nd = r->ndev > 0 ? r->ndev : 1;
    for (int o = 0; o < TMOE_OP_COUNT; o++) hw->op_ms[o] = NAN;
    for (int o = 0; o < TMOE_OP_COUNT; o++) {
        if (!r->billed[o]) continue;
        int attn = o == TMOE_OP_ATTN_QKV || o == TMOE_OP_ATTN_CORE || o == TMOE_OP_ATTN_OUT;
        if (attn && moe_only) continue;
        tmoe_cost_value v;
        int rc = tmoe_cost_lookup(r->cm, (tmoe_op)o, TMOE_ET_FP16, TMOE_IMPL_FUSED, T, &v, err);
        if (rc) return rc;
        int calls = o == TMOE_OP_NORM && !moe_only ? 2 : 1;
        busy_ms[0] += calls * v.latency_ms;
        dyn_j[0] += calls * v.energy_dynamic_j;
        hw->op_ms[o] = calls * v.latency_ms;
    }
    tmoe_ep_stats es;
    tmoe_error e2 = {0};
    int ep = r->ranks > 1 && tmoe_engine_ep_stats(r->eng, &es, &e2) == TMOE_OK;
    for (int e = 0; e < m->num_experts; e++) {
        int n = ep ? es.expert_rows[e] : m->tokens_per_expert[e];
        hw->expert_ms[e] = ep && r->placement.device[e] != r->rank ? NAN : 0.0;
        if (n == 0) continue;
        tmoe_impl im = run_step_impl(r, m, r->blk->types[e]); /* what the step ran */
        int dev = ep ? 0 : r->placement.device[e];
        int rc =
            run_bill_expert(r, e, r->blk->types[e], im, n, &busy_ms[dev], &dyn_j[dev], hw, err);
        if (rc) return rc;
    }
    double lat = 0.0;
    for (int d = 0; d < nd; d++) {
        r->bill_busy_s[d] = r->bill_dyn_j[d] = 0.0;
        if (busy_ms[d] <= 0.0) continue;
        /* the cost model's dynamic energy is memory-bound work for experts (weights streamed) */
        int rc = tmoe_meter_bill(r->meter, d, busy_ms[d] / 1e3, fmax(dyn_j[d], 0.0), 0.85);
        if (rc)
            return tmoe_errorf(err, rc, "device %d: %.3g ms of work could not be billed", d,
                               busy_ms[d]);
        if (busy_ms[d] > lat) lat = busy_ms[d];
        r->bill_busy_s[d] = busy_ms[d] / 1e3;
        r->bill_dyn_j[d] = fmax(dyn_j[d], 0.0);
    }
    tmoe_meter_sync(r->meter);
    hw->latency_ms = lat;
    return TMOE_OK;
}
