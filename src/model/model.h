/* model.h — a model bound to the tensors of a GGUF file.
 *
 * Nothing is copied: every weight points into the file's read-only mapping. Binding walks the
 * parameter list of the file's architecture (arch.h) and checks every tensor's presence, type and
 * shape, so that the forward pass can trust them.
 */
#ifndef MSRNN_MODEL_MODEL_H
#define MSRNN_MODEL_MODEL_H

#include "io/gguf.h"
#include "model/arch.h"
#include "msrnn.h"
#include "tensor/kernels.h"
#include "text/tokenizer.h"

struct msrnn_model {
    gguf_file *file;
    const arch_row *arch;
    hparams hp;          /* hp.info is what msrnn_model_get_info returns */
    param_list params;   /* every tensor, in file order */
    weight *w;           /* (params.n) bound tensors, in the same order; vectors are f32 */
    spm_tokenizer *tok;  /* NULL when the file has no vocabulary */
    char **unused;       /* (n_unused) names of the file's tensors no parameter binds */
    char *chat_template; /* tokenizer.chat_template, NUL-terminated (NULL: none) */
    int n_unused;
};

/* 1 when a session of m opened with p would hold a bounded memory whatever the input length (its
 * parts' own answer on an empty state of a 64-token context), so that no context limits it; 0 when
 * it grows with the input or p is refused. */
int model_memory_bounded(const msrnn_model *m, const msrnn_session_params *p);

#endif
