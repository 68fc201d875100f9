/* sync_dir.c — see sync_dir.h. */
#include "base/sync_dir.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void sync_parent_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    /* "name" -> ".", "/name" -> "/", "a/b/name" -> "a/b" */
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir) return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(dir);
}
