/* policy_h2o.c — H2O (Zhang et al., 2023), layer-wise: an entry's score is the attention
 * probability it has received, summed over every query head and accumulated over every step since
 * it entered. The budget/2 most recent entries are protected; among the rest, the lowest score is
 * evicted. */
#include "memory/kv_policy.h"

static void h2o_observe(float *score, int n, const float *probs, int n_heads, size_t ld) {
    for (int h = 0; h < n_heads; h++)
        for (int i = 0; i < n; i++) score[i] += probs[h * ld + i];
}

static int h2o_victim(const int64_t *pos, const float *score, int n, int budget, int n_sinks) {
    (void)n_sinks;
    /* The budget/2 newest tokens were protected since they arrived, so they are all still held:
     * they are exactly the positions above newest - budget/2. */
    int64_t newest = pos[0];
    for (int i = 1; i < n; i++) newest = pos[i] > newest ? pos[i] : newest;
    const int64_t first_recent = newest - budget / 2 + 1;
    int v = -1;
    for (int i = 0; i < n; i++) {
        if (pos[i] >= first_recent) continue;
        if (v < 0 || score[i] < score[v] || (score[i] == score[v] && pos[i] < pos[v])) v = i;
    }
    return v;
}

const struct kv_policy policy_h2o = {"h2o", 0, h2o_observe, h2o_victim, NULL};
