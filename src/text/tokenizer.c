/* tokenizer.c — SentencePiece BPE encoding and decoding, id-for-id equal to sentencepiece 0.1.97.
 *
 * What sentencepiece does for a BPE model with the "identity" normalizer, and this file reproduces:
 *  1. Normalize (normalizer.cc): every malformed UTF-8 byte becomes U+FFFD (one byte consumed at a
 *     time), every ' ' becomes "▁" (U+2581), and a "▁" is prepended when add_space_prefix
 *     (add_dummy_prefix) is set. An empty text gives no tokens. Runs of spaces are kept
 *     (remove_extra_whitespaces is off in Llama-style models).
 *  2. Split (bpe_model.cc): at each position the longest user-defined piece, which is frozen (never
 *     merged), else one UTF-8 character.
 *  3. Merge: repeatedly join the adjacent pair whose concatenation is a piece (normal, user-defined
 *     or unused) of highest score; equal scores go to the leftmost pair. A priority queue with lazy
 *     deletion over a doubly linked list of symbols: O(n log n).
 *  4. Emit: an unused piece is split back into the two symbols that last formed it (recursively); a
 *     symbol that is no piece is unknown: its bytes become <0xNN> tokens when the vocabulary has
 * byte pieces (byte fallback), else each run of unknown symbols becomes one <unk>.
 *
 * Speed: an ASCII byte that no multi-byte piece contains (newline, digits in split-digit models...)
 * can never be merged with a neighbour, so the text is merged one segment between such bytes at a
 * time. The result is the same (merges in different segments never interact) and the queue stays
 * small and in cache.
 *
 * Not done here: normalization rules (NFKC charsmaps) and remove_extra_whitespaces; GGUF does not
 * carry them, and Llama-style models use neither.
 */
#include "text/tokenizer.h"

#include <stdlib.h>
#include <string.h>

#define SPM_MAX_VOCAB (1 << 24)
#define SPM_MAX_PIECE 65536
#define SPM_MAX_TEXT ((size_t)1 << 30) /* normalized text stays below 4 GiB (uint32 offsets) */

static const char kSpace[3] = {'\xe2', '\x96', '\x81'};       /* "▁" U+2581 */
static const char kReplacement[3] = {'\xef', '\xbf', '\xbd'}; /* U+FFFD */
static const char kUnkSurface[] = " \xe2\x81\x87 "; /* " ⁇ ", sentencepiece's <unk> text */

/* ---- piece → id hash table (open addressing, first occurrence of a string wins) ---------------
 */

typedef struct {
    int32_t id; /* -1: empty slot */
    uint32_t tag;
} slot;

typedef struct {
    slot *slots;
    uint32_t mask;
} piece_table;

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

struct spm_tokenizer {
    int n_vocab;
    char *blob;        /* all pieces, concatenated */
    uint32_t *offs;    /* n_vocab + 1 offsets into blob */
    float *scores;     /* n_vocab */
    uint8_t *types;    /* n_vocab, TOKEN_TYPE_* */
    int16_t *byte_val; /* n_vocab: the byte of a <0xNN> piece, else -1 */
    int32_t *resolved; /* n_vocab: for a mergeable id, the id sentencepiece's PieceToId gives its
                          string (a reserved piece with the same string wins) */
    piece_table mergeable;  /* NORMAL, USER_DEFINED, UNUSED (sentencepiece's pieces_) */
    piece_table reserved;   /* CONTROL, UNKNOWN, BYTE (sentencepiece's reserved_id_map_) */
    int32_t byte_id[256];   /* PieceToId("<0xNN>"), -1 when unknown */
    uint8_t isolating[128]; /* ASCII bytes no mergeable piece longer than one byte contains */
    int byte_fallback;
    int has_unused;
    int single_space, single_replacement; /* "▁" and U+FFFD encode as one token */
    int userdef_whole_chars;              /* every user-defined piece is well-formed UTF-8 */
    uint32_t max_piece_len;
    /* user-defined pieces: a byte trie, nodes in a hash keyed by (node, byte) */
    uint64_t *trie_keys; /* (node << 8 | byte) + 1; 0: empty */
    int32_t *trie_child;
    uint32_t trie_mask;
    uint32_t *trie_term; /* per node: length of the piece ending there, 0: none */
    int32_t trie_nodes;
    int bos_id, eos_id, unk_id;
    int add_space_prefix;
    /* spm_encode_special: the special tokens, longest piece first (ties: lower id first), and
     * which of them drop the white space after them */
    int32_t *special;
    uint8_t *special_rstrip;
    int n_special;
};

static const char *piece_ptr(const spm_tokenizer *t, int32_t id) { return t->blob + t->offs[id]; }
static uint32_t piece_len(const spm_tokenizer *t, int32_t id) {
    return t->offs[id + 1] - t->offs[id];
}

static int32_t table_find(const spm_tokenizer *t, const piece_table *pt, const char *s, size_t n) {
    if (n == 0 || n > t->max_piece_len) return -1;
    uint64_t h = hash_bytes(s, n);
    uint32_t tag = (uint32_t)(h >> 32);
    for (uint32_t i = (uint32_t)h & pt->mask;; i = (i + 1) & pt->mask) {
        const slot *e = &pt->slots[i];
        if (e->id < 0) return -1;
        if (e->tag == tag && piece_len(t, e->id) == n && memcmp(piece_ptr(t, e->id), s, n) == 0)
            return e->id;
    }
}

/* Insert id unless its string is already there. */
static void table_insert(const spm_tokenizer *t, piece_table *pt, int32_t id) {
    const char *s = piece_ptr(t, id);
    uint32_t n = piece_len(t, id);
    uint64_t h = hash_bytes(s, n);
    uint32_t tag = (uint32_t)(h >> 32);
    for (uint32_t i = (uint32_t)h & pt->mask;; i = (i + 1) & pt->mask) {
        slot *e = &pt->slots[i];
        if (e->id < 0) {
            e->id = id;
            e->tag = tag;
            return;
        }
        if (e->tag == tag && piece_len(t, e->id) == n && memcmp(piece_ptr(t, e->id), s, n) == 0)
            return;
    }
}

static msrnn_status table_init(piece_table *pt, size_t n) {
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    pt->slots = malloc(cap * sizeof *pt->slots);
    if (!pt->slots) return status_fail(MSRNN_ERR_NOMEM, "tokenizer: out of memory (piece table)");
    for (size_t i = 0; i < cap; i++) pt->slots[i].id = -1;
    pt->mask = (uint32_t)(cap - 1);
    return MSRNN_OK;
}

static int is_mergeable_type(int type) {
    return type == TOKEN_TYPE_NORMAL || type == TOKEN_TYPE_USER_DEFINED ||
           type == TOKEN_TYPE_UNUSED;
}

/* sentencepiece's ModelInterface::PieceToId without the <unk> default: -1 when s is no piece. */
static int32_t piece_to_id(const spm_tokenizer *t, const char *s, size_t n) {
    int32_t id = table_find(t, &t->reserved, s, n);
    return id >= 0 ? id : table_find(t, &t->mergeable, s, n);
}

/* ---- user-defined pieces: a trie for the longest match ----------------------------------------
 */

static int32_t trie_step(const spm_tokenizer *t, int32_t node, uint8_t b, int create,
                         spm_tokenizer *mt) {
    uint64_t key = (((uint64_t)node << 8) | b) + 1;
    uint64_t h = key * 0x9e3779b97f4a7c15ull;
    for (uint32_t i = (uint32_t)(h >> 32) & t->trie_mask;; i = (i + 1) & t->trie_mask) {
        if (t->trie_keys[i] == key) return t->trie_child[i];
        if (t->trie_keys[i] == 0) {
            if (!create) return -1;
            mt->trie_keys[i] = key;
            mt->trie_child[i] = mt->trie_nodes++;
            return mt->trie_child[i];
        }
    }
}

/* Length of the longest user-defined piece that is a prefix of s[0..n), 0 if none. */
static uint32_t trie_longest(const spm_tokenizer *t, const char *s, size_t n) {
    uint32_t best = 0;
    int32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        node = trie_step(t, node, (uint8_t)s[i], 0, NULL);
        if (node < 0) break;
        if (t->trie_term[node]) best = t->trie_term[node];
    }
    return best;
}

static msrnn_status build_trie(spm_tokenizer *t) {
    size_t total = 1;
    for (int i = 0; i < t->n_vocab; i++)
        if (t->types[i] == TOKEN_TYPE_USER_DEFINED) total += piece_len(t, i);
    if (total == 1) return MSRNN_OK;
    size_t cap = 16;
    while (cap < 2 * total) cap *= 2;
    t->trie_keys = calloc(cap, sizeof *t->trie_keys);
    t->trie_child = malloc(cap * sizeof *t->trie_child);
    t->trie_term = calloc(total, sizeof *t->trie_term);
    if (!t->trie_keys || !t->trie_child || !t->trie_term)
        return status_fail(MSRNN_ERR_NOMEM, "tokenizer: out of memory (user-defined pieces)");
    t->trie_mask = (uint32_t)(cap - 1);
    t->trie_nodes = 1;
    for (int i = 0; i < t->n_vocab; i++) {
        if (t->types[i] != TOKEN_TYPE_USER_DEFINED) continue;
        const char *s = piece_ptr(t, i);
        uint32_t n = piece_len(t, i);
        if (n == 0) continue;
        int32_t node = 0;
        for (uint32_t k = 0; k < n; k++) node = trie_step(t, node, (uint8_t)s[k], 1, t);
        t->trie_term[node] = n;
    }
    return MSRNN_OK;
}

static size_t utf8_valid_len(const uint8_t *s, size_t n);

/* ---- building ---------------------------------------------------------------------------------
 */

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* The byte of a "<0xNN>" piece, or -1. */
static int parse_byte_piece(const char *s, uint64_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int hi = hex_digit(s[3]), lo = hex_digit(s[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

static int is_unknown_id(const spm_tokenizer *t, int32_t id) {
    return id < 0 || t->types[id] == TOKEN_TYPE_UNKNOWN;
}

/* llama.cpp takes a token with one of these pieces for an end of turn or of generation and makes
 * it a control token whatever the file says (llama-vocab.cpp's special_eog_ids) */
static const char *const kEndTexts[] = {"<|eot_id|>",
                                        "<|im_end|>",
                                        "<|end|>",
                                        "<|return|>",
                                        "<|call|>",
                                        "<|flush|>",
                                        "<|calls|>",
                                        "<end_of_turn>",
                                        "<|endoftext|>",
                                        "</s>",
                                        "<|eom_id|>",
                                        "<EOT>",
                                        "_<EOT>",
                                        "[EOT]",
                                        "[EOS]",
                                        "<|end_of_text|>",
                                        "<end_of_utterance>",
                                        "<eos>",
                                        "<turn|>",
                                        "<|tool_response>",
                                        "<｜end▁of▁sentence｜>" /* DeepSeek */,
                                        "[e~["};

static int is_piece(const spm_tokenizer *t, int32_t id, const char *s) {
    return piece_len(t, id) == strlen(s) && !memcmp(piece_ptr(t, id), s, piece_len(t, id));
}

/* The special tokens of spm_encode_special (llama.cpp's cache_special_tokens): CONTROL,
 * USER_DEFINED, UNKNOWN and end-of-turn pieces, non-empty, sorted by piece length (longest first;
 * ties: lower id first); with rstrip, which drop the white space after them (llama.cpp's Phi-3
 * rule: all but <unk>, <s> and <|endoftext|>). */
static msrnn_status build_special(spm_tokenizer *t, int rstrip) {
    int n = 0;
    for (int i = 0; i < t->n_vocab; i++) {
        int sp = t->types[i] == TOKEN_TYPE_CONTROL || t->types[i] == TOKEN_TYPE_USER_DEFINED ||
                 t->types[i] == TOKEN_TYPE_UNKNOWN;
        for (size_t k = 0; !sp && k < sizeof kEndTexts / sizeof *kEndTexts; k++)
            sp = is_piece(t, i, kEndTexts[k]);
        n += sp && piece_len(t, i) > 0;
    }
    t->special = malloc((size_t)(n ? n : 1) * sizeof *t->special);
    t->special_rstrip = malloc((size_t)(n ? n : 1));
    if (!t->special || !t->special_rstrip) return MSRNN_ERR_NOMEM;
    n = 0;
    for (int i = 0; i < t->n_vocab; i++) {
        int sp = t->types[i] == TOKEN_TYPE_CONTROL || t->types[i] == TOKEN_TYPE_USER_DEFINED ||
                 t->types[i] == TOKEN_TYPE_UNKNOWN;
        for (size_t k = 0; !sp && k < sizeof kEndTexts / sizeof *kEndTexts; k++)
            sp = is_piece(t, i, kEndTexts[k]);
        if (sp && piece_len(t, i) > 0) t->special[n++] = i;
    }
    t->n_special = n;
    /* a stable merge sort would do; special tokens are few, and an insertion sort keeps ids in
     * order among equal lengths */
    for (int i = 1; i < n; i++) {
        const int32_t v = t->special[i];
        int j = i;
        while (j > 0 && piece_len(t, t->special[j - 1]) < piece_len(t, v))
            t->special[j] = t->special[j - 1], j--;
        t->special[j] = v;
    }
    for (int i = 0; i < n; i++) {
        const int32_t id = t->special[i];
        t->special_rstrip[i] = rstrip && !is_piece(t, id, "<unk>") && !is_piece(t, id, "<s>") &&
                               !is_piece(t, id, "<|endoftext|>");
    }
    return MSRNN_OK;
}

msrnn_status spm_tokenizer_build(const spm_vocab *v, spm_tokenizer **out) {
    *out = NULL;
    if (!v || v->n_vocab <= 0 || v->n_vocab > SPM_MAX_VOCAB || !v->pieces || !v->piece_lens ||
        !v->scores)
        return status_fail(MSRNN_ERR_INVALID,
                           "tokenizer: need 1..%d pieces with their lengths and scores",
                           SPM_MAX_VOCAB);
    const int n = v->n_vocab;
    if (v->bos_id < -1 || v->bos_id >= n || v->eos_id < -1 || v->eos_id >= n || v->unk_id < -1 ||
        v->unk_id >= n)
        return status_fail(MSRNN_ERR_INVALID,
                           "tokenizer: special ids (bos %d, eos %d, unknown %d) must be -1 or in "
                           "0..%d",
                           v->bos_id, v->eos_id, v->unk_id, n - 1);
    uint64_t total = 0;
    for (int i = 0; i < n; i++) {
        if (v->piece_lens[i] > SPM_MAX_PIECE)
            return status_fail(MSRNN_ERR_FORMAT, "tokenizer: piece %d is %llu bytes (at most %d)",
                               i, (unsigned long long)v->piece_lens[i], SPM_MAX_PIECE);
        if (v->piece_lens[i] && !v->pieces[i])
            return status_fail(MSRNN_ERR_INVALID, "tokenizer: piece %d has no bytes", i);
        total += v->piece_lens[i];
        if (v->types && (v->types[i] < 0 || v->types[i] > TOKEN_TYPE_BYTE))
            return status_fail(MSRNN_ERR_FORMAT,
                               "tokenizer: token %d has type %d (expected 0..%d, llama.cpp's "
                               "numbering)",
                               i, (int)v->types[i], TOKEN_TYPE_BYTE);
        if (v->types && v->types[i] == TOKEN_TYPE_BYTE &&
            parse_byte_piece(v->pieces[i], v->piece_lens[i]) < 0)
            return status_fail(MSRNN_ERR_FORMAT,
                               "tokenizer: byte token %d is '%.*s' (expected <0xNN>)", i,
                               (int)(v->piece_lens[i] < 32 ? v->piece_lens[i] : 32), v->pieces[i]);
    }
    if (total >= UINT32_MAX)
        return status_fail(MSRNN_ERR_FORMAT, "tokenizer: pieces total %llu bytes (too many)",
                           (unsigned long long)total);

    spm_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return status_fail(MSRNN_ERR_NOMEM, "tokenizer: out of memory");
    t->n_vocab = n;
    t->bos_id = v->bos_id;
    t->eos_id = v->eos_id;
    t->unk_id = v->unk_id;
    t->add_space_prefix = v->add_space_prefix != 0;
    t->blob = malloc(total ? total : 1);
    t->offs = malloc(((size_t)n + 1) * sizeof *t->offs);
    t->scores = malloc((size_t)n * sizeof *t->scores);
    t->types = malloc((size_t)n);
    t->byte_val = malloc((size_t)n * sizeof *t->byte_val);
    t->resolved = malloc((size_t)n * sizeof *t->resolved);
    if (!t->blob || !t->offs || !t->scores || !t->types || !t->byte_val || !t->resolved) {
        spm_tokenizer_free(t);
        return status_fail(MSRNN_ERR_NOMEM, "tokenizer: out of memory (%d pieces)", n);
    }
    uint32_t off = 0;
    for (int i = 0; i < n; i++) {
        t->offs[i] = off;
        if (v->piece_lens[i]) memcpy(t->blob + off, v->pieces[i], v->piece_lens[i]);
        off += (uint32_t)v->piece_lens[i];
        if (v->piece_lens[i] > t->max_piece_len) t->max_piece_len = (uint32_t)v->piece_lens[i];
        t->scores[i] = v->scores[i];
        int type = v->types ? (int)v->types[i] : TOKEN_TYPE_NORMAL;
        if (!v->types) { /* no types: the special ids are what their names say */
            if (i == v->unk_id) type = TOKEN_TYPE_UNKNOWN;
            if (i == v->bos_id || i == v->eos_id) type = TOKEN_TYPE_CONTROL;
        }
        if (type == 0) type = TOKEN_TYPE_NORMAL; /* llama.cpp's "undefined" */
        t->types[i] = (uint8_t)type;
        t->byte_val[i] =
            (int16_t)(type == TOKEN_TYPE_BYTE ? parse_byte_piece(v->pieces[i], v->piece_lens[i])
                                              : -1);
        if (type == TOKEN_TYPE_BYTE) t->byte_fallback = 1;
        if (type == TOKEN_TYPE_UNUSED) t->has_unused = 1;
    }
    t->offs[n] = off;

    msrnn_status st = table_init(&t->mergeable, (size_t)n);
    if (st == MSRNN_OK) st = table_init(&t->reserved, (size_t)n);
    if (st == MSRNN_OK) st = build_trie(t);
    if (st != MSRNN_OK) {
        spm_tokenizer_free(t);
        return st;
    }
    memset(t->isolating, 1, sizeof t->isolating);
    for (int i = 0; i < n; i++) {
        if (piece_len(t, i) == 0) continue; /* sentencepiece rejects these; they never match */
        if (is_mergeable_type(t->types[i])) {
            table_insert(t, &t->mergeable, i);
            if (piece_len(t, i) > 1)
                for (uint32_t k = 0; k < piece_len(t, i); k++) {
                    uint8_t b = (uint8_t)piece_ptr(t, i)[k];
                    if (b < 128) t->isolating[b] = 0;
                }
        } else {
            table_insert(t, &t->reserved, i);
        }
    }
    for (int i = 0; i < n; i++) {
        int32_t r = is_mergeable_type(t->types[i])
                        ? table_find(t, &t->reserved, piece_ptr(t, i), piece_len(t, i))
                        : -1;
        t->resolved[i] = r >= 0 ? r : i;
    }
    for (int b = 0; b < 256; b++) {
        char name[7];
        static const char hex[] = "0123456789ABCDEF";
        memcpy(name, "<0x", 3);
        name[3] = hex[b >> 4];
        name[4] = hex[b & 15];
        name[5] = '>';
        t->byte_id[b] = piece_to_id(t, name, 6);
    }
    t->userdef_whole_chars = 1;
    for (int i = 0; i < n; i++) {
        if (t->types[i] != TOKEN_TYPE_USER_DEFINED) continue;
        const uint8_t *s = (const uint8_t *)piece_ptr(t, i);
        for (uint32_t k = 0, len = piece_len(t, i), c; k < len; k += c)
            if (!(c = (uint32_t)utf8_valid_len(s + k, len - k))) {
                t->userdef_whole_chars = 0;
                break;
            }
    }
    int32_t sp = piece_to_id(t, kSpace, 3), rep = piece_to_id(t, kReplacement, 3);
    t->single_space = !is_unknown_id(t, sp);
    t->single_replacement = !is_unknown_id(t, rep);

    /* Something must stand for text no piece covers: <unk>, or a complete set of byte pieces. */
    int bytes_complete = t->byte_fallback;
    for (int b = 0; b < 256 && bytes_complete; b++)
        bytes_complete = !is_unknown_id(t, t->byte_id[b]);
    if (t->unk_id < 0 && !bytes_complete) {
        spm_tokenizer_free(t);
        return status_fail(MSRNN_ERR_FORMAT,
                           "tokenizer: no unknown-token id and no complete set of <0xNN> byte "
                           "tokens: text outside the vocabulary could not be encoded");
    }
    if (build_special(t, v->rstrip_special) != MSRNN_OK) {
        spm_tokenizer_free(t);
        return status_fail(MSRNN_ERR_NOMEM, "tokenizer: out of memory");
    }
    *out = t;
    return MSRNN_OK;
}

void spm_tokenizer_free(spm_tokenizer *t) {
    if (!t) return;
    free(t->blob);
    free(t->offs);
    free(t->scores);
    free(t->types);
    free(t->byte_val);
    free(t->resolved);
    free(t->mergeable.slots);
    free(t->reserved.slots);
    free(t->trie_keys);
    free(t->trie_child);
    free(t->trie_term);
    free(t->special);
    free(t->special_rstrip);
    free(t);
}

int spm_n_vocab(const spm_tokenizer *t) { return t->n_vocab; }

static uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
    const uint8_t *b = data;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t fnv1a_u32(uint64_t h, uint32_t v) {
    const uint8_t le[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    return fnv1a(h, le, 4);
}

uint64_t spm_vocab_hash(const spm_tokenizer *t) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i < t->n_vocab; i++) {
        const uint32_t len = t->offs[i + 1] - t->offs[i];
        uint32_t bits;
        memcpy(&bits, &t->scores[i], 4);
        h = fnv1a_u32(h, len);
        h = fnv1a(h, t->blob + t->offs[i], len);
        h = fnv1a_u32(h, t->types[i]);
        h = fnv1a_u32(h, bits);
    }
    return h;
}

size_t spm_max_ids(const spm_tokenizer *t, size_t len) {
    /* Each input byte yields at most one symbol; an unknown symbol becomes one byte token per UTF-8
     * byte: up to 3 for "▁" (from a space, or the prefix) and U+FFFD (from a malformed byte). */
    if (t->single_space && t->single_replacement && t->userdef_whole_chars) return len + 2;
    return 3 * len + 4;
}

/* ---- encoding ---------------------------------------------------------------------------------
 */

/* The length of a well-formed UTF-8 character at s (n bytes left), or 0 if malformed:
 * sentencepiece's string_util::DecodeUTF8 / IsValidDecodeUTF8. */
static size_t utf8_valid_len(const uint8_t *s, size_t n) {
    uint8_t c = s[0];
    if (c < 0x80) return 1;
    if (n >= 2 && (c & 0xE0) == 0xC0) {
        uint32_t cp = ((uint32_t)(c & 0x1F) << 6) | (s[1] & 0x3F);
        if ((s[1] & 0xC0) == 0x80 && cp >= 0x80) return 2;
    } else if (n >= 3 && (c & 0xF0) == 0xE0) {
        uint32_t cp = ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        if ((s[1] & 0xC0) == 0x80 && (s[2] & 0xC0) == 0x80 && cp >= 0x800 &&
            (cp < 0xD800 || cp >= 0xE000))
            return 3;
    } else if (n >= 4 && (c & 0xF8) == 0xF0) {
        uint32_t cp = ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
                      ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
        if ((s[1] & 0xC0) == 0x80 && (s[2] & 0xC0) == 0x80 && (s[3] & 0xC0) == 0x80 &&
            cp >= 0x10000 && cp <= 0x10FFFF)
            return 4;
    }
    return 0;
}

typedef struct {
    uint32_t start, len; /* bytes of the normalized text; len 0: merged away */
    int32_t prev, next;  /* neighbours, -1 at the ends */
    int32_t id;          /* the mergeable piece it is, -2: not looked up (a single character) */
    int32_t frozen;      /* a user-defined piece: never merged */
} symbol;

typedef struct {
    uint64_t key; /* score (order-preserving bits) above, ~left below: larger key first */
    int32_t left, right;
    uint32_t size; /* bytes of the merged piece, to detect stale entries */
    int32_t id;
} pair;

/* The queue's order as one integer: higher score first, then the leftmost pair (sentencepiece's
 * SymbolPairComparator). -0 and +0 compare equal as floats, so they share a key. */
static uint64_t pair_key(float score, int32_t left) {
    uint32_t bits;
    if (score == 0.0f) score = 0.0f;
    memcpy(&bits, &score, sizeof bits);
    bits = (bits & 0x80000000u) ? ~bits : bits | 0x80000000u;
    return (uint64_t)bits << 32 | (uint32_t) ~(uint32_t)left;
}

static int pair_before(const pair *a, const pair *b) { return a->key > b->key; }

typedef struct {
    uint32_t start, len;
    int32_t id;
} span;

typedef struct {
    const spm_tokenizer *t;
    const char *norm;
    symbol *sym;
    pair *heap;
    size_t n_heap, cap_heap;
    int32_t *rev_split; /* for unused pieces: the left length of their last queued pair */
    span *stack;        /* for resegment */
    int32_t *ids;       /* output */
    size_t cap, n_out;
    int prev_unk;
    int failed; /* allocation failure */
} encoder;

static void heap_push(encoder *e, pair p) {
    if (e->n_heap == e->cap_heap) {
        size_t cap = e->cap_heap ? 2 * e->cap_heap : 256;
        pair *h = realloc(e->heap, cap * sizeof *h);
        if (!h) {
            e->failed = 1;
            return;
        }
        e->heap = h;
        e->cap_heap = cap;
    }
    size_t i = e->n_heap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!pair_before(&p, &e->heap[parent])) break;
        e->heap[i] = e->heap[parent];
        i = parent;
    }
    e->heap[i] = p;
}

static pair heap_pop(encoder *e) {
    pair top = e->heap[0], last = e->heap[--e->n_heap];
    size_t i = 0, n = e->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && pair_before(&e->heap[c + 1], &e->heap[c])) c++;
        if (!pair_before(&e->heap[c], &last)) break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (n) e->heap[i] = last;
    return top;
}

/* bpe_model.cc's MaybeAddNewSymbolPair. */
static void maybe_add_pair(encoder *e, int32_t left, int32_t right) {
    if (left < 0 || right < 0 || e->sym[left].frozen || e->sym[right].frozen) return;
    const symbol *l = &e->sym[left], *r = &e->sym[right];
    uint32_t size = l->len + r->len;
    int32_t id = table_find(e->t, &e->t->mergeable, e->norm + l->start, size);
    if (id < 0) return;
    pair p = {pair_key(e->t->scores[id], left), left, right, size, id};
    heap_push(e, p);
    if (e->rev_split && e->t->types[id] == TOKEN_TYPE_UNUSED) e->rev_split[id] = (int32_t)l->len;
}

/* Merge symbols first..last (linked, none merged yet) until no pair is a piece. */
static void merge_segment(encoder *e, int32_t first, int32_t last) {
    e->n_heap = 0;
    for (int32_t i = first; i < last; i++) maybe_add_pair(e, i, i + 1);
    while (e->n_heap > 0 && !e->failed) {
        pair top = heap_pop(e);
        symbol *l = &e->sym[top.left], *r = &e->sym[top.right];
        if (l->len == 0 || r->len == 0 || l->len + r->len != top.size) continue; /* stale */
        l->len += r->len;
        l->id = top.id;
        l->next = r->next;
        if (r->next >= 0) e->sym[r->next].prev = top.left;
        r->len = 0;
        maybe_add_pair(e, l->prev, top.left);
        maybe_add_pair(e, top.left, l->next);
    }
}

static void emit_id(encoder *e, int32_t id) {
    if (e->n_out < e->cap) e->ids[e->n_out] = id;
    e->n_out++;
}

/* SentencePieceProcessor's handling of one final piece: unknown → bytes or a merged <unk>. */
static void emit_piece(encoder *e, const char *w, uint32_t n, int32_t id) {
    const spm_tokenizer *t = e->t;
    int unk = is_unknown_id(t, id);
    if (unk && t->byte_fallback) {
        for (uint32_t i = 0; i < n; i++) {
            int32_t b = t->byte_id[(uint8_t)w[i]];
            emit_id(e, b >= 0 ? b : t->unk_id);
        }
    } else if (!(unk && e->prev_unk)) {
        emit_id(e, unk ? t->unk_id : id);
    }
    e->prev_unk = unk;
}

/* bpe_model.cc's resegment: an unused piece is split back into the pair that last formed it,
 * recursively (an explicit stack: each level is strictly shorter, so it holds at most
 * max_piece_len + 1 entries). */
static void resegment(encoder *e, uint32_t start, uint32_t len, int32_t id) {
    const spm_tokenizer *t = e->t;
    if (!e->rev_split) {
        emit_piece(e, e->norm + start, len, id);
        return;
    }
    size_t n = 0;
    e->stack[n++] = (span){start, len, id};
    while (n > 0) {
        span s = e->stack[--n];
        if (s.id < 0 || t->types[s.id] != TOKEN_TYPE_UNUSED || e->rev_split[s.id] < 0) {
            emit_piece(e, e->norm + s.start, s.len, s.id);
            continue;
        }
        uint32_t k = (uint32_t)e->rev_split[s.id];
        e->stack[n++] =
            (span){s.start + k, s.len - k, piece_to_id(t, e->norm + s.start + k, s.len - k)};
        e->stack[n++] = (span){s.start, k, piece_to_id(t, e->norm + s.start, k)};
    }
}

/* Emit one final symbol: its id as sentencepiece's PieceToId gives it, then resegment. */
static void emit_symbol(encoder *e, const symbol *s) {
    const spm_tokenizer *t = e->t;
    int32_t id = s->id >= 0 ? t->resolved[s->id] : piece_to_id(t, e->norm + s->start, s->len);
    resegment(e, s->start, s->len, id);
}

/* Merge the n symbols in e->sym (linked in order) and emit what they become. */
static void flush_segment(encoder *e, int32_t n) {
    if (n == 0) return;
    e->sym[n - 1].next = -1;
    if (n > 1) merge_segment(e, 0, n - 1);
    if (e->failed) return;
    for (int32_t i = 0; i >= 0; i = e->sym[i].next) emit_symbol(e, &e->sym[i]);
}

/* Normalize text (see the file comment) into out, or only measure it when out is NULL; returns
 * the normalized length. */
static size_t normalize(const char *text, size_t len, int prefix, char *out) {
    size_t o = 0;
    if (prefix) {
        if (out) memcpy(out, kSpace, 3);
        o = 3;
    }
    const uint8_t *s = (const uint8_t *)text;
    for (size_t i = 0; i < len;) {
        size_t k = s[i] == ' ' ? 0 : utf8_valid_len(s + i, len - i);
        if (k == 0) { /* a space becomes "▁", a malformed byte U+FFFD */
            if (out) memcpy(out + o, s[i] == ' ' ? kSpace : kReplacement, 3);
            o += 3;
            i++;
        } else {
            if (out) memcpy(out + o, s + i, k);
            o += k;
            i += k;
        }
    }
    return o;
}

static size_t utf8_char_len(uint8_t c) {
    static const uint8_t tbl[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return tbl[c >> 4];
}

/* spm_encode with the leading "▁" given by prefix (add_space_prefix, or 0) */
static msrnn_status encode(const spm_tokenizer *t, const char *text, size_t len, int add_bos,
                           int prefix, int32_t *ids, size_t cap, size_t *n_out) {
    *n_out = 0;
    if (len > SPM_MAX_TEXT)
        return status_fail(MSRNN_ERR_INVALID, "tokenizer: text of %zu bytes (at most %zu)", len,
                           SPM_MAX_TEXT);
    if (len && !text) return status_fail(MSRNN_ERR_INVALID, "tokenizer: NULL text");
    encoder e = {.t = t, .ids = ids, .cap = ids ? cap : 0};
    if (add_bos && t->bos_id >= 0) emit_id(&e, t->bos_id);
    if (len == 0) {
        *n_out = e.n_out;
        return e.n_out > e.cap
                   ? status_fail(MSRNN_ERR_INVALID, "tokenizer: %zu ids need room, %zu given",
                                 e.n_out, e.cap)
                   : MSRNN_OK;
    }

    size_t nlen = normalize(text, len, prefix, NULL);
    char *norm = malloc(nlen);
    if (t->has_unused) {
        e.rev_split = malloc((size_t)t->n_vocab * sizeof *e.rev_split);
        e.stack = malloc(((size_t)t->max_piece_len + 2) * sizeof *e.stack);
    }
    e.failed = !norm || (t->has_unused && (!e.rev_split || !e.stack));
    if (!e.failed) {
        normalize(text, len, prefix, norm);
        e.norm = norm;
        if (e.rev_split)
            for (int i = 0; i < t->n_vocab; i++) e.rev_split[i] = -1;
    }

    /* Split into symbols (user-defined pieces or single characters), and merge and emit them one
     * segment between isolating bytes at a time. With unused pieces the whole text is one segment:
     * which pair an unused piece splits back into depends on the global order of the queue's
     * pushes. */
    size_t n_sym = 0, cap_sym = 0;
    for (size_t p = 0; p <= nlen && !e.failed;) {
        uint32_t k = 0;
        int frozen = 0, barrier = p == nlen;
        if (!barrier) {
            k = t->trie_nodes ? trie_longest(t, norm + p, nlen - p) : 0;
            frozen = k > 0;
            if (!k) k = (uint32_t)utf8_char_len((uint8_t)norm[p]);
            if (k > nlen - p) k = (uint32_t)(nlen - p);
            uint8_t c = (uint8_t)norm[p];
            barrier = k == 1 && c < 128 && t->isolating[c] && !t->has_unused;
        }
        if (barrier) {
            flush_segment(&e, (int32_t)n_sym);
            n_sym = 0;
            if (p == nlen) break;
            emit_symbol(&e, &(symbol){(uint32_t)p, 1, -1, -1, -2, 0});
            p++;
            continue;
        }
        if (n_sym == cap_sym) {
            size_t cap2 = cap_sym ? 2 * cap_sym : 1024;
            symbol *s2 = realloc(e.sym, cap2 * sizeof *s2);
            if (!s2) {
                e.failed = 1;
                break;
            }
            e.sym = s2;
            cap_sym = cap2;
        }
        e.sym[n_sym] = (symbol){(uint32_t)p, k, (int32_t)n_sym - 1, (int32_t)n_sym + 1, -2, frozen};
        n_sym++;
        p += k;
    }
    free(norm);
    free(e.sym);
    free(e.heap);
    free(e.rev_split);
    free(e.stack);
    if (e.failed)
        return status_fail(MSRNN_ERR_NOMEM, "tokenizer: out of memory encoding %zu bytes", len);
    *n_out = e.n_out;
    if (e.n_out > e.cap)
        return status_fail(MSRNN_ERR_INVALID, "tokenizer: %zu ids need room, %zu given", e.n_out,
                           e.cap);
    return MSRNN_OK;
}

msrnn_status spm_encode(const spm_tokenizer *t, const char *text, size_t len, int add_bos,
                        int32_t *ids, size_t cap, size_t *n_out) {
    return encode(t, text, len, add_bos, t->add_space_prefix, ids, cap, n_out);
}

/* A piece of the text being split: raw bytes [at, at + len), or one special token (id ≥ 0). */
typedef struct {
    size_t at, len;
    int32_t id;
} fragment;

/* fragments, grown as the split finds them */
typedef struct {
    fragment *f;
    size_t n, cap;
} fragments;

static int frag_push(fragments *v, size_t at, size_t len, int32_t id) {
    if (v->n == v->cap) {
        const size_t cap = v->cap ? 2 * v->cap : 16;
        fragment *g = realloc(v->f, cap * sizeof *g);
        if (!g) return 0;
        v->f = g, v->cap = cap;
    }
    v->f[v->n++] = (fragment){at, len, id};
    return 1;
}

static int is_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

msrnn_status spm_encode_special(const spm_tokenizer *t, const char *text, size_t len, int add_bos,
                                int32_t *ids, size_t cap, size_t *n_out) {
    *n_out = 0;
    if (len > SPM_MAX_TEXT)
        return status_fail(MSRNN_ERR_INVALID, "tokenizer: text of %zu bytes (at most %zu)", len,
                           SPM_MAX_TEXT);
    if (len && !text) return status_fail(MSRNN_ERR_INVALID, "tokenizer: NULL text");
    if (!ids) cap = 0;
    fragments fr = {0}, next = {0};
    int ok = !len || frag_push(&fr, 0, len, -1);
    /* llama.cpp's partition: each special token in turn splits every raw fragment at each of its
     * occurrences, left to right (with rstrip, the white space after it goes too) */
    for (int s = 0; s < t->n_special && ok; s++) {
        const char *piece = piece_ptr(t, t->special[s]);
        const size_t pl = piece_len(t, t->special[s]);
        next.n = 0;
        for (size_t f = 0; f < fr.n && ok; f++) {
            const fragment g = fr.f[f];
            if (g.id >= 0 || g.len < pl) {
                ok = frag_push(&next, g.at, g.len, g.id);
                continue;
            }
            size_t at = g.at;
            const size_t end = g.at + g.len;
            while (ok) {
                const char *hit = end - at >= pl ? memmem(text + at, end - at, piece, pl) : NULL;
                if (!hit) break;
                const size_t h = (size_t)(hit - text);
                if (h > at) ok = frag_push(&next, at, h - at, -1);
                ok = ok && frag_push(&next, h, pl, t->special[s]);
                at = h + pl;
                if (t->special_rstrip[s])
                    while (at < end && is_space(text[at])) at++;
            }
            if (ok && at < end) ok = frag_push(&next, at, end - at, -1);
        }
        const fragments tmp = fr;
        fr = next, next = tmp;
    }
    free(next.f);
    if (!ok) {
        free(fr.f);
        return status_fail(MSRNN_ERR_NOMEM, "tokenizer: out of memory encoding %zu bytes", len);
    }
    /* raw fragments encoded on their own; "▁" before one that starts the text or follows a
     * special token (llama.cpp's is_prev_special) */
    size_t n = 0;
    msrnn_status st = MSRNN_OK;
    if (add_bos && t->bos_id >= 0) {
        if (n < cap) ids[n] = t->bos_id;
        n++;
    }
    int prev_special = 1;
    for (size_t f = 0; f < fr.n && st == MSRNN_OK; f++) {
        if (fr.f[f].id >= 0) {
            if (n < cap) ids[n] = fr.f[f].id;
            n++;
            prev_special = 1;
            continue;
        }
        size_t got = 0;
        st = encode(t, text + fr.f[f].at, fr.f[f].len, 0, t->add_space_prefix && prev_special,
                    n < cap ? ids + n : NULL, n < cap ? cap - n : 0, &got);
        if (st == MSRNN_ERR_INVALID && got > 0) st = MSRNN_OK; /* only out of room: count on */
        n += got;
        prev_special = 0;
    }
    free(fr.f);
    if (st != MSRNN_OK) return st;
    *n_out = n;
    if (n > cap)
        return status_fail(MSRNN_ERR_INVALID, "tokenizer: %zu ids need room, %zu given", n, cap);
    return MSRNN_OK;
}

size_t spm_max_ids_special(const spm_tokenizer *t, size_t len) {
    /* every raw fragment may add a "▁" (up to 3 byte tokens); there are at most len + 1 */
    return spm_max_ids(t, len) + 3 * (len + 1);
}

/* ---- decoding ---------------------------------------------------------------------------------
 */

static size_t put(char *buf, size_t cap, size_t at, const char *s, size_t n) {
    if (at < cap) memcpy(buf + at, s, n < cap - at ? n : cap - at);
    return at + n;
}

size_t spm_token_to_text(const spm_tokenizer *t, int32_t prev, int32_t id, char *buf, size_t cap) {
    if (id < 0 || id >= t->n_vocab) return 0;
    if (!buf) cap = 0;
    switch (t->types[id]) {
    case TOKEN_TYPE_CONTROL: return 0;
    case TOKEN_TYPE_UNKNOWN: return put(buf, cap, 0, kUnkSurface, sizeof kUnkSurface - 1);
    case TOKEN_TYPE_BYTE: {
        char b = (char)t->byte_val[id];
        return put(buf, cap, 0, &b, 1);
    }
    default: break;
    }
    const char *s = piece_ptr(t, id);
    size_t n = piece_len(t, id), i = 0, o = 0;
    if (t->add_space_prefix && (prev < 0 || prev == t->bos_id) && n >= 3 &&
        memcmp(s, kSpace, 3) == 0)
        i = 3;
    while (i < n) {
        if (n - i >= 3 && memcmp(s + i, kSpace, 3) == 0) {
            o = put(buf, cap, o, " ", 1);
            i += 3;
        } else {
            size_t j = i + 1; /* copy up to the next "▁" */
            while (j < n && !(n - j >= 3 && memcmp(s + j, kSpace, 3) == 0)) j++;
            o = put(buf, cap, o, s + i, j - i);
            i = j;
        }
    }
    return o;
}

size_t spm_decode(const spm_tokenizer *t, const int32_t *ids, size_t n, char *buf, size_t cap) {
    if (!buf) cap = 0;
    size_t o = 0;
    int32_t prev = -1;
    for (size_t i = 0; i < n; i++) {
        size_t room = o < cap ? cap - o : 0;
        o += spm_token_to_text(t, prev, ids[i], room ? buf + o : NULL, room);
        prev = ids[i];
    }
    return o;
}
