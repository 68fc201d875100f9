/* membw.c — how fast this machine streams memory, the ceiling for token generation.
 *
 * Generating one token reads every weight once, so tg speed is bounded by read bandwidth. This
 * measures it the way a matrix-vector product sees it: T threads each sum their contiguous share of
 * a large buffer (default 1 GiB, far larger than any cache) with 256-bit loads. It also times a
 * copy (read + write, counted as 2 × bytes, as STREAM does). Prints one JSON object:
 *   {"bytes": ..., "threads": T, "read_gbs": best, "read_gbs_mean": ..., "copy_gbs": best}
 * GB = 1e9 bytes. Not a full STREAM: no scale/add/triad, no NUMA placement.
 *
 * usage: membw [-s MiB] [-t threads] [-r reps]    build: gcc -O2 -mavx2 -fopenmp membw.c -o membw
 */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Sum n floats starting at p with four independent accumulators (so the adds never limit the
 * loads). */
static float sum_block(const float *p, size_t n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i + 32 <= n; i += 32) {
        a0 = _mm256_add_ps(a0, _mm256_load_ps(p + i));
        a1 = _mm256_add_ps(a1, _mm256_load_ps(p + i + 8));
        a2 = _mm256_add_ps(a2, _mm256_load_ps(p + i + 16));
        a3 = _mm256_add_ps(a3, _mm256_load_ps(p + i + 24));
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
    float out[8];
    _mm256_storeu_ps(out, s);
    return out[0] + out[1] + out[2] + out[3] + out[4] + out[5] + out[6] + out[7];
}

int main(int argc, char **argv) {
    size_t mib = 1024;
    int threads = 2, reps = 10;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-s"))
            mib = strtoul(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "-t"))
            threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-r"))
            reps = atoi(argv[i + 1]);
    }
    size_t bytes = mib << 20, n = bytes / sizeof(float);
    float *a = aligned_alloc(64, bytes), *b = aligned_alloc(64, bytes);
    if (!a || !b) {
        fprintf(stderr, "membw: cannot allocate 2 x %zu MiB\n", mib);
        return 1;
    }
    omp_set_num_threads(threads);
    /* First touch from the threads that will read each part, so pages are really mapped. */
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        a[i] = (float)(i & 1023) * 1e-3f;
        b[i] = 0.0f;
    }

    double best_read = 0, sum_read = 0, best_copy = 0;
    volatile float sink = 0;
    for (int r = 0; r < reps + 1; r++) {
        float total = 0;
        double t0 = now();
#pragma omp parallel reduction(+ : total)
        {
            int ith = omp_get_thread_num(), nth = omp_get_num_threads();
            size_t chunk = (n / nth) & ~(size_t)31, lo = ith * chunk,
                   hi = ith == nth - 1 ? n : lo + chunk;
            total += sum_block(a + lo, hi - lo);
        }
        double dt = now() - t0;
        sink += total;
        if (r == 0) continue; /* warm-up */
        double gbs = bytes / dt / 1e9;
        sum_read += gbs;
        if (gbs > best_read) best_read = gbs;
    }
    for (int r = 0; r < reps / 2 + 1; r++) {
        double t0 = now();
#pragma omp parallel
        {
            int ith = omp_get_thread_num(), nth = omp_get_num_threads();
            size_t chunk = bytes / nth, lo = ith * chunk, hi = ith == nth - 1 ? bytes : lo + chunk;
            memcpy((char *)b + lo, (const char *)a + lo, hi - lo);
        }
        double dt = now() - t0;
        if (r > 0 && 2.0 * bytes / dt / 1e9 > best_copy) best_copy = 2.0 * bytes / dt / 1e9;
    }
    sink += b[n / 2];
    printf("{\"bytes\": %zu, \"threads\": %d, \"read_gbs\": %.2f, \"read_gbs_mean\": %.2f, "
           "\"copy_gbs\": %.2f}\n",
           bytes, threads, best_read, sum_read / reps, best_copy);
    free(a);
    free(b);
    return sink == 12345.0f; /* keeps the sums alive; never true in practice */
}
