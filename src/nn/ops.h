/* ops.h — the shared ops of every part, each an X_forward / X_backward pair with the same argument
 * order (llm.c style), all f32. Inference and training call the same forward: there is one RMSNorm,
 * one RoPE, one SwiGLU, one softmax in msrnn.
 *
 * Dimension legend: N = B·T rows (one per token), B sequences of T tokens, C model width, V
 * vocabulary, F SwiGLU hidden width, H query heads and Hkv key/value heads of d dims each (GQA:
 * query head h reads kv head h / (H / Hkv)). Row-major: a (N, C) activation is N rows of C floats;
 * a weight W of a projection is (OC, IC), stored as GGUF stores it, and out = inp · Wᵀ.
 *
 * Every backward ACCUMULATES (+=) into its input gradients and weight gradients, so the trainer
 * zeroes gradients once per optimizer step and residual branches sum for free. Threads: OpenMP,
 * splitting only over output elements, never over a reduction, so results do not depend on the
 * thread count (bit-identical resume on any machine with the same build). Ops that index
 * per-thread scratch take the thread count it was sized for and run exactly that many threads.
 */
#ifndef MSRNN_NN_OPS_H
#define MSRNN_NN_OPS_H

#include <stddef.h>
#include <stdint.h>

/* out[n, :] = wte[tokens[n], :] */
void embedding_forward(float *out, const int32_t *tokens, const float *wte, int N, int C,
                       int n_threads);
/* dwte[tokens[n], :] += dout[n, :] */
void embedding_backward(float *dwte, const float *dout, const int32_t *tokens, int N, int C,
                        int n_threads);

/* out = inp / rms(inp) * w per row, rms = sqrt(mean(inp²) + eps); rstd[n] = 1 / rms (kept for
 * backward; rstd may be NULL). */
void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, int N, int C,
                     float eps, int n_threads);
void rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                      const float *rstd, int N, int C, int n_threads);

/* out (N, OC) = inp (N, IC) · wᵀ, w (OC, IC): OpenBLAS sgemm, rows split across threads. */
void matmul_forward(float *out, const float *inp, const float *w, int N, int IC, int OC,
                    int n_threads);
/* dinp += dout · w; dw += doutᵀ · inp. Either of dinp / dw may be NULL (not needed). */
void matmul_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                     int N, int IC, int OC, int n_threads);

/* out = (inp − mean) / sqrt(var + eps) · w + b per row (population variance); mean[n], rstd[n]
 * kept for backward (either may be NULL). */
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                       const float *b, int N, int C, float eps, int n_threads);
void layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                        const float *w, const float *mean, const float *rstd, int N, int C,
                        int n_threads);

/* Rotary position embedding, adjacent pairs (x[2i], x[2i+1]) rotated by pos · base^(-2i/n_rot), for
 * i < n_rot / 2 (llama.cpp's "norm" RoPE). Rows are tokens of n_heads · d; row n uses table row
 * n % T. table: rope_table_floats(T, n_rot) floats filled by rope_table_init (positions 0..T-1) or
 * rope_table_at (any 64-bit positions), cos and sin computed in double. out may equal inp. */
size_t rope_table_floats(int T, int n_rot);
void rope_table_init(float *table, int T, int n_rot, float base);
void rope_table_at(float *table, const int64_t *pos, int n, int n_rot, float base);
void rope_forward(float *out, const float *inp, const float *table, int N, int T, int n_heads,
                  int d, int n_rot, int n_threads);
/* dinp += R(pos)ᵀ dout */
void rope_backward(float *dinp, const float *dout, const float *table, int N, int T, int n_heads,
                   int d, int n_rot, int n_threads);

/* Causal softmax attention, scale 1/sqrt(d), without any T×T buffer: tiles of queries against
 * tiles of keys with an online softmax (flash attention). q, out: (N, H·d); k, v: (N, Hkv·d);
 * lse: (B, H, T) log-sum-exp of each query's scaled scores, kept for backward. scratch:
 * attention_scratch_floats(T, d, n_threads) floats. */
size_t attention_scratch_floats(int T, int d, int n_threads);
void attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                       int B, int T, int H, int Hkv, int d, float *scratch, int n_threads);
/* Recomputes the probabilities tile by tile from q, k and lse (no T×T buffer either). */
void attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                        const float *k, const float *v, const float *out, const float *lse, int B,
                        int T, int H, int Hkv, int d, float *scratch, int n_threads);

/* x = softmax(x) over n entries, in place, max-subtracted, f32 sums. */
void softmax(float *x, int n);

/* out = silu(gate) · up, all (N, F); out may equal gate. */
void swiglu_forward(float *out, const float *gate, const float *up, int N, int F, int n_threads);
void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                     const float *up, int N, int F, int n_threads);

/* losses[n] = -log softmax(logits[n, :])[targets[n]]. */
void crossentropy_forward(float *losses, const float *logits, const int32_t *targets, int N, int V,
                          int n_threads);
/* dlogits[n, :] += dloss · (softmax(logits[n, :]) - onehot(targets[n])), where dloss is the
 * gradient of the objective with respect to each losses[n] (1/N for a mean). dlogits may equal
 * logits (then it is overwritten, not accumulated: the memory of the biggest activation is shared).
 */
void crossentropy_backward(float *dlogits, const float *logits, const int32_t *targets, float dloss,
                           int N, int V, int n_threads);

#endif
