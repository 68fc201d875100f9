/* init.c — a freshly initialised Llama GGUF (see init.h). */
#include "model/init.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/mem.h"
#include "io/gguf.h"
#include "model/arch.h"
#include "nn/memlayer.h"
#include "text/tokenizer.h"

static uint64_t splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static float normal(uint64_t *x) { /* Box-Muller */
    double u1 = ((splitmix(x) >> 11) + 1.0) * 0x1.0p-53, u2 = (splitmix(x) >> 11) * 0x1.0p-53;
    return (float)(sqrt(-2 * log(u1)) * cos(2 * M_PI * u2));
}

/* Add a (rows × cols) matrix of N(0, std²) values (or all `fill` when std == 0, or buf as it is
 * when std < 0) as type t. */
static msrnn_status add_tensor(gguf_writer *w, const param_desc *d, tensor_type t, float std,
                               float fill, uint64_t *rng, float *buf, void *qbuf) {
    for (size_t i = 0; i < d->n && std >= 0; i++) buf[i] = std > 0 ? std * normal(rng) : fill;
    if (t != TYPE_F32) quantize_row(t, buf, qbuf, (int64_t)d->n);
    const uint64_t ne[3] = {(uint64_t)d->ne[0], (uint64_t)d->ne[1], (uint64_t)d->ne[2]};
    return gguf_writer_add_tensor(w, d->name, t, (uint32_t)d->n_dims, ne,
                                  t == TYPE_F32 ? (void *)buf : qbuf);
}

msrnn_status model_write_init(const model_init_params *p, const char *vocab_path,
                              const char *path) {
    if (p->dim <= 0 || p->n_layers <= 0 || p->n_heads <= 0 || p->n_kv_heads <= 0 ||
        p->ffn_dim <= 0 || p->n_ctx <= 0 || p->dim % p->n_heads || p->n_heads % p->n_kv_heads ||
        (p->dim / p->n_heads) % 2)
        return status_fail(MSRNN_ERR_INVALID,
                           "init: inconsistent shape (dim %d, heads %d, kv heads "
                           "%d, ffn %d, layers %d, ctx %d)",
                           p->dim, p->n_heads, p->n_kv_heads, p->ffn_dim, p->n_layers, p->n_ctx);
    const type_traits_t *tt = type_traits(p->type);
    if (!tt || p->dim % tt->block_size || p->ffn_dim % tt->block_size)
        return status_fail(MSRNN_ERR_INVALID,
                           "init: dim %d and ffn %d must be multiples of %s's "
                           "block of %d",
                           p->dim, p->ffn_dim, tt ? tt->name : "?", tt ? tt->block_size : 0);
    const char *arch_name = p->arch ? p->arch : "llama";
    const arch_row *arch = arch_find(arch_name, strlen(arch_name));
    if (!arch)
        return status_fail(MSRNN_ERR_INVALID, "init: unknown architecture '%s' (msrnn has %s)",
                           arch_name, arch_names());
    gguf_file *vf = NULL;
    MSRNN_TRY(gguf_open(vocab_path, &vf));
    const gguf_kv *toks = gguf_find_kv(vf, "tokenizer.ggml.tokens");
    if (!toks || toks->value.type != GGUF_TYPE_ARRAY || !gguf_find_kv(vf, "tokenizer.ggml.model")) {
        gguf_close(vf);
        return status_fail(MSRNN_ERR_FORMAT,
                           "%s has no tokenizer (no tokenizer.ggml.model and tokenizer.ggml.tokens "
                           "keys): a model made from it could not read or write text",
                           vocab_path);
    }
    spm_tokenizer *tok = NULL; /* the whole vocabulary must be usable, not only present */
    msrnn_status tst = spm_tokenizer_from_gguf(vf, &tok);
    spm_tokenizer_free(tok);
    if (tst != MSRNN_OK) {
        char why[768];
        snprintf(why, sizeof why, "%s", msrnn_last_error());
        gguf_close(vf);
        return status_fail(tst, "%s has no usable tokenizer: %s", vocab_path, why);
    }
    const int n_vocab = p->n_vocab > 0 ? p->n_vocab : (int)toks->value.arr.n;
    hparams hp;
    memset(&hp, 0, sizeof hp);
    msrnn_model_info *in = &hp.info;
    in->n_vocab = n_vocab, in->dim = p->dim, in->n_layers = p->n_layers, in->n_heads = p->n_heads;
    in->n_kv_heads = p->n_kv_heads, in->head_dim = p->dim / p->n_heads, in->ffn_dim = p->ffn_dim;
    in->n_ctx = p->n_ctx, in->tied_output = p->tied;
    in->rope_base = p->rope_base > 0 ? p->rope_base : 10000.0f;
    in->norm_eps = p->norm_eps > 0 ? p->norm_eps : 1e-5f;
    hp.n_rot = in->head_dim;
    hp.segment = p->segment > 0 ? p->segment : 2048;
    hp.memory_rule = p->memory_rule;
    hp.features = p->features, hp.seed = p->seed;
    hp.hash_bits = p->hash_bits > 0 ? p->hash_bits : 8;
    hp.block_hash_bits = p->block_hash_bits > 0 ? p->block_hash_bits : hp.hash_bits + 2;
    hp.weighting = p->weighting, hp.temperature = p->temperature > 0 ? p->temperature : 1.0f;
    hp.ln_eps = 1e-5f, hp.mf_biases = p->no_bias ? 0 : MF_BIAS_QKV | MF_BIAS_MEM1 | MF_BIAS_MEM2;
    if (arch->mixer == &part_mf_attn) {
        if (hp.hash_bits > MEM_MAX_BITS || hp.block_hash_bits > MEM_MAX_BITS ||
            p->dim % hp.hash_bits || p->n_kv_heads != p->n_heads) {
            gguf_close(vf);
            return status_fail(MSRNN_ERR_INVALID,
                               "init: memoryformer needs hash bits τ %d and τ₂ %d in [1, %d], dim "
                               "%d a multiple of τ and kv heads %d = heads %d",
                               hp.hash_bits, hp.block_hash_bits, MEM_MAX_BITS, p->dim,
                               p->n_kv_heads, p->n_heads);
        }
        in->ffn_dim = p->dim / hp.hash_bits * hp.block_hash_bits; /* the block's width K·τ₂ */
    }
    param_list pl;
    msrnn_status st = param_list_build(arch, &hp, &pl);
    if (st != MSRNN_OK) {
        gguf_close(vf);
        return st;
    }
    gguf_writer *w = gguf_writer_new();
    if (!w) st = status_fail(MSRNN_ERR_NOMEM, "init: out of memory");
    for (uint64_t i = 0; st == MSRNN_OK && i < vf->n_kv; i++)
        if (vf->kv[i].key.len > 10 && !memcmp(vf->kv[i].key.ptr, "tokenizer.", 10))
            st = gguf_writer_set_kv(w, &vf->kv[i]);
    gguf_close(vf);
    char key[128];
#define KEY(k) (snprintf(key, sizeof key, "%s." k, arch->name), key)
    if (st == MSRNN_OK) st = gguf_writer_set_str(w, "general.architecture", arch->name);
    if (st == MSRNN_OK)
        st = gguf_writer_set_str(w, "general.name", p->name ? p->name : "msrnn-init");
    if (st == MSRNN_OK) st = gguf_writer_set_u32(w, KEY("context_length"), (uint32_t)p->n_ctx);
    if (st == MSRNN_OK) st = gguf_writer_set_u32(w, KEY("embedding_length"), (uint32_t)p->dim);
    if (st == MSRNN_OK) st = gguf_writer_set_u32(w, KEY("block_count"), (uint32_t)p->n_layers);
    if (st == MSRNN_OK)
        st = gguf_writer_set_u32(w, KEY("feed_forward_length"), (uint32_t)in->ffn_dim);
    if (st == MSRNN_OK)
        st = gguf_writer_set_u32(w, KEY("attention.head_count"), (uint32_t)p->n_heads);
    if (st == MSRNN_OK)
        st = gguf_writer_set_u32(w, KEY("attention.head_count_kv"), (uint32_t)p->n_kv_heads);
    if (st == MSRNN_OK)
        st = gguf_writer_set_u32(w, KEY("rope.dimension_count"), (uint32_t)hp.n_rot);
    if (st == MSRNN_OK) st = gguf_writer_set_u32(w, KEY("vocab_size"), (uint32_t)n_vocab);
    if (st == MSRNN_OK) st = gguf_writer_set_f32(w, KEY("rope.freq_base"), in->rope_base);
    if (st == MSRNN_OK)
        st = gguf_writer_set_f32(w, KEY("attention.layer_norm_rms_epsilon"), in->norm_eps);
#undef KEY
    if (st == MSRNN_OK && arch->mixer->write_keys) st = arch->mixer->write_keys(&hp, arch->name, w);
    if (st == MSRNN_OK && arch->ffn->write_keys) st = arch->ffn->write_keys(&hp, arch->name, w);
    if (st == MSRNN_OK)
        st = gguf_writer_set_u32(w, "general.file_type",
                                 p->type == TYPE_F32    ? 0
                                 : p->type == TYPE_F16  ? 1
                                 : p->type == TYPE_Q8_0 ? 7
                                 : p->type == TYPE_Q4_0 ? 2
                                                        : 32);
    size_t biggest = 0;
    for (int i = 0; i < pl.n; i++) {
        if (pl.p[i].n > biggest) biggest = pl.p[i].n;
        if (st == MSRNN_OK && pl.p[i].matrix && pl.p[i].n_dims < 3 &&
            pl.p[i].ne[0] % tt->block_size)
            st = status_fail(MSRNN_ERR_INVALID,
                             "init: %s has rows of %lld, not a multiple of %s's block of %d",
                             pl.p[i].name, (long long)pl.p[i].ne[0], tt->name, tt->block_size);
    }
    /* the writer holds a copy of every tensor until the file is written, plus two buffers */
    uint64_t need = 2 * (uint64_t)biggest * sizeof(float);
    for (int i = 0; i < pl.n; i++)
        need += pl.p[i].matrix ? type_row_bytes(p->type, (uint64_t)pl.p[i].n) : pl.p[i].n * 4;
    char what[200];
    snprintf(what, sizeof what,
             "init: a model of dim %d, %d layers, ffn %d and %d tokens (%zu "
             "parameters) written from memory",
             p->dim, p->n_layers, p->ffn_dim, n_vocab, pl.n_floats);
    if (st == MSRNN_OK) st = mem_check(need, p->max_memory, what, "--dim, --layers or --ffn");
    float *buf = st == MSRNN_OK ? malloc(biggest * sizeof(float)) : NULL;
    void *qbuf = st == MSRNN_OK ? malloc(biggest * sizeof(float)) : NULL;
    if (st == MSRNN_OK && (!buf || !qbuf)) st = status_fail(MSRNN_ERR_NOMEM, "init: out of memory");
    uint64_t rng = p->seed;
    const float std = p->init_std > 0 ? p->init_std : 0.02f,
                out_std = std / sqrtf(2.0f * p->n_layers);
    for (int i = 0; st == MSRNN_OK && i < pl.n; i++) {
        const param_desc *d = &pl.p[i];
        float s = d->init == INIT_NORMAL ? std : d->init == INIT_NORMAL_RESID ? out_std : 0;
        if (param_fill(arch, &hp, &pl, i, buf)) s = -1; /* the part's own values */
        const float fill = d->init == INIT_ONES ? 1.0f : 0.0f;
        /* tables: f16 and bf16 as asked, f32 for the block types (a table row is one bucket) */
        const tensor_type t = !d->matrix ? TYPE_F32
                              : d->n_dims < 3 || p->type == TYPE_F16 || p->type == TYPE_BF16
                                  ? p->type
                                  : TYPE_F32;
        st = add_tensor(w, d, t, s, fill, &rng, buf, qbuf);
    }
    if (st == MSRNN_OK) st = gguf_writer_write(w, path);
    free(buf);
    free(qbuf);
    gguf_writer_free(w);
    param_list_free(&pl);
    return st;
}
