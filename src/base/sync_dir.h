/* sync_dir.h — making an atomic rename durable: fsync the folder that holds a path (best effort).
 * Shared by every writer that writes a temporary file and renames it (GGUF, token shards). */
#ifndef MSRNN_BASE_SYNC_DIR_H
#define MSRNN_BASE_SYNC_DIR_H

void sync_parent_dir(const char *path);

#endif
