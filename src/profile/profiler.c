/* Kernel profiler: each op alone, warmed up, run back to back until --min-seconds and a
 * minimum call count have passed; latency = median and p90 of per-call device times; energy
 * per call = energy-counter delta / calls (board) and board minus idle power x time
 * (dynamic); temperature impact = temperature change per second of sustained op; clocks and
 * throttle reasons recorded, a throttled measurement flagged; rest between ops until the
 * temperature is back near idle; weights rotated over copies larger than the L2 cache. */
#include "thermoe/profile.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "thermoe/backend.h"

tmoe_profile_config tmoe_profile_config_default(void) {
    tmoe_profile_config c;
    memset(&c, 0, sizeof c);
    c.backend = TMOE_BACKEND_AUTO;
    c.telemetry = TMOE_TELEMETRY_AUTO;
    for (int o = 0; o < TMOE_OP_COUNT; o++) c.ops[o] = 1;
    /* bf16 moves the bytes of fp16 and the cost model falls back to fp16's entries for it:
     * profiled only when asked for */
    for (int t = 0; t < TMOE_ET_COUNT; t++) c.etypes[t] = t != TMOE_ET_BF16;
    for (int i = 0; i < TMOE_IMPL_COUNT; i++) c.impls[i] = 1;
    static const int tok[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
    c.ntokens = (int)(sizeof tok / sizeof *tok);
    memcpy(c.tokens, tok, sizeof tok);
    c.min_seconds = 1.0;
    c.min_calls = 20;
    c.warmup_calls = 5;
    c.rest_max_s = 10.0;
    c.rest_tol_c = 1.0;
    c.min_working_set_mb = 128.0;
    c.block = tmoe_block_config_default();
    c.block.d_model = 4096;
    c.block.d_ff = 14336;
    c.block.num_experts = 8;
    c.block.top_k = 2;
    c.block.n_heads = 32;
    c.block.seq_len = 1024;
    c.seed = 1;
    return c;
}

void tmoe_profile_percentiles(double *v, int n, double *median, double *p90) {
    if (n <= 0) {
        *median = *p90 = NAN;
        return;
    }
    qsort(v, (size_t)n, sizeof *v, tmoe_cmp_double);
    *median = tmoe_percentile_sorted(v, n, 50.0);
    *p90 = tmoe_percentile_sorted(v, n, 90.0);
}

typedef tmoe_profile_item plan_item;

static int is_expert_op(tmoe_op op) {
    return op == TMOE_OP_DEQUANT_UNPACK || op == TMOE_OP_LINEAR_FC1 || op == TMOE_OP_RELU ||
           op == TMOE_OP_LINEAR_FC2;
}

int tmoe_profile_plan_cap(const tmoe_profile_config *c) {
    return c->ntokens * (TMOE_ET_COUNT * TMOE_IMPL_COUNT * 4 + TMOE_OP_COUNT);
}

int tmoe_profile_plan(const tmoe_profile_config *c, tmoe_profile_item *p, int cap) {
    int n = 0;
    for (int ti = 0; ti < c->ntokens; ti++) {
        for (int et = 0; et < TMOE_ET_COUNT; et++) {
            if (!c->etypes[et]) continue;
            for (int im = 0; im < TMOE_IMPL_COUNT; im++) {
                if (!c->impls[im]) continue;
                /* fp16 / bf16 have one implementation: measure it once, key it under both */
                int flt = !tmoe_etype_is_quant((tmoe_etype)et);
                if (flt && im == TMOE_IMPL_UNFUSED && c->impls[TMOE_IMPL_FUSED]) continue;
                tmoe_op seq[4];
                int ns = tmoe_expert_op_sequence((tmoe_etype)et, (tmoe_impl)im, seq);
                for (int i = 0; i < ns && n < cap; i++) {
                    if (!c->ops[seq[i]]) continue;
                    p[n++] = (plan_item){seq[i], (tmoe_etype)et, (tmoe_impl)im, c->tokens[ti],
                                         flt && c->impls[TMOE_IMPL_UNFUSED] &&
                                             c->impls[TMOE_IMPL_FUSED]};
                }
            }
        }
        for (int op = 0; op < TMOE_OP_COUNT && n < cap; op++) {
            if (!c->ops[op] || is_expert_op((tmoe_op)op)) continue;
            int attn = op == TMOE_OP_ATTN_QKV || op == TMOE_OP_ATTN_CORE || op == TMOE_OP_ATTN_OUT;
            if (attn && c->moe_only) continue;
            p[n++] = (plan_item){(tmoe_op)op, TMOE_ET_FP16, TMOE_IMPL_FUSED, c->tokens[ti], 0};
        }
    }
    return n;
}

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

typedef struct prof {
    const tmoe_profile_config *c;
    tmoe_backend_kind backend;
    tmoe_telemetry *tel;
    tmoe_monitor *mon;
    tmoe_meter *meter;  /* windows over each op's calls (when measure_energy) */
    int measure_energy; /* nvml: the counter measures the work we run */
    int trace_kernels;  /* CUPTI answered */
    int whole;          /* measure() runs the whole expert forward instead of it->op */
    double idle_w, idle_temp_c;
    tmoe_sample samples[1024]; /* idle measurement */
    double *ms;
    int ms_cap;
} prof;

static double latest_temp(prof *p) {
    tmoe_sample s;
    if (!p->mon || tmoe_monitor_latest(p->mon, 0, &s) != TMOE_OK || !(s.valid & TMOE_F_GPU_TEMP))
        return NAN;
    return s.gpu_temp_c;
}

/* Idle power and temperature: 2 s of samples with nothing running. */
static void measure_idle(prof *p) {
    p->idle_w = p->idle_temp_c = NAN;
    if (!p->measure_energy) return;
    int64_t t0 = tmoe_monitor_now_ns(p->mon);
    sleep_s(2.0);
    int n = tmoe_monitor_samples(p->mon, 0, t0, tmoe_monitor_now_ns(p->mon), p->samples, 1024);
    double pw = 0.0, tc = 0.0;
    int np = 0, nt = 0;
    for (int i = 0; i < n; i++) {
        if (p->samples[i].valid & TMOE_F_POWER_INSTANT)
            pw += p->samples[i].power_instant_w, np++;
        else if (p->samples[i].valid & TMOE_F_POWER_AVG)
            pw += p->samples[i].power_avg_w, np++;
        if (p->samples[i].valid & TMOE_F_GPU_TEMP) tc += p->samples[i].gpu_temp_c, nt++;
    }
    if (np) p->idle_w = pw / np;
    if (nt) p->idle_temp_c = tc / nt;
}

static void rest(prof *p) {
    if (!p->measure_energy || isnan(p->idle_temp_c)) return;
    for (double t = 0.0; t < p->c->rest_max_s; t += 0.1) {
        double tc = latest_temp(p);
        if (!isnan(tc) && tc <= p->idle_temp_c + p->c->rest_tol_c) return;
        sleep_s(0.1);
    }
}

static int measure(prof *p, const plan_item *it, tmoe_cost_entry *e, tmoe_error *err) {
    const tmoe_profile_config *c = p->c;
    tmoe_oprun_spec spec = {.backend = p->backend,
                            .device_id = c->device_id,
                            .op = it->op,
                            .etype = it->et,
                            .impl = it->impl,
                            .tokens = it->tokens,
                            .block = c->block,
                            .seed = c->seed,
                            .whole_expert = p->whole};
    spec.min_working_set = (size_t)(c->min_working_set_mb * 1e6);
    tmoe_oprun *o = NULL;
    int rc = tmoe_oprun_create(&spec, &o, err);
    if (rc) return rc;
    double warm[64];
    int nw = c->warmup_calls < 64 ? (c->warmup_calls > 0 ? c->warmup_calls : 1) : 64;
    if ((rc = tmoe_oprun_run(o, nw, warm, err))) goto done;
    double est = warm[nw - 1] > 1e-6 ? warm[nw - 1] : 1e-3; /* ms per call */
    rest(p);

    tmoe_meter_window win;
    if (p->meter) tmoe_meter_begin(p->meter, &win);
    int64_t w0 = tmoe_now_ns();
    int calls = 0;
    double elapsed = 0.0;
    while (elapsed < c->min_seconds || calls < c->min_calls) {
        int chunk = (int)(50.0 / est); /* ~50 ms of work per launch batch */
        chunk = chunk < 1 ? 1 : chunk > 20000 ? 20000 : chunk;
        if (calls + chunk > p->ms_cap) {
            int ncap = (calls + chunk) * 2;
            double *nm = realloc(p->ms, sizeof(double) * (size_t)ncap);
            if (!nm) {
                rc = tmoe_errorf(err, TMOE_ENOMEM, "out of memory for %d call times", ncap);
                goto done;
            }
            p->ms = nm;
            p->ms_cap = ncap;
        }
        if ((rc = tmoe_oprun_run(o, chunk, p->ms + calls, err))) goto done;
        calls += chunk;
        elapsed = (double)(tmoe_now_ns() - w0) / 1e9;
    }
    tmoe_meter_reading rd;
    if (p->meter && (rc = tmoe_meter_end(p->meter, &win, &rd, err))) goto done;

    memset(e, 0, sizeof *e);
    e->op = it->op;
    e->expert_type = it->et;
    e->impl = it->impl;
    e->tokens = it->tokens;
    e->samples = calls;
    tmoe_profile_percentiles(p->ms, calls, &e->latency_median_ms, &e->latency_p90_ms);
    e->energy_board_j = e->energy_dynamic_j = e->avg_power_w = e->temp_impact_c_per_s = NAN;
    e->ncu_occupancy_pct = e->ncu_dram_pct = NAN;
    /* energy measured over the calls: the counter's or the integrated power of samples
     * inside the window, not the latest power before it standing in */
    const tmoe_meter_values *v = p->meter ? &rd.total : NULL;
    if (v && (v->method == TMOE_ENERGY_COUNTER || v->method == TMOE_ENERGY_INTEGRATED) &&
        !isnan(v->energy_j)) {
        e->energy_board_j = v->energy_j / calls;
        e->avg_power_w = v->energy_j / elapsed;
        if (!isnan(p->idle_w))
            e->energy_dynamic_j = e->energy_board_j - p->idle_w * elapsed / calls;
        if (!isnan(v->gpu_temp_start_c) && !isnan(v->gpu_temp_end_c))
            e->temp_impact_c_per_s = (v->gpu_temp_end_c - v->gpu_temp_start_c) / elapsed;
        e->throttled = v->samples > 0 && v->throttle != 0;
    }
    if (p->trace_kernels) {
        /* the kernels one call launches: trace a few more calls through CUPTI */
        enum { KCALLS = 5, KCAP = 16 };
        tmoe_error kerr = {0};
        tmoe_kernel_rec *recs = NULL;
        int nrec = 0;
        if (tmoe_ktrace_start(&kerr) == TMOE_OK) {
            int r1 = tmoe_oprun_run(o, KCALLS, NULL, err);
            int r2 = tmoe_ktrace_stop(&recs, &nrec, &kerr);
            if (r1) {
                free(recs);
                rc = r1;
                goto done;
            }
            if (r2 == TMOE_OK && nrec > 0) {
                static char names[KCAP][200];
                int64_t cnt[KCAP];
                double kms[KCAP];
                int nk = tmoe_ktrace_aggregate(recs, nrec, names, cnt, kms, KCAP);
                e->kernels = calloc((size_t)nk, sizeof *e->kernels);
                if (e->kernels) {
                    for (int i = 0; i < nk; i++) {
                        e->kernels[i].name = names[i];
                        e->kernels[i].count = cnt[i] / KCALLS > 0 ? cnt[i] / KCALLS : 1;
                        e->kernels[i].ms = kms[i] / KCALLS;
                    }
                    e->n_kernels = nk;
                }
            }
        }
        if (kerr.code)
            tmoe_log(TMOE_LOG_WARN, "kernel trace of %s: %s", tmoe_op_name(it->op), kerr.msg);
        free(recs);
    }
done:
    tmoe_oprun_free(o);
    return rc;
}

/* For every (type, impl, tokens) of the plan: the whole expert forward measured like an
 * op, against the sum over its op sequence of the entries just measured. */
static int check_expert_sum(prof *p, const plan_item *plan, int n, const tmoe_cost_model *cm,
                            const char *path, tmoe_error *err) {
    FILE *f = fopen(path, "w");
    if (!f) return tmoe_errorf(err, TMOE_EIO, "cannot write %s", path);
    fprintf(f, "| type | impl | tokens | ops ms | whole ms | ratio | ops J | whole J | ratio |\n"
               "|---|---|---|---|---|---|---|---|---|\n");
    int rc = TMOE_OK;
    for (int i = 0; i < n && !rc; i++) {
        if (plan[i].op != TMOE_OP_LINEAR_FC1) continue; /* one row per expert configuration */
        if (p->c->stop && *p->c->stop) break;
        tmoe_cost_value sum;
        if ((rc = tmoe_cost_expert(cm, plan[i].et, plan[i].impl, plan[i].tokens, &sum, err))) break;
        tmoe_cost_entry e;
        p->whole = 1;
        rc = measure(p, &plan[i], &e, err);
        p->whole = 0;
        free(e.kernels);
        if (rc) break;
        fprintf(f, "| %s | %s | %d | %.4f | %.4f | %.3f | %.5f | %.5f | %.3f |\n",
                tmoe_etype_name(plan[i].et), tmoe_impl_name(plan[i].impl), plan[i].tokens,
                sum.latency_ms, e.latency_median_ms, sum.latency_ms / e.latency_median_ms,
                sum.energy_j, e.energy_board_j, sum.energy_j / e.energy_board_j);
        fflush(f);
    }
    if (fclose(f) && !rc) rc = tmoe_errorf(err, TMOE_EIO, "cannot write %s", path);
    return rc;
}

int tmoe_profile_run(const tmoe_profile_config *c, tmoe_cost_model **out, tmoe_error *err) {
    *out = NULL;
    if (c->ntokens < 1) return tmoe_errorf(err, TMOE_EINVAL, "no token counts to profile");
    if (!(c->min_seconds >= 0.0) || c->min_calls < 1)
        return tmoe_errorf(err, TMOE_EINVAL, "min-seconds must be >= 0 and min calls >= 1");
    int rc = tmoe_block_config_validate(&c->block, err);
    if (rc) return rc;
    prof p = {.c = c, .backend = c->backend};
    if (p.backend == TMOE_BACKEND_AUTO)
        p.backend = tmoe_backend_probe(TMOE_BACKEND_CUDA, NULL) == TMOE_OK ? TMOE_BACKEND_CUDA
                                                                           : TMOE_BACKEND_CPU;
    else if ((rc = tmoe_backend_probe(p.backend, err)))
        return rc;
    int cap = tmoe_profile_plan_cap(c);
    plan_item *plan = tmoe_calloc((size_t)cap, sizeof *plan, err);
    if (!plan) return TMOE_ENOMEM;
    int n = tmoe_profile_plan(c, plan, cap);
    tmoe_cost_model *cm = NULL;
    if ((rc = tmoe_cost_create(&cm, err))) goto fail;

    tmoe_telemetry_config tc = tmoe_telemetry_config_default();
    tc.kind = c->telemetry;
    if ((rc = tmoe_telemetry_open(&tc, &p.tel, err))) goto fail;
    /* the simulated GPU does not see the work this process runs: no energy from it */
    p.measure_energy = !tmoe_telemetry_is_simulated(p.tel) && p.backend == TMOE_BACKEND_CUDA;
    if (p.measure_energy) {
        tmoe_monitor_config mc = tmoe_monitor_config_default();
        mc.period_ns = 20000000;
        mc.energy_period_ns = 100000000; /* every counter step: energy per op is the point */
        if ((rc = tmoe_monitor_create(p.tel, &mc, &p.mon, err))) goto fail;
        /* device 0 of the telemetry, every total its own */
        tmoe_meter_config mtc = tmoe_meter_config_default();
        mtc.own_only = 1;
        if ((rc = tmoe_meter_create(p.tel, p.mon, &mtc, &p.meter, err))) goto fail;
    } else {
        tmoe_log(TMOE_LOG_WARN,
                 "profile: energy and temperature are not measured (%s telemetry, "
                 "%s backend): the cost model gets latencies only",
                 tmoe_telemetry_source_name(p.tel), tmoe_backend_kind_name(p.backend));
    }
    tmoe_cost_meta meta = tmoe_cost_get_meta(cm);
    tmoe_device_info di;
    if (p.measure_energy && tmoe_telemetry_device_info(p.tel, 0, &di, NULL) == TMOE_OK) {
        snprintf(meta.device_name, sizeof meta.device_name, "%s", di.name);
        snprintf(meta.device_uuid, sizeof meta.device_uuid, "%s", di.uuid);
        meta.power_limit_w = di.power_limit_w;
    } else {
        snprintf(meta.device_name, sizeof meta.device_name, "%s backend (no energy telemetry)",
                 tmoe_backend_kind_name(p.backend));
    }
    snprintf(meta.device_telemetry, sizeof meta.device_telemetry, "%s",
             p.measure_energy ? tmoe_telemetry_source_name(p.tel) : "none");
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(meta.created, sizeof meta.created, "%Y-%m-%dT%H:%M:%SZ", &tm);
    snprintf(meta.tool, sizeof meta.tool, "thermoe %s (git %s)", TMOE_VERSION, THERMOE_GIT_SHA);
    meta.d_model = c->block.d_model;
    meta.d_ff = c->block.d_ff;
    meta.group_size = c->block.group_size;
    measure_idle(&p);
    meta.idle_power_w = p.idle_w;
    if (p.backend == TMOE_BACKEND_CUDA) {
        tmoe_error kerr = {0};
        tmoe_kernel_rec *recs = NULL;
        int nrec = 0;
        p.trace_kernels =
            tmoe_ktrace_start(&kerr) == TMOE_OK && tmoe_ktrace_stop(&recs, &nrec, &kerr) == TMOE_OK;
        free(recs);
        if (!p.trace_kernels)
            tmoe_log(TMOE_LOG_WARN, "profile: kernels are not listed per op: %s", kerr.msg);
    }
    tmoe_cost_set_meta(cm, &meta);

    int64_t t_start = tmoe_now_ns();
    for (int i = 0; i < n; i++) {
        if (c->stop && *c->stop) {
            rc = tmoe_errorf(err, TMOE_EINTR, "stopped after %d of %d measurements", i, n);
            break;
        }
        char what[160];
        snprintf(what, sizeof what, "%s %s/%s %d tokens", tmoe_op_name(plan[i].op),
                 tmoe_etype_name(plan[i].et), tmoe_impl_name(plan[i].impl), plan[i].tokens);
        double el = (double)(tmoe_now_ns() - t_start) / 1e9;
        if (c->progress) c->progress(c->progress_user, i, n, what, i ? el / i * (n - i) : NAN);
        tmoe_cost_entry e;
        if ((rc = measure(&p, &plan[i], &e, err))) {
            tmoe_error_prefix(err, rc, "%s", what);
            break;
        }
        rc = tmoe_cost_add(cm, &e, err); /* copies the kernel names */
        if (!rc && plan[i].also_other_impl) {
            e.impl = e.impl == TMOE_IMPL_FUSED ? TMOE_IMPL_UNFUSED : TMOE_IMPL_FUSED;
            rc = tmoe_cost_add(cm, &e, err);
        }
        free(e.kernels);
        if (rc) break;
    }
    if (!rc && c->check_path) rc = check_expert_sum(&p, plan, n, cm, c->check_path, err);
    if (c->progress && !rc) c->progress(c->progress_user, n, n, "done", 0.0);
    free(p.ms);
    tmoe_meter_free(p.meter);
    tmoe_monitor_free(p.mon);
    tmoe_telemetry_free(p.tel);
    free(plan);
    *out = cm;
    return rc;
fail:
    free(p.ms);
    tmoe_meter_free(p.meter);
    tmoe_monitor_free(p.mon);
    tmoe_telemetry_free(p.tel);
    tmoe_cost_free(cm);
    free(plan);
    return rc;
}
