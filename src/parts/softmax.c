/* softmax.c — the softmax-attention token mixer: Llama's attention, everything about it in one
 * file. Parameters W_q, W_k, W_v, W_o; RoPE on q and k; GQA causal attention; the KV cache that
 * is its inference state, with an eviction policy for the bounded caches (window, sink, h2o,
 * tova, tova-head, merge: src/memory/policy_*.c, one short file each); flash attention for
 * training.
 *
 * The KV cache, per layer: keys and values (H_kv, slots, d) in f32 or f16, one head's keys
 * contiguous for the score loop; and per kept set (one per layer, or one per kv head for per-head
 * policies) the absolute position and eviction score of each slot. A bounded cache has budget + 1
 * slots: each token is appended, attended to together with everything held, and then — if the
 * layer is over budget — one entry is evicted (possibly the new one) and the last slot moves into
 * the freed one. Keys keep the RoPE of their original position, so relative distances to kept keys
 * equal the full model's (METHODS.md §1). A summary policy (merge and its variants) folds the
 * evicted entry into its kv head's summary columns (counts and sums in double, policy_merge.c),
 * which every query head then reads as more entries of the same softmax, and which take their
 * entries of the budget while they are non-empty.
 *
 * Every cache attends token by token through attend_token(), the same arithmetic in the same
 * order, so a bounded cache that never evicts is bit-identical to the full one. The full cache can
 * instead run prompt batches as blocked sgemm (batched_attention), which is faster but rounds
 * differently.
 */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "memory/kv_policy.h"
#include "nn/ops.h"
#include "parts/kv_cache.h"
#include "parts/part.h"
#include "tensor/kernels.h"

enum { W_Q, W_K, W_V, W_O, N_W };

/* ---- the KV cache ------------------------------------------------------------------------- */

typedef struct {
    int n_layers, n_heads, n_kv_heads, head_dim;
    int n_ctx;             /* the full cache: longest sequence */
    int kv_size;           /* bounded caches: entries kept per layer */
    int kv_sinks;          /* sink, merge: positions never evicted */
    float merge_bias;      /* merge: β of the summary's logit */
    int summary_cols;      /* summary policies: most columns per kv head (merge-clusters: S) */
    int kv_f16;            /* store keys/values as f16 */
    int batched_attention; /* full cache: sgemm attention for prompt batches */
    int n_threads;         /* threads of the batched path (its scratch is per thread) */
} memory_shape;

typedef struct memory {
    const kv_policy *policy; /* NULL: the full cache */
    memory_shape shape;
    void *state; /* the cache, after this header */
} memory;

/* Sizes derived from the shape; the state is laid out in this order:
 *   count[n_layers][n_sets]        entries held per kept set
 *   pos[n_layers][n_sets][slots]   absolute positions (64-bit: a bounded cache runs for ever)
 *   score[n_layers][n_sets][slots] eviction scores
 *   merged[n_layers], n_cols[n_layers], cols[n_layers][H_kv][S + 1][col]   summary policies:
 *                                  entries folded, columns in use, the columns (doubles)
 *   probs[n_heads][ld]             the newest query's attention rows (one token step)
 *   kv[n_layers][2][H_kv][slots][d]
 *   scores for the batched path: [n_threads][block_rows][ld]                                   */
typedef struct {
    int slots, n_sets, block_rows;
    size_t ld, elem, off_pos, off_score, off_summ, off_probs, off_kv, off_batch, layer_kv, total;
} layout;

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

/* one kv head's columns: room for S + 1 (merge-clusters adds one, then merges two) */
static size_t head_cols_doubles(const kv_summary *sm, const memory_shape *s) {
    return (size_t)(s->summary_cols + 1) * summary_col_doubles(sm, s->head_dim);
}

static size_t summ_bytes(const kv_summary *sm, const memory_shape *s) {
    return 2 * align64((size_t)s->n_layers * sizeof(int64_t)) +
           align64((size_t)s->n_layers * s->n_kv_heads * head_cols_doubles(sm, s) * sizeof(double));
}

static layout layout_of(const memory *m) {
    const memory_shape *s = &m->shape;
    layout L;
    L.slots = m->policy ? s->kv_size + 1 : s->n_ctx;
    L.n_sets = m->policy && m->policy->per_head ? s->n_kv_heads : 1;
    const kv_summary *sm = m->policy ? m->policy->summary : NULL;
    L.ld = ((size_t)L.slots + (sm ? s->summary_cols : 0) + 15) & ~(size_t)15; /* + summary's */
    L.elem = s->kv_f16 ? 2 : 4;
    const size_t sets = (size_t)s->n_layers * L.n_sets;
    L.off_pos = align64(sets * sizeof(int));
    L.off_score = L.off_pos + align64(sets * L.slots * sizeof(int64_t));
    L.off_summ = L.off_score + align64(sets * L.slots * sizeof(float));
    L.off_probs = L.off_summ + (sm ? summ_bytes(sm, s) : 0);
    L.off_kv = L.off_probs + align64((size_t)s->n_heads * L.ld * sizeof(float));
    L.layer_kv = 2 * (size_t)s->n_kv_heads * L.slots * s->head_dim * L.elem;
    L.off_batch = L.off_kv + align64(L.layer_kv * s->n_layers);
    int rows = (int)((1 << 22) / L.ld);
    L.block_rows = rows < 8 ? 8 : rows > 64 ? 64 : rows;
    const int batched = !m->policy && s->batched_attention && !s->kv_f16;
    L.total =
        L.off_batch + (batched ? (size_t)s->n_threads * L.block_rows * L.ld * sizeof(float) : 0);
    return L;
}

static int *count_of(const memory *m, const layout *L, int layer) {
    return (int *)m->state + (size_t)layer * L->n_sets;
}
static int64_t *pos_of(const memory *m, const layout *L, int layer, int set) {
    return (int64_t *)((uint8_t *)m->state + L->off_pos) +
           ((size_t)layer * L->n_sets + set) * L->slots;
}
static float *score_of(const memory *m, const layout *L, int layer, int set) {
    return (float *)((uint8_t *)m->state + L->off_score) +
           ((size_t)layer * L->n_sets + set) * L->slots;
}
static int64_t *merged_of(const memory *m, const layout *L, int layer) {
    return (int64_t *)((uint8_t *)m->state + L->off_summ) + layer;
}
static int64_t *n_cols_of(const memory *m, const layout *L, int layer) {
    const size_t skip = align64((size_t)m->shape.n_layers * sizeof(int64_t));
    return (int64_t *)((uint8_t *)m->state + L->off_summ + skip) + layer;
}
static double *cols_of(const memory *m, const layout *L, int layer, int g) {
    const memory_shape *s = &m->shape;
    double *base = (double *)((uint8_t *)m->state + L->off_summ +
                              2 * align64((size_t)s->n_layers * sizeof(int64_t)));
    return base + ((size_t)layer * s->n_kv_heads + g) * head_cols_doubles(m->policy->summary, s);
}
static void *kv_row(const memory *m, const layout *L, int layer, int is_v, int g, int slot) {
    uint8_t *base = (uint8_t *)m->state + L->off_kv + L->layer_kv * layer;
    size_t off =
        ((size_t)(is_v * m->shape.n_kv_heads + g) * L->slots + slot) * m->shape.head_dim * L->elem;
    return base + off;
}

static void kv_reset(memory *m) {
    layout L = layout_of(m);
    memset(m->state, 0, L.off_probs); /* counts, positions, scores, summaries */
}

static void store_row(void *dst, const float *src, int d, int f16) {
    if (f16)
        quantize_row(TYPE_F16, src, dst, d);
    else
        memcpy(dst, src, (size_t)d * sizeof(float));
}

static void copy_slot(const memory *m, const layout *L, int layer, int g, int to, int from) {
    const size_t row = (size_t)m->shape.head_dim * L->elem;
    memcpy(kv_row(m, L, layer, 0, g, to), kv_row(m, L, layer, 0, g, from), row);
    memcpy(kv_row(m, L, layer, 1, g, to), kv_row(m, L, layer, 1, g, from), row);
}

/* A summary policy: fold the entry in `slot` of every kv head of the layer into that head's
 * columns (every head ends with the same number of columns). */
static void fold(const memory *m, const layout *L, int layer, int slot) {
    const memory_shape *s = &m->shape;
    int64_t *n_cols = n_cols_of(m, L, layer);
    int cols = (int)*n_cols;
    for (int g = 0; g < s->n_kv_heads; g++)
        cols = summary_fold(m->policy->summary, cols_of(m, L, layer, g), (int)*n_cols,
                            s->summary_cols, kv_row(m, L, layer, 0, g, slot),
                            kv_row(m, L, layer, 1, g, slot), s->head_dim, s->kv_f16);
    *n_cols = cols;
    ++*merged_of(m, L, layer);
}

/* One token: append its k, v; every query head attends over its set's entries (probabilities kept
 * in probs for the policy); the policy scores and, when over budget, evicts. */
static void attend_token(memory *m, const layout *L, int layer, const float *q, const float *k,
                         const float *v, int64_t pos, float *out) {
    const memory_shape *s = &m->shape;
    const int d = s->head_dim, H = s->n_heads, Hkv = s->n_kv_heads, group = H / Hkv;
    const kv_policy *pol = m->policy;
    int *count = count_of(m, L, layer);
    for (int set = 0; set < L->n_sets; set++) {
        pos_of(m, L, layer, set)[count[set]] = pos;
        score_of(m, L, layer, set)[count[set]] = 0;
    }
    for (int g = 0; g < Hkv; g++) {
        const int slot = count[L->n_sets > 1 ? g : 0];
        store_row(kv_row(m, L, layer, 0, g, slot), k + (size_t)g * d, d, s->kv_f16);
        store_row(kv_row(m, L, layer, 1, g, slot), v + (size_t)g * d, d, s->kv_f16);
    }
    for (int set = 0; set < L->n_sets; set++) count[set]++;

    const tensor_type et = s->kv_f16 ? TYPE_F16 : TYPE_F32;
    const float scale = 1.0f / sqrtf((float)d);
    float *probs = (float *)((uint8_t *)m->state + L->off_probs);
    const kv_summary *sm = pol ? pol->summary : NULL;
    const int n_cols = sm ? (int)*n_cols_of(m, L, layer) : 0;
    const int64_t work = (int64_t)H * count[0] * d;
    const int pairs = (group + 1) / 2; /* query heads of a kv head taken two at a time */
#pragma omp parallel for if (work > 65536) num_threads(s->n_threads)
    for (int job = 0; job < Hkv * pairs; job++) {
        const int g = job / pairs, h0 = g * group + 2 * (job % pairs);
        const int nq = g * group + group - h0 < 2 ? 1 : 2;
        const int n_keys = count[L->n_sets > 1 ? g : 0];
        /* one head's keys and values are contiguous; one pass over the keys for two heads */
        dot_rows(et, probs + (size_t)h0 * L->ld, L->ld, kv_row(m, L, layer, 0, g, 0), n_keys, d,
                 q + (size_t)h0 * d, nq, scale);
        for (int hq = h0; hq < h0 + nq; hq++) {
            float *p = probs + (size_t)hq * L->ld;
            const float *qh = q + (size_t)hq * d;
            float *o = out + (size_t)hq * d;
            /* the summary's columns are more entries of the softmax, after the cached ones */
            if (n_cols > 0)
                summary_logits(sm, cols_of(m, L, layer, g), n_cols, qh, d, scale, s->merge_bias,
                               p + n_keys);
            softmax(p, n_keys + n_cols);
            mix_rows(et, o, kv_row(m, L, layer, 1, g, 0), n_keys, d, p);
            if (n_cols > 0) summary_read(sm, cols_of(m, L, layer, g), n_cols, p + n_keys, d, o);
        }
    }
    if (!pol) return;
    for (int set = 0; set < L->n_sets; set++) {
        const int n = count[set], heads = L->n_sets > 1 ? group : H;
        int64_t *ps = pos_of(m, L, layer, set);
        float *sc = score_of(m, L, layer, set);
        if (pol->observe) pol->observe(sc, n, probs + (size_t)set * heads * L->ld, heads, L->ld);
        /* over budget: evict (a summary policy folds the victim into its columns, which take
         * entries themselves, so a fold may be followed by more) */
        while (count[set] + (sm ? sm->cost * (int)*n_cols_of(m, L, layer) : 0) > s->kv_size) {
            const int last = count[set] - 1;
            const int victim = pol->victim(ps, sc, count[set], s->kv_size, s->kv_sinks);
            if (sm) fold(m, L, layer, victim);
            if (victim != last) {
                ps[victim] = ps[last];
                sc[victim] = sc[last];
                for (int g = 0; g < Hkv; g++)
                    if (L->n_sets == 1 || g == set) copy_slot(m, L, layer, g, victim, last);
            }
            count[set] = last;
        }
    }
}

/* Prompt batches of the full cache: for each (query head, block of query rows), scores = Q Kᵀ and
 * out = P V with single-threaded sgemm, the causal mask applied in between by zeroing the future;
 * jobs spread over the OpenMP threads, each with its own block of score rows. */
static void attend_batched(memory *m, const layout *L, int layer, int n, const float *q,
                           const float *k, const float *v, const int64_t *pos, float *out) {
    const memory_shape *s = &m->shape;
    const int d = s->head_dim, H = s->n_heads, Hkv = s->n_kv_heads, group = H / Hkv;
    const int qb = L->block_rows, n_blocks = (n + qb - 1) / qb;
    int *count = count_of(m, L, layer);
    const int base = count[0];
    int64_t *ps = pos_of(m, L, layer, 0);
    for (int t = 0; t < n; t++) {
        ps[base + t] = pos[t];
        for (int g = 0; g < Hkv; g++) {
            store_row(kv_row(m, L, layer, 0, g, base + t), k + ((size_t)t * Hkv + g) * d, d, 0);
            store_row(kv_row(m, L, layer, 1, g, base + t), v + ((size_t)t * Hkv + g) * d, d, 0);
        }
    }
    count[0] = base + n;
    const float scale = 1.0f / sqrtf((float)d);
    float *scratch = (float *)((uint8_t *)m->state + L->off_batch);
#pragma omp parallel for schedule(dynamic, 1) num_threads(s->n_threads)
    for (int job = 0; job < H * n_blocks; job++) {
        const int hq = job / n_blocks, t0 = (job % n_blocks) * qb;
        const int rows = n - t0 < qb ? n - t0 : qb, n_keys = base + t0 + rows;
        const float *K = kv_row(m, L, layer, 0, hq / group, 0),
                    *V = kv_row(m, L, layer, 1, hq / group, 0);
        float *sc = scratch + (size_t)omp_get_thread_num() * qb * L->ld;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, n_keys, d, scale,
                    q + ((size_t)t0 * H + hq) * d, H * d, K, d, 0.0f, sc, (int)L->ld);
        for (int r = 0; r < rows; r++) {
            const int valid = base + t0 + r + 1;
            float *row = sc + (size_t)r * L->ld;
            softmax(row, valid);
            memset(row + valid, 0, (size_t)(n_keys - valid) * sizeof(float));
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, d, n_keys, 1.0f, sc,
                    (int)L->ld, V, d, 0.0f, out + ((size_t)t0 * H + hq) * d, H * d);
    }
}

/* The one way attending n tokens can fail, checked before anything changes. */
static msrnn_status kv_room(const memory *m, int layer, int n) {
    const layout L = layout_of(m);
    if (!m->policy && count_of(m, &L, layer)[0] + n > L.slots)
        return status_fail(MSRNN_ERR_FULL, "the KV cache holds %d tokens and %d more do not fit",
                           L.slots, n);
    return MSRNN_OK;
}

static void kv_attend(memory *m, int layer, int n, const float *q, const float *k, const float *v,
                      const int64_t *pos, float *out) {
    const memory_shape *s = &m->shape;
    const layout L = layout_of(m);
    if (!m->policy && s->batched_attention && !s->kv_f16 && n >= 8) {
        attend_batched(m, &L, layer, n, q, k, v, pos, out);
        return;
    }
    const size_t qd = (size_t)s->n_heads * s->head_dim, kvd = (size_t)s->n_kv_heads * s->head_dim;
    for (int t = 0; t < n; t++)
        attend_token(m, &L, layer, q + t * qd, k + t * kvd, v + t * kvd, pos[t], out + t * qd);
}

msrnn_status kv_cache_attend_seqs(void *const *states, int layer, int n_seq, const int *seq_start,
                                  const float *q, const float *k, const float *v,
                                  const int64_t *pos, float *out, int n_threads) {
    if (n_seq <= 0) return MSRNN_OK;
    const memory_shape *s0 = &((const memory *)states[0])->shape;
    const size_t qd = (size_t)s0->n_heads * s0->head_dim,
                 kvd = (size_t)s0->n_kv_heads * s0->head_dim;
    int n_single = 0;
    for (int i = 0; i < n_seq; i++) {
        const int nt = seq_start[i + 1] - seq_start[i];
        MSRNN_TRY(kv_room(states[i], layer, nt));
        n_single += nt == 1;
    }
    /* with two or more decoding sessions (one token each), those are attended one session per
     * thread (nested regions run on one thread, so each session's arithmetic is the same as
     * alone); every other sequence (prompt chunks, or a lone decoding token) before them, one
     * after another, each spread over the threads inside */
    const int spread = n_single >= 2;
    for (int i = 0; i < n_seq; i++) {
        const int t0 = seq_start[i], nt = seq_start[i + 1] - t0;
        if (!(spread && nt == 1))
            kv_attend(states[i], layer, nt, q + t0 * qd, k + t0 * kvd, v + t0 * kvd, pos + t0,
                      out + t0 * qd);
    }
    if (!spread) return MSRNN_OK;
#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads)
    for (int i = 0; i < n_seq; i++) {
        const int t0 = seq_start[i];
        if (seq_start[i + 1] - t0 == 1)
            kv_attend(states[i], layer, 1, q + t0 * qd, k + t0 * kvd, v + t0 * kvd, pos + t0,
                      out + t0 * qd);
    }
    return MSRNN_OK;
}

static int kv_kept(const memory *m, int layer, int head, int64_t *pos, float *score, int cap) {
    const layout L = layout_of(m);
    if (layer < 0 || layer >= m->shape.n_layers) return 0;
    const int set = L.n_sets > 1 ? (head < 0 ? 0 : head % L.n_sets) : 0;
    const int n = count_of(m, &L, layer)[set];
    const int64_t *ps = pos_of(m, &L, layer, set);
    const float *sc = score_of(m, &L, layer, set);
    /* selection by ascending position: positions are unique, so repeatedly take the next larger */
    int64_t last = -1;
    for (int i = 0; i < n && i < cap; i++) {
        int best = -1;
        for (int j = 0; j < n; j++)
            if (ps[j] > last && (best < 0 || ps[j] < ps[best])) best = j;
        pos[i] = ps[best];
        if (score) score[i] = m->policy && m->policy->observe ? sc[best] : 0;
        last = ps[best];
    }
    return n;
}

static size_t kv_used_bytes(const memory *m) {
    const layout L = layout_of(m);
    size_t entries = 0;
    for (int l = 0; l < m->shape.n_layers; l++)
        for (int set = 0; set < L.n_sets; set++) entries += (size_t)count_of(m, &L, l)[set];
    const size_t per_entry =
        2 * (size_t)m->shape.head_dim * L.elem * (m->shape.n_kv_heads / L.n_sets) +
        sizeof(int64_t) + sizeof(float);
    size_t summaries = 0; /* the columns in use, and the counters of a layer that has some */
    const kv_summary *sm = m->policy ? m->policy->summary : NULL;
    for (int l = 0; sm && l < m->shape.n_layers; l++) {
        const size_t cols = (size_t)*n_cols_of(m, &L, l);
        if (cols)
            summaries += 2 * sizeof(int64_t) + cols * m->shape.n_kv_heads *
                                                   summary_col_doubles(sm, m->shape.head_dim) *
                                                   sizeof(double);
    }
    return entries * per_entry + summaries;
}

static int kv_summary_counts(const memory *m, int layer, int head, int64_t *merged, int64_t *counts,
                             int cap) {
    const layout L = layout_of(m);
    const kv_summary *sm = m->policy ? m->policy->summary : NULL;
    *merged = 0;
    if (!sm || layer < 0 || layer >= m->shape.n_layers) return 0;
    *merged = *merged_of(m, &L, layer);
    const int n = (int)*n_cols_of(m, &L, layer), g = head < 0 ? 0 : head % m->shape.n_kv_heads;
    const double *cols = cols_of(m, &L, layer, g);
    for (int c = 0; counts && c < n && c < cap; c++)
        counts[c] = (int64_t)cols[(size_t)c * summary_col_doubles(sm, m->shape.head_dim)];
    return n;
}

/* ---- the part's session state: a memory header, then the cache ---------------------------- */

#define HEADER_BYTES align64(sizeof(memory))

/* kv_sinks: 0 is the default 4, a negative count none */
static memory memory_of(const hparams *hp, const msrnn_session_params *p) {
    memory m;
    memset(&m, 0, sizeof m);
    kv_policy_find(p->memory ? p->memory : "full", &m.policy);
    const msrnn_model_info *in = &hp->info;
    memory_shape s = {in->n_layers,
                      in->n_heads,
                      in->n_kv_heads,
                      in->head_dim,
                      p->n_ctx,
                      p->kv_size,
                      kv_params_sinks(p),
                      p->kv_merge_bias,
                      kv_params_clusters(p),
                      p->kv_f16,
                      p->batched_attention,
                      p->n_threads};
    if (!m.policy || !m.policy->summary || !m.policy->summary->clusters) s.summary_cols = 1;
    m.shape = s;
    return m;
}

msrnn_status kv_cache_check(const hparams *hp, const msrnn_session_params *p) {
    (void)hp;
    const char *name = p->memory ? p->memory : "full";
    const kv_policy *policy;
    if (kv_policy_find(name, &policy))
        return status_fail(MSRNN_ERR_INVALID, "unknown memory '%s' (%s)", name, kv_policy_names());
    if (!policy) return MSRNN_OK;
    const int sinks = kv_params_sinks(p);
    if (p->kv_size < 1 || p->kv_size > (1 << 24))
        return status_fail(MSRNN_ERR_INVALID,
                           "memory '%s' needs a budget (kv_size) in [1, 2^24], got %d", name,
                           p->kv_size);
    if (policy == &policy_sink && p->kv_size < kv_policy_min_size(policy, p))
        return status_fail(MSRNN_ERR_INVALID,
                           "memory 'sink': the budget %d must exceed the %d sink tokens",
                           p->kv_size, sinks);
    const kv_summary *sm = policy->summary;
    if (sm && sm->clusters && (p->kv_clusters < 0 || p->kv_clusters > 64))
        return status_fail(MSRNN_ERR_INVALID, "memory '%s': %d clusters, expected 1 to 64", name,
                           p->kv_clusters);
    const int summary_entries = kv_policy_summary_entries(policy, p);
    if (sm && p->kv_size < kv_policy_min_size(policy, p))
        return status_fail(MSRNN_ERR_INVALID,
                           "memory '%s': the budget %d must hold the %d sink tokens, the summary's "
                           "%d entries and at least one recent token (>= %d)",
                           name, p->kv_size, sinks, summary_entries, sinks + summary_entries + 1);
    if (policy->summary && (isnan(p->kv_merge_bias) || p->kv_merge_bias > 1e4f))
        return status_fail(MSRNN_ERR_INVALID,
                           "memory '%s': the summary's bias %g is not a number below 1e4 (-inf "
                           "is allowed)",
                           name, (double)p->kv_merge_bias);
    return MSRNN_OK;
}

size_t kv_cache_state_bytes(const hparams *hp, const msrnn_session_params *p) {
    const memory m = memory_of(hp, p);
    return HEADER_BYTES + layout_of(&m).total;
}

void kv_cache_state_reset(void *state) { kv_reset(state); }

void kv_cache_state_init(void *state, const hparams *hp, const msrnn_session_params *p) {
    memory *m = state;
    *m = memory_of(hp, p);
    m->state = (uint8_t *)state + HEADER_BYTES;
    kv_cache_state_reset(state);
}

/* everything but the batched path's scratch (the newest query's rows are kept too: small) */
void kv_cache_state_data(const void *state, size_t *offset, size_t *bytes) {
    *offset = HEADER_BYTES;
    *bytes = layout_of(state).off_batch;
}

int kv_cache_bounded(const void *state) { return ((const memory *)state)->policy != NULL; }
size_t kv_cache_used_bytes(const void *state) { return kv_used_bytes(state); }
int kv_cache_kept(const void *state, int layer, int head, int64_t *pos, float *score, int cap) {
    return kv_kept(state, layer, head, pos, score, cap);
}
int kv_cache_summary(const void *state, int layer, int head, int64_t *merged, int64_t *counts,
                     int cap) {
    return kv_summary_counts(state, layer, head, merged, counts, cap);
}

/* ---- parameters ------------------------------------------------------------------------------ */

static int sm_params(const hparams *hp, part_param out[PART_MAX_PARAMS]) {
    const msrnn_model_info *in = &hp->info;
    const int64_t D = in->dim, QD = (int64_t)in->n_heads * in->head_dim,
                  KD = (int64_t)in->n_kv_heads * in->head_dim;
    out[W_Q] = (part_param){"attn_q.weight", D, QD, 1, 1, 1.0f, 0, INIT_NORMAL, 0, 0, 1};
    out[W_K] = (part_param){"attn_k.weight", D, KD, 1, 1, 1.0f, 0, INIT_NORMAL, 0, 0, 1};
    out[W_V] = (part_param){"attn_v.weight", D, KD, 1, 1, 1.0f, 0, INIT_NORMAL, 0, 0, 1};
    out[W_O] = (part_param){"attn_output.weight", QD, D, 1, 1, 1.0f, 0, INIT_NORMAL_RESID, 0, 0, 1};
    return N_W;
}

/* ---- inference: out = W_o · attend(rope(W_q xn), rope(W_k xn), W_v xn) --------------------- */

typedef struct {
    float *q, *k, *v, *att, *rope;
} sm_work;

static sm_work work_of(const hparams *hp, int n, float *w) {
    const size_t QD = (size_t)hp->info.n_heads * hp->info.head_dim,
                 KD = (size_t)hp->info.n_kv_heads * hp->info.head_dim;
    sm_work s;
    s.q = w, w += (size_t)n * QD;
    s.k = w, w += (size_t)n * KD;
    s.v = w, w += (size_t)n * KD;
    s.att = w, w += (size_t)n * QD;
    s.rope = w;
    return s;
}

static size_t sm_work_floats(const hparams *hp, int n_batch) {
    const size_t QD = (size_t)hp->info.n_heads * hp->info.head_dim,
                 KD = (size_t)hp->info.n_kv_heads * hp->info.head_dim;
    return (size_t)n_batch * (2 * QD + 2 * KD) + rope_table_floats(n_batch, hp->n_rot);
}

static int sm_max_in(const hparams *hp) {
    const int QD = hp->info.n_heads * hp->info.head_dim;
    return QD > hp->info.dim ? QD : hp->info.dim;
}

static void sm_prepare(const part_step *c) {
    const sm_work w = work_of(c->hp, c->n, c->work);
    rope_table_at(w.rope, c->pos, c->n, c->hp->n_rot, c->hp->info.rope_base);
}

static msrnn_status sm_infer(const part_step *c, const float *xn, float *out) {
    const hparams *hp = c->hp;
    const int n = c->n, H = hp->info.n_heads, Hkv = hp->info.n_kv_heads, d = hp->info.head_dim;
    sm_work w = work_of(hp, n, c->work);
    float *qkv[3] = {w.q, w.k, w.v};
    const weight *wqkv[3] = {&c->w[W_Q], &c->w[W_K], &c->w[W_V]};
    matmul_many(3, qkv, xn, wqkv, n, c->scratch, c->n_threads);
    rope_forward(w.q, w.q, w.rope, n, n, H, d, hp->n_rot, c->n_threads);
    rope_forward(w.k, w.k, w.rope, n, n, Hkv, d, hp->n_rot, c->n_threads);
    MSRNN_TRY(kv_cache_attend_seqs(c->state, c->layer, c->n_seq, c->seq_start, w.q, w.k, w.v,
                                   c->pos, w.att, c->n_threads));
    matmul(out, w.att, &c->w[W_O], n, c->scratch, c->n_threads);
    return MSRNN_OK;
}

/* ---- training: the same recipe over B × T tokens, flash attention --------------------------- */

/* saved per layer: q, k (after RoPE), v, the attention output and its log-sum-exp */
typedef struct {
    float *q, *k, *v, *att, *lse;
} sm_acts;
/* shared scratch: flash attention's tiles, then the gradients of q, k, v, att */
typedef struct {
    float *att, *dq, *dq2, *datt, *dk, *dk2, *dv;
} sm_scratch;

static sm_acts acts_of(const part_train *c) {
    const hparams *hp = c->hp;
    const size_t N = (size_t)c->B * c->T, QD = (size_t)hp->info.n_heads * hp->info.head_dim,
                 KD = (size_t)hp->info.n_kv_heads * hp->info.head_dim;
    float *p = c->act;
    sm_acts a;
    a.q = p, p += N * QD;
    a.k = p, p += N * KD;
    a.v = p, p += N * KD;
    a.att = p, p += N * QD;
    a.lse = p;
    return a;
}

static size_t sm_train_act_floats(const hparams *hp, int B, int T) {
    const size_t N = (size_t)B * T, QD = (size_t)hp->info.n_heads * hp->info.head_dim,
                 KD = (size_t)hp->info.n_kv_heads * hp->info.head_dim;
    return N * (2 * QD + 2 * KD) + (size_t)B * hp->info.n_heads * T;
}

static size_t sm_train_shared_floats(const hparams *hp, int B, int T) {
    (void)B;
    return rope_table_floats(T, hp->n_rot);
}

static size_t sm_train_scratch_floats(const hparams *hp, int B, int T, int n_threads) {
    const size_t N = (size_t)B * T, QD = (size_t)hp->info.n_heads * hp->info.head_dim,
                 KD = (size_t)hp->info.n_kv_heads * hp->info.head_dim;
    return attention_scratch_floats(T, hp->info.head_dim, n_threads) + N * (3 * QD + 3 * KD);
}

static sm_scratch scratch_of(const part_train *c) {
    const hparams *hp = c->hp;
    const size_t N = (size_t)c->B * c->T, QD = (size_t)hp->info.n_heads * hp->info.head_dim,
                 KD = (size_t)hp->info.n_kv_heads * hp->info.head_dim;
    float *p = c->scratch;
    sm_scratch s;
    s.att = p, p += attention_scratch_floats(c->T, hp->info.head_dim, c->n_threads);
    s.dq = p, p += N * QD;
    s.dq2 = p, p += N * QD;
    s.datt = p, p += N * QD;
    s.dk = p, p += N * KD;
    s.dk2 = p, p += N * KD;
    s.dv = p;
    return s;
}

static void sm_train_init(const hparams *hp, int B, int T, float *shared) {
    (void)B;
    rope_table_init(shared, T, hp->n_rot, hp->info.rope_base);
}

static void sm_train_forward(const part_train *c, const float *xn, float *out) {
    const hparams *hp = c->hp;
    const int B = c->B, T = c->T, N = B * T, C = hp->info.dim;
    const int H = hp->info.n_heads, Hk = hp->info.n_kv_heads, d = hp->info.head_dim;
    const int QD = H * d, KD = Hk * d;
    const sm_acts a = acts_of(c);
    matmul_forward(a.q, xn, c->w[W_Q], N, C, QD, c->n_threads);
    matmul_forward(a.k, xn, c->w[W_K], N, C, KD, c->n_threads);
    matmul_forward(a.v, xn, c->w[W_V], N, C, KD, c->n_threads);
    rope_forward(a.q, a.q, c->shared, N, T, H, d, hp->n_rot, c->n_threads);
    rope_forward(a.k, a.k, c->shared, N, T, Hk, d, hp->n_rot, c->n_threads);
    attention_forward(a.att, a.lse, a.q, a.k, a.v, B, T, H, Hk, d, scratch_of(c).att, c->n_threads);
    matmul_forward(out, a.att, c->w[W_O], N, QD, C, c->n_threads);
}

static void zero(float *p, size_t n) { memset(p, 0, n * sizeof(float)); }

static void sm_train_backward(const part_train *c, const float *xn, const float *dout, float *dxn) {
    const hparams *hp = c->hp;
    const int B = c->B, T = c->T, N = B * T, C = hp->info.dim;
    const int H = hp->info.n_heads, Hk = hp->info.n_kv_heads, d = hp->info.head_dim;
    const int QD = H * d, KD = Hk * d;
    const sm_acts a = acts_of(c);
    const sm_scratch s = scratch_of(c);
    zero(s.datt, (size_t)N * QD);
    matmul_backward(s.datt, c->dw[W_O], dout, a.att, c->w[W_O], N, QD, C, c->n_threads);
    zero(s.dq, (size_t)N * QD);
    zero(s.dk, (size_t)N * KD);
    zero(s.dv, (size_t)N * KD);
    attention_backward(s.dq, s.dk, s.dv, s.datt, a.q, a.k, a.v, a.att, a.lse, B, T, H, Hk, d, s.att,
                       c->n_threads);
    zero(s.dq2, (size_t)N * QD);
    zero(s.dk2, (size_t)N * KD);
    rope_backward(s.dq2, s.dq, c->shared, N, T, H, d, hp->n_rot, c->n_threads);
    rope_backward(s.dk2, s.dk, c->shared, N, T, Hk, d, hp->n_rot, c->n_threads);
    matmul_backward(dxn, c->dw[W_Q], s.dq2, xn, c->w[W_Q], N, C, QD, c->n_threads);
    matmul_backward(dxn, c->dw[W_K], s.dk2, xn, c->w[W_K], N, C, KD, c->n_threads);
    matmul_backward(dxn, c->dw[W_V], s.dv, xn, c->w[W_V], N, C, KD, c->n_threads);
}

const part_kind part_softmax = {
    "softmax",
    NULL,
    NULL,
    sm_params,
    kv_cache_check,
    kv_cache_state_bytes,
    kv_cache_state_init,
    kv_cache_state_reset,
    kv_cache_bounded,
    kv_cache_used_bytes,
    kv_cache_kept,
    kv_cache_summary,
    sm_work_floats,
    sm_max_in,
    sm_prepare,
    sm_infer,
    sm_train_act_floats,
    sm_train_shared_floats,
    sm_train_scratch_floats,
    sm_train_init,
    sm_train_forward,
    sm_train_backward,
    NULL,
    kv_cache_state_data,
};
