/* File helpers shared by every reader and writer: type and size checks before reading (so a
 * FIFO, directory or device is refused instead of blocking or growing), whole-or-nothing
 * writes through a temporary and rename, and mkdir -p. */
#include "thermoe/core.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *file_kind(mode_t m) {
    if (S_ISDIR(m)) return "a directory";
    if (S_ISFIFO(m)) return "a FIFO";
    if (S_ISCHR(m)) return "a character device";
    if (S_ISBLK(m)) return "a block device";
    if (S_ISSOCK(m)) return "a socket";
    return "not a regular file";
}

FILE *tmoe_file_open_read(const char *path, size_t max_bytes, size_t *size_out, tmoe_error *err) {
    /* O_NONBLOCK: opening a FIFO with no writer returns at once; fstat then refuses it. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        tmoe_errorf(err, TMOE_EIO, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        tmoe_errorf(err, TMOE_EIO, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        tmoe_errorf(err, TMOE_EINVAL, "%s: is %s; expected a regular file", path,
                    file_kind(st.st_mode));
        close(fd);
        return NULL;
    }
    if (max_bytes && (uint64_t)st.st_size > (uint64_t)max_bytes) {
        tmoe_errorf(err, TMOE_EINVAL, "%s: %lld bytes, more than the limit of %zu bytes", path,
                    (long long)st.st_size, max_bytes);
        close(fd);
        return NULL;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
        tmoe_errorf(err, TMOE_EIO, "%s: fcntl: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        tmoe_errorf(err, TMOE_EIO, "%s: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    if (size_out) *size_out = (size_t)st.st_size;
    return f;
}

char *tmoe_file_read_all(const char *path, size_t max_bytes, size_t *len_out, tmoe_error *err) {
    size_t size = 0;
    FILE *f = tmoe_file_open_read(path, max_bytes, &size, err);
    if (!f) return NULL;
    char *buf = tmoe_malloc(size + 1, err);
    if (!buf) {
        fclose(f);
        return NULL;
    }
    size_t n = fread(buf, 1, size, f);
    /* A file that grew since fstat is read only up to its size then; one that shrank is
     * short: either way a read error is reported, a short file is what it is. */
    if (ferror(f)) {
        tmoe_errorf(err, TMOE_EIO, "%s: read failed: %s", path, strerror(errno));
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    buf[n] = '\0';
    if (len_out) *len_out = n;
    return buf;
}

int tmoe_file_check_writable(const char *path, tmoe_error *err) {
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT) return TMOE_OK;
        return tmoe_errorf(err, TMOE_EIO, "%s: cannot stat: %s", path, strerror(errno));
    }
    if (!S_ISREG(st.st_mode))
        return tmoe_errorf(err, TMOE_EINVAL,
                           "%s: is %s; refusing to replace it (give a regular file's path)", path,
                           file_kind(st.st_mode));
    return TMOE_OK;
}

int tmoe_atomic_open(tmoe_atomic_file *af, const char *path, tmoe_error *err) {
    memset(af, 0, sizeof *af);
    int rc = tmoe_file_check_writable(path, err);
    if (rc) return rc;
    if (strlen(path) + 32 >= sizeof af->tmp)
        return tmoe_errorf(err, TMOE_EINVAL, "%.200s...: path too long", path);
    snprintf(af->path, sizeof af->path, "%s", path);
    snprintf(af->tmp, sizeof af->tmp, "%s.tmp.%ld", path, (long)getpid());
    af->f = fopen(af->tmp, "wb");
    if (!af->f)
        return tmoe_errorf(err, TMOE_EIO, "%s: cannot create: %s", af->tmp, strerror(errno));
    return TMOE_OK;
}

int tmoe_atomic_commit(tmoe_atomic_file *af, tmoe_error *err) {
    if (!af->f) return tmoe_errorf(err, TMOE_EIO, "%s: not open", af->path);
    int bad = 0, e = 0;
    errno = 0;
    if (fflush(af->f) != 0) bad = 1, e = errno;
    if (!bad && ferror(af->f))
        bad = 1, e = errno ? errno : EIO; /* an earlier buffered write failed */
    if (!bad && fsync(fileno(af->f)) != 0 && errno != EINVAL && errno != EROFS) bad = 1, e = errno;
    if (fclose(af->f) != 0 && !bad) bad = 1, e = errno;
    af->f = NULL;
    if (!bad && rename(af->tmp, af->path) != 0) bad = 1, e = errno;
    if (bad) {
        unlink(af->tmp);
        return tmoe_errorf(err, TMOE_EIO, "%s: write failed: %s (left unchanged)", af->path,
                           strerror(e));
    }
    af->tmp[0] = '\0';
    return TMOE_OK;
}

void tmoe_atomic_abort(tmoe_atomic_file *af) {
    if (!af) return;
    if (af->f) fclose(af->f);
    af->f = NULL;
    if (af->tmp[0]) unlink(af->tmp);
    af->tmp[0] = '\0';
}

int tmoe_mkdir_p(const char *path, tmoe_error *err) {
    char buf[4096];
    if (!path || !*path) return tmoe_errorf(err, TMOE_EINVAL, "empty directory name");
    if (strlen(path) >= sizeof buf)
        return tmoe_errorf(err, TMOE_EINVAL, "%.200s...: path too long", path);
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return tmoe_errorf(err, TMOE_EIO, "%s: cannot create directory: %s", buf,
                               strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return tmoe_errorf(err, TMOE_EIO, "%s: cannot create directory: %s", buf, strerror(errno));
    struct stat st;
    if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))
        return tmoe_errorf(err, TMOE_EIO, "%s: exists and is not a directory", buf);
    return TMOE_OK;
}
