/* Checked number parsing, failure messages and the stderr log callback. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli/cli.h"

int cli_verbosity;

int cli_int(const char *cmd, const char *flag, const char *s, long min, long max, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end) {
        cli_fail(cmd, "--%s: '%s' is not an integer", flag, s);
        return -1;
    }
    if (v < min || v > max) {
        cli_fail(cmd, "--%s: %ld is out of range [%ld, %ld]", flag, v, min, max);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_double(const char *cmd, const char *flag, const char *s, double min, double max,
               double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) {
        cli_fail(cmd, "--%s: '%s' is not a finite number", flag, s);
        return -1;
    }
    if (v < min || v > max) {
        cli_fail(cmd, "--%s: %g is out of range [%g, %g]", flag, v, min, max);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_u64(const char *cmd, const char *flag, const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    const char *p = s;
    while (isspace((unsigned char)*p)) p++;
    if (*p == '-') { /* strtoull would wrap "-1" to 2^64 - 1 */
        cli_fail(cmd, "--%s: '%s' must be a non-negative integer", flag, s);
        return -1;
    }
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end) {
        cli_fail(cmd, "--%s: '%s' is not a non-negative integer", flag, s);
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

int cli_fail(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "thermoe %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

int cli_fail_err(const char *cmd, const tmoe_error *err) {
    return cli_fail(cmd, "%s", err->msg[0] ? err->msg : tmoe_code_name(err->code));
}

int cli_usage_error(const char *cmd) {
    fprintf(stderr, "thermoe %s: see 'thermoe %s --help'\n", cmd, cmd);
    return 2;
}

static void log_stderr(tmoe_log_level level, const char *msg, void *user) {
    (void)user;
    static const char *const names[] = {"debug", "info", "warning", "error"};
    int min = cli_verbosity >= 2 ? TMOE_LOG_DEBUG : cli_verbosity == 1 ? TMOE_LOG_INFO : TMOE_LOG_WARN;
    if ((int)level < min) return;
    fprintf(stderr, "thermoe: %s: %s\n", names[level], msg);
}

void cli_log_init(int verbosity) {
    cli_verbosity = verbosity;
    tmoe_log_set(log_stderr, NULL);
}
