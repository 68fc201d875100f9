/* model.c — open a GGUF file as a Llama model: read the hyper-parameters, bind and check every
 * weight, build the tokenizer. */
#include "model/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"

/* Bind `name` as a matrix of `out` rows × `in` columns (GGUF ne = [in, out]). */
static msrnn_status bind_weight(const gguf_file *f, const char *name, int in, int out, weight *w) {
    const gguf_tensor *t = gguf_find_tensor(f, name);
    if (!t) return msrnn_fail(MSRNN_ERR_FORMAT, "%s: tensor '%s' is missing", f->path, name);
    if (t->n_dims != 2 || t->ne[0] != (uint64_t)in || t->ne[1] != (uint64_t)out)
        return msrnn_fail(
            MSRNN_ERR_FORMAT,
            "%s: tensor '%s' has shape [%llu, %llu] (%u dims), expected [%d, %d] from "
            "the hyper-parameters",
            f->path, name, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1], t->n_dims,
            in, out);
    if (!kernels_for(t->type))
        return msrnn_fail(MSRNN_ERR_UNSUPPORTED,
                          "%s: tensor '%s' has type %d, which msrnn cannot "
                          "compute with (supported: f32, f16, bf16, q8_0, q4_0)",
                          f->path, name, (int)t->type);
    w->data = t->data;
    w->type = t->type;
    w->in = in;
    w->out = out;
    w->row_bytes = type_row_bytes(t->type, (uint64_t)in);
    return MSRNN_OK;
}

/* Bind `name` as an f32 vector of n elements (norm weights). */
static msrnn_status bind_vector(const gguf_file *f, const char *name, int n, const float **out) {
    const gguf_tensor *t = gguf_find_tensor(f, name);
    if (!t) return msrnn_fail(MSRNN_ERR_FORMAT, "%s: tensor '%s' is missing", f->path, name);
    if (t->n_elements != (uint64_t)n || t->ne[0] != (uint64_t)n)
        return msrnn_fail(MSRNN_ERR_FORMAT, "%s: tensor '%s' has %llu elements, expected %d",
                          f->path, name, (unsigned long long)t->n_elements, n);
    if (t->type != TYPE_F32)
        return msrnn_fail(MSRNN_ERR_UNSUPPORTED, "%s: norm tensor '%s' must be f32 (type %d found)",
                          f->path, name, (int)t->type);
    *out = t->data;
    return MSRNN_OK;
}

static msrnn_status get_dim(const gguf_file *f, const char *key, int required, int lo, int hi,
                            int *out) {
    uint32_t v = (uint32_t)*out;
    MSRNN_TRY(gguf_get_u32(f, key, required, &v));
    if ((int64_t)v < lo || (int64_t)v > hi)
        return msrnn_fail(MSRNN_ERR_FORMAT, "%s: %s = %u is out of range [%d, %d]", f->path, key, v,
                          lo, hi);
    *out = (int)v;
    return MSRNN_OK;
}

static msrnn_status read_hparams(msrnn_model *m) {
    const gguf_file *f = m->file;
    gguf_str arch;
    MSRNN_TRY(gguf_get_str(f, "general.architecture", 1, &arch));
    if (!gguf_str_eq(arch, "llama"))
        return msrnn_fail(MSRNN_ERR_UNSUPPORTED,
                          "%s: general.architecture is '%.*s'; msrnn runs "
                          "'llama'",
                          f->path, (int)(arch.len > 64 ? 64 : arch.len), arch.ptr);
    msrnn_model_info *in = &m->info;
    const int big = 1 << 20;
    MSRNN_TRY(get_dim(f, "llama.embedding_length", 1, 1, big, &in->dim));
    MSRNN_TRY(get_dim(f, "llama.block_count", 1, 1, 4096, &in->n_layers));
    MSRNN_TRY(get_dim(f, "llama.feed_forward_length", 1, 1, big, &in->ffn_dim));
    MSRNN_TRY(get_dim(f, "llama.attention.head_count", 1, 1, 4096, &in->n_heads));
    in->n_kv_heads = in->n_heads;
    MSRNN_TRY(get_dim(f, "llama.attention.head_count_kv", 0, 1, 4096, &in->n_kv_heads));
    in->n_ctx = 2048;
    MSRNN_TRY(get_dim(f, "llama.context_length", 0, 1, 1 << 30, &in->n_ctx));
    if (in->dim % in->n_heads)
        return msrnn_fail(MSRNN_ERR_FORMAT,
                          "%s: embedding_length %d is not a multiple of "
                          "head_count %d",
                          f->path, in->dim, in->n_heads);
    if (in->n_heads % in->n_kv_heads)
        return msrnn_fail(MSRNN_ERR_FORMAT,
                          "%s: head_count %d is not a multiple of head_count_kv "
                          "%d",
                          f->path, in->n_heads, in->n_kv_heads);
    in->head_dim = in->dim / in->n_heads;
    m->n_rot = in->head_dim;
    MSRNN_TRY(get_dim(f, "llama.rope.dimension_count", 0, 2, in->head_dim, &m->n_rot));
    if (m->n_rot % 2)
        return msrnn_fail(MSRNN_ERR_FORMAT, "%s: llama.rope.dimension_count %d must be even",
                          f->path, m->n_rot);
    in->rope_base = 10000.0f;
    MSRNN_TRY(gguf_get_f32(f, "llama.rope.freq_base", 0, &in->rope_base));
    in->norm_eps = 1e-5f;
    MSRNN_TRY(gguf_get_f32(f, "llama.attention.layer_norm_rms_epsilon", 0, &in->norm_eps));
    if (!(in->rope_base > 0) || !(in->norm_eps >= 0))
        return msrnn_fail(MSRNN_ERR_FORMAT,
                          "%s: rope.freq_base %g and rms epsilon %g must be "
                          "positive",
                          f->path, in->rope_base, in->norm_eps);
    const gguf_tensor *emb = gguf_find_tensor(f, "token_embd.weight");
    if (!emb)
        return msrnn_fail(MSRNN_ERR_FORMAT, "%s: tensor 'token_embd.weight' is missing", f->path);
    if (emb->n_dims != 2 || emb->ne[1] < 1 || emb->ne[1] > (1u << 24))
        return msrnn_fail(MSRNN_ERR_FORMAT, "%s: token_embd.weight must be [dim, n_vocab]",
                          f->path);
    in->n_vocab = (int)emb->ne[1];
    int nv = in->n_vocab;
    MSRNN_TRY(get_dim(f, "llama.vocab_size", 0, 1, 1 << 24, &nv));
    if (nv != in->n_vocab)
        return msrnn_fail(MSRNN_ERR_FORMAT,
                          "%s: llama.vocab_size %d disagrees with "
                          "token_embd.weight's %d rows",
                          f->path, nv, in->n_vocab);
    return MSRNN_OK;
}

static msrnn_status bind_weights(msrnn_model *m) {
    const gguf_file *f = m->file;
    const msrnn_model_info *in = &m->info;
    const int D = in->dim, q_dim = in->n_heads * in->head_dim,
              kv_dim = in->n_kv_heads * in->head_dim;
    MSRNN_TRY(bind_weight(f, "token_embd.weight", D, in->n_vocab, &m->tok_embd));
    m->layers = calloc((size_t)in->n_layers, sizeof *m->layers);
    if (!m->layers)
        return msrnn_fail(MSRNN_ERR_NOMEM, "out of memory binding %d layers", in->n_layers);
    char name[96];
#define LAYER_NAME(fmt) (snprintf(name, sizeof name, "blk.%d." fmt, l), name)
    for (int l = 0; l < in->n_layers; l++) {
        layer_weights *lw = &m->layers[l];
        MSRNN_TRY(bind_vector(f, LAYER_NAME("attn_norm.weight"), D, &lw->attn_norm));
        MSRNN_TRY(bind_weight(f, LAYER_NAME("attn_q.weight"), D, q_dim, &lw->wq));
        MSRNN_TRY(bind_weight(f, LAYER_NAME("attn_k.weight"), D, kv_dim, &lw->wk));
        MSRNN_TRY(bind_weight(f, LAYER_NAME("attn_v.weight"), D, kv_dim, &lw->wv));
        MSRNN_TRY(bind_weight(f, LAYER_NAME("attn_output.weight"), q_dim, D, &lw->wo));
        MSRNN_TRY(bind_vector(f, LAYER_NAME("ffn_norm.weight"), D, &lw->ffn_norm));
        MSRNN_TRY(bind_weight(f, LAYER_NAME("ffn_gate.weight"), D, in->ffn_dim, &lw->w_gate));
        MSRNN_TRY(bind_weight(f, LAYER_NAME("ffn_up.weight"), D, in->ffn_dim, &lw->w_up));
        MSRNN_TRY(bind_weight(f, LAYER_NAME("ffn_down.weight"), in->ffn_dim, D, &lw->w_down));
    }
#undef LAYER_NAME
    MSRNN_TRY(bind_vector(f, "output_norm.weight", D, &m->output_norm));
    if (gguf_find_tensor(f, "output.weight")) {
        MSRNN_TRY(bind_weight(f, "output.weight", D, in->n_vocab, &m->output));
    } else {
        m->output = m->tok_embd;
        m->info.tied_output = 1;
    }
    return MSRNN_OK;
}

msrnn_status msrnn_model_open(const char *path, msrnn_model **out) {
    *out = NULL;
    msrnn_model *m = calloc(1, sizeof *m);
    if (!m) return msrnn_fail(MSRNN_ERR_NOMEM, "out of memory");
    msrnn_status st = gguf_open(path, &m->file);
    if (st == MSRNN_OK) st = read_hparams(m);
    if (st == MSRNN_OK) st = bind_weights(m);
    if (st == MSRNN_OK && gguf_find_kv(m->file, "tokenizer.ggml.model"))
        st = spm_tokenizer_from_gguf(m->file, &m->tok);
    if (st != MSRNN_OK) {
        msrnn_model_close(m);
        return st;
    }
    m->info.bos_id = 1;
    m->info.eos_id = 2;
    uint32_t bos = 1, eos = 2;
    if (gguf_get_u32(m->file, "tokenizer.ggml.bos_token_id", 0, &bos) == MSRNN_OK &&
        bos < (uint32_t)m->info.n_vocab)
        m->info.bos_id = (int)bos;
    if (gguf_get_u32(m->file, "tokenizer.ggml.eos_token_id", 0, &eos) == MSRNN_OK &&
        eos < (uint32_t)m->info.n_vocab)
        m->info.eos_id = (int)eos;
    if (m->tok && spm_n_vocab(m->tok) > m->info.n_vocab) {
        msrnn_status e = msrnn_fail(MSRNN_ERR_FORMAT,
                                    "%s: the tokenizer has %d tokens but the "
                                    "model only %d",
                                    m->file->path, spm_n_vocab(m->tok), m->info.n_vocab);
        msrnn_model_close(m);
        return e;
    }
    for (uint64_t i = 0; i < m->file->n_tensors; i++) {
        m->info.n_params += m->file->tensors[i].n_elements;
        m->info.weight_bytes += m->file->tensors[i].n_bytes;
    }
    *out = m;
    return MSRNN_OK;
}

void msrnn_model_close(msrnn_model *m) {
    if (!m) return;
    spm_tokenizer_free(m->tok);
    free(m->layers);
    gguf_close(m->file);
    free(m);
}

const msrnn_model_info *msrnn_model_get_info(const msrnn_model *m) { return &m->info; }

msrnn_status msrnn_tokenize(const msrnn_model *m, const char *text, size_t len, int add_bos,
                            int32_t *ids, size_t cap, size_t *n_out) {
    if (!m->tok)
        return msrnn_fail(MSRNN_ERR_UNSUPPORTED, "%s: the file has no tokenizer", m->file->path);
    return spm_encode(m->tok, text, len, add_bos, ids, cap, n_out);
}

size_t msrnn_tokenize_max(const msrnn_model *m, size_t len) {
    return m->tok ? spm_max_ids(m->tok, len) : len + 2;
}

size_t msrnn_token_to_text(const msrnn_model *m, int32_t prev, int32_t id, char *buf, size_t cap) {
    if (!m->tok) return 0;
    return spm_token_to_text(m->tok, prev, id, buf, cap);
}
