/* common.h — what several subcommands share: the model-running options (-m, -t, -c, -b, --kv-type)
 * and opening a model + session from them; a corpus's input files (--manifest/--split and FILE...);
 * writing an output file atomically (through the library's writer). */
#ifndef MSRNN_CLI_COMMON_H
#define MSRNN_CLI_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "args.h"
#include "base/atomic_file.h"
#include "msrnn.h"

typedef struct {
    const char *model_path;
    msrnn_session_params sp;
    /* which memory flags were given: a flag that does not apply is an error, not ignored */
    const char *kv_flag, *kv_size_flag, *kv_sinks_flag, *kv_bias_flag, *kv_clusters_flag, *ctx_flag;
    uint64_t max_memory; /* --max-memory: refuse a session above this many bytes (0: none) */
    int strict; /* --strict: a model file with tensors the model does not use is an error */
} run_options;

void run_options_init(run_options *o);
/* If argv[*i] is a shared option, consume it (and its value), set *rc (0 ok, 2 bad value),
 * return 1. */
int run_options_parse(const char *cmd, run_options *o, int argc, char **argv, int *i, int *rc);
/* The shared options' table (-m, -t, -c, -b, --kv*, --max-memory, --strict), in the --help of
 * every command that takes them. */
extern const cli_table RUN_OPTIONS;
/* The same as text, for a usage function that prints it (the fuzz targets'). */
const char *run_options_help(void);
#define RUN_OPTIONS_HELP run_options_help()

/* Open the model and a session; prints the error and returns 1 on failure. */
/* 2 (with a message naming the flag) when a memory flag was given that the chosen memory does not
 * use: --kv-size with the full cache, --kv-sinks with anything but sink and merge*,
 * --kv-merge-bias with anything but merge*, --kv-clusters with anything but merge-clusters. */
int run_options_check(const char *cmd, const run_options *o);
int open_model_session(const char *cmd, const run_options *o, msrnn_model **m, msrnn_session **s);
/* The first half of open_model_session: the checks of the options and the model alone. */
int open_model(const char *cmd, const run_options *o, msrnn_model **m);
/* The second half of open_model_session: the session alone, on an open model. Its bytes
 * (msrnn_session_bytes_needed) are checked first against --max-memory and MemAvailable
 * (memory_check); the message names the flags that lower them. */
int open_session(const char *cmd, const run_options *o, msrnn_model *m, msrnn_session **s);
/* A run that feeds a session at most max_tokens tokens (from an empty state) cannot use more
 * memory than that: a bounded memory's --kv-size above it is capped at it (a note on stderr), and
 * the full cache's context likewise (a note when -c was given). Results are unchanged: neither
 * memory would ever have evicted. */
void run_options_cap(const char *cmd, run_options *o, int64_t max_tokens);
/* The smallest budget `memory` accepts with sp's sinks and clusters: sink the sinks + 1; merge,
 * merge-var and merge-clusters the sinks, the summary's entries (1, 2, S) and one recent token;
 * the others 1. */
int kv_size_min(const msrnn_session_params *sp, const char *memory);

/* 0 when need bytes fit under limit (--max-memory, 0: none) and under the machine's available
 * memory (MemAvailable, swap not counted); else prints "msrnn CMD: WHAT needs N bytes ...; lower
 * HOW" and returns 1. Called before every large allocation a command plans. */
int memory_check(const char *cmd, uint64_t need, uint64_t limit, const char *what, const char *how);
/* Parses --max-memory's value into *limit and lowers read_text_file's limit to it (2: bad). */
int max_memory_parse(const char *cmd, const char *flag, const char *v, uint64_t *limit);

/* The file's tensors the model does not use (msrnn_model_unused_name): a warning on stderr naming
 * the first few and the count, returning 0; with strict an error, returning 1. 0 when none. */
int check_unused_tensors(const char *cmd, const msrnn_model *m, const char *path, int strict);

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

/* The files a command reads and writes, each with the flag that named it (for messages). */
typedef struct {
    const char *flag; /* "-o", "--train", "FILE" ... */
    const char *path; /* NULL: not given (skipped) */
} file_arg;

/* Checks, before any work, that no output is one of the inputs or another output (by the files'
 * identities: device and inode when the file exists, else the resolved folder plus the name; so
 * "./a", "a", a hard link and a symbolic link to it all count as the same), and that each output
 * can be written: its folder exists and is writable, and the output is not itself a folder or a
 * device. Prints the first problem, naming the flags (both of them for a clash), and returns 2 for
 * a clash (usage), 1 for an output that cannot be written (as any file the command cannot write),
 * else 0. */
int files_check(const char *cmd, const file_arg *in, size_t n_in, const file_arg *out,
                size_t n_out);

/* files_check with a corpus's files (corpus_inputs: the first n_listed from the manifest, the rest
 * given on the command line by extra_flag, "FILE" or "-f") added to the inputs. */
int files_check_corpus(const char *cmd, const file_arg *in, size_t n_in, char **paths,
                       size_t n_paths, size_t n_listed, const char *extra_flag, const file_arg *out,
                       size_t n_out);

/* The exit status of a failed library call, by the one table every command follows:
 *   0 ok; 1 a runtime failure (a file unreadable, malformed or unwritable, memory, an unsupported
 *   model, a full context); 2 bad usage (MSRNN_ERR_INVALID: a value the flags gave is out of range
 *   or inconsistent); 128 + signal (130 for Ctrl-C) when `train` was interrupted after a clean
 *   checkpoint. */
int exit_status(msrnn_status st);

#endif
