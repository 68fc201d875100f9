/* fuzz_gguf.c — libFuzzer target for the GGUF reader.
 *
 * Any input must either be rejected with a status and a message, or open into a file whose every
 * key/value (nested arrays included) and every byte of tensor data can be read without leaving the
 * input or the reader's own storage (ASan checks the reads). A file that opens is also looked up by
 * every key and tensor name, and copied through the writer's set_kv.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/gguf.h"

static uint64_t sink;

static void touch(const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) sink = sink * 31 + b[i];
}

static void walk_value(const gguf_value *v) {
    static const size_t each[GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    switch (v->type) {
    case GGUF_TYPE_STRING: touch(v->str.ptr, (size_t)v->str.len); break;
    case GGUF_TYPE_ARRAY:
        if (v->arr.type == GGUF_TYPE_STRING) {
            const gguf_str *s = v->arr.data;
            for (uint64_t i = 0; i < v->arr.n; i++) touch(s[i].ptr, (size_t)s[i].len);
        } else if (v->arr.type == GGUF_TYPE_ARRAY) {
            const gguf_value *a = v->arr.data;
            for (uint64_t i = 0; i < v->arr.n; i++) walk_value(&a[i]);
        } else {
            touch(v->arr.data, (size_t)v->arr.n * each[v->arr.type]);
        }
        break;
    default: touch(&v->u64, sizeof v->u64); break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gguf_file *f;
    if (gguf_open_memory(data, size, &f) != MSRNN_OK) {
        if (msrnn_last_error()[0] == 0) abort(); /* every failure says why */
        return 0;
    }
    gguf_writer *w = gguf_writer_new();
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const gguf_kv *kv = &f->kv[i];
        touch(kv->key.ptr, (size_t)kv->key.len);
        walk_value(&kv->value);
        if (w && gguf_writer_set_kv(w, kv) != MSRNN_OK && !memchr(kv->key.ptr, 0, kv->key.len))
            abort(); /* whatever the reader accepts, the writer can copy */
        char *key = strndup(kv->key.ptr, (size_t)kv->key.len);
        if (key && !memchr(kv->key.ptr, 0, kv->key.len) && gguf_find_kv(f, key) != kv) abort();
        free(key);
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        touch(t->name.ptr, (size_t)t->name.len);
        touch(t->data, (size_t)t->n_bytes);
        if ((const uint8_t *)t->data + t->n_bytes > data + size) abort();
        if (type_row_bytes(t->type, t->ne[0]) * (t->n_elements / t->ne[0]) != t->n_bytes) abort();
        char *name = strndup(t->name.ptr, (size_t)t->name.len);
        if (name && !memchr(t->name.ptr, 0, t->name.len) && gguf_find_tensor(f, name) != t) abort();
        free(name);
    }
    gguf_writer_free(w);
    gguf_close(f);
    return 0;
}
