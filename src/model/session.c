/* session.c — the Llama block loop over one attention state.
 *
 * Every buffer is sized in msrnn_session_open from the hyper-parameters, n_batch and the memory
 * kind, and carved out of one allocation; msrnn_session_eval allocates nothing. Tokens are
 * processed in batches of up to n_batch: projections and the FFN see the whole batch at once
 * (sgemm), attention is delegated to the memory kind.
 *
 * Legend: B tokens in the batch, D model width, H/H_kv query/kv heads, d head dim, F FFN width, V
 * vocab.
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "memory/memory.h"
#include "model/model.h"

struct msrnn_session {
    msrnn_model *model;
    msrnn_session_params params;
    memory mem;
    int n_past;
    size_t bytes;
    void *slab;       /* everything below points into it */
    float *x;         /* (B, D) residual stream */
    float *xb;        /* (B, D) normed input of a sub-block */
    float *q;         /* (B, H·d) */
    float *k, *v;     /* (B, H_kv·d) */
    float *att;       /* (B, H·d) attention output */
    float *hb, *hb2;  /* (B, F) gate, up */
    float *rope_cs;   /* (B, n_rot/2, 2) cos, sin for each token's position */
    int32_t *pos;     /* (B) */
    float *logits;    /* (V) the last token's */
    float *scratch;   /* matmul panels */
    double *inv_freq; /* (n_rot/2) base^(-2i/n_rot) */
};

msrnn_session_params msrnn_session_default_params(void) {
    msrnn_session_params p = {0, 0, 512, 0, "full", 0, 4, 1};
    return p;
}

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

msrnn_status msrnn_session_open(msrnn_model *m, const msrnn_session_params *pp,
                                msrnn_session **out) {
    *out = NULL;
    const msrnn_model_info *in = &m->info;
    msrnn_session_params p = pp ? *pp : msrnn_session_default_params();
    if (p.n_ctx <= 0) p.n_ctx = in->n_ctx;
    if (p.n_threads <= 0) p.n_threads = omp_get_num_procs();
    if (p.n_batch <= 0) p.n_batch = 512;
    if (p.n_threads > 1024 || p.n_batch > (1 << 16) || p.n_ctx > (1 << 28))
        return msrnn_fail(MSRNN_ERR_INVALID,
                          "session: n_threads %d, n_batch %d or n_ctx %d is absurd", p.n_threads,
                          p.n_batch, p.n_ctx);
    if (p.n_batch > p.n_ctx) p.n_batch = p.n_ctx;
    if (!p.memory) p.memory = "full";

    const size_t B = (size_t)p.n_batch, D = (size_t)in->dim;
    const size_t qd = (size_t)in->n_heads * in->head_dim,
                 kvd = (size_t)in->n_kv_heads * in->head_dim;
    const size_t F = (size_t)in->ffn_dim, V = (size_t)in->n_vocab, R = (size_t)m->n_rot / 2;
    size_t max_in = D > F ? D : F;
    if (qd > max_in) max_in = qd;

    memory_shape shape = {
        in->n_layers, in->n_heads, in->n_kv_heads, in->head_dim,        p.n_ctx,
        p.kv_size,    p.kv_sinks,  p.kv_f16,       p.batched_attention, p.n_threads};
    memory mem;
    MSRNN_TRY(memory_setup(&mem, p.memory, &shape));
    size_t sizes[] = {B * D * 4,     B * D * 4,
                      B * qd * 4,    B * kvd * 4,
                      B * kvd * 4,   B * qd * 4,
                      B * F * 4,     B * F * 4,
                      B * R * 2 * 4, B * 4,
                      V * 4,         matmul_scratch_floats((int)max_in, p.n_threads) * 4,
                      R * 8,         mem.kind->bytes(&mem)};
    enum { N_BUF = sizeof sizes / sizeof *sizes };
    size_t total = 0;
    for (int i = 0; i < N_BUF; i++) total += align64(sizes[i]);

    msrnn_session *s = calloc(1, sizeof *s);
    void *slab = NULL;
    if (!s || posix_memalign(&slab, 64, total) != 0) {
        free(s);
        return msrnn_fail(MSRNN_ERR_NOMEM, "session: cannot allocate %zu bytes (context %d)", total,
                          p.n_ctx);
    }
    memset(slab, 0, total);
    uint8_t *cur = slab;
    void *ptr[N_BUF];
    for (int i = 0; i < N_BUF; i++) {
        ptr[i] = cur;
        cur += align64(sizes[i]);
    }
    s->model = m;
    s->params = p;
    s->slab = slab;
    s->bytes = total;
    s->x = ptr[0], s->xb = ptr[1], s->q = ptr[2], s->k = ptr[3], s->v = ptr[4], s->att = ptr[5];
    s->hb = ptr[6], s->hb2 = ptr[7], s->rope_cs = ptr[8], s->pos = ptr[9], s->logits = ptr[10];
    s->scratch = ptr[11], s->inv_freq = ptr[12];
    for (size_t i = 0; i < R; i++) s->inv_freq[i] = pow((double)in->rope_base, -2.0 * i / m->n_rot);
    s->mem = mem;
    mem.kind->init(&s->mem, ptr[13]);
    mem.kind->reset(&s->mem);
    *out = s;
    return MSRNN_OK;
}

void msrnn_session_close(msrnn_session *s) {
    if (!s) return;
    free(s->slab);
    free(s);
}

void msrnn_session_reset(msrnn_session *s) {
    s->mem.kind->reset(&s->mem);
    s->n_past = 0;
}

int msrnn_session_n_past(const msrnn_session *s) { return s->n_past; }
size_t msrnn_session_bytes(const msrnn_session *s) { return s->bytes; }
const float *msrnn_session_logits(const msrnn_session *s) { return s->logits; }

int msrnn_session_kept(const msrnn_session *s, int layer, int head, int32_t *pos, float *score,
                       int cap) {
    return s->mem.kind->kept(&s->mem, layer, head, pos, score, cap);
}

size_t msrnn_session_memory_bytes(const msrnn_session *s) {
    return s->mem.kind->used_bytes(&s->mem);
}

/* Rotate adjacent pairs (x[2i], x[2i+1]) of the first n_rot dims of each head by
 * pos·base^(−2i/n_rot). */
static void rope_apply(float *x, int n_heads, int head_dim, int n_rot, const float *cs) {
    for (int h = 0; h < n_heads; h++) {
        float *xh = x + (size_t)h * head_dim;
        for (int i = 0; i < n_rot / 2; i++) {
            const float c = cs[2 * i], sn = cs[2 * i + 1];
            const float a = xh[2 * i], b = xh[2 * i + 1];
            xh[2 * i] = a * c - b * sn;
            xh[2 * i + 1] = a * sn + b * c;
        }
    }
}

/* One batch of n <= n_batch tokens through every layer. */
static msrnn_status eval_batch(msrnn_session *s, const int32_t *tokens, int n, float *logits_all) {
    const msrnn_model *m = s->model;
    const msrnn_model_info *in = &m->info;
    const int D = in->dim, H = in->n_heads, Hkv = in->n_kv_heads, d = in->head_dim;
    const int F = in->ffn_dim, V = in->n_vocab, R = m->n_rot / 2;
    const int qd = H * d, kvd = Hkv * d;

    for (int t = 0; t < n; t++) {
        s->pos[t] = s->n_past + t;
        weight_row(&m->tok_embd, tokens[t], s->x + (size_t)t * D);
        for (int i = 0; i < R; i++) {
            double th = (double)s->pos[t] * s->inv_freq[i];
            s->rope_cs[((size_t)t * R + i) * 2] = (float)cos(th);
            s->rope_cs[((size_t)t * R + i) * 2 + 1] = (float)sin(th);
        }
    }
    for (int l = 0; l < in->n_layers; l++) {
        const layer_weights *lw = &m->layers[l];
        /* attention sub-block: x += Wo · attend(rope(Wq xb), rope(Wk xb), Wv xb) */
#pragma omp parallel for if (n > 8)
        for (int t = 0; t < n; t++)
            rmsnorm(s->xb + (size_t)t * D, s->x + (size_t)t * D, lw->attn_norm, D, in->norm_eps);
        float *qkv[3] = {s->q, s->k, s->v};
        const weight *wqkv[3] = {&lw->wq, &lw->wk, &lw->wv};
        matmul_many(3, qkv, s->xb, wqkv, n, s->scratch);
#pragma omp parallel for if (n > 8)
        for (int t = 0; t < n; t++) {
            const float *cs = s->rope_cs + (size_t)t * R * 2;
            rope_apply(s->q + (size_t)t * qd, H, d, m->n_rot, cs);
            rope_apply(s->k + (size_t)t * kvd, Hkv, d, m->n_rot, cs);
        }
        MSRNN_TRY(s->mem.kind->attend(&s->mem, l, n, s->q, s->k, s->v, s->pos, s->att));
        matmul(s->xb, s->att, &lw->wo, n, s->scratch);
        for (size_t i = 0; i < (size_t)n * D; i++) s->x[i] += s->xb[i];
            /* FFN sub-block: x += W_down (silu(W_gate xb) ⊙ W_up xb) */
#pragma omp parallel for if (n > 8)
        for (int t = 0; t < n; t++)
            rmsnorm(s->xb + (size_t)t * D, s->x + (size_t)t * D, lw->ffn_norm, D, in->norm_eps);
        float *gate_up[2] = {s->hb, s->hb2};
        const weight *wgu[2] = {&lw->w_gate, &lw->w_up};
        matmul_many(2, gate_up, s->xb, wgu, n, s->scratch);
#pragma omp parallel for if (n > 8)
        for (int t = 0; t < n; t++) swiglu(s->hb + (size_t)t * F, s->hb2 + (size_t)t * F, F);
        matmul(s->xb, s->hb, &lw->w_down, n, s->scratch);
        for (size_t i = 0; i < (size_t)n * D; i++) s->x[i] += s->xb[i];
    }
    /* head: logits of every token when asked, else only the last one's */
    const int first = logits_all ? 0 : n - 1;
    for (int t = first; t < n; t++)
        rmsnorm(s->xb + (size_t)t * D, s->x + (size_t)t * D, m->output_norm, D, in->norm_eps);
    if (logits_all) {
        matmul(logits_all, s->xb, &m->output, n, s->scratch);
        memcpy(s->logits, logits_all + (size_t)(n - 1) * V, (size_t)V * sizeof(float));
    } else {
        matmul(s->logits, s->xb + (size_t)(n - 1) * D, &m->output, 1, s->scratch);
    }
    s->n_past += n;
    return MSRNN_OK;
}

msrnn_status msrnn_session_eval(msrnn_session *s, const int32_t *tokens, int n, float *logits_all) {
    const msrnn_model_info *in = &s->model->info;
    if (n <= 0) return msrnn_fail(MSRNN_ERR_INVALID, "eval: %d tokens", n);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= in->n_vocab)
            return msrnn_fail(MSRNN_ERR_INVALID,
                              "eval: token %d at index %d is outside the "
                              "vocabulary [0, %d)",
                              tokens[i], i, in->n_vocab);
    if (!s->mem.policy && s->n_past + n > s->params.n_ctx)
        return msrnn_fail(MSRNN_ERR_FULL, "eval: %d tokens after %d exceed the context of %d", n,
                          s->n_past, s->params.n_ctx);
    kernels_set_threads(s->params.n_threads);
    for (int i = 0; i < n; i += s->params.n_batch) {
        int nb = n - i < s->params.n_batch ? n - i : s->params.n_batch;
        MSRNN_TRY(eval_batch(s, tokens + i, nb,
                             logits_all ? logits_all + (size_t)i * in->n_vocab : NULL));
    }
    return MSRNN_OK;
}
