/* nsys SQLite import on exports written here: kernel counts, times, names and launches per
 * device on random exports with the columns of a real one (tests/nsys_synth.c; expected
 * values counted from the rows written), op mapping and power attribution on a database
 * with the documented schema, and clear errors for missing tables and corrupt or truncated
 * files. The real exports of ../shared/fixtures are read by test_nsys_fixtures.c. */
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nsys_synth.h"
#include "testutil.h"
#include "thermoe/profile.h"

#define TOL_ENERGY 1e-9 /* relative: same integral summed in another order */

/* A random multi-GPU export with the columns of nsys 2026's: every count and sum the
 * importer reports, against the rows written. */
static void test_synth_export(void **state) {
    (void)state;
    tmoe_rng rng;
    tmoe_rng_seed(&rng, tu_seed());
    tu_nsys_spec spec = {.seed = tmoe_rng_below(&rng, 1u << 30),
                         .n_devices = 1 + (int)tmoe_rng_below(&rng, 4),
                         .kernels_per_device = 1 + (int)tmoe_rng_below(&rng, 700),
                         .n_names = 12,
                         .with_nvtx = 1,
                         .t0 = 155000000000LL};
    print_message("%d devices x %d kernels\n", spec.n_devices, spec.kernels_per_device);
    const char *path = tu_tmppath("synth.sqlite");
    tu_nsys_truth t;
    assert_int_equal(tu_nsys_random(path, &spec, &t), 0);
    tmoe_error err = {0};
    tmoe_nsys_result *r;
    ASSERT_OK(tmoe_import_nsys(path, &r, &err), &err);
    int64_t ns = 0, launched = 0, dk[16] = {0}, dns[16] = {0};
    for (int i = 0; i < t.n_kernels; i++) {
        const tu_nsys_kern *k = &t.kernels[i];
        ns += k->end - k->start;
        launched += k->launched;
        dk[k->device]++;
        dns[k->device] += k->end - k->start;
    }
    assert_int_equal(r->n_kernels, t.n_kernels);
    assert_int_equal(r->kernel_ns, ns);
    assert_int_equal(r->launches_matched, launched);
    assert_int_equal(r->n_devices, spec.n_devices);
    for (int d = 0; d < spec.n_devices; d++) {
        assert_int_equal(r->devices[d].device, d);
        assert_int_equal(r->devices[d].kernels, dk[d]);
        assert_int_equal(r->devices[d].kernel_ns, dns[d]);
        assert_int_equal(r->devices[d].kernels_with_energy, 0);
    }
    /* names from demangledName (templates and arguments), not shortName */
    assert_string_equal(r->name_column, "demangledName");
    for (int i = 0; i < t.n_kernels; i++) {
        const tu_nsys_kern *k = &t.kernels[i];
        const tmoe_nsys_kernel *g = NULL;
        for (int64_t j = 0; j < r->n_kernels && !g; j++)
            if (r->kernels[j].start_ns == k->start && r->kernels[j].end_ns == k->end &&
                r->kernels[j].device == k->device &&
                !strcmp(r->names[r->kernels[j].name], t.names[k->name]))
                g = &r->kernels[j];
        if (!g)
            fail_msg("kernel %d [%lld, %lld] dev %d %s not imported", i, (long long)k->start,
                     (long long)k->end, k->device, t.names[k->name]);
        assert_int_equal(g->op, -1);
        assert_true(isnan(g->energy_j));
    }
    for (int64_t j = 1; j < r->n_kernels; j++)
        assert_true(r->kernels[j].start_ns >= r->kernels[j - 1].start_ns);
    /* NVTX: ranges counted, marks not; none is named after an op */
    assert_int_equal(r->nvtx_ranges, t.nvtx_ranges);
    assert_true(t.nvtx_marks > 0);
    assert_int_equal(r->op_ranges, 0);
    /* no GPU_METRICS, as in a capture without --gpu-metrics-devices: reported, energy unknown */
    assert_string_equal(r->missing, "GPU_METRICS, TARGET_INFO_GPU_METRICS");
    assert_string_equal(r->power_source, "");
    assert_true(isnan(r->energy_j));
    tmoe_cost_model *cm;
    ASSERT_OK(tmoe_cost_create(&cm, &err), &err);
    int added = -1;
    ASSERT_OK(tmoe_nsys_to_cost(r, TMOE_ET_FP16, TMOE_IMPL_UNFUSED, 16, cm, &added, &err), &err);
    assert_int_equal(added, 0);
    tmoe_cost_free(cm);
    tmoe_nsys_free(r);
    tu_nsys_truth_free(&t);
}

/* An export without NVTX_EVENTS (a capture without --trace nvtx). */
static void test_synth_without_nvtx(void **state) {
    (void)state;
    tu_nsys_spec spec = {
        .seed = 11, .n_devices = 1, .kernels_per_device = 2, .n_names = 1, .t0 = 1000};
    const char *path = tu_tmppath("nonvtx.sqlite");
    tu_nsys_truth t;
    assert_int_equal(tu_nsys_random(path, &spec, &t), 0);
    tmoe_error err = {0};
    tmoe_nsys_result *r;
    ASSERT_OK(tmoe_import_nsys(path, &r, &err), &err);
    assert_int_equal(r->n_kernels, 2);
    assert_int_equal(r->kernel_ns, (t.kernels[0].end - t.kernels[0].start) +
                                       (t.kernels[1].end - t.kernels[1].start));
    assert_non_null(strstr(r->missing, "NVTX_EVENTS"));
    assert_int_equal(r->nvtx_ranges, 0);
    assert_int_equal(r->n_names, 1);
    assert_string_equal(r->names[0], t.names[0]);
    tmoe_nsys_free(r);
    tu_nsys_truth_free(&t);
}

static void exec(sqlite3 *db, const char *sql) {
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("sqlite: %s in %s", msg, sql);
}

enum { NK = 60, T_END = 100000, STEP = 1000 };
static const int64_t TID = ((int64_t)1234 << 24) + 7;

typedef struct built {
    int64_t ks[NK], ke[NK];
    int dev[NK];
    double watts[2][T_END / STEP + 1];
} built;

/* Power of device d at ns t: the sample at or before t holds until the next one. */
static double ref_energy(const built *b, int d, int64_t s, int64_t e) {
    if (e > T_END || s < 0) return NAN;
    double j = 0.0;
    for (int64_t t = s; t < e; t++) j += b->watts[d][t / STEP] * 1e-9;
    return j;
}

static void build_db(const char *path, built *b, tmoe_rng *r) {
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    exec(
        db,
        "CREATE TABLE StringIds (id INTEGER PRIMARY KEY, value TEXT NOT NULL);"
        "CREATE TABLE CUPTI_ACTIVITY_KIND_KERNEL (start INT NOT NULL, end INT NOT NULL, deviceId "
        "INT, "
        "correlationId INT, globalPid INT, shortName INT);"
        "CREATE TABLE CUPTI_ACTIVITY_KIND_RUNTIME (start INT, end INT, globalTid INT, "
        "correlationId INT);"
        "CREATE TABLE NVTX_EVENTS (start INT NOT NULL, end INT, eventType INT NOT NULL, text TEXT, "
        "textId INT, globalTid INT);"
        "CREATE TABLE GPU_METRICS (timestamp INT NOT NULL, typeId INT NOT NULL, metricId INT NOT "
        "NULL, "
        "value INT NOT NULL);"
        "CREATE TABLE TARGET_INFO_GPU_METRICS (typeId INT NOT NULL, sourceId INT NOT NULL, "
        "typeName TEXT "
        "NOT NULL, metricId INT NOT NULL, metricName TEXT NOT NULL);"
        "INSERT INTO StringIds VALUES (1, 'gemm_fc1'), (2, 'relu_k'), (3, 'gemm_fc2'), (4, "
        "'linear_fc2');"
        "INSERT INTO TARGET_INFO_GPU_METRICS VALUES (0, 0, 'GH100', 0, 'SM Active'), "
        "(0, 0, 'GH100', 5, 'Power [W]'), (1, 1, 'GH100', 0, 'SM Active'), (1, 1, 'GH100', 5, "
        "'Power [W]');"
        /* op ranges: fc1 twice (one via textId), fc2 once; a range that is no op; a mark */
        "INSERT INTO NVTX_EVENTS VALUES (0, 30000, 59, 'thermoe:linear_fc1', NULL, 1);"
        "INSERT INTO NVTX_EVENTS VALUES (40000, 70000, 60, NULL, 4, 1);"
        "INSERT INTO NVTX_EVENTS VALUES (75000, 90000, 59, 'linear_fc1 q4 fused 16', NULL, 1);"
        "INSERT INTO NVTX_EVENTS VALUES (0, 100000, 59, 'aten::mm', NULL, 1);"
        "INSERT INTO NVTX_EVENTS VALUES (20000, 22000, 59, 'relu', NULL, 1);" /* nested in fc1 */
        "INSERT INTO NVTX_EVENTS VALUES (5, NULL, 34, 'linear_fc2', NULL, 1);");
    char sql[256];
    exec(db, "BEGIN");
    for (int d = 0; d < 2; d++)
        for (int i = 0; i <= T_END / STEP; i++) {
            b->watts[d][i] = 60 + (double)tmoe_rng_below(r, 640);
            snprintf(sql, sizeof sql,
                     "INSERT INTO GPU_METRICS VALUES (%d, %d, 5, %d), (%d, %d, 0, 99)", i * STEP, d,
                     (int)b->watts[d][i], i * STEP, d);
            exec(db, sql);
        }
    for (int k = 0; k < NK; k++) {
        b->ks[k] = tmoe_rng_below(r, T_END - 3000);
        b->ke[k] = b->ks[k] + 1 + tmoe_rng_below(r, 2500);
        if (k == NK - 1) b->ke[k] = T_END + 500; /* beyond the last sample: energy unknown */
        b->dev[k] = (int)tmoe_rng_below(r, 2);
        if (k == 7)
            b->ks[k] = 95000, b->ke[k] = 96000; /* launched inside fc1's range, runs later */
        snprintf(sql, sizeof sql,
                 "INSERT INTO CUPTI_ACTIVITY_KIND_KERNEL VALUES (%lld, %lld, %d, %d, %lld, %d)",
                 (long long)b->ks[k], (long long)b->ke[k], b->dev[k], 1000 + k,
                 (long long)(TID - 7), 1 + (int)tmoe_rng_below(r, 3));
        exec(db, sql);
    }
    snprintf(sql, sizeof sql,
             "INSERT INTO CUPTI_ACTIVITY_KIND_RUNTIME VALUES (10000, 10010, %lld, 1007)",
             (long long)TID);
    exec(db, sql);
    exec(db,
         "UPDATE NVTX_EVENTS SET globalTid = (SELECT globalTid FROM CUPTI_ACTIVITY_KIND_RUNTIME)");
    exec(db, "COMMIT");
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static int ref_op(const built *b, int k) {
    if (k == 7) return TMOE_OP_LINEAR_FC1; /* by its launch at t = 10000 */
    int64_t t = b->ks[k];
    if (t >= 20000 && t <= 22000) return TMOE_OP_RELU; /* the innermost range wins */
    if (t <= 30000 || (t >= 75000 && t <= 90000)) return TMOE_OP_LINEAR_FC1;
    if (t >= 40000 && t <= 70000) return TMOE_OP_LINEAR_FC2;
    return -1;
}

static void test_built_power_and_ops(void **state) {
    (void)state;
    uint64_t seed = (uint64_t)time(NULL);
    print_message("seed %llu\n", (unsigned long long)seed);
    tmoe_rng rng;
    tmoe_rng_seed(&rng, seed);
    built *b = calloc(1, sizeof *b);
    assert_non_null(b);
    const char *path = tu_tmppath("built.sqlite");
    build_db(path, b, &rng);
    tmoe_error err = {0};
    tmoe_nsys_result *r;
    ASSERT_OK(tmoe_import_nsys(path, &r, &err), &err);
    assert_int_equal(r->n_kernels, NK);
    assert_string_equal(r->name_column, "shortName");
    assert_non_null(strstr(r->power_source, "Power [W]"));
    assert_int_equal(r->power_samples, 2 * (T_END / STEP + 1));
    assert_int_equal(r->launches_matched, 1);
    assert_int_equal(r->op_ranges, 4);
    assert_int_equal(r->nvtx_ranges, 5);
    /* kernels come back in start order; match them to ours by (start, end, device) */
    double total = 0.0, per_dev[2] = {0, 0};
    int64_t op_kernels[TMOE_OP_COUNT] = {0};
    double op_j[TMOE_OP_COUNT] = {0};
    for (int k = 0; k < NK; k++) {
        const tmoe_nsys_kernel *g = NULL;
        for (int64_t i = 0; i < r->n_kernels; i++)
            if (r->kernels[i].start_ns == b->ks[k] && r->kernels[i].end_ns == b->ke[k] &&
                r->kernels[i].device == b->dev[k])
                g = &r->kernels[i];
        assert_non_null(g);
        double want = ref_energy(b, b->dev[k], b->ks[k], b->ke[k]);
        if (isnan(want)) {
            if (!isnan(g->energy_j)) fail_msg("kernel %d: energy %g, want unknown", k, g->energy_j);
        } else {
            if (!(fabs(g->energy_j - want) <= TOL_ENERGY * want))
                fail_msg("kernel %d [%lld, %lld] dev %d: energy %.12g J, want %.12g J", k,
                         (long long)b->ks[k], (long long)b->ke[k], b->dev[k], g->energy_j, want);
            total += want;
            per_dev[b->dev[k]] += want;
        }
        int op = ref_op(b, k);
        if (g->op != op)
            fail_msg("kernel %d at %lld: op %d, want %d", k, (long long)b->ks[k], g->op, op);
        if (op >= 0) {
            op_kernels[op]++;
            op_j[op] += want;
        }
    }
    assert_true(fabs(r->energy_j - total) <= TOL_ENERGY * total);
    for (int d = 0; d < 2; d++)
        assert_true(fabs(r->devices[d].energy_j - per_dev[d]) <= TOL_ENERGY * per_dev[d]);
    assert_int_equal(r->ops[TMOE_OP_LINEAR_FC1].ranges, 2);
    assert_int_equal(r->ops[TMOE_OP_LINEAR_FC2].ranges, 1);
    assert_int_equal(r->ops[TMOE_OP_RELU].ranges, 1);
    for (int o = 0; o < TMOE_OP_COUNT; o++) {
        assert_int_equal(r->ops[o].kernels, op_kernels[o]);
        if (isnan(op_j[o]))
            assert_true(isnan(r->ops[o].energy_j));
        else if (op_kernels[o] && !(fabs(r->ops[o].energy_j - op_j[o]) <= TOL_ENERGY * op_j[o]))
            fail_msg("op %d energy %g want %g", o, r->ops[o].energy_j, op_j[o]);
    }
    /* cost entries keyed by the given type/impl/tokens */
    tmoe_cost_model *cm;
    ASSERT_OK(tmoe_cost_create(&cm, &err), &err);
    int added;
    ASSERT_OK(tmoe_nsys_to_cost(r, TMOE_ET_Q4, TMOE_IMPL_FUSED, 16, cm, &added, &err), &err);
    int want_added = (op_kernels[TMOE_OP_LINEAR_FC1] > 0) + (op_kernels[TMOE_OP_LINEAR_FC2] > 0) +
                     (op_kernels[TMOE_OP_RELU] > 0);
    assert_int_equal(added, want_added);
    if (op_kernels[TMOE_OP_LINEAR_FC1]) {
        tmoe_cost_value v;
        ASSERT_OK(
            tmoe_cost_lookup(cm, TMOE_OP_LINEAR_FC1, TMOE_ET_Q4, TMOE_IMPL_FUSED, 16, &v, &err),
            &err);
        const tmoe_nsys_op *op = &r->ops[TMOE_OP_LINEAR_FC1];
        double want_ms =
            0.5 * (double)(op->range_ns[0] + op->range_ns[1]) * 1e-6; /* median of two */
        assert_true(fabs(v.latency_ms - want_ms) <= 1e-12 + 1e-9 * want_ms);
        assert_int_equal(tmoe_cost_entry_at(cm, 0)->samples, 2);
    }
    tmoe_cost_free(cm);
    tmoe_nsys_free(r);
    free(b);
}

/* An NVML-plugin style table (no GPU_METRICS): probed by name, milliwatts scaled. */
static void test_nvml_table(void **state) {
    (void)state;
    const char *path = tu_tmppath("nvml.sqlite");
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    exec(db, "CREATE TABLE NVML_POWER (timestamp INT, gpuId INT, powerMilliWatts INT);"
             "CREATE TABLE CUPTI_ACTIVITY_KIND_KERNEL (start INT, end INT, deviceId INT);"
             "INSERT INTO NVML_POWER VALUES (0, 0, 100000), (100, 0, 200000), (200, 0, 0);"
             "INSERT INTO CUPTI_ACTIVITY_KIND_KERNEL VALUES (10, 150, 0), (150, 250, 0);");
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    tmoe_error err = {0};
    tmoe_nsys_result *r;
    ASSERT_OK(tmoe_import_nsys(path, &r, &err), &err);
    assert_string_equal(r->power_source, "NVML_POWER.powerMilliWatts");
    assert_int_equal(r->power_samples, 3);
    /* 100 W x 90 ns + 200 W x 50 ns; the second kernel runs past the last sample: unknown */
    assert_true(fabs(r->kernels[0].energy_j - 19000e-9) <= TOL_ENERGY * 19000e-9);
    assert_true(isnan(r->kernels[1].energy_j));
    assert_true(fabs(r->energy_j - 19000e-9) <= TOL_ENERGY * 19000e-9);
    assert_non_null(strstr(r->missing, "StringIds"));
    assert_string_equal(r->names[r->kernels[0].name], "(unnamed)");
    tmoe_nsys_free(r);
}

static void test_errors(void **state) {
    (void)state;
    tmoe_error err = {0};
    tmoe_nsys_result *r = (tmoe_nsys_result *)1;
    /* a database without a kernel table */
    const char *nok = tu_tmppath("nokernels.sqlite");
    sqlite3 *db;
    assert_int_equal(sqlite3_open(nok, &db), SQLITE_OK);
    exec(db, "CREATE TABLE StringIds (id INTEGER PRIMARY KEY, value TEXT NOT NULL)");
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    assert_int_equal(tmoe_import_nsys(nok, &r, &err), TMOE_EFORMAT);
    assert_null(r);
    assert_non_null(strstr(err.msg, nok));
    assert_non_null(strstr(err.msg, "no CUPTI_ACTIVITY_KIND_KERNEL table"));
    /* bytes that are no database */
    const char *junk = tu_tmppath("junk.sqlite");
    FILE *f = fopen(junk, "wb");
    assert_non_null(f);
    for (int i = 0; i < 8192; i++) fputc((i * 7919) & 0xff, f);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(tmoe_import_nsys(junk, &r, &err), TMOE_EFORMAT);
    print_message("junk: %s\n", err.msg);
    assert_non_null(strstr(err.msg, junk));
    assert_non_null(strstr(err.msg, "not an SQLite database"));
    /* an export cut short: the first half of its pages */
    const char *whole = tu_tmppath("whole.sqlite"), *cut = tu_tmppath("cut.sqlite");
    tu_nsys_spec spec = {
        .seed = 7, .n_devices = 2, .kernels_per_device = 2000, .n_names = 8, .with_nvtx = 1};
    tu_nsys_truth t;
    assert_int_equal(tu_nsys_random(whole, &spec, &t), 0);
    tu_nsys_truth_free(&t);
    FILE *in = fopen(whole, "rb");
    f = fopen(cut, "wb");
    assert_non_null(in);
    assert_non_null(f);
    assert_int_equal(fseek(in, 0, SEEK_END), 0);
    long size = ftell(in), left = size / 2 / 4096 * 4096;
    assert_true(size >= 16 * 4096);
    rewind(in);
    char buf[4096];
    for (; left > 0; left -= (long)sizeof buf) {
        size_t n = fread(buf, 1, sizeof buf, in);
        assert_int_equal(n, sizeof buf);
        assert_int_equal(fwrite(buf, 1, n, f), n);
    }
    fclose(in);
    assert_int_equal(fclose(f), 0);
    int rc = tmoe_import_nsys(cut, &r, &err);
    assert_int_not_equal(rc, TMOE_OK);
    assert_null(r);
    assert_non_null(strstr(err.msg, cut));
    print_message("truncated export: %s\n", err.msg);
    assert_int_equal(tmoe_import_nsys(tu_tmppath("absent.sqlite"), &r, &err), TMOE_EIO);
    assert_non_null(strstr(err.msg, "absent.sqlite"));
}

/* Kernel rows whose end is before their start, or whose end - start does not fit 64 bits
 * (start = INT64_MIN, end = INT64_MAX), are skipped and counted, not summed: the totals,
 * devices and ops hold only the good rows. */
static void test_bad_durations(void **state) {
    (void)state;
    const char *path = tu_tmppath("durations.sqlite");
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    exec(
        db,
        "CREATE TABLE StringIds (id INTEGER PRIMARY KEY, value TEXT NOT NULL);"
        "CREATE TABLE CUPTI_ACTIVITY_KIND_KERNEL (start INT NOT NULL, end INT NOT NULL, deviceId "
        "INT, "
        "shortName INT);"
        "CREATE TABLE NVTX_EVENTS (start INT NOT NULL, end INT, eventType INT NOT NULL, text TEXT, "
        "textId INT, globalTid INT);"
        "INSERT INTO StringIds VALUES (1, 'gemm');"
        "INSERT INTO NVTX_EVENTS VALUES (0, 10000, 59, 'linear_fc1', NULL, 1);"
        "INSERT INTO CUPTI_ACTIVITY_KIND_KERNEL VALUES (100, 600, 0, 1), (7000, 7000, 1, 1), "
        "(8000, 8250, 1, 1),"
        " (-9223372036854775808, 9223372036854775807, 0, 1),"        /* end - start overflows */
        " (-9223372036854775808, 0, 1, 1),"                          /* so does 0 - INT64_MIN */
        " (5000, 4000, 1, 1), (9000, -9223372036854775808, 0, 1);"); /* end before start */
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    tmoe_error err = {0};
    tmoe_nsys_result *r;
    ASSERT_OK(tmoe_import_nsys(path, &r, &err), &err);
    assert_int_equal(r->n_kernels, 3);
    assert_int_equal(r->kernels_skipped, 4);
    assert_int_equal(r->kernel_ns, 750);
    assert_int_equal(r->n_devices, 2);
    assert_int_equal(r->devices[0].kernels, 1);
    assert_int_equal(r->devices[0].kernel_ns, 500);
    assert_int_equal(r->devices[1].kernels, 2);
    assert_int_equal(r->devices[1].kernel_ns, 250);
    assert_int_equal(r->ops[TMOE_OP_LINEAR_FC1].kernels, 3);
    assert_int_equal(r->ops[TMOE_OP_LINEAR_FC1].kernel_ns, 750);
    for (int64_t i = 0; i < r->n_kernels; i++)
        assert_true(r->kernels[i].end_ns >= r->kernels[i].start_ns);
    tmoe_nsys_free(r);

    /* each duration fits, their sum does not: refused, not wrapped */
    const char *big = tu_tmppath("sum.sqlite");
    assert_int_equal(sqlite3_open(big, &db), SQLITE_OK);
    exec(db, "CREATE TABLE CUPTI_ACTIVITY_KIND_KERNEL (start INT NOT NULL, end INT NOT NULL);"
             "INSERT INTO CUPTI_ACTIVITY_KIND_KERNEL VALUES (0, 9223372036854775806), (1, "
             "9223372036854775807);");
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    r = (tmoe_nsys_result *)1;
    assert_int_equal(tmoe_import_nsys(big, &r, &err), TMOE_EFORMAT);
    assert_null(r);
    print_message("sum: %s\n", err.msg);
    assert_non_null(strstr(err.msg, big));
    assert_non_null(strstr(err.msg, "overflow"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_synth_export),
        cmocka_unit_test(test_synth_without_nvtx),
        cmocka_unit_test(test_built_power_and_ops),
        cmocka_unit_test(test_nvml_table),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_bad_durations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
