/* Private: the function table every backend fills (see include/thermoe/engine.h for the
 * meaning of each step). Backends are registered in engine.c, the one place with #ifdef. */
#ifndef THERMOE_BACKEND_H
#define THERMOE_BACKEND_H

#include "thermoe/engine.h"

typedef struct tmoe_backend_vt {
    const char *name;
    int (*probe)(tmoe_error *err);
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

extern const tmoe_backend_vt tmoe_backend_cpu;
/* The CPU backend with its experts spread over the ranks of cfg->ep (MPI all-to-all). */
extern const tmoe_backend_vt tmoe_backend_cpu_ep;
#ifdef THERMOE_HAVE_CUDA
extern const tmoe_backend_vt tmoe_backend_cuda;
#endif
#ifdef THERMOE_HAVE_NCCL
/* The CUDA backend with its experts spread over the ranks of cfg->ep (src/backend/nccl). */
extern const tmoe_backend_vt tmoe_backend_cuda_ep;
#endif

/* Accumulate ms into op_ms[op] (NAN counts as 0). */
void tmoe_op_ms_add(double op_ms[TMOE_OP_COUNT], tmoe_op op, double ms);

#endif
