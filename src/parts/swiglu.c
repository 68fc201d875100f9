/* swiglu.c — the SwiGLU FFN of Llama: out = W_down (silu(W_gate xn) ⊙ W_up xn). Stateless. */
#include <string.h>

#include "nn/ops.h"
#include "parts/part.h"

enum { W_GATE, W_UP, W_DOWN, N_W };

static int ffn_params(const hparams *hp, part_param out[PART_MAX_PARAMS]) {
    const int64_t D = hp->info.dim, F = hp->info.ffn_dim;
    out[W_GATE] = (part_param){"ffn_gate.weight", D, F, 1, 1, 1.0f, 0, INIT_NORMAL, 0, 0, 1};
    out[W_UP] = (part_param){"ffn_up.weight", D, F, 1, 1, 1.0f, 0, INIT_NORMAL, 0, 0, 1};
    out[W_DOWN] = (part_param){"ffn_down.weight", F, D, 1, 1, 1.0f, 0, INIT_NORMAL_RESID, 0, 0, 1};
    return N_W;
}

/* ---- inference ------------------------------------------------------------------------------- */

static msrnn_status ffn_check(const hparams *hp, const msrnn_session_params *p) {
    (void)hp, (void)p;
    return MSRNN_OK;
}
static size_t ffn_state_bytes(const hparams *hp, const msrnn_session_params *p) {
    (void)hp, (void)p;
    return 0;
}
static void ffn_state_init(void *state, const hparams *hp, const msrnn_session_params *p) {
    (void)state, (void)hp, (void)p;
}
static void ffn_state_reset(void *state) { (void)state; }
static int ffn_bounded(const void *state) {
    (void)state;
    return 1;
}
static size_t ffn_used_bytes(const void *state) {
    (void)state;
    return 0;
}

static size_t ffn_work_floats(const hparams *hp, int n_batch) {
    return 2 * (size_t)n_batch * hp->info.ffn_dim; /* gate (then the product), up */
}
static int ffn_max_in(const hparams *hp) {
    return hp->info.ffn_dim > hp->info.dim ? hp->info.ffn_dim : hp->info.dim;
}

static msrnn_status ffn_infer(const part_step *c, const float *xn, float *out) {
    const int n = c->n, F = c->hp->info.ffn_dim;
    float *gate = c->work, *up = gate + (size_t)n * F;
    float *gu[2] = {gate, up};
    const weight *wgu[2] = {&c->w[W_GATE], &c->w[W_UP]};
    matmul_many(2, gu, xn, wgu, n, c->scratch, c->n_threads);
    swiglu_forward(gate, gate, up, n, F, c->n_threads);
    matmul(out, gate, &c->w[W_DOWN], n, c->scratch, c->n_threads);
    return MSRNN_OK;
}

/* ---- training -------------------------------------------------------------------------------- */

/* saved per layer: gate, up, their SwiGLU product; scratch: the three gradients */
static size_t ffn_train_act_floats(const hparams *hp, int B, int T) {
    return 3 * (size_t)B * T * hp->info.ffn_dim;
}
static size_t ffn_train_shared_floats(const hparams *hp, int B, int T) {
    (void)hp, (void)B, (void)T;
    return 0;
}
static size_t ffn_train_scratch_floats(const hparams *hp, int B, int T, int n_threads) {
    (void)n_threads;
    return 3 * (size_t)B * T * hp->info.ffn_dim;
}
static void ffn_train_init(const hparams *hp, int B, int T, float *shared) {
    (void)hp, (void)B, (void)T, (void)shared;
}

static void ffn_train_forward(const part_train *c, const float *xn, float *out) {
    const int N = c->B * c->T, C = c->hp->info.dim, F = c->hp->info.ffn_dim;
    float *gate = c->act, *up = gate + (size_t)N * F, *act = up + (size_t)N * F;
    matmul_forward(gate, xn, c->w[W_GATE], N, C, F, c->n_threads);
    matmul_forward(up, xn, c->w[W_UP], N, C, F, c->n_threads);
    swiglu_forward(act, gate, up, N, F, c->n_threads);
    matmul_forward(out, act, c->w[W_DOWN], N, F, C, c->n_threads);
}

static void ffn_train_backward(const part_train *c, const float *xn, const float *dout,
                               float *dxn) {
    const int N = c->B * c->T, C = c->hp->info.dim, F = c->hp->info.ffn_dim;
    const size_t NF = (size_t)N * F;
    const float *gate = c->act, *up = gate + NF, *act = up + NF;
    float *dact = c->scratch, *dgate = dact + NF, *dup = dgate + NF;
    memset(dact, 0, NF * sizeof(float));
    matmul_backward(dact, c->dw[W_DOWN], dout, act, c->w[W_DOWN], N, F, C, c->n_threads);
    memset(dgate, 0, NF * sizeof(float));
    memset(dup, 0, NF * sizeof(float));
    swiglu_backward(dgate, dup, dact, gate, up, N, F, c->n_threads);
    matmul_backward(dxn, c->dw[W_GATE], dgate, xn, c->w[W_GATE], N, C, F, c->n_threads);
    matmul_backward(dxn, c->dw[W_UP], dup, xn, c->w[W_UP], N, C, F, c->n_threads);
}

const part_kind part_swiglu = {
    "swiglu",
    NULL,
    NULL,
    ffn_params,
    ffn_check,
    ffn_state_bytes,
    ffn_state_init,
    ffn_state_reset,
    ffn_bounded,
    ffn_used_bytes,
    NULL,
    NULL,
    ffn_work_floats,
    ffn_max_in,
    NULL,
    ffn_infer,
    ffn_train_act_floats,
    ffn_train_shared_floats,
    ffn_train_scratch_floats,
    ffn_train_init,
    ffn_train_forward,
    ffn_train_backward,
    NULL,
    NULL,
};
