/* The serving replay behind `thermoe serve` (docs/serve.md): requests arrive at their trace
 * times, join the running batch of the decoder LM (continuous batching; prompts prefilled in
 * chunks, decode first in every step), hold KV positions reserved on admission (a request
 * waits while the limit is full), and leave at their generated length. The LM runs on the
 * run harness's runner (CPU KV cache or CUDA LM, run_lm.c). On the simulated GPU each step is
 * billed at the production expert shape (run_lm_bill) and its billed time advances the
 * simulated clock that arrivals are compared against; on NVML the clock is the wall clock and
 * the GPU measures every step (on the CUDA backend with production-shape experts beside the
 * trained model's). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exp/runner_internal.h"

tmoe_serve_config tmoe_serve_config_default(void) {
    tmoe_serve_config c;
    memset(&c, 0, sizeof c);
    c.expert_shape = (tmoe_expert_shape){TMOE_SHAPE_MIXTRAL, 4096, 14336};
    c.expert_type = TMOE_ET_FP16;
    c.group_size = tmoe_run_config_default().block.group_size;
    c.strategy = TMOE_ROUTE_BASELINE;
    c.router = tmoe_router_config_default();
    c.seed = 42;
    c.prefill_chunk = 64;
    c.max_batch_tokens = 256;
    c.max_seqs = 32;
    c.trace_time_scale = c.trace_context_scale = 1.0;
    c.slo_ttft_s = 1.0;
    c.slo_tpot_s = 0.1;
    c.temp_target_c = c.router.temp_target_c;
    c.backend = TMOE_BACKEND_CPU;
    c.telemetry = TMOE_TELEMETRY_SIM;
    c.progress_every_s = 10.0;
    return c;
}

typedef struct seq {
    int req, slot, fed, out; /* request, KV slot, tokens fed, tokens generated */
    int n_step;              /* tokens it adds in the step being built (0: none) */
    long off;                /* where its text starts in the token file */
} seq;

typedef struct serve_ctx {
    run_ctx *r;
    const tmoe_serve_config *c;
    const tmoe_arrivals *a;
    tmoe_serve_request *q;
    seq *run; /* (max_seqs) running */
    int nrun;
    int *wait; /* FIFO of arrived, not admitted */
    int whead, wtail;
    long kv_used, kv_limit;
    int32_t *slots, *n_new;
    uint32_t *tok;
    FILE *steps;
    double t0;
    tmoe_serve_segment *seg; /* (cap_seg) steps and idle waits, in time order */
    int nseg, cap_seg;
    int real;              /* 1: NVML (wall clock, measured); 0: the simulated GPU */
    tmoe_meter_window win; /* the window of the segment in progress */
    double win_t0;         /* where it opened, s on the replay's clock */
    float *logits;         /* (max_seqs, V) the CUDA runner's LM head; NULL on the CPU */
} serve_ctx;

/* Room for one more segment: the array doubles (rarely: amortized O(1) per step). */
static tmoe_serve_segment *seg_next(serve_ctx *s, tmoe_error *err) {
    if (s->nseg == s->cap_seg) {
        int nc = s->cap_seg ? 2 * s->cap_seg : 4096;
        tmoe_serve_segment *g = realloc(s->seg, sizeof *g * (size_t)nc);
        if (!g) {
            tmoe_errorf(err, TMOE_ENOMEM, "serve: out of memory at %d steps", s->nseg);
            return NULL;
        }
        s->seg = g;
        s->cap_seg = nc;
    }
    return &s->seg[s->nseg++];
}

static double now_s(serve_ctx *s) {
    return run_now_s(s->r) - s->t0;
}

static int need_kv(const tmoe_arrival *q) {
    return q->prompt + q->gen - 1;
}

/* Open the meter's window of the next segment. On the simulated GPU it opens where the
 * segment starts (its clock stands still between segments); on NVML it opens again as soon
 * as the last one closed, so the host's work between steps (router update, admission) is
 * measured too and the segments tile the wall clock. */
static void window_open(serve_ctx *s) {
    s->win_t0 = now_s(s);
    tmoe_meter_begin(s->r->meter, &s->win);
}

/* Close the segment's window into rd (and open the next one on NVML). */
static int window_close(serve_ctx *s, tmoe_meter_reading *rd, tmoe_error *err) {
    int rc = tmoe_meter_end(s->r->meter, &s->win, rd, err);
    if (!rc && s->real) window_open(s);
    return rc;
}

static int setup(run_ctx *r, const tmoe_serve_config *c, int max_len, int positions,
                 tmoe_error *err) {
    tmoe_run_config *rc = &r->cfg;
    *rc = tmoe_run_config_default();
    rc->model_dir = c->model_dir;
    rc->tokens_path = c->tokens_path;
    rc->cost_model_path = c->cost_model_path;
    rc->expert_shape = c->expert_shape;
    rc->expert_shape_given = c->expert_shape_given;
    rc->block.expert_type = c->expert_type;
    rc->block.group_size = c->group_size;
    rc->act8 = c->act8;
    rc->copy_given = c->copy_given;
    rc->copy_all = c->copy_all;
    memcpy(rc->copy, c->copy, sizeof rc->copy);
    rc->copy_type = c->copy_type;
    rc->telemetry = c->telemetry;
    rc->backend = c->backend;
    rc->device_id = c->device_id;
    rc->seed = c->seed;
    /* the backend first: a build without CUDA says so before the model loads */
    tmoe_backend_kind bk;
    int e0 = tmoe_backend_resolve(rc->backend, &bk, err);
    if (e0) return tmoe_error_prefix(err, e0, "--backend %s", tmoe_backend_kind_name(rc->backend));
    rc->backend = bk;
    rc->router = c->router;
    for (int w = 0; w < TMOE_WL_COUNT; w++) rc->workloads[w] = w == TMOE_WL_STANDARD;
    r->rank = 0;
    r->ranks = 1;
    r->rows_logged = -1;
    r->lock_fd = -1;
    r->wall0_ns = tmoe_now_ns();
    r->blk_cfg = rc->block;
    int e = run_lm_config(r, err);
    if (!e) e = run_init_cost(r, err);
    if (!e) e = run_init_telemetry(r, err);
    if (e) return e;
    if (!r->sim && bk == TMOE_BACKEND_CPU)
        tmoe_log(TMOE_LOG_WARN,
                 "serve: NVML measures the GPU, but the CPU backend computes the model: the "
                 "energy is the GPU's draw beside it, not the model's (--backend cuda)");
    /* static_optimal is fitted on windows of the standard workload (2 x 64 tokens) */
    r->wl[TMOE_WL_STANDARD] = tmoe_workload_make(TMOE_WL_STANDARD, 2, 64, c->seed);
    r->wl[TMOE_WL_STANDARD].n_seqs = 2;
    r->wl[TMOE_WL_STANDARD].seq_len = 64;
    r->wl[TMOE_WL_STANDARD].tokens = 128;
    r->max_tokens = c->max_batch_tokens > 128 ? c->max_batch_tokens : 128;
    r->samples = tmoe_malloc(sizeof(tmoe_sample) * RUN_MAX_SAMPLES, err);
    if (!r->samples) return TMOE_ENOMEM;
    /* the replay's own cache: max_seqs slots of the longest request (at least the 2 x 64 of
     * static_optimal's calibration windows) */
    int len = max_len > 64 ? max_len : 64;
    r->lm->kv_seqs = c->max_seqs > 2 ? c->max_seqs : 2;
    r->lm->kv_len = len < positions ? len : positions;
    if ((e = run_lm_init(r, err))) return e;
    for (int w = 0; w < TMOE_WL_COUNT; w++) r->base_latency_ms[w] = r->base_throughput[w] = NAN;
    r->t0_ns = tmoe_monitor_now_ns(r->mon);
    tmoe_meter_wait(r->meter, 0.2); /* first samples */
    return run_lm_make_routers(r, c->strategy, TMOE_WL_STANDARD, c->seed, err);
}

/* Admit waiting requests in arrival order while a slot and their KV reservation fit. */
static int admit(serve_ctx *s, tmoe_error *err) {
    while (s->whead < s->wtail && s->nrun < s->c->max_seqs) {
        int i = s->wait[s->whead];
        const tmoe_arrival *q = &s->a->req[i];
        if (s->kv_used + need_kv(q) > s->kv_limit) break;
        seq *sq = &s->run[s->nrun];
        int rc = run_lm_seq_open(s->r->lm, &sq->slot, err);
        if (rc) return rc;
        sq->req = i;
        sq->fed = sq->out = 0;
        tmoe_rng g;
        tmoe_rng_seed_stream(&g, s->c->seed, 0x5e77e000ull + (uint64_t)i);
        sq->off = (long)tmoe_rng_below(&g, (uint32_t)(s->r->lm->tok.n - need_kv(q)));
        s->kv_used += need_kv(q);
        s->q[i].admit_s = now_s(s);
        s->nrun++;
        s->whead++;
    }
    return TMOE_OK;
}

static int step(serve_ctx *s, int index, tmoe_serve_summary *sum, tmoe_error *err) {
    run_ctx *r = s->r;
    run_lm *lm = r->lm;
    int budget = s->c->max_batch_tokens, nb = 0, T = 0, prefill = 0, decode = 0;
    /* decode first (one token each), then prompt chunks in admission order */
    for (int j = 0; j < s->nrun; j++) s->run[j].n_step = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int j = 0; j < s->nrun; j++) {
            seq *sq = &s->run[j];
            const tmoe_arrival *q = &s->a->req[sq->req];
            int in_prefill = sq->fed < q->prompt, n;
            if (pass == 0 && in_prefill) continue;
            if (pass == 1 && !in_prefill) continue;
            n = in_prefill ? q->prompt - sq->fed : 1;
            if (in_prefill && n > s->c->prefill_chunk) n = s->c->prefill_chunk;
            if (n > budget - T) n = budget - T;
            if (n <= 0) continue;
            /* teacher forcing: the generated tokens fed back are the text's continuation */
            memcpy(s->tok + T, lm->tok.ids + sq->off + sq->fed, sizeof(uint32_t) * (size_t)n);
            s->slots[nb] = sq->slot;
            s->n_new[nb++] = n;
            sq->n_step = n;
            T += n;
            if (in_prefill)
                prefill += n;
            else
                decode += n;
        }
    if (!nb) return tmoe_errorf(err, TMOE_EINVAL, "internal: a step with nothing to run");
    if (!s->real) window_open(s);
    double t_start = now_s(s);
    lm->hs = run_hw_snapshot(r, r->cfg.router.horizon_s);
    lm->pass = LM_PASS_STRATEGY;
    lm->T = T;
    lm->route_ms = lm->pred_energy_j = lm->agree_sum = 0.0;
    lm->rc_layers = 0;
    memset(lm->bias, 0, sizeof(float) * (size_t)lm->n_moe * lm->m->cfg.num_experts);
    tmoe_lm_batch b = {nb, s->slots, s->n_new, s->tok, 0};
    /* teacher forcing needs no logits: on the CPU NULL skips the LM head; the CUDA runner
     * computes it (each sequence's last row), as a server sampling the next token would */
    int rc = run_lm_engine_step(lm, &b, s->logits, err);
    if (rc) return tmoe_error_prefix(err, rc, "step %d", index);
    /* the step's selections, checked against what ran, are what run_lm_bill bills */
    if ((rc = run_lm_step_done(lm, 0, err))) return tmoe_error_prefix(err, rc, "step %d", index);
    /* in steps.csv, so that routing and precision can be told apart in a replay */
    double active_experts = run_lm_active_experts(lm); /* this step alone: nsteps is 1 */
    batch_out o;
    memset(&o, 0, sizeof o);
    o.tokens = T;
    if (s->real) {
        /* the GPU bills itself: the step's latency is its wall time */
        o.hw.latency_ms = (now_s(s) - t_start) * 1e3;
    } else if ((rc = run_lm_bill(r, &o, &o.hw, err))) {
        return tmoe_error_prefix(err, rc, "billing step %d to the simulated GPU", index);
    }
    tmoe_meter_reading rd;
    double seg_t0 = s->win_t0;
    if ((rc = window_close(s, &rd, err))) return rc;
    run_hw_from_reading(r, &rd, &o.hw); /* energy, power, temperatures: not the latency */
    double t_end = s->real ? s->win_t0 : now_s(s), ej = o.hw.energy_j;
    double period = o.hw.period_s > 0.0 ? o.hw.period_s : o.hw.latency_ms / 1e3;
    /* the routers learn from what the meter saw */
    tmoe_route_obs obs = tmoe_route_obs_unknown();
    obs.power_w = isfinite(ej) && period > 0.0 ? ej / period : o.hw.power_avg_w;
    obs.temp_c = o.hw.temp_end_c;
    obs.latency_ms = o.hw.latency_ms;
    obs.throughput = T / period;
    obs.period_s = obs.dt_s = period;
    tmoe_ttha_record rec;
    if ((rc = run_router_update(r, &obs, &rec, err))) return rc;
    sum->energy_j += ej;
    sum->prompt_tokens += prefill;
    if (s->steps)
        fprintf(s->steps,
                "%d,%.6f,%.6f,%d,%d,%d,%d,%d,%d,%ld,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%.4g,%s\n", index,
                t_start, t_end, s->nrun, s->wtail - s->whead, nb, prefill, decode, T, s->kv_used,
                o.hw.latency_ms, ej, o.hw.power_avg_w, o.hw.power_peak_w, o.hw.temp_peak_c,
                o.hw.mem_temp_peak_c, active_experts, rd.source);
    if (s->steps) fflush(s->steps); /* a killed replay leaves whole rows (docs/serve.md) */
    tmoe_serve_segment *g = seg_next(s, err);
    if (!g) return TMOE_ENOMEM;
    *g = (tmoe_serve_segment){seg_t0,
                              t_end,
                              ej,
                              o.hw.power_peak_w,
                              o.hw.temp_peak_c,
                              o.hw.mem_temp_peak_c,
                              s->nrun + s->wtail - s->whead,
                              0,
                              active_experts};
    /* each request's share of the step, by tokens; first tokens and finishes at its end */
    for (int j = 0; j < s->nrun; j++) {
        seq *sq = &s->run[j];
        int n = sq->n_step;
        if (!n) continue;
        const tmoe_arrival *q = &s->a->req[sq->req];
        tmoe_serve_request *out = &s->q[sq->req];
        int was_prefill = sq->fed < q->prompt;
        sq->fed += n;
        out->energy_j += ej * n / T;
        out->steps++;
        if (was_prefill && sq->fed == q->prompt) {
            out->first_token_s = t_end;
            sq->out = 1;
            g->generated++;
        } else if (!was_prefill) {
            sq->out++;
            g->generated++;
        }
    }
    sum->generated_tokens += g->generated;
    return TMOE_OK;
}

/* Requests at their generated length leave; their KV reservation is released. */
static void retire(serve_ctx *s, int *done) {
    for (int j = 0; j < s->nrun;) {
        seq *sq = &s->run[j];
        const tmoe_arrival *q = &s->a->req[sq->req];
        if (sq->out < q->gen) {
            j++;
            continue;
        }
        s->q[sq->req].finish_s = s->seg[s->nseg - 1].t1_s; /* the end of the step just run */
        run_lm_seq_close(s->r->lm, sq->slot);
        s->kv_used -= need_kv(q);
        (*done)++;
        s->run[j] = s->run[--s->nrun]; /* order among running requests does not matter */
    }
}

/* requests.csv: the first n requests (those that arrived). */
static int write_requests(const char *dir, const tmoe_arrivals *a, const tmoe_serve_request *q,
                          int n, const char *source, tmoe_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/requests.csv", dir);
    FILE *f = fopen(path, "w");
    if (!f) return tmoe_errorf(err, TMOE_EIO, "%s: cannot write", path);
    fprintf(f, "request,arrival_s,admit_s,first_token_s,finish_s,prompt_tokens,"
               "generated_tokens,trace_prompt_tokens,trace_generated_tokens,steps,energy_j,"
               "ttft_s,tpot_s,source\n");
    for (int i = 0; i < n; i++) {
        const tmoe_serve_request *x = &q[i];
        double tpot = x->gen > 1 ? (x->finish_s - x->first_token_s) / (x->gen - 1) : NAN;
        fprintf(f, "%d,%.6f,%.6f,%.6f,%.6f,%d,%d,%d,%d,%d,%.6g,%.6f,%.6g,%s\n", i, x->arrival_s,
                x->admit_s, x->first_token_s, x->finish_s, x->prompt, x->gen,
                a->req[i].trace_prompt, a->req[i].trace_gen, x->steps, x->energy_j,
                x->first_token_s - x->arrival_s, tpot, source);
    }
    return fclose(f) ? tmoe_errorf(err, TMOE_EIO, "%s: write failed", path) : TMOE_OK;
}

static int write_summary(const char *dir, const tmoe_serve_config *c, const tmoe_arrivals *a,
                         const run_ctx *r, const tmoe_serve_summary *s, tmoe_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/summary.json", dir);
    json_t *o = json_object();
    json_t *m = json_object();
    json_object_set_new(m, "trace", json_string(a->source));
    json_object_set_new(m, "time_scale", json_real(c->trace_time_scale));
    json_object_set_new(m, "context_scale", json_real(c->trace_context_scale));
    json_object_set_new(m, "max_context", json_integer(c->trace_max_context));
    json_object_set_new(m, "max_generated", json_integer(c->trace_max_generated));
    json_object_set_new(m, "requests_capped", json_integer(a->capped));
    json_object_set_new(m, "trace_duration_s",
                        c->trace_duration_s > 0.0 ? json_real(c->trace_duration_s)
                                                  : json_null()); /* null: the whole trace */
    json_object_set_new(m, "model", json_string(c->model_dir));
    json_object_set_new(m, "tokens",
                        json_string(c->tokens_path ? c->tokens_path : tmoe_run_default_tokens()));
    json_object_set_new(m, "routing_strategy", json_string(tmoe_route_strategy_name(c->strategy)));
    json_object_set_new(m, "router", run_meta_router(&r->cfg));
    json_object_set_new(m, "expert_shape", json_string(r->lm->shape_text));
    json_object_set_new(m, "expert_type", json_string(tmoe_etype_name(c->expert_type)));
    json_object_set_new(m, "group_size",
                        tmoe_etype_is_quant(c->expert_type) ? json_integer(c->group_size)
                                                            : json_null());
    json_object_set_new(m, "expert_activations",
                        tmoe_etype_is_quant(c->expert_type) ? json_string(c->act8 ? "int8" : "fp16")
                                                            : json_null());
    json_t *cp = run_meta_copies(r);
    if (cp) json_object_set_new(m, "expert_copies", cp);
    json_object_set_new(m, "cost_model", json_string(r->cost_path));
    json_object_set_new(m, "prefill_chunk", json_integer(c->prefill_chunk));
    json_object_set_new(m, "max_batch_tokens", json_integer(c->max_batch_tokens));
    json_object_set_new(m, "max_seqs", json_integer(c->max_seqs));
    json_object_set_new(m, "kv_tokens", json_integer(c->kv_tokens));
    json_object_set_new(m, "seed", json_integer((json_int_t)c->seed));
    json_object_set_new(m, "argv", json_string(c->argv_line ? c->argv_line : ""));
    int sim = r->sim != NULL, cuda = r->lm->gpu != NULL;
    const char *billed =
        sim     ? "MoE layers only (gate, top-k, permute, experts, combine) from the cost model; "
                  "attention, norms, embedding and LM head are not billed"
        : !cuda ? "measured by NVML over each step: the whole GPU, which did not run the model "
                  "(the CPU backend computed it): the GPU's draw beside it, not the model's"
        : r->lm->shape.kind != TMOE_SHAPE_TRAINED
            ? "measured by NVML over each step: the whole GPU, all layers, the production-shape "
              "experts beside the trained model's"
            : "measured by NVML over each step: the whole GPU, all layers of the trained model";
    json_object_set_new(m, "billed", json_string(billed));
    json_object_set_new(m, "clock",
                        json_string(sim ? "simulated seconds (the simulated GPU's)"
                                        : "wall-clock seconds (CLOCK_MONOTONIC)"));
    json_object_set_new(m, "backend", json_string(run_backend_name(r)));
    json_object_set_new(m, "telemetry", json_string(tmoe_telemetry_choice(r->tel)));
    json_object_set_new(m, "device_id", json_integer(c->device_id));
    json_object_set_new(m, "device_name",
                        json_string(r->dev_info.name[0] ? r->dev_info.name : "unknown"));
    json_object_set_new(m, "driver",
                        json_string(sim                     ? "simulated"
                                    : r->dev_info.driver[0] ? r->dev_info.driver
                                                            : r->dev_driver));
    json_object_set_new(o, "schema", json_string("thermoe.serve/1"));
    json_object_set_new(o, "metadata", m);
    json_object_set_new(o, "source", json_string(s->source));
    json_object_set_new(o, "simulated", json_boolean(sim));
    json_object_set_new(o, "interrupted", json_boolean(s->interrupted));
#define NUM(o, k, v) json_object_set_new(o, k, isfinite(v) ? json_real(v) : json_null())
    json_object_set_new(m, "slo_ttft_s", json_real(c->slo_ttft_s));
    json_object_set_new(m, "slo_tpot_s", json_real(c->slo_tpot_s));
    json_object_set_new(m, "temp_target_c", json_real(c->temp_target_c));
    json_object_set_new(o, "requests", json_integer(s->requests));
    json_object_set_new(o, "steps", json_integer(s->steps));
    json_object_set_new(o, "prompt_tokens", json_integer(s->prompt_tokens));
    json_object_set_new(o, "generated_tokens", json_integer(s->generated_tokens));
    json_object_set_new(o, "max_running", json_integer(s->max_running));
    json_object_set_new(o, "max_waiting", json_integer(s->max_waiting));
    NUM(o, "duration_s", s->duration_s);
    NUM(o, "step_energy_j", s->energy_j);
    NUM(o, "idle_energy_j", s->idle_energy_j);
    NUM(o, "wall_s", s->wall_s);
    json_t *st = json_object();
    json_object_set_new(st, "detected", json_boolean(s->steady));
    json_object_set_new(st, "note", json_string(s->steady_note));
    json_object_set_new(st, "rule",
                        json_string("the run cut into 20 bins; the longest stretch of at least 5 "
                                    "in which requests in the system (25%, >= 0.5), average "
                                    "power (15%, >= 5 W) and GPU temperature (1.5 C) each stay "
                                    "within their band of their mean, without drift between "
                                    "its halves (docs/serve.md)"));
    json_object_set_new(o, "steady_state", st);
    const tmoe_serve_stats *v[2] = {&s->window, &s->run};
    static const char *const vname[2] = {"window", "whole_run"};
    for (int k = 0; k < 2; k++) {
        const tmoe_serve_stats *x = v[k];
        json_t *w = json_object();
        json_object_set_new(w, "source", json_string(s->source));
        if (k == 0)
            json_object_set_new(
                w, "over", json_string(s->steady ? "steady state" : "whole run (no steady state)"));
        NUM(w, "start_s", x->start_s);
        NUM(w, "end_s", x->end_s);
        json_object_set_new(w, "requests", json_integer(x->requests));
        json_object_set_new(w, "finished", json_integer(x->finished));
        json_object_set_new(w, "generated_tokens", json_integer(x->generated_tokens));
        NUM(w, "ttft_p50_s", x->ttft_p50_s);
        NUM(w, "ttft_p90_s", x->ttft_p90_s);
        NUM(w, "ttft_p99_s", x->ttft_p99_s);
        NUM(w, "tpot_p50_s", x->tpot_p50_s);
        NUM(w, "tpot_p90_s", x->tpot_p90_s);
        NUM(w, "tpot_p99_s", x->tpot_p99_s);
        json_object_set_new(w, "slo_met", json_integer(x->slo_met));
        NUM(w, "goodput_rps", x->goodput_rps);
        NUM(w, "goodput_share", x->goodput_share);
        NUM(w, "energy_j", x->energy_j);
        NUM(w, "j_per_request", x->j_per_request);
        NUM(w, "j_per_generated_token", x->j_per_generated_token);
        NUM(w, "power_avg_w", x->power_avg_w);
        NUM(w, "power_peak_w", x->power_peak_w);
        NUM(w, "gpu_temp_peak_c", x->gpu_temp_peak_c);
        NUM(w, "mem_temp_peak_c", x->mem_temp_peak_c);
        NUM(w, "gpu_above_target_s", x->gpu_above_target_s);
        NUM(w, "mem_above_target_s", x->mem_above_target_s);
        NUM(w, "active_experts", x->active_experts);
        json_object_set_new(o, vname[k], w);
    }
#undef NUM
    int rc = json_dump_file(o, path, JSON_INDENT(2)) ? TMOE_EIO : TMOE_OK;
    json_decref(o);
    return rc ? tmoe_errorf(err, rc, "%s: write failed", path) : TMOE_OK;
}

static int check_requests(const tmoe_serve_config *c, const tmoe_arrivals *a, long kv_limit,
                          int positions, tmoe_error *err) {
    for (int i = 0; i < a->n; i++) {
        const tmoe_arrival *q = &a->req[i];
        if (q->prompt < 1 || q->gen < 1 || !isfinite(q->arrival_s) ||
            (i && q->arrival_s < a->req[i - 1].arrival_s))
            return tmoe_errorf(err, TMOE_EINVAL,
                               "request %d: expected lengths >= 1 and arrivals in order", i);
        if (need_kv(q) > positions)
            return tmoe_errorf(err, TMOE_EINVAL,
                               "request %d: %d prompt + %d generated tokens exceed the model's "
                               "%d positions: cap them (--max-context, --max-generated or "
                               "--context-scale)",
                               i, q->prompt, q->gen, positions);
        if (need_kv(q) > kv_limit)
            return tmoe_errorf(err, TMOE_EINVAL,
                               "request %d needs %d KV positions, more than the limit of %ld "
                               "(--kv-tokens): it could never be admitted",
                               i, need_kv(q), kv_limit);
    }
    if (c->max_seqs < 1 || c->prefill_chunk < 1 || c->max_batch_tokens < c->max_seqs)
        return tmoe_errorf(err, TMOE_EINVAL,
                           "expected max_seqs >= 1, prefill_chunk >= 1 and max_batch_tokens >= "
                           "max_seqs (every running request decodes each step); got %d, %d, %d",
                           c->max_seqs, c->prefill_chunk, c->max_batch_tokens);
    return TMOE_OK;
}

/* The progress callback, at most every progress_every_s of wall time (and once at the end). */
static void progress(serve_ctx *s, const tmoe_serve_summary *S, int next, int done, int64_t w0,
                     double *last_wall, int force) {
    const tmoe_serve_config *c = s->c;
    if (!c->on_progress) return;
    double wall = (double)(tmoe_now_ns() - w0) / 1e9;
    if (!force && wall - *last_wall < c->progress_every_s) return;
    *last_wall = wall;
    tmoe_serve_progress p = {.requests = s->a->n,
                             .arrived = next,
                             .done = done,
                             .running = s->nrun,
                             .waiting = s->wtail - s->whead,
                             .steps = S->steps,
                             .replay_s = now_s(s),
                             .wall_s = wall,
                             .source = S->source};
    c->on_progress(&p, c->progress_user);
}

/* Idle until the next arrival at t_next: the GPU cools, its energy counted apart. On the
 * simulated GPU the clock jumps there; on NVML the thread sleeps, in pieces of at most 1 s so
 * that a stop request and the progress display are not held up. */
static int idle(serve_ctx *s, tmoe_serve_summary *S, double t, double t_next, int next, int done,
                int64_t w0, double *last_wall, tmoe_error *err) {
    run_ctx *r = s->r;
    if (!s->real) window_open(s);
    double seg_t0 = s->win_t0;
    /* 1 us past the arrival: the clock's rounding never leaves it just short */
    if (!s->real) {
        tmoe_meter_wait(r->meter, t_next - t + 1e-6);
    } else {
        for (double left; (left = t_next + 1e-6 - now_s(s)) > 0.0 && !run_stop_requested;) {
            tmoe_meter_wait(r->meter, left < 1.0 ? left : 1.0);
            progress(s, S, next, done, w0, last_wall, 0);
        }
    }
    tmoe_meter_reading rd;
    int rc = window_close(s, &rd, err);
    if (rc) return rc;
    batch_hw hw;
    run_hw_from_reading(r, &rd, &hw);
    S->idle_energy_j += hw.energy_j;
    tmoe_serve_segment *g = seg_next(s, err);
    if (!g) return TMOE_ENOMEM;
    double t1 = s->real ? s->win_t0 : now_s(s);
    *g = (tmoe_serve_segment){
        seg_t0, t1, hw.energy_j, hw.power_peak_w, hw.temp_peak_c, hw.mem_temp_peak_c, 0, 0, NAN};
    return TMOE_OK;
}

int tmoe_serve_run(const tmoe_serve_config *c, const tmoe_arrivals *a, tmoe_serve_summary *sum,
                   tmoe_serve_request **req_out, tmoe_error *err) {
    if (req_out) *req_out = NULL;
    tmoe_serve_summary S = {0};
    S.source = "sim";
    if (!a || a->n < 1) return tmoe_errorf(err, TMOE_EINVAL, "serve: no requests to replay");
    if (!c->model_dir) return tmoe_errorf(err, TMOE_EINVAL, "serve: expected a model directory");
    int64_t w0 = tmoe_now_ns();
    run_stop_requested = 0;
    int max_len = 1;
    for (int i = 0; i < a->n; i++)
        if (need_kv(&a->req[i]) > max_len) max_len = need_kv(&a->req[i]);
    serve_ctx s = {0};
    s.c = c;
    s.a = a;
    run_ctx *r = tmoe_calloc(1, sizeof *r, err);
    if (!r) return TMOE_ENOMEM;
    s.r = r;
    tmoe_lm_config mc;
    int rc = tmoe_lm_config_read(c->model_dir, &mc, err);
    if (rc) {
        free(r);
        return tmoe_error_prefix(err, rc, "model %s", c->model_dir);
    }
    s.kv_limit = c->kv_tokens > 0 ? c->kv_tokens : (long)c->max_seqs * max_len;
    if ((rc = check_requests(c, a, s.kv_limit, mc.max_positions, err))) {
        free(r);
        return rc;
    }
    rc = setup(r, c, max_len, mc.max_positions, err);
    s.real = !rc && !r->sim;
    if (s.real) S.source = "nvml";
    s.q = calloc((size_t)a->n, sizeof *s.q);
    s.run = calloc((size_t)c->max_seqs, sizeof *s.run);
    s.wait = calloc((size_t)a->n, sizeof *s.wait);
    s.slots = calloc((size_t)c->max_seqs, sizeof *s.slots);
    s.n_new = calloc((size_t)c->max_seqs, sizeof *s.n_new);
    s.tok = calloc((size_t)c->max_batch_tokens, sizeof *s.tok);
    if (!rc && r->lm->gpu)
        s.logits = malloc(sizeof(float) * (size_t)c->max_seqs * (size_t)mc.vocab_size);
    if (!rc &&
        (!s.q || !s.run || !s.wait || !s.slots || !s.n_new || !s.tok || (r->lm->gpu && !s.logits)))
        rc = tmoe_errorf(err, TMOE_ENOMEM, "serve: out of memory for %d requests", a->n);
    if (!rc && r->lm->tok.n <= max_len)
        rc = tmoe_errorf(err, TMOE_EINVAL, "the token file has %lld ids: requests need %d",
                         (long long)r->lm->tok.n, max_len + 1);
    if (!rc && c->out_dir) {
        rc = tmoe_mkdir_p(c->out_dir, err);
        char path[4096];
        snprintf(path, sizeof path, "%s/steps.csv", c->out_dir);
        if (!rc && !(s.steps = fopen(path, "w")))
            rc = tmoe_errorf(err, TMOE_EIO, "%s: cannot write", path);
        if (!rc)
            fprintf(s.steps,
                    "step,t_start_s,t_end_s,running,waiting,seqs,prefill_tokens,"
                    "decode_tokens,tokens,kv_tokens,latency_ms,energy_j,power_avg_w,"
                    "power_peak_w,gpu_temp_peak_c,mem_temp_peak_c,active_experts,source\n");
    }
    s.t0 = rc ? 0.0 : run_now_s(r);
    for (int i = 0; i < a->n && !rc; i++) {
        s.q[i].arrival_s = a->req[i].arrival_s;
        s.q[i].prompt = a->req[i].prompt;
        s.q[i].gen = a->req[i].gen;
        s.q[i].first_token_s = s.q[i].finish_s = s.q[i].admit_s = NAN;
    }
    if (!rc && s.real) window_open(&s); /* NVML: the windows tile the replay from its start */
    int next = 0, done = 0;
    double last_wall = 0.0;
    while (!rc && done < a->n && !run_stop_requested) {
        double t = now_s(&s);
        while (next < a->n && a->req[next].arrival_s <= t) s.wait[s.wtail++] = next++;
        if ((rc = admit(&s, err))) break;
        if (s.wtail - s.whead > S.max_waiting) S.max_waiting = s.wtail - s.whead;
        if (s.nrun > S.max_running) S.max_running = s.nrun;
        if (s.nrun == 0) {
            if (next >= a->n) {
                rc = tmoe_errorf(err, TMOE_EINVAL, "internal: requests wait with nothing running");
                break;
            }
            rc = idle(&s, &S, t, a->req[next].arrival_s, next, done, w0, &last_wall, err);
            continue;
        }
        if ((rc = step(&s, S.steps, &S, err))) break;
        S.steps++;
        retire(&s, &done);
        progress(&s, &S, next, done, w0, &last_wall, 0);
    }
    if (s.steps) fclose(s.steps);
    S.interrupted = !rc && done < a->n;
    /* an interrupted replay reports the requests that arrived, over the time it ran */
    int n = S.interrupted ? next : a->n;
    if (!rc) {
        progress(&s, &S, next, done, w0, &last_wall, 1);
        double last = 0.0;
        for (int i = 0; i < n; i++)
            if (s.q[i].finish_s > last) last = s.q[i].finish_s;
        if (S.interrupted && s.nseg > 0) last = s.seg[s.nseg - 1].t1_s;
        S.requests = n;
        S.duration_s = last - a->req[0].arrival_s;
        tmoe_serve_window_stats(s.q, n, s.seg, s.nseg, 0.0, last, c->slo_ttft_s, c->slo_tpot_s,
                                c->temp_target_c, &S.run);
        double ws, we;
        S.steady = tmoe_serve_steady_window(s.seg, s.nseg, last, &ws, &we, S.steady_note,
                                            sizeof S.steady_note);
        tmoe_serve_window_stats(s.q, n, s.seg, s.nseg, ws, we, c->slo_ttft_s, c->slo_tpot_s,
                                c->temp_target_c, &S.window);
        S.wall_s = (double)(tmoe_now_ns() - w0) / 1e9;
        if (c->out_dir) {
            char path[4096];
            snprintf(path, sizeof path, "%s/timeline.csv", c->out_dir);
            rc = tmoe_serve_write_timeline(path, s.q, n, s.seg, s.nseg, last, ws, we, err);
        }
    }
    if (!rc && c->out_dir) rc = write_requests(c->out_dir, a, s.q, n, S.source, err);
    if (!rc && c->out_dir) rc = write_summary(c->out_dir, c, a, r, &S, err);
    if (!rc && S.interrupted)
        rc = tmoe_errorf(err, TMOE_EINTR,
                         "interrupted after %d steps: %d of %d requests finished, %d arrived; "
                         "the files hold what ran",
                         S.steps, done, a->n, next);
    run_free_ctx(r);
    free(r);
    free(s.run);
    free(s.wait);
    free(s.slots);
    free(s.n_new);
    free(s.tok);
    free(s.seg);
    free(s.logits);
    if ((!rc || S.interrupted) && req_out)
        *req_out = s.q;
    else
        free(s.q);
    if (sum) *sum = S;
    return rc;
}
