/* arch.c — the architecture table, `{arch}.*` hyper-parameters and the parameter list (arch.h). */
#include "model/arch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const arch_row arch_table[] = {
    {"llama", &part_softmax, &part_swiglu},
    {"infini", &part_infini, &part_swiglu},
    {"dijiang", &part_dijiang, &part_swiglu},
    {"memoryformer", &part_mf_attn, &part_mf_block},
};
enum { N_ARCH = sizeof arch_table / sizeof *arch_table };

const arch_row *arch_at(int i) { return i >= 0 && i < N_ARCH ? &arch_table[i] : NULL; }

const arch_row *arch_find(const char *name, size_t len) {
    for (int i = 0; i < N_ARCH; i++)
        if (strlen(arch_table[i].name) == len && !memcmp(arch_table[i].name, name, len))
            return &arch_table[i];
    return NULL;
}

const char *arch_names(void) {
    static _Thread_local char buf[256]; /* per thread: messages may be built concurrently */
    buf[0] = 0;
    for (int i = 0; i < N_ARCH; i++)
        snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s'%s'", i ? ", " : "",
                 arch_table[i].name);
    return buf;
}

static msrnn_status get_dim(const gguf_file *f, const char *arch, const char *key, int required,
                            int lo, int hi, int *out) {
    char full[128];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    if (!required && !gguf_find_kv(f, full)) return MSRNN_OK; /* *out keeps its default */
    uint32_t v = (uint32_t)*out;
    MSRNN_TRY(gguf_get_u32(f, full, required, &v));
    if ((int64_t)v < lo || (int64_t)v > hi)
        return status_fail(MSRNN_ERR_FORMAT, "%s: %s = %u is out of range [%d, %d]", f->path, full,
                           v, lo, hi);
    *out = (int)v;
    return MSRNN_OK;
}

static msrnn_status get_f32(const gguf_file *f, const char *arch, const char *key, float *out) {
    char full[128];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    return gguf_get_f32(f, full, 0, out);
}

msrnn_status arch_read_hparams(const gguf_file *f, const arch_row **arch_out, hparams *hp) {
    gguf_str name;
    MSRNN_TRY(gguf_get_str(f, "general.architecture", 1, &name));
    const arch_row *arch = arch_find(name.ptr, name.len);
    if (!arch)
        return status_fail(MSRNN_ERR_UNSUPPORTED,
                           "%s: general.architecture is '%.*s'; msrnn runs %s", f->path,
                           (int)(name.len > 64 ? 64 : name.len), name.ptr, arch_names());
    *arch_out = arch;
    const char *a = arch->name;
    memset(hp, 0, sizeof *hp);
    msrnn_model_info *in = &hp->info;
    const int big = 1 << 20;
    MSRNN_TRY(get_dim(f, a, "embedding_length", 1, 1, big, &in->dim));
    MSRNN_TRY(get_dim(f, a, "block_count", 1, 1, 4096, &in->n_layers));
    /* required where the FFN is SwiGLU (METHODS.md §6); another FFN's part checks it */
    MSRNN_TRY(
        get_dim(f, a, "feed_forward_length", arch->ffn == &part_swiglu, 1, big, &in->ffn_dim));
    MSRNN_TRY(get_dim(f, a, "attention.head_count", 1, 1, 4096, &in->n_heads));
    in->n_kv_heads = in->n_heads;
    MSRNN_TRY(get_dim(f, a, "attention.head_count_kv", 0, 1, 4096, &in->n_kv_heads));
    in->n_ctx = 2048;
    MSRNN_TRY(get_dim(f, a, "context_length", 0, 1, 1 << 30, &in->n_ctx));
    if (in->dim % in->n_heads)
        return status_fail(MSRNN_ERR_FORMAT,
                           "%s: embedding_length %d is not a multiple of head_count %d", f->path,
                           in->dim, in->n_heads);
    if (in->n_heads % in->n_kv_heads)
        return status_fail(MSRNN_ERR_FORMAT,
                           "%s: head_count %d is not a multiple of head_count_kv %d", f->path,
                           in->n_heads, in->n_kv_heads);
    in->head_dim = in->dim / in->n_heads;
    hp->n_rot = in->head_dim;
    MSRNN_TRY(get_dim(f, a, "rope.dimension_count", 0, 2, in->head_dim, &hp->n_rot));
    if (hp->n_rot % 2)
        return status_fail(MSRNN_ERR_FORMAT, "%s: %s.rope.dimension_count %d must be even", f->path,
                           a, hp->n_rot);
    in->rope_base = 10000.0f;
    MSRNN_TRY(get_f32(f, a, "rope.freq_base", &in->rope_base));
    in->norm_eps = 1e-5f;
    MSRNN_TRY(get_f32(f, a, "attention.layer_norm_rms_epsilon", &in->norm_eps));
    if (!(in->rope_base > 0) || !(in->norm_eps >= 0))
        return status_fail(MSRNN_ERR_FORMAT,
                           "%s: rope.freq_base %g and rms epsilon %g must be positive", f->path,
                           in->rope_base, in->norm_eps);
    const gguf_tensor *emb = gguf_find_tensor(f, "token_embd.weight");
    if (!emb)
        return status_fail(MSRNN_ERR_FORMAT, "%s: tensor 'token_embd.weight' is missing", f->path);
    if (emb->n_dims != 2 || emb->ne[1] < 1 || emb->ne[1] > (1u << 24))
        return status_fail(MSRNN_ERR_FORMAT, "%s: token_embd.weight must be [dim, n_vocab]",
                           f->path);
    in->n_vocab = (int)emb->ne[1];
    int nv = in->n_vocab;
    MSRNN_TRY(get_dim(f, a, "vocab_size", 0, 1, 1 << 24, &nv));
    if (nv != in->n_vocab)
        return status_fail(MSRNN_ERR_FORMAT,
                           "%s: %s.vocab_size %d disagrees with token_embd.weight's %d rows",
                           f->path, a, nv, in->n_vocab);
    in->tied_output = gguf_find_tensor(f, "output.weight") == NULL;
    if (arch->mixer->read_keys) MSRNN_TRY(arch->mixer->read_keys(f, a, hp));
    if (arch->ffn->read_keys) MSRNN_TRY(arch->ffn->read_keys(f, a, hp));
    return MSRNN_OK;
}

/* ---- the parameter list ------------------------------------------------------------------- */

static void add(param_list *pl, const char *name, int64_t ne0, int64_t ne1, int64_t ne2, int matrix,
                int decay, float lr_scale, int frozen, param_init init, float lo, float hi) {
    param_desc *d = &pl->p[pl->n++];
    snprintf(d->name, sizeof d->name, "%s", name);
    if (ne2 < 1) ne2 = 1;
    d->n_dims = ne2 > 1 ? 3 : ne1 > 1 || matrix ? 2 : 1;
    d->ne[0] = ne0, d->ne[1] = ne1, d->ne[2] = ne2;
    d->matrix = matrix, d->decay = decay, d->frozen = frozen;
    d->lr_scale = lr_scale;
    d->lo = lo, d->hi = hi;
    d->init = init;
    d->n = (size_t)ne0 * (size_t)ne1 * (size_t)ne2;
    d->offset = pl->n_floats;
    pl->n_floats += d->n;
}

static void add_part(param_list *pl, int l, const part_param *pp, int n) {
    char name[64];
    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof name, "blk.%d.%s", l, pp[i].suffix);
        add(pl, name, pp[i].ne0, pp[i].ne1, pp[i].ne2, pp[i].matrix, pp[i].decay, pp[i].lr_scale,
            pp[i].frozen, pp[i].init, pp[i].lo, pp[i].hi);
    }
}

msrnn_status param_list_build(const arch_row *arch, const hparams *hp, param_list *pl) {
    memset(pl, 0, sizeof *pl);
    const msrnn_model_info *in = &hp->info;
    part_param mp[PART_MAX_PARAMS], fp[PART_MAX_PARAMS];
    pl->n_mixer = arch->mixer->params(hp, mp);
    pl->n_ffn = arch->ffn->params(hp, fp);
    pl->per_layer = 2 + pl->n_mixer + pl->n_ffn;
    pl->p = calloc((size_t)in->n_layers * pl->per_layer + 3, sizeof *pl->p);
    if (!pl->p)
        return status_fail(MSRNN_ERR_NOMEM, "out of memory listing %d layers", in->n_layers);
    const int64_t D = in->dim, V = in->n_vocab;
    pl->embd = pl->n;
    add(pl, "token_embd.weight", D, V, 1, 1, 1, 1.0f, 0, INIT_NORMAL, 0, 0);
    char name[64];
    for (int l = 0; l < in->n_layers; l++) {
        snprintf(name, sizeof name, "blk.%d.attn_norm.weight", l);
        add(pl, name, D, 1, 1, 0, 0, 1.0f, 0, INIT_ONES, 0, 0);
        add_part(pl, l, mp, pl->n_mixer);
        snprintf(name, sizeof name, "blk.%d.ffn_norm.weight", l);
        add(pl, name, D, 1, 1, 0, 0, 1.0f, 0, INIT_ONES, 0, 0);
        add_part(pl, l, fp, pl->n_ffn);
    }
    pl->out_norm = pl->n;
    add(pl, "output_norm.weight", D, 1, 1, 0, 0, 1.0f, 0, INIT_ONES, 0, 0);
    pl->output = pl->embd;
    if (!in->tied_output) {
        pl->output = pl->n;
        add(pl, "output.weight", D, V, 1, 1, 1, 1.0f, 0, INIT_NORMAL, 0, 0);
    }
    return MSRNN_OK;
}

void param_list_free(param_list *pl) {
    if (!pl) return;
    free(pl->p);
    memset(pl, 0, sizeof *pl);
}

int param_fill(const arch_row *arch, const hparams *hp, const param_list *pl, int i, float *out) {
    if (i < 0 || i >= pl->n || pl->p[i].init != INIT_PART || pl->per_layer <= 0 || i < 1) return 0;
    const int l = (i - 1) / pl->per_layer;
    if (l >= hp->info.n_layers) return 0;
    const int jm = i - param_mixer(pl, l), jf = i - param_ffn(pl, l);
    const part_kind *part = jm >= 0 && jm < pl->n_mixer ? arch->mixer
                            : jf >= 0 && jf < pl->n_ffn ? arch->ffn
                                                        : NULL;
    if (!part || !part->fill) return 0;
    part->fill(hp, l, part == arch->mixer ? jm : jf, out);
    return 1;
}
