/* Experiment harness pieces: the batch-row writer for batches.csv (flushed per row,
 * resumable), the Chrome trace-event writer, and the experiment runner. */
#ifndef THERMOE_EXP_H
#define THERMOE_EXP_H

#include <stdio.h>

#include "thermoe/core.h"
#include "thermoe/model.h"
#include "thermoe/backend.h"
#include "thermoe/route.h"
#include "thermoe/telemetry.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ============================== runlog ================================================ */
/* Run log schema: the one definition of the per-batch CSV columns (batches.csv) and the
 * metadata file name that the experiment harness writes and `thermoe analyze` reads.
 * Writers emit the columns in exactly this order, with this header line; lists inside a
 * cell are ';'-separated; an empty cell or "nan" means unknown (never 0). Per-device lists
 * (device_*) have one entry per telemetry device, in device index order. New columns go at
 * the end: readers look columns up by name, and a file without them still loads. */

#define TMOE_RUNLOG_CSV "batches.csv"        /* one row per batch, per run directory */
#define TMOE_RUNLOG_METADATA "metadata.json" /* one per run directory */
#define TMOE_RUNLOG_LIST_SEP ';'             /* separator of list cells */
/* batches.csv is read back whole (resume, the run's summary); a larger one is refused */
#define TMOE_RUNLOG_MAX_BYTES ((size_t)1 << 30)

typedef enum {
    TMOE_COL_STR,      /* free text (RFC 4180 quoted when it holds , " or newline) */
    TMOE_COL_INT,      /* integer, decimal */
    TMOE_COL_DOUBLE,   /* real number; "nan" or empty = unknown */
    TMOE_COL_LIST_INT, /* ';'-separated integers, e.g. per-expert token counts */
    TMOE_COL_LIST_DBL  /* ';'-separated reals, e.g. per-expert times or biases */
} tmoe_col_type;

typedef struct tmoe_runlog_col {
    const char *name;   /* header name */
    tmoe_col_type type; /* how the cell is written and parsed */
    const char *unit;   /* unit or meaning, for documentation */
} tmoe_runlog_col;

/* X-macro: column index enum and table come from the same list, so they cannot drift. */
#define TMOE_RUNLOG_COLUMNS(X)                                                                     \
    X(TIME, "time", TMOE_COL_DOUBLE, "s since run start (monotonic)")                              \
    X(RUN_ID, "run_id", TMOE_COL_STR, "run identifier")                                            \
    X(REPEAT, "repeat", TMOE_COL_INT, "repeat index, 0-based")                                     \
    X(WORKLOAD, "workload", TMOE_COL_STR, "workload name")                                         \
    X(STRATEGY, "strategy", TMOE_COL_STR, "routing strategy name")                                 \
    X(EXPERT_TYPE, "expert_type", TMOE_COL_STR, "fp16, bf16, q4 or q2")                            \
    X(IMPL, "impl", TMOE_COL_STR, "fused or unfused: what the step's q4/q2 experts ran")           \
    X(BATCH_IDX, "batch_idx", TMOE_COL_INT, "batch index within the combination, 0-based")         \
    X(TOKENS, "tokens", TMOE_COL_INT, "tokens in the batch")                                       \
    X(LATENCY_MS, "latency_ms", TMOE_COL_DOUBLE, "ms, device events")                              \
    X(THROUGHPUT, "throughput_tokens_s", TMOE_COL_DOUBLE, "tokens/s")                              \
    X(ENERGY_J, "energy_j", TMOE_COL_DOUBLE, "J for the batch")                                    \
    X(ENERGY_J_PER_TOKEN, "energy_j_per_token", TMOE_COL_DOUBLE, "J/token")                        \
    X(ENERGY_METHOD, "energy_method", TMOE_COL_STR, "counter or integrated")                       \
    X(POWER_AVG_W, "power_avg_w", TMOE_COL_DOUBLE, "W, mean over the batch")                       \
    X(POWER_PEAK_W, "power_peak_w", TMOE_COL_DOUBLE,                                               \
      "W, max over the batch (summed over devices)")                                               \
    X(GPU_TEMP_START_C, "gpu_temp_start_c", TMOE_COL_DOUBLE, "C")                                  \
    X(GPU_TEMP_END_C, "gpu_temp_end_c", TMOE_COL_DOUBLE, "C")                                      \
    X(GPU_TEMP_PEAK_C, "gpu_temp_peak_c", TMOE_COL_DOUBLE, "C")                                    \
    X(MEM_TEMP_C, "mem_temp_c", TMOE_COL_DOUBLE, "C, HBM peak over the batch")                     \
    X(SM_CLOCK_MHZ, "sm_clock_mhz", TMOE_COL_DOUBLE, "MHz, mean")                                  \
    X(THROTTLE_REASONS, "throttle_reasons", TMOE_COL_INT, "clock-event reason bits (0 = none)")    \
    X(GPU_UTIL_PCT, "gpu_util_pct", TMOE_COL_DOUBLE, "%")                                          \
    X(EXPERT_USAGE_COUNTS, "expert_usage_counts", TMOE_COL_LIST_INT, "token copies per expert")    \
    X(EXPERT_TIME_MS, "expert_time_ms", TMOE_COL_LIST_DBL, "ms per expert")                        \
    X(PREDICTED_ENERGY_J, "predicted_energy_j", TMOE_COL_DOUBLE, "J, cost model")                  \
    X(ROUTER_OVERHEAD_MS, "router_overhead_ms", TMOE_COL_DOUBLE, "ms spent routing")               \
    X(TTHA_POWER_LOSS, "ttha_power_loss", TMOE_COL_DOUBLE, "loss term")                            \
    X(TTHA_TEMP_LOSS, "ttha_temp_loss", TMOE_COL_DOUBLE, "loss term")                              \
    X(TTHA_LATENCY_PENALTY, "ttha_latency_penalty", TMOE_COL_DOUBLE, "loss term")                  \
    X(TTHA_THROUGHPUT_BONUS, "ttha_throughput_bonus", TMOE_COL_DOUBLE, "loss term")                \
    X(TTHA_FIDELITY, "ttha_fidelity", TMOE_COL_DOUBLE, "loss term")                                \
    X(TTHA_TOTAL_LOSS, "ttha_total_loss", TMOE_COL_DOUBLE, "loss")                                 \
    X(TTHA_LR, "ttha_lr", TMOE_COL_DOUBLE, "learning rate")                                        \
    X(BIASES, "biases", TMOE_COL_LIST_DBL, "per-expert routing bias")                              \
    X(TOPK_AGREEMENT, "topk_agreement_with_baseline", TMOE_COL_DOUBLE, "fraction in [0, 1]")       \
    X(OUTPUT_REL_ERROR, "output_rel_error_vs_baseline", TMOE_COL_DOUBLE, "||y - y0|| / ||y0||")    \
    X(TELEMETRY_SOURCE, "telemetry_source", TMOE_COL_STR, "nvml or sim")                           \
    X(DEVICE_ENERGY_J, "device_energy_j", TMOE_COL_LIST_DBL, "J per device; energy_j is the sum")  \
    X(DEVICE_POWER_AVG_W, "device_power_avg_w", TMOE_COL_LIST_DBL,                                 \
      "W per device, mean over the batch")                                                         \
    X(DEVICE_TEMP_END_C, "device_temp_end_c", TMOE_COL_LIST_DBL,                                   \
      "C per device at the batch's end")                                                           \
    X(DEVICE_TOKENS, "device_tokens", TMOE_COL_LIST_INT,                                           \
      "token copies routed to each device's experts")                                              \
    X(ENERGY_WINDOW_S, "energy_window_s", TMOE_COL_DOUBLE,                                         \
      "s, length of the measurement window energy_j covers")                                       \
    X(WALL_TIME_UNIX_S, "wall_time_unix_s", TMOE_COL_DOUBLE,                                       \
      "s since 1970-01-01 UTC (ms resolution) when the batch's window closed")                     \
    X(MEM_UTIL_PCT, "mem_util_pct", TMOE_COL_DOUBLE, "%, memory busy, mean over the batch")        \
    X(MEM_CLOCK_MHZ, "mem_clock_mhz", TMOE_COL_DOUBLE, "MHz, memory clock, mean")                  \
    X(PCIE_RX_MBPS, "pcie_rx_mbps", TMOE_COL_DOUBLE,                                               \
      "MB/s received over PCIe (summed over devices)")                                             \
    X(PCIE_TX_MBPS, "pcie_tx_mbps", TMOE_COL_DOUBLE, "MB/s sent over PCIe (summed over devices)")  \
    X(TTHA_GRAD_NORM, "ttha_grad_norm", TMOE_COL_DOUBLE, "L2 norm of the TTHA update's gradient")  \
    X(NLL, "nll", TMOE_COL_DOUBLE,                                                                 \
      "nats, mean next-token NLL of the batch's scored tokens under the strategy (LM)")            \
    X(NLL_BASELINE, "nll_baseline", TMOE_COL_DOUBLE,                                               \
      "nats, the same tokens under baseline routing (LM)")                                         \
    X(TOKENS_SCORED, "tokens_scored", TMOE_COL_INT, "tokens whose NLL nll averages (LM)")          \
    X(LAYER_EXPERT_COUNTS, "layer_expert_counts", TMOE_COL_LIST_INT,                               \
      "token copies per MoE layer and expert, layer-major (LM)")                                   \
    X(ENERGY_EXPERT_SHAPE, "energy_expert_shape", TMOE_COL_STR,                                    \
      "d_model x d_ff of the experts that time and energy belong to")                              \
    X(BUDGET_TIGHTNESS, "budget_tightness", TMOE_COL_DOUBLE,                                       \
      "0..1, how far toward its tightest the expert-set budget was (mean over layers, steps)")     \
    X(ACTIVE_EXPERTS, "active_experts", TMOE_COL_DOUBLE,                                           \
      "experts that ran at least one token copy, mean over MoE layers (and LM steps)")             \
    X(IDLE_BEFORE_S, "idle_before_window_s", TMOE_COL_DOUBLE,                                      \
      "s of the run's clock from the previous batch's window to this one's start")                 \
    X(COPY_SHARE, "copy_share", TMOE_COL_DOUBLE,                                                   \
      "share of the token copies that ran on lower-precision copies (LM with --expert-copy)")

#define TMOE_RUNLOG_ENUM_(id, name, type, unit) TMOE_RL_##id,
typedef enum { TMOE_RUNLOG_COLUMNS(TMOE_RUNLOG_ENUM_) TMOE_RL_NCOLS } tmoe_runlog_col_id;
#undef TMOE_RUNLOG_ENUM_

/* The columns in file order (TMOE_RL_NCOLS entries), indexed by tmoe_runlog_col_id. */
extern const tmoe_runlog_col tmoe_runlog_cols[TMOE_RL_NCOLS];

/* Column index of a header name, or -1. */
int tmoe_runlog_col_find(const char *name);

/* ---- one CSV row, cells formatted per the column types of runlog.h ----------------- */
#define TMOE_RUNLOG_CELL 4096
typedef struct tmoe_runlog_row {
    char cell[TMOE_RL_NCOLS][TMOE_RUNLOG_CELL];
} tmoe_runlog_row;

void tmoe_runlog_row_clear(tmoe_runlog_row *r); /* every cell unknown ("") */
void tmoe_runlog_row_str(tmoe_runlog_row *r, int col, const char *s);
void tmoe_runlog_row_int(tmoe_runlog_row *r, int col, long long v);
void tmoe_runlog_row_dbl(tmoe_runlog_row *r, int col, double v); /* NAN -> "nan" */
/* Lists: a list whose text does not fit TMOE_RUNLOG_CELL bytes is written unknown (""),
 * never cut short. */
void tmoe_runlog_row_ints(tmoe_runlog_row *r, int col, const int32_t *v, int n);
void tmoe_runlog_row_dbls(tmoe_runlog_row *r, int col, const double *v, int n);

/* ---- batches.csv writer ------------------------------------------------------------ */
typedef struct tmoe_runlog_writer tmoe_runlog_writer;

/* Key of a combination: rows of one (repeat, workload, strategy) form one unit of resume. */
typedef struct tmoe_runlog_done {
    int repeat;
    char workload[64], strategy[64];
    int rows;    /* valid rows, batch_idx 0 .. rows - 1 in order */
    int invalid; /* a row of it was dropped (unparsable, another run's, out of order): rerun */
} tmoe_runlog_done;

/* Open path for writing (refused unless it is a regular file or absent). resume = 0: the
 * file is created (or replaced); resume = 1: existing rows are checked and the combinations
 * found are listed in *done (caller frees with free()). A torn last line is cut off; a line
 * that is not a valid row of run run_id (NULL: of any run; field count, every typed cell
 * parses, batch_idx in sequence) is reported with tmoe_log and marks its combination
 * invalid. The caller then calls tmoe_runlog_drop to remove unfinished combinations and
 * invalid lines before appending. */
int tmoe_runlog_open(const char *path, int resume, const char *run_id, tmoe_runlog_writer **out,
                     tmoe_runlog_done **done, int *ndone, tmoe_error *err);
/* Rewrite the file (through a temporary and a rename) keeping only the valid rows whose
 * combination is in keep[0..nkeep). */
int tmoe_runlog_drop(tmoe_runlog_writer *w, const tmoe_runlog_done *keep, int nkeep,
                     tmoe_error *err);
/* Append one row with one write (a killed process leaves whole lines); a failed write is
 * cut back off the file, which then ends with its last whole row. */
int tmoe_runlog_write(tmoe_runlog_writer *w, const tmoe_runlog_row *r, tmoe_error *err);
/* Data lines in the file: rows written, or after a resume scan every line found (valid or
 * not) until tmoe_runlog_drop. */
long tmoe_runlog_rows(const tmoe_runlog_writer *w);
/* Split one CSV line (no newline) into fields, RFC 4180 quoting. buf (strlen(line) + 1
 * bytes) receives the unquoted fields, fields[] points into it. Returns the field count
 * (max + 1 when there are more than max; 0 when out of memory). */
int tmoe_runlog_split(const char *line, char *buf, char **fields, int max);
/* Sync and close; reports a write error the system reports only now. NULL-safe. */
int tmoe_runlog_close(tmoe_runlog_writer *w, tmoe_error *err);

/* ---- Chrome trace-event JSON (Perfetto / chrome://tracing) ------------------------- */
typedef struct tmoe_trace tmoe_trace;
/* A path ending in ".gz" is written gzip-compressed (needs zlib at build time; without it
 * opening one fails with TMOE_EINVAL). */
int tmoe_trace_open(const char *path, tmoe_trace **out, tmoe_error *err);
/* ".json.gz" when this build writes gzip traces (zlib found), else ".json". */
const char *tmoe_trace_ext(void);
/* A complete event ("ph":"X"): ts and dur in microseconds. args_json: an object or NULL. */
void tmoe_trace_span(tmoe_trace *t, const char *name, const char *cat, int pid, int tid,
                     double ts_us, double dur_us, const char *args_json);
/* A counter sample ("ph":"C") of one series. */
void tmoe_trace_counter(tmoe_trace *t, const char *name, int pid, double ts_us, const char *series,
                        double value);
/* Name a process / thread track ("ph":"M"). */
void tmoe_trace_name(tmoe_trace *t, int pid, int tid, const char *name);
/* Push what was written to the file (a gzip trace: a sync flush), so a run killed later
 * leaves a readable prefix. NULL-safe; an error is reported by close. */
void tmoe_trace_sync(tmoe_trace *t);
int tmoe_trace_close(tmoe_trace *t, tmoe_error *err); /* NULL-safe; reports a write error */

/* ============================== workload ============================================== */
/* Workloads: deterministic streams of input batches, each built to exercise one aspect of
 * routing. A token's hidden state is noise plus a push along the gate direction of the
 * expert(s) it "belongs" to, so the workload controls expert popularity and routing entropy
 * through the model's own gate:
 *   standard        each token leans toward one expert chosen uniformly; the base batch.
 *   high_complexity longer sequences (2x seq_len) and tokens that lean toward 4 experts at
 *                   once with a weaker push: high-entropy routing, many near-ties.
 *   small_batch     a quarter of the base tokens per batch (latency-bound, few experts).
 *   large_batch     4x the base tokens per batch (throughput-bound, every expert busy).
 *   skewed          the leaned-toward expert follows a Zipf law (s = 1.2) over a random
 *                   permutation of the experts: a few hot experts, a long tail. */

typedef enum {
    TMOE_WL_STANDARD,
    TMOE_WL_HIGH_COMPLEXITY,
    TMOE_WL_SMALL_BATCH,
    TMOE_WL_LARGE_BATCH,
    TMOE_WL_SKEWED,
    TMOE_WL_COUNT
} tmoe_workload_kind;

const char *tmoe_workload_name(tmoe_workload_kind k);
int tmoe_workload_parse(const char *s, tmoe_workload_kind *out);

typedef struct tmoe_workload {
    tmoe_workload_kind kind;
    int seq_len;   /* tokens per sequence */
    int n_seqs;    /* sequences per batch */
    int tokens;    /* seq_len * n_seqs */
    int mix;       /* experts each token leans toward */
    float push;    /* strength of the lean, in units of the noise */
    double zipf_s; /* 0 = uniform popularity */
    uint64_t seed;
} tmoe_workload;

/* The workload of kind k for a base batch of batch_size sequences of seq_len tokens. */
tmoe_workload tmoe_workload_make(tmoe_workload_kind k, int batch_size, int seq_len, uint64_t seed);

/* Largest token count any of the kinds makes for this base (for workspace sizing). */
int tmoe_workload_max_tokens(int batch_size, int seq_len);

/* Batch number idx of workload w for block blk: x (w->tokens, d_model). Deterministic in
 * (w->seed, kind, idx) and independent of the batches drawn before. */
void tmoe_workload_batch(const tmoe_workload *w, const tmoe_block *blk, int idx, float *x);

/* ---- the decoder LM's workloads: windows of real text (docs/harness.md) -----------------
 * With a decoder LM (tmoe_run_config.model_dir) a batch of workload w is w->n_seqs windows
 * of w->seq_len consecutive ids of a token file (so standard, high_complexity (2x seq_len),
 * small_batch and large_batch keep their shapes). The file is cut into domains (token
 * ranges); a domain's windows are its consecutive seq_len-token slots, and every
 * TMOE_TEXT_CALIB_EVERY-th slot (slot index % TMOE_TEXT_CALIB_EVERY ==
 * TMOE_TEXT_CALIB_EVERY - 1) is kept for calibration (static_optimal's fit) and never
 * scored. Windows never straddle two domains. skewed is a domain shift: the first
 * ceil(num_samples / 2) samples come from domain 0 alone, the rest from domain 1 alone; the
 * other workloads draw from every domain's scored slots, uniformly. */
#define TMOE_TEXT_MAX_DOMAINS 8
#define TMOE_TEXT_CALIB_EVERY 8
#define TMOE_TEXT_DOMAINS_SUFFIX ".domains.tsv" /* beside X.tokens: X.domains.tsv */

typedef struct tmoe_text {
    const uint32_t *ids; /* (n) borrowed from the token file */
    int64_t n;
    int ndom;
    char domain[TMOE_TEXT_MAX_DOMAINS][32]; /* names */
    int64_t first[TMOE_TEXT_MAX_DOMAINS];   /* token range [first, end) */
    int64_t end[TMOE_TEXT_MAX_DOMAINS];     /* of each domain */
    char source[512];                       /* the domains file, or "halves ..." */
    uint64_t checksum;                      /* FNV-1a 64 of the token file's bytes */
} tmoe_text;

/* FNV-1a 64 of a file's bytes (the token file's identity in metadata and resume). */
int tmoe_text_file_checksum(const char *path, uint64_t *out, tmoe_error *err);

/* The domains of the token file at path (already read into t): from X.domains.tsv beside
 * X.tokens when it exists (tab-separated lines "tokens N", "fnv1a64 HEX" that must match the
 * file, then "NAME FIRST END [documents]", '#' comments; docs/harness.md), else the file's
 * two halves ("first_half", "second_half"), which out->source says. A domains file that
 * does not match the token file, overlapping or out-of-range ranges are TMOE_EFORMAT naming
 * file:line. */
int tmoe_text_open(const char *path, const tmoe_tokens *t, tmoe_text *out, tmoe_error *err);

/* Batch number idx of LM workload w (kind, n_seqs, seq_len, seed) from text t: ids
 * (n_seqs * seq_len), sequence after sequence. calib = 1 draws from the calibration slots
 * instead. Deterministic in (w->seed, kind, idx, calib): every strategy of a workload sees the
 * same windows (a run gives each repeat its own w->seed, run_lm_fill). TMOE_EINVAL naming the
 * domain when it has no slot of that kind for seq_len. */
int tmoe_text_batch(const tmoe_workload *w, const tmoe_text *t, int idx, int num_samples, int calib,
                    uint32_t *ids, tmoe_error *err);

/* ---- expert shape the energy of an LM run belongs to (--expert-shape) ------------------ */
typedef enum {
    TMOE_SHAPE_TRAINED, /* the checkpoint's own experts (hidden_size x expert size) */
    TMOE_SHAPE_MIXTRAL, /* 4096 x 14336, Mixtral-8x7B's experts */
    TMOE_SHAPE_CUSTOM   /* d_model x d_ff given as DxF */
} tmoe_expert_shape_kind;

typedef struct tmoe_expert_shape {
    tmoe_expert_shape_kind kind;
    int d_model, d_ff; /* 0 for trained until the checkpoint is known */
} tmoe_expert_shape;

/* "trained", "mixtral" or "DxF" (e.g. 1024x2816). TMOE_EINVAL saying what is accepted. */
int tmoe_expert_shape_parse(const char *s, tmoe_expert_shape *out, tmoe_error *err);
/* "mixtral 4096x14336", "trained 256x128", "1024x2816". */
void tmoe_expert_shape_format(const tmoe_expert_shape *s, char *buf, size_t n);

/* ============================== runner ================================================ */
/* The experiment runner behind `thermoe run`: sweeps routing strategies x workloads over
 * repeats, one CSV row per batch, a metadata JSON per run, Chrome traces of the first
 * batches of each combination, and a summary per strategy and workload. */

/* What a run reports as it goes, for a progress display (tmoe_run_config.on_progress), in
 * this order: RESUME (a resumed run only), START, then per combination run a BATCH after each
 * logged batch and a COMBO_DONE after its last one, then END once the loop is over (also when
 * it stopped or failed after START). */
typedef enum {
    TMOE_RUN_EV_RESUME,     /* the run directory's complete combinations are kept */
    TMOE_RUN_EV_START,      /* the sweep begins */
    TMOE_RUN_EV_BATCH,      /* a logged batch ran */
    TMOE_RUN_EV_COMBO_DONE, /* the last batch of a combination ran (after its BATCH) */
    TMOE_RUN_EV_END         /* no more batches: the summary and the end of the run follow */
} tmoe_run_event;

/* One progress event. Fields not listed for the event are 0 (strings NULL). Strings are
 * borrowed for the call. */
typedef struct tmoe_run_progress {
    tmoe_run_event event;
    const char *run_id; /* every event */
    /* RESUME */
    int combos_kept;              /* combinations already complete, of combos */
    long rows_kept, rows_dropped; /* rows of batches.csv kept, rows of a combination cut short */
    /* START */
    int strategies, workloads, repeats; /* the sweep's shape */
    int batches;            /* START, BATCH, COMBO_DONE: logged batches per combination */
    const char *backend;    /* the engine's backend name */
    const char *telemetry;  /* the telemetry's choice, one line (tmoe_telemetry_choice) */
    int simulated;          /* 1: the simulated GPU (its figures are not measurements) */
    const char *cost_model; /* path of the cost model (it drives the simulated GPU) */
    /* BATCH, COMBO_DONE (combos also on RESUME) */
    int combo, combos; /* index of the combination in the plan (0-based), plan size */
    int repeat;
    tmoe_workload_kind workload;
    tmoe_route_strategy strategy;
    int batch;              /* logged batches of this combination done, 1..batches */
    double elapsed_s;       /* wall clock since the run began */
    double eta_s;           /* wall clock left at the pace so far; NAN before a batch */
    const char *source;     /* "sim" | "nvml" */
    double power_w, temp_c; /* device 0's latest average power (W) and GPU temperature
                               (C); NAN when unknown */
} tmoe_run_progress;

/* Called on the thread that runs the sweep; it must not call back into the run. */
typedef void (*tmoe_run_progress_fn)(const tmoe_run_progress *p, void *user);

typedef struct tmoe_run_config {
    /* what to sweep */
    int strategies[TMOE_ROUTE_STRATEGY_COUNT]; /* 1 = run it */
    int workloads[TMOE_WL_COUNT];              /* 1 = run it */
    int repeats;           /* passes over every combination, in a balanced order */
    int repeat_first;      /* number of the first pass (logged in the repeat column; the
                              order and router seeds derive from it): a sweep task runs
                              one repeat with its own number */
    int num_samples;       /* distinct batches per workload */
    int epochs;            /* passes over the samples per combination */
    int warmup_batches;    /* unlogged batches before each combination */
    int trace_batches;     /* batches traced per combination */
    double arrival_rate;   /* tokens/s, Poisson arrivals; <= 0: closed loop */
    double cooldown_s;     /* rest up to this long before each combination until the GPU
                              temperature is within 1 C of the run's start; 0 = none */
    double steady_s;       /* warm up for at most this long before the first combination
                              until power is steady (docs/harness.md); 0 = none */
    int fidelity_every;    /* compute output_rel_error_vs_baseline every N batches */
    int energy_counter_ms; /* NVML: the energy counter read at most this often (each read
                              costs ~4 ms of the monitor thread on an H100); 2000 by default */
    uint64_t seed;         /* the one seed of a run: weights, inputs, arrivals, routers and
                              the simulated GPU all derive from it (block.seed is ignored) */

    /* model */
    tmoe_block_config block; /* expert types, shape; block.seq_len = tokens per sequence;
                                block.seed: replaced by seed */
    int batch_size;          /* sequences per batch (base; workloads scale it) */
    int moe_only;            /* run the MoE layer alone (no attention) */
    /* the decoder LM on real text instead of the random block (docs/harness.md): a Hugging
     * Face checkpoint directory (docs/models.md); NULL = the random block. Its experts load
     * as block.expert_type; block.seq_len is the window length; the block's other shape
     * fields and moe_only do not apply. */
    const char *model_dir;
    const char *tokens_path;        /* the LM's token file; NULL = tmoe_run_default_tokens() */
    tmoe_expert_shape expert_shape; /* LM: the experts that time and energy belong to
                                       (default mixtral; simulated GPU: the cost model must
                                       be measured at that shape) */
    int lm_decode;                  /* LM: 0 prefill: a batch is one forward of its windows
                                       (T = n_seqs x seq_len); 1 decode: the windows are fed
                                       one position a step (seq_len forwards of n_seqs
                                       tokens over the KV cache), each step routed and
                                       billed on its own (default 0) */
    int expert_shape_given;         /* 0: expert_shape is the default, and falls back to
                                       trained (logged) where the default cannot run (NVML:
                                       the GPU measures the trained model's own kernels) */
    int act8;                       /* LM, q4 / q2 experts: int8 activations
                                       (--expert-activations; tmoe_lm_load_opts.act8) */
    /* LM: lower-precision copies (--expert-copy TYPE[:LIST]): expert e of every MoE layer
       where copy[e] (copy_all: every expert) also loads as copy_type, and
       hierarchical_adaptive runs the copy in its place under pressure
       (tmoe_lm_load_opts.copy) */
    int copy_given;
    int copy_all;
    unsigned char copy[TMOE_MAX_EXPERTS];
    tmoe_etype copy_type;

    /* where it runs */
    tmoe_backend_kind backend;
    tmoe_impl impl;
    int impl_given; /* 1: impl was asked for (--impl): every step runs it; 0: where the cost
                       model was measured at the block's shape, its fused / unfused crossover
                       chooses per step and type (metadata.json impl_choice; the impl column
                       says what each step ran) */
    int device_id;
    tmoe_telemetry_kind telemetry;
    int sim_devices;             /* simulated GPUs; sim only */
    const char *placement_file;  /* expert -> device map, one "expert device" line per expert,
                                    over the telemetry's devices (sim: billing; every device:
                                    multi_gpu_aware); NULL = round robin, expert e on e mod N */
    const char *cost_model_path; /* NULL: the committed H100 cost model */
    struct tmoe_ep *ep;          /* expert parallelism: the process group (one rank per GPU,
                                    each running this sweep in step with the others; the
                                    placement maps experts to ranks); NULL = one device */

    /* routing */
    tmoe_router_config router;   /* strategy, E, k are set per combination */
    int load_balancer;           /* add the load balancer to every strategy */
    const char *ttha_warm_start; /* adapter weights to start from, or NULL */

    /* output */
    const char *out_dir;              /* run directory (created) */
    const char *log_file;             /* batches.csv path; NULL: <out_dir>/batches.csv */
    int resume;                       /* continue a killed run in out_dir */
    tmoe_run_progress_fn on_progress; /* progress events; NULL = none (the library prints
                                         nothing of its own) */
    void *progress_user;              /* passed to on_progress */
    int analyze;                      /* run the analysis on the run directory at the end */
    const char *argv_line;            /* the command line, for the metadata */
} tmoe_run_config;

tmoe_run_config tmoe_run_config_default(void);

/* Where the committed H100 cost model lives (THERMOE_DATA_DIR, else the source tree). */
const char *tmoe_run_default_cost_model(void);
/* The committed test split's token file (<data dir>/corpus/test.tokens) and the trained
 * default model (<data dir>/../models/default; it may not exist). */
const char *tmoe_run_default_tokens(void);
const char *tmoe_run_default_model(void);

/* Ask a running tmoe_run to stop after the batch in progress (async-signal-safe). */
void tmoe_run_request_stop(void);

/* ---- config files (--config FILE): flags from a JSON object or an INI file ----------- */
#define TMOE_RUN_CONFIG_MAX_BYTES (1u << 20) /* larger files are refused, not read */
#define TMOE_RUN_CONFIG_VALUE_MAX 4095       /* bytes; a longer value is an error, never cut */

/* A key a config file may hold (a long flag name) and whether it takes a value. */
typedef struct tmoe_run_config_key {
    const char *name;
    int has_value; /* 0: a switch, given as true/false or 1/0 */
} tmoe_run_config_key;

/* One setting, in file order: a switch that is on has value NULL (one that is off is left
 * out); line is the INI line (1-based), 0 for JSON. */
typedef struct tmoe_run_config_entry {
    const char *key; /* the name in the key table (borrowed) */
    char *value;     /* owned, NUL-terminated */
    int line;
} tmoe_run_config_entry;

/* Parse a config file's text (len bytes, need not be NUL-terminated; name for messages): a
 * JSON object ({"repeats": 3, "workloads": ["standard", "skewed"]}: lists of strings are
 * joined with ',') or INI (key = value, '#'/';' comments, [section] headers ignored). Every
 * key must be in keys[0..nkeys). TMOE_EFORMAT / TMOE_EINVAL with "name:line[:column]: why"
 * for a JSON syntax error, a JSON value other than an object, a NUL or control byte (a
 * binary file), an unknown key, a value of the wrong kind or longer than
 * TMOE_RUN_CONFIG_VALUE_MAX. On success *out (n entries) is freed by the caller with
 * tmoe_run_config_entries_free. */
int tmoe_run_config_parse(const char *text, size_t len, const char *name,
                          const tmoe_run_config_key *keys, int nkeys, tmoe_run_config_entry **out,
                          int *n, tmoe_error *err);
/* The same for the file at path: refused unless it is a regular file of at most
 * TMOE_RUN_CONFIG_MAX_BYTES (a FIFO, directory or device fails at once). */
int tmoe_run_config_read(const char *path, const tmoe_run_config_key *keys, int nkeys,
                         tmoe_run_config_entry **out, int *n, tmoe_error *err);
void tmoe_run_config_entries_free(tmoe_run_config_entry *e, int n); /* NULL-safe */

/* How a run ended; metadata.json's status says the same. */
typedef enum {
    TMOE_RUN_COMPLETE,         /* "complete": every batch ran and was measured */
    TMOE_RUN_TELEMETRY_FAULTS, /* "complete_with_telemetry_faults": every batch ran, but the
                                  telemetry failed on some (a GPU lost, no energy reading):
                                  their energy and power cells are nan */
    TMOE_RUN_INTERRUPTED,      /* "interrupted": stopped on request; --resume continues */
    TMOE_RUN_FAILED            /* "failed", or the run did not start */
} tmoe_run_outcome;

typedef struct tmoe_run_report {
    tmoe_run_outcome outcome;
    long rows;             /* rows in batches.csv at the end (-1 if it was not opened) */
    long telemetry_faults; /* logged batches with a telemetry fault */
} tmoe_run_report;

/* Run the sweep. Returns TMOE_OK (outcome complete); TMOE_EDEVICE when every batch ran but
 * some have telemetry faults (the message says how many, the first and why); TMOE_EINTR
 * when stopped (files are complete up to the last batch; --resume continues); or the error
 * that failed the run. out (may be NULL: nothing is written) receives only the summary
 * table at the end, which the caller asks for by passing it; everything said on the way
 * goes to cfg->on_progress, and warnings and errors to the log callback (tmoe_log_set).
 * report (may be NULL) gets the outcome. */
int tmoe_run_ex(const tmoe_run_config *cfg, FILE *out, tmoe_run_report *report, tmoe_error *err);
/* tmoe_run_ex without the report. */
int tmoe_run(const tmoe_run_config *cfg, FILE *out, tmoe_error *err);

/* One combination of a run's plan. */
typedef struct tmoe_run_combo {
    int repeat;
    tmoe_workload_kind workload;
    tmoe_route_strategy strategy;
} tmoe_run_combo;

/* The combinations of cfg in the order tmoe_run runs them (docs/harness.md "Order"): a
 * Williams design over the strategies within each workload, workloads in blocks rotated per
 * repeat, all fixed by cfg->seed and the repeat numbers. *out (free()) holds *n entries. */
int tmoe_run_plan_order(const tmoe_run_config *cfg, tmoe_run_combo **out, int *n, tmoe_error *err);

/* Spearman's rank correlation of (x[i], y[i]), ties given their average rank; pairs with a
 * NAN are left out. NAN when fewer than 3 pairs remain or either side is constant. */
double tmoe_spearman(const double *x, const double *y, int n);

/* ---- serving replay (docs/serve.md) -------------------------------------------------- */
/* Requests with arrival times and lengths, from a trace file or a synthetic generator, and
 * `thermoe serve`: continuous batching of them on the decoder LM, the simulated GPU billed
 * each step in simulated time. */
typedef enum { TMOE_ARR_AUTO, TMOE_ARR_AZURE, TMOE_ARR_MOONCAKE } tmoe_arrivals_format;

typedef struct tmoe_arrival {
    double arrival_s;            /* s after the first request, divided by time_scale */
    int prompt, gen;             /* tokens as replayed (after the caps), each >= 1 */
    int trace_prompt, trace_gen; /* the trace's own lengths */
} tmoe_arrival;

typedef struct tmoe_arrivals_opts {
    tmoe_arrivals_format format; /* AUTO: .jsonl is mooncake, anything else azure */
    int max_requests;            /* 0 = all */
    double time_scale;           /* > 0: arrival gaps divided by it (2 = twice the rate) */
    double context_scale;        /* (0, 1]: prompt and generated lengths times it (>= 1) */
    int max_context;             /* 0 = none: prompt tokens capped at it (after the scale) */
    int max_generated;           /* 0 = none: generated tokens capped at it */
    double duration_s;           /* > 0: only requests arriving before it (s after the first,
                                    after the time scale); 0 = all */
} tmoe_arrivals_opts;
tmoe_arrivals_opts tmoe_arrivals_opts_default(void); /* all, scale 1, no caps, no duration */

typedef struct tmoe_arrivals {
    tmoe_arrival *req; /* (n), sorted by arrival */
    int n;
    int capped;       /* requests whose lengths the scale or caps changed */
    char source[512]; /* the file, or "synthetic ..." with its parameters */
} tmoe_arrivals;

/* Read a trace. Azure (TIMESTAMP,ContextTokens,GeneratedTokens; TIMESTAMP as
 * YYYY-MM-DD HH:MM:SS[.fraction]) or Mooncake JSONL (timestamp in ms, input_length,
 * output_length). A bad timestamp, a length below 1, a time before the previous line's, or a
 * file without requests is TMOE_EINVAL naming the file, the line and the field. */
int tmoe_arrivals_read(const char *path, const tmoe_arrivals_opts *o, tmoe_arrivals *out,
                       tmoe_error *err);

/* A synthetic trace: Poisson arrivals at rate_per_s, prompt and generated lengths
 * lognormal (mu and sigma of the natural log), rounded, at least 1; docs/serve.md gives the
 * values fitted to each trace. n requests; n = 0 with o->duration_s > 0: as many as arrive
 * within the duration (after the time scale). */
typedef struct tmoe_arrivals_synth {
    const char *name;
    double rate_per_s;
    double prompt_mu, prompt_sigma, gen_mu, gen_sigma;
} tmoe_arrivals_synth;
/* The fits of ../shared/fixtures/traces by name: azure_code, azure_conv, mooncake; NULL if
 * none has that name. */
const tmoe_arrivals_synth *tmoe_arrivals_synth_find(const char *name);
int tmoe_arrivals_generate(const tmoe_arrivals_synth *p, int n, uint64_t seed,
                           const tmoe_arrivals_opts *o, tmoe_arrivals *out, tmoe_error *err);
void tmoe_arrivals_free(tmoe_arrivals *a); /* NULL-safe, leaves it empty */

/* Where a replay stands, for a progress display (tmoe_serve_config.on_progress). */
typedef struct tmoe_serve_progress {
    int requests;      /* in the trace */
    int arrived, done; /* arrived so far (waiting, running or finished), finished */
    int running, waiting;
    int steps;
    double replay_s;    /* the replay's clock: simulated s (sim) or wall s (nvml) */
    double wall_s;      /* host seconds since the replay began */
    const char *source; /* "sim" | "nvml" */
} tmoe_serve_progress;
/* Called on the replay's thread; it may call tmoe_run_request_stop. */
typedef void (*tmoe_serve_progress_fn)(const tmoe_serve_progress *p, void *user);

typedef struct tmoe_serve_config {
    const char *model_dir;       /* the decoder LM */
    const char *tokens_path;     /* NULL = tmoe_run_default_tokens() */
    const char *cost_model_path; /* NULL = the committed H100 cost model */
    tmoe_expert_shape expert_shape;
    tmoe_etype expert_type; /* the LM's experts and the production-shape ones beside them
                               (default fp16) */
    int group_size;         /* quantization group of q4 / q2 (default the run's) */
    tmoe_route_strategy strategy;
    tmoe_router_config router; /* strategy, E, k set by the replay */
    uint64_t seed;
    int prefill_chunk;    /* most prompt tokens one request adds in a step */
    int max_batch_tokens; /* most new tokens in a step (decode first, then prefill chunks) */
    int max_seqs;         /* requests running at once (KV slots) */
    long kv_tokens;       /* KV memory limit in token positions (all running requests); 0 =
                             max_seqs x the longest request */
    const char *out_dir;  /* requests.csv, steps.csv, summary.json; NULL = no files */
    const char *argv_line;
    double trace_time_scale; /* for the metadata only */
    double trace_context_scale;
    int trace_max_context, trace_max_generated;
    double slo_ttft_s, slo_tpot_s; /* a request meets the SLO with TTFT and TPOT at most these
                                      (default 1 s and 0.1 s) */
    double temp_target_c;          /* time above it is reported (default router's T*, 75 C) */
    double trace_duration_s;       /* for the metadata only: the --duration cut, 0 = none */
    int expert_shape_given;        /* 0: expert_shape is the default and falls back to trained where
                                      it cannot run (real telemetry on the CPU backend) */
    int act8;                      /* q4 / q2 experts: int8 activations (--expert-activations) */
    /* lower-precision copies (--expert-copy; tmoe_run_config.copy_*): hierarchical_adaptive
       runs them under pressure */
    int copy_given, copy_all;
    unsigned char copy[TMOE_MAX_EXPERTS];
    tmoe_etype copy_type;
    /* where it runs (docs/serve.md "On a GPU"): cpu + sim by default, so a replay is the
     * same on any machine. On sim each step is billed to the simulated GPU and time is
     * simulated; on nvml the GPU measures each step and time is the wall clock. */
    tmoe_backend_kind backend;
    tmoe_telemetry_kind telemetry;
    int device_id;
    tmoe_serve_progress_fn on_progress; /* NULL = none (the library prints nothing) */
    void *progress_user;
    double progress_every_s; /* wall seconds between progress calls; 0 = after every step */
} tmoe_serve_config;
tmoe_serve_config tmoe_serve_config_default(void);

/* Per request, as replayed (times in s since the replay began on the replay's clock:
 * simulated on sim, wall on nvml; NAN where it did not happen, e.g. a request unfinished when
 * the replay was stopped). */
typedef struct tmoe_serve_request {
    double arrival_s, admit_s, first_token_s, finish_s, energy_j;
    int prompt, gen, steps;
} tmoe_serve_request;

/* A stretch of the replay's clock: one step of the engine, or a wait with nothing running. */
typedef struct tmoe_serve_segment {
    double t0_s, t1_s; /* s since the replay began (simulated, or wall on nvml) */
    double energy_j;   /* the GPU's energy over it (simulated, or measured by NVML) */
    double power_peak_w, gpu_temp_peak_c, mem_temp_peak_c;
    int in_system;         /* requests running + waiting at its start */
    int generated;         /* tokens it generated (decode tokens and first tokens) */
    double active_experts; /* a step: distinct experts a MoE layer ran, mean over layers;
                              NAN for an idle wait */
} tmoe_serve_segment;

/* The replay's figures over a window [start_s, end_s] (docs/serve.md "Summary"). Requests
 * count when they arrive inside it; steps and waits when they end inside it. NAN where
 * unknown (no request, no step, no SLO met...). */
typedef struct tmoe_serve_stats {
    double start_s, end_s;
    int requests;                              /* arrived in the window */
    int finished;                              /* finished in the window */
    long generated_tokens;                     /* generated by the steps of the window */
    double ttft_p50_s, ttft_p90_s, ttft_p99_s; /* of the requests arrived in the window */
    double tpot_p50_s, tpot_p90_s, tpot_p99_s; /* of those with more than one token */
    int slo_met;                               /* arrived in the window and met both SLOs */
    double goodput_rps;                        /* slo_met / window length */
    double goodput_share;                      /* slo_met / requests */
    double energy_j;                           /* steps and waits of the window */
    double j_per_request;                      /* energy_j / finished */
    double j_per_generated_token;              /* energy_j / generated_tokens */
    double power_avg_w, power_peak_w, gpu_temp_peak_c, mem_temp_peak_c;
    double gpu_above_target_s, mem_above_target_s; /* time in segments whose peak > target */
    double active_experts; /* mean over the window's steps of the distinct experts a MoE
                              layer ran (what routing changes; NAN without a step) */
} tmoe_serve_stats;

/* The figures of q[0..n) and seg[0..nseg) over [start_s, end_s]. */
void tmoe_serve_window_stats(const tmoe_serve_request *q, int n, const tmoe_serve_segment *seg,
                             int nseg, double start_s, double end_s, double slo_ttft_s,
                             double slo_tpot_s, double temp_target_c, tmoe_serve_stats *out);

/* Plateau detection over series binned alike: the longest run of at least min_bins
 * consecutive bins in which every series stays inside its band around its own mean over
 * the run (|x - mean| <= max(rel_tol |mean|, abs_tol)) and the means of the run's two halves
 * differ by at most half that band (no drift); the earliest of equal length. A NAN bin ends
 * a run. Returns 1 with the run's bins in [*first, *last], 0 when there is none. */
typedef struct tmoe_steady_series {
    const double *x; /* (nbins) */
    double rel_tol, abs_tol;
} tmoe_steady_series;
int tmoe_steady_detect(const tmoe_steady_series *s, int ns, int nbins, int min_bins, int *first,
                       int *last);

#define TMOE_SERVE_STEADY_BINS 20 /* bins of the replay the detector looks at */
#define TMOE_SERVE_STEADY_MIN 5   /* a steady state lasts at least this many (a quarter) */
#define TMOE_SERVE_TIMELINE_BINS (10 * TMOE_SERVE_STEADY_BINS) /* rows of timeline.csv */

/* The replay's steady-state window (docs/serve.md "Steady state"): the run from 0 to t_end_s
 * cut into TMOE_SERVE_STEADY_BINS bins; per bin the time-weighted requests in the system,
 * the average power and the time-weighted GPU temperature of the segments; the plateau of
 * all three by tmoe_steady_detect. Returns 1 with the window in [*start_s, *end_s]; 0 with
 * the whole run there and the reason in why. */
int tmoe_serve_steady_window(const tmoe_serve_segment *seg, int nseg, double t_end_s,
                             double *start_s, double *end_s, char *why, size_t why_len);

/* timeline.csv: the run from 0 to t_end_s in TMOE_SERVE_TIMELINE_BINS bins; per bin the
 * arrivals (and their rate), finishes, time-weighted requests in the system, average power,
 * time-weighted GPU and HBM temperature, and whether it lies in the window. */
int tmoe_serve_write_timeline(const char *path, const tmoe_serve_request *q, int n,
                              const tmoe_serve_segment *seg, int nseg, double t_end_s,
                              double win_start_s, double win_end_s, tmoe_error *err);

/* What a replay measured; times on the replay's clock, energies from the simulated GPU
 * (source "sim") or NVML (source "nvml"); NAN where unknown. */
typedef struct tmoe_serve_summary {
    int requests, steps, max_running, max_waiting;
    long prompt_tokens, generated_tokens;
    double duration_s;              /* first arrival to last finish */
    double energy_j, idle_energy_j; /* steps; waits with nothing running */
    int steady;                     /* 1: a steady state was detected; window is over it */
    char steady_note[256];          /* the rule's verdict in words */
    tmoe_serve_stats window;        /* over the steady state, or the whole run when none */
    tmoe_serve_stats run;           /* over the whole run */
    double wall_s;                  /* host seconds the replay took */
    const char *source;             /* "sim" | "nvml" */
    int interrupted;                /* 1: stopped on request before every request finished */
} tmoe_serve_summary;

/* Replay a (non-empty) trace. req (may be NULL) gets a.n entries (free()). A request that
 * cannot fit the KV limit or the model's positions alone is TMOE_EINVAL before any step.
 * tmoe_run_request_stop (a signal handler) stops it after the step in progress: the files
 * are written over what ran (summary.json "interrupted": true), *sum and *req are filled,
 * and it returns TMOE_EINTR. */
int tmoe_serve_run(const tmoe_serve_config *c, const tmoe_arrivals *a, tmoe_serve_summary *sum,
                   tmoe_serve_request **req, tmoe_error *err);

#ifdef __cplusplus
}
#endif
#endif
