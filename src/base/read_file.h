/* read_file.h — a whole file into memory, for the text formats msrnn parses whole (manifests,
 * corpus documents). Not for model weights or shards: those are mapped, never read. */
#ifndef MSRNN_BASE_READ_FILE_H
#define MSRNN_BASE_READ_FILE_H

#include <stddef.h>
#include <sys/stat.h>

#include "base/status.h"

/* The contents of path in a new buffer (NUL-terminated, so text can be parsed as a C string; free
 * it with free()) and its length. MSRNN_ERR_IO naming the path if it cannot be opened, is not a
 * regular file or a read fails; MSRNN_ERR_NOMEM. */
msrnn_status file_read_all(const char *path, char **buf, size_t *len);

/* Open path read-only and check it is a regular file (not a folder, FIFO or device): *fd and *sb on
 * success; MSRNN_ERR_IO naming the path and the reason otherwise (nothing left open). Shared by
 * every reader: file_read_all, gguf_open, token_shard_open. */
msrnn_status file_open_regular(const char *path, int *fd, struct stat *sb);

#endif
