/* mf_block.c — MemoryFormer's memory block in place of the FFN (METHODS.md §4, format §6):
 *
 *     h   = memlayer₁(xn)              τ bits per chunk of xn, width F = K·τ₂ (K = D / τ)
 *     hn  = LayerNorm(h)               with centring, population variance, weight and bias
 *     out = memlayer₂(hn)              τ₂ bits per chunk of hn (K chunks), width D
 *
 * each memory layer with an optional bias. Stateless. Its keys are read by mf_attn.c (the same
 * hparams). The memory layer is src/nn/memlayer.c.
 */
#include <string.h>

#include "nn/memlayer.h"
#include "nn/ops.h"
#include "parts/part.h"

/* the layer's tensors, in file order; the biases are there only when the file has them */
typedef struct {
    int table1, bias1, ln_w, ln_b, table2, bias2, n; /* -1: absent */
} mb_index;

static mb_index index_of(const hparams *hp) {
    mb_index x;
    int n = 0;
    x.table1 = n++;
    x.bias1 = hp->mf_biases & MF_BIAS_MEM1 ? n++ : -1;
    x.ln_w = n++;
    x.ln_b = n++;
    x.table2 = n++;
    x.bias2 = hp->mf_biases & MF_BIAS_MEM2 ? n++ : -1;
    x.n = n;
    return x;
}

static memlayer layer1(const hparams *hp) {
    const int K = hp->info.dim / hp->hash_bits;
    const memlayer L = {hp->hash_bits, K, K * hp->block_hash_bits, hp->weighting, hp->temperature};
    return L;
}
static memlayer layer2(const hparams *hp) {
    const memlayer L = {hp->block_hash_bits, hp->info.dim / hp->hash_bits, hp->info.dim,
                        hp->weighting, hp->temperature};
    return L;
}

static int mb_params(const hparams *hp, part_param out[PART_MAX_PARAMS]) {
    const mb_index x = index_of(hp);
    const memlayer L1 = layer1(hp), L2 = layer2(hp);
    out[x.table1] = (part_param){
        "ffn_mem1_table", L1.out, (int64_t)1 << L1.bits, 1, 1, 1.0f, 0, INIT_NORMAL, 0, 0, L1.K};
    if (x.bias1 >= 0)
        out[x.bias1] = (part_param){"ffn_mem1_bias", L1.out, 1, 0, 0, 1.0f, 0, INIT_ZEROS, 0, 0, 1};
    out[x.ln_w] = (part_param){"ffn_ln.weight", L1.out, 1, 0, 0, 1.0f, 0, INIT_ONES, 0, 0, 1};
    out[x.ln_b] = (part_param){"ffn_ln.bias", L1.out, 1, 0, 0, 1.0f, 0, INIT_ZEROS, 0, 0, 1};
    out[x.table2] = (part_param){"ffn_mem2_table",
                                 L2.out,
                                 (int64_t)1 << L2.bits,
                                 1,
                                 1,
                                 1.0f,
                                 0,
                                 INIT_NORMAL_RESID,
                                 0,
                                 0,
                                 L2.K};
    if (x.bias2 >= 0)
        out[x.bias2] = (part_param){"ffn_mem2_bias", L2.out, 1, 0, 0, 1.0f, 0, INIT_ZEROS, 0, 0, 1};
    return x.n;
}

/* ---- inference ------------------------------------------------------------------------------- */

static msrnn_status mb_check(const hparams *hp, const msrnn_session_params *p) {
    (void)hp, (void)p;
    return MSRNN_OK;
}
static size_t mb_state_bytes(const hparams *hp, const msrnn_session_params *p) {
    (void)hp, (void)p;
    return 0;
}
static void mb_state_init(void *state, const hparams *hp, const msrnn_session_params *p) {
    (void)state, (void)hp, (void)p;
}
static void mb_state_reset(void *state) { (void)state; }
static int mb_bounded(const void *state) {
    (void)state;
    return 1;
}
static size_t mb_used_bytes(const void *state) {
    (void)state;
    return 0;
}

/* the hash of one memory layer (indices, weights: K each per token), h, hn */
typedef struct {
    int32_t *idx1, *idx2;
    float *wt1, *wt2, *h, *hn, *mean, *rstd;
} mb_buf;

static mb_buf buf_of(const hparams *hp, size_t n, float *p) {
    const memlayer L1 = layer1(hp);
    const size_t nK = n * L1.K, F = (size_t)L1.out;
    mb_buf b;
    b.idx1 = (int32_t *)p, p += nK;
    b.idx2 = (int32_t *)p, p += nK;
    b.wt1 = p, p += nK;
    b.wt2 = p, p += nK;
    b.h = p, p += n * F;
    b.hn = p, p += n * F;
    b.mean = p, p += n;
    b.rstd = p;
    return b;
}
static size_t buf_floats(const hparams *hp, size_t n) {
    const memlayer L1 = layer1(hp);
    return n * (4 * (size_t)L1.K + 2 * (size_t)L1.out + 2);
}

static size_t mb_work_floats(const hparams *hp, int n_batch) { return buf_floats(hp, n_batch); }
static int mb_max_in(const hparams *hp) { return hp->info.dim; }

static const float *f32_or_null(const weight *w, int i) {
    return i >= 0 ? (const float *)w[i].data : NULL;
}

static msrnn_status mb_infer(const part_step *c, const float *xn, float *out) {
    const hparams *hp = c->hp;
    const int n = c->n;
    const memlayer L1 = layer1(hp), L2 = layer2(hp);
    const mb_index x = index_of(hp);
    const mb_buf b = buf_of(hp, n, c->work);
    const weight *w = c->w;
    memlayer_hash(&L1, xn, n, b.idx1, b.wt1, c->n_threads);
    memlayer_gather(&L1, w[x.table1].data, w[x.table1].type, f32_or_null(w, x.bias1), b.idx1, b.wt1,
                    n, b.h, c->n_threads);
    layernorm_forward(b.hn, NULL, NULL, b.h, w[x.ln_w].data, w[x.ln_b].data, n, L1.out, hp->ln_eps,
                      c->n_threads);
    memlayer_hash(&L2, b.hn, n, b.idx2, b.wt2, c->n_threads);
    memlayer_gather(&L2, w[x.table2].data, w[x.table2].type, f32_or_null(w, x.bias2), b.idx2, b.wt2,
                    n, out, c->n_threads);
    return MSRNN_OK;
}

/* ---- training: the same, keeping every buffer for backward ---------------------------------- */

static size_t mb_train_act_floats(const hparams *hp, int B, int T) {
    return buf_floats(hp, (size_t)B * T);
}
static size_t mb_train_shared_floats(const hparams *hp, int B, int T) {
    (void)hp, (void)B, (void)T;
    return 0;
}
static size_t mb_train_scratch_floats(const hparams *hp, int B, int T, int n_threads) {
    (void)n_threads;
    return 2 * (size_t)B * T * layer1(hp).out; /* dhn, dh */
}
static void mb_train_init(const hparams *hp, int B, int T, float *shared) {
    (void)hp, (void)B, (void)T, (void)shared;
}

static const float *p_or_null(const float *const *w, int i) { return i >= 0 ? w[i] : NULL; }

static void mb_train_forward(const part_train *c, const float *xn, float *out) {
    const hparams *hp = c->hp;
    const int N = c->B * c->T;
    const memlayer L1 = layer1(hp), L2 = layer2(hp);
    const mb_index x = index_of(hp);
    const mb_buf b = buf_of(hp, N, c->act);
    memlayer_hash(&L1, xn, N, b.idx1, b.wt1, c->n_threads);
    memlayer_gather(&L1, c->w[x.table1], TYPE_F32, p_or_null(c->w, x.bias1), b.idx1, b.wt1, N, b.h,
                    c->n_threads);
    layernorm_forward(b.hn, b.mean, b.rstd, b.h, c->w[x.ln_w], c->w[x.ln_b], N, L1.out, hp->ln_eps,
                      c->n_threads);
    memlayer_hash(&L2, b.hn, N, b.idx2, b.wt2, c->n_threads);
    memlayer_gather(&L2, c->w[x.table2], TYPE_F32, p_or_null(c->w, x.bias2), b.idx2, b.wt2, N, out,
                    c->n_threads);
}

static void mb_train_backward(const part_train *c, const float *xn, const float *dout, float *dxn) {
    const hparams *hp = c->hp;
    const int N = c->B * c->T;
    const memlayer L1 = layer1(hp), L2 = layer2(hp);
    const mb_index x = index_of(hp);
    const mb_buf b = buf_of(hp, N, c->act);
    const size_t NF = (size_t)N * L1.out;
    float *dhn = c->scratch, *dh = dhn + NF;
    memset(dhn, 0, NF * sizeof(float));
    memset(dh, 0, NF * sizeof(float));
    memlayer_backward(&L2, c->w[x.table2], b.hn, b.idx2, b.wt2, dout, N, c->dw[x.table2],
                      x.bias2 >= 0 ? c->dw[x.bias2] : NULL, dhn, c->n_threads);
    layernorm_backward(dh, c->dw[x.ln_w], c->dw[x.ln_b], dhn, b.h, c->w[x.ln_w], b.mean, b.rstd, N,
                       L1.out, c->n_threads);
    memlayer_backward(&L1, c->w[x.table1], xn, b.idx1, b.wt1, dh, N, c->dw[x.table1],
                      x.bias1 >= 0 ? c->dw[x.bias1] : NULL, dxn, c->n_threads);
}

const part_kind part_mf_block = {
    "mf_block",
    NULL,
    NULL,
    mb_params,
    mb_check,
    mb_state_bytes,
    mb_state_init,
    mb_state_reset,
    mb_bounded,
    mb_used_bytes,
    NULL,
    NULL,
    mb_work_floats,
    mb_max_in,
    NULL,
    mb_infer,
    mb_train_act_floats,
    mb_train_shared_floats,
    mb_train_scratch_floats,
    mb_train_init,
    mb_train_forward,
    mb_train_backward,
    NULL,
    NULL,
};
