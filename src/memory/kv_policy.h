/* kv_policy.h — an eviction rule for the softmax mixer's bounded KV cache, one short file each.
 *
 * The cache calls observe() after every token's attention with the probability rows the new query
 * gave the entries, then victim() when the layer holds one entry more than its budget. Ties are
 * broken towards the smallest position everywhere, so every implementation (and the reference in
 * tests/ref/gen_kv_ref.py) makes the same choices.
 */
#ifndef MSRNN_MEMORY_KV_POLICY_H
#define MSRNN_MEMORY_KV_POLICY_H

#include <stddef.h>
#include <stdint.h>

typedef struct kv_policy kv_policy;

struct kv_policy {
    const char *name;
    int per_head; /* one kept set per kv head (scores from that head's query group) */
    /* Update score[0..n) from probs: n_heads rows of length n (row stride ld). NULL: no scores. */
    void (*observe)(float *score, int n, const float *probs, int n_heads, size_t ld);
    /* The entry to evict among n = budget + 1 entries. */
    int (*victim)(const int64_t *pos, const float *score, int n, int budget, int n_sinks);
};

extern const struct kv_policy policy_window, policy_sink, policy_h2o, policy_tova, policy_tova_head;

/* The policy called name ("full": none, *policy = NULL); -1 when no memory has that name. */
int kv_policy_find(const char *name, const struct kv_policy **policy);
/* "full, window, ..." for messages. */
const char *kv_policy_names(void);

/* argmin of score over entries i with allowed(i), ties to the smallest position; -1 if none. */
int policy_lowest_score(const int64_t *pos, const float *score, int n, const uint8_t *excluded);

#endif
