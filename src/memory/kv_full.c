/* kv_full.c — the full KV cache: every token's key and value kept, at slot = position.
 * Unbounded in principle (capacity = the session's context); the topline every bounded memory is
 * measured against. Layout per layer: keys then values, each (H_kv, capacity, d), f32 or f16, so one
 * head's keys are contiguous for the score loop.
 */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "memory/memory.h"
#include "tensor/kernels.h"

typedef struct {
    int n_used; /* tokens stored (same in every layer after a full pass) */
    int layer_used[1]; /* per layer; sized n_layers */
} full_header;

static size_t elem_bytes(const memory_shape *s) { return s->kv_f16 ? 2 : 4; }

static size_t header_bytes(const memory_shape *s) {
    return (sizeof(full_header) + sizeof(int) * (size_t)s->n_layers + 63) & ~(size_t)63;
}

static size_t layer_bytes(const memory_shape *s) {
    return 2 * (size_t)s->n_kv_heads * s->capacity * s->head_dim * elem_bytes(s);
}

static size_t scratch_floats(const memory_shape *s) { return ((size_t)s->capacity + 15) & ~(size_t)15; }

/* Query rows per block in the batched (sgemm) path: a block's scores take rows × capacity floats. */
static int block_rows(const memory_shape *s) {
    int rows = (int)((1 << 22) / (size_t)s->capacity);
    return rows < 8 ? 8 : rows > 64 ? 64 : rows;
}

/* Per thread: one score row (decode) or one block of score rows (prompt). */
static size_t full_bytes(const memory_shape *s) {
    return header_bytes(s) + layer_bytes(s) * s->n_layers +
           (size_t)block_rows(s) * scratch_floats(s) * sizeof(float) * s->n_threads;
}

static void full_init(memory *m, void *buf) { m->state = buf; }

static void full_reset(memory *m) {
    full_header *h = m->state;
    memset(h, 0, header_bytes(&m->shape));
}

/* Key or value row (kv head g, slot) of a layer. */
static void *kv_row(const memory *m, int layer, int is_v, int g, int slot) {
    const memory_shape *s = &m->shape;
    uint8_t *base = (uint8_t *)m->state + header_bytes(s) + layer_bytes(s) * layer;
    size_t half = layer_bytes(s) / 2;
    size_t off = ((size_t)g * s->capacity + slot) * s->head_dim * elem_bytes(s);
    return base + (is_v ? half : 0) + off;
}

static void store_row(void *dst, const float *src, int d, int f16) {
    if (f16) quantize_row(TYPE_F16, src, dst, d);
    else memcpy(dst, src, (size_t)d * sizeof(float));
}

/* Prompt processing: for each (query head, block of query rows), scores = Q Kᵀ and out = P V with
 * single-threaded sgemm over the f32 cache, the causal mask applied in between by zeroing the
 * future. Jobs are spread over the OpenMP threads, each with its own block of score rows. */
static void attend_batched(memory *m, int layer, int n, int base, const float *q, float *out,
                           float *scratch) {
    const memory_shape *s = &m->shape;
    const int d = s->head_dim, H = s->n_heads, group = H / s->n_kv_heads, qb = block_rows(s);
    const int n_blocks = (n + qb - 1) / qb;
    const float scale = 1.0f / sqrtf((float)d);
    const size_t ld = scratch_floats(s);
#pragma omp parallel for schedule(dynamic, 1)
    for (int job = 0; job < H * n_blocks; job++) {
        const int hq = job / n_blocks, t0 = (job % n_blocks) * qb;
        const int rows = n - t0 < qb ? n - t0 : qb, n_keys = base + t0 + rows;
        const float *K = kv_row(m, layer, 0, hq / group, 0), *V = kv_row(m, layer, 1, hq / group, 0);
        float *scores = scratch + (size_t)omp_get_thread_num() * qb * ld;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, n_keys, d, scale,
                    q + ((size_t)t0 * H + hq) * d, H * d, K, d, 0.0f, scores, (int)ld);
        for (int r = 0; r < rows; r++) {
            const int valid = base + t0 + r + 1;
            float *row = scores + (size_t)r * ld;
            softmax(row, valid);
            memset(row + valid, 0, (size_t)(n_keys - valid) * sizeof(float));
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, d, n_keys, 1.0f, scores,
                    (int)ld, V, d, 0.0f, out + ((size_t)t0 * H + hq) * d, H * d);
    }
}

static msrnn_status full_attend(memory *m, int layer, int n, const float *q, const float *k,
                                const float *v, const int32_t *pos, float *out) {
    const memory_shape *s = &m->shape;
    full_header *h = m->state;
    int *used = h->layer_used;
    const int d = s->head_dim, H = s->n_heads, Hkv = s->n_kv_heads, group = H / Hkv;
    const int base = used[layer];
    if (base + n > s->capacity)
        return msrnn_fail(MSRNN_ERR_FULL, "the KV cache holds %d tokens and %d more do not fit",
                          s->capacity, n);
    (void)pos; /* slot = position order: token t of this call is at slot base + t */
    for (int t = 0; t < n; t++)
        for (int g = 0; g < Hkv; g++) {
            store_row(kv_row(m, layer, 0, g, base + t), k + ((size_t)t * Hkv + g) * d, d, s->kv_f16);
            store_row(kv_row(m, layer, 1, g, base + t), v + ((size_t)t * Hkv + g) * d, d, s->kv_f16);
        }
    used[layer] = base + n;
    if (layer == 0) h->n_used = base + n;

    float *scratch0 = (float *)((uint8_t *)m->state + header_bytes(s) + layer_bytes(s) * s->n_layers);
    if (!s->kv_f16 && n >= 8) {
        attend_batched(m, layer, n, base, q, out, scratch0);
        return MSRNN_OK;
    }
    const tensor_type et = s->kv_f16 ? TYPE_F16 : TYPE_F32;
    const vec_dot_fn dot = kernels_for(et)->dot_simd;
    const float scale = 1.0f / sqrtf((float)d);
    const int64_t work = (int64_t)n * H * (base + n) * d;
#pragma omp parallel for schedule(dynamic, 1) if (work > 16384)
    for (int job = 0; job < n * H; job++) {
        const int t = job / H, hq = job % H, g = hq / group;
        const int n_keys = base + t + 1; /* causal: itself and everything before */
        float *att = scratch0 + scratch_floats(s) * (size_t)omp_get_thread_num();
        const float *qh = q + ((size_t)t * H + hq) * d;
        for (int j = 0; j < n_keys; j++) att[j] = dot(kv_row(m, layer, 0, g, j), qh, d) * scale;
        softmax(att, n_keys);
        float *o = out + ((size_t)t * H + hq) * d;
        memset(o, 0, (size_t)d * sizeof(float));
        for (int j = 0; j < n_keys; j++) axpy_row(et, o, att[j], kv_row(m, layer, 1, g, j), d);
    }
    return MSRNN_OK;
}

const memory_kind memory_full = {"full", full_bytes, full_init, full_reset, full_attend};
