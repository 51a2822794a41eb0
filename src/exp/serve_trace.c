/* Serving traces (docs/serve.md): Azure LLM inference CSV and Mooncake JSONL readers, and
 * a synthetic generator fitted to them; the time scale and length caps applied to each. */
#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "thermoe/exp.h"

tmoe_arrivals_opts tmoe_arrivals_opts_default(void) {
    return (tmoe_arrivals_opts){TMOE_ARR_AUTO, 0, 1.0, 1.0, 0, 0, 0.0};
}

void tmoe_arrivals_free(tmoe_arrivals *a) {
    if (!a) return;
    free(a->req);
    memset(a, 0, sizeof *a);
}

/* The scale and caps on one request's lengths. */
static void apply_caps(const tmoe_arrivals_opts *o, tmoe_arrival *q, int *capped) {
    double cs = o->context_scale > 0.0 ? o->context_scale : 1.0;
    long p = lround(q->trace_prompt * cs), g = lround(q->trace_gen * cs);
    if (p < 1) p = 1;
    if (g < 1) g = 1;
    if (o->max_context > 0 && p > o->max_context) p = o->max_context;
    if (o->max_generated > 0 && g > o->max_generated) g = o->max_generated;
    q->prompt = (int)p;
    q->gen = (int)g;
    if (q->prompt != q->trace_prompt || q->gen != q->trace_gen) (*capped)++;
}

static int push(tmoe_arrivals *a, int *cap, double t, int p, int g, tmoe_error *err) {
    if (a->n == *cap) {
        int nc = *cap ? 2 * *cap : 1024;
        tmoe_arrival *r = realloc(a->req, sizeof *r * (size_t)nc);
        if (!r) return tmoe_errorf(err, TMOE_ENOMEM, "trace: out of memory at %d requests", a->n);
        a->req = r;
        *cap = nc;
    }
    a->req[a->n++] = (tmoe_arrival){t, p, g, p, g};
    return TMOE_OK;
}

/* Days since 1970-01-01 of a proleptic Gregorian date. */
static long days_from_civil(long y, long m, long d) {
    y -= m <= 2;
    long era = (y >= 0 ? y : y - 399) / 400, yoe = y - era * 400;
    long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    return era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
}

/* "YYYY-MM-DD HH:MM:SS[.fraction]" -> days since 1970 and seconds of the day (apart, so
 * that the fraction keeps its precision); -1 when malformed. */
static int parse_azure_time(const char *s, long *days, double *out) {
    int n = 0;
    long y, mo, d, h, mi;
    if (sscanf(s, "%4ld-%2ld-%2ld %2ld:%2ld:%n", &y, &mo, &d, &h, &mi, &n) != 5 || n != 17)
        return -1;
    for (int i = 0; i < 17; i++) {
        int digit = i != 4 && i != 7 && i != 10 && i != 13 && i != 16;
        if (digit && !isdigit((unsigned char)s[i])) return -1;
    }
    const char *p = s + n;
    if (!isdigit((unsigned char)p[0]) || !isdigit((unsigned char)p[1])) return -1;
    char *end;
    double sec = strtod(p, &end);
    if (*end || end - p < 2 || (end - p > 2 && p[2] != '.')) return -1;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec >= 61.0) return -1;
    *days = days_from_civil(y, mo, d);
    *out = h * 3600.0 + mi * 60.0 + sec;
    return 0;
}

/* A length field: a whole number >= 1. */
static int parse_len(const char *path, long line, const char *field, const char *s, int *out,
                     tmoe_error *err) {
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end || v < 1 || v > 100000000)
        return tmoe_errorf(err, TMOE_EINVAL,
                           "%s:%ld: %s: expected a whole number of tokens >= 1, got '%s'", path,
                           line, field, s);
    *out = (int)v;
    return TMOE_OK;
}

static void chomp(char *s) {
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r')) s[--n] = 0;
}

static int check_order(const char *path, long line, const char *field, double t, double prev,
                       int have_prev, tmoe_error *err) {
    if (have_prev && t < prev)
        return tmoe_errorf(err, TMOE_EINVAL,
                           "%s:%ld: %s: %.6f s is before the previous request's %.6f s: "
                           "expected the trace sorted by time",
                           path, line, field, t, prev);
    return TMOE_OK;
}

static int read_azure(FILE *f, const char *path, int max, tmoe_arrivals *a, tmoe_error *err) {
    char *buf = NULL;
    size_t bn = 0;
    long line = 0;
    int cap = 0, rc = TMOE_OK;
    double prev = 0.0;
    long day0 = 0;
    while (getline(&buf, &bn, f) > 0 && (max <= 0 || a->n < max)) {
        line++;
        chomp(buf);
        if (line == 1) {
            if (strcmp(buf, "TIMESTAMP,ContextTokens,GeneratedTokens")) {
                rc = tmoe_errorf(err, TMOE_EINVAL,
                                 "%s:1: expected the header "
                                 "'TIMESTAMP,ContextTokens,GeneratedTokens', got '%.80s'",
                                 path, buf);
                break;
            }
            continue;
        }
        if (!buf[0]) continue;
        char *f1 = buf, *f2 = strchr(f1, ','), *f3 = f2 ? strchr(f2 + 1, ',') : NULL;
        if (!f3 || strchr(f3 + 1, ',')) {
            rc = tmoe_errorf(err, TMOE_EINVAL, "%s:%ld: expected 3 fields, got '%.80s'", path, line,
                             buf);
            break;
        }
        *f2++ = 0;
        *f3++ = 0;
        double t;
        long day;
        int p = 0, g = 0;
        if (parse_azure_time(f1, &day, &t)) {
            rc = tmoe_errorf(err, TMOE_EINVAL,
                             "%s:%ld: TIMESTAMP: expected YYYY-MM-DD HH:MM:SS[.fraction], got "
                             "'%.60s'",
                             path, line, f1);
            break;
        }
        if (!a->n) day0 = day;
        t += (double)(day - day0) * 86400.0; /* s since the first request's midnight */
        if ((rc = parse_len(path, line, "ContextTokens", f2, &p, err))) break;
        if ((rc = parse_len(path, line, "GeneratedTokens", f3, &g, err))) break;
        if ((rc = check_order(path, line, "TIMESTAMP", t, prev, a->n > 0, err))) break;
        prev = t;
        if ((rc = push(a, &cap, t, p, g, err))) break;
    }
    free(buf);
    return rc;
}

static int json_len(json_t *o, const char *path, long line, const char *field, int *out,
                    tmoe_error *err) {
    json_t *v = json_object_get(o, field);
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 100000000)
        return tmoe_errorf(err, TMOE_EINVAL, "%s:%ld: %s: expected a whole number of tokens >= 1%s",
                           path, line, field,
                           !v                   ? " (missing)"
                           : json_is_integer(v) ? ", got a smaller one"
                                                : " (not an integer)");
    *out = (int)json_integer_value(v);
    return TMOE_OK;
}

static int read_mooncake(FILE *f, const char *path, int max, tmoe_arrivals *a, tmoe_error *err) {
    char *buf = NULL;
    size_t bn = 0;
    long line = 0;
    int cap = 0, rc = TMOE_OK;
    double prev = 0.0;
    while (getline(&buf, &bn, f) > 0 && (max <= 0 || a->n < max)) {
        line++;
        chomp(buf);
        if (!buf[0]) continue;
        json_error_t je;
        json_t *o = json_loads(buf, 0, &je);
        if (!json_is_object(o)) {
            json_decref(o);
            rc = tmoe_errorf(err, TMOE_EINVAL, "%s:%ld: expected a JSON object: %s", path, line,
                             o ? "another JSON value" : je.text);
            break;
        }
        json_t *ts = json_object_get(o, "timestamp");
        int p = 0, g = 0;
        if (!json_is_number(ts) || !isfinite(json_number_value(ts)) || json_number_value(ts) < 0) {
            rc = tmoe_errorf(err, TMOE_EINVAL,
                             "%s:%ld: timestamp: expected milliseconds >= 0 (a number)%s", path,
                             line, ts ? "" : ", missing");
        } else if (!(rc = json_len(o, path, line, "input_length", &p, err)) &&
                   !(rc = json_len(o, path, line, "output_length", &g, err))) {
            double t = json_number_value(ts) / 1e3;
            rc = check_order(path, line, "timestamp", t, prev, a->n > 0, err);
            prev = t;
            if (!rc) rc = push(a, &cap, t, p, g, err);
        }
        json_decref(o);
        if (rc) break;
    }
    free(buf);
    return rc;
}

static int finish(tmoe_arrivals *a, const tmoe_arrivals_opts *o, const char *what,
                  tmoe_error *err) {
    if (a->n == 0)
        return tmoe_errorf(err, TMOE_EINVAL, "%s: no requests (expected at least one)", what);
    double ts = o->time_scale > 0.0 ? o->time_scale : 1.0, t0 = a->req[0].arrival_s;
    int n = 0;
    for (int i = 0; i < a->n; i++) {
        a->req[i].arrival_s = (a->req[i].arrival_s - t0) / ts;
        /* the duration cut: sorted arrivals, so the first one past it ends the trace (the
         * first request, at 0, is always kept) */
        if (o->duration_s > 0.0 && a->req[i].arrival_s >= o->duration_s) break;
        apply_caps(o, &a->req[i], &a->capped);
        n++;
    }
    a->n = n;
    return TMOE_OK;
}

int tmoe_arrivals_read(const char *path, const tmoe_arrivals_opts *o, tmoe_arrivals *out,
                       tmoe_error *err) {
    memset(out, 0, sizeof *out);
    tmoe_arrivals_opts d = o ? *o : tmoe_arrivals_opts_default();
    tmoe_arrivals_format fmt = d.format;
    if (fmt == TMOE_ARR_AUTO) {
        size_t n = strlen(path);
        fmt = n >= 6 && !strcmp(path + n - 6, ".jsonl") ? TMOE_ARR_MOONCAKE : TMOE_ARR_AZURE;
    }
    FILE *f = fopen(path, "r");
    if (!f) return tmoe_errorf(err, TMOE_EIO, "%s: cannot open the trace", path);
    int rc = fmt == TMOE_ARR_MOONCAKE ? read_mooncake(f, path, d.max_requests, out, err)
                                      : read_azure(f, path, d.max_requests, out, err);
    fclose(f);
    snprintf(out->source, sizeof out->source, "%s (%s)", path,
             fmt == TMOE_ARR_MOONCAKE ? "mooncake" : "azure");
    if (!rc) rc = finish(out, &d, path, err);
    if (rc) tmoe_arrivals_free(out);
    return rc;
}

/* Fitted to ../shared/fixtures/traces (docs/serve.md "Synthetic arrivals"). */
static const tmoe_arrivals_synth fits[] = {
    {"azure_code", 2.5664, 6.9986, 1.3602, 2.7882, 0.8472},
    {"azure_conv", 5.5301, 6.6333, 0.9852, 5.0190, 0.8590},
    {"mooncake", 3.4012, 8.7367, 1.1991, 5.3364, 1.3584},
};

const tmoe_arrivals_synth *tmoe_arrivals_synth_find(const char *name) {
    for (size_t i = 0; name && i < sizeof fits / sizeof *fits; i++)
        if (!strcmp(fits[i].name, name)) return &fits[i];
    return NULL;
}

static int lognormal_len(tmoe_rng *r, double mu, double sigma) {
    double v = exp(mu + sigma * tmoe_rng_normal(r));
    return v < 1.0 ? 1 : v > 1e8 ? 100000000 : (int)lround(v);
}

int tmoe_arrivals_generate(const tmoe_arrivals_synth *p, int n, uint64_t seed,
                           const tmoe_arrivals_opts *o, tmoe_arrivals *out, tmoe_error *err) {
    memset(out, 0, sizeof *out);
    tmoe_arrivals_opts d = o ? *o : tmoe_arrivals_opts_default();
    int until = n == 0 && d.duration_s > 0.0; /* as many as arrive within the duration */
    if (!p || (n < 1 && !until) || !(p->rate_per_s > 0.0) || !(p->prompt_sigma >= 0.0) ||
        !(p->gen_sigma >= 0.0))
        return tmoe_errorf(err, TMOE_EINVAL,
                           "synthetic trace: expected n >= 1 (or 0 with a duration), a rate > 0 "
                           "and sigmas >= 0");
    double ts = d.time_scale > 0.0 ? d.time_scale : 1.0;
    tmoe_rng r;
    tmoe_rng_seed_stream(&r, seed, 0x5e27e);
    int cap = 0, rc = TMOE_OK;
    double t = 0.0;
    for (int i = 0; (until || i < n) && !rc; i++) {
        if (d.max_requests > 0 && i >= d.max_requests) break; /* the first N, as of a file */
        if (i) t += -log(1.0 - tmoe_rng_uniform(&r)) / p->rate_per_s;
        if (until && (t / ts >= d.duration_s || i >= 100000000)) break;
        int pl = lognormal_len(&r, p->prompt_mu, p->prompt_sigma);
        rc = push(out, &cap, t, pl, lognormal_len(&r, p->gen_mu, p->gen_sigma), err);
    }
    snprintf(out->source, sizeof out->source,
             "synthetic %s (Poisson %.4g/s, prompt lognormal mu %.4g sigma %.4g, generated "
             "lognormal mu %.4g sigma %.4g, seed %llu)",
             p->name ? p->name : "custom", p->rate_per_s, p->prompt_mu, p->prompt_sigma, p->gen_mu,
             p->gen_sigma, (unsigned long long)seed);
    if (!rc) rc = finish(out, &d, "synthetic trace", err);
    if (rc) tmoe_arrivals_free(out);
    return rc;
}
