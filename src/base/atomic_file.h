/* atomic_file.h — writing a file so that a crash never leaves it half-written.
 *
 * The bytes go to a temporary file beside the destination, "PATH.tmp-XXXXXX" (the same folder, so
 * the rename stays on one file system; the suffix makes a file left by a killed process easy to
 * recognise). atomic_file_commit flushes it, makes it mode 0644, fsyncs it, renames it over the
 * destination (atomic on POSIX) and fsyncs the folder so that the rename itself survives a crash.
 * A failure at any step removes the temporary file and leaves an existing destination untouched.
 * Every file msrnn writes goes through here: GGUF files, token shards, and the command-line tool's
 * logs, plots and JSON.
 *
 * Writes are buffered and never fail on their own: the first failing write is remembered (with its
 * errno) and reported by atomic_file_commit, so callers write without checking each call.
 * A writer holds flock() on its temporary file until it commits or aborts. Opening a writer for
 * PATH removes the "PATH.tmp-XXXXXX" files beside it that nobody holds (left by a killed process)
 * and are older than two seconds; atomic_file_stale_removed says how many.
 * Not here: appending to or editing an existing file, or locking against concurrent writers (the
 * last rename wins).
 */
#ifndef MSRNN_BASE_ATOMIC_FILE_H
#define MSRNN_BASE_ATOMIC_FILE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "base/status.h"

typedef struct atomic_file atomic_file;

/* Create the temporary file for path. MSRNN_ERR_IO naming path when it cannot be created (no such
 * folder, no permission) or when path exists as something other than a regular file (a folder, a
 * device), MSRNN_ERR_NOMEM. */
msrnn_status atomic_file_open(const char *path, atomic_file **out);
/* The number of a killed writer's temporaries of the same path that opening f removed, and their
 * bytes. */
int atomic_file_stale_removed(const atomic_file *f, uint64_t *bytes);

/* Append n bytes (buffered). After a failure further writes are dropped. */
void atomic_file_write(atomic_file *f, const void *data, size_t n);
/* A stdio stream onto the same file, for fprintf and friends; it is unbuffered (it writes through
 * atomic_file_write), so it can be mixed with atomic_file_write freely. Valid until commit/abort;
 * do not fclose it. */
FILE *atomic_file_stream(atomic_file *f);
/* Bytes written so far (padding to an alignment needs it). */
uint64_t atomic_file_offset(const atomic_file *f);
/* 1 once a write has failed (a long writer may stop early; commit reports it either way). */
int atomic_file_failed(const atomic_file *f);

/* Flush, chmod 0644, fsync, close, rename over the path, fsync the folder. Frees f. On failure the
 * temporary file is removed and MSRNN_ERR_IO names the path, the step that failed and why. */
msrnn_status atomic_file_commit(atomic_file *f);
/* Give up: close and remove the temporary file, free f (NULL is a no-op). */
void atomic_file_abort(atomic_file *f);

/* The whole of a file in one call: open, write n bytes, commit. */
msrnn_status atomic_file_write_all(const char *path, const void *data, size_t n);

#endif
