/* policy_sink.c — Sink ("Window+n", StreamingLLM): the first n tokens are never evicted; otherwise
 * evict the oldest entry. */
#include "memory/kv_policy.h"

int policy_oldest_unpinned(const int64_t *pos, const float *score, int n, int budget, int n_sinks) {
    (void)score, (void)budget;
    int v = -1;
    for (int i = 0; i < n; i++)
        if (pos[i] >= n_sinks && (v < 0 || pos[i] < pos[v])) v = i;
    return v; /* >= 0: the budget exceeds n_sinks (checked at setup) */
}

const struct kv_policy policy_sink = {"sink", 0, 0, policy_oldest_unpinned, NULL};
