/* Run log schema: the one definition of the per-batch CSV columns (batches.csv) and the
 * metadata file name that the experiment harness writes and `thermoe analyze` reads.
 * Writers emit the columns in exactly this order, with this header line; lists inside a
 * cell are ';'-separated; an empty cell or "nan" means unknown (never 0). Per-device lists
 * (device_*) have one entry per telemetry device, in device index order. New columns go at
 * the end: readers look columns up by name, and a file without them still loads. */
#ifndef THERMOE_RUNLOG_H
#define THERMOE_RUNLOG_H

#ifdef __cplusplus
extern "C" {
#endif

#define TMOE_RUNLOG_CSV "batches.csv"       /* one row per batch, per run directory */
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
#define TMOE_RUNLOG_COLUMNS(X) \
    X(TIME, "time", TMOE_COL_DOUBLE, "s since run start (monotonic)") \
    X(RUN_ID, "run_id", TMOE_COL_STR, "run identifier") \
    X(REPEAT, "repeat", TMOE_COL_INT, "repeat index, 0-based") \
    X(WORKLOAD, "workload", TMOE_COL_STR, "workload name") \
    X(STRATEGY, "strategy", TMOE_COL_STR, "routing strategy name") \
    X(EXPERT_TYPE, "expert_type", TMOE_COL_STR, "fp16, q4 or q2") \
    X(IMPL, "impl", TMOE_COL_STR, "fused or unfused") \
    X(BATCH_IDX, "batch_idx", TMOE_COL_INT, "batch index within the combination, 0-based") \
    X(TOKENS, "tokens", TMOE_COL_INT, "tokens in the batch") \
    X(LATENCY_MS, "latency_ms", TMOE_COL_DOUBLE, "ms, device events") \
    X(THROUGHPUT, "throughput_tokens_s", TMOE_COL_DOUBLE, "tokens/s") \
    X(ENERGY_J, "energy_j", TMOE_COL_DOUBLE, "J for the batch") \
    X(ENERGY_J_PER_TOKEN, "energy_j_per_token", TMOE_COL_DOUBLE, "J/token") \
    X(ENERGY_METHOD, "energy_method", TMOE_COL_STR, "counter or integrated") \
    X(POWER_AVG_W, "power_avg_w", TMOE_COL_DOUBLE, "W, mean over the batch") \
    X(POWER_PEAK_W, "power_peak_w", TMOE_COL_DOUBLE, "W, max over the batch (summed over devices)") \
    X(GPU_TEMP_START_C, "gpu_temp_start_c", TMOE_COL_DOUBLE, "C") \
    X(GPU_TEMP_END_C, "gpu_temp_end_c", TMOE_COL_DOUBLE, "C") \
    X(GPU_TEMP_PEAK_C, "gpu_temp_peak_c", TMOE_COL_DOUBLE, "C") \
    X(MEM_TEMP_C, "mem_temp_c", TMOE_COL_DOUBLE, "C, HBM peak over the batch") \
    X(SM_CLOCK_MHZ, "sm_clock_mhz", TMOE_COL_DOUBLE, "MHz, mean") \
    X(THROTTLE_REASONS, "throttle_reasons", TMOE_COL_INT, "clock-event reason bits (0 = none)") \
    X(GPU_UTIL_PCT, "gpu_util_pct", TMOE_COL_DOUBLE, "%") \
    X(EXPERT_USAGE_COUNTS, "expert_usage_counts", TMOE_COL_LIST_INT, "token copies per expert") \
    X(EXPERT_TIME_MS, "expert_time_ms", TMOE_COL_LIST_DBL, "ms per expert") \
    X(PREDICTED_ENERGY_J, "predicted_energy_j", TMOE_COL_DOUBLE, "J, cost model") \
    X(ROUTER_OVERHEAD_MS, "router_overhead_ms", TMOE_COL_DOUBLE, "ms spent routing") \
    X(TTHA_POWER_LOSS, "ttha_power_loss", TMOE_COL_DOUBLE, "loss term") \
    X(TTHA_TEMP_LOSS, "ttha_temp_loss", TMOE_COL_DOUBLE, "loss term") \
    X(TTHA_LATENCY_PENALTY, "ttha_latency_penalty", TMOE_COL_DOUBLE, "loss term") \
    X(TTHA_THROUGHPUT_BONUS, "ttha_throughput_bonus", TMOE_COL_DOUBLE, "loss term") \
    X(TTHA_FIDELITY, "ttha_fidelity", TMOE_COL_DOUBLE, "loss term") \
    X(TTHA_TOTAL_LOSS, "ttha_total_loss", TMOE_COL_DOUBLE, "loss") \
    X(TTHA_LR, "ttha_lr", TMOE_COL_DOUBLE, "learning rate") \
    X(BIASES, "biases", TMOE_COL_LIST_DBL, "per-expert routing bias") \
    X(TOPK_AGREEMENT, "topk_agreement_with_baseline", TMOE_COL_DOUBLE, "fraction in [0, 1]") \
    X(OUTPUT_REL_ERROR, "output_rel_error_vs_baseline", TMOE_COL_DOUBLE, "||y - y0|| / ||y0||") \
    X(TELEMETRY_SOURCE, "telemetry_source", TMOE_COL_STR, "nvml or sim") \
    X(DEVICE_ENERGY_J, "device_energy_j", TMOE_COL_LIST_DBL, "J per device; energy_j is the sum") \
    X(DEVICE_POWER_AVG_W, "device_power_avg_w", TMOE_COL_LIST_DBL, "W per device, mean over the batch") \
    X(DEVICE_TEMP_END_C, "device_temp_end_c", TMOE_COL_LIST_DBL, "C per device at the batch's end") \
    X(DEVICE_TOKENS, "device_tokens", TMOE_COL_LIST_INT, "token copies routed to each device's experts")

#define TMOE_RUNLOG_ENUM_(id, name, type, unit) TMOE_RL_##id,
typedef enum { TMOE_RUNLOG_COLUMNS(TMOE_RUNLOG_ENUM_) TMOE_RL_NCOLS } tmoe_runlog_col_id;
#undef TMOE_RUNLOG_ENUM_

/* The columns in file order (TMOE_RL_NCOLS entries), indexed by tmoe_runlog_col_id. */
extern const tmoe_runlog_col tmoe_runlog_cols[TMOE_RL_NCOLS];

/* Column index of a header name, or -1. */
int tmoe_runlog_col_find(const char *name);

#ifdef __cplusplus
}
#endif
#endif
