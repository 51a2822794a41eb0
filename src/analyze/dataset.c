/* Run log reader: RFC 4180 CSV (core's tmoe_csv: quotes, "" escapes, CRLF) checked against
 * the runlog.h schema, metadata.json via jansson, and the merge of several run directories.
 * Problems a user can fix are recorded as "file:line: ..." messages and the bad part is
 * skipped, so one bad file never stops the rest. Every numeric cell is checked on the way in
 * (finite, integral where the schema says integer, within its column's range), so the
 * analysis and the figures can convert and index with them. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "thermoe/analyze.h"

#define MAX_PROBLEMS_PER_FILE 20

struct tmoe_dataset {
    tmoe_analyze_row *rows;
    int nrows, caprows;
    tmoe_analyze_meta *runs;
    int nruns, capruns;
    char **problems;
    int nproblems, capproblems;
    char **owned; /* every string / list allocation, freed at the end */
    int nowned, capowned;
    char **schemas;     /* header line of each run's CSV ("" when none) */
    const char **reals; /* real path of each run's directory or file (owned), or NULL */
    int *keys;          /* hash set of rows (index + 1, 0 = empty) by run_id, repeat,
                           workload, strategy and batch_idx: the same batch read twice */
    size_t capkeys, nkeys;
    int checked;
    const char *widest_type; /* set by the check: rows at several types, the widest; else NULL */
};

static int grow(void **p, int *cap, int need, size_t elem) {
    if (need <= *cap) return 0;
    int nc = *cap ? *cap * 2 : 16;
    while (nc < need) nc *= 2;
    void *q = realloc(*p, (size_t)nc * elem);
    if (!q) return -1;
    *p = q;
    *cap = nc;
    return 0;
}

static void *own(tmoe_dataset *ds, void *p) {
    if (!p) return NULL;
    if (grow((void **)&ds->owned, &ds->capowned, ds->nowned + 1, sizeof *ds->owned)) {
        free(p);
        return NULL;
    }
    ds->owned[ds->nowned++] = p;
    return p;
}

static const char *own_str(tmoe_dataset *ds, const char *s) {
    char *c = strdup(s ? s : "");
    return own(ds, c);
}

__attribute__((format(printf, 2, 3))) static void problem(tmoe_dataset *ds, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    /* messages quote cells, headers and metadata: no control character (a terminal escape
     * sequence, a newline) from a file reaches the log or the report */
    for (char *p = buf; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
    tmoe_log(TMOE_LOG_WARN, "%s", buf);
    if (grow((void **)&ds->problems, &ds->capproblems, ds->nproblems + 1, sizeof *ds->problems))
        return;
    char *c = strdup(buf);
    if (c) ds->problems[ds->nproblems++] = c;
}

tmoe_dataset *tmoe_dataset_create(tmoe_error *err) {
    return tmoe_calloc(1, sizeof(tmoe_dataset), err);
}

void tmoe_dataset_free(tmoe_dataset *ds) {
    if (!ds) return;
    for (int i = 0; i < ds->nowned; i++) free(ds->owned[i]);
    for (int i = 0; i < ds->nproblems; i++) free(ds->problems[i]);
    for (int i = 0; i < ds->nruns; i++) free(ds->schemas[i]);
    free(ds->owned);
    free(ds->problems);
    free(ds->schemas);
    free(ds->reals);
    free(ds->keys);
    free(ds->rows);
    free(ds->runs);
    free(ds);
}

int tmoe_dataset_nrows(const tmoe_dataset *ds) {
    return ds->nrows;
}
const tmoe_analyze_row *tmoe_dataset_row(const tmoe_dataset *ds, int i) {
    TMOE_ASSERT(i >= 0 && i < ds->nrows);
    return &ds->rows[i];
}
int tmoe_dataset_nruns(const tmoe_dataset *ds) {
    return ds->nruns;
}
const tmoe_analyze_meta *tmoe_dataset_run(const tmoe_dataset *ds, int i) {
    TMOE_ASSERT(i >= 0 && i < ds->nruns);
    return &ds->runs[i];
}
int tmoe_dataset_nproblems(const tmoe_dataset *ds) {
    return ds->nproblems;
}
const char *tmoe_dataset_problem(const tmoe_dataset *ds, int i) {
    TMOE_ASSERT(i >= 0 && i < ds->nproblems);
    return ds->problems[i];
}

int tmoe_dataset_simulated(const tmoe_dataset *ds) {
    for (int i = 0; i < ds->nruns; i++)
        if (strcmp(ds->runs[i].telemetry_source, "sim") == 0) return 1;
    for (int i = 0; i < ds->nrows; i++)
        if (strcmp(ds->rows[i].str[TMOE_RL_TELEMETRY_SOURCE], "sim") == 0) return 1;
    return 0;
}

/* ---- cells --------------------------------------------------------------------------- */

static int is_unknown(const char *s) {
    return *s == '\0' || strcasecmp(s, "nan") == 0 || strcasecmp(s, "-nan") == 0;
}

/* A number, or NAN for an unknown cell; -1 when s is neither. Infinities parse here and are
 * refused by check_value. */
static int parse_num(const char *s, double *out) {
    if (is_unknown(s)) {
        *out = NAN;
        return 0;
    }
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || (errno == ERANGE && fabs(v) == HUGE_VAL)) return -1;
    *out = v;
    return 0;
}

#define EXACT_INT 9007199254740992.0 /* 2^53: every integer up to it is exact in a double */

/* What a known value of column c may be: integral or not, and its range. */
typedef struct {
    int integer;
    double lo, hi;
} cell_rule;

static cell_rule rule_of(int c) {
    switch (c) {
    case TMOE_RL_REPEAT:
    case TMOE_RL_BATCH_IDX:
    case TMOE_RL_TOKENS:
    case TMOE_RL_TOKENS_SCORED: return (cell_rule){1, 0.0, (double)INT_MAX};
    case TMOE_RL_THROTTLE_REASONS:
    case TMOE_RL_EXPERT_USAGE_COUNTS:
    case TMOE_RL_DEVICE_TOKENS: return (cell_rule){1, 0.0, EXACT_INT};
    case TMOE_RL_TIME:
    case TMOE_RL_LATENCY_MS:
    case TMOE_RL_THROUGHPUT:
    case TMOE_RL_ENERGY_J:
    case TMOE_RL_ENERGY_J_PER_TOKEN:
    case TMOE_RL_POWER_AVG_W:
    case TMOE_RL_POWER_PEAK_W:
    case TMOE_RL_SM_CLOCK_MHZ:
    case TMOE_RL_GPU_UTIL_PCT:
    case TMOE_RL_EXPERT_TIME_MS:
    case TMOE_RL_PREDICTED_ENERGY_J:
    case TMOE_RL_ROUTER_OVERHEAD_MS:
    case TMOE_RL_TTHA_LR:
    case TMOE_RL_OUTPUT_REL_ERROR:
    case TMOE_RL_DEVICE_ENERGY_J:
    case TMOE_RL_DEVICE_POWER_AVG_W:
    case TMOE_RL_NLL:
    case TMOE_RL_NLL_BASELINE: return (cell_rule){0, 0.0, HUGE_VAL};
    case TMOE_RL_TOPK_AGREEMENT: return (cell_rule){0, 0.0, 1.0};
    default: /* temperatures, loss terms, biases: any finite value */
        return (cell_rule){0, -HUGE_VAL, HUGE_VAL};
    }
}

/* NULL when v (known) is allowed in column c, else why not, in words. */
static const char *check_value(int c, double v, char *why, size_t n) {
    cell_rule r = rule_of(c);
    if (!isfinite(v)) return "not finite";
    if (r.integer && v != floor(v)) return "not an integer";
    if (v < r.lo || v > r.hi) {
        if (r.hi == HUGE_VAL)
            snprintf(why, n, "negative");
        else
            snprintf(why, n, "outside [%.17g, %.17g]", r.lo, r.hi);
        return why;
    }
    return NULL;
}

/* Parse a ';'-separated list of at most TMOE_ANALYZE_MAX_LIST entries, each unknown or a
 * value check_value allows; the array is owned by ds. Returns 0, -2 (out of memory) or -1
 * with the reason in why. */
static int parse_list(tmoe_dataset *ds, int c, const char *s, const double **out, int *n, char *why,
                      size_t wn) {
    *out = NULL;
    *n = 0;
    if (is_unknown(s)) return 0;
    int cnt = 1;
    for (const char *p = s; *p; p++)
        if (*p == TMOE_RUNLOG_LIST_SEP && ++cnt > TMOE_ANALYZE_MAX_LIST) {
            snprintf(why, wn, "more than %d entries", TMOE_ANALYZE_MAX_LIST);
            return -1;
        }
    double *v = own(ds, malloc(sizeof *v * (size_t)cnt));
    if (!v) return -2;
    const char *p = s;
    for (int k = 0; k < cnt; k++) {
        const char *q = strchr(p, TMOE_RUNLOG_LIST_SEP);
        size_t l = q ? (size_t)(q - p) : strlen(p);
        char tmp[64], r[96];
        if (l >= sizeof tmp) {
            snprintf(why, wn, "entry %d is not a number", k + 1);
            return -1;
        }
        memcpy(tmp, p, l);
        tmp[l] = '\0';
        if (parse_num(tmp, &v[k])) {
            snprintf(why, wn, "entry %d is not a number", k + 1);
            return -1;
        }
        const char *bad = isnan(v[k]) ? NULL : check_value(c, v[k], r, sizeof r);
        if (bad) {
            snprintf(why, wn, "entry %d is %s", k + 1, bad);
            return -1;
        }
        p = q ? q + 1 : p + l;
    }
    *out = v;
    *n = cnt;
    return 0;
}

/* ---- one CSV ------------------------------------------------------------------------- */

typedef struct {
    int map[TMOE_RL_NCOLS * 2]; /* file column -> runlog column (-1 = unknown) */
    int nfields;
} header_map;

static int build_map(tmoe_dataset *ds, const char *path, int line, const tmoe_csv *r, header_map *h,
                     int *exact) {
    char missing[512] = "", unknown[512] = "";
    int seen[TMOE_RL_NCOLS] = {0};
    h->nfields = r->nfields;
    *exact = r->nfields == TMOE_RL_NCOLS;
    for (int i = 0; i < r->nfields; i++) {
        int c = tmoe_runlog_col_find(tmoe_csv_field(r, i));
        if (i < (int)(sizeof h->map / sizeof *h->map)) h->map[i] = c;
        if (c != i) *exact = 0;
        if (c < 0) {
            if (strlen(unknown) + strlen(tmoe_csv_field(r, i)) + 3 < sizeof unknown) {
                if (*unknown) strcat(unknown, ", ");
                strcat(unknown, tmoe_csv_field(r, i));
            }
        } else if (c >= 0 && seen[c]++) {
            problem(ds, "%s:%d: column '%s' appears twice; file skipped", path, line,
                    tmoe_csv_field(r, i));
            return -1;
        }
    }
    if (r->nfields > (int)(sizeof h->map / sizeof *h->map)) {
        problem(ds, "%s:%d: %d columns (runlog.h has %d); file skipped", path, line, r->nfields,
                TMOE_RL_NCOLS);
        return -1;
    }
    for (int c = 0; c < TMOE_RL_NCOLS; c++)
        if (!seen[c] && strlen(missing) + strlen(tmoe_runlog_cols[c].name) + 3 < sizeof missing) {
            if (*missing) strcat(missing, ", ");
            strcat(missing, tmoe_runlog_cols[c].name);
        }
    if (!seen[TMOE_RL_WORKLOAD] || !seen[TMOE_RL_STRATEGY]) {
        problem(
            ds,
            "%s:%d: header lacks workload/strategy (is this a thermoe batches.csv? missing: %s); "
            "file skipped",
            path, line, missing);
        return -1;
    }
    /* an older writer's header: the columns of runlog.h in order, the newest ones (always
     * appended at the end) not yet there; nothing is wrong with such a file */
    int older = !*exact && r->nfields < TMOE_RL_NCOLS;
    for (int i = 0; older && i < r->nfields; i++) older = h->map[i] == i;
    /* a newer writer's: runlog.h's columns in order, then columns this build does not list */
    int newer = !*exact && r->nfields > TMOE_RL_NCOLS;
    for (int i = 0; newer && i < TMOE_RL_NCOLS; i++) newer = h->map[i] == i;
    for (int i = TMOE_RL_NCOLS; newer && i < r->nfields; i++) newer = h->map[i] < 0;
    if (older)
        tmoe_log(TMOE_LOG_INFO,
                 "%s:%d: written before the columns from '%s' on were added; they count as "
                 "unknown",
                 path, line, tmoe_runlog_cols[r->nfields].name);
    else if (newer)
        tmoe_log(TMOE_LOG_INFO,
                 "%s:%d: written by a newer writer (%d columns after runlog.h's); those the "
                 "analysis knows by name are read (%s), the others ignored",
                 path, line, r->nfields - TMOE_RL_NCOLS, *unknown ? unknown : "none unknown");
    else if (!*exact)
        problem(
            ds,
            "%s:%d: schema differs from runlog.h (%d columns, expected %d; missing: %s; unknown: "
            "%s); read by column name, missing columns count as unknown",
            path, line, r->nfields, TMOE_RL_NCOLS, *missing ? missing : "none",
            *unknown ? unknown : "none");
    return 0;
}

static int looks_like_header(const tmoe_csv *r) {
    int hits = 0;
    for (int i = 0; i < r->nfields && i < 4; i++)
        hits += tmoe_runlog_col_find(tmoe_csv_field(r, i)) >= 0;
    return hits >= 2;
}

/* Convert one record to a row; -1 = bad cell (problem recorded unless quiet), -2 = out of
 * memory. */
static int add_row(tmoe_dataset *ds, const char *path, int line, const tmoe_csv *r,
                   const header_map *h, int source, int quiet) {
    tmoe_analyze_row row;
    for (int c = 0; c < TMOE_RL_NCOLS; c++) {
        row.num[c] = NAN;
        row.list[c] = NULL;
        row.nlist[c] = 0;
        row.str[c] = tmoe_runlog_cols[c].type == TMOE_COL_STR ? "" : NULL;
    }
    row.source = source;
    for (int i = 0; i < r->nfields; i++) {
        int c = h->map[i];
        const char *cell = tmoe_csv_field(r, i);
        if (c < 0) continue;
        switch (tmoe_runlog_cols[c].type) {
        case TMOE_COL_STR:
            if (!(row.str[c] = own_str(ds, cell))) return -2;
            break;
        case TMOE_COL_INT:
        case TMOE_COL_DOUBLE: {
            char why[96];
            const char *bad = NULL;
            if (parse_num(cell, &row.num[c]))
                bad = "not a number";
            else if (!isnan(row.num[c]))
                bad = check_value(c, row.num[c], why, sizeof why);
            if (bad) {
                if (!quiet)
                    problem(ds, "%s:%d: column '%s': '%.40s' is %s; row skipped", path, line,
                            tmoe_runlog_cols[c].name, cell, bad);
                return -1;
            }
            break;
        }
        case TMOE_COL_LIST_INT:
        case TMOE_COL_LIST_DBL: {
            char why[128];
            int rc = parse_list(ds, c, cell, &row.list[c], &row.nlist[c], why, sizeof why);
            if (rc == -2) return -2;
            if (rc) {
                if (!quiet)
                    problem(ds,
                            "%s:%d: column '%s': '%.40s' is not a ';'-separated list of allowed "
                            "numbers (%s); row skipped",
                            path, line, tmoe_runlog_cols[c].name, cell, why);
                return -1;
            }
            break;
        }
        }
    }
    if (grow((void **)&ds->rows, &ds->caprows, ds->nrows + 1, sizeof *ds->rows)) return -2;
    ds->rows[ds->nrows++] = row;
    return 0;
}

static int new_run(tmoe_dataset *ds, const char *dir) {
    if (grow((void **)&ds->runs, &ds->capruns, ds->nruns + 1, sizeof *ds->runs)) return -1;
    int cap = ds->capruns;
    char **s = realloc(ds->schemas, sizeof *s * (size_t)cap);
    if (!s) return -1;
    ds->schemas = s;
    const char **rs = realloc(ds->reals, sizeof *rs * (size_t)cap);
    if (!rs) return -1;
    ds->reals = rs;
    ds->reals[ds->nruns] = NULL;
    tmoe_analyze_meta m = {.dir = own_str(ds, dir)};
    m.device_name = m.driver = m.telemetry_source = m.git_commit = "";
    m.cost_model_checksum = m.start_time = m.end_time = m.status = "";
    if (!m.dir) return -1;
    ds->schemas[ds->nruns] = NULL;
    ds->runs[ds->nruns] = m;
    return ds->nruns++;
}

/* ---- the same input twice ------------------------------------------------------------ */

/* The run read earlier from the same directory or file (same real path), or -1; *real gets
 * the real path (owned by ds; NULL when it cannot be resolved). */
static int same_input(tmoe_dataset *ds, const char *path, const char **real) {
    *real = own(ds, realpath(path, NULL));
    if (!*real) return -1;
    for (int i = 0; i < ds->nruns; i++)
        if (ds->reals[i] && strcmp(ds->reals[i], *real) == 0) return i;
    return -1;
}

/* Rows that identify one batch of one run: a run_id and a batch index (known). */
static int row_keyed(const tmoe_analyze_row *r) {
    return r->str[TMOE_RL_RUN_ID][0] != '\0' && isfinite(r->num[TMOE_RL_BATCH_IDX]);
}

static int same_num(double a, double b) {
    return a == b || (isnan(a) && isnan(b));
}

/* Expert-parallel ranks write one log each with the same run_id and batch indices: a rank's
 * batches are its own GPU's, so the rank is part of a batch's identity. */
static int row_rank(const tmoe_dataset *ds, const tmoe_analyze_row *r) {
    return r->source >= 0 && r->source < ds->nruns ? ds->runs[r->source].ep_rank : 0;
}

static int same_key(const tmoe_dataset *ds, const tmoe_analyze_row *a, const tmoe_analyze_row *b) {
    static const int str[] = {TMOE_RL_RUN_ID, TMOE_RL_WORKLOAD, TMOE_RL_STRATEGY};
    if (row_rank(ds, a) != row_rank(ds, b)) return 0;
    for (int i = 0; i < 3; i++)
        if (strcmp(a->str[str[i]], b->str[str[i]]) != 0) return 0;
    return same_num(a->num[TMOE_RL_REPEAT], b->num[TMOE_RL_REPEAT]) &&
           same_num(a->num[TMOE_RL_BATCH_IDX], b->num[TMOE_RL_BATCH_IDX]);
}

static uint64_t key_hash(const tmoe_dataset *ds, const tmoe_analyze_row *r) {
    static const int str[] = {TMOE_RL_RUN_ID, TMOE_RL_WORKLOAD, TMOE_RL_STRATEGY};
    uint64_t h = 0xcbf29ce484222325ull ^ (uint64_t)(unsigned)row_rank(ds, r);
    for (int i = 0; i < 3; i++) {
        const char *p = r->str[str[i]];
        do {
            h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
        } while (*p++);
    }
    double nums[2] = {r->num[TMOE_RL_REPEAT], r->num[TMOE_RL_BATCH_IDX]};
    for (int i = 0; i < 2; i++) {
        if (isnan(nums[i])) nums[i] = NAN; /* one bit pattern for every NAN */
        if (nums[i] == 0.0) nums[i] = 0.0; /* and for -0 */
        unsigned char b[sizeof(double)];
        memcpy(b, &nums[i], sizeof b);
        for (size_t k = 0; k < sizeof b; k++) h = (h ^ b[k]) * 0x100000001b3ull;
    }
    return h;
}

/* Slot of row i in the key set: where it is, or the empty slot where it would go. */
static size_t key_slot(const tmoe_dataset *ds, const tmoe_analyze_row *r, int source, int *hit) {
    size_t mask = ds->capkeys - 1, at = (size_t)key_hash(ds, r) & mask;
    *hit = -1;
    for (; ds->keys[at]; at = (at + 1) & mask) {
        const tmoe_analyze_row *o = &ds->rows[ds->keys[at] - 1];
        if (o->source != source && same_key(ds, o, r)) {
            *hit = ds->keys[at] - 1;
            return at;
        }
    }
    return at;
}

static int keys_insert(tmoe_dataset *ds, int row) {
    if ((ds->nkeys + 1) * 2 > ds->capkeys) {
        size_t cap = ds->capkeys ? ds->capkeys * 2 : 1024;
        int *nk = calloc(cap, sizeof *nk), *old = ds->keys;
        if (!nk) return -1;
        size_t oldcap = ds->capkeys;
        ds->keys = nk;
        ds->capkeys = cap;
        for (size_t i = 0; i < oldcap; i++)
            if (old[i]) {
                size_t at = (size_t)key_hash(ds, &ds->rows[old[i] - 1]) & (cap - 1);
                while (nk[at]) at = (at + 1) & (cap - 1);
                nk[at] = old[i];
            }
        free(old);
    }
    int hit; /* source -1: an equal key of any run (only this run's can be there) */
    size_t at = key_slot(ds, &ds->rows[row], -1, &hit);
    if (hit < 0) ds->nkeys++;
    ds->keys[at] = row + 1;
    return 0;
}

/* Drop the rows of run `source` (rows first..nrows-1) that repeat a batch already read from
 * another run directory: same run_id, repeat, workload, strategy and batch_idx. A copy of a
 * run, or the same run reached by two paths, then counts once, not as independent runs.
 * Returns the rows kept, or -1 when out of memory. */
static int drop_repeated_rows(tmoe_dataset *ds, const char *path, int source, int first) {
    int kept = first, dropped = 0, other = -1;
    const char *run_id = "";
    for (int i = first; i < ds->nrows; i++) {
        const tmoe_analyze_row *r = &ds->rows[i];
        int hit = -1;
        if (ds->capkeys && row_keyed(r)) key_slot(ds, r, source, &hit);
        if (hit >= 0) {
            if (!dropped++) {
                other = ds->rows[hit].source;
                run_id = r->str[TMOE_RL_RUN_ID];
            }
            continue;
        }
        ds->rows[kept++] = ds->rows[i];
    }
    ds->nrows = kept;
    for (int i = first; i < kept; i++)
        if (row_keyed(&ds->rows[i]) && keys_insert(ds, i)) return -1;
    if (dropped)
        problem(ds,
                "%s: %d row(s) repeat batches already read from %s (same run_id '%.80s', repeat, "
                "workload, strategy and batch_idx: the same run given twice, or a copy of it); "
                "each is counted once",
                path, dropped, ds->runs[other].dir, run_id);
    return kept - first;
}

/* Parse CSV text s (len bytes, s[len] == '\0'; NUL bytes inside end a cell) into run
 * `source`, naming it path in messages; returns rows added, or -1 with err set. */
static int parse_csv(tmoe_dataset *ds, const char *path, const char *s, size_t len, int source,
                     tmoe_error *err) {
    int added = 0, bad = 0, rc = 0, first_row = ds->nrows;
    tmoe_csv r;
    tmoe_csv_init(&r, s, len);
    header_map h;
    int exact;
    tmoe_error e = {0};
    /* a header that runs into an unclosed quote is still read as a header */
    int st = tmoe_csv_next(&r, &e);
    if (st == TMOE_ENOMEM) goto nomem;
    if (st && !r.unclosed) {
        problem(ds, "%s: %s; skipped", path, e.msg);
        rc = tmoe_errorf(err, TMOE_EFORMAT, "%s: %s", path, e.msg);
        goto out;
    }
    if (r.nfields == 0 || (r.nfields == 1 && tmoe_csv_field(&r, 0)[0] == '\0' && r.end >= len)) {
        problem(ds, "%s: empty file (no header, no rows); skipped", path);
        rc = tmoe_errorf(err, TMOE_EFORMAT, "%s: empty file", path);
        goto out;
    }
    if (build_map(ds, path, r.line, &r, &h, &exact)) {
        rc = tmoe_errorf(err, TMOE_EFORMAT, "%s:%d: unusable header", path, r.line);
        goto out;
    }
    /* the header line is the schema signature (compared across runs) */
    ds->schemas[source] = strndup(s, strcspn(s, "\r\n"));
    for (;;) {
        st = tmoe_csv_next(&r, &e);
        int start = r.line;
        if (st == TMOE_ENOMEM) goto nomem;
        if (r.nfields == 0 && st == TMOE_OK) break;
        if (r.nfields == 1 && tmoe_csv_field(&r, 0)[0] == '\0') continue; /* blank line */
        if (r.unclosed) {
            problem(ds,
                    "%s:%d: quoted field not closed before the end of the file (truncated?); "
                    "skipped",
                    path, start);
            bad++;
            break;
        }
        if (st) { /* more lines than an int counts */
            problem(ds, "%s: %s; the rest skipped", path, e.msg);
            bad++;
            break;
        }
        if (!r.terminated) {
            problem(ds, "%s:%d: last line has no newline (run killed mid-write?); skipped", path,
                    start);
            bad++;
            break;
        }
        if (looks_like_header(&r)) {
            header_map h2;
            int exact2;
            if (build_map(ds, path, start, &r, &h2, &exact2)) break;
            if (h2.nfields != h.nfields || memcmp(h2.map, h.map, sizeof(int) * (size_t)h.nfields))
                problem(ds,
                        "%s:%d: a header with a different schema mid-file (mixed schemas); "
                        "the rows after it are read with it",
                        path, start);
            else
                problem(ds, "%s:%d: header line repeated (files concatenated?); skipped", path,
                        start);
            h = h2;
            continue;
        }
        if (r.nfields != h.nfields) {
            if (++bad <= MAX_PROBLEMS_PER_FILE)
                problem(ds, "%s:%d: expected %d fields, found %d; row skipped", path, start,
                        h.nfields, r.nfields);
            continue;
        }
        int ar = add_row(ds, path, start, &r, &h, source, bad >= MAX_PROBLEMS_PER_FILE);
        if (ar == -2) goto nomem;
        if (ar == -1) {
            bad++;
            continue;
        }
        added++;
    }
    if (bad > MAX_PROBLEMS_PER_FILE)
        problem(ds, "%s: %d bad rows in all (first %d listed)", path, bad, MAX_PROBLEMS_PER_FILE);
    if (added == 0) {
        problem(ds, "%s: header but no usable rows", path);
        rc = tmoe_errorf(err, TMOE_EFORMAT, "%s: no usable rows", path);
    }
    goto out;
nomem:
    rc = tmoe_errorf(err, TMOE_ENOMEM, "%s: out of memory while reading", path);
out:
    tmoe_csv_free(&r);
    if (rc) return -1;
    added = drop_repeated_rows(ds, path, source, first_row);
    if (added < 0) return tmoe_errorf(err, TMOE_ENOMEM, "%s: out of memory", path), -1;
    ds->runs[source].rows += added;
    return added;
}

/* Read a CSV file into run `source`; returns rows added, or -1 with err set. A FIFO, device
 * or directory is refused at once (no blocking), and so is a file over
 * TMOE_ANALYZE_MAX_CSV_BYTES (line numbers stay within an int). */
static int read_csv(tmoe_dataset *ds, const char *path, int source, tmoe_error *err) {
    size_t len;
    tmoe_error e = {0};
    char *s = tmoe_file_read_all(path, TMOE_ANALYZE_MAX_CSV_BYTES, &len, &e);
    if (!s) {
        problem(ds, "%s", e.msg);
        if (err) *err = e;
        return -1;
    }
    int n = parse_csv(ds, path, s, len, source, err);
    free(s);
    return n;
}

static const char *jstr(json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : "";
}

static void read_meta(tmoe_dataset *ds, const char *dir, int source) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, TMOE_RUNLOG_METADATA);
    if (access(path, F_OK) != 0) {
        problem(ds, "%s: missing (device, telemetry source and commit unknown for this run)", path);
        return;
    }
    tmoe_error e = {0};
    size_t len;
    char *text = tmoe_file_read_all(path, TMOE_ANALYZE_MAX_META_BYTES, &len, &e);
    if (!text) {
        problem(ds, "%s (device, telemetry source and commit unknown for this run)", e.msg);
        return;
    }
    json_error_t je;
    json_t *root = json_loadb(text, len, 0, &je);
    free(text);
    if (!root) {
        problem(ds, "%s:%d: %s (device, telemetry source and commit unknown for this run)", path,
                je.line, je.text);
        return;
    }
    tmoe_analyze_meta *m = &ds->runs[source];
    json_t *dev = json_object_get(root, "device");
    if (json_is_object(dev)) {
        m->device_name = own_str(ds, jstr(dev, "name"));
        m->driver = own_str(ds, jstr(dev, "driver"));
    } else {
        m->device_name = own_str(ds, json_is_string(dev) ? json_string_value(dev) : "");
    }
    /* Flat keys ("telemetry_source", "cost_model_checksum") or the harness's objects
     * ("telemetry": {"source", "simulated"}, "cost_model": {"checksum"}). */
    json_t *tel = json_object_get(root, "telemetry"), *cm = json_object_get(root, "cost_model");
    const char *src = jstr(root, "telemetry_source");
    if (!*src && json_is_object(tel)) src = jstr(tel, "source");
    if (json_is_object(tel) && json_is_true(json_object_get(tel, "simulated"))) src = "sim";
    const char *sum = jstr(root, "cost_model_checksum");
    if (!*sum && json_is_object(cm)) sum = jstr(cm, "checksum");
    m->telemetry_source = own_str(ds, src);
    m->git_commit = own_str(ds, jstr(root, "git_commit"));
    m->cost_model_checksum = own_str(ds, sum);
    m->start_time = own_str(ds, jstr(root, "start_time"));
    m->end_time = own_str(ds, jstr(root, "end_time"));
    m->status = own_str(ds, jstr(root, "status"));
    json_t *config = json_object_get(root, "config");
    json_t *ep = json_is_object(config) ? json_object_get(config, "expert_parallel") : NULL;
    json_t *rank = json_is_object(ep) ? json_object_get(ep, "rank") : NULL;
    if (json_is_integer(rank) && json_integer_value(rank) >= 0 &&
        json_integer_value(rank) < 1 << 20)
        m->ep_rank = (int)json_integer_value(rank);
    json_t *seed = json_is_object(config) ? json_object_get(config, "seed") : NULL;
    if (json_is_integer(seed)) { /* jansson reads integers as signed 64-bit */
        m->seed = (uint64_t)json_integer_value(seed);
        m->has_seed = 1;
    }
    if (!m->device_name || !m->driver || !m->telemetry_source || !m->git_commit ||
        !m->cost_model_checksum || !m->start_time || !m->end_time || !m->status) {
        m->device_name = m->driver = m->telemetry_source = m->git_commit = "";
        m->cost_model_checksum = m->start_time = m->end_time = m->status = "";
        problem(ds, "%s: out of memory", path);
    } else {
        m->has_metadata = 1;
        if (!*m->device_name) problem(ds, "%s: no device.name", path);
        if (!*m->telemetry_source) problem(ds, "%s: no telemetry_source", path);
    }
    json_decref(root);
}

int tmoe_dataset_add_dir(tmoe_dataset *ds, const char *dir, tmoe_error *err) {
    const char *real;
    int prev = same_input(ds, dir, &real);
    if (prev >= 0) {
        problem(ds, "%s: the same directory as %s (given twice); read once", dir,
                ds->runs[prev].dir);
        return TMOE_OK;
    }
    int src = new_run(ds, dir);
    if (src < 0) return tmoe_errorf(err, TMOE_ENOMEM, "%s: out of memory", dir);
    ds->reals[src] = real;
    ds->checked = 0;
    struct stat st;
    int st_rc = stat(dir, &st);
    if (st_rc != 0 || !S_ISDIR(st.st_mode)) {
        tmoe_errorf(err, TMOE_EIO, "%s: not a readable run directory: %s", dir,
                    st_rc != 0 ? strerror(errno) : "not a directory");
        problem(ds, "%s", err ? err->msg : dir);
        return TMOE_EIO;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, TMOE_RUNLOG_CSV);
    read_meta(ds, dir, src);
    int n = read_csv(ds, path, src, err);
    return n < 0 ? (err ? err->code : TMOE_EFORMAT) : TMOE_OK;
}

int tmoe_dataset_add_csv_buffer(tmoe_dataset *ds, const char *data, size_t len, const char *name,
                                tmoe_error *err) {
    int src = new_run(ds, name);
    if (src < 0) return tmoe_errorf(err, TMOE_ENOMEM, "%s: out of memory", name);
    ds->checked = 0;
    char *s = malloc(len + 1);
    if (!s) return tmoe_errorf(err, TMOE_ENOMEM, "%s: out of memory (%zu bytes)", name, len + 1);
    if (len) memcpy(s, data, len);
    s[len] = '\0';
    int n = parse_csv(ds, name, s, len, src, err);
    free(s);
    return n < 0 ? (err ? err->code : TMOE_EFORMAT) : TMOE_OK;
}

int tmoe_dataset_add_csv(tmoe_dataset *ds, const char *path, tmoe_error *err) {
    const char *real;
    int prev = same_input(ds, path, &real);
    if (prev >= 0) {
        problem(ds, "%s: the same file as %s (given twice); read once", path, ds->runs[prev].dir);
        return TMOE_OK;
    }
    int src = new_run(ds, path);
    if (src < 0) return tmoe_errorf(err, TMOE_ENOMEM, "%s: out of memory", path);
    ds->reals[src] = real;
    ds->checked = 0;
    int n = read_csv(ds, path, src, err);
    return n < 0 ? (err ? err->code : TMOE_EFORMAT) : TMOE_OK;
}

/* Report when a metadata field differs across runs that have it. */
static void check_field(tmoe_dataset *ds, const char *what, size_t off, const char *consequence) {
    const char *first = NULL, *first_dir = NULL;
    for (int i = 0; i < ds->nruns; i++) {
        const char *v = *(const char *const *)((const char *)&ds->runs[i] + off);
        if (!v || !*v) continue;
        if (!first) {
            first = v;
            first_dir = ds->runs[i].dir;
        } else if (strcmp(first, v) != 0) {
            problem(ds, "runs differ in %s: '%s' (%s) vs '%s' (%s); %s", what, first, first_dir, v,
                    ds->runs[i].dir, consequence);
            return;
        }
    }
}

/* Whether a header line is the runlog.h header or an older writer's (its first columns). */
static int current_or_older(const char *hdr) {
    const char *p = hdr;
    for (int c = 0; c < TMOE_RL_NCOLS; c++) {
        size_t n = strlen(tmoe_runlog_cols[c].name);
        if (c && *p++ != ',') return 0;
        if (strncmp(p, tmoe_runlog_cols[c].name, n) != 0) return 0;
        p += n;
        if (*p == '\0') return 1;
    }
    return 0;
}

/* Headers are consistent when equal, or both the runlog.h header or an older writer's:
 * every column the shorter one has means the same in both. */
static int same_schema(const char *a, const char *b) {
    return strcmp(a, b) == 0 || (current_or_older(a) && current_or_older(b));
}

/* The expert types in the order of their precision, widest first. */
static const char *const type_order[] = {"fp32", "fp16", "bf16", "q4", "q2"};

static int type_rank(const char *t) {
    for (int i = 0; i < (int)(sizeof type_order / sizeof *type_order); i++)
        if (strcmp(type_order[i], t) == 0) return i;
    return (int)(sizeof type_order / sizeof *type_order);
}

/* Rows at several expert types: each row's strategy becomes "strategy@type", so that a
 * merge of an fp16 run and a q4 run compares four groups, not two groups of mixed rows. Rows
 * without a type keep their name. A row labelled before (a second check after more runs were
 * added) is not labelled again. */
static void label_expert_types(tmoe_dataset *ds) {
    const char *first = NULL, *widest = NULL;
    int mixed = 0;
    for (int i = 0; i < ds->nrows; i++) {
        const char *t = ds->rows[i].str[TMOE_RL_EXPERT_TYPE];
        if (!*t) continue;
        if (!first) first = widest = t;
        mixed |= strcmp(first, t) != 0;
        if (type_rank(t) < type_rank(widest) ||
            (type_rank(t) == type_rank(widest) && strcmp(t, widest) < 0))
            widest = t;
    }
    ds->widest_type = mixed ? widest : NULL;
    if (!mixed) return;
    int n = 0;
    for (int i = 0; i < ds->nrows; i++) {
        tmoe_analyze_row *r = &ds->rows[i];
        const char *t = r->str[TMOE_RL_EXPERT_TYPE], *s = r->str[TMOE_RL_STRATEGY];
        size_t ls = strlen(s), lt = strlen(t);
        if (!*t || (ls > lt && s[ls - lt - 1] == '@' && strcmp(s + ls - lt, t) == 0)) continue;
        char *c = malloc(ls + lt + 2);
        if (c) snprintf(c, ls + lt + 2, "%s@%s", s, t);
        const char *o = own(ds, c);
        if (!o) {
            problem(ds, "out of memory labelling strategies by expert type");
            return;
        }
        r->str[TMOE_RL_STRATEGY] = o;
        n++;
    }
    if (n)
        tmoe_log(TMOE_LOG_INFO,
                 "runs at several expert types: %d rows' strategies named strategy@type; the "
                 "default baseline is baseline@%s",
                 n, widest);
}

const char *tmoe_dataset_widest_type(tmoe_dataset *ds) {
    tmoe_dataset_check_consistency(ds);
    return ds->widest_type;
}

void tmoe_dataset_check_consistency(tmoe_dataset *ds) {
    if (ds->checked) return;
    ds->checked = 1;
    label_expert_types(ds);
    check_field(ds, "device", offsetof(tmoe_analyze_meta, device_name),
                "results pool different hardware");
    check_field(ds, "telemetry source", offsetof(tmoe_analyze_meta, telemetry_source),
                "measured and simulated numbers are mixed");
    check_field(ds, "git commit", offsetof(tmoe_analyze_meta, git_commit),
                "runs come from different program versions");
    const char *first = NULL, *first_dir = NULL;
    for (int i = 0; i < ds->nruns; i++) {
        if (!ds->schemas[i]) continue;
        if (!first) {
            first = ds->schemas[i];
            first_dir = ds->runs[i].dir;
        } else if (!same_schema(first, ds->schemas[i])) {
            problem(ds,
                    "runs have inconsistent CSV schemas: %s and %s have different headers "
                    "(columns were matched by name)",
                    first_dir, ds->runs[i].dir);
            break;
        }
    }
}
