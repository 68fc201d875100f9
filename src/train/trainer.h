/* trainer.h — the training loop: micro-batches from a token shard, gradient accumulation, AdamW
 * with warm-up + cosine schedule, periodic validation, atomic checkpoints, and exact resume.
 *
 * A checkpoint is a GGUF file holding the model (f32 weights under their usual names, so it is also
 * a model msrnn can run), the AdamW moments (tensors opt.m.NAME and opt.v.NAME), the step reached,
 * the data loader's position and the whole configuration (msrnn.train.* keys). Resuming from it
 * replays exactly what an uninterrupted run would have done: the same batches in the same order
 * and the same arithmetic, so the losses after resuming are bit-identical.
 */
#ifndef MSRNN_TRAIN_TRAINER_H
#define MSRNN_TRAIN_TRAINER_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

typedef struct {
    int batch;  /* B: sequences per micro-batch */
    int ctx;    /* T: tokens per sequence */
    int accum;  /* micro-batches per optimizer step */
    int steps;  /* optimizer steps in the whole run */
    int warmup; /* warm-up steps */
    float lr, lr_min, weight_decay, clip, beta1, beta2, eps;
    uint64_t seed;      /* data order */
    int eval_every;     /* validation every N steps (0: only at the end) */
    int eval_batches;   /* micro-batches of validation windows */
    int ckpt_every;     /* checkpoint every N steps (0: only on stop and at the end) */
    float own_lr_scale; /* the learning-rate multiplier of the tensors a part gives one of their own
                           (infini's gates: 10 by default); 0: the part's */
    int loss_last;      /* the loss covers the last N targets of each window (0: all) */
} train_config;

train_config train_config_default(void);

typedef struct {
    const char *init_path;  /* the model to start from (ignored when resuming) */
    const char *train_path; /* token shard */
    const char *val_path;   /* token shard, or NULL */
    const char *ckpt_path;  /* checkpoint file (written atomically) */
    const char *out_path;   /* final model, a plain llama GGUF (NULL: none) */
    int out_f16;            /* write the final model's matrices as f16 */
    int resume;             /* continue from ckpt_path (its configuration wins) */
    const char *vocab_from; /* names the model's vocabulary in messages (NULL: the model's path) */
    const char *teacher_path; /* distil: the loss is KL to this model's logits (NULL: plain
                                 next-token loss; a resumed run uses its checkpoint's teacher) */
    const char *unfreeze;     /* train these optional tensors too: comma-separated suffixes of
                                 blk.L.* (e.g. dijiang's attn_decay); NULL: none (a resumed run uses
                                 its checkpoint's) */
    int n_threads;
    uint64_t max_memory; /* refuse a plan (parameters, gradients, moments, activations) above this
                            many bytes before allocating it (0: only the machine's MemAvailable) */
} train_paths;

typedef struct {
    size_t n_params;
    size_t bytes_params, bytes_grads, bytes_moments, bytes_acts; /* the peak, allocated up front */
    int start_step; /* 0, or the step a resumed run continues from */
    uint64_t train_tokens, train_windows, val_windows;
    train_config cfg; /* the configuration in effect (the checkpoint's when resuming) */
} train_info;

typedef struct {
    int step;   /* optimizer steps done (1-based after the first) */
    float loss; /* mean training loss of this step's micro-batches */
    float lr, grad_norm;
    float val_loss; /* NaN unless validation ran after this step */
    double tokens_per_s, elapsed_s, eta_s;
    int checkpointed; /* a checkpoint was written after this step */
} train_progress;

typedef struct {
    void (*start)(void *ctx, const train_info *info);
    void (*step)(void *ctx, const train_progress *p);
    void *ctx;
} train_callbacks;

/* Run until cfg.steps or until *stop becomes non-zero (then a checkpoint is written and MSRNN_OK
 * returned with *stopped = 1). */
msrnn_status train_run(const train_config *cfg, const train_paths *paths, const train_callbacks *cb,
                       volatile sig_atomic_t *stop, int *stopped);

#endif
