/* Chrome trace-event JSON writer. Events are streamed as a JSON array; the closing ']' is
 * written on close, and the format lets a viewer open a file whose ']' is missing (a run
 * that was killed).
 *
 * A path ending in ".gz" is written gzip-compressed (zlib, when the build found it): a whole
 * run's counters are ~100 bytes an event and compress ~10x, and Perfetto, chrome://tracing
 * and Python's gzip module all read .json.gz directly. tmoe_trace_sync flushes the
 * compressor to a byte boundary, so a killed run's .gz still decompresses (zcat, with a
 * warning about the missing trailer) up to its last sync. */
#include "thermoe/exp.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef THERMOE_HAVE_ZLIB
#include <zlib.h>
#endif

struct tmoe_trace {
    FILE *f;
#ifdef THERMOE_HAVE_ZLIB
    gzFile gz;
#endif
    int n;
    int failed;
    char *path;
    char buf[1024]; /* one event, written to the file when it is complete */
    size_t len;
};

const char *tmoe_trace_ext(void) {
#ifdef THERMOE_HAVE_ZLIB
    return ".json.gz";
#else
    return ".json";
#endif
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* Write the buffered bytes to the file (plain or gzip). */
static void drain(tmoe_trace *t) {
    if (!t->len) return;
#ifdef THERMOE_HAVE_ZLIB
    if (t->gz) {
        if (gzwrite(t->gz, t->buf, (unsigned)t->len) != (int)t->len && !t->failed) {
            int zerr = 0;
            gzerror(t->gz, &zerr);
            t->failed = zerr == Z_ERRNO && errno ? errno : EIO;
        }
        t->len = 0;
        return;
    }
#endif
    if (fwrite(t->buf, 1, t->len, t->f) != t->len && !t->failed) t->failed = errno ? errno : EIO;
    t->len = 0;
}

static void put(tmoe_trace *t, const char *s, size_t n) {
    while (n) {
        if (t->len == sizeof t->buf) drain(t);
        size_t k = sizeof t->buf - t->len < n ? sizeof t->buf - t->len : n;
        memcpy(t->buf + t->len, s, k);
        t->len += k;
        s += k;
        n -= k;
    }
}

static void puts_(tmoe_trace *t, const char *s) {
    put(t, s, strlen(s));
}

__attribute__((format(printf, 2, 3))) static void putf(tmoe_trace *t, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k > 0) put(t, tmp, (size_t)k < sizeof tmp ? (size_t)k : sizeof tmp - 1);
}

int tmoe_trace_open(const char *path, tmoe_trace **out, tmoe_error *err) {
    *out = NULL;
    int rc0 = tmoe_file_check_writable(path, err); /* never open a FIFO or device to write */
    if (rc0) return rc0;
    int gz = ends_with(path, ".gz");
#ifndef THERMOE_HAVE_ZLIB
    if (gz)
        return tmoe_errorf(err, TMOE_EINVAL,
                           "trace %s: a .gz trace needs zlib, which this build did not find "
                           "(install zlib1g-dev and reconfigure, or name it .json)",
                           path);
#endif
    tmoe_trace *t = tmoe_calloc(1, sizeof *t, err);
    if (!t) return TMOE_ENOMEM;
    t->path = strdup(path);
    int opened = 0;
#ifdef THERMOE_HAVE_ZLIB
    if (gz) {
        errno = 0;
        t->gz = gzopen(path, "wb6");
        opened = t->gz != NULL;
    }
#endif
    if (!gz) {
        t->f = fopen(path, "w");
        opened = t->f != NULL;
    }
    if (!opened || !t->path) {
        int rc = tmoe_errorf(err, TMOE_EIO, "cannot create trace %s: %s", path,
                             errno ? strerror(errno) : "out of memory");
        if (t->f) fclose(t->f);
#ifdef THERMOE_HAVE_ZLIB
        if (t->gz) gzclose(t->gz);
#endif
        free(t->path);
        free(t);
        return rc;
    }
    puts_(t, "[\n");
    *out = t;
    return TMOE_OK;
}

/* JSON string escaping for names (kernel names can hold quotes, backslashes). */
static void put_str(tmoe_trace *t, const char *s) {
    put(t, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            put(t, e, 2);
        } else if (c < 0x20) {
            putf(t, "\\u%04x", c);
        } else {
            put(t, (const char *)&c, 1);
        }
    }
    put(t, "\"", 1);
}

static void sep(tmoe_trace *t) {
    if (t->n++) puts_(t, ",\n");
}

void tmoe_trace_span(tmoe_trace *t, const char *name, const char *cat, int pid, int tid,
                     double ts_us, double dur_us, const char *args_json) {
    if (!t) return;
    sep(t);
    puts_(t, "{\"ph\":\"X\",\"name\":");
    put_str(t, name);
    puts_(t, ",\"cat\":");
    put_str(t, cat);
    putf(t, ",\"pid\":%d,\"tid\":%d,\"ts\":%.3f,\"dur\":%.3f", pid, tid, ts_us,
         dur_us > 0 ? dur_us : 0.0);
    if (args_json) {
        puts_(t, ",\"args\":");
        puts_(t, args_json);
    }
    put(t, "}", 1);
}

void tmoe_trace_counter(tmoe_trace *t, const char *name, int pid, double ts_us, const char *series,
                        double value) {
    if (!t || isnan(value)) return; /* unknown values are left out, never written as 0 */
    sep(t);
    puts_(t, "{\"ph\":\"C\",\"name\":");
    put_str(t, name);
    putf(t, ",\"pid\":%d,\"ts\":%.3f,\"args\":{", pid, ts_us);
    put_str(t, series);
    putf(t, ":%.6g}}", value);
}

void tmoe_trace_name(tmoe_trace *t, int pid, int tid, const char *name) {
    if (!t) return;
    sep(t);
    putf(t, "{\"ph\":\"M\",\"name\":\"%s\",\"pid\":%d,\"tid\":%d,\"args\":{\"name\":",
         tid < 0 ? "process_name" : "thread_name", pid, tid < 0 ? 0 : tid);
    put_str(t, name);
    puts_(t, "}}");
}

void tmoe_trace_sync(tmoe_trace *t) {
    if (!t) return;
    drain(t);
#ifdef THERMOE_HAVE_ZLIB
    if (t->gz) {
        if (gzflush(t->gz, Z_SYNC_FLUSH) != Z_OK && !t->failed) t->failed = errno ? errno : EIO;
        return;
    }
#endif
    if (fflush(t->f) && !t->failed) t->failed = errno ? errno : EIO;
}

int tmoe_trace_close(tmoe_trace *t, tmoe_error *err) {
    if (!t) return TMOE_OK;
    puts_(t, "\n]\n");
    drain(t);
#ifdef THERMOE_HAVE_ZLIB
    if (t->gz) {
        int zrc = gzclose(t->gz);
        if (zrc != Z_OK && !t->failed) t->failed = zrc == Z_ERRNO && errno ? errno : EIO;
    }
#endif
    if (t->f) {
        if (ferror(t->f) && !t->failed) t->failed = errno ? errno : EIO;
        if (fclose(t->f) && !t->failed) t->failed = errno ? errno : EIO;
    }
    int rc = TMOE_OK;
    if (t->failed)
        rc = tmoe_errorf(err, TMOE_EIO, "cannot write trace %s: %s", t->path, strerror(t->failed));
    free(t->path);
    free(t);
    return rc;
}
