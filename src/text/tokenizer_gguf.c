/* tokenizer_gguf.c — a SentencePiece tokenizer from a GGUF file's tokenizer.ggml.* keys, as
 * llama.cpp's converter writes them: model "llama", tokens (strings), scores (float32), token_type
 * (int32, llama.cpp's numbering), bos/eos/unknown token ids, add_space_prefix. Only reads and
 * validates the keys; spm_tokenizer_build does the rest. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/tokenizer.h"

#define KEY_MODEL "tokenizer.ggml.model"
#define KEY_TOKENS "tokenizer.ggml.tokens"
#define KEY_SCORES "tokenizer.ggml.scores"
#define KEY_TYPES "tokenizer.ggml.token_type"

/* token_type as int32, whatever integer type the file used; NULL when the key is absent. */
static msrnn_status read_types(const gguf_file *f, uint64_t n_vocab, int32_t **out) {
    *out = NULL;
    const gguf_kv *kv = gguf_find_kv(f, KEY_TYPES);
    if (!kv) return MSRNN_OK;
    if (kv->value.type != GGUF_TYPE_ARRAY)
        return status_fail(MSRNN_ERR_FORMAT, "%s: key '%s' is %s, expected an array of int32",
                           f->path, KEY_TYPES, gguf_type_name(kv->value.type));
    if (kv->value.arr.n != n_vocab)
        return status_fail(MSRNN_ERR_FORMAT,
                           "%s: key '%s' has %" PRIu64 " entries, expected %" PRIu64
                           " (one per token in '%s')",
                           f->path, KEY_TYPES, kv->value.arr.n, n_vocab, KEY_TOKENS);
    int32_t *types = malloc((n_vocab ? n_vocab : 1) * sizeof *types);
    if (!types)
        return status_fail(MSRNN_ERR_NOMEM, "%s: out of memory reading '%s'", f->path, KEY_TYPES);
    const void *d = kv->value.arr.data;
    for (uint64_t i = 0; i < n_vocab; i++) {
        int64_t v;
        switch (kv->value.arr.type) {
        case GGUF_TYPE_INT32: v = ((const int32_t *)d)[i]; break;
        case GGUF_TYPE_UINT32: v = ((const uint32_t *)d)[i]; break;
        case GGUF_TYPE_INT8: v = ((const int8_t *)d)[i]; break;
        case GGUF_TYPE_UINT8: v = ((const uint8_t *)d)[i]; break;
        case GGUF_TYPE_INT16: v = ((const int16_t *)d)[i]; break;
        case GGUF_TYPE_UINT16: v = ((const uint16_t *)d)[i]; break;
        case GGUF_TYPE_INT64: v = ((const int64_t *)d)[i]; break;
        case GGUF_TYPE_UINT64: {
            uint64_t u = ((const uint64_t *)d)[i];
            v = u > INT32_MAX ? INT32_MAX : (int64_t)u;
            break;
        }
        default:
            free(types);
            return status_fail(MSRNN_ERR_FORMAT, "%s: key '%s' is an array of %s, expected int32",
                               f->path, KEY_TYPES, gguf_type_name(kv->value.arr.type));
        }
        if (v < 0 || v > TOKEN_TYPE_BYTE) {
            free(types);
            return status_fail(MSRNN_ERR_FORMAT,
                               "%s: key '%s': token %" PRIu64 " has type %" PRId64
                               ", expected 0..%d (1 normal, 2 unknown, 3 control, 4 user-defined, "
                               "5 unused, 6 byte)",
                               f->path, KEY_TYPES, i, v, TOKEN_TYPE_BYTE);
        }
        types[i] = (int32_t)v;
    }
    *out = types;
    return MSRNN_OK;
}

/* An optional token id key: must name a token when present. */
static msrnn_status read_id(const gguf_file *f, const char *key, uint64_t n_vocab, int *id) {
    uint32_t v = (uint32_t)*id;
    if (!gguf_find_kv(f, key)) return MSRNN_OK;
    MSRNN_TRY(gguf_get_u32(f, key, 1, &v));
    if (v >= n_vocab)
        return status_fail(
            MSRNN_ERR_FORMAT,
            "%s: key '%s' is %u, expected a token id below the vocabulary size %" PRIu64, f->path,
            key, v, n_vocab);
    *id = (int)v;
    return MSRNN_OK;
}

msrnn_status spm_tokenizer_from_gguf(const gguf_file *f, spm_tokenizer **out) {
    *out = NULL;
    gguf_str model = {0};
    MSRNN_TRY(gguf_get_str(f, KEY_MODEL, 1, &model));
    if (!gguf_str_eq(model, "llama"))
        return status_fail(
            MSRNN_ERR_UNSUPPORTED,
            "%s: key '%s' is '%.*s'; only \"llama\" (SentencePiece BPE) is supported", f->path,
            KEY_MODEL, (int)(model.len < 64 ? model.len : 64), model.ptr);

    const void *tokens_data, *scores_data;
    uint64_t n_tokens = 0, n_scores = 0;
    MSRNN_TRY(gguf_get_arr(f, KEY_TOKENS, 1, GGUF_TYPE_STRING, &tokens_data, &n_tokens));
    MSRNN_TRY(gguf_get_arr(f, KEY_SCORES, 1, GGUF_TYPE_FLOAT32, &scores_data, &n_scores));
    if (n_tokens == 0 || n_tokens > INT32_MAX)
        return status_fail(MSRNN_ERR_FORMAT, "%s: key '%s' has %" PRIu64 " tokens, expected 1..%d",
                           f->path, KEY_TOKENS, n_tokens, INT32_MAX);
    if (n_scores != n_tokens)
        return status_fail(MSRNN_ERR_FORMAT,
                           "%s: key '%s' has %" PRIu64 " entries, expected %" PRIu64
                           " (one per token in '%s')",
                           f->path, KEY_SCORES, n_scores, n_tokens, KEY_TOKENS);

    spm_vocab v = {0};
    v.n_vocab = (int)n_tokens;
    v.scores = scores_data;
    v.bos_id = 1; /* SentencePiece's (and llama.cpp's) defaults */
    v.eos_id = 2;
    v.unk_id = 0;
    v.add_space_prefix = 1;
    MSRNN_TRY(read_id(f, "tokenizer.ggml.bos_token_id", n_tokens, &v.bos_id));
    MSRNN_TRY(read_id(f, "tokenizer.ggml.eos_token_id", n_tokens, &v.eos_id));
    MSRNN_TRY(read_id(f, "tokenizer.ggml.unknown_token_id", n_tokens, &v.unk_id));
    if (v.bos_id >= v.n_vocab) v.bos_id = -1; /* defaults beyond a tiny vocabulary */
    if (v.eos_id >= v.n_vocab) v.eos_id = -1;
    if (v.unk_id >= v.n_vocab) v.unk_id = -1;
    MSRNN_TRY(gguf_get_bool(f, "tokenizer.ggml.add_space_prefix", 0, &v.add_space_prefix));
    /* llama.cpp's rule by model name: Phi-3's special tokens strip the white space after them */
    const gguf_kv *name = gguf_find_kv(f, "general.name");
    if (name && name->value.type == GGUF_TYPE_STRING) {
        const gguf_str *g = &name->value.str;
        for (uint64_t i = 0; i < g->len && !v.rstrip_special; i++) {
            char w[5];
            uint64_t k = 0;
            for (; k < 5 && i + k < g->len; k++) {
                const char c = g->ptr[i + k];
                w[k] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
            }
            v.rstrip_special =
                (k >= 5 && !memcmp(w, "phi-3", 5)) || (k >= 4 && !memcmp(w, "phi3", 4));
        }
    }

    int32_t *types = NULL;
    MSRNN_TRY(read_types(f, n_tokens, &types));
    v.types = types;

    const gguf_str *strs = tokens_data;
    const char **pieces = malloc(n_tokens * sizeof *pieces);
    uint64_t *lens = malloc(n_tokens * sizeof *lens);
    msrnn_status st = MSRNN_OK;
    if (!pieces || !lens) {
        st = status_fail(MSRNN_ERR_NOMEM, "%s: out of memory reading '%s'", f->path, KEY_TOKENS);
    } else {
        for (uint64_t i = 0; i < n_tokens; i++) {
            pieces[i] = strs[i].ptr;
            lens[i] = strs[i].len;
        }
        v.pieces = pieces;
        v.piece_lens = lens;
        st = spm_tokenizer_build(&v, out);
        if (st != MSRNN_OK) {
            char msg[768];
            snprintf(msg, sizeof msg, "%s", msrnn_last_error());
            st = status_fail(st, "%s: %s", f->path, msg);
        }
    }
    free(pieces);
    free(lens);
    free(types);
    return st;
}
