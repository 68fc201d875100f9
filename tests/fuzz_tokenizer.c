/* fuzz_tokenizer — libFuzzer target for the SentencePiece tokenizer (src/text/tokenizer.c).
 *
 * Every input is encoded and decoded with:
 *   - the Llama 2 vocabulary from $MSRNN_REF_DIR/llama2-vocab.gguf, when present;
 *   - a small synthetic vocabulary with byte fallback, unused and user-defined pieces;
 *   - a synthetic vocabulary without byte pieces (unknown text becomes <unk>);
 *   - a vocabulary made from the input itself (pieces separated by 0x01 bytes, types and scores
 *     from their first bytes), to fuzz spm_tokenizer_build too.
 * The same for spm_encode_special (special tokens parsed): its bound, ids in range, the size
 * needed. Checks: no crash or sanitizer report; n_ids <= spm_max_ids (and <= len + 2 for Llama 2);
 * every id in range; a too-small cap reports the size needed; truncated decodes are prefixes of the
 * full one; and decode(encode(x)) == x for well-formed UTF-8 without "▁" (U+2581, which decodes as
 * a space) under the byte-fallback vocabularies.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/gguf.h"
#include "text/tokenizer.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_tokenizer: check failed at line %d: %s\n", __LINE__, #cond);     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

enum { TOK_LLAMA, TOK_SYNTH_BYTES, TOK_SYNTH_UNK, TOK_COUNT };
static spm_tokenizer *toks[TOK_COUNT];
static int roundtrips[TOK_COUNT];

/* A small vocabulary: <unk> <s> </s>, optionally 256 byte pieces, then the pieces below. */
static spm_tokenizer *build_synthetic(int with_bytes) {
    static const struct {
        const char *piece;
        int type;
    } extra[] = {
        {"\xe2\x96\x81", 1},
        {"a", 1},
        {"b", 1},
        {"c", 1},
        {"e", 1},
        {"h", 1},
        {"t", 1},
        {"n", 1},
        {"d", 1},
        {"g", 1},
        {"i", 1},
        {"r", 1},
        {"1", 1},
        {"2", 1},
        {"\n", 1},
        {"th", 1},
        {"he", 5},
        {"the", 1},
        {"\xe2\x96\x81the", 1},
        {"in", 1},
        {"ing", 5},
        {"\xe2\x96\x81"
         "a",
         1},
        {"an", 1},
        {"and", 1},
        {"\xe2\x96\x81"
         "and",
         1},
        {"er", 1},
        {"\xe2\x96\x81t", 1},
        {"\xe2\x96\x81th", 5},
        {"ab", 4},
        {"abc", 1},
        {"bc", 1},
        {"aa", 1},
        {"aaa", 5},
        {"aaaa", 1},
        {"\xe2\x96\x81\xe2\x96\x81", 1},
        {"\xe2\x96\x81\xe2\x96\x81\xe2\x96\x81", 4},
        {"\xc3\xa9", 1},
        {"\xf0\x9f\x98\x80", 1},
        {"<tag>", 4},
        {"12", 1},
        {"\n\n", 1},
        {"e\xe2\x96\x81", 1},
        {"<s>", 1}, /* the same string as a control piece: control wins */
    };
    const int n_extra = (int)(sizeof extra / sizeof extra[0]);
    const int n = 3 + (with_bytes ? 256 : 0) + n_extra;
    char(*bytes)[7] = calloc(256, sizeof *bytes);
    const char **pieces = calloc((size_t)n, sizeof *pieces);
    uint64_t *lens = calloc((size_t)n, sizeof *lens);
    float *scores = calloc((size_t)n, sizeof *scores);
    int32_t *types = calloc((size_t)n, sizeof *types);
    CHECK(bytes && pieces && lens && scores && types);
    int k = 0;
    pieces[k] = "<unk>", types[k++] = TOKEN_TYPE_UNKNOWN;
    pieces[k] = "<s>", types[k++] = TOKEN_TYPE_CONTROL;
    pieces[k] = "</s>", types[k++] = TOKEN_TYPE_CONTROL;
    for (int b = 0; with_bytes && b < 256; b++) {
        snprintf(bytes[b], sizeof bytes[b], "<0x%02X>", b);
        pieces[k] = bytes[b], types[k++] = TOKEN_TYPE_BYTE;
    }
    for (int i = 0; i < n_extra; i++) {
        pieces[k] = extra[i].piece;
        types[k] = extra[i].type;
        scores[k++] = (float)(-(i % 17)); /* ties on purpose */
    }
    for (int i = 0; i < n; i++) lens[i] = strlen(pieces[i]);
    spm_vocab v = {n, pieces, lens, scores, types, 1, 2, 0, 1, 1};
    spm_tokenizer *t = NULL;
    CHECK(spm_tokenizer_build(&v, &t) == MSRNN_OK);
    free(bytes);
    free(pieces);
    free(lens);
    free(scores);
    free(types);
    return t;
}

static void init(void) {
    const char *dir = getenv("MSRNN_REF_DIR");
    if (dir) {
        char path[4096];
        snprintf(path, sizeof path, "%s/llama2-vocab.gguf", dir);
        gguf_file *f;
        if (gguf_open(path, &f) == MSRNN_OK) {
            CHECK(spm_tokenizer_from_gguf(f, &toks[TOK_LLAMA]) == MSRNN_OK);
            gguf_close(f);
            roundtrips[TOK_LLAMA] = 1;
        }
    }
    toks[TOK_SYNTH_BYTES] = build_synthetic(1);
    roundtrips[TOK_SYNTH_BYTES] = 1;
    toks[TOK_SYNTH_UNK] = build_synthetic(0);
}

/* Well-formed UTF-8 as sentencepiece sees it (no surrogates, no overlongs) and no U+2581. */
static int roundtrip_expected(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        size_t k = c < 0x80             ? 1
                   : (c & 0xE0) == 0xC0 ? 2
                   : (c & 0xF0) == 0xE0 ? 3
                   : (c & 0xF8) == 0xF0 ? 4
                                        : 0;
        if (!k || k > n - i) return 0;
        uint32_t cp = k == 1 ? c : k == 2 ? c & 0x1F : k == 3 ? c & 0x0F : c & 0x07;
        for (size_t j = 1; j < k; j++) {
            if ((s[i + j] & 0xC0) != 0x80) return 0;
            cp = cp << 6 | (s[i + j] & 0x3F);
        }
        static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[k] || (cp >= 0xD800 && cp < 0xE000) || cp > 0x10FFFF || cp == 0x2581)
            return 0;
        i += k;
    }
    return 1;
}

static void exercise(const spm_tokenizer *t, const uint8_t *data, size_t size, int roundtrip,
                     int llama, int has_bos) {
    const char *text = (const char *)data;
    size_t cap = spm_max_ids(t, size), n = 0, n2 = 0;
    int32_t *ids = malloc((cap ? cap : 1) * sizeof *ids);
    CHECK(ids);
    CHECK(spm_encode(t, text, size, 0, ids, cap, &n) == MSRNN_OK);
    CHECK(n <= cap);
    if (llama) CHECK(n <= size + 2);
    for (size_t i = 0; i < n; i++) CHECK(ids[i] >= 0 && ids[i] < spm_n_vocab(t));
    if (size <= 512) { /* the size alone (ids NULL), a cap one short: the size needed */
        CHECK(spm_encode(t, text, size, 0, NULL, 0, &n2) == (n ? MSRNN_ERR_INVALID : MSRNN_OK));
        CHECK(n2 == n);
    }
    if (n > 0 && size <= 512) {
        int32_t *few = malloc(n * sizeof *few);
        CHECK(few);
        CHECK(spm_encode(t, text, size, 1, few, n, &n2) ==
              (has_bos ? MSRNN_ERR_INVALID : MSRNN_OK));
        CHECK(n2 == n + (size_t)has_bos);
        CHECK(memcmp(few + has_bos, ids, (n - (size_t)has_bos) * sizeof *ids) == 0);
        free(few);
    }

    { /* with special tokens parsed (spm_encode_special): within its bound, ids in range, the size
       * alone equal to the count, a cap one short refused with the size */
        const size_t scap = spm_max_ids_special(t, size);
        size_t sn = 0, sn2 = 0;
        int32_t *sids = malloc((scap ? scap : 1) * sizeof *sids);
        CHECK(sids);
        CHECK(spm_encode_special(t, text, size, 1, sids, scap, &sn) == MSRNN_OK);
        CHECK(sn <= scap);
        for (size_t i = 0; i < sn; i++) CHECK(sids[i] >= 0 && sids[i] < spm_n_vocab(t));
        if (size <= 512) {
            CHECK(spm_encode_special(t, text, size, 1, NULL, 0, &sn2) ==
                  (sn ? MSRNN_ERR_INVALID : MSRNN_OK));
            CHECK(sn2 == sn);
            if (sn > 0) {
                CHECK(spm_encode_special(t, text, size, 1, sids, sn - 1, &sn2) ==
                      MSRNN_ERR_INVALID);
                CHECK(sn2 == sn);
            }
        }
        free(sids);
    }

    size_t dlen = spm_decode(t, ids, n, NULL, 0);
    char *out = malloc(dlen + 1);
    CHECK(out);
    CHECK(spm_decode(t, ids, n, out, dlen + 1) == dlen);
    if (roundtrip && roundtrip_expected(data, size)) {
        if (dlen != size || memcmp(out, text, size) != 0) {
            fprintf(stderr, "round trip: %zu bytes in, %zu out\n", size, dlen);
            CHECK(0);
        }
    }
    if (dlen > 1) { /* a truncated decode is a prefix */
        char *half = malloc(dlen / 2);
        CHECK(half);
        CHECK(spm_decode(t, ids, n, half, dlen / 2) == dlen);
        CHECK(memcmp(half, out, dlen / 2) == 0);
        free(half);
    }
    char piece[8];
    for (int32_t id = -2; id < 8; id++) spm_token_to_text(t, -1, id, piece, sizeof piece);
    spm_token_to_text(t, 1, spm_n_vocab(t), piece, sizeof piece);
    free(out);
    free(ids);
}

/* A vocabulary from the input: pieces separated by 0x01 (at most 64), each piece's first byte
 * choosing its type (never BYTE) and score; id 0 is <unk>. */
static void exercise_dynamic(const uint8_t *data, size_t size) {
    enum { MAX = 65 };
    const char *pieces[MAX];
    uint64_t lens[MAX];
    float scores[MAX];
    int32_t types[MAX];
    int n = 0;
    pieces[n] = "<unk>", lens[n] = 5, scores[n] = 0, types[n++] = TOKEN_TYPE_UNKNOWN;
    size_t start = 0;
    for (size_t i = 0; i <= size && n < MAX; i++) {
        if (i < size && data[i] != 1) continue;
        if (i > start) {
            pieces[n] = (const char *)data + start;
            lens[n] = i - start;
            scores[n] = (float)(int8_t)data[start] / 4.0f;
            types[n++] = data[start] % 6; /* 0 undefined .. 5 unused */
        }
        start = i + 1;
    }
    spm_vocab v = {n, pieces, lens, scores, types, -1, -1, 0, data[0] & 1, data[0] >> 1 & 1};
    spm_tokenizer *t = NULL;
    if (spm_tokenizer_build(&v, &t) != MSRNN_OK) return;
    exercise(t, data, size, 0, 0, 0);
    spm_tokenizer_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int ready;
    if (!ready) {
        init();
        ready = 1;
    }
    for (int i = 0; i < TOK_COUNT; i++)
        if (toks[i]) exercise(toks[i], data, size, roundtrips[i], i == TOK_LLAMA, 1);
    if (size > 0 && size <= 4096) exercise_dynamic(data, size);
    return 0;
}
