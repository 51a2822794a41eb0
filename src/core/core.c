/* Errors, logging, tensors, arena and small helpers shared by every module. */
#include "thermoe/core.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const code_names[TMOE_ECODE_COUNT] = {
    [TMOE_OK] = "ok",
    [TMOE_EINVAL] = "invalid argument",
    [TMOE_ENOMEM] = "out of memory",
    [TMOE_EIO] = "i/o error",
    [TMOE_EFORMAT] = "malformed input",
    [TMOE_ENOTSUP] = "not supported",
    [TMOE_ENODEV] = "no device",
    [TMOE_EDEVICE] = "device error",
    [TMOE_EINTR] = "interrupted",
};

const char *tmoe_code_name(int code) {
    if (code < 0 || code >= TMOE_ECODE_COUNT) return "unknown error";
    return code_names[code];
}

int tmoe_errorf(tmoe_error *err, int code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

int tmoe_error_prefix(tmoe_error *err, int code, const char *fmt, ...) {
    if (!err) return code;
    char prefix[512], old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    if (err->code == TMOE_OK) err->code = code;
    size_t np = strlen(prefix);
    if (np > sizeof err->msg - 3) np = sizeof err->msg - 3;
    memcpy(err->msg, prefix, np); /* "<prefix>: <old>", truncated to fit */
    memcpy(err->msg + np, ": ", 2);
    size_t room = sizeof err->msg - np - 3, no = strlen(old);
    if (no > room) no = room;
    memcpy(err->msg + np + 2, old, no);
    err->msg[np + 2 + no] = '\0';
    return err->code;
}

void tmoe_free(void *p) {
    free(p);
}

void tmoe_assert_fail(const char *expr, const char *file, int line) {
    fprintf(stderr, "thermoe: internal error: assertion `%s' failed at %s:%d\n", expr, file, line);
    abort();
}

static tmoe_log_fn log_fn;
static void *log_user;

void tmoe_log_set(tmoe_log_fn fn, void *user) {
    log_fn = fn;
    log_user = user;
}

void tmoe_log(tmoe_log_level level, const char *fmt, ...) {
    if (!log_fn) return;
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    log_fn(level, buf, log_user);
}

static const char *const dtype_names[TMOE_DTYPE_COUNT] = {
    [TMOE_F32] = "f32", [TMOE_F16] = "f16", [TMOE_BF16] = "bf16",
    [TMOE_Q4] = "q4",   [TMOE_Q2] = "q2",   [TMOE_I32] = "i32",
};

const char *tmoe_dtype_name(tmoe_dtype t) {
    return (unsigned)t < TMOE_DTYPE_COUNT ? dtype_names[t] : "?";
}

size_t tmoe_dtype_bytes(tmoe_dtype t, int64_t n) {
    TMOE_ASSERT(n >= 0);
    switch (t) {
    case TMOE_F32:
    case TMOE_I32: return (size_t)n * 4;
    case TMOE_F16:
    case TMOE_BF16: return (size_t)n * 2;
    case TMOE_Q4: return (size_t)(n + 1) / 2;
    case TMOE_Q2: return (size_t)(n + 3) / 4;
    default: TMOE_ASSERT(!"bad dtype"); return 0;
    }
}

tmoe_tensor tmoe_tensor_make(tmoe_dtype dt, void *data, int ndim, const int64_t *shape) {
    TMOE_ASSERT(ndim >= 1 && ndim <= TMOE_MAX_DIMS);
    tmoe_tensor t = {.dtype = dt, .dev = TMOE_DEV_CPU, .ndim = ndim, .data = data};
    for (int i = 0; i < ndim; i++) t.shape[i] = shape[i];
    return t;
}

int64_t tmoe_tensor_numel(const tmoe_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

size_t tmoe_tensor_nbytes(const tmoe_tensor *t) {
    return tmoe_dtype_bytes(t->dtype, tmoe_tensor_numel(t));
}

int tmoe_arena_init(tmoe_arena *a, size_t cap, tmoe_error *err) {
    a->used = 0;
    a->cap = cap;
    a->base = NULL;
    if (cap == 0) return TMOE_OK;
    void *p = NULL;
    if (posix_memalign(&p, 64, cap) != 0)
        return tmoe_errorf(err, TMOE_ENOMEM, "cannot allocate an arena of %zu bytes", cap);
    a->base = p;
    return TMOE_OK;
}

void *tmoe_arena_alloc(tmoe_arena *a, size_t n) {
    size_t off = (a->used + 63) & ~(size_t)63;
    if (off > a->cap || n > a->cap - off) return NULL;
    a->used = off + n;
    return a->base + off;
}

void tmoe_arena_reset(tmoe_arena *a) {
    a->used = 0;
}

void tmoe_arena_free(tmoe_arena *a) {
    if (!a) return;
    free(a->base);
    a->base = NULL;
    a->cap = a->used = 0;
}

static size_t round_up(size_t n, size_t align) {
    return (n + align - 1) & ~(align - 1);
}

size_t tmoe_bufs_total(const tmoe_buf *b, int n, size_t align) {
    TMOE_ASSERT(align > 0 && (align & (align - 1)) == 0 && n >= 0);
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        if (b[i].bytes > SIZE_MAX - align) return SIZE_MAX;
        size_t r = round_up(b[i].bytes, align);
        if (r > SIZE_MAX - total) return SIZE_MAX;
        total += r;
    }
    return total;
}

void tmoe_bufs_carve(const tmoe_buf *b, int n, void *base, size_t align) {
    TMOE_ASSERT(align > 0 && (align & (align - 1)) == 0 && n >= 0);
    TMOE_ASSERT(base != NULL && (uintptr_t)base % align == 0);
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        *b[i].slot = (uint8_t *)base + off;
        off += round_up(b[i].bytes, align);
    }
}

int64_t tmoe_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void *tmoe_malloc(size_t n, tmoe_error *err) {
    void *p = malloc(n ? n : 1);
    if (!p) tmoe_errorf(err, TMOE_ENOMEM, "cannot allocate %zu bytes", n);
    return p;
}

void *tmoe_calloc(size_t n, size_t size, tmoe_error *err) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) tmoe_errorf(err, TMOE_ENOMEM, "cannot allocate %zu x %zu bytes", n, size);
    return p;
}
