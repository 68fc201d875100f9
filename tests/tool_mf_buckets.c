/* tool_mf_buckets — how often a MemoryFormer's memory layers select each table row
 * (bench/mf-buckets, issue 12 item 4; the paper's Fig. 4 expects near-uniform use).
 *
 * usage: tool_mf_buckets MODEL.gguf SHARD.bin MAX_TOKENS CTX OUT.tsv [THREADS]
 *
 * Feeds the shard's first MAX_TOKENS tokens (0: all) through the model in windows of CTX tokens (a
 * fresh session state per window, as perplexity's chunks), and counts every index memlayer_hash
 * computes (memlayer_observe). A memoryformer block hashes three times per batch, in order: the
 * Q/K/V layer, the block's first layer, its second; so call c is layer (c / 3) mod L, memory
 * layer c mod 3. Writes OUT.tsv: a header line, then "layer  which  chunk  row  count" for every
 * row of every table (which: qkv, mem1, mem2). Exit 1 with a message on any error.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "msrnn.h"
#include "nn/memlayer.h"
#include "train/shard.h"

typedef struct {
    int n_layers;
    long long calls;
    int K[3], bits[3];
    uint64_t *counts[3]; /* [layer][chunk][row] per memory layer */
    int bad;
} tally;

static void observe(void *ctx, const memlayer *L, const int32_t *idx, int n) {
    tally *t = ctx;
    const int which = (int)(t->calls % 3), layer = (int)((t->calls / 3) % t->n_layers);
    t->calls++;
    if (!t->counts[which]) {
        t->K[which] = L->K, t->bits[which] = L->bits;
        t->counts[which] = calloc((size_t)t->n_layers * L->K << L->bits, sizeof(uint64_t));
        if (!t->counts[which]) {
            t->bad = 1;
            return;
        }
    }
    if (t->K[which] != L->K || t->bits[which] != L->bits) {
        t->bad = 1;
        return;
    }
    const size_t rows = (size_t)1 << L->bits;
    uint64_t *c = t->counts[which] + (size_t)layer * L->K * rows;
    for (int i = 0; i < n; i++)
        for (int k = 0; k < L->K; k++) c[(size_t)k * rows + (size_t)idx[(size_t)i * L->K + k]]++;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr,
                "usage: tool_mf_buckets MODEL.gguf SHARD.bin MAX_TOKENS CTX OUT.tsv [THREADS]\n");
        return 2;
    }
    const long long max_tokens = atoll(argv[3]);
    const int ctx = atoi(argv[4]), threads = argc > 6 ? atoi(argv[6]) : 2;
    if (ctx < 2 || ctx > (1 << 20) || max_tokens < 0 || threads < 1) {
        fprintf(stderr, "tool_mf_buckets: bad MAX_TOKENS, CTX or THREADS\n");
        return 2;
    }
    msrnn_model *m = NULL;
    if (msrnn_model_open(argv[1], &m) != MSRNN_OK) {
        fprintf(stderr, "tool_mf_buckets: %s\n", msrnn_last_error());
        return 1;
    }
    token_shard *sh = NULL;
    if (token_shard_open(argv[2], &sh) != MSRNN_OK ||
        token_shard_check_vocab(sh, argv[1], (uint32_t)msrnn_model_get_info(m)->n_vocab, 0, 0) !=
            MSRNN_OK) {
        fprintf(stderr, "tool_mf_buckets: %s\n", msrnn_last_error());
        return 1;
    }
    uint64_t n_tok = token_shard_n_tokens(sh);
    if (max_tokens > 0 && (uint64_t)max_tokens < n_tok) n_tok = (uint64_t)max_tokens;
    tally t;
    memset(&t, 0, sizeof t);
    t.n_layers = msrnn_model_get_info(m)->n_layers;
    memlayer_observe(observe, &t);
    msrnn_session_params p = msrnn_session_default_params();
    p.n_ctx = ctx, p.n_threads = threads, p.n_batch = 512;
    msrnn_session *s = NULL;
    if (msrnn_session_open(m, &p, &s) != MSRNN_OK) {
        fprintf(stderr, "tool_mf_buckets: %s\n", msrnn_last_error());
        return 1;
    }
    int32_t *win = malloc(sizeof(int32_t) * (size_t)ctx);
    uint64_t done = 0;
    while (win && done < n_tok) {
        const int n = n_tok - done < (uint64_t)ctx ? (int)(n_tok - done) : ctx;
        token_shard_read(sh, done, n, win);
        msrnn_session_reset(s);
        if (msrnn_session_eval(s, win, n, NULL) != MSRNN_OK) {
            fprintf(stderr, "tool_mf_buckets: %s\n", msrnn_last_error());
            return 1;
        }
        done += (uint64_t)n;
    }
    token_shard_close(sh);
    memlayer_observe(NULL, NULL);
    if (t.bad || !t.counts[0] || t.calls % (3 * t.n_layers)) {
        fprintf(stderr, "tool_mf_buckets: not a memoryformer model (%lld hash calls)\n", t.calls);
        return 1;
    }
    FILE *o = fopen(argv[5], "w");
    if (!o) {
        fprintf(stderr, "tool_mf_buckets: cannot write %s\n", argv[5]);
        return 1;
    }
    fprintf(o, "# %llu tokens of %s through %s, windows of %d\n", (unsigned long long)done, argv[2],
            argv[1], ctx);
    static const char *names[3] = {"qkv", "mem1", "mem2"};
    for (int w = 0; w < 3; w++) {
        const size_t rows = (size_t)1 << t.bits[w];
        for (int l = 0; l < t.n_layers; l++)
            for (int k = 0; k < t.K[w]; k++)
                for (size_t r = 0; r < rows; r++)
                    fprintf(o, "%d\t%s\t%d\t%zu\t%llu\n", l, names[w], k, r,
                            (unsigned long long)t.counts[w][((size_t)l * t.K[w] + k) * rows + r]);
    }
    const int bad = fclose(o) != 0;
    for (int w = 0; w < 3; w++) free(t.counts[w]);
    free(win);
    msrnn_session_close(s);
    msrnn_model_close(m);
    return bad;
}
