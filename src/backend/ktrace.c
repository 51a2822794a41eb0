/* Kernel tracing front: the tracer of the first backend in the registry that has one (the
 * CUDA build's CUPTI tracer and NVTX ranges), or a clear "not supported". */
#include "backend/backend_internal.h"

#include <string.h>

static const tmoe_ktrace_vt *tracer(void) {
    for (int k = 0; k < TMOE_BACKEND_COUNT; k++) {
        const tmoe_backend_entry *b = tmoe_backend_entry_of((tmoe_backend_kind)k);
        if (b->ktrace) return b->ktrace;
    }
    return NULL;
}

void tmoe_nvtx_push(const char *name) {
    const tmoe_ktrace_vt *t = tracer();
    if (t) t->range_push(name);
}

void tmoe_nvtx_pop(void) {
    const tmoe_ktrace_vt *t = tracer();
    if (t) t->range_pop();
}

int tmoe_ktrace_start(tmoe_error *err) {
    const tmoe_ktrace_vt *t = tracer();
    if (!t) return tmoe_errorf(err, TMOE_ENOTSUP, "kernel tracing needs a CUDA build of thermoe");
    return t->start(err);
}

int tmoe_ktrace_stop(tmoe_kernel_rec **recs, int *n, tmoe_error *err) {
    *recs = NULL;
    *n = 0;
    const tmoe_ktrace_vt *t = tracer();
    if (!t) return tmoe_errorf(err, TMOE_ENOTSUP, "kernel tracing needs a CUDA build of thermoe");
    return t->stop(recs, n, err);
}

int tmoe_ktrace_clock_ns(int64_t *ns, tmoe_error *err) {
    const tmoe_ktrace_vt *t = tracer();
    if (!t || !t->clock_ns)
        return tmoe_errorf(err, TMOE_ENOTSUP, "kernel tracing needs a CUDA build of thermoe");
    return t->clock_ns(ns, err);
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
