/* model.h — a Llama-architecture model bound to the tensors of a GGUF file.
 *
 * Nothing is copied: every weight points into the file's read-only mapping. Binding checks every
 * tensor's presence, type and shape against the hyper-parameters, so that the forward pass can
 * trust them.
 */
#ifndef MSRNN_MODEL_MODEL_H
#define MSRNN_MODEL_MODEL_H

#include "io/gguf.h"
#include "msrnn.h"
#include "tensor/kernels.h"
#include "text/tokenizer.h"

typedef struct {
    const float *attn_norm; /* (dim) */
    weight wq;              /* (n_heads * head_dim, dim) */
    weight wk;              /* (n_kv_heads * head_dim, dim) */
    weight wv;              /* (n_kv_heads * head_dim, dim) */
    weight wo;              /* (dim, n_heads * head_dim) */
    const float *ffn_norm;  /* (dim) */
    weight w_gate;          /* (ffn_dim, dim) */
    weight w_up;            /* (ffn_dim, dim) */
    weight w_down;          /* (dim, ffn_dim) */
} layer_weights;

struct msrnn_model {
    gguf_file *file;
    msrnn_model_info info;
    int n_rot;       /* rotated dims per head (llama.rope.dimension_count; = head_dim usually) */
    weight tok_embd; /* (n_vocab, dim) */
    layer_weights *layers;
    const float *output_norm; /* (dim) */
    weight output;            /* (n_vocab, dim); = tok_embd when tied */
    spm_tokenizer *tok;       /* NULL when the file has no vocabulary */
};

#endif
