/* corpus.h — tokenizing a corpus into a token shard (`msrnn tokenize-corpus`). */
#ifndef MSRNN_TRAIN_CORPUS_H
#define MSRNN_TRAIN_CORPUS_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "text/tokenizer.h"

typedef struct {
    uint64_t n_docs, n_bytes, n_tokens;
} corpus_stats;

/* Tokenize each file as one document (the whole file as one string, BOS first: spm_encode with
 * add_bos) with up to n_threads OpenMP threads over files (n_threads <= 0: OpenMP's default), and
 * write the documents in the given order as a shard at out. The tokenizer must have a BOS token.
 * On failure (a file that cannot be read, fewer than 2 tokens in all...) nothing is written and the
 * message names the first failing file in order. stats may be NULL. */
msrnn_status corpus_tokenize(const spm_tokenizer *t, const char *const *paths, size_t n_paths,
                             int n_threads, const char *out, corpus_stats *stats);

#endif
