/* memlayer_bw.c — MemoryFormer's memory layers alone, at decode (one token per call) and at prefill
 * (a batch per call), against the machine's read bandwidth (issue 12, "Fast": decode streams table
 * rows at >= 60% of bench/membw's bandwidth; prefill >= 2x the decode rate per token).
 *
 * The tables of a whole model of msrnn's default shape (6 layers, D 256, τ 8, τ₂ 10: per layer the
 * Q/K/V table [768, 256, 32], the block's [320, 256, 32] and [256, 1024, 32]; 415 MB in f32, far
 * past any cache), random values; inputs random normal. One "token" runs the 18 memory layers in
 * model order (hash, then gather); the LayerNorm and attention between them are not here. Prints
 * one JSON object: table bytes read per token (K rows of every table), decode tokens/s and GB/s,
 * prefill tokens/s and its ratio to decode. f16 tables with -f16.
 *
 * usage: memlayer_bw [-t threads] [-n decode tokens] [-b prefill batch] [-f16]
 * build: gcc -O2 -mavx2 -mfma -mf16c -fopenmp -Isrc bench/memlayer_bw.c src/nn/memlayer.c \
 *            src/tensor/types.c -lm -o memlayer_bw
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn/memlayer.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rng = 88172645463325252ull;
static double uniform(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (rng >> 11) * 0x1.0p-53;
}
static float normal(void) {
    return (float)(sqrt(-2 * log(uniform() + 1e-300)) * cos(6.283185307179586 * uniform()));
}

enum { LAYERS = 6, D = 256, TAU = 8, TAU2 = 10, K = D / TAU, F = K * TAU2, N_TABLES = 3 * LAYERS };

int main(int argc, char **argv) {
    int threads = 2, n_dec = 2000, batch = 512, f16 = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-t") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-n") && i + 1 < argc)
            n_dec = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-b") && i + 1 < argc)
            batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-f16"))
            f16 = 1;
        else {
            fprintf(stderr,
                    "usage: memlayer_bw [-t threads] [-n decode tokens] [-b batch] [-f16]\n");
            return 2;
        }
    }
    memlayer L[N_TABLES];
    void *T[N_TABLES];
    size_t bytes_per_token = 0, total = 0;
    for (int l = 0; l < LAYERS; l++) {
        const memlayer q = {TAU, K, 3 * D, MEM_WEIGHT_PAPER, 1.0f},
                       m1 = {TAU, K, F, MEM_WEIGHT_PAPER, 1.0f},
                       m2 = {TAU2, K, D, MEM_WEIGHT_PAPER, 1.0f};
        L[3 * l] = q, L[3 * l + 1] = m1, L[3 * l + 2] = m2;
    }
    const size_t elem = f16 ? 2 : 4;
    for (int i = 0; i < N_TABLES; i++) {
        const size_t n = memlayer_table_elems(&L[i]);
        T[i] = malloc(n * elem);
        if (!T[i]) return 1;
        for (size_t j = 0; j < n; j++) {
            const float v = 0.02f * normal();
            if (f16)
                ((uint16_t *)T[i])[j] = fp32_to_fp16(v);
            else
                ((float *)T[i])[j] = v;
        }
        bytes_per_token += (size_t)L[i].K * L[i].out * elem;
        total += n * elem;
    }
    const int nmax = batch > 1 ? batch : 1;
    float *x = malloc(sizeof(float) * (size_t)nmax * 3 * D),
          *y = malloc(sizeof(float) * (size_t)nmax * 3 * D);
    float *w = malloc(sizeof(float) * (size_t)nmax * K);
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)nmax * K);
    for (size_t i = 0; i < (size_t)nmax * 3 * D; i++) x[i] = normal();
    const tensor_type type = f16 ? TYPE_F16 : TYPE_F32;
    double sink = 0;
    /* decode: one token per call; the input of each call shifted so that the rows differ */
    double best_dec = 0;
    for (int rep = 0; rep < 3; rep++) {
        const double t0 = now();
        for (int t = 0; t < n_dec; t++) {
            const float *xt = x + (size_t)(t % nmax) * 3 * D;
            for (int i = 0; i < N_TABLES; i++) {
                memlayer_hash(&L[i], xt, 1, idx, w, threads);
                memlayer_gather(&L[i], T[i], type, NULL, idx, w, 1, y, threads);
                sink += y[0];
            }
        }
        const double r = n_dec / (now() - t0);
        if (r > best_dec) best_dec = r;
    }
    double best_pre = 0;
    for (int rep = 0; rep < 3; rep++) {
        const int calls = 8;
        const double t0 = now();
        for (int c = 0; c < calls; c++)
            for (int i = 0; i < N_TABLES; i++) {
                memlayer_hash(&L[i], x, batch, idx, w, threads);
                memlayer_gather(&L[i], T[i], type, NULL, idx, w, batch, y, threads);
                sink += y[0];
            }
        const double r = (double)calls * batch / (now() - t0);
        if (r > best_pre) best_pre = r;
    }
    printf(
        "{\"threads\": %d, \"tables_bytes\": %zu, \"f16\": %d, \"table_bytes_per_token\": %zu, "
        "\"decode_tps\": %.1f, \"decode_gbs\": %.2f, \"prefill_batch\": %d, \"prefill_tps\": %.1f, "
        "\"prefill_over_decode\": %.2f, \"sink\": %g}\n",
        threads, total, f16, bytes_per_token, best_dec, best_dec * bytes_per_token / 1e9, batch,
        best_pre, best_pre / best_dec, sink);
    return 0;
}
