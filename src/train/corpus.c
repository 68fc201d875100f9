/* corpus.c — corpus tokenization (see corpus.h): OpenMP over files, written in order. */
#include "train/corpus.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/read_file.h"
#include "train/shard.h"

typedef struct {
    int32_t *ids;
    size_t n_ids;
    uint64_t n_bytes;
    msrnn_status st;
    char *err; /* the failing thread's message (messages are thread-local) */
} document;

static msrnn_status encode_file(const spm_tokenizer *t, const char *path, document *doc) {
    char *text;
    size_t len;
    MSRNN_TRY(file_read_all(path, &text, &len));
    size_t cap = spm_max_ids(t, len);
    int32_t *ids = cap <= SIZE_MAX / sizeof *ids ? malloc(cap * sizeof *ids) : NULL;
    if (!ids) {
        free(text);
        return status_fail(MSRNN_ERR_NOMEM, "%s: out of memory for %zu ids", path, cap);
    }
    size_t n = 0;
    msrnn_status st = spm_encode(t, text, len, 1, ids, cap, &n);
    free(text);
    if (st != MSRNN_OK) { /* cannot happen with cap = spm_max_ids; kept for the message */
        char why[512];
        snprintf(why, sizeof why, "%s", msrnn_last_error());
        free(ids);
        return status_fail(st, "%s: %s", path, why);
    }
    int32_t *shrunk = realloc(ids, (n ? n : 1) * sizeof *ids); /* cap can be 3x what is used */
    doc->ids = shrunk ? shrunk : ids;
    doc->n_ids = n;
    doc->n_bytes = len;
    return MSRNN_OK;
}

msrnn_status corpus_tokenize(const spm_tokenizer *t, const char *const *paths, size_t n_paths,
                             int n_threads, const char *out, corpus_stats *stats) {
    int32_t probe[4];
    size_t n_probe = 0; /* the empty text with add_bos gives just BOS, if there is one */
    if (spm_encode(t, "", 0, 1, probe, 4, &n_probe) != MSRNN_OK || n_probe != 1)
        return status_fail(MSRNN_ERR_INVALID,
                           "%s: the tokenizer has no BOS token, which starts every document", out);
    int32_t bos = probe[0];
    uint32_t vocab = (uint32_t)spm_n_vocab(t);
    if (n_paths == 0) return status_fail(MSRNN_ERR_INVALID, "%s: no input files", out);
    if (n_paths > (size_t)INT32_MAX)
        return status_fail(MSRNN_ERR_INVALID, "%s: too many input files", out);
    document *docs = calloc(n_paths, sizeof *docs);
    if (!docs) return status_fail(MSRNN_ERR_NOMEM, "%s: out of memory", out);

    int nt = n_threads > 0 ? n_threads : omp_get_max_threads();
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
    for (int32_t i = 0; i < (int32_t)n_paths; i++) {
        document *doc = &docs[i];
        doc->st = encode_file(t, paths[i], doc);
        if (doc->st != MSRNN_OK) doc->err = strdup(msrnn_last_error());
    }

    msrnn_status st = MSRNN_OK;
    corpus_stats cs = {n_paths, 0, 0};
    for (size_t i = 0; i < n_paths && st == MSRNN_OK; i++) {
        if (docs[i].st != MSRNN_OK)
            st = status_fail(docs[i].st, "%s", docs[i].err ? docs[i].err : "out of memory");
        cs.n_bytes += docs[i].n_bytes;
        cs.n_tokens += docs[i].n_ids;
    }
    token_shard_writer *w = NULL;
    if (st == MSRNN_OK)
        st = token_shard_writer_open(out, vocab, spm_vocab_hash(t), (uint32_t)bos, cs.n_tokens,
                                     cs.n_docs, cs.n_bytes, &w);
    if (st == MSRNN_OK) {
        for (size_t i = 0; i < n_paths; i++) {
            token_shard_writer_put(w, docs[i].ids, docs[i].n_ids);
            free(docs[i].ids);
            docs[i].ids = NULL;
        }
        st = token_shard_writer_commit(w);
    }
    for (size_t i = 0; i < n_paths; i++) free(docs[i].ids), free(docs[i].err);
    free(docs);
    if (st == MSRNN_OK && stats) *stats = cs;
    return st;
}
