/* kernels.h — the numeric kernels of the forward pass.
 *
 * Each weight type has a row dot product (a row of the weight in its stored type, times an f32
 * vector); the table in kernels.c holds a scalar reference and an AVX2 version of each, and
 * tests/test_kernels.c holds the two together. Matrix products pick between a threaded
 * matrix-vector loop (few tokens: memory-bound, weights streamed once) and OpenBLAS sgemm on
 * dequantised row panels (many tokens: compute-bound).
 *
 * Dimension legend: n tokens, in/out widths of a projection; a weight W is stored as `out` rows of
 * `in` elements (GGUF ne = [in, out]), and y = x Wᵀ.
 */
#ifndef MSRNN_TENSOR_KERNELS_H
#define MSRNN_TENSOR_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "tensor/types.h"

/* dot(row of type t with n elements, x) */
typedef float (*vec_dot_fn)(const void *row, const float *x, int n);

/* dot(row of type t with n elements, x quantised to Q8_0 blocks): the integer dot products that
 * quantised weights use when decoding, as llama.cpp does (activations rounded to 8 bits per block).
 */
typedef float (*vec_dot_q8_fn)(const void *row, const block_q8_0 *xq, int n);

typedef struct {
    vec_dot_fn dot_ref;       /* scalar reference */
    vec_dot_fn dot_simd;      /* AVX2/FMA (equal to dot_ref when not built for AVX2) */
    vec_dot_q8_fn dot_q8_ref; /* NULL for float types: they dot against f32 activations */
    vec_dot_q8_fn dot_q8_simd;
} type_kernels;

const type_kernels *kernels_for(tensor_type t);
/* 1 to use the SIMD kernels (default), 0 to force the scalar reference everywhere (for tests). */
void kernels_use_simd(int on);

/* A weight matrix as the kernels see it. */
typedef struct {
    const void *data;
    tensor_type type;
    int in, out;      /* row length and row count */
    size_t row_bytes; /* bytes per row */
} weight;

/* y[n, out] = x[n, in] · Wᵀ, on exactly n_threads OpenMP threads. scratch: at least
 * matmul_scratch_floats(in, n_threads) floats (one panel per thread). */
void matmul(float *y, const float *x, const weight *w, int n, float *scratch, int n_threads);
size_t matmul_scratch_floats(int in, int n_threads);
/* Several products of the same input (q, k, v; gate, up) in one pass: for decoding, a single
 * parallel region over all their rows. Every ws[k]->in must be equal. */
void matmul_many(int count, float *const *ys, const float *x, const weight *const *ws, int n,
                 float *scratch, int n_threads);

/* Row i of W as f32 (embedding lookup). */
void weight_row(const weight *w, int i, float *dst);

float dot_f32(const float *a, const float *b, int n);
void axpy_f32(float *y, float a, const float *x, int n); /* y += a x */
/* Attention over KV rows of type t (TYPE_F32 or TYPE_F16; stride d elements): out[h·ld_out + j] =
 * scale · dot(K_j, q_h) for j < n and nq queries q_h (stride d), each row of K read once for two
 * queries; o = Σ_j p[j] V_j. */
void dot_rows(tensor_type t, float *out, size_t ld_out, const void *K, int n, int d, const float *q,
              int nq, float scale);
void mix_rows(tensor_type t, float *o, const void *V, int n, int d, const float *p);
/* y += a x, x a row of type t (f32 or f16: KV cache rows) */
void axpy_row(tensor_type t, float *y, float a, const void *x, int n);
/* Keep OpenBLAS single-threaded (all parallelism is OpenMP's, see matmul) and set the calling
 * thread's OpenMP default to n. No msrnn region relies on that default: each names its count. */
void kernels_set_threads(int n);

#endif
