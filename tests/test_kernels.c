/* test_kernels.c — every SIMD kernel against its scalar reference (normalised MSE, as ggml's
 * test-backend-ops does), the matrix product's two paths against a double-precision loop, and the
 * scalar conversions against their definitions. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "check.h"
#include "nn/ops.h"
#include "tensor/kernels.h"

#if defined(__F16C__)
#include <immintrin.h>
#endif

static uint64_t rng = 12345;
static float frand(void) { /* uniform in [-1, 1) */
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 40) / (double)(1ull << 24)) * 2 - 1;
}

static double nmse(const float *a, const float *ref, int n) {
    double num = 0, den = 0;
    for (int i = 0; i < n; i++)
        num += (a[i] - ref[i]) * (double)(a[i] - ref[i]), den += (double)ref[i] * ref[i];
    return den > 0 ? num / den : num;
}

static const tensor_type types[] = {TYPE_F32, TYPE_F16, TYPE_BF16, TYPE_Q8_0, TYPE_Q4_0};

static void test_dots(void) {
    const int sizes[] = {32, 64, 96, 288, 768, 2048, 4096};
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
        tensor_type t = types[ti];
        const type_kernels *k = kernels_for(t);
        for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
            int n = sizes[si], rows = 64;
            float *w = malloc(sizeof(float) * n * rows), *x = malloc(sizeof(float) * n);
            float *ys = malloc(sizeof(float) * rows), *yr = malloc(sizeof(float) * rows);
            uint8_t *q = malloc(type_row_bytes(t, n) * rows);
            for (int i = 0; i < n * rows; i++) w[i] = frand();
            for (int i = 0; i < n; i++) x[i] = frand();
            quantize_row(t, w, q, (int64_t)n * rows);
            for (int r = 0; r < rows; r++) {
                ys[r] = k->dot_simd(q + r * type_row_bytes(t, n), x, n);
                yr[r] = k->dot_ref(q + r * type_row_bytes(t, n), x, n);
            }
            double e = nmse(ys, yr, rows);
            CHECK(e < 1e-10, "%s dot n=%d: nmse %.3g >= 1e-10", type_traits(t)->name, n, e);
            if (k->dot_q8_ref) { /* integer dot against Q8_0 activations */
                block_q8_0 *xq = malloc(sizeof(block_q8_0) * (n / 32));
                quantize_row(TYPE_Q8_0, x, xq, n);
                for (int r = 0; r < rows; r++) {
                    ys[r] = k->dot_q8_simd(q + r * type_row_bytes(t, n), xq, n);
                    yr[r] = k->dot_q8_ref(q + r * type_row_bytes(t, n), xq, n);
                }
                e = nmse(ys, yr, rows);
                CHECK(e < 1e-10, "%s x q8_0 dot n=%d: nmse %.3g >= 1e-10", type_traits(t)->name, n,
                      e);
                free(xq);
            }
            free(w), free(x), free(ys), free(yr), free(q);
        }
    }
    /* odd lengths for the float types (tails) */
    for (int n = 1; n < 70; n++) {
        float w[70], x[70];
        uint16_t h[70];
        for (int i = 0; i < n; i++) w[i] = frand(), x[i] = frand();
        float a = kernels_for(TYPE_F32)->dot_simd(w, x, n),
              b = kernels_for(TYPE_F32)->dot_ref(w, x, n);
        CHECK(fabsf(a - b) <= 1e-5f * (1 + fabsf(b)), "f32 dot tail n=%d: %g vs %g", n, a, b);
        quantize_row(TYPE_F16, w, h, n);
        a = kernels_for(TYPE_F16)->dot_simd(h, x, n), b = kernels_for(TYPE_F16)->dot_ref(h, x, n);
        CHECK(fabsf(a - b) <= 1e-5f * (1 + fabsf(b)), "f16 dot tail n=%d: %g vs %g", n, a, b);
        quantize_row(TYPE_BF16, w, h, n);
        a = kernels_for(TYPE_BF16)->dot_simd(h, x, n), b = kernels_for(TYPE_BF16)->dot_ref(h, x, n);
        CHECK(fabsf(a - b) <= 1e-5f * (1 + fabsf(b)), "bf16 dot tail n=%d: %g vs %g", n, a, b);
        float y1[70] = {0}, y2[70] = {0};
        axpy_row(TYPE_F16, y1, 0.5f, h, n); /* h now holds bf16 bits; any f16 bits do */
        for (int i = 0; i < n; i++) y2[i] += 0.5f * fp16_to_fp32(h[i]);
        CHECK(!memcmp(y1, y2, sizeof(float) * n) || nmse(y1, y2, n) < 1e-12, "axpy f16 n=%d", n);
    }
}

/* matmul's matrix-vector path (n < 8) and sgemm path (n >= 8) against a double loop over the
 * dequantised weights. */
static void test_matmul(void) {
    const int ins[] = {64, 288, 768}, outs[] = {3, 100, 1000}, ns[] = {1, 3, 7, 8, 16, 17, 33};
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++)
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 3; b++)
                for (int c = 0; c < 7; c++) {
                    tensor_type t = types[ti];
                    int in = ins[a], out = outs[b], n = ns[c];
                    float *w = malloc(sizeof(float) * in * out),
                          *x = malloc(sizeof(float) * in * n);
                    float *y = malloc(sizeof(float) * out * n),
                          *yr = malloc(sizeof(float) * out * n);
                    uint8_t *q = malloc(type_row_bytes(t, in) * out);
                    float *scratch =
                        malloc(sizeof(float) * matmul_scratch_floats(in, omp_get_max_threads()));
                    for (int i = 0; i < in * out; i++) w[i] = frand();
                    for (int i = 0; i < in * n; i++) x[i] = frand();
                    quantize_row(t, w, q, (int64_t)in * out);
                    dequantize_row(t, q, w, (int64_t)in * out);
                    /* decoding (n < 8) with quantised weights rounds the activations to Q8_0 first
                     */
                    const int act_q8 = kernels_for(t)->dot_q8_ref && n < 8;
                    float *xr = malloc(sizeof(float) * in * n);
                    block_q8_0 *xq = malloc(sizeof(block_q8_0) * (in / 32 + 1) * n);
                    memcpy(xr, x, sizeof(float) * in * n);
                    if (act_q8) {
                        quantize_row(TYPE_Q8_0, x, xq, (int64_t)in * n);
                        dequantize_row(TYPE_Q8_0, xq, xr, (int64_t)in * n);
                    }
                    weight W = {q, t, in, out, type_row_bytes(t, in)};
                    matmul(y, x, &W, n, scratch, omp_get_max_threads());
                    for (int i = 0; i < n; i++)
                        for (int r = 0; r < out; r++) {
                            double s = 0;
                            for (int j = 0; j < in; j++)
                                s += (double)w[r * in + j] * xr[i * in + j];
                            yr[i * out + r] = (float)s;
                        }
                    double e = nmse(y, yr, out * n);
                    CHECK(e < 1e-11, "matmul %s in=%d out=%d n=%d: nmse %.3g", type_traits(t)->name,
                          in, out, n, e);
                    free(w), free(x), free(y), free(yr), free(q), free(scratch), free(xr), free(xq);
                }
}

static void test_conversions(void) {
    /* f16: every one of the 65536 bit patterns survives f16 -> f32 -> f16 (NaNs stay NaN) */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = fp16_to_fp32((uint16_t)h);
        uint16_t back = fp32_to_fp16(f);
        if (isnan(f) ? !isnan(fp16_to_fp32(back)) : back != h) bad++;
    }
    CHECK(bad == 0, "f16 round trip: %d bit patterns differ", bad);
    for (uint32_t h = 0; h < 65536; h++) { /* hardware and bit-level conversions agree */
        float a = fp16_to_fp32((uint16_t)h), b = fp16_to_fp32_ref((uint16_t)h);
        if (isnan(a) ? !isnan(b) : memcmp(&a, &b, 4) != 0) bad++;
    }
    CHECK(bad == 0, "f16 -> f32: F16C and reference differ on %d bit patterns", bad);
    CHECK(fp16_to_fp32(0x3c00) == 1.0f && fp16_to_fp32(0xc000) == -2.0f, "f16 1.0 / -2.0");
    CHECK(fp16_to_fp32(0x0001) == ldexpf(1, -24), "smallest f16 subnormal");
    CHECK(fp32_to_fp16(65520.0f) == 0x7c00 && fp32_to_fp16(65519.0f) == 0x7bff,
          "f16 overflow edge");
    CHECK(fp32_to_fp16(1.0f + ldexpf(1, -11)) == 0x3c00, "f16 ties to even (down)");
    CHECK(fp32_to_fp16(1.0f + 3 * ldexpf(1, -11)) == 0x3c02, "f16 ties to even (up)");
    /* agree with the hardware conversion (F16C) on many random values */
#if defined(__F16C__)
    for (int i = 0; i < 100000; i++) {
        float f = frand() * ldexpf(1, (int)(frand() * 20));
        uint16_t hw =
            (uint16_t)_mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(f), _MM_FROUND_TO_NEAREST_INT), 0);
        if (hw != fp32_to_fp16(f)) bad++;
    }
    CHECK(bad == 0, "f16 conversion disagrees with F16C on %d values", bad);
#endif
    CHECK(bf16_to_fp32(fp32_to_bf16(1.5f)) == 1.5f, "bf16 exact value");
    CHECK(fp32_to_bf16(1.0f + ldexpf(1, -8)) == 0x3f80, "bf16 ties to even");
    /* q8_0 / q4_0 dequantise(quantise(x)) error bounded by half a step */
    float x[64], y[64];
    block_q8_0 b8[2];
    block_q4_0 b4[2];
    for (int i = 0; i < 64; i++) x[i] = frand();
    quantize_row(TYPE_Q8_0, x, b8, 64);
    dequantize_row(TYPE_Q8_0, b8, y, 64);
    for (int i = 0; i < 64; i++)
        CHECK(fabsf(x[i] - y[i]) <= fp16_to_fp32(b8[i / 32].d) * 0.5f + 1e-3f, "q8_0 error at %d",
              i);
    /* Q8_0 rounds half away from zero (C roundf, ggml's reference): a block with amax 127 has d =
     * 1, so its values are rounded directly */
    float ties[32] = {127, 2.5f, -2.5f, 0.5f, -0.5f, 1.5f, -126.5f};
    quantize_row(TYPE_Q8_0, ties, b8, 32);
    CHECK(fp16_to_fp32(b8[0].d) == 1.0f && b8[0].qs[1] == 3 && b8[0].qs[2] == -3 &&
              b8[0].qs[3] == 1 && b8[0].qs[4] == -1 && b8[0].qs[5] == 2 && b8[0].qs[6] == -127,
          "q8_0 ties: %d %d %d %d %d %d", b8[0].qs[1], b8[0].qs[2], b8[0].qs[3], b8[0].qs[4],
          b8[0].qs[5], b8[0].qs[6]);
    quantize_row(TYPE_Q4_0, x, b4, 64);
    dequantize_row(TYPE_Q4_0, b4, y, 64);
    for (int i = 0; i < 64; i++)
        CHECK(fabsf(x[i] - y[i]) <= fabsf(fp16_to_fp32(b4[i / 32].d)) * 1.0f + 1e-3f,
              "q4_0 error at %d", i);
}

/* The attention rows of a decoding step (dot_rows for one to three queries, mix_rows; f32 and f16
 * rows, the reference reading the f16 values through the bit-level converter), and the vectorised
 * softmax and SwiGLU, against double loops: widths with and without the 8-, 32- and 64-wide paths,
 * row counts with and without a remainder of four. */
static void test_attention_rows(void) {
    const int ds[] = {4, 12, 40, 64, 96, 128}, ns[] = {1, 3, 4, 5, 215};
    for (int f16 = 0; f16 <= 1; f16++)
        for (int a = 0; a < 6; a++)
            for (int b = 0; b < 5; b++)
                for (int nq = 1; nq <= 3; nq++) {
                    const int d = ds[a], n = ns[b];
                    const tensor_type t = f16 ? TYPE_F16 : TYPE_F32;
                    const size_t ld = (size_t)n + 3;
                    float *K = malloc(sizeof(float) * n * d), *q = malloc(sizeof(float) * nq * d);
                    uint16_t *Kh = malloc(sizeof(uint16_t) * n * d);
                    float *out = malloc(sizeof(float) * nq * ld), *ref = malloc(sizeof(float) * n);
                    float *o = malloc(sizeof(float) * d), *oref = malloc(sizeof(float) * d);
                    for (int i = 0; i < n * d; i++) {
                        K[i] = frand();
                        if (f16) { /* the reference sees the stored value */
                            Kh[i] = fp32_to_fp16(K[i]);
                            K[i] = fp16_to_fp32_ref(Kh[i]);
                        }
                    }
                    const void *rows = f16 ? (const void *)Kh : (const void *)K;
                    for (int i = 0; i < nq * d; i++) q[i] = frand();
                    dot_rows(t, out, ld, rows, n, d, q, nq, 0.125f);
                    for (int h = 0; h < nq; h++) {
                        for (int j = 0; j < n; j++) {
                            double s = 0;
                            for (int i = 0; i < d; i++) s += (double)K[j * d + i] * q[h * d + i];
                            ref[j] = (float)(s * 0.125);
                        }
                        double e = nmse(out + h * ld, ref, n);
                        CHECK(e < 1e-11, "dot_rows %s d=%d n=%d query %d of %d: nmse %.3g",
                              f16 ? "f16" : "f32", d, n, h, nq, e);
                    }
                    for (int j = 0; j < n; j++) ref[j] = frand() * 0.5f + 0.5f;
                    mix_rows(t, o, rows, n, d, ref);
                    for (int i = 0; i < d; i++) {
                        double s = 0;
                        for (int j = 0; j < n; j++) s += (double)ref[j] * K[j * d + i];
                        oref[i] = (float)s;
                    }
                    double e = nmse(o, oref, d);
                    CHECK(e < 1e-11, "mix_rows %s d=%d n=%d: nmse %.3g", f16 ? "f16" : "f32", d, n,
                          e);
                    free(K), free(Kh), free(q), free(out), free(ref), free(o), free(oref);
                }
    const int ms[] = {1, 7, 8, 9, 64, 1001};
    for (int a = 0; a < 6; a++) {
        const int n = ms[a];
        float *x = malloc(sizeof(float) * n), *g = malloc(sizeof(float) * n),
              *u = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n);
        double *r = malloc(sizeof(double) * n), mx = -1e30, sum = 0;
        for (int i = 0; i < n; i++) {
            x[i] = frand() * 30, g[i] = frand() * 40, u[i] = frand();
            mx = x[i] > mx ? x[i] : mx;
        }
        for (int i = 0; i < n; i++) sum += r[i] = exp((double)x[i] - mx);
        softmax(x, n);
        double worst = 0;
        for (int i = 0; i < n; i++) {
            const double err = fabs(x[i] - r[i] / sum);
            worst = err > worst ? err : worst;
        }
        CHECK(worst < 1e-6, "softmax n=%d: max error %.3g", n, worst);
        swiglu_forward(y, g, u, 1, n, 1);
        worst = 0;
        for (int i = 0; i < n; i++) {
            const double want = g[i] / (1 + exp(-(double)g[i])) * u[i];
            const double err = fabs(y[i] - want) / (1e-30 + fabs(want) + 1e-6);
            worst = err > worst ? err : worst;
        }
        CHECK(worst < 1e-5, "swiglu n=%d: max relative error %.3g", n, worst);
        free(x), free(g), free(u), free(y), free(r);
    }
}

int main(void) {
    test_dots();
    test_matmul();
    test_attention_rows();
    test_conversions();
    printf("test_kernels: %d passed, %d failed\n", checks - failures, failures);
    return failures != 0;
}
