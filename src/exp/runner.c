/* The experiment runner (see include/thermoe/runner.h). One run directory holds
 * batches.csv, metadata.json and traces/. Order of initialisation, each step reporting its
 * own error: cost model, telemetry + monitor, model + engine, workloads, logger. */
#include "thermoe/runner.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "thermoe/cost.h"
#include "thermoe/ep.h"
#include "thermoe/exp.h"
#include "thermoe/model.h"
#include "exp/runner_internal.h"

static volatile sig_atomic_t stop_requested;

void tmoe_run_request_stop(void) { stop_requested = 1; }

tmoe_run_config tmoe_run_config_default(void) {
    tmoe_run_config c;
    memset(&c, 0, sizeof c);
    for (int s = 0; s < TMOE_ROUTE_STRATEGY_COUNT; s++) c.strategies[s] = 1;
    for (int w = 0; w < TMOE_WL_COUNT; w++) c.workloads[w] = 1;
    c.repeats = 1;
    c.num_samples = 16;
    c.epochs = 1;
    c.warmup_batches = 2;
    c.trace_batches = 4;
    c.arrival_rate = 0.0;
    c.cooldown_s = 0.0;
    c.fidelity_every = 1;
    c.seed = 42;
    /* the values are computed on the CPU when no GPU answers: a small shape keeps the
     * default sweep near half a minute on 2 cores (the simulated GPU bills the cost model's
     * shape, not this one) */
    c.block = tmoe_block_config_default();
    c.block.d_model = 128;
    c.block.d_ff = 256;
    c.block.seq_len = 16;
    c.batch_size = 4;
    c.backend = TMOE_BACKEND_AUTO;
    c.impl = TMOE_IMPL_FUSED;
    c.telemetry = TMOE_TELEMETRY_AUTO;
    c.router = tmoe_router_config_default();
    c.out_dir = "results/run";
    c.progress = 1;
    return c;
}

const char *tmoe_run_default_cost_model(void) {
    static char path[4096];
    const char *dir = getenv("THERMOE_DATA_DIR");
    snprintf(path, sizeof path, "%s/%s", dir && *dir ? dir : THERMOE_DATA_DIR,
             "h100_cost_model.json");
    return path;
}

/* ---- small helpers ------------------------------------------------------------------- */

/* Create dir (and its parents) and check that this process may write in it. */
static int make_dir(const char *dir, tmoe_error *err) {
    int rc = tmoe_mkdir_p(dir, err);
    if (rc) return rc;
    if (access(dir, W_OK | X_OK) != 0)
        return tmoe_errorf(err, TMOE_EIO, "directory %s is not writable: %s", dir, strerror(errno));
    return TMOE_OK;
}

static void iso_time(char *buf, size_t n) {
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static double now_s(run_ctx *r) {
    return (double)(tmoe_monitor_now_ns(r->mon) - r->t0_ns) / 1e9;
}

/* ---- initialisation ------------------------------------------------------------------ */

static int init_cost(run_ctx *r, tmoe_error *err) {
    const char *path = r->cfg.cost_model_path ? r->cfg.cost_model_path : tmoe_run_default_cost_model();
    snprintf(r->cost_path, sizeof r->cost_path, "%s", path);
    int rc = tmoe_cost_load(path, &r->cm, err);
    if (rc) return tmoe_error_prefix(err, rc, "loading the kernel cost model");
    r->cost_sum = tmoe_cost_checksum(r->cm);
    /* every expert type of the model must be in the cost model: fail now, not mid-run */
    for (int e = 0; e < r->blk_cfg.num_experts; e++) {
        tmoe_etype t = r->blk_cfg.expert_types ? r->blk_cfg.expert_types[e] : r->blk_cfg.expert_type;
        tmoe_cost_value v;
        rc = tmoe_cost_expert(r->cm, t, r->cfg.impl, 1.0, &v, err);
        if (rc) return tmoe_error_prefix(err, rc, "cost model %s has no %s/%s expert", path,
                                         tmoe_etype_name(t), tmoe_impl_name(r->cfg.impl));
        if (!isfinite(v.energy_j) || !isfinite(v.energy_dynamic_j))
            return tmoe_errorf(err, TMOE_EINVAL,
                               "cost model %s has no energy for %s/%s experts (it was profiled "
                               "without NVML); routers and the simulated GPU need measured energy",
                               path, tmoe_etype_name(t), tmoe_impl_name(r->cfg.impl));
    }
    /* the MoE layer's other ops are billed when the cost model has them */
    static const tmoe_op extra[] = {TMOE_OP_GATE_LINEAR, TMOE_OP_GATE_TOPK, TMOE_OP_PERMUTE,
                                    TMOE_OP_COMBINE, TMOE_OP_NORM, TMOE_OP_ATTN_QKV,
                                    TMOE_OP_ATTN_CORE, TMOE_OP_ATTN_OUT};
    for (size_t i = 0; i < sizeof extra / sizeof *extra; i++) {
        tmoe_cost_value v;
        tmoe_error e2 = {0};
        r->billed[extra[i]] = tmoe_cost_lookup(r->cm, extra[i], TMOE_ET_FP16, TMOE_IMPL_FUSED, 1.0,
                                               &v, &e2) == TMOE_OK;
    }
    return TMOE_OK;
}

/* The telemetry device this process drives: expert-parallel ranks their local rank's GPU
 * (one per rank on a host), else device 0. */
static int own_device(const run_ctx *r) {
    return r->ranks > 1 && r->ndev > 0 ? tmoe_ep_local_rank(r->cfg.ep) % r->ndev : 0;
}

static int init_telemetry(run_ctx *r, tmoe_error *err) {
    tmoe_telemetry_config tc = tmoe_telemetry_config_default();
    tc.kind = r->cfg.telemetry;
    tc.sim.seed = r->cfg.seed;
    tc.sim.n_devices = r->cfg.sim_devices > 0 ? r->cfg.sim_devices : 1;
    int rc = tmoe_telemetry_open(&tc, &r->tel, err);
    if (rc) return tmoe_error_prefix(err, rc, "starting telemetry");
    r->sim = tmoe_telemetry_sim(r->tel);
    tmoe_monitor_config mc = tmoe_monitor_config_default();
    mc.mode = r->sim ? TMOE_MONITOR_SYNC : TMOE_MONITOR_THREAD;
    rc = tmoe_monitor_create(r->tel, &mc, &r->mon, err);
    if (rc) return tmoe_error_prefix(err, rc, "starting the telemetry monitor");
    r->ndev = r->ndev_found = tmoe_telemetry_device_count(r->tel);
    if (r->ndev > TMOE_ROUTE_MAX_DEVICES) {
        /* the routers, placements and per-device columns hold at most this many */
        r->ndev = TMOE_ROUTE_MAX_DEVICES;
        tmoe_log(TMOE_LOG_WARN,
                 "telemetry: %d devices found; this run follows devices 0-%d only "
                 "(at most %d): devices %d-%d are not sampled into the rows (metadata.json: "
                 "telemetry.devices_ignored)",
                 r->ndev_found, r->ndev - 1, TMOE_ROUTE_MAX_DEVICES, r->ndev, r->ndev_found - 1);
    }
    /* the batch windows: every device, totals the own device's on an expert-parallel rank */
    tmoe_meter_config mtc = tmoe_meter_config_default();
    mtc.own_device = own_device(r);
    mtc.own_only = r->ranks > 1;
    rc = tmoe_meter_create(r->tel, r->mon, &mtc, &r->meter, err);
    if (rc) return tmoe_error_prefix(err, rc, "starting the telemetry meter");
    int E = r->blk_cfg.num_experts, nd = r->ndev > 0 ? r->ndev : 1;
    if (r->ranks > 1) {
        /* experts live on the ranks; each rank reports its own GPU (hw_snapshot) */
        nd = r->ranks;
        if (r->ranks > TMOE_ROUTE_MAX_DEVICES)
            return tmoe_errorf(err, TMOE_ENOTSUP, "%d ranks: multi_gpu_aware follows at most %d",
                               r->ranks, TMOE_ROUTE_MAX_DEVICES);
    }
    rc = r->cfg.placement_file ? tmoe_placement_load(r->cfg.placement_file, E, nd, &r->placement, err)
                               : tmoe_placement_round_robin(E, nd, &r->placement, err);
    if (rc) return tmoe_error_prefix(err, rc, "expert placement");
    for (int e = 0; e < E; e++) r->expert_dev[e] = r->placement.device[e];
    tmoe_error e2 = {0};
    snprintf(r->dev_driver, sizeof r->dev_driver, "%s", r->sim ? "simulated" : "unknown");
    if (tmoe_telemetry_device_info(r->tel, 0, &r->dev_info, &e2))
        tmoe_log(TMOE_LOG_WARN, "device info unavailable: %s", e2.msg);
    return TMOE_OK;
}

static int init_model(run_ctx *r, tmoe_error *err) {
    r->max_tokens = tmoe_workload_max_tokens(r->cfg.batch_size, r->cfg.block.seq_len);
    int rc = tmoe_block_create(&r->blk_cfg, &r->blk, err);
    if (rc) return tmoe_error_prefix(err, rc, "building the model");
    tmoe_engine_config ec = tmoe_engine_config_default();
    ec.backend = r->cfg.backend;
    ec.device_id = r->cfg.device_id;
    ec.max_tokens = r->max_tokens;
    ec.impl = r->cfg.impl;
    ec.ep = r->cfg.ep;
    ec.placement = r->cfg.ep ? &r->placement : NULL;
    rc = tmoe_engine_create(r->blk, &ec, &r->eng, err);
    if (rc) return tmoe_error_prefix(err, rc, "starting the engine");
    size_t T = (size_t)r->max_tokens, D = (size_t)r->blk_cfg.d_model;
    size_t E = (size_t)r->blk_cfg.num_experts, k = (size_t)r->blk_cfg.top_k;
    r->x = tmoe_malloc(sizeof(float) * T * D, err);
    r->y = tmoe_malloc(sizeof(float) * T * D, err);
    r->y0 = tmoe_malloc(sizeof(float) * T * D, err);
    r->logits = tmoe_malloc(sizeof(float) * T * E, err);
    r->w = tmoe_malloc(sizeof(float) * T * k, err);
    r->w0 = tmoe_malloc(sizeof(float) * T * k, err);
    r->idx = tmoe_malloc(sizeof(int32_t) * T * k, err);
    r->idx0 = tmoe_malloc(sizeof(int32_t) * T * k, err);
    r->bias = tmoe_malloc(sizeof(float) * E, err);
    r->samples = tmoe_malloc(sizeof(tmoe_sample) * RUN_MAX_SAMPLES, err);
    if (!r->x || !r->y || !r->y0 || !r->logits || !r->w || !r->w0 || !r->idx || !r->idx0 ||
        !r->bias || !r->samples)
        return TMOE_ENOMEM;
    for (int w = 0; w < TMOE_WL_COUNT; w++)
        r->wl[w] = tmoe_workload_make((tmoe_workload_kind)w, r->cfg.batch_size, r->cfg.block.seq_len,
                                      r->cfg.seed + (uint64_t)r->rank); /* each rank its tokens */
    /* the routers' expert costs: the cost model tabulated at every token count */
    rc = tmoe_cost_table_create(r->cm, r->blk->types, r->blk_cfg.num_experts, r->cfg.impl,
                                r->max_tokens, &r->cost_tab, err);
    if (rc) return rc;
    r->provider = tmoe_cost_table_provider(r->cost_tab);
    return TMOE_OK;
}

static void stop_updates(run_ctx *r);

static void free_ctx(run_ctx *r) {
    stop_updates(r);
    tmoe_router_free(r->router);
    tmoe_engine_free(r->eng);
    tmoe_block_free(r->blk);
    tmoe_meter_free(r->meter);
    tmoe_monitor_free(r->mon);
    tmoe_telemetry_free(r->tel);
    tmoe_cost_free(r->cm);
    tmoe_cost_table_free(r->cost_tab);
    free(r->x);
    free(r->y);
    free(r->y0);
    free(r->logits);
    free(r->w);
    free(r->w0);
    free(r->idx);
    free(r->idx0);
    free(r->bias);
    free(r->samples);
}

/* ---- hardware side of one batch ------------------------------------------------------ */

/* Open-loop arrivals: wait (idle) until the next batch arrives. */
static void wait_for_arrival(run_ctx *r, int tokens) {
    if (r->cfg.arrival_rate <= 0.0) return;
    double u = tmoe_rng_uniform(&r->arrivals);
    r->next_arrival_s += -log(1.0 - u) * tokens / r->cfg.arrival_rate;
    double now = now_s(r);
    if (now >= r->next_arrival_s) return; /* the device is behind: no idle time */
    /* simulated time advances; on NVML the thread sleeps, until a stop request */
    for (double left = r->next_arrival_s - now; (left = tmoe_meter_wait(r->meter, left)) > 0.0 &&
                                                !stop_requested;) {
    }
}

/* Bill the batch's work to the simulated GPU(s): each expert's op sequence at its token
 * count from the cost model, on the device the placement puts the expert on, plus the
 * MoE layer's other ops the cost model has, on device 0. Returns the step latency (ms):
 * the devices work in parallel, each serially. Expert-parallel: the simulated GPU is this
 * rank's (device 0), billed for this rank's experts at the rows they ran (every rank's
 * copies); other ranks' GPUs are their own processes' to bill. */
static int sim_bill(run_ctx *r, const tmoe_moe_metrics *m, int T, int moe_only, batch_hw *hw,
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
        tmoe_op seq[4];
        int nseq = tmoe_expert_op_sequence(r->blk->types[e], r->cfg.impl, seq);
        int dev = ep ? 0 : r->placement.device[e];
        for (int i = 0; i < nseq; i++) {
            tmoe_cost_value v;
            int rc = tmoe_cost_lookup(r->cm, seq[i], r->blk->types[e], r->cfg.impl, n, &v, err);
            if (rc) return rc;
            busy_ms[dev] += v.latency_ms;
            dyn_j[dev] += v.energy_dynamic_j;
            hw->expert_ms[e] += v.latency_ms;
            hw->op_ms[seq[i]] = isnan(hw->op_ms[seq[i]]) ? v.latency_ms : hw->op_ms[seq[i]] + v.latency_ms;
        }
    }
    double lat = 0.0;
    for (int d = 0; d < nd; d++) {
        if (busy_ms[d] <= 0.0) continue;
        /* the cost model's dynamic energy is memory-bound work for experts (weights streamed) */
        int rc = tmoe_meter_bill(r->meter, d, busy_ms[d] / 1e3, fmax(dyn_j[d], 0.0), 0.85);
        if (rc) return tmoe_errorf(err, rc, "device %d: %.3g ms of work could not be billed", d,
                                   busy_ms[d]);
        if (busy_ms[d] > lat) lat = busy_ms[d];
    }
    tmoe_meter_sync(r->meter);
    hw->latency_ms = lat;
    return TMOE_OK;
}

/* Fill hw from the meter's reading of the batch's window: per device energy, mean power and
 * end temperature; for the batch the totals (the meter's rules: sums over the devices, or
 * on an expert-parallel rank its own GPU's, so that the ranks' rows add up to the host). */
static void hw_from_reading(run_ctx *r, const tmoe_meter_reading *rd, batch_hw *hw) {
    const tmoe_meter_values *t = &rd->total;
    hw->period_s = rd->period_s;
    hw->energy_j = t->energy_j;
    hw->method = t->method;
    hw->power_avg_w = t->power_avg_w;
    hw->power_peak_w = t->power_peak_w;
    hw->temp_start_c = t->gpu_temp_start_c;
    hw->temp_end_c = t->gpu_temp_end_c;
    hw->temp_peak_c = t->gpu_temp_peak_c;
    hw->mem_temp_peak_c = t->mem_temp_peak_c;
    hw->sm_clock_mhz = t->sm_clock_mhz;
    hw->gpu_util_pct = t->gpu_util_pct;
    hw->throttle = t->throttle;
    for (int d = 0; d < r->ndev; d++) {
        hw->dev_energy_j[d] = rd->dev[d].energy_j;
        hw->dev_power_avg_w[d] = rd->dev[d].power_avg_w;
        hw->dev_temp_end_c[d] = rd->dev[d].gpu_temp_end_c;
    }
    if (t->sm_clock_max_mhz > r->max_sm_clock) r->max_sm_clock = t->sm_clock_max_mhz;
}

/* Hardware snapshot for the router from the latest samples. Expert-parallel: this rank's
 * own GPU (local rank's device) gives the single-device fields, and every rank's own GPU
 * state reaches every rank (an allgather per batch, also across hosts): dev_* by rank. */
static tmoe_hw_state hw_snapshot(run_ctx *r, double horizon_s) {
    tmoe_hw_state h = tmoe_hw_state_unknown();
    tmoe_sample s;
    int own = own_device(r);
    h.num_devices = r->ndev;
    for (int d = 0; d < r->ndev; d++) {
        if (tmoe_monitor_latest(r->mon, d, &s) != TMOE_OK) continue;
        double p = (s.valid & TMOE_F_POWER_AVG) ? s.power_avg_w : NAN;
        h.dev_temp_c[d] = (s.valid & TMOE_F_GPU_TEMP) ? s.gpu_temp_c : NAN;
        h.dev_power_w[d] = p;
        h.dev_util[d] = (s.valid & TMOE_F_GPU_UTIL) ? s.gpu_util_pct / 100.0 : NAN;
        h.dev_queue[d] = tmoe_meter_backlog_s(r->meter, d) * 1e3; /* NAN on NVML */
        if (d != own) continue;
        h.gpu_temp_c = h.dev_temp_c[d];
        h.mem_temp_c = (s.valid & TMOE_F_MEM_TEMP) ? s.mem_temp_c : NAN;
        h.power_w = p;
        h.gpu_util = h.dev_util[d];
        if ((s.valid & TMOE_F_SM_CLOCK) && r->max_sm_clock > 0.0)
            h.sm_clock_ratio = s.sm_clock_mhz / r->max_sm_clock;
        if (s.valid & TMOE_F_THROTTLE)
            h.throttled = (s.throttle_reasons & (TMOE_THROTTLE_SW_POWER_CAP | TMOE_THROTTLE_HW_SLOWDOWN |
                                                 TMOE_THROTTLE_SW_THERMAL | TMOE_THROTTLE_HW_THERMAL |
                                                 TMOE_THROTTLE_HW_POWER_BRAKE)) != 0;
        h.pred_horizon_s = horizon_s;
        h.pred_temp_c = tmoe_monitor_predict_thermal(r->mon, horizon_s, isnan(p) ? 0.0 : p);
    }
    if (r->ranks > 1) {
        double mine[4] = {own < r->ndev ? h.dev_temp_c[own] : NAN,
                          own < r->ndev ? h.dev_power_w[own] : NAN,
                          own < r->ndev ? h.dev_util[own] : NAN,
                          own < r->ndev ? h.dev_queue[own] : NAN};
        double all[4 * TMOE_ROUTE_MAX_DEVICES];
        tmoe_error e2 = {0};
        int n = r->ranks < TMOE_ROUTE_MAX_DEVICES ? r->ranks : TMOE_ROUTE_MAX_DEVICES;
        if (tmoe_ep_allgather(r->cfg.ep, mine, sizeof mine, all, &e2) == TMOE_OK) {
            h.num_devices = n;
            for (int q = 0; q < n; q++) {
                h.dev_temp_c[q] = all[4 * q];
                h.dev_power_w[q] = all[4 * q + 1];
                h.dev_util[q] = all[4 * q + 2];
                h.dev_queue[q] = all[4 * q + 3];
            }
        } else {
            tmoe_log(TMOE_LOG_WARN, "device state of the other ranks: %s", e2.msg);
        }
    }
    return h;
}

/* ---- one batch ---------------------------------------------------------------------- */

/* A logged batch measured without its telemetry (a device lost, or no energy reading for a
 * device in the window) is a telemetry fault: counted, the first one kept with its reason,
 * so that the run cannot end "complete" on rows of nan. */
static void check_telemetry(run_ctx *r, const run_combo *c, int b, const batch_hw *hw) {
    char why[256] = "";
    for (int d = 0; d < r->ndev && !why[0]; d++) {
        tmoe_device_info info;
        tmoe_error e2 = {0};
        if (tmoe_monitor_device_lost(r->mon, d))
            snprintf(why, sizeof why, "device %d (%s) was lost (NVML_ERROR_GPU_IS_LOST)", d,
                     tmoe_telemetry_device_info(r->tel, d, &info, &e2) == TMOE_OK ? info.uuid
                                                                                  : "?");
        else if (isnan(hw->dev_energy_j[d]))
            snprintf(why, sizeof why,
                     "device %d gave no energy reading in the batch's window "
                     "(no power sample, no counter step)",
                     d);
    }
    if (!why[0] && isnan(hw->energy_j)) snprintf(why, sizeof why, "the batch's energy is unknown");
    if (!why[0]) return;
    if (r->tel_faults++ == 0) {
        r->fault_combo = *c;
        r->fault_batch = b;
        snprintf(r->fault_reason, sizeof r->fault_reason, "%s", why);
        tmoe_log(TMOE_LOG_ERROR,
                 "telemetry fault at repeat %d %s %s batch %d: %s; its row and "
                 "every faulted one after it have nan energy (the run will not end complete)",
                 c->repeat, tmoe_workload_name(c->wl), tmoe_route_strategy_name(c->st), b, why);
    }
}

/* Fraction of chosen (token, expert) pairs shared by two selections (order ignored). */
static double topk_agreement(const int32_t *a, const int32_t *b, int T, int k) {
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

static void trace_batch(run_ctx *r, tmoe_trace *tr, const batch_hw *hw, double t_dev_end,
                        double host_ts_us, double router_ms, int b) {
    /* device track: the ops of the step laid end to end, ending when the batch ended */
    double total = 0.0;
    for (int o = 0; o < TMOE_OP_COUNT; o++)
        if (!isnan(hw->op_ms[o])) total += hw->op_ms[o];
    double ts = t_dev_end * 1e6 - total * 1e3;
    static const tmoe_op order[] = {TMOE_OP_NORM, TMOE_OP_ATTN_QKV, TMOE_OP_ATTN_CORE,
                                    TMOE_OP_ATTN_OUT, TMOE_OP_GATE_LINEAR, TMOE_OP_GATE_TOPK,
                                    TMOE_OP_PERMUTE, TMOE_OP_DEQUANT_UNPACK, TMOE_OP_LINEAR_FC1,
                                    TMOE_OP_RELU, TMOE_OP_LINEAR_FC2, TMOE_OP_COMBINE};
    char args[128];
    snprintf(args, sizeof args, "{\"batch\":%d}", b);
    for (size_t i = 0; i < sizeof order / sizeof *order; i++) {
        double ms = hw->op_ms[order[i]];
        if (isnan(ms)) continue;
        tmoe_trace_span(tr, tmoe_op_name(order[i]), "op", 1, 1, ts, ms * 1e3, args);
        ts += ms * 1e3;
    }
    tmoe_trace_span(tr, "router", "host", 2, 1, host_ts_us, router_ms * 1e3, args);
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
        if (s->valid & TMOE_F_POWER_AVG) tmoe_trace_counter(tr, "power_w", 1, us, "avg", s->power_avg_w);
        if (s->valid & TMOE_F_POWER_INSTANT)
            tmoe_trace_counter(tr, "power_instant_w", 1, us, "instant", s->power_instant_w);
        if (s->valid & TMOE_F_GPU_TEMP) tmoe_trace_counter(tr, "gpu_temp_c", 1, us, "gpu", s->gpu_temp_c);
        if (s->valid & TMOE_F_MEM_TEMP) tmoe_trace_counter(tr, "mem_temp_c", 1, us, "hbm", s->mem_temp_c);
    }
}

static void *update_worker(void *arg) {
    run_ctx *r = arg;
    pthread_mutex_lock(&r->upd_mu);
    for (;;) {
        while (!r->upd_busy && !r->upd_quit) pthread_cond_wait(&r->upd_cv, &r->upd_mu);
        if (r->upd_quit) break;
        pthread_mutex_unlock(&r->upd_mu);
        tmoe_error e = {0};
        tmoe_ttha_record rec;
        int rc = tmoe_router_update(r->router, &r->upd_obs, &rec, &e);
        pthread_mutex_lock(&r->upd_mu);
        r->upd_rec = rec;
        r->upd_rc = rc;
        r->upd_err = e;
        r->upd_busy = 0;
        pthread_cond_broadcast(&r->upd_cv);
    }
    pthread_mutex_unlock(&r->upd_mu);
    return NULL;
}

static int start_updates(run_ctx *r, tmoe_error *err) {
    if (pthread_mutex_init(&r->upd_mu, NULL) || pthread_cond_init(&r->upd_cv, NULL))
        return tmoe_errorf(err, TMOE_ENOMEM, "cannot create the router update lock");
    if (pthread_create(&r->upd_thread, NULL, update_worker, r))
        return tmoe_errorf(err, TMOE_ENOMEM, "cannot start the router update thread");
    r->upd_started = 1;
    return TMOE_OK;
}

static void stop_updates(run_ctx *r) {
    if (!r->upd_started) return;
    pthread_mutex_lock(&r->upd_mu);
    r->upd_quit = 1;
    pthread_cond_broadcast(&r->upd_cv);
    pthread_mutex_unlock(&r->upd_mu);
    pthread_join(r->upd_thread, NULL);
    pthread_cond_destroy(&r->upd_cv);
    pthread_mutex_destroy(&r->upd_mu);
    r->upd_started = 0;
}

/* Wait for the router update in flight; then write the row it completes. */
static int finish_update(run_ctx *r, tmoe_error *err) {
    if (!r->upd_started) return TMOE_OK;
    int64_t w0 = tmoe_now_ns();
    pthread_mutex_lock(&r->upd_mu);
    while (r->upd_busy) pthread_cond_wait(&r->upd_cv, &r->upd_mu);
    int rc = r->upd_rc;
    tmoe_ttha_record rec = r->upd_rec;
    if (rc && err) *err = r->upd_err;
    r->upd_rc = 0;
    pthread_mutex_unlock(&r->upd_mu);
    double wait_ms = (double)(tmoe_now_ns() - w0) / 1e6;
    if (rc) return tmoe_error_prefix(err, rc, "router update");
    if (!r->row_pending) return TMOE_OK;
    r->row_pending = 0;
    tmoe_runlog_row *row = &r->row;
    tmoe_runlog_row_dbl(row, TMOE_RL_ROUTER_OVERHEAD_MS, r->row_route_ms + wait_ms);
    tmoe_runlog_row_dbl(row, TMOE_RL_TTHA_POWER_LOSS, rec.power_loss);
    tmoe_runlog_row_dbl(row, TMOE_RL_TTHA_TEMP_LOSS, rec.temp_loss);
    tmoe_runlog_row_dbl(row, TMOE_RL_TTHA_LATENCY_PENALTY, rec.latency_penalty);
    tmoe_runlog_row_dbl(row, TMOE_RL_TTHA_THROUGHPUT_BONUS, rec.throughput_bonus);
    tmoe_runlog_row_dbl(row, TMOE_RL_TTHA_FIDELITY, rec.fidelity);
    tmoe_runlog_row_dbl(row, TMOE_RL_TTHA_TOTAL_LOSS, rec.total);
    tmoe_runlog_row_dbl(row, TMOE_RL_TTHA_LR, rec.lr);
    return tmoe_runlog_write(r->log, row, err);
}

static void post_update(run_ctx *r, const tmoe_route_obs *obs) {
    pthread_mutex_lock(&r->upd_mu);
    r->upd_obs = *obs;
    r->upd_busy = 1;
    pthread_cond_broadcast(&r->upd_cv);
    pthread_mutex_unlock(&r->upd_mu);
}

static int run_batch(run_ctx *r, const run_combo *c, int b, int logged, tmoe_trace *tr,
                     tmoe_error *err) {
    const tmoe_workload *w = &r->wl[c->wl];
    int T = w->tokens, D = r->blk_cfg.d_model, E = r->blk_cfg.num_experts, k = r->blk_cfg.top_k;
    tmoe_workload_batch(w, r->blk, b % r->cfg.num_samples, r->x);

    tmoe_meter_window win;
    tmoe_meter_begin(r->meter, &win);
    wait_for_arrival(r, T);

    int rc = tmoe_engine_begin(r->eng, r->x, T, r->cfg.moe_only, err);
    if (!rc) rc = tmoe_engine_logits(r->eng, r->logits, err);
    if (rc) return rc;
    if ((rc = finish_update(r, err))) return rc; /* the previous batch's update and row */
    tmoe_hw_state hs = hw_snapshot(r, r->cfg.router.horizon_s);
    /* the unbiased routing of the batch, computed once: the router's current load
     * (kernel_aware_ttha) and the fidelity reference below */
    tmoe_gate_topk(r->logits, NULL, T, E, k, r->blk_cfg.renormalize, 0, r->idx0, r->w0);
    int64_t h0 = tmoe_now_ns();
    double pred_e = NAN;
    rc = tmoe_router_route(r->router, r->logits, T, r->idx0, &hs, r->bias, NULL, NULL, err);
    if (rc) return tmoe_error_prefix(err, rc, "router %s", tmoe_route_strategy_name(c->st));
    double router_ms = (double)(tmoe_now_ns() - h0) / 1e6;
    double host_ts_us = (double)(h0 - r->wall0_ns) / 1e3;

    tmoe_moe_metrics m = {.topk_idx = r->idx, .topk_w = r->w};
    const float *bias = c->st == TMOE_ROUTE_BASELINE && !r->cfg.load_balancer ? NULL : r->bias;
    rc = tmoe_engine_moe(r->eng, bias, &m, err);
    if (!rc) rc = tmoe_engine_output(r->eng, r->y, err);
    if (rc) return rc;
    /* the selection that ran goes back to the router: load balancer and predicted energy */
    int64_t h1 = tmoe_now_ns();
    rc = tmoe_router_observe(r->router, r->idx, r->w, T, &pred_e, err);
    if (rc) return tmoe_error_prefix(err, rc, "router %s", tmoe_route_strategy_name(c->st));
    double observe_ms = (double)(tmoe_now_ns() - h1) / 1e6;
    batch_hw hw;
    if (r->sim) {
        rc = sim_bill(r, &m, T, r->cfg.moe_only, &hw, err);
        if (rc) return tmoe_error_prefix(err, rc, "billing the batch to the simulated GPU");
    } else {
        hw.latency_ms = m.step_ms;
        memcpy(hw.op_ms, m.op_ms, sizeof hw.op_ms);
        memcpy(hw.expert_ms, m.expert_ms, sizeof hw.expert_ms);
    }
    double t_end = now_s(r);
    tmoe_meter_reading rd;
    if ((rc = tmoe_meter_end(r->meter, &win, &rd, err))) return rc;
    hw_from_reading(r, &rd, &hw);
    double period = hw.period_s > 0.0 ? hw.period_s : hw.latency_ms / 1e3;
    r->last_latency_ms = hw.latency_ms;

    /* fidelity against the unbiased routing of the same batch */
    double agree = topk_agreement(r->idx, r->idx0, T, k), relerr = NAN;
    if (r->cfg.fidelity_every > 0 && b % r->cfg.fidelity_every == 0) {
        if (bias == NULL) {
            relerr = 0.0; /* the unbiased step is the one that ran */
        } else {
            rc = tmoe_engine_moe(r->eng, NULL, NULL, err);
            if (!rc) rc = tmoe_engine_output(r->eng, r->y0, err);
            if (rc) return rc;
            relerr = rel_error(r->y, r->y0, (size_t)T * D);
        }
    }

    tmoe_route_obs obs = tmoe_route_obs_unknown();
    obs.power_w = hw.power_avg_w;
    obs.temp_c = hw.temp_end_c;
    obs.latency_ms = hw.latency_ms;
    obs.throughput = T / period;
    obs.period_s = period;
    obs.dt_s = period;
    post_update(r, &obs); /* runs while the next batch is prepared */
    r->prev_end_s = now_s(r);

    if (tr) trace_batch(r, tr, &hw, t_end, host_ts_us, router_ms, b);
    if (!logged) return TMOE_OK;
    check_telemetry(r, c, b, &hw);
    tmoe_runlog_row *row = &r->row;
    tmoe_runlog_row_clear(row);
    tmoe_runlog_row_dbl(row, TMOE_RL_TIME, t_end);
    tmoe_runlog_row_str(row, TMOE_RL_RUN_ID, r->run_id);
    tmoe_runlog_row_int(row, TMOE_RL_REPEAT, c->repeat);
    tmoe_runlog_row_str(row, TMOE_RL_WORKLOAD, tmoe_workload_name(c->wl));
    tmoe_runlog_row_str(row, TMOE_RL_STRATEGY, tmoe_route_strategy_name(c->st));
    tmoe_runlog_row_str(row, TMOE_RL_EXPERT_TYPE,
                        r->blk_cfg.expert_types ? "mixed" : tmoe_etype_name(r->blk_cfg.expert_type));
    tmoe_runlog_row_str(row, TMOE_RL_IMPL, tmoe_impl_name(r->cfg.impl));
    tmoe_runlog_row_int(row, TMOE_RL_BATCH_IDX, b);
    tmoe_runlog_row_int(row, TMOE_RL_TOKENS, T);
    tmoe_runlog_row_dbl(row, TMOE_RL_LATENCY_MS, hw.latency_ms);
    tmoe_runlog_row_dbl(row, TMOE_RL_THROUGHPUT, T / period);
    tmoe_runlog_row_dbl(row, TMOE_RL_ENERGY_J, hw.energy_j);
    tmoe_runlog_row_dbl(row, TMOE_RL_ENERGY_J_PER_TOKEN, hw.energy_j / T);
    /* the log's names: the latest power times the window counts as integrated */
    tmoe_energy_method how = hw.method == TMOE_ENERGY_LATEST_POWER ? TMOE_ENERGY_INTEGRATED : hw.method;
    tmoe_runlog_row_str(row, TMOE_RL_ENERGY_METHOD, tmoe_energy_method_name(how));
    tmoe_runlog_row_dbl(row, TMOE_RL_POWER_AVG_W, hw.power_avg_w);
    tmoe_runlog_row_dbl(row, TMOE_RL_POWER_PEAK_W, hw.power_peak_w);
    tmoe_runlog_row_dbl(row, TMOE_RL_GPU_TEMP_START_C, hw.temp_start_c);
    tmoe_runlog_row_dbl(row, TMOE_RL_GPU_TEMP_END_C, hw.temp_end_c);
    tmoe_runlog_row_dbl(row, TMOE_RL_GPU_TEMP_PEAK_C, hw.temp_peak_c);
    tmoe_runlog_row_dbl(row, TMOE_RL_MEM_TEMP_C, hw.mem_temp_peak_c);
    tmoe_runlog_row_dbl(row, TMOE_RL_SM_CLOCK_MHZ, hw.sm_clock_mhz);
    tmoe_runlog_row_int(row, TMOE_RL_THROTTLE_REASONS, (long long)hw.throttle);
    tmoe_runlog_row_dbl(row, TMOE_RL_GPU_UTIL_PCT, hw.gpu_util_pct);
    tmoe_runlog_row_ints(row, TMOE_RL_EXPERT_USAGE_COUNTS, m.tokens_per_expert, E);
    tmoe_runlog_row_dbls(row, TMOE_RL_EXPERT_TIME_MS, hw.expert_ms, E);
    tmoe_runlog_row_dbl(row, TMOE_RL_PREDICTED_ENERGY_J, pred_e);
    double bd[TMOE_MAX_EXPERTS];
    for (int e = 0; e < E; e++) bd[e] = bias ? r->bias[e] : 0.0;
    tmoe_runlog_row_dbls(row, TMOE_RL_BIASES, bd, E);
    tmoe_runlog_row_dbl(row, TMOE_RL_TOPK_AGREEMENT, agree);
    tmoe_runlog_row_dbl(row, TMOE_RL_OUTPUT_REL_ERROR, relerr);
    tmoe_runlog_row_str(row, TMOE_RL_TELEMETRY_SOURCE, tmoe_telemetry_source_name(r->tel));
    tmoe_runlog_row_dbls(row, TMOE_RL_DEVICE_ENERGY_J, hw.dev_energy_j, r->ndev);
    tmoe_runlog_row_dbls(row, TMOE_RL_DEVICE_POWER_AVG_W, hw.dev_power_avg_w, r->ndev);
    tmoe_runlog_row_dbls(row, TMOE_RL_DEVICE_TEMP_END_C, hw.dev_temp_end_c, r->ndev);
    int32_t dev_tok[TMOE_ROUTE_MAX_DEVICES] = {0};
    for (int e = 0; e < E; e++) dev_tok[r->placement.device[e]] += m.tokens_per_expert[e];
    tmoe_runlog_row_ints(row, TMOE_RL_DEVICE_TOKENS, dev_tok, r->placement.num_devices);
    r->row_pending = 1; /* written by finish_update with the update's loss terms */
    r->row_route_ms = router_ms + observe_ms;
    return TMOE_OK;
}

/* ---- combinations ------------------------------------------------------------------- */

/* Energy to move one token copy to another rank and back, from the measured all-to-all
 * bandwidth: bytes per copy / bandwidth = seconds the link is busy, times the power the GPUs
 * draw now (the latest samples, summed over the local devices). fallback when unmeasured. */
static double link_j_per_copy(run_ctx *r, double fallback) {
    tmoe_ep_stats es;
    tmoe_error e2 = {0};
    if (tmoe_engine_ep_stats(r->eng, &es, &e2) || !(es.link_gbps > 0.0)) return fallback;
    double p = 0.0;
    for (int d = 0; d < r->ndev; d++) {
        tmoe_sample s;
        if (tmoe_monitor_latest(r->mon, d, &s) == TMOE_OK && (s.valid & TMOE_F_POWER_AVG))
            p += s.power_avg_w;
    }
    if (!(p > 0.0)) return fallback;
    double j = es.bytes_per_copy / (es.link_gbps * 1e9) * p;
    tmoe_log(TMOE_LOG_INFO, "link cost: %.0f bytes per copy at %.1f GB/s and %.0f W: %.3g J",
             es.bytes_per_copy, es.link_gbps, p, j);
    return j;
}

/* With several ranks every rank must stop after the same batch (the next step is a
 * collective): the ranks agree on the stop flag. */
static int stop_now(run_ctx *r) {
    if (r->ranks <= 1) return stop_requested != 0;
    double v = stop_requested ? 1.0 : 0.0;
    tmoe_error e2 = {0};
    if (tmoe_ep_allreduce_max(r->cfg.ep, &v, &e2) == TMOE_OK && v > 0.0) stop_requested = 1;
    return stop_requested != 0;
}

static int make_router(run_ctx *r, tmoe_route_strategy st, tmoe_workload_kind wl, uint64_t seed,
                       tmoe_error *err) {
    int rc0 = finish_update(r, err); /* the old router may still be learning */
    if (rc0) return rc0;
    tmoe_router_free(r->router);
    r->router = NULL;
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
        rc.link_j_per_token = link_j_per_copy(r, rc.link_j_per_token);
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
        /* workload profile: the gate logits of the workload's first samples */
        const tmoe_workload *w = &r->wl[wl];
        int nprof = r->cfg.num_samples < 4 ? r->cfg.num_samples : 4, E = r->blk_cfg.num_experts;
        float *prof = tmoe_malloc(sizeof(float) * (size_t)nprof * w->tokens * E, err);
        if (!prof) return TMOE_ENOMEM;
        for (int i = 0; i < nprof && !c; i++) {
            tmoe_workload_batch(w, r->blk, i, r->x);
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
static int calibrate(run_ctx *r, tmoe_error *err) {
    for (int wl = 0; wl < TMOE_WL_COUNT; wl++) {
        r->base_latency_ms[wl] = r->base_throughput[wl] = NAN;
        if (!r->cfg.workloads[wl]) continue;
        int rc = make_router(r, TMOE_ROUTE_BASELINE, (tmoe_workload_kind)wl, r->cfg.seed, err);
        if (rc) return rc;
        run_combo c = {.repeat = -1, .wl = (tmoe_workload_kind)wl, .st = TMOE_ROUTE_BASELINE};
        int n = 4;
        double lat = 0.0, per = 0.0;
        for (int b = 0; b < n; b++) {
            double t0 = now_s(r);
            rc = run_batch(r, &c, b, 0, NULL, err);
            if (rc) return tmoe_error_prefix(err, rc, "baseline calibration of %s",
                                             tmoe_workload_name((tmoe_workload_kind)wl));
            lat += r->last_latency_ms;
            per += now_s(r) - t0;
        }
        r->base_latency_ms[wl] = lat / n;
        r->base_throughput[wl] = r->wl[wl].tokens * n / per;
    }
    return TMOE_OK;
}

/* Rest until the GPU is back within 1 C of the run's starting temperature, or cooldown_s. */
static void cool_down(run_ctx *r) {
    if (r->cfg.cooldown_s <= 0.0 || isnan(r->start_temp_c)) return;
    for (double t = 0.0; t < r->cfg.cooldown_s && !stop_requested; t += 0.5) {
        tmoe_sample s;
        if (tmoe_monitor_latest(r->mon, own_device(r), &s) == TMOE_OK &&
            (s.valid & TMOE_F_GPU_TEMP) && s.gpu_temp_c <= r->start_temp_c + 1.0)
            return;
        tmoe_meter_wait(r->meter, 0.5);
    }
}

static void progress(run_ctx *r, int ci, int nc, const run_combo *c, int b, int nb) {
    if (r->cfg.quiet || !r->out) return;
    double el = (double)(tmoe_now_ns() - r->wall0_ns) / 1e9;
    double eta = r->batches_done > 0 ? el / r->batches_done * (r->batches_total - r->batches_done) : NAN;
    tmoe_sample s;
    double p = NAN, t = NAN;
    if (tmoe_monitor_latest(r->mon, 0, &s) == TMOE_OK) {
        p = (s.valid & TMOE_F_POWER_AVG) ? s.power_avg_w : NAN;
        t = (s.valid & TMOE_F_GPU_TEMP) ? s.gpu_temp_c : NAN;
    }
    const char *src = r->sim ? "sim" : "nvml";
    if (r->cfg.progress) {
        fprintf(stderr, "\r[%d/%d] r%d %-15s %-21s batch %4d/%-4d ETA %3.0fs  %s %5.0f W %4.1f C ",
                ci + 1, nc, c->repeat, tmoe_workload_name(c->wl), tmoe_route_strategy_name(c->st),
                b, nb, eta, src, p, t);
        fflush(stderr);
    } else if (b == nb) {
        fprintf(stderr, "[%d/%d] repeat %d %s %s: %d batches (%s %.0f W, %.1f C; %.0f s elapsed)\n",
                ci + 1, nc, c->repeat, tmoe_workload_name(c->wl), tmoe_route_strategy_name(c->st),
                nb, src, p, t, el);
    }
}

static int combo_done(const tmoe_runlog_done *d, int nd, const run_combo *c, int rows) {
    for (int i = 0; i < nd; i++)
        if (d[i].repeat == c->repeat && !strcmp(d[i].workload, tmoe_workload_name(c->wl)) &&
            !strcmp(d[i].strategy, tmoe_route_strategy_name(c->st)))
            return d[i].rows == rows;
    return 0;
}

static int run_combo_batches(run_ctx *r, const run_combo *c, int ci, int nc, tmoe_error *err) {
    uint64_t seed = r->cfg.seed ^ ((uint64_t)(c->repeat + 1) << 40) ^ ((uint64_t)c->wl << 20) ^ (uint64_t)c->st;
    int rc = make_router(r, c->st, c->wl, seed, err);
    if (rc) return rc;
    int nb = r->cfg.num_samples * r->cfg.epochs;
    /* the same arrival times for every strategy of a (repeat, workload): common random
     * numbers, so strategies are compared on identical load */
    tmoe_rng_seed_stream(&r->arrivals, r->cfg.seed, 0xa771 ^ ((uint64_t)(c->repeat + 1) << 8) ^ (uint64_t)c->wl);
    r->next_arrival_s = now_s(r);
    for (int b = 0; b < r->cfg.warmup_batches; b++)
        if ((rc = run_batch(r, c, b, 0, NULL, err))) return rc;
    tmoe_trace *tr = NULL;
    if (r->cfg.trace_batches > 0) {
        char path[4300];
        snprintf(path, sizeof path, "%s/traces/r%d_%s_%s.json", r->dir, c->repeat,
                 tmoe_workload_name(c->wl), tmoe_route_strategy_name(c->st));
        rc = tmoe_trace_open(path, &tr, err);
        if (rc) return rc;
        tmoe_trace_name(tr, 1, -1, r->sim ? "device (simulated H100 clock)" : "device");
        r->trace_last_ns = INT64_MIN;
        tmoe_trace_name(tr, 2, -1, "host");
    }
    for (int b = 0; b < nb; b++) {
        rc = run_batch(r, c, b, 1, b < r->cfg.trace_batches ? tr : NULL, err);
        if (rc) break;
        r->batches_done++;
        if (b + 1 == r->cfg.trace_batches && tr) {
            rc = tmoe_trace_close(tr, err);
            tr = NULL;
            if (rc) break;
        }
        if (r->cfg.progress || b + 1 == nb) progress(r, ci, nc, c, b + 1, nb);
        if (stop_now(r)) break;
    }
    if (!rc) rc = finish_update(r, err); /* the last batch's row */
    if (tr) {
        tmoe_error e2 = {0};
        int rc2 = tmoe_trace_close(tr, &e2);
        if (!rc && rc2) rc = tmoe_errorf(err, rc2, "%s", e2.msg);
    }
    if (!rc && c->st == TMOE_ROUTE_KERNEL_AWARE_TTHA) {
        char path[4300];
        snprintf(path, sizeof path, "%s/ttha_r%d_%s.bin", r->dir, c->repeat, tmoe_workload_name(c->wl));
        rc = tmoe_router_ttha_save(r->router, path, err);
    }
    return rc;
}

/* ---- the run ------------------------------------------------------------------------ */

/* Take the run directory for this process: an exclusive flock on DIR/thermoe.lock, which
 * then says who holds it ("pid N on host H"). Held until the run ends (the descriptor is
 * closed); a second process is refused with the holder's line instead of writing the same
 * files. The lock file is left in place: removing it would let a third process lock a new
 * file while the second still holds the old one. */
static int lock_run_dir(run_ctx *r, tmoe_error *err) {
    char path[4300];
    snprintf(path, sizeof path, "%s/%s", r->dir, RUN_LOCK_FILE);
    int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0644);
    if (fd < 0)
        return tmoe_errorf(err, TMOE_EIO, "%s: cannot open the run directory's lock file: %s", path,
                           strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return tmoe_errorf(err, TMOE_EINVAL, "%s: the lock file is not a regular file; remove it",
                           path);
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        char who[160] = "";
        ssize_t n = e == EWOULDBLOCK ? pread(fd, who, sizeof who - 1, 0) : -1;
        close(fd);
        if (e != EWOULDBLOCK)
            return tmoe_errorf(err, TMOE_EIO, "%s: cannot lock: %s", path, strerror(e));
        who[n > 0 ? n : 0] = '\0';
        for (char *p = who; *p; p++) /* one printable line */
            if (*p == '\n')
                *p = '\0';
            else if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
                *p = '?';
        return tmoe_errorf(err, TMOE_EINVAL,
                           "run directory %s is in use by %s (it holds %s): wait for that run to "
                           "end, or choose another --out",
                           r->dir, who[0] ? who : "another process", path);
    }
    char host[256] = "unknown", line[400];
    if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "unknown");
    host[sizeof host - 1] = '\0';
    int len = snprintf(line, sizeof line, "pid %ld on host %s\n", (long)getpid(), host);
    if (ftruncate(fd, 0) != 0 || pwrite(fd, line, (size_t)len, 0) != len)
        tmoe_log(TMOE_LOG_WARN,
                 "%s: cannot record this process in the lock file: %s (the lock "
                 "holds all the same)",
                 path, strerror(errno));
    r->lock_fd = fd;
    return TMOE_OK;
}

/* With the lock held no other process writes here: temporaries of metadata.json or
 * batches.csv left by a process that died mid-write are stale. */
static void remove_stale_temporaries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    static const char *const prefixes[] = {TMOE_RUNLOG_METADATA ".tmp", TMOE_RUNLOG_CSV ".tmp"};
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        for (int i = 0; i < 2; i++) {
            if (strncmp(e->d_name, prefixes[i], strlen(prefixes[i])) != 0) continue;
            char path[4400];
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            struct stat st;
            if (lstat(path, &st) == 0 && S_ISREG(st.st_mode) && unlink(path) == 0)
                tmoe_log(TMOE_LOG_INFO, "removed %s, left by a run that stopped while writing it",
                         path);
        }
    }
    closedir(d);
}

static int open_run_dir(run_ctx *r, tmoe_runlog_done **done, int *ndone, tmoe_error *err) {
    /* room for the longest name inside (traces/r<repeat>_<workload>_<strategy>.json) */
    if (strlen(r->cfg.out_dir) + 128 > sizeof r->dir)
        return tmoe_errorf(err, TMOE_EINVAL, "--out: a path of %zu bytes is too long (at most %zu)",
                           strlen(r->cfg.out_dir), sizeof r->dir - 128);
    if (r->cfg.log_file && strlen(r->cfg.log_file) + 32 > sizeof r->csv_path)
        return tmoe_errorf(err, TMOE_EINVAL,
                           "--log-file: a path of %zu bytes is too long (at most %zu)",
                           strlen(r->cfg.log_file), sizeof r->csv_path - 32);
    snprintf(r->dir, sizeof r->dir, "%s", r->cfg.out_dir);
    int rc = make_dir(r->dir, err);
    if (rc) return tmoe_error_prefix(err, rc, "output directory");
    char traces[4300];
    snprintf(traces, sizeof traces, "%s/traces", r->dir);
    if ((rc = make_dir(traces, err))) return rc;
    if ((rc = lock_run_dir(r, err))) return rc;
    remove_stale_temporaries(r->dir);
    if (r->cfg.log_file) snprintf(r->csv_path, sizeof r->csv_path, "%s", r->cfg.log_file);
    else snprintf(r->csv_path, sizeof r->csv_path, "%s/%s", r->dir, TMOE_RUNLOG_CSV);
    char fp[512], old_fp[512];
    run_fingerprint(r, fp, sizeof fp);
    if (r->cfg.resume) {
        rc = run_read_metadata(r->dir, r->run_id, sizeof r->run_id, old_fp, sizeof old_fp, err);
        if (rc) return tmoe_error_prefix(err, rc, "--resume");
        if (strcmp(fp, old_fp) != 0)
            return tmoe_errorf(err, TMOE_EINVAL,
                               "--resume: the flags differ from the run in %s (was: %s; now: %s)",
                               r->dir, old_fp, fp);
    } else {
        struct stat st;
        if (stat(r->csv_path, &st) == 0 && S_ISREG(st.st_mode))
            return tmoe_errorf(err, TMOE_EINVAL,
                               "%s exists: continue that run with --resume, or choose another --out",
                               r->csv_path);
        char stamp[32];
        time_t t = time(NULL);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
        snprintf(r->run_id, sizeof r->run_id, "%s-%08llx", stamp,
                 (unsigned long long)(r->cfg.seed * 0x9e3779b97f4a7c15ull >> 32));
    }
    rc = tmoe_runlog_open(r->csv_path, r->cfg.resume, r->cfg.resume ? r->run_id : NULL, &r->log,
                          done, ndone, err);
    return rc;
}

int tmoe_run(const tmoe_run_config *cfg, FILE *out, tmoe_error *err) {
    return tmoe_run_ex(cfg, out, NULL, err);
}

int tmoe_run_ex(const tmoe_run_config *cfg, FILE *out, tmoe_run_report *report, tmoe_error *err) {
    tmoe_error local = {0};
    if (!err) err = &local; /* the message of a failure goes into metadata.json */
    tmoe_run_outcome outcome = TMOE_RUN_FAILED;
    if (report) *report = (tmoe_run_report){TMOE_RUN_FAILED, -1, 0};
    run_ctx *r = tmoe_calloc(1, sizeof *r, err);
    if (!r) return TMOE_ENOMEM;
    r->rows_logged = -1;
    r->lock_fd = -1;
    r->cfg = *cfg;
    r->out = out;
    r->blk_cfg = cfg->block;
    r->rank = cfg->ep ? tmoe_ep_rank(cfg->ep) : 0;
    r->ranks = cfg->ep ? tmoe_ep_size(cfg->ep) : 1;
    r->wall0_ns = tmoe_now_ns();
    stop_requested = 0;
    iso_time(r->started, sizeof r->started);
    tmoe_runlog_done *done = NULL;
    int ndone = 0, rc;
    int nstrat = 0, nwl = 0;
    for (int s = 0; s < TMOE_ROUTE_STRATEGY_COUNT; s++) nstrat += cfg->strategies[s] != 0;
    for (int w = 0; w < TMOE_WL_COUNT; w++) nwl += cfg->workloads[w] != 0;
    if (!nstrat || !nwl || cfg->repeats < 1 || cfg->num_samples < 1 || cfg->epochs < 1 ||
        cfg->repeat_first < 0) {
        rc = tmoe_errorf(err, TMOE_EINVAL, "nothing to run: %d strategies, %d workloads, %d repeats, "
                         "%d samples, %d epochs", nstrat, nwl, cfg->repeats, cfg->num_samples, cfg->epochs);
        goto out;
    }
    if (cfg->router.capacity_factor > 0.0) {
        rc = tmoe_errorf(err, TMOE_EINVAL, "a capacity factor is not supported by the engine's "
                         "selection in runs (the router's capacity-limited selection would differ "
                         "from the experts that ran)");
        goto out;
    }
    if ((rc = tmoe_block_config_validate(&r->blk_cfg, err))) goto out;
    /* 1. cost model (its expert checks need the block config) */
    if ((rc = init_cost(r, err))) goto out;
    /* 2. telemetry and monitor */
    if ((rc = init_telemetry(r, err))) goto out;
    tmoe_log(TMOE_LOG_INFO, "%s", tmoe_telemetry_choice(r->tel));
    /* 3. model and engine */
    if ((rc = init_model(r, err))) goto out;
    if ((rc = start_updates(r, err))) goto out;
    /* 4. output: directory, batches.csv (resume), metadata */
    if ((rc = open_run_dir(r, &done, &ndone, err))) goto out;
    r->t0_ns = tmoe_monitor_now_ns(r->mon);
    tmoe_rng_seed_stream(&r->arrivals, cfg->seed, 0xa771);
    if (r->sim) tmoe_meter_wait(r->meter, 0.2); /* first samples */
    tmoe_sample s0;
    r->start_temp_c = tmoe_monitor_latest(r->mon, own_device(r), &s0) == TMOE_OK && (s0.valid & TMOE_F_GPU_TEMP)
                          ? s0.gpu_temp_c : NAN;

    int nb = cfg->num_samples * cfg->epochs;
    int ncomb = cfg->repeats * nstrat * nwl;
    run_combo *combos = tmoe_calloc((size_t)ncomb, sizeof *combos, err);
    if (!combos) {
        rc = TMOE_ENOMEM;
        goto out;
    }
    int n = 0;
    for (int rep = cfg->repeat_first; rep < cfg->repeat_first + cfg->repeats; rep++) {
        int first = n;
        for (int w = 0; w < TMOE_WL_COUNT; w++)
            for (int s = 0; s < TMOE_ROUTE_STRATEGY_COUNT; s++)
                if (cfg->workloads[w] && cfg->strategies[s])
                    combos[n++] = (run_combo){rep, (tmoe_workload_kind)w, (tmoe_route_strategy)s};
        /* interleave: a fresh random order each repeat, so heat is not billed to one strategy */
        tmoe_rng o;
        tmoe_rng_seed_stream(&o, cfg->seed, 0x0bde7 + (uint64_t)rep);
        for (int i = n - 1; i > first; i--) {
            int j = first + (int)tmoe_rng_below(&o, (uint32_t)(i - first + 1));
            run_combo t = combos[i];
            combos[i] = combos[j];
            combos[j] = t;
        }
    }
    /* resume: keep complete combinations, drop the rows of a combination cut short */
    int nkeep = 0;
    if (cfg->resume) {
        for (int i = 0; i < ndone; i++) {
            run_combo c = {.repeat = done[i].repeat};
            int ok = tmoe_workload_parse(done[i].workload, &c.wl) == 0 &&
                     tmoe_route_strategy_parse(done[i].strategy, &c.st) == 0 &&
                     done[i].rows == nb && !done[i].invalid;
            if (ok) done[nkeep++] = done[i];
        }
        long found = tmoe_runlog_rows(r->log);
        if ((long)nkeep * nb != found && (rc = tmoe_runlog_drop(r->log, done, nkeep, err)))
            goto out_combos;
        if (!cfg->quiet && out)
            fprintf(out,
                    "resuming %s: %d of %d combinations already complete (%ld rows kept, "
                    "%ld dropped)\n",
                    r->run_id, nkeep, ncomb, tmoe_runlog_rows(r->log),
                    found - tmoe_runlog_rows(r->log));
    }
    r->batches_total = (long)(ncomb - nkeep) * nb;
    if ((rc = run_write_metadata(r, "running", NULL, err))) goto out_combos;
    /* from here on every way out records how the run ended in metadata.json */
    if (!cfg->quiet && out) {
        fprintf(out, "thermoe run %s: %d strategies x %d workloads x %d repeats, %d batches each; "
                     "backend %s; %s\n",
                r->run_id, nstrat, nwl, cfg->repeats, nb, tmoe_engine_backend_name(r->eng),
                tmoe_telemetry_choice(r->tel));
        if (r->sim)
            fprintf(out, "simulated GPU: time, energy, power and temperature are a simulated H100 "
                         "driven by the measured cost model %s; values are computed on the %s "
                         "backend\n",
                    r->cost_path, tmoe_engine_backend_name(r->eng));
        fflush(out);
    }
    if ((rc = calibrate(r, err))) goto finish;
    for (int i = 0; i < ncomb && !stop_now(r); i++) {
        int skip = cfg->resume && combo_done(done, nkeep, &combos[i], nb);
        if (r->ranks > 1) { /* every rank must run the same combinations */
            double hi = skip, lo = -skip;
            rc = tmoe_ep_allreduce_max(cfg->ep, &hi, err);
            if (!rc) rc = tmoe_ep_allreduce_max(cfg->ep, &lo, err);
            if (rc) break;
            if (hi != -lo) {
                rc = tmoe_errorf(err, TMOE_EINVAL,
                                 "--resume: the ranks' directories disagree on whether repeat %d "
                                 "%s %s is complete (one rank wrote its last row, another did "
                                 "not); remove that combination's rows from every rank's "
                                 "batches.csv and resume again",
                                 combos[i].repeat, tmoe_workload_name(combos[i].wl),
                                 tmoe_route_strategy_name(combos[i].st));
                break;
            }
        }
        if (skip) continue;
        rc = run_combo_batches(r, &combos[i], i, ncomb, err);
        if (rc) break;
        if (i + 1 < ncomb) cool_down(r);
    }
finish:
    if (cfg->progress && !cfg->quiet) fputc('\n', stderr);
    {
        /* the rows reach the disk before the metadata says how the run ended */
        tmoe_error e2 = {0};
        r->rows_logged = tmoe_runlog_rows(r->log);
        int crc = tmoe_runlog_close(r->log, &e2);
        r->log = NULL;
        if (!rc && crc) rc = tmoe_errorf(err, crc, "%s", e2.msg);
        outcome = rc               ? TMOE_RUN_FAILED
                  : stop_requested ? TMOE_RUN_INTERRUPTED
                  : r->tel_faults  ? TMOE_RUN_TELEMETRY_FAULTS
                                   : TMOE_RUN_COMPLETE;
        static const char *const status[] = {"complete", "complete_with_telemetry_faults",
                                             "interrupted", "failed"};
        int mrc = run_write_metadata(r, status[outcome], rc ? err->msg : NULL, &e2);
        if (mrc && !rc) {
            rc = tmoe_errorf(err, mrc, "%s", e2.msg);
        } else if (mrc) {
            size_t len = strlen(err->msg);
            snprintf(err->msg + len, sizeof err->msg - len, "; %s could not record it either: %s",
                     TMOE_RUNLOG_METADATA, e2.msg);
        }
    }
    if (!rc && out) rc = run_print_summary(r, err);
    if (rc && outcome != TMOE_RUN_FAILED) outcome = TMOE_RUN_FAILED; /* the summary failed */
    if (!rc && outcome == TMOE_RUN_INTERRUPTED) {
        rc = tmoe_errorf(err, TMOE_EINTR, "interrupted after %ld batches; %s is complete up to the "
                         "last batch: continue with --resume --out %s",
                         r->batches_done, r->csv_path, r->dir);
    } else if (!rc && outcome == TMOE_RUN_TELEMETRY_FAULTS) {
        rc = tmoe_errorf(err, TMOE_EDEVICE,
                         "every batch ran, but the telemetry failed on %ld of %ld (first at repeat "
                         "%d %s %s batch %d: %s); their energy and power are nan in %s, see "
                         "telemetry_faults in %s/%s",
                         r->tel_faults, r->rows_logged, r->fault_combo.repeat,
                         tmoe_workload_name(r->fault_combo.wl),
                         tmoe_route_strategy_name(r->fault_combo.st), r->fault_batch,
                         r->fault_reason, r->csv_path, r->dir, TMOE_RUNLOG_METADATA);
    }
out_combos:
    free(combos);
out:
    if (r->log) {
        tmoe_error e2 = {0};
        tmoe_runlog_close(r->log, &e2);
    }
    if (report)
        *report = (tmoe_run_report){outcome, r->log ? tmoe_runlog_rows(r->log) : r->rows_logged,
                                    r->tel_faults};
    free(done);
    free_ctx(r);
    if (r->lock_fd >= 0) close(r->lock_fd); /* the directory is free for another run */
    free(r);
    return rc;
}
