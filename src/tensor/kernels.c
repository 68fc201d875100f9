/* kernels.c — dot products per weight type (scalar reference + AVX2), matrix products, and the
 * small element-wise ops of the Llama block.
 *
 * The scalar versions are the oracle: tests/test_kernels.c compares every SIMD kernel against them.
 * Matrix products: decode (few tokens) is memory-bound, so each thread streams its share of W's
 * rows once and dots every token against each row while it is in L1; prompt processing (many
 * tokens) is compute-bound, so W is dequantised a panel of rows at a time into an f32 scratch and
 * handed to OpenBLAS sgemm.
 */
#include "tensor/kernels.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <string.h>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define HAVE_AVX2 1
#else
#define HAVE_AVX2 0
#endif

/* ---- scalar reference dot products ------------------------------------------------------------
 */

static float dot_f32_ref(const void *row, const float *x, int n) {
    const float *w = row;
    double s = 0;
    for (int i = 0; i < n; i++) s += (double)w[i] * x[i];
    return (float)s;
}

static float dot_f16_ref(const void *row, const float *x, int n) {
    const uint16_t *w = row;
    double s = 0;
    for (int i = 0; i < n; i++) s += (double)fp16_to_fp32(w[i]) * x[i];
    return (float)s;
}

static float dot_bf16_ref(const void *row, const float *x, int n) {
    const uint16_t *w = row;
    double s = 0;
    for (int i = 0; i < n; i++) s += (double)bf16_to_fp32(w[i]) * x[i];
    return (float)s;
}

static float dot_q8_0_ref(const void *row, const float *x, int n) {
    const block_q8_0 *b = row;
    double s = 0;
    for (int i = 0; i < n / QK; i++) {
        double bs = 0;
        for (int j = 0; j < QK; j++) bs += (double)b[i].qs[j] * x[i * QK + j];
        s += bs * fp16_to_fp32(b[i].d);
    }
    return (float)s;
}

static float dot_q4_0_ref(const void *row, const float *x, int n) {
    const block_q4_0 *b = row;
    double s = 0;
    for (int i = 0; i < n / QK; i++) {
        double bs = 0;
        for (int j = 0; j < QK / 2; j++) {
            bs += (double)((b[i].qs[j] & 0xf) - 8) * x[i * QK + j];
            bs += (double)((b[i].qs[j] >> 4) - 8) * x[i * QK + j + QK / 2];
        }
        s += bs * fp16_to_fp32(b[i].d);
    }
    return (float)s;
}

/* Integer dot products against Q8_0 activations: per block, sum(w_q * x_q) * d_w * d_x. */
static float dot_q8_0_q8_ref(const void *row, const block_q8_0 *xq, int n) {
    const block_q8_0 *b = row;
    float s = 0;
    for (int i = 0; i < n / QK; i++) {
        int sum = 0;
        for (int j = 0; j < QK; j++) sum += b[i].qs[j] * xq[i].qs[j];
        s += (float)sum * fp16_to_fp32(b[i].d) * fp16_to_fp32(xq[i].d);
    }
    return s;
}

static float dot_q4_0_q8_ref(const void *row, const block_q8_0 *xq, int n) {
    const block_q4_0 *b = row;
    float s = 0;
    for (int i = 0; i < n / QK; i++) {
        int sum = 0;
        for (int j = 0; j < QK / 2; j++)
            sum += ((b[i].qs[j] & 0xf) - 8) * xq[i].qs[j] +
                   ((b[i].qs[j] >> 4) - 8) * xq[i].qs[j + QK / 2];
        s += (float)sum * fp16_to_fp32(b[i].d) * fp16_to_fp32(xq[i].d);
    }
    return s;
}

/* ---- AVX2 dot products ------------------------------------------------------------------------
 */

#if HAVE_AVX2
static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* The four sums of a0..a3's lanes, as one vector. */
static inline __m128 hsum4(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
    const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

static float dot_f32_avx2(const void *row, const float *x, int n) {
    const float *w = row;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 16), _mm256_loadu_ps(x + i + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 24), _mm256_loadu_ps(x + i + 24), a3);
    }
    for (; i + 8 <= n; i += 8)
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
    float s = hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; i < n; i++) s += w[i] * x[i];
    return s;
}

static float dot_f16_avx2(const void *row, const float *x, int n) {
    const uint16_t *w = row;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i))),
                             _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i + 8))),
                             _mm256_loadu_ps(x + i + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i + 16))),
                             _mm256_loadu_ps(x + i + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i + 24))),
                             _mm256_loadu_ps(x + i + 24), a3);
    }
    for (; i + 8 <= n; i += 8)
        a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i))),
                             _mm256_loadu_ps(x + i), a0);
    float s = hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; i < n; i++) s += fp16_to_fp32(w[i]) * x[i];
    return s;
}

static inline __m256 bf16x8(const uint16_t *p) {
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

static float dot_bf16_avx2(const void *row, const float *x, int n) {
    const uint16_t *w = row;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_fmadd_ps(bf16x8(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(bf16x8(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(bf16x8(w + i), _mm256_loadu_ps(x + i), a0);
    float s = hsum256(_mm256_add_ps(a0, a1));
    for (; i < n; i++) s += bf16_to_fp32(w[i]) * x[i];
    return s;
}

static inline __m256 i8x8(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)); }

static float dot_q8_0_avx2(const void *row, const float *x, int n) {
    const block_q8_0 *b = row;
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < n / QK; i++, x += QK) {
        __m128i lo = _mm_loadu_si128((const __m128i *)b[i].qs);
        __m128i hi = _mm_loadu_si128((const __m128i *)(b[i].qs + 16));
        __m256 s = _mm256_mul_ps(i8x8(lo), _mm256_loadu_ps(x));
        s = _mm256_fmadd_ps(i8x8(_mm_srli_si128(lo, 8)), _mm256_loadu_ps(x + 8), s);
        s = _mm256_fmadd_ps(i8x8(hi), _mm256_loadu_ps(x + 16), s);
        s = _mm256_fmadd_ps(i8x8(_mm_srli_si128(hi, 8)), _mm256_loadu_ps(x + 24), s);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(fp16_to_fp32(b[i].d)), s, acc);
    }
    return hsum256(acc);
}

static float dot_q4_0_avx2(const void *row, const float *x, int n) {
    const block_q4_0 *b = row;
    const __m128i mask = _mm_set1_epi8(0xf), eight = _mm_set1_epi8(8);
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < n / QK; i++, x += QK) {
        __m128i q = _mm_loadu_si128((const __m128i *)b[i].qs);
        __m128i lo = _mm_sub_epi8(_mm_and_si128(q, mask), eight);
        __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), mask), eight);
        __m256 s = _mm256_mul_ps(i8x8(lo), _mm256_loadu_ps(x));
        s = _mm256_fmadd_ps(i8x8(_mm_srli_si128(lo, 8)), _mm256_loadu_ps(x + 8), s);
        s = _mm256_fmadd_ps(i8x8(hi), _mm256_loadu_ps(x + 16), s);
        s = _mm256_fmadd_ps(i8x8(_mm_srli_si128(hi, 8)), _mm256_loadu_ps(x + 24), s);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(fp16_to_fp32(b[i].d)), s, acc);
    }
    return hsum256(acc);
}
/* Sum of the 32 products of signed bytes w and x, as 8 int32 lanes in float: |w| * sign(x, w) keeps
 * maddubs (unsigned × signed) exact for w in [-127, 127]. */
static inline __m256 i8_dot32(__m256i w, __m256i x) {
    __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

static float dot_q8_0_q8_avx2(const void *row, const block_q8_0 *xq, int n) {
    const block_q8_0 *b = row;
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < n / QK; i++) {
        __m256i w = _mm256_loadu_si256((const __m256i *)b[i].qs);
        __m256i x = _mm256_loadu_si256((const __m256i *)xq[i].qs);
        const float d = fp16_to_fp32(b[i].d) * fp16_to_fp32(xq[i].d);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), i8_dot32(w, x), acc);
    }
    return hsum256(acc);
}

static float dot_q4_0_q8_avx2(const void *row, const block_q8_0 *xq, int n) {
    const block_q4_0 *b = row;
    const __m128i mask = _mm_set1_epi8(0xf);
    const __m256i eight = _mm256_set1_epi8(8);
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < n / QK; i++) {
        __m128i q = _mm_loadu_si128((const __m128i *)b[i].qs);
        __m256i w =
            _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), mask), _mm_and_si128(q, mask));
        w = _mm256_sub_epi8(w, eight);
        __m256i x = _mm256_loadu_si256((const __m256i *)xq[i].qs);
        const float d = fp16_to_fp32(b[i].d) * fp16_to_fp32(xq[i].d);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), i8_dot32(w, x), acc);
    }
    return hsum256(acc);
}
#else
#define dot_q8_0_q8_avx2 dot_q8_0_q8_ref
#define dot_q4_0_q8_avx2 dot_q4_0_q8_ref
#define dot_f32_avx2 dot_f32_ref
#define dot_f16_avx2 dot_f16_ref
#define dot_bf16_avx2 dot_bf16_ref
#define dot_q8_0_avx2 dot_q8_0_ref
#define dot_q4_0_avx2 dot_q4_0_ref
#endif

static const type_kernels table[TYPE_COUNT] = {
    [TYPE_F32] = {dot_f32_ref, dot_f32_avx2, NULL, NULL},
    [TYPE_F16] = {dot_f16_ref, dot_f16_avx2, NULL, NULL},
    [TYPE_BF16] = {dot_bf16_ref, dot_bf16_avx2, NULL, NULL},
    [TYPE_Q8_0] = {dot_q8_0_ref, dot_q8_0_avx2, dot_q8_0_q8_ref, dot_q8_0_q8_avx2},
    [TYPE_Q4_0] = {dot_q4_0_ref, dot_q4_0_avx2, dot_q4_0_q8_ref, dot_q4_0_q8_avx2},
};

static int use_simd = 1;

const type_kernels *kernels_for(tensor_type t) {
    if ((unsigned)t >= TYPE_COUNT || !table[t].dot_ref) return NULL;
    return &table[t];
}

void kernels_use_simd(int on) { use_simd = on; }

static vec_dot_fn dot_of(tensor_type t) { return use_simd ? table[t].dot_simd : table[t].dot_ref; }

/* ---- matrix products --------------------------------------------------------------------------
 */

/* Below this many tokens, stream the weights once through dot products; at or above, use sgemm. */
#define GEMM_MIN_TOKENS 8
/* Float weights (f32, f16, bf16) below this many tokens: each row is read (converted) once and
 * dotted with the tokens four at a time (matvec_rows_multi) — a batch of decoding sessions, where
 * sgemm would first convert every weight to f32 for a handful of rows. */
#define MULTI_MAX_TOKENS 64
/* Floats of scratch for one dequantised panel of rows (~2 MiB: stays in L2/L3 while sgemm runs). */
#define PANEL_FLOATS (1 << 19)

/* Per thread: one dequantised panel (non-decreasing in `in`, so a scratch sized for the widest
 * input serves every product). */
static size_t panel_floats(int in) {
    size_t min = 16 * (size_t)in;
    return min > PANEL_FLOATS ? min : PANEL_FLOATS;
}

size_t matmul_scratch_floats(int in, int n_threads) { return panel_floats(in) * (size_t)n_threads; }

/* out[j] = dot(w, x + j·ld) for j < 4: the row's 8 floats loaded once for four tokens. */
static void dot4_f32(const float *w, const float *x, size_t ld, int n, float out[4]) {
    int i = 0;
#if HAVE_AVX2
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (; i + 8 <= n; i += 8) {
        const __m256 wv = _mm256_loadu_ps(w + i);
        a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + ld + i), a1);
        a2 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + 2 * ld + i), a2);
        a3 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + 3 * ld + i), a3);
    }
    _mm_storeu_ps(out, hsum4(a0, a1, a2, a3));
#else
    out[0] = out[1] = out[2] = out[3] = 0;
#endif
    for (; i < n; i++)
        for (int j = 0; j < 4; j++) out[j] += w[i] * x[(size_t)j * ld + i];
}

/* dot4_f32 with the row in f16 (F16C) or bf16, converted in registers as it is read. */
static void dot4_half(tensor_type t, const uint16_t *w, const float *x, size_t ld, int n,
                      float out[4]) {
    int i = 0;
    out[0] = out[1] = out[2] = out[3] = 0;
#if HAVE_AVX2
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm_loadu_si128((const __m128i *)(w + i));
        const __m256 wv =
            t == TYPE_F16 ? _mm256_cvtph_ps(h)
                          : _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
        a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + ld + i), a1);
        a2 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + 2 * ld + i), a2);
        a3 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + 3 * ld + i), a3);
    }
    out[0] = hsum256(a0), out[1] = hsum256(a1), out[2] = hsum256(a2), out[3] = hsum256(a3);
#endif
    for (; i < n; i++) {
        const float wf = t == TYPE_F16 ? fp16_to_fp32(w[i]) : bf16_to_fp32(w[i]);
        for (int j = 0; j < 4; j++) out[j] += wf * x[(size_t)j * ld + i];
    }
}

#if HAVE_AVX2
/* The 4 × 3 tile out[j][r] = dot(row r, x_j) of 4 rows (stride row_bytes) and 3 tokens (stride ld),
 * twelve accumulators in registers so that each weight and activation loaded serves 3 or 4 FMAs;
 * one function per row type (LOAD8: 8 weights as f32). n must be a multiple of 8 (the caller
 * checks). */
#define LOAD8_F32(p, i) _mm256_loadu_ps((const float *)(p) + (i))
#define TILE4X3(name, LOAD8)                                                                       \
    static void name(const uint8_t *w, size_t rb, const float *x, size_t ld, int n,                \
                     float out[3][4]) {                                                            \
        __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00,   \
               a12 = a00, a13 = a00, a20 = a00, a21 = a00, a22 = a00, a23 = a00;                   \
        const float *x1 = x + ld, *x2 = x + 2 * ld;                                                \
        for (int i = 0; i < n; i += 8) {                                                           \
            const __m256 v0 = _mm256_loadu_ps(x + i), v1 = _mm256_loadu_ps(x1 + i),                \
                         v2 = _mm256_loadu_ps(x2 + i);                                             \
            __m256 wv = LOAD8(w, i);                                                               \
            a00 = _mm256_fmadd_ps(wv, v0, a00), a10 = _mm256_fmadd_ps(wv, v1, a10);                \
            a20 = _mm256_fmadd_ps(wv, v2, a20);                                                    \
            wv = LOAD8(w + rb, i);                                                                 \
            a01 = _mm256_fmadd_ps(wv, v0, a01), a11 = _mm256_fmadd_ps(wv, v1, a11);                \
            a21 = _mm256_fmadd_ps(wv, v2, a21);                                                    \
            wv = LOAD8(w + 2 * rb, i);                                                             \
            a02 = _mm256_fmadd_ps(wv, v0, a02), a12 = _mm256_fmadd_ps(wv, v1, a12);                \
            a22 = _mm256_fmadd_ps(wv, v2, a22);                                                    \
            wv = LOAD8(w + 3 * rb, i);                                                             \
            a03 = _mm256_fmadd_ps(wv, v0, a03), a13 = _mm256_fmadd_ps(wv, v1, a13);                \
            a23 = _mm256_fmadd_ps(wv, v2, a23);                                                    \
        }                                                                                          \
        _mm_storeu_ps(out[0], hsum4(a00, a01, a02, a03));                                          \
        _mm_storeu_ps(out[1], hsum4(a10, a11, a12, a13));                                          \
        _mm_storeu_ps(out[2], hsum4(a20, a21, a22, a23));                                          \
    }
TILE4X3(tile4x3_f32, LOAD8_F32)
#endif

static int is_float_type(tensor_type t) { return t == TYPE_F32 || t == TYPE_F16 || t == TYPE_BF16; }

/* Blocks of four rows ahead that matvec_rows_multi prefetches while a block runs: a batch's
 * weights come from DRAM, evicted by the sessions' keys and values. n = 16, 64 matrices of
 * 1408 × 256 f16 in turn, 2 threads: 122 GFLOP/s without, 140 one block ahead, 136 two. */
#define PF_BLOCKS 1

/* matvec_rows for float weights and n tokens. Four rows at a time: f16/bf16 rows converted once
 * into rowbuf (f32, 4 · in floats, in L1), then the 4 × 3 register tile over the tokens three at
 * a time, the last n mod 3 tokens each against the four rows in one pass (dot4_f32 with the token
 * as the row). Rows left over (fewer than four) are dotted with the tokens four at a time. */
static void matvec_rows_multi(float *const *ys, const weight *const *ws, const float *x, int n,
                              int r0, int r1, float *rowbuf) {
    int k = 0, base = 0;
    while (r0 >= base + ws[k]->out) base += ws[k++]->out;
    for (int r = r0; r < r1; r++) {
        while (r >= base + ws[k]->out) base += ws[k++]->out;
        const weight *w = ws[k];
        const int in = w->in;
        const void *row = (const uint8_t *)w->data + (size_t)(r - base) * w->row_bytes;
        float *y = ys[k] + (r - base);
        int t = 0;
#if HAVE_AVX2
        if (r + 4 <= r1 && r - base + 4 <= w->out && in % 8 == 0) { /* 4 rows at once */
            const float *rows = row;
            if (r + 4 * (PF_BLOCKS + 1) <= r1 && r - base + 4 * (PF_BLOCKS + 1) <= w->out) {
                const char *next = (const char *)row + PF_BLOCKS * 4 * w->row_bytes;
                for (size_t b = 0; b < 4 * w->row_bytes; b += 64)
                    _mm_prefetch(next + b, _MM_HINT_T0);
            }
            if (w->type != TYPE_F32) {
                dequantize_row(w->type, row, rowbuf, 4 * (int64_t)in);
                rows = rowbuf;
            }
            for (; t + 3 <= n; t += 3) {
                float o[3][4];
                tile4x3_f32((const uint8_t *)rows, (size_t)in * sizeof(float), x + (size_t)t * in,
                            (size_t)in, in, o);
                for (int j = 0; j < 3; j++)
                    for (int q = 0; q < 4; q++) y[(size_t)(t + j) * w->out + q] = o[j][q];
            }
            for (; t < n; t++) {
                float o[4];
                dot4_f32(x + (size_t)t * in, rows, (size_t)in, in, o);
                for (int q = 0; q < 4; q++) y[(size_t)t * w->out + q] = o[q];
            }
            r += 3;
            continue;
        }
#endif
        for (; t + 4 <= n; t += 4) { /* the row in its own type, converted in registers */
            float o[4];
            if (w->type == TYPE_F32)
                dot4_f32(row, x + (size_t)t * in, (size_t)in, in, o);
            else
                dot4_half(w->type, row, x + (size_t)t * in, (size_t)in, in, o);
            for (int j = 0; j < 4; j++) y[(size_t)(t + j) * w->out] = o[j];
        }
        if (t == n) continue;
        const float *wr = row; /* the last n mod 4 tokens: the row converted once */
        if (w->type != TYPE_F32) {
            dequantize_row(w->type, row, rowbuf, in);
            wr = rowbuf;
        }
        for (; t < n; t++) y[(size_t)t * w->out] = dot_f32(wr, x + (size_t)t * in, in);
    }
}

/* Rows [r0, r1) of the concatenation of ws[0..count): y_k[t, r] = dot(row r of W_k, x_t). */
static void matvec_rows(float *const *ys, const weight *const *ws, const float *x,
                        const block_q8_0 *xq, int n, int r0, int r1) {
    int k = 0, base = 0;
    while (r0 >= base + ws[k]->out) base += ws[k++]->out;
    for (int r = r0; r < r1; r++) {
        while (r >= base + ws[k]->out) base += ws[k++]->out;
        const weight *w = ws[k];
        const void *row = (const uint8_t *)w->data + (size_t)(r - base) * w->row_bytes;
        float *y = ys[k] + (r - base);
        const vec_dot_q8_fn dq = use_simd ? table[w->type].dot_q8_simd : table[w->type].dot_q8_ref;
        if (dq) {
            for (int t = 0; t < n; t++)
                y[(size_t)t * w->out] = dq(row, xq + (size_t)t * (w->in / QK), w->in);
        } else {
            const vec_dot_fn dot = dot_of(w->type);
            for (int t = 0; t < n; t++)
                y[(size_t)t * w->out] = dot(row, x + (size_t)t * w->in, w->in);
        }
    }
}

void matmul_many(int count, float *const *ys, const float *x, const weight *const *ws, int n,
                 float *scratch, int n_threads) {
    int all_float = 1, total_rows = 0;
    for (int k = 0; k < count; k++)
        all_float &= is_float_type(ws[k]->type), total_rows += ws[k]->out;
    if (n >= GEMM_MIN_TOKENS && n < MULTI_MAX_TOKENS && all_float && use_simd) {
#pragma omp parallel num_threads(n_threads)
        {
            const int nth = omp_get_num_threads(), ith = omp_get_thread_num();
            const int r0 = (int)((int64_t)total_rows * ith / nth),
                      r1 = (int)((int64_t)total_rows * (ith + 1) / nth);
            if (r0 < r1)
                matvec_rows_multi(ys, ws, x, n, r0, r1, scratch + panel_floats(ws[0]->in) * ith);
        }
        return;
    }
    if (n >= GEMM_MIN_TOKENS) {
        for (int k = 0; k < count; k++) matmul(ys[k], x, ws[k], n, scratch, n_threads);
        return;
    }
    /* decode: one parallel region streams every weight's rows once, split evenly across threads;
     * quantised weights dot against the activations rounded to Q8_0 once here (in scratch) */
    int total = 0, need_q8 = 0;
    for (int k = 0; k < count; k++)
        total += ws[k]->out, need_q8 |= table[ws[k]->type].dot_q8_ref != NULL;
    const int in = ws[0]->in;
    block_q8_0 *xq = (block_q8_0 *)scratch;
    if (need_q8)
        for (int t = 0; t < n; t++)
            quantize_row(TYPE_Q8_0, x + (size_t)t * in, xq + (size_t)t * (in / QK), in);
    const int64_t work = (int64_t)total * in * n;
#pragma omp parallel if (work > 32768) num_threads(n_threads)
    {
        const int nth = omp_get_num_threads(), ith = omp_get_thread_num();
        const int r0 = (int)((int64_t)total * ith / nth),
                  r1 = (int)((int64_t)total * (ith + 1) / nth);
        if (r0 < r1) matvec_rows(ys, ws, x, xq, n, r0, r1);
    }
}

void matmul(float *y, const float *x, const weight *w, int n, float *scratch, int n_threads) {
    if (n < GEMM_MIN_TOKENS || (n < MULTI_MAX_TOKENS && is_float_type(w->type) && use_simd)) {
        matmul_many(1, &y, x, &w, n, scratch, n_threads);
        return;
    }
    /* prompt: each thread owns a slice of W's rows and runs a single-threaded sgemm on it (OpenBLAS
     * is kept to one thread, so OpenMP workers never compete with OpenBLAS's own) */
    const int in = w->in, out = w->out;
    const uint8_t *base = w->data;
    const int panel = (int)(panel_floats(in) / (size_t)in);
#pragma omp parallel num_threads(n_threads)
    {
        const int nth = omp_get_num_threads(), ith = omp_get_thread_num();
        const int r0 = (int)((int64_t)out * ith / nth), r1 = (int)((int64_t)out * (ith + 1) / nth);
        float *mine = scratch + panel_floats(in) * (size_t)ith;
        if (w->type == TYPE_F32 && r0 < r1) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, r1 - r0, in, 1.0f, x, in,
                        (const float *)w->data + (size_t)r0 * in, in, 0.0f, y + r0, out);
        } else {
            for (int p0 = r0; p0 < r1; p0 += panel) {
                const int rows = r1 - p0 < panel ? r1 - p0 : panel;
                dequantize_row(w->type, base + (size_t)p0 * w->row_bytes, mine, (int64_t)rows * in);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, rows, in, 1.0f, x, in, mine,
                            in, 0.0f, y + p0, out);
            }
        }
    }
}

void weight_row(const weight *w, int i, float *dst) {
    dequantize_row(w->type, (const uint8_t *)w->data + (size_t)i * w->row_bytes, dst, w->in);
}

/* ---- element-wise ---------------------------------------------------------------------------- */

float dot_f32(const float *a, const float *b, int n) {
#if HAVE_AVX2
    return dot_f32_avx2(a, b, n);
#else
    return dot_f32_ref(a, b, n);
#endif
}

void axpy_f32(float *y, float a, const float *x, int n) {
    int i = 0;
#if HAVE_AVX2
    __m256 va = _mm256_set1_ps(a);
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i,
                         _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
#endif
    for (; i < n; i++) y[i] += a * x[i];
}

#if HAVE_AVX2
/* Eight elements of a KV row from element i: f32 as they are, f16 converted (F16C). */
static inline __m256 kv_load8(const void *row, size_t i, int f16) {
    return f16 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + i)))
               : _mm256_loadu_ps((const float *)row + i);
}
#endif

/* Element i of a KV row of f32 or f16. */
static inline float kv_elem(const void *row, size_t i, int f16) {
    return f16 ? fp16_to_fp32(((const uint16_t *)row)[i]) : ((const float *)row)[i];
}

/* Scores of one or two queries (q0, and q1 unless NULL) against the n rows K_j of K (stride d
 * elements of f32, or of f16 with f16 set): out0[j] = scale · dot(K_j, q0), out1 likewise; four
 * rows at a time, each row loaded once for both queries. Inlined into dot_rows once per type. */
static inline __attribute__((always_inline)) void dot_rows_pair(float *out0, float *out1,
                                                                const void *K, int f16, int n,
                                                                int d, const float *q0,
                                                                const float *q1, float scale) {
    const size_t es = f16 ? 2 : 4; /* bytes an element */
    int j = 0;
#if HAVE_AVX2
    if (d % 8 == 0) {
        const __m128 sc = _mm_set1_ps(scale);
        for (; j + 4 <= n; j += 4) {
            const char *k0 = (const char *)K + (size_t)j * d * es, *k1 = k0 + d * es,
                       *k2 = k1 + d * es, *k3 = k2 + d * es;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            if (!q1) {
                for (int i = 0; i < d; i += 8) {
                    const __m256 qv = _mm256_loadu_ps(q0 + i);
                    a0 = _mm256_fmadd_ps(kv_load8(k0, i, f16), qv, a0);
                    a1 = _mm256_fmadd_ps(kv_load8(k1, i, f16), qv, a1);
                    a2 = _mm256_fmadd_ps(kv_load8(k2, i, f16), qv, a2);
                    a3 = _mm256_fmadd_ps(kv_load8(k3, i, f16), qv, a3);
                }
                _mm_storeu_ps(out0 + j, _mm_mul_ps(hsum4(a0, a1, a2, a3), sc));
                continue;
            }
            __m256 b0 = a0, b1 = a0, b2 = a0, b3 = a0;
            for (int i = 0; i < d; i += 8) {
                const __m256 qv = _mm256_loadu_ps(q0 + i), rv = _mm256_loadu_ps(q1 + i);
                __m256 kv = kv_load8(k0, i, f16);
                a0 = _mm256_fmadd_ps(kv, qv, a0), b0 = _mm256_fmadd_ps(kv, rv, b0);
                kv = kv_load8(k1, i, f16);
                a1 = _mm256_fmadd_ps(kv, qv, a1), b1 = _mm256_fmadd_ps(kv, rv, b1);
                kv = kv_load8(k2, i, f16);
                a2 = _mm256_fmadd_ps(kv, qv, a2), b2 = _mm256_fmadd_ps(kv, rv, b2);
                kv = kv_load8(k3, i, f16);
                a3 = _mm256_fmadd_ps(kv, qv, a3), b3 = _mm256_fmadd_ps(kv, rv, b3);
            }
            _mm_storeu_ps(out0 + j, _mm_mul_ps(hsum4(a0, a1, a2, a3), sc));
            _mm_storeu_ps(out1 + j, _mm_mul_ps(hsum4(b0, b1, b2, b3), sc));
        }
    }
#endif
    const vec_dot_fn dot = kernels_for(f16 ? TYPE_F16 : TYPE_F32)->dot_simd;
    for (; j < n; j++) {
        const void *row = (const char *)K + (size_t)j * d * es;
        out0[j] = dot(row, q0, d) * scale;
        if (q1) out1[j] = dot(row, q1, d) * scale;
    }
}

static void dot_rows_typed(float *out, size_t ld_out, const void *K, int f16, int n, int d,
                           const float *q, int nq, float scale) {
    for (int h = 0; h < nq; h += 2)
        dot_rows_pair(out + (size_t)h * ld_out, h + 1 < nq ? out + (size_t)(h + 1) * ld_out : NULL,
                      K, f16, n, d, q + (size_t)h * d, h + 1 < nq ? q + (size_t)(h + 1) * d : NULL,
                      scale);
}

void dot_rows(tensor_type t, float *out, size_t ld_out, const void *K, int n, int d, const float *q,
              int nq, float scale) {
    if (t == TYPE_F16)
        dot_rows_typed(out, ld_out, K, 1, n, d, q, nq, scale);
    else
        dot_rows_typed(out, ld_out, K, 0, n, d, q, nq, scale);
}

/* Rows ahead that mix_rows prefetches: a batch of sessions reads its values from DRAM. */
#define PF_ROWS 4

static inline __attribute__((always_inline)) void mix_rows_typed(float *o, const void *V, int f16,
                                                                 int n, int d, const float *p) {
    const size_t es = f16 ? 2 : 4, row = (size_t)d * es; /* bytes an element, a row */
    int i = 0;
#if HAVE_AVX2
    for (; i + 64 <= d; i += 64) { /* 64 columns (a whole row of a 64-wide head) in 8 registers */
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0,
               a7 = a0;
        const char *v = (const char *)V + i * es;
        for (int j = 0; j < n; j++, v += row) {
            const __m256 pj = _mm256_broadcast_ss(p + j);
            for (size_t b = 0; b < 64 * es; b += 64) /* the 64 columns' cache lines */
                _mm_prefetch(v + PF_ROWS * row + b, _MM_HINT_T0);
            a0 = _mm256_fmadd_ps(pj, kv_load8(v, 0, f16), a0);
            a1 = _mm256_fmadd_ps(pj, kv_load8(v, 8, f16), a1);
            a2 = _mm256_fmadd_ps(pj, kv_load8(v, 16, f16), a2);
            a3 = _mm256_fmadd_ps(pj, kv_load8(v, 24, f16), a3);
            a4 = _mm256_fmadd_ps(pj, kv_load8(v, 32, f16), a4);
            a5 = _mm256_fmadd_ps(pj, kv_load8(v, 40, f16), a5);
            a6 = _mm256_fmadd_ps(pj, kv_load8(v, 48, f16), a6);
            a7 = _mm256_fmadd_ps(pj, kv_load8(v, 56, f16), a7);
        }
        _mm256_storeu_ps(o + i, a0), _mm256_storeu_ps(o + i + 8, a1);
        _mm256_storeu_ps(o + i + 16, a2), _mm256_storeu_ps(o + i + 24, a3);
        _mm256_storeu_ps(o + i + 32, a4), _mm256_storeu_ps(o + i + 40, a5);
        _mm256_storeu_ps(o + i + 48, a6), _mm256_storeu_ps(o + i + 56, a7);
    }
    for (; i + 8 <= d; i += 8) {
        __m256 a = _mm256_setzero_ps();
        for (int j = 0; j < n; j++)
            a = _mm256_fmadd_ps(_mm256_broadcast_ss(p + j),
                                kv_load8((const char *)V + (size_t)j * row, (size_t)i, f16), a);
        _mm256_storeu_ps(o + i, a);
    }
#endif
    for (; i < d; i++) {
        float acc = 0;
        for (int j = 0; j < n; j++)
            acc += p[j] * kv_elem((const char *)V + (size_t)j * row, i, f16);
        o[i] = acc;
    }
}

void mix_rows(tensor_type t, float *o, const void *V, int n, int d, const float *p) {
    if (t == TYPE_F16)
        mix_rows_typed(o, V, 1, n, d, p);
    else
        mix_rows_typed(o, V, 0, n, d, p);
}

void axpy_row(tensor_type t, float *y, float a, const void *x, int n) {
    if (t == TYPE_F32) {
        axpy_f32(y, a, x, n);
        return;
    }
    const uint16_t *h = x;
    int i = 0;
#if HAVE_AVX2
    __m256 va = _mm256_set1_ps(a);
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(
            y + i, _mm256_fmadd_ps(va, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))),
                                   _mm256_loadu_ps(y + i)));
#endif
    for (; i < n; i++) y[i] += a * fp16_to_fp32(h[i]);
}

static void openblas_single_thread(void) { openblas_set_num_threads(1); }

void kernels_set_threads(int n) {
    omp_set_num_threads(n);
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, openblas_single_thread); /* all parallelism is OpenMP's; see matmul */
}
