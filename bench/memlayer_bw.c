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
 * Beside them, in the same run, the two ceilings the decode figure is read against:
 *   seq_gbs   the tables read front to back by `threads` threads (what bench/membw measures);
 *   rows_gbs  one thread reading rows as a decode token does (K random rows of every table in
 *             model order, no hash, no arithmetic beyond a sum), in gather's order (256-byte
 *             column blocks across the K rows, the next block prefetched): a plain read of this
 *             access pattern, to tell the kernel's own cost from the memory's;
 * and omp_region_us, the cost of one empty OpenMP parallel region of `threads` threads: a decode
 * token makes 36 memory-layer calls of 1–3 µs, so a region per call costs more than it can save.
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

#include <immintrin.h>

/* the tables read front to back, `threads` threads; GB/s */
static double seq_read(void *const *T, const size_t *bytes, int n, int threads) {
    double best = 0, sink = 0;
    for (int rep = 0; rep < 3; rep++) {
        size_t total = 0;
        const double t0 = now();
        for (int i = 0; i < n; i++) {
            const float *p = T[i];
            const long m = (long)(bytes[i] / 4 / 32);
            double s = 0;
#pragma omp parallel for num_threads(threads) reduction(+ : s) schedule(static)
            for (long j = 0; j < m; j++) {
                __m256 a = _mm256_loadu_ps(p + 32 * j), b = _mm256_loadu_ps(p + 32 * j + 8);
                a = _mm256_add_ps(a, _mm256_loadu_ps(p + 32 * j + 16));
                b = _mm256_add_ps(b, _mm256_loadu_ps(p + 32 * j + 24));
                float f[8];
                _mm256_storeu_ps(f, _mm256_add_ps(a, b));
                s += f[0];
            }
            sink += s, total += (size_t)m * 128;
        }
        const double g = total / (now() - t0) / 1e9;
        if (g > best) best = g;
    }
    return sink == 12345.678 ? 0 : best;
}

/* one thread reading n_tok tokens' rows (K random rows of each layer's table, in order) in 256-byte
 * column blocks across the rows, the next block prefetched; GB/s */
static double rows_read(const memlayer *L, void *const *T, int n, size_t elem, int n_tok) {
    double best = 0, sink = 0;
    for (int rep = 0; rep < 3; rep++) {
        size_t total = 0;
        const double t0 = now();
        for (int t = 0; t < n_tok; t++)
            for (int i = 0; i < n; i++) {
                const size_t rows = (size_t)1 << L[i].bits, stride = (size_t)L[i].out * elem;
                const char *r[64];
                for (int k = 0; k < L[i].K; k++)
                    r[k] = (const char *)T[i] +
                           ((size_t)k * rows + (size_t)(uniform() * rows)) * stride;
                for (int k = 0; k < L[i].K; k++)
                    for (size_t l = 0; l < 256 && l < stride; l += 64)
                        __builtin_prefetch(r[k] + l, 0, 3);
                __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
                for (size_t o = 0; o < stride; o += 256) {
                    const size_t e = o + 256 < stride ? o + 256 : stride;
                    for (int k = 0; k < L[i].K; k++) {
                        for (size_t l = e; l < e + 256 && l < stride; l += 64)
                            __builtin_prefetch(r[k] + l, 0, 3);
                        size_t c = o;
                        for (; c + 128 <= e; c += 128) {
                            const float *q = (const float *)(r[k] + c);
                            a0 = _mm256_add_ps(a0, _mm256_loadu_ps(q));
                            a1 = _mm256_add_ps(a1, _mm256_loadu_ps(q + 8));
                            a2 = _mm256_add_ps(a2, _mm256_loadu_ps(q + 16));
                            a3 = _mm256_add_ps(a3, _mm256_loadu_ps(q + 24));
                        }
                        for (; c + 32 <= e; c += 32)
                            a0 = _mm256_add_ps(a0, _mm256_loadu_ps((const float *)(r[k] + c)));
                    }
                }
                const __m256 acc = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
                float f[8];
                _mm256_storeu_ps(f, acc);
                sink += f[0], total += (size_t)L[i].K * stride;
            }
        const double g = total / (now() - t0) / 1e9;
        if (g > best) best = g;
    }
    return sink == 12345.678 ? 0 : best;
}

/* microseconds per empty parallel region of `threads` threads */
static double omp_region_us(int threads) {
    volatile int s = 0;
    const int n = 20000;
    const double t0 = now();
    for (int i = 0; i < n; i++) {
#pragma omp parallel num_threads(threads)
        s += 1;
    }
    return (now() - t0) / n * 1e6;
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
    size_t tbytes[N_TABLES];
    for (int i = 0; i < N_TABLES; i++) tbytes[i] = memlayer_table_elems(&L[i]) * elem;
    const double seq = seq_read(T, tbytes, N_TABLES, threads);
    const double rows = rows_read(L, T, N_TABLES, elem, n_dec);
    const double region = threads > 1 ? omp_region_us(threads) : 0;
    const double dec_gbs = best_dec * bytes_per_token / 1e9;
    printf(
        "{\"threads\": %d, \"tables_bytes\": %zu, \"f16\": %d, \"table_bytes_per_token\": %zu, "
        "\"decode_tps\": %.1f, \"decode_gbs\": %.2f, \"prefill_batch\": %d, \"prefill_tps\": %.1f, "
        "\"prefill_over_decode\": %.2f, \"seq_gbs\": %.2f, \"rows_gbs\": %.2f, "
        "\"decode_over_seq\": %.2f, \"decode_over_rows\": %.2f, \"omp_region_us\": %.2f, "
        "\"sink\": %g}\n",
        threads, total, f16, bytes_per_token, best_dec, dec_gbs, batch, best_pre,
        best_pre / best_dec, seq, rows, dec_gbs / seq, dec_gbs / rows, region, sink);
    return 0;
}
