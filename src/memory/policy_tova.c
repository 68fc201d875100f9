/* policy_tova.c — TOVA (Oren et al., 2024, "Transformers are Multi-State RNNs"): evict the entry
 * the newest query attends to least, its probability averaged over all query heads of the layer
 * (GQA: over every kv head's group). Only the last query row counts: no accumulation, no recency
 * window, no sinks. tova-head keeps a set per kv head, scored by that head's group (documented as
 * worse). */
#include "memory/kv_policy.h"

static void tova_observe(float *score, int n, const float *probs, int n_heads, size_t ld) {
    for (int i = 0; i < n; i++) {
        float s = 0;
        for (int h = 0; h < n_heads; h++) s += probs[h * ld + i];
        score[i] = s / n_heads;
    }
}

static int tova_victim(const int64_t *pos, const float *score, int n, int budget, int n_sinks) {
    (void)budget, (void)n_sinks;
    return policy_lowest_score(pos, score, n, NULL);
}

int policy_lowest_score(const int64_t *pos, const float *score, int n, const uint8_t *excluded) {
    int v = -1;
    for (int i = 0; i < n; i++) {
        if (excluded && excluded[i]) continue;
        if (v < 0 || score[i] < score[v] || (score[i] == score[v] && pos[i] < pos[v])) v = i;
    }
    return v;
}

const struct kv_policy policy_tova = {"tova", 0, tova_observe, tova_victim, NULL};
const struct kv_policy policy_tova_head = {"tova-head", 1, tova_observe, tova_victim, NULL};
