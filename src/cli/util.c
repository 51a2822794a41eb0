/* Checked number parsing, failure messages and the stderr log callback. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "thermoe/exp.h"

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

__attribute__((format(printf, 2, 0))) static void say(const char *cmd, const char *fmt,
                                                      va_list ap) {
    fprintf(stderr, "thermoe %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

int cli_fail(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    say(cmd, fmt, ap);
    va_end(ap);
    return 1;
}

int cli_usage_fail(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    say(cmd, fmt, ap);
    va_end(ap);
    return 2;
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
    int min = cli_verbosity >= 2   ? TMOE_LOG_DEBUG
              : cli_verbosity == 1 ? TMOE_LOG_INFO
                                   : TMOE_LOG_WARN;
    if ((int)level < min) return;
    fprintf(stderr, "thermoe: %s: %s\n", names[level], msg);
}

void cli_log_init(int verbosity) {
    cli_verbosity = verbosity;
    tmoe_log_set(log_stderr, NULL);
}

int cli_shape_flag(const char *cmd, int code, const char *arg, tmoe_block_config *b) {
    long v;
    switch (code) {
    case CLI_D_MODEL:
        if (cli_int(cmd, "d-model", arg, 1, 65536, &v)) return 1;
        b->d_model = (int)v;
        return 0;
    case CLI_N_HEADS:
        if (cli_int(cmd, "n-heads", arg, 1, 1024, &v)) return 1;
        b->n_heads = (int)v;
        return 0;
    case CLI_D_FF:
        if (cli_int(cmd, "d-ff", arg, 1, 131072, &v)) return 1;
        b->d_ff = (int)v;
        return 0;
    case CLI_NUM_EXPERTS:
        if (cli_int(cmd, "num-experts", arg, 1, TMOE_MAX_EXPERTS, &v)) return 1;
        b->num_experts = (int)v;
        return 0;
    case CLI_TOP_K:
        if (cli_int(cmd, "top-k", arg, 1, TMOE_MAX_TOPK, &v)) return 1;
        b->top_k = (int)v;
        return 0;
    case CLI_GROUP:
        if (cli_int(cmd, "group-size", arg, 1, 65536, &v)) return 1;
        b->group_size = (int)v;
        return 0;
    case CLI_SEQ_LEN:
        if (cli_int(cmd, "seq-len", arg, 1, 65536, &v)) return 1;
        b->seq_len = (int)v;
        return 0;
    case CLI_ACT:
        if (tmoe_act_parse(arg, &b->act)) {
            cli_fail(cmd, "--act: unknown activation '%s' (expected relu or swiglu)", arg);
            return 1;
        }
        return 0;
    default: return -1;
    }
}

void cli_shape_help(const tmoe_block_config *d) {
    printf("  --d-model N        hidden size (default %d)\n"
           "  --n-heads N        attention heads, must divide d-model (default %d)\n"
           "  --d-ff N           expert hidden size (default %d)\n"
           "  --num-experts N    experts E, 1..%d (default %d)\n"
           "  --top-k N          experts per token (default %d)\n"
           "  --group-size G     quantization group along the input dim (default %d)\n"
           "  --act A            relu or swiglu (default %s)\n"
           "  --seq-len N        tokens per sequence (default %d)\n",
           d->d_model, d->n_heads, d->d_ff, TMOE_MAX_EXPERTS, d->num_experts, d->top_k,
           d->group_size, tmoe_act_name(d->act), d->seq_len);
}

int cli_name_list(const char *cmd, const char *flag, const char *list, int *flags, int n,
                  const char *(*name)(int)) {
    for (int i = 0; i < n; i++) flags[i] = !strcmp(list, "all");
    if (!strcmp(list, "all")) return 0;
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *save, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int found = -1;
        for (int i = 0; i < n; i++)
            if (!strcmp(tok, name(i))) found = i;
        if (found < 0) {
            char known[512] = "";
            for (int i = 0; i < n; i++) {
                strncat(known, i ? ", " : "", sizeof known - strlen(known) - 1);
                strncat(known, name(i), sizeof known - strlen(known) - 1);
            }
            return cli_fail(cmd, "--%s: unknown name '%s' (expected all or a list of: %s)", flag,
                            tok, known);
        }
        flags[found] = 1;
    }
    return 0;
}

int cli_int_list(const char *cmd, const char *flag, const char *list, long lo, long hi, int *out,
                 int cap) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", list);
    int n = 0;
    for (char *save, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        long v;
        if (n == cap) {
            cli_fail(cmd, "--%s: more than %d values", flag, cap);
            return -1;
        }
        if (cli_int(cmd, flag, tok, lo, hi, &v)) return -1;
        out[n++] = (int)v;
    }
    if (n == 0) {
        cli_fail(cmd, "--%s: empty list", flag);
        return -1;
    }
    return n;
}

void cli_command_line(char *buf, size_t n, int argc, char **argv) {
    snprintf(buf, n, "thermoe");
    for (int i = 0; i < argc; i++) {
        strncat(buf, " ", n - strlen(buf) - 1);
        strncat(buf, argv[i], n - strlen(buf) - 1);
    }
}

int cli_backend_flag(const char *cmd, const char *s, tmoe_backend_kind *out) {
    if (tmoe_backend_kind_parse(s, out)) {
        cli_fail(cmd, "--backend: unknown backend '%s' (expected auto, cpu or cuda)", s);
        return -1;
    }
    return 0;
}

int cli_telemetry_flag(const char *cmd, const char *s, tmoe_telemetry_kind *out) {
    tmoe_error err = {0};
    if (tmoe_telemetry_kind_parse(s, out, &err)) {
        cli_fail(cmd, "--telemetry: %s", err.msg);
        return -1;
    }
    return 0;
}

static void on_stop_signal(int sig) {
    (void)sig;
    tmoe_run_request_stop(); /* SA_RESETHAND: a second one of the same signal kills at once */
}

void cli_stop_signals(int on) {
    static const int stop[] = {SIGINT, SIGTERM, SIGHUP}, ignore[] = {SIGPIPE, SIGXFSZ};
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on ? on_stop_signal : SIG_DFL;
    sa.sa_flags = on ? SA_RESETHAND | SA_RESTART : 0;
    for (size_t i = 0; i < sizeof stop / sizeof *stop; i++) sigaction(stop[i], &sa, NULL);
    sa.sa_handler = on ? SIG_IGN : SIG_DFL;
    sa.sa_flags = 0;
    for (size_t i = 0; i < sizeof ignore / sizeof *ignore; i++) sigaction(ignore[i], &sa, NULL);
}
