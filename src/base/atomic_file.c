/* atomic_file.c — see atomic_file.h. A buffered file descriptor that remembers its first error,
 * plus the temporary-file-and-rename protocol around it. The stdio stream is a glibc
 * fopencookie() over atomic_file_write, so text writers share the buffer and the error record. */
#include "base/atomic_file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "base/sync_dir.h"

#define TMP_SUFFIX ".tmp-XXXXXX"
#define BUF_BYTES (1u << 18)

struct atomic_file {
    char *path, *tmp; /* owned copies */
    int fd;
    int err;          /* errno of the first failure, 0 if none */
    const char *step; /* what failed: "writing", "fsync of", ... */
    uint64_t offset;  /* bytes accepted so far */
    FILE *stream;
    int stale; /* temporaries of killed writers removed when this one was opened */
    uint64_t stale_bytes;
    size_t len; /* bytes waiting in buf */
    uint8_t buf[BUF_BYTES];
};

static void fail_step(atomic_file *f, int err, const char *step) {
    if (f->err) return;
    f->err = err ? err : EIO;
    f->step = step;
}

/* write(2) all of [p, p + n), retrying short writes; the first failure is kept. */
static void write_fd(atomic_file *f, const uint8_t *p, size_t n) {
    size_t done = 0;
    while (!f->err && done < n) {
        ssize_t k = write(f->fd, p + done, n - done);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0)
            fail_step(f, k < 0 ? errno : EIO, "writing");
        else
            done += (size_t)k;
    }
}

static void flush_buf(atomic_file *f) {
    write_fd(f, f->buf, f->len);
    f->len = 0;
}

void atomic_file_write(atomic_file *f, const void *data, size_t n) {
    const uint8_t *p = data;
    f->offset += n;
    if (n >= BUF_BYTES) { /* a large block goes straight to the file */
        flush_buf(f);
        write_fd(f, p, n);
        return;
    }
    while (n && !f->err) {
        size_t k = BUF_BYTES - f->len < n ? BUF_BYTES - f->len : n;
        memcpy(f->buf + f->len, p, k);
        f->len += k, p += k, n -= k;
        if (f->len == BUF_BYTES) flush_buf(f);
    }
}

static ssize_t stream_write(void *cookie, const char *data, size_t n) {
    atomic_file_write(cookie, data, n);
    return (ssize_t)n; /* a failure is reported by commit, not through stdio */
}

/* Remove the temporaries a killed writer of path left: "NAME.tmp-XXXXXX" beside it whose lock
 * (every live writer holds flock on its own temporary) can be taken, and that are older than two
 * seconds (a live writer takes its lock right after creating the file; the age closes that gap). */
static void remove_stale(atomic_file *f) {
    const char *slash = strrchr(f->path, '/');
    const char *base = slash ? slash + 1 : f->path;
    size_t dir_len = slash ? (size_t)(slash - f->path) : 0, base_len = strlen(base);
    char *dir =
        strndup(slash ? (dir_len ? f->path : "/") : ".", slash ? (dir_len ? dir_len : 1) : 1);
    DIR *d = dir ? opendir(dir) : NULL;
    if (!d) {
        free(dir);
        return;
    }
    const char *mine = strrchr(f->tmp, '/') ? strrchr(f->tmp, '/') + 1 : f->tmp;
    const time_t now = time(NULL);
    for (struct dirent *e; (e = readdir(d));) {
        const char *n = e->d_name;
        if (strlen(n) != base_len + sizeof TMP_SUFFIX - 1 || memcmp(n, base, base_len) ||
            memcmp(n + base_len, ".tmp-", 5) || !strcmp(n, mine))
            continue;
        int fd = openat(dirfd(d), n, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0) continue;
        struct stat st;
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && now - st.st_mtime >= 2 &&
            flock(fd, LOCK_EX | LOCK_NB) == 0 && unlinkat(dirfd(d), n, 0) == 0) {
            f->stale++;
            f->stale_bytes += (uint64_t)st.st_size;
        }
        close(fd);
    }
    closedir(d);
    free(dir);
}

int atomic_file_stale_removed(const atomic_file *f, uint64_t *bytes) {
    if (bytes) *bytes = f->stale_bytes;
    return f->stale;
}

msrnn_status atomic_file_open(const char *path, atomic_file **out) {
    *out = NULL;
    size_t n = strlen(path);
    atomic_file *f = malloc(sizeof *f);
    char *tmp = malloc(n + sizeof TMP_SUFFIX);
    char *copy = strdup(path);
    if (!f || !tmp || !copy) {
        free(f), free(tmp), free(copy);
        return status_fail(MSRNN_ERR_NOMEM, "%s: out of memory", path);
    }
    struct stat dst;
    if (stat(path, &dst) == 0 && !S_ISREG(dst.st_mode)) {
        free(f), free(tmp), free(copy);
        return status_fail(MSRNN_ERR_IO, "%s: exists and is %s, not a regular file to replace",
                           path, S_ISDIR(dst.st_mode) ? "a folder" : "a device, pipe or socket");
    }
    memcpy(tmp, path, n);
    memcpy(tmp + n, TMP_SUFFIX, sizeof TMP_SUFFIX);
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        msrnn_status st =
            status_fail(MSRNN_ERR_IO, "%s: cannot create a temporary file beside it: %s", path,
                        strerror(errno));
        free(f), free(tmp), free(copy);
        return st;
    }
    f->path = copy, f->tmp = tmp, f->fd = fd, f->err = 0, f->step = NULL;
    f->offset = 0, f->len = 0, f->stale = 0, f->stale_bytes = 0;
    (void)flock(fd, LOCK_EX); /* held until close: the mark of a live writer (remove_stale) */
    remove_stale(f);
    f->stream = fopencookie(f, "w", (cookie_io_functions_t){NULL, stream_write, NULL, NULL});
    if (!f->stream || setvbuf(f->stream, NULL, _IONBF, 0) != 0) {
        if (f->stream) fclose(f->stream);
        f->stream = NULL;
        atomic_file_abort(f);
        return status_fail(MSRNN_ERR_NOMEM, "%s: out of memory", path);
    }
    *out = f;
    return MSRNN_OK;
}

FILE *atomic_file_stream(atomic_file *f) { return f->stream; }

uint64_t atomic_file_offset(const atomic_file *f) { return f->offset; }

int atomic_file_failed(const atomic_file *f) { return f->err != 0; }

static void release(atomic_file *f) {
    if (f->stream) fclose(f->stream); /* writes nothing: the stream is unbuffered */
    free(f->path), free(f->tmp), free(f);
}

void atomic_file_abort(atomic_file *f) {
    if (!f) return;
    if (f->fd >= 0) close(f->fd);
    unlink(f->tmp);
    release(f);
}

msrnn_status atomic_file_commit(atomic_file *f) {
    if (fflush(f->stream) != 0) fail_step(f, errno, "writing");
    flush_buf(f);
    if (!f->err && fchmod(f->fd, 0644) != 0) fail_step(f, errno, "chmod of");
    if (!f->err && fsync(f->fd) != 0) fail_step(f, errno, "fsync of");
    if (close(f->fd) != 0) fail_step(f, errno, "closing");
    f->fd = -1;
    if (!f->err && rename(f->tmp, f->path) != 0) fail_step(f, errno, "renaming");
    if (f->err) {
        msrnn_status st = status_fail(MSRNN_ERR_IO, "%s: %s the temporary file %s failed: %s",
                                      f->path, f->step, f->tmp, strerror(f->err));
        atomic_file_abort(f);
        return st;
    }
    sync_parent_dir(f->path);
    release(f);
    return MSRNN_OK;
}

msrnn_status atomic_file_write_all(const char *path, const void *data, size_t n) {
    atomic_file *f;
    MSRNN_TRY(atomic_file_open(path, &f));
    atomic_file_write(f, data, n);
    return atomic_file_commit(f);
}
