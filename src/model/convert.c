/* convert.c — llama → another architecture of the table (convert.h). */
#include "model/convert.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/gguf.h"
#include "model/model.h"

static msrnn_status copy_keys(const gguf_file *f, const char *arch, gguf_writer *w) {
    char key[256];
    for (uint64_t i = 0; i < f->n_kv; i++) {
        gguf_kv kv = f->kv[i];
        if (gguf_str_eq(kv.key, "general.architecture")) continue;
        if (kv.key.len > 6 && !memcmp(kv.key.ptr, "llama.", 6)) {
            const int n =
                snprintf(key, sizeof key, "%s.%.*s", arch, (int)(kv.key.len - 6), kv.key.ptr + 6);
            if (n < 0 || (size_t)n >= sizeof key)
                return status_fail(MSRNN_ERR_FORMAT, "%s: key '%.*s...' is too long", f->path, 64,
                                   kv.key.ptr);
            kv.key.ptr = key, kv.key.len = (uint64_t)n;
        }
        MSRNN_TRY(gguf_writer_set_kv(w, &kv));
    }
    return gguf_writer_set_str(w, "general.architecture", arch);
}

msrnn_status model_convert(const char *in_path, const char *arch_name, const hparams *method,
                           const char *out_path) {
    const arch_row *target = arch_find(arch_name, strlen(arch_name));
    if (!target || !strcmp(arch_name, "llama"))
        return status_fail(MSRNN_ERR_INVALID, "convert: cannot convert to '%s' (msrnn has %s)",
                           arch_name, arch_names());
    gguf_file *probe = NULL;
    MSRNN_TRY(gguf_open(in_path, &probe));
    gguf_str src_arch = {"", 0};
    msrnn_status st = gguf_get_str(probe, "general.architecture", 1, &src_arch);
    if (st == MSRNN_OK && !gguf_str_eq(src_arch, "llama"))
        st = status_fail(MSRNN_ERR_UNSUPPORTED,
                         "convert: %s is a '%.*s' model; convert reads llama models", in_path,
                         (int)(src_arch.len > 32 ? 32 : src_arch.len), src_arch.ptr);
    gguf_close(probe);
    MSRNN_TRY(st);
    msrnn_model *m = NULL; /* validates every tensor of the input as a llama model */
    MSRNN_TRY(msrnn_model_open(in_path, &m));
    hparams hp = m->hp;
    hp.segment = method->segment, hp.memory_rule = method->memory_rule;
    hp.features = method->features, hp.gn_eps = method->gn_eps;
    hp.sampler = method->sampler, hp.seed = method->seed;
    param_list pl;
    st = param_list_build(target, &hp, &pl);
    if (st != MSRNN_OK) {
        msrnn_model_close(m);
        return st;
    }
    size_t fresh = 1; /* the largest new tensor: one buffer of zeros and one of ones serve all */
    for (int i = 0; i < pl.n; i++)
        if (!gguf_find_tensor(m->file, pl.p[i].name) && pl.p[i].n > fresh) fresh = pl.p[i].n;
    float *zeros = calloc(fresh, sizeof(float)), *ones = malloc(fresh * sizeof(float)),
          *buf = malloc(fresh * sizeof(float));
    gguf_writer *w = gguf_writer_new();
    if (!zeros || !ones || !buf || !w) st = status_fail(MSRNN_ERR_NOMEM, "convert: out of memory");
    for (size_t i = 0; ones && i < fresh; i++) ones[i] = 1.0f;
    if (st == MSRNN_OK) st = copy_keys(m->file, target->name, w);
    if (st == MSRNN_OK && target->mixer->write_keys)
        st = target->mixer->write_keys(&hp, target->name, w);
    if (st == MSRNN_OK && target->ffn->write_keys)
        st = target->ffn->write_keys(&hp, target->name, w);
    for (int i = 0; st == MSRNN_OK && i < pl.n; i++) {
        const param_desc *d = &pl.p[i];
        const gguf_tensor *t = gguf_find_tensor(m->file, d->name);
        if (t) { /* bound (so checked) by msrnn_model_open: same name, same meaning */
            st = gguf_writer_add_tensor_ref(w, d->name, t->type, t->n_dims, t->ne, t->data);
            continue;
        }
        const uint64_t ne[3] = {(uint64_t)d->ne[0], (uint64_t)d->ne[1], (uint64_t)d->ne[2]};
        if (param_fill(target, &hp, &pl, i, buf)) { /* a value the part computes: copied now */
            st = gguf_writer_add_tensor(w, d->name, TYPE_F32, (uint32_t)d->n_dims, ne, buf);
            continue;
        }
        if (d->matrix || (d->init != INIT_ZEROS && d->init != INIT_ONES)) {
            st = status_fail(MSRNN_ERR_INVALID,
                             "convert: '%s' needs tensor %s, which has no fixed initial value",
                             target->name, d->name);
            break;
        }
        st = gguf_writer_add_tensor_ref(w, d->name, TYPE_F32, (uint32_t)d->n_dims, ne,
                                        d->init == INIT_ONES ? ones : zeros);
    }
    if (st == MSRNN_OK) st = gguf_writer_write(w, out_path);
    gguf_writer_free(w);
    free(zeros);
    free(ones);
    free(buf);
    param_list_free(&pl);
    msrnn_model_close(m);
    return st;
}
