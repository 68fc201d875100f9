/* data.h — training data: token shards on disk, the shuffling window loader, and tokenizing a
 * corpus into a shard.
 *
 * A token shard is a 64-byte header followed by token ids, little-endian:
 *   offset  0  magic "MSRNNTOK" (8 bytes)
 *           8  u32 version (1)
 *          12  u32 bytes per id: 2 when vocab <= 65536, else 4
 *          16  u32 vocabulary size (every id is below it)
 *          20  u32 BOS id
 *          24  u64 number of tokens
 *          32  u64 number of documents (each one is preceded by BOS)
 *          40  u64 number of text bytes tokenized (for bits per byte)
 *          48  zero padding to 64
 *          64  ids (u16 or u32)
 * The file size is exactly 64 + n_tokens * bytes per id. Shards are written atomically (a temporary
 * file in the destination's folder, fsync, rename) and read through a read-only mapping.
 *
 * The loader cuts a shard into training windows of T + 1 consecutive tokens starting at multiples
 * of T (window i = tokens [i*T, i*T + T + 1): T inputs and their T next-token targets), and visits
 * every window once per epoch in an order shuffled by Fisher–Yates. The permutation of epoch e is a
 * pure function of (seed, e): a splitmix64 generator started at
 *   state = mix64(seed ^ mix64(e + 0x632BE59BD9B4E019))
 * (mix64 = splitmix64's output function) draws j uniform in [0, i] (rejection sampling of x %
 * (i+1)) for i = n-1 down to 1 and swaps entries i and j of the identity. So a loader's whole
 * future is given by (seed, epoch, cursor), which is what a checkpoint stores.
 *
 * Not here: document boundaries inside windows (windows cross them; BOS marks the start of each
 * document), sampling weights, or streaming shards larger than the address space.
 */
#ifndef MSRNN_TRAIN_DATA_H
#define MSRNN_TRAIN_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "text/tokenizer.h"

#define TOKEN_SHARD_MAGIC "MSRNNTOK"
#define TOKEN_SHARD_VERSION 1u
#define TOKEN_SHARD_HEADER_BYTES 64u

/* ---- token shards ---------------------------------------------------------------------------- */

typedef struct token_shard token_shard;

/* Map path and validate it: magic, version, bytes per id (2 or 4, as the vocabulary size asks),
 * vocabulary size in [1, 2^31), BOS below it, zero padding, the file size equal to 64 + n_tokens *
 * width exactly, n_tokens >= 2, n_docs <= n_tokens, and every id below the vocabulary size (checked
 * once here; the message names the first bad index). MSRNN_ERR_IO if it cannot be opened or
 * mapped, MSRNN_ERR_FORMAT for everything else; messages name the file. */
msrnn_status token_shard_open(const char *path, token_shard **out);
void token_shard_close(token_shard *s);

uint64_t token_shard_n_tokens(const token_shard *s);
uint32_t token_shard_vocab(const token_shard *s);
uint32_t token_shard_bos(const token_shard *s);
uint64_t token_shard_n_bytes(const token_shard *s); /* text bytes the tokens came from */
uint64_t token_shard_n_docs(const token_shard *s);

/* ids [start, start + n) into dst; the caller guarantees start + n <= n_tokens. */
void token_shard_read(const token_shard *s, uint64_t start, int n, int32_t *dst);

/* Write n ids as a shard (width chosen from vocab), atomically. MSRNN_ERR_INVALID (naming the
 * first bad index) unless n >= 2, 1 <= vocab < 2^31, bos < vocab, n_docs <= n and every id is in
 * [0, vocab); MSRNN_ERR_IO if writing fails (nothing is left behind then). */
msrnn_status token_shard_write(const char *path, const int32_t *ids, uint64_t n, uint32_t vocab,
                               uint32_t bos, uint64_t n_docs, uint64_t n_bytes);

/* ---- the window loader ----------------------------------------------------------------------- */

typedef struct {
    uint64_t seed, epoch, cursor; /* cursor: windows of this epoch already handed out */
} loader_state;

typedef struct data_loader data_loader;

/* A loader over s (which must outlive it; the loader does not own it) with windows of T + 1
 * tokens: n_windows = (n_tokens - 1) / T. Starts at epoch 0, cursor 0. MSRNN_ERR_INVALID if T < 1
 * or the shard has fewer than T + 1 tokens. The permutation buffer is allocated here. */
msrnn_status data_loader_open(const token_shard *s, int T, uint64_t seed, data_loader **out);
void data_loader_free(data_loader *d);

uint64_t data_loader_n_windows(const data_loader *d);

/* The next B windows, row-major B x (T + 1) into tokens; moves on to the next epoch (a fresh
 * permutation) whenever the current one is used up, also in the middle of a batch. */
void data_loader_next(data_loader *d, int B, int32_t *tokens);

loader_state data_loader_get_state(const data_loader *d);
/* Resume at st: the windows that follow equal those the loader that gave st would have given next.
 * st.seed replaces the loader's seed. MSRNN_ERR_INVALID if st.cursor > n_windows. */
msrnn_status data_loader_set_state(data_loader *d, loader_state st);

/* Window i (< n_windows) in file order, unshuffled: tokens [i*T, i*T + T + 1) (for validation). */
void data_loader_window(const data_loader *d, uint64_t i, int32_t *tokens);

/* ---- corpora --------------------------------------------------------------------------------- */

/* The files of one split of a manifest: a tab-separated file whose header row names (at least) the
 * columns `file` and `split`; relative paths are taken from the manifest's folder. In manifest
 * order, into *paths (n entries, free with corpus_paths_free). MSRNN_ERR_IO if the manifest cannot
 * be read, MSRNN_ERR_FORMAT if a column is missing or a row is short, MSRNN_ERR_INVALID if no row
 * has that split (the message lists the splits there are). */
msrnn_status corpus_manifest_files(const char *manifest, const char *split, char ***paths,
                                   size_t *n);
void corpus_paths_free(char **paths, size_t n);

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
