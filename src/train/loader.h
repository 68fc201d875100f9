/* loader.h — the training window loader over a token shard.
 *
 * The loader cuts a shard into training windows of T + 1 consecutive tokens starting at multiples
 * of T (window i = tokens [i*T, i*T + T + 1): T inputs and their T next-token targets), and visits
 * every window once per epoch in an order shuffled by Fisher–Yates. The permutation of epoch e is a
 * pure function of (seed, e): a splitmix64 generator started at
 *   state = mix64(seed ^ mix64(e + 0x632BE59BD9B4E019))
 * (mix64 = splitmix64's output function) draws j uniform in [0, i] (rejection sampling of x %
 * (i+1)) for i = n-1 down to 1 and swaps entries i and j of the identity. So a loader's whole
 * future is given by (seed, epoch, cursor), which is what a checkpoint stores.
 *
 * Not here: document boundaries inside windows (windows cross them; BOS marks the start of each
 * document), or sampling weights.
 */
#ifndef MSRNN_TRAIN_LOADER_H
#define MSRNN_TRAIN_LOADER_H

#include <stdint.h>

#include "base/status.h"
#include "train/shard.h"

typedef struct {
    uint64_t seed, epoch, cursor; /* cursor: windows of this epoch already handed out */
} loader_state;

typedef struct data_loader data_loader;

/* A loader over s (which must outlive it; the loader does not own it) with windows of T + 1
 * tokens: n_windows = (n_tokens - 1) / T. Starts at epoch 0, cursor 0. MSRNN_ERR_INVALID if T < 1
 * or the shard has fewer than T + 1 tokens. The permutation buffer is allocated here. */
msrnn_status data_loader_open(const token_shard *s, int T, uint64_t seed, data_loader **out);
void data_loader_free(data_loader *d);

uint64_t data_loader_n_windows(const data_loader *d);

/* The next B windows, row-major B x (T + 1) into tokens; moves on to the next epoch (a fresh
 * permutation) whenever the current one is used up, also in the middle of a batch. */
void data_loader_next(data_loader *d, int B, int32_t *tokens);

loader_state data_loader_get_state(const data_loader *d);
/* Resume at st: the windows that follow equal those the loader that gave st would have given next.
 * st.seed replaces the loader's seed. MSRNN_ERR_INVALID if st.cursor > n_windows. */
msrnn_status data_loader_set_state(data_loader *d, loader_state st);

/* Window i (< n_windows) in file order, unshuffled: tokens [i*T, i*T + T + 1) (for validation). */
void data_loader_window(const data_loader *d, uint64_t i, int32_t *tokens);

#endif
