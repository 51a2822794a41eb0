/* The serving replay: malformed traces (bad timestamp, negative length, unsorted times,
 * empty file) are errors naming file, line and field; the caps and time scale; the
 * synthetic generator; a replay of the trained model on the CPU with the simulated GPU
 * (every request finishes once, no request is admitted before it arrives, token counts are
 * the capped trace's, energy shares add up) and admission control under a tiny KV limit;
 * the first requests of each shared trace when the fixtures exist; the CPU + sim replay
 * against the values of the code before the CUDA / NVML path; --duration; a replay stopped
 * on request writes consistent files that say so. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "thermoe/analyze.h"
#include "thermoe/exp.h"

#define DATA THERMOE_SOURCE_DIR "/tests/data/serve/"
#define MODEL THERMOE_SOURCE_DIR "/models/default"

static void expect_error(const char *file, const char *want1, const char *want2) {
    tmoe_arrivals a;
    tmoe_error err = {0};
    char path[1024];
    snprintf(path, sizeof path, "%s%s", DATA, file);
    int rc = tmoe_arrivals_read(path, NULL, &a, &err);
    assert_int_equal(rc, TMOE_EINVAL);
    if (!strstr(err.msg, want1) || !strstr(err.msg, want2) || !strstr(err.msg, file))
        fail_msg("%s: expected '%s' and '%s' in: %s", file, want1, want2, err.msg);
    assert_null(a.req);
}

static void test_malformed_traces(void **state) {
    (void)state;
    expect_error("bad_timestamp.csv", ":3: TIMESTAMP", "expected YYYY-MM-DD");
    expect_error("negative_length.csv", ":3: ContextTokens", "got '-3'");
    expect_error("unsorted.csv", ":3: TIMESTAMP", "sorted by time");
    expect_error("empty.csv", "no requests", "");
    expect_error("header_only.csv", "no requests", "");
    expect_error("negative_length.jsonl", ":2: output_length", ">= 1");
    expect_error("unsorted.jsonl", ":2: timestamp", "sorted by time");
    expect_error("bad_timestamp.jsonl", ":1: timestamp", "milliseconds");
}

static void test_caps_and_time_scale(void **state) {
    (void)state;
    tmoe_arrivals_opts o = tmoe_arrivals_opts_default();
    o.time_scale = 2.0;
    o.max_context = 35;
    o.max_generated = 5;
    o.max_requests = 5;
    tmoe_arrivals a;
    tmoe_error err = {0};
    if (tmoe_arrivals_read(DATA "small.csv", &o, &a, &err)) fail_msg("%s", err.msg);
    assert_int_equal(a.n, 5);
    assert_true(fabs(a.req[0].arrival_s) < 1e-12);
    assert_true(fabs(a.req[1].arrival_s - 0.0005) < 1e-9);
    assert_true(fabs(a.req[4].arrival_s - 0.5) < 1e-9);
    assert_int_equal(a.req[0].prompt, 35);
    assert_int_equal(a.req[0].trace_prompt, 40);
    assert_int_equal(a.req[1].gen, 5);
    assert_int_equal(a.req[1].trace_gen, 8);
    assert_int_equal(a.req[3].prompt, 20);
    assert_int_equal(a.capped, 4); /* 40->35, 8->5, 60->35, 90->35,6->5 (request 4) */
    tmoe_arrivals_free(&a);
    o = tmoe_arrivals_opts_default();
    o.context_scale = 0.5;
    if (tmoe_arrivals_read(DATA "small.csv", &o, &a, &err)) fail_msg("%s", err.msg);
    assert_int_equal(a.n, 6);
    assert_int_equal(a.req[0].prompt, 20);
    assert_int_equal(a.req[3].gen, 1); /* 0.5 rounds to 1 at least */
    tmoe_arrivals_free(&a);
}

static void test_synthetic(void **state) {
    (void)state;
    const tmoe_arrivals_synth *p = tmoe_arrivals_synth_find("azure_conv");
    assert_non_null(p);
    assert_null(tmoe_arrivals_synth_find("nope"));
    tmoe_arrivals a;
    tmoe_error err = {0};
    if (tmoe_arrivals_generate(p, 4000, 7, NULL, &a, &err)) fail_msg("%s", err.msg);
    double lp = 0.0;
    for (int i = 0; i < a.n; i++) {
        if (i) assert_true(a.req[i].arrival_s >= a.req[i - 1].arrival_s);
        lp += log(a.req[i].prompt);
    }
    double rate = (a.n - 1) / a.req[a.n - 1].arrival_s;
    assert_true(fabs(rate - p->rate_per_s) < 0.1 * p->rate_per_s);
    assert_true(fabs(lp / a.n - p->prompt_mu) < 0.1);
    /* --max-requests caps a synthetic trace too: its first N, the same requests */
    tmoe_arrivals_opts o = tmoe_arrivals_opts_default();
    o.max_requests = 50;
    tmoe_arrivals b;
    if (tmoe_arrivals_generate(p, 4000, 7, &o, &b, &err)) fail_msg("%s", err.msg);
    assert_int_equal(b.n, 50);
    for (int i = 0; i < b.n; i++) {
        assert_true(b.req[i].arrival_s == a.req[i].arrival_s);
        assert_int_equal(b.req[i].prompt, a.req[i].prompt);
    }
    tmoe_arrivals_free(&b);
    tmoe_arrivals_free(&a);
}

/* Checks of a replay's per-request record against the trace it replayed. */
static void check_replay(const tmoe_arrivals *a, const tmoe_serve_request *q,
                         const tmoe_serve_summary *s) {
    double share = 0.0;
    long gen = 0;
    for (int i = 0; i < a->n; i++) {
        assert_int_equal(q[i].prompt, a->req[i].prompt);
        assert_int_equal(q[i].gen, a->req[i].gen);
        assert_true(q[i].admit_s >= q[i].arrival_s);
        assert_true(q[i].first_token_s > q[i].admit_s);
        assert_true(q[i].finish_s >= q[i].first_token_s);
        assert_true(q[i].energy_j > 0.0);
        share += q[i].energy_j;
        gen += q[i].gen;
    }
    assert_int_equal(s->requests, a->n);
    assert_int_equal(s->generated_tokens, gen);
    assert_true(fabs(share - s->energy_j) < 1e-6 * s->energy_j);
    assert_true(isfinite(s->run.ttft_p99_s) && s->run.ttft_p99_s >= s->run.ttft_p50_s);
    assert_int_equal(s->run.requests, a->n);
    assert_int_equal(s->run.finished, a->n);
    assert_int_equal(s->run.generated_tokens, gen); /* the steps generated each token once */
    /* the whole run's energy is the steps' and the idle waits' */
    assert_true(fabs(s->run.energy_j - s->energy_j - s->idle_energy_j) <
                1e-6 * (s->energy_j + s->idle_energy_j));
    assert_true(s->window.start_s >= s->run.start_s && s->window.end_s <= s->run.end_s);
    assert_true(strlen(s->steady_note) > 0);
    assert_string_equal(s->source, "sim");
}

/* The detector on series whose answer is known: a ramp, a plateau with noise, a drain. */
static void test_steady_detect(void **state) {
    (void)state;
    double x[20], y[20];
    static const double noise[] = {0.5, -0.8, 0.3, 1.0, -0.4, -1.1, 0.7, 0.0, -0.6, 0.9, -0.2, 0.4};
    for (int b = 0; b < 20; b++) {
        x[b] = b < 6 ? 10.0 * b : b < 18 ? 60.0 + noise[b - 6] : b == 18 ? 20.0 : 0.0;
        y[b] = 5.0 * b; /* climbs throughout: never level */
    }
    tmoe_steady_series s = {x, 0.05, 0.0};
    int first = -1, last = -1;
    assert_int_equal(tmoe_steady_detect(&s, 1, 20, 5, &first, &last), 1);
    assert_int_equal(first, 6);
    assert_int_equal(last, 17);
    tmoe_steady_series none = {y, 0.05, 0.0};
    assert_int_equal(tmoe_steady_detect(&none, 1, 20, 5, &first, &last), 0);
    /* both series: the plateau of x, cut where a second series starts to rise */
    double z[20];
    for (int b = 0; b < 20; b++) z[b] = b < 12 ? 40.0 : 40.0 + 8.0 * (b - 11);
    tmoe_steady_series two[2] = {{x, 0.05, 0.0}, {z, 0.0, 1.0}};
    assert_int_equal(tmoe_steady_detect(two, 2, 20, 5, &first, &last), 1);
    assert_int_equal(first, 6);
    assert_int_equal(last, 11);
    /* a slow drift inside the band is still caught by the halves' means */
    double d[20];
    for (int b = 0; b < 20; b++) d[b] = 100.0 + 0.5 * b;
    tmoe_steady_series drift = {d, 0.05, 0.0};
    assert_int_equal(tmoe_steady_detect(&drift, 1, 20, 20, &first, &last), 0);
}

/* A replay's segments with a known steady state: power ramps to 100 W over 100 s, then 300 W, and
 * the temperature approaches 60 C (time constant 20 s) under a constant load, over 400 s: the
 * window is 100..400 s (bins of 20 s). With the temperature climbing all the way there is none;
 * nor in an idle stretch. */
static void test_steady_window(void **state) {
    (void)state;
    enum { N = 400 };
    tmoe_serve_segment g[N];
    for (int i = 0; i < N; i++) {
        double t = i + 1.0;
        g[i] = (tmoe_serve_segment){
            i,  t,  t <= 100.0 ? t : 300.0, 300.0, 30.0 + 30.0 * (1.0 - exp(-t / 20.0)), 50.0, 4,
            10, 2.0};
    }
    double ws, we;
    char why[256];
    assert_int_equal(tmoe_serve_steady_window(g, N, N, &ws, &we, why, sizeof why), 1);
    assert_true(fabs(ws - 100.0) < 1e-9);
    assert_true(fabs(we - 400.0) < 1e-9);
    assert_non_null(strstr(why, "steady state in bins 5..19"));
    for (int i = 0; i < N; i++) g[i].gpu_temp_peak_c = 30.0 + 0.1 * i;
    assert_int_equal(tmoe_serve_steady_window(g, N, N, &ws, &we, why, sizeof why), 0);
    assert_true(ws == 0.0 && we == N);
    assert_non_null(strstr(why, "no steady state"));
    /* an idle stretch (nothing in the system, idle power, a constant temperature) is level in
     * every series but serves nothing: not a steady state. 300 s idle, then 100 s of a load
     * that climbs from 2 to 35 requests. */
    for (int i = 0; i < N; i++) {
        int busy = i >= 300;
        g[i] = (tmoe_serve_segment){i,
                                    i + 1.0,
                                    busy ? 300.0 : 60.0,
                                    300.0,
                                    30.0,
                                    40.0,
                                    busy ? 2 + (i - 300) / 3 : 0,
                                    busy,
                                    busy ? 2.0 : NAN};
    }
    assert_int_equal(tmoe_serve_steady_window(g, N, N, &ws, &we, why, sizeof why), 0);
    assert_non_null(strstr(why, "no steady state"));
    /* too short to tell */
    assert_int_equal(tmoe_serve_steady_window(g, 10, 10.0, &ws, &we, why, sizeof why), 0);
    assert_non_null(strstr(why, "too few"));
}

/* Goodput, energy per request and per token and time above target against a hand count. */
static void test_window_stats(void **state) {
    (void)state;
    /* arrival, admit, first token, finish, energy; prompt, generated, steps */
    tmoe_serve_request q[] = {
        {0.0, 0.0, 0.5, 0.95, 0, 4, 10, 0},   /* TTFT 0.5, TPOT 0.05: meets */
        {1.0, 1.0, 2.5, 2.6, 0, 4, 2, 0},     /* TTFT 1.5: misses */
        {2.0, 2.0, 2.2, 3.0, 0, 4, 5, 0},     /* TPOT 0.2: misses */
        {3.0, 3.0, 3.1, 3.1, 0, 4, 1, 0},     /* one token, TTFT 0.1: meets */
        {4.0, 4.0, 4.9, 5.1, 0, 4, 3, 0},     /* TTFT 0.9, TPOT 0.1 (at the SLO): meets */
        {12.0, 12.0, 12.1, 12.5, 0, 4, 2, 0}, /* after the window: not counted */
    };
    tmoe_serve_segment g[] = {
        {0.0, 5.0, 100.0, 500.0, 80.0, 70.0, 3, 10, 4.0},
        {5.0, 10.0, 50.0, 200.0, 70.0, 76.0, 1, 5, 3.0},
        {11.0, 12.6, 40.0, 900.0, 99.0, 99.0, 1, 2, 8.0},
    };
    tmoe_serve_stats o;
    tmoe_serve_window_stats(q, 6, g, 3, 0.0, 10.0, 1.0, 0.1, 75.0, &o);
    assert_int_equal(o.requests, 5);
    assert_int_equal(o.slo_met, 3);
    assert_true(fabs(o.goodput_rps - 0.3) < 1e-12);
    assert_true(fabs(o.goodput_share - 0.6) < 1e-12);
    assert_int_equal(o.finished, 5);
    assert_int_equal(o.generated_tokens, 15);
    assert_true(fabs(o.energy_j - 150.0) < 1e-12);
    assert_true(fabs(o.j_per_request - 30.0) < 1e-12);
    assert_true(fabs(o.j_per_generated_token - 10.0) < 1e-12);
    assert_true(fabs(o.power_avg_w - 15.0) < 1e-12);
    assert_true(o.power_peak_w == 500.0 && o.gpu_temp_peak_c == 80.0 && o.mem_temp_peak_c == 76.0);
    assert_true(fabs(o.gpu_above_target_s - 5.0) < 1e-12);
    assert_true(fabs(o.mem_above_target_s - 5.0) < 1e-12);
    assert_true(fabs(o.ttft_p50_s - 0.5) < 1e-12);     /* of 0.5 1.5 0.2 0.1 0.9 */
    assert_true(fabs(o.active_experts - 3.5) < 1e-12); /* the two steps inside */
    g[1].active_experts = NAN;                         /* an idle wait: not a step */
    tmoe_serve_window_stats(q, 6, g, 3, 0.0, 10.0, 1.0, 0.1, 75.0, &o);
    assert_true(fabs(o.active_experts - 4.0) < 1e-12);
    /* a window without requests or steps: unknown, not zero */
    tmoe_serve_window_stats(q, 6, g, 3, 20.0, 30.0, 1.0, 0.1, 75.0, &o);
    assert_int_equal(o.requests, 0);
    assert_true(isnan(o.goodput_share) && isnan(o.ttft_p50_s) && isnan(o.energy_j));
    assert_true(isnan(o.j_per_generated_token) && isnan(o.gpu_above_target_s));
    assert_true(isnan(o.active_experts));
}

/* small.csv at time scale 100 (all six arrive within ~10 ms: they overlap), the default
 * model, prompts in chunks of 16, 32 tokens a step, 4 running at once. */
static void small_replay(tmoe_arrivals *a, tmoe_serve_config *c) {
    tmoe_arrivals_opts o = tmoe_arrivals_opts_default();
    o.time_scale = 100.0;
    tmoe_error err = {0};
    if (tmoe_arrivals_read(DATA "small.csv", &o, a, &err)) fail_msg("%s", err.msg);
    *c = tmoe_serve_config_default();
    c->model_dir = MODEL;
    c->prefill_chunk = 16;
    c->max_batch_tokens = 32;
    c->max_seqs = 4;
}

static void test_replay_and_admission(void **state) {
    (void)state;
    tmoe_arrivals a;
    tmoe_serve_config c;
    tmoe_error err = {0};
    small_replay(&a, &c);
    tmoe_serve_summary s;
    tmoe_serve_request *q = NULL;
    if (tmoe_serve_run(&c, &a, &s, &q, &err)) fail_msg("%s", err.msg);
    check_replay(&a, q, &s);
    assert_true(s.max_running > 1); /* continuous batching: they ran together */
    free(q);
    /* a KV limit of the longest request (90 + 6 - 1): fewer run at once, some wait, and
     * the reservations of the running ones never exceed it */
    int together = s.max_running;
    c.kv_tokens = 95;
    if (tmoe_serve_run(&c, &a, &s, &q, &err)) fail_msg("%s", err.msg);
    check_replay(&a, q, &s);
    assert_true(s.max_running < together);
    assert_true(s.max_waiting >= 1);
    for (int i = 0; i < a.n; i++) {
        long used = 0;
        for (int j = 0; j < a.n; j++)
            if (q[j].admit_s <= q[i].admit_s && q[i].admit_s < q[j].finish_s)
                used += q[j].prompt + q[j].gen - 1;
        assert_true(used <= c.kv_tokens);
    }
    free(q);
    /* a request that can never fit is an error before any step */
    c.kv_tokens = 50;
    assert_int_equal(tmoe_serve_run(&c, &a, &s, NULL, &err), TMOE_EINVAL);
    assert_non_null(strstr(err.msg, "could never be admitted"));
    tmoe_arrivals_free(&a);
}

/* The CPU backend with the simulated GPU gives what the replay gave before it could run on
 * the CUDA backend: the values below were printed (%.17g) by the code at commit 09e8703 for
 * this configuration (small.csv, time scale 100, prefill 16, batch 32, 4 running). */
static void test_cpu_sim_unchanged(void **state) {
    (void)state;
    tmoe_arrivals a;
    tmoe_serve_config c;
    tmoe_error err = {0};
    small_replay(&a, &c);
    assert_int_equal(c.backend, TMOE_BACKEND_CPU);
    assert_int_equal(c.telemetry, TMOE_TELEMETRY_SIM);
    tmoe_serve_summary s;
    tmoe_serve_request *q = NULL;
    if (tmoe_serve_run(&c, &a, &s, &q, &err)) fail_msg("%s", err.msg);
#define CLOSE(x, want) assert_true(fabs((x) - (want)) <= 1e-9 * fabs(want))
    assert_int_equal(s.steps, 16);
    CLOSE(s.energy_j, 21.432853854532166);
    CLOSE(s.duration_s, 0.04230213599999999);
    CLOSE(s.run.ttft_p99_s, 0.026061429000003428);
    CLOSE(q[5].finish_s, 0.036206935999999995);
    CLOSE(q[5].energy_j, 0.95235829408118844);
    assert_false(s.interrupted);
    assert_string_equal(s.source, "sim");
    free(q);
    c.strategy = TMOE_ROUTE_PREDICTIVE_THERMAL;
    if (tmoe_serve_run(&c, &a, &s, NULL, &err)) fail_msg("%s", err.msg);
    assert_int_equal(s.steps, 16);
    CLOSE(s.energy_j, 20.888157939473796);
    CLOSE(s.run.ttft_p99_s, 0.024962145450003411);
#undef CLOSE
    tmoe_arrivals_free(&a);
}

/* --duration: only the requests arriving before it, after the time scale; a synthetic trace
 * without a count fills the duration. */
static void test_duration(void **state) {
    (void)state;
    tmoe_arrivals_opts o = tmoe_arrivals_opts_default();
    o.time_scale = 2.0; /* arrivals 0, 0.0005, 0.001, 0.25, 0.5, 0.5 */
    o.duration_s = 0.3;
    tmoe_arrivals a;
    tmoe_error err = {0};
    if (tmoe_arrivals_read(DATA "small.csv", &o, &a, &err)) fail_msg("%s", err.msg);
    assert_int_equal(a.n, 4);
    tmoe_arrivals_free(&a);
    o.duration_s = 0.25; /* arrivals at the cut are left out */
    if (tmoe_arrivals_read(DATA "small.csv", &o, &a, &err)) fail_msg("%s", err.msg);
    assert_int_equal(a.n, 3);
    tmoe_arrivals_free(&a);
    const tmoe_arrivals_synth *p = tmoe_arrivals_synth_find("azure_conv");
    o = tmoe_arrivals_opts_default();
    o.time_scale = 4.0;
    o.duration_s = 50.0;
    if (tmoe_arrivals_generate(p, 0, 3, &o, &a, &err)) fail_msg("%s", err.msg);
    /* 5.53/s x 4 over 50 s: about 1106 (Poisson, sd ~33) */
    assert_true(a.n > 950 && a.n < 1250);
    assert_true(a.req[a.n - 1].arrival_s < 50.0);
    tmoe_arrivals_free(&a);
    if (tmoe_arrivals_generate(p, 100, 3, &o, &a, &err)) fail_msg("%s", err.msg);
    assert_int_equal(a.n, 100); /* a count given: the first 100, all well inside 50 s */
    tmoe_arrivals_free(&a);
    o.duration_s = 0.0;
    assert_int_equal(tmoe_arrivals_generate(p, 0, 3, &o, &a, &err), TMOE_EINVAL);
}

static int count_lines(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) fail_msg("%s: cannot open", path);
    int n = 0, ch;
    while ((ch = fgetc(f)) != EOF) n += ch == '\n';
    fclose(f);
    return n;
}

typedef struct stop_after {
    int steps, calls;
} stop_after;

/* The internal stop hook: ask the replay to stop once it has run a number of steps. */
static void stop_hook(const tmoe_serve_progress *p, void *user) {
    stop_after *st = user;
    st->calls++;
    assert_true(p->done <= p->arrived && p->arrived <= p->requests);
    assert_string_equal(p->source, "sim");
    if (p->steps >= st->steps) tmoe_run_request_stop();
}

/* A replay stopped on request (as by Ctrl-C) after some steps: TMOE_EINTR, and files over
 * what ran: requests.csv has the requests that arrived (unfinished ones without a finish),
 * steps.csv the steps, summary.json "interrupted": true. */
static void test_interrupted(void **state) {
    (void)state;
    tmoe_arrivals_opts o = tmoe_arrivals_opts_default();
    o.max_context = 16;
    o.max_generated = 8;
    tmoe_arrivals a;
    tmoe_error err = {0};
    const tmoe_arrivals_synth *p = tmoe_arrivals_synth_find("azure_conv");
    if (tmoe_arrivals_generate(p, 40, 5, &o, &a, &err)) fail_msg("%s", err.msg);
    char dir[] = "/tmp/thermoe_serve_stop_XXXXXX";
    if (!mkdtemp(dir)) fail_msg("mkdtemp");
    tmoe_serve_config c = tmoe_serve_config_default();
    c.model_dir = MODEL;
    c.out_dir = dir;
    stop_after st = {30, 0};
    c.on_progress = stop_hook;
    c.progress_user = &st;
    c.progress_every_s = 0.0; /* after every step */
    tmoe_serve_summary s;
    tmoe_serve_request *q = NULL;
    int rc = tmoe_serve_run(&c, &a, &s, &q, &err);
    assert_int_equal(rc, TMOE_EINTR);
    assert_non_null(strstr(err.msg, "interrupted after 30 steps"));
    assert_true(s.interrupted);
    assert_int_equal(s.steps, 30);
    assert_true(s.requests >= 1 && s.requests < a.n);
    assert_non_null(q);
    int finished = 0;
    long gen = 0;
    for (int i = 0; i < s.requests; i++) {
        if (isfinite(q[i].finish_s)) {
            finished++;
            gen += q[i].gen;
            assert_true(q[i].finish_s >= q[i].first_token_s);
        }
        assert_true(q[i].arrival_s <= s.duration_s + 1e-9);
    }
    assert_true(finished < s.requests); /* some were still running */
    assert_int_equal(s.run.finished, finished);
    assert_true(s.generated_tokens >= gen);
    char path[512];
    snprintf(path, sizeof path, "%s/requests.csv", dir);
    assert_int_equal(count_lines(path), 1 + s.requests);
    snprintf(path, sizeof path, "%s/steps.csv", dir);
    assert_int_equal(count_lines(path), 1 + s.steps);
    snprintf(path, sizeof path, "%s/timeline.csv", dir);
    assert_int_equal(count_lines(path), 1 + TMOE_SERVE_TIMELINE_BINS);
    snprintf(path, sizeof path, "%s/summary.json", dir);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j) fail_msg("%s: %s", path, je.text);
    assert_true(json_is_true(json_object_get(j, "interrupted")));
    assert_true(json_is_true(json_object_get(j, "simulated")));
    assert_int_equal(json_integer_value(json_object_get(j, "steps")), 30);
    assert_int_equal(json_integer_value(json_object_get(j, "requests")), s.requests);
    json_decref(j);
    /* analyze reads it, unfinished requests (nan times) and all, and leaves them out of the
     * energy per request */
    char rep[600];
    snprintf(rep, sizeof rep, "%s/report", dir);
    tmoe_analyze_config ac = tmoe_analyze_config_default();
    ac.out_dir = rep;
    ac.gnuplot = ""; /* data and scripts only */
    tmoe_analyze_summary as;
    const char *dirs[1] = {dir};
    if (tmoe_analyze_run_ex(dirs, 1, &ac, &as, &err)) fail_msg("analyze: %s", err.msg);
    assert_int_equal(as.n_serve_runs, 1);
    snprintf(path, sizeof path, "%s/figures/serve_energy_prompt.dat", rep);
    FILE *f = fopen(path, "r");
    if (!f) fail_msg("%s: not written", path);
    int pts = 0;
    char line[256];
    while (fgets(line, sizeof line, f))
        if (line[0] != '#' && line[0] != '\n') pts++;
    fclose(f);
    assert_int_equal(pts, finished);
    free(q);
    /* the next replay starts afresh: the stop request does not carry over */
    c.on_progress = NULL;
    c.out_dir = NULL;
    a.n = 3;
    if (tmoe_serve_run(&c, &a, &s, NULL, &err)) fail_msg("%s", err.msg);
    assert_false(s.interrupted);
    tmoe_arrivals_free(&a);
    const char *files[] = {"requests.csv", "steps.csv", "timeline.csv", "summary.json"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
}

static void replay_fixture(const char *name, int n) {
    const char *dir = getenv("THERMOE_FIXTURES");
    char path[2048];
    snprintf(path, sizeof path, "%s/traces/%s", dir ? dir : THERMOE_FIXTURES_DIR, name);
    FILE *f = fopen(path, "r");
    if (!f) {
        print_message("skip: %s absent\n", path);
        return;
    }
    fclose(f);
    tmoe_arrivals_opts o = tmoe_arrivals_opts_default();
    o.max_requests = n;
    o.max_context = 16;
    o.max_generated = 4;
    tmoe_arrivals a;
    tmoe_error err = {0};
    if (tmoe_arrivals_read(path, &o, &a, &err)) fail_msg("%s", err.msg);
    assert_int_equal(a.n, n);
    tmoe_serve_config c = tmoe_serve_config_default();
    c.model_dir = MODEL;
    tmoe_serve_summary s;
    tmoe_serve_request *q = NULL;
    if (tmoe_serve_run(&c, &a, &s, &q, &err)) fail_msg("%s: %s", name, err.msg);
    check_replay(&a, q, &s);
    print_message("%s: %d requests, %d steps, %.1f s on the host\n", name, a.n, s.steps, s.wall_s);
    free(q);
    tmoe_arrivals_free(&a);
}

static void test_fixture_traces(void **state) {
    (void)state;
    replay_fixture("azure_llm_2023_code.csv", 100);
    replay_fixture("azure_llm_2023_conv.csv", 100);
    replay_fixture("mooncake_conversation.jsonl", 100);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_malformed_traces),
        cmocka_unit_test(test_caps_and_time_scale),
        cmocka_unit_test(test_synthetic),
        cmocka_unit_test(test_steady_detect),
        cmocka_unit_test(test_steady_window),
        cmocka_unit_test(test_window_stats),
        cmocka_unit_test(test_replay_and_admission),
        cmocka_unit_test(test_cpu_sim_unchanged),
        cmocka_unit_test(test_duration),
        cmocka_unit_test(test_interrupted),
        cmocka_unit_test(test_fixture_traces),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
