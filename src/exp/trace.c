/* Chrome trace-event JSON writer. Events are streamed as a JSON array; the closing ']' is
 * written on close, and the format lets a viewer open a file whose ']' is missing (a run
 * that was killed). */
#include "thermoe/exp.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct tmoe_trace {
    FILE *f;
    int n;
    int failed;
    char *path;
};

int tmoe_trace_open(const char *path, tmoe_trace **out, tmoe_error *err) {
    *out = NULL;
    int rc0 = tmoe_file_check_writable(path, err); /* never open a FIFO or device to write */
    if (rc0) return rc0;
    tmoe_trace *t = tmoe_calloc(1, sizeof *t, err);
    if (!t) return TMOE_ENOMEM;
    t->f = fopen(path, "w");
    t->path = strdup(path);
    if (!t->f || !t->path) {
        int rc = tmoe_errorf(err, TMOE_EIO, "cannot create trace %s: %s", path, strerror(errno));
        if (t->f) fclose(t->f);
        free(t->path);
        free(t);
        return rc;
    }
    if (fputs("[\n", t->f) < 0) t->failed = errno ? errno : EIO;
    *out = t;
    return TMOE_OK;
}

/* JSON string escaping for names (kernel names can hold quotes, backslashes). */
static void put_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void sep(tmoe_trace *t) {
    if (t->n++) fputs(",\n", t->f);
}

static void check(tmoe_trace *t) {
    if (ferror(t->f) && !t->failed) t->failed = errno ? errno : EIO;
}

void tmoe_trace_span(tmoe_trace *t, const char *name, const char *cat, int pid, int tid,
                     double ts_us, double dur_us, const char *args_json) {
    if (!t) return;
    sep(t);
    fputs("{\"ph\":\"X\",\"name\":", t->f);
    put_str(t->f, name);
    fputs(",\"cat\":", t->f);
    put_str(t->f, cat);
    fprintf(t->f, ",\"pid\":%d,\"tid\":%d,\"ts\":%.3f,\"dur\":%.3f", pid, tid, ts_us,
            dur_us > 0 ? dur_us : 0.0);
    if (args_json) fprintf(t->f, ",\"args\":%s", args_json);
    fputc('}', t->f);
    check(t);
}

void tmoe_trace_counter(tmoe_trace *t, const char *name, int pid, double ts_us, const char *series,
                        double value) {
    if (!t || isnan(value)) return; /* unknown values are left out, never written as 0 */
    sep(t);
    fputs("{\"ph\":\"C\",\"name\":", t->f);
    put_str(t->f, name);
    fprintf(t->f, ",\"pid\":%d,\"ts\":%.3f,\"args\":{", pid, ts_us);
    put_str(t->f, series);
    fprintf(t->f, ":%.6g}}", value);
    check(t);
}

void tmoe_trace_name(tmoe_trace *t, int pid, int tid, const char *name) {
    if (!t) return;
    sep(t);
    fprintf(t->f, "{\"ph\":\"M\",\"name\":\"%s\",\"pid\":%d,\"tid\":%d,\"args\":{\"name\":",
            tid < 0 ? "process_name" : "thread_name", pid, tid < 0 ? 0 : tid);
    put_str(t->f, name);
    fputs("}}", t->f);
    check(t);
}

int tmoe_trace_close(tmoe_trace *t, tmoe_error *err) {
    if (!t) return TMOE_OK;
    fputs("\n]\n", t->f);
    check(t);
    int rc = TMOE_OK;
    if (fclose(t->f) && !t->failed) t->failed = errno ? errno : EIO;
    if (t->failed)
        rc = tmoe_errorf(err, TMOE_EIO, "cannot write trace %s: %s", t->path, strerror(t->failed));
    free(t->path);
    free(t);
    return rc;
}
