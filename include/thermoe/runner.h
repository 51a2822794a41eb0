/* The experiment runner behind `thermoe run`: sweeps routing strategies x workloads over
 * repeats, one CSV row per batch, a metadata JSON per run, Chrome traces of the first
 * batches of each combination, and a summary per strategy and workload. */
#ifndef THERMOE_RUNNER_H
#define THERMOE_RUNNER_H

#include <stdio.h>

#include "thermoe/engine.h"
#include "thermoe/route.h"
#include "thermoe/telemetry.h"
#include "thermoe/workload.h"

#ifdef __cplusplus
extern "C" {
#endif

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
    const char *run_id;       /* every event */
    /* RESUME */
    int combos_kept;          /* combinations already complete, of combos */
    long rows_kept, rows_dropped; /* rows of batches.csv kept, rows of a combination cut short */
    /* START */
    int strategies, workloads, repeats; /* the sweep's shape */
    int batches;              /* START, BATCH, COMBO_DONE: logged batches per combination */
    const char *backend;      /* the engine's backend name */
    const char *telemetry;    /* the telemetry's choice, one line (tmoe_telemetry_choice) */
    int simulated;            /* 1: the simulated GPU (its figures are not measurements) */
    const char *cost_model;   /* path of the cost model (it drives the simulated GPU) */
    /* BATCH, COMBO_DONE (combos also on RESUME) */
    int combo, combos;        /* index of the combination in the plan (0-based), plan size */
    int repeat;
    tmoe_workload_kind workload;
    tmoe_route_strategy strategy;
    int batch;                /* logged batches of this combination done, 1..batches */
    double elapsed_s;         /* wall clock since the run began */
    double eta_s;             /* wall clock left at the pace so far; NAN before a batch */
    const char *source;       /* "sim" | "nvml" */
    double power_w, temp_c;   /* device 0's latest average power (W) and GPU temperature
                                 (C); NAN when unknown */
} tmoe_run_progress;

/* Called on the thread that runs the sweep; it must not call back into the run. */
typedef void (*tmoe_run_progress_fn)(const tmoe_run_progress *p, void *user);

typedef struct tmoe_run_config {
    /* what to sweep */
    int strategies[TMOE_ROUTE_STRATEGY_COUNT]; /* 1 = run it */
    int workloads[TMOE_WL_COUNT];              /* 1 = run it */
    int repeats;                 /* passes over every combination, order shuffled per repeat */
    int repeat_first;            /* number of the first pass (logged in the repeat column; the
                                    order and router seeds derive from it): a sweep task runs
                                    one repeat with its own number */
    int num_samples;             /* distinct batches per workload */
    int epochs;                  /* passes over the samples per combination */
    int warmup_batches;          /* unlogged batches before each combination */
    int trace_batches;           /* batches traced per combination */
    double arrival_rate;         /* tokens/s, Poisson arrivals; <= 0: closed loop */
    double cooldown_s;           /* rest up to this long between combinations until the GPU
                                    temperature is within 1 C of the run's start; 0 = none */
    int fidelity_every;          /* compute output_rel_error_vs_baseline every N batches */
    uint64_t seed;

    /* model */
    tmoe_block_config block;     /* expert types, shape; block.seq_len = tokens per sequence */
    int batch_size;              /* sequences per batch (base; workloads scale it) */
    int moe_only;                /* run the MoE layer alone (no attention) */

    /* where it runs */
    tmoe_backend_kind backend;
    tmoe_impl impl;
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
    const char *out_dir;         /* run directory (created) */
    const char *log_file;        /* batches.csv path; NULL: <out_dir>/batches.csv */
    int resume;                  /* continue a killed run in out_dir */
    tmoe_run_progress_fn on_progress; /* progress events; NULL = none (the library prints
                                         nothing of its own) */
    void *progress_user;              /* passed to on_progress */
    int analyze;                 /* run the analysis on the run directory at the end */
    const char *argv_line;       /* the command line, for the metadata */
} tmoe_run_config;

tmoe_run_config tmoe_run_config_default(void);

/* Where the committed H100 cost model lives (THERMOE_DATA_DIR, else the source tree). */
const char *tmoe_run_default_cost_model(void);

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

#ifdef __cplusplus
}
#endif
#endif
