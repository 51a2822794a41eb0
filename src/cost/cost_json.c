/* The cost model file (DESIGN.md, schema "thermoe.cost_model/1"): load with validation
 * and precise messages, merge files, save as pretty JSON in a fixed key order, checksum.
 * Built on the in-memory model (cost_model.c), never the other way round. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cost/cost_internal.h"

/* ---- reading ------------------------------------------------------------------------- */

typedef struct rd {
    const char *file;
    char where[96]; /* "entries[3]" or "" for the top level */
    tmoe_error *err;
} rd;

static int rd_fail(rd *r, const char *field, const char *what) {
    return tmoe_errorf(r->err, TMOE_EFORMAT, "%s: %s%s%s: %s", r->file, r->where,
                       r->where[0] ? "." : "", field, what);
}

static const char *type_name(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

/* Number field: missing -> error when required, else NAN; null -> NAN (unknown). */
static int rd_num(rd *r, const json_t *obj, const char *key, const char *field, int required,
                  double *out) {
    const json_t *v = json_object_get(obj, key);
    *out = NAN;
    if (!v) return required ? rd_fail(r, field, "missing") : TMOE_OK;
    if (json_is_null(v)) return TMOE_OK;
    if (!json_is_number(v)) {
        char m[96];
        snprintf(m, sizeof m, "expected a number, got %s", type_name(v));
        return rd_fail(r, field, m);
    }
    *out = json_number_value(v);
    return TMOE_OK;
}

static int rd_int(rd *r, const json_t *obj, const char *key, const char *field, int required,
                  int64_t dflt, int64_t *out) {
    const json_t *v = json_object_get(obj, key);
    *out = dflt;
    if (!v) return required ? rd_fail(r, field, "missing") : TMOE_OK;
    if (!json_is_integer(v)) {
        char m[96];
        snprintf(m, sizeof m, "expected an integer, got %s", type_name(v));
        return rd_fail(r, field, m);
    }
    *out = json_integer_value(v);
    return TMOE_OK;
}

static int rd_str(rd *r, const json_t *obj, const char *key, const char *field, int required,
                  const char **out) {
    const json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v) return required ? rd_fail(r, field, "missing") : TMOE_OK;
    if (json_is_null(v) && !required) return TMOE_OK;
    if (!json_is_string(v)) {
        char m[96];
        snprintf(m, sizeof m, "expected a string, got %s", type_name(v));
        return rd_fail(r, field, m);
    }
    *out = json_string_value(v);
    return TMOE_OK;
}

static int rd_obj(rd *r, const json_t *obj, const char *key, int required, const json_t **out) {
    const json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v) return required ? rd_fail(r, key, "missing") : TMOE_OK;
    if (json_is_null(v) && !required) return TMOE_OK;
    if (!json_is_object(v)) {
        char m[96];
        snprintf(m, sizeof m, "expected an object, got %s", type_name(v));
        return rd_fail(r, key, m);
    }
    *out = v;
    return TMOE_OK;
}

static void copy_str(char *dst, size_t cap, const char *s) {
    snprintf(dst, cap, "%s", s ? s : "");
}

static int read_meta(rd *r, const json_t *root, tmoe_cost_meta *m) {
    int rc;
    const json_t *dev, *shape;
    const char *s;
    *m = tmoe__cost_meta_unknown();
    if ((rc = rd_obj(r, root, "device", 0, &dev))) return rc;
    if (dev) {
        if ((rc = rd_str(r, dev, "name", "device.name", 0, &s))) return rc;
        copy_str(m->device_name, sizeof m->device_name, s);
        if ((rc = rd_str(r, dev, "uuid", "device.uuid", 0, &s))) return rc;
        copy_str(m->device_uuid, sizeof m->device_uuid, s);
        if ((rc = rd_str(r, dev, "driver", "device.driver", 0, &s))) return rc;
        copy_str(m->device_driver, sizeof m->device_driver, s);
        if ((rc = rd_str(r, dev, "telemetry", "device.telemetry", 0, &s))) return rc;
        copy_str(m->device_telemetry, sizeof m->device_telemetry, s);
        if ((rc = rd_num(r, dev, "power_limit_w", "device.power_limit_w", 0, &m->power_limit_w)))
            return rc;
        if (!isnan(m->power_limit_w) && !(m->power_limit_w >= 0))
            return rd_fail(r, "device.power_limit_w", "expected a number >= 0");
    }
    if ((rc = rd_str(r, root, "created", "created", 0, &s))) return rc;
    copy_str(m->created, sizeof m->created, s);
    if ((rc = rd_str(r, root, "tool", "tool", 0, &s))) return rc;
    copy_str(m->tool, sizeof m->tool, s);
    if ((rc = rd_obj(r, root, "shape", 0, &shape))) return rc;
    if (shape) {
        static const char *const keys[3] = {"d_model", "d_ff", "group_size"};
        int *dst[3] = {&m->d_model, &m->d_ff, &m->group_size};
        for (int i = 0; i < 3; i++) {
            char f[32];
            int64_t v;
            snprintf(f, sizeof f, "shape.%s", keys[i]);
            if ((rc = rd_int(r, shape, keys[i], f, 1, 0, &v))) return rc;
            if (v < 1 || v > (1 << 24))
                return rd_fail(r, f, "expected an integer in [1, 16777216]");
            *dst[i] = (int)v;
        }
    }
    if ((rc = rd_num(r, root, "idle_power_w", "idle_power_w", 0, &m->idle_power_w))) return rc;
    if (!isnan(m->idle_power_w) && !(m->idle_power_w >= 0))
        return rd_fail(r, "idle_power_w", "expected a number >= 0");
    return TMOE_OK;
}

static int read_enum(rd *r, const json_t *e, const char *key, int (*parse)(const char *, void *),
                     void *out, const char *what) {
    const char *s;
    int rc = rd_str(r, e, key, key, 1, &s);
    if (rc) return rc;
    if (parse(s, out) != 0) {
        char m[256];
        snprintf(m, sizeof m, "unknown %s '%.64s'", what, s);
        return rd_fail(r, key, m);
    }
    return TMOE_OK;
}

static int parse_op(const char *s, void *o) {
    return tmoe_op_parse(s, o);
}
static int parse_et(const char *s, void *o) {
    return tmoe_etype_parse(s, o);
}
static int parse_impl(const char *s, void *o) {
    return tmoe_impl_parse(s, o);
}

/* Read entry json `je` into `e`; kernels are malloc'ed into e (caller frees). */
static int read_entry(rd *r, const json_t *je, tmoe_cost_entry *e) {
    int rc;
    int64_t v;
    const json_t *lat, *en, *ncu, *kern;
    memset(e, 0, sizeof *e);
    if (!json_is_object(je)) return rd_fail(r, "(entry)", "expected an object");
    if ((rc = read_enum(r, je, "op", parse_op, &e->op, "op"))) return rc;
    if ((rc = read_enum(r, je, "expert_type", parse_et, &e->expert_type, "expert_type"))) return rc;
    if ((rc = read_enum(r, je, "impl", parse_impl, &e->impl, "impl"))) return rc;
    if ((rc = rd_int(r, je, "tokens", "tokens", 1, 0, &v))) return rc;
    if (v < 1 || v > (1 << 30)) return rd_fail(r, "tokens", "expected an integer >= 1");
    e->tokens = (int)v;
    if ((rc = rd_obj(r, je, "latency_ms", 1, &lat))) return rc;
    if ((rc = rd_num(r, lat, "median", "latency_ms.median", 1, &e->latency_median_ms))) return rc;
    if ((rc = rd_num(r, lat, "p90", "latency_ms.p90", 1, &e->latency_p90_ms))) return rc;
    if ((rc = rd_obj(r, je, "energy_j", 1, &en))) return rc;
    if ((rc = rd_num(r, en, "board", "energy_j.board", 1, &e->energy_board_j))) return rc;
    if ((rc = rd_num(r, en, "dynamic", "energy_j.dynamic", 1, &e->energy_dynamic_j))) return rc;
    if ((rc = rd_num(r, je, "avg_power_w", "avg_power_w", 1, &e->avg_power_w))) return rc;
    if ((rc = rd_num(r, je, "temp_impact_c_per_s", "temp_impact_c_per_s", 1,
                     &e->temp_impact_c_per_s)))
        return rc;
    if ((rc = rd_int(r, je, "samples", "samples", 1, 0, &e->samples))) return rc;
    const json_t *th = json_object_get(je, "throttled");
    if (th && !json_is_boolean(th)) return rd_fail(r, "throttled", "expected true or false");
    e->throttled = th && json_is_true(th);
    kern = json_object_get(je, "kernels");
    if (kern && !json_is_array(kern)) return rd_fail(r, "kernels", "expected an array");
    size_t nk = kern ? json_array_size(kern) : 0;
    if (nk) {
        e->kernels = tmoe_calloc(nk, sizeof *e->kernels, r->err);
        if (!e->kernels) return TMOE_ENOMEM;
    }
    for (size_t i = 0; i < nk; i++) {
        const json_t *k = json_array_get(kern, i);
        char f[64];
        snprintf(f, sizeof f, "kernels[%zu]", i);
        if (!json_is_object(k)) return rd_fail(r, f, "expected an object");
        const char *name;
        snprintf(f, sizeof f, "kernels[%zu].name", i);
        if ((rc = rd_str(r, k, "name", f, 1, &name))) return rc;
        e->kernels[i].name = strdup(name);
        if (!e->kernels[i].name) return tmoe_errorf(r->err, TMOE_ENOMEM, "out of memory");
        e->n_kernels = (int)i + 1;
        snprintf(f, sizeof f, "kernels[%zu].count", i);
        if ((rc = rd_int(r, k, "count", f, 1, 0, &e->kernels[i].count))) return rc;
        snprintf(f, sizeof f, "kernels[%zu].ms", i);
        if ((rc = rd_num(r, k, "ms", f, 1, &e->kernels[i].ms))) return rc;
    }
    if ((rc = rd_obj(r, je, "ncu", 0, &ncu))) return rc;
    if (ncu) {
        e->has_ncu = 1;
        if ((rc = rd_num(r, ncu, "achieved_occupancy_pct", "ncu.achieved_occupancy_pct", 0,
                         &e->ncu_occupancy_pct)))
            return rc;
        if ((rc = rd_num(r, ncu, "dram_throughput_pct", "ncu.dram_throughput_pct", 0,
                         &e->ncu_dram_pct)))
            return rc;
    }
    rc = tmoe__cost_check_entry(e, r->err);
    if (rc) return tmoe_error_prefix(r->err, rc, "%s: %s", r->file, r->where);
    return TMOE_OK;
}

static void free_entry_kernels(tmoe_cost_entry *e) {
    for (int i = 0; i < e->n_kernels; i++) free(e->kernels[i].name);
    free(e->kernels);
}

static int load_json(json_t *root, const char *name, tmoe_cost_model **out, tmoe_error *err) {
    rd r = {.file = name, .err = err};
    const char *schema;
    int rc;
    if (!json_is_object(root))
        return tmoe_errorf(err, TMOE_EFORMAT, "%s: expected a JSON object at the top, got %s", name,
                           type_name(root));
    if ((rc = rd_str(&r, root, "schema", "schema", 1, &schema))) return rc;
    if (strcmp(schema, TMOE_COST_SCHEMA) != 0)
        return tmoe_errorf(err, TMOE_EFORMAT, "%s: schema: expected \"%s\", got \"%.100s\"", name,
                           TMOE_COST_SCHEMA, schema);
    const json_t *entries = json_object_get(root, "entries");
    if (!entries) return rd_fail(&r, "entries", "missing");
    if (!json_is_array(entries)) return rd_fail(&r, "entries", "expected an array");
    tmoe_cost_model *cm;
    if ((rc = tmoe_cost_create(&cm, err))) return rc;
    tmoe__cost_set_source(cm, name);
    if ((rc = read_meta(&r, root, &cm->meta))) goto fail;
    for (size_t i = 0; i < json_array_size(entries); i++) {
        tmoe_cost_entry e;
        snprintf(r.where, sizeof r.where, "entries[%zu]", i);
        rc = read_entry(&r, json_array_get(entries, i), &e);
        if (rc == TMOE_OK) {
            int replaced = 0;
            rc = tmoe__cost_insert(cm, &e, &replaced, err);
            if (rc == TMOE_OK && replaced)
                rc = tmoe_errorf(err, TMOE_EFORMAT, "%s: %s: a second entry for %s/%s/%s tokens %d",
                                 name, r.where, tmoe_op_name(e.op), tmoe_etype_name(e.expert_type),
                                 tmoe_impl_name(e.impl), e.tokens);
        }
        free_entry_kernels(&e);
        if (rc) goto fail;
    }
    *out = cm;
    return TMOE_OK;
fail:
    tmoe_cost_free(cm);
    return rc;
}

int tmoe_cost_load_buffer(const char *data, size_t len, const char *name, tmoe_cost_model **out,
                          tmoe_error *err) {
    *out = NULL;
    json_error_t je;
    json_t *root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return tmoe_errorf(err, TMOE_EFORMAT, "%s:%d:%d: %s", name, je.line, je.column, je.text);
    int rc = load_json(root, name, out, err);
    json_decref(root);
    return rc;
}

/* A cost model holds a few thousand entries (data/h100_cost_model.json is 190 kB); anything
 * past this is not one, and reading it whole would only exhaust memory. */
#define COST_MAX_BYTES ((size_t)64 << 20)

int tmoe_cost_load(const char *path, tmoe_cost_model **out, tmoe_error *err) {
    *out = NULL;
    tmoe_error local = {0};
    if (!err) err = &local; /* the code of a failed read is in it */
    size_t len = 0;
    char *buf = tmoe_file_read_all(path, COST_MAX_BYTES, &len, err);
    if (!buf) return err->code;
    int rc = tmoe_cost_load_buffer(buf, len, path, out, err);
    free(buf);
    return rc;
}

/* Files loaded one after another into one model (later files win): the file layer on top of
 * tmoe_cost_merge. */
int tmoe_cost_merge_files(const char *const *paths, int n, tmoe_cost_model **out, tmoe_error *err) {
    *out = NULL;
    tmoe_cost_model *acc = NULL;
    int rc = tmoe_cost_create(&acc, err);
    if (rc) return rc;
    for (int i = 0; i < n; i++) {
        tmoe_cost_model *m = NULL;
        rc = tmoe_cost_load(paths[i], &m, err);
        if (!rc) rc = tmoe_cost_merge(acc, m, err);
        tmoe_cost_free(m);
        if (rc) {
            tmoe_cost_free(acc);
            return rc;
        }
    }
    tmoe__cost_set_source(acc, n == 1 ? paths[0] : "(merged)");
    *out = acc;
    return TMOE_OK;
}

/* ---- writing ------------------------------------------------------------------------- */

typedef struct wr {
    int ok;
} wr;

static void put(wr *w, json_t *obj, const char *key, json_t *v) {
    if (!v || json_object_set_new(obj, key, v) != 0) w->ok = 0;
}
static json_t *num_or_null(double v) {
    return isfinite(v) ? json_real(v) : json_null();
}

static json_t *entry_json(wr *w, const tmoe_cost_entry *e) {
    json_t *o = json_object();
    if (!o) {
        w->ok = 0;
        return NULL;
    }
    put(w, o, "op", json_string(tmoe_op_name(e->op)));
    put(w, o, "expert_type", json_string(tmoe_etype_name(e->expert_type)));
    put(w, o, "impl", json_string(tmoe_impl_name(e->impl)));
    put(w, o, "tokens", json_integer(e->tokens));
    json_t *lat = json_object(), *en = json_object();
    if (lat) {
        put(w, lat, "median", num_or_null(e->latency_median_ms));
        put(w, lat, "p90", num_or_null(e->latency_p90_ms));
    }
    put(w, o, "latency_ms", lat);
    if (en) {
        put(w, en, "board", num_or_null(e->energy_board_j));
        put(w, en, "dynamic", num_or_null(e->energy_dynamic_j));
    }
    put(w, o, "energy_j", en);
    put(w, o, "avg_power_w", num_or_null(e->avg_power_w));
    put(w, o, "temp_impact_c_per_s", num_or_null(e->temp_impact_c_per_s));
    put(w, o, "samples", json_integer(e->samples));
    put(w, o, "throttled", json_boolean(e->throttled));
    json_t *ks = json_array();
    for (int i = 0; ks && i < e->n_kernels; i++) {
        json_t *k = json_object();
        if (!k) {
            w->ok = 0;
            break;
        }
        put(w, k, "name", json_string(e->kernels[i].name));
        put(w, k, "count", json_integer(e->kernels[i].count));
        put(w, k, "ms", num_or_null(e->kernels[i].ms));
        if (json_array_append_new(ks, k) != 0) w->ok = 0;
    }
    put(w, o, "kernels", ks);
    if (e->has_ncu) {
        json_t *n = json_object();
        if (n) {
            put(w, n, "achieved_occupancy_pct", num_or_null(e->ncu_occupancy_pct));
            put(w, n, "dram_throughput_pct", num_or_null(e->ncu_dram_pct));
        }
        put(w, o, "ncu", n);
    }
    return o;
}

static json_t *opt_str(const char *s) {
    return s[0] ? json_string(s) : json_null();
}

char *tmoe_cost_dumps(const tmoe_cost_model *cm, tmoe_error *err) {
    wr w = {.ok = 1};
    const tmoe_cost_meta *m = &cm->meta;
    json_t *root = json_object();
    if (!root) {
        tmoe_errorf(err, TMOE_ENOMEM, "out of memory building the cost model JSON");
        return NULL;
    }
    put(&w, root, "schema", json_string(TMOE_COST_SCHEMA));
    json_t *dev = json_object();
    if (dev) {
        put(&w, dev, "name", opt_str(m->device_name));
        put(&w, dev, "uuid", opt_str(m->device_uuid));
        put(&w, dev, "driver", opt_str(m->device_driver));
        put(&w, dev, "power_limit_w", num_or_null(m->power_limit_w));
        put(&w, dev, "telemetry", opt_str(m->device_telemetry));
    }
    put(&w, root, "device", dev);
    put(&w, root, "created", opt_str(m->created));
    put(&w, root, "tool", opt_str(m->tool));
    if (m->d_model || m->d_ff || m->group_size) {
        json_t *sh = json_object();
        if (sh) {
            put(&w, sh, "d_model", json_integer(m->d_model));
            put(&w, sh, "d_ff", json_integer(m->d_ff));
            put(&w, sh, "group_size", json_integer(m->group_size));
        }
        put(&w, root, "shape", sh);
    }
    put(&w, root, "idle_power_w", num_or_null(m->idle_power_w));
    json_t *arr = json_array();
    for (int i = 0; arr && i < cm->n; i++)
        if (json_array_append_new(arr, entry_json(&w, &cm->entries[i])) != 0) w.ok = 0;
    put(&w, root, "entries", arr);
    char *s = w.ok
                  ? json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12))
                  : NULL;
    json_decref(root);
    if (!s) tmoe_errorf(err, TMOE_ENOMEM, "out of memory writing the cost model JSON");
    return s;
}

int tmoe_cost_save(const tmoe_cost_model *cm, const char *path, tmoe_error *err) {
    char *s = tmoe_cost_dumps(cm, err);
    if (!s) return TMOE_ENOMEM;
    /* whole or nothing: a temporary beside path, renamed over it only after every write */
    tmoe_atomic_file af;
    int rc = tmoe_atomic_open(&af, path, err);
    if (rc) {
        free(s);
        return rc;
    }
    size_t n = strlen(s);
    int bad = fwrite(s, 1, n, af.f) != n || fputc('\n', af.f) == EOF;
    int e = errno;
    free(s);
    if (bad) {
        rc = tmoe_errorf(err, TMOE_EIO, "%s: write failed: %s (left unchanged)", path, strerror(e));
        tmoe_atomic_abort(&af);
        return rc;
    }
    return tmoe_atomic_commit(&af, err);
}

uint64_t tmoe_cost_checksum(const tmoe_cost_model *cm) {
    char *s = tmoe_cost_dumps(cm, NULL);
    if (!s) {
        tmoe_log(TMOE_LOG_ERROR, "cost model checksum: out of memory");
        return 0;
    }
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ull;
    }
    free(s);
    return h;
}
