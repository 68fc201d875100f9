/* tokenizer.h — the SentencePiece-BPE tokenizer (GGUF `tokenizer.ggml.model = llama`).
 *
 * Encoding follows SentencePiece's BPE model exactly: the text (UTF-8) gets a leading "▁" when
 * add_space_prefix is set, every space becomes "▁" (U+2581), the text is split into Unicode
 * characters, and the adjacent pair whose concatenation is a vocabulary piece with the highest
 * score is merged repeatedly (ties: leftmost first); a character with no piece is emitted as its
 * UTF-8 bytes through the <0xNN> byte-fallback tokens. Decoding reverses it.
 */
#ifndef MSRNN_TEXT_TOKENIZER_H
#define MSRNN_TEXT_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "io/gguf.h"

/* Token types as GGUF stores them in tokenizer.ggml.token_type (llama.cpp's numbering). */
enum {
    TOKEN_TYPE_NORMAL = 1,
    TOKEN_TYPE_UNKNOWN = 2,
    TOKEN_TYPE_CONTROL = 3,
    TOKEN_TYPE_USER_DEFINED = 4,
    TOKEN_TYPE_UNUSED = 5,
    TOKEN_TYPE_BYTE = 6,
};

typedef struct spm_tokenizer spm_tokenizer;

typedef struct {
    int n_vocab;
    const char *const *pieces; /* n_vocab pieces, UTF-8, not necessarily NUL-terminated */
    const uint64_t *piece_lens;
    const float *scores;  /* n_vocab */
    const int32_t *types; /* n_vocab, TOKEN_TYPE_*; NULL: all NORMAL */
    int bos_id, eos_id, unk_id;
    int add_space_prefix; /* 1 for Llama/SentencePiece default */
    int rstrip_special;   /* spm_encode_special drops the white space after most special tokens
                             (llama.cpp does for models named phi-3 / phi3) */
} spm_vocab;

/* Build lookup structures (copies everything it needs). Validates ids and piece bytes. */
msrnn_status spm_tokenizer_build(const spm_vocab *v, spm_tokenizer **out);
void spm_tokenizer_free(spm_tokenizer *t);

/* Encode; n_ids never exceeds spm_max_ids(t, len), so cap = spm_max_ids(t, len) always suffices.
 * Each malformed UTF-8 byte becomes U+FFFD first (as sentencepiece does), then that character's
 * piece or its bytes through byte fallback; never reads past len. Returns MSRNN_ERR_INVALID if cap
 * is too small (with *n_out = the size needed). ids may be NULL with cap 0 to ask for the size. */
msrnn_status spm_encode(const spm_tokenizer *t, const char *text, size_t len, int add_bos,
                        int32_t *ids, size_t cap, size_t *n_out);

/* spm_encode as llama.cpp's llama_tokenize(parse_special = true): the text is first split at every
 * occurrence of a special token's piece (CONTROL, USER_DEFINED and UNKNOWN tokens, e.g. "<s>",
 * "<|im_start|>", and, as llama.cpp overrides a file's types, any token whose piece is one of the
 * end-of-turn texts "<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>" …;
 * longest first), each becoming that token, and the pieces of text between are encoded on their
 * own, with the leading "▁" (add_space_prefix) only on a piece that starts the text or follows a
 * special token. With rstrip_special (llama.cpp's rule for Phi-3), the white space after a special
 * token other than <unk>, <s> and <|endoftext|> is dropped. n_ids never exceeds
 * spm_max_ids_special(t, len). */
msrnn_status spm_encode_special(const spm_tokenizer *t, const char *text, size_t len, int add_bos,
                                int32_t *ids, size_t cap, size_t *n_out);
size_t spm_max_ids_special(const spm_tokenizer *t, size_t len);

/* Bytes of token id as text: "▁" becomes ' ', <0xNN> becomes that byte, control tokens give "";
 * the leading space of a piece is dropped when prev is -1 or BOS and add_space_prefix is set.
 * Returns the full length; writes at most cap bytes. */
size_t spm_token_to_text(const spm_tokenizer *t, int32_t prev, int32_t id, char *buf, size_t cap);

/* Decode a whole sequence into buf (same rules); returns the full length. */
size_t spm_decode(const spm_tokenizer *t, const int32_t *ids, size_t n, char *buf, size_t cap);

int spm_n_vocab(const spm_tokenizer *t);

/* The identity of the vocabulary: FNV-1a 64 (offset basis 0xcbf29ce484222325, prime
 * 0x100000001b3) over, for each id 0..n_vocab-1 in order, the piece's length as u32 little-endian,
 * its bytes, its type as u32 little-endian and the IEEE-754 bits of its score as u32
 * little-endian. The type is the one the tokenizer uses: token_type's value with 0 read as 1
 * (NORMAL); without token_type, 2 (UNKNOWN) for the unknown id, 3 (CONTROL) for BOS and EOS, else
 * 1. Nothing else (BOS/EOS ids, add_space_prefix) enters it. Token shards record it (train/shard.h)
 * so that ids are never read under another vocabulary. */
uint64_t spm_vocab_hash(const spm_tokenizer *t);

/* An upper bound on the ids spm_encode gives for len bytes (BOS included): len + 2 when "▁" and
 * U+FFFD are pieces and user-defined pieces are whole characters (Llama 2), else 3 * len + 4 (a
 * space or malformed byte can become three byte tokens). */
size_t spm_max_ids(const spm_tokenizer *t, size_t len);

/* Build a tokenizer from a GGUF file's tokenizer.ggml.* keys (tokenizer.ggml.model must be "llama";
 * tokens, scores and token_type arrays of one length; bos/eos/unknown ids in range;
 * add_space_prefix defaults to true). */
msrnn_status spm_tokenizer_from_gguf(const gguf_file *f, spm_tokenizer **out);

#endif
