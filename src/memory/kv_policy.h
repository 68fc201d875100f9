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

#include "msrnn.h"

typedef struct kv_policy kv_policy;

/* A summary policy's columns (policy_merge.c): evicted entries are folded in instead of dropped. */
typedef struct {
    int cost;    /* budget entries one non-empty column takes */
    int moments; /* doubles per column beside the count, in units of d: 2 (Σk, Σv), 3 (+ Σk²) */
    int clusters; /* 0: one column; 1: up to S, the closest two merged when there are S + 1 */
} kv_summary;

struct kv_policy {
    const char *name;
    int per_head; /* one kept set per kv head (scores from that head's query group) */
    /* Update score[0..n) from probs: n_heads rows of length n (row stride ld). NULL: no scores. */
    void (*observe)(float *score, int n, const float *probs, int n_heads, size_t ld);
    /* The entry to evict when the layer is over budget. */
    int (*victim)(const int64_t *pos, const float *score, int n, int budget, int n_sinks);
    /* NULL: the victim is dropped; else it is folded into its kv head's summary columns. */
    const kv_summary *summary;
};

extern const struct kv_policy policy_window, policy_sink, policy_h2o, policy_tova, policy_tova_head,
    policy_merge, policy_merge_var, policy_merge_clusters;

/* Doubles of one summary column: the count, then Σk, Σv (and Σk²), d each. */
size_t summary_col_doubles(const kv_summary *sm, int d);
/* Fold one entry (k, v: rows of d, f32 or, with f16 set, f16) into a kv head's columns (room for
 * max_cols + 1); returns the new number of columns. */
int summary_fold(const kv_summary *sm, double *cols, int n_cols, int max_cols, const void *k,
                 const void *v, int d, int f16);
/* logit[c] for query q and each column (bias may be -INFINITY). */
void summary_logits(const kv_summary *sm, const double *cols, int n_cols, const float *q, int d,
                    float scale, float bias, float *logit);
/* out += Σ_c p[c] · Σv_c / n_c */
void summary_read(const kv_summary *sm, const double *cols, int n_cols, const float *p, int d,
                  float *out);

/* The policy called name ("full": none, *policy = NULL); -1 when no memory has that name. */
int kv_policy_find(const char *name, const struct kv_policy **policy);
/* "full, window, ..." for messages. */
const char *kv_policy_names(void);

/* The settings of a session's parameters with their defaults resolved, the one place they are:
 * sinks (kv_sinks 0: 4, < 0: none), clusters (kv_clusters <= 0: 4). */
int kv_params_sinks(const msrnn_session_params *p);
int kv_params_clusters(const msrnn_session_params *p);
/* Budget entries a summary policy's columns take once all are in use (0 for the others). */
int kv_policy_summary_entries(const kv_policy *policy, const msrnn_session_params *p);
/* The smallest budget the policy accepts: sink its sinks + 1; merge* its sinks, the summary's
 * entries and one recent token; the others 1; the full cache (NULL) 0. */
int kv_policy_min_size(const kv_policy *policy, const msrnn_session_params *p);

/* The oldest entry whose position is >= n_sinks (sink's and merge's victim). */
int policy_oldest_unpinned(const int64_t *pos, const float *score, int n, int budget, int n_sinks);

/* argmin of score over entries i with allowed(i), ties to the smallest position; -1 if none. */
int policy_lowest_score(const int64_t *pos, const float *score, int n, const uint8_t *excluded);

#endif
