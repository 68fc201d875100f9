/* common.c — what several subcommands share (see common.h). */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "train/manifest.h"

const char *const RUN_OPTIONS_HELP =
    "  -m, --model FILE      GGUF model (required)\n"
    "  -t, --threads N       threads (default: all cores)\n"
    "  -c, --ctx-size N      context length (default: the model's)\n"
    "  -b, --batch-size N    tokens per batch in prompt processing (default 512)\n"
    "  --kv-type f32|f16     KV cache element type (default f32)\n"
    "  --kv POLICY           attention memory: full (default), window, sink, h2o, tova, tova-head\n"
    "  --kv-size K           entries kept per layer by a bounded memory\n"
    "  --kv-sinks N          sink tokens of the sink memory (default 4)\n";

void run_options_init(run_options *o) {
    memset(o, 0, sizeof *o);
    o->sp = msrnn_session_default_params();
}

int run_options_parse(const char *cmd, run_options *o, int argc, char **argv, int *i, int *rc) {
    const char *a = argv[*i];
    const char *v;
    *rc = 0;
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
        static const char *const names[] = {"full", "window", "sink", "h2o", "tova", "tova-head"};
        o->sp.memory = NULL;
        for (size_t k = 0; k < sizeof names / sizeof *names; k++)
            if (!strcmp(v, names[k])) o->sp.memory = names[k];
        if (!o->sp.memory) {
            fprintf(stderr,
                    "msrnn %s: --kv expects full, window, sink, h2o, tova or tova-head, got '%s'\n",
                    cmd, v);
            *rc = 2;
        }
    } else if (!strcmp(a, "--kv-size")) {
        if (!(v = arg_value(cmd, argc, argv, *i))) return (*rc = 2), 1;
        o->kv_size_flag = a;
        *rc = arg_int(cmd, a, v, 1, 1 << 24, &o->sp.kv_size);
    } else if (!strcmp(a, "--kv-sinks")) {
        if (!(v = arg_value(cmd, argc, argv, *i))) return (*rc = 2), 1;
        o->kv_sinks_flag = a;
        *rc = arg_int(cmd, a, v, 1, 1 << 20, &o->sp.kv_sinks);
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
                "msrnn %s: --kv-size applies to a bounded memory (--kv window, sink, h2o, tova or "
                "tova-head), not to the full cache\n",
                cmd);
        return 2;
    }
    if (o->kv_sinks_flag && strcmp(mem, "sink")) {
        fprintf(stderr, "msrnn %s: --kv-sinks applies to --kv sink only, not to %s\n", cmd, mem);
        return 2;
    }
    return 0;
}

int open_model_session(const char *cmd, const run_options *o, msrnn_model **m, msrnn_session **s) {
    *m = NULL;
    *s = NULL;
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
    const msrnn_model_info *in = msrnn_model_get_info(*m);
    const int bounded = o->sp.memory && strcmp(o->sp.memory, "full");
    if (!bounded && o->sp.n_ctx > in->n_ctx)
        fprintf(stderr, "msrnn %s: warning: context %d is longer than the model's trained %d\n",
                cmd, o->sp.n_ctx, in->n_ctx);
    const msrnn_status st = msrnn_session_open(*m, &o->sp, s);
    if (st != MSRNN_OK) {
        fprintf(stderr, "msrnn %s: %s\n", cmd, msrnn_last_error());
        msrnn_model_close(*m);
        *m = NULL;
        return exit_status(st);
    }
    return 0;
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
    return 0;
}

int output_commit(const char *cmd, atomic_file *f) {
    if (atomic_file_commit(f) != MSRNN_OK) {
        fprintf(stderr, "msrnn %s: %s\n", cmd, msrnn_last_error());
        return 1;
    }
    return 0;
}

int exit_status(msrnn_status st) { return st == MSRNN_OK ? 0 : st == MSRNN_ERR_INVALID ? 2 : 1; }
