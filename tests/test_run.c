/* thermoe run end to end (CPU backend, simulated H100, both asked for: on a machine with a
 * GPU and NVML, auto would pick those): the default run's files (every column present and
 * typed, no NaN where a value is defined, telemetry named, metadata complete, traces valid
 * JSON with the expected event kinds); a SIGKILL mid-run leaves whole lines and --resume
 * completes to the exact row count; bad flags and files fail clearly. */
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "thermoe/exp.h"

#ifdef THERMOE_HAVE_ZLIB
#include <zlib.h>
#endif

static const char *bin(void) {
    const char *b = getenv("THERMOE_BIN");
    if (!b || !*b) fail_msg("THERMOE_BIN is not set (run through ctest)");
    return b;
}

/* Largest file the next run_thermoe child may write, bytes (RLIMIT_FSIZE: a write past it
 * fails with EFBIG, as on a full disk); 0 = no limit. Reset by run_thermoe. */
static long child_fsize_limit;

/* Run thermoe with args, stdout+stderr to log; returns the exit status (or -signal). */
static int run_thermoe(char *const args[], const char *log, int kill_after_rows, const char *csv) {
    long fsize = child_fsize_limit;
    child_fsize_limit = 0;
    pid_t pid = fork();
    if (pid < 0) fail_msg("fork: %s", strerror(errno));
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        if (fsize > 0) {
            struct rlimit rl = {(rlim_t)fsize, (rlim_t)fsize};
            if (setrlimit(RLIMIT_FSIZE, &rl) != 0) _exit(126);
        }
        execv(bin(), args);
        _exit(127);
    }
    int status;
    if (kill_after_rows > 0) {
        for (;;) {
            if (waitpid(pid, &status, WNOHANG) == pid)
                fail_msg("run ended before it could be killed");
            FILE *f = fopen(csv, "r");
            int lines = 0, ch;
            if (f) {
                while ((ch = fgetc(f)) != EOF) lines += ch == '\n';
                fclose(f);
            }
            if (lines - 1 >= kill_after_rows) break;
            usleep(20000);
        }
        kill(pid, SIGKILL);
    }
    if (waitpid(pid, &status, 0) != pid) fail_msg("waitpid: %s", strerror(errno));
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *s = malloc((size_t)n + 1);
    if (!s) abort();
    size_t got = fread(s, 1, (size_t)n, f);
    s[got] = '\0';
    fclose(f);
    return s;
}

/* Check every line of batches.csv: field count, typed cells, NaN only where allowed.
 * Returns the number of data rows. */
static long check_csv(const char *path, int allow_torn) {
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char *line = NULL, *buf = NULL, *fields[TMOE_RL_NCOLS + 1];
    size_t cap = 0;
    ssize_t len;
    long lineno = 0, rows = 0;
    while ((len = getline(&line, &cap, f)) > 0) {
        lineno++;
        if (line[len - 1] != '\n') {
            if (!allow_torn) fail_msg("%s:%ld: line without newline", path, lineno);
            break;
        }
        line[len - 1] = '\0';
        buf = realloc(buf, (size_t)len + 1);
        int nf = tmoe_runlog_split(line, buf, fields, TMOE_RL_NCOLS);
        if (nf != TMOE_RL_NCOLS)
            fail_msg("%s:%ld: %d fields, want %d", path, lineno, nf, TMOE_RL_NCOLS);
        if (lineno == 1) {
            for (int c = 0; c < TMOE_RL_NCOLS; c++)
                assert_string_equal(fields[c], tmoe_runlog_cols[c].name);
            continue;
        }
        rows++;
        for (int c = 0; c < TMOE_RL_NCOLS; c++) {
            const char *s = fields[c];
            char *end;
            switch (tmoe_runlog_cols[c].type) {
            case TMOE_COL_INT:
                if (!*s && c == TMOE_RL_TOKENS_SCORED) break; /* the LM's: checked below */
                strtoll(s, &end, 10);
                if (!*s || *end)
                    fail_msg("%s:%ld: %s = '%s' is not an integer", path, lineno,
                             tmoe_runlog_cols[c].name, s);
                break;
            case TMOE_COL_DOUBLE:
                if (!strcmp(s, "nan")) break;
                if (!*s && (c == TMOE_RL_NLL || c == TMOE_RL_NLL_BASELINE)) break; /* below */
                strtod(s, &end);
                if (!*s || *end)
                    fail_msg("%s:%ld: %s = '%s' is not a number", path, lineno,
                             tmoe_runlog_cols[c].name, s);
                break;
            case TMOE_COL_LIST_INT:
            case TMOE_COL_LIST_DBL:
                if (!*s && c == TMOE_RL_LAYER_EXPERT_COUNTS) break; /* the LM's: below */
                if (!*s) fail_msg("%s:%ld: %s is empty", path, lineno, tmoe_runlog_cols[c].name);
                break;
            default: break;
            }
        }
        /* values that are always defined on the simulated GPU */
        static const int defined[] = {
            TMOE_RL_LATENCY_MS,         TMOE_RL_THROUGHPUT,         TMOE_RL_ENERGY_J,
            TMOE_RL_ENERGY_J_PER_TOKEN, TMOE_RL_POWER_AVG_W,        TMOE_RL_GPU_TEMP_END_C,
            TMOE_RL_GPU_TEMP_PEAK_C,    TMOE_RL_MEM_TEMP_C,         TMOE_RL_SM_CLOCK_MHZ,
            TMOE_RL_PREDICTED_ENERGY_J, TMOE_RL_ROUTER_OVERHEAD_MS, TMOE_RL_TOPK_AGREEMENT,
            TMOE_RL_OUTPUT_REL_ERROR};
        for (size_t i = 0; i < sizeof defined / sizeof *defined; i++)
            if (!strcmp(fields[defined[i]], "nan"))
                fail_msg("%s:%ld: %s is nan", path, lineno, tmoe_runlog_cols[defined[i]].name);
        assert_string_equal(fields[TMOE_RL_TELEMETRY_SOURCE], "sim");
        if (!*fields[TMOE_RL_ENERGY_EXPERT_SHAPE])
            fail_msg("%s:%ld: energy_expert_shape is empty", path, lineno);
        /* the decoder LM's columns: all known (an LM run) or all unknown (the random block) */
        static const int lm_cols[] = {TMOE_RL_NLL, TMOE_RL_NLL_BASELINE, TMOE_RL_TOKENS_SCORED,
                                      TMOE_RL_LAYER_EXPERT_COUNTS};
        int known = 0;
        for (size_t i = 0; i < sizeof lm_cols / sizeof *lm_cols; i++)
            known += *fields[lm_cols[i]] && strcmp(fields[lm_cols[i]], "nan");
        if (known != 0 && known != 4)
            fail_msg("%s:%ld: %d of the 4 LM columns known", path, lineno, known);
        if (known && !strcmp(fields[TMOE_RL_STRATEGY], "baseline") &&
            strcmp(fields[TMOE_RL_NLL], fields[TMOE_RL_NLL_BASELINE]))
            fail_msg("%s:%ld: baseline nll %s != nll_baseline %s", path, lineno,
                     fields[TMOE_RL_NLL], fields[TMOE_RL_NLL_BASELINE]);
        if (!strcmp(fields[TMOE_RL_STRATEGY], "kernel_aware_ttha") &&
            !strcmp(fields[TMOE_RL_TTHA_TOTAL_LOSS], "nan"))
            fail_msg("%s:%ld: kernel_aware_ttha row without its loss", path, lineno);
        double ept = strtod(fields[TMOE_RL_ENERGY_J_PER_TOKEN], NULL);
        if (!(ept > 0.0)) fail_msg("%s:%ld: energy per token %g", path, lineno, ept);
    }
    free(line);
    free(buf);
    fclose(f);
    return rows;
}

/* A trace file as JSON: .json.gz through zlib (the build writes gzip traces when it has
 * zlib, tmoe_trace_ext), else plain. */
static json_t *load_trace(const char *path) {
    json_error_t je;
    size_t n = strlen(path);
    if (n > 3 && !strcmp(path + n - 3, ".gz")) {
#ifdef THERMOE_HAVE_ZLIB
        gzFile gz = gzopen(path, "rb");
        if (!gz) fail_msg("%s: cannot open", path);
        size_t cap = 1 << 16, len = 0;
        char *buf = malloc(cap);
        int k;
        while (buf && (k = gzread(gz, buf + len, (unsigned)(cap - len))) > 0) {
            len += (size_t)k;
            if (len == cap) buf = realloc(buf, cap *= 2);
        }
        int zerr = 0;
        gzerror(gz, &zerr);
        gzclose(gz);
        if (!buf || zerr != Z_OK) fail_msg("%s: not a complete gzip stream (%d)", path, zerr);
        json_t *t = json_loadb(buf, len, 0, &je);
        free(buf);
        if (!t) fail_msg("%s:%d:%d: %s", path, je.line, je.column, je.text);
        return t;
#else
        fail_msg("%s: a gzip trace from a build without zlib", path);
#endif
    }
    json_t *t = json_load_file(path, 0, &je);
    if (!t) fail_msg("%s:%d:%d: %s", path, je.line, je.column, je.text);
    return t;
}

/* A combination's trace: spans, counters and track names, and one clock: each batch's router
 * span begins before its device ops end and after the previous batch's ops began (host and
 * device placed on the same timeline, not host time since start vs device time). */
static void check_trace(const char *path) {
    json_t *t = load_trace(path);
    assert_true(json_is_array(t));
    int x = 0, c = 0, m = 0;
    double op_lo[64], op_hi[64], rt[64];
    for (int b = 0; b < 64; b++) op_lo[b] = INFINITY, op_hi[b] = -INFINITY, rt[b] = NAN;
    size_t i;
    json_t *ev;
    json_array_foreach(t, i, ev) {
        const char *ph = json_string_value(json_object_get(ev, "ph"));
        assert_non_null(ph);
        x += !strcmp(ph, "X");
        c += !strcmp(ph, "C");
        m += !strcmp(ph, "M");
        if (strcmp(ph, "X")) continue;
        int b = (int)json_integer_value(json_object_get(json_object_get(ev, "args"), "batch"));
        if (b < 0 || b >= 64) continue;
        double ts = json_number_value(json_object_get(ev, "ts"));
        double dur = json_number_value(json_object_get(ev, "dur"));
        if (!strcmp(json_string_value(json_object_get(ev, "cat")), "host")) {
            rt[b] = ts;
        } else {
            op_lo[b] = fmin(op_lo[b], ts);
            op_hi[b] = fmax(op_hi[b], ts + dur);
        }
    }
    json_decref(t);
    if (!x || !c || !m) fail_msg("%s: %d spans, %d counters, %d names", path, x, c, m);
    for (int b = 0; b < 64; b++) {
        if (isnan(rt[b])) continue;
        if (!(rt[b] <= op_hi[b] + 1.0 && rt[b] >= op_lo[b] - 1e6))
            fail_msg("%s: batch %d router at %.3f us, its device ops at %.3f..%.3f us: not one "
                     "clock",
                     path, b, rt[b], op_lo[b], op_hi[b]);
    }
}

/* The whole-run trace: the monitor's samples over the run (not a few points per batch), and
 * a phase span per combination inside the counters' time range. */
static void check_run_trace(const char *path, int combos) {
    json_t *t = load_trace(path);
    int c = 0, spans = 0;
    double c_lo = INFINITY, c_hi = -INFINITY, s_lo = INFINITY, s_hi = -INFINITY;
    size_t i;
    json_t *ev;
    json_array_foreach(t, i, ev) {
        const char *ph = json_string_value(json_object_get(ev, "ph"));
        double ts = json_number_value(json_object_get(ev, "ts"));
        if (!strcmp(ph, "C") &&
            !strcmp(json_string_value(json_object_get(ev, "name")), "gpu_temp_c")) {
            c++;
            c_lo = fmin(c_lo, ts);
            c_hi = fmax(c_hi, ts);
        } else if (!strcmp(ph, "X") &&
                   strncmp(json_string_value(json_object_get(ev, "name")), "r0 ", 3) == 0) {
            spans++;
            s_lo = fmin(s_lo, ts);
            s_hi = fmax(s_hi, ts);
        }
    }
    json_decref(t);
    if (spans != combos) fail_msg("%s: %d combination spans, expected %d", path, spans, combos);
    /* the simulated monitor samples every 50 ms from the run's start; the run rests 30 s
     * before each combination, so the samples reach the last one's start */
    if (c < 100 || c_lo > s_lo || c_hi < s_hi - 50e3)
        fail_msg("%s: %d temperature samples over %.0f..%.0f us, combinations %.0f..%.0f us", path,
                 c, c_lo, c_hi, s_lo, s_hi);
}

/* The comparisons on the default model and text through the CLI: a short run of each, rows
 * and summary lines under their names; bad values of their flags are usage errors (exit 2);
 * the random block refuses them (exit 1, saying why). */
static void test_default_comparisons(void **state) {
    (void)state;
    const char *out = tu_tmppath("default_cmp");
    char *args[] = {(char *)bin(),
                    "run",
                    "--out",
                    (char *)out,
                    "--no-analyze",
                    "--backend",
                    "cpu",
                    "--telemetry",
                    "sim",
                    "--num-samples-per-workload",
                    "1",
                    "--workloads",
                    "small_batch",
                    "--cooldown",
                    "0",
                    "--warmup-steady",
                    "0",
                    "--routing-strategy",
                    "baseline,topk_minus_one,top_p,expert_prune,capacity",
                    "--top-p",
                    "0.5",
                    "--prune-experts",
                    "2",
                    "--capacity-factor",
                    "1.25",
                    "--capacity-overflow",
                    "next",
                    NULL};
    int rc = run_thermoe(args, tu_tmppath("default_cmp.log"), 0, NULL);
    char *log = slurp(tu_tmppath("default_cmp.log"));
    if (rc != 0) fail_msg("thermoe run exited %d:\n%s", rc, log ? log : "");
    static const char *names[] = {"topk_minus_one", "top_p", "expert_prune", "capacity"};
    char path[600];
    snprintf(path, sizeof path, "%s/batches.csv", out);
    char *csv = slurp(path);
    assert_true(csv && log);
    for (int i = 0; i < 4; i++) {
        char want[64];
        snprintf(want, sizeof want, ",%s,", names[i]);
        if (!strstr(csv, want)) fail_msg("batches.csv has no %s row", names[i]);
        snprintf(want, sizeof want, "small_batch      %s ", names[i]);
        if (!strstr(log, want)) fail_msg("the summary has no %s line:\n%s", names[i], log);
    }
    free(csv);
    free(log);
    static const char *const bad[][2] = {
        {"--top-p", "0"},           {"--top-p", "1.5"},
        {"--capacity-factor", "0"}, {"--capacity-overflow", "spill"},
        {"--prune-experts", "-1"},  {"--routing-strategy", "top_k"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char *a[] = {
            (char *)bin(),     "run", "--out", (char *)tu_tmppath("cmp_bad"), (char *)bad[i][0],
            (char *)bad[i][1], NULL};
        rc = run_thermoe(a, tu_tmppath("cmp_bad.log"), 0, NULL);
        if (rc != 2) fail_msg("%s %s: exit %d, want 2", bad[i][0], bad[i][1], rc);
    }
    char *blk[] = {(char *)bin(),
                   "run",
                   "--out",
                   (char *)tu_tmppath("cmp_block"),
                   "--model",
                   "random",
                   "--routing-strategy",
                   "baseline,top_p",
                   "--telemetry",
                   "sim",
                   "--backend",
                   "cpu",
                   NULL};
    rc = run_thermoe(blk, tu_tmppath("cmp_block.log"), 0, NULL);
    log = slurp(tu_tmppath("cmp_block.log"));
    if (rc != 1 || !log || !strstr(log, "top_p selects each token's experts itself"))
        fail_msg("random block with top_p: exit %d:\n%s", rc, log ? log : "");
    free(log);
}

static void test_default_run(void **state) {
    (void)state;
    const char *out = tu_tmppath("default");
    /* the default model and text; one sample of one workload keeps it short under the
     * sanitizers (scripts/run.sh runs the full default) */
    char *args[] = {
        (char *)bin(), "run",         "--out",       (char *)out, "--no-analyze",
        "--backend",   "cpu",         "--telemetry", "sim",       "--num-samples-per-workload",
        "1",           "--workloads", "small_batch", NULL};
    int rc = run_thermoe(args, tu_tmppath("default.log"), 0, NULL);
    if (rc != 0) {
        char *log = slurp(tu_tmppath("default.log"));
        fail_msg("thermoe run exited %d:\n%s", rc, log ? log : "");
    }
    char path[600];
    snprintf(path, sizeof path, "%s/batches.csv", out);
    long rows = check_csv(path, 0);
    assert_true(rows >= 6); /* every strategy */
    snprintf(path, sizeof path, "%s/metadata.json", out);
    json_error_t je;
    json_t *meta = json_load_file(path, 0, &je);
    if (!meta) fail_msg("%s:%d: %s", path, je.line, je.text);
    static const char *keys[] = {"run_id",     "status", "start_time",  "end_time",
                                 "git_commit", "config", "device",      "telemetry",
                                 "cost_model", "seeds",  "calibration", "backend"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        if (!json_object_get(meta, keys[i])) fail_msg("metadata.json lacks '%s'", keys[i]);
    assert_string_equal(json_string_value(json_object_get(meta, "status")), "complete");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(meta, "telemetry"), "source")), "sim");
    assert_true(json_is_true(json_object_get(json_object_get(meta, "telemetry"), "simulated")));
    const char *sum =
        json_string_value(json_object_get(json_object_get(meta, "cost_model"), "checksum"));
    assert_non_null(sum);
    assert_int_equal(strlen(sum), 16);
    json_decref(meta);
    snprintf(path, sizeof path, "%s/traces/r0_small_batch_baseline%s", out, tmoe_trace_ext());
    check_trace(path);
    snprintf(path, sizeof path, "%s/traces/r0_small_batch_kernel_aware_ttha%s", out,
             tmoe_trace_ext());
    check_trace(path);
    snprintf(path, sizeof path, "%s/traces/run%s", out, tmoe_trace_ext());
    int ncombo = 0; /* one per-combination trace per combination */
    snprintf(path, sizeof path, "%s/traces", out);
    DIR *dir = opendir(path);
    assert_non_null(dir);
    for (struct dirent *de; (de = readdir(dir));) ncombo += !strncmp(de->d_name, "r0_", 3);
    closedir(dir);
    assert_true(ncombo >= 6);
    snprintf(path, sizeof path, "%s/traces/run%s", out, tmoe_trace_ext());
    check_run_trace(path, ncombo);
    char *log = slurp(tu_tmppath("default.log"));
    assert_non_null(strstr(log, "SIMULATED H100"));
    free(log);
}

static void test_kill_and_resume(void **state) {
    (void)state;
    const char *out = tu_tmppath("killed");
    char csv[600];
    snprintf(csv, sizeof csv, "%s/batches.csv", out);
    char *args[] = {(char *)bin(),
                    "run",
                    "--model",
                    "random",
                    "--out",
                    (char *)out,
                    "--no-analyze",
                    "--backend",
                    "cpu",
                    "--telemetry",
                    "sim",
                    "--workloads",
                    "standard,skewed",
                    "--routing-strategy",
                    "baseline,kernel_aware_ttha,predictive_thermal",
                    "--num-samples-per-workload",
                    "10",
                    "--trace-batches",
                    "1",
                    NULL};
    int rc = run_thermoe(args, tu_tmppath("killed.log"), 25, csv);
    assert_int_equal(rc, -SIGKILL);
    long before = check_csv(csv, 1);
    assert_true(before >= 25 && before < 60);
    char *rargs[] = {(char *)bin(),
                     "run",
                     "--model",
                     "random",
                     "--out",
                     (char *)out,
                     "--no-analyze",
                     "--resume",
                     "--backend",
                     "cpu",
                     "--telemetry",
                     "sim",
                     "--workloads",
                     "standard,skewed",
                     "--routing-strategy",
                     "baseline,kernel_aware_ttha,predictive_thermal",
                     "--num-samples-per-workload",
                     "10",
                     "--trace-batches",
                     "1",
                     NULL};
    rc = run_thermoe(rargs, tu_tmppath("resume.log"), 0, NULL);
    if (rc != 0) {
        char *log = slurp(tu_tmppath("resume.log"));
        fail_msg("resume exited %d:\n%s", rc, log ? log : "");
    }
    assert_int_equal(check_csv(csv, 0), 2 * 3 * 10); /* what an uninterrupted run writes */
    /* no (repeat, workload, strategy, batch) twice */
    char *s = slurp(csv);
    long lines = 0;
    for (char *p = s; *p; p++) lines += *p == '\n';
    assert_int_equal(lines, 61);
    free(s);
}

/* No temporary (a name holding ".tmp") left in dir. */
static void assert_no_temporaries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) fail_msg("opendir %s: %s", dir, strerror(errno));
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (strstr(e->d_name, ".tmp")) fail_msg("%s: stray temporary %s", dir, e->d_name);
    closedir(d);
}

static json_t *load_metadata(const char *dir) {
    char path[600];
    snprintf(path, sizeof path, "%s/metadata.json", dir);
    json_error_t je;
    json_t *meta = json_load_file(path, 0, &je);
    if (!meta) fail_msg("%s:%d:%d: %s", path, je.line, je.column, je.text);
    return meta;
}

static int file_equal(const char *a, const char *b) {
    char *x = slurp(a), *y = slurp(b);
    int same = x && y && !strcmp(x, y);
    free(x);
    free(y);
    return same;
}

/* A disk that fills up (a file size limit: writes past it fail with EFBIG, and thermoe must
 * not die of SIGXFSZ): a row that cannot be written ends the run with exit 1, metadata
 * status "failed" with the reason, whole rows only and no temporaries; --resume then
 * completes. When even the metadata cannot be written, the previous metadata.json and
 * batches.csv stay as they were. */
static void test_full_disk(void **state) {
    (void)state;
    char out[512], csv[600], log[512];
    snprintf(out, sizeof out, "%s", tu_tmppath("full"));
    snprintf(log, sizeof log, "%s", tu_tmppath("full.log"));
    snprintf(csv, sizeof csv, "%s/batches.csv", out);
    char *args[] = {(char *)bin(),
                    "run",
                    "--model",
                    "random",
                    "--out",
                    out,
                    "--no-analyze",
                    "--quiet",
                    "--telemetry",
                    "sim",
                    "--workloads",
                    "standard",
                    "--routing-strategy",
                    "baseline,predictive_thermal",
                    "--num-samples-per-workload",
                    "60",
                    "--trace-batches",
                    "0",
                    NULL};
    child_fsize_limit = 16 * 1024; /* room for the metadata and about 40 rows */
    int rc = run_thermoe(args, log, 0, NULL);
    char *text = slurp(log);
    if (rc != 1) fail_msg("full disk: exit %d, want 1:\n%s", rc, text ? text : "");
    if (!strstr(text, "File too large")) fail_msg("full disk: message lacks the reason:\n%s", text);
    free(text);
    json_t *meta = load_metadata(out);
    assert_string_equal(json_string_value(json_object_get(meta, "status")), "failed");
    const char *why = json_string_value(json_object_get(meta, "error"));
    if (!why || !strstr(why, "batches.csv") || !strstr(why, "File too large"))
        fail_msg("metadata error: %s", why ? why : "(none)");
    json_decref(meta);
    long kept = check_csv(csv, 0); /* whole rows only */
    assert_true(kept > 0 && kept < 120);
    assert_no_temporaries(out);
    char *rargs[] = {(char *)bin(),
                     "run",
                     "--model",
                     "random",
                     "--out",
                     out,
                     "--no-analyze",
                     "--quiet",
                     "--telemetry",
                     "sim",
                     "--resume",
                     "--workloads",
                     "standard",
                     "--routing-strategy",
                     "baseline,predictive_thermal",
                     "--num-samples-per-workload",
                     "60",
                     "--trace-batches",
                     "0",
                     NULL};
    rc = run_thermoe(rargs, log, 0, NULL);
    if (rc != 0) {
        text = slurp(log);
        fail_msg("resume after a full disk exited %d:\n%s", rc, text ? text : "");
    }
    assert_int_equal(check_csv(csv, 0), 120);
    meta = load_metadata(out);
    assert_string_equal(json_string_value(json_object_get(meta, "status")), "complete");
    json_decref(meta);

    /* now too full for the metadata itself: a resume must leave both files as they were */
    char meta_path[600], meta_copy[600], csv_copy[600];
    snprintf(meta_path, sizeof meta_path, "%s/metadata.json", out);
    snprintf(meta_copy, sizeof meta_copy, "%s", tu_tmppath("full-meta-copy.json"));
    snprintf(csv_copy, sizeof csv_copy, "%s", tu_tmppath("full-csv-copy.csv"));
    char cmd[2000];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s' && cp '%s' '%s'", meta_path, meta_copy, csv, csv_copy);
    assert_int_equal(system(cmd), 0);
    child_fsize_limit = 1024;
    rc = run_thermoe(rargs, log, 0, NULL);
    text = slurp(log);
    if (rc != 1) fail_msg("metadata on a full disk: exit %d, want 1:\n%s", rc, text ? text : "");
    free(text);
    if (!file_equal(meta_path, meta_copy)) fail_msg("metadata.json changed by the failed resume");
    if (!file_equal(csv, csv_copy)) fail_msg("batches.csv changed by the failed resume");
    assert_no_temporaries(out);
}

/* Replace field col of data row `row` (1-based) of a batches.csv with value. */
static void set_cell(const char *csv, long row, int col, const char *value) {
    char *text = slurp(csv);
    assert_non_null(text);
    FILE *f = fopen(csv, "w");
    assert_non_null(f);
    long lineno = 0;
    for (char *line = text, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        assert_non_null(nl);
        *nl = '\0';
        if (lineno++ != row) {
            fprintf(f, "%s\n", line);
            continue;
        }
        int c = 0;
        for (char *p = line; *p; p++) { /* the first columns hold no quoted commas */
            if (c == col) {
                char *end = strchr(p, ',');
                fprintf(f, "%s%s", value, end ? end : "");
                break;
            }
            fputc(*p, f);
            c += *p == ',';
        }
        fputc('\n', f);
    }
    assert_int_equal(fclose(f), 0);
    free(text);
}

/* --resume checks every row it keeps: a row whose number does not parse, a row of another
 * run, a line with the wrong number of fields are dropped with a warning, and the
 * combinations they were in run again, so the result is what an uninterrupted run writes. */
static void test_resume_drops_invalid_rows(void **state) {
    (void)state;
    char out[512], csv[600], log[512];
    snprintf(out, sizeof out, "%s", tu_tmppath("corrupt"));
    snprintf(log, sizeof log, "%s", tu_tmppath("corrupt.log"));
    snprintf(csv, sizeof csv, "%s/batches.csv", out);
    char *args[] = {(char *)bin(),
                    "run",
                    "--model",
                    "random",
                    "--out",
                    out,
                    "--no-analyze",
                    "--workloads",
                    "standard",
                    "--routing-strategy",
                    "baseline,predictive_thermal",
                    "--num-samples-per-workload",
                    "6",
                    "--trace-batches",
                    "0",
                    "--warmup-batches",
                    "0",
                    "--backend", /* the simulated GPU on any machine (check_csv expects it) */
                    "cpu",
                    "--telemetry",
                    "sim",
                    NULL,
                    NULL};
    int rc = run_thermoe(args, log, 0, NULL);
    if (rc != 0) fail_msg("first run exited %d", rc);
    assert_int_equal(check_csv(csv, 0), 12);
    json_t *meta = load_metadata(out);
    char run_id[128];
    snprintf(run_id, sizeof run_id, "%s", json_string_value(json_object_get(meta, "run_id")));
    json_decref(meta);
    /* row 3 (line 4, first combination): a latency that is not a number; row 9 (line 10,
     * second): another run's row; and a line (14) that is no row at all */
    set_cell(csv, 3, TMOE_RL_LATENCY_MS, "0.9x");
    set_cell(csv, 9, TMOE_RL_RUN_ID, "20240101T000000Z-deadbeef");
    FILE *f = fopen(csv, "a");
    assert_non_null(f);
    fprintf(f, "not,a,row\n");
    assert_int_equal(fclose(f), 0);
    args[sizeof args / sizeof *args - 2] = "--resume";
    rc = run_thermoe(args, log, 0, NULL);
    char *text = slurp(log);
    if (rc != 0) fail_msg("resume exited %d:\n%s", rc, text ? text : "");
    if (!strstr(text, "batches.csv:4:") || !strstr(text, "latency_ms") ||
        !strstr(text, "batches.csv:10:") || !strstr(text, "run_id") ||
        !strstr(text, "batches.csv:14:") || !strstr(text, "0 of 2 combinations"))
        fail_msg("resume should name each dropped row and rerun both combinations:\n%s", text);
    free(text);
    assert_int_equal(check_csv(csv, 0), 12); /* every cell parses */
    text = slurp(csv);
    assert_null(strstr(text, "deadbeef"));
    long own = 0;
    for (char *p = text; (p = strstr(p, run_id)) != NULL; p++) own++;
    assert_int_equal(own, 12);
    free(text);
}

/* Only one process at a time works in a run directory: while another holds its lock, a run
 * there is refused (exit 1) with a message saying who holds it, and leaves the files alone. */
static void test_run_dir_locked(void **state) {
    (void)state;
    char out[512], lock[600], log[512], csv[600];
    snprintf(out, sizeof out, "%s", tu_tmppath("locked"));
    snprintf(log, sizeof log, "%s", tu_tmppath("locked.log"));
    snprintf(lock, sizeof lock, "%s/thermoe.lock", out);
    snprintf(csv, sizeof csv, "%s/batches.csv", out);
    assert_int_equal(mkdir(out, 0755), 0);
    int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(flock(fd, LOCK_EX | LOCK_NB), 0);
    assert_true(write(fd, "pid 4242 on host testhost\n", 26) == 26);
    char *args[] = {(char *)bin(),
                    "run",
                    "--model",
                    "random",
                    "--out",
                    out,
                    "--no-analyze",
                    "--quiet",
                    "--telemetry",
                    "sim",
                    "--workloads",
                    "standard",
                    "--routing-strategy",
                    "baseline",
                    "--num-samples-per-workload",
                    "10",
                    "--trace-batches",
                    "0",
                    NULL,
                    NULL};
    int rc = run_thermoe(args, log, 0, NULL);
    char *text = slurp(log);
    if (rc != 1 || !strstr(text, "in use") || !strstr(text, "pid 4242 on host testhost"))
        fail_msg("a run in a locked directory: exit %d, want 1 and who holds it:\n%s", rc, text);
    free(text);
    assert_int_equal(access(csv, F_OK), -1);
    close(fd);

    /* a real run holds it: a second one, even with --resume, is refused and names it */
    args[15] = "1000000"; /* long enough to be running while the second one starts */
    pid_t first = fork();
    if (first < 0) fail_msg("fork: %s", strerror(errno));
    if (first == 0) {
        int nul = open("/dev/null", O_WRONLY);
        if (nul >= 0) dup2(nul, 1), dup2(nul, 2);
        execv(bin(), args);
        _exit(127);
    }
    char want[64];
    snprintf(want, sizeof want, "pid %ld on host", (long)first);
    for (int i = 0;; i++) {
        char *held = slurp(lock);
        int ready = held && strstr(held, want) && access(csv, F_OK) == 0;
        free(held);
        if (ready) break;
        if (i > 6000 || waitpid(first, NULL, WNOHANG) == first) {
            kill(first, SIGKILL);
            fail_msg("the first run did not take the lock");
        }
        usleep(10000);
    }
    args[sizeof args / sizeof *args - 2] = "--resume";
    rc = run_thermoe(args, log, 0, NULL);
    kill(first, SIGKILL);
    waitpid(first, NULL, 0);
    text = slurp(log);
    if (rc != 1 || !strstr(text, want))
        fail_msg("a second run beside a running one: exit %d, want 1 naming %s:\n%s", rc, want,
                 text);
    free(text);
}

static void expect_failure(char *const args[], const char *needle) {
    const char *log = tu_tmppath("fail.log");
    int rc = run_thermoe(args, log, 0, NULL);
    char *text = slurp(log);
    if (rc == 0) fail_msg("expected failure, exit 0:\n%s", text ? text : "");
    if (!text || !strstr(text, needle))
        fail_msg("message lacks '%s':\n%s", needle, text ? text : "");
    free(text);
}

static void test_bad_input(void **state) {
    (void)state;
    char *a1[] = {(char *)bin(), "run", "--model", "random", "--routing-strategy", "fastest", NULL};
    expect_failure(a1, "unknown name 'fastest'");
    char *a2[] = {(char *)bin(), "run",           "--model", "random", "--top-k",
                  "9",           "--num-experts", "8",       "--out",  (char *)tu_tmppath("b2"),
                  NULL};
    expect_failure(a2, "top_k = 9 is larger than num_experts = 8");
    char *a3[] = {(char *)bin(),
                  "run",
                  "--model",
                  "random",
                  "--kernel-cost-model-json",
                  "/nonexistent/cost.json",
                  "--out",
                  (char *)tu_tmppath("b3"),
                  NULL};
    expect_failure(a3, "/nonexistent/cost.json");
    char *a4[] = {(char *)bin(), "run", "--model", "random", "--out", "/etc/passwd/run", NULL};
    expect_failure(a4, "/etc/passwd");
    char *a5[] = {(char *)bin(), "run", "--model", "random", "--num-samples-per-workload",
                  "abc",         NULL};
    expect_failure(a5, "not an integer");
    /* a full disk: the row write fails with a message and a non-zero exit */
    char *a6[] = {(char *)bin(),
                  "run",
                  "--model",
                  "random",
                  "--out",
                  (char *)tu_tmppath("b6"),
                  "--log-file",
                  "/dev/full",
                  "--workloads",
                  "standard",
                  "--routing-strategy",
                  "baseline",
                  "--no-analyze",
                  NULL};
    expect_failure(a6, "/dev/full");
    char cfg[600];
    snprintf(cfg, sizeof cfg, "%s", tu_tmppath("bad.ini"));
    FILE *f = fopen(cfg, "w");
    fprintf(f, "# a config\nrepeats = 1\nwarp-speed = 9\n");
    fclose(f);
    char *a7[] = {(char *)bin(), "run", "--model", "random", "--config", cfg, NULL};
    expect_failure(a7, "bad.ini:3: unknown key 'warp-speed'");
}

/* The plan: within each workload every strategy holds every position equally often over
 * nstrat repeats (2 nstrat for an odd count), each follows each other equally often (even
 * counts), and the order is the same for the same seed. */
static void check_balance(int nstrat, int seed) {
    tmoe_run_config cfg = tmoe_run_config_default();
    for (int s = 0; s < TMOE_ROUTE_STRATEGY_COUNT; s++) cfg.strategies[s] = s < nstrat;
    int rounds = nstrat % 2 ? 2 * nstrat : nstrat;
    cfg.repeats = rounds;
    cfg.seed = (uint64_t)seed;
    tmoe_run_combo *c = NULL, *c2 = NULL;
    int n = 0, n2 = 0;
    tmoe_error err = {0};
    assert_int_equal(tmoe_run_plan_order(&cfg, &c, &n, &err), TMOE_OK);
    assert_int_equal(tmoe_run_plan_order(&cfg, &c2, &n2, &err), TMOE_OK);
    assert_int_equal(n, n2);
    assert_memory_equal(c, c2, sizeof *c * (size_t)n);
    int nwl = TMOE_WL_COUNT;
    assert_int_equal(n, rounds * nwl * nstrat);
    for (int w = 0; w < nwl; w++) {
        int pos[TMOE_ROUTE_STRATEGY_COUNT][TMOE_ROUTE_STRATEGY_COUNT] = {{0}};
        int after[TMOE_ROUTE_STRATEGY_COUNT][TMOE_ROUTE_STRATEGY_COUNT] = {{0}};
        for (int rep = 0; rep < rounds; rep++) {
            int p = 0, prev = -1;
            for (int i = 0; i < n; i++) {
                if (c[i].repeat != rep || (int)c[i].workload != w) continue;
                pos[c[i].strategy][p++]++;
                if (prev >= 0) after[prev][c[i].strategy]++;
                prev = (int)c[i].strategy;
            }
            assert_int_equal(p, nstrat);
        }
        for (int s = 0; s < nstrat; s++)
            for (int p = 0; p < nstrat; p++) {
                assert_int_equal(pos[s][p], rounds / nstrat);
                if (s != p) assert_int_equal(after[s][p], rounds / nstrat);
            }
    }
    free(c);
    free(c2);
}

static void test_balanced_order(void **state) {
    (void)state;
    check_balance(TMOE_ROUTE_STRATEGY_COUNT, 42);
    check_balance(4, 7);
    check_balance(3, 42); /* odd: two squares */
    /* another seed, another order */
    tmoe_run_config cfg = tmoe_run_config_default();
    tmoe_run_combo *a = NULL, *b = NULL;
    int na = 0, nb = 0;
    tmoe_error err = {0};
    assert_int_equal(tmoe_run_plan_order(&cfg, &a, &na, &err), TMOE_OK);
    cfg.seed = 43;
    assert_int_equal(tmoe_run_plan_order(&cfg, &b, &nb, &err), TMOE_OK);
    assert_int_equal(na, nb);
    assert_true(memcmp(a, b, sizeof *a * (size_t)na) != 0);
    free(a);
    free(b);
}

static void test_spearman(void **state) {
    (void)state;
    double x[] = {1, 2, 3, 4, 5}, y[] = {10, 20, 30, 40, 50}, z[] = {5, 4, 3, 2, 1};
    assert_float_equal(tmoe_spearman(x, y, 5), 1.0, 1e-12);
    assert_float_equal(tmoe_spearman(x, z, 5), -1.0, 1e-12);
    /* d = (0, 0, 2, -1, -1) (no ties): 1 - 6 * 6 / (5 * 24) = 0.7 */
    double w[] = {1, 2, 5, 3, 4};
    assert_float_equal(tmoe_spearman(x, w, 5), 0.7, 1e-12);
    /* ties take their average rank: ranks (1.5, 1.5, 3, 4) against (1, 2, 3, 4) */
    double t[] = {7, 7, 8, 9};
    assert_float_equal(tmoe_spearman(x, t, 4), 4.5 / sqrt(4.5 * 5.0), 1e-12);
    double nn[] = {1, NAN, 3, 4, 5};
    assert_float_equal(tmoe_spearman(x, nn, 5), 1.0, 1e-12); /* the NAN pair left out */
    double k[] = {2, 2, 2, 2, 2};
    assert_true(isnan(tmoe_spearman(x, k, 5)));
    assert_true(isnan(tmoe_spearman(x, y, 2)));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_kill_and_resume),
        cmocka_unit_test(test_full_disk),
        cmocka_unit_test(test_resume_drops_invalid_rows),
        cmocka_unit_test(test_run_dir_locked),
        cmocka_unit_test(test_default_run),
        cmocka_unit_test(test_default_comparisons),
        cmocka_unit_test(test_balanced_order),
        cmocka_unit_test(test_spearman),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
