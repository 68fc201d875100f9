/* memlayer.c — MemoryFormer's memory layer (see memlayer.h; METHODS.md §4, §6).
 *
 * Every multiply-add onto a table row or an output row is one fused multiply-add (fmaf, or its
 * eight-lane AVX2 form), so an element's value does not depend on whether it fell in a vector body
 * or a scalar tail, and so not on how the columns were split across threads.
 */
#include "nn/memlayer.h"

#include "nn/vexp.h"
#include <math.h>
#include <omp.h>
#include <string.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define MEM_AVX2 1
#endif

/* gather / dbias split the output columns across threads in blocks of this many (a cache line) */
#define COL_BLOCK 16
/* below this many multiply-adds a call runs on the calling thread alone */
#define PAR_MIN_WORK 32768
#ifndef PREFETCH_ROWS
#define PREFETCH_ROWS 4 /* gather prefetches this many rows ahead */
#endif
#ifndef TOK_BLOCK_BYTES
#define TOK_BLOCK_BYTES (128 << 10) /* gather's block of outputs kept in cache across the slabs */
#endif
#ifndef TOK_SPLIT
#define TOK_SPLIT 16 /* gather splits a batch by tokens from this many tokens per thread */
#endif
#ifndef GATHER_MIN_WORK
#define GATHER_MIN_WORK PAR_MIN_WORK /* gather's own threshold for threads */
#endif

/* ---- one chunk --------------------------------------------------------------------------------
 */

uint32_t mem_hash(const float *z, int b) {
    uint32_t idx = 0;
    for (int i = 0; i < b; i++) idx = (idx << 1) | (uint32_t) !(z[i] < 0);
    return idx;
}

/* sigmoid(u) and 1 − sigmoid(u) for u ≥ 0, without cancellation */
static inline double sigm(double u) { return 1.0 / (1.0 + exp(-u)); }
static inline double sigm_c(double u) {
    const double e = exp(-u);
    return e / (1.0 + e);
}

/* Tests only (memlayer_pin_buckets): 1 while memlayer_hash keeps the indices it is given. */
static int pin_buckets;

void memlayer_pin_buckets(int on) { pin_buckets = on; }

static memlayer_observer observer;
static void *observer_ctx;

void memlayer_observe(memlayer_observer fn, void *ctx) { observer = fn, observer_ctx = ctx; }

/* |z_i| continued analytically from a pinned bucket: z_i on the bucket's side of 0 (bit 1:
 * z_i ≥ 0), −z_i on the other */
static inline double mag(const float *z, int i, int b, uint32_t bucket) {
    return (bucket >> (b - 1 - i)) & 1 ? (double)z[i] : -(double)z[i];
}

/* The weight of chunk z with its bucket pinned (memlayer_pin_buckets), in double. */
static double weight_pinned(const memlayer *L, const float *z, uint32_t bucket) {
    const int b = L->bits;
    if (L->weighting == MEM_WEIGHT_CODE) {
        double s = 0, p = 1;
        for (int i = 0; i < b; i++) {
            const double a = mag(z, i, b, bucket);
            s += a;
            p *= sigm(2 * a);
        }
        return s * p;
    }
    const double t = L->temp;
    double p = 1;
    for (int i = 0; i < b; i++) p *= sigm(2 * mag(z, i, b, bucket) / t);
    return p;
}
/* The weight forward uses, in float: Π_i sigmoid(c·|z_i|) = 1 / Π_i (1 + exp(−c·|z_i|)), c = 2/t
 * ("paper") or 2 ("code", times Σ|z_i|); eight lanes of exp at a time (nn/vexp.h), masked to the
 * chunk's b. Relative error ≤ ~1e-6 against the exact value for b ≤ 16. */
#ifdef MEM_AVX2
static const int32_t lane_mask[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

static inline float hmul8(__m256 v) {
    __m128 q = _mm_mul_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    q = _mm_mul_ps(q, _mm_movehl_ps(q, q));
    q = _mm_mul_ss(q, _mm_shuffle_ps(q, q, 1));
    return _mm_cvtss_f32(q);
}
static inline float hadd8(__m256 v) {
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
    return _mm_cvtss_f32(q);
}
#endif

static inline float chunk_weight(const memlayer *L, const float *z) {
    const int b = L->bits, code = L->weighting == MEM_WEIGHT_CODE;
    const float c = code ? 2.0f : 2.0f / L->temp;
    float p, s;
#ifdef MEM_AVX2
    const __m256 sign = _mm256_set1_ps(-0.0f), vc = _mm256_set1_ps(-c), one = _mm256_set1_ps(1.0f);
    __m256 prod = one, sum = _mm256_setzero_ps();
    for (int i = 0; i < b; i += 8) {
        const int m = b - i < 8 ? b - i : 8;
        const __m256i mask = _mm256_loadu_si256((const __m256i *)(lane_mask + 8 - m));
        const __m256 a = _mm256_andnot_ps(sign, _mm256_maskload_ps(z + i, mask)); /* 0 off b */
        const __m256 f = _mm256_add_ps(one, exp256(_mm256_mul_ps(vc, a)));
        prod = _mm256_mul_ps(prod, _mm256_blendv_ps(one, f, _mm256_castsi256_ps(mask)));
        sum = _mm256_add_ps(sum, a);
    }
    p = hmul8(prod), s = hadd8(sum);
#else
    p = 1, s = 0;
    for (int i = 0; i < b; i++) {
        const float a = fabsf(z[i]);
        p *= 1 + expf(-c * a);
        s += a;
    }
#endif
    return code ? s / p : 1 / p;
}

float mem_weight(const memlayer *L, const float *z) { return chunk_weight(L, z); }

/* ∂w/∂z_j for j < b into g (double) */
static void weight_grad_d(const memlayer *L, const float *z, double *g) {
    const int b = L->bits;
    const int code = L->weighting == MEM_WEIGHT_CODE;
    const double t = code ? 1.0 : (double)L->temp;
    double p = 1, s = 0;
    for (int i = 0; i < b; i++) {
        const double a = fabs((double)z[i]);
        s += a;
        p *= sigm(2 * a / t);
    }
    for (int j = 0; j < b; j++) {
        const double sg = z[j] > 0 ? 1.0 : z[j] < 0 ? -1.0 : 0.0;
        const double c = sigm_c(2 * fabs((double)z[j]) / t); /* 1 − sigmoid */
        g[j] = code ? sg * p * (1 + 2 * s * c) : sg * p * (2 / t) * c;
    }
}

void mem_weight_grad(const memlayer *L, const float *z, float *dz) {
    double g[MEM_MAX_BITS];
    weight_grad_d(L, z, g);
    for (int j = 0; j < L->bits; j++) dz[j] = (float)g[j];
}

/* ---- helpers ----------------------------------------------------------------------------------
 */

/* The range [*c0, *c1) of n columns that thread ith of nth takes, in whole COL_BLOCKs. */
static void split_cols(int n, int ith, int nth, int *c0, int *c1) {
    const int blocks = (n + COL_BLOCK - 1) / COL_BLOCK;
    const int per = (blocks + nth - 1) / nth;
    const long a = (long)ith * per * COL_BLOCK, e = a + (long)per * COL_BLOCK;
    *c0 = a < n ? (int)a : n;
    *c1 = e < n ? (int)e : n;
}

/* threads for a call of `work` multiply-adds spread over `units` independent pieces, one thread
 * below `min_work` */
static int threads_above(size_t work, size_t min_work, int units, int n_threads) {
    if (n_threads < 1 || work < min_work) return 1;
    return units < n_threads ? (units > 0 ? units : 1) : n_threads;
}
static int threads_for(size_t work, int units, int n_threads) {
    return threads_above(work, PAR_MIN_WORK, units, n_threads);
}

static inline void prefetch_row(const char *p, size_t bytes) {
    for (size_t o = 0; o < bytes; o += 64) __builtin_prefetch(p + o, 0, 3);
}

static int gather_threads(size_t work, int units, int n_threads) {
    return threads_above(work, GATHER_MIN_WORK, units, n_threads);
}

static inline float bf16_f32(uint16_t h) {
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* y[c] = fma(w, t[c], y[c]) for c in [c0, c1) */
static void axpy_f32(float *restrict y, const float *restrict t, float w, int c0, int c1) {
    int c = c0;
#ifdef MEM_AVX2
    const __m256 vw = _mm256_set1_ps(w);
    for (; c + 8 <= c1; c += 8)
        _mm256_storeu_ps(y + c,
                         _mm256_fmadd_ps(vw, _mm256_loadu_ps(t + c), _mm256_loadu_ps(y + c)));
#endif
    for (; c < c1; c++) y[c] = fmaf(w, t[c], y[c]);
}

static void axpy_f16(float *restrict y, const uint16_t *restrict t, float w, int c0, int c1) {
    int c = c0;
#if defined(MEM_AVX2) && defined(__F16C__)
    const __m256 vw = _mm256_set1_ps(w);
    for (; c + 8 <= c1; c += 8) {
        const __m256 tv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(t + c)));
        _mm256_storeu_ps(y + c, _mm256_fmadd_ps(vw, tv, _mm256_loadu_ps(y + c)));
    }
#endif
    for (; c < c1; c++) y[c] = fmaf(w, fp16_to_fp32(t[c]), y[c]);
}

static void axpy_bf16(float *restrict y, const uint16_t *restrict t, float w, int c0, int c1) {
    int c = c0;
#ifdef MEM_AVX2
    const __m256 vw = _mm256_set1_ps(w);
    for (; c + 8 <= c1; c += 8) {
        const __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(t + c)));
        const __m256 tv = _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
        _mm256_storeu_ps(y + c, _mm256_fmadd_ps(vw, tv, _mm256_loadu_ps(y + c)));
    }
#endif
    for (; c < c1; c++) y[c] = fmaf(w, bf16_f32(t[c]), y[c]);
}

/* Σ_c a[c] b[c] over n elements: sixteen f32 lanes (vectorisable without reassociation), summed
 * in double. */
static double dot_f32(const float *restrict a, const float *restrict b, int n) {
    float acc[16] = {0};
    int c = 0;
    for (; c + 16 <= n; c += 16)
        for (int l = 0; l < 16; l++) acc[l] = fmaf(a[c + l], b[c + l], acc[l]);
    double s = 0;
    for (; c < n; c++) s += (double)a[c] * b[c];
    for (int l = 0; l < 16; l++) s += acc[l];
    return s;
}

/* ---- forward ----------------------------------------------------------------------------------
 */

void memlayer_hash(const memlayer *L, const float *x, int n, int32_t *idx, float *w,
                   int n_threads) {
    const int K = L->K, b = L->bits, pinned = pin_buckets;
    const int nth = threads_for((size_t)n * K * b * 8, n, n_threads);
#pragma omp parallel for schedule(static) num_threads(nth) if (nth > 1)
    for (int t = 0; t < n; t++) {
        const float *xt = x + (size_t)t * K * b;
        for (int k = 0; k < K; k++) {
            const float *z = xt + (size_t)k * b;
            int32_t *ik = &idx[(size_t)t * K + k];
            if (pinned) {
                w[(size_t)t * K + k] = (float)weight_pinned(L, z, (uint32_t)*ik);
            } else {
                *ik = (int32_t)mem_hash(z, b);
                w[(size_t)t * K + k] = chunk_weight(L, z);
            }
        }
    }
    if (observer) observer(observer_ctx, L, idx, n);
}

/* y[t0, t1) × columns [c0, c1): bias (or 0), then slab by slab, tokens in order within a slab, so
 * that a slab stays in cache while the tokens stream through it; tokens in blocks of
 * TOK_BLOCK_BYTES of outputs, which stay in cache across the K slabs. The row PREFETCH_ROWS steps
 * ahead in that order is prefetched: at decode the rows are K random places in a table far larger
 * than the caches, and their misses should be in flight together, not one after another. */
static void gather_tile(const memlayer *L, const void *table, tensor_type type, const float *bias,
                        const int32_t *idx, const float *w, int t0, int t1, int c0, int c1,
                        float *y) {
    const int K = L->K, out = L->out;
    const size_t rows = (size_t)1 << L->bits, esz = type == TYPE_F32 ? 4 : 2;
    const size_t span = (size_t)(c1 - c0) * esz, stride = (size_t)out * esz;
    const char *base = (const char *)table + (size_t)c0 * esz;
    int tb = TOK_BLOCK_BYTES / (int)((size_t)(c1 - c0) * sizeof(float));
    if (tb < 1) tb = 1;
    for (int b0 = t0; b0 < t1; b0 += tb) {
        const int b1 = b0 + tb < t1 ? b0 + tb : t1;
        for (int t = b0; t < b1; t++) {
            float *yt = y + (size_t)t * out;
            if (bias)
                memcpy(yt + c0, bias + c0, (size_t)(c1 - c0) * sizeof(float));
            else
                memset(yt + c0, 0, (size_t)(c1 - c0) * sizeof(float));
        }
        /* the prefetch cursor (pk, pt) runs PREFETCH_ROWS steps ahead of (k, t) */
        int pk = 0, pt = b0;
        for (int s = 0; s < PREFETCH_ROWS && pk < K; s++) {
            prefetch_row(base + ((size_t)pk * rows + (size_t)idx[(size_t)pt * K + pk]) * stride,
                         span);
            if (++pt == b1) pt = b0, pk++;
        }
        for (int k = 0; k < K; k++)
            for (int t = b0; t < b1; t++) {
                if (pk < K) {
                    prefetch_row(base + ((size_t)pk * rows + (size_t)idx[(size_t)pt * K + pk]) *
                                            stride,
                                 span);
                    if (++pt == b1) pt = b0, pk++;
                }
                const size_t r = (size_t)k * rows + (size_t)idx[(size_t)t * K + k];
                const float wt = w[(size_t)t * K + k];
                float *yt = y + (size_t)t * out;
                switch (type) {
                case TYPE_F16: axpy_f16(yt, (const uint16_t *)table + r * out, wt, c0, c1); break;
                case TYPE_BF16: axpy_bf16(yt, (const uint16_t *)table + r * out, wt, c0, c1); break;
                default: /* TYPE_F32 (the only other type a table has) */
                    axpy_f32(yt, (const float *)table + r * out, wt, c0, c1);
                    break;
                }
            }
    }
}

void memlayer_gather(const memlayer *L, const void *table, tensor_type type, const float *bias,
                     const int32_t *idx, const float *w, int n, float *y, int n_threads) {
    const int K = L->K, out = L->out;
    if (n <= 0 || out <= 0) return;
    /* a batch of at least TOK_SPLIT tokens per thread is split by tokens (each thread reads every
     * slab once per token block, the slabs shared in the L3 cache); fewer, as at decode, by
     * columns. Either way every output element is computed by one thread in the same order. */
    const int by_tokens = n_threads > 1 && n >= TOK_SPLIT * n_threads;
    const int nth = by_tokens ? gather_threads((size_t)n * K * out, n, n_threads)
                              : gather_threads((size_t)n * K * out,
                                               (out + COL_BLOCK - 1) / COL_BLOCK, n_threads);
#pragma omp parallel num_threads(nth) if (nth > 1)
    {
        const int ith = omp_get_thread_num(), nt = omp_get_num_threads();
        if (by_tokens) {
            const int per = (n + nt - 1) / nt, t0 = ith * per < n ? ith * per : n,
                      t1 = t0 + per < n ? t0 + per : n;
            if (t1 > t0) gather_tile(L, table, type, bias, idx, w, t0, t1, 0, out, y);
        } else {
            int c0, c1;
            split_cols(out, ith, nt, &c0, &c1);
            if (c1 > c0) gather_tile(L, table, type, bias, idx, w, 0, n, c0, c1, y);
        }
    }
}

/* ---- backward ---------------------------------------------------------------------------------
 */

void memlayer_backward(const memlayer *L, const float *table, const float *x, const int32_t *idx,
                       const float *w, const float *dy, int n, float *dtable, float *dbias,
                       float *dx, int n_threads) {
    const int K = L->K, b = L->bits, out = L->out;
    const size_t rows = (size_t)1 << L->bits;
    if (n <= 0 || out <= 0) return;
    const size_t work = (size_t)n * K * out;

    /* dT[k][idx] += w · dy: a slab belongs to one thread, its tokens taken in order */
    if (dtable) {
        const int nth = threads_for(work, K, n_threads);
#pragma omp parallel for schedule(static) num_threads(nth) if (nth > 1)
        for (int k = 0; k < K; k++)
            for (int t = 0; t < n; t++) {
                float *d = dtable + ((size_t)k * rows + (size_t)idx[(size_t)t * K + k]) * out;
                axpy_f32(d, dy + (size_t)t * out, w[(size_t)t * K + k], 0, out);
            }
    }

    /* dbias[c] += Σ_t dy[t][c], summed in double per column, columns split across threads */
    if (dbias) {
        const int nth = threads_for((size_t)n * out, (out + COL_BLOCK - 1) / COL_BLOCK, n_threads);
#pragma omp parallel num_threads(nth) if (nth > 1)
        {
            int c0, c1;
            split_cols(out, omp_get_thread_num(), omp_get_num_threads(), &c0, &c1);
            double acc[256];
            for (int cb = c0; cb < c1; cb += 256) {
                const int ce = cb + 256 < c1 ? cb + 256 : c1;
                for (int c = cb; c < ce; c++) acc[c - cb] = 0;
                for (int t = 0; t < n; t++) {
                    const float *g = dy + (size_t)t * out;
                    for (int c = cb; c < ce; c++) acc[c - cb] += g[c];
                }
                for (int c = cb; c < ce; c++) dbias[c] += (float)acc[c - cb];
            }
        }
    }

    /* dz_k = ⟨dy, T[k][idx_k]⟩ · ∂w/∂z_k, token by token */
    if (dx) {
        const int nth = threads_for(work, n, n_threads);
#pragma omp parallel for schedule(static) num_threads(nth) if (nth > 1)
        for (int t = 0; t < n; t++) {
            const float *g = dy + (size_t)t * out;
            for (int k = 0; k < K; k++) {
                const float *row =
                    table + ((size_t)k * rows + (size_t)idx[(size_t)t * K + k]) * out;
                const double dw = dot_f32(g, row, out);
                const size_t o = (size_t)t * K * b + (size_t)k * b;
                double gz[MEM_MAX_BITS];
                weight_grad_d(L, x + o, gz);
                for (int j = 0; j < b; j++) dx[o + j] += (float)(dw * gz[j]);
            }
        }
    }
}
