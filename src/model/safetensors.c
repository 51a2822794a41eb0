/* safetensors reader and writer (see include/thermoe/model.h). The reader maps the
 * file and validates the whole header up front, so a tensor handed out is always in range. */
#include "thermoe/model.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct {
    const char *name;
    size_t size;
} st_dtypes[TMOE_ST_DTYPE_COUNT] = {
    [TMOE_ST_BOOL] = {"BOOL", 1},       [TMOE_ST_U8] = {"U8", 1},
    [TMOE_ST_I8] = {"I8", 1},           [TMOE_ST_F8_E5M2] = {"F8_E5M2", 1},
    [TMOE_ST_F8_E4M3] = {"F8_E4M3", 1}, [TMOE_ST_I16] = {"I16", 2},
    [TMOE_ST_U16] = {"U16", 2},         [TMOE_ST_F16] = {"F16", 2},
    [TMOE_ST_BF16] = {"BF16", 2},       [TMOE_ST_I32] = {"I32", 4},
    [TMOE_ST_U32] = {"U32", 4},         [TMOE_ST_F32] = {"F32", 4},
    [TMOE_ST_F64] = {"F64", 8},         [TMOE_ST_I64] = {"I64", 8},
    [TMOE_ST_U64] = {"U64", 8},
};

const char *tmoe_st_dtype_name(tmoe_st_dtype t) {
    return (unsigned)t < TMOE_ST_DTYPE_COUNT ? st_dtypes[t].name : "?";
}

int tmoe_st_dtype_parse(const char *s, tmoe_st_dtype *out) {
    for (int i = 0; i < TMOE_ST_DTYPE_COUNT; i++)
        if (s && strcmp(s, st_dtypes[i].name) == 0) {
            *out = (tmoe_st_dtype)i;
            return 0;
        }
    return -1;
}

size_t tmoe_st_dtype_size(tmoe_st_dtype t) {
    TMOE_ASSERT((unsigned)t < TMOE_ST_DTYPE_COUNT);
    return st_dtypes[t].size;
}

struct tmoe_st_file {
    char *path;
    void *map; /* the file's mapping, or a malloc'd copy when copied is set */
    size_t size;
    int copied; /* opened by tmoe_st_open_buffer: map is freed, not unmapped */
    int n;
    tmoe_st_tensor *t; /* (n) names owned here */
    int nmeta;
    char **meta_k, **meta_v; /* (nmeta) */
};

void tmoe_st_close(tmoe_st_file *f) {
    if (!f) return;
    if (f->copied)
        free(f->map);
    else if (f->map && munmap(f->map, f->size) != 0)
        tmoe_log(TMOE_LOG_WARN, "%s: munmap: %s", f->path, strerror(errno));
    for (int i = 0; i < f->n; i++) free((char *)f->t[i].name);
    for (int i = 0; i < f->nmeta; i++) {
        free(f->meta_k[i]);
        free(f->meta_v[i]);
    }
    free(f->t);
    free(f->meta_k);
    free(f->meta_v);
    free(f->path);
    free(f);
}

static char *xstrdup(const char *s, tmoe_error *err) {
    size_t n = strlen(s) + 1;
    char *p = tmoe_malloc(n, err);
    if (p) memcpy(p, s, n);
    return p;
}

typedef struct {
    int64_t begin, end;
    int i;
} span;

static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* Parse one tensor entry; data offsets are checked against buflen. */
static int parse_entry(const char *path, const char *name, json_t *v, const uint8_t *buf,
                       size_t buflen, tmoe_st_tensor *t, span *sp, tmoe_error *err) {
    if (!json_is_object(v))
        return tmoe_errorf(err, TMOE_EFORMAT, "%s: tensor '%s': entry is not a JSON object", path,
                           name);
    json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
           *jo = json_object_get(v, "data_offsets");
    if (!json_is_string(jd))
        return tmoe_errorf(err, TMOE_EFORMAT, "%s: tensor '%s': \"dtype\" missing or not a string",
                           path, name);
    if (tmoe_st_dtype_parse(json_string_value(jd), &t->dtype))
        return tmoe_errorf(err, TMOE_EFORMAT, "%s: tensor '%s': unknown dtype '%s'", path, name,
                           json_string_value(jd));
    if (!json_is_array(js))
        return tmoe_errorf(err, TMOE_EFORMAT, "%s: tensor '%s': \"shape\" missing or not an array",
                           path, name);
    size_t nd = json_array_size(js);
    if (nd > TMOE_ST_MAX_DIMS)
        return tmoe_errorf(err, TMOE_EFORMAT,
                           "%s: tensor '%s': %zu dimensions, at most %d supported", path, name, nd,
                           TMOE_ST_MAX_DIMS);
    t->ndim = (int)nd;
    uint64_t numel = 1;
    int overflow = 0;
    for (size_t d = 0; d < nd; d++) {
        json_t *x = json_array_get(js, d);
        if (!json_is_integer(x) || json_integer_value(x) < 0)
            return tmoe_errorf(err, TMOE_EFORMAT,
                               "%s: tensor '%s': shape[%zu] is not a non-negative integer", path,
                               name, d);
        t->shape[d] = (int64_t)json_integer_value(x);
        overflow |= __builtin_mul_overflow(numel, (uint64_t)t->shape[d], &numel);
    }
    uint64_t nbytes;
    overflow |= __builtin_mul_overflow(numel, (uint64_t)tmoe_st_dtype_size(t->dtype), &nbytes);
    if (!json_is_array(jo) || json_array_size(jo) != 2 || !json_is_integer(json_array_get(jo, 0)) ||
        !json_is_integer(json_array_get(jo, 1)))
        return tmoe_errorf(err, TMOE_EFORMAT,
                           "%s: tensor '%s': \"data_offsets\" must be an array [begin, end] of "
                           "two integers",
                           path, name);
    json_int_t b = json_integer_value(json_array_get(jo, 0)),
               e = json_integer_value(json_array_get(jo, 1));
    if (b < 0 || e < b || (uint64_t)e > buflen)
        return tmoe_errorf(err, TMOE_EFORMAT,
                           "%s: tensor '%s': data_offsets [%lld, %lld] out of range (the data "
                           "buffer has %zu bytes; file truncated?)",
                           path, name, (long long)b, (long long)e, buflen);
    if (overflow || nbytes != (uint64_t)(e - b))
        return tmoe_errorf(err, TMOE_EFORMAT,
                           "%s: tensor '%s': %s x %s shape needs %llu bytes but data_offsets "
                           "[%lld, %lld] hold %lld",
                           path, name, json_string_value(jd), overflow ? "an overflowing" : "its",
                           (unsigned long long)nbytes, (long long)b, (long long)e,
                           (long long)(e - b));
    t->data = buf + b;
    t->nbytes = (size_t)nbytes;
    sp->begin = b;
    sp->end = e;
    return TMOE_OK;
}

static int parse_header(tmoe_st_file *f, const char *hdr, size_t hlen, const uint8_t *buf,
                        size_t buflen, tmoe_error *err) {
    const char *path = f->path;
    if (hlen == 0 || hdr[0] != '{')
        return tmoe_errorf(err, TMOE_EFORMAT,
                           "%s: header does not start with '{' (not a "
                           "safetensors file?)",
                           path);
    json_error_t je;
    json_t *root = json_loadb(hdr, hlen, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return tmoe_errorf(err, TMOE_EFORMAT, "%s: header is not valid JSON: %s (header byte %d)",
                           path, je.text, je.position);
    int rc = TMOE_OK;
    span *spans = NULL;
    if (!json_is_object(root)) {
        rc = tmoe_errorf(err, TMOE_EFORMAT, "%s: header is not a JSON object", path);
        goto done;
    }
    size_t cap = json_object_size(root);
    f->t = tmoe_calloc(cap, sizeof *f->t, err);
    spans = tmoe_calloc(cap, sizeof *spans, err);
    f->meta_k = tmoe_calloc(1, sizeof(char *), err);
    f->meta_v = tmoe_calloc(1, sizeof(char *), err);
    if (!f->t || !spans || !f->meta_k || !f->meta_v) {
        rc = TMOE_ENOMEM;
        goto done;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(v)) {
                rc = tmoe_errorf(err, TMOE_EFORMAT, "%s: __metadata__ is not a JSON object", path);
                goto done;
            }
            size_t nm = json_object_size(v);
            char **k2 = realloc(f->meta_k, sizeof(char *) * (nm ? nm : 1));
            if (k2) f->meta_k = k2;
            char **v2 = realloc(f->meta_v, sizeof(char *) * (nm ? nm : 1));
            if (v2) f->meta_v = v2;
            if (!k2 || !v2) {
                rc = tmoe_errorf(err, TMOE_ENOMEM, "%s: cannot allocate the metadata", path);
                goto done;
            }
            const char *mk;
            json_t *mv;
            json_object_foreach(v, mk, mv) {
                if (!json_is_string(mv)) {
                    rc = tmoe_errorf(err, TMOE_EFORMAT,
                                     "%s: __metadata__ value of '%s' is not a string", path, mk);
                    goto done;
                }
                char *ks = xstrdup(mk, err), *vs = xstrdup(json_string_value(mv), err);
                if (!ks || !vs) {
                    free(ks);
                    free(vs);
                    rc = TMOE_ENOMEM;
                    goto done;
                }
                f->meta_k[f->nmeta] = ks;
                f->meta_v[f->nmeta] = vs;
                f->nmeta++;
            }
            continue;
        }
        tmoe_st_tensor *t = &f->t[f->n];
        rc = parse_entry(path, key, v, buf, buflen, t, &spans[f->n], err);
        if (rc) goto done;
        t->name = xstrdup(key, err);
        if (!t->name) {
            rc = TMOE_ENOMEM;
            goto done;
        }
        spans[f->n].i = f->n;
        f->n++;
    }
    qsort(spans, (size_t)f->n, sizeof *spans, span_cmp);
    for (int i = 1; i < f->n; i++)
        if (spans[i].begin < spans[i - 1].end) {
            rc = tmoe_errorf(err, TMOE_EFORMAT,
                             "%s: tensor '%s' (bytes %lld..%lld) overlaps tensor '%s' (bytes "
                             "%lld..%lld)",
                             path, f->t[spans[i].i].name, (long long)spans[i].begin,
                             (long long)spans[i].end, f->t[spans[i - 1].i].name,
                             (long long)spans[i - 1].begin, (long long)spans[i - 1].end);
            goto done;
        }
done:
    free(spans);
    json_decref(root);
    return rc;
}

/* Validate f->map (f->size bytes): the header length, then the header against the buffer. */
static int parse_file(tmoe_st_file *f, tmoe_error *err) {
    const char *path = f->path;
    size_t size = f->size;
    if (size < 8)
        return tmoe_errorf(err, TMOE_EFORMAT,
                           "%s: truncated: %zu bytes, but a safetensors file starts with an 8-byte "
                           "header length",
                           path, size);
    const uint8_t *p = f->map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | p[i];
    if (hlen > size - 8)
        return tmoe_errorf(err, TMOE_EFORMAT,
                           "%s: header length %llu exceeds the %zu bytes after it (truncated or "
                           "not a safetensors file)",
                           path, (unsigned long long)hlen, size - 8);
    if (hlen > TMOE_ST_MAX_HEADER)
        return tmoe_errorf(err, TMOE_EFORMAT, "%s: header length %llu is over the %u-byte limit",
                           path, (unsigned long long)hlen, TMOE_ST_MAX_HEADER);
    return parse_header(f, (const char *)p + 8, (size_t)hlen, p + 8 + hlen, size - 8 - hlen, err);
}

int tmoe_st_open(const char *path, tmoe_st_file **out, tmoe_error *err) {
    *out = NULL;
    tmoe_st_file *f = tmoe_calloc(1, sizeof *f, err);
    if (!f) return TMOE_ENOMEM;
    f->path = xstrdup(path, err);
    if (!f->path) {
        free(f);
        return TMOE_ENOMEM;
    }
    int rc = TMOE_OK;
    /* O_NONBLOCK: opening a FIFO with no writer returns at once, and fstat refuses it before
     * anything is read or mapped (for a regular file the flag changes nothing) */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        rc = tmoe_errorf(err, TMOE_EIO, "%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    struct stat stt;
    if (fstat(fd, &stt) != 0) {
        rc = tmoe_errorf(err, TMOE_EIO, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        goto fail;
    }
    if (!S_ISREG(stt.st_mode)) {
        const char *kind = S_ISDIR(stt.st_mode)    ? "a directory"
                           : S_ISFIFO(stt.st_mode) ? "a FIFO"
                           : S_ISCHR(stt.st_mode)  ? "a character device"
                           : S_ISBLK(stt.st_mode)  ? "a block device"
                           : S_ISSOCK(stt.st_mode) ? "a socket"
                                                   : "not a regular file";
        rc = tmoe_errorf(err, TMOE_EIO, "%s: is %s; expected a regular file", path, kind);
        close(fd);
        goto fail;
    }
    size_t size = (size_t)stt.st_size;
    if (size < 8) {
        rc = tmoe_errorf(err, TMOE_EFORMAT,
                         "%s: truncated: %zu bytes, but a safetensors file starts with an 8-byte "
                         "header length",
                         path, size);
        close(fd);
        goto fail;
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    if (close(fd) != 0 && map != MAP_FAILED) {
        munmap(map, size);
        rc = tmoe_errorf(err, TMOE_EIO, "%s: close: %s", path, strerror(errno));
        goto fail;
    }
    if (map == MAP_FAILED) {
        rc = tmoe_errorf(err, TMOE_EIO, "%s: cannot map %zu bytes: %s", path, size,
                         strerror(map_errno));
        goto fail;
    }
    f->map = map;
    f->size = size;
    rc = parse_file(f, err);
    if (rc) goto fail;
    *out = f;
    return TMOE_OK;
fail:
    tmoe_st_close(f);
    return rc;
}

int tmoe_st_open_buffer(const void *data, size_t len, const char *name, tmoe_st_file **out,
                        tmoe_error *err) {
    *out = NULL;
    tmoe_st_file *f = tmoe_calloc(1, sizeof *f, err);
    if (!f) return TMOE_ENOMEM;
    f->copied = 1;
    f->path = xstrdup(name, err);
    f->map = f->path ? tmoe_malloc(len ? len : 1, err) : NULL;
    if (!f->map) {
        tmoe_st_close(f);
        return TMOE_ENOMEM;
    }
    if (len) memcpy(f->map, data, len);
    f->size = len;
    int rc = parse_file(f, err);
    if (rc) {
        tmoe_st_close(f);
        return rc;
    }
    *out = f;
    return TMOE_OK;
}

const char *tmoe_st_path(const tmoe_st_file *f) {
    return f->path;
}
int tmoe_st_count(const tmoe_st_file *f) {
    return f->n;
}

const tmoe_st_tensor *tmoe_st_at(const tmoe_st_file *f, int i) {
    TMOE_ASSERT(i >= 0 && i < f->n);
    return &f->t[i];
}

const tmoe_st_tensor *tmoe_st_find(const tmoe_st_file *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->t[i].name, name) == 0) return &f->t[i];
    return NULL;
}

const char *tmoe_st_meta(const tmoe_st_file *f, const char *key) {
    for (int i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta_k[i], key) == 0) return f->meta_v[i];
    return NULL;
}

int tmoe_st_meta_count(const tmoe_st_file *f) {
    return f->nmeta;
}

const char *tmoe_st_meta_key(const tmoe_st_file *f, int i) {
    TMOE_ASSERT(i >= 0 && i < f->nmeta);
    return f->meta_k[i];
}

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t used = 0;
    used += (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && used < n; i++)
        used +=
            (size_t)snprintf(buf + used, n - used, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (used < n) snprintf(buf + used, n - used, "]");
}

/* Find name with a float dtype and exactly this shape. */
static const tmoe_st_tensor *find_float(const tmoe_st_file *f, const char *name, int ndim,
                                        const int64_t *shape, tmoe_error *err) {
    const tmoe_st_tensor *t = tmoe_st_find(f, name);
    if (!t) {
        tmoe_errorf(err, TMOE_EFORMAT, "%s: tensor '%s' is missing", f->path, name);
        return NULL;
    }
    if (t->dtype != TMOE_ST_F32 && t->dtype != TMOE_ST_F16 && t->dtype != TMOE_ST_BF16) {
        tmoe_errorf(err, TMOE_EFORMAT, "%s: tensor '%s': dtype %s, expected F32, F16 or BF16",
                    f->path, name, tmoe_st_dtype_name(t->dtype));
        return NULL;
    }
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (!same) {
        char want[128], got[128];
        shape_str(want, sizeof want, ndim, shape);
        shape_str(got, sizeof got, t->ndim, t->shape);
        tmoe_errorf(err, TMOE_EFORMAT, "%s: tensor '%s': shape %s, expected %s", f->path, name, got,
                    want);
        return NULL;
    }
    return t;
}

int tmoe_st_read_f32(const tmoe_st_file *f, const char *name, int ndim, const int64_t *shape,
                     float *out, tmoe_error *err) {
    const tmoe_st_tensor *t = find_float(f, name, ndim, shape, err);
    if (!t) return TMOE_EFORMAT;
    size_t n = t->nbytes / tmoe_st_dtype_size(t->dtype);
    const uint8_t *p = t->data;
    if (t->dtype == TMOE_ST_F32) {
        memcpy(out, p, t->nbytes);
    } else {
        for (size_t i = 0; i < n; i++) {
            uint16_t h = (uint16_t)(p[2 * i] | p[2 * i + 1] << 8);
            out[i] = t->dtype == TMOE_ST_F16 ? tmoe_f16_to_f32(h) : tmoe_bf16_to_f32(h);
        }
    }
    return TMOE_OK;
}

int tmoe_st_read_f16(const tmoe_st_file *f, const char *name, int ndim, const int64_t *shape,
                     tmoe_f16 *out, tmoe_error *err) {
    const tmoe_st_tensor *t = find_float(f, name, ndim, shape, err);
    if (!t) return TMOE_EFORMAT;
    size_t n = t->nbytes / tmoe_st_dtype_size(t->dtype);
    const uint8_t *p = t->data;
    if (t->dtype == TMOE_ST_F16) {
        memcpy(out, p, t->nbytes);
    } else if (t->dtype == TMOE_ST_BF16) {
        for (size_t i = 0; i < n; i++)
            out[i] = tmoe_f32_to_f16(tmoe_bf16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8)));
    } else {
        for (size_t i = 0; i < n; i++) {
            float v;
            memcpy(&v, p + 4 * i, 4);
            out[i] = tmoe_f32_to_f16(v);
        }
    }
    return TMOE_OK;
}

int tmoe_st_read_bf16(const tmoe_st_file *f, const char *name, int ndim, const int64_t *shape,
                      tmoe_bf16 *out, tmoe_error *err) {
    const tmoe_st_tensor *t = find_float(f, name, ndim, shape, err);
    if (!t) return TMOE_EFORMAT;
    size_t n = t->nbytes / tmoe_st_dtype_size(t->dtype);
    const uint8_t *p = t->data;
    for (size_t i = 0; i < n; i++) {
        float v;
        if (t->dtype == TMOE_ST_F32) {
            memcpy(&v, p + 4 * i, 4);
            out[i] = tmoe_f32_to_bf16(v);
            continue;
        }
        uint16_t h = (uint16_t)(p[2 * i] | p[2 * i + 1] << 8);
        out[i] = t->dtype == TMOE_ST_BF16 ? h : tmoe_f32_to_bf16(tmoe_f16_to_f32(h));
    }
    return TMOE_OK;
}

/* ---- writer ------------------------------------------------------------------------- */
typedef struct st_entry {
    char *name;
    tmoe_st_dtype dtype;
    int ndim;
    int64_t shape[TMOE_ST_MAX_DIMS];
    const void *data;
    size_t nbytes;
} st_entry;

struct tmoe_st_writer {
    st_entry *e;
    int n, cap;
    json_t *meta;
};

int tmoe_st_writer_create(tmoe_st_writer **out, tmoe_error *err) {
    *out = NULL;
    tmoe_st_writer *w = tmoe_calloc(1, sizeof *w, err);
    if (!w) return TMOE_ENOMEM;
    w->meta = json_object();
    if (!w->meta) {
        free(w);
        return tmoe_errorf(err, TMOE_ENOMEM, "cannot allocate the safetensors metadata");
    }
    *out = w;
    return TMOE_OK;
}

void tmoe_st_writer_free(tmoe_st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) free(w->e[i].name);
    free(w->e);
    json_decref(w->meta);
    free(w);
}

int tmoe_st_writer_add(tmoe_st_writer *w, const char *name, tmoe_st_dtype dt, int ndim,
                       const int64_t *shape, const void *data, tmoe_error *err) {
    if ((unsigned)dt >= TMOE_ST_DTYPE_COUNT)
        return tmoe_errorf(err, TMOE_EINVAL, "tensor '%s': unknown dtype %d", name, (int)dt);
    if (ndim < 0 || ndim > TMOE_ST_MAX_DIMS)
        return tmoe_errorf(err, TMOE_EINVAL, "tensor '%s': %d dimensions", name, ndim);
    if (strcmp(name, "__metadata__") == 0 || !*name)
        return tmoe_errorf(err, TMOE_EINVAL, "tensor name '%s' is reserved or empty", name);
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->e[i].name, name) == 0)
            return tmoe_errorf(err, TMOE_EINVAL, "tensor '%s' added twice", name);
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 16;
        st_entry *e = realloc(w->e, sizeof *e * (size_t)cap);
        if (!e) return tmoe_errorf(err, TMOE_ENOMEM, "cannot grow the tensor list");
        w->e = e;
        w->cap = cap;
    }
    st_entry *e = &w->e[w->n];
    memset(e, 0, sizeof *e);
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return tmoe_errorf(err, TMOE_EINVAL, "tensor '%s': negative size %lld", name,
                               (long long)shape[i]);
        e->shape[i] = shape[i];
        numel *= (size_t)shape[i];
    }
    e->name = xstrdup(name, err);
    if (!e->name) return TMOE_ENOMEM;
    e->dtype = dt;
    e->ndim = ndim;
    e->data = data;
    e->nbytes = numel * tmoe_st_dtype_size(dt);
    w->n++;
    return TMOE_OK;
}

int tmoe_st_writer_meta(tmoe_st_writer *w, const char *key, const char *value, tmoe_error *err) {
    if (json_object_set_new(w->meta, key, json_string(value)) != 0)
        return tmoe_errorf(err, TMOE_EINVAL, "metadata '%s': key or value is not valid UTF-8", key);
    return TMOE_OK;
}

static char *build_header(const tmoe_st_writer *w, size_t *len, tmoe_error *err) {
    json_t *root = json_object();
    int bad = !root;
    if (!bad && json_object_size(w->meta) > 0)
        bad |= json_object_set(root, "__metadata__", w->meta);
    uint64_t off = 0;
    for (int i = 0; i < w->n && !bad; i++) {
        const st_entry *e = &w->e[i];
        json_t *shape = json_array();
        bad |= !shape;
        for (int d = 0; d < e->ndim && !bad; d++)
            bad |= json_array_append_new(shape, json_integer((json_int_t)e->shape[d]));
        json_t *t =
            json_pack("{s:s, s:o, s:[I, I]}", "dtype", tmoe_st_dtype_name(e->dtype), "shape", shape,
                      "data_offsets", (json_int_t)off, (json_int_t)(off + e->nbytes));
        bad |= !t || json_object_set_new(root, e->name, t);
        off += e->nbytes;
    }
    char *s = bad ? NULL : json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!s) {
        tmoe_errorf(err, TMOE_ENOMEM, "cannot build the safetensors header (%d tensors)", w->n);
        return NULL;
    }
    size_t n = strlen(s), padded = (n + 7) & ~(size_t)7;
    char *h = realloc(s, padded);
    if (!h) {
        free(s);
        tmoe_errorf(err, TMOE_ENOMEM, "cannot pad the safetensors header");
        return NULL;
    }
    memset(h + n, ' ', padded - n);
    *len = padded;
    return h;
}

int tmoe_st_writer_write(tmoe_st_writer *w, const char *path, tmoe_error *err) {
    size_t hlen;
    char *hdr = build_header(w, &hlen, err);
    if (!hdr) return TMOE_ENOMEM;
    /* whole or nothing: a temporary beside path, renamed over it only after every write;
     * a path that is a device, FIFO or directory is refused, never replaced */
    tmoe_atomic_file af;
    int rc = tmoe_atomic_open(&af, path, err);
    if (rc) {
        free(hdr);
        return rc;
    }
    uint8_t lenb[8];
    for (int i = 0; i < 8; i++) lenb[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    int ok = fwrite(lenb, 1, 8, af.f) == 8 && fwrite(hdr, 1, hlen, af.f) == hlen;
    for (int i = 0; i < w->n && ok; i++)
        ok = w->e[i].nbytes == 0 || fwrite(w->e[i].data, 1, w->e[i].nbytes, af.f) == w->e[i].nbytes;
    int e = errno;
    free(hdr);
    if (!ok) {
        rc = tmoe_errorf(err, TMOE_EIO, "%s: write failed: %s (left unchanged)", path, strerror(e));
        tmoe_atomic_abort(&af);
        return rc;
    }
    return tmoe_atomic_commit(&af, err);
}
