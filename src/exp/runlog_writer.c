/* batches.csv: row formatting, append with one write per row (a failed write is cut back to
 * the last whole row), and resume after a kill (the file read back with core's tmoe_csv). */
#include "thermoe/exp.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void tmoe_runlog_row_clear(tmoe_runlog_row *r) {
    for (int c = 0; c < TMOE_RL_NCOLS; c++) r->cell[c][0] = '\0';
}

void tmoe_runlog_row_str(tmoe_runlog_row *r, int col, const char *s) {
    TMOE_ASSERT(col >= 0 && col < TMOE_RL_NCOLS);
    snprintf(r->cell[col], TMOE_RUNLOG_CELL, "%s", s ? s : "");
}

void tmoe_runlog_row_int(tmoe_runlog_row *r, int col, long long v) {
    TMOE_ASSERT(col >= 0 && col < TMOE_RL_NCOLS);
    snprintf(r->cell[col], TMOE_RUNLOG_CELL, "%lld", v);
}

static void fmt_dbl(char *buf, size_t n, double v) {
    if (isnan(v) || isinf(v))
        snprintf(buf, n, "nan");
    else
        snprintf(buf, n, "%.9g", v);
}

void tmoe_runlog_row_dbl(tmoe_runlog_row *r, int col, double v) {
    TMOE_ASSERT(col >= 0 && col < TMOE_RL_NCOLS);
    fmt_dbl(r->cell[col], TMOE_RUNLOG_CELL, v);
}

void tmoe_runlog_row_ints(tmoe_runlog_row *r, int col, const int32_t *v, int n) {
    char *p = r->cell[col];
    size_t left = TMOE_RUNLOG_CELL;
    p[0] = '\0';
    for (int i = 0; i < n; i++) {
        if (left <= 16) { /* does not fit: unknown, never a list cut short */
            r->cell[col][0] = '\0';
            return;
        }
        int k = snprintf(p, left, "%s%d", i ? ";" : "", (int)v[i]);
        p += k;
        left -= (size_t)k;
    }
}

void tmoe_runlog_row_dbls(tmoe_runlog_row *r, int col, const double *v, int n) {
    char *p = r->cell[col];
    size_t left = TMOE_RUNLOG_CELL;
    p[0] = '\0';
    for (int i = 0; i < n; i++) {
        if (left <= 32) { /* does not fit: unknown, never a list cut short */
            r->cell[col][0] = '\0';
            return;
        }
        char b[32];
        fmt_dbl(b, sizeof b, v[i]);
        int k = snprintf(p, left, "%s%s", i ? ";" : "", b);
        p += k;
        left -= (size_t)k;
    }
}

/* The file is written through a descriptor opened with O_APPEND; each row is formatted in
 * memory and written with write(2), so that a failed write can be undone: the file is cut
 * back to its last whole row and no buffered remainder reaches it later. */
struct tmoe_runlog_writer {
    int fd;
    char *path;
    char *run_id; /* rows of other runs are dropped on resume; NULL: any run */
    long rows;
    off_t good_size; /* bytes up to the end of the last whole row */
    char *line;      /* (line_cap) the row being written */
    size_t line_len, line_cap;
};

static int line_put(tmoe_runlog_writer *w, const char *s, size_t n) {
    if (w->line_len + n + 1 > w->line_cap) {
        size_t cap = w->line_cap ? w->line_cap : 4096;
        while (w->line_len + n + 1 > cap) cap *= 2;
        char *nl = realloc(w->line, cap);
        if (!nl) return -1;
        w->line = nl;
        w->line_cap = cap;
    }
    memcpy(w->line + w->line_len, s, n);
    w->line_len += n;
    return 0;
}

static int line_cell(tmoe_runlog_writer *w, const char *s) {
    if (!strpbrk(s, ",\"\n\r")) return line_put(w, s, strlen(s));
    if (line_put(w, "\"", 1)) return -1;
    for (; *s; s++) {
        if (*s == '"' && line_put(w, "\"", 1)) return -1;
        if (line_put(w, s, 1)) return -1;
    }
    return line_put(w, "\"", 1);
}

/* Write the formatted line whole, or cut the file back to its last whole row. */
static int line_flush(tmoe_runlog_writer *w, const char *what, tmoe_error *err) {
    size_t done = 0;
    while (done < w->line_len) {
        ssize_t k = write(w->fd, w->line + done, w->line_len - done);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            int e = k < 0 ? errno : ENOSPC;
            int cut = ftruncate(w->fd, w->good_size);
            return tmoe_errorf(err, TMOE_EIO, "cannot write %s to %s: %s (%ld whole rows kept%s)",
                               what, w->path, strerror(e), w->rows,
                               cut ? "; the partial row could not be removed" : "");
        }
        done += (size_t)k;
    }
    w->good_size += (off_t)w->line_len;
    w->line_len = 0;
    return TMOE_OK;
}

static int write_header(tmoe_runlog_writer *w, tmoe_error *err) {
    w->line_len = 0;
    for (int c = 0; c < TMOE_RL_NCOLS; c++)
        if ((c && line_put(w, ",", 1)) ||
            line_put(w, tmoe_runlog_cols[c].name, strlen(tmoe_runlog_cols[c].name)))
            return tmoe_errorf(err, TMOE_ENOMEM, "out of memory");
    if (line_put(w, "\n", 1)) return tmoe_errorf(err, TMOE_ENOMEM, "out of memory");
    return line_flush(w, "the header", err);
}

/* Split one CSV line (no newline) with core's RFC 4180 reader into at most max fields:
 * copied into buf (NUL-separated), pointers into fields[]; returns the field count, max + 1
 * when there are more, 0 when out of memory. */
int tmoe_runlog_split(const char *line, char *buf, char **fields, int max) {
    tmoe_csv c;
    tmoe_csv_init(&c, line, strlen(line));
    /* a quote not closed takes the rest of the line: the record is there all the same */
    if (tmoe_csv_next(&c, NULL) == TMOE_ENOMEM) return 0;
    if (c.nfields == 0) { /* an empty line: one empty field */
        tmoe_csv_free(&c);
        if (max < 1) return max + 1;
        buf[0] = '\0';
        fields[0] = buf;
        return 1;
    }
    int n = c.nfields < max ? c.nfields : max;
    char *o = buf;
    for (int i = 0; i < n; i++) {
        size_t k = strlen(tmoe_csv_field(&c, i)) + 1; /* never more than its bytes in line */
        memcpy(o, tmoe_csv_field(&c, i), k);
        fields[i] = o;
        o += k;
    }
    n = c.nfields > max ? max + 1 : c.nfields;
    tmoe_csv_free(&c);
    return n;
}

/* Point fields[] (TMOE_RL_NCOLS entries) at the fields of the record c read last; returns
 * their count, TMOE_RL_NCOLS + 1 when there are more. */
static int record_fields(const tmoe_csv *c, const char **fields) {
    int n = c->nfields < TMOE_RL_NCOLS ? c->nfields : TMOE_RL_NCOLS;
    for (int i = 0; i < n; i++) fields[i] = tmoe_csv_field(c, i);
    return c->nfields > TMOE_RL_NCOLS ? TMOE_RL_NCOLS + 1 : c->nfields;
}

/* 1-based column of the first NUL byte in the record c read last, 0 when none. */
static size_t nul_column(const tmoe_csv *c) {
    const char *z = memchr(c->data + c->begin, '\0', c->end - c->begin);
    return z ? (size_t)(z - (c->data + c->begin)) + 1 : 0;
}

static int find_done(const tmoe_runlog_done *d, int n, int repeat, const char *wl, const char *st) {
    for (int i = n - 1; i >= 0; i--) /* a combination's rows are together: the last one first */
        if (d[i].repeat == repeat && !strcmp(d[i].workload, wl) && !strcmp(d[i].strategy, st))
            return i;
    return -1;
}

static int parse_ll(const char *s, long long *v) {
    char *end;
    errno = 0;
    *v = strtoll(s, &end, 10);
    return *s && !*end && errno == 0;
}

static int parse_dbl(const char *s) {
    if (!*s || !strcmp(s, "nan")) return 1;
    char *end;
    strtod(s, &end);
    return !*end;
}

/* Every ';'-separated item of s parses (an empty list is unknown, and fine). */
static int parse_list(const char *s, int ints) {
    char item[64];
    while (*s) {
        size_t n = strcspn(s, ";");
        if (n == 0 || n >= sizeof item) return 0;
        memcpy(item, s, n);
        item[n] = '\0';
        long long v;
        if (ints ? !parse_ll(item, &v) : !parse_dbl(item)) return 0;
        s += n;
        if (*s == ';' && !*++s) return 0; /* a trailing separator */
    }
    return 1;
}

/* Why a split line (nf fields) is not a row of run run_id (NULL: of any run): a message in
 * why (n bytes), return 1; 0 when it is a valid row. */
static int row_problem(const char **fields, int nf, const char *run_id, char *why, size_t n) {
    if (nf > TMOE_RL_NCOLS) {
        snprintf(why, n, "more than %d fields", TMOE_RL_NCOLS);
        return 1;
    }
    if (nf != TMOE_RL_NCOLS) {
        snprintf(why, n, "%d fields, expected %d", nf, TMOE_RL_NCOLS);
        return 1;
    }
    for (int c = 0; c < TMOE_RL_NCOLS; c++) {
        const char *v = fields[c];
        long long x = 0;
        int ok = 1;
        switch (tmoe_runlog_cols[c].type) {
        case TMOE_COL_INT: /* empty: unknown, except in the key columns */
            ok = parse_ll(v, &x) || (!*v && c != TMOE_RL_REPEAT && c != TMOE_RL_BATCH_IDX);
            break;
        case TMOE_COL_DOUBLE: ok = parse_dbl(v); break;
        case TMOE_COL_LIST_INT: ok = parse_list(v, 1); break;
        case TMOE_COL_LIST_DBL: ok = parse_list(v, 0); break;
        case TMOE_COL_STR: break;
        }
        if (c == TMOE_RL_STRATEGY || c == TMOE_RL_WORKLOAD) ok = ok && *v && strlen(v) < 64;
        if (c == TMOE_RL_REPEAT || c == TMOE_RL_BATCH_IDX) ok = ok && x >= 0 && x <= INT32_MAX;
        if (!ok) {
            snprintf(why, n, "%s = '%.40s%s' is not %s", tmoe_runlog_cols[c].name, v,
                     strlen(v) > 40 ? "..." : "",
                     tmoe_runlog_cols[c].type == TMOE_COL_INT      ? "an integer in range"
                     : tmoe_runlog_cols[c].type == TMOE_COL_DOUBLE ? "a number"
                     : tmoe_runlog_cols[c].type == TMOE_COL_STR    ? "a name"
                                                                   : "a list of numbers");
            return 1;
        }
    }
    if (run_id && strcmp(fields[TMOE_RL_RUN_ID], run_id) != 0) {
        snprintf(why, n, "run_id '%.40s' is another run's (this run is %s)", fields[TMOE_RL_RUN_ID],
                 run_id);
        return 1;
    }
    return 0;
}

/* The combination a line names, when it names one (repeat, workload, strategy parse). */
static int row_key(const char **fields, int nf, int *repeat) {
    long long x;
    if (nf <= TMOE_RL_STRATEGY || !parse_ll(fields[TMOE_RL_REPEAT], &x) || x < 0 || x > INT32_MAX)
        return 0;
    *repeat = (int)x;
    return *fields[TMOE_RL_WORKLOAD] && strlen(fields[TMOE_RL_WORKLOAD]) < 64 &&
           *fields[TMOE_RL_STRATEGY] && strlen(fields[TMOE_RL_STRATEGY]) < 64;
}

#define RUNLOG_WARN_MAX 10 /* dropped rows named one by one; the rest are counted */

/* Read an existing file: check the header, collect the combinations of its whole rows and
 * truncate a torn last row. Every row is checked (field count, each typed cell parses,
 * run_id is run_id's when not NULL, batch_idx counts 0, 1, ... within its combination): a
 * row that fails is reported (tmoe_log) and its combination, when it names one, is marked
 * invalid so that it runs again. *rows counts every data row. */
static int scan_existing(const char *path, const char *run_id, tmoe_runlog_done **done, int *ndone,
                         long *rows, tmoe_error *err) {
    *done = NULL;
    *ndone = 0;
    *rows = 0;
    tmoe_csv c;
    if (tmoe_csv_open_file(&c, path, TMOE_RUNLOG_MAX_BYTES, err))
        return tmoe_error_prefix(err, TMOE_EIO, "cannot resume");
    size_t good_end = 0;
    long nrec = 0, bad = 0;
    int rc = TMOE_OK, cap_done = 0;
    const char *fields[TMOE_RL_NCOLS];
    char why[256];
    tmoe_error e = {0};
    for (;;) {
        int st = tmoe_csv_next(&c, &e);
        if (st == TMOE_ENOMEM) {
            rc = tmoe_errorf(err, TMOE_ENOMEM, "out of memory reading %s", path);
            break;
        }
        if (c.nfields == 0) {
            if (st) rc = tmoe_errorf(err, st, "%s: %s", path, e.msg);
            break;
        }
        int nf = record_fields(&c, fields);
        if (++nrec == 1) {
            int ok = nf == TMOE_RL_NCOLS && c.terminated;
            for (int k = 0; ok && k < TMOE_RL_NCOLS; k++)
                ok = strcmp(fields[k], tmoe_runlog_cols[k].name) == 0;
            if (!ok) {
                rc = tmoe_errorf(err, TMOE_EFORMAT,
                                 "%s:1: header is not the batches.csv header of this thermoe "
                                 "version%s; cannot resume into it",
                                 path, c.terminated ? "" : " (or has no newline)");
                break;
            }
            good_end = c.end;
            continue;
        }
        if (!c.terminated) { /* torn last row: dropped */
            if (c.unclosed && memchr(c.data + c.begin, '\n', c.end - c.begin))
                tmoe_log(TMOE_LOG_WARN,
                         "%s:%d: a quoted field is not closed before the end of the file; "
                         "dropped on resume with the %zu bytes after it",
                         path, c.line, c.end - c.begin);
            break;
        }
        (*rows)++;
        good_end = c.end;
        int rep, invalid = row_problem(fields, nf, run_id, why, sizeof why);
        size_t nul = nul_column(&c);
        if (nul) {
            snprintf(why, sizeof why, "a NUL byte at column %zu", nul);
            invalid = 1;
        }
        if (!row_key(fields, nf, &rep)) {
            if (!invalid) snprintf(why, sizeof why, "no combination");
            invalid = 1;
        } else {
            const char *wl = fields[TMOE_RL_WORKLOAD], *st_name = fields[TMOE_RL_STRATEGY];
            int i = find_done(*done, *ndone, rep, wl, st_name);
            if (i < 0) {
                if (*ndone == cap_done) {
                    cap_done = cap_done ? 2 * cap_done : 16;
                    tmoe_runlog_done *nd = realloc(*done, sizeof **done * (size_t)cap_done);
                    if (!nd) {
                        rc = tmoe_errorf(err, TMOE_ENOMEM, "out of memory reading %s", path);
                        break;
                    }
                    *done = nd;
                }
                i = (*ndone)++;
                tmoe_runlog_done *d = &(*done)[i];
                memset(d, 0, sizeof *d);
                d->repeat = rep;
                snprintf(d->workload, sizeof d->workload, "%s", wl);
                snprintf(d->strategy, sizeof d->strategy, "%s", st_name);
            }
            tmoe_runlog_done *d = &(*done)[i];
            long long b;
            if (!invalid && parse_ll(fields[TMOE_RL_BATCH_IDX], &b) && b != d->rows) {
                snprintf(why, sizeof why,
                         "batch_idx %lld where %d was due (a row missing or twice)", b, d->rows);
                invalid = 1;
            }
            if (invalid)
                d->invalid = 1;
            else
                d->rows++;
        }
        if (invalid && ++bad <= RUNLOG_WARN_MAX)
            tmoe_log(TMOE_LOG_WARN, "%s:%d: dropped on resume: %s", path, c.line, why);
    }
    tmoe_csv_free(&c);
    if (rc == TMOE_OK && bad > RUNLOG_WARN_MAX)
        tmoe_log(TMOE_LOG_WARN,
                 "%s: %ld more lines that are not rows of this run dropped on resume", path,
                 bad - RUNLOG_WARN_MAX);
    if (rc == TMOE_OK && bad)
        tmoe_log(TMOE_LOG_WARN,
                 "%s: %ld lines are not valid rows of this run; the combinations "
                 "they were in run again",
                 path, bad);
    if (rc == TMOE_OK && nrec == 0)
        rc = tmoe_errorf(err, TMOE_EFORMAT, "%s is empty: nothing to resume", path);
    if (rc == TMOE_OK && truncate(path, (off_t)good_end) != 0)
        rc = tmoe_errorf(err, TMOE_EIO, "cannot truncate the torn last line of %s: %s", path,
                         strerror(errno));
    if (rc) {
        free(*done);
        *done = NULL;
        *ndone = 0;
    }
    return rc;
}

static void writer_free(tmoe_runlog_writer *w) {
    if (!w) return;
    if (w->fd >= 0) close(w->fd);
    free(w->path);
    free(w->run_id);
    free(w->line);
    free(w);
}

/* Open path for appending at its end (which is its last whole row). */
static int open_append(tmoe_runlog_writer *w, tmoe_error *err) {
    w->fd = open(w->path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (w->fd < 0)
        return tmoe_errorf(err, TMOE_EIO, "cannot append to %s: %s", w->path, strerror(errno));
    struct stat st;
    if (fstat(w->fd, &st) != 0)
        return tmoe_errorf(err, TMOE_EIO, "%s: cannot stat: %s", w->path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return tmoe_errorf(err, TMOE_EINVAL, "%s: not a regular file; cannot append rows to it",
                           w->path);
    w->good_size = st.st_size;
    return TMOE_OK;
}

int tmoe_runlog_open(const char *path, int resume, const char *run_id, tmoe_runlog_writer **out,
                     tmoe_runlog_done **done, int *ndone, tmoe_error *err) {
    *out = NULL;
    if (done) *done = NULL;
    if (ndone) *ndone = 0;
    tmoe_runlog_writer *w = tmoe_calloc(1, sizeof *w, err);
    if (!w) return TMOE_ENOMEM;
    w->fd = -1;
    w->path = strdup(path);
    w->run_id = run_id ? strdup(run_id) : NULL;
    if (!w->path || (run_id && !w->run_id)) {
        writer_free(w);
        return tmoe_errorf(err, TMOE_ENOMEM, "out of memory");
    }
    int rc = TMOE_OK;
    if (resume) {
        tmoe_runlog_done *d = NULL;
        int nd = 0;
        rc = scan_existing(path, run_id, &d, &nd, &w->rows, err);
        if (rc == TMOE_OK) rc = open_append(w, err);
        if (done)
            *done = d;
        else
            free(d);
        if (ndone) *ndone = nd;
    } else {
        rc = tmoe_file_check_writable(path, err);
        if (rc == TMOE_OK) {
            w->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
            if (w->fd < 0)
                rc = tmoe_errorf(err, TMOE_EIO, "cannot create %s: %s", path, strerror(errno));
        }
        if (rc == TMOE_OK) rc = write_header(w, err);
    }
    if (rc) {
        if (done) {
            free(*done);
            *done = NULL;
        }
        if (ndone) *ndone = 0;
        writer_free(w);
        return rc;
    }
    *out = w;
    return TMOE_OK;
}

int tmoe_runlog_drop(tmoe_runlog_writer *w, const tmoe_runlog_done *keep, int nkeep,
                     tmoe_error *err) {
    tmoe_atomic_file af;
    tmoe_csv c;
    if (tmoe_csv_open_file(&c, w->path, TMOE_RUNLOG_MAX_BYTES, err))
        return tmoe_error_prefix(err, TMOE_EIO, "cannot rewrite");
    int rc = tmoe_atomic_open(&af, w->path, err);
    if (rc) {
        tmoe_csv_free(&c);
        return rc;
    }
    const char *fields[TMOE_RL_NCOLS];
    long nrec = 0, rows = 0;
    tmoe_error e = {0};
    for (;;) {
        int st = tmoe_csv_next(&c, &e);
        if (st == TMOE_ENOMEM) {
            rc = tmoe_errorf(err, TMOE_ENOMEM, "out of memory");
            break;
        }
        if (c.nfields == 0) {
            if (st) rc = tmoe_errorf(err, st, "%s: %s", w->path, e.msg);
            break;
        }
        int keepit = ++nrec == 1; /* the header */
        if (!keepit) {
            int nf = record_fields(&c, fields), rep;
            char why[256];
            keepit = c.terminated && !nul_column(&c) &&
                     !row_problem(fields, nf, w->run_id, why, sizeof why) &&
                     row_key(fields, nf, &rep) &&
                     find_done(keep, nkeep, rep, fields[TMOE_RL_WORKLOAD],
                               fields[TMOE_RL_STRATEGY]) >= 0;
            rows += keepit;
        }
        size_t n = c.end - c.begin;
        if (keepit && fwrite(c.data + c.begin, 1, n, af.f) != n) break; /* the commit reports it */
    }
    tmoe_csv_free(&c);
    if (rc) {
        tmoe_atomic_abort(&af);
        return rc;
    }
    if ((rc = tmoe_atomic_commit(&af, err)))
        return tmoe_error_prefix(err, rc, "rewriting the rows to keep");
    /* the old file is gone: append to the new one */
    close(w->fd);
    w->fd = -1;
    w->rows = rows;
    return open_append(w, err);
}

int tmoe_runlog_write(tmoe_runlog_writer *w, const tmoe_runlog_row *r, tmoe_error *err) {
    TMOE_ASSERT(w && w->fd >= 0);
    w->line_len = 0;
    for (int c = 0; c < TMOE_RL_NCOLS; c++)
        if ((c && line_put(w, ",", 1)) || line_cell(w, r->cell[c]))
            return tmoe_errorf(err, TMOE_ENOMEM, "out of memory formatting row %ld", w->rows + 1);
    if (line_put(w, "\n", 1))
        return tmoe_errorf(err, TMOE_ENOMEM, "out of memory formatting row %ld", w->rows + 1);
    char what[48];
    snprintf(what, sizeof what, "row %ld", w->rows + 1);
    int rc = line_flush(w, what, err);
    if (rc) return rc;
    w->rows++;
    return TMOE_OK;
}

long tmoe_runlog_rows(const tmoe_runlog_writer *w) {
    return w->rows;
}

int tmoe_runlog_close(tmoe_runlog_writer *w, tmoe_error *err) {
    if (!w) return TMOE_OK;
    int rc = TMOE_OK;
    /* EINVAL / EROFS: a file system that cannot sync, not a lost write */
    if (w->fd >= 0 && fsync(w->fd) != 0 && errno != EINVAL && errno != EROFS)
        rc = tmoe_errorf(err, TMOE_EIO, "cannot write %s: %s", w->path, strerror(errno));
    if (w->fd >= 0 && close(w->fd) != 0 && rc == TMOE_OK)
        rc = tmoe_errorf(err, TMOE_EIO, "cannot close %s: %s", w->path, strerror(errno));
    w->fd = -1;
    writer_free(w);
    return rc;
}
