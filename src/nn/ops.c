/* ops.c — forward and backward of the shared ops (see ops.h for the legend and contract).
 *
 * The big products are OpenBLAS sgemm calls, each thread taking a slice of output rows with
 * OpenBLAS itself single-threaded (kernels_set_threads), so a row's sum is computed the same way
 * whatever the thread count. Attention is flash attention (Dao et al., 2022): queries in tiles of
 * ATT_BQ rows meet keys in tiles of ATT_BK, the softmax is carried online, and backward recomputes
 * each tile's probabilities from the saved log-sum-exp; memory stays O(T·d).
 */
#include "nn/ops.h"

#include "nn/vexp.h"
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#ifndef ATT_BQ
#define ATT_BQ 64 /* query rows of a tile (tests build other sizes) */
#endif
#ifndef ATT_BK
#define ATT_BK 64 /* key rows of a tile */
#endif

/* x[i] = exp(x[i] - sub) for i < n, returning the sum. The softmax tiles spend most of their time
 * here, so the AVX2 path evaluates exp eight lanes at a time (exp256, nn/vexp.h). */

static float exp_sub_sum(float *x, int n, float sub) {
    int i = 0;
    float sum = 0;
#ifdef __AVX2__
    __m256 acc = _mm256_setzero_ps();
    const __m256 vs = _mm256_set1_ps(sub);
    for (; i + 8 <= n; i += 8) {
        const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), vs));
        _mm256_storeu_ps(x + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, acc);
    for (int k = 0; k < 8; k++) sum += lanes[k];
#endif
    for (; i < n; i++) sum += x[i] = expf(x[i] - sub);
    return sum;
}

/* The row range [*r0, *r1) of n rows that thread ith of nth takes. */
static void split_rows(int n, int ith, int nth, int *r0, int *r1) {
    int per = (n + nth - 1) / nth;
    *r0 = ith * per < n ? ith * per : n;
    *r1 = *r0 + per < n ? *r0 + per : n;
}

/* ---- embedding ------------------------------------------------------------------------------ */

void embedding_forward(float *out, const int32_t *tokens, const float *wte, int N, int C,
                       int n_threads) {
#pragma omp parallel for schedule(static) if (N > 8) num_threads(n_threads)
    for (int n = 0; n < N; n++)
        memcpy(out + (size_t)n * C, wte + (size_t)tokens[n] * C, (size_t)C * sizeof(float));
}

void embedding_backward(float *dwte, const float *dout, const int32_t *tokens, int N, int C,
                        int n_threads) {
    /* repeated tokens add into the same row: split columns, not rows, across threads */
#pragma omp parallel num_threads(n_threads)
    {
        int c0, c1;
        split_rows(C, omp_get_thread_num(), omp_get_num_threads(), &c0, &c1);
        for (int n = 0; n < N; n++) {
            float *d = dwte + (size_t)tokens[n] * C;
            const float *g = dout + (size_t)n * C;
            for (int c = c0; c < c1; c++) d[c] += g[c];
        }
    }
}

/* ---- RMSNorm -------------------------------------------------------------------------------- */

void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, int N, int C,
                     float eps, int n_threads) {
#pragma omp parallel for schedule(static) if (N > 8) num_threads(n_threads)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *y = out + (size_t)n * C;
        double ss = 0;
        for (int c = 0; c < C; c++) ss += (double)x[c] * x[c];
        float r = (float)(1.0 / sqrt(ss / C + eps));
        if (rstd) rstd[n] = r;
        for (int c = 0; c < C; c++) y[c] = x[c] * r * w[c];
    }
}

void rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                      const float *rstd, int N, int C, int n_threads) {
    /* y = x r w, r = (mean x² + eps)^-1/2:  dx = r (dy∘w) − x r³/C Σ(dy∘w∘x) */
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
        float *dx = dinp + (size_t)n * C;
        const float r = rstd[n];
        double dot = 0;
        for (int c = 0; c < C; c++) dot += (double)dy[c] * w[c] * x[c];
        const float k = (float)(dot * r * r * r / C);
        for (int c = 0; c < C; c++) dx[c] += r * dy[c] * w[c] - k * x[c];
    }
    /* dw[c] = Σ_n dy x r: columns split across threads */
#pragma omp parallel num_threads(n_threads)
    {
        int c0, c1;
        split_rows(C, omp_get_thread_num(), omp_get_num_threads(), &c0, &c1);
        if (c1 > c0) {
            double acc[256];
            for (int cb = c0; cb < c1; cb += 256) {
                const int ce = cb + 256 < c1 ? cb + 256 : c1;
                for (int c = cb; c < ce; c++) acc[c - cb] = 0;
                for (int n = 0; n < N; n++) {
                    const float *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
                    const float r = rstd[n];
                    for (int c = cb; c < ce; c++) acc[c - cb] += dy[c] * x[c] * r;
                }
                for (int c = cb; c < ce; c++) dw[c] += (float)acc[c - cb];
            }
        }
    }
}

/* ---- layernorm (MemoryFormer's block) -------------------------------------------------------- */

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                       const float *b, int N, int C, float eps, int n_threads) {
#pragma omp parallel for schedule(static) if (N > 8) num_threads(n_threads)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *y = out + (size_t)n * C;
        double s = 0, ss = 0;
        for (int c = 0; c < C; c++) s += x[c];
        const double mu = s / C;
        for (int c = 0; c < C; c++) ss += (x[c] - mu) * (x[c] - mu);
        const float m = (float)mu, r = (float)(1.0 / sqrt(ss / C + eps));
        for (int c = 0; c < C; c++) y[c] = (x[c] - m) * r * w[c] + b[c];
        if (mean) mean[n] = m;
        if (rstd) rstd[n] = r;
    }
}

void layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                        const float *w, const float *mean, const float *rstd, int N, int C,
                        int n_threads) {
    /* x̂ = (x − μ) r, y = x̂ w + b:  dx = r (g − mean(g) − x̂ mean(g x̂)), g = dy∘w */
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
        float *dx = dinp + (size_t)n * C;
        const float m = mean[n], r = rstd[n];
        double sg = 0, sgx = 0;
        for (int c = 0; c < C; c++) {
            const double g = (double)dy[c] * w[c];
            sg += g, sgx += g * (x[c] - m) * r;
        }
        const float mg = (float)(sg / C), mgx = (float)(sgx / C);
        for (int c = 0; c < C; c++) dx[c] += r * (dy[c] * w[c] - mg - (x[c] - m) * r * mgx);
    }
    /* dw[c] = Σ_n dy x̂, db[c] = Σ_n dy: columns split across threads */
#pragma omp parallel num_threads(n_threads)
    {
        int c0, c1;
        split_rows(C, omp_get_thread_num(), omp_get_num_threads(), &c0, &c1);
        for (int c = c0; c < c1; c++) {
            double aw = 0, ab = 0;
            for (int n = 0; n < N; n++) {
                const float dy = dout[(size_t)n * C + c];
                aw += (double)dy * (inp[(size_t)n * C + c] - mean[n]) * rstd[n];
                ab += dy;
            }
            dw[c] += (float)aw, db[c] += (float)ab;
        }
    }
}

/* ---- matmul --------------------------------------------------------------------------------- */

/* C (M, Nc) = A' (M, K) · B' (K, Nc) + beta C, A' = A or Aᵀ, B' = B or Bᵀ, row-major, cut into
 * fixed GEMM_MB × GEMM_NB tiles shared out across threads. OpenBLAS picks its kernel (and so the
 * order of a sum) from the shape of a call; fixed tiles make every call's shape, and so every bit
 * of the result, independent of the thread count. */
#define GEMM_MB 256
#define GEMM_NB 512
static void gemm_tiled(int trans_a, int trans_b, int M, int Nc, int K, const float *A, int lda,
                       const float *B, int ldb, float beta, float *C, int ldc, int n_threads) {
    const int tm = (M + GEMM_MB - 1) / GEMM_MB, tn = (Nc + GEMM_NB - 1) / GEMM_NB;
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int t = 0; t < tm * tn; t++) {
        const int i0 = t / tn * GEMM_MB, j0 = t % tn * GEMM_NB;
        const int m = M - i0 < GEMM_MB ? M - i0 : GEMM_MB,
                  n = Nc - j0 < GEMM_NB ? Nc - j0 : GEMM_NB;
        cblas_sgemm(
            CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
            m, n, K, 1.0f, trans_a ? A + i0 : A + (size_t)i0 * lda, lda,
            trans_b ? B + (size_t)j0 * ldb : B + j0, ldb, beta, C + (size_t)i0 * ldc + j0, ldc);
    }
}

void matmul_forward(float *out, const float *inp, const float *w, int N, int IC, int OC,
                    int n_threads) {
    gemm_tiled(0, 1, N, OC, IC, inp, IC, w, IC, 0.0f, out, OC, n_threads);
}

void matmul_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                     int N, int IC, int OC, int n_threads) {
    if (dinp)
        gemm_tiled(0, 0, N, IC, OC, dout, OC, w, IC, 1.0f, dinp, IC, n_threads); /* += dout · w */
    if (dw)
        gemm_tiled(1, 0, OC, IC, N, dout, OC, inp, IC, 1.0f, dw, IC,
                   n_threads); /* += doutᵀ · inp */
}

/* ---- RoPE ----------------------------------------------------------------------------------- */

size_t rope_table_floats(int T, int n_rot) { return (size_t)T * (n_rot / 2) * 2; }

/* Row t of the table for position pos ? pos[t] : t. */
static void rope_table_fill(float *table, const int64_t *pos, int T, int n_rot, float base) {
    const int R = n_rot / 2;
    for (int i = 0; i < R; i++) {
        const double inv_freq = pow((double)base, -2.0 * i / n_rot);
        for (int t = 0; t < T; t++) {
            const double th = (double)(pos ? pos[t] : t) * inv_freq;
            table[((size_t)t * R + i) * 2] = (float)cos(th);
            table[((size_t)t * R + i) * 2 + 1] = (float)sin(th);
        }
    }
}

void rope_table_init(float *table, int T, int n_rot, float base) {
    rope_table_fill(table, NULL, T, n_rot, base);
}

void rope_table_at(float *table, const int64_t *pos, int n, int n_rot, float base) {
    rope_table_fill(table, pos, n, n_rot, base);
}

/* Rotate each head's first n_rot dims by +θ (sign = 1) or −θ (sign = −1, the transpose). */
static void rope_rotate(float *out, const float *inp, const float *table, int N, int T, int n_heads,
                        int d, int n_rot, float sign, int accumulate, int n_threads) {
    const int R = n_rot / 2, W = n_heads * d;
#pragma omp parallel for schedule(static) if (N > 8) num_threads(n_threads)
    for (int n = 0; n < N; n++) {
        const float *cs = table + (size_t)(n % T) * R * 2;
        const float *x = inp + (size_t)n * W;
        float *y = out + (size_t)n * W;
        for (int h = 0; h < n_heads; h++) {
            const float *xh = x + h * d;
            float *yh = y + h * d;
            for (int i = 0; i < R; i++) {
                const float c = cs[2 * i], s = sign * cs[2 * i + 1];
                const float a = xh[2 * i], b = xh[2 * i + 1];
                const float ya = a * c - b * s, yb = a * s + b * c;
                if (accumulate)
                    yh[2 * i] += ya, yh[2 * i + 1] += yb;
                else
                    yh[2 * i] = ya, yh[2 * i + 1] = yb;
            }
            for (int i = n_rot; i < d; i++) yh[i] = accumulate ? yh[i] + xh[i] : xh[i];
        }
    }
}

void rope_forward(float *out, const float *inp, const float *table, int N, int T, int n_heads,
                  int d, int n_rot, int n_threads) {
    rope_rotate(out, inp, table, N, T, n_heads, d, n_rot, 1.0f, 0, n_threads);
}

void rope_backward(float *dinp, const float *dout, const float *table, int N, int T, int n_heads,
                   int d, int n_rot, int n_threads) {
    rope_rotate(dinp, dout, table, N, T, n_heads, d, n_rot, -1.0f, 1, n_threads);
}

/* ---- attention ------------------------------------------------------------------------------ */

/* per thread: S/P tile, dP tile, the output accumulator, running max and sum, D = rowsum(dO∘O) */
static size_t att_thread_floats(int T, int d) {
    return (size_t)ATT_BQ * ATT_BK * 2 + (size_t)ATT_BQ * d + 2 * ATT_BQ + (size_t)T;
}

size_t attention_scratch_floats(int T, int d, int n_threads) {
    return att_thread_floats(T, d) * (size_t)(n_threads > 0 ? n_threads : 1);
}

void attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                       int B, int T, int H, int Hkv, int d, float *scratch, int n_threads) {
    const int qs = H * d, ks = Hkv * d, group = H / Hkv;
    const float scale = 1.0f / sqrtf((float)d);
    const int n_qt = (T + ATT_BQ - 1) / ATT_BQ;
    const int units = B * H * n_qt;
#pragma omp parallel num_threads(n_threads)
    {
        float *S = scratch + att_thread_floats(T, d) * omp_get_thread_num();
        float *O = S + 2 * ATT_BQ * ATT_BK, *m = O + (size_t)ATT_BQ * d, *l = m + ATT_BQ;
#pragma omp for schedule(dynamic, 1)
        for (int u = 0; u < units; u++) {
            /* largest query tiles first: they have the most keys */
            const int qt = n_qt - 1 - u % n_qt, bh = u / n_qt, b = bh / H, h = bh % H;
            const int i0 = qt * ATT_BQ, nq = T - i0 < ATT_BQ ? T - i0 : ATT_BQ;
            const float *Q = q + ((size_t)b * T + i0) * qs + h * d;
            const float *K = k + (size_t)b * T * ks + (h / group) * d;
            const float *V = v + (size_t)b * T * ks + (h / group) * d;
            for (int i = 0; i < nq; i++) m[i] = -INFINITY, l[i] = 0;
            memset(O, 0, (size_t)nq * d * sizeof(float));
            for (int j0 = 0; j0 < i0 + nq; j0 += ATT_BK) {
                const int nk = i0 + nq - j0 < ATT_BK ? i0 + nq - j0 : ATT_BK;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, d, scale, Q, qs,
                            K + (size_t)j0 * ks, ks, 0.0f, S, ATT_BK);
                for (int i = 0; i < nq; i++) {
                    float *s = S + (size_t)i * ATT_BK;
                    const int lim = i0 + i - j0 + 1 < nk ? i0 + i - j0 + 1 : nk; /* causal */
                    if (lim <= 0) { /* a key tile wholly after this query (ATT_BK < ATT_BQ) */
                        memset(s, 0, (size_t)nk * sizeof(float));
                        continue;
                    }
                    float mx = m[i];
                    for (int j = 0; j < lim; j++) mx = s[j] > mx ? s[j] : mx;
                    const float corr = expf(m[i] - mx); /* 0 on the first tile (m = -inf) */
                    const float sum = exp_sub_sum(s, lim, mx);
                    for (int j = lim; j < nk; j++) s[j] = 0;
                    l[i] = l[i] * corr + sum;
                    m[i] = mx;
                    if (corr != 1.0f)
                        for (int c = 0; c < d; c++) O[(size_t)i * d + c] *= corr;
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, d, nk, 1.0f, S, ATT_BK,
                            V + (size_t)j0 * ks, ks, 1.0f, O, d);
            }
            for (int i = 0; i < nq; i++) {
                float *o = out + ((size_t)b * T + i0 + i) * qs + h * d;
                const float inv = 1.0f / l[i];
                for (int c = 0; c < d; c++) o[c] = O[(size_t)i * d + c] * inv;
                lse[((size_t)b * H + h) * T + i0 + i] = m[i] + logf(l[i]);
            }
        }
    }
}

void attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                        const float *k, const float *v, const float *out, const float *lse, int B,
                        int T, int H, int Hkv, int d, float *scratch, int n_threads) {
    const int qs = H * d, ks = Hkv * d, group = H / Hkv;
    const float scale = 1.0f / sqrtf((float)d);
    /* one unit = one (sequence, kv head): it owns dk and dv of that head, and dq of its group's
     * query heads, so no two threads write the same gradient */
#pragma omp parallel num_threads(n_threads)
    {
        float *P = scratch + att_thread_floats(T, d) * omp_get_thread_num();
        float *dP = P + ATT_BQ * ATT_BK;
        float *D = dP + ATT_BQ * ATT_BK + (size_t)ATT_BQ * d + 2 * ATT_BQ;
#pragma omp for schedule(dynamic, 1)
        for (int u = 0; u < B * Hkv; u++) {
            const int b = u / Hkv, g = u % Hkv;
            const float *K = k + (size_t)b * T * ks + g * d, *V = v + (size_t)b * T * ks + g * d;
            float *dK = dk + (size_t)b * T * ks + g * d, *dV = dv + (size_t)b * T * ks + g * d;
            for (int h = g * group; h < (g + 1) * group; h++) {
                const float *Q = q + (size_t)b * T * qs + h * d;
                const float *dO = dout + (size_t)b * T * qs + h * d;
                const float *O = out + (size_t)b * T * qs + h * d;
                const float *L = lse + ((size_t)b * H + h) * T;
                float *dQ = dq + (size_t)b * T * qs + h * d;
                for (int t = 0; t < T; t++) { /* D_t = dO_t · O_t */
                    float s = 0;
                    for (int c = 0; c < d; c++) s += dO[(size_t)t * qs + c] * O[(size_t)t * qs + c];
                    D[t] = s;
                }
                for (int j0 = 0; j0 < T; j0 += ATT_BK) {
                    const int nk = T - j0 < ATT_BK ? T - j0 : ATT_BK;
                    for (int i0 = (j0 / ATT_BQ) * ATT_BQ; i0 < T; i0 += ATT_BQ) {
                        const int nq = T - i0 < ATT_BQ ? T - i0 : ATT_BQ;
                        /* P = exp(scale Q Kᵀ − lse), causal */
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, d, scale,
                                    Q + (size_t)i0 * qs, qs, K + (size_t)j0 * ks, ks, 0.0f, P,
                                    ATT_BK);
                        for (int i = 0; i < nq; i++) {
                            float *p = P + (size_t)i * ATT_BK;
                            const int lim = i0 + i - j0 + 1 < nk ? i0 + i - j0 + 1 : nk;
                            const float li = L[i0 + i];
                            if (lim > 0) exp_sub_sum(p, lim, li);
                            for (int j = lim > 0 ? lim : 0; j < nk; j++) p[j] = 0;
                        }
                        /* dV += Pᵀ dO */
                        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, d, nq, 1.0f, P,
                                    ATT_BK, dO + (size_t)i0 * qs, qs, 1.0f, dV + (size_t)j0 * ks,
                                    ks);
                        /* dP = dO Vᵀ; dS = P ∘ (dP − D) · scale */
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, d, 1.0f,
                                    dO + (size_t)i0 * qs, qs, V + (size_t)j0 * ks, ks, 0.0f, dP,
                                    ATT_BK);
                        for (int i = 0; i < nq; i++) {
                            float *p = P + (size_t)i * ATT_BK, *dp = dP + (size_t)i * ATT_BK;
                            const float Di = D[i0 + i];
                            for (int j = 0; j < nk; j++) dp[j] = p[j] * (dp[j] - Di) * scale;
                        }
                        /* dQ += dS K; dK += dSᵀ Q */
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, d, nk, 1.0f, dP,
                                    ATT_BK, K + (size_t)j0 * ks, ks, 1.0f, dQ + (size_t)i0 * qs,
                                    qs);
                        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, d, nq, 1.0f, dP,
                                    ATT_BK, Q + (size_t)i0 * qs, qs, 1.0f, dK + (size_t)j0 * ks,
                                    ks);
                    }
                }
            }
        }
    }
}

void softmax(float *x, int n) {
    float max = x[0];
    for (int i = 1; i < n; i++) max = x[i] > max ? x[i] : max;
    const float inv = 1.0f / exp_sub_sum(x, n, max);
    for (int i = 0; i < n; i++) x[i] *= inv;
}

/* ---- SwiGLU --------------------------------------------------------------------------------- */

/* silu(g) · u of n floats, eight at a time where AVX2 is (exp256). */
static void swiglu_span(float *out, const float *gate, const float *up, size_t n) {
    size_t i = 0;
#ifdef __AVX2__
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8) {
        const __m256 g = _mm256_loadu_ps(gate + i);
        const __m256 e = exp256(_mm256_sub_ps(zero, g));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)),
                                                _mm256_loadu_ps(up + i)));
    }
#endif
    for (; i < n; i++) {
        const float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

void swiglu_forward(float *out, const float *gate, const float *up, int N, int F, int n_threads) {
#pragma omp parallel for schedule(static) if (N > 8) num_threads(n_threads)
    for (int t = 0; t < N; t++)
        swiglu_span(out + (size_t)t * F, gate + (size_t)t * F, up + (size_t)t * F, (size_t)F);
}

void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                     const float *up, int N, int F, int n_threads) {
    const size_t n = (size_t)N * F;
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (size_t i = 0; i < n; i++) {
        const float g = gate[i], s = 1.0f / (1.0f + expf(-g));
        dgate[i] += dout[i] * up[i] * s * (1.0f + g * (1.0f - s));
        dup[i] += dout[i] * g * s;
    }
}

/* ---- cross-entropy -------------------------------------------------------------------------- */

static float row_logsumexp(const float *x, int V) {
    float mx = x[0];
    for (int i = 1; i < V; i++) mx = x[i] > mx ? x[i] : mx;
    double s = 0;
    for (int i = 0; i < V; i++) s += expf(x[i] - mx);
    return mx + (float)log(s);
}

void crossentropy_forward(float *losses, const float *logits, const int32_t *targets, int N, int V,
                          int n_threads) {
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int n = 0; n < N; n++) {
        const float *x = logits + (size_t)n * V;
        losses[n] = row_logsumexp(x, V) - x[targets[n]];
    }
}

void crossentropy_backward(float *dlogits, const float *logits, const int32_t *targets, float dloss,
                           int N, int V, int n_threads) {
    const int in_place = dlogits == logits;
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int n = 0; n < N; n++) {
        const float *x = logits + (size_t)n * V;
        float *dx = dlogits + (size_t)n * V;
        const float lse = row_logsumexp(x, V);
        for (int i = 0; i < V; i++) {
            const float g = dloss * expf(x[i] - lse);
            dx[i] = in_place ? g : dx[i] + g;
        }
        dx[targets[n]] -= dloss;
    }
}
