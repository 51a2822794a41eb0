/* thermoe run end to end (CPU backend, simulated H100, both asked for: on a machine with a
 * GPU and NVML, auto would pick those): the default run's files (every column present and
 * typed, no NaN where a value is defined, telemetry named, metadata complete, traces valid
 * JSON with the expected event kinds); a SIGKILL mid-run leaves whole lines and --resume
 * completes to the exact row count; bad flags and files fail clearly. */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "thermoe/exp.h"
#include "thermoe/runlog.h"

static const char *bin(void) {
    const char *b = getenv("THERMOE_BIN");
    if (!b || !*b) fail_msg("THERMOE_BIN is not set (run through ctest)");
    return b;
}

/* Run thermoe with args, stdout+stderr to log; returns the exit status (or -signal). */
static int run_thermoe(char *const args[], const char *log, int kill_after_rows, const char *csv) {
    pid_t pid = fork();
    if (pid < 0) fail_msg("fork: %s", strerror(errno));
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv(bin(), args);
        _exit(127);
    }
    int status;
    if (kill_after_rows > 0) {
        for (;;) {
            if (waitpid(pid, &status, WNOHANG) == pid) fail_msg("run ended before it could be killed");
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
        if (nf != TMOE_RL_NCOLS) fail_msg("%s:%ld: %d fields, want %d", path, lineno, nf, TMOE_RL_NCOLS);
        if (lineno == 1) {
            for (int c = 0; c < TMOE_RL_NCOLS; c++) assert_string_equal(fields[c], tmoe_runlog_cols[c].name);
            continue;
        }
        rows++;
        for (int c = 0; c < TMOE_RL_NCOLS; c++) {
            const char *s = fields[c];
            char *end;
            switch (tmoe_runlog_cols[c].type) {
            case TMOE_COL_INT:
                strtoll(s, &end, 10);
                if (!*s || *end) fail_msg("%s:%ld: %s = '%s' is not an integer", path, lineno, tmoe_runlog_cols[c].name, s);
                break;
            case TMOE_COL_DOUBLE:
                if (!strcmp(s, "nan")) break;
                strtod(s, &end);
                if (!*s || *end) fail_msg("%s:%ld: %s = '%s' is not a number", path, lineno, tmoe_runlog_cols[c].name, s);
                break;
            case TMOE_COL_LIST_INT:
            case TMOE_COL_LIST_DBL:
                if (!*s) fail_msg("%s:%ld: %s is empty", path, lineno, tmoe_runlog_cols[c].name);
                break;
            default: break;
            }
        }
        /* values that are always defined on the simulated GPU */
        static const int defined[] = {TMOE_RL_LATENCY_MS, TMOE_RL_THROUGHPUT, TMOE_RL_ENERGY_J,
                                      TMOE_RL_ENERGY_J_PER_TOKEN, TMOE_RL_POWER_AVG_W,
                                      TMOE_RL_GPU_TEMP_END_C, TMOE_RL_GPU_TEMP_PEAK_C,
                                      TMOE_RL_MEM_TEMP_C, TMOE_RL_SM_CLOCK_MHZ,
                                      TMOE_RL_PREDICTED_ENERGY_J, TMOE_RL_ROUTER_OVERHEAD_MS,
                                      TMOE_RL_TOPK_AGREEMENT, TMOE_RL_OUTPUT_REL_ERROR};
        for (size_t i = 0; i < sizeof defined / sizeof *defined; i++)
            if (!strcmp(fields[defined[i]], "nan"))
                fail_msg("%s:%ld: %s is nan", path, lineno, tmoe_runlog_cols[defined[i]].name);
        assert_string_equal(fields[TMOE_RL_TELEMETRY_SOURCE], "sim");
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

static void check_trace(const char *path) {
    json_error_t je;
    json_t *t = json_load_file(path, 0, &je);
    if (!t) fail_msg("%s:%d:%d: %s", path, je.line, je.column, je.text);
    assert_true(json_is_array(t));
    int x = 0, c = 0, m = 0;
    size_t i;
    json_t *ev;
    json_array_foreach(t, i, ev) {
        const char *ph = json_string_value(json_object_get(ev, "ph"));
        assert_non_null(ph);
        x += !strcmp(ph, "X");
        c += !strcmp(ph, "C");
        m += !strcmp(ph, "M");
    }
    json_decref(t);
    if (!x || !c || !m) fail_msg("%s: %d spans, %d counters, %d names", path, x, c, m);
}

static void test_default_run(void **state) {
    (void)state;
    const char *out = tu_tmppath("default");
    char *args[] = {(char *)bin(), "run", "--out", (char *)out, "--no-analyze", "--backend", "cpu",
                    "--telemetry", "sim", NULL};
    int rc = run_thermoe(args, tu_tmppath("default.log"), 0, NULL);
    if (rc != 0) {
        char *log = slurp(tu_tmppath("default.log"));
        fail_msg("thermoe run exited %d:\n%s", rc, log ? log : "");
    }
    char path[600];
    snprintf(path, sizeof path, "%s/batches.csv", out);
    long rows = check_csv(path, 0);
    assert_true(rows >= 6 * 5);
    snprintf(path, sizeof path, "%s/metadata.json", out);
    json_error_t je;
    json_t *meta = json_load_file(path, 0, &je);
    if (!meta) fail_msg("%s:%d: %s", path, je.line, je.text);
    static const char *keys[] = {"run_id", "status", "start_time", "end_time", "git_commit",
                                 "config", "device", "telemetry", "cost_model", "seeds",
                                 "calibration", "backend"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        if (!json_object_get(meta, keys[i])) fail_msg("metadata.json lacks '%s'", keys[i]);
    assert_string_equal(json_string_value(json_object_get(meta, "status")), "complete");
    assert_string_equal(json_string_value(json_object_get(json_object_get(meta, "telemetry"), "source")), "sim");
    assert_true(json_is_true(json_object_get(json_object_get(meta, "telemetry"), "simulated")));
    const char *sum = json_string_value(json_object_get(json_object_get(meta, "cost_model"), "checksum"));
    assert_non_null(sum);
    assert_int_equal(strlen(sum), 16);
    json_decref(meta);
    snprintf(path, sizeof path, "%s/traces/r0_standard_baseline.json", out);
    check_trace(path);
    snprintf(path, sizeof path, "%s/traces/r0_skewed_kernel_aware_ttha.json", out);
    check_trace(path);
    char *log = slurp(tu_tmppath("default.log"));
    assert_non_null(strstr(log, "SIMULATED H100"));
    free(log);
}

static void test_kill_and_resume(void **state) {
    (void)state;
    const char *out = tu_tmppath("killed");
    char csv[600];
    snprintf(csv, sizeof csv, "%s/batches.csv", out);
    char *args[] = {(char *)bin(), "run", "--out", (char *)out, "--no-analyze", "--backend", "cpu", "--telemetry", "sim",
                    "--workloads", "standard,skewed", "--routing-strategy", "baseline,kernel_aware_ttha,predictive_thermal",
                    "--num-samples-per-workload", "10", "--trace-batches", "1", NULL};
    int rc = run_thermoe(args, tu_tmppath("killed.log"), 25, csv);
    assert_int_equal(rc, -SIGKILL);
    long before = check_csv(csv, 1);
    assert_true(before >= 25 && before < 60);
    char *rargs[] = {(char *)bin(), "run", "--out", (char *)out, "--no-analyze", "--resume", "--backend", "cpu",
                     "--telemetry", "sim", "--workloads", "standard,skewed", "--routing-strategy", "baseline,kernel_aware_ttha,predictive_thermal",
                     "--num-samples-per-workload", "10", "--trace-batches", "1", NULL};
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

static void expect_failure(char *const args[], const char *needle) {
    const char *log = tu_tmppath("fail.log");
    int rc = run_thermoe(args, log, 0, NULL);
    char *text = slurp(log);
    if (rc == 0) fail_msg("expected failure, exit 0:\n%s", text ? text : "");
    if (!text || !strstr(text, needle)) fail_msg("message lacks '%s':\n%s", needle, text ? text : "");
    free(text);
}

static void test_bad_input(void **state) {
    (void)state;
    char *a1[] = {(char *)bin(), "run", "--routing-strategy", "fastest", NULL};
    expect_failure(a1, "unknown name 'fastest'");
    char *a2[] = {(char *)bin(), "run", "--top-k", "9", "--num-experts", "8", "--out", (char *)tu_tmppath("b2"), NULL};
    expect_failure(a2, "top_k = 9 is larger than num_experts = 8");
    char *a3[] = {(char *)bin(), "run", "--kernel-cost-model-json", "/nonexistent/cost.json", "--out", (char *)tu_tmppath("b3"), NULL};
    expect_failure(a3, "/nonexistent/cost.json");
    char *a4[] = {(char *)bin(), "run", "--out", "/etc/passwd/run", NULL};
    expect_failure(a4, "/etc/passwd");
    char *a5[] = {(char *)bin(), "run", "--num-samples-per-workload", "abc", NULL};
    expect_failure(a5, "not an integer");
    /* a full disk: the row write fails with a message and a non-zero exit */
    char *a6[] = {(char *)bin(), "run", "--out", (char *)tu_tmppath("b6"), "--log-file", "/dev/full",
                  "--workloads", "standard", "--routing-strategy", "baseline", "--no-analyze", NULL};
    expect_failure(a6, "/dev/full");
    char cfg[600];
    snprintf(cfg, sizeof cfg, "%s", tu_tmppath("bad.ini"));
    FILE *f = fopen(cfg, "w");
    fprintf(f, "# a config\nrepeats = 1\nwarp-speed = 9\n");
    fclose(f);
    char *a7[] = {(char *)bin(), "run", "--config", cfg, NULL};
    expect_failure(a7, "bad.ini:3: unknown key 'warp-speed'");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_kill_and_resume),
        cmocka_unit_test(test_default_run),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
