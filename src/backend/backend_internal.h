/* Private: the function tables every backend fills and the registry that lists them (see
 * include/thermoe/backend.h for the meaning of each engine step). The registry in registry.c
 * is the one place with #ifdef: the engine, the isolated-op runner, kernel tracing and
 * `thermoe info` (through tmoe_backend_probe) all look a backend up there. */
#ifndef THERMOE_BACKEND_INTERNAL_H
#define THERMOE_BACKEND_INTERNAL_H

#include "thermoe/backend.h"

/* An engine: the block's forward on one device, or spread over the ranks of cfg->ep. */
typedef struct tmoe_backend_vt {
    const char *name; /* what tmoe_engine_backend_name reports: cpu, cpu-ep, cuda, cuda-ep */
    int (*create)(const tmoe_block *blk, const tmoe_engine_config *cfg, void **st, tmoe_error *err);
    void (*destroy)(void *st);
    /* op_ms: the backend adds the times of the steps it ran (NAN entries mean none yet) */
    int (*begin)(void *st, const float *x, int T, int moe_only, double op_ms[TMOE_OP_COUNT],
                 tmoe_error *err);
    int (*logits)(void *st, float *logits, tmoe_error *err);
    int (*moe)(void *st, const float *bias, tmoe_moe_metrics *m, tmoe_error *err);
    int (*output)(void *st, float *y, tmoe_error *err);
    int (*ep_stats)(const void *st, tmoe_ep_stats *out); /* expert-parallel backends only */
} tmoe_backend_vt;

/* An isolated-op runner behind tmoe_oprun_create (thermoe/backend.h); state is its own. */
typedef struct tmoe_oprun_vt {
    int (*create)(const tmoe_oprun_spec *spec, void **state, tmoe_error *err);
    void (*destroy)(void *state);
    int (*run)(void *state, int calls, double *ms, tmoe_error *err);
    double (*bytes)(const void *state);
    double (*flops)(const void *state);
    int (*copies)(const void *state);
} tmoe_oprun_vt;

/* Kernel tracing and NVTX ranges behind thermoe/backend.h. */
typedef struct tmoe_ktrace_vt {
    int (*start)(tmoe_error *err);
    int (*stop)(tmoe_kernel_rec **recs, int *n, tmoe_error *err);
    void (*range_push)(const char *name);
    void (*range_pop)(void);
    int (*clock_ns)(int64_t *ns, tmoe_error *err); /* the records' clock, now */
} tmoe_ktrace_vt;

/* One registry entry per tmoe_backend_kind. A backend absent from this build has its name
 * and `missing` only. */
typedef struct tmoe_backend_entry {
    const char *name;                 /* the --backend value: auto, cpu, cuda */
    const char *missing;              /* not built: what to do about it; NULL when built */
    int (*probe)(tmoe_error *err);    /* can it run here (NULL for auto) */
    const tmoe_backend_vt *engine;    /* one device */
    const tmoe_backend_vt *engine_ep; /* experts over several processes (cfg->ep); NULL: none */
    const char *ep_missing;           /* why engine_ep is NULL */
    const tmoe_oprun_vt *oprun;       /* isolated ops; NULL: none */
    const tmoe_ktrace_vt *ktrace;     /* kernel tracing and NVTX ranges; NULL: none */
} tmoe_backend_entry;

/* The entry of kind k (auto included); NULL when k is out of range. */
const tmoe_backend_entry *tmoe_backend_entry_of(tmoe_backend_kind k);

/* What the backends define (registry.c refers only to those of this build). */
extern const tmoe_backend_vt tmoe_backend_cpu;
/* The CPU backend with its experts spread over the ranks of cfg->ep (MPI all-to-all). */
extern const tmoe_backend_vt tmoe_backend_cpu_ep;
extern const tmoe_oprun_vt tmoe_oprun_cpu;
/* CUDA (src/backend/cuda): a device answers cudaGetDeviceCount. */
int tmoe_cuda_probe(tmoe_error *err);
extern const tmoe_backend_vt tmoe_backend_cuda;
extern const tmoe_oprun_vt tmoe_oprun_cuda;
extern const tmoe_ktrace_vt tmoe_ktrace_cuda; /* CUPTI and NVTX */
/* The CUDA backend with its experts spread over the ranks of cfg->ep (src/backend/nccl). */
extern const tmoe_backend_vt tmoe_backend_cuda_ep;

/* Accumulate ms into op_ms[op] (NAN counts as 0). */
void tmoe_op_ms_add(double op_ms[TMOE_OP_COUNT], tmoe_op op, double ms);

#endif
