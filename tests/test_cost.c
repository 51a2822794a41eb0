/* Cost model: file round trip, validation messages, log-token interpolation, expert sums,
 * compute_energy_loss against a direct reference, merging, saving whole or not at all, and
 * the cost providers (tables over a model, analytic). */
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include "testutil.h"
#include "thermoe/cost.h"

#define TOL_JSON 1e-9 /* relative: values pass through %.12g in the file */
#define TOL_SUM 1e-12 /* relative: same sums in a different order */

static uint64_t seed(void) {
    static uint64_t s;
    if (!s) {
        s = (uint64_t)time(NULL) ^ 0x5eedull;
        print_message("seed %llu\n", (unsigned long long)s);
    }
    return s++;
}

static tmoe_cost_entry rand_entry(tmoe_rng *r, tmoe_op op, tmoe_etype et, tmoe_impl impl,
                                  int tokens) {
    tmoe_cost_entry e = {.op = op, .expert_type = et, .impl = impl, .tokens = tokens};
    e.latency_median_ms = 0.01 + tmoe_rng_uniform(r);
    e.latency_p90_ms = e.latency_median_ms * (1.0 + 0.2 * tmoe_rng_uniform(r));
    e.energy_board_j = 0.001 + tmoe_rng_uniform(r);
    e.energy_dynamic_j = e.energy_board_j * tmoe_rng_uniform(r);
    e.avg_power_w = 100 + 600 * tmoe_rng_uniform(r);
    e.temp_impact_c_per_s = tmoe_rng_uniform(r) - 0.2;
    e.samples = 20 + tmoe_rng_below(r, 1000);
    e.throttled = (int)tmoe_rng_below(r, 2);
    return e;
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

static void assert_rel(const char *what, double got, double want, double tol) {
    if (!(fabs(got - want) <= tol * fmax(1e-30, fabs(want))))
        fail_msg("%s: got %.17g, want %.17g (rel tol %g)", what, got, want, tol);
}

static void test_roundtrip(void **state) {
    (void)state;
    tmoe_rng r;
    tmoe_rng_seed(&r, seed());
    tmoe_error err = {0};
    tmoe_cost_model *cm;
    ASSERT_OK(tmoe_cost_create(&cm, &err), &err);
    tmoe_cost_meta m = tmoe_cost_get_meta(cm);
    snprintf(m.device_name, sizeof m.device_name, "NVIDIA H100 80GB HBM3");
    snprintf(m.created, sizeof m.created, "2026-11-26T10:00:00Z");
    m.d_model = 4096, m.d_ff = 14336, m.group_size = 128;
    m.idle_power_w = 72.1;
    tmoe_cost_set_meta(cm, &m);
    tmoe_cost_kernel ks[2] = {{"nvjet_sm90_a", 1, 0.25}, {"dequant<4>", 2, 0.125}};
    int n = 0;
    for (int op = 0; op < 3; op++)
        for (int t = 1; t <= 64; t *= 4) {
            tmoe_cost_entry e = rand_entry(&r, (tmoe_op)(TMOE_OP_DEQUANT_UNPACK + op), TMOE_ET_Q4,
                                           TMOE_IMPL_UNFUSED, t);
            if (t == 4) {
                e.kernels = ks;
                e.n_kernels = 2;
                e.has_ncu = 1;
                e.ncu_occupancy_pct = 14.12;
                e.ncu_dram_pct = NAN;
                e.avg_power_w = NAN;
            }
            ASSERT_OK(tmoe_cost_add(cm, &e, &err), &err);
            n++;
        }
    const char *path = tu_tmppath("rt.json");
    ASSERT_OK(tmoe_cost_save(cm, path, &err), &err);
    tmoe_cost_model *back;
    ASSERT_OK(tmoe_cost_load(path, &back, &err), &err);
    assert_int_equal(tmoe_cost_count(back), n);
    for (int i = 0; i < n; i++) {
        const tmoe_cost_entry *a = tmoe_cost_entry_at(cm, i), *b = tmoe_cost_entry_at(back, i);
        assert_int_equal(a->op, b->op);
        assert_int_equal(a->tokens, b->tokens);
        assert_int_equal(a->samples, b->samples);
        assert_int_equal(a->throttled, b->throttled);
        assert_rel("median", b->latency_median_ms, a->latency_median_ms, TOL_JSON);
        assert_rel("board", b->energy_board_j, a->energy_board_j, TOL_JSON);
        assert_rel("temp", b->temp_impact_c_per_s, a->temp_impact_c_per_s, TOL_JSON);
        assert_int_equal(a->n_kernels, b->n_kernels);
        if (a->tokens == 4) {
            assert_true(isnan(b->avg_power_w));
            assert_true(b->has_ncu);
            assert_true(isnan(b->ncu_dram_pct));
            assert_rel("occ", b->ncu_occupancy_pct, 14.12, TOL_JSON);
            assert_string_equal(b->kernels[1].name, "dequant<4>");
            assert_int_equal(b->kernels[1].count, 2);
        } else {
            assert_rel("power", b->avg_power_w, a->avg_power_w, TOL_JSON);
        }
    }
    tmoe_cost_meta mb = tmoe_cost_get_meta(back);
    assert_string_equal(mb.device_name, m.device_name);
    assert_int_equal(mb.d_ff, 14336);
    assert_true(isnan(mb.power_limit_w));
    /* same contents, same checksum; a change moves it */
    assert_true(tmoe_cost_checksum(cm) == tmoe_cost_checksum(back));
    tmoe_cost_entry e = *tmoe_cost_entry_at(back, 0);
    e.kernels = NULL, e.n_kernels = 0;
    e.latency_median_ms *= 1.5;
    ASSERT_OK(tmoe_cost_add(back, &e, &err), &err);
    assert_int_equal(tmoe_cost_count(back), n);
    assert_true(tmoe_cost_checksum(cm) != tmoe_cost_checksum(back));
    tmoe_cost_free(cm);
    tmoe_cost_free(back);
    tmoe_cost_free(NULL);
}

/* Each bad file is refused; the message names the file, the place and the problem. */
static void test_malformed(void **state) {
    (void)state;
    static const char *good_entry =
        "{\"op\": \"relu\", \"expert_type\": \"fp16\", \"impl\": \"fused\", \"tokens\": 8,"
        " \"latency_ms\": {\"median\": 0.1, \"p90\": 0.2}, \"energy_j\": {\"board\": 0.01, "
        "\"dynamic\": 0.005},"
        " \"avg_power_w\": 300, \"temp_impact_c_per_s\": 0.5, \"samples\": 40, \"throttled\": "
        "false,"
        " \"kernels\": []}";
    struct {
        const char *text; /* %s = a good entry */
        const char *want[3];
    } cases[] = {
        {"{\"schema\": \"thermoe.cost_model/1\",\n \"entries\": [\n %s,\n  {\"op\": }]}",
         {":4:10:", "'}'", NULL}},
        {"{\"schema\": \"thermoe.cost_model/2\", \"entries\": [%s]}",
         {"schema", "thermoe.cost_model/2", NULL}},
        {"{\"entries\": [%s]}", {"schema", "missing", NULL}},
        {"{\"schema\": \"thermoe.cost_model/1\"}", {"entries", "missing", NULL}},
        {"{\"schema\": \"thermoe.cost_model/1\", \"entries\": [%s, {\"op\": \"relu\", "
         "\"expert_type\": \"fp16\", "
         "\"impl\": \"fused\", \"tokens\": 16}]}",
         {"entries[1]", "latency_ms", "missing"}},
        {"{\"schema\": \"thermoe.cost_model/1\", \"entries\": [%s, {\"op\": \"relu\", "
         "\"expert_type\": \"fp16\", "
         "\"impl\": \"fused\", \"tokens\": 16, \"latency_ms\": {\"median\": -1, \"p90\": 1}, "
         "\"energy_j\": "
         "{\"board\": 1, \"dynamic\": 0}, \"avg_power_w\": 1, \"temp_impact_c_per_s\": 0, "
         "\"samples\": 1}]}",
         {"entries[1]", "latency_ms.median", ">= 0"}},
        {"{\"schema\": \"thermoe.cost_model/1\", \"entries\": [%s, {\"op\": \"relu\", "
         "\"expert_type\": \"fp16\", "
         "\"impl\": \"fused\", \"tokens\": 16, \"latency_ms\": {\"median\": NaN, \"p90\": 1}}]}",
         {":1:", "invalid token", NULL}},
        {"{\"schema\": \"thermoe.cost_model/1\", \"entries\": [%s, {\"op\": \"relu\", "
         "\"expert_type\": \"fp16\", "
         "\"impl\": \"fused\", \"tokens\": 16, \"latency_ms\": {\"median\": 1, \"p90\": 1}, "
         "\"energy_j\": "
         "{\"board\": \"NaN\", \"dynamic\": 0}, \"avg_power_w\": 1, \"temp_impact_c_per_s\": 0, "
         "\"samples\": 1}]}",
         {"entries[1]", "energy_j.board", "expected a number, got a string"}},
        {"{\"schema\": \"thermoe.cost_model/1\", \"entries\": [{\"op\": \"linear_fc9\", "
         "\"expert_type\": \"fp16\"}]}",
         {"entries[0]", "op", "linear_fc9"}},
        {"{\"schema\": \"thermoe.cost_model/1\", \"entries\": [%s, %s]}",
         {"entries[1]", "second entry", NULL}},
        {"{\"schema\": \"thermoe.cost_model/1\", \"entries\": [%s, {\"op\": \"relu\", "
         "\"expert_type\": \"fp16\", "
         "\"impl\": \"fused\", \"tokens\": 2.5}]}",
         {"entries[1]", "tokens", "integer"}},
        {"{\"schema\": \"thermoe.cost_model/1\", \"entries\": [%s, {\"op\": \"relu\", "
         "\"expert_type\": \"fp16\", "
         "\"impl\": \"fused\", \"tokens\": 16, \"latency_ms\": {\"median\": 1e999, \"p90\": 1}}]}",
         {":1:", "overflow", NULL}},
        {"[1, 2]", {"top", "array", NULL}},
        {"", {":1:", NULL, NULL}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        char text[4096], name[64];
        snprintf(text, sizeof text, cases[c].text, good_entry, good_entry);
        snprintf(name, sizeof name, "bad%zu.json", c);
        const char *path = tu_tmppath(name);
        write_file(path, text);
        tmoe_error err = {0};
        tmoe_cost_model *cm = (tmoe_cost_model *)1;
        int rc = tmoe_cost_load(path, &cm, &err);
        if (rc == 0) fail_msg("case %zu: accepted: %s", c, text);
        assert_int_equal(rc, TMOE_EFORMAT);
        assert_null(cm);
        if (!strstr(err.msg, path)) fail_msg("case %zu: message lacks the file: %s", c, err.msg);
        for (int w = 0; w < 3 && cases[c].want[w]; w++)
            if (!strstr(err.msg, cases[c].want[w]))
                fail_msg("case %zu: message lacks '%s': %s", c, cases[c].want[w], err.msg);
    }
    tmoe_error err = {0};
    tmoe_cost_model *cm;
    assert_int_equal(tmoe_cost_load(tu_tmppath("no-such.json"), &cm, &err), TMOE_EIO);
    assert_non_null(strstr(err.msg, "no-such.json"));
}

/* Piecewise-linear in log(tokens); outside the range clamp or extend, and say so. */
static void test_interpolation(void **state) {
    (void)state;
    tmoe_rng r;
    tmoe_rng_seed(&r, seed());
    tmoe_error err = {0};
    tmoe_cost_model *cm;
    ASSERT_OK(tmoe_cost_create(&cm, &err), &err);
    const int toks[3] = {2, 8, 32};
    double lat[3], en[3];
    for (int i = 2; i >= 0; i--) { /* added out of order on purpose */
        tmoe_cost_entry e =
            rand_entry(&r, TMOE_OP_LINEAR_FC1, TMOE_ET_FP16, TMOE_IMPL_FUSED, toks[i]);
        lat[i] = e.latency_median_ms = 0.1 * (i + 1) + 0.05 * tmoe_rng_uniform(&r);
        en[i] = e.energy_board_j;
        ASSERT_OK(tmoe_cost_add(cm, &e, &err), &err);
    }
    tmoe_cost_value v;
    for (int i = 0; i < 3; i++) {
        ASSERT_OK(tmoe_cost_lookup(cm, TMOE_OP_LINEAR_FC1, TMOE_ET_FP16, TMOE_IMPL_FUSED, toks[i],
                                   &v, &err),
                  &err);
        assert_rel("exact", v.latency_ms, lat[i], TOL_SUM);
        assert_int_equal(v.extrapolated, 0);
    }
    /* t = 4 lies half way between 2 and 8 in log space; t = 16 half way between 8 and 32 */
    ASSERT_OK(tmoe_cost_lookup(cm, TMOE_OP_LINEAR_FC1, TMOE_ET_FP16, TMOE_IMPL_FUSED, 4, &v, &err),
              &err);
    assert_rel("log-mid", v.latency_ms, 0.5 * (lat[0] + lat[1]), TOL_SUM);
    assert_rel("log-mid energy", v.energy_j, 0.5 * (en[0] + en[1]), TOL_SUM);
    assert_int_equal(v.lo_tokens, 2);
    assert_int_equal(v.hi_tokens, 8);
    double t = 8 * pow(4.0, 0.25); /* a quarter of the way from 8 to 32 */
    ASSERT_OK(tmoe_cost_lookup(cm, TMOE_OP_LINEAR_FC1, TMOE_ET_FP16, TMOE_IMPL_FUSED, t, &v, &err),
              &err);
    assert_rel("quarter", v.latency_ms, lat[1] + 0.25 * (lat[2] - lat[1]), 1e-9);
    /* beyond: clamp by default, linear on request; both flagged */
    ASSERT_OK(
        tmoe_cost_lookup(cm, TMOE_OP_LINEAR_FC1, TMOE_ET_FP16, TMOE_IMPL_FUSED, 128, &v, &err),
        &err);
    assert_int_equal(v.extrapolated, 1);
    assert_rel("clamp", v.latency_ms, lat[2], TOL_SUM);
    tmoe_cost_set_extrapolation(cm, TMOE_COST_EXTRAP_LINEAR);
    ASSERT_OK(
        tmoe_cost_lookup(cm, TMOE_OP_LINEAR_FC1, TMOE_ET_FP16, TMOE_IMPL_FUSED, 128, &v, &err),
        &err);
    assert_int_equal(v.extrapolated, 1);
    assert_rel("linear", v.latency_ms, lat[2] + 1.0 * (lat[2] - lat[1]), 1e-9);
    ASSERT_OK(tmoe_cost_lookup(cm, TMOE_OP_LINEAR_FC1, TMOE_ET_FP16, TMOE_IMPL_FUSED, 1, &v, &err),
              &err);
    assert_int_equal(v.extrapolated, 1);
    assert_rel("linear low", v.latency_ms, fmax(0.0, lat[0] - 0.5 * (lat[1] - lat[0])), 1e-9);
    assert_int_equal(
        tmoe_cost_lookup(cm, TMOE_OP_LINEAR_FC1, TMOE_ET_FP16, TMOE_IMPL_FUSED, 0.5, &v, &err),
        TMOE_EINVAL);
    /* missing key: the message lists what the model has */
    assert_int_equal(
        tmoe_cost_lookup(cm, TMOE_OP_LINEAR_FC2, TMOE_ET_Q2, TMOE_IMPL_FUSED, 4, &v, &err),
        TMOE_EINVAL);
    assert_non_null(strstr(err.msg, "linear_fc2/q2/fused"));
    assert_non_null(strstr(err.msg, "linear_fc1/fp16/fused (tokens 2-32)"));
    /* bf16 without entries of its own: fp16's (the same bytes); with its own: those */
    ASSERT_OK(tmoe_cost_lookup(cm, TMOE_OP_LINEAR_FC1, TMOE_ET_BF16, TMOE_IMPL_FUSED, 8, &v, &err),
              &err);
    assert_rel("bf16 as fp16", v.latency_ms, lat[1], TOL_SUM);
    tmoe_cost_entry eb = rand_entry(&r, TMOE_OP_LINEAR_FC1, TMOE_ET_BF16, TMOE_IMPL_FUSED, 8);
    eb.latency_median_ms = 7.0;
    ASSERT_OK(tmoe_cost_add(cm, &eb, &err), &err);
    ASSERT_OK(tmoe_cost_lookup(cm, TMOE_OP_LINEAR_FC1, TMOE_ET_BF16, TMOE_IMPL_FUSED, 8, &v, &err),
              &err);
    assert_rel("bf16 own entry", v.latency_ms, 7.0, TOL_SUM);
    tmoe_cost_free(cm);
}

/* A model with every expert op for every type and impl at tokens 1..256; energy of op o at
 * t tokens = base[o][et][impl] * (1 + log2 t), exactly linear in log tokens. */
static double g_base[TMOE_OP_COUNT][TMOE_ET_COUNT][TMOE_IMPL_COUNT];

static tmoe_cost_model *expert_model(tmoe_rng *r) {
    tmoe_error err = {0};
    tmoe_cost_model *cm;
    ASSERT_OK(tmoe_cost_create(&cm, &err), &err);
    for (int et = 0; et < TMOE_ET_COUNT; et++)
        for (int im = 0; im < TMOE_IMPL_COUNT; im++) {
            tmoe_op seq[4];
            int n = tmoe_expert_op_sequence((tmoe_etype)et, (tmoe_impl)im, seq);
            for (int i = 0; i < n; i++) {
                g_base[seq[i]][et][im] = 0.001 + 0.01 * tmoe_rng_uniform(r);
                for (int t = 1; t <= 256; t *= 2) {
                    tmoe_cost_entry e = rand_entry(r, seq[i], (tmoe_etype)et, (tmoe_impl)im, t);
                    e.energy_board_j = g_base[seq[i]][et][im] * (1 + log2(t));
                    e.energy_dynamic_j = 0.5 * e.energy_board_j;
                    ASSERT_OK(tmoe_cost_add(cm, &e, &err), &err);
                }
            }
        }
    return cm;
}

static double ref_expert_energy(tmoe_etype et, tmoe_impl im, double t) {
    double s = g_base[TMOE_OP_LINEAR_FC1][et][im] + g_base[TMOE_OP_RELU][et][im] +
               g_base[TMOE_OP_LINEAR_FC2][et][im];
    if (et != TMOE_ET_FP16 && im == TMOE_IMPL_UNFUSED) s += g_base[TMOE_OP_DEQUANT_UNPACK][et][im];
    return s * (1 + log2(t));
}

static void test_expert_and_energy_loss(void **state) {
    (void)state;
    tmoe_rng r;
    tmoe_rng_seed(&r, seed());
    tmoe_cost_model *cm = expert_model(&r);
    tmoe_error err = {0};
    tmoe_cost_value v;
    for (int et = 0; et < TMOE_ET_COUNT; et++)
        for (int im = 0; im < TMOE_IMPL_COUNT; im++) {
            double t = 1 + tmoe_rng_below(&r, 256);
            ASSERT_OK(tmoe_cost_expert(cm, (tmoe_etype)et, (tmoe_impl)im, t, &v, &err), &err);
            assert_rel("expert", v.energy_j, ref_expert_energy((tmoe_etype)et, (tmoe_impl)im, t),
                       1e-9);
            assert_int_equal(v.extrapolated, 0);
        }
    ASSERT_OK(tmoe_cost_expert(cm, TMOE_ET_Q4, TMOE_IMPL_FUSED, 0, &v, &err), &err);
    assert_true(v.energy_j == 0.0 && v.latency_ms == 0.0);

    /* energy loss against a direct double loop */
    enum { T = 37, K = 3, E = 12 };
    int32_t ids[T * K];
    float probs[T * K];
    tmoe_etype types[E];
    for (int x = 0; x < E; x++) types[x] = (tmoe_etype)tmoe_rng_below(&r, TMOE_ET_COUNT);
    for (int t = 0; t < T; t++)
        for (int j = 0; j < K; j++) {
            ids[t * K + j] = tmoe_rng_below(&r, 10) == 0 ? -1 : (int32_t)tmoe_rng_below(&r, E);
            probs[t * K + j] = (float)tmoe_rng_uniform(&r);
        }
    for (int im = 0; im < TMOE_IMPL_COUNT; im++) {
        double ref = 0.0;
        for (int i = 0; i < T * K; i++) {
            if (ids[i] < 0) continue;
            int cnt = 0;
            for (int q = 0; q < T * K; q++) cnt += ids[q] == ids[i];
            ref += probs[i] * ref_expert_energy(types[ids[i]], (tmoe_impl)im, cnt);
        }
        double got;
        ASSERT_OK(tmoe_cost_energy_loss(cm, T, K, ids, probs, E, types, (tmoe_impl)im, &got, &err),
                  &err);
        assert_rel("energy loss", got, ref, 1e-9);
    }
    /* an expert whose energy is unknown is refused, not summed as NaN */
    for (int t = 1; t <= 256; t *= 2) {
        tmoe_cost_entry unk = rand_entry(&r, TMOE_OP_RELU, types[0], TMOE_IMPL_FUSED, t);
        unk.energy_board_j = NAN;
        unk.energy_dynamic_j = NAN;
        ASSERT_OK(tmoe_cost_add(cm, &unk, &err), &err);
    }
    ids[0] = 0;
    double got;
    assert_int_equal(
        tmoe_cost_energy_loss(cm, T, K, ids, probs, E, types, TMOE_IMPL_FUSED, &got, &err),
        TMOE_EINVAL);
    assert_non_null(strstr(err.msg, "no board energy"));
    ids[5] = E;
    assert_int_equal(
        tmoe_cost_energy_loss(cm, T, K, ids, probs, E, types, TMOE_IMPL_FUSED, &got, &err),
        TMOE_EINVAL);
    tmoe_cost_free(cm);
}

/* The provider over a cost model: the model's expert cost at integer token counts, linear in
 * between (derivative = the segment's slope), n x the one-token cost below one token, the
 * last segment extended beyond max_tokens, and errors for bad token counts and experts. */
static void expect_cost(const char *what, const tmoe_expert_cost *got,
                        const tmoe_expert_cost *want) {
    assert_rel(what, got->energy_j, want->energy_j, 1e-12);
    assert_rel(what, got->latency_ms, want->latency_ms, 1e-12);
    assert_rel(what, got->temp_impact_c_per_s, want->temp_impact_c_per_s, 1e-12);
}

static tmoe_expert_cost model_cost(const tmoe_cost_model *cm, tmoe_etype et, int k) {
    tmoe_cost_value v;
    tmoe_error err = {0};
    ASSERT_OK(tmoe_cost_expert(cm, et, TMOE_IMPL_UNFUSED, k, &v, &err), &err);
    return (tmoe_expert_cost){v.energy_j, v.latency_ms, v.temp_impact_c_per_s};
}

static tmoe_expert_cost lerp_cost(const tmoe_expert_cost *a, const tmoe_expert_cost *b, double f) {
    return (tmoe_expert_cost){a->energy_j + f * (b->energy_j - a->energy_j),
                              a->latency_ms + f * (b->latency_ms - a->latency_ms),
                              a->temp_impact_c_per_s +
                                  f * (b->temp_impact_c_per_s - a->temp_impact_c_per_s)};
}

static void test_provider_table(void **state) {
    (void)state;
    tmoe_rng r;
    tmoe_rng_seed(&r, seed());
    tmoe_cost_model *cm = expert_model(&r);
    tmoe_error err = {0};
    enum { E = 3, MAX = 20 };
    const tmoe_etype types[E] = {TMOE_ET_FP16, TMOE_ET_Q4, TMOE_ET_FP16};
    tmoe_expert_cost want[E][MAX + 1]; /* the model's cost at 0..MAX tokens */
    for (int e = 0; e < E; e++) {
        want[e][0] = (tmoe_expert_cost){0, 0, 0};
        for (int k = 1; k <= MAX; k++) want[e][k] = model_cost(cm, types[e], k);
    }
    tmoe_cost_table *tab;
    ASSERT_OK(tmoe_cost_table_create(cm, types, E, TMOE_IMPL_UNFUSED, MAX, &tab, &err), &err);
    tmoe_cost_free(cm); /* the tables hold what they need */
    assert_int_equal(tmoe_cost_table_num_experts(tab), E);
    assert_int_equal(tmoe_cost_table_max_tokens(tab), MAX);
    tmoe_cost_provider p = tmoe_cost_table_provider(tab);
    assert_non_null(p.expert_cost_deriv);
    tmoe_expert_cost c, d;
    for (int e = 0; e < E; e++) {
        for (int k = 0; k <= MAX; k++) { /* exact at integer counts */
            ASSERT_OK(p.expert_cost(p.ctx, e, k, &c, &err), &err);
            expect_cost("integer count", &c, &want[e][k]);
        }
        for (int i = 0; i < 50; i++) { /* linear in between, slope as derivative */
            int k = 1 + (int)tmoe_rng_below(&r, MAX - 1);
            double f = tmoe_rng_uniform(&r);
            ASSERT_OK(p.expert_cost(p.ctx, e, k + f, &c, &err), &err);
            tmoe_expert_cost w = lerp_cost(&want[e][k], &want[e][k + 1], f);
            expect_cost("between counts", &c, &w);
            ASSERT_OK(p.expert_cost_deriv(p.ctx, e, k + f, &d, &err), &err);
            const tmoe_expert_cost *a = &want[e][k], *b = &want[e][k + 1];
            tmoe_expert_cost slope = {b->energy_j - a->energy_j, b->latency_ms - a->latency_ms,
                                      b->temp_impact_c_per_s - a->temp_impact_c_per_s};
            expect_cost("slope", &d, &slope);
        }
        /* below one token: n x the one-token cost, derivative the one-token cost */
        ASSERT_OK(p.expert_cost(p.ctx, e, 0.3, &c, &err), &err);
        tmoe_expert_cost w = lerp_cost(&want[e][0], &want[e][1], 0.3);
        assert_rel("below one token", c.energy_j, 0.3 * want[e][1].energy_j, 1e-12);
        expect_cost("below one token", &c, &w);
        ASSERT_OK(p.expert_cost_deriv(p.ctx, e, 0.3, &d, &err), &err);
        expect_cost("slope below one token", &d, &want[e][1]);
        /* beyond max_tokens: the last segment extended */
        ASSERT_OK(p.expert_cost(p.ctx, e, MAX + 2.5, &c, &err), &err);
        w = lerp_cost(&want[e][MAX - 1], &want[e][MAX], 3.5);
        expect_cost("beyond max_tokens", &c, &w);
    }
    /* experts of the same type share their costs */
    ASSERT_OK(p.expert_cost(p.ctx, 2, 7.25, &c, &err), &err);
    ASSERT_OK(p.expert_cost(p.ctx, 0, 7.25, &d, &err), &err);
    assert_true(c.energy_j == d.energy_j && c.latency_ms == d.latency_ms);
    /* errors: negative or NaN token counts, experts out of range */
    assert_int_equal(p.expert_cost(p.ctx, 0, -1e-9, &c, &err), TMOE_EINVAL);
    assert_non_null(strstr(err.msg, "token count"));
    assert_int_equal(p.expert_cost_deriv(p.ctx, 0, -2.0, &d, &err), TMOE_EINVAL);
    assert_int_equal(p.expert_cost(p.ctx, 0, NAN, &c, &err), TMOE_EINVAL);
    assert_int_equal(p.expert_cost(p.ctx, E, 1.0, &c, &err), TMOE_EINVAL);
    assert_int_equal(p.expert_cost(p.ctx, -1, 1.0, &c, &err), TMOE_EINVAL);
    tmoe_cost_table_free(tab);
    tmoe_cost_table_free(NULL);

    /* a type the model lacks, and bad shapes, are refused at creation */
    tmoe_cost_model *empty;
    ASSERT_OK(tmoe_cost_create(&empty, &err), &err);
    assert_int_equal(tmoe_cost_table_create(empty, types, E, TMOE_IMPL_FUSED, MAX, &tab, &err),
                     TMOE_EINVAL);
    assert_null(tab);
    assert_int_equal(tmoe_cost_table_create(empty, types, E, TMOE_IMPL_FUSED, 0, &tab, &err),
                     TMOE_EINVAL);
    assert_int_equal(tmoe_cost_table_create(empty, types, 0, TMOE_IMPL_FUSED, MAX, &tab, &err),
                     TMOE_EINVAL);
    tmoe_cost_free(empty);
}

/* The analytic provider: its formula, its exact derivative, NULL arrays as zeros. */
static void test_provider_analytic(void **state) {
    (void)state;
    const double ef[2] = {1.0, 2.0}, ep[2] = {0.5, 0.25}, ec[2] = {0.1, 0.0};
    const double lp[2] = {0.01, 0.02};
    tmoe_analytic_cost ac = {2, ef, ep, ec, NULL, lp, NULL, NULL, NULL, NULL};
    tmoe_cost_provider p = tmoe_cost_analytic_provider(&ac);
    tmoe_error err = {0};
    tmoe_expert_cost c, d;
    ASSERT_OK(p.expert_cost(p.ctx, 0, 3.0, &c, &err), &err);
    assert_rel("analytic energy", c.energy_j, 1.0 + 0.5 * 3.0 + 0.1 * log(4.0), 1e-15);
    assert_rel("analytic latency", c.latency_ms, 0.03, 1e-15);
    assert_true(c.temp_impact_c_per_s == 0.0);
    ASSERT_OK(p.expert_cost_deriv(p.ctx, 0, 3.0, &d, &err), &err);
    assert_rel("analytic slope", d.energy_j, 0.5 + 0.1 / 4.0, 1e-15);
    assert_rel("analytic latency slope", d.latency_ms, 0.01, 1e-15);
    assert_int_equal(p.expert_cost(p.ctx, 2, 1.0, &c, &err), TMOE_EINVAL);
    assert_int_equal(p.expert_cost(p.ctx, 1, -1.0, &c, &err), TMOE_EINVAL);
}

static void test_merge(void **state) {
    (void)state;
    tmoe_rng r;
    tmoe_rng_seed(&r, seed());
    tmoe_error err = {0};
    tmoe_cost_model *a, *b;
    ASSERT_OK(tmoe_cost_create(&a, &err), &err);
    ASSERT_OK(tmoe_cost_create(&b, &err), &err);
    tmoe_cost_entry e1 = rand_entry(&r, TMOE_OP_RELU, TMOE_ET_Q2, TMOE_IMPL_FUSED, 16);
    tmoe_cost_entry e2 = rand_entry(&r, TMOE_OP_RELU, TMOE_ET_Q2, TMOE_IMPL_FUSED, 16);
    tmoe_cost_entry e3 = rand_entry(&r, TMOE_OP_NORM, TMOE_ET_FP16, TMOE_IMPL_UNFUSED, 4);
    ASSERT_OK(tmoe_cost_add(a, &e1, &err), &err);
    ASSERT_OK(tmoe_cost_add(b, &e2, &err), &err);
    ASSERT_OK(tmoe_cost_add(b, &e3, &err), &err);
    tmoe_cost_meta m = tmoe_cost_get_meta(a);
    m.d_model = 64, m.d_ff = 128, m.group_size = 32;
    tmoe_cost_set_meta(a, &m);
    const char *pa = tu_tmppath("a.json"), *pb = tu_tmppath("b.json");
    ASSERT_OK(tmoe_cost_save(a, pa, &err), &err);
    ASSERT_OK(tmoe_cost_save(b, pb, &err), &err);
    const char *paths[2] = {pa, pb};
    tmoe_cost_model *mg;
    ASSERT_OK(tmoe_cost_merge_files(paths, 2, &mg, &err), &err);
    assert_int_equal(tmoe_cost_count(mg), 2);
    tmoe_cost_value v;
    ASSERT_OK(tmoe_cost_lookup(mg, TMOE_OP_RELU, TMOE_ET_Q2, TMOE_IMPL_FUSED, 16, &v, &err), &err);
    assert_rel("later wins", v.latency_ms, e2.latency_median_ms, TOL_JSON);
    assert_int_equal(tmoe_cost_get_meta(mg).d_ff, 128);
    /* different shapes refuse to merge */
    m.d_ff = 256;
    tmoe_cost_set_meta(b, &m);
    assert_int_equal(tmoe_cost_merge(a, b, &err), TMOE_EINVAL);
    assert_non_null(strstr(err.msg, "shape"));
    /* a bad value is refused by add too */
    e3.energy_board_j = -1;
    assert_int_equal(tmoe_cost_add(a, &e3, &err), TMOE_EFORMAT);
    assert_non_null(strstr(err.msg, "energy_j.board"));
    tmoe_cost_free(a);
    tmoe_cost_free(b);
    tmoe_cost_free(mg);
}

/* Save with writes past limit bytes failing: the file size limit (SIGXFSZ ignored) makes a
 * write fail with EFBIG the way a full disk fails one with ENOSPC. */
static int save_with_size_limit(const tmoe_cost_model *cm, const char *path, rlim_t limit,
                                tmoe_error *err) {
    struct rlimit old;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    struct rlimit lim = {limit, old.rlim_max};
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int rc = tmoe_cost_save(cm, path, err);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, prev);
    return rc;
}

/* Files in the test directory whose name starts with prefix (left-over temporaries). */
static int count_prefixed(const char *prefix) {
    DIR *d = opendir(tu_tmpdir());
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return n;
}

static void test_save_whole_or_nothing(void **state) {
    (void)state;
    tmoe_rng r;
    tmoe_rng_seed(&r, seed());
    tmoe_error err = {0};
    tmoe_cost_model *small, *big;
    ASSERT_OK(tmoe_cost_create(&small, &err), &err);
    ASSERT_OK(tmoe_cost_create(&big, &err), &err);
    tmoe_cost_entry e = rand_entry(&r, TMOE_OP_RELU, TMOE_ET_Q4, TMOE_IMPL_FUSED, 8);
    ASSERT_OK(tmoe_cost_add(small, &e, &err), &err);
    for (int t = 1; t <= 64; t++) { /* about 25 kB of JSON */
        e = rand_entry(&r, TMOE_OP_NORM, TMOE_ET_FP16, TMOE_IMPL_FUSED, t);
        ASSERT_OK(tmoe_cost_add(big, &e, &err), &err);
    }
    const char *path = tu_tmppath("keep.json");
    ASSERT_OK(tmoe_cost_save(small, path, &err), &err);
    size_t len0 = 0, len1 = 0;
    char *before = tmoe_file_read_all(path, 0, &len0, &err);
    assert_non_null(before);

    /* a write that fails part way: the old model is still there, byte for byte */
    assert_int_equal(save_with_size_limit(big, path, 4096, &err), TMOE_EIO);
    char msg[sizeof err.msg];
    memcpy(msg, err.msg, sizeof msg);
    char *after = tmoe_file_read_all(path, 0, &len1, &err);
    assert_non_null(after);
    assert_int_equal(len1, len0);
    assert_memory_equal(after, before, len0);
    assert_non_null(strstr(msg, path));
    assert_non_null(strstr(msg, "left unchanged"));
    assert_int_equal(count_prefixed("keep.json.tmp"), 0);
    tmoe_cost_model *back;
    ASSERT_OK(tmoe_cost_load(path, &back, &err), &err);
    assert_int_equal(tmoe_cost_count(back), 1);
    tmoe_cost_free(back);
    free(after);

    /* the same save without the limit replaces it */
    ASSERT_OK(tmoe_cost_save(big, path, &err), &err);
    ASSERT_OK(tmoe_cost_load(path, &back, &err), &err);
    assert_int_equal(tmoe_cost_count(back), 64);
    tmoe_cost_free(back);

    /* a device node is not replaced or written: refused with its name, still a device */
    static const char *const devs[] = {"/dev/null", "/dev/full"};
    for (int i = 0; i < 2; i++) {
        struct stat st;
        if (stat(devs[i], &st) != 0) continue;
        memset(&err, 0, sizeof err);
        assert_int_equal(tmoe_cost_save(small, devs[i], &err), TMOE_EINVAL);
        assert_non_null(strstr(err.msg, devs[i]));
        assert_non_null(strstr(err.msg, "character device"));
        assert_int_equal(stat(devs[i], &st), 0);
        assert_true(S_ISCHR(st.st_mode));
    }
    /* nor is a directory */
    assert_int_equal(tmoe_cost_save(small, tu_tmpdir(), &err), TMOE_EINVAL);
    assert_non_null(strstr(err.msg, "a directory"));
    free(before);
    tmoe_cost_free(small);
    tmoe_cost_free(big);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),      cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_interpolation),  cmocka_unit_test(test_expert_and_energy_loss),
        cmocka_unit_test(test_merge),          cmocka_unit_test(test_save_whole_or_nothing),
        cmocka_unit_test(test_provider_table), cmocka_unit_test(test_provider_analytic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
