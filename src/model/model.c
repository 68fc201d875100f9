/* model.c — open a GGUF file as a model of one of the architectures of arch.h: read the
 * hyper-parameters, bind and check every tensor of its parameter list, build the tokenizer. */
#include "model/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"

/* Bind tensor d of the list: a matrix of any type msrnn computes with, or an f32 vector. */
static msrnn_status bind(const gguf_file *f, const param_desc *d, weight *w) {
    const gguf_tensor *t = gguf_find_tensor(f, d->name);
    if (!t) return status_fail(MSRNN_ERR_FORMAT, "%s: tensor '%s' is missing", f->path, d->name);
    if (!d->matrix) {
        if (d->n_dims == 2 &&
            (t->n_dims != 2 || t->ne[0] != (uint64_t)d->ne[0] || t->ne[1] != (uint64_t)d->ne[1]))
            return status_fail(MSRNN_ERR_FORMAT,
                               "%s: tensor '%s' has shape [%llu, %llu] (%u dims), expected "
                               "[%lld, %lld] from the hyper-parameters",
                               f->path, d->name, (unsigned long long)t->ne[0],
                               (unsigned long long)(t->n_dims > 1 ? t->ne[1] : 1), t->n_dims,
                               (long long)d->ne[0], (long long)d->ne[1]);
        if (t->n_elements != (uint64_t)d->n || t->ne[0] != (uint64_t)d->ne[0])
            return status_fail(MSRNN_ERR_FORMAT, "%s: tensor '%s' has %llu elements, expected %zu",
                               f->path, d->name, (unsigned long long)t->n_elements, d->n);
        if (t->type != TYPE_F32)
            return status_fail(MSRNN_ERR_UNSUPPORTED,
                               "%s: norm tensor '%s' must be f32 (type %d found)", f->path, d->name,
                               (int)t->type);
    } else if (d->n_dims == 3) { /* a table: [row length, rows, slabs], f32, f16 or bf16 */
        if (t->n_dims != 3 || t->ne[0] != (uint64_t)d->ne[0] || t->ne[1] != (uint64_t)d->ne[1] ||
            t->ne[2] != (uint64_t)d->ne[2])
            return status_fail(MSRNN_ERR_FORMAT,
                               "%s: tensor '%s' has shape [%llu, %llu, %llu] (%u dims), expected "
                               "[%lld, %lld, %lld] from the hyper-parameters",
                               f->path, d->name, (unsigned long long)t->ne[0],
                               (unsigned long long)(t->n_dims > 1 ? t->ne[1] : 1),
                               (unsigned long long)(t->n_dims > 2 ? t->ne[2] : 1), t->n_dims,
                               (long long)d->ne[0], (long long)d->ne[1], (long long)d->ne[2]);
        if (t->type != TYPE_F32 && t->type != TYPE_F16 && t->type != TYPE_BF16)
            return status_fail(MSRNN_ERR_UNSUPPORTED,
                               "%s: table '%s' has type %d; tables must be f32, f16 or bf16",
                               f->path, d->name, (int)t->type);
    } else {
        if (t->n_dims != 2 || t->ne[0] != (uint64_t)d->ne[0] || t->ne[1] != (uint64_t)d->ne[1])
            return status_fail(MSRNN_ERR_FORMAT,
                               "%s: tensor '%s' has shape [%llu, %llu] (%u dims), expected "
                               "[%lld, %lld] from the hyper-parameters",
                               f->path, d->name, (unsigned long long)t->ne[0],
                               (unsigned long long)t->ne[1], t->n_dims, (long long)d->ne[0],
                               (long long)d->ne[1]);
        if (!kernels_for(t->type))
            return status_fail(MSRNN_ERR_UNSUPPORTED,
                               "%s: tensor '%s' has type %d, which msrnn cannot compute with "
                               "(supported: f32, f16, bf16, q8_0, q4_0)",
                               f->path, d->name, (int)t->type);
    }
    w->data = t->data;
    w->type = t->type;
    w->in = (int)d->ne[0];
    w->out = (int)(d->ne[1] * d->ne[2]); /* a table: every slab's rows */
    w->row_bytes = type_row_bytes(t->type, (uint64_t)d->ne[0]);
    return MSRNN_OK;
}

static msrnn_status bind_weights(msrnn_model *m) {
    MSRNN_TRY(param_list_build(m->arch, &m->hp, &m->params));
    m->w = calloc((size_t)m->params.n, sizeof *m->w);
    if (!m->w) return status_fail(MSRNN_ERR_NOMEM, "out of memory binding %d tensors", m->params.n);
    for (int i = 0; i < m->params.n; i++) MSRNN_TRY(bind(m->file, &m->params.p[i], &m->w[i]));
    return MSRNN_OK;
}

/* The file's tensors that no parameter binds (a checkpoint's moments aside), in file order. */
static msrnn_status find_unused(msrnn_model *m) {
    const gguf_file *f = m->file;
    if (f->n_tensors == 0) return MSRNN_OK;
    const int ckpt = gguf_find_kv(f, "msrnn.train.step") != NULL;
    uint8_t *used = calloc(f->n_tensors, 1);
    if (!used) return status_fail(MSRNN_ERR_NOMEM, "out of memory");
    for (int k = 0; k < m->params.n; k++) { /* every one is there: bind_weights checked */
        const gguf_tensor *t = gguf_find_tensor(f, m->params.p[k].name);
        if (t) used[t - f->tensors] = 1;
    }
    msrnn_status st = MSRNN_OK;
    for (uint64_t i = 0; i < f->n_tensors && st == MSRNN_OK; i++) {
        const gguf_str name = f->tensors[i].name;
        if (used[i] || (ckpt && name.len > 6 &&
                        (!memcmp(name.ptr, "opt.m.", 6) || !memcmp(name.ptr, "opt.v.", 6))))
            continue;
        if (!m->unused) m->unused = calloc(f->n_tensors, sizeof *m->unused);
        char *copy = m->unused ? malloc(name.len + 1) : NULL;
        if (!copy) {
            st = status_fail(MSRNN_ERR_NOMEM, "out of memory");
            break;
        }
        memcpy(copy, name.ptr, name.len);
        copy[name.len] = 0;
        m->unused[m->n_unused++] = copy;
    }
    free(used);
    return st;
}

msrnn_status msrnn_model_open(const char *path, msrnn_model **out) {
    *out = NULL;
    msrnn_model *m = calloc(1, sizeof *m);
    if (!m) return status_fail(MSRNN_ERR_NOMEM, "out of memory");
    msrnn_status st = gguf_open(path, &m->file);
    if (st == MSRNN_OK) st = arch_read_hparams(m->file, &m->arch, &m->hp);
    if (st == MSRNN_OK) st = bind_weights(m);
    if (st == MSRNN_OK) st = find_unused(m);
    if (st == MSRNN_OK) gguf_prefault(m->file);
    if (st == MSRNN_OK && gguf_find_kv(m->file, "tokenizer.ggml.model"))
        st = spm_tokenizer_from_gguf(m->file, &m->tok);
    /* the chat template is optional metadata: one that is not a string, or holds a NUL byte, is
     * taken as none (msrnn_model_chat_template NULL) rather than refusing the model */
    const gguf_kv *tk = st == MSRNN_OK ? gguf_find_kv(m->file, "tokenizer.chat_template") : NULL;
    if (tk && tk->value.type == GGUF_TYPE_STRING &&
        !memchr(tk->value.str.ptr, 0, tk->value.str.len)) {
        const gguf_str *tmpl = &tk->value.str;
        if (!(m->chat_template = malloc(tmpl->len + 1)))
            st = status_fail(MSRNN_ERR_NOMEM, "out of memory");
        else
            memcpy(m->chat_template, tmpl->ptr, tmpl->len), m->chat_template[tmpl->len] = 0;
    }
    if (st != MSRNN_OK) {
        msrnn_model_close(m);
        return st;
    }
    msrnn_model_info *info = &m->hp.info;
    info->architecture = m->arch->name;
    info->bos_id = 1;
    info->eos_id = 2;
    uint32_t bos = 1, eos = 2;
    if (gguf_get_u32(m->file, "tokenizer.ggml.bos_token_id", 0, &bos) == MSRNN_OK &&
        bos < (uint32_t)info->n_vocab)
        info->bos_id = (int)bos;
    if (gguf_get_u32(m->file, "tokenizer.ggml.eos_token_id", 0, &eos) == MSRNN_OK &&
        eos < (uint32_t)info->n_vocab)
        info->eos_id = (int)eos;
    if (m->tok && spm_n_vocab(m->tok) > info->n_vocab) {
        msrnn_status e = status_fail(MSRNN_ERR_FORMAT,
                                     "%s: the tokenizer has %d tokens but the "
                                     "model only %d",
                                     m->file->path, spm_n_vocab(m->tok), info->n_vocab);
        msrnn_model_close(m);
        return e;
    }
    for (uint64_t i = 0; i < m->file->n_tensors; i++) {
        info->n_params += m->file->tensors[i].n_elements;
        info->weight_bytes += m->file->tensors[i].n_bytes;
    }
    *out = m;
    return MSRNN_OK;
}

void msrnn_model_close(msrnn_model *m) {
    if (!m) return;
    spm_tokenizer_free(m->tok);
    free(m->chat_template);
    for (int i = 0; i < m->n_unused; i++) free(m->unused[i]);
    free(m->unused);
    free(m->w);
    param_list_free(&m->params);
    gguf_close(m->file);
    free(m);
}

const msrnn_model_info *msrnn_model_get_info(const msrnn_model *m) { return &m->hp.info; }

int msrnn_model_n_unused(const msrnn_model *m) { return m->n_unused; }

const char *msrnn_model_unused_name(const msrnn_model *m, int i) {
    return i >= 0 && i < m->n_unused ? m->unused[i] : NULL;
}

msrnn_status msrnn_tokenize(const msrnn_model *m, const char *text, size_t len, int add_bos,
                            int32_t *ids, size_t cap, size_t *n_out) {
    if (!m->tok)
        return status_fail(MSRNN_ERR_UNSUPPORTED, "%s: the file has no tokenizer", m->file->path);
    return spm_encode(m->tok, text, len, add_bos, ids, cap, n_out);
}

msrnn_status msrnn_tokenize_special(const msrnn_model *m, const char *text, size_t len, int add_bos,
                                    int32_t *ids, size_t cap, size_t *n_out) {
    if (!m->tok)
        return status_fail(MSRNN_ERR_UNSUPPORTED, "%s: the file has no tokenizer", m->file->path);
    return spm_encode_special(m->tok, text, len, add_bos, ids, cap, n_out);
}

size_t msrnn_tokenize_special_max(const msrnn_model *m, size_t len) {
    return m->tok ? spm_max_ids_special(m->tok, len) : len + 2;
}

const char *msrnn_model_chat_template(const msrnn_model *m) { return m->chat_template; }

size_t msrnn_tokenize_max(const msrnn_model *m, size_t len) {
    return m->tok ? spm_max_ids(m->tok, len) : len + 2;
}

size_t msrnn_token_to_text(const msrnn_model *m, int32_t prev, int32_t id, char *buf, size_t cap) {
    if (!m->tok) return 0;
    return spm_token_to_text(m->tok, prev, id, buf, cap);
}
