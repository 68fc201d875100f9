/* llama_train.c — forward and backward of the Llama architecture over a micro-batch (see
 * llama_train.h). The layer sequence mirrors src/model/session.c; each step is an op of ops.h.
 *
 * What backward needs is kept from the forward pass, per layer: the layer input, both normalised
 * inputs and their 1/rms, q and k after RoPE, v, the attention output and its log-sum-exp, the
 * gate, up and SwiGLU activations. The output head runs in chunks of HEAD_ROWS rows so that the
 * (rows × vocab) logits never exist for the whole batch at once.
 */
#include "train/llama_train.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "tensor/kernels.h"
#include "train/ops.h"

#define HEAD_ROWS 512

typedef struct { /* offsets into the parameter slab */
    float *attn_norm, *wq, *wk, *wv, *wo, *ffn_norm, *w_gate, *w_up, *w_down;
} layer_params;

typedef struct {            /* activations kept for backward, per layer */
    float *x;               /* (N, C) the layer input (residual stream) */
    float *xn1, *rstd1;     /* (N, C), (N) attention norm */
    float *q, *k, *v;       /* (N, H·d), (N, Hkv·d) ×2, after RoPE */
    float *att, *lse;       /* (N, H·d), (B, H, T) */
    float *h;               /* (N, C) residual after attention */
    float *xn2, *rstd2;     /* ffn norm */
    float *gate, *up, *act; /* (N, F) */
} layer_acts;

struct llama_train {
    llama_shape s;
    int n_rot;
    int B, T, n_threads;
    msrnn_model *src; /* the file the weights came from (metadata for saving) */
    int n_tensors;
    param_tensor *tensors;
    size_t n_params;
    float *params, *grads;
    float *wte, *out_norm, *w_out; /* w_out = wte when tied */
    float *dwte, *dout_norm, *dw_out;
    layer_params *lp, *lg; /* parameter and gradient views */
    /* activations */
    float *act_slab;
    size_t act_floats;
    layer_acts *la;
    float *xf, *xnf, *rstdf; /* final residual, its norm, 1/rms */
    int32_t *inp, *tgt;      /* (N) */
    float *losses;           /* (N) */
    float *logits;           /* (HEAD_ROWS, V) */
    float *rope;             /* rope table */
    float *att_scratch;
    /* gradient scratch shared by all layers */
    float *dx, *dxn, *dtmp, *dq, *dk, *dv, *dq2, *dk2, *datt, *dgate, *dup, *dact;
};

static void add_tensor(llama_train *m, const char *name, int64_t ne0, int64_t ne1, int decay) {
    param_tensor *t = &m->tensors[m->n_tensors++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_dims = ne1 > 1 || decay ? 2 : 1;
    t->ne[0] = ne0;
    t->ne[1] = ne1;
    t->n = (size_t)ne0 * ne1;
    t->offset = m->n_params;
    t->decay = decay;
    m->n_params += t->n;
}

void llama_train_free(llama_train *m) {
    if (!m) return;
    free(m->tensors);
    free(m->params);
    free(m->grads);
    free(m->lp);
    free(m->lg);
    free(m->la);
    free(m->act_slab);
    free(m->inp);
    free(m->tgt);
    msrnn_model_close(m->src);
    free(m);
}

msrnn_status llama_train_open(const char *path, int B, int T, int n_threads, llama_train **out) {
    *out = NULL;
    if (B <= 0 || T <= 0 || B > (1 << 16) || T > (1 << 20) || (int64_t)B * T > (1 << 24))
        return msrnn_fail(MSRNN_ERR_INVALID, "train: batch %d × context %d is out of range", B, T);
    llama_train *m = calloc(1, sizeof *m);
    if (!m) return msrnn_fail(MSRNN_ERR_NOMEM, "train: out of memory");
    msrnn_status st = msrnn_model_open(path, &m->src);
    if (st != MSRNN_OK) {
        free(m);
        return st;
    }
    const msrnn_model_info *in = &m->src->info;
    llama_shape *s = &m->s;
    s->n_vocab = in->n_vocab, s->dim = in->dim, s->n_layers = in->n_layers;
    s->n_heads = in->n_heads, s->n_kv_heads = in->n_kv_heads, s->head_dim = in->head_dim;
    s->ffn_dim = in->ffn_dim, s->n_ctx = in->n_ctx, s->rope_base = in->rope_base;
    s->norm_eps = in->norm_eps, s->tied = in->tied_output;
    m->n_rot = m->src->n_rot;
    m->B = B, m->T = T;
    m->n_threads = n_threads > 0 ? n_threads : omp_get_num_procs();
    if (T > s->n_ctx) {
        const int n_ctx = s->n_ctx;
        llama_train_free(m);
        return msrnn_fail(MSRNN_ERR_INVALID, "train: context %d exceeds the model's %d", T, n_ctx);
    }
    const int C = s->dim, V = s->n_vocab, L = s->n_layers, F = s->ffn_dim;
    const int QD = s->n_heads * s->head_dim, KD = s->n_kv_heads * s->head_dim;
    const size_t N = (size_t)B * T;

    /* parameters, in GGUF order */
    m->tensors = calloc((size_t)L * 9 + 3, sizeof *m->tensors);
    m->lp = calloc((size_t)L, sizeof *m->lp);
    m->lg = calloc((size_t)L, sizeof *m->lg);
    m->la = calloc((size_t)L, sizeof *m->la);
    if (!m->tensors || !m->lp || !m->lg || !m->la) {
        llama_train_free(m);
        return msrnn_fail(MSRNN_ERR_NOMEM, "train: out of memory");
    }
    char name[48];
    add_tensor(m, "token_embd.weight", C, V, 1);
    for (int l = 0; l < L; l++) {
#define T2(sfx, a, b, dec)                                                                         \
    (snprintf(name, sizeof name, "blk.%d." sfx, l), add_tensor(m, name, a, b, dec))
        T2("attn_norm.weight", C, 1, 0);
        T2("attn_q.weight", C, QD, 1);
        T2("attn_k.weight", C, KD, 1);
        T2("attn_v.weight", C, KD, 1);
        T2("attn_output.weight", QD, C, 1);
        T2("ffn_norm.weight", C, 1, 0);
        T2("ffn_gate.weight", C, F, 1);
        T2("ffn_up.weight", C, F, 1);
        T2("ffn_down.weight", F, C, 1);
#undef T2
    }
    add_tensor(m, "output_norm.weight", C, 1, 0);
    if (!s->tied) add_tensor(m, "output.weight", C, V, 1);
    m->params = malloc(m->n_params * sizeof(float));
    m->grads = calloc(m->n_params, sizeof(float));
    if (!m->params || !m->grads) {
        const size_t n_params = m->n_params;
        llama_train_free(m);
        return msrnn_fail(MSRNN_ERR_NOMEM, "train: out of memory for %zu parameters", n_params);
    }
    /* views */
    int ti = 0;
#define NEXT(p, g)                                                                                 \
    (p = m->params + m->tensors[ti].offset, g = m->grads + m->tensors[ti].offset, ti++)
    NEXT(m->wte, m->dwte);
    for (int l = 0; l < L; l++) {
        layer_params *p = &m->lp[l], *g = &m->lg[l];
        NEXT(p->attn_norm, g->attn_norm);
        NEXT(p->wq, g->wq);
        NEXT(p->wk, g->wk);
        NEXT(p->wv, g->wv);
        NEXT(p->wo, g->wo);
        NEXT(p->ffn_norm, g->ffn_norm);
        NEXT(p->w_gate, g->w_gate);
        NEXT(p->w_up, g->w_up);
        NEXT(p->w_down, g->w_down);
    }
    NEXT(m->out_norm, m->dout_norm);
    if (s->tied)
        m->w_out = m->wte, m->dw_out = m->dwte;
    else
        NEXT(m->w_out, m->dw_out);
#undef NEXT
    /* weights to f32 */
    const msrnn_model *src = m->src;
    const weight *ws[9];
    for (int i = 0; i < V; i++) weight_row(&src->tok_embd, i, m->wte + (size_t)i * C);
    for (int l = 0; l < L; l++) {
        const layer_weights *lw = &src->layers[l];
        layer_params *p = &m->lp[l];
        memcpy(p->attn_norm, lw->attn_norm, (size_t)C * sizeof(float));
        memcpy(p->ffn_norm, lw->ffn_norm, (size_t)C * sizeof(float));
        ws[0] = &lw->wq, ws[1] = &lw->wk, ws[2] = &lw->wv, ws[3] = &lw->wo;
        ws[4] = &lw->w_gate, ws[5] = &lw->w_up, ws[6] = &lw->w_down;
        float *dst[7] = {p->wq, p->wk, p->wv, p->wo, p->w_gate, p->w_up, p->w_down};
        for (int k = 0; k < 7; k++)
            for (int r = 0; r < ws[k]->out; r++)
                weight_row(ws[k], r, dst[k] + (size_t)r * ws[k]->in);
    }
    memcpy(m->out_norm, src->output_norm, (size_t)C * sizeof(float));
    if (!s->tied)
        for (int i = 0; i < V; i++) weight_row(&src->output, i, m->w_out + (size_t)i * C);

    /* activations: one slab */
    const size_t per_layer =
        N * (4 * (size_t)C + 2 * QD + 2 * KD + 3 * (size_t)F + 2) + (size_t)B * s->n_heads * T;
    const size_t att_scr = attention_scratch_floats(T, s->head_dim, m->n_threads);
    m->act_floats = per_layer * L + N * (2 * (size_t)C + 2) + (size_t)HEAD_ROWS * V +
                    rope_table_floats(T, m->n_rot) + att_scr +
                    /* gradient scratch */ N *
                        (3 * (size_t)C + 3 * (size_t)QD + 3 * (size_t)KD + 3 * (size_t)F);
    m->act_slab = malloc(m->act_floats * sizeof(float));
    m->inp = malloc(N * sizeof(int32_t));
    m->tgt = malloc(N * sizeof(int32_t));
    if (!m->act_slab || !m->inp || !m->tgt) {
        const double mb = m->act_floats * 4.0 / 1e6;
        llama_train_free(m);
        return msrnn_fail(MSRNN_ERR_NOMEM, "train: out of memory for %.1f MB of activations", mb);
    }
    float *p = m->act_slab;
#define TAKE(ptr, n) (ptr = p, p += (n))
    for (int l = 0; l < L; l++) {
        layer_acts *a = &m->la[l];
        TAKE(a->x, N * C);
        TAKE(a->xn1, N * C);
        TAKE(a->rstd1, N);
        TAKE(a->q, N * QD);
        TAKE(a->k, N * KD);
        TAKE(a->v, N * KD);
        TAKE(a->att, N * QD);
        TAKE(a->lse, (size_t)B * s->n_heads * T);
        TAKE(a->h, N * C);
        TAKE(a->xn2, N * C);
        TAKE(a->rstd2, N);
        TAKE(a->gate, N * F);
        TAKE(a->up, N * F);
        TAKE(a->act, N * F);
    }
    TAKE(m->xf, N * C);
    TAKE(m->xnf, N * C);
    TAKE(m->rstdf, N);
    TAKE(m->losses, N);
    TAKE(m->logits, (size_t)HEAD_ROWS * V);
    TAKE(m->rope, rope_table_floats(T, m->n_rot));
    TAKE(m->att_scratch, att_scr);
    TAKE(m->dx, N * C);
    TAKE(m->dxn, N * C);
    TAKE(m->dtmp, N * C);
    TAKE(m->dq, N * QD);
    TAKE(m->dq2, N * QD);
    TAKE(m->datt, N * QD);
    TAKE(m->dk, N * KD);
    TAKE(m->dk2, N * KD);
    TAKE(m->dv, N * KD);
    TAKE(m->dgate, N * F);
    TAKE(m->dup, N * F);
    TAKE(m->dact, N * F);
#undef TAKE
    rope_table_init(m->rope, T, m->n_rot, s->rope_base);
    *out = m;
    return MSRNN_OK;
}

const llama_shape *llama_train_shape(const llama_train *m) { return &m->s; }
int llama_train_n_tensors(const llama_train *m) { return m->n_tensors; }
const param_tensor *llama_train_tensor(const llama_train *m, int i) { return &m->tensors[i]; }
size_t llama_train_n_params(const llama_train *m) { return m->n_params; }
float *llama_train_params(llama_train *m) { return m->params; }
float *llama_train_grads(llama_train *m) { return m->grads; }
size_t llama_train_bytes(const llama_train *m) {
    return (2 * m->n_params + m->act_floats) * sizeof(float) + 2 * (size_t)m->B * m->T * 4;
}
void llama_train_zero_grad(llama_train *m) { memset(m->grads, 0, m->n_params * sizeof(float)); }

static msrnn_status split_tokens(llama_train *m, const int32_t *tokens) {
    const int T = m->T, V = m->s.n_vocab;
    for (int b = 0; b < m->B; b++)
        for (int t = 0; t <= T; t++) {
            const int32_t id = tokens[(size_t)b * (T + 1) + t];
            if (id < 0 || id >= V)
                return msrnn_fail(MSRNN_ERR_INVALID,
                                  "train: token %d at row %d, position %d is "
                                  "outside the vocabulary of %d",
                                  id, b, t, V);
            if (t < T) m->inp[(size_t)b * T + t] = id;
            if (t > 0) m->tgt[(size_t)b * T + t - 1] = id;
        }
    return MSRNN_OK;
}

static void forward(llama_train *m) {
    const llama_shape *s = &m->s;
    const int B = m->B, T = m->T, N = B * T, C = s->dim, F = s->ffn_dim;
    const int H = s->n_heads, Hk = s->n_kv_heads, d = s->head_dim, QD = H * d, KD = Hk * d;
    omp_set_num_threads(m->n_threads);
    kernels_set_threads(m->n_threads);
    embedding_forward(m->la[0].x, m->inp, m->wte, N, C);
    for (int l = 0; l < s->n_layers; l++) {
        layer_acts *a = &m->la[l];
        const layer_params *p = &m->lp[l];
        float *x_next = l + 1 < s->n_layers ? m->la[l + 1].x : m->xf;
        rmsnorm_forward(a->xn1, a->rstd1, a->x, p->attn_norm, N, C, s->norm_eps);
        matmul_forward(a->q, a->xn1, p->wq, N, C, QD);
        matmul_forward(a->k, a->xn1, p->wk, N, C, KD);
        matmul_forward(a->v, a->xn1, p->wv, N, C, KD);
        rope_forward(a->q, a->q, m->rope, N, T, H, d, m->n_rot);
        rope_forward(a->k, a->k, m->rope, N, T, Hk, d, m->n_rot);
        attention_forward(a->att, a->lse, a->q, a->k, a->v, B, T, H, Hk, d, m->att_scratch);
        matmul_forward(a->h, a->att, p->wo, N, QD, C);
        for (size_t i = 0; i < (size_t)N * C; i++) a->h[i] += a->x[i];
        rmsnorm_forward(a->xn2, a->rstd2, a->h, p->ffn_norm, N, C, s->norm_eps);
        matmul_forward(a->gate, a->xn2, p->w_gate, N, C, F);
        matmul_forward(a->up, a->xn2, p->w_up, N, C, F);
        swiglu_forward(a->act, a->gate, a->up, N, F);
        matmul_forward(x_next, a->act, p->w_down, N, F, C);
        for (size_t i = 0; i < (size_t)N * C; i++) x_next[i] += a->h[i];
    }
    rmsnorm_forward(m->xnf, m->rstdf, m->xf, m->out_norm, N, C, s->norm_eps);
}

/* The head, chunk by chunk: logits, losses, and (when dloss != 0) the gradient into dxn and
 * dw_out, the logits buffer reused for its own gradient. */
static double head(llama_train *m, float dloss) {
    const int N = m->B * m->T, C = m->s.dim, V = m->s.n_vocab;
    double sum = 0;
    for (int r0 = 0; r0 < N; r0 += HEAD_ROWS) {
        const int n = N - r0 < HEAD_ROWS ? N - r0 : HEAD_ROWS;
        matmul_forward(m->logits, m->xnf + (size_t)r0 * C, m->w_out, n, C, V);
        crossentropy_forward(m->losses + r0, m->logits, m->tgt + r0, n, V);
        if (dloss != 0) {
            crossentropy_backward(m->logits, m->logits, m->tgt + r0, dloss, n, V);
            matmul_backward(m->dxn + (size_t)r0 * C, m->dw_out, m->logits, m->xnf + (size_t)r0 * C,
                            m->w_out, n, C, V);
        }
    }
    for (int i = 0; i < N; i++) sum += m->losses[i];
    return sum / N;
}

msrnn_status llama_train_loss(llama_train *m, const int32_t *tokens, float *loss) {
    MSRNN_TRY(split_tokens(m, tokens));
    forward(m);
    *loss = (float)head(m, 0);
    return MSRNN_OK;
}

static void zero(float *p, size_t n) { memset(p, 0, n * sizeof(float)); }

msrnn_status llama_train_step(llama_train *m, const int32_t *tokens, float grad_scale,
                              float *loss) {
    MSRNN_TRY(split_tokens(m, tokens));
    forward(m);
    const llama_shape *s = &m->s;
    const int B = m->B, T = m->T, N = B * T, C = s->dim, F = s->ffn_dim;
    const int H = s->n_heads, Hk = s->n_kv_heads, d = s->head_dim, QD = H * d, KD = Hk * d;
    const size_t NC = (size_t)N * C;
    zero(m->dxn, NC);
    *loss = (float)head(m, grad_scale / N);
    zero(m->dx, NC);
    rmsnorm_backward(m->dx, m->dout_norm, m->dxn, m->xf, m->out_norm, m->rstdf, N, C);
    for (int l = s->n_layers - 1; l >= 0; l--) {
        const layer_acts *a = &m->la[l];
        const layer_params *p = &m->lp[l];
        layer_params *g = &m->lg[l];
        /* ffn: x_next = h + Wdown · swiglu(Wgate xn2, Wup xn2); dx holds d x_next */
        zero(m->dact, (size_t)N * F);
        matmul_backward(m->dact, g->w_down, m->dx, a->act, p->w_down, N, F, C);
        zero(m->dgate, (size_t)N * F);
        zero(m->dup, (size_t)N * F);
        swiglu_backward(m->dgate, m->dup, m->dact, a->gate, a->up, N, F);
        zero(m->dxn, NC);
        matmul_backward(m->dxn, g->w_gate, m->dgate, a->xn2, p->w_gate, N, C, F);
        matmul_backward(m->dxn, g->w_up, m->dup, a->xn2, p->w_up, N, C, F);
        rmsnorm_backward(m->dx, g->ffn_norm, m->dxn, a->h, p->ffn_norm, a->rstd2, N, C);
        /* attention: h = x + Wo · attn(rope(Wq xn1), rope(Wk xn1), Wv xn1); dx holds d h */
        zero(m->datt, (size_t)N * QD);
        matmul_backward(m->datt, g->wo, m->dx, a->att, p->wo, N, QD, C);
        zero(m->dq, (size_t)N * QD);
        zero(m->dk, (size_t)N * KD);
        zero(m->dv, (size_t)N * KD);
        attention_backward(m->dq, m->dk, m->dv, m->datt, a->q, a->k, a->v, a->att, a->lse, B, T, H,
                           Hk, d, m->att_scratch);
        zero(m->dq2, (size_t)N * QD);
        zero(m->dk2, (size_t)N * KD);
        rope_backward(m->dq2, m->dq, m->rope, N, T, H, d, m->n_rot);
        rope_backward(m->dk2, m->dk, m->rope, N, T, Hk, d, m->n_rot);
        zero(m->dxn, NC);
        matmul_backward(m->dxn, g->wq, m->dq2, a->xn1, p->wq, N, C, QD);
        matmul_backward(m->dxn, g->wk, m->dk2, a->xn1, p->wk, N, C, KD);
        matmul_backward(m->dxn, g->wv, m->dv, a->xn1, p->wv, N, C, KD);
        rmsnorm_backward(m->dx, g->attn_norm, m->dxn, a->x, p->attn_norm, a->rstd1, N, C);
    }
    embedding_backward(m->dwte, m->dx, m->inp, N, C);
    return MSRNN_OK;
}

msrnn_status llama_train_save(const llama_train *m, const char *path, int f16,
                              msrnn_status (*extra)(void *ctx, struct gguf_writer *w), void *ctx) {
    gguf_writer *w = gguf_writer_new();
    if (!w) return msrnn_fail(MSRNN_ERR_NOMEM, "save: out of memory");
    const gguf_file *f = m->src->file;
    msrnn_status st = MSRNN_OK;
    for (uint64_t i = 0; st == MSRNN_OK && i < f->n_kv; i++) {
        const gguf_str k = f->kv[i].key;
        if (k.len > 12 && !memcmp(k.ptr, "msrnn.train.", 12)) continue; /* checkpoint state */
        st = gguf_writer_set_kv(w, &f->kv[i]);
    }
    if (st == MSRNN_OK) st = gguf_writer_set_u32(w, "general.file_type", f16 ? 1 : 0);
    size_t biggest = 0;
    for (int i = 0; i < m->n_tensors; i++)
        if (m->tensors[i].n > biggest) biggest = m->tensors[i].n;
    uint16_t *h = f16 ? malloc(biggest * sizeof(uint16_t)) : NULL;
    if (st == MSRNN_OK && f16 && !h) st = msrnn_fail(MSRNN_ERR_NOMEM, "save: out of memory");
    for (int i = 0; st == MSRNN_OK && i < m->n_tensors; i++) {
        const param_tensor *t = &m->tensors[i];
        const uint64_t ne[2] = {(uint64_t)t->ne[0], (uint64_t)t->ne[1]};
        const float *src = m->params + t->offset;
        if (f16 && t->decay) {
            quantize_row(TYPE_F16, src, h, (int64_t)t->n);
            st = gguf_writer_add_tensor(w, t->name, TYPE_F16, (uint32_t)t->n_dims, ne, h);
        } else {
            st = gguf_writer_add_tensor(w, t->name, TYPE_F32, (uint32_t)t->n_dims, ne, src);
        }
    }
    free(h);
    if (st == MSRNN_OK && extra) st = extra(ctx, w);
    if (st == MSRNN_OK) st = gguf_writer_write(w, path);
    gguf_writer_free(w);
    return st;
}
