/* Profiling: measuring what every op costs, and importing what external profilers
 * (Nsight Systems SQLite exports, Nsight Compute CSV) measured, into the cost model. */
#ifndef THERMOE_PROFILE_H
#define THERMOE_PROFILE_H

#include <stddef.h>
#include <stdint.h>

#include "thermoe/core.h"
#include "thermoe/cost.h"
#include "thermoe/backend.h"
#include "thermoe/telemetry.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- import: Nsight Systems SQLite export (nsys export --type sqlite) ------------------
 * Tables and columns are probed; any table may be missing (reported in `missing`, not an
 * error) except CUPTI_ACTIVITY_KIND_KERNEL. Kernels are mapped to an op when their launch
 * (CUPTI_ACTIVITY_KIND_RUNTIME, same thread) or, failing that, their GPU start lies in an
 * NVTX range named after the op ("linear_fc1", "thermoe:linear_fc1", optionally followed
 * by a space and more words). Power samples (GPU_METRICS metrics whose name contains
 * "power", device = typeId & 0xFF; or a table whose name contains NVML/POWER with time and
 * power columns) are a step function: a sample holds from its timestamp to the next one.
 * A kernel's energy is that function integrated over [start, end]; NAN when the samples do
 * not cover the whole kernel. Overlapping kernels on one device are each billed in full. */

typedef struct tmoe_nsys_kernel {
    int64_t start_ns, end_ns; /* GPU timestamps */
    int device;               /* deviceId (0 when the column is absent) */
    int name;                 /* index into tmoe_nsys_result.names */
    int op;                   /* tmoe_op of the enclosing op range, -1 when none */
    int64_t range;            /* index of that range in its op's range list, -1 when none */
    double energy_j;          /* J, NAN when power does not cover the kernel */
} tmoe_nsys_kernel;

typedef struct tmoe_nsys_device {
    int device;
    int64_t kernels;
    int64_t kernel_ns; /* sum of end - start */
    double energy_j;   /* J over kernels with known energy */
    int64_t kernels_with_energy;
    int64_t power_samples;
} tmoe_nsys_device;

typedef struct tmoe_nsys_kname {
    int name; /* index into names */
    int64_t count;
    int64_t ns;
} tmoe_nsys_kname;

typedef struct tmoe_nsys_op {
    int64_t ranges; /* NVTX ranges named after this op */
    int64_t kernels;
    int64_t kernel_ns;
    double energy_j;   /* NAN when any of its kernels has unknown energy */
    int64_t *range_ns; /* (ranges) kernel ns inside each range */
    double *range_j;   /* (ranges) J inside each range, NAN when unknown */
    int n_knames;
    tmoe_nsys_kname *knames; /* (n_knames) kernels of this op by name */
} tmoe_nsys_op;

typedef struct tmoe_nsys_result {
    int64_t n_kernels;
    int64_t kernel_ns;
    tmoe_nsys_kernel *kernels; /* (n_kernels) in start order */
    int64_t kernels_skipped;   /* rows left out: end before start, or end - start past int64 */
    int n_names;
    char **names;         /* (n_names) kernel names */
    char name_column[32]; /* kernel-name column used: demangledName, shortName, ... */
    int n_devices;
    tmoe_nsys_device *devices; /* (n_devices), ascending device id */
    int64_t nvtx_ranges;       /* all NVTX ranges read */
    int64_t op_ranges;         /* those named after an op */
    int64_t launches_matched;  /* kernels whose launch call was found */
    tmoe_nsys_op ops[TMOE_OP_COUNT];
    char power_source[160]; /* e.g. "GPU_METRICS 'Power [W]'"; empty when none */
    int64_t power_samples;
    double energy_j;   /* J over kernels with known energy; NAN when no power */
    char missing[512]; /* absent tables, comma-separated */
} tmoe_nsys_result;

/* Import an nsys SQLite export. Corrupt files, files without a kernel table, and sqlite
 * failures are errors naming the file. Caller frees *out with tmoe_nsys_free. */
int tmoe_import_nsys(const char *path, tmoe_nsys_result **out, tmoe_error *err);
void tmoe_nsys_free(tmoe_nsys_result *r); /* NULL-safe */
/* One cost entry per op with ranges, keyed (op, et, impl, tokens): latency median/p90 of
 * the per-range kernel time, board energy = mean per-range energy (NAN without power),
 * kernels listed per call. Entries replace same-key ones in cm. *n_added may be NULL. */
int tmoe_nsys_to_cost(const tmoe_nsys_result *r, tmoe_etype et, tmoe_impl impl, int tokens,
                      tmoe_cost_model *cm, int *n_added, tmoe_error *err);

/* ---- import: Nsight Compute CSV ---------------------------------------------------------
 * Both `ncu --csv --page raw` (one row per kernel, a units row after the header) and the
 * "details" layout (Section Name, Metric Name, Metric Unit, Metric Value per row). ==PROF==
 * and ==WARNING== lines are skipped; a file with only ==ERROR== lines is an error quoting
 * the first one. Numbers may carry thousands separators (groups of exactly three digits
 * after the first); a value that is no number, or a negative duration, is an error naming
 * the line; an empty or "n/a" value is NAN (not measured). */

typedef struct tmoe_ncu_kernel {
    char *name;           /* "Kernel Name" */
    int64_t id;           /* "ID" column, -1 when absent */
    double duration_ns;   /* gpu__time_duration.sum (or Duration), in ns; NAN when absent */
    double occupancy_pct; /* sm__warps_active.avg.pct_of_peak_sustained_active; NAN absent */
    double
        dram_pct; /* gpu__dram_throughput / dram__throughput .avg.pct_of_peak_sustained_elapsed */
} tmoe_ncu_kernel;

typedef struct tmoe_ncu_result {
    int n;
    tmoe_ncu_kernel *kernels; /* (n) in file order */
    int details_layout;       /* 1 when read from the details layout */
} tmoe_ncu_result;

int tmoe_import_ncu(const char *path, tmoe_ncu_result **out, tmoe_error *err);
/* Same, from memory; `name` appears in messages in place of a path. */
int tmoe_import_ncu_buffer(const char *data, size_t len, const char *name, tmoe_ncu_result **out,
                           tmoe_error *err);
void tmoe_ncu_free(tmoe_ncu_result *r); /* NULL-safe */
/* Set the "ncu" block of every cost entry one of whose kernels matches an ncu kernel by
 * name (exact, or same base name: without "void ", template and argument lists); values
 * are duration-weighted means over the matches. *n_matched (may be NULL) = entries set. */
int tmoe_ncu_merge_cost(const tmoe_ncu_result *r, tmoe_cost_model *cm, int *n_matched,
                        tmoe_error *err);

/* ============================== profiler ============================================== */
/* The kernel profiler behind `thermoe profile`: runs every op an expert (and the block
 * around it) uses, alone, with the method of DESIGN.md "Measuring energy of short
 * operations", and writes a kernel cost model. */

#define TMOE_PROFILE_MAX_TOKENS 32

typedef struct tmoe_profile_config {
    tmoe_backend_kind backend; /* auto resolves like the engine */
    int device_id;
    tmoe_telemetry_kind telemetry; /* energy is measured only with nvml */
    int ops[TMOE_OP_COUNT];        /* 1 = profile this op */
    int etypes[TMOE_ET_COUNT];     /* 1 = profile this expert type */
    int impls[TMOE_IMPL_COUNT];    /* 1 = profile this impl */
    int tokens[TMOE_PROFILE_MAX_TOKENS];
    int ntokens;
    double min_seconds;        /* run each op at least this long (default 1 s) */
    int min_calls;             /* and at least this many calls (default 20) */
    int warmup_calls;          /* unmeasured calls first (default 5) */
    double rest_max_s;         /* rest after an op until back within rest_tol_c of the
                                  idle temperature, at most this long (default 10 s) */
    double rest_tol_c;         /* default 1 C */
    double min_working_set_mb; /* weights rotated per op, MB (default 128: > 2x L2) */
    tmoe_block_config block;   /* the shape measured */
    int moe_only;              /* skip norm and attention ops */
    uint64_t seed;
    /* progress (may be NULL): done of total measurements, what is running, ETA in s */
    void (*progress)(void *user, int done, int total, const char *what, double eta_s);
    void *progress_user;
    volatile int *stop;     /* set non-zero to stop after the current op */
    const char *check_path; /* when set: also measure each whole expert forward and
                               write a Markdown table of sum-of-ops vs whole here */
} tmoe_profile_config;

tmoe_profile_config tmoe_profile_config_default(void);

/* Measure and return a cost model (caller frees). The model is complete up to the op in
 * progress when stopped (TMOE_EINTR, *out still set). */
int tmoe_profile_run(const tmoe_profile_config *cfg, tmoe_cost_model **out, tmoe_error *err);

/* One planned measurement. Ops outside an expert are keyed as fp16 / fused. */
typedef struct tmoe_profile_item {
    tmoe_op op;
    tmoe_etype et;
    tmoe_impl impl;
    int tokens;
    int also_other_impl; /* fp16 experts: the same numbers stand for the other impl too */
} tmoe_profile_item;

/* The measurements tmoe_profile_run makes, in order (at most cap; returns the count). */
int tmoe_profile_plan(const tmoe_profile_config *cfg, tmoe_profile_item *items, int cap);
int tmoe_profile_plan_cap(const tmoe_profile_config *cfg); /* room the plan needs */

/* Median and 90th percentile (linear interpolation between order statistics) of n values;
 * v is sorted in place. */
void tmoe_profile_percentiles(double *v, int n, double *median, double *p90);

/* ============================== exttool =============================================== */
/* Running external profilers (nsys, ncu): find them on PATH, run one with a timeout, its
 * stdout and stderr captured to a log file, and say which step failed with the tool's own
 * last words. */

/* Full path of an executable found on PATH (buf), or NULL when it is not installed. */
const char *tmoe_tool_find(const char *name, char *buf, size_t n);

typedef struct tmoe_tool_result {
    int exit_code;   /* exit status, or -1 when killed */
    int timed_out;   /* 1 when the timeout killed it */
    double seconds;  /* wall time */
    char tail[1024]; /* last lines of its output (stderr and stdout, as logged) */
} tmoe_tool_result;

/* Run argv (argv[0] a path or a name on PATH) with stdout and stderr appended to log_path,
 * killing it (SIGTERM, then SIGKILL) after timeout_s. step names the step in messages.
 * TMOE_OK when it exited 0; otherwise TMOE_EDEVICE (or TMOE_EIO for a log file problem) with
 * "step: <tool> exited N: <last line>" and the result filled. */
int tmoe_tool_run(const char *step, char *const argv[], const char *log_path, double timeout_s,
                  tmoe_tool_result *res, tmoe_error *err);

#ifdef __cplusplus
}
#endif
#endif
