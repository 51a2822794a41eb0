/* Import Nsight Compute CSV (`ncu --csv --page raw`, or the "details" layout): duration,
 * achieved occupancy and DRAM throughput per kernel, merged into cost-model entries. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "thermoe/profile.h"

/* ---- CSV ----------------------------------------------------------------------------- */

typedef struct row {
    int n;
    char **f; /* (n) fields, each malloc'ed */
    int line; /* 1-based line of the file where the record starts */
} row;

typedef struct table {
    int n, cap;
    row *rows;
    char error_line[300]; /* first ==ERROR== line, if any */
} table;

static void table_free(table *t) {
    for (int i = 0; i < t->n; i++) {
        for (int j = 0; j < t->rows[i].n; j++) free(t->rows[i].f[j]);
        free(t->rows[i].f);
    }
    free(t->rows);
}

static int table_add(table *t, row *r) {
    if (t->n == t->cap) {
        int nc = t->cap ? t->cap * 2 : 64;
        row *p = realloc(t->rows, (size_t)nc * sizeof *p);
        if (!p) return -1;
        t->rows = p;
        t->cap = nc;
    }
    t->rows[t->n++] = *r;
    *r = (row){0};
    return 0;
}

/* The record c read last as a row of t (its fields copied). */
static int table_add_record(table *t, const tmoe_csv *c) {
    row r = {.line = c->line};
    r.f = calloc((size_t)c->nfields, sizeof *r.f);
    if (!r.f) return -1;
    for (; r.n < c->nfields; r.n++)
        if (!(r.f[r.n] = strdup(tmoe_csv_field(c, r.n)))) break;
    if (r.n < c->nfields || table_add(t, &r)) {
        for (int j = 0; j < r.n; j++) free(r.f[j]);
        free(r.f);
        return -1;
    }
    return 0;
}

/* Parse CSV s (core's RFC 4180 reader) into t; blank lines, and lines that start with "=="
 * (ncu's own messages: "==PROF==", "==WARNING==", "==ERROR==") are passed over. A quoted field
 * that runs to the end (a truncated file) is an error naming the line it opened on. */
static int parse_csv(const char *s, size_t len, const char *name, table *t, tmoe_error *err) {
    tmoe_csv c;
    tmoe_csv_init(&c, s, len);
    int rc = TMOE_OK;
    for (;;) {
        size_t n;
        const char *p = tmoe_csv_peek(&c, &n);
        if (n >= 2 && p[0] == '=' && p[1] == '=') {
            if (!t->error_line[0] && n >= 9 && strncmp(p, "==ERROR==", 9) == 0) {
                const char *nl = memchr(p, '\n', n);
                size_t k = nl ? (size_t)(nl - p) : n;
                if (k > 0 && p[k - 1] == '\r') k--;
                if (k >= sizeof t->error_line) k = sizeof t->error_line - 1;
                memcpy(t->error_line, p, k);
                t->error_line[k] = '\0';
            }
            tmoe_csv_skip_line(&c);
            continue;
        }
        if (n && (p[0] == '\n' || (p[0] == '\r' && n >= 2 && p[1] == '\n'))) { /* blank line */
            tmoe_csv_skip_line(&c);
            continue;
        }
        if ((rc = tmoe_csv_next(&c, err)) || c.nfields == 0) break;
        if (table_add_record(t, &c)) {
            rc = tmoe_errorf(err, TMOE_ENOMEM, "out of memory parsing CSV");
            break;
        }
    }
    tmoe_csv_free(&c);
    return rc ? tmoe_error_prefix(err, rc, "%s", name) : TMOE_OK;
}

/* ---- values -------------------------------------------------------------------------- */

/* A number as ncu writes it: an optional sign, digits with or without thousands separators
 * (then the first group has 1-3 digits and every later group exactly 3: "2,640,991,404,011.46"),
 * an optional fraction and exponent; spaces around it are ignored. 1 with *out set; 0 when
 * the field is empty or "n/a" (*out = NAN: not measured); -1 when it is anything else. */
static int parse_num(const char *s, double *out) {
    *out = NAN;
    while (*s == ' ' || *s == '\t') s++;
    size_t len = strlen(s);
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t')) len--;
    if (!len || (len == 3 && strncasecmp(s, "n/a", 3) == 0)) return 0;
    const char *p = s, *end = s + len;
    char tmp[64];
    size_t n = 0;
#define NUM_PUT(ch)                                                                                \
    do {                                                                                           \
        if (n + 1 >= sizeof tmp) return -1;                                                        \
        tmp[n++] = (ch);                                                                           \
    } while (0)
    if (p < end && (*p == '+' || *p == '-')) NUM_PUT(*p++);
    int idigits = 0, group = 0, fdigits = 0;
    for (; p < end && isdigit((unsigned char)*p); p++, idigits++, group++) NUM_PUT(*p);
    if (p < end && *p == ',') {
        if (group < 1 || group > 3) return -1;
        while (p < end && *p == ',') {
            p++;
            for (group = 0; p < end && isdigit((unsigned char)*p); p++, group++, idigits++)
                NUM_PUT(*p);
            if (group != 3) return -1;
        }
    }
    if (p < end && *p == '.') {
        NUM_PUT(*p++);
        for (; p < end && isdigit((unsigned char)*p); p++, fdigits++) NUM_PUT(*p);
    }
    if (!idigits && !fdigits) return -1;
    if (p < end && (*p == 'e' || *p == 'E')) {
        NUM_PUT(*p++);
        if (p < end && (*p == '+' || *p == '-')) NUM_PUT(*p++);
        int edigits = 0;
        for (; p < end && isdigit((unsigned char)*p); p++, edigits++) NUM_PUT(*p);
        if (!edigits) return -1;
    }
#undef NUM_PUT
    if (p != end) return -1;
    tmp[n] = '\0';
    char *e;
    errno = 0;
    double v = strtod(tmp, &e);
    if (*e || errno || !isfinite(v)) return -1;
    *out = v;
    return 1;
}

/* Scale of a time unit to ns; NAN when the unit is not a time unit. */
static double time_scale_ns(const char *u) {
    if (!u[0] || !strcasecmp(u, "ns") || !strcasecmp(u, "nsecond") || !strcasecmp(u, "nseconds"))
        return 1.0;
    if (!strcasecmp(u, "us") || !strcasecmp(u, "usecond") || !strcasecmp(u, "useconds")) return 1e3;
    if (!strcasecmp(u, "ms") || !strcasecmp(u, "msecond") || !strcasecmp(u, "mseconds")) return 1e6;
    if (!strcasecmp(u, "s") || !strcasecmp(u, "second") || !strcasecmp(u, "seconds")) return 1e9;
    return NAN;
}

static int col(const row *h, const char *name) {
    for (int i = 0; i < h->n; i++)
        if (strcmp(h->f[i], name) == 0) return i;
    return -1;
}

static int col_any(const row *h, const char *const *names) {
    for (int i = 0; names[i]; i++) {
        int c = col(h, names[i]);
        if (c >= 0) return c;
    }
    return -1;
}

static const char *field(const row *r, int c) {
    return c >= 0 && c < r->n ? r->f[c] : "";
}

static const char *const DURATION_NAMES[] = {"gpu__time_duration.sum", "gpu__time_duration.avg",
                                             "gpu__time_duration", NULL};
static const char *const OCC_NAMES[] = {"sm__warps_active.avg.pct_of_peak_sustained_active",
                                        "achieved_occupancy", NULL};
static const char *const DRAM_NAMES[] = {"gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed",
                                         "dram__throughput.avg.pct_of_peak_sustained_elapsed",
                                         NULL};

static int push_kernel(tmoe_ncu_result *res, int *cap, const char *name, int64_t id,
                       tmoe_error *err) {
    if (res->n == *cap) {
        int nc = *cap ? *cap * 2 : 32;
        tmoe_ncu_kernel *p = realloc(res->kernels, (size_t)nc * sizeof *p);
        if (!p) return tmoe_errorf(err, TMOE_ENOMEM, "out of memory reading ncu kernels");
        res->kernels = p;
        *cap = nc;
    }
    tmoe_ncu_kernel *k = &res->kernels[res->n];
    k->name = strdup(name);
    if (!k->name) return tmoe_errorf(err, TMOE_ENOMEM, "out of memory reading ncu kernels");
    k->id = id;
    k->duration_ns = k->occupancy_pct = k->dram_pct = NAN;
    res->n++;
    return TMOE_OK;
}

static int64_t parse_id(const char *s) {
    double v;
    return parse_num(s, &v) != 1 || v < 0 || v > 9e15 ? -1 : (int64_t)v;
}

/* Column c of row r as a number (NAN when empty or n/a); a malformed one is an error naming
 * the file, line, column and text. */
static int num_field(const row *r, int c, const char *colname, const char *name, double *out,
                     tmoe_error *err) {
    const char *f = field(r, c);
    if (parse_num(f, out) >= 0) return TMOE_OK;
    return tmoe_errorf(
        err, TMOE_EFORMAT,
        "%s: line %d: %s: '%.80s' is not a number (digits, thousands separators between groups "
        "of three, an optional fraction)",
        name, r->line, colname, f);
}

static int negative_duration(const row *r, double ns, const char *colname, const char *name,
                             tmoe_error *err) {
    return tmoe_errorf(err, TMOE_EFORMAT, "%s: line %d: %s: negative duration %g ns", name, r->line,
                       colname, ns);
}

static int read_raw(const table *t, const char *name, tmoe_ncu_result *res, tmoe_error *err) {
    const row *h = &t->rows[0];
    int c_name = col(h, "Kernel Name"), c_id = col(h, "ID");
    int c_dur = col_any(h, DURATION_NAMES), c_occ = col_any(h, OCC_NAMES),
        c_dram = col_any(h, DRAM_NAMES);
    if (c_name < 0)
        return tmoe_errorf(
            err, TMOE_EFORMAT,
            "%s: the CSV header has no \"Kernel Name\" column (is this 'ncu --csv' output?)", name);
    if (c_dur < 0 && c_occ < 0 && c_dram < 0)
        return tmoe_errorf(
            err, TMOE_EFORMAT,
            "%s: none of the metrics gpu__time_duration.sum, "
            "sm__warps_active.avg.pct_of_peak_sustained_active, gpu__dram_throughput / "
            "dram__throughput.avg.pct_of_peak_sustained_elapsed is in the header; profile with "
            "--metrics naming them",
            name);
    int first = 1;
    double dur_scale = 1.0;
    /* a units row follows the header: no kernel name and no ID */
    if (t->n > 1 && !field(&t->rows[1], c_name)[0] && !field(&t->rows[1], c_id)[0]) {
        if (c_dur >= 0) {
            dur_scale = time_scale_ns(field(&t->rows[1], c_dur));
            if (isnan(dur_scale))
                return tmoe_errorf(err, TMOE_EFORMAT,
                                   "%s: line 2 (units): '%s' is not a time unit for %s", name,
                                   field(&t->rows[1], c_dur), h->f[c_dur]);
        }
        first = 2;
    }
    int cap = 0;
    for (int i = first; i < t->n; i++) {
        const row *r = &t->rows[i];
        if (!field(r, c_name)[0]) continue;
        int rc = push_kernel(res, &cap, field(r, c_name), c_id >= 0 ? parse_id(field(r, c_id)) : -1,
                             err);
        if (rc) return rc;
        tmoe_ncu_kernel *k = &res->kernels[res->n - 1];
        double v;
        if (c_dur >= 0) {
            if ((rc = num_field(r, c_dur, h->f[c_dur], name, &v, err))) return rc;
            k->duration_ns = v * dur_scale;
            if (k->duration_ns < 0)
                return negative_duration(r, k->duration_ns, h->f[c_dur], name, err);
        }
        if (c_occ >= 0 && (rc = num_field(r, c_occ, h->f[c_occ], name, &k->occupancy_pct, err)))
            return rc;
        if (c_dram >= 0 && (rc = num_field(r, c_dram, h->f[c_dram], name, &k->dram_pct, err)))
            return rc;
    }
    return TMOE_OK;
}

static int read_details(const table *t, const char *name, tmoe_ncu_result *res, tmoe_error *err) {
    const row *h = &t->rows[0];
    int c_name = col(h, "Kernel Name"), c_id = col(h, "ID"), c_metric = col(h, "Metric Name"),
        c_unit = col(h, "Metric Unit"), c_value = col(h, "Metric Value");
    if (c_name < 0 || c_value < 0)
        return tmoe_errorf(err, TMOE_EFORMAT,
                           "%s: details layout without \"Kernel Name\" or \"Metric Value\" column",
                           name);
    res->details_layout = 1;
    int cap = 0;
    for (int i = 1; i < t->n; i++) {
        const row *r = &t->rows[i];
        const char *kn = field(r, c_name);
        if (!kn[0]) continue;
        int64_t id = c_id >= 0 ? parse_id(field(r, c_id)) : -1;
        tmoe_ncu_kernel *k = res->n ? &res->kernels[res->n - 1] : NULL;
        if (!k || k->id != id || strcmp(k->name, kn) != 0) {
            k = NULL;
            for (int j = 0; j < res->n && !k; j++)
                if (res->kernels[j].id == id && id >= 0 && strcmp(res->kernels[j].name, kn) == 0)
                    k = &res->kernels[j];
            if (!k) {
                int rc = push_kernel(res, &cap, kn, id, err);
                if (rc) return rc;
                k = &res->kernels[res->n - 1];
            }
        }
        /* only the metrics read here are parsed: others may hold text ("(128, 1, 1)") */
        const char *m = field(r, c_metric), *u = field(r, c_unit);
        double *dst = strcmp(m, "Duration") == 0             ? &k->duration_ns
                      : strcmp(m, "Achieved Occupancy") == 0 ? &k->occupancy_pct
                      : strcmp(m, "DRAM Throughput") == 0    ? &k->dram_pct
                                                             : NULL;
        if (!dst) continue;
        double v;
        int rc = num_field(r, c_value, m, name, &v, err);
        if (rc) return rc;
        if (dst == &k->duration_ns) {
            v *= time_scale_ns(u);
            if (v < 0) return negative_duration(r, v, m, name, err);
        }
        *dst = v;
    }
    return TMOE_OK;
}

void tmoe_ncu_free(tmoe_ncu_result *r) {
    if (!r) return;
    for (int i = 0; i < r->n; i++) free(r->kernels[i].name);
    free(r->kernels);
    free(r);
}

int tmoe_import_ncu_buffer(const char *data, size_t len, const char *name, tmoe_ncu_result **out,
                           tmoe_error *err) {
    *out = NULL;
    table t = {0};
    int rc = parse_csv(data, len, name, &t, err);
    if (rc) {
        table_free(&t);
        return rc;
    }
    tmoe_ncu_result *res = NULL;
    if (t.n == 0) {
        if (t.error_line[0])
            rc = tmoe_errorf(err, TMOE_EFORMAT,
                             "%s: ncu wrote no results, only errors; the first: %s", name,
                             t.error_line);
        else
            rc = tmoe_errorf(err, TMOE_EFORMAT, "%s: no CSV rows (expected 'ncu --csv' output)",
                             name);
        goto done;
    }
    res = tmoe_calloc(1, sizeof *res, err);
    if (!res) {
        rc = TMOE_ENOMEM;
        goto done;
    }
    if (col(&t.rows[0], "Metric Name") >= 0 && col(&t.rows[0], "Metric Value") >= 0)
        rc = read_details(&t, name, res, err);
    else
        rc = read_raw(&t, name, res, err);
    if (rc == TMOE_OK && res->n == 0)
        rc = t.error_line[0]
                 ? tmoe_errorf(err, TMOE_EFORMAT, "%s: no kernel rows; ncu said: %s", name,
                               t.error_line)
                 : tmoe_errorf(err, TMOE_EFORMAT, "%s: header but no kernel rows", name);
done:
    table_free(&t);
    if (rc) {
        tmoe_ncu_free(res);
        return rc;
    }
    if (t.error_line[0]) tmoe_log(TMOE_LOG_WARN, "%s: ncu reported: %s", name, t.error_line);
    *out = res;
    return TMOE_OK;
}

/* ncu's raw page is about 3 kB a kernel (277 metrics); 256 MiB is some 80,000 kernels, more
 * than a profile worth merging by hand, and parsing it takes a few times its size. */
#define NCU_MAX_BYTES ((size_t)256 << 20)

int tmoe_import_ncu(const char *path, tmoe_ncu_result **out, tmoe_error *err) {
    *out = NULL;
    tmoe_error local = {0};
    if (!err) err = &local; /* the code of a failed read is in it */
    size_t len = 0;
    char *data = tmoe_file_read_all(path, NCU_MAX_BYTES, &len, err);
    if (!data) return err->code;
    int rc = tmoe_import_ncu_buffer(data, len, path, out, err);
    free(data);
    return rc;
}

/* ---- merging into the cost model ----------------------------------------------------- */

/* Base name: without a leading "void ", and cut at the first '<' or '('. An Itanium-mangled
 * name (as CUPTI reports it: _Z15k_expert_linearILi3E...) gives its identifier (the last one
 * of a nested _ZN...E name), so it matches ncu's demangled "void k_expert_linear<3, ...>". */
static void base_name(const char *s, char *out, size_t cap) {
    if (s[0] == '_' && s[1] == 'Z') {
        const char *p = s + 2, *id = NULL;
        size_t idlen = 0;
        int nested = *p == 'N';
        if (nested) p++;
        while (*p >= '0' && *p <= '9') {
            char *end;
            unsigned long len = strtoul(p, &end, 10);
            if (len == 0 || strlen(end) < len) break;
            id = end;
            idlen = len;
            p = end + len;
            if (!nested) break;
        }
        if (id) {
            if (idlen >= cap) idlen = cap - 1;
            memcpy(out, id, idlen);
            out[idlen] = '\0';
            return;
        }
    }
    if (strncmp(s, "void ", 5) == 0) s += 5;
    size_t n = strcspn(s, "<(");
    while (n > 0 && s[n - 1] == ' ') n--;
    if (n >= cap) n = cap - 1;
    memcpy(out, s, n);
    out[n] = '\0';
}

static int names_match(const char *a, const char *b) {
    if (strcmp(a, b) == 0) return 1;
    char x[256], y[256];
    base_name(a, x, sizeof x);
    base_name(b, y, sizeof y);
    return x[0] && strcmp(x, y) == 0;
}

int tmoe_ncu_merge_cost(const tmoe_ncu_result *r, tmoe_cost_model *cm, int *n_matched,
                        tmoe_error *err) {
    (void)err;
    if (n_matched) *n_matched = 0;
    for (int i = 0; i < tmoe_cost_count(cm); i++) {
        const tmoe_cost_entry *e = tmoe_cost_entry_at(cm, i);
        double w_occ = 0, s_occ = 0, w_dram = 0, s_dram = 0;
        int matched = 0;
        for (int k = 0; k < e->n_kernels; k++)
            for (int j = 0; j < r->n; j++) {
                const tmoe_ncu_kernel *nk = &r->kernels[j];
                if (!names_match(e->kernels[k].name, nk->name)) continue;
                matched = 1;
                double w = isnan(nk->duration_ns) ? 1.0 : nk->duration_ns;
                if (!isnan(nk->occupancy_pct)) s_occ += w * nk->occupancy_pct, w_occ += w;
                if (!isnan(nk->dram_pct)) s_dram += w * nk->dram_pct, w_dram += w;
            }
        if (!matched) continue;
        tmoe_cost_set_ncu(cm, i, w_occ > 0 ? s_occ / w_occ : NAN,
                          w_dram > 0 ? s_dram / w_dram : NAN);
        if (n_matched) (*n_matched)++;
    }
    return TMOE_OK;
}
