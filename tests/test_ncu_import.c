/* ncu CSV import: the real raw and details files of tests/data/fixtures/ncu (expected values
 * from its README and Python's csv module), a generated file with old metric names, other units,
 * quoting and CRLF, an error-only file, and merging into cost-model entries. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "testutil.h"
#include "thermoe/profile.h"

#define TOL_PCT 1e-9 /* values are parsed exactly from text */

static void assert_near(const char *what, double got, double want, double tol) {
    if (!(fabs(got - want) <= tol * fmax(1.0, fabs(want))))
        fail_msg("%s: got %.12g, want %.12g", what, got, want);
}

/* nvjet rows of h100_ncu_raw.csv (ID, ns, occupancy %, DRAM %), read with Python's csv */
static const double NVJET[3][4] = {
    {2, 44672, 14.12, 78.82}, {4, 45024, 14.11, 78.33}, {6, 44032, 14.11, 80.02}};
static const char *NVJET_NAME = "nvjet_sm90_hsh_32x64_64x16_1x2_h_bz_splitK_NNN";

static void test_raw_fixture(void **state) {
    (void)state;
    tmoe_error err = {0};
    tmoe_ncu_result *r;
    ASSERT_OK(tmoe_import_ncu(tu_data("ncu/h100_ncu_raw.csv"), &r, &err), &err);
    assert_int_equal(r->n, 17);
    assert_int_equal(r->details_layout, 0);
    for (int i = 0; i < 3; i++) {
        const tmoe_ncu_kernel *k = &r->kernels[(int)NVJET[i][0]];
        assert_int_equal(k->id, (int64_t)NVJET[i][0]);
        assert_string_equal(k->name, NVJET_NAME);
        assert_near("duration", k->duration_ns, NVJET[i][1], TOL_PCT);
        assert_near("occupancy", k->occupancy_pct, NVJET[i][2], TOL_PCT);
        assert_near("dram", k->dram_pct, NVJET[i][3], TOL_PCT);
    }
    assert_near("first duration", r->kernels[0].duration_ns, 138336, TOL_PCT);
    assert_non_null(strstr(r->kernels[0].name, "distribution_elementwise_grid_stride_kernel"));
    assert_near("last dram", r->kernels[16].dram_pct, 25.50, TOL_PCT);
    tmoe_ncu_free(r);
}

static void test_details_fixture(void **state) {
    (void)state;
    tmoe_error err = {0};
    tmoe_ncu_result *r;
    ASSERT_OK(tmoe_import_ncu(tu_data("ncu/h100_ncu_details.csv"), &r, &err), &err);
    assert_int_equal(r->n, 17);
    assert_int_equal(r->details_layout, 1);
    const tmoe_ncu_kernel *k = &r->kernels[2];
    assert_string_equal(k->name, NVJET_NAME);
    /* rows "Duration" ns 45,760; "Achieved Occupancy" 14.12; "DRAM Throughput" 78.52 */
    assert_near("duration", k->duration_ns, 45760, TOL_PCT);
    assert_near("occupancy", k->occupancy_pct, 14.12, TOL_PCT);
    assert_near("dram", k->dram_pct, 78.52, TOL_PCT);
    for (int i = 0; i < r->n; i++) assert_int_equal(r->kernels[i].id, i);
    tmoe_ncu_free(r);
}

/* "1234567.25" -> "1,234,567.25" */
static void thousands(double v, char *out, size_t cap) {
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%.2f", v);
    char *dot = strchr(tmp, '.');
    size_t ni = (size_t)(dot - tmp), o = 0;
    for (size_t i = 0; i < ni && o + 2 < cap; i++) {
        out[o++] = tmp[i];
        size_t left = ni - i - 1;
        if (left && left % 3 == 0) out[o++] = ',';
    }
    snprintf(out + o, cap - o, "%s", dot);
}

static void test_generated(void **state) {
    (void)state;
    uint64_t seed = (uint64_t)time(NULL);
    print_message("seed %llu\n", (unsigned long long)seed);
    tmoe_rng rng;
    tmoe_rng_seed(&rng, seed);
    enum { N = 9 };
    double dur_us[N], occ[N], dram[N];
    char text[16384];
    size_t o = 0;
    o += (size_t)snprintf(
        text + o, sizeof text - o,
        "==PROF== Connected to process 1\r\n==WARNING== something, with commas\r\n"
        "\"ID\",\"Kernel Name\",\"Block Size\",\"gpu__time_duration.sum\","
        "\"achieved_occupancy\",\"dram__throughput.avg.pct_of_peak_sustained_elapsed\"\r\n"
        "\"\",\"\",\"\",\"usecond\",\"%%\",\"%%\"\r\n");
    for (int i = 0; i < N; i++) {
        dur_us[i] = round(tmoe_rng_uniform(&rng) * 5e8) / 100.0;
        occ[i] = round(tmoe_rng_uniform(&rng) * 10000) / 100.0;
        dram[i] = round(tmoe_rng_uniform(&rng) * 10000) / 100.0;
        char d[64];
        thousands(dur_us[i], d, sizeof d);
        o += (size_t)snprintf(text + o, sizeof text - o,
                              "\"%d\",\"void k%d<float, 4>(int, \"\"x\"\")\",\"(128, 1, "
                              "1)\",\"%s\",\"%.2f\",\"%.2f\"\r\n",
                              i, i, d, occ[i], dram[i]);
        if (i == 4) o += (size_t)snprintf(text + o, sizeof text - o, "==PROF== midway\r\n");
    }
    tmoe_error err = {0};
    tmoe_ncu_result *r;
    ASSERT_OK(tmoe_import_ncu_buffer(text, o, "gen.csv", &r, &err), &err);
    assert_int_equal(r->n, N);
    for (int i = 0; i < N; i++) {
        char want[64];
        snprintf(want, sizeof want, "void k%d<float, 4>(int, \"x\")", i);
        assert_string_equal(r->kernels[i].name, want);
        assert_near("duration", r->kernels[i].duration_ns, dur_us[i] * 1e3, 1e-12);
        assert_near("occupancy", r->kernels[i].occupancy_pct, occ[i], TOL_PCT);
        assert_near("dram", r->kernels[i].dram_pct, dram[i], TOL_PCT);
    }
    tmoe_ncu_free(r);
}

static void test_errors(void **state) {
    (void)state;
    tmoe_error err = {0};
    tmoe_ncu_result *r = (tmoe_ncu_result *)1;
    const char *only_err =
        "==PROF== Connected to process 99\n"
        "==ERROR== ERR_NVGPUCTRPERM - The user does not have permission to access NVIDIA GPU "
        "Performance Counters on the target device 0.\n"
        "==ERROR== second error\n";
    assert_int_equal(tmoe_import_ncu_buffer(only_err, strlen(only_err), "perm.csv", &r, &err),
                     TMOE_EFORMAT);
    assert_null(r);
    assert_non_null(strstr(err.msg, "perm.csv"));
    assert_non_null(
        strstr(err.msg, "==ERROR== ERR_NVGPUCTRPERM - The user does not have permission"));
    const char *no_metrics = "\"ID\",\"Kernel Name\",\"Foo\"\n\"0\",\"k\",\"1\"\n";
    assert_int_equal(tmoe_import_ncu_buffer(no_metrics, strlen(no_metrics), "nom.csv", &r, &err),
                     TMOE_EFORMAT);
    assert_non_null(strstr(err.msg, "gpu__time_duration.sum"));
    const char *bad_unit =
        "\"ID\",\"Kernel "
        "Name\",\"gpu__time_duration.sum\"\n\"\",\"\",\"furlong\"\n\"0\",\"k\",\"1\"\n";
    assert_int_equal(tmoe_import_ncu_buffer(bad_unit, strlen(bad_unit), "unit.csv", &r, &err),
                     TMOE_EFORMAT);
    assert_non_null(strstr(err.msg, "furlong"));
    assert_int_equal(tmoe_import_ncu_buffer("", 0, "empty.csv", &r, &err), TMOE_EFORMAT);
    assert_int_equal(tmoe_import_ncu(tu_tmppath("absent.csv"), &r, &err), TMOE_EIO);
}

/* A raw-layout file with one kernel whose duration field (quoted) is `dur`. */
static int import_duration(const char *dur, double *ns, tmoe_error *err) {
    char text[512];
    int n = snprintf(text, sizeof text,
                     "\"ID\",\"Kernel Name\",\"gpu__time_duration.sum\"\n\"\",\"\",\"nsecond\"\n"
                     "\"0\",\"k\",\"%s\"\n",
                     dur);
    tmoe_ncu_result *r = NULL;
    int rc = tmoe_import_ncu_buffer(text, (size_t)n, "num.csv", &r, err);
    if (rc == TMOE_OK)
        *ns = r->kernels[0].duration_ns;
    else
        assert_null(r);
    tmoe_ncu_free(r);
    return rc;
}

/* Thousands separators: the first group 1-3 digits, every later group exactly three; a
 * field that is no number is an error naming the line, column and text (empty and n/a
 * are "not measured"). Unquoted commas separate fields. */
static void test_numbers(void **state) {
    (void)state;
    static const struct {
        const char *text;
        double ns;
    } good[] = {{"1,234", 1234},
                {"12,345,678.5", 12345678.5},
                {"999", 999},
                {"0.5", 0.5},
                {"1234567", 1234567},
                {"2,640,991,404,011.46", 2640991404011.46},
                {"1.5e3", 1500},
                {"0", 0},
                {"-0", 0},
                {" 42 ", 42}};
    tmoe_error err = {0};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        double ns = NAN;
        int rc = import_duration(good[i].text, &ns, &err);
        if (rc) fail_msg("'%s': %s", good[i].text, err.msg);
        assert_near(good[i].text, ns, good[i].ns, 1e-15);
    }
    double ns = 0;
    assert_int_equal(import_duration("", &ns, &err), TMOE_OK);
    assert_true(isnan(ns));
    assert_int_equal(import_duration("n/a", &ns, &err), TMOE_OK);
    assert_true(isnan(ns));
    static const char *const bad[] = {
        ",,,,1,,2", "1,0245", "12,34", "1234,567", "1,",  ",123",  "1,,234", "1,234,5678",
        "1.2,345",  "12a",    "0x10",  "inf",      "nan", "1e999", "--1",    "."};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int rc = import_duration(bad[i], &ns, &err);
        if (rc != TMOE_EFORMAT) fail_msg("'%s' accepted as %g", bad[i], ns);
        if (!strstr(err.msg, bad[i]) || !strstr(err.msg, "num.csv") || !strstr(err.msg, "line 3") ||
            !strstr(err.msg, "gpu__time_duration.sum"))
            fail_msg("'%s': message '%s' lacks the file, line, column or text", bad[i], err.msg);
    }
    /* unquoted: 1,234 is two fields, duration 1 and occupancy 234 */
    const char *unq = "ID,Kernel Name,gpu__time_duration.sum,achieved_occupancy\n0,k,1,234\n";
    tmoe_ncu_result *r;
    ASSERT_OK(tmoe_import_ncu_buffer(unq, strlen(unq), "unq.csv", &r, &err), &err);
    assert_near("unquoted duration", r->kernels[0].duration_ns, 1, 0);
    assert_near("unquoted occupancy", r->kernels[0].occupancy_pct, 234, 0);
    tmoe_ncu_free(r);
}

/* A negative duration is no measurement: an error naming the line, in both layouts. */
static void test_negative_duration(void **state) {
    (void)state;
    tmoe_error err = {0};
    double ns;
    assert_int_equal(import_duration("-5", &ns, &err), TMOE_EFORMAT);
    print_message("raw: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "num.csv: line 3"));
    assert_non_null(strstr(err.msg, "negative"));
    assert_int_equal(import_duration("-1,000.5", &ns, &err), TMOE_EFORMAT);
    assert_non_null(strstr(err.msg, "negative"));
    const char *det =
        "\"ID\",\"Kernel Name\",\"Section Name\",\"Metric Name\",\"Metric Unit\",\"Metric Value\"\n"
        "\"0\",\"k\",\"SOL\",\"DRAM Throughput\",\"%\",\"12.5\"\n"
        "\"0\",\"k\",\"SOL\",\"Duration\",\"usecond\",\"-2,048.25\"\n";
    tmoe_ncu_result *r = (tmoe_ncu_result *)1;
    assert_int_equal(tmoe_import_ncu_buffer(det, strlen(det), "det.csv", &r, &err), TMOE_EFORMAT);
    assert_null(r);
    print_message("details: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "det.csv: line 3"));
    assert_non_null(strstr(err.msg, "negative"));
    /* a malformed value of a metric the reader does not use is left alone */
    const char *other =
        "\"ID\",\"Kernel Name\",\"Section Name\",\"Metric Name\",\"Metric Unit\",\"Metric Value\"\n"
        "\"0\",\"k\",\"Launch\",\"Grid Size\",\"\",\"(128, 1, 1)\"\n"
        "\"0\",\"k\",\"SOL\",\"Duration\",\"nsecond\",\"4,096\"\n";
    ASSERT_OK(tmoe_import_ncu_buffer(other, strlen(other), "other.csv", &r, &err), &err);
    assert_near("details duration", r->kernels[0].duration_ns, 4096, 0);
    tmoe_ncu_free(r);
}

static void test_merge_into_cost(void **state) {
    (void)state;
    tmoe_error err = {0};
    tmoe_ncu_result *r;
    ASSERT_OK(tmoe_import_ncu(tu_data("ncu/h100_ncu_raw.csv"), &r, &err), &err);
    tmoe_cost_model *cm;
    ASSERT_OK(tmoe_cost_create(&cm, &err), &err);
    tmoe_cost_kernel k1 = {(char *)NVJET_NAME, 1, 0.045};
    tmoe_cost_kernel k2 = {"my_unmatched_kernel", 1, 0.01};
    tmoe_cost_entry e = {.op = TMOE_OP_LINEAR_FC1,
                         .expert_type = TMOE_ET_FP16,
                         .impl = TMOE_IMPL_UNFUSED,
                         .tokens = 16,
                         .latency_median_ms = 0.05,
                         .latency_p90_ms = 0.06,
                         .energy_board_j = NAN,
                         .energy_dynamic_j = NAN,
                         .avg_power_w = NAN,
                         .temp_impact_c_per_s = NAN,
                         .samples = 3,
                         .n_kernels = 1,
                         .kernels = &k1};
    ASSERT_OK(tmoe_cost_add(cm, &e, &err), &err);
    e.op = TMOE_OP_RELU;
    e.kernels = &k2;
    ASSERT_OK(tmoe_cost_add(cm, &e, &err), &err);
    int matched;
    ASSERT_OK(tmoe_ncu_merge_cost(r, cm, &matched, &err), &err);
    assert_int_equal(matched, 1);
    double w = 0, so = 0, sd = 0;
    for (int i = 0; i < 3; i++) {
        w += NVJET[i][1];
        so += NVJET[i][1] * NVJET[i][2];
        sd += NVJET[i][1] * NVJET[i][3];
    }
    const tmoe_cost_entry *fc1 = tmoe_cost_entry_at(cm, 0);
    assert_int_equal(fc1->op, TMOE_OP_LINEAR_FC1);
    assert_true(fc1->has_ncu);
    assert_near("weighted occupancy", fc1->ncu_occupancy_pct, so / w, 1e-12);
    assert_near("weighted dram", fc1->ncu_dram_pct, sd / w, 1e-12);
    assert_false(tmoe_cost_entry_at(cm, 1)->has_ncu);
    /* base-name matching: the cost model may hold the short name of a templated kernel */
    tmoe_cost_kernel k3 = {"cublasLt::splitKreduce_kernel", 1, 0.004};
    e.op = TMOE_OP_LINEAR_FC2;
    e.kernels = &k3;
    ASSERT_OK(tmoe_cost_add(cm, &e, &err), &err);
    ASSERT_OK(tmoe_ncu_merge_cost(r, cm, &matched, &err), &err);
    assert_int_equal(matched, 2);
    tmoe_cost_free(cm);
    tmoe_ncu_free(r);
}

/* tests/data/h100_thermoe_linear_fc1_q4.*: written on an H100 (driver 580.159.04, ncu
 * 2025.3.1) by `thermoe profile --with ncu --ops linear_fc1 --expert-types q4 --impls fused
 * --tokens 16` at the mixtral shape (bench/h100_run.sh b). The cost entry lists the kernel
 * under CUPTI's mangled name; ncu prints it demangled: the merge must match them. */
static void test_own_h100_ncu(void **state) {
    (void)state;
    tmoe_error err = {0};
    tmoe_ncu_result *r = NULL;
    ASSERT_OK(tmoe_import_ncu(THERMOE_SOURCE_DIR "/tests/data/h100_thermoe_linear_fc1_q4.ncu.csv",
                              &r, &err),
              &err);
    assert_int_equal(r->n, 5);
    assert_int_equal(r->details_layout, 0);
    for (int i = 0; i < r->n; i++) {
        assert_string_equal(r->kernels[i].name, "void k_expert_linear<3, 2, 8>(exp_args)");
        assert_true(r->kernels[i].duration_ns > 30000 && r->kernels[i].duration_ns < 45000);
    }
    assert_true(r->kernels[0].duration_ns == 38240);
    assert_true(fabs(r->kernels[0].occupancy_pct - 22.43) < 1e-9);
    assert_true(fabs(r->kernels[0].dram_pct - 25.43) < 1e-9);
    tmoe_cost_model *cm = NULL;
    ASSERT_OK(tmoe_cost_load(THERMOE_SOURCE_DIR "/tests/data/h100_thermoe_linear_fc1_q4.cost.json",
                             &cm, &err),
              &err);
    int matched = -1;
    ASSERT_OK(tmoe_ncu_merge_cost(r, cm, &matched, &err), &err);
    assert_int_equal(matched, 1);
    const tmoe_cost_entry *e = tmoe_cost_entry_at(cm, 0);
    assert_true(e->has_ncu);
    assert_true(e->ncu_occupancy_pct > 22.2 && e->ncu_occupancy_pct < 22.5);
    assert_true(e->ncu_dram_pct > 25.0 && e->ncu_dram_pct < 25.8);
    tmoe_cost_free(cm);
    tmoe_ncu_free(r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_raw_fixture),     cmocka_unit_test(test_details_fixture),
        cmocka_unit_test(test_generated),       cmocka_unit_test(test_errors),
        cmocka_unit_test(test_merge_into_cost), cmocka_unit_test(test_own_h100_ncu),
        cmocka_unit_test(test_numbers),         cmocka_unit_test(test_negative_duration),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
