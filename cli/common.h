/* common.h — what several subcommands share: the model-running options (-m, -t, -c, -b, --kv-type)
 * and opening a model + session from them; a corpus's input files (--manifest/--split and FILE...);
 * writing an output file atomically. */
#ifndef MSRNN_CLI_COMMON_H
#define MSRNN_CLI_COMMON_H

#include <stddef.h>
#include <stdio.h>

#include "msrnn.h"

typedef struct {
    const char *model_path;
    msrnn_session_params sp;
} run_options;

void run_options_init(run_options *o);
/* If argv[*i] is a shared option, consume it (and its value), set *rc (0 ok, 2 bad value),
 * return 1. */
int run_options_parse(const char *cmd, run_options *o, int argc, char **argv, int *i, int *rc);
extern const char *const RUN_OPTIONS_HELP;

/* Open the model and a session; prints the error and returns 1 on failure. */
int open_model_session(const char *cmd, const run_options *o, msrnn_model **m, msrnn_session **s);

/* The input files of a corpus: the rows of `split` in `manifest` (relative to its folder), then the
 * extra files, in that order, each path a fresh copy in *paths (free with corpus_paths_free).
 * --manifest and --split go together; at least one file is needed. Prints the error and returns 2
 * for a usage error (only one of the two, no input, a split the manifest lacks), 1 when the
 * manifest cannot be read or is malformed, else 0. */
int corpus_inputs(const char *cmd, const char *manifest, const char *split,
                  const char *const *extra, size_t n_extra, char ***paths, size_t *n);

/* Writing a file so that a crash never leaves it half-written: atomic_create opens a temporary
 * file beside `path` (tmp receives its name); atomic_commit flushes, fsyncs, closes and renames
 * it over `path` (then syncs the folder). Both print the error and return 1 on failure, and
 * atomic_commit removes the temporary file then. */
int atomic_create(const char *cmd, const char *path, char *tmp, size_t cap, FILE **f);
int atomic_commit(const char *cmd, const char *path, const char *tmp, FILE *f);

#endif
