/* policy_window.c — Window: evict the oldest entry (FIFO). Plain windows lose the first token,
 * which attention sinks on, and perplexity explodes (StreamingLLM's observation). */
#include "memory/kv_policy.h"

static int window_victim(const int64_t *pos, const float *score, int n, int budget, int n_sinks) {
    (void)score, (void)budget, (void)n_sinks;
    int v = 0;
    for (int i = 1; i < n; i++)
        if (pos[i] < pos[v]) v = i;
    return v;
}

const struct kv_policy policy_window = {"window", 0, 0, window_victim, NULL};
