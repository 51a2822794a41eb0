/* Kernel tracing: every GPU kernel launched between start and stop, with name, grid,
 * block, device and start/end times, collected through CUPTI's activity API (libcupti is
 * loaded at run time; activity records are buffered by CUPTI and read on stop, so tracing
 * adds no synchronisation and does not disturb NVML sampling). */
#ifndef THERMOE_KTRACE_H
#define THERMOE_KTRACE_H

#include "thermoe/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tmoe_kernel_rec {
    char name[200];       /* demangled when CUPTI gives it, truncated to fit */
    int64_t start_ns;     /* GPU timestamps, ns */
    int64_t end_ns;
    int grid[3], block[3];
    int device;
    uint32_t correlation; /* CUPTI correlation id */
} tmoe_kernel_rec;

/* Begin collecting. TMOE_ENOTSUP when this build has no CUDA or libcupti cannot be loaded
 * (env THERMOE_CUPTI_LIB names the library; the message says what was tried). */
int tmoe_ktrace_start(tmoe_error *err);
/* Flush and stop. *recs (caller frees with free()) holds the kernels in end-time order. */
int tmoe_ktrace_stop(tmoe_kernel_rec **recs, int *n, tmoe_error *err);

/* Aggregate kernels by name: names (n_out entries), launch counts and total ms; arrays are
 * caller-provided with room for cap names. Returns the number of distinct names. */
int tmoe_ktrace_aggregate(const tmoe_kernel_rec *recs, int n, char (*names)[200], int64_t *count,
                          double *ms, int cap);

/* NVTX range around a region, so external profilers (nsys, ncu --nvtx) see it by name.
 * No-ops in a build without CUDA. */
void tmoe_nvtx_push(const char *name);
void tmoe_nvtx_pop(void);

#ifdef __cplusplus
}
#endif
#endif
