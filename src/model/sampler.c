/* sampler.c — turn logits into the next token: greedy, or repetition penalty → top-k → temperature
 * → top-p → min-p → a seeded draw. The candidate buffer is sized at open; sampling allocates
 * nothing. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "msrnn.h"

typedef struct {
    float logit;
    int32_t id;
} candidate;

struct msrnn_sampler {
    msrnn_sampler_params p;
    int n_vocab;
    uint64_t rng;
    float *logits;    /* (n_vocab) working copy */
    candidate *cands; /* (n_vocab) */
};

msrnn_sampler_params msrnn_sampler_default_params(void) {
    msrnn_sampler_params p = {0.8f, 40, 0.95f, 0.05f, 1.0f, 64, 0};
    return p;
}

msrnn_status msrnn_sampler_open(const msrnn_sampler_params *p, int n_vocab, msrnn_sampler **out) {
    *out = NULL;
    if (n_vocab <= 0 || n_vocab > (1 << 24))
        return status_fail(MSRNN_ERR_INVALID, "sampler: vocabulary size %d", n_vocab);
    if (!(p->temperature == p->temperature) || !(p->top_p >= 0) || !(p->min_p <= 1) ||
        !(p->repeat_penalty > 0) || p->repeat_last_n < 0)
        return status_fail(MSRNN_ERR_INVALID,
                           "sampler: temperature %g, top-p %g, min-p %g, "
                           "repeat penalty %g (must be > 0), repeat-last-n %d (must be >= 0)",
                           p->temperature, p->top_p, p->min_p, p->repeat_penalty, p->repeat_last_n);
    msrnn_sampler *s = calloc(1, sizeof *s);
    if (!s) return status_fail(MSRNN_ERR_NOMEM, "sampler: out of memory");
    s->logits = malloc((size_t)n_vocab * sizeof *s->logits);
    s->cands = malloc((size_t)n_vocab * sizeof *s->cands);
    if (!s->logits || !s->cands) {
        msrnn_sampler_close(s);
        return status_fail(MSRNN_ERR_NOMEM, "sampler: out of memory");
    }
    s->p = *p;
    s->n_vocab = n_vocab;
    s->rng = p->seed ^ 0x9e3779b97f4a7c15ull;
    *out = s;
    return MSRNN_OK;
}

void msrnn_sampler_close(msrnn_sampler *s) {
    if (!s) return;
    free(s->logits);
    free(s->cands);
    free(s);
}

/* splitmix64: a small, well-mixed generator; same seed, same sequence on every machine. */
static uint64_t next_u64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The candidates' one order, used by every step: larger logit first, NaN after every number, ties
 * (NaN with NaN included) by lower id. A total order, so qsort and the top-k heap agree, and the
 * result does not depend on where NaNs sit in the vocabulary. */
static int rank_cmp(candidate x, candidate y) {
    const int xn = isnan(x.logit), yn = isnan(y.logit);
    if (xn != yn) return xn ? 1 : -1;
    if (!xn && x.logit != y.logit) return x.logit < y.logit ? 1 : -1;
    return (x.id > y.id) - (x.id < y.id);
}

static int by_rank(const void *a, const void *b) {
    return rank_cmp(*(const candidate *)a, *(const candidate *)b);
}

/* a ranks below b */
static int ranks_below(candidate a, candidate b) { return rank_cmp(a, b) > 0; }

/* Restore the min-heap c[0..k) below index j. */
static void sift_down(candidate *c, int k, int j) {
    for (;;) {
        int l = 2 * j + 1, r = l + 1, m = j;
        if (l < k && ranks_below(c[l], c[m])) m = l;
        if (r < k && ranks_below(c[r], c[m])) m = r;
        if (m == j) return;
        candidate t = c[j];
        c[j] = c[m];
        c[m] = t;
        j = m;
    }
}

/* Keep the k largest candidates in cands[0..k) (unordered): a min-heap of size k. */
static void select_top_k(candidate *c, int n, int k) {
    for (int i = k / 2 - 1; i >= 0; i--) sift_down(c, k, i);
    for (int i = k; i < n; i++)
        if (ranks_below(c[0], c[i])) {
            c[0] = c[i];
            sift_down(c, k, 0);
        }
}

int32_t msrnn_sample(msrnn_sampler *s, const float *logits, const int32_t *history, int n_history) {
    const msrnn_sampler_params *p = &s->p;
    float *lg = s->logits;
    memcpy(lg, logits, (size_t)s->n_vocab * sizeof *lg);
    if (p->repeat_penalty != 1.0f && history) {
        int from = n_history > p->repeat_last_n ? n_history - p->repeat_last_n : 0;
        for (int i = from; i < n_history; i++) {
            int32_t id = history[i];
            if (id < 0 || id >= s->n_vocab) continue;
            /* llama.cpp's rule; a token repeated in the window is penalised once */
            int seen = 0;
            for (int j = from; j < i && !seen; j++) seen = history[j] == id;
            if (!seen)
                lg[id] = lg[id] > 0 ? lg[id] / p->repeat_penalty : lg[id] * p->repeat_penalty;
        }
    }
    if (p->temperature <= 0) { /* the first in rank order: the argmax, NaN never beating a number */
        int32_t best = -1;
        for (int i = 0; i < s->n_vocab; i++)
            if (!isnan(lg[i]) && (best < 0 || lg[i] > lg[best])) best = i;
        return best < 0 ? 0 : best; /* all NaN: the lowest id, as the rank order says */
    }
    candidate *c = s->cands;
    int n = s->n_vocab;
    for (int i = 0; i < n; i++) c[i] = (candidate){lg[i], i};
    if (p->top_k > 0 && p->top_k < n) {
        select_top_k(c, n, p->top_k);
        n = p->top_k;
    }
    if (p->top_p >= 1.0f && p->min_p <= 0) { /* no cut that needs the order: draw unsorted */
        float max = -INFINITY;
        int any_nan = 0;
        for (int i = 0; i < n; i++) {
            any_nan |= isnan(c[i].logit);
            if (c[i].logit > max) max = c[i].logit;
        }
        if (!any_nan && max > -INFINITY) {
            double sum = 0;
            for (int i = 0; i < n; i++)
                sum += c[i].logit = expf((c[i].logit - max) / p->temperature);
            const double r = (double)(next_u64(&s->rng) >> 11) * 0x1.0p-53 * sum;
            double cum = 0;
            for (int i = 0; i < n; i++) {
                cum += c[i].logit;
                if (r < cum) return c[i].id;
            }
            for (int i = n - 1; i >= 0; i--) /* rounding left r at the very end */
                if (c[i].logit > 0) return c[i].id;
        }
    }
    qsort(c, (size_t)n, sizeof *c, by_rank);
    while (n > 1 && isnan(c[n - 1].logit)) n--; /* NaNs are last: never drawn beside a number */
    /* softmax at temperature; c[i].logit becomes a probability */
    const float max = c[0].logit;
    double sum = 0;
    for (int i = 0; i < n; i++) sum += c[i].logit = expf((c[i].logit - max) / p->temperature);
    for (int i = 0; i < n; i++) c[i].logit = (float)(c[i].logit / sum);
    if (p->top_p < 1.0f) {
        double cum = 0;
        for (int i = 0; i < n; i++) {
            cum += c[i].logit;
            if (cum >= p->top_p) {
                n = i + 1;
                break;
            }
        }
    }
    if (p->min_p > 0) {
        const float floor = p->min_p * c[0].logit;
        int keep = 1;
        while (keep < n && c[keep].logit >= floor) keep++;
        n = keep;
    }
    double total = 0;
    for (int i = 0; i < n; i++) total += c[i].logit;
    double r = (double)(next_u64(&s->rng) >> 11) * 0x1.0p-53 * total, cum = 0;
    for (int i = 0; i < n; i++) {
        cum += c[i].logit;
        if (r < cum) return c[i].id;
    }
    return c[n - 1].id;
}
