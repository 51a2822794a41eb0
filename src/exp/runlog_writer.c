/* batches.csv: row formatting, append with one write per row (a failed write is cut back to
 * the last whole row), and resume after a kill. */
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
    if (isnan(v) || isinf(v)) snprintf(buf, n, "nan");
    else snprintf(buf, n, "%.9g", v);
}

void tmoe_runlog_row_dbl(tmoe_runlog_row *r, int col, double v) {
    TMOE_ASSERT(col >= 0 && col < TMOE_RL_NCOLS);
    fmt_dbl(r->cell[col], TMOE_RUNLOG_CELL, v);
}

void tmoe_runlog_row_ints(tmoe_runlog_row *r, int col, const int32_t *v, int n) {
    char *p = r->cell[col];
    size_t left = TMOE_RUNLOG_CELL;
    p[0] = '\0';
    for (int i = 0; i < n && left > 16; i++) {
        int k = snprintf(p, left, "%s%d", i ? ";" : "", (int)v[i]);
        p += k;
        left -= (size_t)k;
    }
}

void tmoe_runlog_row_dbls(tmoe_runlog_row *r, int col, const double *v, int n) {
    char *p = r->cell[col];
    size_t left = TMOE_RUNLOG_CELL;
    p[0] = '\0';
    for (int i = 0; i < n && left > 32; i++) {
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
        if ((c && line_put(w, ",", 1)) || line_put(w, tmoe_runlog_cols[c].name, strlen(tmoe_runlog_cols[c].name)))
            return tmoe_errorf(err, TMOE_ENOMEM, "out of memory");
    if (line_put(w, "\n", 1)) return tmoe_errorf(err, TMOE_ENOMEM, "out of memory");
    return line_flush(w, "the header", err);
}

/* Split one CSV line (no newline) into at most max fields, RFC 4180 quoting; returns the
 * field count. Fields are written into buf (NUL-separated), pointers into fields[]. */
int tmoe_runlog_split(const char *line, char *buf, char **fields, int max) {
    int n = 0;
    const char *p = line;
    char *o = buf;
    for (;;) {
        if (n == max) return max + 1;
        fields[n++] = o;
        if (*p == '"') {
            p++;
            while (*p) {
                if (*p == '"' && p[1] == '"') {
                    *o++ = '"';
                    p += 2;
                } else if (*p == '"') {
                    p++;
                    break;
                } else {
                    *o++ = *p++;
                }
            }
        }
        while (*p && *p != ',') *o++ = *p++;
        *o++ = '\0';
        if (*p != ',') break;
        p++;
    }
    return n;
}

static int find_done(tmoe_runlog_done *d, int n, int repeat, const char *wl, const char *st) {
    for (int i = 0; i < n; i++)
        if (d[i].repeat == repeat && !strcmp(d[i].workload, wl) && !strcmp(d[i].strategy, st))
            return i;
    return -1;
}

/* Read an existing file: check the header, collect the combinations of its whole lines
 * and truncate a torn last line. */
static int scan_existing(const char *path, tmoe_runlog_done **done, int *ndone, long *rows,
                         tmoe_error *err) {
    FILE *f = tmoe_file_open_read(path, 0, NULL, err);
    if (!f) return tmoe_error_prefix(err, TMOE_EIO, "cannot resume");
    char *line = NULL, *buf = NULL;
    size_t cap = 0;
    ssize_t len;
    long lineno = 0, good_end = 0;
    int rc = TMOE_OK, cap_done = 0;
    *done = NULL;
    *ndone = 0;
    *rows = 0;
    char *fields[TMOE_RL_NCOLS + 1];
    while ((len = getline(&line, &cap, f)) > 0) {
        lineno++;
        if (line[len - 1] != '\n') break; /* torn last line: dropped */
        line[len - 1] = '\0';
        char *nb = realloc(buf, (size_t)len + 1);
        if (!nb) {
            rc = tmoe_errorf(err, TMOE_ENOMEM, "out of memory reading %s", path);
            break;
        }
        buf = nb;
        int nf = tmoe_runlog_split(line, buf, fields, TMOE_RL_NCOLS);
        if (lineno == 1) {
            int ok = nf == TMOE_RL_NCOLS;
            for (int c = 0; ok && c < TMOE_RL_NCOLS; c++)
                ok = strcmp(fields[c], tmoe_runlog_cols[c].name) == 0;
            if (!ok) {
                rc = tmoe_errorf(err, TMOE_EFORMAT,
                                 "%s:1: header is not the batches.csv header of this thermoe "
                                 "version; cannot resume into it",
                                 path);
                break;
            }
        } else {
            if (nf != TMOE_RL_NCOLS) {
                rc = tmoe_errorf(err, TMOE_EFORMAT, "%s:%ld: %d fields, expected %d", path,
                                 lineno, nf, TMOE_RL_NCOLS);
                break;
            }
            int rep = atoi(fields[TMOE_RL_REPEAT]);
            const char *wl = fields[TMOE_RL_WORKLOAD], *st = fields[TMOE_RL_STRATEGY];
            int i = find_done(*done, *ndone, rep, wl, st);
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
                snprintf(d->strategy, sizeof d->strategy, "%s", st);
            }
            (*done)[i].rows++;
            (*rows)++;
        }
        good_end = ftell(f);
    }
    free(line);
    free(buf);
    fclose(f);
    if (rc == TMOE_OK && lineno == 0)
        rc = tmoe_errorf(err, TMOE_EFORMAT, "%s is empty: nothing to resume", path);
    if (rc == TMOE_OK && truncate(path, good_end) != 0)
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
    free(w->line);
    free(w);
}

/* Open path for appending at its end (which is its last whole row). */
static int open_append(tmoe_runlog_writer *w, tmoe_error *err) {
    w->fd = open(w->path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (w->fd < 0) return tmoe_errorf(err, TMOE_EIO, "cannot append to %s: %s", w->path, strerror(errno));
    struct stat st;
    if (fstat(w->fd, &st) != 0) return tmoe_errorf(err, TMOE_EIO, "%s: cannot stat: %s", w->path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return tmoe_errorf(err, TMOE_EINVAL, "%s: not a regular file; cannot append rows to it", w->path);
    w->good_size = st.st_size;
    return TMOE_OK;
}

int tmoe_runlog_open(const char *path, int resume, tmoe_runlog_writer **out,
                     tmoe_runlog_done **done, int *ndone, tmoe_error *err) {
    *out = NULL;
    if (done) *done = NULL;
    if (ndone) *ndone = 0;
    tmoe_runlog_writer *w = tmoe_calloc(1, sizeof *w, err);
    if (!w) return TMOE_ENOMEM;
    w->fd = -1;
    w->path = strdup(path);
    if (!w->path) {
        free(w);
        return tmoe_errorf(err, TMOE_ENOMEM, "out of memory");
    }
    int rc = TMOE_OK;
    if (resume) {
        tmoe_runlog_done *d = NULL;
        int nd = 0;
        rc = scan_existing(path, &d, &nd, &w->rows, err);
        if (rc == TMOE_OK) rc = open_append(w, err);
        if (done) *done = d;
        else free(d);
        if (ndone) *ndone = nd;
    } else {
        rc = tmoe_file_check_writable(path, err);
        if (rc == TMOE_OK) {
            w->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
            if (w->fd < 0) rc = tmoe_errorf(err, TMOE_EIO, "cannot create %s: %s", path, strerror(errno));
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
    FILE *in = tmoe_file_open_read(w->path, 0, NULL, err);
    if (!in) return tmoe_error_prefix(err, TMOE_EIO, "cannot rewrite");
    int rc = tmoe_atomic_open(&af, w->path, err);
    if (rc) {
        fclose(in);
        return rc;
    }
    char *line = NULL, *buf = NULL, *fields[TMOE_RL_NCOLS + 1];
    size_t cap = 0;
    ssize_t len;
    long lineno = 0, rows = 0;
    while ((len = getline(&line, &cap, in)) > 0) {
        lineno++;
        int keepit = lineno == 1;
        if (!keepit) {
            char *nb = realloc(buf, (size_t)len + 1);
            if (!nb) {
                rc = tmoe_errorf(err, TMOE_ENOMEM, "out of memory");
                break;
            }
            buf = nb;
            char *copy = strdup(line);
            if (!copy) {
                rc = tmoe_errorf(err, TMOE_ENOMEM, "out of memory");
                break;
            }
            copy[strcspn(copy, "\n")] = '\0';
            tmoe_runlog_split(copy, buf, fields, TMOE_RL_NCOLS);
            keepit = find_done((tmoe_runlog_done *)keep, nkeep, atoi(fields[TMOE_RL_REPEAT]),
                               fields[TMOE_RL_WORKLOAD], fields[TMOE_RL_STRATEGY]) >= 0;
            free(copy);
            rows += keepit;
        }
        if (keepit && fputs(line, af.f) < 0) break; /* the commit reports the write error */
    }
    if (rc == TMOE_OK && ferror(in))
        rc = tmoe_errorf(err, TMOE_EIO, "cannot read %s: %s", w->path, strerror(errno));
    free(line);
    free(buf);
    fclose(in);
    if (rc) {
        tmoe_atomic_abort(&af);
        return rc;
    }
    if ((rc = tmoe_atomic_commit(&af, err))) return tmoe_error_prefix(err, rc, "rewriting the rows to keep");
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
    if (line_put(w, "\n", 1)) return tmoe_errorf(err, TMOE_ENOMEM, "out of memory formatting row %ld", w->rows + 1);
    char what[48];
    snprintf(what, sizeof what, "row %ld", w->rows + 1);
    int rc = line_flush(w, what, err);
    if (rc) return rc;
    w->rows++;
    return TMOE_OK;
}

long tmoe_runlog_rows(const tmoe_runlog_writer *w) { return w->rows; }

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
