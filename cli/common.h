/* common.h — what several subcommands share: the model-running options (-m, -t, -c, -b, --kv-type)
 * and opening a model + session from them; a corpus's input files (--manifest/--split and FILE...);
 * writing an output file atomically (through the library's writer). */
#ifndef MSRNN_CLI_COMMON_H
#define MSRNN_CLI_COMMON_H

#include <stddef.h>
#include <stdio.h>

#include "base/atomic_file.h"
#include "msrnn.h"

typedef struct {
    const char *model_path;
    msrnn_session_params sp;
    /* which memory flags were given: a flag that does not apply is an error, not ignored */
    const char *kv_flag, *kv_size_flag, *kv_sinks_flag, *ctx_flag;
} run_options;

void run_options_init(run_options *o);
/* If argv[*i] is a shared option, consume it (and its value), set *rc (0 ok, 2 bad value),
 * return 1. */
int run_options_parse(const char *cmd, run_options *o, int argc, char **argv, int *i, int *rc);
extern const char *const RUN_OPTIONS_HELP;

/* Open the model and a session; prints the error and returns 1 on failure. */
/* 2 (with a message naming the flag) when a memory flag was given that the chosen memory does not
 * use: --kv-size with the full cache, --kv-sinks with anything but sink. */
int run_options_check(const char *cmd, const run_options *o);
int open_model_session(const char *cmd, const run_options *o, msrnn_model **m, msrnn_session **s);

/* The input files of a corpus: the rows of `split` in `manifest` (relative to its folder), then the
 * extra files, in that order, each path a fresh copy in *paths (free with corpus_paths_free).
 * --manifest and --split go together; at least one file is needed. Prints the error and returns 2
 * for a usage error (only one of the two, no input, a split the manifest lacks), 1 when the
 * manifest cannot be read or is malformed, else 0. */
int corpus_inputs(const char *cmd, const char *manifest, const char *split,
                  const char *const *extra, size_t n_extra, char ***paths, size_t *n);

/* An output file written atomically through the library's writer (base/atomic_file.h: a
 * temporary file beside `path`, fsync, rename): write with atomic_file_stream() or
 * atomic_file_write(), then output_commit. Both print the error and return 1 on failure (nothing
 * is left behind then); atomic_file_abort gives up on a file. */
int output_open(const char *cmd, const char *path, atomic_file **f);
int output_commit(const char *cmd, atomic_file *f);

/* The exit status of a failed library call, by the one table every command follows:
 *   0 ok; 1 a runtime failure (a file unreadable, malformed or unwritable, memory, an unsupported
 *   model, a full context); 2 bad usage (MSRNN_ERR_INVALID: a value the flags gave is out of range
 *   or inconsistent); 128 + signal (130 for Ctrl-C) when `train` was interrupted after a clean
 *   checkpoint. */
int exit_status(msrnn_status st);

#endif
