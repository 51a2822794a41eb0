/* batches.csv: row formatting, append with a flush per row, and resume after a kill. */
#include "thermoe/exp.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
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

struct tmoe_runlog_writer {
    FILE *f;
    char *path;
    long rows;
};

static int write_header(FILE *f) {
    for (int c = 0; c < TMOE_RL_NCOLS; c++)
        if (fprintf(f, "%s%s", c ? "," : "", tmoe_runlog_cols[c].name) < 0) return -1;
    return fputc('\n', f) == EOF ? -1 : 0;
}

static int write_cell(FILE *f, const char *s) {
    if (!strpbrk(s, ",\"\n\r")) return fputs(s, f) < 0 ? -1 : 0;
    if (fputc('"', f) == EOF) return -1;
    for (; *s; s++) {
        if (*s == '"' && fputc('"', f) == EOF) return -1;
        if (fputc(*s, f) == EOF) return -1;
    }
    return fputc('"', f) == EOF ? -1 : 0;
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
    FILE *f = fopen(path, "r");
    if (!f) return tmoe_errorf(err, TMOE_EIO, "cannot read %s to resume: %s", path, strerror(errno));
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

int tmoe_runlog_open(const char *path, int resume, tmoe_runlog_writer **out,
                     tmoe_runlog_done **done, int *ndone, tmoe_error *err) {
    *out = NULL;
    if (done) *done = NULL;
    if (ndone) *ndone = 0;
    tmoe_runlog_writer *w = tmoe_calloc(1, sizeof *w, err);
    if (!w) return TMOE_ENOMEM;
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
        if (rc == TMOE_OK) {
            w->f = fopen(path, "a");
            if (!w->f) rc = tmoe_errorf(err, TMOE_EIO, "cannot append to %s: %s", path, strerror(errno));
        }
        if (done) *done = d;
        else free(d);
        if (ndone) *ndone = nd;
    } else {
        w->f = fopen(path, "w");
        if (!w->f)
            rc = tmoe_errorf(err, TMOE_EIO, "cannot create %s: %s", path, strerror(errno));
        else if (write_header(w->f) || fflush(w->f))
            rc = tmoe_errorf(err, TMOE_EIO, "cannot write %s: %s", path, strerror(errno));
    }
    if (rc) {
        if (done) {
            free(*done);
            *done = NULL;
        }
        if (w->f) fclose(w->f);
        free(w->path);
        free(w);
        return rc;
    }
    *out = w;
    return TMOE_OK;
}

int tmoe_runlog_drop(tmoe_runlog_writer *w, const tmoe_runlog_done *keep, int nkeep,
                     tmoe_error *err) {
    if (fclose(w->f)) {
        w->f = NULL;
        return tmoe_errorf(err, TMOE_EIO, "cannot write %s: %s", w->path, strerror(errno));
    }
    w->f = NULL;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", w->path);
    FILE *in = fopen(w->path, "r"), *out = fopen(tmp, "w");
    int rc = TMOE_OK;
    if (!in || !out) {
        rc = tmoe_errorf(err, TMOE_EIO, "cannot rewrite %s: %s", w->path, strerror(errno));
        goto done;
    }
    char *line = NULL, *buf = NULL, *fields[TMOE_RL_NCOLS + 1];
    size_t cap = 0;
    ssize_t len;
    long lineno = 0;
    w->rows = 0;
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
            w->rows += keepit;
        }
        if (keepit && fputs(line, out) < 0) {
            rc = tmoe_errorf(err, TMOE_EIO, "cannot write %s: %s", tmp, strerror(errno));
            break;
        }
    }
    free(line);
    free(buf);
done:
    if (in) fclose(in);
    if (out && fclose(out) && rc == TMOE_OK)
        rc = tmoe_errorf(err, TMOE_EIO, "cannot write %s: %s", tmp, strerror(errno));
    if (rc == TMOE_OK && rename(tmp, w->path) != 0)
        rc = tmoe_errorf(err, TMOE_EIO, "cannot replace %s: %s", w->path, strerror(errno));
    if (rc) {
        unlink(tmp);
        return rc;
    }
    w->f = fopen(w->path, "a");
    if (!w->f) return tmoe_errorf(err, TMOE_EIO, "cannot append to %s: %s", w->path, strerror(errno));
    return TMOE_OK;
}

int tmoe_runlog_write(tmoe_runlog_writer *w, const tmoe_runlog_row *r, tmoe_error *err) {
    TMOE_ASSERT(w && w->f);
    errno = 0;
    for (int c = 0; c < TMOE_RL_NCOLS; c++) {
        if (c && fputc(',', w->f) == EOF) goto fail;
        if (write_cell(w->f, r->cell[c])) goto fail;
    }
    if (fputc('\n', w->f) == EOF || fflush(w->f)) goto fail;
    w->rows++;
    return TMOE_OK;
fail:
    return tmoe_errorf(err, TMOE_EIO, "cannot write row %ld to %s: %s (rows written before are kept)",
                       w->rows + 1, w->path, errno ? strerror(errno) : "write failed");
}

long tmoe_runlog_rows(const tmoe_runlog_writer *w) { return w->rows; }

int tmoe_runlog_close(tmoe_runlog_writer *w, tmoe_error *err) {
    if (!w) return TMOE_OK;
    int rc = TMOE_OK;
    if (w->f && fclose(w->f))
        rc = tmoe_errorf(err, TMOE_EIO, "cannot close %s: %s", w->path, strerror(errno));
    free(w->path);
    free(w);
    return rc;
}
