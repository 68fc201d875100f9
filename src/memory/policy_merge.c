/* policy_merge.c — merge, msrnn's own bounded cache (METHODS.md §1), and its two variants: the
 * first n_s tokens are never evicted; the oldest other entry is not dropped but folded into its kv
 * head's summary, which every query head reads as more entries of the same softmax.
 *
 *   merge           one column per kv head (Σk, Σv, n): logit q·(Σk/n)·scale + ln n + β, value
 *                   Σv/n; it takes one entry of the budget.
 *   merge-var       also Σk²: the logit adds ½·Σ_i q_i²·var_i·scale² (the second-order term of
 *                   ln E[exp(q·k·scale)] for keys of that mean and per-dimension variance); it
 *                   takes two entries of the budget.
 *   merge-clusters  up to S columns per kv head, each one entry: an evicted token becomes a
 *                   singleton column; when there are S + 1, the two whose merge costs least —
 *                   n_i·n_j/(n_i+n_j)·|μ_i − μ_j|² over keys, the first such pair (i < j) in
 *                   row-major order — are merged into column i and column j is removed (the later
 *                   ones move down, so columns stay in the order they were made).
 *
 * A column is 1 + moments·d doubles: the count n (exact in a double up to 2^53), Σk, Σv (and Σk²).
 * The softmax mixer (src/parts/softmax.c) holds the columns and calls these. */
#include <math.h>
#include <string.h>

#include "memory/kv_policy.h"
#include "tensor/types.h"

size_t summary_col_doubles(const kv_summary *sm, int d) { return 1 + (size_t)sm->moments * d; }

static float elem(const void *row, int i, int f16) {
    return f16 ? fp16_to_fp32(((const uint16_t *)row)[i]) : ((const float *)row)[i];
}

static void add_entry(const kv_summary *sm, double *col, const void *k, const void *v, int d,
                      int f16) {
    col[0] += 1;
    double *sk = col + 1, *sv = sk + d, *sk2 = sv + d;
    for (int i = 0; i < d; i++) {
        const double ki = elem(k, i, f16);
        sk[i] += ki;
        sv[i] += elem(v, i, f16);
        if (sm->moments > 2) sk2[i] += ki * ki;
    }
}

/* n_i·n_j/(n_i+n_j)·|μ_i − μ_j|² over the keys */
static double pair_cost(const double *a, const double *b, int d) {
    const double na = a[0], nb = b[0];
    double dist = 0;
    for (int i = 0; i < d; i++) {
        const double diff = a[1 + i] / na - b[1 + i] / nb;
        dist += diff * diff;
    }
    return na * nb / (na + nb) * dist;
}

int summary_fold(const kv_summary *sm, double *cols, int n_cols, int max_cols, const void *k,
                 const void *v, int d, int f16) {
    const size_t cd = summary_col_doubles(sm, d);
    if (!sm->clusters) {
        add_entry(sm, cols, k, v, d, f16);
        return 1;
    }
    double *fresh = cols + (size_t)n_cols * cd; /* a singleton column after the others */
    memset(fresh, 0, cd * sizeof *fresh);
    add_entry(sm, fresh, k, v, d, f16);
    if (++n_cols <= max_cols) return n_cols;
    int bi = 0, bj = 1;
    double best = INFINITY;
    for (int i = 0; i < n_cols; i++)
        for (int j = i + 1; j < n_cols; j++) {
            const double c = pair_cost(cols + (size_t)i * cd, cols + (size_t)j * cd, d);
            if (c < best) best = c, bi = i, bj = j;
        }
    double *a = cols + (size_t)bi * cd, *b = cols + (size_t)bj * cd;
    for (size_t x = 0; x < cd; x++) a[x] += b[x];
    memmove(b, b + cd, (size_t)(n_cols - 1 - bj) * cd * sizeof *b);
    return n_cols - 1;
}

void summary_logits(const kv_summary *sm, const double *cols, int n_cols, const float *q, int d,
                    float scale, float bias, float *logit) {
    const size_t cd = summary_col_doubles(sm, d);
    for (int c = 0; c < n_cols; c++) {
        const double *col = cols + (size_t)c * cd, n = col[0], *sk = col + 1, *sk2 = sk + 2 * d;
        double dot = 0, var = 0;
        for (int i = 0; i < d; i++) dot += (double)q[i] * sk[i];
        if (sm->moments > 2)
            for (int i = 0; i < d; i++) {
                const double mu = sk[i] / n, vi = sk2[i] / n - mu * mu;
                var += (double)q[i] * q[i] * (vi > 0 ? vi : 0);
            }
        logit[c] = (float)(dot / n * scale + 0.5 * var * scale * scale + log(n) + bias);
    }
}

void summary_read(const kv_summary *sm, const double *cols, int n_cols, const float *p, int d,
                  float *out) {
    const size_t cd = summary_col_doubles(sm, d);
    for (int c = 0; c < n_cols; c++) {
        const double *col = cols + (size_t)c * cd, *sv = col + 1 + d, w = (double)p[c] / col[0];
        for (int i = 0; i < d; i++) out[i] += (float)(w * sv[i]);
    }
}

static const kv_summary mean = {1, 2, 0}, mean_var = {2, 3, 0}, clusters = {1, 2, 1};

const struct kv_policy policy_merge = {"merge", 0, 0, policy_oldest_unpinned, &mean};
const struct kv_policy policy_merge_var = {"merge-var", 0, 0, policy_oldest_unpinned, &mean_var};
const struct kv_policy policy_merge_clusters = {"merge-clusters", 0, 0, policy_oldest_unpinned,
                                                &clusters};
