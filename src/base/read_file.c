/* read_file.c — see read_file.h. */
#include "base/read_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

msrnn_status file_open_regular(const char *path, int *fd_out, struct stat *sb) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return status_fail(MSRNN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (fstat(fd, sb) != 0) {
        int e = errno;
        close(fd);
        return status_fail(MSRNN_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb->st_mode)) {
        close(fd);
        return status_fail(MSRNN_ERR_IO, "%s: not a regular file", path);
    }
    *fd_out = fd;
    return MSRNN_OK;
}

msrnn_status file_read_all(const char *path, char **buf, size_t *len) {
    *buf = NULL, *len = 0;
    int fd;
    struct stat sb;
    MSRNN_TRY(file_open_regular(path, &fd, &sb));
    const size_t limit = MSRNN_MAX_TEXT_BYTES;
    if ((uint64_t)sb.st_size > limit) {
        close(fd);
        return status_fail(MSRNN_ERR_NOMEM,
                           "%s: %lld bytes, above the limit of %zu bytes (1 GiB) read into memory",
                           path, (long long)sb.st_size, limit);
    }
    size_t cap = (size_t)sb.st_size + 1, n = 0;
    char *b = malloc(cap);
    if (!b) {
        close(fd);
        return status_fail(MSRNN_ERR_NOMEM, "%s: out of memory for %zu bytes", path, cap);
    }
    for (;;) {
        if (n + 1 == cap) { /* the file grew while reading */
            if (n >= limit) {
                free(b), close(fd);
                return status_fail(MSRNN_ERR_NOMEM,
                                   "%s: grew past the limit of %zu bytes (1 GiB) read into memory",
                                   path, limit);
            }
            cap = 2 * cap > limit + 1 ? limit + 1 : 2 * cap;
            char *nb = realloc(b, cap);
            if (!nb) {
                free(b), close(fd);
                return status_fail(MSRNN_ERR_NOMEM, "%s: out of memory", path);
            }
            b = nb;
        }
        ssize_t k = read(fd, b + n, cap - 1 - n);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            int e = errno;
            free(b), close(fd);
            return status_fail(MSRNN_ERR_IO, "%s: read error: %s", path, strerror(e));
        }
        if (k == 0) break;
        n += (size_t)k;
    }
    close(fd);
    b[n] = 0;
    *buf = b, *len = n;
    return MSRNN_OK;
}
