/* Running external profilers (nsys, ncu): find them on PATH, run one with a timeout, its
 * stdout and stderr captured to a log file, and say which step failed with the tool's own
 * last words. */
#ifndef THERMOE_EXTTOOL_H
#define THERMOE_EXTTOOL_H

#include "thermoe/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Full path of an executable found on PATH (buf), or NULL when it is not installed. */
const char *tmoe_tool_find(const char *name, char *buf, size_t n);

typedef struct tmoe_tool_result {
    int exit_code;      /* exit status, or -1 when killed */
    int timed_out;      /* 1 when the timeout killed it */
    double seconds;     /* wall time */
    char tail[1024];    /* last lines of its output (stderr and stdout, as logged) */
} tmoe_tool_result;

/* Run argv (argv[0] a path or a name on PATH) with stdout and stderr appended to log_path,
 * killing it (SIGTERM, then SIGKILL) after timeout_s. step names the step in messages.
 * TMOE_OK when it exited 0; otherwise TMOE_EDEVICE (or TMOE_EIO for a log file problem) with
 * "step: <tool> exited N: <last line>" and the result filled. */
int tmoe_tool_run(const char *step, char *const argv[], const char *log_path, double timeout_s,
                  tmoe_tool_result *res, tmoe_error *err);

#ifdef __cplusplus
}
#endif
#endif
