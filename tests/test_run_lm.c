/* The harness on the decoder LM: token windows from the committed test split (domains from
 * data/corpus/test.domains.tsv, never straddling them, calibration slots apart, skewed a
 * domain shift); a run of the reference Mixtral checkpoint on the CPU with the simulated GPU
 * (baseline's nll equals nll_baseline exactly, every strategy's nll_baseline equals the
 * baseline combination's nll on the same windows, per-layer counts add up); a token file
 * of another vocabulary and an expert shape the cost model was not measured at are clear
 * errors; resume refuses another token file. */
#include "testutil.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "thermoe/exp.h"

#define SPLIT THERMOE_SOURCE_DIR "/data/corpus/test.tokens"
#define MIXTRAL THERMOE_SOURCE_DIR "/tests/data/lm/mixtral"
#define TEXT THERMOE_SOURCE_DIR "/tests/data/lm/text.tokens"

/* Where window w (L ids) sits in t: its start, or -1 when it is no slot of a domain. */
static int64_t find_window(const tmoe_text *t, const uint32_t *w, int L, int *dom, int64_t *slot) {
    for (int d = 0; d < t->ndom; d++)
        for (int64_t s = t->first[d]; s + L <= t->end[d]; s += L)
            if (!memcmp(t->ids + s, w, sizeof(uint32_t) * (size_t)L)) {
                *dom = d;
                *slot = (s - t->first[d]) / L;
                return s;
            }
    return -1;
}

static void test_windows_of_the_test_split(void **state) {
    (void)state;
    tmoe_tokens tok = {0};
    tmoe_error err = {0};
    if (tmoe_tokens_read(SPLIT, &tok, &err)) fail_msg("%s", err.msg);
    tmoe_text t;
    if (tmoe_text_open(SPLIT, &tok, &t, &err)) fail_msg("%s", err.msg);
    assert_int_equal(t.ndom, 2);
    assert_string_equal(t.domain[0], "kjv");
    assert_string_equal(t.domain[1], "shakespeare");
    assert_true(t.first[1] >= t.end[0] && t.end[1] == tok.n);
    assert_non_null(strstr(t.source, "test.domains.tsv"));
    const int L = 64, S = 6;
    tmoe_workload w = tmoe_workload_make(TMOE_WL_STANDARD, 4, L, 7);
    uint32_t *ids = malloc(sizeof(uint32_t) * (size_t)w.tokens),
             *again = malloc(sizeof *again * (size_t)w.tokens);
    assert_non_null(ids);
    assert_non_null(again);
    for (int calib = 0; calib < 2; calib++)
        for (int b = 0; b < S; b++) {
            if (tmoe_text_batch(&w, &t, b, S, calib, ids, &err)) fail_msg("%s", err.msg);
            if (tmoe_text_batch(&w, &t, b, S, calib, again, &err)) fail_msg("%s", err.msg);
            assert_memory_equal(ids, again, sizeof(uint32_t) * (size_t)w.tokens);
            for (int s = 0; s < w.n_seqs; s++) {
                int d = -1;
                int64_t slot = -1;
                if (find_window(&t, ids + (size_t)s * L, L, &d, &slot) < 0)
                    fail_msg("batch %d sequence %d is no window of a domain", b, s);
                int is_calib = slot % TMOE_TEXT_CALIB_EVERY == TMOE_TEXT_CALIB_EVERY - 1;
                if (is_calib != calib)
                    fail_msg("batch %d sequence %d: slot %lld of %s, calib %d", b, s,
                             (long long)slot, t.domain[d], calib);
            }
        }
    /* skewed: the first half of the samples from the first domain, the rest from the second */
    tmoe_workload sk = tmoe_workload_make(TMOE_WL_SKEWED, 4, L, 7);
    for (int b = 0; b < S; b++) {
        if (tmoe_text_batch(&sk, &t, b, S, 0, ids, &err)) fail_msg("%s", err.msg);
        for (int s = 0; s < sk.n_seqs; s++) {
            int d = -1;
            int64_t slot = -1;
            assert_true(find_window(&t, ids + (size_t)s * L, L, &d, &slot) >= 0);
            if (d != (b < S / 2 ? 0 : 1))
                fail_msg("skewed batch %d of %d came from %s", b, S, t.domain[d]);
        }
    }
    free(ids);
    free(again);
    tmoe_tokens_free(&tok);
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_domains_file_errors(void **state) {
    (void)state;
    const uint32_t ids[40] = {1, 2, 3};
    tmoe_error err = {0};
    const char *p = tu_tmppath("d.tokens");
    if (tmoe_tokens_write(p, ids, 40, 10, 0, &err)) fail_msg("%s", err.msg);
    tmoe_tokens tok = {0};
    if (tmoe_tokens_read(p, &tok, &err)) fail_msg("%s", err.msg);
    tmoe_text t;
    /* none: the halves, said so */
    if (tmoe_text_open(p, &tok, &t, &err)) fail_msg("%s", err.msg);
    assert_int_equal(t.ndom, 2);
    assert_true(t.end[0] == 20 && t.first[1] == 20);
    assert_non_null(strstr(t.source, "halves"));
    char sum[32], text[512];
    snprintf(sum, sizeof sum, "%016llx", (unsigned long long)t.checksum);
    const char *dp = tu_tmppath("d.domains.tsv");
    write_file(dp, "tokens\t41\n");
    assert_int_equal(tmoe_text_open(p, &tok, &t, &err), TMOE_EFORMAT);
    assert_non_null(strstr(err.msg, "d.domains.tsv:1"));
    assert_non_null(strstr(err.msg, "41"));
    write_file(dp, "tokens\t40\nfnv1a64\t0000000000000001\n");
    assert_int_equal(tmoe_text_open(p, &tok, &t, &err), TMOE_EFORMAT);
    assert_non_null(strstr(err.msg, ":2"));
    snprintf(text, sizeof text, "tokens\t40\nfnv1a64\t%s\na\t0\t30\nb\t20\t40\n", sum);
    write_file(dp, text);
    assert_int_equal(tmoe_text_open(p, &tok, &t, &err), TMOE_EFORMAT);
    assert_non_null(strstr(err.msg, "overlaps"));
    snprintf(text, sizeof text, "# two\ntokens\t40\nfnv1a64\t%s\na\t0\t25\nb\t25\t41\n", sum);
    write_file(dp, text);
    assert_int_equal(tmoe_text_open(p, &tok, &t, &err), TMOE_EFORMAT);
    assert_non_null(strstr(err.msg, "d.domains.tsv:5"));
    snprintf(text, sizeof text, "tokens\t40\nfnv1a64\t%s\na\t0\t25\nb\t25\t40\n", sum);
    write_file(dp, text);
    if (tmoe_text_open(p, &tok, &t, &err)) fail_msg("%s", err.msg);
    assert_int_equal(t.ndom, 2);
    assert_true(t.end[0] == 25 && t.first[1] == 25);
    /* no window of 16 fits twice in 15 tokens: the scored pool of b is its one slot */
    tmoe_workload w = tmoe_workload_make(TMOE_WL_SKEWED, 1, 16, 1);
    uint32_t out[16];
    assert_int_equal(tmoe_text_batch(&w, &t, 1, 2, 0, out, &err), TMOE_EINVAL);
    assert_non_null(strstr(err.msg, "b"));
    tmoe_tokens_free(&tok);
}

static tmoe_run_config lm_config(const char *out) {
    tmoe_run_config c = tmoe_run_config_default();
    for (int s = 0; s < TMOE_ROUTE_STRATEGY_COUNT; s++) c.strategies[s] = 0;
    c.strategies[TMOE_ROUTE_BASELINE] = c.strategies[TMOE_ROUTE_STATIC_OPTIMAL] = 1;
    c.strategies[TMOE_ROUTE_KERNEL_AWARE_TTHA] = 1;
    for (int w = 0; w < TMOE_WL_COUNT; w++) c.workloads[w] = 0;
    c.workloads[TMOE_WL_STANDARD] = c.workloads[TMOE_WL_SKEWED] = 1;
    c.model_dir = MIXTRAL;
    c.tokens_path = TEXT;
    c.backend = TMOE_BACKEND_CPU;
    c.telemetry = TMOE_TELEMETRY_SIM;
    c.block.seq_len = 8;
    c.batch_size = 2;
    c.num_samples = 3;
    c.warmup_batches = 1;
    c.trace_batches = 1;
    c.cooldown_s = 0.0;
    c.steady_s = 0.0;
    c.out_dir = out;
    return c;
}

typedef struct lm_row {
    char wl[32], st[32];
    int batch, tokens, scored;
    char nll[40], nllb[40];
    long counts_sum;
    double pred_j, agree;
} lm_row;

static int read_rows(const char *dir, lm_row *rows, int cap) {
    char path[600];
    snprintf(path, sizeof path, "%s/batches.csv", dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char *line = NULL, *buf = NULL, *fields[TMOE_RL_NCOLS + 1];
    size_t lcap = 0;
    ssize_t len;
    int n = 0, first = 1;
    while ((len = getline(&line, &lcap, f)) > 0) {
        line[len - 1] = '\0';
        buf = realloc(buf, (size_t)len + 1);
        assert_int_equal(tmoe_runlog_split(line, buf, fields, TMOE_RL_NCOLS), TMOE_RL_NCOLS);
        if (first) {
            first = 0;
            continue;
        }
        assert_true(n < cap);
        lm_row *r = &rows[n++];
        snprintf(r->wl, sizeof r->wl, "%s", fields[TMOE_RL_WORKLOAD]);
        snprintf(r->st, sizeof r->st, "%s", fields[TMOE_RL_STRATEGY]);
        r->batch = atoi(fields[TMOE_RL_BATCH_IDX]);
        r->tokens = atoi(fields[TMOE_RL_TOKENS]);
        r->scored = atoi(fields[TMOE_RL_TOKENS_SCORED]);
        snprintf(r->nll, sizeof r->nll, "%s", fields[TMOE_RL_NLL]);
        snprintf(r->nllb, sizeof r->nllb, "%s", fields[TMOE_RL_NLL_BASELINE]);
        r->pred_j = strtod(fields[TMOE_RL_PREDICTED_ENERGY_J], NULL);
        r->agree = strtod(fields[TMOE_RL_TOPK_AGREEMENT], NULL);
        assert_string_equal(fields[TMOE_RL_ENERGY_EXPERT_SHAPE], "mixtral 4096x14336");
        r->counts_sum = 0;
        int items = 0;
        for (char *s = fields[TMOE_RL_LAYER_EXPERT_COUNTS]; *s;) {
            r->counts_sum += strtol(s, &s, 10);
            items++;
            if (*s == ';') s++;
        }
        assert_int_equal(items, 2 * 5); /* the reference mixtral: 2 MoE layers of 5 experts */
        assert_true(isfinite(strtod(r->nll, NULL)));
    }
    free(line);
    free(buf);
    fclose(f);
    return n;
}

static void test_lm_run(void **state) {
    (void)state;
    const char *out = tu_tmppath("lmrun");
    tmoe_run_config c = lm_config(out);
    tmoe_error err = {0};
    if (tmoe_run(&c, NULL, &err)) fail_msg("%s", err.msg);
    lm_row rows[64];
    int n = read_rows(out, rows, 64);
    assert_int_equal(n, 3 * 2 * 3);
    int checked = 0;
    for (int i = 0; i < n; i++) {
        lm_row *r = &rows[i];
        assert_int_equal(r->tokens, 2 * 8);
        assert_int_equal(r->scored, 2 * 7);
        assert_int_equal(r->counts_sum, (long)r->tokens * 2 * 2); /* T x top-2 x 2 layers */
        if (!strcmp(r->st, "baseline")) assert_string_equal(r->nll, r->nllb);
        /* the baseline forward of any strategy is the baseline combination's on the same
         * windows, to the last digit */
        for (int j = 0; j < n; j++)
            if (!strcmp(rows[j].st, "baseline") && !strcmp(rows[j].wl, r->wl) &&
                rows[j].batch == r->batch) {
                assert_string_equal(r->nllb, rows[j].nll);
                checked++;
            }
    }
    assert_int_equal(checked, n);
    /* metadata: the model, the text's checksum and the shape are recorded and fingerprinted */
    char path[600];
    snprintf(path, sizeof path, "%s/metadata.json", out);
    json_error_t je;
    json_t *m = json_load_file(path, 0, &je);
    if (!m) fail_msg("%s: %s", path, je.text);
    json_t *fp = json_object_get(m, "fingerprint");
    assert_string_equal(json_string_value(json_object_get(fp, "model.lm.dir")), MIXTRAL);
    assert_non_null(json_object_get(fp, "tokens.fnv1a64"));
    assert_null(json_object_get(fp, "tokens.path"));
    assert_string_equal(json_string_value(json_object_get(fp, "energy_expert_shape")),
                        "mixtral 4096x14336");
    json_decref(m);

    /* resume with another text of the same vocabulary: refused, naming what differs */
    tmoe_tokens tok = {0};
    if (tmoe_tokens_read(TEXT, &tok, &err)) fail_msg("%s", err.msg);
    tok.ids[0] = (tok.ids[0] + 1) % (uint32_t)tok.vocab_size;
    const char *other = tu_tmppath("other.tokens");
    if (tmoe_tokens_write(other, tok.ids, tok.n, tok.vocab_size, 0, &err)) fail_msg("%s", err.msg);
    tmoe_tokens_free(&tok);
    c.tokens_path = other;
    c.resume = 1;
    int rc = tmoe_run(&c, NULL, &err);
    assert_int_not_equal(rc, TMOE_OK);
    if (!strstr(err.msg, "tokens.fnv1a64")) fail_msg("resume with another text: %s", err.msg);
}

/* Decode steps: the same windows fed one position a step score the same text as one
 * prefill forward under baseline routing (the model is causal; only the summation order
 * differs), each step is routed on its own (every strategy's copies still add up to T x k
 * per layer), and the metadata says which. */
static void test_lm_decode(void **state) {
    (void)state;
    const char *dir[2] = {tu_tmppath("lmprefill"), tu_tmppath("lmdecode")};
    lm_row rows[2][64];
    int n[2];
    for (int d = 0; d < 2; d++) {
        tmoe_run_config c = lm_config(dir[d]);
        c.lm_decode = d;
        c.workloads[TMOE_WL_SKEWED] = 0;
        tmoe_error err = {0};
        if (tmoe_run(&c, NULL, &err)) fail_msg("%s", err.msg);
        n[d] = read_rows(dir[d], rows[d], 64);
        assert_int_equal(n[d], 3 * 3);
    }
    for (int i = 0; i < n[1]; i++) {
        const lm_row *r = &rows[1][i];
        assert_int_equal(r->counts_sum, (long)r->tokens * 2 * 2);
        for (int j = 0; j < n[0]; j++) {
            const lm_row *p = &rows[0][j];
            if (strcmp(p->st, "baseline") || p->batch != r->batch) continue;
            double a = strtod(r->nllb, NULL), b = strtod(p->nll, NULL);
            if (!(fabs(a - b) <= 1e-5 * fabs(b)))
                fail_msg("batch %d: decode baseline nll %.9g, prefill %.9g", r->batch, a, b);
        }
    }
    char path[600];
    snprintf(path, sizeof path, "%s/metadata.json", dir[1]);
    json_error_t je;
    json_t *m = json_load_file(path, 0, &je);
    if (!m) fail_msg("%s: %s", path, je.text);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(m, "config"), "lm_steps")), "decode");
    json_decref(m);
}

static const lm_row *find_row(const lm_row *rows, int n, const char *st, const lm_row *like) {
    for (int i = 0; i < n; i++)
        if (!strcmp(rows[i].st, st) && !strcmp(rows[i].wl, like->wl) &&
            rows[i].batch == like->batch)
            return &rows[i];
    fail_msg("no %s row for %s batch %d", st, like->wl, like->batch);
    return NULL;
}

/* The comparisons in a run of the decoder LM: every row counts k copies a token (padding
 * included); top-k reduced by one keeps half of top-2 and costs less predicted energy than
 * baseline; top-p at 0.01 keeps one expert a token: the same forward as topk_minus_one; at
 * their neutral settings (top-p 1, a capacity no expert fills, nothing pruned) they are
 * baseline routing to the last digit; the random block refuses them. */
static void test_lm_comparisons(void **state) {
    (void)state;
    const char *out = tu_tmppath("lmcmp");
    tmoe_run_config c = lm_config(out);
    for (int s = 0; s < TMOE_ROUTE_STRATEGY_COUNT; s++) c.strategies[s] = 0;
    c.strategies[TMOE_ROUTE_BASELINE] = 1;
    for (int s = TMOE_ROUTE_FIRST_COMPARISON; s < TMOE_ROUTE_STRATEGY_COUNT; s++)
        c.strategies[s] = 1;
    c.workloads[TMOE_WL_SKEWED] = 0;
    c.router.top_p = 0.01;
    c.router.prune_experts = 1;
    c.router.cap_factor = 0.5;
    tmoe_error err = {0};
    if (tmoe_run(&c, NULL, &err)) fail_msg("%s", err.msg);
    lm_row rows[64];
    int n = read_rows(out, rows, 64);
    assert_int_equal(n, 5 * 3);
    double e_base = 0.0, e_m1 = 0.0;
    int cap_dropped = 0;
    for (int i = 0; i < n; i++) {
        const lm_row *r = &rows[i];
        /* copies that ran, over 2 MoE layers: a padded slot (weight 0) does not run */
        long full = (long)r->tokens * 2 * 2;
        if (!strcmp(r->st, "baseline") || !strcmp(r->st, "expert_prune"))
            assert_int_equal(r->counts_sum, full);
        else if (!strcmp(r->st, "topk_minus_one") || !strcmp(r->st, "top_p")) /* p = 0.01 */
            assert_int_equal(r->counts_sum, full / 2);
        else /* capacity, factor 0.5, dropping: at most ceil(0.5 T k / E) copies an expert */
            assert_true(r->counts_sum < full);
        assert_string_equal(r->nllb, find_row(rows, n, "baseline", r)->nll);
        if (!strcmp(r->st, "topk_minus_one")) {
            assert_true(r->agree == 0.5);
            e_m1 += r->pred_j;
            e_base += find_row(rows, n, "baseline", r)->pred_j;
            assert_string_equal(r->nll, find_row(rows, n, "top_p", r)->nll);
        }
        if (!strcmp(r->st, "capacity")) cap_dropped += r->agree < 1.0;
        if (!strcmp(r->st, "expert_prune")) assert_true(r->agree < 1.0 && r->agree > 0.5);
    }
    assert_true(e_m1 < e_base);
    assert_true(cap_dropped > 0);
    /* the metadata records the comparisons' settings */
    char path[600];
    snprintf(path, sizeof path, "%s/metadata.json", out);
    json_error_t je;
    json_t *m = json_load_file(path, 0, &je);
    if (!m) fail_msg("%s: %s", path, je.text);
    json_t *rt = json_object_get(json_object_get(m, "config"), "router");
    assert_true(json_real_value(json_object_get(rt, "top_p")) == 0.01);
    assert_int_equal(json_integer_value(json_object_get(rt, "prune_experts")), 1);
    assert_string_equal(json_string_value(json_object_get(rt, "capacity_overflow")), "drop");
    json_decref(m);

    /* neutral settings: baseline routing */
    c = lm_config(tu_tmppath("lmcmp0"));
    for (int s = 0; s < TMOE_ROUTE_STRATEGY_COUNT; s++) c.strategies[s] = 0;
    c.strategies[TMOE_ROUTE_TOP_P] = c.strategies[TMOE_ROUTE_EXPERT_PRUNE] = 1;
    c.strategies[TMOE_ROUTE_CAPACITY] = 1;
    c.workloads[TMOE_WL_SKEWED] = 0;
    c.router.top_p = 1.0;
    c.router.prune_experts = 0;
    c.router.cap_factor = 100.0;
    if (tmoe_run(&c, NULL, &err)) fail_msg("%s", err.msg);
    n = read_rows(c.out_dir, rows, 64);
    assert_int_equal(n, 3 * 3);
    for (int i = 0; i < n; i++) {
        assert_string_equal(rows[i].nll, rows[i].nllb);
        assert_true(rows[i].agree == 1.0);
    }

    /* the random block routes by biases only */
    c = lm_config(tu_tmppath("lmcmp_block"));
    c.model_dir = NULL;
    c.tokens_path = NULL;
    c.strategies[TMOE_ROUTE_CAPACITY] = 1;
    assert_int_equal(tmoe_run(&c, NULL, &err), TMOE_ENOTSUP);
    if (!strstr(err.msg, "capacity") || !strstr(err.msg, "--model"))
        fail_msg("block with a comparison: %s", err.msg);
}

static void test_lm_errors(void **state) {
    (void)state;
    tmoe_tokens tok = {0};
    tmoe_error err = {0};
    if (tmoe_tokens_read(TEXT, &tok, &err)) fail_msg("%s", err.msg);
    const char *wide = tu_tmppath("wide.tokens");
    if (tmoe_tokens_write(wide, tok.ids, tok.n, tok.vocab_size + 100, 0, &err))
        fail_msg("%s", err.msg);
    tmoe_tokens_free(&tok);
    tmoe_run_config c = lm_config(tu_tmppath("vocab"));
    c.tokens_path = wide;
    assert_int_not_equal(tmoe_run(&c, NULL, &err), TMOE_OK);
    if (!strstr(err.msg, "wide.tokens") || !strstr(err.msg, "311") || !strstr(err.msg, "211") ||
        !strstr(err.msg, "mixtral"))
        fail_msg("vocabulary mismatch: %s", err.msg);
    /* the simulated GPU bills the cost model's shape only */
    c = lm_config(tu_tmppath("shape"));
    assert_int_equal(tmoe_expert_shape_parse("trained", &c.expert_shape, &err), TMOE_OK);
    c.expert_shape_given = 1;
    assert_int_not_equal(tmoe_run(&c, NULL, &err), TMOE_OK);
    if (!strstr(err.msg, "4096x14336") || !strstr(err.msg, "36x20")) fail_msg("shape: %s", err.msg);
    assert_int_equal(tmoe_expert_shape_parse("12x", &c.expert_shape, &err), TMOE_EINVAL);
    assert_int_equal(tmoe_expert_shape_parse("1024x2816", &c.expert_shape, &err), TMOE_OK);
    assert_true(c.expert_shape.d_model == 1024 && c.expert_shape.d_ff == 2816);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_windows_of_the_test_split),
        cmocka_unit_test(test_domains_file_errors),
        cmocka_unit_test(test_lm_run),
        cmocka_unit_test(test_lm_decode),
        cmocka_unit_test(test_lm_comparisons),
        cmocka_unit_test(test_lm_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
