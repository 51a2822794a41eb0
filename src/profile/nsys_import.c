/* Import an Nsight Systems SQLite export: kernels per device, NVTX op ranges, power samples
 * attributed to kernels, and cost-model entries. Exports from 2021 to 2026 differ, so every
 * table and column is probed first (sqlite_master, PRAGMA table_info). */
#include <ctype.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "thermoe/profile.h"

typedef struct ctx {
    sqlite3 *db;
    const char *path;
    tmoe_error *err;
    tmoe_nsys_result *r;
    /* kernel-name interning: open addressing over indices into r->names */
    int *slots;
    size_t nslots;
    int names_cap;
    int64_t kern_cap;
} ctx;

static int db_fail(ctx *c, const char *what) {
    int code = sqlite3_errcode(c->db);
    int corrupt = code == SQLITE_CORRUPT || code == SQLITE_NOTADB;
    return tmoe_errorf(c->err, TMOE_EFORMAT, "%s: %s: %s%s", c->path, what, sqlite3_errmsg(c->db),
                       corrupt ? " (the file is damaged or truncated; export it again with 'nsys "
                                 "export --type sqlite')"
                               : "");
}

static void note_missing(tmoe_nsys_result *r, const char *table) {
    size_t n = strlen(r->missing);
    snprintf(r->missing + n, sizeof r->missing - n, "%s%s", n ? ", " : "", table);
}

/* 1 when table exists, 0 when not, < 0 on error (err filled). */
static int has_table(ctx *c, const char *name) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(
            c->db, "SELECT 1 FROM sqlite_master WHERE type IN ('table','view') AND name = ?1", -1,
            &st, NULL) != SQLITE_OK) {
        db_fail(c, "cannot read the table list");
        return -1;
    }
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc == SQLITE_ROW) return 1;
    if (rc == SQLITE_DONE) return 0;
    db_fail(c, "cannot read the table list");
    return -1;
}

/* 1 when table has column (case-insensitive), 0 when not, < 0 on error. */
static int has_column(ctx *c, const char *table, const char *col) {
    char sql[256];
    snprintf(sql, sizeof sql, "PRAGMA table_info(\"%s\")", table);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(c->db, sql, -1, &st, NULL) != SQLITE_OK) {
        db_fail(c, "cannot read table columns");
        return -1;
    }
    int found = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 1);
        if (name && strcasecmp(name, col) == 0) found = 1;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        db_fail(c, "cannot read table columns");
        return -1;
    }
    return found;
}

/* First column of table whose name contains `needle` (case-insensitive) into out. */
static int find_column_like(ctx *c, const char *table, const char *needle, char *out, size_t cap) {
    char sql[256];
    snprintf(sql, sizeof sql, "PRAGMA table_info(\"%s\")", table);
    sqlite3_stmt *st;
    out[0] = '\0';
    if (sqlite3_prepare_v2(c->db, sql, -1, &st, NULL) != SQLITE_OK)
        return db_fail(c, "cannot read table columns");
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 1);
        if (name && !out[0] && strcasestr(name, needle)) snprintf(out, cap, "%s", name);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? TMOE_OK : db_fail(c, "cannot read table columns");
}

/* ---- names --------------------------------------------------------------------------- */

static uint64_t fnv(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

static int intern(ctx *c, const char *s) {
    tmoe_nsys_result *r = c->r;
    if ((size_t)r->n_names * 2 >= c->nslots) {
        size_t ns = c->nslots ? c->nslots * 2 : 1024;
        int *sl = malloc(ns * sizeof *sl);
        if (!sl) return -tmoe_errorf(c->err, TMOE_ENOMEM, "out of memory interning kernel names");
        for (size_t i = 0; i < ns; i++) sl[i] = -1;
        for (int i = 0; i < r->n_names; i++) {
            size_t h = fnv(r->names[i]) & (ns - 1);
            while (sl[h] >= 0) h = (h + 1) & (ns - 1);
            sl[h] = i;
        }
        free(c->slots);
        c->slots = sl;
        c->nslots = ns;
    }
    size_t h = fnv(s) & (c->nslots - 1);
    while (c->slots[h] >= 0) {
        if (strcmp(r->names[c->slots[h]], s) == 0) return c->slots[h];
        h = (h + 1) & (c->nslots - 1);
    }
    if (r->n_names == c->names_cap) {
        int nc = c->names_cap ? c->names_cap * 2 : 256;
        char **p = realloc(r->names, (size_t)nc * sizeof *p);
        if (!p) return -tmoe_errorf(c->err, TMOE_ENOMEM, "out of memory interning kernel names");
        r->names = p;
        c->names_cap = nc;
    }
    char *d = strdup(s);
    if (!d) return -tmoe_errorf(c->err, TMOE_ENOMEM, "out of memory interning kernel names");
    r->names[r->n_names] = d;
    c->slots[h] = r->n_names;
    return r->n_names++;
}

/* ---- kernels ------------------------------------------------------------------------- */

typedef struct launch {
    int64_t t;   /* launch call start, or INT64_MIN when unknown */
    int64_t tid; /* globalTid of the launching thread, or -1 */
} launch;

static int read_kernels(ctx *c, launch **launches_out) {
    static const char *const K = "CUPTI_ACTIVITY_KIND_KERNEL";
    tmoe_nsys_result *r = c->r;
    *launches_out = NULL;
    int t = has_table(c, K);
    if (t < 0) return c->err ? c->err->code : TMOE_EFORMAT;
    if (t == 0) {
        return tmoe_errorf(
            c->err, TMOE_EFORMAT,
            "%s: no %s table: the report holds no CUDA kernels (was it captured with "
            "'nsys profile --trace cuda' and exported with 'nsys export --type sqlite'?)",
            c->path, K);
    }
    int have_strings = has_table(c, "StringIds");
    if (have_strings < 0) return c->err->code;
    if (!have_strings) note_missing(r, "StringIds");
    static const char *const name_cols[] = {"demangledName", "shortName", "mangledName", "name"};
    const char *name_col = NULL;
    for (size_t i = 0; i < sizeof name_cols / sizeof *name_cols; i++) {
        int h = has_column(c, K, name_cols[i]);
        if (h < 0) return c->err->code;
        if (h) {
            name_col = name_cols[i];
            break;
        }
    }
    int h_start = has_column(c, K, "start"), h_end = has_column(c, K, "end");
    if (h_start < 0 || h_end < 0) return c->err->code;
    if (!h_start || !h_end)
        return tmoe_errorf(c->err, TMOE_EFORMAT,
                           "%s: %s has no start/end columns: not an nsys export this reader knows",
                           c->path, K);
    int h_dev = has_column(c, K, "deviceId"), h_corr = has_column(c, K, "correlationId"),
        h_pid = has_column(c, K, "globalPid");
    if (h_dev < 0 || h_corr < 0 || h_pid < 0) return c->err->code;
    /* launch calls: CUPTI_ACTIVITY_KIND_RUNTIME by correlationId (and process) */
    int h_rt = has_table(c, "CUPTI_ACTIVITY_KIND_RUNTIME");
    if (h_rt < 0) return c->err->code;
    if (!h_rt) note_missing(r, "CUPTI_ACTIVITY_KIND_RUNTIME");
    int use_rt = 0;
    if (h_rt && h_corr) {
        int a = has_column(c, "CUPTI_ACTIVITY_KIND_RUNTIME", "correlationId");
        int b = has_column(c, "CUPTI_ACTIVITY_KIND_RUNTIME", "globalTid");
        int d = has_column(c, "CUPTI_ACTIVITY_KIND_RUNTIME", "start");
        if (a < 0 || b < 0 || d < 0) return c->err->code;
        use_rt = a && b && d;
    }
    snprintf(r->name_column, sizeof r->name_column, "%s", name_col ? name_col : "(none)");
    char name_expr[160];
    if (name_col && have_strings)
        snprintf(
            name_expr, sizeof name_expr,
            "COALESCE((SELECT s.value FROM StringIds s WHERE s.id = k.%s), CAST(k.%s AS TEXT))",
            name_col, name_col);
    else if (name_col)
        snprintf(name_expr, sizeof name_expr, "CAST(k.%s AS TEXT)", name_col);
    else
        snprintf(name_expr, sizeof name_expr, "NULL");
    char sql[1024];
    const char *pid_match = h_pid ? " AND rt.pid = (k.globalPid >> 24)" : "";
    snprintf(sql, sizeof sql,
             "SELECT k.start, k.end, %s, %s, %s, %s FROM CUPTI_ACTIVITY_KIND_KERNEL k %s%s%s ORDER "
             "BY k.start",
             h_dev ? "k.deviceId" : "0", name_expr, use_rt ? "rt.launch" : "NULL",
             use_rt ? "rt.tid" : "NULL",
             use_rt
                 ? "LEFT JOIN (SELECT correlationId AS corr, globalTid >> 24 AS pid, MIN(start) AS "
                   "launch, "
                   "MIN(globalTid) AS tid FROM CUPTI_ACTIVITY_KIND_RUNTIME GROUP BY corr, pid) rt "
                   "ON rt.corr = k.correlationId"
                 : "",
             use_rt ? pid_match : "", "");
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(c->db, sql, -1, &st, NULL) != SQLITE_OK)
        return db_fail(c, "cannot query the kernels");
    launch *ls = NULL;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        /* a kernel that ends before it starts, or whose duration does not fit 64 bits, is no
         * measurement: counted and left out, so no sum below can go negative or wrap */
        int64_t k_start = sqlite3_column_int64(st, 0), k_end = sqlite3_column_int64(st, 1), dur;
        if (k_end < k_start || __builtin_sub_overflow(k_end, k_start, &dur)) {
            r->kernels_skipped++;
            continue;
        }
        if (__builtin_add_overflow(r->kernel_ns, dur, &r->kernel_ns)) {
            sqlite3_finalize(st);
            free(ls);
            return tmoe_errorf(
                c->err, TMOE_EFORMAT,
                "%s: the kernels' durations add up past 2^63 ns (overflow): timestamps are not "
                "nanoseconds of one capture",
                c->path);
        }
        if (r->n_kernels == c->kern_cap) {
            int64_t nc = c->kern_cap ? c->kern_cap * 2 : 4096;
            tmoe_nsys_kernel *p = realloc(r->kernels, (size_t)nc * sizeof *p);
            launch *q = p ? realloc(ls, (size_t)nc * sizeof *q) : NULL;
            if (p) r->kernels = p;
            if (q) ls = q;
            if (!p || !q) {
                sqlite3_finalize(st);
                free(ls);
                return tmoe_errorf(c->err, TMOE_ENOMEM, "%s: out of memory reading %lld kernels",
                                   c->path, (long long)nc);
            }
            c->kern_cap = nc;
        }
        tmoe_nsys_kernel *k = &r->kernels[r->n_kernels];
        k->start_ns = k_start;
        k->end_ns = k_end;
        k->device = sqlite3_column_int(st, 2);
        const char *nm = (const char *)sqlite3_column_text(st, 3);
        char unk[32];
        if (!nm) {
            snprintf(unk, sizeof unk, "(unnamed)");
            nm = unk;
        }
        int id = intern(c, nm);
        if (id < 0) {
            sqlite3_finalize(st);
            free(ls);
            return -id;
        }
        k->name = id;
        k->op = -1;
        k->range = -1;
        k->energy_j = NAN;
        launch *l = &ls[r->n_kernels];
        l->t = sqlite3_column_type(st, 4) == SQLITE_NULL ? INT64_MIN : sqlite3_column_int64(st, 4);
        l->tid = sqlite3_column_type(st, 5) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 5);
        if (l->t != INT64_MIN) r->launches_matched++;
        r->n_kernels++;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        free(ls);
        return db_fail(c, "cannot read the kernels");
    }
    *launches_out = ls;
    return TMOE_OK;
}

static int per_device(ctx *c) {
    tmoe_nsys_result *r = c->r;
    for (int64_t i = 0; i < r->n_kernels; i++) {
        tmoe_nsys_kernel *k = &r->kernels[i];
        int j = 0;
        while (j < r->n_devices && r->devices[j].device != k->device) j++;
        if (j == r->n_devices) {
            tmoe_nsys_device *p = realloc(r->devices, (size_t)(r->n_devices + 1) * sizeof *p);
            if (!p) return tmoe_errorf(c->err, TMOE_ENOMEM, "out of memory");
            r->devices = p;
            int at = r->n_devices;
            while (at > 0 && p[at - 1].device > k->device) {
                p[at] = p[at - 1];
                at--;
            }
            memset(&p[at], 0, sizeof p[at]);
            p[at].device = k->device;
            r->n_devices++;
            j = at;
        }
        r->devices[j].kernels++;
        r->devices[j].kernel_ns += k->end_ns - k->start_ns;
    }
    return TMOE_OK;
}

/* ---- NVTX op ranges ------------------------------------------------------------------ */

typedef struct oprange {
    int64_t start, end, tid; /* tid -1 when unknown */
    int op;
    int64_t idx; /* index among this op's ranges */
} oprange;

/* "linear_fc1", "thermoe:linear_fc1", "linear_fc1 q4 fused 16" -> op; -1 otherwise. */
static int op_of_range_name(const char *s) {
    if (!s) return -1;
    if (strncmp(s, "thermoe:", 8) == 0) s += 8;
    char word[32];
    size_t n = 0;
    while (s[n] && (islower((unsigned char)s[n]) || isdigit((unsigned char)s[n]) || s[n] == '_')) {
        if (n + 1 >= sizeof word) return -1;
        word[n] = s[n];
        n++;
    }
    if (s[n] != '\0' && s[n] != ' ') return -1;
    word[n] = '\0';
    tmoe_op op;
    return tmoe_op_parse(word, &op) == 0 ? (int)op : -1;
}

static int read_ranges(ctx *c, oprange **out, int64_t *nout) {
    static const char *const N = "NVTX_EVENTS";
    tmoe_nsys_result *r = c->r;
    *out = NULL;
    *nout = 0;
    int t = has_table(c, N);
    if (t < 0) return c->err->code;
    if (!t) {
        note_missing(r, N);
        return TMOE_OK;
    }
    int h_text = has_column(c, N, "text"), h_tid_s = has_column(c, N, "textId"),
        h_et = has_column(c, N, "eventType"), h_gt = has_column(c, N, "globalTid"),
        h_start = has_column(c, N, "start"), h_end = has_column(c, N, "end");
    int h_str = has_table(c, "StringIds");
    if (h_text < 0 || h_tid_s < 0 || h_et < 0 || h_gt < 0 || h_start < 0 || h_end < 0 || h_str < 0)
        return c->err->code;
    if (!h_start || !h_end || (!h_text && !(h_tid_s && h_str))) {
        tmoe_log(TMOE_LOG_WARN, "%s: NVTX_EVENTS lacks start/end/text columns; NVTX ranges ignored",
                 c->path);
        return TMOE_OK;
    }
    char text_expr[200];
    if (h_text && h_tid_s && h_str)
        snprintf(text_expr, sizeof text_expr,
                 "COALESCE(n.text, (SELECT s.value FROM StringIds s WHERE s.id = n.textId))");
    else if (h_text)
        snprintf(text_expr, sizeof text_expr, "n.text");
    else
        snprintf(text_expr, sizeof text_expr,
                 "(SELECT s.value FROM StringIds s WHERE s.id = n.textId)");
    char sql[600];
    /* eventType 59 = push/pop range, 60 = start/end range */
    snprintf(sql, sizeof sql,
             "SELECT n.start, n.end, %s, %s FROM NVTX_EVENTS n WHERE n.end IS NOT NULL AND n.end "
             ">= n.start%s "
             "ORDER BY n.start",
             text_expr, h_gt ? "n.globalTid" : "NULL", h_et ? " AND n.eventType IN (59, 60)" : "");
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(c->db, sql, -1, &st, NULL) != SQLITE_OK)
        return db_fail(c, "cannot query NVTX_EVENTS");
    oprange *rs = NULL;
    int64_t n = 0, cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        r->nvtx_ranges++;
        int op = op_of_range_name((const char *)sqlite3_column_text(st, 2));
        if (op < 0) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            oprange *p = realloc(rs, (size_t)cap * sizeof *p);
            if (!p) {
                sqlite3_finalize(st);
                free(rs);
                return tmoe_errorf(c->err, TMOE_ENOMEM, "out of memory reading NVTX ranges");
            }
            rs = p;
        }
        rs[n].start = sqlite3_column_int64(st, 0);
        rs[n].end = sqlite3_column_int64(st, 1);
        rs[n].tid = sqlite3_column_type(st, 3) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 3);
        rs[n].op = op;
        rs[n].idx = r->ops[op].ranges++;
        n++;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        free(rs);
        return db_fail(c, "cannot read NVTX_EVENTS");
    }
    r->op_ranges = n;
    *out = rs;
    *nout = n;
    return TMOE_OK;
}

/* Innermost (latest-starting) op range holding the kernel's launch, else its GPU start.
 * Ranges are sorted by start; max_end[j] = max end of ranges 0..j bounds the backward scan. */
static int map_kernels(ctx *c, const launch *ls, const oprange *rs, int64_t nr) {
    tmoe_nsys_result *r = c->r;
    if (!nr) return TMOE_OK;
    int64_t *max_end = malloc((size_t)nr * sizeof *max_end);
    if (!max_end)
        return tmoe_errorf(c->err, TMOE_ENOMEM, "out of memory mapping kernels to NVTX ranges");
    for (int64_t j = 0; j < nr; j++)
        max_end[j] = j && max_end[j - 1] > rs[j].end ? max_end[j - 1] : rs[j].end;
    for (int64_t i = 0; i < r->n_kernels; i++) {
        tmoe_nsys_kernel *k = &r->kernels[i];
        int by_launch = ls[i].t != INT64_MIN;
        int64_t t = by_launch ? ls[i].t : k->start_ns;
        int64_t lo = 0, hi = nr; /* first range with start > t */
        while (lo < hi) {
            int64_t mid = lo + (hi - lo) / 2;
            if (rs[mid].start <= t)
                lo = mid + 1;
            else
                hi = mid;
        }
        for (int64_t j = lo - 1; j >= 0 && max_end[j] >= t; j--) {
            if (t > rs[j].end) continue;
            if (by_launch && rs[j].tid >= 0 && ls[i].tid >= 0 && rs[j].tid != ls[i].tid) continue;
            k->op = rs[j].op;
            k->range = rs[j].idx;
            break;
        }
    }
    free(max_end);
    return TMOE_OK;
}

/* ---- power --------------------------------------------------------------------------- */

typedef struct series {
    int device;
    int64_t n, cap;
    int64_t *t;
    double *w;
} series;

static int series_push(series *s, int64_t t, double w) {
    if (s->n == s->cap) {
        int64_t nc = s->cap ? s->cap * 2 : 1024;
        int64_t *a = realloc(s->t, (size_t)nc * sizeof *a);
        if (a) s->t = a;
        double *b = a ? realloc(s->w, (size_t)nc * sizeof *b) : NULL;
        if (b) s->w = b;
        if (!a || !b) return TMOE_ENOMEM;
        s->cap = nc;
    }
    s->t[s->n] = t;
    s->w[s->n] = w;
    s->n++;
    return TMOE_OK;
}

static series *series_for(series **all, int *n, int device) {
    for (int i = 0; i < *n; i++)
        if ((*all)[i].device == device) return &(*all)[i];
    series *p = realloc(*all, (size_t)(*n + 1) * sizeof *p);
    if (!p) return NULL;
    *all = p;
    memset(&p[*n], 0, sizeof p[*n]);
    p[*n].device = device;
    return &p[(*n)++];
}

/* Run `sql` (rows: timestamp, device, value) into per-device series, scaled by `scale`. */
static int read_series(ctx *c, const char *sql, double scale, series **all, int *n) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(c->db, sql, -1, &st, NULL) != SQLITE_OK)
        return db_fail(c, "cannot query power samples");
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (sqlite3_column_type(st, 2) == SQLITE_NULL) continue;
        double w = sqlite3_column_double(st, 2) * scale;
        if (!isfinite(w) || w < 0) continue;
        series *s = series_for(all, n, sqlite3_column_int(st, 1));
        if (!s || series_push(s, sqlite3_column_int64(st, 0), w)) {
            sqlite3_finalize(st);
            return tmoe_errorf(c->err, TMOE_ENOMEM, "out of memory reading power samples");
        }
        c->r->power_samples++;
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? TMOE_OK : db_fail(c, "cannot read power samples");
}

static int read_gpu_metrics_power(ctx *c, series **all, int *n) {
    tmoe_nsys_result *r = c->r;
    int a = has_table(c, "GPU_METRICS"), b = has_table(c, "TARGET_INFO_GPU_METRICS");
    if (a < 0 || b < 0) return c->err->code;
    if (!a) note_missing(r, "GPU_METRICS");
    if (!b) note_missing(r, "TARGET_INFO_GPU_METRICS");
    if (!a || !b) return TMOE_OK;
    static const char *const gcols[] = {"timestamp", "typeId", "metricId", "value"};
    static const char *const tcols[] = {"typeId", "metricId", "metricName"};
    for (int i = 0; i < 4; i++) {
        int h = has_column(c, "GPU_METRICS", gcols[i]);
        if (h < 0) return c->err->code;
        if (!h) {
            tmoe_log(TMOE_LOG_WARN, "%s: GPU_METRICS has no %s column; power ignored", c->path,
                     gcols[i]);
            return TMOE_OK;
        }
    }
    for (int i = 0; i < 3; i++) {
        int h = has_column(c, "TARGET_INFO_GPU_METRICS", tcols[i]);
        if (h < 0) return c->err->code;
        if (!h) {
            tmoe_log(TMOE_LOG_WARN, "%s: TARGET_INFO_GPU_METRICS has no %s column; power ignored",
                     c->path, tcols[i]);
            return TMOE_OK;
        }
    }
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(
            c->db,
            "SELECT DISTINCT typeId, metricId, metricName FROM TARGET_INFO_GPU_METRICS "
            "WHERE metricName LIKE '%power%' AND metricName NOT LIKE '%limit%' "
            "ORDER BY typeId, metricId",
            -1, &st, NULL) != SQLITE_OK)
        return db_fail(c, "cannot query TARGET_INFO_GPU_METRICS");
    int rc, last_type = -1;
    int64_t chosen[64][2];
    char names[64][64];
    int nch = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int type = sqlite3_column_int(st, 0);
        if (type == last_type || nch == 64) continue; /* first power metric per GPU */
        last_type = type;
        chosen[nch][0] = type;
        chosen[nch][1] = sqlite3_column_int64(st, 1);
        const char *nm = (const char *)sqlite3_column_text(st, 2);
        snprintf(names[nch], sizeof names[nch], "%s", nm ? nm : "?");
        nch++;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return db_fail(c, "cannot read TARGET_INFO_GPU_METRICS");
    if (!nch) {
        tmoe_log(TMOE_LOG_INFO, "%s: GPU_METRICS holds no power metric", c->path);
        return TMOE_OK;
    }
    for (int i = 0; i < nch; i++) {
        double scale = strstr(names[i], "mW") ? 1e-3 : 1.0;
        char sql[300];
        snprintf(sql, sizeof sql,
                 "SELECT timestamp, typeId & 255, value FROM GPU_METRICS WHERE typeId = %lld AND "
                 "metricId = %lld "
                 "ORDER BY timestamp",
                 (long long)chosen[i][0], (long long)chosen[i][1]);
        int e = read_series(c, sql, scale, all, n);
        if (e) return e;
    }
    snprintf(r->power_source, sizeof r->power_source, "GPU_METRICS '%s'", names[0]);
    return TMOE_OK;
}

/* Tables an NVML sampling plugin may write: name contains NVML or POWER, with a time column
 * and a column whose name contains "power". */
static int read_plugin_power(ctx *c, series **all, int *n) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(
            c->db,
            "SELECT name FROM sqlite_master WHERE type = 'table' AND (name LIKE '%NVML%' OR name "
            "LIKE '%POWER%') AND name NOT LIKE 'TARGET_INFO%' AND name NOT LIKE 'ENUM%' ORDER BY "
            "name",
            -1, &st, NULL) != SQLITE_OK)
        return db_fail(c, "cannot read the table list");
    char tables[8][128];
    int nt = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if (nt < 8)
            snprintf(tables[nt++], sizeof tables[0], "%s",
                     (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return db_fail(c, "cannot read the table list");
    for (int i = 0; i < nt; i++) {
        char tcol[64] = "", pcol[64] = "", dcol[64] = "";
        static const char *const tnames[] = {"timestamp", "start", "time"};
        static const char *const dnames[] = {"deviceId", "gpuId", "gpu", "device"};
        for (int j = 0; j < 3 && !tcol[0]; j++) {
            int h = has_column(c, tables[i], tnames[j]);
            if (h < 0) return c->err->code;
            if (h) snprintf(tcol, sizeof tcol, "%s", tnames[j]);
        }
        for (int j = 0; j < 4 && !dcol[0]; j++) {
            int h = has_column(c, tables[i], dnames[j]);
            if (h < 0) return c->err->code;
            if (h) snprintf(dcol, sizeof dcol, "%s", dnames[j]);
        }
        int e = find_column_like(c, tables[i], "power", pcol, sizeof pcol);
        if (e) return e;
        if (!tcol[0] || !pcol[0]) continue;
        double scale = strcasestr(pcol, "mw") || strcasestr(pcol, "milliwatt") ? 1e-3 : 1.0;
        char sql[512];
        snprintf(sql, sizeof sql, "SELECT \"%s\", %s%s%s, \"%s\" FROM \"%s\" ORDER BY 2, 1", tcol,
                 dcol[0] ? "\"" : "", dcol[0] ? dcol : "0", dcol[0] ? "\"" : "", pcol, tables[i]);
        e = read_series(c, sql, scale, all, n);
        if (e) return e;
        snprintf(c->r->power_source, sizeof c->r->power_source, "%s.%s", tables[i], pcol);
        return TMOE_OK;
    }
    return TMOE_OK;
}

/* Integral of the step function over [a, b] in J; NAN unless [a, b] lies in [t0, tlast]. */
static double integrate(const series *s, int64_t a, int64_t b) {
    if (s->n < 2 || a < s->t[0] || b > s->t[s->n - 1]) return NAN;
    int64_t lo = 0, hi = s->n - 1; /* last i with t[i] <= a */
    while (lo < hi) {
        int64_t mid = lo + (hi - lo + 1) / 2;
        if (s->t[mid] <= a)
            lo = mid;
        else
            hi = mid - 1;
    }
    double j = 0.0;
    for (int64_t i = lo; i + 1 < s->n && s->t[i] < b; i++) {
        int64_t x0 = s->t[i] > a ? s->t[i] : a, x1 = s->t[i + 1] < b ? s->t[i + 1] : b;
        if (x1 > x0) j += s->w[i] * (double)(x1 - x0) * 1e-9;
    }
    return j;
}

static int attribute_power(ctx *c) {
    tmoe_nsys_result *r = c->r;
    series *all = NULL;
    int n = 0;
    int rc = read_gpu_metrics_power(c, &all, &n);
    if (!rc && n == 0) rc = read_plugin_power(c, &all, &n);
    if (!rc && n > 0) {
        r->energy_j = 0.0;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < r->n_devices; j++)
                if (r->devices[j].device == all[i].device) r->devices[j].power_samples = all[i].n;
        for (int64_t i = 0; i < r->n_kernels; i++) {
            tmoe_nsys_kernel *k = &r->kernels[i];
            const series *s = NULL;
            for (int j = 0; j < n; j++)
                if (all[j].device == k->device) s = &all[j];
            if (!s && n == 1 && r->n_devices == 1) s = &all[0];
            if (!s) continue;
            k->energy_j = integrate(s, k->start_ns, k->end_ns);
            if (isnan(k->energy_j)) continue;
            r->energy_j += k->energy_j;
            for (int j = 0; j < r->n_devices; j++)
                if (r->devices[j].device == k->device) {
                    r->devices[j].energy_j += k->energy_j;
                    r->devices[j].kernels_with_energy++;
                }
        }
    }
    for (int i = 0; i < n; i++) {
        free(all[i].t);
        free(all[i].w);
    }
    free(all);
    return rc;
}

/* ---- per-op aggregation -------------------------------------------------------------- */

static int aggregate_ops(ctx *c) {
    tmoe_nsys_result *r = c->r;
    for (int o = 0; o < TMOE_OP_COUNT; o++) {
        tmoe_nsys_op *op = &r->ops[o];
        op->energy_j = 0.0;
        if (!op->ranges) continue;
        op->range_ns = calloc((size_t)op->ranges, sizeof *op->range_ns);
        op->range_j = calloc((size_t)op->ranges, sizeof *op->range_j);
        if (!op->range_ns || !op->range_j) return tmoe_errorf(c->err, TMOE_ENOMEM, "out of memory");
    }
    for (int64_t i = 0; i < r->n_kernels; i++) {
        const tmoe_nsys_kernel *k = &r->kernels[i];
        if (k->op < 0) continue;
        tmoe_nsys_op *op = &r->ops[k->op];
        int64_t ns = k->end_ns - k->start_ns;
        op->kernels++;
        op->kernel_ns += ns;
        op->energy_j += k->energy_j; /* NAN propagates: unknown stays unknown */
        op->range_ns[k->range] += ns;
        op->range_j[k->range] += k->energy_j;
        int j = 0;
        while (j < op->n_knames && op->knames[j].name != k->name) j++;
        if (j == op->n_knames) {
            tmoe_nsys_kname *p = realloc(op->knames, (size_t)(op->n_knames + 1) * sizeof *p);
            if (!p) return tmoe_errorf(c->err, TMOE_ENOMEM, "out of memory");
            op->knames = p;
            p[j] = (tmoe_nsys_kname){.name = k->name};
            op->n_knames++;
        }
        op->knames[j].count++;
        op->knames[j].ns += ns;
    }
    for (int o = 0; o < TMOE_OP_COUNT; o++)
        if (r->ops[o].ranges && !r->ops[o].kernels) r->ops[o].energy_j = NAN;
    return TMOE_OK;
}

/* ---- entry point --------------------------------------------------------------------- */

void tmoe_nsys_free(tmoe_nsys_result *r) {
    if (!r) return;
    for (int i = 0; i < r->n_names; i++) free(r->names[i]);
    free(r->names);
    free(r->kernels);
    free(r->devices);
    for (int o = 0; o < TMOE_OP_COUNT; o++) {
        free(r->ops[o].range_ns);
        free(r->ops[o].range_j);
        free(r->ops[o].knames);
    }
    free(r);
}

int tmoe_import_nsys(const char *path, tmoe_nsys_result **out, tmoe_error *err) {
    *out = NULL;
    tmoe_error local = {0};
    if (!err) err = &local; /* the code of a failed check is in it */
    /* sqlite opens the file itself: check first that it is a regular file (a FIFO or a
     * device would block or read without end); no size limit, exports run to gigabytes */
    FILE *probe = tmoe_file_open_read(path, 0, NULL, err);
    if (!probe) return err->code;
    fclose(probe);
    tmoe_nsys_result *r = tmoe_calloc(1, sizeof *r, err);
    if (!r) return TMOE_ENOMEM;
    r->energy_j = NAN;
    ctx c = {.path = path, .err = err, .r = r};
    if (sqlite3_open_v2(path, &c.db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        int rc = tmoe_errorf(err, TMOE_EIO, "%s: cannot open as SQLite: %s", path,
                             c.db ? sqlite3_errmsg(c.db) : "out of memory");
        sqlite3_close(c.db);
        tmoe_nsys_free(r);
        return rc;
    }
    launch *ls = NULL;
    oprange *rs = NULL;
    int64_t nr = 0;
    int rc = read_kernels(&c, &ls);
    if (rc == TMOE_EFORMAT && strstr(err ? err->msg : "", "not a database"))
        rc = tmoe_errorf(err, TMOE_EFORMAT,
                         "%s: not an SQLite database (corrupt, or not exported with "
                         "'nsys export --type sqlite')",
                         path);
    if (!rc) rc = per_device(&c);
    if (!rc) rc = read_ranges(&c, &rs, &nr);
    if (!rc) rc = map_kernels(&c, ls, rs, nr);
    if (!rc) rc = attribute_power(&c);
    if (!rc) rc = aggregate_ops(&c);
    free(ls);
    free(rs);
    free(c.slots);
    if (sqlite3_close(c.db) != SQLITE_OK && !rc)
        rc = tmoe_errorf(err, TMOE_EIO, "%s: close failed", path);
    if (rc) {
        tmoe_nsys_free(r);
        return rc;
    }
    if (r->missing[0]) tmoe_log(TMOE_LOG_INFO, "%s: tables not present: %s", path, r->missing);
    if (r->kernels_skipped)
        tmoe_log(TMOE_LOG_INFO,
                 "%s: %lld kernel rows skipped (end before start, or a duration past int64)", path,
                 (long long)r->kernels_skipped);
    *out = r;
    return TMOE_OK;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* q-quantile (0..1) of sorted values, linear between order statistics. */
static double quantile(const int64_t *v, int64_t n, double q) {
    double pos = q * (double)(n - 1);
    int64_t i = (int64_t)pos;
    if (i + 1 >= n) return (double)v[n - 1];
    return (double)v[i] + (pos - (double)i) * (double)(v[i + 1] - v[i]);
}

int tmoe_nsys_to_cost(const tmoe_nsys_result *r, tmoe_etype et, tmoe_impl impl, int tokens,
                      tmoe_cost_model *cm, int *n_added, tmoe_error *err) {
    if (n_added) *n_added = 0;
    if (tokens < 1)
        return tmoe_errorf(err, TMOE_EINVAL, "nsys to cost: tokens must be >= 1, got %d", tokens);
    for (int o = 0; o < TMOE_OP_COUNT; o++) {
        const tmoe_nsys_op *op = &r->ops[o];
        if (!op->ranges || !op->kernels) continue;
        int64_t *v = malloc((size_t)op->ranges * sizeof *v);
        tmoe_cost_kernel *ks = calloc((size_t)op->n_knames, sizeof *ks);
        if (!v || !ks) {
            free(v);
            free(ks);
            return tmoe_errorf(err, TMOE_ENOMEM, "out of memory");
        }
        memcpy(v, op->range_ns, (size_t)op->ranges * sizeof *v);
        qsort(v, (size_t)op->ranges, sizeof *v, cmp_i64);
        double esum = 0.0;
        for (int64_t i = 0; i < op->ranges; i++) esum += op->range_j[i];
        tmoe_cost_entry e = {.op = (tmoe_op)o, .expert_type = et, .impl = impl, .tokens = tokens};
        e.latency_median_ms = quantile(v, op->ranges, 0.5) * 1e-6;
        e.latency_p90_ms = quantile(v, op->ranges, 0.9) * 1e-6;
        e.energy_board_j = esum / (double)op->ranges;
        e.energy_dynamic_j = NAN;
        double mean_s = (double)op->kernel_ns / (double)op->ranges * 1e-9;
        e.avg_power_w = mean_s > 0 ? e.energy_board_j / mean_s : NAN;
        e.temp_impact_c_per_s = NAN;
        e.samples = op->ranges;
        for (int j = 0; j < op->n_knames; j++) {
            ks[j].name = r->names[op->knames[j].name];
            ks[j].count = (op->knames[j].count + op->ranges / 2) / op->ranges;
            ks[j].ms = (double)op->knames[j].ns * 1e-6 / (double)op->ranges;
        }
        e.kernels = ks;
        e.n_kernels = op->n_knames;
        int rc = tmoe_cost_add(cm, &e, err);
        free(v);
        free(ks);
        if (rc) return rc;
        if (n_added) (*n_added)++;
    }
    return TMOE_OK;
}
