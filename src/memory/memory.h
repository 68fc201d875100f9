/* memory.h — the attention state of a session: the seam every method plugs into.
 *
 * A decoder transformer is an RNN whose state is its KV cache. A memory kind decides what that state
 * is and how a layer's queries read it: the full cache (unbounded, the topline), bounded caches that
 * evict (window, sink, H2O, TOVA), compressive memories. The block loop only calls attend(); it never
 * knows which kind runs. Each kind reports the exact bytes of its state, fixed when it is created.
 */
#ifndef MSRNN_MEMORY_MEMORY_H
#define MSRNN_MEMORY_MEMORY_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

typedef struct {
    int n_layers, n_heads, n_kv_heads, head_dim;
    int capacity;  /* entries each layer can hold */
    int kv_f16;    /* store keys/values as f16 */
    int n_threads; /* worker threads that may call into attend at once (scratch is per thread) */
} memory_shape;

typedef struct memory memory;

typedef struct {
    const char *name;
    /* Bytes of state (cache + bookkeeping + per-thread scratch) for this shape. */
    size_t (*bytes)(const memory_shape *shape);
    /* Lay the state out in buf (bytes(shape) bytes, 64-byte aligned, zeroed). */
    void (*init)(memory *m, void *buf);
    /* Forget everything. */
    void (*reset)(memory *m);
    /* One layer, n consecutive tokens at absolute positions pos[0..n): q (n, H·d) and k, v (n, H_kv·d),
     * all after RoPE; writes the attention output (n, H·d). Returns MSRNN_ERR_FULL if the state cannot
     * take n more tokens. */
    msrnn_status (*attend)(memory *m, int layer, int n, const float *q, const float *k,
                           const float *v, const int32_t *pos, float *out);
} memory_kind;

struct memory {
    const memory_kind *kind;
    memory_shape shape;
    void *state; /* the kind's own layout inside the session's buffer */
};

/* The kinds msrnn knows, by name ("full", ...); NULL if unknown. */
const memory_kind *memory_kind_find(const char *name);

extern const memory_kind memory_full;

#endif
