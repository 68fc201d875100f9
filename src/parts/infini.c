/* infini.c — the Infini-attention token mixer (Munkhdalai et al., 2024; METHODS.md §2, file format
 * §6), everything about it in one file: parameters, key reading and writing, the session state,
 * inference, and training with backpropagation through the memory across every segment.
 *
 * Parameters: Llama's W_q, W_k, W_v, W_o plus β (attn_mem_gate, one per query head). The sequence
 * is cut into segments of N tokens counted from its first token. Per layer and kv head g a
 * compressive memory M (d × d) and normaliser z (d), fp32, both 0 at the start. A token of
 * segment s, query head h (kv head g = h / group):
 *
 *     A_dot = causal softmax attention over the tokens of segment s only (RoPE at the position
 *             within the segment: positions restart at 0 in each segment, METHODS.md §6)
 *     A_mem = σ(q) M_s / (σ(q)·z_s + ε)                  σ = ELU + 1 on pre-RoPE q and k, ε = 1e-6
 *     A     = sigmoid(β_h) A_mem + (1 − sigmoid(β_h)) A_dot   (A = A_dot while s = 0: empty memory)
 *
 * and after the segment M_{s+1} = M_s + Σ_t σ(k_t)ᵀ u_t, z_{s+1} = z_s + Σ_t σ(k_t), where
 * u_t = v_t (linear rule) or v_t − σ(k_t) M_s / (σ(k_t)·z_s + ε) (delta rule; = v_t while M_s = 0).
 * The heads' A are concatenated and projected by W_o.
 *
 * Inference state per layer: the current segment's post-RoPE keys and values (≤ N each kv head),
 * (M, z) read by this segment and (Mn, zn) = (M, z) plus the writes of this segment's tokens so
 * far; when the segment fills, (M, z) ← (Mn, zn). Its size is fixed at open, whatever the length. A
 * batch of tokens is cut at segment boundaries into pieces; each piece attends with blocked sgemm
 * (query rows × the segment's keys), reads the memory, then writes its tokens into (Mn, zn).
 *
 * Training keeps per layer the pre-RoPE q and k, v, the local attention output and its
 * log-sum-exp, the mixed output, and (M_s, z_s) of every segment of every sequence; backward
 * recomputes σ, RoPE and the memory reads inside each segment and carries ∂/∂(M, z) from the last
 * segment to the first (no detaching). The memory arithmetic is one job per (sequence, kv head), in
 * a fixed order, so results do not depend on the thread count.
 */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "nn/ops.h"
#include "parts/part.h"
#include "tensor/kernels.h"

enum { W_Q, W_K, W_V, W_O, W_GATE, N_W };

#define INFINI_EPS 1e-6f
#define MAX_SEGMENT (1 << 24)

static size_t align16(size_t n) { return (n + 15) & ~(size_t)15; }
static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

static inline float elu1(float x) { return x > 0 ? x + 1.0f : expf(x); }
static inline float elu1_grad(float x) { return x > 0 ? 1.0f : expf(x); }
static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

static void elu1_rows(float *out, const float *in, size_t n, int n_threads) {
#pragma omp parallel for schedule(static) if (n > 65536) num_threads(n_threads)
    for (size_t i = 0; i < n; i++) out[i] = elu1(in[i]);
}

/* out = s M / (s·z + ε) (d numbers); returns the denominator. */
static float mem_read(float *out, const float *M, const float *z, const float *s, int d) {
    memset(out, 0, (size_t)d * sizeof(float));
    for (int i = 0; i < d; i++) axpy_f32(out, s[i], M + (size_t)i * d, d);
    const float den = dot_f32(s, z, d) + INFINI_EPS;
    for (int j = 0; j < d; j++) out[j] /= den;
    return den;
}

/* One token's write: Macc += s ⊗ u, zacc += s, with u = v (linear) or v − s M / (s·z + ε) with the
 * memory (M, z) the segment reads (delta). tmp: d floats. */
static void mem_write(float *Macc, float *zacc, const float *M, const float *z, const float *s,
                      const float *v, int d, int delta, float *tmp) {
    const float *u = v;
    if (delta) {
        mem_read(tmp, M, z, s, d);
        for (int j = 0; j < d; j++) tmp[j] = v[j] - tmp[j];
        u = tmp;
    }
    for (int i = 0; i < d; i++) axpy_f32(Macc + (size_t)i * d, s[i], u, d);
    for (int i = 0; i < d; i++) zacc[i] += s[i];
}

/* ---- keys --------------------------------------------------------------------------------- */

static msrnn_status in_read_keys(const gguf_file *f, const char *arch, hparams *hp) {
    char key[128];
    snprintf(key, sizeof key, "%s.segment_length", arch);
    uint32_t n = 0;
    MSRNN_TRY(gguf_get_u32(f, key, 1, &n));
    if (n < 1 || n > MAX_SEGMENT)
        return status_fail(MSRNN_ERR_FORMAT, "%s: %s = %u is out of range [1, %d]", f->path, key, n,
                           MAX_SEGMENT);
    hp->segment = (int)n;
    snprintf(key, sizeof key, "%s.memory_rule", arch);
    gguf_str rule;
    MSRNN_TRY(gguf_get_str(f, key, 1, &rule));
    if (gguf_str_eq(rule, "linear"))
        hp->memory_rule = MEMORY_RULE_LINEAR;
    else if (gguf_str_eq(rule, "delta"))
        hp->memory_rule = MEMORY_RULE_DELTA;
    else
        return status_fail(MSRNN_ERR_FORMAT, "%s: %s is '%.*s'; expected 'linear' or 'delta'",
                           f->path, key, (int)(rule.len > 32 ? 32 : rule.len), rule.ptr);
    return MSRNN_OK;
}

static msrnn_status in_write_keys(const hparams *hp, const char *arch, gguf_writer *w) {
    char key[128];
    snprintf(key, sizeof key, "%s.segment_length", arch);
    MSRNN_TRY(gguf_writer_set_u32(w, key, (uint32_t)hp->segment));
    snprintf(key, sizeof key, "%s.memory_rule", arch);
    return gguf_writer_set_str(w, key, hp->memory_rule == MEMORY_RULE_DELTA ? "delta" : "linear");
}

/* ---- parameters --------------------------------------------------------------------------- */

static int in_params(const hparams *hp, part_param out[PART_MAX_PARAMS]) {
    const msrnn_model_info *in = &hp->info;
    const int64_t D = in->dim, QD = (int64_t)in->n_heads * in->head_dim,
                  KD = (int64_t)in->n_kv_heads * in->head_dim;
    out[W_Q] = (part_param){"attn_q.weight", D, QD, 1, 1, 1.0f, 0, INIT_NORMAL, 0, 0, 1};
    out[W_K] = (part_param){"attn_k.weight", D, KD, 1, 1, 1.0f, 0, INIT_NORMAL, 0, 0, 1};
    out[W_V] = (part_param){"attn_v.weight", D, KD, 1, 1, 1.0f, 0, INIT_NORMAL, 0, 0, 1};
    out[W_O] = (part_param){"attn_output.weight", QD, D, 1, 1, 1.0f, 0, INIT_NORMAL_RESID, 0, 0, 1};
    /* β: no weight decay, 10× the learning rate (gates stuck at 0.5 otherwise, METHODS.md §2) */
    out[W_GATE] =
        (part_param){"attn_mem_gate", in->n_heads, 1, 0, 0, 10.0f, 0, INIT_ZEROS, 0, 0, 1};
    return N_W;
}

/* ---- the session state ---------------------------------------------------------------------- */

typedef struct {
    int n_layers, H, Hkv, d, N, delta, n_threads;
    int rows;           /* query rows per attention job */
    size_t ld;          /* floats per score row: the segment rounded up (at least d) */
    size_t head_floats; /* one kv head of one layer: K, V (N × d), M, Mn (d × d), z, zn (d) */
    size_t layer_bytes; /* two counters, then the kv heads */
    size_t off_scratch; /* per thread: rows × ld floats */
    size_t total;
    uint8_t *base;
} infini_state;

#define HEADER_BYTES align64(sizeof(infini_state))

static infini_state shape_of(const hparams *hp, const msrnn_session_params *p) {
    infini_state s;
    memset(&s, 0, sizeof s);
    const msrnn_model_info *in = &hp->info;
    s.n_layers = in->n_layers, s.H = in->n_heads, s.Hkv = in->n_kv_heads, s.d = in->head_dim;
    s.N = hp->segment, s.delta = hp->memory_rule == MEMORY_RULE_DELTA;
    s.n_threads = p->n_threads > 0 ? p->n_threads : 1;
    s.ld = align16((size_t)(s.N > s.d ? s.N : s.d));
    const int rows = (int)((1 << 22) / s.ld);
    s.rows = rows < 8 ? 8 : rows > 64 ? 64 : rows;
    const size_t d = (size_t)s.d;
    s.head_floats = 2 * align16((size_t)s.N * d) + 2 * align16(d * d) + 2 * align16(d);
    s.layer_bytes = 64 + (size_t)s.Hkv * s.head_floats * sizeof(float);
    s.off_scratch = (size_t)s.n_layers * s.layer_bytes;
    s.total = s.off_scratch + (size_t)s.n_threads * s.rows * s.ld * sizeof(float);
    return s;
}

/* count: tokens of the current segment seen; segs: segments folded into (M, z) */
static int64_t *counters(const infini_state *s, int layer) {
    return (int64_t *)(s->base + (size_t)layer * s->layer_bytes);
}
typedef struct {
    float *K, *V, *M, *Mn, *z, *zn;
} head_mem;
static head_mem head_of(const infini_state *s, int layer, int g) {
    float *p =
        (float *)(s->base + (size_t)layer * s->layer_bytes + 64) + (size_t)g * s->head_floats;
    const size_t d = (size_t)s->d, kv = align16((size_t)s->N * d), mm = align16(d * d);
    head_mem h;
    h.K = p, h.V = p + kv, h.M = p + 2 * kv, h.Mn = h.M + mm, h.z = h.Mn + mm;
    h.zn = h.z + align16(d);
    return h;
}

static msrnn_status in_check(const hparams *hp, const msrnn_session_params *p) {
    (void)hp;
    if (p->memory && strcmp(p->memory, "full") && strcmp(p->memory, "infini"))
        return status_fail(MSRNN_ERR_INVALID,
                           "memory '%s': an infini model's memory is its own (segment attention "
                           "plus a compressive memory); leave the memory unset or 'infini'",
                           p->memory);
    if (p->kv_f16)
        return status_fail(MSRNN_ERR_INVALID,
                           "an infini model keeps its segment's keys and values in f32 "
                           "(kv_f16 / --kv-type f16 is not supported)");
    return MSRNN_OK;
}

static size_t in_state_bytes(const hparams *hp, const msrnn_session_params *p) {
    return HEADER_BYTES + shape_of(hp, p).total;
}

static void in_state_reset(void *state) {
    infini_state *s = state;
    memset(s->base, 0, s->off_scratch);
}

static void in_state_init(void *state, const hparams *hp, const msrnn_session_params *p) {
    infini_state *s = state;
    *s = shape_of(hp, p);
    s->base = (uint8_t *)state + HEADER_BYTES;
    in_state_reset(state);
}

/* the layers' counters, segments and memories; not the per-thread scratch */
static void in_state_data(const void *state, size_t *offset, size_t *bytes) {
    *offset = HEADER_BYTES;
    *bytes = ((const infini_state *)state)->off_scratch;
}

static int in_bounded(const void *state) {
    (void)state;
    return 1;
}

/* the memories (M, z and the pending Mn, zn) and the segment's entries held now */
static size_t in_used_bytes(const void *state) {
    const infini_state *s = state;
    size_t entries = 0;
    for (int l = 0; l < s->n_layers; l++) entries += (size_t)counters(s, l)[0];
    const size_t d = (size_t)s->d;
    return (size_t)s->n_layers * s->Hkv * (2 * d * d + 2 * d) * sizeof(float) +
           entries * s->Hkv * 2 * d * sizeof(float);
}

/* ---- inference ------------------------------------------------------------------------------ */

typedef struct {
    float *q, *k, *v, *att, *sq, *sk, *rope;
    int64_t *lpos;
} in_work;

static in_work work_of(const hparams *hp, int n, float *w) {
    const size_t QD = (size_t)hp->info.n_heads * hp->info.head_dim,
                 KD = (size_t)hp->info.n_kv_heads * hp->info.head_dim;
    in_work s;
    s.lpos = (int64_t *)w, w += 2 * align16((size_t)n); /* first: 8-byte aligned */
    s.q = w, w += (size_t)n * QD;
    s.att = w, w += (size_t)n * QD;
    s.sq = w, w += (size_t)n * QD;
    s.k = w, w += (size_t)n * KD;
    s.v = w, w += (size_t)n * KD;
    s.sk = w, w += (size_t)n * KD;
    s.rope = w;
    return s;
}

static size_t in_work_floats(const hparams *hp, int n_batch) {
    const size_t QD = (size_t)hp->info.n_heads * hp->info.head_dim,
                 KD = (size_t)hp->info.n_kv_heads * hp->info.head_dim;
    return (size_t)n_batch * (3 * QD + 3 * KD) + 2 * align16((size_t)n_batch) +
           rope_table_floats(n_batch, hp->n_rot);
}

static int in_max_in(const hparams *hp) {
    const int QD = hp->info.n_heads * hp->info.head_dim;
    return QD > hp->info.dim ? QD : hp->info.dim;
}

/* RoPE at each token's position within its segment */
static void in_prepare(const part_step *c) {
    const in_work w = work_of(c->hp, c->n, c->work);
    for (int t = 0; t < c->n; t++) w.lpos[t] = c->pos[t] % c->hp->segment;
    rope_table_at(w.rope, w.lpos, c->n, c->hp->n_rot, c->hp->info.rope_base);
}

/* `rows` consecutive tokens of one session, all in its current segment, through `layer`: q, sq
 * (rows, H·d), k, sk, v (rows, Hkv·d); out (rows, H·d) receives the mixed heads. */
static void attend_piece(infini_state *s, int layer, int rows, const float *q, const float *k,
                         const float *v, const float *sq, const float *sk, const float *beta,
                         float *out) {
    const int d = s->d, H = s->H, Hkv = s->Hkv, group = H / Hkv, R = s->rows;
    const size_t QD = (size_t)H * d, KD = (size_t)Hkv * d;
    int64_t *cnt = counters(s, layer);
    const int c0 = (int)cnt[0], has_mem = cnt[1] > 0;
    for (int g = 0; g < Hkv; g++) {
        const head_mem hm = head_of(s, layer, g);
        for (int r = 0; r < rows; r++) {
            memcpy(hm.K + (size_t)(c0 + r) * d, k + r * KD + (size_t)g * d, (size_t)d * 4);
            memcpy(hm.V + (size_t)(c0 + r) * d, v + r * KD + (size_t)g * d, (size_t)d * 4);
        }
    }
    const float scale = 1.0f / sqrtf((float)d);
    float *scratch = (float *)(s->base + s->off_scratch);
    const int n_blocks = (rows + R - 1) / R;
#pragma omp parallel for schedule(dynamic, 1) num_threads(s->n_threads)
    for (int job = 0; job < H * n_blocks; job++) {
        const int hq = job / n_blocks, r0 = (job % n_blocks) * R;
        const int nr = rows - r0 < R ? rows - r0 : R, n_keys = c0 + r0 + nr;
        const head_mem hm = head_of(s, layer, hq / group);
        float *sc = scratch + (size_t)omp_get_thread_num() * R * s->ld;
        float *o = out + (size_t)r0 * QD + (size_t)hq * d;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, n_keys, d, scale,
                    q + (size_t)r0 * QD + (size_t)hq * d, (int)QD, hm.K, d, 0.0f, sc, (int)s->ld);
        for (int r = 0; r < nr; r++) {
            const int valid = c0 + r0 + r + 1;
            float *row = sc + (size_t)r * s->ld;
            softmax(row, valid);
            memset(row + valid, 0, (size_t)(n_keys - valid) * sizeof(float));
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nr, d, n_keys, 1.0f, sc, (int)s->ld,
                    hm.V, d, 0.0f, o, (int)QD);
        if (!has_mem) continue;
        const float gate = sigmoidf(beta[hq]);
        for (int r = 0; r < nr; r++) {
            float *orow = o + (size_t)r * QD;
            mem_read(sc, hm.M, hm.z, sq + (size_t)(r0 + r) * QD + (size_t)hq * d, d);
            for (int j = 0; j < d; j++) orow[j] = gate * sc[j] + (1.0f - gate) * orow[j];
        }
    }
#pragma omp parallel for schedule(static) num_threads(s->n_threads)
    for (int g = 0; g < Hkv; g++) {
        const head_mem hm = head_of(s, layer, g);
        float *tmp = scratch + (size_t)omp_get_thread_num() * R * s->ld;
        for (int r = 0; r < rows; r++)
            mem_write(hm.Mn, hm.zn, hm.M, hm.z, sk + r * KD + (size_t)g * d,
                      v + r * KD + (size_t)g * d, d, s->delta, tmp);
    }
    cnt[0] += rows;
    if (cnt[0] == s->N) { /* the segment is full: it becomes memory */
        for (int g = 0; g < Hkv; g++) {
            const head_mem hm = head_of(s, layer, g);
            memcpy(hm.M, hm.Mn, (size_t)d * d * sizeof(float));
            memcpy(hm.z, hm.zn, (size_t)d * sizeof(float));
        }
        cnt[0] = 0;
        cnt[1]++;
    }
}

static msrnn_status in_infer(const part_step *c, const float *xn, float *out) {
    const hparams *hp = c->hp;
    const int n = c->n, H = hp->info.n_heads, Hkv = hp->info.n_kv_heads, d = hp->info.head_dim;
    const size_t QD = (size_t)H * d, KD = (size_t)Hkv * d;
    in_work w = work_of(hp, n, c->work);
    float *qkv[3] = {w.q, w.k, w.v};
    const weight *wqkv[3] = {&c->w[W_Q], &c->w[W_K], &c->w[W_V]};
    matmul_many(3, qkv, xn, wqkv, n, c->scratch, c->n_threads);
    elu1_rows(w.sq, w.q, (size_t)n * QD, c->n_threads);
    elu1_rows(w.sk, w.k, (size_t)n * KD, c->n_threads);
    rope_forward(w.q, w.q, w.rope, n, n, H, d, hp->n_rot, c->n_threads);
    rope_forward(w.k, w.k, w.rope, n, n, Hkv, d, hp->n_rot, c->n_threads);
    const float *beta = c->w[W_GATE].data;
    for (int sq = 0; sq < c->n_seq; sq++) {
        infini_state *s = c->state[sq];
        for (int t = c->seq_start[sq]; t < c->seq_start[sq + 1];) {
            const int room = s->N - (int)counters(s, c->layer)[0];
            const int left = c->seq_start[sq + 1] - t, rows = left < room ? left : room;
            attend_piece(s, c->layer, rows, w.q + t * QD, w.k + t * KD, w.v + t * KD, w.sq + t * QD,
                         w.sk + t * KD, beta, w.att + t * QD);
            t += rows;
        }
    }
    matmul(out, w.att, &c->w[W_O], n, c->scratch, c->n_threads);
    return MSRNN_OK;
}

/* ---- training ------------------------------------------------------------------------------- */

static int n_segments(const hparams *hp, int T) { return (T + hp->segment - 1) / hp->segment; }

static size_t state_floats(const hparams *hp) {
    const size_t d = (size_t)hp->info.head_dim;
    return d * d + d;
}

/* saved per layer: pre-RoPE q and k, v, the local attention output, its log-sum-exp (per
 * segment: B blocks of T·H), the mixed heads, and (M_s, z_s) of every (sequence, segment, kv head)
 */
typedef struct {
    float *q, *k, *v, *att, *y, *lse, *states;
} in_acts;

static in_acts acts_of(const part_train *c) {
    const hparams *hp = c->hp;
    const size_t N = (size_t)c->B * c->T, QD = (size_t)hp->info.n_heads * hp->info.head_dim,
                 KD = (size_t)hp->info.n_kv_heads * hp->info.head_dim;
    float *p = c->act;
    in_acts a;
    a.q = p, p += N * QD;
    a.k = p, p += N * KD;
    a.v = p, p += N * KD;
    a.att = p, p += N * QD;
    a.y = p, p += N * QD;
    a.lse = p, p += N * hp->info.n_heads;
    a.states = p;
    return a;
}

static size_t in_train_act_floats(const hparams *hp, int B, int T) {
    const size_t N = (size_t)B * T, QD = (size_t)hp->info.n_heads * hp->info.head_dim,
                 KD = (size_t)hp->info.n_kv_heads * hp->info.head_dim;
    return N * (3 * QD + 2 * KD) + N * hp->info.n_heads +
           (size_t)B * n_segments(hp, T) * hp->info.n_kv_heads * state_floats(hp);
}

/* the RoPE table of positions t mod N, t < T */
static size_t in_train_shared_floats(const hparams *hp, int B, int T) {
    (void)B;
    return rope_table_floats(T, hp->n_rot);
}

static void in_train_init(const hparams *hp, int B, int T, float *shared) {
    (void)B;
    int64_t *pos = malloc(sizeof(int64_t) * (size_t)T);
    if (!pos) { /* tiny; train_model_open has just allocated far more */
        for (int t = 0; t < T; t += hp->segment)
            rope_table_init(shared + (size_t)t * hp->n_rot,
                            T - t < hp->segment ? T - t : hp->segment, hp->n_rot,
                            hp->info.rope_base);
        return;
    }
    for (int t = 0; t < T; t++) pos[t] = t % hp->segment;
    rope_table_at(shared, pos, T, hp->n_rot, hp->info.rope_base);
    free(pos);
}

/* per thread of the memory jobs: G, A (d × d), gz, az and eight vectors (d) */
static size_t job_floats(const hparams *hp) {
    const size_t d = (size_t)hp->info.head_dim;
    return 2 * align16(d * d) + 12 * align16(d);
}

/* shared scratch: flash attention's tiles, post-RoPE q and k, the gradients, β's partial sums per
 * sequence, and the memory jobs' own */
typedef struct {
    float *att, *qr, *kr, *dy, *datt, *dqr, *dkr, *dq, *dk, *dv, *dbeta, *job;
} in_scratch;

static size_t in_train_scratch_floats(const hparams *hp, int B, int T, int n_threads) {
    const size_t N = (size_t)B * T, QD = (size_t)hp->info.n_heads * hp->info.head_dim,
                 KD = (size_t)hp->info.n_kv_heads * hp->info.head_dim;
    return attention_scratch_floats(T, hp->info.head_dim, n_threads) + N * (5 * QD + 4 * KD) +
           (size_t)B * hp->info.n_heads + (size_t)n_threads * job_floats(hp);
}

static in_scratch scratch_of(const part_train *c) {
    const hparams *hp = c->hp;
    const size_t N = (size_t)c->B * c->T, QD = (size_t)hp->info.n_heads * hp->info.head_dim,
                 KD = (size_t)hp->info.n_kv_heads * hp->info.head_dim;
    float *p = c->scratch;
    in_scratch s;
    s.att = p, p += attention_scratch_floats(c->T, hp->info.head_dim, c->n_threads);
    s.qr = p, p += N * QD;
    s.kr = p, p += N * KD;
    s.dy = p, p += N * QD;
    s.datt = p, p += N * QD;
    s.dqr = p, p += N * QD;
    s.dkr = p, p += N * KD;
    s.dq = p, p += N * QD;
    s.dk = p, p += N * KD;
    s.dv = p, p += N * KD;
    s.dbeta = p, p += (size_t)c->B * hp->info.n_heads;
    s.job = p;
    return s;
}

/* post-RoPE copies of q and k (RoPE within each segment) */
static void rope_qk(const part_train *c, const in_acts *a, const in_scratch *s) {
    const hparams *hp = c->hp;
    const int N = c->B * c->T, H = hp->info.n_heads, Hk = hp->info.n_kv_heads,
              d = hp->info.head_dim;
    rope_forward(s->qr, a->q, c->shared, N, c->T, H, d, hp->n_rot, c->n_threads);
    rope_forward(s->kr, a->k, c->shared, N, c->T, Hk, d, hp->n_rot, c->n_threads);
}

static float *state_at(const part_train *c, const in_acts *a, int b, int seg, int g) {
    const hparams *hp = c->hp;
    const size_t idx = ((size_t)b * n_segments(hp, c->T) + seg) * hp->info.n_kv_heads + g;
    return a->states + idx * state_floats(hp);
}

/* The memory of sequence b, kv head g across all segments: save (M_s, z_s), mix the reads into y.
 */
static void memory_forward(const part_train *c, const in_acts *a, int b, int g, float *job) {
    const hparams *hp = c->hp;
    const int T = c->T, Nseg = hp->segment, S = n_segments(hp, T), d = hp->info.head_dim;
    const int H = hp->info.n_heads, group = H / hp->info.n_kv_heads;
    const size_t QD = (size_t)H * d, KD = (size_t)hp->info.n_kv_heads * d, dd = (size_t)d * d;
    const int delta = hp->memory_rule == MEMORY_RULE_DELTA;
    const float *beta = c->w[W_GATE];
    float *R = job, *rz = R + align16(dd), *sv = rz + align16(d), *amem = sv + align16(d),
          *tmp = amem + align16(d);
    memset(R, 0, dd * sizeof(float));
    memset(rz, 0, (size_t)d * sizeof(float));
    for (int seg = 0; seg < S; seg++) {
        float *Ms = state_at(c, a, b, seg, g), *zs = Ms + dd;
        memcpy(Ms, R, dd * sizeof(float));
        memcpy(zs, rz, (size_t)d * sizeof(float));
        const size_t t0 = (size_t)b * T + (size_t)seg * Nseg;
        const int len = T - seg * Nseg < Nseg ? T - seg * Nseg : Nseg;
        for (int t = 0; t < len; t++)
            for (int h = g * group; h < (g + 1) * group; h++) {
                const size_t off = (t0 + t) * QD + (size_t)h * d;
                float *y = a->y + off;
                const float *at = a->att + off;
                if (seg == 0) {
                    memcpy(y, at, (size_t)d * sizeof(float));
                    continue;
                }
                for (int i = 0; i < d; i++) sv[i] = elu1(a->q[off + i]);
                mem_read(amem, Ms, zs, sv, d);
                const float gate = sigmoidf(beta[h]);
                for (int j = 0; j < d; j++) y[j] = gate * amem[j] + (1.0f - gate) * at[j];
            }
        if (seg == S - 1) break; /* the last write is read by no one */
        for (int t = 0; t < len; t++) {
            const size_t off = (t0 + t) * KD + (size_t)g * d;
            for (int i = 0; i < d; i++) sv[i] = elu1(a->k[off + i]);
            mem_write(R, rz, Ms, zs, sv, a->v + off, d, delta, tmp);
        }
    }
}

static void in_train_forward(const part_train *c, const float *xn, float *out) {
    const hparams *hp = c->hp;
    const int B = c->B, T = c->T, N = B * T, C = hp->info.dim, Nseg = hp->segment;
    const int H = hp->info.n_heads, Hk = hp->info.n_kv_heads, d = hp->info.head_dim;
    const int QD = H * d, KD = Hk * d;
    const in_acts a = acts_of(c);
    const in_scratch s = scratch_of(c);
    matmul_forward(a.q, xn, c->w[W_Q], N, C, QD, c->n_threads);
    matmul_forward(a.k, xn, c->w[W_K], N, C, KD, c->n_threads);
    matmul_forward(a.v, xn, c->w[W_V], N, C, KD, c->n_threads);
    rope_qk(c, &a, &s);
    for (int b = 0; b < B; b++)
        for (int t0 = 0; t0 < T; t0 += Nseg) {
            const size_t o = (size_t)b * T + t0;
            attention_forward(a.att + o * QD, a.lse + o * H, s.qr + o * QD, s.kr + o * KD,
                              a.v + o * KD, 1, T - t0 < Nseg ? T - t0 : Nseg, H, Hk, d, s.att,
                              c->n_threads);
        }
#pragma omp parallel for schedule(static) num_threads(c->n_threads)
    for (int job = 0; job < B * Hk; job++)
        memory_forward(c, &a, job / Hk, job % Hk,
                       s.job + (size_t)omp_get_thread_num() * job_floats(hp));
    matmul_forward(out, a.y, c->w[W_O], N, QD, C, c->n_threads);
}

/* Backward through the memory of sequence b, kv head g, last segment first: from ∂/∂y (s->dy) to
 * ∂/∂att (s->datt), and into ∂/∂q, ∂/∂k (pre-RoPE, s->dq, s->dk), ∂/∂v (s->dv) and β's partial sums
 * (s->dbeta, this sequence's row). */
static void memory_backward(const part_train *c, const in_acts *a, const in_scratch *s, int b,
                            int g, float *job) {
    const hparams *hp = c->hp;
    const int T = c->T, Nseg = hp->segment, S = n_segments(hp, T), d = hp->info.head_dim;
    const int H = hp->info.n_heads, group = H / hp->info.n_kv_heads;
    const size_t QD = (size_t)H * d, KD = (size_t)hp->info.n_kv_heads * d, dd = (size_t)d * d;
    const int delta = hp->memory_rule == MEMORY_RULE_DELTA;
    const float *beta = c->w[W_GATE];
    float *G = job, *A = G + align16(dd), *gz = A + align16(dd), *az = gz + align16(d);
    float *sv = az + align16(d), *u = sv + align16(d), *r = u + align16(d), *du = r + align16(d);
    float *dsv = du + align16(d), *dn = dsv + align16(d), *amem = dn + align16(d);
    float *dbeta = s->dbeta + (size_t)b * H;
    memset(G, 0, dd * sizeof(float));
    memset(gz, 0, (size_t)d * sizeof(float));
    for (int h = g * group; h < (g + 1) * group; h++) dbeta[h] = 0;
    for (int seg = S - 1; seg >= 0; seg--) {
        const float *Ms = state_at(c, a, b, seg, g), *zs = Ms + dd;
        const size_t t0 = (size_t)b * T + (size_t)seg * Nseg;
        const int len = T - seg * Nseg < Nseg ? T - seg * Nseg : Nseg;
        memset(A, 0, dd * sizeof(float));
        memset(az, 0, (size_t)d * sizeof(float));
        /* the write of this segment: M_{seg+1} += σ(k)ᵀ u, z_{seg+1} += σ(k); G = ∂/∂M_{seg+1} */
        for (int t = 0; seg < S - 1 && t < len; t++) {
            const size_t off = (t0 + t) * KD + (size_t)g * d;
            const float *kp = a->k + off, *v = a->v + off;
            for (int i = 0; i < d; i++) sv[i] = elu1(kp[i]);
            const int corr = delta && seg > 0;
            float den = 0;
            if (corr) {
                den = mem_read(r, Ms, zs, sv, d);
                for (int j = 0; j < d; j++) u[j] = v[j] - r[j];
            } else {
                memcpy(u, v, (size_t)d * sizeof(float));
            }
            memset(du, 0, (size_t)d * sizeof(float));
            for (int i = 0; i < d; i++) axpy_f32(du, sv[i], G + (size_t)i * d, d);
            for (int i = 0; i < d; i++) dsv[i] = dot_f32(G + (size_t)i * d, u, d) + gz[i];
            axpy_f32(s->dv + off, 1.0f, du, d);
            if (corr) { /* u = v − r, r = σ(k) M_s / e, e = σ(k)·z_s + ε */
                float dr_r = 0;
                for (int j = 0; j < d; j++) dn[j] = -du[j] / den, dr_r += du[j] * r[j];
                const float de = dr_r / den;
                for (int i = 0; i < d; i++)
                    dsv[i] += dot_f32(Ms + (size_t)i * d, dn, d) + de * zs[i];
                for (int i = 0; i < d; i++) axpy_f32(A + (size_t)i * d, sv[i], dn, d);
                axpy_f32(az, de, sv, d);
            }
            for (int i = 0; i < d; i++) s->dk[off + i] += dsv[i] * elu1_grad(kp[i]);
        }
        /* the reads of this segment: y = gate·A_mem + (1 − gate)·att */
        for (int t = 0; t < len; t++)
            for (int h = g * group; h < (g + 1) * group; h++) {
                const size_t off = (t0 + t) * QD + (size_t)h * d;
                const float *dy = s->dy + off, *at = a->att + off, *qp = a->q + off;
                float *datt = s->datt + off;
                if (seg == 0) {
                    memcpy(datt, dy, (size_t)d * sizeof(float));
                    continue;
                }
                const float gate = sigmoidf(beta[h]);
                for (int i = 0; i < d; i++) sv[i] = elu1(qp[i]);
                const float den = mem_read(amem, Ms, zs, sv, d);
                float dgate = 0, dden = 0;
                for (int j = 0; j < d; j++) {
                    datt[j] = (1.0f - gate) * dy[j];
                    dgate += dy[j] * (amem[j] - at[j]);
                    dn[j] = gate * dy[j] / den; /* ∂/∂(σ(q) M_s) */
                    dden -= gate * dy[j] * amem[j];
                }
                dden /= den;
                dbeta[h] += dgate * gate * (1.0f - gate);
                for (int i = 0; i < d; i++) {
                    const float dsq = dot_f32(Ms + (size_t)i * d, dn, d) + dden * zs[i];
                    s->dq[off + i] += dsq * elu1_grad(qp[i]);
                }
                for (int i = 0; i < d; i++) axpy_f32(A + (size_t)i * d, sv[i], dn, d);
                axpy_f32(az, dden, sv, d);
            }
        /* ∂/∂M_seg = ∂/∂M_{seg+1} (M_{seg+1} = M_seg + writes) + this segment's reads of M_seg */
        axpy_f32(G, 1.0f, A, (int)dd);
        axpy_f32(gz, 1.0f, az, d);
    }
}

static void zero(float *p, size_t n) { memset(p, 0, n * sizeof(float)); }

static void in_train_backward(const part_train *c, const float *xn, const float *dout, float *dxn) {
    const hparams *hp = c->hp;
    const int B = c->B, T = c->T, N = B * T, C = hp->info.dim, Nseg = hp->segment;
    const int H = hp->info.n_heads, Hk = hp->info.n_kv_heads, d = hp->info.head_dim;
    const int QD = H * d, KD = Hk * d;
    const in_acts a = acts_of(c);
    const in_scratch s = scratch_of(c);
    zero(s.dy, (size_t)N * QD);
    matmul_backward(s.dy, c->dw[W_O], dout, a.y, c->w[W_O], N, QD, C, c->n_threads);
    zero(s.dq, (size_t)N * QD);
    zero(s.dk, (size_t)N * KD);
    zero(s.dv, (size_t)N * KD);
#pragma omp parallel for schedule(static) num_threads(c->n_threads)
    for (int job = 0; job < B * Hk; job++)
        memory_backward(c, &a, &s, job / Hk, job % Hk,
                        s.job + (size_t)omp_get_thread_num() * job_floats(hp));
    for (int h = 0; h < H; h++) /* β: the sequences' partial sums in order */
        for (int b = 0; b < B; b++) c->dw[W_GATE][h] += s.dbeta[(size_t)b * H + h];
    rope_qk(c, &a, &s);
    zero(s.dqr, (size_t)N * QD);
    zero(s.dkr, (size_t)N * KD);
    for (int b = 0; b < B; b++)
        for (int t0 = 0; t0 < T; t0 += Nseg) {
            const size_t o = (size_t)b * T + t0;
            attention_backward(s.dqr + o * QD, s.dkr + o * KD, s.dv + o * KD, s.datt + o * QD,
                               s.qr + o * QD, s.kr + o * KD, a.v + o * KD, a.att + o * QD,
                               a.lse + o * H, 1, T - t0 < Nseg ? T - t0 : Nseg, H, Hk, d, s.att,
                               c->n_threads);
        }
    rope_backward(s.dq, s.dqr, c->shared, N, T, H, d, hp->n_rot, c->n_threads);
    rope_backward(s.dk, s.dkr, c->shared, N, T, Hk, d, hp->n_rot, c->n_threads);
    matmul_backward(dxn, c->dw[W_Q], s.dq, xn, c->w[W_Q], N, C, QD, c->n_threads);
    matmul_backward(dxn, c->dw[W_K], s.dk, xn, c->w[W_K], N, C, KD, c->n_threads);
    matmul_backward(dxn, c->dw[W_V], s.dv, xn, c->w[W_V], N, C, KD, c->n_threads);
}

const part_kind part_infini = {
    "infini",
    in_read_keys,
    in_write_keys,
    in_params,
    in_check,
    in_state_bytes,
    in_state_init,
    in_state_reset,
    in_bounded,
    in_used_bytes,
    NULL,
    NULL,
    in_work_floats,
    in_max_in,
    in_prepare,
    in_infer,
    in_train_act_floats,
    in_train_shared_floats,
    in_train_scratch_floats,
    in_train_init,
    in_train_forward,
    in_train_backward,
    NULL,
    in_state_data,
};
