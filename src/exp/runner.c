/* The experiment runner (see include/thermoe/exp.h): set-up, the loop over the plan's
 * combinations and batches, and how the run ended. One run directory holds batches.csv,
 * metadata.json and traces/. Order of initialisation, each step reporting its own error:
 * cost model, telemetry + monitor + meter, model + engine, workloads, logger. The jobs of a
 * batch and of the plan live beside it (runner_internal.h): run_batch.c (route -> engine ->
 * meter -> log), run_bill.c, run_hw.c, run_row.c, run_update.c, run_router.c, run_plan.c,
 * run_dir.c, runner_meta.c, runner_summary.c. */
#include "thermoe/exp.h"

#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "thermoe/cost.h"
#include "thermoe/ep.h"
#include "thermoe/model.h"
#include "exp/runner_internal.h"

volatile sig_atomic_t run_stop_requested;

void tmoe_run_request_stop(void) {
    run_stop_requested = 1;
}

tmoe_run_config tmoe_run_config_default(void) {
    tmoe_run_config c;
    memset(&c, 0, sizeof c);
    /* the six strategies; the comparisons run when asked for */
    for (int s = 0; s < TMOE_ROUTE_STRATEGY_COUNT; s++)
        c.strategies[s] = !tmoe_route_strategy_is_comparison((tmoe_route_strategy)s);
    for (int w = 0; w < TMOE_WL_COUNT; w++) c.workloads[w] = 1;
    c.repeats = 1;
    c.num_samples = 16;
    c.epochs = 1;
    c.warmup_batches = 2;
    c.trace_batches = 4;
    c.arrival_rate = 0.0;
    c.cooldown_s = 30.0; /* docs/harness.md "Order and carry-over" */
    c.steady_s = 60.0;
    c.fidelity_every = 1;
    c.energy_counter_ms = 2000;
    c.seed = 42;
    /* the values are computed on the CPU when no GPU answers: a small shape keeps the
     * default sweep near half a minute on 2 cores (the simulated GPU bills the cost model's
     * shape, not this one) */
    c.block = tmoe_block_config_default();
    c.block.d_model = 128;
    c.block.d_ff = 256;
    c.block.seq_len = 16;
    c.block.seed = c.seed; /* tmoe_run_ex takes the weights' seed from seed alone */
    c.batch_size = 4;
    c.backend = TMOE_BACKEND_AUTO;
    c.impl = TMOE_IMPL_FUSED;
    c.telemetry = TMOE_TELEMETRY_AUTO;
    c.router = tmoe_router_config_default();
    c.out_dir = "results/run";
    c.expert_shape = (tmoe_expert_shape){TMOE_SHAPE_MIXTRAL, 4096, 14336};
    return c;
}

const char *tmoe_run_default_cost_model(void) {
    static char path[4096];
    const char *dir = getenv("THERMOE_DATA_DIR");
    snprintf(path, sizeof path, "%s/%s", dir && *dir ? dir : THERMOE_DATA_DIR,
             "h100_cost_model.json");
    return path;
}

/* <data dir>/<rel> in buf. */
static const char *data_path(char *buf, size_t n, const char *rel) {
    const char *dir = getenv("THERMOE_DATA_DIR");
    snprintf(buf, n, "%s/%s", dir && *dir ? dir : THERMOE_DATA_DIR, rel);
    return buf;
}

const char *tmoe_run_default_tokens(void) {
    static char path[4096];
    return data_path(path, sizeof path, "corpus/test.tokens");
}

const char *tmoe_run_default_model(void) {
    static char path[4096];
    return data_path(path, sizeof path, "../models/default");
}

static void iso_time(char *buf, size_t n) {
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

double run_now_s(run_ctx *r) {
    return (double)(tmoe_monitor_now_ns(r->mon) - r->t0_ns) / 1e9;
}

int run_init_cost(run_ctx *r, tmoe_error *err) {
    const char *path =
        r->cfg.cost_model_path ? r->cfg.cost_model_path : tmoe_run_default_cost_model();
    snprintf(r->cost_path, sizeof r->cost_path, "%s", path);
    int rc = tmoe_cost_load(path, &r->cm, err);
    if (rc) return tmoe_error_prefix(err, rc, "loading the kernel cost model");
    r->cost_sum = tmoe_cost_checksum(r->cm);
    /* every expert type of the model, and the copies' (--expert-copy), must be in the cost
     * model: fail now, not mid-run */
    for (int e = 0; e < r->blk_cfg.num_experts + (r->cfg.copy_given != 0); e++) {
        tmoe_etype t =
            e < r->blk_cfg.num_experts ? tmoe_block_expert_type(&r->blk_cfg, e) : r->cfg.copy_type;
        tmoe_cost_value v;
        rc = tmoe_cost_expert(r->cm, t, r->cfg.impl, 1.0, &v, err);
        if (rc)
            return tmoe_error_prefix(err, rc, "cost model %s has no %s/%s expert", path,
                                     tmoe_etype_name(t), tmoe_impl_name(r->cfg.impl));
        if (!isfinite(v.energy_j) || !isfinite(v.energy_dynamic_j))
            return tmoe_errorf(err, TMOE_EINVAL,
                               "cost model %s has no energy for %s/%s experts (it was profiled "
                               "without NVML); routers and the simulated GPU need measured energy",
                               path, tmoe_etype_name(t), tmoe_impl_name(r->cfg.impl));
    }
    /* the MoE layer's other ops are billed when the cost model has them */
    static const tmoe_op extra[] = {TMOE_OP_GATE_LINEAR, TMOE_OP_GATE_TOPK, TMOE_OP_PERMUTE,
                                    TMOE_OP_COMBINE,     TMOE_OP_NORM,      TMOE_OP_ATTN_QKV,
                                    TMOE_OP_ATTN_CORE,   TMOE_OP_ATTN_OUT};
    for (size_t i = 0; i < sizeof extra / sizeof *extra; i++) {
        tmoe_cost_value v;
        tmoe_error e2 = {0};
        r->billed[extra[i]] = tmoe_cost_lookup(r->cm, extra[i], TMOE_ET_FP16, TMOE_IMPL_FUSED, 1.0,
                                               &v, &e2) == TMOE_OK;
    }
    return TMOE_OK;
}

int run_init_telemetry(run_ctx *r, tmoe_error *err) {
    tmoe_telemetry_config tc = tmoe_telemetry_config_default();
    tc.kind = r->cfg.telemetry;
    tc.sim.seed = r->cfg.seed;
    tc.sim.n_devices = r->cfg.sim_devices > 0 ? r->cfg.sim_devices : 1;
    int rc = tmoe_telemetry_open(&tc, &r->tel, err);
    if (rc) return tmoe_error_prefix(err, rc, "starting telemetry");
    r->sim = tmoe_telemetry_sim(r->tel);
    tmoe_monitor_config mc = tmoe_monitor_config_default();
    mc.mode = r->sim ? TMOE_MONITOR_SYNC : TMOE_MONITOR_THREAD;
    mc.energy_period_ns = (int64_t)r->cfg.energy_counter_ms * 1000000;
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
    mtc.own_device = run_own_device(r);
    mtc.own_only = r->ranks > 1;
    mtc.max_devices = r->ndev; /* the devices this run follows */
    rc = tmoe_meter_create(r->tel, r->mon, &mtc, &r->meter, err);
    if (rc) return tmoe_error_prefix(err, rc, "starting the telemetry meter");
    int E = r->blk_cfg.num_experts, nd = r->ndev > 0 ? r->ndev : 1;
    if (r->ranks > 1) {
        /* experts live on the ranks; each rank reports its own GPU (run_hw_snapshot) */
        nd = r->ranks;
        if (r->ranks > TMOE_ROUTE_MAX_DEVICES)
            return tmoe_errorf(err, TMOE_ENOTSUP, "%d ranks: multi_gpu_aware follows at most %d",
                               r->ranks, TMOE_ROUTE_MAX_DEVICES);
    }
    rc = r->cfg.placement_file
             ? tmoe_placement_load(r->cfg.placement_file, E, nd, &r->placement, err)
             : tmoe_placement_round_robin(E, nd, &r->placement, err);
    if (rc) return tmoe_error_prefix(err, rc, "expert placement");
    for (int e = 0; e < E; e++) r->expert_dev[e] = r->placement.device[e];
    tmoe_error e2 = {0};
    snprintf(r->dev_driver, sizeof r->dev_driver, "%s", r->sim ? "simulated" : "unknown");
    if (tmoe_telemetry_device_info(r->tel, 0, &r->dev_info, &e2))
        tmoe_log(TMOE_LOG_WARN, "device info unavailable: %s", e2.msg);
    return TMOE_OK;
}

/* How the engine picks fused or unfused for the steps' q4/q2 experts: forced by --impl; else
 * from the cost model's measured crossovers when it was measured at the block's shape and has
 * both impls of every quantized type of the block; else the configured impl. Fills ec and the
 * run's impl_rule / impl_why / unfused_from (metadata.json impl_choice). */
static void choose_impl_rule(run_ctx *r, tmoe_engine_config *ec) {
    const tmoe_block_config *b = &r->blk_cfg;
    const char *cfg_impl = tmoe_impl_name(r->cfg.impl);
    r->impl_rule = "configured";
    for (int t = 0; t < TMOE_ET_COUNT; t++) r->unfused_from[t] = 0;
    int quant[TMOE_ET_COUNT] = {0}, any = 0;
    for (int e = 0; e < b->num_experts; e++) {
        tmoe_etype t = tmoe_block_expert_type(b, e);
        if (tmoe_etype_is_quant(t)) quant[t] = any = 1;
    }
    if (r->cfg.impl_given) {
        r->impl_rule = "forced";
        snprintf(r->impl_why, sizeof r->impl_why, "--impl %s: every step", cfg_impl);
        return;
    }
    if (!any) {
        snprintf(r->impl_why, sizeof r->impl_why,
                 "no q4/q2 experts: fp16 / bf16 have one implementation");
        return;
    }
    if (r->ranks > 1) {
        snprintf(r->impl_why, sizeof r->impl_why,
                 "expert-parallel engines run the configured impl (%s) every step", cfg_impl);
        return;
    }
    tmoe_cost_meta cm = tmoe_cost_get_meta(r->cm);
    if (cm.d_model != b->d_model || cm.d_ff != b->d_ff || cm.group_size != b->group_size) {
        snprintf(r->impl_why, sizeof r->impl_why,
                 "the cost model was measured at d_model %d, d_ff %d, group %d, the block is %d, "
                 "%d, %d: no crossover for this shape, %s every step",
                 cm.d_model, cm.d_ff, cm.group_size, b->d_model, b->d_ff, b->group_size, cfg_impl);
        return;
    }
    int from[TMOE_ET_COUNT] = {0};
    int max_n = r->max_tokens * b->top_k; /* one expert gets at most every copy */
    for (int t = 0; t < TMOE_ET_COUNT; t++) {
        if (!quant[t]) continue;
        tmoe_error e2 = {0};
        if (tmoe_cost_crossover(r->cm, (tmoe_etype)t, TMOE_IMPL_FUSED, TMOE_IMPL_UNFUSED, max_n,
                                &from[t], &e2)) {
            snprintf(r->impl_why, sizeof r->impl_why, "no crossover (%s): %s every step", e2.msg,
                     cfg_impl);
            return;
        }
    }
    r->impl_rule = "cost_model";
    ec->impl_auto = 1;
    size_t n = (size_t)snprintf(r->impl_why, sizeof r->impl_why,
                                "measured crossovers of the cost model (median latency of one "
                                "expert):");
    for (int t = 0; t < TMOE_ET_COUNT && n < sizeof r->impl_why; t++) {
        if (!quant[t]) continue;
        ec->unfused_from[t] = r->unfused_from[t] = from[t];
        if (from[t])
            n += (size_t)snprintf(r->impl_why + n, sizeof r->impl_why - n,
                                  " %s unfused from %d tokens per expert, fused below;",
                                  tmoe_etype_name((tmoe_etype)t), from[t]);
        else
            n += (size_t)snprintf(r->impl_why + n, sizeof r->impl_why - n,
                                  " %s fused up to %d tokens per expert;",
                                  tmoe_etype_name((tmoe_etype)t), max_n);
    }
}

static int init_model(run_ctx *r, tmoe_error *err) {
    r->max_tokens = tmoe_workload_max_tokens(r->cfg.batch_size, r->cfg.block.seq_len);
    for (int w = 0; w < TMOE_WL_COUNT; w++)
        r->wl[w] =
            tmoe_workload_make((tmoe_workload_kind)w, r->cfg.batch_size, r->cfg.block.seq_len,
                               r->cfg.seed + (uint64_t)r->rank); /* each rank its tokens */
    r->samples = tmoe_malloc(sizeof(tmoe_sample) * RUN_MAX_SAMPLES, err);
    if (!r->samples) return TMOE_ENOMEM;
    if (r->lm) {
        r->impl_rule = r->cfg.impl_given ? "forced" : "configured";
        snprintf(r->impl_why, sizeof r->impl_why, "decoder LM: %s every step",
                 tmoe_impl_name(r->cfg.impl));
        return run_lm_init(r, err);
    }
    int rc = tmoe_block_create(&r->blk_cfg, &r->blk, err);
    if (rc) return tmoe_error_prefix(err, rc, "building the model");
    tmoe_engine_config ec = tmoe_engine_config_default();
    ec.backend = r->cfg.backend;
    ec.device_id = r->cfg.device_id;
    ec.max_tokens = r->max_tokens;
    ec.impl = r->cfg.impl;
    ec.ep = r->cfg.ep;
    choose_impl_rule(r, &ec);
    tmoe_log(TMOE_LOG_INFO, "q4/q2 impl: %s (%s)", r->impl_rule, r->impl_why);
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
    if (!r->x || !r->y || !r->y0 || !r->logits || !r->w || !r->w0 || !r->idx || !r->idx0 ||
        !r->bias)
        return TMOE_ENOMEM;
    /* the routers' expert costs: the cost model tabulated at every token count */
    rc = tmoe_cost_table_create(r->cm, r->blk->types, r->blk_cfg.num_experts, r->cfg.impl,
                                r->max_tokens, &r->cost_tab, err);
    if (rc) return rc;
    r->provider = tmoe_cost_table_provider(r->cost_tab);
    return TMOE_OK;
}

void run_free_ctx(run_ctx *r) {
    run_update_stop(r);
    tmoe_router_free(r->router);
    run_lm_free(r);
    tmoe_engine_free(r->eng);
    tmoe_block_free(r->blk);
    tmoe_meter_free(r->meter);
    tmoe_monitor_free(r->mon);
    tmoe_telemetry_free(r->tel);
    tmoe_cost_free(r->cm);
    tmoe_cost_table_free(r->cost_tab);
    tmoe_cost_table_free(r->copy_tab);
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

/* An event for the caller's progress display; *p is filled with run_id and event. */
static void emit(run_ctx *r, tmoe_run_event ev, tmoe_run_progress *p) {
    if (!r->cfg.on_progress) return;
    p->event = ev;
    p->run_id = r->run_id;
    r->cfg.on_progress(p, r->cfg.progress_user);
}

/* BATCH after logged batch b (1-based) of nb of combination ci of nc; COMBO_DONE too after
 * the last one. */
static void progress(run_ctx *r, int ci, int nc, const run_combo *c, int b, int nb) {
    if (!r->cfg.on_progress) return;
    tmoe_run_progress p = {0};
    p.elapsed_s = (double)(tmoe_now_ns() - r->wall0_ns) / 1e9;
    p.eta_s = r->batches_done > 0
                  ? p.elapsed_s / r->batches_done * (r->batches_total - r->batches_done)
                  : NAN;
    tmoe_sample s;
    p.power_w = p.temp_c = NAN;
    if (tmoe_monitor_latest(r->mon, 0, &s) == TMOE_OK) {
        p.power_w = (s.valid & TMOE_F_POWER_AVG) ? s.power_avg_w : NAN;
        p.temp_c = (s.valid & TMOE_F_GPU_TEMP) ? s.gpu_temp_c : NAN;
    }
    p.source = r->sim ? "sim" : "nvml";
    p.combo = ci;
    p.combos = nc;
    p.repeat = c->repeat;
    p.workload = c->wl;
    p.strategy = c->st;
    p.batch = b;
    p.batches = nb;
    emit(r, TMOE_RUN_EV_BATCH, &p);
    if (b == nb) emit(r, TMOE_RUN_EV_COMBO_DONE, &p);
}

static int run_combo_batches(run_ctx *r, const run_combo *c, int ci, int nc, tmoe_error *err) {
    uint64_t seed =
        r->cfg.seed ^ ((uint64_t)(c->repeat + 1) << 40) ^ ((uint64_t)c->wl << 20) ^ (uint64_t)c->st;
    int rc = run_make_router(r, c->st, c->wl, seed, err);
    if (rc) return rc;
    int nb = r->cfg.num_samples * r->cfg.epochs;
    /* the same arrival times for every strategy of a (repeat, workload): common random
     * numbers, so strategies are compared on identical load */
    tmoe_rng_seed_stream(&r->arrivals, r->cfg.seed,
                         0xa771 ^ ((uint64_t)(c->repeat + 1) << 8) ^ (uint64_t)c->wl);
    r->next_arrival_s = run_now_s(r);
    for (int b = 0; b < r->cfg.warmup_batches; b++)
        if ((rc = run_batch(r, c, b, 0, NULL, err))) return rc;
    tmoe_trace *tr = NULL;
    if (r->cfg.trace_batches > 0) {
        char path[4300];
        snprintf(path, sizeof path, "%s/traces/r%d_%s_%s%s", r->dir, c->repeat,
                 tmoe_workload_name(c->wl), tmoe_route_strategy_name(c->st), tmoe_trace_ext());
        rc = tmoe_trace_open(path, &tr, err);
        if (rc) return rc;
        tmoe_trace_name(tr, 1, -1, r->sim ? "device (simulated H100 clock)" : "device");
        r->trace_last_ns = INT64_MIN;
        tmoe_trace_name(tr, 2, -1,
                        r->sim ? "host (placed on the simulated clock, durations host time)"
                               : "host");
        tmoe_trace_name(tr, 3, -1, "CUDA kernels (CUPTI, mapped onto the run's clock)");
    }
    for (int b = 0; b < nb; b++) {
        rc = run_batch(r, c, b, 1, b < r->cfg.trace_batches ? tr : NULL, err);
        if (rc) break;
        run_trace_run_samples(r);
        r->batches_done++;
        if (b + 1 == r->cfg.trace_batches && tr) {
            rc = tmoe_trace_close(tr, err);
            tr = NULL;
            if (rc) break;
        }
        progress(r, ci, nc, c, b + 1, nb);
        if (run_stop_now(r)) break;
    }
    if (!rc) rc = run_update_finish(r, err); /* the last batch's row */
    if (tr) {
        tmoe_error e2 = {0};
        int rc2 = tmoe_trace_close(tr, &e2);
        if (!rc && rc2) rc = tmoe_errorf(err, rc2, "%s", e2.msg);
    }
    if (!rc && c->st == TMOE_ROUTE_KERNEL_AWARE_TTHA && !r->lm) {
        char path[4300];
        snprintf(path, sizeof path, "%s/ttha_r%d_%s.bin", r->dir, c->repeat,
                 tmoe_workload_name(c->wl));
        rc = tmoe_router_ttha_save(r->router, path, err);
    }
    /* the decoder LM: one adapter per MoE layer */
    for (int i = 0; !rc && c->st == TMOE_ROUTE_KERNEL_AWARE_TTHA && r->lm && i < r->lm->n_moe;
         i++) {
        char path[4300];
        snprintf(path, sizeof path, "%s/ttha_r%d_%s_moe%d.bin", r->dir, c->repeat,
                 tmoe_workload_name(c->wl), i);
        rc = tmoe_router_ttha_save(r->lm->routers[i], path, err);
    }
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
    r->last_win_end_s = NAN;
    r->cfg = *cfg;
    r->out = out;
    r->blk_cfg = cfg->block;
    /* one seed: the weights, the inputs, the arrivals and the routers all derive from
     * cfg->seed, so a run without --seed and one with --seed <default> are the same run */
    r->blk_cfg.seed = cfg->seed;
    r->cfg.block.seed = cfg->seed;
    r->rank = cfg->ep ? tmoe_ep_rank(cfg->ep) : 0;
    r->ranks = cfg->ep ? tmoe_ep_size(cfg->ep) : 1;
    r->wall0_ns = tmoe_now_ns();
    run_stop_requested = 0;
    iso_time(r->started, sizeof r->started);
    tmoe_runlog_done *done = NULL;
    int ndone = 0, rc;
    int nstrat = 0, nwl = 0;
    for (int s = 0; s < TMOE_ROUTE_STRATEGY_COUNT; s++) nstrat += cfg->strategies[s] != 0;
    for (int w = 0; w < TMOE_WL_COUNT; w++) nwl += cfg->workloads[w] != 0;
    if (!nstrat || !nwl || cfg->repeats < 1 || cfg->num_samples < 1 || cfg->epochs < 1 ||
        cfg->repeat_first < 0) {
        rc = tmoe_errorf(err, TMOE_EINVAL,
                         "nothing to run: %d strategies, %d workloads, %d repeats, "
                         "%d samples, %d epochs",
                         nstrat, nwl, cfg->repeats, cfg->num_samples, cfg->epochs);
        goto out;
    }
    if (cfg->router.capacity_factor > 0.0) {
        rc = tmoe_errorf(err, TMOE_EINVAL,
                         "a capacity factor is not supported by the engine's "
                         "selection in runs (the router's capacity-limited selection would differ "
                         "from the experts that ran)");
        goto out;
    }
    for (int s = TMOE_ROUTE_FIRST_COMPARISON; s < TMOE_ROUTE_STRATEGY_COUNT; s++)
        if (cfg->strategies[s] && !cfg->model_dir) {
            rc = tmoe_errorf(err, TMOE_ENOTSUP,
                             "%s selects each token's experts itself; only the decoder LM's "
                             "engines take such a selection (--model DIR), the random block "
                             "routes by biases",
                             tmoe_route_strategy_name((tmoe_route_strategy)s));
            goto out;
        }
    /* the decoder LM's experts and routing come from its config.json */
    if (cfg->model_dir && (rc = run_lm_config(r, err))) goto out;
    if ((rc = tmoe_block_config_validate(&r->blk_cfg, err))) goto out;
    /* 1. cost model (its expert checks need the block config) */
    if ((rc = run_init_cost(r, err))) goto out;
    /* 2. telemetry and monitor */
    if ((rc = run_init_telemetry(r, err))) goto out;
    tmoe_log(TMOE_LOG_INFO, "%s", tmoe_telemetry_choice(r->tel));
    /* 3. model and engine */
    if ((rc = init_model(r, err))) goto out;
    if ((rc = run_update_start(r, err))) goto out;
    /* 4. output: directory, batches.csv (resume), metadata */
    if ((rc = run_open_dir(r, &done, &ndone, err))) goto out;
    r->t0_ns = tmoe_monitor_now_ns(r->mon);
    tmoe_rng_seed_stream(&r->arrivals, cfg->seed, 0xa771);
    if (r->sim) tmoe_meter_wait(r->meter, 0.2); /* first samples */
    tmoe_sample s0;
    r->start_temp_c = tmoe_monitor_latest(r->mon, run_own_device(r), &s0) == TMOE_OK &&
                              (s0.valid & TMOE_F_GPU_TEMP)
                          ? s0.gpu_temp_c
                          : NAN;

    int nb = cfg->num_samples * cfg->epochs;
    int ncomb = 0, nkeep = 0;
    run_combo *combos = NULL;
    if ((rc = run_plan(cfg, &combos, &ncomb, err))) goto out;
    /* resume: keep complete combinations, drop the rows of a combination cut short */
    if (cfg->resume) {
        long dropped;
        if ((rc = run_resume_keep(r, done, ndone, nb, &nkeep, &dropped, err))) goto out_combos;
        tmoe_run_progress p = {0};
        p.combos_kept = nkeep;
        p.combos = ncomb;
        p.rows_kept = tmoe_runlog_rows(r->log);
        p.rows_dropped = dropped;
        emit(r, TMOE_RUN_EV_RESUME, &p);
    }
    r->batches_total = (long)(ncomb - nkeep) * nb;
    if ((rc = run_write_metadata(r, "running", NULL, err))) goto out_combos;
    /* from here on every way out records how the run ended in metadata.json */
    {
        tmoe_run_progress p = {0};
        p.strategies = nstrat;
        p.workloads = nwl;
        p.repeats = cfg->repeats;
        p.batches = nb;
        p.backend = run_backend_name(r);
        p.telemetry = tmoe_telemetry_choice(r->tel);
        p.simulated = r->sim != NULL;
        p.cost_model = r->cost_path;
        emit(r, TMOE_RUN_EV_START, &p);
    }
    if ((rc = run_trace_run_open(r, err))) goto finish;
    double ph0 = run_now_s(r);
    if ((rc = run_warm_up(r, err))) goto finish;
    if ((rc = run_calibrate(r, err))) goto finish;
    run_trace_run_phase(r, "warm-up", ph0, run_now_s(r), NULL);
    for (int i = 0; i < ncomb && !run_stop_now(r); i++) {
        int skip;
        if ((rc = run_skip(r, done, nkeep, &combos[i], nb, &skip, err))) break;
        if (skip) continue;
        ph0 = run_now_s(r);
        run_cool_down(r); /* every combination starts near the run's starting temperature */
        run_trace_run_phase(r, "rest", ph0, run_now_s(r), NULL);
        ph0 = run_now_s(r);
        rc = run_combo_batches(r, &combos[i], i, ncomb, err);
        char name[160], args[96];
        snprintf(name, sizeof name, "r%d %s %s", combos[i].repeat, tmoe_workload_name(combos[i].wl),
                 tmoe_route_strategy_name(combos[i].st));
        snprintf(args, sizeof args, "{\"order\":%d}", i);
        run_trace_run_phase(r, name, ph0, run_now_s(r), args);
        if (rc) break;
    }
finish : {
    tmoe_error e2 = {0};
    int trc = run_trace_run_close(r, &e2);
    if (!rc && trc) rc = tmoe_errorf(err, trc, "%s", e2.msg);
}
    emit(r, TMOE_RUN_EV_END, &(tmoe_run_progress){0});
    {
        /* the rows reach the disk before the metadata says how the run ended */
        tmoe_error e2 = {0};
        r->rows_logged = tmoe_runlog_rows(r->log);
        int crc = tmoe_runlog_close(r->log, &e2);
        r->log = NULL;
        if (!rc && crc) rc = tmoe_errorf(err, crc, "%s", e2.msg);
        outcome = rc                   ? TMOE_RUN_FAILED
                  : run_stop_requested ? TMOE_RUN_INTERRUPTED
                  : r->tel_faults      ? TMOE_RUN_TELEMETRY_FAULTS
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
        rc = tmoe_errorf(err, TMOE_EINTR,
                         "interrupted after %ld batches; %s is complete up to the "
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
    run_free_ctx(r);
    if (r->lock_fd >= 0) close(r->lock_fd); /* the directory is free for another run */
    free(r);
    return rc;
}
