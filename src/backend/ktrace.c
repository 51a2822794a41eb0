/* Kernel tracing front: the CUDA build's CUPTI tracer, or a clear "not supported". */
#include "thermoe/ktrace.h"

#include <string.h>

#ifdef THERMOE_HAVE_CUDA
int tmoe_cupti_start(tmoe_error *err);
int tmoe_cupti_stop(tmoe_kernel_rec **recs, int *n, tmoe_error *err);
void tmoe_cuda_nvtx_push(const char *name);
void tmoe_cuda_nvtx_pop(void);
#endif

void tmoe_nvtx_push(const char *name) {
#ifdef THERMOE_HAVE_CUDA
    tmoe_cuda_nvtx_push(name);
#else
    (void)name;
#endif
}

void tmoe_nvtx_pop(void) {
#ifdef THERMOE_HAVE_CUDA
    tmoe_cuda_nvtx_pop();
#endif
}

int tmoe_ktrace_start(tmoe_error *err) {
#ifdef THERMOE_HAVE_CUDA
    return tmoe_cupti_start(err);
#else
    return tmoe_errorf(err, TMOE_ENOTSUP, "kernel tracing needs a CUDA build of thermoe");
#endif
}

int tmoe_ktrace_stop(tmoe_kernel_rec **recs, int *n, tmoe_error *err) {
    *recs = NULL;
    *n = 0;
#ifdef THERMOE_HAVE_CUDA
    return tmoe_cupti_stop(recs, n, err);
#else
    return tmoe_errorf(err, TMOE_ENOTSUP, "kernel tracing needs a CUDA build of thermoe");
#endif
}

int tmoe_ktrace_aggregate(const tmoe_kernel_rec *recs, int n, char (*names)[200], int64_t *count,
                          double *ms, int cap) {
    int m = 0;
    for (int i = 0; i < n; i++) {
        int j;
        for (j = 0; j < m; j++)
            if (!strcmp(names[j], recs[i].name)) break;
        if (j == m) {
            if (m == cap) continue; /* more distinct kernels than room: the rest are dropped */
            memcpy(names[m], recs[i].name, sizeof names[m]);
            count[m] = 0;
            ms[m] = 0.0;
            m++;
        }
        count[j]++;
        ms[j] += (double)(recs[i].end_ns - recs[i].start_ns) / 1e6;
    }
    return m;
}
