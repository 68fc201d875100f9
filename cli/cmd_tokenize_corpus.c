/* cmd_tokenize_corpus.c — `msrnn tokenize-corpus`: tokenize text files (one document each, BOS
 * first) into a token shard for training (format in src/train/data.h). Files come from one split
 * of a manifest, then from the command line, in that order. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "common.h"
#include "io/gguf.h"
#include "text/tokenizer.h"
#include "train/corpus.h"
#include "train/manifest.h"

static const cli_option options[] = {
    {"-m", "--model", "FILE", .help = "any GGUF with a 'llama' (SentencePiece) vocabulary",
     .complete = "*.gguf"},
    {"-o", "--output", "FILE", .help = "the token shard to write (atomically)",
     .complete = "*.bin"},
    {NULL, "--manifest", "TSV",
     .help = "tab-separated, header naming the columns 'file' and 'split'; files\n"
             "are relative to the manifest's folder"},
    {NULL, "--split", "NAME", .help = "the manifest rows to take (in manifest order)"},
    {NULL, NULL, "FILE...", .help = "more documents, after the manifest's, in this order"},
    {"-t", "--threads", "N", .help = "threads (default: OpenMP's)"},
};
static const cli_table table = {.column = 21, CLI_OPTIONS(options)};

const cli_command tokenize_corpus_command = {
    .name = "tokenize-corpus",
    .summary = "turn text files into a token shard for training",
    .synopsis = "msrnn tokenize-corpus -m TOKENIZER.gguf -o OUT.bin [--manifest TSV --split NAME] "
                "[FILE...] [-t N]",
    .tables = {&table},
};

static void usage(FILE *f) { cli_help(f, &tokenize_corpus_command); }

int cmd_tokenize_corpus(int argc, char **argv) {
    arg_set_command(&tokenize_corpus_command);
    const char *cmd = "tokenize-corpus", *model = NULL, *out = NULL, *manifest = NULL,
               *split = NULL;
    int n_threads = 0, rc = 0, only_files = 0;
    const char **extra = malloc((size_t)argc * sizeof *extra);
    size_t n_extra = 0;
    if (!extra) {
        fprintf(stderr, "msrnn %s: out of memory\n", cmd);
        return 1;
    }
    for (int i = 1; i < argc && !rc; i++) {
        const char *a = argv[i], *v;
        if (only_files || a[0] != '-' || !a[1]) {
            extra[n_extra++] = a;
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            free(extra);
            return 0;
        }
        if (!strcmp(a, "--")) {
            only_files = 1;
            continue;
        }
        if (strcmp(a, "-m") && strcmp(a, "--model") && strcmp(a, "-o") && strcmp(a, "--output") &&
            strcmp(a, "--manifest") && strcmp(a, "--split") && strcmp(a, "-t") &&
            strcmp(a, "--threads")) {
            arg_unknown(cmd, a);
            rc = 2;
            break;
        }
        if (!(v = arg_value(cmd, argc, argv, i++))) {
            rc = 2;
            break;
        }
        if (!strcmp(a, "-m") || !strcmp(a, "--model"))
            model = v;
        else if (!strcmp(a, "-o") || !strcmp(a, "--output"))
            out = v;
        else if (!strcmp(a, "--manifest"))
            manifest = v;
        else if (!strcmp(a, "--split"))
            split = v;
        else
            rc = arg_int(cmd, a, v, 1, 1024, &n_threads);
    }
    if (!rc && (!model || !out)) {
        fprintf(stderr, "msrnn %s: needs -m TOKENIZER.gguf and -o OUT.bin\n", cmd);
        rc = 2;
    }
    if (rc) {
        free(extra);
        return rc;
    }

    double t0 = now_seconds();
    gguf_file *g = NULL;
    spm_tokenizer *tok = NULL;
    char **paths = NULL;
    size_t n_paths = 0;
    corpus_stats stats;
    rc = corpus_inputs(cmd, manifest, split, extra, n_extra, &paths, &n_paths);
    free(extra);
    if (rc) return rc;
    const file_arg ins[] = {{"-m", model}, {"--manifest", manifest}}, outs[] = {{"-o", out}};
    if ((rc =
             files_check_corpus(cmd, ins, 2, paths, n_paths, n_paths - n_extra, "FILE", outs, 1))) {
        corpus_paths_free(paths, n_paths);
        return rc;
    }
    msrnn_status st = gguf_open(model, &g);
    if (st == MSRNN_OK) st = spm_tokenizer_from_gguf(g, &tok);
    if (st == MSRNN_OK)
        st = corpus_tokenize(tok, (const char *const *)paths, n_paths, n_threads, out, &stats);
    if (st != MSRNN_OK) {
        fprintf(stderr, "msrnn %s: %s\n", cmd, msrnn_last_error());
        rc = 1;
    }
    if (!rc) {
        double dt = now_seconds() - t0;
        fprintf(stderr,
                "msrnn %s: %llu files, %llu bytes, %llu tokens (%.4f tokens/byte), %.2f s -> %s\n",
                cmd, (unsigned long long)stats.n_docs, (unsigned long long)stats.n_bytes,
                (unsigned long long)stats.n_tokens,
                stats.n_bytes ? (double)stats.n_tokens / (double)stats.n_bytes : 0.0, dt, out);
    }
    corpus_paths_free(paths, n_paths);
    spm_tokenizer_free(tok);
    gguf_close(g);
    return rc;
}
