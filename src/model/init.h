/* init.h — write a new model file (any architecture of arch.h) with freshly initialised weights:
 * the starting point of training, and a model of any shape for tests and benchmarks. */
#ifndef MSRNN_MODEL_INIT_H
#define MSRNN_MODEL_INIT_H

#include <stdint.h>

#include "base/status.h"
#include "tensor/types.h"

typedef struct {
    int dim, n_layers, n_heads, n_kv_heads, ffn_dim, n_ctx;
    int n_vocab;      /* 0: the vocabulary file's size */
    float rope_base;  /* 10000 */
    float norm_eps;   /* 1e-5 */
    int tied;         /* share token_embd as the output head */
    tensor_type type; /* type of the matrices (norms stay f32) */
    float init_std;   /* std of the normal init of matrices (0.02) */
    uint64_t seed;
    const char *name;    /* general.name */
    const char *arch;    /* general.architecture (NULL: "llama") */
    int segment;         /* infini: tokens per segment (0: 2048) */
    int memory_rule;     /* infini: MEMORY_RULE_LINEAR (0) or MEMORY_RULE_DELTA */
    int features;        /* dijiang: feature count m (0: head dim) */
    int hash_bits;       /* memoryformer: τ (0: 8) */
    int block_hash_bits; /* memoryformer: τ₂ (0: τ + 2) */
    int weighting;       /* memoryformer: MEM_WEIGHT_PAPER (0) or MEM_WEIGHT_CODE */
    float temperature;   /* memoryformer: t of "paper" (0: 1) */
    int no_bias;         /* memoryformer: write no optional bias */
    uint64_t max_memory; /* refuse (MSRNN_ERR_NOMEM) a model whose writing needs more (0: no
                            limit besides the machine's available memory) */
} model_init_params;

/* Write path (atomically): hyper-parameters, tokenizer keys copied from vocab_path (any GGUF with a
 * `llama` vocabulary), and weights ~ N(0, init_std²) (output projections scaled by 1/sqrt(2L), as
 * GPT-2 does), norm weights 1. */
msrnn_status model_write_init(const model_init_params *p, const char *vocab_path, const char *path);

#endif
