/* External tool runner (see include/thermoe/profile.h). */
#include "thermoe/profile.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

const char *tmoe_tool_find(const char *name, char *buf, size_t n) {
    if (strchr(name, '/')) {
        if (access(name, X_OK) != 0) return NULL;
        snprintf(buf, n, "%s", name);
        return buf;
    }
    const char *path = getenv("PATH");
    if (!path) return NULL;
    const char *p = path;
    while (*p) {
        size_t len = strcspn(p, ":");
        if (len > 0) {
            snprintf(buf, n, "%.*s/%s", (int)len, p, name);
            struct stat st;
            if (stat(buf, &st) == 0 && S_ISREG(st.st_mode) && access(buf, X_OK) == 0) return buf;
        }
        p += len;
        if (*p == ':') p++;
    }
    return NULL;
}

/* Last non-empty line of the log (what the tool said last). */
static void log_tail(const char *path, char *out, size_t n) {
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f) return;
    if (fseek(f, 0, SEEK_END) == 0) {
        long size = ftell(f);
        long from = size > (long)n - 1 ? size - (long)n + 1 : 0;
        if (fseek(f, from, SEEK_SET) == 0) {
            size_t got = fread(out, 1, n - 1, f);
            out[got] = '\0';
        }
    }
    fclose(f);
    /* keep the last 3 non-empty lines */
    size_t len = strlen(out);
    while (len && (out[len - 1] == '\n' || out[len - 1] == '\r')) out[--len] = '\0';
    int lines = 0;
    for (size_t i = len; i > 0; i--)
        if (out[i - 1] == '\n' && ++lines == 3) {
            memmove(out, out + i, len - i + 1);
            break;
        }
}

int tmoe_tool_run(const char *step, char *const argv[], const char *log_path, double timeout_s,
                  tmoe_tool_result *res, tmoe_error *err) {
    memset(res, 0, sizeof *res);
    res->exit_code = -1;
    int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0)
        return tmoe_errorf(err, TMOE_EIO, "%s: cannot open log %s: %s", step, log_path,
                           strerror(errno));
    int64_t t0 = tmoe_now_ns();
    pid_t pid = fork();
    if (pid < 0) {
        close(fd);
        return tmoe_errorf(err, TMOE_EIO, "%s: fork failed: %s", step, strerror(errno));
    }
    if (pid == 0) {
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        close(fd);
        setpgid(0, 0); /* its own group, so a timeout kills the tool's children too */
        execvp(argv[0], argv);
        fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(fd);
    int status = 0, killed = 0;
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid) break;
        if (w < 0 && errno != EINTR) {
            status = -1;
            break;
        }
        double el = (double)(tmoe_now_ns() - t0) / 1e9;
        if (el > timeout_s && killed == 0) {
            kill(-pid, SIGTERM);
            killed = 1;
        } else if (el > timeout_s + 5.0 && killed == 1) {
            kill(-pid, SIGKILL);
            killed = 2;
        }
        nanosleep(&(struct timespec){0, 20000000L}, NULL);
    }
    res->seconds = (double)(tmoe_now_ns() - t0) / 1e9;
    res->timed_out = killed != 0;
    res->exit_code = status >= 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    log_tail(log_path, res->tail, sizeof res->tail);
    if (res->timed_out)
        return tmoe_errorf(err, TMOE_EDEVICE,
                           "%s: %s did not finish within %.0f s and was stopped "
                           "(log: %s)",
                           step, argv[0], timeout_s, log_path);
    if (res->exit_code != 0)
        return tmoe_errorf(err, TMOE_EDEVICE, "%s: %s exited %d: %s (log: %s)", step, argv[0],
                           res->exit_code, res->tail[0] ? res->tail : "(no output)", log_path);
    return TMOE_OK;
}
