/* Shared pieces of the thermoe program: the subcommand table, checked number parsing
 * and the log callback that prints library messages to stderr. */
#ifndef THERMOE_CLI_H
#define THERMOE_CLI_H

#include "thermoe/core.h"

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

/* Parse an integer / double flag value with end and range checks; on failure print
 * "thermoe <cmd>: --<flag>: ..." and return -1. */
int cli_int(const char *cmd, const char *flag, const char *s, long min, long max, long *out);
int cli_double(const char *cmd, const char *flag, const char *s, double min, double max,
               double *out);
int cli_u64(const char *cmd, const char *flag, const char *s, uint64_t *out);

/* Print "thermoe <cmd>: <msg>" to stderr; returns 1 (the failure exit code). */
int cli_fail(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int cli_fail_err(const char *cmd, const tmoe_error *err);
/* Unknown option / missing argument message from getopt, with a hint to --help. */
int cli_usage_error(const char *cmd);

/* Install the stderr log callback; verbosity 0 = warnings, 1 = info, 2 = debug. */
void cli_log_init(int verbosity);
extern int cli_verbosity;

#endif
