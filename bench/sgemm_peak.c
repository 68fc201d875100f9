/* sgemm_peak.c — how many GFLOP/s OpenBLAS's sgemm reaches on this machine, the ceiling for
 * training.
 *
 * Training a transformer is mostly matrix products, so the f32 GEMM rate of the BLAS both msrnn and
 * PyTorch call is the yardstick for their achieved FLOP rate. This times cblas_sgemm on square n×n
 * matrices (default 2048: large enough that packing and thread start-up are noise) with OpenBLAS's
 * own threads set to T, after one untimed call, and counts 2·n³ FLOPs per call. Prints one JSON
 * object:
 *   {"n": ..., "threads": T, "reps": R, "gflops": best, "gflops_median": ..., "openblas_config":
 * "...", "openblas_core": "..."} GFLOP = 1e9 floating-point operations. Not a roofline: one shape,
 * row-major, no transposes.
 *
 * usage: sgemm_peak [-n 2048] [-t threads] [-r reps]
 * build: gcc -O2 -I/usr/include/x86_64-linux-gnu/openblas-pthread sgemm_peak.c \
 *            -L/usr/lib/x86_64-linux-gnu/openblas-pthread
 * -Wl,-rpath,/usr/lib/x86_64-linux-gnu/openblas-pthread \ -lopenblas -o sgemm_peak
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* OpenBLAS extensions (declared in its cblas.h; repeated so that another cblas.h still compiles).
 */
void openblas_set_num_threads(int num_threads);
char *openblas_get_config(void);
char *openblas_get_corename(void);

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    int n = 2048, threads = 2, reps = 5;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-n"))
            n = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-t"))
            threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-r"))
            reps = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "usage: sgemm_peak [-n 2048] [-t threads] [-r reps]\n");
            return 2;
        }
    }
    if (n < 1 || threads < 1 || reps < 1 || reps > 1000) {
        fprintf(stderr, "sgemm_peak: n, threads and reps must be positive (reps <= 1000)\n");
        return 2;
    }
    size_t nn = (size_t)n * n;
    float *a = malloc(nn * sizeof *a), *b = malloc(nn * sizeof *b), *c = malloc(nn * sizeof *c);
    if (!a || !b || !c) {
        fprintf(stderr, "sgemm_peak: out of memory for three %d x %d matrices\n", n, n);
        return 1;
    }
    unsigned s = 1; /* small LCG: values in [-1, 1), so nothing overflows or goes denormal */
    for (size_t i = 0; i < nn; i++) {
        s = s * 1103515245u + 12345u;
        a[i] = (float)((s >> 8) & 0xFFFF) / 32768.0f - 1.0f;
        s = s * 1103515245u + 12345u;
        b[i] = (float)((s >> 8) & 0xFFFF) / 32768.0f - 1.0f;
    }
    memset(c, 0, nn * sizeof *c);
    openblas_set_num_threads(threads);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    double gf[1000];
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c,
                    n);
        gf[r] = 2.0 * n * (double)n * n / (now() - t0) / 1e9;
    }
    qsort(gf, reps, sizeof *gf, cmp_double);
    printf("{\"n\": %d, \"threads\": %d, \"reps\": %d, \"gflops\": %.2f, \"gflops_median\": %.2f, "
           "\"openblas_config\": \"%s\", \"openblas_core\": \"%s\", \"checksum\": %.6g}\n",
           n, threads, reps, gf[reps - 1], gf[reps / 2], openblas_get_config(),
           openblas_get_corename(), (double)c[nn / 2]);
    free(a), free(b), free(c);
    return 0;
}
