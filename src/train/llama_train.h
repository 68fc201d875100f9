/* llama_train.h — a Llama model held as f32 master weights with gradients, for training.
 *
 * The forward pass is the inference engine's (RMSNorm, adjacent-pair RoPE, GQA causal attention,
 * SwiGLU, tied or untied head), written with the ops of ops.h so that every step has a backward.
 * Parameters, gradients and activations each live in one slab sized at creation for a fixed
 * micro-batch (B sequences of T tokens); nothing is allocated afterwards.
 *
 * Parameter tensors are kept in GGUF order and under GGUF names: token_embd.weight, then per layer
 * blk.L.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down}
 * .weight, then output_norm.weight and (untied only) output.weight.
 */
#ifndef MSRNN_TRAIN_LLAMA_TRAIN_H
#define MSRNN_TRAIN_LLAMA_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "io/gguf.h"

typedef struct {
    int n_vocab, dim, n_layers, n_heads, n_kv_heads, head_dim, ffn_dim, n_ctx;
    float rope_base, norm_eps;
    int tied;
} llama_shape;

typedef struct {
    char name[48];
    int n_dims;
    int64_t ne[2]; /* GGUF order: ne[0] = row length */
    size_t offset; /* in floats, into the parameter (and gradient, and moment) slabs */
    size_t n;      /* elements */
    int decay;     /* 1: AdamW weight decay applies (matrices); 0: norms */
} param_tensor;

typedef struct llama_train llama_train;

/* Load a `llama` GGUF (any weight type msrnn reads; converted to f32) for micro-batches of B × T
 * tokens using n_threads OpenMP threads (0: all cores). */
msrnn_status llama_train_open(const char *path, int B, int T, int n_threads, llama_train **out);
void llama_train_free(llama_train *m);

const llama_shape *llama_train_shape(const llama_train *m);
int llama_train_n_tensors(const llama_train *m);
const param_tensor *llama_train_tensor(const llama_train *m, int i);
size_t llama_train_n_params(const llama_train *m);
float *llama_train_params(llama_train *m); /* all parameters, n_params floats */
float *llama_train_grads(llama_train *m);  /* their gradients, same layout */
/* Bytes of the parameter, gradient and activation slabs (the optimizer adds 2 × params). */
size_t llama_train_bytes(const llama_train *m);

void llama_train_zero_grad(llama_train *m);
/* tokens: B rows of T + 1 ids (inputs are the first T, targets the last T). Runs forward and
 * backward, ACCUMULATING into the gradients the gradient of grad_scale × (mean loss over the B·T
 * targets); *loss receives that mean loss (unscaled). Use grad_scale = 1 / accumulation steps. */
msrnn_status llama_train_step(llama_train *m, const int32_t *tokens, float grad_scale, float *loss);
/* Forward only: the mean loss over the B·T targets (validation). */
msrnn_status llama_train_loss(llama_train *m, const int32_t *tokens, float *loss);

/* Write the weights as a plain `llama` GGUF (matrices as f32 or f16; norms f32), metadata and
 * tokenizer copied from the file the model was opened from. If extra is non-NULL it is called with
 * the writer before writing, to add keys or tensors (checkpoints add optimizer state). */
msrnn_status llama_train_save(const llama_train *m, const char *path, int f16,
                              msrnn_status (*extra)(void *ctx, struct gguf_writer *w), void *ctx);

#endif
