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

#include <unistd.h>

#include "base/atomic_file.h"
#include "base/mem.h"
#include "base/read_file.h"
#include "base/status.h"
#include "memory/kv_policy.h"
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
    msrnn_session_params params; /* params.memory points at memory_name: the caller's string need
                                    not outlive msrnn_session_open */
    char memory_name[32];
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
        return status_fail(MSRNN_ERR_NOMEM,
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
    const int batch_only = p.n_batch < 0; /* no workspace: advanced by msrnn_batch_eval alone */
    if (p.n_batch == 0) p.n_batch = 512;
    if (batch_only) p.n_batch = -1;
    if (p.n_threads > 1024 || p.n_batch > (1 << 16) || p.n_ctx > (1 << 28))
        return status_fail(MSRNN_ERR_INVALID,
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
    batch_ws_sizes(m, batch_only ? 0 : p.n_batch, p.n_threads, ws);
    *total = slab_bytes(state_sizes, 3) + (batch_only ? 0 : slab_bytes(ws, WS_N_BUF));
    *out = p;
    return MSRNN_OK;
}

int msrnn_memory_is_bounded(const msrnn_model *m, const msrnn_session_params *p) {
    return model_memory_bounded(m, p);
}

int model_memory_bounded(const msrnn_model *m, const msrnn_session_params *pp) {
    msrnn_session_params p = pp ? *pp : msrnn_session_default_params(), q;
    p.n_ctx = 64, p.n_batch = 64, p.n_threads = 1;
    /* the answer does not depend on the budget's size: a small one is probed, so that a budget too
     * large to allocate is still answered (bounded) and its size refused where it is opened */
    const int keep =
        1024 + (p.kv_sinks > 0 ? p.kv_sinks : 0) + (p.kv_clusters > 0 ? p.kv_clusters : 0);
    if (p.kv_size > keep) p.kv_size = keep;
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
    if (!s) return status_fail(MSRNN_ERR_NOMEM, "session: out of memory");
    void *ptr[3];
    s->state_slab = carve(sizes, 3, ptr, &s->state_bytes);
    msrnn_status st = s->state_slab ? MSRNN_OK
                                    : status_fail(MSRNN_ERR_NOMEM,
                                                  "session: cannot allocate %zu bytes of state "
                                                  "(context %d)",
                                                  sizes[0] + sizes[1], p.n_ctx);
    if (st == MSRNN_OK && p.n_batch > 0) st = batch_ws_open(m, p.n_batch, p.n_threads, &s->ws);
    if (st != MSRNN_OK) {
        msrnn_session_close(s);
        return st;
    }
    s->model = m;
    s->params = p;
    snprintf(s->memory_name, sizeof s->memory_name, "%s", p.memory);
    s->params.memory = s->memory_name;
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

/* Rows of the head computed together when several sequences each want their last token's logits.
 */
enum { HEAD_ROWS = 16 };

/* One forward pass of n_seq sequences (sequence i: nt[i] tokens of session ss[i], at its n_past),
 * n = Σ nt[i] <= ws->n_batch tokens, through every layer, every weight read once. logits_all (only
 * with one sequence) receives every token's logits; else each session's last token's go to its
 * logits, the head run over HEAD_ROWS sequences at a time through head_buf (HEAD_ROWS × V). */
static msrnn_status forward(const msrnn_model *m, batch_ws *ws, msrnn_session *const *ss,
                            const int32_t *const *tok, const int *nt, int n_seq, int *seq_start,
                            void **mixer_state, void **ffn_state, float *head_buf,
                            float *logits_all) {
    const hparams *hp = &m->hp;
    const param_list *pl = &m->params;
    const part_kind *mixer = m->arch->mixer, *ffn = m->arch->ffn;
    const int D = hp->info.dim, V = hp->info.n_vocab;
    int n = 0;
    for (int i = 0; i < n_seq; i++) {
        seq_start[i] = n;
        mixer_state[i] = ss[i]->mixer_state, ffn_state[i] = ss[i]->ffn_state;
        for (int t = 0; t < nt[i]; t++, n++) {
            ws->pos[n] = ss[i]->n_past + t;
            weight_row(&m->w[pl->embd], tok[i][t], ws->x + (size_t)n * D);
        }
    }
    seq_start[n_seq] = n;
    part_step mc = {
        hp,          NULL,         -1, n, n_seq, seq_start, mixer_state, ws->pos, ws->mixer_work,
        ws->scratch, ws->n_threads};
    part_step fc = {hp,        NULL,    -1,           n,           n_seq,        seq_start,
                    ffn_state, ws->pos, ws->ffn_work, ws->scratch, ws->n_threads};
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
    const weight *head = &m->w[pl->output];
    const float *out_norm = m->w[pl->out_norm].data;
    const float eps = hp->info.norm_eps;
    if (logits_all) { /* one sequence, every token's logits */
        rmsnorm_forward(ws->xn, NULL, ws->x, out_norm, n, D, eps, ws->n_threads);
        matmul(logits_all, ws->xn, head, n, ws->scratch, ws->n_threads);
        memcpy(ss[0]->logits, logits_all + (size_t)(n - 1) * V, (size_t)V * sizeof(float));
    } else if (n_seq == 1) {
        rmsnorm_forward(ws->xn + (size_t)(n - 1) * D, NULL, ws->x + (size_t)(n - 1) * D, out_norm,
                        1, D, eps, ws->n_threads);
        matmul(ss[0]->logits, ws->xn + (size_t)(n - 1) * D, head, 1, ws->scratch, ws->n_threads);
    } else { /* each sequence's last token: gathered into xn's first rows, HEAD_ROWS at a time */
        for (int i = 0; i < n_seq; i++)
            memcpy(ws->out + (size_t)i * D, ws->x + (size_t)(seq_start[i + 1] - 1) * D,
                   (size_t)D * sizeof(float));
        rmsnorm_forward(ws->xn, NULL, ws->out, out_norm, n_seq, D, eps, ws->n_threads);
        for (int i0 = 0; i0 < n_seq; i0 += HEAD_ROWS) {
            const int rows = n_seq - i0 < HEAD_ROWS ? n_seq - i0 : HEAD_ROWS;
            matmul(head_buf, ws->xn + (size_t)i0 * D, head, rows, ws->scratch, ws->n_threads);
            for (int r = 0; r < rows; r++)
                memcpy(ss[i0 + r]->logits, head_buf + (size_t)r * V, (size_t)V * sizeof(float));
        }
    }
    for (int i = 0; i < n_seq; i++) ss[i]->n_past += nt[i];
    return MSRNN_OK;
}

/* One batch of n <= n_batch tokens of one session through every layer. */
static msrnn_status eval_batch(msrnn_session *s, const int32_t *tokens, int n, float *logits_all) {
    int seq_start[2];
    void *mixer_state[1], *ffn_state[1];
    return forward(s->model, &s->ws, &s, &tokens, &n, 1, seq_start, mixer_state, ffn_state, NULL,
                   logits_all);
}

/* The checks of feeding n tokens to s (what == "eval" or "batch: sequence I"). */
static msrnn_status check_feed(const msrnn_session *s, const int32_t *tokens, int n,
                               const char *what) {
    const msrnn_model_info *in = &s->model->hp.info;
    if (n <= 0 || !tokens) return status_fail(MSRNN_ERR_INVALID, "%s: %d tokens", what, n);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= in->n_vocab)
            return status_fail(MSRNN_ERR_INVALID,
                               "%s: token %d at index %d is outside the vocabulary [0, %d)", what,
                               tokens[i], i, in->n_vocab);
    if (!session_bounded(s) && s->n_past + n > s->params.n_ctx)
        return status_fail(MSRNN_ERR_FULL, "%s: %d tokens after %lld exceed the context of %d",
                           what, n, (long long)s->n_past, s->params.n_ctx);
    return MSRNN_OK;
}

msrnn_status msrnn_session_eval(msrnn_session *s, const int32_t *tokens, int n, float *logits_all) {
    const msrnn_model_info *in = &s->model->hp.info;
    MSRNN_TRY(check_feed(s, tokens, n, "eval"));
    if (s->params.n_batch < 0)
        return status_fail(
            MSRNN_ERR_INVALID,
            "eval: the session was opened without a workspace (n_batch < 0); advance "
            "it with msrnn_batch_eval");
    kernels_set_threads(s->params.n_threads);
    for (int i = 0; i < n; i += s->params.n_batch) {
        int nb = n - i < s->params.n_batch ? n - i : s->params.n_batch;
        MSRNN_TRY(eval_batch(s, tokens + i, nb,
                             logits_all ? logits_all + (size_t)i * in->n_vocab : NULL));
    }
    return MSRNN_OK;
}

/* ---- batches ----------------------------------------------------------------------------------
 */

struct msrnn_batch {
    msrnn_model *model;
    batch_ws ws;
    int *seq_start;                  /* (n_batch + 1) */
    void **mixer_state, **ffn_state; /* (n_batch) */
    float *head_buf;                 /* (HEAD_ROWS, V) */
    size_t bytes;
};

msrnn_status msrnn_batch_open(msrnn_model *m, int n_tokens, int n_threads, msrnn_batch **out) {
    *out = NULL;
    if (n_tokens <= 0) n_tokens = 512;
    if (n_threads <= 0) n_threads = omp_get_num_procs();
    if (n_tokens > (1 << 16) || n_threads > 1024)
        return status_fail(MSRNN_ERR_INVALID, "batch: n_tokens %d or n_threads %d is absurd",
                           n_tokens, n_threads);
    msrnn_batch *b = calloc(1, sizeof *b);
    if (!b) return status_fail(MSRNN_ERR_NOMEM, "batch: out of memory");
    const size_t V = (size_t)m->hp.info.n_vocab;
    b->model = m;
    b->seq_start = malloc(((size_t)n_tokens + 1) * sizeof(int));
    b->mixer_state = malloc((size_t)n_tokens * sizeof(void *));
    b->ffn_state = malloc((size_t)n_tokens * sizeof(void *));
    b->head_buf = malloc(HEAD_ROWS * V * sizeof(float));
    msrnn_status st = b->seq_start && b->mixer_state && b->ffn_state && b->head_buf
                          ? batch_ws_open(m, n_tokens, n_threads, &b->ws)
                          : status_fail(MSRNN_ERR_NOMEM, "batch: out of memory");
    if (st != MSRNN_OK) {
        msrnn_batch_close(b);
        return st;
    }
    b->bytes = b->ws.bytes + ((size_t)n_tokens + 1) * sizeof(int) +
               2 * (size_t)n_tokens * sizeof(void *) + HEAD_ROWS * V * sizeof(float);
    *out = b;
    return MSRNN_OK;
}

void msrnn_batch_close(msrnn_batch *b) {
    if (!b) return;
    free(b->ws.slab);
    free(b->seq_start);
    free(b->mixer_state);
    free(b->ffn_state);
    free(b->head_buf);
    free(b);
}

size_t msrnn_batch_bytes(const msrnn_batch *b) { return b->bytes; }

msrnn_status msrnn_batch_eval(msrnn_batch *b, msrnn_session *const *sessions,
                              const int32_t *const *tokens, const int *n_tokens, int n_seq) {
    if (n_seq <= 0 || !sessions || !tokens || !n_tokens)
        return status_fail(MSRNN_ERR_INVALID, "batch: %d sequences", n_seq);
    int64_t total = 0;
    char what[48];
    for (int i = 0; i < n_seq; i++) {
        snprintf(what, sizeof what, "batch: sequence %d", i);
        if (!sessions[i]) return status_fail(MSRNN_ERR_INVALID, "%s: no session", what);
        if (sessions[i]->model != b->model)
            return status_fail(MSRNN_ERR_INVALID, "%s: the session is of another model", what);
        for (int j = 0; j < i; j++)
            if (sessions[j] == sessions[i])
                return status_fail(MSRNN_ERR_INVALID,
                                   "%s: the same session as sequence %d (each may appear once)",
                                   what, j);
        MSRNN_TRY(check_feed(sessions[i], tokens[i], n_tokens[i], what));
        total += n_tokens[i];
    }
    if (total > b->ws.n_batch)
        return status_fail(MSRNN_ERR_INVALID,
                           "batch: %lld tokens, more than the %d the batch was opened for",
                           (long long)total, b->ws.n_batch);
    kernels_set_threads(b->ws.n_threads);
    return forward(b->model, &b->ws, sessions, tokens, n_tokens, n_seq, b->seq_start,
                   b->mixer_state, b->ffn_state, b->head_buf, NULL);
}

/* ---- saved sessions ---------------------------------------------------------------------------
 */

#define SESSION_MAGIC "MSRNNSES"
enum { SESSION_VERSION = 1 };

/* The file's header; the data follows: the mixer's state bytes, the FFN's, the logits. */
typedef struct {
    char magic[8];
    uint32_t version, header_bytes;
    char arch[32];
    int32_t n_vocab, dim, n_layers, n_heads, n_kv_heads, head_dim, ffn_dim, n_ctx_model;
    uint64_t weight_bytes, weight_sum; /* the model: its bytes and a checksum of its tensors */
    char memory[32];
    int32_t kv_size, sinks, clusters, n_ctx, kv_f16;
    float merge_bias;
    int64_t n_past;
    uint64_t mixer_bytes, ffn_bytes, logits_bytes, data_sum;
} session_header;

/* A 64-bit checksum (FNV-1a over 8-byte words, then the tail bytes), continued from h. */
static uint64_t checksum(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, b + i, 8);
        h = (h ^ w) * 0x100000001b3ULL;
    }
    for (; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}
#define CHECKSUM_SEED 0xcbf29ce484222325ULL

/* Shapes, types and the first 4 KiB of every tensor: enough to tell models apart cheaply. */
static uint64_t model_sum(const msrnn_model *m) {
    uint64_t h = CHECKSUM_SEED;
    for (int i = 0; i < m->params.n; i++) {
        const weight *w = &m->w[i];
        const int32_t shape[3] = {(int32_t)w->type, w->in, w->out};
        h = checksum(h, shape, sizeof shape);
        size_t n = w->row_bytes * (size_t)w->out;
        h = checksum(h, w->data, n < 4096 ? n : 4096);
    }
    return h;
}

typedef struct {
    uint8_t *p;
    size_t n;
} span;

/* The parts' saved bytes of s and its logits. */
static void session_spans(const msrnn_session *s, span out[3]) {
    const arch_row *a = s->model->arch;
    void *state[2] = {s->mixer_state, s->ffn_state};
    const part_kind *part[2] = {a->mixer, a->ffn};
    for (int i = 0; i < 2; i++) {
        size_t off = 0, n = 0;
        if (part[i]->state_data) part[i]->state_data(state[i], &off, &n);
        out[i].p = (uint8_t *)state[i] + off, out[i].n = n;
    }
    out[2].p = (uint8_t *)s->logits, out[2].n = (size_t)s->model->hp.info.n_vocab * sizeof(float);
}

static void copy_name(char *dst, size_t cap, const char *src) {
    memset(dst, 0, cap);
    strncpy(dst, src ? src : "", cap - 1);
}

static session_header header_of(const msrnn_session *s) {
    const msrnn_model *m = s->model;
    const msrnn_model_info *in = &m->hp.info;
    const msrnn_session_params *p = &s->params;
    session_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, SESSION_MAGIC, 8);
    h.version = SESSION_VERSION, h.header_bytes = sizeof h;
    copy_name(h.arch, sizeof h.arch, in->architecture);
    h.n_vocab = in->n_vocab, h.dim = in->dim, h.n_layers = in->n_layers, h.n_heads = in->n_heads;
    h.n_kv_heads = in->n_kv_heads, h.head_dim = in->head_dim, h.ffn_dim = in->ffn_dim;
    h.n_ctx_model = in->n_ctx;
    h.weight_bytes = in->weight_bytes, h.weight_sum = model_sum(m);
    copy_name(h.memory, sizeof h.memory, p->memory);
    h.kv_size = strcmp(p->memory, "full") ? p->kv_size : 0;
    h.sinks = kv_params_sinks(p), h.clusters = kv_params_clusters(p);
    h.n_ctx = p->n_ctx, h.kv_f16 = p->kv_f16, h.merge_bias = p->kv_merge_bias;
    h.n_past = s->n_past;
    span sp[3];
    session_spans(s, sp);
    h.mixer_bytes = sp[0].n, h.ffn_bytes = sp[1].n, h.logits_bytes = sp[2].n;
    uint64_t sum = CHECKSUM_SEED;
    for (int i = 0; i < 3; i++) sum = checksum(sum, sp[i].p, sp[i].n);
    h.data_sum = sum;
    return h;
}

msrnn_status msrnn_session_save(const msrnn_session *s, const char *path) {
    const session_header h = header_of(s);
    span sp[3];
    session_spans(s, sp);
    atomic_file *f;
    MSRNN_TRY(atomic_file_open(path, &f));
    atomic_file_write(f, &h, sizeof h);
    for (int i = 0; i < 3; i++) atomic_file_write(f, sp[i].p, sp[i].n);
    return atomic_file_commit(f);
}

/* A field of the file that must equal the session's, else an error naming it. */
#define SAME_INT(field, name)                                                                      \
    if (fh.field != want.field)                                                                    \
        return status_fail(MSRNN_ERR_INVALID, "%s: saved with %s %lld, the session has %lld",      \
                           path, name, (long long)fh.field, (long long)want.field);

static msrnn_status load_checked(msrnn_session *s, const char *path, int fd, uint64_t size,
                                 uint8_t **data_out) {
    const session_header want = header_of(s);
    session_header fh;
    if (size < sizeof fh)
        return status_fail(MSRNN_ERR_FORMAT, "%s: %llu bytes, too short for a saved session", path,
                           (unsigned long long)size);
    if (pread(fd, &fh, sizeof fh, 0) != (ssize_t)sizeof fh)
        return status_fail(MSRNN_ERR_IO, "%s: cannot read the header", path);
    if (memcmp(fh.magic, SESSION_MAGIC, 8))
        return status_fail(MSRNN_ERR_FORMAT, "%s: not a saved msrnn session (bad magic)", path);
    if (fh.version != SESSION_VERSION || fh.header_bytes != sizeof fh)
        return status_fail(MSRNN_ERR_FORMAT,
                           "%s: saved session version %u (header %u bytes); this msrnn reads "
                           "version %d (%zu bytes)",
                           path, fh.version, fh.header_bytes, SESSION_VERSION, sizeof fh);
    fh.arch[sizeof fh.arch - 1] = fh.memory[sizeof fh.memory - 1] = 0;
    if (strcmp(fh.arch, want.arch))
        return status_fail(MSRNN_ERR_INVALID, "%s: saved from a '%s' model, the session's is '%s'",
                           path, fh.arch, want.arch);
    SAME_INT(n_vocab, "n_vocab")
    SAME_INT(dim, "dim")
    SAME_INT(n_layers, "n_layers")
    SAME_INT(n_heads, "n_heads")
    SAME_INT(n_kv_heads, "n_kv_heads")
    SAME_INT(head_dim, "head_dim")
    SAME_INT(ffn_dim, "ffn_dim")
    SAME_INT(weight_bytes, "weight bytes")
    if (fh.weight_sum != want.weight_sum)
        return status_fail(MSRNN_ERR_INVALID,
                           "%s: saved from a model with other weights (the same shapes, another "
                           "checksum)",
                           path);
    if (strcmp(fh.memory, want.memory))
        return status_fail(MSRNN_ERR_INVALID, "%s: saved with memory '%s', the session has '%s'",
                           path, fh.memory, want.memory);
    SAME_INT(kv_size, "kv_size")
    SAME_INT(sinks, "kv_sinks")
    SAME_INT(clusters, "kv_clusters")
    SAME_INT(kv_f16, "kv_f16")
    if (memcmp(&fh.merge_bias, &want.merge_bias, sizeof(float)))
        return status_fail(MSRNN_ERR_INVALID, "%s: saved with kv_merge_bias %g, the session has %g",
                           path, (double)fh.merge_bias, (double)want.merge_bias);
    SAME_INT(mixer_bytes, "a memory state of bytes (another n_ctx or layout)")
    SAME_INT(ffn_bytes, "an FFN state of bytes")
    SAME_INT(logits_bytes, "logits of bytes")
    const uint64_t data = fh.mixer_bytes + fh.ffn_bytes + fh.logits_bytes;
    if (size != sizeof fh + data)
        return status_fail(MSRNN_ERR_FORMAT,
                           "%s: %llu bytes, expected %llu (header %zu + state %llu): truncated or "
                           "padded",
                           path, (unsigned long long)size, (unsigned long long)(sizeof fh + data),
                           sizeof fh, (unsigned long long)data);
    if (fh.n_past < 0 || (!session_bounded(s) && fh.n_past > s->params.n_ctx))
        return status_fail(MSRNN_ERR_FORMAT, "%s: position %lld is out of range", path,
                           (long long)fh.n_past);
    uint8_t *buf = malloc(data ? data : 1);
    if (!buf)
        return status_fail(MSRNN_ERR_NOMEM, "%s: cannot allocate %llu bytes", path,
                           (unsigned long long)data);
    for (uint64_t got = 0; got < data;) {
        const ssize_t r = pread(fd, buf + got, data - got, (off_t)(sizeof fh + got));
        if (r <= 0) {
            free(buf);
            return status_fail(MSRNN_ERR_IO, "%s: read failed after %llu bytes", path,
                               (unsigned long long)got);
        }
        got += (uint64_t)r;
    }
    if (checksum(CHECKSUM_SEED, buf, data) != fh.data_sum) {
        free(buf);
        return status_fail(MSRNN_ERR_FORMAT, "%s: the state's checksum does not match (corrupt)",
                           path);
    }
    s->n_past = fh.n_past;
    *data_out = buf;
    return MSRNN_OK;
}

msrnn_status msrnn_session_load(msrnn_session *s, const char *path) {
    int fd;
    struct stat sb;
    MSRNN_TRY(file_open_regular(path, &fd, &sb));
    const int64_t old_past = s->n_past;
    uint8_t *data = NULL;
    const msrnn_status st = load_checked(s, path, fd, (uint64_t)sb.st_size, &data);
    close(fd);
    if (st != MSRNN_OK) {
        s->n_past = old_past;
        return st;
    }
    span sp[3];
    session_spans(s, sp);
    size_t off = 0;
    for (int i = 0; i < 3; i++) {
        memcpy(sp[i].p, data + off, sp[i].n);
        off += sp[i].n;
    }
    free(data);
    return MSRNN_OK;
}
