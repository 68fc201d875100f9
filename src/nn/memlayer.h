/* memlayer.h — MemoryFormer's memory layer (METHODS.md §4, format §6): a projection kind beside
 * dense. y = Σ_k w(z_k) · T[k][h(z_k)] (+ bias), the input x of K·b numbers cut into K chunks z_k
 * of b bits (chunk k: elements [k·b, (k+1)·b)).
 *
 *   hash    bit i of the index = [z_i ≥ 0] (−0 and +0 both give 1), index = Σ_i bit_i · 2^(b−1−i):
 *           element 0 is the MOST significant bit;
 *   weight  "paper" Π_i sigmoid(2|z_i| / t); "code" ‖z‖₁ · Π_i sigmoid(2|z_i|).
 *
 * A table is K slabs of 2^b rows of `out` elements, GGUF ne = [out, 2^b, K], row (k, r) at
 * element offset (k·2^b + r)·out, stored f32, f16 or bf16. Inference reads the stored type;
 * training holds f32 tables.
 *
 * Forward is two steps: memlayer_hash (indices and weights of every token and chunk, kept for
 * backward; the weights in float, 1 / Π_i (1 + exp(−c·|z_i|)) with eight lanes of exp at a time)
 * and memlayer_gather (the weighted sum of the selected rows). Gather walks the tables slab by
 * slab, all tokens of a block through slab k before slab k + 1, so a slab (2^b · out elements)
 * stays in cache while the tokens stream through it, and the block's outputs stay in cache across
 * the slabs; rows a few steps ahead are prefetched, so that at decode the K random rows' misses
 * overlap. A batch of many tokens is split across threads by tokens, a few tokens (decode) by
 * output columns; either way one thread computes each output element, in the same order, so no
 * result depends on the thread count.
 *
 * Backward (accumulating, ops.h's convention): dT[k][idx_k] += w_k · dy (sparse rows; threads own
 * whole slabs, so no atomics), dbias += Σ dy, and dx through the weight only: dw_k = ⟨dy,
 * T[k][idx_k]⟩, dz_k,j = dw_k · ∂w/∂z_j (the bucket choice has no gradient). Deterministic for any
 * thread count.
 */
#ifndef MSRNN_NN_MEMLAYER_H
#define MSRNN_NN_MEMLAYER_H

#include <stddef.h>
#include <stdint.h>

#include "tensor/types.h"

enum { MEM_WEIGHT_PAPER, MEM_WEIGHT_CODE };

#define MEM_MAX_BITS 16

typedef struct {
    int bits;      /* b: 1 .. MEM_MAX_BITS */
    int K;         /* chunks; the input has K·b elements */
    int out;       /* output width (a table row's length) */
    int weighting; /* MEM_WEIGHT_PAPER or MEM_WEIGHT_CODE */
    float temp;    /* t of "paper" (> 0); unused by "code" */
} memlayer;

/* The index of one chunk z of b numbers, and its weight exactly as memlayer_hash computes it
 * (float; within ~1e-6 relative of the exact value for b ≤ 16). */
uint32_t mem_hash(const float *z, int b);
float mem_weight(const memlayer *L, const float *z);
/* ∂w/∂z_j for j < b into dz (the closed forms of METHODS.md §4; 0 where z_j = 0 for "code"'s |·|
 * kink is taken as sign(0) = 0). */
void mem_weight_grad(const memlayer *L, const float *z, float *dz);

/* idx (n, K), w (n, K) of the n rows of x (n, K·b). */
void memlayer_hash(const memlayer *L, const float *x, int n, int32_t *idx, float *w, int n_threads);

/* y (n, out) = Σ_k w[:, k] · T[k][idx[:, k]] (+ bias, may be NULL); table of type `type` (f32, f16,
 * bf16). Overwrites y. */
void memlayer_gather(const memlayer *L, const void *table, tensor_type type, const float *bias,
                     const int32_t *idx, const float *w, int n, float *y, int n_threads);

/* Given dy (n, out): dtable (f32, the table's shape) += sparse rows, dbias (may be NULL) += Σ dy,
 * dx (n, K·b; may be NULL) += through the weights. table is f32 (training). x, idx, w as forward.
 */
void memlayer_backward(const memlayer *L, const float *table, const float *x, const int32_t *idx,
                       const float *w, const float *dy, int n, float *dtable, float *dbias,
                       float *dx, int n_threads);

/* Tests only: while on, memlayer_hash keeps the indices already in idx (those of an earlier
 * call on nearby inputs) and computes each weight as the smooth continuation of that bucket's
 * (|z_i| read as ±z_i by the bucket's bit i). A central difference then measures exactly what
 * backward computes (the bucket choice has no gradient), whatever inputs sit near a sign
 * boundary. Off by default; not thread-safe against concurrent forwards. */
void memlayer_pin_buckets(int on);

/* Diagnostics (bench/mf-buckets): fn(ctx, L, idx, n) is called at the end of every memlayer_hash
 * with the n × K indices it computed, on the calling thread; NULL stops it. One observer per
 * process; set it while no forward runs. */
typedef void (*memlayer_observer)(void *ctx, const memlayer *L, const int32_t *idx, int n);
void memlayer_observe(memlayer_observer fn, void *ctx);

/* Elements of a table: K · 2^b · out. */
static inline size_t memlayer_table_elems(const memlayer *L) {
    return (size_t)L->K * ((size_t)1 << L->bits) * (size_t)L->out;
}

#endif
