/* The run directory: created, locked for this process, stale temporaries removed, and
 * batches.csv opened (new, or resumed after checking the run's fingerprint). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "exp/runner_internal.h"

/* Create dir (and its parents) and check that this process may write in it. */
static int make_dir(const char *dir, tmoe_error *err) {
    int rc = tmoe_mkdir_p(dir, err);
    if (rc) return rc;
    if (access(dir, W_OK | X_OK) != 0)
        return tmoe_errorf(err, TMOE_EIO, "directory %s is not writable: %s", dir, strerror(errno));
    return TMOE_OK;
}

/* Take the run directory for this process: an exclusive flock on DIR/thermoe.lock, which
 * then says who holds it ("pid N on host H"). Held until the run ends (the descriptor is
 * closed); a second process is refused with the holder's line instead of writing the same
 * files. The lock file is left in place: removing it would let a third process lock a new
 * file while the second still holds the old one. */
static int lock_run_dir(run_ctx *r, tmoe_error *err) {
    char path[4300];
    snprintf(path, sizeof path, "%s/%s", r->dir, RUN_LOCK_FILE);
    int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0644);
    if (fd < 0)
        return tmoe_errorf(err, TMOE_EIO, "%s: cannot open the run directory's lock file: %s", path,
                           strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return tmoe_errorf(err, TMOE_EINVAL, "%s: the lock file is not a regular file; remove it",
                           path);
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        char who[160] = "";
        ssize_t n = e == EWOULDBLOCK ? pread(fd, who, sizeof who - 1, 0) : -1;
        close(fd);
        if (e != EWOULDBLOCK)
            return tmoe_errorf(err, TMOE_EIO, "%s: cannot lock: %s", path, strerror(e));
        who[n > 0 ? n : 0] = '\0';
        for (char *p = who; *p; p++) /* one printable line */
            if (*p == '\n')
                *p = '\0';
            else if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
                *p = '?';
        return tmoe_errorf(err, TMOE_EINVAL,
                           "run directory %s is in use by %s (it holds %s): wait for that run to "
                           "end, or choose another --out",
                           r->dir, who[0] ? who : "another process", path);
    }
    char host[256] = "unknown", line[400];
    if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "unknown");
    host[sizeof host - 1] = '\0';
    int len = snprintf(line, sizeof line, "pid %ld on host %s\n", (long)getpid(), host);
    if (ftruncate(fd, 0) != 0 || pwrite(fd, line, (size_t)len, 0) != len)
        tmoe_log(TMOE_LOG_WARN,
                 "%s: cannot record this process in the lock file: %s (the lock "
                 "holds all the same)",
                 path, strerror(errno));
    r->lock_fd = fd;
    return TMOE_OK;
}

/* With the lock held no other process writes here: temporaries of metadata.json or
 * batches.csv left by a process that died mid-write are stale. */
static void remove_stale_temporaries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    static const char *const prefixes[] = {TMOE_RUNLOG_METADATA ".tmp", TMOE_RUNLOG_CSV ".tmp"};
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        for (int i = 0; i < 2; i++) {
            if (strncmp(e->d_name, prefixes[i], strlen(prefixes[i])) != 0) continue;
            char path[4400];
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            struct stat st;
            if (lstat(path, &st) == 0 && S_ISREG(st.st_mode) && unlink(path) == 0)
                tmoe_log(TMOE_LOG_INFO, "removed %s, left by a run that stopped while writing it",
                         path);
        }
    }
    closedir(d);
}

int run_open_dir(run_ctx *r, tmoe_runlog_done **done, int *ndone, tmoe_error *err) {
    /* room for the longest name inside (traces/r<repeat>_<workload>_<strategy>.json) */
    if (strlen(r->cfg.out_dir) + 128 > sizeof r->dir)
        return tmoe_errorf(err, TMOE_EINVAL, "--out: a path of %zu bytes is too long (at most %zu)",
                           strlen(r->cfg.out_dir), sizeof r->dir - 128);
    if (r->cfg.log_file && strlen(r->cfg.log_file) + 32 > sizeof r->csv_path)
        return tmoe_errorf(err, TMOE_EINVAL,
                           "--log-file: a path of %zu bytes is too long (at most %zu)",
                           strlen(r->cfg.log_file), sizeof r->csv_path - 32);
    snprintf(r->dir, sizeof r->dir, "%s", r->cfg.out_dir);
    int rc = make_dir(r->dir, err);
    if (rc) return tmoe_error_prefix(err, rc, "output directory");
    char traces[4300];
    snprintf(traces, sizeof traces, "%s/traces", r->dir);
    if ((rc = make_dir(traces, err))) return rc;
    if ((rc = lock_run_dir(r, err))) return rc;
    remove_stale_temporaries(r->dir);
    if (r->cfg.log_file)
        snprintf(r->csv_path, sizeof r->csv_path, "%s", r->cfg.log_file);
    else
        snprintf(r->csv_path, sizeof r->csv_path, "%s/%s", r->dir, TMOE_RUNLOG_CSV);
    if (r->cfg.resume) {
        json_t *was = NULL, *now = run_fingerprint(r);
        if (!now) return tmoe_errorf(err, TMOE_ENOMEM, "--resume: out of memory");
        rc = run_read_metadata(r->dir, r->run_id, sizeof r->run_id, &was, err);
        char diff[640]; /* the message holds 1023 bytes */
        int ndiff = rc ? 0 : run_fingerprint_diff(was, now, diff, sizeof diff);
        json_decref(was);
        json_decref(now);
        if (rc) return tmoe_error_prefix(err, rc, "--resume");
        if (ndiff)
            return tmoe_errorf(err, TMOE_EINVAL,
                               "--resume: %s (the run in %s was made with another configuration; "
                               "its rows and these would not be one experiment: resume with its "
                               "flags, or choose another --out)",
                               diff, r->dir);
    } else {
        struct stat st;
        if (stat(r->csv_path, &st) == 0 && S_ISREG(st.st_mode))
            return tmoe_errorf(
                err, TMOE_EINVAL,
                "%s exists: continue that run with --resume, or choose another --out", r->csv_path);
        char stamp[32];
        time_t t = time(NULL);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
        snprintf(r->run_id, sizeof r->run_id, "%s-%08llx", stamp,
                 (unsigned long long)(r->cfg.seed * 0x9e3779b97f4a7c15ull >> 32));
    }
    rc = tmoe_runlog_open(r->csv_path, r->cfg.resume, r->cfg.resume ? r->run_id : NULL, &r->log,
                          done, ndone, err);
    return rc;
}
