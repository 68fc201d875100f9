/* bpe_train.h — learn a SentencePiece-style BPE vocabulary from text (`msrnn tokenizer-train`).
 *
 * The vocabulary is meant for msrnn's own tokenizer (src/text/tokenizer.h, GGUF model "llama"):
 * ids 0..2 are <unk>, <s>, </s>; ids 3..258 the byte-fallback pieces <0x00>..<0xFF>; then the
 * merged pieces in the order they were learned (score -rank: 0, -1, -2, ...); then the characters
 * of the alphabet, most frequent first, with scores below every merge. Encoding a text with it
 * (merge the adjacent pair whose concatenation is the highest-scoring piece, ties leftmost) gives
 * what applying the learned merges in order gives (tests/test_tokenizer_train.py checks it on
 * whole books; the two could part only where one piece is the join of two different pairs of
 * pieces, as with SentencePiece's own BPE vocabularies).
 *
 * Training in two steps, so that the text is read once and the alphabet is known before a
 * vocabulary size is asked for: bpe_count_words (split the text into words and count them, choose
 * the alphabet), then bpe_learn (BPE over the unique words). bpe_train.c's header comment states
 * the exact rules. Nothing here prints or exits.
 */
#ifndef MSRNN_TEXT_BPE_TRAIN_H
#define MSRNN_TEXT_BPE_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

#define BPE_N_RESERVED 259 /* <unk>, <s>, </s> and the 256 byte pieces */

typedef struct {
    double character_coverage; /* the alphabet covers this share of character occurrences */
    int split_digits;          /* 1: the digits 0-9 never merge (each is its own piece) */
    int whitespace_pieces;     /* 1: pieces made only of "▁" (runs of spaces) are allowed */
    int max_piece_chars;       /* no piece longer than this many characters */
    uint64_t max_chars;        /* use at most this many characters of text in all; 0: all */
    int n_threads;             /* for counting words; <= 0: OpenMP's default */
} bpe_train_params;

/* character_coverage 0.9995, split_digits 1, whitespace_pieces 0, max_piece_chars 16, all text,
 * all threads (SentencePiece's defaults where it has them). */
bpe_train_params bpe_train_default_params(void);

typedef struct {
    const char *text; /* UTF-8 (malformed bytes are read as U+FFFD, as the tokenizer does) */
    size_t len;
} bpe_text;

typedef struct {
    uint64_t n_texts;        /* texts with at least one character (after max_chars) */
    uint64_t n_chars;        /* characters counted, the "▁" prefixed to each text included */
    uint64_t n_bytes;        /* bytes of text used */
    uint64_t n_words;        /* word occurrences (see bpe_train.c) */
    uint64_t n_unique_words; /* distinct words */
    int n_distinct_chars;    /* distinct characters in the text */
    int n_alphabet;          /* characters that become pieces (the rest use byte fallback) */
    double coverage;         /* share of character occurrences the alphabet covers */
} bpe_stats;

typedef struct bpe_counts bpe_counts;

/* Split the texts into words, count them and choose the alphabet. Each text is one document:
 * it gets the leading "▁" (as the tokenizer's add_space_prefix). MSRNN_ERR_INVALID for bad
 * parameters or when the texts hold no characters at all. */
msrnn_status bpe_count_words(const bpe_train_params *p, const bpe_text *texts, size_t n_texts,
                             bpe_counts **out);
void bpe_counts_free(bpe_counts *c);
const bpe_stats *bpe_counts_stats(const bpe_counts *c);
/* The smallest vocabulary these counts allow: BPE_N_RESERVED + the alphabet (no merges). */
int bpe_min_vocab(const bpe_counts *c);

typedef struct {
    int n_vocab;
    char **pieces;  /* n_vocab NUL-terminated UTF-8 strings (no piece contains a NUL) */
    uint64_t *lens; /* bytes of each piece */
    float *scores;  /* n_vocab */
    int32_t *types; /* n_vocab, TOKEN_TYPE_* (tokenizer.h) */
    int n_merges;   /* pieces BPE_N_RESERVED .. BPE_N_RESERVED + n_merges - 1 */
    int32_t *merge_left, *merge_right; /* n_merges: the ids of the pair each merge joined */
    int n_alphabet;                    /* the characters, after the merges */
    int max_merges; /* when bpe_learn ran out of pairs: the merges there were, else -1 */
} bpe_vocab;

/* Learn merges until the vocabulary has vocab_size pieces. MSRNN_ERR_INVALID if vocab_size is
 * below bpe_min_vocab, or above what the text allows (out->max_merges then says how many merges
 * there were: out is otherwise empty). The result depends only on the counts and vocab_size. */
msrnn_status bpe_learn(const bpe_counts *c, int vocab_size, bpe_vocab *out);
void bpe_vocab_free(bpe_vocab *v);

/* Write a vocabulary-only GGUF (general.name and the tokenizer.ggml.* keys llama.cpp reads for a
 * SentencePiece model), atomically. */
msrnn_status bpe_vocab_write_gguf(const bpe_vocab *v, const char *name, const char *path);

#endif
