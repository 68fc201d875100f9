/* session.c — the inference block loop: embed, then per layer `x += part(rmsnorm(x))` for the
 * mixer and the FFN of the model's architecture (arch.h), then rmsnorm → head. It never names a
 * method: the parts do the work through src/parts/part.h.
 *
 * A session is its state alone: each part's state (the KV cache of the softmax mixer...), the
 * position and the last logits, sized at open. The activations of a batch live in a separate
 * workspace, so that several sessions can advance in one forward pass — every weight read once —
 * by handing a part one batch whose sequences point to different states (part_step.seq_start /
 * state). Each session owns a workspace for its own calls. Nothing is allocated in eval.
 *
 * Legend: B tokens in the batch, D model width, V vocab.
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/mem.h"
#include "base/status.h"
#include "model/model.h"
#include "nn/ops.h"

/* The activations of one batch of up to n_batch tokens. */
typedef struct {
    int n_batch, n_threads;
    size_t bytes;
    void *slab; /* everything below points into it */
    float *x;   /* (B, D) residual stream */
    float *xn;  /* (B, D) normed input of a part */
    float *out; /* (B, D) a part's output */
    float *mixer_work, *ffn_work;
    float *scratch; /* matmul panels, per thread */
    int64_t *pos;   /* (B) absolute positions */
} batch_ws;

struct msrnn_session {
    msrnn_model *model;
    msrnn_session_params params;
    int64_t n_past;
    void *mixer_state, *ffn_state;
    float *logits; /* (V) the last token's */
    void *state_slab;
    size_t state_bytes;
    batch_ws ws;
};

msrnn_session_params msrnn_session_default_params(void) {
    msrnn_session_params p = {0, 0, 512, 0, "full", 0, 4, 1, -1.0f, 4};
    return p;
}

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

/* Carve n buffers of sizes[i] bytes out of one zeroed 64-byte-aligned allocation. */
static void *carve(const size_t *sizes, int n, void **ptr, size_t *total_out) {
    size_t total = 0;
    for (int i = 0; i < n; i++) total += align64(sizes[i]);
    void *slab = NULL;
    if (posix_memalign(&slab, 64, total ? total : 64) != 0) return NULL;
    memset(slab, 0, total);
    uint8_t *cur = slab;
    for (int i = 0; i < n; i++) {
        ptr[i] = cur;
        cur += align64(sizes[i]);
    }
    *total_out = total;
    return slab;
}

/* The batch workspace's buffers, in the order batch_ws_open carves them. */
enum { WS_N_BUF = 7 };
static void batch_ws_sizes(const msrnn_model *m, int n_batch, int n_threads, size_t *sizes) {
    const hparams *hp = &m->hp;
    const part_kind *mixer = m->arch->mixer, *ffn = m->arch->ffn;
    const size_t B = (size_t)n_batch, D = (size_t)hp->info.dim;
    int max_in = hp->info.dim;
    if (mixer->max_in(hp) > max_in) max_in = mixer->max_in(hp);
    if (ffn->max_in(hp) > max_in) max_in = ffn->max_in(hp);
    const size_t s[WS_N_BUF] = {B * D * 4,
                                B * D * 4,
                                B * D * 4,
                                mixer->work_floats(hp, n_batch) * 4,
                                ffn->work_floats(hp, n_batch) * 4,
                                matmul_scratch_floats(max_in, n_threads) * 4,
                                B * sizeof(int64_t)};
    memcpy(sizes, s, sizeof s);
}

static msrnn_status batch_ws_open(const msrnn_model *m, int n_batch, int n_threads, batch_ws *ws) {
    size_t sizes[WS_N_BUF];
    batch_ws_sizes(m, n_batch, n_threads, sizes);
    void *ptr[WS_N_BUF];
    memset(ws, 0, sizeof *ws);
    ws->slab = carve(sizes, WS_N_BUF, ptr, &ws->bytes);
    if (!ws->slab)
        return msrnn_fail(MSRNN_ERR_NOMEM,
                          "session: cannot allocate the batch workspace (%d tokens)", n_batch);
    ws->n_batch = n_batch, ws->n_threads = n_threads;
    ws->x = ptr[0], ws->xn = ptr[1], ws->out = ptr[2], ws->mixer_work = ptr[3];
    ws->ffn_work = ptr[4], ws->scratch = ptr[5], ws->pos = ptr[6];
    return MSRNN_OK;
}

static size_t slab_bytes(const size_t *sizes, int n) {
    size_t total = 0;
    for (int i = 0; i < n; i++) total += align64(sizes[i]);
    return total;
}

/* The parameters with defaults filled in and checked, and the sizes of the state slab's buffers
 * (mixer state, FFN state, logits): everything msrnn_session_open decides before allocating. */
static msrnn_status session_plan(const msrnn_model *m, const msrnn_session_params *pp,
                                 msrnn_session_params *out, size_t state_sizes[3], size_t *total) {
    const hparams *hp = &m->hp;
    msrnn_session_params p = pp ? *pp : msrnn_session_default_params();
    if (p.n_ctx <= 0) p.n_ctx = hp->info.n_ctx;
    if (p.n_threads <= 0) p.n_threads = omp_get_num_procs();
    if (p.n_batch <= 0) p.n_batch = 512;
    if (p.n_threads > 1024 || p.n_batch > (1 << 16) || p.n_ctx > (1 << 28))
        return msrnn_fail(MSRNN_ERR_INVALID,
                          "session: n_threads %d, n_batch %d or n_ctx %d is absurd", p.n_threads,
                          p.n_batch, p.n_ctx);
    if (p.n_batch > p.n_ctx) p.n_batch = p.n_ctx;
    if (!p.memory) p.memory = "full";
    const part_kind *mixer = m->arch->mixer, *ffn = m->arch->ffn;
    MSRNN_TRY(mixer->check(hp, &p));
    MSRNN_TRY(ffn->check(hp, &p));
    state_sizes[0] = mixer->state_bytes(hp, &p);
    state_sizes[1] = ffn->state_bytes(hp, &p);
    state_sizes[2] = (size_t)hp->info.n_vocab * 4;
    size_t ws[WS_N_BUF];
    batch_ws_sizes(m, p.n_batch, p.n_threads, ws);
    *total = slab_bytes(state_sizes, 3) + slab_bytes(ws, WS_N_BUF);
    *out = p;
    return MSRNN_OK;
}

int model_memory_bounded(const msrnn_model *m, const msrnn_session_params *pp) {
    msrnn_session_params p = pp ? *pp : msrnn_session_default_params(), q;
    p.n_ctx = 64, p.n_batch = 64, p.n_threads = 1;
    size_t sizes[3], total;
    if (session_plan(m, &p, &q, sizes, &total) != MSRNN_OK) return 0;
    const part_kind *part[2] = {m->arch->mixer, m->arch->ffn};
    int bounded = 1;
    for (int i = 0; i < 2 && bounded; i++) {
        void *state = aligned_alloc(64, align64(sizes[i]) ? align64(sizes[i]) : 64);
        if (!state) return 0;
        memset(state, 0, align64(sizes[i]));
        part[i]->state_init(state, &m->hp, &q);
        bounded = part[i]->bounded(state);
        free(state);
    }
    return bounded;
}

msrnn_status msrnn_session_bytes_needed(const msrnn_model *m, const msrnn_session_params *p,
                                        size_t *bytes) {
    msrnn_session_params q;
    size_t sizes[3];
    *bytes = 0;
    return session_plan(m, p, &q, sizes, bytes);
}

msrnn_status msrnn_session_open(msrnn_model *m, const msrnn_session_params *pp,
                                msrnn_session **out) {
    *out = NULL;
    const hparams *hp = &m->hp;
    msrnn_session_params p;
    size_t sizes[3], need;
    MSRNN_TRY(session_plan(m, pp, &p, sizes, &need));
    char what[160];
    snprintf(what, sizeof what, "session: a %s memory of %d %s", p.memory,
             strcmp(p.memory, "full") ? p.kv_size : p.n_ctx,
             strcmp(p.memory, "full") ? "entries per layer (kv_size)" : "tokens (n_ctx)");
    MSRNN_TRY(mem_check(need, 0, what, "n_ctx, kv_size or n_batch"));
    const part_kind *mixer = m->arch->mixer, *ffn = m->arch->ffn;

    msrnn_session *s = calloc(1, sizeof *s);
    if (!s) return msrnn_fail(MSRNN_ERR_NOMEM, "session: out of memory");
    void *ptr[3];
    s->state_slab = carve(sizes, 3, ptr, &s->state_bytes);
    msrnn_status st = s->state_slab ? MSRNN_OK
                                    : msrnn_fail(MSRNN_ERR_NOMEM,
                                                 "session: cannot allocate %zu bytes of state "
                                                 "(context %d)",
                                                 sizes[0] + sizes[1], p.n_ctx);
    if (st == MSRNN_OK) st = batch_ws_open(m, p.n_batch, p.n_threads, &s->ws);
    if (st != MSRNN_OK) {
        msrnn_session_close(s);
        return st;
    }
    s->model = m;
    s->params = p;
    s->mixer_state = ptr[0], s->ffn_state = ptr[1], s->logits = ptr[2];
    mixer->state_init(s->mixer_state, hp, &p);
    ffn->state_init(s->ffn_state, hp, &p);
    *out = s;
    return MSRNN_OK;
}

void msrnn_session_close(msrnn_session *s) {
    if (!s) return;
    free(s->state_slab);
    free(s->ws.slab);
    free(s);
}

void msrnn_session_reset(msrnn_session *s) {
    s->model->arch->mixer->state_reset(s->mixer_state);
    s->model->arch->ffn->state_reset(s->ffn_state);
    s->n_past = 0;
}

int64_t msrnn_session_n_past(const msrnn_session *s) { return s->n_past; }
size_t msrnn_session_bytes(const msrnn_session *s) { return s->state_bytes + s->ws.bytes; }
const float *msrnn_session_logits(const msrnn_session *s) { return s->logits; }

int msrnn_session_kept(const msrnn_session *s, int layer, int head, int64_t *pos, float *score,
                       int cap) {
    const part_kind *mixer = s->model->arch->mixer;
    return mixer->kept ? mixer->kept(s->mixer_state, layer, head, pos, score, cap) : 0;
}

int msrnn_session_summary(const msrnn_session *s, int layer, int head, int64_t *merged,
                          int64_t *counts, int cap) {
    const part_kind *mixer = s->model->arch->mixer;
    int64_t m = 0;
    const int n = mixer->summary ? mixer->summary(s->mixer_state, layer, head, &m, counts, cap) : 0;
    if (merged) *merged = m;
    return n;
}

size_t msrnn_session_memory_bytes(const msrnn_session *s) {
    const arch_row *a = s->model->arch;
    return a->mixer->used_bytes(s->mixer_state) + a->ffn->used_bytes(s->ffn_state);
}

static int session_bounded(const msrnn_session *s) {
    const arch_row *a = s->model->arch;
    return a->mixer->bounded(s->mixer_state) && a->ffn->bounded(s->ffn_state);
}

/* One batch of n <= n_batch tokens through every layer. */
static msrnn_status eval_batch(msrnn_session *s, const int32_t *tokens, int n, float *logits_all) {
    const msrnn_model *m = s->model;
    const hparams *hp = &m->hp;
    const param_list *pl = &m->params;
    const part_kind *mixer = m->arch->mixer, *ffn = m->arch->ffn;
    const int D = hp->info.dim, V = hp->info.n_vocab;
    batch_ws *ws = &s->ws;
    const int seq_start[2] = {0, n};
    void *mixer_state[1] = {s->mixer_state}, *ffn_state[1] = {s->ffn_state};
    part_step mc = {
        hp,          NULL,         -1, n, 1, seq_start, mixer_state, ws->pos, ws->mixer_work,
        ws->scratch, ws->n_threads};
    part_step fc = {hp,           NULL,        -1,           n, 1, seq_start, ffn_state, ws->pos,
                    ws->ffn_work, ws->scratch, ws->n_threads};

    for (int t = 0; t < n; t++) {
        ws->pos[t] = s->n_past + t;
        weight_row(&m->w[pl->embd], tokens[t], ws->x + (size_t)t * D);
    }
    if (mixer->prepare) mixer->prepare(&mc);
    if (ffn->prepare) ffn->prepare(&fc);
    for (int l = 0; l < hp->info.n_layers; l++) {
        mc.layer = fc.layer = l;
        mc.w = &m->w[param_mixer(pl, l)];
        fc.w = &m->w[param_ffn(pl, l)];
        rmsnorm_forward(ws->xn, NULL, ws->x, m->w[param_layer(pl, l)].data, n, D, hp->info.norm_eps,
                        ws->n_threads);
        MSRNN_TRY(mixer->infer(&mc, ws->xn, ws->out));
        for (size_t i = 0; i < (size_t)n * D; i++) ws->x[i] += ws->out[i];
        rmsnorm_forward(ws->xn, NULL, ws->x, m->w[param_ffn_norm(pl, l)].data, n, D,
                        hp->info.norm_eps, ws->n_threads);
        MSRNN_TRY(ffn->infer(&fc, ws->xn, ws->out));
        for (size_t i = 0; i < (size_t)n * D; i++) ws->x[i] += ws->out[i];
    }
    /* head: logits of every token when asked, else only the last one's */
    const int first = logits_all ? 0 : n - 1;
    rmsnorm_forward(ws->xn + (size_t)first * D, NULL, ws->x + (size_t)first * D,
                    m->w[pl->out_norm].data, n - first, D, hp->info.norm_eps, ws->n_threads);
    const weight *head = &m->w[pl->output];
    if (logits_all) {
        matmul(logits_all, ws->xn, head, n, ws->scratch, ws->n_threads);
        memcpy(s->logits, logits_all + (size_t)(n - 1) * V, (size_t)V * sizeof(float));
    } else {
        matmul(s->logits, ws->xn + (size_t)(n - 1) * D, head, 1, ws->scratch, ws->n_threads);
    }
    s->n_past += n;
    return MSRNN_OK;
}

msrnn_status msrnn_session_eval(msrnn_session *s, const int32_t *tokens, int n, float *logits_all) {
    const msrnn_model_info *in = &s->model->hp.info;
    if (n <= 0) return msrnn_fail(MSRNN_ERR_INVALID, "eval: %d tokens", n);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= in->n_vocab)
            return msrnn_fail(MSRNN_ERR_INVALID,
                              "eval: token %d at index %d is outside the vocabulary [0, %d)",
                              tokens[i], i, in->n_vocab);
    if (!session_bounded(s) && s->n_past + n > s->params.n_ctx)
        return msrnn_fail(MSRNN_ERR_FULL, "eval: %d tokens after %lld exceed the context of %d", n,
                          (long long)s->n_past, s->params.n_ctx);
    kernels_set_threads(s->params.n_threads);
    for (int i = 0; i < n; i += s->params.n_batch) {
        int nb = n - i < s->params.n_batch ? n - i : s->params.n_batch;
        MSRNN_TRY(eval_batch(s, tokens + i, nb,
                             logits_all ? logits_all + (size_t)i * in->n_vocab : NULL));
    }
    return MSRNN_OK;
}
