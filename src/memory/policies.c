/* policies.c — the names of the softmax mixer's memories: the full cache and one eviction policy
 * per bounded cache (each in its own policy_*.c). */
#include <string.h>

#include "memory/kv_policy.h"

static const struct {
    const char *name;
    const kv_policy *policy;
} memories[] = {{"full", NULL},
                {"window", &policy_window},
                {"sink", &policy_sink},
                {"h2o", &policy_h2o},
                {"tova", &policy_tova},
                {"tova-head", &policy_tova_head},
                {"merge", &policy_merge},
                {"merge-var", &policy_merge_var},
                {"merge-clusters", &policy_merge_clusters}};

int kv_policy_find(const char *name, const kv_policy **policy) {
    for (size_t i = 0; i < sizeof memories / sizeof *memories; i++)
        if (!strcmp(name, memories[i].name)) {
            *policy = memories[i].policy;
            return 0;
        }
    return -1;
}

const char *kv_policy_names(void) {
    return "full, window, sink, h2o, tova, tova-head, merge, merge-var, merge-clusters";
}
