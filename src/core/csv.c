/* The RFC 4180 record reader that every CSV reader in thermoe goes through (run logs,
 * batches.csv on resume, Nsight Compute exports): quoted fields with commas, newlines and
 * doubled quotes, CRLF, line numbers that count quoted newlines, a last line without a
 * newline, and an unclosed quote reported with the line it opened on. */
#include "thermoe/core.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

void tmoe_csv_init(tmoe_csv *c, const char *data, size_t len) {
    memset(c, 0, sizeof *c);
    c->data = data ? data : "";
    c->len = data ? len : 0;
    c->next_line = 1;
}

int tmoe_csv_open_file(tmoe_csv *c, const char *path, size_t max_bytes, tmoe_error *err) {
    tmoe_error local;
    if (!err) err = &local; /* the code of a failed read is in it */
    tmoe_csv_init(c, NULL, 0);
    size_t len = 0;
    char *text = tmoe_file_read_all(path, max_bytes, &len, err);
    if (!text) return err->code;
    tmoe_csv_init(c, text, len);
    c->owned = text;
    return TMOE_OK;
}

void tmoe_csv_free(tmoe_csv *c) {
    if (!c) return;
    free(c->buf);
    free(c->off);
    free(c->owned);
    c->buf = c->owned = NULL;
    c->off = NULL;
    c->bcap = c->blen = 0;
    c->ocap = c->nfields = 0;
    c->data = "";
    c->len = c->pos = 0;
}

const char *tmoe_csv_field(const tmoe_csv *c, int i) {
    TMOE_ASSERT(i >= 0 && i < c->nfields);
    return c->buf + c->off[i];
}

const char *tmoe_csv_peek(const tmoe_csv *c, size_t *n) {
    *n = c->len - c->pos;
    return c->data + c->pos;
}

void tmoe_csv_skip_line(tmoe_csv *c) {
    const char *nl = memchr(c->data + c->pos, '\n', c->len - c->pos);
    if (!nl) {
        c->pos = c->len;
        return;
    }
    c->pos = (size_t)(nl - c->data) + 1;
    if (c->next_line < INT_MAX) c->next_line++;
}

static int put_byte(tmoe_csv *c, char ch) {
    if (c->blen + 1 > c->bcap) {
        size_t nc = c->bcap ? c->bcap * 2 : 256;
        char *q = realloc(c->buf, nc);
        if (!q) return -1;
        c->buf = q;
        c->bcap = nc;
    }
    c->buf[c->blen++] = ch;
    return 0;
}

static int new_field(tmoe_csv *c) {
    if (c->nfields + 1 > c->ocap) {
        int nc = c->ocap ? c->ocap * 2 : 16;
        size_t *q = realloc(c->off, (size_t)nc * sizeof *q);
        if (!q) return -1;
        c->off = q;
        c->ocap = nc;
    }
    c->off[c->nfields++] = c->blen;
    return 0;
}

/* End the reading after an error: no record, nothing more to read. */
static int fail(tmoe_csv *c, int code) {
    c->nfields = 0;
    c->pos = c->len;
    return code;
}

int tmoe_csv_next(tmoe_csv *c, tmoe_error *err) {
    const char *s = c->data;
    size_t len = c->len, i = c->pos;
    c->nfields = 0;
    c->blen = 0;
    c->terminated = 0;
    c->unclosed = 0;
    c->line = c->next_line;
    c->begin = c->end = i;
    if (i >= len) return TMOE_OK;
    if (new_field(c)) goto nomem;
    int inq = 0, at_start = 1;
    while (i < len) {
        if (c->max_record_bytes && i - c->begin >= c->max_record_bytes)
            return fail(c, tmoe_errorf(err, TMOE_EFORMAT, "line %d: record longer than %zu bytes",
                                       c->line, c->max_record_bytes));
        char ch = s[i];
        if (ch == '\n') {
            if (c->next_line == INT_MAX)
                return fail(c, tmoe_errorf(err, TMOE_EFORMAT,
                                           "line %d: more than %d lines in the input", c->line,
                                           INT_MAX));
            c->next_line++;
        }
        if (inq) {
            if (ch == '"') {
                if (i + 1 < len && s[i + 1] == '"') {
                    if (put_byte(c, '"')) goto nomem;
                    i += 2;
                    continue;
                }
                inq = 0;
                i++;
                continue;
            }
            if (put_byte(c, ch)) goto nomem;
            i++;
            continue;
        }
        if (ch == '"' && at_start) {
            inq = 1;
            at_start = 0;
            i++;
            continue;
        }
        if (ch == ',') {
            if (c->max_fields && c->nfields >= c->max_fields)
                return fail(c, tmoe_errorf(err, TMOE_EFORMAT, "line %d: more than %d fields",
                                           c->line, c->max_fields));
            if (put_byte(c, '\0') || new_field(c)) goto nomem;
            at_start = 1;
            i++;
            continue;
        }
        if (ch == '\r' && i + 1 < len && s[i + 1] == '\n') {
            i++;
            continue;
        }
        if (ch == '\n') {
            c->terminated = 1;
            i++;
            break;
        }
        if (put_byte(c, ch)) goto nomem;
        at_start = 0;
        i++;
    }
    if (c->max_record_bytes && i - c->begin > c->max_record_bytes) /* a "" at the limit */
        return fail(c, tmoe_errorf(err, TMOE_EFORMAT, "line %d: record longer than %zu bytes",
                                   c->line, c->max_record_bytes));
    if (put_byte(c, '\0')) goto nomem;
    c->pos = c->end = i;
    if (inq) {
        c->unclosed = 1;
        return tmoe_errorf(err, TMOE_EFORMAT,
                           "line %d: quoted field not closed before the end of the input", c->line);
    }
    return TMOE_OK;
nomem:
    return fail(c, tmoe_errorf(err, TMOE_ENOMEM,
                               "line %d: out of memory reading a record of %zu bytes", c->line,
                               c->blen));
}
