/* test_attention_tiles.c — flash attention (src/nn/ops.c) with every tile shape it may be built
 * with.
 *
 * The forward and backward tile queries by ATT_BQ rows and keys by ATT_BK rows. With ATT_BK <
 * ATT_BQ a key tile can lie wholly after some queries of a query tile (their causal limit is then
 * negative): the forward once wrote before its score tile there. tests/CMakeLists.txt builds this
 * file three times — against the library's ops (64/64) and with its own copy of ops.c built with
 * 32/64 and 64/32 — and each checks attention_forward (output and log-sum-exp) and
 * attention_backward (dq, dk, dv) against a plain double-precision causal softmax attention, at
 * lengths that are and are not multiples of the tiles, with 1 and 2 threads. Tolerance: 2e-5 of
 * each tensor's largest magnitude plus 1e-6 absolute (f32 tiles against double sums over at most
 * 150 keys). The sanitizer build catches any write outside the tiles.
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "nn/ops.h"

#ifndef ATT_BQ
#define ATT_BQ 64
#endif
#ifndef ATT_BK
#define ATT_BK 64
#endif

static uint64_t rng = 42;
static float frand(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 40) * 0x1.0p-24 * 2.0 - 1.0);
}

/* Causal attention in double: out, lse and, given dout, the gradients. */
static void reference(int B, int T, int H, int Hkv, int d, const float *q, const float *k,
                      const float *v, const float *dout, double *out, double *lse, double *dq,
                      double *dk, double *dv) {
    const int g = H / Hkv, qs = H * d, ks = Hkv * d;
    const double scale = 1.0 / sqrt((double)d);
    double *p = malloc(sizeof(double) * T), *dp = malloc(sizeof(double) * T);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < T; t++) {
                const float *qt = q + ((size_t)b * T + t) * qs + h * d;
                const size_t kv0 = (size_t)b * T * ks + (size_t)(h / g) * d;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j <= t; j++) {
                    double s = 0;
                    for (int c = 0; c < d; c++) s += (double)qt[c] * k[kv0 + (size_t)j * ks + c];
                    p[j] = s * scale;
                    mx = p[j] > mx ? p[j] : mx;
                }
                for (int j = 0; j <= t; j++) sum += p[j] = exp(p[j] - mx);
                lse[((size_t)b * H + h) * T + t] = mx + log(sum);
                double *o = out + ((size_t)b * T + t) * qs + h * d;
                const float *go = dout + ((size_t)b * T + t) * qs + h * d;
                for (int c = 0; c < d; c++) o[c] = 0;
                double pdp = 0;
                for (int j = 0; j <= t; j++) {
                    p[j] /= sum;
                    dp[j] = 0;
                    for (int c = 0; c < d; c++) {
                        o[c] += p[j] * v[kv0 + (size_t)j * ks + c];
                        dp[j] += (double)go[c] * v[kv0 + (size_t)j * ks + c];
                        dv[kv0 + (size_t)j * ks + c] += p[j] * go[c];
                    }
                    pdp += p[j] * dp[j];
                }
                for (int j = 0; j <= t; j++) {
                    const double ds = p[j] * (dp[j] - pdp) * scale;
                    for (int c = 0; c < d; c++) {
                        dq[((size_t)b * T + t) * qs + h * d + c] +=
                            ds * k[kv0 + (size_t)j * ks + c];
                        dk[kv0 + (size_t)j * ks + c] += ds * qt[c];
                    }
                }
            }
    free(p);
    free(dp);
}

static double max_err(const float *a, const double *ref, size_t n, double *scale) {
    double e = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        e = fmax(e, fabs(a[i] - ref[i]));
        s = fmax(s, fabs(ref[i]));
    }
    *scale = s;
    return e;
}

static void run_case(int B, int T, int H, int Hkv, int d, int n_threads) {
    const size_t nq = (size_t)B * T * H * d, nk = (size_t)B * T * Hkv * d, nl = (size_t)B * H * T;
    float *q = malloc(nq * 4), *k = malloc(nk * 4), *v = malloc(nk * 4), *dout = malloc(nq * 4);
    for (size_t i = 0; i < nq; i++) q[i] = 2 * frand(), dout[i] = frand();
    for (size_t i = 0; i < nk; i++) k[i] = 2 * frand(), v[i] = frand();
    float *out = calloc(nq, 4), *lse = calloc(nl, 4), *dq = calloc(nq, 4), *dk = calloc(nk, 4),
          *dv = calloc(nk, 4);
    float *scratch = malloc(attention_scratch_floats(T, d, n_threads) * sizeof(float));
    double *rout = calloc(nq, 8), *rlse = calloc(nl, 8), *rdq = calloc(nq, 8), *rdk = calloc(nk, 8),
           *rdv = calloc(nk, 8);
    attention_forward(out, lse, q, k, v, B, T, H, Hkv, d, scratch, n_threads);
    attention_backward(dq, dk, dv, dout, q, k, v, out, lse, B, T, H, Hkv, d, scratch, n_threads);
    reference(B, T, H, Hkv, d, q, k, v, dout, rout, rlse, rdq, rdk, rdv);
    const char *names[5] = {"out", "lse", "dq", "dk", "dv"};
    const float *got[5] = {out, lse, dq, dk, dv};
    const double *want[5] = {rout, rlse, rdq, rdk, rdv};
    const size_t n[5] = {nq, nl, nq, nk, nk};
    for (int i = 0; i < 5; i++) {
        double scale, e = max_err(got[i], want[i], n[i], &scale);
        CHECK(e <= 2e-5 * scale + 1e-6 && isfinite(e),
              "tiles %d/%d, B %d T %d H %d/%d d %d, %d threads: %s max error %.3g (scale %.3g)",
              ATT_BQ, ATT_BK, B, T, H, Hkv, d, n_threads, names[i], e, scale);
    }
    free(q), free(k), free(v), free(dout), free(out), free(lse), free(dq), free(dk), free(dv);
    free(scratch), free(rout), free(rlse), free(rdq), free(rdk), free(rdv);
}

int main(void) {
    const int lengths[] = {1, 31, 32, 33, 64, 65, 100, 150};
    for (size_t i = 0; i < sizeof lengths / sizeof *lengths; i++)
        for (int th = 1; th <= 2; th++) run_case(2, lengths[i], 4, 2, 16, th);
    run_case(1, 97, 2, 1, 8, 2);
    printf("test_attention_tiles (%d/%d): %d checks, %d failures\n", ATT_BQ, ATT_BK, checks,
           failures);
    return failures ? 1 : 0;
}
