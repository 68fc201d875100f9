/* read_file.h — a whole file into memory, for the text formats msrnn parses whole (manifests,
 * corpus documents). Not for model weights or shards: those are mapped, never read. */
#ifndef MSRNN_BASE_READ_FILE_H
#define MSRNN_BASE_READ_FILE_H

#include <stddef.h>
#include <sys/stat.h>

#include "base/status.h"

/* The most bytes of text read whole into memory (1 GiB): a larger file is refused, not read. */
#define MSRNN_MAX_TEXT_BYTES ((size_t)1 << 30)

/* The contents of path in a new buffer (NUL-terminated, so text can be parsed as a C string; free
 * it with free()) and its length. MSRNN_ERR_IO naming the path if it cannot be opened, is not a
 * regular file or a read fails; MSRNN_ERR_NOMEM, naming the path and the limit, for a file above
 * MSRNN_MAX_TEXT_BYTES (checked before reading, and again if it grows while being read). */
msrnn_status file_read_all(const char *path, char **buf, size_t *len);

/* Open path read-only and check it is a regular file (not a folder, FIFO or device): *fd and *sb on
 * success; MSRNN_ERR_IO naming the path and the reason otherwise (nothing left open). Shared by
 * every reader: file_read_all, gguf_open, token_shard_open. */
msrnn_status file_open_regular(const char *path, int *fd, struct stat *sb);

#endif
