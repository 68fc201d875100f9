/* policies.c — the names of the softmax mixer's memories: the full cache and one eviction policy
 * per bounded cache (each in its own policy_*.c). */
#include <string.h>

#include "memory/kv_policy.h"

#include "base/status.h"
#include "msrnn.h"

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

const char *msrnn_memory_name(int i) {
    return i >= 0 && (size_t)i < sizeof memories / sizeof *memories ? memories[i].name : NULL;
}

const char *kv_policy_names(void) {
    return "full, window, sink, h2o, tova, tova-head, merge, merge-var, merge-clusters";
}

int kv_params_sinks(const msrnn_session_params *p) {
    return p->kv_sinks == 0 ? 4 : p->kv_sinks < 0 ? 0 : p->kv_sinks;
}

int kv_params_clusters(const msrnn_session_params *p) {
    return p->kv_clusters > 0 ? p->kv_clusters : 4;
}

int kv_policy_summary_entries(const kv_policy *policy, const msrnn_session_params *p) {
    const kv_summary *sm = policy ? policy->summary : NULL;
    return sm ? sm->cost * (sm->clusters ? kv_params_clusters(p) : 1) : 0;
}

int kv_policy_min_size(const kv_policy *policy, const msrnn_session_params *p) {
    if (!policy) return 0;
    if (policy->summary) return kv_params_sinks(p) + kv_policy_summary_entries(policy, p) + 1;
    if (policy == &policy_sink) return kv_params_sinks(p) + 1;
    return 1;
}

msrnn_status msrnn_memory_settings_of(const msrnn_session_params *p, msrnn_memory_settings *out) {
    const char *name = p->memory ? p->memory : "full";
    const kv_policy *policy;
    if (kv_policy_find(name, &policy))
        return status_fail(MSRNN_ERR_INVALID, "unknown memory '%s' (%s)", name, kv_policy_names());
    out->sinks = kv_params_sinks(p);
    out->clusters = kv_params_clusters(p);
    out->min_kv_size = kv_policy_min_size(policy, p);
    return MSRNN_OK;
}
