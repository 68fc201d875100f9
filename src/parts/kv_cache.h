/* kv_cache.h — softmax attention's inference state (the full KV cache and the bounded ones of
 * src/memory/), implemented in softmax.c and shared with every mixer that attends by softmax over
 * its own q, k, v (MemoryFormer's hashed attention): such a part plugs these in as its state
 * functions of part_kind and calls kv_cache_attend with its projections. */
#ifndef MSRNN_PARTS_KV_CACHE_H
#define MSRNN_PARTS_KV_CACHE_H

#include "parts/part.h"

msrnn_status kv_cache_check(const hparams *hp, const msrnn_session_params *p);
size_t kv_cache_state_bytes(const hparams *hp, const msrnn_session_params *p);
void kv_cache_state_init(void *state, const hparams *hp, const msrnn_session_params *p);
void kv_cache_state_reset(void *state);
int kv_cache_bounded(const void *state);
size_t kv_cache_used_bytes(const void *state);
int kv_cache_kept(const void *state, int layer, int head, int64_t *pos, float *score, int cap);
void kv_cache_state_data(const void *state, size_t *offset, size_t *bytes);
int kv_cache_summary(const void *state, int layer, int head, int64_t *merged, int64_t *counts,
                     int cap);
/* Attend n tokens of one session in `layer`: q (n, H·d) and k, v (n, H_kv·d) after RoPE, at
 * absolute positions pos; out (n, H·d). MSRNN_ERR_FULL when the full cache has no room. */
msrnn_status kv_cache_attend(void *state, int layer, int n, const float *q, const float *k,
                             const float *v, const int64_t *pos, float *out);

#endif
