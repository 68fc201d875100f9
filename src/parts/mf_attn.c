/* mf_attn.c — MemoryFormer's token mixer (METHODS.md §4, format §6): one hash of the normed input
 * selects, per chunk of τ numbers, a row of the fused Q/K/V table (a row holds q | k | v), the
 * weighted rows summed give q, k and v; then Llama's causal multi-head attention with RoPE, and
 * **no output projection**: the heads' concatenated output is the block's. Also the home of
 * MemoryFormer's `memoryformer.*` keys (both of its parts read the hparams they fill).
 *
 * Inference keeps softmax attention's KV cache (kv_cache.h: the full cache and every bounded one),
 * so MemoryFormer runs with --kv sink/tova/... like a Llama. Training: memlayer forward/backward
 * (src/nn/memlayer.c) around ops.h's flash attention.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "nn/memlayer.h"
#include "nn/ops.h"
#include "parts/kv_cache.h"
#include "parts/part.h"

enum { W_TABLE, W_BIAS, N_W_MAX };

/* ---- keys --------------------------------------------------------------------------------- */

static msrnn_status get_bits(const gguf_file *f, const char *arch, const char *what, int required,
                             int *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, what);
    uint32_t v = (uint32_t)*out;
    MSRNN_TRY(gguf_get_u32(f, key, required, &v));
    if (v < 1 || v > MEM_MAX_BITS)
        return status_fail(MSRNN_ERR_FORMAT, "%s: %s = %u is out of range [1, %d]", f->path, key, v,
                           MEM_MAX_BITS);
    *out = (int)v;
    return MSRNN_OK;
}

static msrnn_status mf_read_keys(const gguf_file *f, const char *arch, hparams *hp) {
    msrnn_model_info *in = &hp->info;
    MSRNN_TRY(get_bits(f, arch, "hash_bits", 1, &hp->hash_bits));
    hp->block_hash_bits = hp->hash_bits + 2 <= MEM_MAX_BITS ? hp->hash_bits + 2 : MEM_MAX_BITS;
    MSRNN_TRY(get_bits(f, arch, "block_hash_bits", 0, &hp->block_hash_bits));
    char key[128];
    snprintf(key, sizeof key, "%s.weighting", arch);
    gguf_str wt;
    MSRNN_TRY(gguf_get_str(f, key, 1, &wt));
    if (gguf_str_eq(wt, "paper"))
        hp->weighting = MEM_WEIGHT_PAPER;
    else if (gguf_str_eq(wt, "code"))
        hp->weighting = MEM_WEIGHT_CODE;
    else
        return status_fail(MSRNN_ERR_FORMAT, "%s: %s is '%.*s'; expected 'paper' or 'code'",
                           f->path, key, (int)(wt.len > 32 ? 32 : wt.len), wt.ptr);
    hp->temperature = 1.0f;
    snprintf(key, sizeof key, "%s.temperature", arch);
    MSRNN_TRY(gguf_get_f32(f, key, 0, &hp->temperature));
    if (!(hp->temperature > 0) || !isfinite(hp->temperature))
        return status_fail(MSRNN_ERR_FORMAT, "%s: %s = %g must be a positive number", f->path, key,
                           (double)hp->temperature);
    hp->ln_eps = 1e-5f;
    snprintf(key, sizeof key, "%s.attention.layer_norm_epsilon", arch);
    MSRNN_TRY(gguf_get_f32(f, key, 0, &hp->ln_eps));
    if (!(hp->ln_eps >= 0) || !isfinite(hp->ln_eps))
        return status_fail(MSRNN_ERR_FORMAT, "%s: %s = %g must be a number >= 0", f->path, key,
                           (double)hp->ln_eps);
    if (in->n_kv_heads != in->n_heads)
        return status_fail(MSRNN_ERR_FORMAT,
                           "%s: memoryformer is multi-head attention only: head_count_kv %d must "
                           "equal head_count %d",
                           f->path, in->n_kv_heads, in->n_heads);
    if (in->dim % hp->hash_bits)
        return status_fail(MSRNN_ERR_FORMAT,
                           "%s: embedding_length %d is not a multiple of %s.hash_bits %d", f->path,
                           in->dim, arch, hp->hash_bits);
    const int F = in->dim / hp->hash_bits * hp->block_hash_bits;
    if (in->ffn_dim && in->ffn_dim != F)
        return status_fail(MSRNN_ERR_FORMAT,
                           "%s: %s.feed_forward_length %d must be the block's width K·τ₂ = %d / %d "
                           "· %d = %d",
                           f->path, arch, in->ffn_dim, in->dim, hp->hash_bits, hp->block_hash_bits,
                           F);
    in->ffn_dim = F;
    /* the optional biases: present in layer 0 means present in every layer (bind checks) */
    hp->mf_biases = (gguf_find_tensor(f, "blk.0.attn_qkv_bias") ? MF_BIAS_QKV : 0) |
                    (gguf_find_tensor(f, "blk.0.ffn_mem1_bias") ? MF_BIAS_MEM1 : 0) |
                    (gguf_find_tensor(f, "blk.0.ffn_mem2_bias") ? MF_BIAS_MEM2 : 0);
    return MSRNN_OK;
}

static msrnn_status mf_write_keys(const hparams *hp, const char *arch, gguf_writer *w) {
    char key[128];
    snprintf(key, sizeof key, "%s.hash_bits", arch);
    MSRNN_TRY(gguf_writer_set_u32(w, key, (uint32_t)hp->hash_bits));
    snprintf(key, sizeof key, "%s.block_hash_bits", arch);
    MSRNN_TRY(gguf_writer_set_u32(w, key, (uint32_t)hp->block_hash_bits));
    snprintf(key, sizeof key, "%s.weighting", arch);
    MSRNN_TRY(gguf_writer_set_str(w, key, hp->weighting == MEM_WEIGHT_CODE ? "code" : "paper"));
    snprintf(key, sizeof key, "%s.temperature", arch);
    MSRNN_TRY(gguf_writer_set_f32(w, key, hp->temperature > 0 ? hp->temperature : 1.0f));
    snprintf(key, sizeof key, "%s.attention.layer_norm_epsilon", arch);
    return gguf_writer_set_f32(w, key, hp->ln_eps > 0 ? hp->ln_eps : 1e-5f);
}

/* ---- parameters --------------------------------------------------------------------------- */

/* Files are MHA (METHODS.md §6: a row is q | k | v of D each); the part itself takes any H_kv
 * (rows q | k | v of H·d, H_kv·d, H_kv·d), as the parts' test runs every mixer with GQA. */
static int q_width(const hparams *hp) { return hp->info.n_heads * hp->info.head_dim; }
static int kv_width(const hparams *hp) { return hp->info.n_kv_heads * hp->info.head_dim; }

static memlayer qkv_layer(const hparams *hp) {
    const memlayer L = {hp->hash_bits, hp->info.dim / hp->hash_bits, q_width(hp) + 2 * kv_width(hp),
                        hp->weighting, hp->temperature};
    return L;
}

static int mf_params(const hparams *hp, part_param out[PART_MAX_PARAMS]) {
    const memlayer L = qkv_layer(hp);
    int n = 0;
    out[n++] = (part_param){
        "attn_qkv_table", L.out, (int64_t)1 << L.bits, 1, 1, 1.0f, 0, INIT_NORMAL, 0, 0, L.K};
    if (hp->mf_biases & MF_BIAS_QKV)
        out[n++] = (part_param){"attn_qkv_bias", L.out, 1, 0, 0, 1.0f, 0, INIT_ZEROS, 0, 0, 1};
    return n;
}

/* rows of qkv (n, QD + 2 KD) into q (n, QD), k and v (n, KD); join_qkv: the other way */
static void split_qkv(const float *qkv, float *q, float *k, float *v, int n, int QD, int KD) {
    const size_t row = (size_t)QD + 2 * (size_t)KD;
    for (int t = 0; t < n; t++) {
        const float *r = qkv + (size_t)t * row;
        memcpy(q + (size_t)t * QD, r, (size_t)QD * sizeof(float));
        memcpy(k + (size_t)t * KD, r + QD, (size_t)KD * sizeof(float));
        memcpy(v + (size_t)t * KD, r + QD + KD, (size_t)KD * sizeof(float));
    }
}
static void join_qkv(float *qkv, const float *q, const float *k, const float *v, int n, int QD,
                     int KD) {
    const size_t row = (size_t)QD + 2 * (size_t)KD;
    for (int t = 0; t < n; t++) {
        float *r = qkv + (size_t)t * row;
        memcpy(r, q + (size_t)t * QD, (size_t)QD * sizeof(float));
        memcpy(r + QD, k + (size_t)t * KD, (size_t)KD * sizeof(float));
        memcpy(r + QD + KD, v + (size_t)t * KD, (size_t)KD * sizeof(float));
    }
}

/* ---- inference: q | k | v = memlayer(xn); out = attend(rope(q), rope(k), v) ------------------ */

typedef struct {
    int32_t *idx;
    float *wt, *qkv, *q, *k, *v, *rope;
} mf_work;

static mf_work work_of(const hparams *hp, int n, float *w) {
    const memlayer L = qkv_layer(hp);
    const size_t QD = (size_t)q_width(hp), KD = (size_t)kv_width(hp), nK = (size_t)n * L.K;
    mf_work s;
    s.idx = (int32_t *)w, w += nK;
    s.wt = w, w += nK;
    s.qkv = w, w += (size_t)n * L.out;
    s.q = w, w += (size_t)n * QD;
    s.k = w, w += (size_t)n * KD;
    s.v = w, w += (size_t)n * KD;
    s.rope = w;
    return s;
}

static size_t mf_work_floats(const hparams *hp, int n_batch) {
    const memlayer L = qkv_layer(hp);
    return (size_t)n_batch * (2 * (size_t)L.K + 2 * (size_t)L.out) +
           rope_table_floats(n_batch, hp->n_rot);
}

static int mf_max_in(const hparams *hp) { return hp->info.dim; }

static void mf_prepare(const part_step *c) {
    const mf_work w = work_of(c->hp, c->n, c->work);
    rope_table_at(w.rope, c->pos, c->n, c->hp->n_rot, c->hp->info.rope_base);
}

static msrnn_status mf_infer(const part_step *c, const float *xn, float *out) {
    const hparams *hp = c->hp;
    const int n = c->n, H = hp->info.n_heads, Hkv = hp->info.n_kv_heads, d = hp->info.head_dim;
    const int QD = q_width(hp), KD = kv_width(hp);
    const memlayer L = qkv_layer(hp);
    mf_work w = work_of(hp, n, c->work);
    memlayer_hash(&L, xn, n, w.idx, w.wt, c->n_threads);
    const weight *T = &c->w[W_TABLE];
    const float *bias = hp->mf_biases & MF_BIAS_QKV ? (const float *)c->w[W_BIAS].data : NULL;
    memlayer_gather(&L, T->data, T->type, bias, w.idx, w.wt, n, w.qkv, c->n_threads);
    split_qkv(w.qkv, w.q, w.k, w.v, n, QD, KD);
    rope_forward(w.q, w.q, w.rope, n, n, H, d, hp->n_rot, c->n_threads);
    rope_forward(w.k, w.k, w.rope, n, n, Hkv, d, hp->n_rot, c->n_threads);
    return kv_cache_attend_seqs(c->state, c->layer, c->n_seq, c->seq_start, w.q, w.k, w.v, c->pos,
                                out, c->n_threads);
}

/* ---- training ----------------------------------------------------------------------------- */

/* saved per layer: the hash (indices, weights), q and k after RoPE, v, the attention output, its
 * log-sum-exp */
typedef struct {
    int32_t *idx;
    float *wt, *q, *k, *v, *att, *lse;
} mf_acts;
/* shared scratch: flash attention's tiles, the table's output rows (then their gradient), the
 * gradients of q, k, v before and after RoPE */
typedef struct {
    float *att, *qkv, *dq, *dk, *dv, *dq2, *dk2;
} mf_scratch;

static mf_acts acts_of(const part_train *c) {
    const hparams *hp = c->hp;
    const memlayer L = qkv_layer(hp);
    const size_t N = (size_t)c->B * c->T, QD = (size_t)q_width(hp), KD = (size_t)kv_width(hp);
    float *p = c->act;
    mf_acts a;
    a.idx = (int32_t *)p, p += N * L.K;
    a.wt = p, p += N * L.K;
    a.q = p, p += N * QD;
    a.k = p, p += N * KD;
    a.v = p, p += N * KD;
    a.att = p, p += N * QD;
    a.lse = p;
    return a;
}

static size_t mf_train_act_floats(const hparams *hp, int B, int T) {
    const memlayer L = qkv_layer(hp);
    const size_t N = (size_t)B * T;
    return N * (2 * (size_t)L.K + L.out + (size_t)q_width(hp)) + (size_t)B * hp->info.n_heads * T;
}

static size_t mf_train_shared_floats(const hparams *hp, int B, int T) {
    (void)B;
    return rope_table_floats(T, hp->n_rot);
}

static size_t mf_train_scratch_floats(const hparams *hp, int B, int T, int n_threads) {
    const size_t N = (size_t)B * T, QD = (size_t)q_width(hp), KD = (size_t)kv_width(hp);
    return attention_scratch_floats(T, hp->info.head_dim, n_threads) + N * (3 * QD + 5 * KD);
}

static mf_scratch scratch_of(const part_train *c) {
    const hparams *hp = c->hp;
    const size_t N = (size_t)c->B * c->T, QD = (size_t)q_width(hp), KD = (size_t)kv_width(hp);
    float *p = c->scratch;
    mf_scratch s;
    s.att = p, p += attention_scratch_floats(c->T, hp->info.head_dim, c->n_threads);
    s.qkv = p, p += N * (QD + 2 * KD);
    s.dq = p, p += N * QD;
    s.dk = p, p += N * KD;
    s.dv = p, p += N * KD;
    s.dq2 = p, p += N * QD;
    s.dk2 = p;
    return s;
}

static void mf_train_init(const hparams *hp, int B, int T, float *shared) {
    (void)B;
    rope_table_init(shared, T, hp->n_rot, hp->info.rope_base);
}

static void mf_train_forward(const part_train *c, const float *xn, float *out) {
    const hparams *hp = c->hp;
    const int B = c->B, T = c->T, N = B * T, H = hp->info.n_heads, Hkv = hp->info.n_kv_heads;
    const int d = hp->info.head_dim, QD = q_width(hp), KD = kv_width(hp);
    const memlayer L = qkv_layer(hp);
    const mf_acts a = acts_of(c);
    const mf_scratch s = scratch_of(c);
    memlayer_hash(&L, xn, N, a.idx, a.wt, c->n_threads);
    memlayer_gather(&L, c->w[W_TABLE], TYPE_F32, hp->mf_biases & MF_BIAS_QKV ? c->w[W_BIAS] : NULL,
                    a.idx, a.wt, N, s.qkv, c->n_threads);
    split_qkv(s.qkv, a.q, a.k, a.v, N, QD, KD);
    rope_forward(a.q, a.q, c->shared, N, T, H, d, hp->n_rot, c->n_threads);
    rope_forward(a.k, a.k, c->shared, N, T, Hkv, d, hp->n_rot, c->n_threads);
    attention_forward(a.att, a.lse, a.q, a.k, a.v, B, T, H, Hkv, d, s.att, c->n_threads);
    memcpy(out, a.att, (size_t)N * QD * sizeof(float));
}

static void zero(float *p, size_t n) { memset(p, 0, n * sizeof(float)); }

static void mf_train_backward(const part_train *c, const float *xn, const float *dout, float *dxn) {
    const hparams *hp = c->hp;
    const int B = c->B, T = c->T, N = B * T, H = hp->info.n_heads, Hkv = hp->info.n_kv_heads;
    const int d = hp->info.head_dim, QD = q_width(hp), KD = kv_width(hp);
    const memlayer L = qkv_layer(hp);
    const mf_acts a = acts_of(c);
    const mf_scratch s = scratch_of(c);
    zero(s.dq, (size_t)N * QD);
    zero(s.dk, (size_t)N * KD);
    zero(s.dv, (size_t)N * KD);
    attention_backward(s.dq, s.dk, s.dv, dout, a.q, a.k, a.v, a.att, a.lse, B, T, H, Hkv, d, s.att,
                       c->n_threads);
    zero(s.dq2, (size_t)N * QD);
    zero(s.dk2, (size_t)N * KD);
    rope_backward(s.dq2, s.dq, c->shared, N, T, H, d, hp->n_rot, c->n_threads);
    rope_backward(s.dk2, s.dk, c->shared, N, T, Hkv, d, hp->n_rot, c->n_threads);
    join_qkv(s.qkv, s.dq2, s.dk2, s.dv, N, QD, KD); /* the gradient of the table's output rows */
    memlayer_backward(&L, c->w[W_TABLE], xn, a.idx, a.wt, s.qkv, N, c->dw[W_TABLE],
                      hp->mf_biases & MF_BIAS_QKV ? c->dw[W_BIAS] : NULL, dxn, c->n_threads);
}

const part_kind part_mf_attn = {
    "mf_attn",
    mf_read_keys,
    mf_write_keys,
    mf_params,
    kv_cache_check,
    kv_cache_state_bytes,
    kv_cache_state_init,
    kv_cache_state_reset,
    kv_cache_bounded,
    kv_cache_used_bytes,
    kv_cache_kept,
    kv_cache_summary,
    mf_work_floats,
    mf_max_in,
    mf_prepare,
    mf_infer,
    mf_train_act_floats,
    mf_train_shared_floats,
    mf_train_scratch_floats,
    mf_train_init,
    mf_train_forward,
    mf_train_backward,
    NULL,
    kv_cache_state_data,
};
