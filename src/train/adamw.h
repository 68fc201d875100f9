/* adamw.h — the optimizer: AdamW with decoupled weight decay, global-norm gradient clipping, and a
 * linear warm-up then cosine learning-rate schedule.
 *
 *   g ← g · min(1, clip / ‖g‖₂)            (‖g‖ over all parameters; clip <= 0: off)
 *   m ← β1 m + (1 − β1) g;  v ← β2 v + (1 − β2) g²
 *   m̂ = m / (1 − β1^t);  v̂ = v / (1 − β2^t)          (t = 1 at the first step)
 *   p ← p − lr·s · (m̂ / (sqrt(v̂) + ε) + wd · p)      (wd only on tensors with decay = 1; s the
 *                                                     tensor's lr_scale; frozen tensors skipped;
 *                                                     then clamped to [lo, hi] where hi > lo)
 *
 *   lr(s) = lr_max · (s + 1) / warmup                         for s < warmup  (s from 0)
 *         = lr_min + ½ (lr_max − lr_min)(1 + cos(π · (s − warmup) / (steps − warmup)))  after
 */
#ifndef MSRNN_TRAIN_ADAMW_H
#define MSRNN_TRAIN_ADAMW_H

#include <stddef.h>

#include "model/arch.h"

typedef struct {
    float lr_max, lr_min;
    int warmup, steps;
    float beta1, beta2, eps, weight_decay, clip;
} adamw_params;

adamw_params adamw_default_params(void); /* 0.9, 0.95, 1e-8, wd 0.1, clip 1.0 */
float lr_at(const adamw_params *p, int step);
/* The global L2 norm of the gradients (before clipping). */
float grad_norm(const float *g, size_t n);
/* One step t (1-based) over every tensor of the list (params, grads, m and v: n_floats each, laid
 * out by the list's offsets): decay on the tensors marked so, the learning rate times each
 * tensor's lr_scale, frozen tensors skipped. Returns the gradient norm before clipping. */
float adamw_step(const adamw_params *p, int t, float lr, const param_list *pl, float *params,
                 float *grads, float *m, float *v, int n_threads);

#endif
