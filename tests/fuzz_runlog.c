/* Fuzz target: the run-log (batches.csv) reader and the analysis of what it accepts. Any
 * input must be refused with a message naming it, or give rows whose known numbers are
 * finite and within their column's range; read again as a second directory its batches
 * count once; and the statistics, tables and figure scripts of the rows are made without a
 * crash. The seeds are small valid and edge-case logs (also in tests/fuzz/corpus/fuzz_runlog/). */
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz_driver.h"
#include "thermoe/analyze.h"

static char out_path[80];

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void remove_out_dir(void) {
    if (out_path[0]) nftw(out_path, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Where tables and figure scripts go: a fresh directory, made once and removed at exit; in
 * memory (/dev/shm) where there is one, as thousands of small files are written. */
static const char *out_dir(void) {
    if (!out_path[0]) {
        snprintf(out_path, sizeof out_path, "/dev/shm/thermoe-fuzz-runlog-XXXXXX");
        if (!mkdtemp(out_path)) {
            snprintf(out_path, sizeof out_path, "/tmp/thermoe-fuzz-runlog-XXXXXX");
            TMOE_ASSERT(mkdtemp(out_path) != NULL);
        }
        atexit(remove_out_dir);
    }
    return out_path;
}

static void check_rows(const tmoe_dataset *ds) {
    for (int i = 0; i < tmoe_dataset_nrows(ds); i++) {
        const tmoe_analyze_row *r = tmoe_dataset_row(ds, i);
        for (int c = 0; c < TMOE_RL_NCOLS; c++) {
            double v = r->num[c];
            switch (tmoe_runlog_cols[c].type) {
            case TMOE_COL_STR: TMOE_ASSERT(r->str[c] != NULL); break;
            case TMOE_COL_INT: TMOE_ASSERT(isnan(v) || (v >= 0.0 && v == floor(v))); break;
            case TMOE_COL_DOUBLE: TMOE_ASSERT(!isinf(v)); break;
            case TMOE_COL_LIST_INT:
            case TMOE_COL_LIST_DBL:
                TMOE_ASSERT(r->nlist[c] >= 0 && r->nlist[c] <= TMOE_ANALYZE_MAX_LIST);
                TMOE_ASSERT((r->nlist[c] == 0) == (r->list[c] == NULL));
                for (int k = 0; k < r->nlist[c]; k++) TMOE_ASSERT(!isinf(r->list[c][k]));
                break;
            }
        }
        double b = r->num[TMOE_RL_BATCH_IDX];
        TMOE_ASSERT(isnan(b) || b <= 2147483647.0);
    }
    for (int i = 0; i < tmoe_dataset_nproblems(ds); i++)
        for (const char *p = tmoe_dataset_problem(ds, i); *p; p++)
            TMOE_ASSERT((unsigned char)*p >= 0x20 && *p != 0x7f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tmoe_error err = {0};
    tmoe_dataset *ds = tmoe_dataset_create(&err);
    if (!ds) return 0;
    int rc = tmoe_dataset_add_csv_buffer(ds, (const char *)data, size, "fuzz.csv", &err);
    int n = tmoe_dataset_nrows(ds);
    if (rc != TMOE_OK) {
        TMOE_ASSERT(rc == TMOE_ENOMEM || strstr(err.msg, "fuzz.csv"));
        TMOE_ASSERT(n == 0);
        tmoe_dataset_free(ds);
        return 0;
    }
    TMOE_ASSERT(n > 0 && tmoe_dataset_run(ds, 0)->rows == n);
    check_rows(ds);
    /* the same text as a second directory: only rows that name no batch (no run_id, or no
     * batch_idx) are added again */
    int unkeyed = 0;
    for (int i = 0; i < n; i++) {
        const tmoe_analyze_row *r = tmoe_dataset_row(ds, i);
        unkeyed += !r->str[TMOE_RL_RUN_ID][0] || isnan(r->num[TMOE_RL_BATCH_IDX]);
    }
    rc = tmoe_dataset_add_csv_buffer(ds, (const char *)data, size, "fuzz-again.csv", &err);
    TMOE_ASSERT(rc == TMOE_OK || rc == TMOE_ENOMEM);
    if (rc == TMOE_OK) TMOE_ASSERT(tmoe_dataset_nrows(ds) == n + unkeyed);
    tmoe_analyze_config cfg = tmoe_analyze_config_default();
    cfg.bootstrap = 10;
    cfg.gnuplot = "";
    cfg.out_dir = out_dir();
    tmoe_analysis *a = tmoe_analysis_create(ds, &cfg, &err);
    if (a) {
        TMOE_ASSERT(tmoe_analysis_ngroups(a) > 0);
        for (int g = 0; g < tmoe_analysis_ngroups(a); g++)
            TMOE_ASSERT(tmoe_analysis_group(a, g)->n_batches > 0);
        tmoe_figures_result fr;
        if (tmoe_analysis_write_tables(a, cfg.out_dir, &err) == TMOE_OK &&
            tmoe_analysis_write_figures(a, &cfg, &fr, &err) == TMOE_OK)
            TMOE_ASSERT(fr.n_rendered == 0 && fr.n_failed == 0);
    } else
        TMOE_ASSERT(err.code == TMOE_ENOMEM);
    tmoe_analysis_free(a);
    tmoe_dataset_free(ds);
    return 0;
}

#ifndef THERMOE_LIBFUZZER
static const char *const *fuzz_tokens(void) {
    static const char *const t[] = {",",
                                    "\"",
                                    "\"\"",
                                    "\n",
                                    "\r\n",
                                    ";",
                                    ",,",
                                    "nan",
                                    "-nan",
                                    "NaN",
                                    "inf",
                                    "-inf",
                                    "1e999",
                                    "-1",
                                    "-0",
                                    "0.5",
                                    "1e300",
                                    "2147483647",
                                    "2147483648",
                                    "3000000000",
                                    "9007199254740993",
                                    "0x1p3",
                                    "run_id",
                                    "batch_idx",
                                    "repeat",
                                    "tokens",
                                    "workload",
                                    "strategy",
                                    "biases",
                                    "expert_usage_counts",
                                    "throttle_reasons",
                                    "topk_agreement_with_baseline",
                                    "baseline",
                                    "kernel_aware_ttha",
                                    "'",
                                    "`",
                                    "\\",
                                    "\x1b[2J",
                                    "\xff",
                                    NULL};
    return t;
}

/* The header of runlog.h into buf. */
static size_t header(char *buf, size_t n) {
    size_t k = 0;
    for (int c = 0; c < TMOE_RL_NCOLS; c++)
        k += (size_t)snprintf(buf + k, n - k, "%s%s", c ? "," : "", tmoe_runlog_cols[c].name);
    k += (size_t)snprintf(buf + k, n - k, "\n");
    return k;
}

static int fuzz_seeds(fuzz_seed *seeds, int max) {
    static char buf[8192];
    int n = 0;
    /* a valid log: 2 repeats x 2 strategies x 2 batches, every column */
    size_t k = header(buf, sizeof buf);
    for (int rep = 0; rep < 2; rep++)
        for (int s = 0; s < 2; s++)
            for (int b = 0; b < 2; b++)
                k += (size_t)snprintf(
                    buf + k, sizeof buf - k,
                    "0.%d%d%d,r%d,%d,standard,%s,q4,fused,%d,16,1.25,12800,2.5,0.156,counter,300,"
                    "350,40,41,42,50,1410,%d,97,10;6;12;4,0.2;0.3;0.25;0.1,2.4,0.02,%s,%s,%s,sim,"
                    "1.4;1.1,170;130,41;39,16;16\n",
                    rep, s, b, rep, rep, s ? "kernel_aware_ttha" : "baseline", b, b ? 4 : 0,
                    s ? "0.5,0.3,0.02,0.1,0.05,0.77,0.001,0.1;-0.2;0.05;0"
                      : "nan,nan,nan,nan,nan,nan,nan,",
                    s ? "0.9" : "1", s ? "0.01" : "0");
    if (n < max) seeds[n++] = fuzz_from_string(buf);
    /* an older writer's header (the first columns only) */
    if (n < max)
        seeds[n++] = fuzz_from_string(
            "time,run_id,repeat,workload,strategy,expert_type,impl,batch_idx,tokens,latency_ms,"
            "throughput_tokens_s,energy_j,energy_j_per_token\n"
            "0.1,r0,0,skewed,baseline,fp16,unfused,0,8,2.0,4000,0.5,0.0625\n"
            "0.2,r0,0,skewed,static_optimal,fp16,unfused,0,8,2.0,4000,0.5,0.0625\n");
    /* columns by name in another order, quoted cells, CRLF, a mid-file header */
    if (n < max)
        seeds[n++] = fuzz_from_string(
            "strategy,workload,run_id,batch_idx,latency_ms,energy_j_per_token,legacy\r\n"
            "\"base,line\",\"wl \"\"q\"\"\nx\",r1,0,1.5,0.01,7\r\n"
            "\"s'; system('id'); t='\",wl,r1,1,nan,,7\r\n"
            "workload,strategy,run_id,batch_idx,expert_usage_counts\r\n"
            "wl,baseline,r2,0,\"1;2;3\"\r\n");
    /* unknown cells, a repeated header, bad numbers, a last line cut short */
    k = header(buf, sizeof buf);
    k += (size_t)snprintf(buf + k, sizeof buf - k,
                          "0,r0,0,standard,baseline,,,0,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,\n");
    k += header(buf + k, sizeof buf - k);
    k += (size_t)snprintf(buf + k, sizeof buf - k,
                          "0,r0,0,standard,baseline,,,3000000000,,,,,,,,,,,,,,,,1;-2,,,,,,,,,,,,"
                          ",inf,,,,,\n"
                          "-nan,r0,NaN,standard,baseline,q4,fused,2147483647,16,1,1,1,1,counter,1,"
                          "1,1,1,1,1,1,1,1,nan;1,;,1,1,1,1,1,1,1,1,1,1,1,1,sim,1,1,1,1\n"
                          "0.5,r0,0,stan");
    if (n < max) seeds[n++] = fuzz_from_string(buf);
    return n;
}

int main(void) {
    return fuzz_main("fuzz_runlog");
}
#endif
