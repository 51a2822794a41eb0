/* Run log reader: RFC 4180 quoting, and clear file:line messages for empty, truncated,
 * short-row, bad-cell and mixed-schema CSVs, with the good files still analysed; a dataset
 * written before the newest columns loads without complaint. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
    static char bufs[64][512];
    static int n;
    assert_true(n < 64);
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
    for (int i = 0; i < TMOE_RL_LATENCY_MS; i++) f9 = strchr(f9, ',') + 1;
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

/* Replace field col (0-based) of line `line` (1-based) of a CSV without quoted fields. */
static void set_field(const char *path, int line, int col, const char *value) {
    static char in[1 << 18], out[1 << 18];
    snprintf(in, sizeof in, "%s", read_all(path));
    size_t k = 0;
    int ln = 1, fld = 0;
    for (const char *p = in; *p; p++) {
        if (ln == line && fld == col) {
            k += (size_t)snprintf(out + k, sizeof out - k, "%s", value);
            while (*p && *p != ',' && *p != '\n') p++;
            fld++;
            if (!*p) break;
        }
        if (*p == ',') fld++;
        if (*p == '\n') {
            ln++;
            fld = 0;
        }
        out[k++] = *p;
    }
    out[k] = '\0';
    write_text(path, out);
}

/* Numbers are checked on the way in: each bad cell skips its row with a message naming the
 * file, the line and the column, and nothing downstream crashes (a batch_idx of 3e9 used to
 * pass the figures' bound check through an int conversion and index far out of bounds).
 * Large but valid batch indices make figures with their true values, no huge allocation. */
static void test_bad_numbers(void **state) {
    (void)state;
    const char *dir = tmp_copy("badnum");
    good_run(dir, 6, NULL); /* 20 rows: lines 2..21 */
    char path[512];
    snprintf(path, sizeof path, "%s/batches.csv", dir);
    static const struct {
        int col;
        const char *value, *why;
    } bad[] = {
        {TMOE_RL_BATCH_IDX, "3000000000", "is outside [0, 2147483647]"},
        {TMOE_RL_BATCH_IDX, "-1", "is outside [0, 2147483647]"},
        {TMOE_RL_BATCH_IDX, "2.5", "is not an integer"},
        {TMOE_RL_REPEAT, "1e300", "is outside [0, 2147483647]"},
        {TMOE_RL_TOKENS, "inf", "is not finite"},
        {TMOE_RL_THROTTLE_REASONS, "-4", "is outside [0, 9007199254740992]"},
        {TMOE_RL_LATENCY_MS, "-0.5", "is negative"},
        {TMOE_RL_ENERGY_J_PER_TOKEN, "-inf", "is not finite"},
        {TMOE_RL_TOPK_AGREEMENT, "1.5", "is outside [0, 1]"},
        {TMOE_RL_GPU_TEMP_PEAK_C, "1e999", "is not a number"},
        {TMOE_RL_EXPERT_USAGE_COUNTS, "1;2;-3;4", "entry 3 is outside [0, 9007199254740992]"},
        {TMOE_RL_EXPERT_USAGE_COUNTS, "1;2.5", "entry 2 is not an integer"},
        {TMOE_RL_BIASES, "0.1;inf", "entry 2 is not finite"},
    };
    int nbad = (int)(sizeof bad / sizeof *bad);
    for (int i = 0; i < nbad; i++) set_field(path, 2 + i, bad[i].col, bad[i].value);
    /* a list longer than TMOE_ANALYZE_MAX_LIST */
    static char longlist[5 * (TMOE_ANALYZE_MAX_LIST + 2)];
    size_t k = 0;
    for (int i = 0; i <= TMOE_ANALYZE_MAX_LIST; i++)
        k += (size_t)snprintf(longlist + k, sizeof longlist - k, "%s1", i ? ";" : "");
    set_field(path, 2 + nbad, TMOE_RL_EXPERT_TIME_MS, longlist);
    /* large but valid: the last batch index an int holds, on a sparse axis */
    set_field(path, 3 + nbad, TMOE_RL_BATCH_IDX, "2147483647");
    set_field(path, 4 + nbad, TMOE_RL_BATCH_IDX, "1000000000");
    /* a terminal escape sequence in a cell reaches no message */
    set_field(path, 5 + nbad, TMOE_RL_LATENCY_MS, "\x1b[2J\x07");

    tmoe_error err = {0};
    tmoe_dataset *ds = tmoe_dataset_create(&err);
    ASSERT_OK(tmoe_dataset_add_dir(ds, dir, &err), &err);
    for (int i = 0; i < nbad; i++) {
        char want[600];
        snprintf(want, sizeof want, "%s:%d: column '%s': '%s' ", path, 2 + i,
                 tmoe_runlog_cols[bad[i].col].name, bad[i].value);
        int pi = find_problem(ds, want, bad[i].why);
        assert_non_null(strstr(tmoe_dataset_problem(ds, pi), "row skipped"));
    }
    char want[600];
    snprintf(want, sizeof want, "%s:%d: column 'expert_time_ms'", path, 2 + nbad);
    find_problem(ds, want, "more than 4096 entries");
    snprintf(want, sizeof want, "%s:%d: column 'latency_ms': '?[2J?' is not a number", path,
             5 + nbad);
    find_problem(ds, want, NULL);
    for (int i = 0; i < tmoe_dataset_nproblems(ds); i++)
        for (const char *q = tmoe_dataset_problem(ds, i); *q; q++)
            assert_true((unsigned char)*q >= 0x20 && *q != 0x7f);
    assert_int_equal(tmoe_dataset_nrows(ds), 20 - nbad - 2);
    for (int i = 0; i < tmoe_dataset_nrows(ds); i++) {
        const tmoe_analyze_row *r = tmoe_dataset_row(ds, i);
        for (int c = 0; c < TMOE_RL_NCOLS; c++) assert_false(isinf(r->num[c]));
    }
    tmoe_dataset_free(ds);

    /* the whole command on it: tables, figure scripts and report, no crash */
    tmoe_analyze_config cfg = tmoe_analyze_config_default();
    cfg.out_dir = tmp_copy("badnum_report");
    cfg.gnuplot = "";
    cfg.bootstrap = 50;
    tmoe_analyze_summary s;
    const char *dirs[] = {dir};
    ASSERT_OK(tmoe_analyze_run_ex(dirs, 1, &cfg, &s, &err), &err);
    assert_int_equal(s.n_rows, 20 - nbad - 2);
    assert_true(s.figures.n_figures > 0);
    char p[1024];
    snprintf(p, sizeof p, "%s/figures/power_standard.dat", cfg.out_dir);
    char dat[1 << 14];
    snprintf(dat, sizeof dat, "\n%s", read_all(p)); /* every line then starts after a '\n' */
    /* the series are in seconds now; the rows with the large batch indices are still
     * points of it (one per distinct index, none lost or merged) */
    int points = 0;
    for (const char *q = dat; (q = strchr(q, '\n'));)
        if (*++q && *q != '#' && *q != '\n') points++;
    if (points != 20 - nbad - 2)
        fail_msg("%s: %d points, want %d:%s", p, points, 20 - nbad - 2, dat);
    assert_null(strstr(dat, "inf"));
}

/* Rewrite every data line of src into dst/batches.csv (dst created) through fn. */
static void copy_run(const char *src, const char *dst, void (*fn)(char *line, int i)) {
    char path[512];
    snprintf(path, sizeof path, "%s/batches.csv", src);
    static char text[1 << 18], out[1 << 18];
    snprintf(text, sizeof text, "%s", read_all(path));
    mkdir(dst, 0777);
    size_t k = 0;
    int i = 0;
    for (char *save = NULL, *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        if (i > 0 && fn) fn(l, i);
        k += (size_t)snprintf(out + k, sizeof out - k, "%s\n", l);
        i++;
    }
    snprintf(path, sizeof path, "%s/batches.csv", dst);
    write_text(path, out);
}

/* Data line i (from 1) with its run_id blanked, or its strategies renamed. */
static void blank_run_id(char *l, int i) {
    (void)i;
    char *a = strchr(l, ',') + 1, *b = strchr(a, ',');
    memmove(a, b, strlen(b) + 1);
}
static void rename_to(char *l, const char *base, const char *ttha) {
    char *p = strstr(l, ",baseline,");
    if (p) memcpy(p + 1, base, 8);
    p = strstr(l, ",kernel_aware_ttha,");
    if (p) memcpy(p + 1, ttha, 17);
}
static void rename_strategy(char *l, int i) {
    (void)i;
    rename_to(l, "BASELINE", "KERNEL_AWARE_TTHA");
}
static void rename_half(char *l, int i) {
    if (i <= 10) rename_to(l, "baseLINE", "kernel_aware_TTHA");
}

/* One run given twice counts once: the same directory (also with a trailing slash or
 * through a symlink) is read once; a copy of a run (same run_id, repeat, workload, strategy
 * and batch_idx) adds no rows, a partial copy only its new rows; a run sharing a run_id but
 * not its batches (sweep tasks started in the same second) and rows without a run_id are
 * kept. Each drop is reported with both directories. */
static void test_same_run_twice(void **state) {
    (void)state;
    const char *dir = tmp_copy("once"), *slash = tmp_copy("once/"), *link = tmp_copy("once_link");
    good_run(dir, 7, NULL);
    assert_int_equal(symlink(dir, link), 0);
    tmoe_error err = {0};
    tmoe_dataset *ds = tmoe_dataset_create(&err);
    ASSERT_OK(tmoe_dataset_add_dir(ds, dir, &err), &err);
    ASSERT_OK(tmoe_dataset_add_dir(ds, slash, &err), &err);
    ASSERT_OK(tmoe_dataset_add_dir(ds, link, &err), &err);
    ASSERT_OK(tmoe_dataset_add_dir(ds, dir, &err), &err);
    assert_int_equal(tmoe_dataset_nruns(ds), 1);
    assert_int_equal(tmoe_dataset_nrows(ds), 20);
    char want[1200];
    snprintf(want, sizeof want, "%s: the same directory as %s (given twice); read once", link, dir);
    find_problem(ds, want, NULL);
    assert_int_equal(tmoe_dataset_nproblems(ds), 3);

    /* a copy: every row repeats */
    const char *copy = tmp_copy("once_copy");
    copy_run(dir, copy, NULL);
    ASSERT_OK(tmoe_dataset_add_dir(ds, copy, &err), &err);
    assert_int_equal(tmoe_dataset_nrows(ds), 20);
    assert_int_equal(tmoe_dataset_run(ds, 1)->rows, 0);
    snprintf(want, sizeof want,
             "%s/batches.csv: 20 row(s) repeat batches already read from %s (same run_id 's7-run0'",
             copy, dir);
    find_problem(ds, want, "each is counted once");
    /* half of it renamed: only the other half repeats */
    const char *half = tmp_copy("once_half");
    copy_run(dir, half, rename_half);
    ASSERT_OK(tmoe_dataset_add_dir(ds, half, &err), &err);
    assert_int_equal(tmoe_dataset_run(ds, 2)->rows, 10);
    snprintf(want, sizeof want, "%s/batches.csv: 10 row(s) repeat batches", half);
    find_problem(ds, want, NULL);
    /* the same run ids, other batches (other strategy names): all kept */
    const char *other = tmp_copy("once_other");
    copy_run(dir, other, rename_strategy);
    int np = tmoe_dataset_nproblems(ds);
    ASSERT_OK(tmoe_dataset_add_dir(ds, other, &err), &err);
    assert_int_equal(tmoe_dataset_run(ds, 3)->rows, 20);
    for (int i = np; i < tmoe_dataset_nproblems(ds); i++)
        assert_null(strstr(tmoe_dataset_problem(ds, i), "repeat batches"));
    /* another expert-parallel rank of the same run (same run_id and batches, metadata
     * config.expert_parallel.rank 1): its own GPU's batches, all kept */
    const char *rank1 = tmp_copy("once_rank1");
    copy_run(dir, rank1, NULL);
    char meta[600];
    snprintf(meta, sizeof meta, "%s/metadata.json", rank1);
    write_text(meta, "{\"device\": {\"name\": \"H100\"}, \"telemetry_source\": \"nvml\", "
                     "\"config\": {\"expert_parallel\": {\"rank\": 1, \"ranks\": 2}}}");
    np = tmoe_dataset_nproblems(ds);
    ASSERT_OK(tmoe_dataset_add_dir(ds, rank1, &err), &err);
    assert_int_equal(tmoe_dataset_run(ds, 4)->rows, 20);
    assert_int_equal(tmoe_dataset_run(ds, 4)->ep_rank, 1);
    for (int i = np; i < tmoe_dataset_nproblems(ds); i++)
        assert_null(strstr(tmoe_dataset_problem(ds, i), "repeat batches"));
    /* no run id: nothing to match on, kept (twice) */
    const char *anon1 = tmp_copy("once_anon1"), *anon2 = tmp_copy("once_anon2");
    copy_run(dir, anon1, blank_run_id);
    copy_run(dir, anon2, blank_run_id);
    ASSERT_OK(tmoe_dataset_add_dir(ds, anon1, &err), &err);
    ASSERT_OK(tmoe_dataset_add_dir(ds, anon2, &err), &err);
    assert_string_equal(tmoe_dataset_row(ds, tmoe_dataset_nrows(ds) - 1)->str[TMOE_RL_RUN_ID], "");
    assert_int_equal(tmoe_dataset_nrows(ds), 20 + 10 + 20 + 20 + 40);

    /* the statistics see the run once: 2 repeats are 2 units, not 2 per copy */
    tmoe_analyze_config cfg = tmoe_analyze_config_default();
    cfg.bootstrap = 0;
    tmoe_dataset_free(ds);
    ds = tmoe_dataset_create(&err);
    ASSERT_OK(tmoe_dataset_add_dir(ds, dir, &err), &err);
    ASSERT_OK(tmoe_dataset_add_dir(ds, copy, &err), &err);
    ASSERT_OK(tmoe_dataset_add_dir(ds, slash, &err), &err);
    tmoe_analysis *a = tmoe_analysis_create(ds, &cfg, &err);
    assert_non_null(a);
    const tmoe_group_result *g = tmoe_analysis_find(a, "standard", "kernel_aware_ttha");
    assert_non_null(g);
    assert_int_equal(g->n_units, 2);
    assert_int_equal(g->n_batches, 10);
    tmoe_analysis_free(a);
    tmoe_dataset_free(ds);
}

/* A FIFO or directory where batches.csv or metadata.json should be is refused at once with
 * a message (reading it used to block for ever), and the CSV text reader takes a buffer
 * that is not NUL-terminated and may hold NUL bytes. */
static void test_special_files(void **state) {
    (void)state;
    const char *fifo_csv = tmp_copy("fifo_csv"), *fifo_meta = tmp_copy("fifo_meta");
    char path[600];
    assert_int_equal(mkdir(fifo_csv, 0777), 0);
    snprintf(path, sizeof path, "%s/batches.csv", fifo_csv);
    assert_int_equal(mkfifo(path, 0600), 0);
    good_run(fifo_meta, 12, NULL);
    snprintf(path, sizeof path, "%s/metadata.json", fifo_meta);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(mkfifo(path, 0600), 0);
    tmoe_error err = {0};
    tmoe_dataset *ds = tmoe_dataset_create(&err);
    assert_int_not_equal(tmoe_dataset_add_dir(ds, fifo_csv, &err), TMOE_OK);
    char want[700];
    snprintf(want, sizeof want, "%s/batches.csv: is a FIFO", fifo_csv);
    find_problem(ds, want, NULL);
    ASSERT_OK(tmoe_dataset_add_dir(ds, fifo_meta, &err), &err);
    snprintf(want, sizeof want, "%s/metadata.json: is a FIFO", fifo_meta);
    find_problem(ds, want, "unknown for this run");
    assert_int_equal(tmoe_dataset_nrows(ds), 20);
    tmoe_dataset_free(ds);

    /* a buffer: exactly len bytes are read; a NUL byte ends its cell */
    char hdr[4096] = "";
    for (int c = 0; c < TMOE_RL_NCOLS; c++) {
        strcat(hdr, c ? "," : "");
        strcat(hdr, tmoe_runlog_cols[c].name);
    }
    char buf[8192];
    int n = snprintf(buf, sizeof buf, "%s\n0.1,r1,0,standard,base", hdr);
    buf[n++] = '\0';
    n += snprintf(buf + n, sizeof buf - (size_t)n, "line,q4,fused,0,16,1.5");
    for (int c = TMOE_RL_LATENCY_MS + 1; c < TMOE_RL_NCOLS; c++) buf[n++] = ',';
    buf[n++] = '\n';
    memcpy(buf + n, "JUNK", 4); /* past len: never read */
    ds = tmoe_dataset_create(&err);
    ASSERT_OK(tmoe_dataset_add_csv_buffer(ds, buf, (size_t)n, "mem.csv", &err), &err);
    assert_int_equal(tmoe_dataset_nrows(ds), 1);
    const tmoe_analyze_row *r = tmoe_dataset_row(ds, 0);
    assert_string_equal(r->str[TMOE_RL_STRATEGY], "base");
    assert_true(r->num[TMOE_RL_LATENCY_MS] == 1.5);
    assert_string_equal(tmoe_dataset_run(ds, 0)->dir, "mem.csv");
    assert_int_not_equal(tmoe_dataset_add_csv_buffer(ds, buf, 0, "empty.csv", &err), TMOE_OK);
    assert_non_null(strstr(err.msg, "empty.csv: empty file"));
    tmoe_dataset_free(ds);
}

/* The largest finite values are valid: means over batches and runs stay finite (a plain
 * sum overflowed to inf), and the time series hold no inf. */
static void test_huge_values(void **state) {
    (void)state;
    const char *dir = tmp_copy("huge");
    good_run(dir, 13, NULL);
    char path[512];
    snprintf(path, sizeof path, "%s/batches.csv", dir);
    for (int line = 2; line <= 21; line++) {
        set_field(path, line, TMOE_RL_ENERGY_J_PER_TOKEN, line % 2 ? "1.7e308" : "1.6e308");
        set_field(path, line, TMOE_RL_POWER_AVG_W, "1.7e308");
    }
    tmoe_error err = {0};
    tmoe_dataset *ds = tmoe_dataset_create(&err);
    ASSERT_OK(tmoe_dataset_add_dir(ds, dir, &err), &err);
    assert_int_equal(tmoe_dataset_nrows(ds), 20);
    tmoe_analyze_config cfg = tmoe_analyze_config_default();
    cfg.bootstrap = 0;
    tmoe_analysis *a = tmoe_analysis_create(ds, &cfg, &err);
    assert_non_null(a);
    const tmoe_group_result *g = tmoe_analysis_find(a, "standard", "baseline");
    assert_non_null(g);
    double e = g->m[TMOE_M_ENERGY_PER_TOKEN].mean, p = g->m[TMOE_M_POWER_AVG].mean;
    if (!(e >= 1.6e308 && e <= 1.7e308) || !(fabs(p - 1.7e308) <= 1e-12 * 1.7e308))
        fail_msg("means %g and %g, want within the values", e, p);
    cfg.out_dir = tmp_copy("huge_report");
    cfg.gnuplot = "";
    ASSERT_OK(tmoe_analysis_write_figures(a, &cfg, NULL, &err), &err);
    char dat[1024];
    snprintf(dat, sizeof dat, "%s/figures/power_standard.dat", cfg.out_dir);
    const char *text = read_all(dat);
    assert_non_null(strstr(text, "1.7e+308"));
    assert_null(strstr(text, "inf"));
    tmoe_analysis_free(a);
    tmoe_dataset_free(ds);
}

/* A whole file into a malloc'ed string (freed by the caller). */
static char *slurp_file(const char *path) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (n + 1 == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
    }
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* Analyse dir with tables and report (no rendering) into out; the group of strategy. */
static void run_report(const char *dir, const char *out) {
    tmoe_analyze_config cfg = tmoe_analyze_config_default();
    cfg.out_dir = out;
    cfg.gnuplot = "";
    tmoe_error err = {0};
    const char *dirs[] = {dir};
    ASSERT_OK(tmoe_analyze_run_ex(dirs, 1, &cfg, NULL, &err), &err);
}

/* No output of out mentions a p-value or significance. */
static void assert_no_p(const char *out) {
    static const char *const files[] = {"report.html", "summary.md", "summary.tex",
                                        "comparisons.md", "comparisons.tex"};
    char path[1024];
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(path, sizeof path, "%s/%s", out, files[i]);
        char *t = slurp_file(path);
        static const char *const bad[] = {"p = ", "Holm-adjusted p =", "significant at", "<0.0001"};
        for (size_t k = 0; k < sizeof bad / sizeof *bad; k++)
            if (strstr(t, bad[k])) fail_msg("%s mentions \"%s\"", files[i], bad[k]);
        free(t);
    }
    /* the p and p_holm columns of comparisons.csv (13th, 14th) are all "nan" */
    snprintf(path, sizeof path, "%s/comparisons.csv", out);
    char *t = slurp_file(path);
    int rows = 0;
    for (char *line = strchr(t, '\n'); line && line[1]; line = strchr(line + 1, '\n')) {
        char *q = line + 1;
        for (int c = 0; c < 12; c++) q = strchr(q, ',') + 1;
        if (strncmp(q, "nan,nan,", 8) != 0) fail_msg("comparisons.csv p: %.40s", q);
        rows++;
    }
    assert_true(rows > 0);
    free(t);
}

/* A single repeat: one statistical unit (its batches are not independent), effect sizes
 * only and no p-value anywhere; the temperature change is a difference in degrees C, and a
 * peak is the max over the batches. */
static void test_one_repeat(void **state) {
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
    const char *dir = tmp_copy("single");
    assert_int_equal(synth_run(dir, &sc), 0);
    tmoe_error err = {0};
    tmoe_dataset *ds = tmoe_dataset_create(&err);
    ASSERT_OK(tmoe_dataset_add_dir(ds, dir, &err), &err);
    assert_true(tmoe_dataset_simulated(ds));
    tmoe_analysis *a = tmoe_analysis_create(ds, NULL, &err);
    assert_non_null(a);
    const tmoe_group_result *g = tmoe_analysis_find(a, "standard", "kernel_aware_ttha");
    const tmoe_group_result *b = tmoe_analysis_find(a, "standard", "baseline");
    assert_int_equal(g->n_units, 1);
    assert_int_equal(g->n_batches, 30);
    assert_int_equal(g->routing_unchanged, 0);
    for (int m = 0; m < TMOE_M_COUNT; m++) {
        assert_true(isnan(g->m[m].p));
        assert_true(isnan(g->m[m].p_holm));
    }
    assert_true(g->m[TMOE_M_ENERGY_PER_TOKEN].pct < -10.0); /* the effect is still given */
    /* temperatures: peaks over the batches, compared in C */
    double rise = 20.0 * (1.0 - exp(-29.0 / 8.0));
    const tmoe_metric_result *t = &g->m[TMOE_M_GPU_TEMP_PEAK], *tb = &b->m[TMOE_M_GPU_TEMP_PEAK];
    if (fabs(t->peak - (40.5 + 0.8 * rise)) > 0.01 || fabs(tb->peak - (40.5 + rise)) > 0.01)
        fail_msg("peaks %g, %g", t->peak, tb->peak);
    if (fabs(t->diff - (-0.2 * rise)) > 0.01) fail_msg("temperature difference %g C", t->diff);
    assert_true(isnan(t->pct) && isnan(t->pct_lo));
    assert_true(isnan(g->m[TMOE_M_MEM_TEMP_PEAK].pct));
    tmoe_analysis_free(a);
    tmoe_dataset_free(ds);

    const char *out = tmp_copy("single_report");
    run_report(dir, out);
    assert_no_p(out);
    char path[1024];
    snprintf(path, sizeof path, "%s/summary.md", out);
    char *md = slurp_file(path);
    assert_non_null(strstr(md, "1 repeat "));
    assert_non_null(strstr(md, "1 repeat(s): effect sizes only"));
    free(md);
    snprintf(path, sizeof path, "%s/report.html", out);
    char *html = slurp_file(path);
    assert_non_null(strstr(html, "1 repeat(s): effect sizes only"));
    char want[64];
    snprintf(want, sizeof want, "Peak GPU temperature %+.1f C", -0.2 * rise);
    if (!strstr(html, want)) fail_msg("report lacks \"%s\"", want);
    free(html);
    snprintf(path, sizeof path, "%s/comparisons.md", out);
    char *cmp = slurp_file(path);
    const char *row = strstr(cmp, "| peak GPU temperature (C) |");
    assert_non_null(row);
    /* one repeat: the change cell is "-3.90 C" (a difference in C, no CI, no percent) */
    const char *c = strstr(row, " C |");
    assert_non_null(c);
    const char *q = c;
    while (q > row && q[-1] != ' ') q--;
    double d = strtod(q, NULL);
    if (!(fabs(d - (-0.2 * rise)) < 0.02)) fail_msg("comparisons.md temperature row: %.120s", row);
    free(cmp);
}

/* Three repeats: p-values come from the repeat-level means, paired by repeat. */
static void test_three_repeats(void **state) {
    (void)state;
    const double mult[] = {1.0, 0.8};
    synth_cfg sc = {.strategies = STRATS,
                    .energy_mult = mult,
                    .nstrategies = 2,
                    .workloads = WL,
                    .nworkloads = 1,
                    .repeats = 3,
                    .batches = 12,
                    .experts = 4,
                    .run_sd = 0.03,
                    .batch_sd = 0.03,
                    .seed = 21,
                    .telemetry = "nvml"};
    const char *dir = tmp_copy("three");
    assert_int_equal(synth_run(dir, &sc), 0);
    tmoe_error err = {0};
    tmoe_dataset *ds = tmoe_dataset_create(&err);
    ASSERT_OK(tmoe_dataset_add_dir(ds, dir, &err), &err);
    tmoe_analysis *a = tmoe_analysis_create(ds, NULL, &err);
    assert_non_null(a);
    const tmoe_group_result *g = tmoe_analysis_find(a, "standard", "kernel_aware_ttha");
    assert_int_equal(g->n_units, 3);
    const tmoe_metric_result *e = &g->m[TMOE_M_ENERGY_PER_TOKEN];
    assert_int_equal(e->paired, 1);
    assert_int_equal(e->n_pairs, 3);
    /* the same test by hand on the per-repeat means */
    double x[3] = {0}, y[3] = {0};
    int nx[3] = {0}, ny[3] = {0};
    for (int i = 0; i < tmoe_dataset_nrows(ds); i++) {
        const tmoe_analyze_row *r = tmoe_dataset_row(ds, i);
        int rep = (int)r->num[TMOE_RL_REPEAT];
        double v = r->num[TMOE_RL_ENERGY_J_PER_TOKEN];
        if (strcmp(r->str[TMOE_RL_STRATEGY], "baseline") == 0) {
            x[rep] += v;
            nx[rep]++;
        } else {
            y[rep] += v;
            ny[rep]++;
        }
    }
    for (int k = 0; k < 3; k++) {
        x[k] /= nx[k];
        y[k] /= ny[k];
    }
    tmoe_welch w;
    ASSERT_OK(tmoe_stats_paired_t(x, y, 3, 0.95, &w, &err), &err);
    if (!(fabs(e->p - w.p) <= 1e-9 * w.p)) fail_msg("p %g, by hand %g", e->p, w.p);
    if (!(fabs(e->diff - w.diff) <= 1e-12)) fail_msg("diff %g, by hand %g", e->diff, w.diff);
    assert_true(e->p < 0.05);
    assert_true(isfinite(e->p_holm) && e->p_holm >= e->p);
    /* temperature differences are in C, with a CI, never percent */
    const tmoe_metric_result *t = &g->m[TMOE_M_GPU_TEMP_PEAK];
    assert_true(isnan(t->pct));
    double rise = 20.0 * (1.0 - exp(-11.0 / 8.0));
    if (fabs(t->diff - (-0.2 * rise)) > 0.01) fail_msg("temperature difference %g C", t->diff);
    tmoe_analysis_free(a);
    tmoe_dataset_free(ds);
    const char *out = tmp_copy("three_report");
    run_report(dir, out);
    char path[1024];
    snprintf(path, sizeof path, "%s/report.html", out);
    char *html = slurp_file(path);
    assert_non_null(strstr(html, "paired t p = "));
    assert_null(strstr(html, "effect sizes only"));
    free(html);
}

/* A strategy whose selections equal the baseline's on every batch is "routing unchanged":
 * no effect and no test, even with noise and 3 repeats. */
static void test_routing_unchanged(void **state) {
    (void)state;
    static const char *const strats[] = {"baseline", "static_optimal", "kernel_aware_ttha"};
    const double mult[] = {1.0, 1.0, 0.8};
    const int noop[] = {0, 1, 0};
    synth_cfg sc = {.strategies = strats,
                    .energy_mult = mult,
                    .nstrategies = 3,
                    .workloads = WL,
                    .nworkloads = 1,
                    .repeats = 3,
                    .batches = 10,
                    .experts = 4,
                    .run_sd = 0.05,
                    .batch_sd = 0.03,
                    .seed = 5,
                    .telemetry = "nvml",
                    .noop = noop};
    const char *dir = tmp_copy("noop");
    assert_int_equal(synth_run(dir, &sc), 0);
    tmoe_error err = {0};
    tmoe_dataset *ds = tmoe_dataset_create(&err);
    ASSERT_OK(tmoe_dataset_add_dir(ds, dir, &err), &err);
    tmoe_analysis *a = tmoe_analysis_create(ds, NULL, &err);
    assert_non_null(a);
    const tmoe_group_result *n = tmoe_analysis_find(a, "standard", "static_optimal");
    const tmoe_group_result *t = tmoe_analysis_find(a, "standard", "kernel_aware_ttha");
    assert_int_equal(n->routing_unchanged, 1);
    assert_int_equal(t->routing_unchanged, 0);
    assert_int_equal(tmoe_analysis_find(a, "standard", "baseline")->routing_unchanged, 0);
    for (int m = 0; m < TMOE_M_COUNT; m++) {
        assert_true(isnan(n->m[m].p) && isnan(n->m[m].p_holm));
        assert_true(isnan(n->m[m].pct) && isnan(n->m[m].diff));
    }
    assert_true(isfinite(t->m[TMOE_M_ENERGY_PER_TOKEN].p));
    tmoe_analysis_free(a);
    tmoe_dataset_free(ds);
    const char *out = tmp_copy("noop_report");
    run_report(dir, out);
    char path[1024];
    snprintf(path, sizeof path, "%s/report.html", out);
    char *html = slurp_file(path);
    assert_non_null(strstr(html, "static_optimal on standard: routing unchanged"));
    assert_null(strstr(html, "static_optimal used"));
    free(html);
    snprintf(path, sizeof path, "%s/comparisons.md", out);
    char *md = slurp_file(path);
    assert_non_null(strstr(md, "routing unchanged"));
    free(md);
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
    /* the older run's experts are fp16, the synthetic run's q4: named strategy@type */
    assert_non_null(tmoe_analysis_find(a, "standard", "kernel_aware_ttha@q4"));
    assert_non_null(tmoe_analysis_find(a, "standard", "static_optimal@fp16"));
    assert_null(tmoe_analysis_find(a, "standard", "static_optimal"));
    tmoe_analysis_free(a);
    tmoe_dataset_free(ds);
}

/* One hand-made run directory for test_expert_types: metadata with seed, and rows of
 * baseline (and, at q4, predictive_thermal) over repeats 0-2 and batches 0-3. The text of
 * (seed, repeat, batch) has NLL 3 + 0.1 repeat + 0.01 batch + 0.001 seed at fp16; q4 adds
 * 0.02 to every NLL and predictive_thermal 0.03 more. */
static const char *types_run(const char *name, const char *run_id, const char *type, int seed) {
    const char *dir = tmp_copy(name);
    mkdir(dir, 0755);
    char path[1024], buf[256];
    snprintf(path, sizeof path, "%s/metadata.json", dir);
    snprintf(buf, sizeof buf,
             "{\"device\": {\"name\": \"test\"}, \"telemetry_source\": \"nvml\", "
             "\"config\": {\"seed\": %d}}\n",
             seed);
    write_text(path, buf);
    snprintf(path, sizeof path, "%s/batches.csv", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("run_id,repeat,workload,strategy,expert_type,batch_idx,tokens,latency_ms,"
          "energy_j_per_token,topk_agreement_with_baseline,nll,nll_baseline,tokens_scored\n",
          f);
    int q4 = strcmp(type, "q4") == 0;
    for (int rep = 0; rep < 3; rep++)
        for (int s = 0; s < 1 + q4; s++)
            for (int b = 0; b < 4; b++) {
                double text = 3.0 + 0.1 * rep + 0.01 * b + 0.001 * seed, base = text + 0.02 * q4;
                fprintf(f, "%s,%d,standard,%s,%s,%d,512,10,%.17g,%g,%.17g,%.17g,500\n", run_id, rep,
                        s ? "predictive_thermal" : "baseline", type, b,
                        (q4 ? 0.05 : 0.1) * (s ? 0.8 : 1.0) * (1.0 + 0.01 * rep + 0.001 * b),
                        s ? 0.9 : 1.0, base + 0.03 * s, base);
            }
    assert_int_equal(fclose(f), 0);
    return dir;
}

/* Runs at fp16 and q4 merged: the strategies are named strategy@type, the default baseline
 * is the one at fp16, the q4 groups' perplexity is paired with the fp16 baseline's NLL on
 * the same text (same seed, repeat and batch), a q4 run whose seed the fp16 run lacks adds
 * no pair, and two runs with the same seed count each text once. */
static void test_expert_types(void **state) {
    (void)state;
    const char *fp = types_run("types_fp16", "A", "fp16", 7),
               *q1 = types_run("types_q4a", "B", "q4", 7),
               *q2 = types_run("types_q4b", "C", "q4", 7),
               *q3 = types_run("types_q4c", "D", "q4", 8);
    tmoe_error err = {0};
    tmoe_dataset *ds = tmoe_dataset_create(&err);
    const char *dirs[] = {fp, q1, q2, q3};
    for (int i = 0; i < 4; i++) ASSERT_OK(tmoe_dataset_add_dir(ds, dirs[i], &err), &err);
    tmoe_analysis *a = tmoe_analysis_create(ds, NULL, &err);
    assert_non_null(a);
    assert_string_equal(tmoe_dataset_widest_type(ds), "fp16");
    assert_null(tmoe_analysis_find(a, "standard", "baseline"));
    assert_int_equal(tmoe_analysis_ngroups(a), 3);
    const tmoe_group_result *b4 = tmoe_analysis_find(a, "standard", "baseline@q4"),
                            *p4 = tmoe_analysis_find(a, "standard", "predictive_thermal@q4");
    assert_non_null(tmoe_analysis_find(a, "standard", "baseline@fp16"));
    assert_non_null(b4);
    assert_non_null(p4);
    /* baseline@q4 agrees with its own baseline but runs other experts: not unchanged */
    assert_int_equal(b4->routing_unchanged, 0);
    const tmoe_metric_result *n = &b4->m[TMOE_M_NLL];
    assert_int_equal(n->n_pairs, 3); /* texts of seed 7, repeats 0-2; seed 8 has no partner */
    if (fabs(n->diff - 0.02) > 1e-12) fail_msg("baseline@q4 NLL change %.17g, want 0.02", n->diff);
    assert_true(isnan(n->p)); /* every text differs by exactly 0.02: no test */
    n = &p4->m[TMOE_M_NLL];
    assert_int_equal(n->n_pairs, 3);
    if (fabs(n->diff - 0.05) > 1e-12)
        fail_msg("predictive@q4 NLL change %.17g, want 0.05", n->diff);
    const tmoe_metric_result *e = &b4->m[TMOE_M_ENERGY_PER_TOKEN];
    if (fabs(e->pct + 50.0) > 0.5)
        fail_msg("baseline@q4 energy change %g%%, want about -50%%", e->pct);
    tmoe_analysis_free(a);
    /* against the q4 baseline: predictive_thermal@q4 pairs with its own nll_baseline, over
     * the texts of seeds 7 and 8 (B and C share theirs) */
    tmoe_analyze_config cfg = tmoe_analyze_config_default();
    cfg.baseline = "baseline@q4";
    a = tmoe_analysis_create(ds, &cfg, &err);
    assert_non_null(a);
    n = &tmoe_analysis_find(a, "standard", "predictive_thermal@q4")->m[TMOE_M_NLL];
    assert_int_equal(n->n_pairs, 6);
    if (fabs(n->diff - 0.03) > 1e-12) fail_msg("NLL change vs baseline@q4 %.17g", n->diff);
    n = &tmoe_analysis_find(a, "standard", "baseline@fp16")->m[TMOE_M_NLL];
    assert_int_equal(n->n_pairs, 3);
    if (fabs(n->diff + 0.02) > 1e-12) fail_msg("fp16 NLL change vs q4 %.17g", n->diff);
    tmoe_analysis_free(a);
    tmoe_dataset_free(ds);
    /* one type: names as they are; two runs of one seed score one set of texts */
    ds = tmoe_dataset_create(&err);
    ASSERT_OK(tmoe_dataset_add_dir(ds, q1, &err), &err);
    ASSERT_OK(tmoe_dataset_add_dir(ds, q2, &err), &err);
    a = tmoe_analysis_create(ds, NULL, &err);
    assert_non_null(a);
    assert_null(tmoe_dataset_widest_type(ds));
    const tmoe_group_result *p = tmoe_analysis_find(a, "standard", "predictive_thermal");
    assert_non_null(p);
    assert_int_equal(p->n_units, 6);
    assert_int_equal(p->m[TMOE_M_NLL].n_pairs, 3);
    tmoe_analysis_free(a);
    tmoe_dataset_free(ds);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quoting),           cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_bad_numbers),       cmocka_unit_test(test_same_run_twice),
        cmocka_unit_test(test_special_files),     cmocka_unit_test(test_huge_values),
        cmocka_unit_test(test_one_repeat),        cmocka_unit_test(test_three_repeats),
        cmocka_unit_test(test_routing_unchanged), cmocka_unit_test(test_older_schema),
        cmocka_unit_test(test_expert_types),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
