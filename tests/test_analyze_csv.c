/* Run log reader: RFC 4180 quoting, and clear file:line messages for empty, truncated,
 * short-row, bad-cell and mixed-schema CSVs, with the good files still analysed; a dataset
 * written before the newest columns loads without complaint. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "analyze_logs.h"
#include "testutil.h"
#include "thermoe/analyze.h"

static const char *const STRATS[] = {"baseline", "kernel_aware_ttha"};
static const char *const WL[] = {"standard"};

static void good_run(const char *dir, uint64_t seed, const char *device) {
    const double mult[] = {1.0, 0.8};
    synth_cfg sc = {.strategies = STRATS,
                    .energy_mult = mult,
                    .nstrategies = 2,
                    .workloads = WL,
                    .nworkloads = 1,
                    .repeats = 2,
                    .batches = 5,
                    .experts = 4,
                    .run_sd = 0.02,
                    .batch_sd = 0.02,
                    .seed = seed,
                    .telemetry = "nvml",
                    .device = device};
    assert_int_equal(synth_run(dir, &sc), 0);
}

/* tu_tmppath rotates 4 buffers: keep our own copy of each path. */
static const char *tmp_copy(const char *name) {
    static char bufs[16][512];
    static int n;
    assert_true(n < 16);
    snprintf(bufs[n], sizeof bufs[n], "%s", tu_tmppath(name));
    return bufs[n++];
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

/* Copy dir/batches.csv into a string (test sizes are small). */
static char *read_all(const char *path) {
    static char buf[1 << 18];
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* Index of the problem containing every needle, or fail listing the problems. */
static int find_problem(const tmoe_dataset *ds, const char *a, const char *b) {
    for (int i = 0; i < tmoe_dataset_nproblems(ds); i++) {
        const char *p = tmoe_dataset_problem(ds, i);
        if (strstr(p, a) && (!b || strstr(p, b))) return i;
    }
    for (int i = 0; i < tmoe_dataset_nproblems(ds); i++)
        print_message("problem: %s\n", tmoe_dataset_problem(ds, i));
    fail_msg("no problem mentions '%s'%s%s", a, b ? " and " : "", b ? b : "");
    return -1;
}

static void test_quoting(void **state) {
    (void)state;
    const char *dir = tu_tmppath("quote");
    good_run(dir, 1, NULL);
    char path[512];
    snprintf(path, sizeof path, "%s/batches.csv", dir);
    char *text = read_all(path);
    /* rewrite the first data row with a quoted run_id holding a comma, a quote and a newline,
     * and CRLF line ends */
    char *nl = strchr(text, '\n');
    char *row = nl + 1, *comma1 = strchr(row, ','), *comma2 = strchr(comma1 + 1, ',');
    char out[1 << 18];
    int k = snprintf(out, sizeof out, "%.*s\r\n%.*s,\"a,b \"\"q\"\"\nc\"%s", (int)(nl - text), text,
                     (int)(comma1 - row), row, comma2);
    assert_true(k > 0 && k < (int)sizeof out);
    write_text(path, out);
    tmoe_error err = {0};
    tmoe_dataset *ds = tmoe_dataset_create(&err);
    ASSERT_OK(tmoe_dataset_add_dir(ds, dir, &err), &err);
    assert_int_equal(tmoe_dataset_nproblems(ds), 0);
    assert_int_equal(tmoe_dataset_nrows(ds), 2 * 2 * 5);
    const tmoe_analyze_row *r = tmoe_dataset_row(ds, 0);
    assert_string_equal(r->str[TMOE_RL_RUN_ID], "a,b \"q\"\nc");
    assert_string_equal(r->str[TMOE_RL_WORKLOAD], "standard");
    assert_int_equal(r->nlist[TMOE_RL_EXPERT_USAGE_COUNTS], 4);
    assert_true(isnan(r->num[TMOE_RL_TTHA_LR])); /* baseline row: "nan" = unknown */
    assert_int_equal(r->nlist[TMOE_RL_BIASES], 0);
    const tmoe_analyze_meta *m = tmoe_dataset_run(ds, 0);
    assert_string_equal(m->device_name, "NVIDIA H100 80GB HBM3");
    assert_string_equal(m->telemetry_source, "nvml");
    assert_false(tmoe_dataset_simulated(ds));
    tmoe_dataset_free(ds);

    /* the harness's nested metadata form: telemetry {source, simulated}, cost_model {checksum} */
    snprintf(path, sizeof path, "%s/metadata.json", dir);
    write_text(path,
               "{\"schema\": \"thermoe.run/1\", \"status\": \"interrupted\", "
               "\"git_commit\": \"1234abcd\", \"device\": {\"name\": \"H100 (simulated)\", "
               "\"driver\": \"\"}, \"telemetry\": {\"source\": \"sim\", \"choice\": \"auto\", "
               "\"simulated\": true}, \"cost_model\": {\"path\": \"x.json\", \"checksum\": "
               "\"sha256:ab\"}}\n");
    ds = tmoe_dataset_create(&err);
    ASSERT_OK(tmoe_dataset_add_dir(ds, dir, &err), &err);
    m = tmoe_dataset_run(ds, 0);
    assert_string_equal(m->telemetry_source, "sim");
    assert_string_equal(m->cost_model_checksum, "sha256:ab");
    assert_string_equal(m->status, "interrupted");
    assert_string_equal(m->git_commit, "1234abcd");
    assert_true(tmoe_dataset_simulated(ds));
    tmoe_dataset_free(ds);
}

/* Empty, header-only, truncated, short-row, bad-cell and mixed-schema files among good
 * ones: each gets a clear message, the good rows are all read and analysed. */
static void test_bad_files(void **state) {
    (void)state;
    const char *good1 = tmp_copy("good1"), *good2 = tmp_copy("good2");
    good_run(good1, 2, NULL);
    good_run(good2, 3, "NVIDIA H200");
    char path[512], hdr[4096] = "";
    for (int c = 0; c < TMOE_RL_NCOLS; c++) {
        strcat(hdr, c ? "," : "");
        strcat(hdr, tmoe_runlog_cols[c].name);
    }
    /* empty */
    const char *empty = tmp_copy("empty");
    assert_int_equal(mkdir(empty, 0777), 0);
    snprintf(path, sizeof path, "%s/batches.csv", empty);
    write_text(path, "");
    /* header only */
    const char *honly = tmp_copy("honly");
    assert_int_equal(mkdir(honly, 0777), 0);
    snprintf(path, sizeof path, "%s/batches.csv", honly);
    char buf[1 << 18];
    snprintf(buf, sizeof buf, "%s\n", hdr);
    write_text(path, buf);
    /* truncated: a good file whose last line lost its end, plus a short row at line 3 */
    const char *trunc = tmp_copy("trunc");
    good_run(trunc, 4, NULL);
    snprintf(path, sizeof path, "%s/batches.csv", trunc);
    char *text = read_all(path);
    size_t len = strlen(text);
    text[len - 40] = '\0'; /* cut inside the last row: no newline at the end */
    char *l2 = strchr(text, '\n') + 1, *l3 = strchr(l2, '\n') + 1, *l4 = strchr(l3, '\n') + 1;
    /* line 3: a short row; line 4: the original line 3 with latency_ms (field 10) = "abc" */
    char *f9 = l3;
    for (int i = 0; i < TMOE_RL_LATENCY_MS; i++)
        f9 = strchr(f9, ',') + 1;
    char *f10 = strchr(f9, ',');
    snprintf(buf, sizeof buf, "%.*s1.0,run0,0,standard\n%.*sabc%.*s%s", (int)(l3 - text), text,
             (int)(f9 - l3), l3, (int)(l4 - f10), f10, l4);
    write_text(path, buf);
    /* mixed schema: a file from an older writer (two columns fewer, one unknown) */
    const char *old = tmp_copy("old");
    assert_int_equal(mkdir(old, 0777), 0);
    snprintf(path, sizeof path, "%s/batches.csv", old);
    write_text(
        path, "time,run_id,repeat,workload,strategy,batch_idx,tokens,latency_ms,energy_j_per_token,"
              "legacy_col\n"
              "0.1,r,0,standard,baseline,0,256,10,0.02,7\n"
              "0.2,r,0,standard,baseline,1,256,10,0.021,7\n"
              "time,run_id,workload,strategy,energy_j_per_token\n"
              "0.3,r,standard,baseline,0.022\n");
    /* not a run log at all */
    const char *junk = tmp_copy("junk");
    assert_int_equal(mkdir(junk, 0777), 0);
    snprintf(path, sizeof path, "%s/batches.csv", junk);
    write_text(path, "a,b,c\n1,2,3\n");
    const char *missing = tmp_copy("does_not_exist");

    tmoe_error err = {0};
    tmoe_dataset *ds = tmoe_dataset_create(&err);
    ASSERT_OK(tmoe_dataset_add_dir(ds, good1, &err), &err);
    assert_int_not_equal(tmoe_dataset_add_dir(ds, empty, &err), TMOE_OK);
    if (!strstr(err.msg, "empty")) fail_msg("message: %s", err.msg);
    assert_int_not_equal(tmoe_dataset_add_dir(ds, honly, &err), TMOE_OK);
    ASSERT_OK(tmoe_dataset_add_dir(ds, trunc, &err), &err);
    ASSERT_OK(tmoe_dataset_add_dir(ds, old, &err), &err);
    assert_int_not_equal(tmoe_dataset_add_dir(ds, junk, &err), TMOE_OK);
    assert_int_not_equal(tmoe_dataset_add_dir(ds, missing, &err), TMOE_OK);
    assert_int_equal(tmoe_dataset_add_dir(ds, missing, &err), TMOE_EIO);
    ASSERT_OK(tmoe_dataset_add_dir(ds, good2, &err), &err);

    char want[600];
    snprintf(want, sizeof want, "%s/batches.csv: empty file", empty);
    find_problem(ds, want, NULL);
    snprintf(want, sizeof want, "%s/batches.csv: header but no usable rows", honly);
    find_problem(ds, want, NULL);
    snprintf(want, sizeof want, "%s/metadata.json", empty);
    find_problem(ds, want, "unknown for this run");
    /* truncated file: short row at line 3, bad number at line 4, last line (21) cut */
    snprintf(want, sizeof want, "%s/batches.csv:3: expected %d fields, found 4", trunc,
             TMOE_RL_NCOLS);
    find_problem(ds, want, NULL);
    snprintf(want, sizeof want, "%s/batches.csv:4: column 'latency_ms': 'abc", trunc);
    find_problem(ds, want, NULL);
    snprintf(want, sizeof want, "%s/batches.csv:22: last line has no newline", trunc);
    find_problem(ds, want, NULL);
    snprintf(want, sizeof want, "%s/batches.csv:1: schema differs from runlog.h", old);
    find_problem(ds, want, "unknown: legacy_col");
    snprintf(want, sizeof want, "%s/batches.csv:4: a header with a different schema mid-file", old);
    find_problem(ds, want, NULL);
    snprintf(want, sizeof want, "%s/batches.csv:1: header lacks workload/strategy", junk);
    find_problem(ds, want, NULL);
    snprintf(want, sizeof want, "%s: not a readable run directory", missing);
    find_problem(ds, want, NULL);

    /* rows: good1 20 + trunc (20 rows, first two rows replaced/garbled, last cut) + old 3 + good2
     * 20 */
    int trunc_rows = tmoe_dataset_run(ds, 3)->rows;
    assert_int_equal(trunc_rows, 20 - 3 + 1);
    assert_int_equal(tmoe_dataset_run(ds, 4)->rows, 3);
    assert_int_equal(tmoe_dataset_nrows(ds), 20 + trunc_rows + 3 + 20);

    tmoe_analyze_config cfg = tmoe_analyze_config_default();
    cfg.bootstrap = 200;
    tmoe_analysis *a = tmoe_analysis_create(ds, &cfg, &err);
    assert_non_null(a);
    find_problem(ds, "runs differ in device", "NVIDIA H200");
    find_problem(ds, "inconsistent CSV schemas", NULL);
    const tmoe_group_result *g = tmoe_analysis_find(a, "standard", "kernel_aware_ttha");
    assert_non_null(g);
    assert_true(g->n_units >= 4);
    assert_true(g->m[TMOE_M_ENERGY_PER_TOKEN].pct < -10.0);
    tmoe_analysis_free(a);
    tmoe_dataset_free(ds);

    /* nothing readable at all: a clear error */
    ds = tmoe_dataset_create(&err);
    assert_int_not_equal(tmoe_dataset_add_dir(ds, empty, &err), TMOE_OK);
    assert_null(tmoe_analysis_create(ds, &cfg, &err));
    assert_non_null(strstr(err.msg, "no usable rows"));
    tmoe_dataset_free(ds);
}

/* A single run: statistics fall back to block means, and the table says so. */
static void test_block_means(void **state) {
    (void)state;
    const double mult[] = {1.0, 0.8};
    synth_cfg sc = {.strategies = STRATS,
                    .energy_mult = mult,
                    .nstrategies = 2,
                    .workloads = WL,
                    .nworkloads = 1,
                    .repeats = 1,
                    .batches = 30,
                    .experts = 4,
                    .run_sd = 0.0,
                    .batch_sd = 0.03,
                    .seed = 9,
                    .telemetry = "sim"};
    const char *dir = tu_tmppath("single");
    assert_int_equal(synth_run(dir, &sc), 0);
    tmoe_error err = {0};
    tmoe_dataset *ds = tmoe_dataset_create(&err);
    ASSERT_OK(tmoe_dataset_add_dir(ds, dir, &err), &err);
    assert_true(tmoe_dataset_simulated(ds));
    tmoe_analysis *a = tmoe_analysis_create(ds, NULL, &err);
    assert_non_null(a);
    const tmoe_group_result *g = tmoe_analysis_find(a, "standard", "kernel_aware_ttha");
    assert_int_equal(g->block_means, 1);
    assert_int_equal(g->n_units, TMOE_ANALYZE_BLOCKS);
    assert_int_equal(g->n_batches, 30);
    assert_true(g->m[TMOE_M_ENERGY_PER_TOKEN].p < 0.01);
    const char *out = tu_tmppath("single_tables");
    ASSERT_OK(tmoe_analysis_write_tables(a, out, &err), &err);
    char path[512];
    snprintf(path, sizeof path, "%s/summary.md", out);
    assert_non_null(strstr(read_all(path), "5 blocks"));
    tmoe_analysis_free(a);
    tmoe_dataset_free(ds);
}

/* A committed dataset from before the per-device columns (bench/results/h100_run, every
 * 100th row of it; committed gzipped, read through gzip -dc): read by name with no problem,
 * the missing list columns empty, merged with a run of the current schema without a schema
 * complaint, and analysed. */
static void test_older_schema(void **state) {
    (void)state;
    const char *src = THERMOE_SOURCE_DIR "/bench/results/h100_run/h100_fp16_open";
    const char *dir = tmp_copy("older");
    assert_int_equal(mkdir(dir, 0777), 0);
    char in[1024], out[1024];
    snprintf(in, sizeof in, "gzip -dc '%s/batches.csv.gz'", src);
    snprintf(out, sizeof out, "%s/batches.csv", dir);
    FILE *fi = popen(in, "r"), *fo = fopen(out, "w");
    assert_non_null(fi);
    assert_non_null(fo);
    char *line = NULL;
    size_t cap = 0;
    long n = 0, kept = 0;
    while (getline(&line, &cap, fi) > 0) {
        if (n++ % 100 != 0) continue;
        fputs(line, fo);
        kept++;
    }
    free(line);
    assert_int_equal(pclose(fi), 0);
    assert_int_equal(fclose(fo), 0);
    assert_true(kept > 100);
    snprintf(in, sizeof in, "%s/metadata.json", src);
    snprintf(out, sizeof out, "%s/metadata.json", dir);
    write_text(out, read_all(in));
    assert_non_null(strstr(read_all(out), "\"nvml\""));

    tmoe_error err = {0};
    tmoe_dataset *ds = tmoe_dataset_create(&err);
    ASSERT_OK(tmoe_dataset_add_dir(ds, dir, &err), &err);
    for (int i = 0; i < tmoe_dataset_nproblems(ds); i++)
        print_message("problem: %s\n", tmoe_dataset_problem(ds, i));
    assert_int_equal(tmoe_dataset_nproblems(ds), 0);
    assert_int_equal(tmoe_dataset_nrows(ds), kept - 1);
    static const int dev_cols[] = {TMOE_RL_DEVICE_ENERGY_J, TMOE_RL_DEVICE_POWER_AVG_W,
                                   TMOE_RL_DEVICE_TEMP_END_C, TMOE_RL_DEVICE_TOKENS};
    for (int i = 0; i < tmoe_dataset_nrows(ds); i++) {
        const tmoe_analyze_row *r = tmoe_dataset_row(ds, i);
        assert_true(r->num[TMOE_RL_ENERGY_J] > 0.0);
        assert_int_equal(r->nlist[TMOE_RL_EXPERT_USAGE_COUNTS], 8);
        for (size_t c = 0; c < sizeof dev_cols / sizeof *dev_cols; c++) {
            assert_null(r->list[dev_cols[c]]);
            assert_int_equal(r->nlist[dev_cols[c]], 0);
        }
    }
    /* with a run of the current schema (two devices) */
    const char *cur = tmp_copy("current");
    good_run(cur, 5, NULL);
    ASSERT_OK(tmoe_dataset_add_dir(ds, cur, &err), &err);
    const tmoe_analyze_row *last = tmoe_dataset_row(ds, tmoe_dataset_nrows(ds) - 1);
    assert_int_equal(last->nlist[TMOE_RL_DEVICE_TOKENS], 2);
    tmoe_analyze_config cfg = tmoe_analyze_config_default();
    cfg.bootstrap = 200;
    tmoe_analysis *a = tmoe_analysis_create(ds, &cfg, &err);
    if (!a) fail_msg("analysis: %s", err.msg);
    for (int i = 0; i < tmoe_dataset_nproblems(ds); i++)
        if (strstr(tmoe_dataset_problem(ds, i), "schema"))
            fail_msg("older and current schema reported: %s", tmoe_dataset_problem(ds, i));
    assert_non_null(tmoe_analysis_find(a, "standard", "kernel_aware_ttha"));
    assert_non_null(tmoe_analysis_find(a, "standard", "static_optimal"));
    tmoe_analysis_free(a);
    tmoe_dataset_free(ds);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quoting),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_block_means),
        cmocka_unit_test(test_older_schema),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
