/* loader.c — the shuffling window loader (see loader.h): splitmix64 + Fisher–Yates per epoch. */
#include "train/loader.h"

#include <inttypes.h>
#include <stdlib.h>

struct data_loader {
    const token_shard *s; /* not owned */
    int T;
    uint64_t n_windows;
    uint64_t seed, epoch, cursor;
    uint64_t *perm; /* (n_windows) window order of the current epoch */
};

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t splitmix64(uint64_t *state) { return mix64(*state += 0x9E3779B97F4A7C15ull); }

/* Uniform in [0, bound): reject the draws below 2^64 mod bound, so that every residue is equally
 * likely. */
static uint64_t uniform_below(uint64_t *state, uint64_t bound) {
    uint64_t threshold = (0 - bound) % bound, r;
    do r = splitmix64(state);
    while (r < threshold);
    return r % bound;
}

/* The permutation of epoch d->epoch: Fisher–Yates over the identity. */
static void shuffle(data_loader *d) {
    uint64_t state = mix64(d->seed ^ mix64(d->epoch + 0x632BE59BD9B4E019ull));
    for (uint64_t i = 0; i < d->n_windows; i++) d->perm[i] = i;
    for (uint64_t i = d->n_windows; i-- > 1;) {
        uint64_t j = uniform_below(&state, i + 1), t = d->perm[i];
        d->perm[i] = d->perm[j];
        d->perm[j] = t;
    }
}

msrnn_status data_loader_open(const token_shard *s, int T, uint64_t seed, data_loader **out) {
    *out = NULL;
    if (T < 1)
        return status_fail(MSRNN_ERR_INVALID, "%s: window length T = %d, expected at least 1",
                           token_shard_path(s), T);
    uint64_t n = token_shard_n_tokens(s);
    if (n < (uint64_t)T + 1)
        return status_fail(MSRNN_ERR_INVALID,
                           "%s: %" PRIu64
                           " tokens are fewer than one training window of T + 1 = %" PRIu64,
                           token_shard_path(s), n, (uint64_t)T + 1);
    uint64_t n_windows = (n - 1) / (uint64_t)T;
    data_loader *d = calloc(1, sizeof *d);
    uint64_t *perm = n_windows <= SIZE_MAX / sizeof *perm ? malloc(n_windows * sizeof *perm) : NULL;
    if (!d || !perm) {
        free(d), free(perm);
        return status_fail(MSRNN_ERR_NOMEM, "%s: out of memory for %" PRIu64 " windows",
                           token_shard_path(s), n_windows);
    }
    *d = (data_loader){s, T, n_windows, seed, 0, 0, perm};
    shuffle(d);
    *out = d;
    return MSRNN_OK;
}

void data_loader_free(data_loader *d) {
    if (!d) return;
    free(d->perm);
    free(d);
}

uint64_t data_loader_n_windows(const data_loader *d) { return d->n_windows; }

void data_loader_window(const data_loader *d, uint64_t i, int32_t *tokens) {
    token_shard_read(d->s, i * (uint64_t)d->T, d->T + 1, tokens);
}

void data_loader_next(data_loader *d, int B, int32_t *tokens) {
    for (int b = 0; b < B; b++) {
        if (d->cursor == d->n_windows) { /* epoch done: the next one's order */
            d->epoch++;
            d->cursor = 0;
            shuffle(d);
        }
        data_loader_window(d, d->perm[d->cursor++], tokens + (size_t)b * (size_t)(d->T + 1));
    }
}

loader_state data_loader_get_state(const data_loader *d) {
    return (loader_state){d->seed, d->epoch, d->cursor};
}

msrnn_status data_loader_set_state(data_loader *d, loader_state st) {
    if (st.cursor > d->n_windows)
        return status_fail(MSRNN_ERR_INVALID,
                           "%s: loader cursor %" PRIu64 " is beyond the %" PRIu64
                           " windows of an epoch (T = %d)",
                           token_shard_path(d->s), st.cursor, d->n_windows, d->T);
    int same_order = st.seed == d->seed && st.epoch == d->epoch;
    d->seed = st.seed, d->epoch = st.epoch, d->cursor = st.cursor;
    if (!same_order) shuffle(d);
    return MSRNN_OK;
}
