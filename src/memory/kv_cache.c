/* kv_cache.c — the KV-cache memories: full (keeps everything) and the bounded caches whose eviction
 * rule is a kv_policy (window, sink, h2o, tova, tova-head).
 *
 * Per layer: keys and values (H_kv, slots, d) in f32 or f16, one head's keys contiguous for the
 * score loop; and per kept set (one per layer, or one per kv head for per-head policies) the
 * absolute position and eviction score of each slot. A bounded cache has budget + 1 slots: each
 * token is appended, attended to together with everything held, and then — if the layer is over
 * budget — one entry is evicted (possibly the new one) and the last slot moves into the freed one.
 * Keys keep the RoPE of their original position, so relative distances to kept keys equal the full
 * model's.
 *
 * Every memory attends token by token through attend_token(), the same arithmetic in the same
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
#include "memory/memory.h"
#include "tensor/kernels.h"

/* Sizes derived from the shape; the state is laid out in this order:
 *   count[n_layers][n_sets]        entries held per kept set
 *   pos[n_layers][n_sets][slots]   absolute positions
 *   score[n_layers][n_sets][slots] eviction scores
 *   probs[n_heads][ld]             the newest query's attention rows (one token step)
 *   kv[n_layers][2][H_kv][slots][d]
 *   scores for the batched path: [n_threads][block_rows][ld]                                   */
typedef struct {
    int slots, n_sets, block_rows;
    size_t ld, elem, off_pos, off_score, off_probs, off_kv, off_batch, layer_kv, total;
} layout;

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

static layout layout_of(const memory *m) {
    const memory_shape *s = &m->shape;
    layout L;
    L.slots = m->policy ? s->kv_size + 1 : s->n_ctx;
    L.n_sets = m->policy && m->policy->per_head ? s->n_kv_heads : 1;
    L.ld = ((size_t)L.slots + 15) & ~(size_t)15;
    L.elem = s->kv_f16 ? 2 : 4;
    const size_t sets = (size_t)s->n_layers * L.n_sets;
    L.off_pos = align64(sets * sizeof(int));
    L.off_score = L.off_pos + align64(sets * L.slots * sizeof(int32_t));
    L.off_probs = L.off_score + align64(sets * L.slots * sizeof(float));
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

static size_t kv_bytes(const memory *m) { return layout_of(m).total; }

static void kv_init(memory *m, void *buf) { m->state = buf; }

static int *count_of(const memory *m, const layout *L, int layer) {
    return (int *)m->state + (size_t)layer * L->n_sets;
}
static int32_t *pos_of(const memory *m, const layout *L, int layer, int set) {
    return (int32_t *)((uint8_t *)m->state + L->off_pos) +
           ((size_t)layer * L->n_sets + set) * L->slots;
}
static float *score_of(const memory *m, const layout *L, int layer, int set) {
    return (float *)((uint8_t *)m->state + L->off_score) +
           ((size_t)layer * L->n_sets + set) * L->slots;
}
static void *kv_row(const memory *m, const layout *L, int layer, int is_v, int g, int slot) {
    uint8_t *base = (uint8_t *)m->state + L->off_kv + L->layer_kv * layer;
    size_t off =
        ((size_t)(is_v * m->shape.n_kv_heads + g) * L->slots + slot) * m->shape.head_dim * L->elem;
    return base + off;
}

static void kv_reset(memory *m) {
    layout L = layout_of(m);
    memset(m->state, 0, L.off_probs); /* counts, positions, scores */
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

/* One token: append its k, v; every query head attends over its set's entries (probabilities kept
 * in probs for the policy); the policy scores and, when over budget, evicts. */
static void attend_token(memory *m, const layout *L, int layer, const float *q, const float *k,
                         const float *v, int32_t pos, float *out) {
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
    const vec_dot_fn dot = kernels_for(et)->dot_simd;
    const float scale = 1.0f / sqrtf((float)d);
    float *probs = (float *)((uint8_t *)m->state + L->off_probs);
    const int64_t work = (int64_t)H * count[0] * d;
#pragma omp parallel for if (work > 65536)
    for (int hq = 0; hq < H; hq++) {
        const int g = hq / group, n_keys = count[L->n_sets > 1 ? g : 0];
        float *p = probs + (size_t)hq * L->ld;
        const float *qh = q + (size_t)hq * d;
        float *o = out + (size_t)hq * d;
        if (et ==
            TYPE_F32) { /* one head's keys and values are contiguous: two matrix-vector products */
            cblas_sgemv(CblasRowMajor, CblasNoTrans, n_keys, d, scale, kv_row(m, L, layer, 0, g, 0),
                        d, qh, 1, 0.0f, p, 1);
            softmax(p, n_keys);
            cblas_sgemv(CblasRowMajor, CblasTrans, n_keys, d, 1.0f, kv_row(m, L, layer, 1, g, 0), d,
                        p, 1, 0.0f, o, 1);
        } else {
            for (int j = 0; j < n_keys; j++)
                p[j] = dot(kv_row(m, L, layer, 0, g, j), qh, d) * scale;
            softmax(p, n_keys);
            memset(o, 0, (size_t)d * sizeof(float));
            for (int j = 0; j < n_keys; j++) axpy_row(et, o, p[j], kv_row(m, L, layer, 1, g, j), d);
        }
    }
    if (!pol) return;
    for (int set = 0; set < L->n_sets; set++) {
        const int n = count[set], heads = L->n_sets > 1 ? group : H;
        int32_t *ps = pos_of(m, L, layer, set);
        float *sc = score_of(m, L, layer, set);
        if (pol->observe) pol->observe(sc, n, probs + (size_t)set * heads * L->ld, heads, L->ld);
        if (n <= s->kv_size) continue;
        const int victim = pol->victim(ps, sc, n, s->kv_size, s->kv_sinks), last = n - 1;
        if (victim != last) {
            ps[victim] = ps[last];
            sc[victim] = sc[last];
            for (int g = 0; g < Hkv; g++)
                if (L->n_sets == 1 || g == set) copy_slot(m, L, layer, g, victim, last);
        }
        count[set] = last;
    }
}

/* Prompt batches of the full cache: for each (query head, block of query rows), scores = Q Kᵀ and
 * out = P V with single-threaded sgemm, the causal mask applied in between by zeroing the future;
 * jobs spread over the OpenMP threads, each with its own block of score rows. */
static void attend_batched(memory *m, const layout *L, int layer, int n, const float *q,
                           const float *k, const float *v, const int32_t *pos, float *out) {
    const memory_shape *s = &m->shape;
    const int d = s->head_dim, H = s->n_heads, Hkv = s->n_kv_heads, group = H / Hkv;
    const int qb = L->block_rows, n_blocks = (n + qb - 1) / qb;
    int *count = count_of(m, L, layer);
    const int base = count[0];
    int32_t *ps = pos_of(m, L, layer, 0);
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
#pragma omp parallel for schedule(dynamic, 1)
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

static msrnn_status kv_attend(memory *m, int layer, int n, const float *q, const float *k,
                              const float *v, const int32_t *pos, float *out) {
    const memory_shape *s = &m->shape;
    const layout L = layout_of(m);
    if (!m->policy && count_of(m, &L, layer)[0] + n > L.slots)
        return msrnn_fail(MSRNN_ERR_FULL, "the KV cache holds %d tokens and %d more do not fit",
                          L.slots, n);
    if (!m->policy && s->batched_attention && !s->kv_f16 && n >= 8) {
        attend_batched(m, &L, layer, n, q, k, v, pos, out);
        return MSRNN_OK;
    }
    const size_t qd = (size_t)s->n_heads * s->head_dim, kvd = (size_t)s->n_kv_heads * s->head_dim;
    for (int t = 0; t < n; t++)
        attend_token(m, &L, layer, q + t * qd, k + t * kvd, v + t * kvd, pos[t], out + t * qd);
    return MSRNN_OK;
}

static int kv_kept(const memory *m, int layer, int head, int32_t *pos, float *score, int cap) {
    const layout L = layout_of(m);
    if (layer < 0 || layer >= m->shape.n_layers) return 0;
    const int set = L.n_sets > 1 ? (head < 0 ? 0 : head % L.n_sets) : 0;
    const int n = count_of(m, &L, layer)[set];
    const int32_t *ps = pos_of(m, &L, layer, set);
    const float *sc = score_of(m, &L, layer, set);
    /* selection by ascending position: positions are unique, so repeatedly take the next larger */
    int32_t last = -1;
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
        sizeof(int32_t) + sizeof(float);
    return entries * per_entry;
}

static const memory_kind kv_cache_kind = {"kv",      kv_bytes, kv_init,      kv_reset,
                                          kv_attend, kv_kept,  kv_used_bytes};

msrnn_status memory_setup(memory *m, const char *name, const memory_shape *shape) {
    static const struct {
        const char *name;
        const kv_policy *policy;
    } kinds[] = {{"full", NULL},         {"window", &policy_window},
                 {"sink", &policy_sink}, {"h2o", &policy_h2o},
                 {"tova", &policy_tova}, {"tova-head", &policy_tova_head}};
    memset(m, 0, sizeof *m);
    m->shape = *shape;
    if (!name) name = "full";
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++) {
        if (strcmp(name, kinds[i].name) != 0) continue;
        m->kind = &kv_cache_kind;
        m->policy = kinds[i].policy;
        if (!m->policy) return MSRNN_OK;
        if (m->shape.kv_sinks <= 0) m->shape.kv_sinks = 4;
        if (shape->kv_size < 1 || shape->kv_size > (1 << 24))
            return msrnn_fail(MSRNN_ERR_INVALID,
                              "memory '%s' needs a budget (kv_size) in [1, 2^24], "
                              "got %d",
                              name, shape->kv_size);
        if (m->policy == &policy_sink && shape->kv_size <= m->shape.kv_sinks)
            return msrnn_fail(MSRNN_ERR_INVALID,
                              "memory 'sink': the budget %d must exceed the %d "
                              "sink tokens",
                              shape->kv_size, m->shape.kv_sinks);
        return MSRNN_OK;
    }
    return msrnn_fail(MSRNN_ERR_INVALID,
                      "unknown memory '%s' (full, window, sink, h2o, tova, "
                      "tova-head)",
                      name);
}
