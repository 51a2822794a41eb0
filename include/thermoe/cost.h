/* Kernel cost model: what each op costs in time, energy and heat at a given token count,
 * per expert type and implementation. File format: DESIGN.md "Kernel cost model file"
 * (JSON, schema "thermoe.cost_model/1"). The simulated GPU and the profiler read costs
 * through the lookups below, the routers through a cost provider (the end of this file);
 * the profiler and the importers write entries. */
#ifndef THERMOE_COST_H
#define THERMOE_COST_H

#include <stddef.h>
#include <stdint.h>

#include "thermoe/core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TMOE_COST_SCHEMA "thermoe.cost_model/1"
#define TMOE_COST_MAX_EXPERTS 4096 /* limit of tmoe_cost_energy_loss */

typedef struct tmoe_cost_model tmoe_cost_model;

/* One kernel an op launches, per call of the op. */
typedef struct tmoe_cost_kernel {
    char *name;    /* owned by whoever owns the entry; copied by tmoe_cost_add */
    int64_t count; /* launches per call */
    double ms;     /* milliseconds per call, summed over the launches */
} tmoe_cost_kernel;

/* One measured (op, expert_type, impl, tokens) point. Unknown values are NAN
 * (written as null in the file). */
typedef struct tmoe_cost_entry {
    tmoe_op op;
    tmoe_etype expert_type;
    tmoe_impl impl;
    int tokens;                 /* >= 1 */
    double latency_median_ms;   /* ms per call, median of per-call times; required, >= 0 */
    double latency_p90_ms;      /* ms per call, 90th percentile */
    double energy_board_j;      /* J per call: energy counter delta / calls */
    double energy_dynamic_j;    /* J per call: board - idle power x time (may be < 0 by noise) */
    double avg_power_w;         /* W, board average while the op ran */
    double temp_impact_c_per_s; /* C per second of sustained op (may be < 0) */
    int64_t samples;            /* calls measured */
    int throttled;              /* 1 when a clock-event reason other than idle was seen */
    int n_kernels;
    tmoe_cost_kernel *kernels; /* (n_kernels) */
    int has_ncu;               /* the ncu block below is present */
    double ncu_occupancy_pct;  /* achieved occupancy, % of peak sustained active */
    double ncu_dram_pct;       /* DRAM throughput, % of peak sustained elapsed */
} tmoe_cost_entry;

/* Where and when the costs were measured. Strings are empty when unknown. */
typedef struct tmoe_cost_meta {
    char device_name[128];
    char device_uuid[96];
    char device_driver[64];
    char device_telemetry[32];     /* "nvml", "sim", ... */
    double power_limit_w;          /* W; NAN when unknown */
    char created[40];              /* ISO 8601 UTC, e.g. 2026-11-26T10:00:00Z */
    char tool[128];                /* "thermoe 0.1.0 (git abc)" */
    int d_model, d_ff, group_size; /* shape the ops were measured at; 0 when unknown */
    double idle_power_w;           /* W; NAN when unknown */
} tmoe_cost_meta;

/* What to do with token counts outside the measured range of an (op, type, impl). */
typedef enum {
    TMOE_COST_EXTRAP_CLAMP,  /* use the nearest measured point (default) */
    TMOE_COST_EXTRAP_LINEAR, /* extend the end segment linearly in log(tokens), floored at 0 */
} tmoe_cost_extrap;

/* Result of a lookup. Values are per call at the requested token count. */
typedef struct tmoe_cost_value {
    double latency_ms; /* median latency */
    double latency_p90_ms;
    double energy_j; /* board energy */
    double energy_dynamic_j;
    double avg_power_w;
    double temp_impact_c_per_s;
    int extrapolated;         /* 1 when tokens lay outside the measured range */
    int lo_tokens, hi_tokens; /* measured token counts used (equal when exact/clamped) */
} tmoe_cost_value;

/* ---- lifetime ------------------------------------------------------------------------ */
/* An empty model (no entries, unknown meta). Caller frees with tmoe_cost_free. */
int tmoe_cost_create(tmoe_cost_model **out, tmoe_error *err);
void tmoe_cost_free(tmoe_cost_model *cm); /* NULL-safe */

/* Load and validate a cost model file. Syntax errors say file:line:column; field errors
 * name the file, the entry index and the field. Caller frees *out. */
int tmoe_cost_load(const char *path, tmoe_cost_model **out, tmoe_error *err);
/* Same, from memory; `name` is used in messages in place of a path. */
int tmoe_cost_load_buffer(const char *data, size_t len, const char *name, tmoe_cost_model **out,
                          tmoe_error *err);
/* Load paths[0..n) and merge them in order with tmoe_cost_merge (later files win).
 * Caller frees *out. */
int tmoe_cost_merge_files(const char *const *paths, int n, tmoe_cost_model **out, tmoe_error *err);
/* Write pretty JSON, keys in a fixed order, entries sorted by (op, type, impl, tokens).
 * Whole or nothing (tmoe_atomic_*): on any failure path keeps its old contents; a path that
 * exists and is not a regular file (a device, FIFO, directory) is refused (TMOE_EINVAL). */
int tmoe_cost_save(const tmoe_cost_model *cm, const char *path, tmoe_error *err);
/* The same bytes as tmoe_cost_save, malloc'ed and NUL-terminated; caller frees. */
char *tmoe_cost_dumps(const tmoe_cost_model *cm, tmoe_error *err);
/* FNV-1a 64 of the canonical bytes (tmoe_cost_dumps): identifies the costs a run used.
 * 0 (logged) only when out of memory. */
uint64_t tmoe_cost_checksum(const tmoe_cost_model *cm);

/* ---- contents ------------------------------------------------------------------------ */
tmoe_cost_meta tmoe_cost_get_meta(const tmoe_cost_model *cm);
void tmoe_cost_set_meta(tmoe_cost_model *cm, const tmoe_cost_meta *meta);
/* Name used in messages (the file it was loaded from, or "(memory)"). */
const char *tmoe_cost_source(const tmoe_cost_model *cm);
void tmoe_cost_set_extrapolation(tmoe_cost_model *cm, tmoe_cost_extrap mode);

/* Add an entry (deep copy), replacing one with the same (op, type, impl, tokens); a
 * replacement is logged at info level. Checks the values as load does. */
int tmoe_cost_add(tmoe_cost_model *cm, const tmoe_cost_entry *e, tmoe_error *err);
int tmoe_cost_count(const tmoe_cost_model *cm);
/* Entry i in sorted order (op, type, impl, tokens); valid until the model changes. */
const tmoe_cost_entry *tmoe_cost_entry_at(const tmoe_cost_model *cm, int i);
/* Set the ncu block of entry i. */
void tmoe_cost_set_ncu(tmoe_cost_model *cm, int i, double occupancy_pct, double dram_pct);

/* Merge src into dst: src entries replace dst entries with the same key (logged); dst meta
 * fields that are unknown are taken from src. Shapes that differ are an error. */
int tmoe_cost_merge(tmoe_cost_model *dst, const tmoe_cost_model *src, tmoe_error *err);

/* ---- lookups (read-only, thread-safe against each other) ------------------------------ */
/* Cost of one op call at `tokens` (>= 1), interpolated piecewise-linearly in log(tokens)
 * between measured counts. A missing (op, type, impl) is TMOE_EINVAL with a message that
 * lists what the model has; a bf16 key the model lacks is looked up as fp16 (same bytes moved,
 * same kernel shape). */
int tmoe_cost_lookup(const tmoe_cost_model *cm, tmoe_op op, tmoe_etype et, tmoe_impl impl,
                     double tokens, tmoe_cost_value *out, tmoe_error *err);
/* Cost of one expert forward for `tokens` tokens: the sum over tmoe_expert_op_sequence.
 * tokens == 0 gives all zeros (no work). extrapolated is set if any op extrapolated. */
int tmoe_cost_expert(const tmoe_cost_model *cm, tmoe_etype et, tmoe_impl impl, double tokens,
                     tmoe_cost_value *out, tmoe_error *err);
/* Measured crossover between two impls of one expert type (the engine's per-step choice,
 * thermoe/backend.h tmoe_engine_config.unfused_from): *n = the smallest token count in
 * [1, max_tokens] from which one expert through `to` is faster (median latency of
 * tmoe_cost_expert) than through `from` at every count up to max_tokens; 0 when `to` is not
 * faster at max_tokens. Counts beyond the measured range follow the model's extrapolation.
 * A missing entry is an error naming it. */
int tmoe_cost_crossover(const tmoe_cost_model *cm, tmoe_etype et, tmoe_impl from, tmoe_impl to,
                        int max_tokens, int *n, tmoe_error *err);
/* compute_energy_loss: sum over tokens t and choices j < k of
 *   probs[t*k+j] x energy_j(expert_of(t, j), n_tokens_of_that_expert_in_this_batch)
 * where energy_j is tmoe_cost_expert's board energy and the token count of an expert is how
 * many (t, j) chose it. expert_ids (n_tokens, k): ids in [0, n_experts), -1 = dropped;
 * probs (n_tokens, k); expert_types (n_experts). n_experts <= TMOE_COST_MAX_EXPERTS.
 * *loss_j in joules. An expert whose ops have unknown (NAN) board energy is TMOE_EINVAL.
 * Does not allocate. */
int tmoe_cost_energy_loss(const tmoe_cost_model *cm, int n_tokens, int k, const int32_t *expert_ids,
                          const float *probs, int n_experts, const tmoe_etype *expert_types,
                          tmoe_impl impl, double *loss_j, tmoe_error *err);

/* ---- expert costs for the routers ---------------------------------------------------
 * The routers read costs through a provider: a small table of function pointers over a
 * context the caller owns. Two providers are here: one over a cost model (tables of every
 * integer token count, built once) and an analytic one for tests and benchmarks. */

/* Predicted cost of one expert's whole op sequence (dequant_unpack where it applies,
 * linear_fc1, relu, linear_fc2) at a token count. */
typedef struct tmoe_expert_cost {
    double energy_j;            /* joules for the whole call at that token count */
    double latency_ms;          /* milliseconds for the whole call */
    double temp_impact_c_per_s; /* heating rate while it runs, C/s */
} tmoe_expert_cost;

/* expert_cost: cost of `expert` at `tokens` (a real number >= 0, smooth in tokens). Returns
 * TMOE_OK or a code + err. expert_cost_deriv (may be NULL): d/dtokens of each field at
 * `tokens`; without it the routers take a central difference (tmoe_route_cost_eval). A
 * provider is a value (copy it freely); ctx is borrowed by whoever holds a copy, and must be
 * callable from the thread that uses the copy. */
typedef struct tmoe_cost_provider {
    int (*expert_cost)(void *ctx, int expert, double tokens, tmoe_expert_cost *out,
                       tmoe_error *err);
    int (*expert_cost_deriv)(void *ctx, int expert, double tokens, tmoe_expert_cost *d_out,
                             tmoe_error *err);
    void *ctx;
} tmoe_cost_provider;

/* Expert costs from a cost model, per expert, at any real token count n >= 0:
 * tmoe_cost_expert of the expert's type at every integer count 1..max_tokens is computed
 * once into a table (0 tokens cost 0); between integer counts the cost is linear, so the
 * derivative is the slope of the table's segment; below one token it is n x the one-token
 * cost (the expectation over whether the expert is touched at all), continuous at 0; above
 * max_tokens the last segment is extended linearly. A negative (or NaN) n or an expert
 * outside 0..num_experts-1 is TMOE_EINVAL. Lookups read the table only: thread-safe. */
typedef struct tmoe_cost_table tmoe_cost_table;

/* Build the tables. cm is read during the call only (it may be freed afterwards); types
 * (num_experts, 1..TMOE_COST_MAX_EXPERTS) is copied. max_tokens >= 1. An expert type or
 * impl the model lacks is the lookup's error (TMOE_EINVAL). Caller frees *out with
 * tmoe_cost_table_free. */
int tmoe_cost_table_create(const tmoe_cost_model *cm, const tmoe_etype *types, int num_experts,
                           tmoe_impl impl, int max_tokens, tmoe_cost_table **out, tmoe_error *err);
void tmoe_cost_table_free(tmoe_cost_table *t); /* NULL-safe */
int tmoe_cost_table_num_experts(const tmoe_cost_table *t);
int tmoe_cost_table_max_tokens(const tmoe_cost_table *t);
/* The provider over t (expert_cost and expert_cost_deriv as above); its ctx borrows t, which
 * must outlive every copy of the provider (a router copies it). */
tmoe_cost_provider tmoe_cost_table_provider(const tmoe_cost_table *t);

/* Analytic provider for tests and benchmarks: for each field f of expert e,
 *   f_e(n) = fixed[e] + per_token[e] * n + curve[e] * log(1 + n),
 * with its exact derivative. A negative n or an expert outside 0..num_experts-1 is
 * TMOE_EINVAL. The provider's ctx borrows c (and c its arrays): they must outlive it. */
typedef struct tmoe_analytic_cost {
    int num_experts;
    const double *e_fixed, *e_per_token, *e_curve; /* (E) joules, J/token, J */
    const double *l_fixed, *l_per_token, *l_curve; /* (E) ms; NULL arrays count as zeros */
    const double *t_fixed, *t_per_token, *t_curve; /* (E) C/s */
} tmoe_analytic_cost;
tmoe_cost_provider tmoe_cost_analytic_provider(const tmoe_analytic_cost *c);

#ifdef __cplusplus
}
#endif
#endif
