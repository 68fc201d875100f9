/* matmul_tiles.c — GFLOP/s of the batch path of matmul_many (float weights, 8–63 tokens: what a
 * server's batch of decoding sessions runs), weights hot (one matrix again and again) or cold (many
 * matrices in turn, as a batch step sees them after the sessions' keys and values went through the
 * cache). Internal: built against the sources, not the public library.
 *
 * Build and run (from the repository root; MATRICES 1: hot, e.g. 64: cold):
 *   gcc -O2 -std=c11 -fopenmp -mavx2 -mfma -mf16c -Isrc -Iinclude -o /tmp/matmul_tiles
 *       bench/matmul_tiles.c src/tensor/kernels.c src/tensor/types.c
 *       -L/usr/lib/x86_64-linux-gnu/openblas-pthread -lopenblas -lm
 *   /tmp/matmul_tiles TOKENS THREADS IN OUT MATRICES
 *
 * Prints the best of 7 timings of a pass over every matrix (f16 weights). */
#define _POSIX_C_SOURCE 200809L
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "tensor/kernels.h"
#include "tensor/types.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: matmul_tiles TOKENS THREADS IN OUT MATRICES\n");
        return 2;
    }
    const int n = atoi(argv[1]), th = atoi(argv[2]), in = atoi(argv[3]), out = atoi(argv[4]),
              nm = atoi(argv[5]);
    if (n <= 0 || th <= 0 || in <= 0 || out <= 0 || nm <= 0) {
        fprintf(stderr, "matmul_tiles: every argument must be positive\n");
        return 2;
    }
    kernels_set_threads(th);
    const size_t per = (size_t)in * out;
    const int reps = nm == 1 ? 2000 : 20; /* passes per timing */
    uint16_t *w = malloc(per * 2 * nm);
    float *x = malloc(sizeof(float) * n * in), *y = malloc(sizeof(float) * n * out);
    float *scratch = malloc(sizeof(float) * matmul_scratch_floats(in, th));
    if (!w || !x || !y || !scratch) {
        fprintf(stderr, "matmul_tiles: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < per * nm; i++)
        w[i] = fp32_to_fp16((float)((i * 2654435761u) % 1000) / 1000 - 0.5f);
    for (int i = 0; i < n * in; i++) x[i] = (float)(i % 7) * 0.1f;
    double best = 1e30;
    for (int k = 0; k < 7; k++) {
        const double t0 = now();
        for (int r = 0; r < reps; r++)
            for (int m = 0; m < nm; m++) {
                const weight W = {w + per * m, TYPE_F16, in, out, (size_t)in * 2};
                const weight *ws[1] = {&W};
                float *ys[1] = {y};
                matmul_many(1, ys, x, ws, n, scratch, th);
            }
        const double dt = now() - t0;
        if (dt < best) best = dt;
    }
    printf("n=%d threads=%d %dx%d f16, %d matri%s: %.1f GFLOP/s\n", n, th, out, in, nm,
           nm == 1 ? "x (hot)" : "ces in turn (cold)", 2.0 * n * in * out * nm * reps / best / 1e9);
    free(w), free(x), free(y), free(scratch);
    return 0;
}
