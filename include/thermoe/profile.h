/* Profiling: measuring what every op costs, and importing what external profilers
 * (Nsight Systems SQLite exports, Nsight Compute CSV) measured, into the cost model. */
#ifndef THERMOE_PROFILE_H
#define THERMOE_PROFILE_H

#include <stddef.h>
#include <stdint.h>

#include "thermoe/core.h"
#include "thermoe/cost.h"
#include "thermoe/ops.h"

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
    int name;          /* index into names */
    int64_t count;
    int64_t ns;
} tmoe_nsys_kname;

typedef struct tmoe_nsys_op {
    int64_t ranges;     /* NVTX ranges named after this op */
    int64_t kernels;
    int64_t kernel_ns;
    double energy_j;    /* NAN when any of its kernels has unknown energy */
    int64_t *range_ns;  /* (ranges) kernel ns inside each range */
    double *range_j;    /* (ranges) J inside each range, NAN when unknown */
    int n_knames;
    tmoe_nsys_kname *knames; /* (n_knames) kernels of this op by name */
} tmoe_nsys_op;

typedef struct tmoe_nsys_result {
    int64_t n_kernels;
    int64_t kernel_ns;
    tmoe_nsys_kernel *kernels; /* (n_kernels) in start order */
    int64_t kernels_skipped;   /* rows left out: end before start, or end - start past int64 */
    int n_names;
    char **names;              /* (n_names) kernel names */
    char name_column[32];      /* kernel-name column used: demangledName, shortName, ... */
    int n_devices;
    tmoe_nsys_device *devices; /* (n_devices), ascending device id */
    int64_t nvtx_ranges;       /* all NVTX ranges read */
    int64_t op_ranges;         /* those named after an op */
    int64_t launches_matched;  /* kernels whose launch call was found */
    tmoe_nsys_op ops[TMOE_OP_COUNT];
    char power_source[160];    /* e.g. "GPU_METRICS 'Power [W]'"; empty when none */
    int64_t power_samples;
    double energy_j;           /* J over kernels with known energy; NAN when no power */
    char missing[512];         /* absent tables, comma-separated */
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
    double dram_pct;      /* gpu__dram_throughput / dram__throughput .avg.pct_of_peak_sustained_elapsed */
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

#ifdef __cplusplus
}
#endif
#endif
