/* arch.h — the architecture table and the parameter list built from it.
 *
 * A row per `general.architecture` names the token mixer and the FFN of its blocks (parts, see
 * src/parts/part.h). Every block is the same:
 *
 *     x += mixer(rmsnorm(x; blk.L.attn_norm))
 *     x += ffn(rmsnorm(x; blk.L.ffn_norm))
 *
 * between the token embedding and rmsnorm → output head. Adding a method is one part file and one
 * row here.
 *
 * The parameter list is the one place a model's tensors are enumerated, in file order:
 * token_embd.weight; per layer attn_norm, the mixer's, ffn_norm, the FFN's; output_norm.weight;
 * output.weight (absent when tied). Weight binding (model.c), init-model (init.c), the training
 * slabs and AdamW (train_model.c, adamw.c) and checkpoints all walk it.
 */
#ifndef MSRNN_MODEL_ARCH_H
#define MSRNN_MODEL_ARCH_H

#include "io/gguf.h"
#include "parts/part.h"

typedef struct {
    const char *name; /* general.architecture, and the prefix of its hyper-parameter keys */
    const part_kind *mixer, *ffn;
} arch_row;

/* Row i of the table (NULL past the end): tests walk every part through it. */
const arch_row *arch_at(int i);
/* NULL when msrnn has no row for name. */
const arch_row *arch_find(const char *name, size_t len);
/* "llama, ..." for messages. */
const char *arch_names(void);

/* Read `general.architecture` and `{arch}.*` hyper-parameters; n_vocab from token_embd.weight. */
msrnn_status arch_read_hparams(const gguf_file *f, const arch_row **arch, hparams *hp);

typedef struct {
    char name[64];
    int n_dims;
    int64_t ne[3];             /* ne[2] = 1 unless n_dims is 3 */
    int matrix, decay, frozen; /* frozen: PARAM_TRAINED, PARAM_FIXED or PARAM_OPTIONAL */
    float lr_scale;
    float lo, hi; /* hi > lo: training keeps the values in [lo, hi] */
    param_init init;
    size_t n;      /* elements */
    size_t offset; /* in floats, into the training slabs (parameters, gradients, moments) */
} param_desc;

typedef struct {
    param_desc *p;
    int n;
    int embd, out_norm, output; /* indices; output == embd when tied */
    int per_layer;              /* tensors per layer */
    int n_mixer, n_ffn;         /* of them, the mixer's and the FFN's */
    size_t n_floats;            /* sum of n */
} param_list;

/* Index of layer l's attn_norm; the mixer's follow, then ffn_norm, then the FFN's. */
static inline int param_layer(const param_list *pl, int l) { return 1 + l * pl->per_layer; }
static inline int param_mixer(const param_list *pl, int l) { return param_layer(pl, l) + 1; }
static inline int param_ffn_norm(const param_list *pl, int l) {
    return param_mixer(pl, l) + pl->n_mixer;
}
static inline int param_ffn(const param_list *pl, int l) { return param_ffn_norm(pl, l) + 1; }

msrnn_status param_list_build(const arch_row *arch, const hparams *hp, param_list *out);
void param_list_free(param_list *pl);
/* The values of parameter i when it is an INIT_PART one (its part's fill); 0 when it is not. */
int param_fill(const arch_row *arch, const hparams *hp, const param_list *pl, int i, float *out);

#endif
