/* test_train_ops.c — every training op of src/nn/ops.h on its own.
 *
 * Forwards are compared with naive double-precision references written here. Backwards are
 * compared with central finite differences of the scalar J = Σ r∘out (r random and fixed, so
 * dout = r), the forward run in f32 and J summed in double; attention's backward is also compared
 * with a naive double backward of the T×T softmax (itself checked against double finite
 * differences first). Then the contract's other promises: every backward accumulates (+=), matmul
 * takes NULL gradients, rope's forward and crossentropy's backward work in place, attention is
 * causal, and results are bit-identical whatever the thread count.
 *
 * Tolerances (struct tolerance): a result a passes against a reference g when its normalised error
 * ‖a − g‖ / ‖g‖ and its worst entry error max |a_i − g_i| / (|g_i| + floor) are both within the
 * limits; the floor, rms(g)/10 unless said otherwise, keeps entries far below the typical one from
 * being held to a relative accuracy the reference lacks. The worst errors seen are printed at the
 * end, and negative controls (a backward with a term dropped, one entry 5% off) show the checks
 * reject what they should.
 */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "check.h"
#include "nn/ops.h"
#include "tensor/kernels.h"

static uint64_t rng = 20240611;
static float frand(void) { /* uniform in [-1, 1) */
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 40) / (double)(1ull << 24)) * 2 - 1;
}

static float *fvec(size_t n, float amp) { /* uniform in [-amp, amp) */
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = amp * frand();
    return x;
}
static float *fzeros(size_t n) { return calloc(n, sizeof(float)); }
static double *dzeros(size_t n) { return calloc(n, sizeof(double)); }
static double *to_double(const float *x, size_t n, double scale) {
    double *g = malloc(n * sizeof *g);
    for (size_t i = 0; i < n; i++) g[i] = scale * x[i];
    return g;
}
static double dot_rd(const float *r, const float *x, size_t n) { /* Σ r∘x in double */
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)r[i] * x[i];
    return s;
}
static int same_bits(const float *a, const float *b, size_t n) {
    return memcmp(a, b, n * sizeof *a) == 0;
}

/* ---- tolerances ----------------------------------------------------------------------------- */

typedef struct {
    const char *what;
    double norm, entry;             /* the limits */
    double floor;                   /* of the entry error's denominator, as a fraction of rms(g) */
    double worst_norm, worst_entry; /* the worst seen where the check was meant to pass */
} tolerance;

/* Central differences of an f32 forward: truncation O(h²) ≈ 1e-5 relative with h = 1e-2, rounding
 * of the outputs ≈ 1e-7·|out| / 2h ≈ 1e-5 of a gradient entry; 1e-3 / 2e-2 leave 10× / 15× room
 * over the worst seen, while a dropped term or a sign flip gives errors of order 1e-1 to 2. */
static tolerance tol_fd = {"backward vs finite differences", 1e-3, 2e-2, 0.1, 0, 0};
/* f32 against double: a handful of roundings (≈ 1e-7), sums of up to a few hundred terms. */
static tolerance tol_fwd = {"forward vs double reference", 1e-5, 1e-4, 0.1, 0, 0};
/* Attention against the double T×T softmax. f32 scores s carry errors ≈ 1e-7·|s| (|s| up to 30
 * here), so every probability, and so every output and gradient, is off by ≈ 1e-6 of the scale of
 * v and dout, not of its own size: the entry error is floored at the rms of the reference (the
 * forward's max error stays within 1e-5 of the output scale). */
static tolerance tol_att_fwd = {"attention forward vs double", 1e-5, 1e-4, 1, 0, 0};
static tolerance tol_att = {"attention backward vs double backward", 2e-5, 2e-4, 1, 0, 0};
/* the same quantity computed twice: accumulating twice, NULL gradients, in place */
static tolerance tol_same = {"same result two ways", 1e-6, 1e-5, 0.1, 0, 0};
/* the double backward of attention against double finite differences (h = 1e-3: truncation only) */
static tolerance tol_oracle = {
    "double attention backward vs double differences", 1e-5, 1e-4, 0.1, 0, 0};

static int within(const tolerance *t, const float *a, const double *g, size_t n, double *norm,
                  double *entry, size_t *worst) {
    double ss = 0, se = 0;
    for (size_t i = 0; i < n; i++) ss += g[i] * g[i], se += (a[i] - g[i]) * (a[i] - g[i]);
    const double floor = t->floor * sqrt(ss / (double)n);
    *norm = ss > 0 ? sqrt(se / ss) : sqrt(se / (double)n); /* all-zero reference: absolute */
    *entry = 0, *worst = 0;
    for (size_t i = 0; i < n; i++) {
        const double den = fabs(g[i]) + floor, e = fabs(a[i] - g[i]) / (den > 0 ? den : 1);
        if (e > *entry || e != e) *entry = e, *worst = i;
    }
    return *norm <= t->norm && *entry <= t->entry;
}

/* max |a − g| / max |g|: the error relative to the output's scale */
static double scaled_max_err(const float *a, const double *g, size_t n) {
    double e = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        e = fmax(e, fabs(a[i] - g[i]));
        m = fmax(m, fabs(g[i]));
    }
    return m > 0 ? e / m : e;
}
static double worst_att_scaled;

static void compare(tolerance *t, const float *a, const double *g, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void compare(tolerance *t, const float *a, const double *g, size_t n, const char *fmt, ...) {
    double norm, entry;
    size_t wi;
    const int ok = within(t, a, g, n, &norm, &entry, &wi);
    checks++;
    if (norm > t->worst_norm) t->worst_norm = norm;
    if (entry > t->worst_entry) t->worst_entry = entry;
    if (!ok) {
        failures++;
        char label[200];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(label, sizeof label, fmt, ap);
        va_end(ap);
        printf("FAIL %s (%s): normalised error %.3g (limit %.0e), worst entry error %.3g (limit "
               "%.0e) at [%zu]: got %.8g, want %.8g\n",
               label, t->what, norm, t->norm, entry, t->entry, wi, a[wi], g[wi]);
    }
}

/* ---- finite differences --------------------------------------------------------------------- */

typedef double (*objective)(void *ctx);

/* g[k] = dJ/dx[i] for i = idx[k] (i = k when idx is NULL), k < n, by central differences with the
 * step h·max(1, |x|); the step divided by is the one that rounding x ± h to f32 actually took. */
static void fd_grad(double *g, float *x, const size_t *idx, size_t n, double h, objective J,
                    void *ctx) {
    for (size_t k = 0; k < n; k++) {
        const size_t i = idx ? idx[k] : k;
        const float x0 = x[i], step = (float)(h * fmax(1.0, fabs(x0)));
        const float xp = x0 + step, xm = x0 - step;
        x[i] = xp;
        const double jp = J(ctx);
        x[i] = xm;
        const double jm = J(ctx);
        x[i] = x0;
        g[k] = (jp - jm) / ((double)xp - xm);
    }
    J(ctx); /* leave the forward's outputs as they were */
}

/* Finite differences of J in x against the analytic gradient a, on all n entries. */
static void check_fd(const float *a, float *x, size_t n, objective J, void *ctx, const char *what) {
    double *g = dzeros(n);
    fd_grad(g, x, NULL, n, 1e-2, J, ctx);
    compare(&tol_fd, a, g, n, "%s", what);
    free(g);
}

/* A backward run twice from zero must give twice the gradient of once (+=, not =). */
static void check_twice(const float *twice, const float *once, size_t n, const char *what) {
    double *g = to_double(once, n, 2.0);
    compare(&tol_same, twice, g, n, "%s accumulated twice", what);
    free(g);
}

/* ---- embedding ------------------------------------------------------------------------------ */

typedef struct {
    int N, C;
    const int32_t *tokens;
    float *wte, *out;
    const float *r;
} emb_case;

static double emb_J(void *p) {
    emb_case *c = p;
    embedding_forward(c->out, c->tokens, c->wte, c->N, c->C, omp_get_max_threads());
    return dot_rd(c->r, c->out, (size_t)c->N * c->C);
}

static void test_embedding(void) {
    enum { N = 12, C = 5, V = 7 };
    const int32_t tokens[N] = {3, 0, 6, 3, 3, 1, 6, 2, 0, 5, 3, 6}; /* 3 four times, 4 never */
    float *wte = fvec(V * C, 1), *out = fzeros(N * C), *r = fvec(N * C, 1);
    emb_case c = {N, C, tokens, wte, out, r};
    emb_J(&c);
    for (int n = 0; n < N; n++)
        CHECK(same_bits(out + n * C, wte + tokens[n] * C, C), "embedding row %d is not wte[%d]", n,
              tokens[n]);
    float *dwte = fzeros(V * C);
    embedding_backward(dwte, r, tokens, N, C, omp_get_max_threads());
    double *ref = dzeros(V * C);
    for (int n = 0; n < N; n++)
        for (int i = 0; i < C; i++) ref[tokens[n] * C + i] += r[n * C + i];
    compare(&tol_fwd, dwte, ref, V * C, "embedding dwte vs sum of rows");
    check_fd(dwte, wte, V * C, emb_J, &c, "embedding dwte");
    float *once = malloc(sizeof(float) * V * C);
    memcpy(once, dwte, sizeof(float) * V * C);
    embedding_backward(dwte, r, tokens, N, C, omp_get_max_threads());
    check_twice(dwte, once, V * C, "embedding dwte");
    free(wte), free(out), free(r), free(dwte), free(ref), free(once);
}

/* ---- RMSNorm -------------------------------------------------------------------------------- */

typedef struct {
    int N, C;
    float eps;
    float *inp, *w, *out, *rstd;
    const float *r;
} rms_case;

static double rms_J(void *p) {
    rms_case *c = p;
    rmsnorm_forward(c->out, c->rstd, c->inp, c->w, c->N, c->C, c->eps, omp_get_max_threads());
    return dot_rd(c->r, c->out, (size_t)c->N * c->C);
}

/* A wrong backward for the negative controls: the term through rstd dropped. */
static void rmsnorm_backward_no_rstd_term(float *dinp, const float *dout, const float *w,
                                          const float *rstd, int N, int C) {
    for (int n = 0; n < N; n++)
        for (int i = 0; i < C; i++) dinp[n * C + i] += rstd[n] * dout[n * C + i] * w[i];
}

static void test_rmsnorm(void) {
    const int sizes[][2] = {{6, 16}, {3, 600}, {2, 3}}; /* C = 600: more than one column block */
    for (int s = 0; s < 3; s++) {
        const int N = sizes[s][0], C = sizes[s][1];
        const size_t NC = (size_t)N * C;
        rms_case c = {N, C, 1e-5f, NULL, NULL, fzeros(NC), fzeros(N), NULL};
        c.inp = fvec(NC, 1), c.w = fvec(C, 1.5f), c.r = fvec(NC, 1);
        rms_J(&c);
        double *ref = dzeros(NC), *rstd_ref = dzeros(N);
        for (int n = 0; n < N; n++) {
            double ss = 0;
            for (int i = 0; i < C; i++) ss += (double)c.inp[n * C + i] * c.inp[n * C + i];
            rstd_ref[n] = 1 / sqrt(ss / C + c.eps);
            for (int i = 0; i < C; i++) ref[n * C + i] = c.inp[n * C + i] * rstd_ref[n] * c.w[i];
        }
        compare(&tol_fwd, c.out, ref, NC, "rmsnorm N=%d C=%d out", N, C);
        compare(&tol_fwd, c.rstd, rstd_ref, N, "rmsnorm N=%d C=%d rstd", N, C);

        float *dinp = fzeros(NC), *dw = fzeros(C);
        rmsnorm_backward(dinp, dw, c.r, c.inp, c.w, c.rstd, N, C, omp_get_max_threads());
        char what[64];
        snprintf(what, sizeof what, "rmsnorm N=%d C=%d dinp", N, C);
        check_fd(dinp, c.inp, NC, rms_J, &c, what);
        snprintf(what, sizeof what, "rmsnorm N=%d C=%d dw", N, C);
        check_fd(dw, c.w, C, rms_J, &c, what);

        float *dinp1 = malloc(NC * sizeof(float)), *dw1 = malloc(C * sizeof(float));
        memcpy(dinp1, dinp, NC * sizeof(float)), memcpy(dw1, dw, C * sizeof(float));
        rmsnorm_backward(dinp, dw, c.r, c.inp, c.w, c.rstd, N, C, omp_get_max_threads());
        check_twice(dinp, dinp1, NC, "rmsnorm dinp");
        check_twice(dw, dw1, C, "rmsnorm dw");

        if (s == 0) { /* negative control: without the rstd term the check must fail */
            float *bad = fzeros(NC);
            rmsnorm_backward_no_rstd_term(bad, c.r, c.w, c.rstd, N, C);
            double *g = dzeros(NC), norm, entry;
            size_t wi;
            fd_grad(g, c.inp, NULL, NC, 1e-2, rms_J, &c);
            CHECK(!within(&tol_fd, bad, g, NC, &norm, &entry, &wi),
                  "control: rmsnorm dinp without the rstd term passed (norm %.3g, entry %.3g)",
                  norm, entry);
            free(bad), free(g);
        }
        free(c.inp), free(c.w), free(c.out), free(c.rstd), free((float *)c.r);
        free(ref), free(rstd_ref), free(dinp), free(dw), free(dinp1), free(dw1);
    }
}

/* ---- matmul --------------------------------------------------------------------------------- */

typedef struct {
    int N, IC, OC;
    float *inp, *w, *out;
    const float *r;
} mm_case;

static double mm_J(void *p) {
    mm_case *c = p;
    matmul_forward(c->out, c->inp, c->w, c->N, c->IC, c->OC, omp_get_max_threads());
    return dot_rd(c->r, c->out, (size_t)c->N * c->OC);
}

static void test_matmul(void) {
    const int sizes[][3] = {{5, 7, 6}, {9, 33, 17}, {1, 3, 1}, {40, 20, 3}};
    for (int s = 0; s < 4; s++) {
        const int N = sizes[s][0], IC = sizes[s][1], OC = sizes[s][2];
        const size_t NI = (size_t)N * IC, WI = (size_t)OC * IC, NO = (size_t)N * OC;
        mm_case c = {N, IC, OC, NULL, NULL, fzeros(NO), NULL};
        c.inp = fvec(NI, 1), c.w = fvec(WI, 1), c.r = fvec(NO, 1);
        mm_J(&c);
        double *ref = dzeros(NO);
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OC; o++)
                for (int i = 0; i < IC; i++)
                    ref[n * OC + o] += (double)c.inp[n * IC + i] * c.w[o * IC + i];
        compare(&tol_fwd, c.out, ref, NO, "matmul N=%d IC=%d OC=%d out", N, IC, OC);

        float *dinp = fzeros(NI), *dw = fzeros(WI);
        matmul_backward(dinp, dw, c.r, c.inp, c.w, N, IC, OC, omp_get_max_threads());
        char what[64];
        snprintf(what, sizeof what, "matmul N=%d IC=%d OC=%d dinp", N, IC, OC);
        check_fd(dinp, c.inp, NI, mm_J, &c, what);
        snprintf(what, sizeof what, "matmul N=%d IC=%d OC=%d dw", N, IC, OC);
        check_fd(dw, c.w, WI, mm_J, &c, what);

        /* either gradient alone (the other NULL) is the same as both at once */
        float *dinp1 = fzeros(NI), *dw1 = fzeros(WI);
        matmul_backward(dinp1, NULL, c.r, c.inp, c.w, N, IC, OC, omp_get_max_threads());
        matmul_backward(NULL, dw1, c.r, c.inp, c.w, N, IC, OC, omp_get_max_threads());
        double *g = to_double(dinp, NI, 1);
        compare(&tol_same, dinp1, g, NI, "matmul N=%d dinp with dw NULL", N);
        free(g), g = to_double(dw, WI, 1);
        compare(&tol_same, dw1, g, WI, "matmul N=%d dw with dinp NULL", N);
        free(g);

        memcpy(dinp1, dinp, NI * sizeof(float)), memcpy(dw1, dw, WI * sizeof(float));
        matmul_backward(dinp, dw, c.r, c.inp, c.w, N, IC, OC, omp_get_max_threads());
        check_twice(dinp, dinp1, NI, "matmul dinp");
        check_twice(dw, dw1, WI, "matmul dw");

        if (s == 1) { /* negative control: one entry of dw 5% off must fail */
            size_t big = 0;
            for (size_t i = 0; i < WI; i++) big = fabsf(dw1[i]) > fabsf(dw1[big]) ? i : big;
            dw1[big] *= 1.05f;
            double *fd = dzeros(WI), norm, entry;
            size_t wi;
            fd_grad(fd, c.w, NULL, WI, 1e-2, mm_J, &c);
            CHECK(!within(&tol_fd, dw1, fd, WI, &norm, &entry, &wi),
                  "control: matmul dw with one entry 5%% off passed (norm %.3g, entry %.3g)", norm,
                  entry);
            free(fd);
        }
        free(c.inp), free(c.w), free(c.out), free((float *)c.r), free(ref);
        free(dinp), free(dw), free(dinp1), free(dw1);
    }
}

/* ---- RoPE ----------------------------------------------------------------------------------- */

typedef struct {
    int N, T, nh, d, n_rot;
    float *inp, *out;
    const float *table, *r;
} rope_case;

static double rope_J(void *p) {
    rope_case *c = p;
    rope_forward(c->out, c->inp, c->table, c->N, c->T, c->nh, c->d, c->n_rot,
                 omp_get_max_threads());
    return dot_rd(c->r, c->out, (size_t)c->N * c->nh * c->d);
}

/* out = R(sign · θ) x in double: pairs (2i, 2i+1), i < n_rot/2, by pos · base^(-2i/n_rot) (ops.h;
 * it is the same as base^(-2i/d) when n_rot = d), pos = n % T; sign -1 is the transpose. */
static void rope_ref(double *out, const float *x, int N, int T, int nh, int d, int n_rot,
                     double base, int sign) {
    for (int n = 0; n < N; n++)
        for (int h = 0; h < nh; h++) {
            const float *xh = x + ((size_t)n * nh + h) * d;
            double *yh = out + ((size_t)n * nh + h) * d;
            for (int i = 0; i < d; i++) yh[i] = xh[i];
            for (int i = 0; i < n_rot / 2; i++) {
                const double th = sign * (n % T) * pow(base, -2.0 * i / n_rot);
                const double a = xh[2 * i], b = xh[2 * i + 1];
                yh[2 * i] = a * cos(th) - b * sin(th);
                yh[2 * i + 1] = a * sin(th) + b * cos(th);
            }
        }
}

static void test_rope(void) {
    /* B, T, heads, d, n_rot, base, finite differences? (T = 4096: angles of thousands of radians,
     * which only a table computed in double gets right to f32 precision) */
    const struct {
        int B, T, nh, d, n_rot;
        float base;
        int fd;
    } cases[] = {{2, 5, 3, 8, 8, 10000, 1},
                 {1, 7, 2, 12, 4, 100, 1},
                 {3, 4, 1, 6, 2, 10, 1},
                 {2, 33, 4, 64, 64, 10000, 0},
                 {1, 4096, 1, 16, 8, 10000, 0}};
    for (size_t s = 0; s < sizeof cases / sizeof *cases; s++) {
        const int B = cases[s].B, T = cases[s].T, nh = cases[s].nh, d = cases[s].d,
                  n_rot = cases[s].n_rot, N = B * T;
        const size_t n = (size_t)N * nh * d;
        float *table = malloc(rope_table_floats(T, n_rot) * sizeof(float));
        rope_table_init(table, T, n_rot, cases[s].base);
        rope_case c = {N, T, nh, d, n_rot, NULL, fzeros(n), table, NULL};
        c.inp = fvec(n, 1), c.r = fvec(n, 1);
        rope_J(&c);
        double *ref = dzeros(n);
        rope_ref(ref, c.inp, N, T, nh, d, n_rot, cases[s].base, 1);
        compare(&tol_fwd, c.out, ref, n, "rope T=%d d=%d n_rot=%d out", T, d, n_rot);
        float *inplace = malloc(n * sizeof(float));
        memcpy(inplace, c.inp, n * sizeof(float));
        rope_forward(inplace, inplace, table, N, T, nh, d, n_rot, omp_get_max_threads());
        compare(&tol_fwd, inplace, ref, n, "rope T=%d d=%d n_rot=%d out in place", T, d, n_rot);
        CHECK(same_bits(inplace, c.out, n), "rope T=%d d=%d: in place differs from out of place", T,
              d);

        float *dinp = fzeros(n);
        rope_backward(dinp, c.r, table, N, T, nh, d, n_rot, omp_get_max_threads());
        rope_ref(ref, c.r, N, T, nh, d, n_rot, cases[s].base, -1);
        compare(&tol_fwd, dinp, ref, n, "rope T=%d d=%d n_rot=%d dinp vs R(-θ) dout", T, d, n_rot);
        if (cases[s].fd) {
            char what[64];
            snprintf(what, sizeof what, "rope T=%d d=%d n_rot=%d dinp", T, d, n_rot);
            check_fd(dinp, c.inp, n, rope_J, &c, what);
        }
        float *once = malloc(n * sizeof(float));
        memcpy(once, dinp, n * sizeof(float));
        rope_backward(dinp, c.r, table, N, T, nh, d, n_rot, omp_get_max_threads());
        check_twice(dinp, once, n, "rope dinp");
        free(table), free(c.inp), free(c.out), free((float *)c.r), free(ref), free(inplace);
        free(dinp), free(once);
    }
}

/* ---- attention ------------------------------------------------------------------------------ */

/* Causal softmax attention in double, with the T×T scores: out (N, H·d), lse (B, H, T). */
static void att_ref_forward(double *out, double *lse, const float *q, const float *k,
                            const float *v, int B, int T, int H, int Hkv, int d) {
    const int qs = H * d, ks = Hkv * d, group = H / Hkv;
    const double scale = 1 / sqrt(d);
    double *p = malloc(T * sizeof *p);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < T; t++) {
                const float *qt = q + ((size_t)b * T + t) * qs + h * d;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j <= t; j++) {
                    const float *kj = k + ((size_t)b * T + j) * ks + h / group * d;
                    double s = 0;
                    for (int c = 0; c < d; c++) s += (double)qt[c] * kj[c];
                    p[j] = s * scale;
                    mx = p[j] > mx ? p[j] : mx;
                }
                for (int j = 0; j <= t; j++) sum += p[j] = exp(p[j] - mx);
                double *o = out + ((size_t)b * T + t) * qs + h * d;
                for (int c = 0; c < d; c++) o[c] = 0;
                for (int j = 0; j <= t; j++) {
                    const float *vj = v + ((size_t)b * T + j) * ks + h / group * d;
                    for (int c = 0; c < d; c++) o[c] += p[j] / sum * vj[c];
                }
                lse[((size_t)b * H + h) * T + t] = mx + log(sum);
            }
    free(p);
}

/* Its backward in double (gradients set, not accumulated): with P the softmax, dP = dO Vᵀ,
 * dS = P ∘ (dP − rowsum(P ∘ dP)), dQ = scale dS K, dK = scale dSᵀ Q, dV = Pᵀ dO. drop_D leaves out
 * the rowsum term: a wrong backward for the negative controls. */
static void att_ref_backward(double *dq, double *dk, double *dv, const float *dout, const float *q,
                             const float *k, const float *v, int B, int T, int H, int Hkv, int d,
                             int drop_D) {
    const int qs = H * d, ks = Hkv * d, group = H / Hkv;
    const double scale = 1 / sqrt(d);
    memset(dq, 0, (size_t)B * T * qs * sizeof *dq);
    memset(dk, 0, (size_t)B * T * ks * sizeof *dk);
    memset(dv, 0, (size_t)B * T * ks * sizeof *dv);
    double *p = malloc(T * sizeof *p), *dp = malloc(T * sizeof *dp);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < T; t++) {
                const size_t qo = ((size_t)b * T + t) * qs + h * d;
                const float *qt = q + qo, *dot = dout + qo;
                double mx = -INFINITY, sum = 0, D = 0;
                for (int j = 0; j <= t; j++) {
                    const float *kj = k + ((size_t)b * T + j) * ks + h / group * d;
                    const float *vj = v + ((size_t)b * T + j) * ks + h / group * d;
                    double s = 0, e = 0;
                    for (int c = 0; c < d; c++)
                        s += (double)qt[c] * kj[c], e += (double)dot[c] * vj[c];
                    p[j] = s * scale, dp[j] = e;
                    mx = p[j] > mx ? p[j] : mx;
                }
                for (int j = 0; j <= t; j++) sum += p[j] = exp(p[j] - mx);
                for (int j = 0; j <= t; j++) p[j] /= sum, D += p[j] * dp[j];
                for (int j = 0; j <= t; j++) {
                    const size_t ko = ((size_t)b * T + j) * ks + h / group * d;
                    const double ds = p[j] * (dp[j] - (drop_D ? 0 : D)) * scale;
                    for (int c = 0; c < d; c++) {
                        dq[qo + c] += ds * k[ko + c];
                        dk[ko + c] += ds * qt[c];
                        dv[ko + c] += p[j] * dot[c];
                    }
                }
            }
    free(p), free(dp);
}

typedef struct {
    int B, T, H, Hkv, d;
    float *q, *k, *v, *out, *lse, *scratch;
    const float *r;
    double *rout, *rlse; /* for the double objective */
} att_case;

static att_case att_new(int B, int T, int H, int Hkv, int d, float qk_amp) {
    const size_t nq = (size_t)B * T * H * d, nk = (size_t)B * T * Hkv * d;
    att_case c = {B,          T,
                  H,          Hkv,
                  d,          NULL,
                  NULL,       NULL,
                  fzeros(nq), fzeros((size_t)B * H * T),
                  NULL,       NULL,
                  dzeros(nq), dzeros((size_t)B * H * T)};
    c.q = fvec(nq, qk_amp), c.k = fvec(nk, qk_amp), c.v = fvec(nk, 1), c.r = fvec(nq, 1);
    c.scratch = malloc(attention_scratch_floats(T, d, omp_get_max_threads()) * sizeof(float));
    return c;
}
static void att_free(att_case *c) {
    free(c->q), free(c->k), free(c->v), free(c->out), free(c->lse), free(c->scratch);
    free((float *)c->r), free(c->rout), free(c->rlse);
}

static double att_J(void *p) {
    att_case *c = p;
    attention_forward(c->out, c->lse, c->q, c->k, c->v, c->B, c->T, c->H, c->Hkv, c->d, c->scratch,
                      omp_get_max_threads());
    return dot_rd(c->r, c->out, (size_t)c->B * c->T * c->H * c->d);
}
static double att_ref_J(void *p) {
    att_case *c = p;
    att_ref_forward(c->rout, c->rlse, c->q, c->k, c->v, c->B, c->T, c->H, c->Hkv, c->d);
    double s = 0;
    for (size_t i = 0; i < (size_t)c->B * c->T * c->H * c->d; i++) s += c->r[i] * c->rout[i];
    return s;
}

/* Forward and backward of c from zero gradients into dq, dk, dv (and c->out, c->lse). */
static void att_run(att_case *c, float *dq, float *dk, float *dv) {
    const size_t nq = (size_t)c->B * c->T * c->H * c->d, nk = (size_t)c->B * c->T * c->Hkv * c->d;
    att_J(c);
    memset(dq, 0, nq * sizeof *dq), memset(dk, 0, nk * sizeof *dk), memset(dv, 0, nk * sizeof *dv);
    attention_backward(dq, dk, dv, c->r, c->q, c->k, c->v, c->out, c->lse, c->B, c->T, c->H, c->Hkv,
                       c->d, c->scratch, omp_get_max_threads());
}

/* The double backward against double finite differences of the double forward: the oracle the
 * larger cases are judged by must itself be right. */
static void test_attention_oracle(void) {
    att_case c = att_new(2, 6, 4, 2, 4, 2);
    const size_t nq = (size_t)2 * 6 * 4 * 4, nk = nq / 2;
    double *dq = dzeros(nq), *dk = dzeros(nk), *dv = dzeros(nk), *fd = dzeros(nq);
    att_ref_backward(dq, dk, dv, c.r, c.q, c.k, c.v, 2, 6, 4, 2, 4, 0);
    float *x[3] = {c.q, c.k, c.v};
    const double *a[3] = {dq, dk, dv};
    const char *names[3] = {"dq", "dk", "dv"};
    for (int t = 0; t < 3; t++) {
        const size_t n = t ? nk : nq;
        fd_grad(fd, x[t], NULL, n, 1e-3, att_ref_J, &c);
        float *af = malloc(n * sizeof *af);
        for (size_t i = 0; i < n; i++) af[i] = (float)a[t][i];
        /* the double gradient rounded to f32 is still far more precise than tol_oracle */
        compare(&tol_oracle, af, fd, n, "double attention backward %s", names[t]);
        free(af);
    }
    free(dq), free(dk), free(dv), free(fd);
    att_free(&c);
}

/* Finite differences of the f32 attention, on every entry (small T) or on a sample of entries. */
static void test_attention_fd(int B, int T, int H, int Hkv, int d, int samples) {
    att_case c = att_new(B, T, H, Hkv, d, 2);
    const size_t nq = (size_t)B * T * H * d, nk = (size_t)B * T * Hkv * d;
    float *dq = fzeros(nq), *dk = fzeros(nk), *dv = fzeros(nk);
    att_run(&c, dq, dk, dv);
    float *x[3] = {c.q, c.k, c.v}, *a[3] = {dq, dk, dv};
    const char *names[3] = {"dq", "dk", "dv"};
    for (int t = 0; t < 3; t++) {
        const size_t n = t ? nk : nq, m = samples && (size_t)samples < n ? (size_t)samples : n;
        size_t *idx = malloc(m * sizeof *idx);
        float *am = malloc(m * sizeof *am);
        double *fd = dzeros(m);
        for (size_t i = 0; i < m; i++) {
            idx[i] = m < n ? (size_t)((frand() + 1) / 2 * n) % n : i;
            am[i] = a[t][idx[i]];
        }
        fd_grad(fd, x[t], idx, m, 1e-2, att_J, &c);
        compare(&tol_fd, am, fd, m, "attention B=%d T=%d Hkv=%d d=%d %s (%zu entries)", B, T, Hkv,
                d, names[t], m);
        free(idx), free(am), free(fd);
    }
    free(dq), free(dk), free(dv);
    att_free(&c);
}

/* One configuration against the double forward and backward, then accumulation, causality and
 * thread-count independence. */
static void test_attention_case(int B, int T, int H, int Hkv, int d, float qk_amp) {
    att_case c = att_new(B, T, H, Hkv, d, qk_amp);
    const size_t nq = (size_t)B * T * H * d, nk = (size_t)B * T * Hkv * d, nl = (size_t)B * H * T;
    float *dq = fzeros(nq), *dk = fzeros(nk), *dv = fzeros(nk);
    att_run(&c, dq, dk, dv);
    double *lse = dzeros(nl);
    att_ref_forward(c.rout, lse, c.q, c.k, c.v, B, T, H, Hkv, d);
    compare(&tol_att_fwd, c.out, c.rout, nq, "attention T=%d Hkv=%d d=%d amp=%g out", T, Hkv, d,
            qk_amp);
    /* the max error within 1e-5 of the output scale for scores of order 1 (amp = 2); the scores'
     * rounding, and so the error, grows as amp² */
    const double se = scaled_max_err(c.out, c.rout, nq),
                 se_limit = 1e-5 * fmax(1, qk_amp * qk_amp / 4);
    worst_att_scaled = fmax(worst_att_scaled, se / se_limit * 1e-5);
    CHECK(se <= se_limit,
          "attention T=%d Hkv=%d d=%d amp=%g out: max error %.3g of the output scale (limit %.1e)",
          T, Hkv, d, qk_amp, se, se_limit);
    compare(&tol_fwd, c.lse, lse, nl, "attention T=%d Hkv=%d d=%d amp=%g lse", T, Hkv, d, qk_amp);

    double *rq = dzeros(nq), *rk = dzeros(nk), *rv = dzeros(nk);
    att_ref_backward(rq, rk, rv, c.r, c.q, c.k, c.v, B, T, H, Hkv, d, 0);
    compare(&tol_att, dq, rq, nq, "attention T=%d Hkv=%d d=%d amp=%g dq", T, Hkv, d, qk_amp);
    compare(&tol_att, dk, rk, nk, "attention T=%d Hkv=%d d=%d amp=%g dk", T, Hkv, d, qk_amp);
    compare(&tol_att, dv, rv, nk, "attention T=%d Hkv=%d d=%d amp=%g dv", T, Hkv, d, qk_amp);
    if (T > 1) { /* negative control: the double backward without the D term is rejected */
        double norm, entry;
        size_t wi;
        att_ref_backward(rq, rk, rv, c.r, c.q, c.k, c.v, B, T, H, Hkv, d, 1);
        CHECK(!within(&tol_att, dq, rq, nq, &norm, &entry, &wi),
              "control: attention T=%d dq matched a backward without D (norm %.3g)", T, norm);
    }

    /* accumulation: a second backward adds the same again */
    float *q1 = malloc(nq * sizeof(float)), *k1 = malloc(nk * sizeof(float)),
          *v1 = malloc(nk * sizeof(float));
    memcpy(q1, dq, nq * sizeof(float)), memcpy(k1, dk, nk * sizeof(float)),
        memcpy(v1, dv, nk * sizeof(float));
    attention_backward(dq, dk, dv, c.r, c.q, c.k, c.v, c.out, c.lse, B, T, H, Hkv, d, c.scratch,
                       omp_get_max_threads());
    check_twice(dq, q1, nq, "attention dq");
    check_twice(dk, k1, nk, "attention dk");
    check_twice(dv, v1, nk, "attention dv");

    /* thread-count independence: 1 and 3 threads give the bits 2 threads gave */
    float *out2 = malloc(nq * sizeof(float)), *lse2 = malloc(nl * sizeof(float));
    memcpy(out2, c.out, nq * sizeof(float)), memcpy(lse2, c.lse, nl * sizeof(float));
    for (int threads = 1; threads <= 3; threads += 2) {
        kernels_set_threads(threads);
        free(c.scratch);
        c.scratch = malloc(attention_scratch_floats(T, d, omp_get_max_threads()) * sizeof(float));
        att_run(&c, dq, dk, dv);
        CHECK(same_bits(c.out, out2, nq) && same_bits(c.lse, lse2, nl) && same_bits(dq, q1, nq) &&
                  same_bits(dk, k1, nk) && same_bits(dv, v1, nk),
              "attention T=%d Hkv=%d d=%d: %d threads differ from 2 (out %d lse %d dq %d dk %d "
              "dv %d)",
              T, Hkv, d, threads, !same_bits(c.out, out2, nq), !same_bits(c.lse, lse2, nl),
              !same_bits(dq, q1, nq), !same_bits(dk, k1, nk), !same_bits(dv, v1, nk));
    }
    kernels_set_threads(2);

    /* causality: changing token t0's k and v in sequence 0 leaves its earlier rows (and sequence
     * 1) bit-identical, and does change rows from t0 on (not necessarily row t0 itself: with large
     * scores its weight on key t0 can round to nothing) */
    if (T > 1) {
        const int t0 = T / 2, ks = Hkv * d, qs = H * d;
        for (int i = 0; i < ks; i++)
            c.k[(size_t)t0 * ks + i] += 0.5f, c.v[(size_t)t0 * ks + i] -= 0.5f;
        att_J(&c);
        int earlier = same_bits(c.out, out2, (size_t)t0 * qs), other = 1;
        for (int h = 0; h < H; h++)
            earlier &= same_bits(c.lse + (size_t)h * T, lse2 + (size_t)h * T, t0);
        const int later =
            !same_bits(c.out + (size_t)t0 * qs, out2 + (size_t)t0 * qs, (size_t)(T - t0) * qs);
        if (B > 1)
            other = same_bits(c.out + (size_t)T * qs, out2 + (size_t)T * qs,
                              (size_t)(B - 1) * T * qs) &&
                    same_bits(c.lse + (size_t)H * T, lse2 + (size_t)H * T, (size_t)(B - 1) * H * T);
        CHECK(earlier && later && other,
              "attention T=%d Hkv=%d d=%d causality: rows before %d unchanged %d, rows from %d "
              "changed %d, other sequences unchanged %d",
              T, Hkv, d, t0, earlier, t0, later, other);
    }
    free(dq), free(dk), free(dv), free(lse), free(rq), free(rk), free(rv);
    free(q1), free(k1), free(v1), free(out2), free(lse2);
    att_free(&c);
}

static void test_attention(void) {
    test_attention_oracle();
    test_attention_fd(2, 5, 4, 2, 8, 0);
    test_attention_fd(1, 3, 2, 1, 4, 0);
    test_attention_fd(1, 70, 4, 1, 16, 48); /* crosses a 64-row tile */
    const int Ts[] = {1, 5, 64, 65, 130, 200}, Hkvs[] = {4, 2, 1}, ds[] = {8, 16, 32};
    for (int a = 0; a < 6; a++)
        for (int b = 0; b < 3; b++)
            for (int e = 0; e < 3; e++) test_attention_case(2, Ts[a], 4, Hkvs[b], ds[e], 2);
    /* large scores (|s| up to tens): the online softmax's rescaling across key tiles matters */
    test_attention_case(2, 130, 4, 2, 16, 6);
    test_attention_case(1, 200, 4, 1, 32, 5);
}

/* ---- SwiGLU --------------------------------------------------------------------------------- */

typedef struct {
    int N, F;
    float *gate, *up, *out;
    const float *r;
} swiglu_case;

static double swiglu_J(void *p) {
    swiglu_case *c = p;
    swiglu_forward(c->out, c->gate, c->up, c->N, c->F, omp_get_max_threads());
    return dot_rd(c->r, c->out, (size_t)c->N * c->F);
}

static void test_swiglu(void) {
    enum { N = 4, F = 9, NF = N * F };
    swiglu_case c = {N, F, NULL, NULL, fzeros(NF), NULL};
    c.gate = fvec(NF, 5), c.up = fvec(NF, 1.5f), c.r = fvec(NF, 1);
    swiglu_J(&c);
    double *ref = dzeros(NF);
    for (int i = 0; i < NF; i++) ref[i] = c.gate[i] / (1 + exp(-(double)c.gate[i])) * c.up[i];
    compare(&tol_fwd, c.out, ref, NF, "swiglu out");
    float *dgate = fzeros(NF), *dup = fzeros(NF);
    swiglu_backward(dgate, dup, c.r, c.gate, c.up, N, F, omp_get_max_threads());
    check_fd(dgate, c.gate, NF, swiglu_J, &c, "swiglu dgate");
    check_fd(dup, c.up, NF, swiglu_J, &c, "swiglu dup");
    float *g1 = malloc(NF * sizeof(float)), *u1 = malloc(NF * sizeof(float));
    memcpy(g1, dgate, NF * sizeof(float)), memcpy(u1, dup, NF * sizeof(float));
    swiglu_backward(dgate, dup, c.r, c.gate, c.up, N, F, omp_get_max_threads());
    check_twice(dgate, g1, NF, "swiglu dgate");
    check_twice(dup, u1, NF, "swiglu dup");
    free(c.gate), free(c.up), free(c.out), free((float *)c.r), free(ref);
    free(dgate), free(dup), free(g1), free(u1);
}

/* ---- cross-entropy -------------------------------------------------------------------------- */

typedef struct {
    int N, V;
    float *logits, *losses;
    const int32_t *targets;
} ce_case;

static double ce_J(void *p) { /* the mean loss: dloss = 1/N */
    ce_case *c = p;
    crossentropy_forward(c->losses, c->logits, c->targets, c->N, c->V, omp_get_max_threads());
    double s = 0;
    for (int n = 0; n < c->N; n++) s += c->losses[n];
    return s / c->N;
}

/* losses and dloss · (softmax − onehot) in double */
static void ce_ref(double *losses, double *dlogits, const float *logits, const int32_t *targets,
                   double dloss, int N, int V) {
    for (int n = 0; n < N; n++) {
        const float *x = logits + (size_t)n * V;
        double mx = x[0], s = 0;
        for (int i = 1; i < V; i++) mx = x[i] > mx ? x[i] : mx;
        for (int i = 0; i < V; i++) s += exp(x[i] - mx);
        const double lse = mx + log(s);
        losses[n] = lse - x[targets[n]];
        for (int i = 0; i < V; i++)
            dlogits[(size_t)n * V + i] = dloss * (exp(x[i] - lse) - (i == targets[n]));
    }
}

static void test_crossentropy(void) {
    /* case 0: moderate logits, finite differences; case 1: rows shifted by ±100 and a row whose
     * target is 60 below the rest (overflow without the max subtracted, loss ≈ 60) */
    const int sizes[][2] = {{5, 11}, {4, 50}};
    for (int s = 0; s < 2; s++) {
        const int N = sizes[s][0], V = sizes[s][1];
        const size_t NV = (size_t)N * V;
        int32_t *targets = malloc(N * sizeof *targets);
        for (int n = 0; n < N; n++) targets[n] = (int32_t)((frand() + 1) / 2 * V) % V;
        ce_case c = {N, V, fvec(NV, 3), fzeros(N), targets};
        if (s == 1) {
            for (int i = 0; i < V; i++) c.logits[i] += 100, c.logits[V + i] -= 100;
            c.logits[2 * V + targets[2]] = -60;
        }
        const float dloss = 1.0f / N;
        ce_J(&c);
        double *lref = dzeros(N), *gref = dzeros(NV);
        ce_ref(lref, gref, c.logits, targets, dloss, N, V);
        compare(&tol_fwd, c.losses, lref, N, "crossentropy N=%d V=%d losses", N, V);
        float *dl = fzeros(NV);
        crossentropy_backward(dl, c.logits, targets, dloss, N, V, omp_get_max_threads());
        compare(&tol_fwd, dl, gref, NV, "crossentropy N=%d V=%d dlogits vs double", N, V);
        if (s == 0) check_fd(dl, c.logits, NV, ce_J, &c, "crossentropy dlogits");

        /* in place: the logits become the gradient (overwritten, not added to) */
        float *inplace = malloc(NV * sizeof(float)), *once = malloc(NV * sizeof(float));
        memcpy(inplace, c.logits, NV * sizeof(float)), memcpy(once, dl, NV * sizeof(float));
        crossentropy_backward(inplace, inplace, targets, dloss, N, V, omp_get_max_threads());
        double *g = to_double(once, NV, 1);
        compare(&tol_same, inplace, g, NV, "crossentropy N=%d V=%d in place", N, V);
        free(g);
        crossentropy_backward(dl, c.logits, targets, dloss, N, V, omp_get_max_threads());
        check_twice(dl, once, NV, "crossentropy dlogits");
        free(targets), free(c.logits), free(c.losses), free(lref), free(gref), free(dl);
        free(inplace), free(once);
    }
}

/* ---- thread-count independence of the other ops -------------------------------------------- */

/* Every op but attention (tested above) on fixed inputs, all outputs and gradients written to dst
 * in a fixed order; the segment names say which op a differing float belongs to. */
enum { TI_N = 37, TI_C = 50, TI_OC = 29, TI_V = 23, TI_T = 37 };
static const char *ti_names[] = {"embedding fwd", "embedding bwd", "rmsnorm fwd", "rmsnorm bwd",
                                 "matmul fwd",    "matmul bwd",    "rope fwd",    "rope bwd",
                                 "swiglu fwd",    "swiglu bwd",    "ce fwd",      "ce bwd"};
static size_t ti_run(float *dst, size_t *seg) {
    const int N = TI_N, C = TI_C, OC = TI_OC, V = TI_V;
    rng = 777;
    int32_t tok[TI_N];
    for (int n = 0; n < N; n++) tok[n] = (int32_t)((frand() + 1) / 2 * V) % V;
    float *x = fvec((size_t)N * C, 1), *w = fvec((size_t)OC * C, 1), *r = fvec((size_t)N * C, 1);
    float *table = malloc(rope_table_floats(TI_T, 10) * sizeof(float));
    rope_table_init(table, TI_T, 10, 10000);
    size_t o = 0;
    int k = 0;
#define SEG(len) (seg[k++] = o, o += (len), dst + o - (len))
    float *e = SEG((size_t)N * C), *de = SEG((size_t)V * C);
    embedding_forward(e, tok, x, N, C, omp_get_max_threads()); /* x as a (V, C) table: V < N */
    embedding_backward(de, r, tok, N, C, omp_get_max_threads());
    float *rstd = malloc(N * sizeof(float)), *y = SEG((size_t)N * C + N),
          *dx = SEG((size_t)N * C + C);
    rmsnorm_forward(y, rstd, x, w, N, C, 1e-5f, omp_get_max_threads());
    memcpy(y + (size_t)N * C, rstd, N * sizeof(float));
    rmsnorm_backward(dx, dx + (size_t)N * C, r, x, w, rstd, N, C, omp_get_max_threads());
    float *m = SEG((size_t)N * OC), *dm = SEG((size_t)N * C + (size_t)OC * C);
    matmul_forward(m, x, w, N, C, OC, omp_get_max_threads());
    matmul_backward(dm, dm + (size_t)N * C, r, x, w, N, C, OC, omp_get_max_threads());
    float *ro = SEG((size_t)N * C), *dro = SEG((size_t)N * C);
    rope_forward(ro, x, table, N, TI_T, 5, 10, 10, omp_get_max_threads());
    rope_backward(dro, r, table, N, TI_T, 5, 10, 10, omp_get_max_threads());
    float *sw = SEG((size_t)N * C), *dsw = SEG((size_t)2 * N * C);
    swiglu_forward(sw, x, e, N, C, omp_get_max_threads());
    swiglu_backward(dsw, dsw + (size_t)N * C, r, x, e, N, C, omp_get_max_threads());
    float *ce = SEG(N), *dce = SEG((size_t)N * C);
    crossentropy_forward(ce, x, tok, N, C, omp_get_max_threads());
    crossentropy_backward(dce, x, tok, 1.0f / N, N, C, omp_get_max_threads());
#undef SEG
    seg[k] = o;
    free(x), free(w), free(r), free(table), free(rstd);
    return o;
}

static void test_thread_independence(void) {
    const size_t cap = 40 * TI_N * TI_C;
    float *a = calloc(cap, sizeof(float)), *b = calloc(cap, sizeof(float));
    size_t seg[13];
    kernels_set_threads(2);
    const size_t n = ti_run(a, seg);
    for (int threads = 1; threads <= 3; threads += 2) {
        kernels_set_threads(threads);
        memset(b, 0, cap * sizeof(float));
        ti_run(b, seg);
        for (int s = 0; s < 12; s++)
            CHECK(same_bits(a + seg[s], b + seg[s], seg[s + 1] - seg[s]),
                  "%s: %d threads differ from 2", ti_names[s], threads);
    }
    CHECK(n <= cap, "thread test buffer too small (%zu > %zu)", n, cap);
    kernels_set_threads(2);
    free(a), free(b);
}

static void report(const tolerance *t) {
    printf("  %-50s worst normalised %.2e (limit %.0e), worst entry %.2e (limit %.0e)\n", t->what,
           t->worst_norm, t->norm, t->worst_entry, t->entry);
}

int main(void) {
    kernels_set_threads(2); /* OpenMP threads; OpenBLAS single-threaded inside them */
    test_embedding();
    test_rmsnorm();
    test_matmul();
    test_rope();
    test_attention();
    test_swiglu();
    test_crossentropy();
    test_thread_independence();
    report(&tol_fd), report(&tol_fwd), report(&tol_att_fwd), report(&tol_att), report(&tol_same),
        report(&tol_oracle);
    printf("  attention forward: worst max error %.2e of the output scale (limit 1e-05, scaled to "
           "amp = 2)\n",
           worst_att_scaled);
    printf("%d checks, %d failures\n", checks, failures);
    return failures != 0;
}
