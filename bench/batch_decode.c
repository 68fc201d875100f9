/* batch_decode.c — aggregate decode speed of B sessions advanced together (msrnn_batch_eval), the
 * library-level half of bench/serve-throughput.
 *
 * usage: batch_decode MODEL THREADS STEPS MEMORY KV_SIZE B1,B2,... [f16]
 * (f16: the KV cache stored as f16, --kv-type f16.) For each B: B sessions (memory MEMORY, kv_size
 * KV_SIZE; "full": context 4096) each get a 64-token prompt (one batch), then STEPS steps in which
 * every session feeds its greedy token (one msrnn_batch_eval of B tokens). Prints one JSON line per
 * B: {"B", "tokens_per_s", "step_ms", "session_bytes"}; the best of 3 repeats of the timed steps.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "msrnn.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

#define DIE(...)                                                                                   \
    do {                                                                                           \
        fprintf(stderr, "batch_decode: " __VA_ARGS__);                                             \
        fprintf(stderr, ": %s\n", msrnn_last_error());                                             \
        return 1;                                                                                  \
    } while (0)

int main(int argc, char **argv) {
    if (argc != 7 && !(argc == 8 && !strcmp(argv[7], "f16"))) {
        fprintf(stderr, "usage: batch_decode MODEL THREADS STEPS MEMORY KV_SIZE B1,B2,... [f16]\n");
        return 2;
    }
    const int threads = atoi(argv[2]), steps = atoi(argv[3]), kv_size = atoi(argv[5]);
    msrnn_model *m;
    if (msrnn_model_open(argv[1], &m) != MSRNN_OK) DIE("open %s", argv[1]);
    const int V = msrnn_model_get_info(m)->n_vocab;
    msrnn_session_params p = msrnn_session_default_params();
    p.n_ctx = 4096, p.n_threads = threads, p.n_batch = 1;
    p.memory = argv[4], p.kv_size = kv_size, p.kv_f16 = argc == 8;
    char *list = strdup(argv[6]);
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        const int B = atoi(tok);
        if (B <= 0 || B > 4096) continue;
        msrnn_batch *b;
        if (msrnn_batch_open(m, B * 64, threads, &b) != MSRNN_OK) DIE("batch of %d", B);
        msrnn_session **ss = calloc((size_t)B, sizeof *ss);
        const int32_t **tk = calloc((size_t)B, sizeof *tk);
        int *n = calloc((size_t)B, sizeof *n);
        int32_t *prompt = malloc(64 * sizeof *prompt), *next = malloc((size_t)B * sizeof *next);
        for (int i = 0; i < 64; i++) prompt[i] = 1 + (i * 37) % (V - 1);
        for (int i = 0; i < B; i++) {
            if (msrnn_session_open(m, &p, &ss[i]) != MSRNN_OK) DIE("session %d", i);
            tk[i] = prompt, n[i] = 64;
        }
        if (msrnn_batch_eval(b, ss, tk, n, B) != MSRNN_OK) DIE("prompt");
        double best = 1e30;
        for (int rep = 0; rep < 3; rep++) {
            const double t0 = now();
            for (int s = 0; s < steps; s++) {
                for (int i = 0; i < B; i++) {
                    next[i] = argmax(msrnn_session_logits(ss[i]), V);
                    tk[i] = &next[i], n[i] = 1;
                }
                if (msrnn_batch_eval(b, ss, tk, n, B) != MSRNN_OK) DIE("step");
            }
            const double dt = now() - t0;
            if (dt < best) best = dt;
        }
        printf("{\"B\": %d, \"tokens_per_s\": %.1f, \"step_ms\": %.3f, \"session_bytes\": %zu}\n",
               B, (double)B * steps / best, best / steps * 1e3, msrnn_session_bytes(ss[0]));
        fflush(stdout);
        for (int i = 0; i < B; i++) msrnn_session_close(ss[i]);
        free(ss), free(tk), free(n), free(prompt), free(next);
        msrnn_batch_close(b);
    }
    free(list);
    msrnn_model_close(m);
    return 0;
}
