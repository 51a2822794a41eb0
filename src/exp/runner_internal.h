/* Private state of the experiment runner, shared by its source files. */
#ifndef THERMOE_RUNNER_INTERNAL_H
#define THERMOE_RUNNER_INTERNAL_H

#include <pthread.h>
#include <jansson.h>
#include <signal.h>

#include "thermoe/cost.h"
#include "thermoe/ep.h"
#include "thermoe/exp.h"

#define RUN_MAX_SAMPLES 4096         /* monitor samples copied per batch into its trace */
#define RUN_SLOW_THERMAL_S 40.0      /* s, the slow thermal time constant the summary checks */
#define RUN_LOCK_FILE "thermoe.lock" /* in the run directory, flock'ed by the run using it */

typedef struct run_combo {
    int repeat;
    tmoe_workload_kind wl;
    tmoe_route_strategy st;
} run_combo;

/* What one batch observed on the hardware (sim or nvml). Unknown values are NAN. */
typedef struct batch_hw {
    double latency_ms; /* MoE step (device events / simulated) */
    double period_s;   /* end of previous batch -> end of this one */
    double energy_j;   /* J, sum of dev_energy_j; NAN when a device's is unknown */
    tmoe_energy_method method;
    double power_avg_w, power_peak_w;
    double dev_energy_j[TMOE_ROUTE_MAX_DEVICES];    /* (ndev) J per device over the window */
    double dev_power_avg_w[TMOE_ROUTE_MAX_DEVICES]; /* (ndev) W per device, energy / period */
    double dev_temp_end_c[TMOE_ROUTE_MAX_DEVICES];  /* (ndev) C, last GPU temperature read */
    int dev_lost[TMOE_ROUTE_MAX_DEVICES];           /* (ndev) 1: lost by the window's end (its
                                                       energy is NAN) */
    double temp_start_c, temp_end_c, temp_peak_c, mem_temp_peak_c;
    double sm_clock_mhz, gpu_util_pct;
    double mem_clock_mhz, mem_util_pct;
    double pcie_rx_mbps, pcie_tx_mbps; /* MB/s, NAN unknown (not sampled in the window) */
    double wall_end_unix_s;            /* CLOCK_REALTIME when the window closed, s */
    uint64_t throttle;
    double expert_ms[TMOE_MAX_EXPERTS];
    double op_ms[TMOE_OP_COUNT];
} batch_hw;

/* One batch as it went: what run_batch.c measured, for the row and the trace. */
typedef struct batch_out {
    int batch, tokens;
    double t_end_s;        /* device clock at the end of the step, s since the run began */
    double period_s;       /* the window, or the step's latency when the window is empty */
    double router_ms;      /* routing (tmoe_router_route), host */
    double observe_ms;     /* the selection back to the router, host */
    double host_ts_us;     /* when routing began, us since the run began on the run's one
                            * clock (the monitor's: CLOCK_MONOTONIC on NVML, simulated time
                            * on the simulated GPU), like the device spans and samples */
    double pred_energy_j;  /* the router's predicted energy of the selection */
    double topk_agreement; /* with the unbiased selection */
    double rel_error;      /* output against the unbiased step; NAN when not computed */
    const float *bias;     /* (E) biases that ran; NULL: none */
    tmoe_moe_metrics m;    /* the engine's step (LM: tokens_per_expert summed over layers) */
    batch_hw hw;
    /* decoder LM (NAN / 0 / NULL for the random block) */
    double nll, nll_base;        /* nats, mean over the scored tokens */
    int tokens_scored;           /* next-token predictions in nll */
    const int32_t *layer_counts; /* (n_moe, E) token copies per MoE layer and expert */
    int bias_n;                  /* entries of bias: E (block), n_moe x E (LM) */
    double budget_g;             /* mean budget tightness of the routers' set selections, NAN */
    double active_experts;       /* LM: experts with a token copy, mean over steps and MoE
                                    layers; NAN: counted from m.tokens_per_expert (block) */
    double copy_share;           /* LM with copies: share of the token copies that ran on
                                    copies; NAN without copies */
    double idle_before_s;        /* the run's clock from the previous batch's window end to
                                    this window's start (scoring, the router's update, a rest,
                                    the batch's preparation); NAN for the process's first */
} batch_out;

/* The decoder LM of a run (run_lm.c): model, text, where it runs, one router per MoE layer
 * and what the route hook saw in the forward in progress. */
typedef enum { LM_PASS_STRATEGY, LM_PASS_BASELINE, LM_PASS_PROFILE } lm_pass;
typedef struct run_lm {
    tmoe_lm *m;
    tmoe_tokens tok;
    tmoe_text text;
    tmoe_cpu_lm *cpu;
    tmoe_kv_cache *kv;
    tmoe_cuda_lm *gpu;
    int n_moe;                                /* MoE layers */
    int moe_index[TMOE_LM_MAX_LAYERS];        /* layer -> its MoE index, -1 for a dense layer */
    tmoe_router *routers[TMOE_LM_MAX_LAYERS]; /* (n_moe), the combination's */
    tmoe_etype etype;                         /* experts as loaded and billed, unless
                                                 blk_cfg.expert_types gives one type per
                                                 expert (every MoE layer alike) */
    tmoe_expert_shape shape;                  /* what time and energy belong to (resolved) */
    char shape_text[64];                      /* tmoe_expert_shape_format of it */
    /* the forward in progress */
    lm_pass pass;
    int T;
    tmoe_hw_state hs;     /* the snapshot every layer's router sees */
    double route_ms;      /* routing in the hooks, host */
    double pred_energy_j; /* sum over layers of the routers' predicted energy */
    double agree_sum;     /* sum over MoE layers of the top-k agreement */
    double g_sum;         /* sum of the routers' budget tightness, over g_n set selections */
    int g_n;
    int rc_layers; /* MoE layers routed */
    float *prof;   /* PROFILE: (n_moe, prof_cap, E) logits */
    int prof_rows, prof_cap;
    /* buffers */
    uint32_t *ids;           /* (max_tokens) */
    float *logits, *logits0; /* (max_tokens, V) strategy, baseline */
    double *nll;             /* (seq_len max) */
    float *bias;             /* (n_moe, E) biases that ran */
    int32_t *idx, *idx0;     /* (max_tokens, k) */
    float *w;                /* (max_tokens, k) */
    int32_t *counts;         /* (n_moe, E) copies of the engine step in progress (the hook) */
    int32_t *step_counts;    /* (seq_len max, n_moe, E) copies of each step of the last
                                strategy forward (one step unless decode) */
    int32_t *sum_counts;     /* (n_moe, E) their sum over the steps */
    int nseq, seq_len;       /* the batch in progress */
    int decode;              /* windows fed one position a step (tmoe_run_config.lm_decode) */
    int nsteps;              /* engine steps of the last strategy forward */
    int prof_fill[TMOE_LM_MAX_LAYERS]; /* PROFILE: rows written per MoE layer */
    uint32_t *step_ids;                /* (max_seqs) decode: one step's ids */
    float *step_logits;                /* (max_seqs, V) decode: one step's logits */
    int kv_seqs, kv_len; /* > 0 (set before run_lm_init): the KV cache's slots and positions
                            per slot (the serving replay's), instead of the workloads' */
    /* lower-precision copies (tmoe_run_config.copy resolved against the model) */
    int n_copy;
    unsigned char copy[TMOE_MAX_EXPERTS];
    unsigned char *use_copy;      /* (n_moe, E) copies the step in progress runs (the hook) */
    unsigned char *step_use_copy; /* (seq_len max, n_moe, E) of each step, as step_counts */
    long copy_on, copy_all;       /* token copies of the forward in progress that ran on
                                     copies, and all of them */
} run_lm;

typedef struct run_ctx {
    tmoe_run_config cfg;
    tmoe_block_config blk_cfg;
    FILE *out;
    /* cost model */
    tmoe_cost_model *cm;
    char cost_path[4096];
    uint64_t cost_sum;
    int billed[TMOE_OP_COUNT]; /* non-expert ops the cost model has (sim billing) */
    /* how the steps' q4/q2 impl is chosen (metadata.json impl_choice) */
    const char *impl_rule;           /* "forced", "cost_model" or "configured" */
    char impl_why[256];              /* the reason, in words */
    int unfused_from[TMOE_ET_COUNT]; /* cost_model: the crossovers given to the engine */
    /* telemetry */
    tmoe_telemetry *tel;
    tmoe_monitor *mon;
    tmoe_meter *meter; /* the batch windows and the simulated GPU's billing */
    tmoe_sim *sim;     /* NULL on nvml */
    int ndev;
    int rank, ranks;          /* expert parallelism: this process's rank, ranks (1 = none) */
    tmoe_placement placement; /* expert -> device over the ndev devices */
    int expert_dev[TMOE_MAX_EXPERTS]; /* (E) the same, for the router */
    tmoe_device_info dev_info;
    char dev_driver[64]; /* driver version, or "unknown" */
    int64_t t0_ns;       /* run start on the monitor's clock */
    double start_temp_c;
    /* the work the last batch billed per device (simulated GPU), replayed by the warm-up */
    double bill_busy_s[TMOE_ROUTE_MAX_DEVICES], bill_dyn_j[TMOE_ROUTE_MAX_DEVICES];
    /* the warm-up until power is steady: device-clock seconds, the last 1 s average
     * power (W) and whether it was steady (0: the bound ran out); NAN/0 when none ran */
    double warm_s, warm_power_w;
    int warm_steady;
    double order_rho_energy, order_rho_temp; /* the summary's order correlations */
    double max_sm_clock;                     /* highest SM clock seen, for the clock ratio */
    tmoe_sample *samples;                    /* (RUN_MAX_SAMPLES) scratch */
    /* model: the random block and its engine, or the decoder LM (lm != NULL) */
    run_lm *lm;
    tmoe_block *blk;
    tmoe_engine *eng;
    tmoe_workload wl[TMOE_WL_COUNT];
    int max_tokens;
    /* routing */
    tmoe_cost_table *cost_tab;        /* the cost model at every token count, for the routers */
    tmoe_cost_provider provider;      /* over cost_tab */
    tmoe_cost_table *copy_tab;        /* LM with copies: the copies' costs (expert e = e's copy) */
    tmoe_cost_provider copy_provider; /* over copy_tab */
    tmoe_router *router;
    double base_latency_ms[TMOE_WL_COUNT], base_throughput[TMOE_WL_COUNT];
    /* buffers (max_tokens) */
    float *x, *y, *y0, *logits, *w, *w0;
    int32_t *idx, *idx0;
    float *bias; /* (E) */
    /* output */
    char dir[2048], csv_path[4096], run_id[64], started[40];
    tmoe_runlog_writer *log;
    long rows_logged; /* rows in batches.csv once log is closed; -1 before it opens */
    int ndev_found;   /* devices the telemetry has; ndev of them are followed */
    /* telemetry faults: logged batches whose energy is unknown (a device lost, no reading) */
    long tel_faults;
    run_combo fault_combo; /* the first faulted batch's combination ... */
    int fault_batch;       /* ... and batch_idx */
    char fault_reason[256];
    int lock_fd; /* DIR/thermoe.lock, flock'ed while this run uses DIR; -1 */
    tmoe_runlog_row row;
    batch_out cur; /* the batch in progress */
    int64_t wall0_ns;
    long batches_total, batches_done;
    double last_win_end_s;  /* the run's clock when the last batch's window closed; NAN */
    double last_latency_ms; /* MoE step latency of the batch last run */
    int64_t trace_last_ns;  /* newest sample already written to the open trace */
    int ktrace_off;         /* CUPTI kernel tracing failed once: not tried again */
    tmoe_trace *run_tr;     /* traces/run.json.gz: the whole run (run_trace.c); NULL: none */
    int64_t run_tr_last_ns[TMOE_ROUTE_MAX_DEVICES]; /* newest sample written there per device */
    /* The router update of a batch (the TTHA adapter's step) runs on a worker thread while
     * the next batch is prepared and its attention and gate run; the next call into the
     * router waits for it first, and the batch's row is written then (with the update's loss
     * terms and, as its router overhead, routing time plus that wait). */
    pthread_t upd_thread;
    pthread_mutex_t upd_mu;
    pthread_cond_t upd_cv;
    int upd_started, upd_busy, upd_quit, upd_rc;
    tmoe_route_obs upd_obs;
    tmoe_ttha_record upd_rec;
    tmoe_error upd_err;
    int row_pending;     /* r->row waits for the update's loss terms */
    double row_route_ms; /* routing time of the pending row's batch */
    double next_arrival_s;
    tmoe_rng arrivals;
} run_ctx;

/* Set by tmoe_run_request_stop (a signal handler); the loop stops after the batch. */
extern volatile sig_atomic_t run_stop_requested;

/* runner.c */
double run_now_s(run_ctx *r); /* device clock (monitor), s since the run began */
/* The set-up steps the serving replay shares (serve.c): the cost model (after blk_cfg),
 * telemetry, monitor, meter and placement; and freeing everything a run_ctx holds (not r). */
int run_init_cost(run_ctx *r, tmoe_error *err);
int run_init_telemetry(run_ctx *r, tmoe_error *err);
void run_free_ctx(run_ctx *r);

/* run_batch.c: one batch, route -> engine -> meter -> log: a logged one fills r->row (written
 * with the update's loss terms by the next run_update_finish), tr (may be NULL) gets its
 * trace. */
int run_batch(run_ctx *r, const run_combo *c, int b, int logged, tmoe_trace *tr, tmoe_error *err);
/* Fraction of chosen (token, expert) pairs shared by two selections (T, k), order ignored. */
double run_topk_agreement(const int32_t *a, const int32_t *b, int T, int k);

/* run_bill.c: bill the step's work (m, T tokens) to the simulated GPU(s) from the cost model
 * through the meter; fills hw's latency, expert and op times. */
int run_bill(run_ctx *r, const tmoe_moe_metrics *m, int T, int moe_only, batch_hw *hw,
             tmoe_error *err);

/* run_hw.c */
int run_own_device(const run_ctx *r); /* the telemetry device this process drives */
void run_hw_from_reading(run_ctx *r, const tmoe_meter_reading *rd, batch_hw *hw);
tmoe_hw_state run_hw_snapshot(run_ctx *r, double horizon_s);
/* A telemetry fault exactly when the row's energy (energy_j or a device's) is unknown. */
void run_check_telemetry(run_ctx *r, const run_combo *c, int b, const batch_hw *hw);
double run_link_j_per_copy(run_ctx *r, double fallback);

/* run_row.c */
void run_row_fill(run_ctx *r, const run_combo *c, const batch_out *o);
/* The impl a step's experts of type t ran (the engine's impl_used, else the configured). */
tmoe_impl run_step_impl(const run_ctx *r, const tmoe_moe_metrics *m, tmoe_etype t);
void run_trace_batch(run_ctx *r, tmoe_trace *tr, const batch_out *o);
/* run_trace.c: the whole-run trace (traces/run.json.gz; none when trace_batches is 0). */
int run_trace_run_open(run_ctx *r, tmoe_error *err);
void run_trace_run_samples(run_ctx *r); /* the monitor's samples up to now */
/* A span on the phase track (t in device-clock s since the run began), then a sync. */
void run_trace_run_phase(run_ctx *r, const char *name, double t0_s, double t1_s,
                         const char *args_json);
int run_trace_run_close(run_ctx *r, tmoe_error *err); /* NULL-safe on r->run_tr */

/* run_update.c: the router update worker (start before the first router, stop in free). */
int run_update_start(run_ctx *r, tmoe_error *err);
void run_update_stop(run_ctx *r);                   /* safe when not started */
int run_update_finish(run_ctx *r, tmoe_error *err); /* wait; then write the pending row */
void run_update_post(run_ctx *r, const tmoe_route_obs *obs);

/* run_router.c */
int run_make_router(run_ctx *r, tmoe_route_strategy st, tmoe_workload_kind wl, uint64_t seed,
                    tmoe_error *err);
int run_calibrate(run_ctx *r, tmoe_error *err);

/* run_plan.c: the combinations (*out, n, owned by the caller), interleaved per repeat. */
int run_plan(const tmoe_run_config *cfg, run_combo **out, int *n, tmoe_error *err);
/* Resume: keep the complete combinations of done (first *nkeep), drop the rows of others. */
int run_resume_keep(run_ctx *r, tmoe_runlog_done *done, int ndone, int nb, int *nkeep,
                    long *dropped, tmoe_error *err);
/* Whether a resumed run skips c (every rank agrees, else TMOE_EINVAL). */
int run_skip(run_ctx *r, const tmoe_runlog_done *done, int nkeep, const run_combo *c, int nb,
             int *skip, tmoe_error *err);
int run_stop_now(run_ctx *r); /* the stop flag, agreed by every rank */
void run_cool_down(run_ctx *r);
/* Before the first combination: baseline work until power is steady (cfg.steady_s bound). */
int run_warm_up(run_ctx *r, tmoe_error *err);

/* run_lm.c: the decoder LM in a run. */
int run_lm_config(run_ctx *r, tmoe_error *err); /* before the cost model: E, k, the shape */
int run_lm_init(run_ctx *r, tmoe_error *err);   /* after telemetry: model, text, runner */
void run_lm_free(run_ctx *r);
const char *run_backend_name(const run_ctx *r); /* the engine's, or the LM runner's */
/* The expert shape time and energy belong to, as the rows and the summary say it. */
void run_energy_shape(const run_ctx *r, char *buf, size_t n);
/* Expert e's op sequence (type t, impl im) at n tokens from the cost model, added to
 * *busy_ms and *dyn_j (its device's) and to hw's expert_ms[e] and op_ms. */
int run_bill_expert(run_ctx *r, int e, tmoe_etype t, tmoe_impl im, int n, double *busy_ms,
                    double *dyn_j, batch_hw *hw, tmoe_error *err);
/* After an engine step of a strategy forward: check that the decoder ran the hooks'
 * selections (lm->counts) and keep them as step s (step_counts, added to sum_counts; step 0
 * starts the forward's sum; nsteps = s + 1). */
int run_lm_step_done(run_lm *lm, int s, tmoe_error *err);
/* The distinct experts the kept steps' MoE layers ran, mean over steps and layers: what a
 * memory-bound step's bytes follow. NAN without a step or a MoE layer. */
double run_lm_active_experts(const run_lm *lm);
/* One engine step of batch b on the runner (CPU KV cache or CUDA LM) into logits (host): the
 * contract of tmoe_cpu_lm_forward; the CUDA runner needs logits (not NULL). */
int run_lm_engine_step(run_lm *lm, const tmoe_lm_batch *b, float *logits, tmoe_error *err);
/* A KV slot on the runner (tmoe_kv_seq_open / tmoe_cuda_lm_seq_open), and its release. */
int run_lm_seq_open(run_lm *lm, int *slot, tmoe_error *err);
void run_lm_seq_close(run_lm *lm, int slot);
/* The routers of a combination (one per MoE layer); static_optimal fitted on calibration
 * windows. */
int run_lm_make_routers(run_ctx *r, tmoe_route_strategy st, tmoe_workload_kind wl, uint64_t seed,
                        tmoe_error *err);
/* Fill the batch's windows (o->tokens set). */
int run_lm_fill(run_ctx *r, const run_combo *c, int sample, batch_out *o, tmoe_error *err);
/* The strategy's forward (routers in the hooks); fills o->m for the meter. */
int run_lm_forward(run_ctx *r, const run_combo *c, batch_out *o, tmoe_error *err);
/* Simulated GPU: bill the forward's MoE layers at the expert shape, layer after layer. */
int run_lm_bill(run_ctx *r, const batch_out *o, batch_hw *hw, tmoe_error *err);
/* NLL under the strategy and under baseline routing (a second forward, outside the energy
 * window, unless the strategy is plain baseline), top-k agreement and output error. */
int run_lm_quality(run_ctx *r, const run_combo *c, batch_out *o, tmoe_error *err);
/* The router update of a batch: every router of the run (one, or one per MoE layer); rec gets
 * the mean of their records' loss terms. */
int run_router_update(run_ctx *r, const tmoe_route_obs *obs, tmoe_ttha_record *rec,
                      tmoe_error *err);

/* run_dir.c: create and lock the run directory, open batches.csv (resume: *done, *ndone). */
int run_open_dir(run_ctx *r, tmoe_runlog_done **done, int *ndone, tmoe_error *err);

/* runner_summary.c: read batches.csv back and print the per-combination table. */
int run_print_summary(run_ctx *r, tmoe_error *err);
/* runner_meta.c: write metadata.json (status "running", "interrupted", "complete",
 * "failed"; reason, the error of a failed run, or NULL) through a temporary and a rename:
 * on failure the previous file is left as it was. */
int run_write_metadata(run_ctx *r, const char *status, const char *reason, tmoe_error *err);
/* metadata's "router" object for c (a new reference; NULL when out of memory): also the
 * serve replay's. */
json_t *run_meta_router(const tmoe_run_config *c);
/* metadata's "expert_copies" object (the copies' type and experts; a new reference) of a
 * decoder LM that holds copies, NULL without them: also the serve replay's. */
json_t *run_meta_copies(const run_ctx *r);
/* On resume: the run id and configuration fingerprint (*fingerprint, the caller's
 * reference) of an existing run directory. */
int run_read_metadata(const char *dir, char *run_id, size_t n, json_t **fingerprint,
                      tmoe_error *err);
/* The configuration fingerprint: metadata.json's "config" flattened to "section.key" ->
 * value text, less the keys that do not decide the rows (the cost model's and placement's
 * paths, the measured link). A new reference, NULL when out of memory. */
json_t *run_fingerprint(const run_ctx *r);
/* What differs between two fingerprints, as "key was A, now B; ..." in buf (cut to n).
 * Returns the number of keys that differ. */
int run_fingerprint_diff(json_t *was, json_t *now, char *buf, size_t n);

#endif
