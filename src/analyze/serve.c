/* Serving replays in thermoe analyze (docs/serve.md, docs/analysis.md): read the run
 * directories `thermoe serve` writes (summary.json with schema thermoe.serve/1,
 * requests.csv, timeline.csv), and their table in report.html. The figures are drawn by
 * figures.c with the other figures. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "analyze/internal.h"

#define SERVE_SCHEMA "thermoe.serve/1"

int serve_is_run(const char *dir) {
    char path[4096];
    join_path(path, sizeof path, dir, "summary.json");
    if (access(path, R_OK) != 0) return 0;
    json_error_t je;
    json_t *o = json_load_file(path, 0, &je);
    const char *sc = json_string_value(json_object_get(o, "schema"));
    int yes = sc && strcmp(sc, SERVE_SCHEMA) == 0;
    json_decref(o);
    return yes;
}

static int add_problem(serve_set *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int add_problem(serve_set *s, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char **q = realloc(s->problems, sizeof *q * (size_t)(s->nproblems + 1));
    char *d = strdup(buf);
    if (!q || !d) {
        free(d);
        if (q) s->problems = q;
        return TMOE_ENOMEM;
    }
    s->problems = q;
    s->problems[s->nproblems++] = d;
    tmoe_log(TMOE_LOG_WARN, "%s", buf);
    return TMOE_OK;
}

/* A CSV file of numbers with a header: the columns named in want[0..nw) into cols[k]
 * (arrays of *n rows, malloc'd). Cells must be numbers ("nan" for unknown where nan_ok[k]).
 * On a bad file the message names file:line and the column. */
static int read_csv(const char *path, const char *const *want, const int *nan_ok, int nw,
                    double **cols, int *n, char *msg, size_t msg_len) {
    FILE *f = fopen(path, "r");
    *n = 0;
    for (int k = 0; k < nw; k++) cols[k] = NULL;
    if (!f) {
        snprintf(msg, msg_len, "%s: cannot open", path);
        return TMOE_EIO;
    }
    char *line = NULL;
    size_t cap = 0;
    int idx[16], ncol = 0, rc = TMOE_OK, rows_cap = 0;
    long ln = 0;
    for (int k = 0; k < nw; k++) idx[k] = -1;
    while (getline(&line, &cap, f) > 0 && !rc) {
        ln++;
        line[strcspn(line, "\r\n")] = '\0';
        if (ln == 1) {
            char *save = NULL;
            for (char *t = strtok_r(line, ",", &save); t; t = strtok_r(NULL, ",", &save), ncol++)
                for (int k = 0; k < nw; k++)
                    if (strcmp(t, want[k]) == 0) idx[k] = ncol;
            for (int k = 0; k < nw && !rc; k++)
                if (idx[k] < 0) {
                    snprintf(msg, msg_len, "%s:1: expected a column '%s' in the header", path,
                             want[k]);
                    rc = TMOE_EFORMAT;
                }
            continue;
        }
        if (!line[0]) continue;
        if (*n == rows_cap) {
            rows_cap = rows_cap ? 2 * rows_cap : 256;
            for (int k = 0; k < nw && !rc; k++) {
                double *c = realloc(cols[k], sizeof *c * (size_t)rows_cap);
                if (!c) {
                    snprintf(msg, msg_len, "%s: out of memory", path);
                    rc = TMOE_ENOMEM;
                } else
                    cols[k] = c;
            }
            if (rc) break;
        }
        char *p = line;
        for (int c = 0; c < ncol && !rc; c++) {
            char *end = p + strcspn(p, ",");
            int last = *end == '\0';
            *end = '\0';
            for (int k = 0; k < nw; k++) {
                if (idx[k] != c) continue;
                char *e;
                double v = strtod(p, &e);
                if (e == p || *e || isinf(v) || (isnan(v) && !nan_ok[k])) {
                    snprintf(msg, msg_len, "%s:%ld: %s: expected a number%s, got '%.40s'", path, ln,
                             want[k], nan_ok[k] ? " or nan" : "", p);
                    rc = TMOE_EFORMAT;
                }
                cols[k][*n] = v;
            }
            if (last && c + 1 < ncol) {
                snprintf(msg, msg_len, "%s:%ld: expected %d fields, got %d", path, ln, ncol, c + 1);
                rc = TMOE_EFORMAT;
            }
            p = end + 1;
        }
        if (!rc) (*n)++;
    }
    free(line);
    fclose(f);
    if (!rc && *n == 0) {
        snprintf(msg, msg_len, "%s: no rows", path);
        rc = TMOE_EFORMAT;
    }
    if (rc)
        for (int k = 0; k < nw; k++) {
            free(cols[k]);
            cols[k] = NULL;
        }
    return rc;
}

static double jnum(json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

static void run_free(serve_run *r) {
    free(r->dir);
    free(r->strategy);
    free(r->expert_type);
    free(r->trace);
    free(r->source);
    for (int k = 0; k < SERVE_REQ_NCOLS; k++) free(r->req[k]);
    for (int k = 0; k < SERVE_TL_NCOLS; k++) free(r->tl[k]);
}

int serve_add(serve_set *s, const char *dir, tmoe_error *err) {
    serve_run r;
    memset(&r, 0, sizeof r);
    char path[4096], msg[1200] = "";
    join_path(path, sizeof path, dir, "summary.json");
    json_error_t je;
    json_t *o = json_load_file(path, 0, &je);
    json_t *m = json_object_get(o, "metadata"), *w = json_object_get(o, "window");
    json_t *st = json_object_get(o, "steady_state");
    if (!json_is_object(m) || !json_is_object(w) || !json_is_object(st))
        snprintf(msg, sizeof msg, "%s: %s", path,
                 o ? "expected the objects metadata, window and steady_state" : je.text);
    const char *strat = json_string_value(json_object_get(m, "routing_strategy"));
    const char *trace = json_string_value(json_object_get(m, "trace"));
    const char *et = json_string_value(json_object_get(m, "expert_type"));
    const char *src = json_string_value(json_object_get(o, "source"));
    r.dir = strdup(dir);
    r.strategy = strdup(strat ? strat : "unknown");
    r.expert_type = strdup(et ? et : "fp16"); /* serve had no other type before the flag */
    r.trace = strdup(trace ? trace : "");
    r.source = strdup(src ? src : "unknown");
    r.steady = json_is_true(json_object_get(st, "detected"));
    r.win_start_s = jnum(w, "start_s");
    r.win_end_s = jnum(w, "end_s");
    static const char *const wk[SERVE_W_NCOLS] = {
        "ttft_p50_s",         "ttft_p99_s",    "tpot_p50_s",      "tpot_p99_s",
        "goodput_rps",        "goodput_share", "j_per_request",   "j_per_generated_token",
        "power_avg_w",        "power_peak_w",  "gpu_temp_peak_c", "mem_temp_peak_c",
        "gpu_above_target_s", "active_experts"};
    for (int k = 0; k < SERVE_W_NCOLS; k++) r.w[k] = jnum(w, wk[k]);
    r.slo_ttft_s = jnum(m, "slo_ttft_s");
    r.slo_tpot_s = jnum(m, "slo_tpot_s");
    json_decref(o);
    int rc = msg[0] ? TMOE_EFORMAT : TMOE_OK;
    if (!r.dir || !r.strategy || !r.expert_type || !r.trace || !r.source) rc = TMOE_ENOMEM;
    if (!rc) {
        /* an interrupted replay leaves the requests it had not finished at nan */
        static const char *const rq[SERVE_REQ_NCOLS] = {"arrival_s",     "ttft_s",   "tpot_s",
                                                        "prompt_tokens", "energy_j", "finish_s"};
        static const int rq_nan[SERVE_REQ_NCOLS] = {0, 1, 1, 0, 0, 1};
        join_path(path, sizeof path, dir, "requests.csv");
        rc = read_csv(path, rq, rq_nan, SERVE_REQ_NCOLS, r.req, &r.n, msg, sizeof msg);
    }
    if (!rc) {
        static const char *const tl[SERVE_TL_NCOLS] = {"t_start_s",          "t_end_s",
                                                       "arrival_rate_per_s", "power_avg_w",
                                                       "gpu_temp_c",         "mem_temp_c"};
        static const int tl_nan[SERVE_TL_NCOLS] = {0, 0, 0, 0, 1, 1};
        join_path(path, sizeof path, dir, "timeline.csv");
        rc = read_csv(path, tl, tl_nan, SERVE_TL_NCOLS, r.tl, &r.nbins, msg, sizeof msg);
    }
    if (rc == TMOE_ENOMEM) {
        run_free(&r);
        return tmoe_errorf(err, TMOE_ENOMEM, "%s: out of memory", dir);
    }
    if (rc) {
        run_free(&r);
        return add_problem(s, "%s (serve run skipped)", msg) ? tmoe_errorf(err, TMOE_ENOMEM, "oom")
                                                             : TMOE_OK;
    }
    serve_run *q = realloc(s->r, sizeof *q * (size_t)(s->n + 1));
    if (!q) {
        run_free(&r);
        return tmoe_errorf(err, TMOE_ENOMEM, "%s: out of memory", dir);
    }
    s->r = q;
    s->r[s->n++] = r;
    if (strcmp(r.source, "nvml") != 0) s->simulated = 1;
    return TMOE_OK;
}

void serve_set_free(serve_set *s) {
    for (int i = 0; i < s->n; i++) run_free(&s->r[i]);
    free(s->r);
    for (int i = 0; i < s->nproblems; i++) free(s->problems[i]);
    free(s->problems);
    memset(s, 0, sizeof *s);
}

/* strategy, or strategy@type where the set holds several expert types, into buf */
static const char *base_label(const serve_set *s, int i, char *buf, size_t n) {
    for (int j = 0; j < s->n; j++)
        if (strcmp(s->r[j].expert_type, s->r[i].expert_type) != 0) {
            snprintf(buf, n, "%s@%s", s->r[i].strategy, s->r[i].expert_type);
            return buf;
        }
    return s->r[i].strategy;
}

const char *serve_label(const serve_set *s, int i, char *buf, size_t n) {
    char bi[200], bj[200];
    const char *li = base_label(s, i, bi, sizeof bi);
    int dup = 0;
    for (int j = 0; j < s->n; j++)
        dup += j != i && strcmp(base_label(s, j, bj, sizeof bj), li) == 0;
    const char *base = strrchr(s->r[i].dir, '/');
    base = base && base[1] ? base + 1 : s->r[i].dir;
    if (dup)
        snprintf(buf, n, "%s (%s)", li, base);
    else
        snprintf(buf, n, "%s", li);
    return buf;
}

static void cell(FILE *f, double v, const char *fmt, double scale) {
    fputs("<td>", f);
    if (isfinite(v))
        fprintf(f, fmt, v * scale);
    else
        fputs("nan", f);
    fputs("</td>", f);
}

void serve_html(const serve_set *s, FILE *f) {
    fputs("<table><caption>Serving replays: each run's figures over its steady-state window "
          "(or over the whole run where none was detected)</caption>\n<tr><th>run</th>"
          "<th>trace</th><th>window (s)</th><th>TTFT p50 / p99 (ms)</th><th>TPOT p50 / p99 "
          "(ms)</th><th>goodput (req/s, share)</th><th>J per request</th><th>J per generated "
          "token</th><th>power avg / peak (W)</th><th>GPU / HBM peak (C)</th><th>GPU above "
          "target (s)</th><th>experts a layer step</th><th>source</th></tr>\n",
          f);
    for (int i = 0; i < s->n; i++) {
        const serve_run *r = &s->r[i];
        char b[300];
        fputs("<tr><td class=l>", f);
        put_html(f, serve_label(s, i, b, sizeof b));
        fputs("<br><span class=note>", f);
        put_html(f, r->dir);
        fputs("</span></td><td class=l>", f);
        put_html(f, r->trace);
        fprintf(f, "</td><td>%.1f..%.1f%s</td>", r->win_start_s, r->win_end_s,
                r->steady ? "" : " <b>whole run: no steady state</b>");
        fputs("<td>", f);
        fprintf(f, "%.3g / %.3g</td><td>%.3g / %.3g</td>", r->w[SERVE_W_TTFT_P50] * 1e3,
                r->w[SERVE_W_TTFT_P99] * 1e3, r->w[SERVE_W_TPOT_P50] * 1e3,
                r->w[SERVE_W_TPOT_P99] * 1e3);
        fprintf(f, "<td>%.3g, %.1f%%</td>", r->w[SERVE_W_GOODPUT], 100.0 * r->w[SERVE_W_GOODSHARE]);
        cell(f, r->w[SERVE_W_JPR], "%.4g", 1.0);
        cell(f, r->w[SERVE_W_JPT], "%.4g", 1.0);
        fprintf(f, "<td>%.1f / %.1f</td><td>%.1f / %.1f</td>", r->w[SERVE_W_POWER_AVG],
                r->w[SERVE_W_POWER_PEAK], r->w[SERVE_W_GPU_PEAK], r->w[SERVE_W_MEM_PEAK]);
        cell(f, r->w[SERVE_W_GPU_ABOVE], "%.2f", 1.0);
        cell(f, r->w[SERVE_W_ACTIVE], "%.2f", 1.0);
        fputs("<td>", f);
        put_html(f, r->source);
        fputs("</td></tr>\n", f);
    }
    fputs("</table>\n", f);
}
