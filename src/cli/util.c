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
#include <time.h>
#include <unistd.h>

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

int cli_router_flag(const char *cmd, int code, const char *arg, tmoe_router_config *r) {
    long v;
    double d;
#define RDBL(name, lo, hi, dst)                                                                    \
    do {                                                                                           \
        if (cli_double(cmd, name, arg, lo, hi, &d)) return 2;                                      \
        dst = d;                                                                                   \
        return 0;                                                                                  \
    } while (0)
    switch (code) {
    case CLI_R_MAX_BIAS: RDBL("max-bias", 0, 100, r->max_bias);
    case CLI_R_KL_BOUND: RDBL("kl-bound", 0, 100, r->kl_bound);
    case CLI_R_BUDGET:
        if (tmoe_budget_parse(arg, &r->budget))
            return cli_usage_fail(
                cmd, "--budget: unknown budget '%s' (expected kl, tau, top1 or none)", arg);
        return 0;
    case CLI_R_TAU_BASE: RDBL("tau-base", 1e-6, 1, r->tau_base);
    case CLI_R_TAU_MIN: RDBL("tau-min", 1e-6, 1, r->tau_min);
    case CLI_R_KL_BASE: RDBL("kl-base", 0, 100, r->kl_base);
    case CLI_R_KL_MAX: RDBL("kl-max", 0, 100, r->kl_max);
    case CLI_R_TOP_P:
        if (cli_double(cmd, "top-p", arg, 0, 1, &d)) return 2;
        if (!(d > 0.0)) return cli_usage_fail(cmd, "--top-p %s: expected a mass in (0, 1]", arg);
        r->top_p = d;
        return 0;
    case CLI_R_PRUNE:
        if (cli_int(cmd, "prune-experts", arg, 0, TMOE_MAX_EXPERTS, &v)) return 2;
        r->prune_experts = (int)v;
        return 0;
    case CLI_R_CAP_FACTOR:
        if (cli_double(cmd, "capacity-factor", arg, 0, 1e6, &d)) return 2;
        if (!(d > 0.0))
            return cli_usage_fail(cmd, "--capacity-factor %s: expected a factor > 0", arg);
        r->cap_factor = d;
        return 0;
    case CLI_R_CAP_OVERFLOW:
        if (tmoe_overflow_parse(arg, &r->cap_overflow))
            return cli_usage_fail(cmd, "--capacity-overflow: unknown '%s' (expected drop or next)",
                                  arg);
        return 0;
    case CLI_R_T_POWER: RDBL("ttha-target-power", 1, 10000, r->power_target_w);
    case CLI_R_T_BUDGET_GAIN: RDBL("ttha-budget-gain", 0, 100, r->ttha_budget_gain);
    case CLI_R_T_TEMP: RDBL("ttha-target-temp", -50, 200, r->temp_target_c);
    case CLI_R_W_LAT: RDBL("ttha-latency-penalty-weight", 0, 1e9, r->w_latency);
    case CLI_R_W_POWER: RDBL("ttha-power-weight", 0, 1e9, r->w_power);
    case CLI_R_W_TEMP: RDBL("ttha-temp-weight", 0, 1e9, r->w_temp);
    case CLI_R_W_TPUT: RDBL("ttha-throughput-weight", 0, 1e9, r->w_throughput);
    case CLI_R_W_FID: RDBL("ttha-fidelity-weight", 0, 1e9, r->w_fidelity);
    case CLI_R_LR: RDBL("ttha-lr", 0, 10, r->lr);
    case CLI_R_WD: RDBL("ttha-weight-decay", 0, 10, r->weight_decay);
    case CLI_R_GRAD:
        if (tmoe_ttha_grad_parse(arg, &r->grad_mode))
            return cli_usage_fail(
                cmd, "--ttha-grad: unknown mode '%s' (expected surrogate or reinforce)", arg);
        return 0;
    default: return -1;
    }
#undef RDBL
}

int cli_router_check(const char *cmd, const tmoe_router_config *r) {
    if (r->tau_min > r->tau_base)
        return cli_usage_fail(cmd, "--tau-min %g is above --tau-base %g", r->tau_min, r->tau_base);
    if (r->kl_base > r->kl_max)
        return cli_usage_fail(cmd, "--kl-base %g is above --kl-max %g", r->kl_base, r->kl_max);
    return 0;
}

void cli_router_help(const tmoe_router_config *r) {
    printf(
        "  --max-bias B              largest bias in logit units (default %g)\n"
        "  --kl-bound X              static_optimal's expected-KL budget, nats (default %g)\n"
        "  --budget B                expert-set budget of every strategy but baseline: kl, tau,\n"
        "                            top1 or none (per-expert biases only) (default %s;\n"
        "                            docs/strategies.md)\n"
        "  --kl-base X  --kl-max X   kl budget when cool / at full pressure, nats (%g, %g)\n"
        "  --tau-base X  --tau-min X tau budget when cool / at full pressure (%g, %g)\n"
        "  --top-p P                 top_p: each token keeps its fewest top experts whose\n"
        "                            probability sum reaches P, at most k (default %g)\n"
        "  --prune-experts N         expert_prune: the N least-used experts of each MoE layer\n"
        "                            on the calibration windows are never chosen (default\n"
        "                            E/4, at most E-k)\n"
        "  --capacity-factor C       capacity: at most ceil(C T k / E) token copies per expert\n"
        "                            per batch (default %g)\n"
        "  --capacity-overflow O     capacity: drop (a copy over the limit is dropped, as\n"
        "                            Switch does) or next (it goes to the token's best expert\n"
        "                            with room) (default %s)\n"
        "  --ttha-target-power W     P* (default %g)\n"
        "  --ttha-budget-gain X      kernel_aware_ttha: how far its budget tightness moves per\n"
        "                            unit of power/temperature error each batch (default %g)\n"
        "  --ttha-target-temp C      T* (default %g)\n"
        "  --ttha-power-weight X  --ttha-temp-weight X  --ttha-latency-penalty-weight X\n"
        "  --ttha-throughput-weight X  --ttha-fidelity-weight X   (defaults %g %g %g %g %g)\n"
        "  --ttha-lr X  --ttha-weight-decay X  (defaults %g, %g)\n"
        "  --ttha-grad G             surrogate or reinforce (default %s)\n",
        r->max_bias, r->kl_bound, tmoe_budget_name(r->budget), r->kl_base, r->kl_max, r->tau_base,
        r->tau_min, r->top_p, r->cap_factor, tmoe_overflow_name(r->cap_overflow), r->power_target_w,
        r->ttha_budget_gain, r->temp_target_c, r->w_power, r->w_temp, r->w_latency, r->w_throughput,
        r->w_fidelity, r->lr, r->weight_decay, tmoe_ttha_grad_name(r->grad_mode));
}

int cli_expert_type_list(const char *cmd, const char *list, tmoe_etype *types, int *n) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", list);
    *n = 0;
    for (char *save, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (*n >= TMOE_MAX_EXPERTS)
            return cli_fail(cmd, "--expert-type: more than %d entries", TMOE_MAX_EXPERTS);
        if (tmoe_etype_parse(tok, &types[*n]))
            return cli_fail(cmd, "--expert-type: entry %d '%s' is not fp16, bf16, q4 or q2", *n + 1,
                            tok);
        (*n)++;
    }
    return 0;
}

int cli_expert_copy(const char *cmd, const char *arg, tmoe_etype *type, int *all,
                    unsigned char *copy) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", arg);
    char *list = strchr(buf, ':');
    if (list) *list++ = '\0';
    if (tmoe_etype_parse(buf, type) || *type == TMOE_ET_BF16)
        return cli_fail(cmd, "--expert-copy: the copy type '%s' is not fp16, q4 or q2", buf);
    memset(copy, 0, TMOE_MAX_EXPERTS);
    *all = !list || !strcmp(list, "all");
    if (*all) return 0;
    int n = 0;
    for (char *save, *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *end, *end2;
        long a = strtol(tok, &end, 10), b = a;
        if (end != tok && *end == '-') b = strtol(end + 1, &end2, 10), end = end2;
        if (end == tok || *end || a < 0 || b < a || b >= TMOE_MAX_EXPERTS)
            return cli_fail(cmd,
                            "--expert-copy: '%s' is not an expert or a range a-b of experts "
                            "(0..%d; the list is all, or indices and ranges such as 0,3,5-7)",
                            tok, TMOE_MAX_EXPERTS - 1);
        for (long e = a; e <= b; e++) n += !copy[e], copy[e] = 1;
    }
    if (!n) return cli_fail(cmd, "--expert-copy: no expert listed after '%s:'", buf);
    return 0;
}

int cli_expert_types(const char *cmd, const char *list, tmoe_block_config *c, tmoe_etype *types) {
    if (!strchr(list, ',')) {
        if (tmoe_etype_parse(list, &c->expert_type))
            return cli_fail(cmd, "--expert-type: unknown type '%s' (expected fp16, bf16, q4 or q2)",
                            list);
        c->expert_types = NULL;
        return 0;
    }
    int n = 0;
    if (cli_expert_type_list(cmd, list, types, &n)) return 1;
    if (n != c->num_experts)
        return cli_fail(cmd, "--expert-type: %d types listed but --num-experts is %d", n,
                        c->num_experts);
    c->expert_types = types;
    return 0;
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

int cli_act8_flag(const char *cmd, const char *s, int *act8) {
    if (strcmp(s, "fp16") && strcmp(s, "int8")) {
        cli_usage_fail(cmd, "--expert-activations: '%s' is not fp16 or int8", s);
        return -1;
    }
    *act8 = strcmp(s, "int8") == 0;
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

/* The first stop signal asks the run to stop after the step in progress. One stop can arrive
 * twice: timeout(1) signals the process and then its process group, a terminal's Ctrl-C
 * reaches every process of the foreground group. So a signal within a second of the first
 * is the same stop; a later one stops at once, by the signal's default action (the files are
 * written as the work goes: what was written stays). */
static volatile sig_atomic_t stop_seen;
static struct timespec stop_at;

static void on_stop_signal(int sig) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now); /* async-signal-safe */
    if (!stop_seen) {
        stop_at = now;
        stop_seen = 1;
        tmoe_run_request_stop();
        return;
    }
    double dt =
        (double)(now.tv_sec - stop_at.tv_sec) + 1e-9 * (double)(now.tv_nsec - stop_at.tv_nsec);
    if (dt < 1.0) return;
    static const char msg[] = "thermoe: a second stop signal: stopping at once\n";
    ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)w;
    signal(sig, SIG_DFL); /* delivered again when the handler returns (it is blocked in it) */
    raise(sig);
}

void cli_stop_signals(int on) {
    static const int stop[] = {SIGINT, SIGTERM, SIGHUP}, ignore[] = {SIGPIPE, SIGXFSZ};
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    /* one stop handler at a time: a SIGTERM does not interrupt the handling of a SIGINT */
    for (size_t i = 0; i < sizeof stop / sizeof *stop; i++) sigaddset(&sa.sa_mask, stop[i]);
    sa.sa_handler = on ? on_stop_signal : SIG_DFL;
    sa.sa_flags = on ? SA_RESTART : 0;
    if (on) stop_seen = 0;
    for (size_t i = 0; i < sizeof stop / sizeof *stop; i++) sigaction(stop[i], &sa, NULL);
    sa.sa_handler = on ? SIG_IGN : SIG_DFL;
    sa.sa_flags = 0;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof ignore / sizeof *ignore; i++) sigaction(ignore[i], &sa, NULL);
}
