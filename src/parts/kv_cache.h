/* kv_cache.h — softmax attention's inference state (the full KV cache and the bounded ones of
 * src/memory/), implemented in softmax.c and shared with every mixer that attends by softmax over
 * its own q, k, v (MemoryFormer's hashed attention): such a part plugs these in as its state
 * functions of part_kind and calls kv_cache_attend_seqs with its projections. */
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
/* Attend the tokens of n_seq sessions in `layer`: session i (state states[i]) has tokens
 * [seq_start[i], seq_start[i + 1]) of q (n, H·d) and k, v (n, H_kv·d) after RoPE, at absolute
 * positions pos; out (n, H·d). MSRNN_ERR_FULL, with nothing changed, when a full cache has no
 * room. Sessions decoding one token each are attended in parallel, one per thread. */
msrnn_status kv_cache_attend_seqs(void *const *states, int layer, int n_seq, const int *seq_start,
                                  const float *q, const float *k, const float *v,
                                  const int64_t *pos, float *out, int n_threads);

#endif
