/* CUPTI activity tracing of kernels, libcupti loaded with dlopen (types from the toolkit's
 * headers, so the record layout matches; functions resolved at run time). */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cupti_activity.h>

#include "backend/backend_internal.h"

typedef CUptiResult (*register_fn)(CUpti_BuffersCallbackRequestFunc,
                                   CUpti_BuffersCallbackCompleteFunc);
typedef CUptiResult (*enable_fn)(CUpti_ActivityKind);
typedef CUptiResult (*flush_fn)(uint32_t);
typedef CUptiResult (*next_fn)(uint8_t *, size_t, CUpti_Activity **);
typedef CUptiResult (*result_fn)(CUptiResult, const char **);
typedef CUptiResult (*timestamp_fn)(uint64_t *);

static struct {
    void *lib;
    register_fn reg;
    enable_fn enable, disable;
    flush_fn flush;
    next_fn next;
    result_fn result;
    timestamp_fn timestamp;
    int registered;
    pthread_mutex_t mu;
    tmoe_kernel_rec *recs;
    int n, cap;
    int dropped;
} cu = {.mu = PTHREAD_MUTEX_INITIALIZER};

#define BUF_SIZE (8u << 20)

/* Kernel names arrive mangled; the C++ runtime's demangler (present in every CUDA program,
 * looked up at run time) turns them into what nsys and ncu print. */
typedef char *(*demangle_fn)(const char *, char *, size_t *, int *);

static void demangle(const char *name, char *out, size_t n) {
    static demangle_fn fn;
    static int looked;
    if (!looked) {
        fn = (demangle_fn)dlsym(RTLD_DEFAULT, "__cxa_demangle");
        looked = 1;
    }
    int status = -1;
    char *d = fn && name[0] == '_' && name[1] == 'Z' ? fn(name, NULL, NULL, &status) : NULL;
    snprintf(out, n, "%s", d && status == 0 ? d : name);
    free(d);
}

static void CUPTIAPI buf_requested(uint8_t **buffer, size_t *size, size_t *max_records) {
    void *p = NULL;
    if (posix_memalign(&p, 8, BUF_SIZE) != 0) p = NULL; /* CUPTI drops records when NULL */
    *buffer = p;
    *size = p ? BUF_SIZE : 0;
    *max_records = 0;
}

static void CUPTIAPI buf_completed(CUcontext ctx, uint32_t stream, uint8_t *buffer, size_t size,
                                   size_t valid) {
    (void)ctx;
    (void)stream;
    (void)size;
    CUpti_Activity *rec = NULL;
    pthread_mutex_lock(&cu.mu);
    while (cu.next(buffer, valid, &rec) == CUPTI_SUCCESS) {
        if (rec->kind != CUPTI_ACTIVITY_KIND_KERNEL &&
            rec->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL)
            continue;
        const CUpti_ActivityKernel10 *k = (const CUpti_ActivityKernel10 *)rec;
        if (cu.n == cu.cap) {
            int ncap = cu.cap ? 2 * cu.cap : 4096;
            tmoe_kernel_rec *nr = realloc(cu.recs, sizeof *nr * (size_t)ncap);
            if (!nr) {
                cu.dropped++;
                continue;
            }
            cu.recs = nr;
            cu.cap = ncap;
        }
        tmoe_kernel_rec *o = &cu.recs[cu.n++];
        memset(o, 0, sizeof *o);
        demangle(k->name ? k->name : "?", o->name, sizeof o->name);
        o->start_ns = (int64_t)k->start;
        o->end_ns = (int64_t)k->end;
        o->grid[0] = k->gridX, o->grid[1] = k->gridY, o->grid[2] = k->gridZ;
        o->block[0] = k->blockX, o->block[1] = k->blockY, o->block[2] = k->blockZ;
        o->device = (int)k->deviceId;
        o->correlation = k->correlationId;
    }
    pthread_mutex_unlock(&cu.mu);
    free(buffer);
}

static int load(tmoe_error *err) {
    if (cu.lib) return TMOE_OK;
    const char *env = getenv("THERMOE_CUPTI_LIB");
    const char *cands[] = {env,
                           "libcupti.so",
                           "libcupti.so.13",
                           "libcupti.so.12",
                           "/usr/local/cuda/lib64/libcupti.so",
                           "/usr/local/cuda/extras/CUPTI/lib64/libcupti.so"};
    char tried[1024] = "";
    for (size_t i = 0; i < sizeof cands / sizeof *cands && !cu.lib; i++) {
        if (!cands[i] || !*cands[i]) continue;
        cu.lib = dlopen(cands[i], RTLD_NOW | RTLD_LOCAL);
        if (!cu.lib) {
            strncat(tried, tried[0] ? ", " : "", sizeof tried - strlen(tried) - 1);
            strncat(tried, cands[i], sizeof tried - strlen(tried) - 1);
        }
    }
    if (!cu.lib)
        return tmoe_errorf(err, TMOE_ENOTSUP,
                           "libcupti could not be loaded (tried %s; set "
                           "THERMOE_CUPTI_LIB to its path)",
                           tried);
    cu.reg = (register_fn)dlsym(cu.lib, "cuptiActivityRegisterCallbacks");
    cu.enable = (enable_fn)dlsym(cu.lib, "cuptiActivityEnable");
    cu.disable = (enable_fn)dlsym(cu.lib, "cuptiActivityDisable");
    cu.flush = (flush_fn)dlsym(cu.lib, "cuptiActivityFlushAll");
    cu.next = (next_fn)dlsym(cu.lib, "cuptiActivityGetNextRecord");
    cu.result = (result_fn)dlsym(cu.lib, "cuptiGetResultString");
    cu.timestamp = (timestamp_fn)dlsym(cu.lib, "cuptiGetTimestamp");
    if (!cu.reg || !cu.enable || !cu.disable || !cu.flush || !cu.next) {
        dlclose(cu.lib);
        cu.lib = NULL;
        return tmoe_errorf(err, TMOE_ENOTSUP, "libcupti lacks the activity API functions");
    }
    return TMOE_OK;
}

static int check(CUptiResult r, const char *what, tmoe_error *err) {
    if (r == CUPTI_SUCCESS) return TMOE_OK;
    const char *s = NULL;
    if (cu.result) cu.result(r, &s);
    return tmoe_errorf(err, TMOE_EDEVICE, "%s: CUPTI error %d (%s)", what, (int)r, s ? s : "?");
}

static int cupti_start(tmoe_error *err) {
    int rc = load(err);
    if (rc) return rc;
    if (!cu.registered) {
        if ((rc = check(cu.reg(buf_requested, buf_completed), "cuptiActivityRegisterCallbacks",
                        err)))
            return rc;
        cu.registered = 1;
    }
    pthread_mutex_lock(&cu.mu);
    cu.n = 0;
    cu.dropped = 0;
    pthread_mutex_unlock(&cu.mu);
    return check(cu.enable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL), "cuptiActivityEnable", err);
}

static int cmp_end(const void *a, const void *b) {
    const tmoe_kernel_rec *x = a, *y = b;
    return x->end_ns < y->end_ns ? -1 : x->end_ns > y->end_ns;
}

static int cupti_stop(tmoe_kernel_rec **recs, int *n, tmoe_error *err) {
    *recs = NULL;
    *n = 0;
    if (!cu.lib) return tmoe_errorf(err, TMOE_EINVAL, "kernel tracing was not started");
    int rc =
        check(cu.flush(1 /* CUPTI_ACTIVITY_FLAG_FLUSH_FORCED */), "cuptiActivityFlushAll", err);
    CUptiResult dr = cu.disable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
    if (!rc) rc = check(dr, "cuptiActivityDisable", err);
    pthread_mutex_lock(&cu.mu);
    if (!rc && cu.dropped)
        tmoe_log(TMOE_LOG_WARN, "kernel trace: %d records dropped (out of memory)", cu.dropped);
    if (!rc && cu.n) {
        *recs = malloc(sizeof **recs * (size_t)cu.n);
        if (!*recs)
            rc = tmoe_errorf(err, TMOE_ENOMEM, "out of memory for %d kernel records", cu.n);
        else {
            memcpy(*recs, cu.recs, sizeof **recs * (size_t)cu.n);
            *n = cu.n;
            qsort(*recs, (size_t)*n, sizeof **recs, cmp_end);
        }
    }
    cu.n = 0;
    pthread_mutex_unlock(&cu.mu);
    return rc;
}

/* CUPTI's clock (the activity records' timestamps), now. */
static int cupti_clock(int64_t *ns, tmoe_error *err) {
    int rc = load(err);
    if (rc) return rc;
    if (!cu.timestamp) return tmoe_errorf(err, TMOE_ENOTSUP, "libcupti lacks cuptiGetTimestamp");
    uint64_t t = 0;
    if ((rc = check(cu.timestamp(&t), "cuptiGetTimestamp", err))) return rc;
    *ns = (int64_t)t;
    return TMOE_OK;
}

void tmoe_cuda_nvtx_push(const char *name); /* nvtx.c */
void tmoe_cuda_nvtx_pop(void);

const tmoe_ktrace_vt tmoe_ktrace_cuda = {
    .start = cupti_start,
    .stop = cupti_stop,
    .range_push = tmoe_cuda_nvtx_push,
    .range_pop = tmoe_cuda_nvtx_pop,
    .clock_ns = cupti_clock,
};
