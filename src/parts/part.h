/* part.h — the interface every part of a block implements: a token mixer (softmax attention,
 * later Infini-attention, DiJiang, MemoryFormer's hashed attention) or an FFN (SwiGLU, later
 * MemoryFormer's memory block).
 *
 * A block is `x += part(rmsnorm(x))`, twice (mixer, then FFN); the block loops of inference
 * (src/model/session.c) and training (src/train/train_model.c) only ever call through this table,
 * so they never name a method. A part is one file holding everything about it:
 *
 *   parameters   the tensors of one layer (name suffix, GGUF shape, decay, learning-rate scale,
 *                frozen, initialisation); src/model/params.c assembles the model's list from them,
 *                and that list alone drives binding, init-model, the training slabs, AdamW and
 *                checkpoints;
 *   inference    options check, state bytes for a session (e.g. the KV cache), workspace floats
 *                for a batch, and `infer`: a batch of tokens — possibly of several sessions, one
 *                state each — through the layer;
 *   training     saved activations, shared tables and scratch sizes; `train_forward` over B
 *                sequences of T tokens and `train_backward`, which accumulates into the input and
 *                parameter gradients (ops.h's convention).
 *
 * Legend: D model width, n tokens of a batch, B × T training tokens (N = B·T rows).
 */
#ifndef MSRNN_PARTS_PART_H
#define MSRNN_PARTS_PART_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "io/gguf.h"
#include "msrnn.h"
#include "tensor/kernels.h"

/* The hyper-parameters every part sees (read from `{arch}.*` keys). */
typedef struct {
    msrnn_model_info info;
    int n_rot; /* rotated dims per head ({arch}.rope.dimension_count; head_dim by default) */
    /* A method's own keys, read and written by its part (read_keys, write_keys); 0 elsewhere. */
    int segment;         /* infini.segment_length: tokens per segment (N) */
    int memory_rule;     /* infini.memory_rule: MEMORY_RULE_LINEAR or MEMORY_RULE_DELTA */
    int features;        /* dijiang.feature_count: m (0: head_dim) */
    float gn_eps;        /* dijiang.attention.group_norm_epsilon (0: 1e-5) */
    int hash_bits;       /* memoryformer.hash_bits: τ of Q/K/V and the block's first layer */
    int block_hash_bits; /* memoryformer.block_hash_bits: τ₂ of the block's second layer */
    int weighting;       /* memoryformer.weighting: MEM_WEIGHT_PAPER or MEM_WEIGHT_CODE */
    float temperature;   /* memoryformer.temperature: t of "paper" */
    float ln_eps;        /* memoryformer.attention.layer_norm_epsilon: the block's LayerNorm */
    int mf_biases;       /* MemoryFormer's optional biases present: MF_BIAS_* bits */
    /* How a part's fixed values are made (convert, init-model); not stored in files. */
    int sampler;   /* dijiang's P: FEATURE_SAMPLER_HALTON or FEATURE_SAMPLER_RANDOM */
    uint64_t seed; /* the seed of P (random) and of W_G's initialisation */
} hparams;

enum { MEMORY_RULE_LINEAR, MEMORY_RULE_DELTA };
enum { FEATURE_SAMPLER_HALTON, FEATURE_SAMPLER_RANDOM };
enum { MF_BIAS_QKV = 1, MF_BIAS_MEM1 = 2, MF_BIAS_MEM2 = 4 };

typedef enum {
    INIT_ONES,         /* norm weights */
    INIT_ZEROS,        /* biases, gates */
    INIT_NORMAL,       /* N(0, std²) */
    INIT_NORMAL_RESID, /* N(0, (std / sqrt(2 L))²): projections that write the residual stream */
    INIT_PART          /* values the part computes itself (part_kind.fill), e.g. fixed matrices */
} param_init;

/* One tensor of one layer. Its file name is `blk.L.<suffix>`. */
typedef struct {
    const char *suffix;
    int64_t ne0, ne1; /* GGUF ne (ne0 = row length); ne1 = 1 for a vector */
    int matrix;       /* 1: stored in the model's weight type (any msrnn reads); 0: f32 vector */
    int decay;        /* AdamW weight decay applies */
    float lr_scale;   /* learning rate multiplier (1: the schedule's) */
    int frozen;       /* PARAM_TRAINED, PARAM_FIXED or PARAM_OPTIONAL */
    param_init init;
    float lo, hi; /* when hi > lo, training keeps every value in [lo, hi] (projected AdamW) */
    int64_t ne2;  /* > 1: a 3-D tensor [ne0, ne1, ne2] (MemoryFormer's tables: f32, f16 or bf16
                     only, whatever the model's weight type); 0 or 1: 2-D or a vector */
} part_param;

enum {
    PARAM_TRAINED,  /* updated by training */
    PARAM_FIXED,    /* never updated (fixed random matrices); its gradient is not computed */
    PARAM_OPTIONAL, /* frozen unless training names it (train --unfreeze SUFFIX); the part
                       computes its gradient */
};

#define PART_MAX_PARAMS 16

/* One inference step of a layer over a batch of n tokens. The batch may hold several sessions'
 * tokens: sequence i owns tokens [seq_start[i], seq_start[i + 1]) and its state is state[i]. */
typedef struct {
    const hparams *hp;
    const weight *w; /* this layer's parameters, in the part's order */
    int layer, n;
    int n_seq;
    const int *seq_start; /* (n_seq + 1) */
    void *const *state;   /* (n_seq) each session's state of this part (all layers) */
    const int64_t *pos;   /* (n) absolute positions */
    float *work;          /* work_floats() of this part, for the batch */
    float *scratch;       /* matmul scratch (matmul_scratch_floats of max_in, n_threads) */
    int n_threads;        /* threads the scratch is sized for */
} part_step;

/* One layer of the training forward or backward. */
typedef struct {
    const hparams *hp;
    int B, T, n_threads;
    const float *const *w; /* this layer's parameters, in the part's order */
    float *const *dw;      /* their gradients */
    float *act;            /* this layer's saved activations (train_act_floats) */
    const float *shared;   /* tables shared by every layer (train_shared_floats), read only */
    float *scratch;        /* scratch shared by every layer (train_scratch_floats) */
} part_train;

typedef struct part_kind {
    const char *name;
    /* ---- the method's own `{arch}.*` keys (NULL: none) */
    msrnn_status (*read_keys)(const gguf_file *f, const char *arch, hparams *hp);
    msrnn_status (*write_keys)(const hparams *hp, const char *arch, gguf_writer *w);
    /* ---- parameters */
    int (*params)(const hparams *hp, part_param out[PART_MAX_PARAMS]);
    /* ---- inference */
    /* Check a session's options against this part; MSRNN_ERR_INVALID naming the problem. */
    msrnn_status (*check)(const hparams *hp, const msrnn_session_params *p);
    /* Bytes of one session's state (all layers), fixed at open. */
    size_t (*state_bytes)(const hparams *hp, const msrnn_session_params *p);
    /* Lay the state out in buf (state_bytes, 64-byte aligned, zeroed) and make it empty. */
    void (*state_init)(void *state, const hparams *hp, const msrnn_session_params *p);
    void (*state_reset)(void *state);
    /* 1 when the state holds a bounded amount whatever the input length. */
    int (*bounded)(const void *state);
    /* Bytes of the state that hold information now (grows only while unbounded). */
    size_t (*used_bytes)(const void *state);
    /* Entries a cache holds in `layer` (kv head `head` for per-head sets): positions ascending and
     * their eviction scores; returns the count (NULL: the part keeps no entries). */
    int (*kept)(const void *state, int layer, int head, int64_t *pos, float *score, int cap);
    /* A summary policy's (merge's) state in `layer`, kv head `head`: *merged = entries folded,
     * counts[0..cap) = each summary column's count; returns the columns (NULL or 0: none). */
    int (*summary)(const void *state, int layer, int head, int64_t *merged, int64_t *counts,
                   int cap);
    /* Workspace floats for a batch of n_batch tokens, and the widest matmul input it uses. */
    size_t (*work_floats)(const hparams *hp, int n_batch);
    int (*max_in)(const hparams *hp);
    /* Once per batch before the first layer (layer = -1): what every layer shares, e.g. RoPE's
     * table of the batch's positions, into c->work. NULL: nothing. */
    void (*prepare)(const part_step *c);
    /* out (n, D) = part(xn (n, D)). */
    msrnn_status (*infer)(const part_step *c, const float *xn, float *out);
    /* ---- training */
    size_t (*train_act_floats)(const hparams *hp, int B, int T);
    size_t (*train_shared_floats)(const hparams *hp, int B, int T);
    size_t (*train_scratch_floats)(const hparams *hp, int B, int T, int n_threads);
    void (*train_init)(const hparams *hp, int B, int T, float *shared);
    /* out (N, D) = part(xn (N, D)), keeping what backward needs in c->act. */
    void (*train_forward)(const part_train *c, const float *xn, float *out);
    /* dxn += ∂/∂xn, c->dw += ∂/∂w, given dout = ∂loss/∂out. */
    void (*train_backward)(const part_train *c, const float *xn, const float *dout, float *dxn);
    /* ---- values of the INIT_PART parameters: parameter `index` (the params order) of `layer`,
     * its ne0 · ne1 floats into out; deterministic for the hparams (seed, sampler). NULL: none. */
    void (*fill)(const hparams *hp, int layer, int index, float *out);
    /* ---- saved sessions: the bytes of the state a saved session carries, [*offset, *offset +
     * *bytes) of the state — what state_init does not lay out again (no pointers, no scratch), so
     * that they can be copied into a state that state_init laid out with the same hparams and
     * options in another process. NULL: the part keeps nothing between calls. */
    void (*state_data)(const void *state, size_t *offset, size_t *bytes);
} part_kind;

extern const part_kind part_softmax, part_swiglu, part_infini, part_dijiang, part_mf_attn,
    part_mf_block;

#endif
