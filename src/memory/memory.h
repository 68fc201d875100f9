/* memory.h — the attention state of a session: the seam every method plugs into.
 *
 * A decoder transformer is an RNN whose state is its KV cache. A memory kind decides what that
 * state is and how a layer's queries read it: the full cache (unbounded, the topline), bounded
 * caches that evict (window, sink, H2O, TOVA), compressive memories. The block loop only calls
 * attend(); it never knows which kind runs. Each kind reports the bytes its state holds.
 */
#ifndef MSRNN_MEMORY_MEMORY_H
#define MSRNN_MEMORY_MEMORY_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

typedef struct kv_policy kv_policy;

typedef struct {
    int n_layers, n_heads, n_kv_heads, head_dim;
    int n_ctx;             /* longest sequence a session accepts */
    int kv_size;           /* bounded memories: entries kept per layer */
    int kv_sinks;          /* sink: positions never evicted */
    int kv_f16;            /* store keys/values as f16 */
    int batched_attention; /* full memory: sgemm attention for prompt batches */
    int n_threads;         /* worker threads that may run inside attend (scratch is per thread) */
} memory_shape;

typedef struct memory memory;

typedef struct {
    const char *name;
    /* Bytes of state (cache + bookkeeping + scratch) for this shape, all allocated up front. */
    size_t (*bytes)(const memory *m);
    /* Lay the state out in buf (bytes() bytes, 64-byte aligned, zeroed). */
    void (*init)(memory *m, void *buf);
    /* Forget everything. */
    void (*reset)(memory *m);
    /* One layer, n consecutive tokens at absolute positions pos[0..n): q (n, H·d) and k, v (n,
     * H_kv·d), all after RoPE; writes the attention output (n, H·d). */
    msrnn_status (*attend)(memory *m, int layer, int n, const float *q, const float *k,
                           const float *v, const int32_t *pos, float *out);
    /* Entries held by layer (kv head `head` for per-head policies, else -1): positions ascending
     * and their eviction scores; returns the count. */
    int (*kept)(const memory *m, int layer, int head, int32_t *pos, float *score, int cap);
    /* Bytes of the state that hold information now (grows with tokens only while unbounded). */
    size_t (*used_bytes)(const memory *m);
} memory_kind;

struct memory {
    const memory_kind *kind;
    const kv_policy *policy; /* the eviction rule of the KV-cache kinds (NULL: keep everything) */
    memory_shape shape;
    void *state; /* the kind's own layout inside the session's buffer */
};

/* Set up m for the memory called `name` ("full", "window", "sink", "h2o", "tova", "tova-head"),
 * checking the shape's budget; MSRNN_ERR_INVALID naming the problem otherwise. */
msrnn_status memory_setup(memory *m, const char *name, const memory_shape *shape);

#endif
