/* The backend registry: one entry per --backend name with everything a backend offers (probe,
 * engine, expert-parallel engine, isolated-op runner, kernel tracing). The one place with
 * #ifdef: a backend left out of the build keeps its name and says how to get it. */
#include "backend/backend_internal.h"

#include <string.h>

static int cpu_probe(tmoe_error *err) {
    (void)err;
    return TMOE_OK;
}

static const tmoe_backend_entry registry[TMOE_BACKEND_COUNT] = {
    [TMOE_BACKEND_AUTO] = {.name = "auto"},
    [TMOE_BACKEND_CPU] =
        {
            .name = "cpu",
            .probe = cpu_probe,
            .engine = &tmoe_backend_cpu,
            .engine_ep = &tmoe_backend_cpu_ep,
            .oprun = &tmoe_oprun_cpu,
        },
#ifdef THERMOE_HAVE_CUDA
    [TMOE_BACKEND_CUDA] =
        {
            .name = "cuda",
            .probe = tmoe_cuda_probe,
            .engine = &tmoe_backend_cuda,
#ifdef THERMOE_HAVE_NCCL
            .engine_ep = &tmoe_backend_cuda_ep,
#else
            .ep_missing = "this thermoe was built without NCCL (nccl.h and libnccl with the "
                          "CUDA toolkit)",
#endif
            .oprun = &tmoe_oprun_cuda,
            .ktrace = &tmoe_ktrace_cuda,
        },
#else
    [TMOE_BACKEND_CUDA] =
        {
            .name = "cuda",
            .missing = "rebuild with -DTHERMOE_CUDA=ON on a machine with nvcc",
        },
#endif
};

const tmoe_backend_entry *tmoe_backend_entry_of(tmoe_backend_kind k) {
    return (unsigned)k < TMOE_BACKEND_COUNT ? &registry[k] : NULL;
}

const char *tmoe_backend_kind_name(tmoe_backend_kind k) {
    return (unsigned)k < TMOE_BACKEND_COUNT ? registry[k].name : "?";
}

int tmoe_backend_kind_parse(const char *s, tmoe_backend_kind *out) {
    for (int i = 0; i < TMOE_BACKEND_COUNT; i++)
        if (s && strcmp(s, registry[i].name) == 0) {
            *out = (tmoe_backend_kind)i;
            return 0;
        }
    return -1;
}

int tmoe_backend_probe(tmoe_backend_kind k, tmoe_error *err) {
    if (k == TMOE_BACKEND_AUTO) return TMOE_OK;
    const tmoe_backend_entry *b = tmoe_backend_entry_of(k);
    if (!b) return tmoe_errorf(err, TMOE_EINVAL, "unknown backend %d", (int)k);
    if (b->missing)
        return tmoe_errorf(err, TMOE_ENOTSUP, "backend %s was not built into this thermoe (%s)",
                           b->name, b->missing);
    return b->probe(err);
}

int tmoe_backend_resolve(tmoe_backend_kind k, tmoe_backend_kind *out, tmoe_error *err) {
    if (k != TMOE_BACKEND_AUTO) {
        int rc = tmoe_backend_probe(k, err);
        if (rc) return rc;
        *out = k;
        return TMOE_OK;
    }
    tmoe_error why = {0};
    k = tmoe_backend_probe(TMOE_BACKEND_CUDA, &why) == TMOE_OK ? TMOE_BACKEND_CUDA
                                                               : TMOE_BACKEND_CPU;
    tmoe_log(TMOE_LOG_INFO, "backend auto: %s%s%s", tmoe_backend_kind_name(k),
             k == TMOE_BACKEND_CPU ? " - " : " (a CUDA device answered)",
             k == TMOE_BACKEND_CPU ? why.msg : "");
    *out = k;
    return TMOE_OK;
}
