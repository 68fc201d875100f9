/* common.c — what several subcommands share (see common.h). */
#include "common.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "args.h"
#include "base/mem.h"
#include "train/manifest.h"

/* --kv's memories, as the library names them (the parser and the completion of --kv) */
static const char *const KV_MEMORIES[] = {"full",           "window",    "sink",  "h2o",
                                          "tova",           "tova-head", "merge", "merge-var",
                                          "merge-clusters", NULL};

static const cli_option run_options_list[] = {
    {"-m", "--model", "FILE", .help = "GGUF model (required)", .complete = "*.gguf"},
    {"-t", "--threads", "N", .help = "threads (default: all cores)"},
    {"-c", "--ctx-size", "N", .help = "context length (default: the model's)"},
    {"-b", "--batch-size", "N", .help = "tokens per batch in prompt processing (default 512)"},
    {NULL, "--kv-type", "f32|f16", .help = "KV cache element type (default f32)"},
    {NULL, "--kv", "POLICY",
     .help = "attention memory: full (default), window, sink, h2o, tova,\n"
             "tova-head, merge, merge-var, merge-clusters",
     .values = KV_MEMORIES},
    {NULL, "--kv-size", "K", .help = "entries kept per layer by a bounded memory"},
    {NULL, "--kv-sinks", "N",
     .help = "first tokens never evicted by sink and merge* (default 4; 0: none)"},
    {NULL, "--kv-merge-bias", "B",
     .help = "merge*: bias of the summary's logit (default -1; -inf: never read)"},
    {NULL, "--kv-clusters", "S", .help = "merge-clusters: summary columns per kv head (default 4)"},
    {NULL, "--max-memory", "BYTES",
     .help = "refuse to start above this much memory (suffixes K, M, G, KiB, MiB,\n"
             "GiB; default: the machine's available memory)"},
    {NULL, "--strict", NULL,
     .help = "refuse a model file holding tensors the model does not use\n"
             "(default: warn and run without them)"},
};
const cli_table RUN_OPTIONS = {.column = 24, CLI_OPTIONS(run_options_list)};

const char *run_options_help(void) {
    static char *text; /* rendered once, kept to the end */
    size_t len;
    FILE *f = text ? NULL : open_memstream(&text, &len);
    if (f) cli_print_table(f, &RUN_OPTIONS), fclose(f);
    return text ? text : "";
}

void run_options_init(run_options *o) {
    memset(o, 0, sizeof *o);
    o->sp = msrnn_session_default_params();
}

int run_options_parse(const char *cmd, run_options *o, int argc, char **argv, int *i, int *rc) {
    const char *a = argv[*i];
    const char *v;
    *rc = 0;
    if (!strcmp(a, "--strict")) { /* takes no value */
        o->strict = 1;
        return 1;
    }
    if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
        if (!(v = arg_value(cmd, argc, argv, *i))) return (*rc = 2), 1;
        o->model_path = v;
    } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
        if (!(v = arg_value(cmd, argc, argv, *i))) return (*rc = 2), 1;
        *rc = arg_int(cmd, a, v, 1, 1024, &o->sp.n_threads);
    } else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) {
        if (!(v = arg_value(cmd, argc, argv, *i))) return (*rc = 2), 1;
        o->ctx_flag = a;
        *rc = arg_int(cmd, a, v, 0, 1 << 28, &o->sp.n_ctx);
    } else if (!strcmp(a, "-b") || !strcmp(a, "--batch-size")) {
        if (!(v = arg_value(cmd, argc, argv, *i))) return (*rc = 2), 1;
        *rc = arg_int(cmd, a, v, 1, 1 << 16, &o->sp.n_batch);
    } else if (!strcmp(a, "--kv-type")) {
        if (!(v = arg_value(cmd, argc, argv, *i))) return (*rc = 2), 1;
        if (!strcmp(v, "f32"))
            o->sp.kv_f16 = 0;
        else if (!strcmp(v, "f16"))
            o->sp.kv_f16 = 1;
        else {
            fprintf(stderr, "msrnn %s: --kv-type expects f32 or f16, got '%s'\n", cmd, v);
            *rc = 2;
        }
    } else if (!strcmp(a, "--kv")) {
        if (!(v = arg_value(cmd, argc, argv, *i))) return (*rc = 2), 1;
        o->kv_flag = a;
        o->sp.memory = NULL;
        for (size_t k = 0; KV_MEMORIES[k]; k++)
            if (!strcmp(v, KV_MEMORIES[k])) o->sp.memory = KV_MEMORIES[k];
        if (!o->sp.memory) {
            fprintf(stderr,
                    "msrnn %s: --kv expects full, window, sink, h2o, tova, tova-head, merge, "
                    "merge-var or merge-clusters, got '%s'\n",
                    cmd, v);
            *rc = 2;
        }
    } else if (!strcmp(a, "--kv-size")) {
        if (!(v = arg_value(cmd, argc, argv, *i))) return (*rc = 2), 1;
        o->kv_size_flag = a;
        *rc = arg_int(cmd, a, v, 1, 1 << 24, &o->sp.kv_size);
    } else if (!strcmp(a, "--max-memory")) {
        if (!(v = arg_value(cmd, argc, argv, *i))) return (*rc = 2), 1;
        *rc = max_memory_parse(cmd, a, v, &o->max_memory);
    } else if (!strcmp(a, "--kv-sinks")) {
        if (!(v = arg_value(cmd, argc, argv, *i))) return (*rc = 2), 1;
        o->kv_sinks_flag = a;
        *rc = arg_int(cmd, a, v, 0, 1 << 20, &o->sp.kv_sinks);
        if (!*rc && o->sp.kv_sinks == 0) o->sp.kv_sinks = -1; /* the library's "none" */
    } else if (!strcmp(a, "--kv-clusters")) {
        if (!(v = arg_value(cmd, argc, argv, *i))) return (*rc = 2), 1;
        o->kv_clusters_flag = a;
        *rc = arg_int(cmd, a, v, 1, 64, &o->sp.kv_clusters);
    } else if (!strcmp(a, "--kv-merge-bias")) {
        if (!(v = arg_value(cmd, argc, argv, *i))) return (*rc = 2), 1;
        o->kv_bias_flag = a;
        if (!strcmp(v, "-inf"))
            o->sp.kv_merge_bias = -INFINITY;
        else
            *rc = arg_float(cmd, a, v, -1e4, 1e4, &o->sp.kv_merge_bias);
    } else {
        return 0;
    }
    ++*i;
    return 1;
}

int run_options_check(const char *cmd, const run_options *o) {
    const char *mem = o->sp.memory ? o->sp.memory : "full";
    if (o->kv_size_flag && !strcmp(mem, "full")) {
        fprintf(stderr,
                "msrnn %s: --kv-size applies to a bounded memory (--kv window, sink, h2o, tova, "
                "tova-head or merge), not to the full cache\n",
                cmd);
        return 2;
    }
    const int merges = !strncmp(mem, "merge", 5);
    if (o->kv_sinks_flag && strcmp(mem, "sink") && !merges) {
        fprintf(stderr,
                "msrnn %s: --kv-sinks applies to --kv sink, merge, merge-var and merge-clusters "
                "only, not to %s\n",
                cmd, mem);
        return 2;
    }
    if (o->kv_bias_flag && !merges) {
        fprintf(stderr,
                "msrnn %s: --kv-merge-bias applies to --kv merge, merge-var and merge-clusters "
                "only, not to %s\n",
                cmd, mem);
        return 2;
    }
    if (o->kv_clusters_flag && strcmp(mem, "merge-clusters")) {
        fprintf(stderr, "msrnn %s: --kv-clusters applies to --kv merge-clusters only, not to %s\n",
                cmd, mem);
        return 2;
    }
    return 0;
}

int open_model_session(const char *cmd, const run_options *o, msrnn_model **m, msrnn_session **s) {
    *s = NULL;
    int rc = open_model(cmd, o, m);
    if (!rc && (rc = open_session(cmd, o, *m, s))) {
        msrnn_model_close(*m);
        *m = NULL;
    }
    return rc;
}

int open_model(const char *cmd, const run_options *o, msrnn_model **m) {
    *m = NULL;
    int rc = run_options_check(cmd, o);
    if (rc) return rc;
    if (!o->model_path) {
        fprintf(stderr, "msrnn %s: a model is required (-m FILE)\n", cmd);
        return 2;
    }
    if (o->sp.memory && strcmp(o->sp.memory, "full") && o->sp.kv_size == 0) {
        fprintf(stderr, "msrnn %s: --kv %s needs --kv-size K\n", cmd, o->sp.memory);
        return 2;
    }
    if (msrnn_model_open(o->model_path, m) != MSRNN_OK) {
        fprintf(stderr, "msrnn %s: %s\n", cmd, msrnn_last_error());
        return 1;
    }
    if (check_unused_tensors(cmd, *m, o->model_path, o->strict)) {
        msrnn_model_close(*m);
        *m = NULL;
        return 1;
    }
    return 0;
}

int open_session(const char *cmd, const run_options *o, msrnn_model *m, msrnn_session **s) {
    *s = NULL;
    const msrnn_model_info *in = msrnn_model_get_info(m);
    const int bounded = o->sp.memory && strcmp(o->sp.memory, "full");
    if (!bounded && o->sp.n_ctx > in->n_ctx)
        fprintf(stderr, "msrnn %s: warning: context %d is longer than the model's trained %d\n",
                cmd, o->sp.n_ctx, in->n_ctx);
    size_t need = 0;
    msrnn_status st = msrnn_session_bytes_needed(m, &o->sp, &need);
    if (st == MSRNN_OK) {
        char what[128];
        if (bounded)
            snprintf(what, sizeof what, "the session (--kv %s --kv-size %d)", o->sp.memory,
                     o->sp.kv_size);
        else
            snprintf(what, sizeof what, "the session (full cache of %d tokens)",
                     o->sp.n_ctx > 0 ? o->sp.n_ctx : in->n_ctx);
        if (memory_check(cmd, need, o->max_memory, what,
                         bounded ? "--kv-size or -b/--batch-size"
                                 : "-c/--ctx-size or -b/--batch-size"))
            return 1;
        st = msrnn_session_open(m, &o->sp, s);
    }
    if (st != MSRNN_OK) {
        fprintf(stderr, "msrnn %s: %s\n", cmd, msrnn_last_error());
        return exit_status(st);
    }
    return 0;
}

void run_options_cap(const char *cmd, run_options *o, int64_t max_tokens) {
    if (max_tokens < 1) max_tokens = 1;
    const int bounded = o->sp.memory && strcmp(o->sp.memory, "full");
    if (bounded && o->sp.kv_size > max_tokens) {
        int k = (int)max_tokens;
        const int least = kv_size_min(&o->sp, o->sp.memory);
        if (k < least) k = least;
        if (k < o->sp.kv_size) {
            fprintf(stderr,
                    "msrnn %s: note: --kv-size %d is more than the %lld tokens this run feeds a "
                    "session; the cache is sized for %d\n",
                    cmd, o->sp.kv_size, (long long)max_tokens, k);
            o->sp.kv_size = k;
        }
    } else if (!bounded && (o->sp.n_ctx == 0 || o->sp.n_ctx > max_tokens)) {
        if (o->ctx_flag && o->sp.n_ctx > max_tokens)
            fprintf(stderr,
                    "msrnn %s: note: %s %d is more than the %lld tokens this run feeds the "
                    "session; the cache is sized for %lld\n",
                    cmd, o->ctx_flag, o->sp.n_ctx, (long long)max_tokens, (long long)max_tokens);
        o->sp.n_ctx = (int)max_tokens;
    }
}

int memory_check(const char *cmd, uint64_t need, uint64_t limit, const char *what,
                 const char *how) {
    if (mem_check(need, limit, what, how) == MSRNN_OK) return 0;
    fprintf(stderr, "msrnn %s: %s\n", cmd, msrnn_last_error());
    return 1;
}

int max_memory_parse(const char *cmd, const char *flag, const char *v, uint64_t *limit) {
    int rc = arg_bytes(cmd, flag, v, limit);
    if (!rc && *limit < ((uint64_t)1 << 30)) read_text_set_limit(*limit);
    return rc;
}

int check_unused_tensors(const char *cmd, const msrnn_model *m, const char *path, int strict) {
    const int n = msrnn_model_n_unused(m);
    if (n == 0) return 0;
    enum { SHOWN = 4 };
    fprintf(stderr, "msrnn %s: %s%s: %d tensor%s the model does not use (", cmd,
            strict ? "" : "warning: ", path, n, n == 1 ? "" : "s");
    for (int i = 0; i < n && i < SHOWN; i++)
        fprintf(stderr, "%s%s", i ? ", " : "", msrnn_model_unused_name(m, i));
    if (n > SHOWN) fprintf(stderr, " and %d more", n - SHOWN);
    fprintf(stderr, "): its hyper-parameters (block_count...) may not match its tensors%s\n",
            strict ? " (--strict)" : "; --strict refuses such a file");
    return strict ? 1 : 0;
}

int corpus_inputs(const char *cmd, const char *manifest, const char *split,
                  const char *const *extra, size_t n_extra, char ***paths, size_t *n) {
    *paths = NULL, *n = 0;
    if (!manifest != !split) {
        fprintf(stderr, "msrnn %s: --manifest and --split go together (got only %s)\n", cmd,
                manifest ? "--manifest" : "--split");
        return 2;
    }
    if (!manifest && n_extra == 0) {
        fprintf(stderr, "msrnn %s: no input: give --manifest TSV --split NAME and/or FILE...\n",
                cmd);
        return 2;
    }
    char **listed = NULL;
    size_t n_listed = 0;
    if (manifest) {
        msrnn_status st = corpus_manifest_files(manifest, split, &listed, &n_listed);
        if (st != MSRNN_OK) { /* MSRNN_ERR_INVALID: no row has that split, the user's --split */
            fprintf(stderr, "msrnn %s: %s%s\n", cmd, st == MSRNN_ERR_INVALID ? "--split: " : "",
                    msrnn_last_error());
            return st == MSRNN_ERR_INVALID ? 2 : 1;
        }
    }
    char **all = realloc(listed, (n_listed + n_extra) * sizeof *all);
    if (!all) {
        corpus_paths_free(listed, n_listed);
        fprintf(stderr, "msrnn %s: out of memory\n", cmd);
        return 1;
    }
    for (size_t i = 0; i < n_extra; i++) {
        if (!(all[n_listed + i] = strdup(extra[i]))) {
            corpus_paths_free(all, n_listed + i);
            fprintf(stderr, "msrnn %s: out of memory\n", cmd);
            return 1;
        }
    }
    *paths = all, *n = n_listed + n_extra;
    return 0;
}

int output_open(const char *cmd, const char *path, atomic_file **f) {
    if (atomic_file_open(path, f) != MSRNN_OK) {
        fprintf(stderr, "msrnn %s: %s\n", cmd, msrnn_last_error());
        return 1;
    }
    uint64_t bytes;
    int n = atomic_file_stale_removed(*f, &bytes);
    if (n)
        fprintf(stderr,
                "msrnn %s: removed %d temporary file%s of %s left by a killed run (%llu bytes)\n",
                cmd, n, n == 1 ? "" : "s", path, (unsigned long long)bytes);
    return 0;
}

/* ---- files_check ----------------------------------------------------------------------------- */

typedef struct {
    int exists;
    dev_t dev;
    ino_t ino;
    char
        where[PATH_MAX + NAME_MAX + 2]; /* resolved folder + "/" + name ("" if the folder is not) */
} file_id;

/* The folder part of path ("." when none), into dir. */
static void folder_of(const char *path, char *dir, size_t cap) {
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, cap, ".");
    else if (slash == path)
        snprintf(dir, cap, "/");
    else
        snprintf(dir, cap, "%.*s", (int)(slash - path), path);
}

static void identify(const char *path, file_id *id) {
    struct stat st;
    memset(id, 0, sizeof *id);
    if (stat(path, &st) == 0) id->exists = 1, id->dev = st.st_dev, id->ino = st.st_ino;
    char dir[PATH_MAX], real[PATH_MAX];
    folder_of(path, dir, sizeof dir);
    const char *slash = strrchr(path, '/');
    if (realpath(dir, real))
        snprintf(id->where, sizeof id->where, "%s/%s", real, slash ? slash + 1 : path);
}

static int same_file(const file_id *a, const file_id *b) {
    if (a->exists && b->exists) return a->dev == b->dev && a->ino == b->ino;
    return a->where[0] && !strcmp(a->where, b->where);
}

static int writable(const char *cmd, const file_arg *o) {
    char dir[PATH_MAX];
    struct stat st;
    if (!o->path[0]) {
        fprintf(stderr, "msrnn %s: %s: an empty path\n", cmd, o->flag);
        return 1;
    }
    if (o->path[strlen(o->path) - 1] == '/' || (stat(o->path, &st) == 0 && S_ISDIR(st.st_mode))) {
        fprintf(stderr, "msrnn %s: %s %s: is a folder; give a file name\n", cmd, o->flag, o->path);
        return 1;
    }
    if (stat(o->path, &st) == 0 && !S_ISREG(st.st_mode)) {
        fprintf(stderr, "msrnn %s: %s %s: is a device, pipe or socket, not a file to replace\n",
                cmd, o->flag, o->path);
        return 1;
    }
    folder_of(o->path, dir, sizeof dir);
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "msrnn %s: %s %s: the folder '%s' %s\n", cmd, o->flag, o->path, dir,
                stat(dir, &st) != 0 ? "does not exist" : "is not a folder");
        return 1;
    }
    if (access(dir, W_OK | X_OK) != 0) {
        fprintf(stderr, "msrnn %s: %s %s: cannot write in the folder '%s': %s\n", cmd, o->flag,
                o->path, dir, strerror(errno));
        return 1;
    }
    return 0;
}

int files_check(const char *cmd, const file_arg *in, size_t n_in, const file_arg *out,
                size_t n_out) {
    file_id *ids = malloc((n_in + n_out) * sizeof *ids + 1);
    if (!ids) {
        fprintf(stderr, "msrnn %s: out of memory\n", cmd);
        return 1;
    }
    int rc = 0;
    for (size_t i = 0; i < n_in; i++)
        if (in[i].path) identify(in[i].path, &ids[i]);
    for (size_t j = 0; j < n_out && !rc; j++) {
        const file_arg *o = &out[j];
        if (!o->path) continue;
        file_id *id = &ids[n_in + j];
        identify(o->path, id);
        for (size_t i = 0; i < n_in && !rc; i++)
            if (in[i].path && same_file(id, &ids[i])) {
                fprintf(stderr,
                        "msrnn %s: %s %s and %s %s are the same file: the output would replace "
                        "an input\n",
                        cmd, o->flag, o->path, in[i].flag, in[i].path);
                rc = 2;
            }
        for (size_t k = 0; k < j && !rc; k++)
            if (out[k].path && same_file(id, &ids[n_in + k])) {
                fprintf(stderr,
                        "msrnn %s: %s %s and %s %s are the same file: two outputs would "
                        "overwrite each other\n",
                        cmd, o->flag, o->path, out[k].flag, out[k].path);
                rc = 2;
            }
        if (!rc) rc = writable(cmd, o);
    }
    free(ids);
    return rc;
}

int output_commit(const char *cmd, atomic_file *f) {
    if (atomic_file_commit(f) != MSRNN_OK) {
        fprintf(stderr, "msrnn %s: %s\n", cmd, msrnn_last_error());
        return 1;
    }
    return 0;
}

int exit_status(msrnn_status st) { return st == MSRNN_OK ? 0 : st == MSRNN_ERR_INVALID ? 2 : 1; }

int files_check_corpus(const char *cmd, const file_arg *in, size_t n_in, char **paths,
                       size_t n_paths, size_t n_listed, const char *extra_flag, const file_arg *out,
                       size_t n_out) {
    file_arg *all = malloc((n_in + n_paths) * sizeof *all + 1);
    if (!all) {
        fprintf(stderr, "msrnn %s: out of memory\n", cmd);
        return 1;
    }
    memcpy(all, in, n_in * sizeof *in);
    for (size_t i = 0; i < n_paths; i++)
        all[n_in + i] =
            (file_arg){i < n_listed ? "a file of --manifest/--split" : extra_flag, paths[i]};
    int rc = files_check(cmd, all, n_in + n_paths, out, n_out);
    free(all);
    return rc;
}

int kv_size_min(const msrnn_session_params *sp, const char *memory) {
    msrnn_session_params p = *sp;
    msrnn_memory_settings ms;
    p.memory = memory;
    return msrnn_memory_settings_of(&p, &ms) == MSRNN_OK && ms.min_kv_size > 1 ? ms.min_kv_size : 1;
}
