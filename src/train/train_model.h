/* train_model.h — a model held as f32 master weights with gradients, for training.
 *
 * Any architecture of the table (src/model/arch.h): the block loop is `x += part(rmsnorm(x))` for
 * the mixer and the FFN, each part bringing its own forward and backward (src/parts/part.h), then
 * rmsnorm → head → cross-entropy. Parameters, gradients and activations each live in one slab
 * sized at creation for a fixed micro-batch (B sequences of T tokens); nothing is allocated
 * afterwards. The tensors, their order, names, shapes, decay, learning-rate scale and frozen flag
 * are the architecture's parameter list (param_list), the same one inference binds.
 */
#ifndef MSRNN_TRAIN_TRAIN_MODEL_H
#define MSRNN_TRAIN_TRAIN_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "io/gguf.h"
#include "model/arch.h"

typedef struct train_model train_model;

/* Load a GGUF of any architecture msrnn runs (any weight type msrnn reads; converted to f32) for
 * micro-batches of B × T tokens using n_threads OpenMP threads (0: all cores). */
msrnn_status train_model_open(const char *path, int B, int T, int n_threads, uint64_t max_memory,
                              train_model **out);
void train_model_free(train_model *m);

const hparams *train_model_hparams(const train_model *m);
/* The model file the weights came from (its tokenizer, NULL when it has none; its path). */
const struct msrnn_model *train_model_source(const train_model *m);
int train_model_threads(const train_model *m); /* the OpenMP threads every op runs with */
/* The tensors (offsets into the parameter, gradient and moment slabs). */
const param_list *train_model_params_list(const train_model *m);
size_t train_model_n_params(const train_model *m);
/* Give every tensor that its part marks with a learning-rate multiplier of its own (lr_scale ≠ 1,
 * e.g. infini's gates) the multiplier s instead. */
void train_model_set_own_lr_scale(train_model *m, float s);
/* Train the frozen tensors blk.L.SUFFIX for every SUFFIX of a comma-separated list (each must name
 * a tensor its part marks PARAM_OPTIONAL, e.g. dijiang's attn_decay). */
msrnn_status train_model_unfreeze(train_model *m, const char *list);
/* Let the loss (training and validation) cover only the last n targets of each sequence, e.g. the
 * answer at the end of a passkey example; n <= 0 or n >= T: all T (the default). */
void train_model_set_loss_last(train_model *m, int n);
int train_model_loss_last(const train_model *m);
/* Distillation: with logits non-NULL ((B·T) × V floats, row b·T + t for input t of sequence b,
 * e.g. a teacher model's on the same tokens), train_model_step's loss is the mean over the
 * targets it covers of KL(softmax(teacher) ‖ softmax(student)), its gradient p_s − p_t; the
 * targets themselves are not used. train_model_loss (validation) stays the cross-entropy. The
 * buffer must hold the current batch's logits at each step; NULL: back to cross-entropy. */
void train_model_set_teacher(train_model *m, const float *logits);
float *train_model_params(train_model *m); /* all parameters, n_params floats */
float *train_model_grads(train_model *m);  /* their gradients, same layout */
/* Bytes of the parameter, gradient and activation slabs (the optimizer adds 2 × params). */
size_t train_model_bytes(const train_model *m);

void train_model_zero_grad(train_model *m);
/* tokens: B rows of T + 1 ids (inputs are the first T, targets the last T). Runs forward and
 * backward, ACCUMULATING into the gradients the gradient of grad_scale × (mean loss over the B·T
 * targets, or the B·n of train_model_set_loss_last); *loss receives that mean loss (unscaled).
 * Use grad_scale = 1 / accumulation steps. */
msrnn_status train_model_step(train_model *m, const int32_t *tokens, float grad_scale, float *loss);
/* Forward only: the mean loss over the targets the loss covers (validation). */
msrnn_status train_model_loss(train_model *m, const int32_t *tokens, float *loss);
/* Forward only, the logits of sequence b (T × V) — to compare with inference. */
msrnn_status train_model_logits(train_model *m, const int32_t *tokens, int b, float *logits);

/* Write the weights as a GGUF of the same architecture (matrices as f32 or f16; vectors f32),
 * metadata and tokenizer copied from the file the model was opened from; tensors are streamed from
 * the slab, not copied. If extra is non-NULL it is called with the writer before writing, to add
 * keys or tensors (checkpoints add optimizer state). */
msrnn_status train_model_save(const train_model *m, const char *path, int f16,
                              msrnn_status (*extra)(void *ctx, struct gguf_writer *w), void *ctx);

#endif
