/* shard.h — token shards: the token ids of a tokenized corpus on disk, written atomically and
 * read through a read-only mapping.
 *
 * A token shard is a 64-byte header followed by token ids, little-endian:
 *   offset  0  magic "MSRNNTOK" (8 bytes)
 *           8  u32 version (2; version 1 is still read, see below)
 *          12  u32 bytes per id: 2 when vocab <= 65536, else 4
 *          16  u32 vocabulary size (every id is below it)
 *          20  u32 BOS id
 *          24  u64 number of tokens
 *          32  u64 number of documents (each one is preceded by BOS)
 *          40  u64 number of text bytes tokenized (for bits per byte)
 *          48  u64 vocabulary hash: spm_vocab_hash (text/tokenizer.h) of the tokenizer that made
 *              the ids, i.e. FNV-1a 64 (offset basis 0xcbf29ce484222325, prime 0x100000001b3)
 *              over, for each id in order, u32 LE piece length, the piece's bytes, u32 LE token
 *              type (0 read as 1; without token_type: 2 for the unknown id, 3 for BOS/EOS, else 1)
 *              and the u32 LE IEEE-754 bits of its score
 *          56  zero padding to 64
 *          64  ids (u16 or u32)
 * The file size is exactly 64 + n_tokens * bytes per id. Shards are written through
 * base/atomic_file.h (a temporary file in the destination's folder, fsync, rename).
 *
 * Version 1 (bytes 48..63 all zero, no hash) is still read: its vocabulary is known only by its
 * size, so only the size can be checked against a model (token_shard_vocab_hash says 0). Writers
 * always write version 2. `train` refuses a shard whose size or (version 2) hash differs from the
 * model's tokenizer (token_shard_check_vocab).
 *
 * Not here: streaming shards larger than the address space.
 */
#ifndef MSRNN_TRAIN_SHARD_H
#define MSRNN_TRAIN_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

#define TOKEN_SHARD_MAGIC "MSRNNTOK"
#define TOKEN_SHARD_VERSION 2u
#define TOKEN_SHARD_HEADER_BYTES 64u

typedef struct token_shard token_shard;

/* Map path and validate it: magic, version, bytes per id (2 or 4, as the vocabulary size asks),
 * vocabulary size in [1, 2^31), BOS below it, zero padding (bytes 56..63; 48..63 in version 1), the
 * file size equal to 64 + n_tokens * width exactly, n_tokens >= 2, n_docs <= n_tokens, and every id
 * below the vocabulary size (checked once here; the message names the first bad index).
 * MSRNN_ERR_IO if it cannot be opened or mapped, MSRNN_ERR_FORMAT for everything else; messages
 * name the file. */
msrnn_status token_shard_open(const char *path, token_shard **out);
void token_shard_close(token_shard *s);

const char *token_shard_path(const token_shard *s); /* for messages */
uint64_t token_shard_n_tokens(const token_shard *s);
uint32_t token_shard_vocab(const token_shard *s);
uint32_t token_shard_bos(const token_shard *s);
uint64_t token_shard_n_bytes(const token_shard *s); /* text bytes the tokens came from */
uint64_t token_shard_n_docs(const token_shard *s);
uint32_t token_shard_version(const token_shard *s); /* 1 or 2 */
/* 1 and *hash = the vocabulary hash for a version 2 shard; 0 for version 1 (unknown). */
int token_shard_vocab_hash(const token_shard *s, uint64_t *hash);

/* MSRNN_ERR_FORMAT, naming the shard and model_path and both values, unless the shard's
 * vocabulary size is n_vocab and (when both are known: version 2, has_hash) its hash is hash. */
msrnn_status token_shard_check_vocab(const token_shard *s, const char *model_path, uint32_t n_vocab,
                                     int has_hash, uint64_t hash);

/* ids [start, start + n) into dst; the caller guarantees start + n <= n_tokens. */
void token_shard_read(const token_shard *s, uint64_t start, int n, int32_t *dst);

/* Write n ids as a shard (width chosen from vocab; vocab_hash: spm_vocab_hash of the tokenizer
 * that made them), atomically. MSRNN_ERR_INVALID (naming the
 * first bad index) unless n >= 2, 1 <= vocab < 2^31, bos < vocab, n_docs <= n and every id is in
 * [0, vocab); MSRNN_ERR_IO if writing fails (nothing is left behind then). */
msrnn_status token_shard_write(const char *path, const int32_t *ids, uint64_t n, uint32_t vocab,
                               uint64_t vocab_hash, uint32_t bos, uint64_t n_docs,
                               uint64_t n_bytes);

/* The same in pieces, for ids that arrive in parts (a corpus, document by document): open with
 * the header's counts (checked as above), put the ids in order, commit. A bad id or a count of
 * ids other than n_tokens makes commit fail with MSRNN_ERR_INVALID (naming the first bad index);
 * every failure leaves nothing behind. commit and abort free the writer. */
typedef struct token_shard_writer token_shard_writer;

msrnn_status token_shard_writer_open(const char *path, uint32_t vocab, uint64_t vocab_hash,
                                     uint32_t bos, uint64_t n_tokens, uint64_t n_docs,
                                     uint64_t n_bytes, token_shard_writer **out);
void token_shard_writer_put(token_shard_writer *w, const int32_t *ids, size_t n);
msrnn_status token_shard_writer_commit(token_shard_writer *w);
void token_shard_writer_abort(token_shard_writer *w);

#endif
