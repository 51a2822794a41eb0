/* The batches.csv writer on its own: a write that fails (a file size limit standing in for a
 * full disk) is reported with the system's reason and leaves only whole rows behind; paths
 * that are not regular files (a device, a FIFO, a directory) are refused at once instead of
 * being written to, read without end, or blocked on. */
#include "testutil.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "thermoe/exp.h"

static long file_size(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) fail_msg("stat %s: %s", path, strerror(errno));
    return (long)st.st_size;
}

static char last_byte(const char *path) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, -1, SEEK_END), 0);
    int c = fgetc(f);
    fclose(f);
    return (char)c;
}

static void fill_row(tmoe_runlog_row *row, int b) {
    tmoe_runlog_row_clear(row);
    tmoe_runlog_row_dbl(row, TMOE_RL_TIME, 0.25 * b);
    tmoe_runlog_row_str(row, TMOE_RL_RUN_ID, "20250101T000000Z-0000002a");
    tmoe_runlog_row_int(row, TMOE_RL_REPEAT, 0);
    tmoe_runlog_row_str(row, TMOE_RL_WORKLOAD, "standard");
    tmoe_runlog_row_str(row, TMOE_RL_STRATEGY, "baseline");
    tmoe_runlog_row_int(row, TMOE_RL_BATCH_IDX, b);
    tmoe_runlog_row_int(row, TMOE_RL_TOKENS, 64);
    tmoe_runlog_row_int(row, TMOE_RL_THROTTLE_REASONS, 0);
    double bias[64];
    for (int e = 0; e < 64; e++) bias[e] = 0.001 * e * b;
    tmoe_runlog_row_dbls(row, TMOE_RL_BIASES, bias, 64); /* a long cell: rows of ~1 KB */
}

/* Rows written until the file size limit: the failing write is reported, the file holds the
 * header and every row that was reported written, and nothing of the failed one. */
static void test_write_failure_keeps_whole_rows(void **state) {
    (void)state;
    const char *path = tu_tmppath("limited.csv");
    struct rlimit old;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    void (*old_xfsz)(int) = signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = {10000, old.rlim_max};
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    tmoe_error err = {0};
    tmoe_runlog_writer *w = NULL;
    int rc = tmoe_runlog_open(path, 0, NULL, &w, NULL, NULL, &err);
    tmoe_runlog_row *row = malloc(sizeof *row);
    assert_non_null(row);
    long header = rc == TMOE_OK ? file_size(path) : -1, sizes[64];
    int b = 0;
    for (; rc == TMOE_OK && b < 64; b++) {
        fill_row(row, b);
        rc = tmoe_runlog_write(w, row, &err);
        if (rc == TMOE_OK) sizes[b] = file_size(path);
    }
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, old_xfsz);
    free(row);
    if (header < 0) fail_msg("open: %s", err.msg);
    assert_int_equal(rc, TMOE_EIO);
    print_message("after %d rows: %s\n", b - 1, err.msg);
    if (!strstr(err.msg, "File too large") || !strstr(err.msg, "limited.csv"))
        fail_msg("message lacks the reason or the file: %s", err.msg);
    long kept = tmoe_runlog_rows(w);
    assert_int_equal(kept, b - 1);
    assert_true(kept >= 2);
    assert_int_equal(file_size(path), sizes[kept - 1]);
    assert_int_equal(last_byte(path), '\n');
    assert_int_equal(tmoe_runlog_close(w, &err), TMOE_OK);
    /* the file resumes cleanly: every row whole */
    tmoe_runlog_done *done = NULL;
    int ndone = 0;
    ASSERT_OK(tmoe_runlog_open(path, 1, NULL, &w, &done, &ndone, &err), &err);
    assert_int_equal(ndone, 1);
    assert_int_equal(done[0].rows, kept);
    free(done);
    assert_int_equal(tmoe_runlog_close(w, &err), TMOE_OK);
}

/* Cells the writer quotes (a comma, a quote, a newline) read back as one row each on
 * resume, line numbers and all; a torn last row that opened a quote is cut off, and
 * keeping every combination rewrites the file as it was. */
static void test_resume_quoted_cells(void **state) {
    (void)state;
    const char *path = tu_tmppath("quoted.csv");
    const char *run_id = "run, \"one\"\nand a second line";
    tmoe_error err = {0};
    tmoe_runlog_writer *w = NULL;
    ASSERT_OK(tmoe_runlog_open(path, 0, run_id, &w, NULL, NULL, &err), &err);
    tmoe_runlog_row *row = malloc(sizeof *row);
    assert_non_null(row);
    for (int b = 0; b < 3; b++) {
        fill_row(row, b);
        tmoe_runlog_row_str(row, TMOE_RL_RUN_ID, run_id);
        tmoe_runlog_row_str(row, TMOE_RL_ENERGY_METHOD, "counter\r\n,\"\"");
        ASSERT_OK(tmoe_runlog_write(w, row, &err), &err);
    }
    free(row);
    ASSERT_OK(tmoe_runlog_close(w, &err), &err);
    long whole = file_size(path);
    FILE *f = fopen(path, "ab");
    assert_non_null(f);
    fputs("0.75,\"run, \"\"one", f); /* killed mid-row, inside a quoted cell */
    assert_int_equal(fclose(f), 0);
    tmoe_runlog_done *done = NULL;
    int ndone = 0;
    ASSERT_OK(tmoe_runlog_open(path, 1, run_id, &w, &done, &ndone, &err), &err);
    assert_int_equal(ndone, 1);
    assert_int_equal(done[0].rows, 3);
    assert_false(done[0].invalid);
    assert_int_equal(tmoe_runlog_rows(w), 3);
    assert_int_equal(file_size(path), whole);
    ASSERT_OK(tmoe_runlog_drop(w, done, ndone, &err), &err);
    assert_int_equal(tmoe_runlog_rows(w), 3);
    assert_int_equal(file_size(path), whole);
    free(done);
    ASSERT_OK(tmoe_runlog_close(w, &err), &err);
}

/* A device, a FIFO or a directory is refused, new file or resume, without blocking. */
static void test_refuses_non_regular(void **state) {
    (void)state;
    tmoe_error err = {0};
    tmoe_runlog_writer *w = NULL;
    tmoe_runlog_done *done = NULL;
    int ndone = 0;
    assert_int_not_equal(tmoe_runlog_open("/dev/full", 0, NULL, &w, NULL, NULL, &err), TMOE_OK);
    assert_null(w);
    if (!strstr(err.msg, "/dev/full") || !strstr(err.msg, "character device"))
        fail_msg("%s", err.msg);
    err = (tmoe_error){0};
    assert_int_not_equal(tmoe_runlog_open("/dev/zero", 1, NULL, &w, &done, &ndone, &err), TMOE_OK);
    if (!strstr(err.msg, "character device")) fail_msg("%s", err.msg);
    char fifo[512];
    snprintf(fifo, sizeof fifo, "%s", tu_tmppath("fifo.csv"));
    assert_int_equal(mkfifo(fifo, 0600), 0);
    err = (tmoe_error){0};
    assert_int_not_equal(tmoe_runlog_open(fifo, 1, NULL, &w, &done, &ndone, &err), TMOE_OK);
    if (!strstr(err.msg, "FIFO")) fail_msg("%s", err.msg);
    err = (tmoe_error){0};
    assert_int_not_equal(tmoe_runlog_open(fifo, 0, NULL, &w, NULL, NULL, &err), TMOE_OK);
    if (!strstr(err.msg, "FIFO")) fail_msg("%s", err.msg);
    err = (tmoe_error){0};
    assert_int_not_equal(tmoe_runlog_open(tu_tmpdir(), 1, NULL, &w, &done, &ndone, &err), TMOE_OK);
    if (!strstr(err.msg, "directory")) fail_msg("%s", err.msg);
    assert_null(done);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_failure_keeps_whole_rows),
        cmocka_unit_test(test_refuses_non_regular),
        cmocka_unit_test(test_resume_quoted_cells),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
