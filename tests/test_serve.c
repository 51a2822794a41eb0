/* The serving replay: malformed traces (bad timestamp, negative length, unsorted times,
 * empty file) are errors naming file, line and field; the caps and time scale; the
 * synthetic generator; a replay of the trained model on the CPU with the simulated GPU
 * (every request finishes once, no request is admitted before it arrives, token counts are
 * the capped trace's, energy shares add up) and admission control under a tiny KV limit;
 * the first requests of each shared trace when the fixtures exist. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    assert_true(isfinite(s->ttft_p99_s) && s->ttft_p99_s >= s->ttft_p50_s);
    assert_string_equal(s->source, "sim");
}

static void test_replay_and_admission(void **state) {
    (void)state;
    tmoe_arrivals_opts o = tmoe_arrivals_opts_default();
    o.time_scale = 100.0; /* all six arrive within ~10 ms: they overlap */
    tmoe_arrivals a;
    tmoe_error err = {0};
    if (tmoe_arrivals_read(DATA "small.csv", &o, &a, &err)) fail_msg("%s", err.msg);
    tmoe_serve_config c = tmoe_serve_config_default();
    c.model_dir = MODEL;
    c.prefill_chunk = 16;
    c.max_batch_tokens = 32;
    c.max_seqs = 4;
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
        cmocka_unit_test(test_malformed_traces), cmocka_unit_test(test_caps_and_time_scale),
        cmocka_unit_test(test_synthetic),        cmocka_unit_test(test_replay_and_admission),
        cmocka_unit_test(test_fixture_traces),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
