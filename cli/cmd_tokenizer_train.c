/* cmd_tokenizer_train.c — `msrnn tokenizer-train`: learn a SentencePiece-style BPE vocabulary
 * from text files and write it as a vocabulary-only GGUF (src/text/bpe_train.h has the layout,
 * bpe_train.c the rules). `msrnn init-model --vocab-from OUT.gguf` makes a model of it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "common.h"
#include "text/bpe_train.h"
#include "train/manifest.h"

static const cli_option options[] = {
    {NULL, "--vocab", "N",
     .help = "pieces in all: 3 special + 256 byte + the characters + the merges"},
    {"-o", "--output", "FILE", .help = "the vocabulary-only GGUF to write", .complete = "*.gguf"},
    {NULL, "--manifest", "TSV",
     .help = "tab-separated, header naming the columns 'file' and 'split';\n"
             "files are relative to the manifest's folder"},
    {NULL, "--split", "NAME", .help = "the manifest rows to take"},
    {NULL, NULL, "FILE...", .help = "more texts, after the manifest's; each file is one document"},
    {NULL, "--max-chars", "N", .help = "use at most N characters of text in all (files in order)"},
    {NULL, "--coverage", "X",
     .help = "the alphabet covers this share of character occurrences (0.9995);\n"
             "rarer characters are written as bytes (<0xNN>)"},
    {NULL, "--no-split-digits", NULL,
     .help = "let digits merge (by default each digit is its own piece)"},
    {NULL, "--whitespace-pieces", NULL,
     .help = "also learn pieces made only of '▁' (runs of spaces)"},
    {NULL, "--merges", "FILE",
     .help = "also write the merges in order, one 'LEFT RIGHT' line each"},
    {NULL, "--name", "NAME", .help = "general.name (msrnn-bpe-N)"},
    {"-t", "--threads", "N", .help = "threads for counting words (default: all)"},
};
static const cli_table table = {.column = 23, CLI_OPTIONS(options)};

const cli_command tokenizer_train_command = {
    .name = "tokenizer-train",
    .summary = "learn a SentencePiece-style BPE vocabulary from text",
    .synopsis = "msrnn tokenizer-train --vocab N -o OUT.gguf [options] [--manifest TSV --split "
                "NAME] [FILE...]",
    .tables = {&table},
};

static void usage(FILE *f) { cli_help(f, &tokenizer_train_command); }

static void free_texts(bpe_text *texts, size_t n) {
    for (size_t i = 0; i < n; i++) free((char *)texts[i].text);
    free(texts);
}

/* One "LEFT RIGHT" line per merge (no piece holds a space, a tab or a newline: they are "▁" or
 * never merge). */
static int write_merges(const char *cmd, const bpe_vocab *v, const char *path) {
    atomic_file *af;
    if (output_open(cmd, path, &af)) return 1;
    FILE *f = atomic_file_stream(af);
    for (int k = 0; k < v->n_merges; k++)
        fprintf(f, "%s %s\n", v->pieces[v->merge_left[k]], v->pieces[v->merge_right[k]]);
    return output_commit(cmd, af);
}

int cmd_tokenizer_train(int argc, char **argv) {
    arg_set_command(&tokenizer_train_command);
    const char *cmd = "tokenizer-train", *out = NULL, *manifest = NULL, *split = NULL, *name = NULL,
               *merges = NULL;
    bpe_train_params p = bpe_train_default_params();
    int vocab = 0, rc = 0, n_files = 0;
    const char **files = calloc((size_t)argc, sizeof *files);
    if (!files) {
        fprintf(stderr, "msrnn %s: out of memory\n", cmd);
        return 1;
    }
    for (int i = 1; i < argc && !rc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            free(files);
            return 0;
        }
        if (a[0] != '-' || !a[1]) {
            files[n_files++] = a;
            continue;
        }
        if (!strcmp(a, "--no-split-digits")) {
            p.split_digits = 0;
            continue;
        }
        if (!strcmp(a, "--whitespace-pieces")) {
            p.whitespace_pieces = 1;
            continue;
        }
        if (strcmp(a, "--vocab") && strcmp(a, "-o") && strcmp(a, "--output") &&
            strcmp(a, "--manifest") && strcmp(a, "--split") && strcmp(a, "--max-chars") &&
            strcmp(a, "--coverage") && strcmp(a, "--name") && strcmp(a, "--merges") &&
            strcmp(a, "-t") && strcmp(a, "--threads")) {
            arg_unknown(cmd, a);
            rc = 2;
            break;
        }
        if (!(v = arg_value(cmd, argc, argv, i++))) {
            rc = 2;
            break;
        }
        if (!strcmp(a, "--vocab"))
            rc = arg_int(cmd, a, v, BPE_N_RESERVED + 1, 1 << 24, &vocab);
        else if (!strcmp(a, "-o") || !strcmp(a, "--output"))
            out = v;
        else if (!strcmp(a, "--manifest"))
            manifest = v;
        else if (!strcmp(a, "--split"))
            split = v;
        else if (!strcmp(a, "--max-chars")) {
            rc = arg_u64(cmd, a, v, &p.max_chars);
            if (!rc && p.max_chars == 0) {
                fprintf(stderr, "msrnn %s: --max-chars expects a positive integer, got '%s'\n", cmd,
                        v);
                rc = 2;
            }
        } else if (!strcmp(a, "--coverage")) {
            float x;
            rc = arg_float(cmd, a, v, 1e-6, 1, &x);
            p.character_coverage = strtod(v, NULL); /* the exact double, not the float */
        } else if (!strcmp(a, "--name"))
            name = v;
        else if (!strcmp(a, "--merges"))
            merges = v;
        else
            rc = arg_int(cmd, a, v, 1, 1024, &p.n_threads);
    }
    if (!rc && (!vocab || !out)) {
        fprintf(stderr, "msrnn %s: needs --vocab N and -o OUT.gguf\n", cmd);
        rc = 2;
    }
    if (rc) {
        free(files);
        return rc;
    }

    /* The texts: the manifest's files, then the command line's, each read whole. */
    double t0 = now_seconds();
    char **listed = NULL;
    size_t n_texts = 0;
    rc = corpus_inputs(cmd, manifest, split, (const char *const *)files, (size_t)n_files, &listed,
                       &n_texts);
    free(files);
    if (rc) return rc;
    const file_arg ins[] = {{"--manifest", manifest}}, outs[] = {{"-o", out}, {"--merges", merges}};
    if ((rc = files_check_corpus(cmd, ins, 1, listed, n_texts, n_texts - (size_t)n_files, "FILE",
                                 outs, 2))) {
        corpus_paths_free(listed, n_texts);
        return rc;
    }
    bpe_text *texts = calloc(n_texts, sizeof *texts);
    uint64_t max_bytes = p.max_chars && p.max_chars < UINT64_MAX / 4 ? 4 * p.max_chars : UINT64_MAX;
    uint64_t read_bytes = 0; /* a character is at most 4 bytes */
    rc = texts ? 0 : 1;
    for (size_t k = 0; k < n_texts && !rc; k++) {
        const char *path = listed[k];
        if (read_bytes >= max_bytes) { /* enough text for --max-chars: only check it opens */
            FILE *f = fopen(path, "rb");
            if (!f) {
                fprintf(stderr, "msrnn %s: cannot open '%s': %s\n", cmd, path, strerror(errno));
                rc = 1;
            } else {
                fclose(f);
            }
            continue;
        }
        char *s = read_text_file(cmd, path, &texts[k].len);
        if (!s) {
            rc = 1;
            break;
        }
        texts[k].text = s;
        read_bytes += texts[k].len;
    }
    corpus_paths_free(listed, n_texts);
    if (rc) {
        if (!texts) fprintf(stderr, "msrnn %s: out of memory\n", cmd);
        free_texts(texts, n_texts);
        return 1;
    }
    double t_read = now_seconds();

    bpe_counts *counts = NULL;
    bpe_vocab v = {0};
    msrnn_status st = bpe_count_words(&p, texts, n_texts, &counts);
    free_texts(texts, n_texts);
    if (st != MSRNN_OK) {
        fprintf(stderr, "msrnn %s: %s\n", cmd, msrnn_last_error());
        return 1;
    }
    double t_count = now_seconds();
    const bpe_stats *s = bpe_counts_stats(counts);
    fprintf(stderr,
            "msrnn %s: %llu texts, %llu bytes, %llu characters, %llu words (%llu distinct); "
            "alphabet %d of %d characters (coverage %.4f%%)\n",
            cmd, (unsigned long long)s->n_texts, (unsigned long long)s->n_bytes,
            (unsigned long long)s->n_chars, (unsigned long long)s->n_words,
            (unsigned long long)s->n_unique_words, s->n_alphabet, s->n_distinct_chars,
            100.0 * s->coverage);
    if (vocab < bpe_min_vocab(counts)) {
        fprintf(stderr,
                "msrnn %s: --vocab %d is too small: %d special and byte pieces + %d characters "
                "need at least %d (or lower --coverage)\n",
                cmd, vocab, BPE_N_RESERVED, s->n_alphabet, bpe_min_vocab(counts));
        bpe_counts_free(counts);
        return 1;
    }
    st = bpe_learn(counts, vocab, &v);
    if (st != MSRNN_OK) {
        if (v.max_merges >= 0)
            fprintf(stderr,
                    "msrnn %s: --vocab %d is too large for this text: it allows only %d merges, "
                    "so at most --vocab %d\n",
                    cmd, vocab, v.max_merges, bpe_min_vocab(counts) + v.max_merges);
        else
            fprintf(stderr, "msrnn %s: %s\n", cmd, msrnn_last_error());
        bpe_counts_free(counts);
        return 1;
    }
    double t_learn = now_seconds();
    char default_name[64];
    snprintf(default_name, sizeof default_name, "msrnn-bpe-%d", vocab);
    if (merges && write_merges(cmd, &v, merges)) {
        rc = 1;
    } else if (bpe_vocab_write_gguf(&v, name ? name : default_name, out) != MSRNN_OK) {
        fprintf(stderr, "msrnn %s: %s\n", cmd, msrnn_last_error());
        rc = 1;
    } else {
        fprintf(stderr,
                "msrnn %s: wrote %s: %d pieces (%d merges, %d characters) in %.2f s "
                "(read %.2f, count %.2f, merges %.2f)\n",
                cmd, out, v.n_vocab, v.n_merges, v.n_alphabet, now_seconds() - t0, t_read - t0,
                t_count - t_read, t_learn - t_count);
    }
    bpe_vocab_free(&v);
    bpe_counts_free(counts);
    return rc;
}
