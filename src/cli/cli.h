/* Shared pieces of the thermoe program: the subcommand table, checked number parsing
 * and the log callback that prints library messages to stderr. */
#ifndef THERMOE_CLI_H
#define THERMOE_CLI_H

#include "thermoe/backend.h"
#include "thermoe/core.h"
#include "thermoe/telemetry.h"

typedef int (*cli_cmd_fn)(int argc, char **argv);

typedef struct cli_cmd {
    const char *name;
    cli_cmd_fn fn;
    const char *summary;
} cli_cmd;

/* Subcommands, one file each. Each returns the process exit code. */
int cmd_analyze(int argc, char **argv);
int cmd_forward(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_profile(int argc, char **argv);
int cmd_op(int argc, char **argv);
int cmd_monitor(int argc, char **argv);
int cmd_cost(int argc, char **argv);
int cmd_import(int argc, char **argv);
int cmd_sweep(int argc, char **argv);

/* For thermoe sweep: whether a long flag of `thermoe run` takes a value (1), is a switch (0),
 * or is not a run flag (-1); and a parse of run flags (argv[0] = "run") without running:
 * 0 when they are valid, else the exit code after the message was printed. */
int cmd_run_flag_arity(const char *name);
int cmd_run_check(int argc, char **argv);

/* Parse an integer / double flag value with end and range checks; on failure print
 * "thermoe <cmd>: --<flag>: ..." and return -1. A bad flag value is a usage error: callers
 * exit 2 (as for cli_shape_flag, cli_name_list and cli_int_list failures). */
int cli_int(const char *cmd, const char *flag, const char *s, long min, long max, long *out);
int cli_double(const char *cmd, const char *flag, const char *s, double min, double max,
               double *out);
int cli_u64(const char *cmd, const char *flag, const char *s, uint64_t *out);

/* Print "thermoe <cmd>: <msg>" to stderr; returns 1 (the failure exit code). */
int cli_fail(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The same message for a usage error (a bad flag value, a missing or extra argument);
 * returns 2 (the usage-error exit code). */
int cli_usage_fail(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int cli_fail_err(const char *cmd, const tmoe_error *err);
/* Unknown option / missing argument message from getopt, with a hint to --help. */
int cli_usage_error(const char *cmd);

/* Model shape flags shared by the subcommands that build a block: option entries with
 * codes CLI_SHAPE_BASE.., a handler, and the help lines. */
#include "thermoe/model.h"
enum {
    CLI_SHAPE_BASE = 1000,
    CLI_D_MODEL = CLI_SHAPE_BASE,
    CLI_N_HEADS,
    CLI_D_FF,
    CLI_NUM_EXPERTS,
    CLI_TOP_K,
    CLI_GROUP,
    CLI_ACT,
    CLI_SEQ_LEN,
    CLI_SHAPE_END
};
#define CLI_SHAPE_OPTIONS                                                                          \
    {"d-model", required_argument, 0, CLI_D_MODEL},                                                \
        {"n-heads", required_argument, 0, CLI_N_HEADS}, {"d-ff", required_argument, 0, CLI_D_FF},  \
        {"num-experts", required_argument, 0, CLI_NUM_EXPERTS},                                    \
        {"top-k", required_argument, 0, CLI_TOP_K},                                                \
        {"group-size", required_argument, 0, CLI_GROUP}, {"act", required_argument, 0, CLI_ACT}, { \
        "seq-len", required_argument, 0, CLI_SEQ_LEN                                               \
    }
/* Apply a shape option: 0 done, 1 bad value (message printed), -1 not a shape option. */
int cli_shape_flag(const char *cmd, int code, const char *arg, tmoe_block_config *b);
/* --expert-type: "fp16" sets c->expert_type (and expert_types NULL); "q4,q4,fp16,..." writes
 * one type per expert into types (TMOE_MAX_EXPERTS) and points c->expert_types at it; the
 * list must have c->num_experts entries. 0, or nonzero with the message printed. */
int cli_expert_types(const char *cmd, const char *list, tmoe_block_config *c, tmoe_etype *types);
/* A comma list of expert types into types (TMOE_MAX_EXPERTS), *n of them, whatever the count
 * (a decoder LM checks it against its checkpoint). 0, or nonzero with the message printed. */
int cli_expert_type_list(const char *cmd, const char *list, tmoe_etype *types, int *n);
/* --expert-copy TYPE[:LIST]: the copies' type (fp16, q4 or q2) and the experts that get one,
 * LIST "all" (the default) or indices and ranges (0,3,5-7); *all = 1 for all, else copy[e]
 * marks them. Returns 0, or 1 after printing the error. */
int cli_expert_copy(const char *cmd, const char *arg, tmoe_etype *type, int *all,
                    unsigned char *copy);
void cli_shape_help(const tmoe_block_config *d);
/* Routing flags shared by run and serve: every knob of tmoe_router_config a user sets
 * (budgets, comparisons, the TTHA adapter), codes CLI_ROUTER_BASE.., a handler and the help. */
#include "thermoe/route.h"
enum {
    CLI_ROUTER_BASE = 1100,
    CLI_R_MAX_BIAS = CLI_ROUTER_BASE,
    CLI_R_KL_BOUND,
    CLI_R_BUDGET,
    CLI_R_TAU_BASE,
    CLI_R_TAU_MIN,
    CLI_R_KL_BASE,
    CLI_R_KL_MAX,
    CLI_R_TOP_P,
    CLI_R_PRUNE,
    CLI_R_CAP_FACTOR,
    CLI_R_CAP_OVERFLOW,
    CLI_R_T_POWER,
    CLI_R_T_BUDGET_GAIN,
    CLI_R_T_TEMP,
    CLI_R_W_LAT,
    CLI_R_W_POWER,
    CLI_R_W_TEMP,
    CLI_R_W_TPUT,
    CLI_R_W_FID,
    CLI_R_LR,
    CLI_R_WD,
    CLI_R_GRAD,
    CLI_ROUTER_END
};
#define CLI_ROUTER_OPTIONS                                                                         \
    {"max-bias", required_argument, 0, CLI_R_MAX_BIAS},                                            \
        {"kl-bound", required_argument, 0, CLI_R_KL_BOUND},                                        \
        {"budget", required_argument, 0, CLI_R_BUDGET},                                            \
        {"tau-base", required_argument, 0, CLI_R_TAU_BASE},                                        \
        {"tau-min", required_argument, 0, CLI_R_TAU_MIN},                                          \
        {"kl-base", required_argument, 0, CLI_R_KL_BASE},                                          \
        {"kl-max", required_argument, 0, CLI_R_KL_MAX},                                            \
        {"top-p", required_argument, 0, CLI_R_TOP_P},                                              \
        {"prune-experts", required_argument, 0, CLI_R_PRUNE},                                      \
        {"capacity-factor", required_argument, 0, CLI_R_CAP_FACTOR},                               \
        {"capacity-overflow", required_argument, 0, CLI_R_CAP_OVERFLOW},                           \
        {"ttha-target-power", required_argument, 0, CLI_R_T_POWER},                                \
        {"ttha-budget-gain", required_argument, 0, CLI_R_T_BUDGET_GAIN},                           \
        {"ttha-target-temp", required_argument, 0, CLI_R_T_TEMP},                                  \
        {"ttha-latency-penalty-weight", required_argument, 0, CLI_R_W_LAT},                        \
        {"ttha-power-weight", required_argument, 0, CLI_R_W_POWER},                                \
        {"ttha-temp-weight", required_argument, 0, CLI_R_W_TEMP},                                  \
        {"ttha-throughput-weight", required_argument, 0, CLI_R_W_TPUT},                            \
        {"ttha-fidelity-weight", required_argument, 0, CLI_R_W_FID},                               \
        {"ttha-lr", required_argument, 0, CLI_R_LR},                                               \
        {"ttha-weight-decay", required_argument, 0, CLI_R_WD}, {                                   \
        "ttha-grad", required_argument, 0, CLI_R_GRAD                                              \
    }
/* Apply a routing option: 0 done, 2 bad value (message printed: a usage error), -1 not a
 * routing option. */
int cli_router_flag(const char *cmd, int code, const char *arg, tmoe_router_config *r);
/* After parsing: budgets in order (tau-min <= tau-base, kl-base <= kl-max); 0 or 2. */
int cli_router_check(const char *cmd, const tmoe_router_config *r);
/* The help lines of the routing options, defaults from d. */
void cli_router_help(const tmoe_router_config *d);

/* Comma list of names -> flags[n] via a name function; "all" selects every one. */
int cli_name_list(const char *cmd, const char *flag, const char *list, int *flags, int n,
                  const char *(*name)(int));
/* Comma list of integers within [lo, hi] -> out (at most cap); returns the count or -1. */
int cli_int_list(const char *cmd, const char *flag, const char *list, long lo, long hi, int *out,
                 int cap);

/* Generated shell scripts (script.c). Every value that enters a script is written with
 * cli_shell_quote; a value with a control character (a newline above all) cannot be carried
 * safely into a comment or an #SBATCH line and is refused before anything is written. */
/* The first control character (< 0x20 or 0x7f) in s, or NULL. */
const char *cli_script_bad_char(const char *s);
/* 1 when s has no control character; else print "thermoe <cmd>: <what> holds a newline
 * (...)" and return 0 (the caller picks the exit code: 2 for a flag value). */
int cli_script_value_ok(const char *cmd, const char *what, const char *s);
/* Write s as one single-quoted shell word ('it'\''s'); -1, writing nothing, when s holds a
 * control character, or when the stream is in error. */
int cli_shell_quote(FILE *f, const char *s);

/* "thermoe" and the subcommand's argv (argv[0] its name) joined by spaces into buf (n bytes,
 * cut at the end when longer): the command line metadata records. */
void cli_command_line(char *buf, size_t n, int argc, char **argv);

/* --backend auto|cpu|cuda and --telemetry auto|nvml|sim: on a bad value print
 * "thermoe <cmd>: --<flag>: ..." and return -1 (callers exit 2). */
int cli_backend_flag(const char *cmd, const char *s, tmoe_backend_kind *out);
int cli_telemetry_flag(const char *cmd, const char *s, tmoe_telemetry_kind *out);
/* --expert-activations fp16|int8 into *act8 (0 / 1); -1 on a bad value, said as above. */
int cli_act8_flag(const char *cmd, const char *s, int *act8);

/* While a long job runs (on = 1): SIGINT (Ctrl-C), SIGTERM and SIGHUP (a closed terminal or
 * ssh session) ask it to stop after the step in progress (tmoe_run_request_stop; a second
 * signal of the same kind kills at once), so that its files are complete and say
 * "interrupted" (exit 130); SIGPIPE (a reader of stdout gone) and SIGXFSZ (a file at its
 * size limit) are ignored, so that the write fails and the job records it instead of dying
 * mid-file. on = 0 restores the defaults. */
void cli_stop_signals(int on);

/* Install the stderr log callback; verbosity 0 = warnings, 1 = info, 2 = debug. */
void cli_log_init(int verbosity);
extern int cli_verbosity;

#endif
