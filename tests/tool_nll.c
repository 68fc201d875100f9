/* tool_nll.c — per-token negative log-likelihood of a token stream, through the public API only.
 *
 * Usage: tool_nll MODEL.gguf IDS.bin CHUNK OUT.bin
 *   IDS.bin: int32 little-endian ids, cut into consecutive chunks of CHUNK ids (the last may be
 *   shorter); each chunk is evaluated from an empty session (it should start with BOS).
 *   OUT.bin: float64 little-endian, −log p(ids[t] | chunk's ids before t) for every position
 *   t ≥ 1 of every chunk, in order (so n_ids − n_chunks values).
 * Prints the token count, mean NLL, perplexity and time on stdout. Used by
 * tests/test_slow_trained_nll.py; it is not a perplexity tool for users (see the CLI for that).
 */
#include "msrnn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* Tokens evaluated per call: bounds the logits buffer to PIECE × n_vocab floats. */
#define PIECE 512

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* −log softmax(logits)[target], in double. */
static double nll_of(const float *logits, int n_vocab, int target) {
    double mx = logits[0];
    for (int i = 1; i < n_vocab; i++) mx = fmax(mx, (double)logits[i]);
    double sum = 0;
    for (int i = 0; i < n_vocab; i++) sum += exp((double)logits[i] - mx);
    return mx + log(sum) - (double)logits[target];
}

static int32_t *read_ids(const char *path, long *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    int32_t *ids = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long bytes = ftell(f);
        *n = bytes / (long)sizeof(int32_t);
        ids = bytes > 0 && bytes % (long)sizeof(int32_t) == 0 ? malloc((size_t)bytes) : NULL;
        if (ids && (fseek(f, 0, SEEK_SET) != 0 ||
                    fread(ids, sizeof(int32_t), (size_t)*n, f) != (size_t)*n)) {
            free(ids);
            ids = NULL;
        }
    }
    fclose(f);
    return ids;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s MODEL.gguf IDS.bin CHUNK OUT.bin\n", argv[0]);
        return 2;
    }
    const int chunk = atoi(argv[3]);
    long n_ids = 0;
    int32_t *ids = read_ids(argv[2], &n_ids);
    if (!ids || chunk < 2) {
        fprintf(stderr, "%s: cannot read int32 ids, or chunk %s < 2\n", argv[2], argv[3]);
        free(ids);
        return 1;
    }
    msrnn_model *m = NULL;
    msrnn_status st = msrnn_model_open(argv[1], &m);
    if (st != MSRNN_OK) {
        fprintf(stderr, "msrnn_model_open: %s: %s\n", msrnn_status_name(st), msrnn_last_error());
        free(ids);
        return 1;
    }
    const int n_vocab = msrnn_model_get_info(m)->n_vocab;
    msrnn_session_params p = msrnn_session_default_params();
    p.n_ctx = chunk;
    msrnn_session *s = NULL;
    st = msrnn_session_open(m, &p, &s);
    float *logits = malloc(sizeof(float) * (size_t)PIECE * (size_t)n_vocab);
    FILE *out = fopen(argv[4], "wb");
    int rc = 0;
    if (st != MSRNN_OK || !logits || !out) {
        fprintf(stderr, "setup failed: %s %s\n", msrnn_status_name(st), msrnn_last_error());
        rc = 1;
    }
    double total = 0, t0 = now();
    long n_scored = 0;
    for (long c0 = 0; rc == 0 && c0 < n_ids; c0 += chunk) {
        const long len = n_ids - c0 < chunk ? n_ids - c0 : chunk;
        msrnn_session_reset(s);
        for (long i = 0; rc == 0 && i < len; i += PIECE) {
            const int n = (int)(len - i < PIECE ? len - i : PIECE);
            st = msrnn_session_eval(s, ids + c0 + i, n, logits);
            if (st != MSRNN_OK) {
                fprintf(stderr, "eval at id %ld: %s: %s\n", c0 + i, msrnn_status_name(st),
                        msrnn_last_error());
                rc = 1;
                break;
            }
            /* Row j (position i + j) predicts the id at position i + j + 1 of the chunk. */
            for (int j = 0; j < n && i + j + 1 < len; j++) {
                const int32_t target = ids[c0 + i + j + 1];
                if (target < 0 || target >= n_vocab) {
                    fprintf(stderr, "id %d out of range at %ld\n", target, c0 + i + j + 1);
                    rc = 1;
                    break;
                }
                double v = nll_of(logits + (size_t)j * (size_t)n_vocab, n_vocab, target);
                if (fwrite(&v, sizeof v, 1, out) != 1) rc = 1;
                total += v;
                n_scored++;
            }
        }
    }
    if (out && fclose(out) != 0) rc = 1;
    if (rc == 0)
        printf("tool_nll: %ld tokens scored in %ld chunks of <= %d, mean NLL %.6f, ppl %.4f, "
               "%.1f s (%.0f tokens/s)\n",
               n_scored, (n_ids + chunk - 1) / chunk, chunk, total / (double)n_scored,
               exp(total / (double)n_scored), now() - t0, (double)n_ids / (now() - t0));
    free(logits);
    msrnn_session_close(s);
    msrnn_model_close(m);
    free(ids);
    return rc;
}
