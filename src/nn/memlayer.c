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
#ifndef REG_TOKENS
#define REG_TOKENS                                                                                 \
    8 /* gather tiles of at most this many tokens sum in registers, token by token                 \
       */
#endif
#ifndef REG_PREFETCH
#define REG_PREFETCH 2 /* ... prefetching this many column blocks ahead in every row */
#endif
#ifndef GATHER_MIN_WORK
#define GATHER_MIN_WORK PAR_MIN_WORK /* gather's own threshold for threads */
#endif

/* ---- one chunk --------------------------------------------------------------------------------
 */

#ifdef MEM_AVX2
/* bit i of the byte at [v] is bit 7 − i of v */
static const uint8_t bit_reverse8[256] = {
#define R2(n) n, n + 2 * 64, n + 1 * 64, n + 3 * 64
#define R4(n) R2(n), R2(n + 2 * 16), R2(n + 1 * 16), R2(n + 3 * 16)
#define R6(n) R4(n), R4(n + 2 * 4), R4(n + 1 * 4), R4(n + 3 * 4)
    R6(0), R6(2), R6(1), R6(3)
#undef R2
#undef R4
#undef R6
};
#endif

uint32_t mem_hash(const float *z, int b) {
    uint32_t idx = 0;
    int i = 0;
#ifdef MEM_AVX2
    /* eight at a time: bit l of the mask is !(z[i + l] < 0) (NLT, unordered: a NaN is 1, as
     * below), reversed so that z[i] lands highest */
    for (; i + 8 <= b; i += 8) {
        const __m256 ge = _mm256_cmp_ps(_mm256_loadu_ps(z + i), _mm256_setzero_ps(), _CMP_NLT_UQ);
        idx = (idx << 8) | bit_reverse8[_mm256_movemask_ps(ge)];
    }
#endif
    for (; i < b; i++) idx = (idx << 1) | (uint32_t) !(z[i] < 0);
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

/* tokens [t0, t1) of memlayer_hash */
static void hash_tokens(const memlayer *L, const float *x, int t0, int t1, int32_t *idx, float *w) {
    const int K = L->K, b = L->bits, pinned = pin_buckets;
    for (int t = t0; t < t1; t++) {
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
}

void memlayer_hash(const memlayer *L, const float *x, int n, int32_t *idx, float *w,
                   int n_threads) {
    const int nth = threads_for((size_t)n * L->K * L->bits * 8, n, n_threads);
    if (nth <= 1) { /* decode: no parallel region at all */
        hash_tokens(L, x, 0, n, idx, w);
    } else {
#pragma omp parallel num_threads(nth)
        {
            const int ith = omp_get_thread_num(), nt = omp_get_num_threads();
            const int per = (n + nt - 1) / nt, t0 = ith * per < n ? ith * per : n;
            hash_tokens(L, x, t0, t0 + per < n ? t0 + per : n, idx, w);
        }
    }
    if (observer) observer(observer_ctx, L, idx, n);
}

#ifdef MEM_AVX2
static inline __attribute__((always_inline)) __m256 load8(const char *p, tensor_type type) {
    switch (type) {
    case TYPE_F16: {
#ifdef __F16C__
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
#else
        float f[8];
        uint16_t h[8];
        memcpy(h, p, sizeof h);
        for (int i = 0; i < 8; i++) f[i] = fp16_to_fp32(h[i]);
        return _mm256_loadu_ps(f);
#endif
    }
    case TYPE_BF16:
        return _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
    default: return _mm256_loadu_ps((const float *)p);
    }
}

#endif

static inline __attribute__((always_inline)) float load1(const char *p, tensor_type type) {
    uint16_t h;
    if (type == TYPE_F32) {
        float f;
        memcpy(&f, p, sizeof f);
        return f;
    }
    memcpy(&h, p, sizeof h);
    return type == TYPE_F16 ? fp16_to_fp32(h) : bf16_f32(h);
}

/* y[c] = fma(w[G−1], t[G−1][c], … fma(w[0], t[0][c], y[c])) for c in [c0, c1): G rows onto y with
 * one load and one store of y (the same values as G axpys in turn) */
#define SLAB_GROUP 4
static inline __attribute__((always_inline)) void axpy_group(float *restrict y,
                                                             const char *const *t, const float *w,
                                                             int G, tensor_type type, int c0,
                                                             int c1) {
    const size_t esz = type == TYPE_F32 ? 4 : 2;
    int c = c0;
#ifdef MEM_AVX2
    __m256 vw[SLAB_GROUP];
    for (int g = 0; g < G; g++) vw[g] = _mm256_set1_ps(w[g]);
    for (; c + 8 <= c1; c += 8) {
        __m256 a = _mm256_loadu_ps(y + c);
        for (int g = 0; g < G; g++)
            a = _mm256_fmadd_ps(vw[g], load8(t[g] + (size_t)c * esz, type), a);
        _mm256_storeu_ps(y + c, a);
    }
#endif
    for (; c < c1; c++) {
        float a = y[c];
        for (int g = 0; g < G; g++) a = fmaf(w[g], load1(t[g] + (size_t)c * esz, type), a);
        y[c] = a;
    }
}

/* y[t0, t1) × columns [c0, c1): bias (or 0), then slabs SLAB_GROUP at a time, tokens in order
 * within a group, so that the group's slabs stay in cache while the tokens stream through them;
 * tokens in blocks of TOK_BLOCK_BYTES of outputs, which stay in cache across the K slabs. The rows
 * PREFETCH_ROWS steps ahead in that order are prefetched: at decode the rows are K random places in
 * a table far larger than the caches, and their misses should be in flight together, not one after
 * another. Every element gets bias (or 0), then one fma per slab in slab order. */
static inline __attribute__((always_inline)) void
gather_tile_t(const memlayer *L, const char *table, tensor_type type, const float *bias,
              const int32_t *idx, const float *w, int t0, int t1, int c0, int c1, float *y) {
    const int K = L->K, out = L->out;
    const size_t rows = (size_t)1 << L->bits, esz = type == TYPE_F32 ? 4 : 2;
    const size_t span = (size_t)(c1 - c0) * esz, stride = (size_t)out * esz;
    const char *base = table + (size_t)c0 * esz;
    int tb = TOK_BLOCK_BYTES / (int)((size_t)(c1 - c0) * sizeof(float));
    if (tb < 1) tb = 1;
#define ROW(k, t) (table + ((size_t)(k)*rows + (size_t)idx[(size_t)(t)*K + (k)]) * stride)
    for (int b0 = t0; b0 < t1; b0 += tb) {
        const int b1 = b0 + tb < t1 ? b0 + tb : t1;
        for (int t = b0; t < b1; t++) {
            float *yt = y + (size_t)t * out;
            if (bias)
                memcpy(yt + c0, bias + c0, (size_t)(c1 - c0) * sizeof(float));
            else
                memset(yt + c0, 0, (size_t)(c1 - c0) * sizeof(float));
        }
        /* the prefetch cursor (pk, pt) runs PREFETCH_ROWS groups ahead of (k, t) */
        int pk = 0, pt = b0;
        for (int s = 0; s < PREFETCH_ROWS && pk < K; s++) {
            for (int g = pk; g < pk + SLAB_GROUP && g < K; g++)
                prefetch_row(ROW(g, pt) - table + base, span);
            if (++pt == b1) pt = b0, pk += SLAB_GROUP;
        }
        for (int k = 0; k < K; k += SLAB_GROUP) {
            const int G = K - k < SLAB_GROUP ? K - k : SLAB_GROUP;
            for (int t = b0; t < b1; t++) {
                if (pk < K) {
                    for (int g = pk; g < pk + SLAB_GROUP && g < K; g++)
                        prefetch_row(ROW(g, pt) - table + base, span);
                    if (++pt == b1) pt = b0, pk += SLAB_GROUP;
                }
                const char *r[SLAB_GROUP];
                for (int g = 0; g < G; g++) r[g] = ROW(k + g, t);
                if (G == SLAB_GROUP)
                    axpy_group(y + (size_t)t * out, r, w + (size_t)t * K + k, SLAB_GROUP, type, c0,
                               c1);
                else
                    axpy_group(y + (size_t)t * out, r, w + (size_t)t * K + k, G, type, c0, c1);
            }
        }
    }
#undef ROW
}

static void gather_tile(const memlayer *L, const void *table, tensor_type type, const float *bias,
                        const int32_t *idx, const float *w, int t0, int t1, int c0, int c1,
                        float *y) {
    switch (type) {
    case TYPE_F16: gather_tile_t(L, table, TYPE_F16, bias, idx, w, t0, t1, c0, c1, y); break;
    case TYPE_BF16: gather_tile_t(L, table, TYPE_BF16, bias, idx, w, t0, t1, c0, c1, y); break;
    default: gather_tile_t(L, table, TYPE_F32, bias, idx, w, t0, t1, c0, c1, y); break;
    }
}

#ifdef MEM_AVX2
#define REG_COLS 64 /* columns a register pass holds: eight lanes × eight accumulators */

/* One token's columns [c0, c1), REG_COLS at a time: the K rows' products summed in registers (bias
 * or 0, then k = 0 … K−1, each one fma: the same value as gather_tile's), the output written once.
 * Each row's columns REG_PREFETCH blocks ahead are prefetched, so that at decode the K random rows
 * stream in together. */
static inline __attribute__((always_inline)) void gather_token(const memlayer *L, const char *table,
                                                               tensor_type type, const float *bias,
                                                               const int32_t *it, const float *wt,
                                                               int c0, int c1, float *yt) {
    const int K = L->K;
    const size_t rows = (size_t)1 << L->bits, esz = type == TYPE_F32 ? 4 : 2,
                 stride = (size_t)L->out * esz, blk = REG_COLS * esz;
#define ROW(k) (table + ((size_t)(k)*rows + (size_t)it[k]) * stride)
    for (int p = 0; p < REG_PREFETCH; p++) {
        const size_t o = (size_t)c0 * esz + p * blk;
        if (o >= (size_t)c1 * esz) break;
        const size_t len = (size_t)c1 * esz - o < blk ? (size_t)c1 * esz - o : blk;
        for (int k = 0; k < K; k++) prefetch_row(ROW(k) + o, len);
    }
    int c = c0;
    for (; c + REG_COLS <= c1; c += REG_COLS) {
        const size_t o = (size_t)(c + REG_PREFETCH * REG_COLS) * esz;
        if (o < (size_t)c1 * esz) {
            const size_t len = (size_t)c1 * esz - o < blk ? (size_t)c1 * esz - o : blk;
            for (int k = 0; k < K; k++) prefetch_row(ROW(k) + o, len);
        }
        __m256 a0, a1, a2, a3, a4, a5, a6, a7;
        if (bias) {
            a0 = _mm256_loadu_ps(bias + c), a1 = _mm256_loadu_ps(bias + c + 8);
            a2 = _mm256_loadu_ps(bias + c + 16), a3 = _mm256_loadu_ps(bias + c + 24);
            a4 = _mm256_loadu_ps(bias + c + 32), a5 = _mm256_loadu_ps(bias + c + 40);
            a6 = _mm256_loadu_ps(bias + c + 48), a7 = _mm256_loadu_ps(bias + c + 56);
        } else {
            a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = _mm256_setzero_ps();
        }
        for (int k = 0; k < K; k++) {
            const char *r = ROW(k) + (size_t)c * esz;
            const __m256 vw = _mm256_set1_ps(wt[k]);
            a0 = _mm256_fmadd_ps(vw, load8(r, type), a0);
            a1 = _mm256_fmadd_ps(vw, load8(r + 8 * esz, type), a1);
            a2 = _mm256_fmadd_ps(vw, load8(r + 16 * esz, type), a2);
            a3 = _mm256_fmadd_ps(vw, load8(r + 24 * esz, type), a3);
            a4 = _mm256_fmadd_ps(vw, load8(r + 32 * esz, type), a4);
            a5 = _mm256_fmadd_ps(vw, load8(r + 40 * esz, type), a5);
            a6 = _mm256_fmadd_ps(vw, load8(r + 48 * esz, type), a6);
            a7 = _mm256_fmadd_ps(vw, load8(r + 56 * esz, type), a7);
        }
        _mm256_storeu_ps(yt + c, a0), _mm256_storeu_ps(yt + c + 8, a1);
        _mm256_storeu_ps(yt + c + 16, a2), _mm256_storeu_ps(yt + c + 24, a3);
        _mm256_storeu_ps(yt + c + 32, a4), _mm256_storeu_ps(yt + c + 40, a5);
        _mm256_storeu_ps(yt + c + 48, a6), _mm256_storeu_ps(yt + c + 56, a7);
    }
    for (; c + 8 <= c1; c += 8) {
        __m256 a = bias ? _mm256_loadu_ps(bias + c) : _mm256_setzero_ps();
        for (int k = 0; k < K; k++)
            a = _mm256_fmadd_ps(_mm256_set1_ps(wt[k]), load8(ROW(k) + (size_t)c * esz, type), a);
        _mm256_storeu_ps(yt + c, a);
    }
    for (; c < c1; c++) {
        float a = bias ? bias[c] : 0.0f;
        for (int k = 0; k < K; k++) a = fmaf(wt[k], load1(ROW(k) + (size_t)c * esz, type), a);
        yt[c] = a;
    }
#undef ROW
}

/* gather_tile's values for a tile of a few tokens, summed in registers */
static void gather_tile_reg(const memlayer *L, const void *table, tensor_type type,
                            const float *bias, const int32_t *idx, const float *w, int t0, int t1,
                            int c0, int c1, float *y) {
    const int K = L->K;
    for (int t = t0; t < t1; t++) {
        const int32_t *it = idx + (size_t)t * K;
        const float *wt = w + (size_t)t * K;
        float *yt = y + (size_t)t * L->out;
        switch (type) {
        case TYPE_F16: gather_token(L, table, TYPE_F16, bias, it, wt, c0, c1, yt); break;
        case TYPE_BF16: gather_token(L, table, TYPE_BF16, bias, it, wt, c0, c1, yt); break;
        default: gather_token(L, table, TYPE_F32, bias, it, wt, c0, c1, yt); break;
        }
    }
}
#endif

/* a tile of few tokens (decode) sums in registers where the CPU has the kernel; more stream the
 * slabs through the cache */
static void gather_any(const memlayer *L, const void *table, tensor_type type, const float *bias,
                       const int32_t *idx, const float *w, int t0, int t1, int c0, int c1,
                       float *y) {
#ifdef MEM_AVX2
    if (t1 - t0 <= REG_TOKENS) {
        gather_tile_reg(L, table, type, bias, idx, w, t0, t1, c0, c1, y);
        return;
    }
#endif
    gather_tile(L, table, type, bias, idx, w, t0, t1, c0, c1, y);
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
    if (nth <= 1) { /* decode on one thread: no parallel region at all */
        gather_any(L, table, type, bias, idx, w, 0, n, 0, out, y);
        return;
    }
#pragma omp parallel num_threads(nth)
    {
        const int ith = omp_get_thread_num(), nt = omp_get_num_threads();
        if (by_tokens) {
            const int per = (n + nt - 1) / nt, t0 = ith * per < n ? ith * per : n,
                      t1 = t0 + per < n ? t0 + per : n;
            if (t1 > t0) gather_any(L, table, type, bias, idx, w, t0, t1, 0, out, y);
        } else {
            int c0, c1;
            split_cols(out, ith, nt, &c0, &c1);
            if (c1 > c0) gather_any(L, table, type, bias, idx, w, 0, n, c0, c1, y);
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
