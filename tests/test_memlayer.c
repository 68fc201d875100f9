/* test_memlayer.c — MemoryFormer's memory layer (src/nn/memlayer.c; METHODS.md §4, §6) on its own.
 *
 *   1. hash and weights against the independent float64 PyTorch reference
 *      $MSRNN_REF_DIR/memoryformer/hash.ref (tests/ref/gen_memoryformer_ref.py): mem_hash exactly,
 *      mem_weight for "paper" t = 1, t = 0.5 and "code" within WEIGHT_TOL relative; a missing file
 *      fails (never skips). Pinned here too: idx [-1,1,1,1] = 7, [1,-1,-1,-1] = 8, -0 x 4 = 15,
 *      +0 x 4 = 15.
 *   2. mem_weight_grad against central differences of the weight computed in double (written
 *      here), both weightings, b = 1, 4, 8, 10, 16, inputs away from 0; sign(0) = 0 gives 0.
 *   3. memlayer_hash against mem_hash / mem_weight per chunk; memlayer_gather against a naive
 *      per-token per-chunk double loop, f32 / f16 / bf16 tables (the reference reads the rounded
 *      values), b = 4, 8, 10, K = 1, 3, 8, out = 1, 7, 48, 100 (and larger shapes that run
 *      threaded), with and without bias, n = 1, 5, 64: max error ≤ GATHER_TOL × max |y|; y
 *      overwritten; the same bits for n_threads = 1, 2, 3, and token by token (n = 1 each).
 *   4. memlayer_backward on L = ⟨r, y⟩: dtable and dbias (linear in dy) against their analytic sums
 *      in double, dx against central differences (step FD_H, in double, of hash∘gather of the one
 *      token, every index unchanged at both ends; |x| ≥ 0.05); the same bits for n_threads = 1, 2,
 *      3; NULL dbias / dx; accumulation (two calls onto nonzero buffers add twice the increment).
 * Prints the worst errors and "test_memlayer: N checks, M failures"; exits 1 on failure.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "nn/memlayer.h"
#include "tensor/types.h"

#define WEIGHT_TOL 4e-6 /* computed in float: b ≤ 16 factors 1 + exp (exp ~2e-7 relative) */
#define GRAD_TOL 1e-6   /* of max(max |∂w/∂z|, 1e-4 w); central difference h = 1e-5 in double */
#define GATHER_TOL 1e-5
#ifndef GATHER_MIN_WORK
#define GATHER_MIN_WORK                                                                            \
    32768 /* memlayer.c's threshold for threads (test_memlayer_small_tiles: 0) */
#endif
#define TABLE_TOL 1e-5 /* dtable, dbias against their double sums */
#define FD_H 1e-4
#define FD_TOL 1e-3
#define ACC_TOL 1e-5

static uint64_t rng = 20261206;
static double urand(void) { /* uniform in [0, 1) */
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng >> 11) / (double)(1ull << 53);
}
static float frand(void) { return (float)(2 * urand() - 1); }
/* magnitude in [lo, hi), random sign */
static float away(double lo, double hi) {
    const double m = lo + (hi - lo) * urand();
    return (float)(urand() < 0.5 ? -m : m);
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    REQUIRE(p, "out of memory (%zu bytes)", n);
    return p;
}

/* ---- double references ------------------------------------------------------------------------
 */

static uint32_t ref_hash(const double *z, int b) {
    uint32_t idx = 0;
    for (int i = 0; i < b; i++) idx = idx * 2 + (z[i] >= 0 ? 1 : 0);
    return idx;
}

static double ref_weight(const double *z, int b, int weighting, double t) {
    double p = 1, s = 0;
    for (int i = 0; i < b; i++) {
        const double a = fabs(z[i]);
        s += a;
        p *= 1 / (1 + exp(-2 * a / (weighting == MEM_WEIGHT_CODE ? 1.0 : t)));
    }
    return weighting == MEM_WEIGHT_CODE ? s * p : p;
}

static double rel_err(double got, double ref) {
    const double d = fabs(got - ref);
    return d == 0 ? 0 : d / fabs(ref);
}

/* ---- 1. hash.ref ------------------------------------------------------------------------------
 */

static double worst_hash_w;

static void test_hash_ref(void) {
    const char *dir = getenv("MSRNN_REF_DIR");
    REQUIRE(dir, "MSRNN_REF_DIR is not set (tests/ref/generate.sh writes it)");
    char path[4096];
    snprintf(path, sizeof path, "%s/memoryformer/hash.ref", dir);
    FILE *f = fopen(path, "rb");
    REQUIRE(f, "cannot open %s (run tests/ref/gen_memoryformer_ref.py %s)", path, dir);
    unsigned char head[12];
    REQUIRE(fread(head, 1, 12, f) == 12 && memcmp(head, "MFHS", 4) == 0, "%s: not MFHS", path);
    uint32_t version, n_cases;
    memcpy(&version, head + 4, 4);
    memcpy(&n_cases, head + 8, 4);
    REQUIRE(version == 1, "%s: version %u, expected 1", path, version);
    REQUIRE(n_cases > 0 && n_cases < 100000, "%s: %u cases", path, n_cases);
    int neg_zero = 0, pos_zero = 0, bits_seen = 0;
    for (uint32_t c = 0; c < n_cases; c++) {
        unsigned char rec[4 + 64 + 4 + 24];
        REQUIRE(fread(rec, 1, sizeof rec, f) == sizeof rec, "%s: truncated at case %u", path, c);
        uint32_t b, index;
        float z[16];
        double wref[3];
        memcpy(&b, rec, 4);
        memcpy(z, rec + 4, 64);
        memcpy(&index, rec + 68, 4);
        memcpy(wref, rec + 72, 24);
        REQUIRE(b >= 1 && b <= MEM_MAX_BITS, "%s: case %u has b = %u", path, c, b);
        bits_seen |= 1 << (b - 1);
        for (uint32_t i = 0; i < b; i++)
            if (z[i] == 0) *(signbit(z[i]) ? &neg_zero : &pos_zero) += 1;
        const uint32_t got = mem_hash(z, (int)b);
        CHECK(got == index, "hash.ref case %u (b %u): mem_hash %u, reference %u", c, b, got, index);
        const memlayer Ls[3] = {{(int)b, 1, 1, MEM_WEIGHT_PAPER, 1.0f},
                                {(int)b, 1, 1, MEM_WEIGHT_PAPER, 0.5f},
                                {(int)b, 1, 1, MEM_WEIGHT_CODE, 1.0f}};
        static const char *names[3] = {"paper t=1", "paper t=0.5", "code"};
        for (int j = 0; j < 3; j++) {
            const double e = rel_err(mem_weight(&Ls[j], z), wref[j]);
            if (e > worst_hash_w) worst_hash_w = e;
            CHECK(e <= WEIGHT_TOL, "hash.ref case %u (b %u) %s: mem_weight %.9g, reference %.17g",
                  c, b, names[j], mem_weight(&Ls[j], z), wref[j]);
        }
    }
    unsigned char extra;
    CHECK(fread(&extra, 1, 1, f) == 0, "%s: bytes after %u cases", path, n_cases);
    fclose(f);
    CHECK(neg_zero > 0 && pos_zero > 0, "hash.ref holds no -0 (%d) or no +0 (%d)", neg_zero,
          pos_zero);
    printf("  hash.ref: %u cases (b in mask 0x%x), indices exact, worst weight rel. error %.2e "
           "(limit %.0e)\n",
           n_cases, bits_seen, worst_hash_w, WEIGHT_TOL);

    /* the convention, pinned */
    const float a[4] = {-1, 1, 1, 1}, bb[4] = {1, -1, -1, -1}, nz[4] = {-0.0f, -0.0f, -0.0f, -0.0f},
                pz[4] = {0, 0, 0, 0};
    CHECK(mem_hash(a, 4) == 7, "idx [-1,1,1,1] = %u, expected 7", mem_hash(a, 4));
    CHECK(mem_hash(bb, 4) == 8, "idx [1,-1,-1,-1] = %u, expected 8", mem_hash(bb, 4));
    CHECK(signbit(nz[0]) && mem_hash(nz, 4) == 15, "idx -0 x 4 = %u, expected 15", mem_hash(nz, 4));
    CHECK(mem_hash(pz, 4) == 15, "idx +0 x 4 = %u, expected 15", mem_hash(pz, 4));
    const float one[1] = {-3}, lsb[3] = {1, 1, -2};
    CHECK(mem_hash(one, 1) == 0 && mem_hash(lsb, 3) == 6, "b = 1 / lsb: %u %u", mem_hash(one, 1),
          mem_hash(lsb, 3));
    /* the eight-at-a-time path (b ≥ 8) and its tail: each sign of ±1, ±0 and ±NaN at every
     * position, against the definition bit by bit (z_i ≥ 0 or NaN: 1; z[0] the highest bit) */
    const float vals[6] = {1.0f, -1.0f, 0.0f, -0.0f, NAN, -NAN};
    static const int wide[] = {8, 9, 15, 16};
    int hash_cases = 0, hash_bad = 0;
    for (int wi = 0; wi < 4; wi++) {
        const int b = wide[wi];
        for (int pos = 0; pos < b; pos++)
            for (int v = 0; v < 6; v++) {
                float z[16];
                for (int i = 0; i < b; i++) z[i] = (i * 7 + pos) % 3 ? 0.5f : -0.5f;
                z[pos] = vals[v];
                uint32_t want = 0;
                for (int i = 0; i < b; i++) want = want << 1 | (uint32_t)(isnan(z[i]) || z[i] >= 0);
                hash_bad += mem_hash(z, b) != want;
                hash_cases++;
            }
    }
    CHECK(hash_bad == 0, "mem_hash of b = 8, 9, 15, 16 with ±0 and ±NaN: %d of %d differ", hash_bad,
          hash_cases);
}

/* ---- 2. weight gradient -----------------------------------------------------------------------
 */

static double worst_wgrad, worst_wval;

static void test_weight_grad(void) {
    static const int bs[] = {1, 4, 8, 10, 16};
    const struct {
        int weighting;
        float t;
    } ws[] = {{MEM_WEIGHT_PAPER, 1.0f},
              {MEM_WEIGHT_PAPER, 0.5f},
              {MEM_WEIGHT_PAPER, 2.0f},
              {MEM_WEIGHT_CODE, 1.0f}};
    const double h = 1e-5;
    for (size_t bi = 0; bi < sizeof bs / sizeof *bs; bi++)
        for (size_t wi = 0; wi < sizeof ws / sizeof *ws; wi++)
            for (int rep = 0; rep < 20; rep++) {
                const int b = bs[bi];
                const memlayer L = {b, 1, 1, ws[wi].weighting, ws[wi].t};
                float z[MEM_MAX_BITS], dz[MEM_MAX_BITS];
                double zd[MEM_MAX_BITS], fd[MEM_MAX_BITS], gmax = 0;
                for (int i = 0; i < b; i++) zd[i] = z[i] = away(0.05, rep < 10 ? 1.5 : 4.0);
                const double w = ref_weight(zd, b, L.weighting, L.temp);
                const double ev = rel_err(mem_weight(&L, z), w);
                if (ev > worst_wval) worst_wval = ev;
                CHECK(ev <= WEIGHT_TOL, "mem_weight b %d weighting %d: %.9g vs %.17g", b,
                      L.weighting, mem_weight(&L, z), w);
                mem_weight_grad(&L, z, dz);
                for (int j = 0; j < b; j++) {
                    const double s = zd[j];
                    zd[j] = s + h;
                    const double wp = ref_weight(zd, b, L.weighting, L.temp);
                    zd[j] = s - h;
                    const double wm = ref_weight(zd, b, L.weighting, L.temp);
                    zd[j] = s;
                    fd[j] = (wp - wm) / (2 * h);
                    if (fabs(fd[j]) > gmax) gmax = fabs(fd[j]);
                }
                /* the difference's own rounding, ~1e-16 w / h, is all a gradient far below w
                 * shows: held to 1e-4 w at least */
                const double scale = gmax > 1e-4 * w ? gmax : 1e-4 * w;
                for (int j = 0; j < b; j++) {
                    const double e = fabs(dz[j] - fd[j]) / scale;
                    if (e > worst_wgrad) worst_wgrad = e;
                    CHECK(e <= GRAD_TOL,
                          "mem_weight_grad b %d weighting %d t %g j %d: %.9g, fd %.12g", b,
                          L.weighting, L.temp, j, dz[j], fd[j]);
                }
                /* sign(0) = 0: a zero element gets no gradient */
                z[b / 2] = rep % 2 ? 0.0f : -0.0f;
                mem_weight_grad(&L, z, dz);
                CHECK(dz[b / 2] == 0, "mem_weight_grad at z_j = 0: %g", dz[b / 2]);
            }
    printf("  weights: worst rel. error against double %.2e (limit %.0e); weight gradient against "
           "central differences: worst %.2e of max |dw/dz| (limit %.0e)\n",
           worst_wval, WEIGHT_TOL, worst_wgrad, GRAD_TOL);
}

/* ---- 3. gather --------------------------------------------------------------------------------
 */

static const tensor_type TYPES[3] = {TYPE_F32, TYPE_F16, TYPE_BF16};
static const char *TYPE_NAMES[3] = {"f32", "f16", "bf16"};

/* a random table in `type` and its values as f32 (rounded) */
static void *make_table(const memlayer *L, tensor_type type, float *vals) {
    const size_t ne = memlayer_table_elems(L);
    for (size_t i = 0; i < ne; i++) vals[i] = frand();
    if (type == TYPE_F32) {
        float *t = xmalloc(ne * sizeof *t);
        memcpy(t, vals, ne * sizeof *t);
        return t;
    }
    uint16_t *t = xmalloc(ne * sizeof *t);
    for (size_t i = 0; i < ne; i++) {
        t[i] = type == TYPE_F16 ? fp32_to_fp16(vals[i]) : fp32_to_bf16(vals[i]);
        vals[i] = type == TYPE_F16 ? fp16_to_fp32(t[i]) : bf16_to_fp32(t[i]);
    }
    return t;
}

static double worst_gather;
static int gather_cases, gather_threaded;

static void gather_case(int b, int K, int out, int n, int with_bias, int weighting, int ti) {
    const memlayer L = {b, K, out, weighting, weighting == MEM_WEIGHT_PAPER ? 0.7f : 1.0f};
    const size_t ne = memlayer_table_elems(&L), rows = (size_t)1 << b;
    float *vals = xmalloc(ne * sizeof *vals);
    void *table = make_table(&L, TYPES[ti], vals);
    float *bias = NULL;
    if (with_bias) {
        bias = xmalloc((size_t)out * sizeof *bias);
        for (int c = 0; c < out; c++) bias[c] = 3 * frand();
    }
    float *x = xmalloc((size_t)n * K * b * sizeof *x);
    for (size_t i = 0; i < (size_t)n * K * b; i++) x[i] = 1.5f * frand();
    if (n > 1) x[b] = -0.0f, x[b + 1] = 0.0f; /* a -0 and a +0 in the batch */
    int32_t *idx = xmalloc((size_t)n * K * sizeof *idx);
    float *w = xmalloc((size_t)n * K * sizeof *w);
    memlayer_hash(&L, x, n, idx, w, 2);
    int hash_ok = 1;
    for (int t = 0; t < n; t++)
        for (int k = 0; k < K; k++) {
            const float *z = x + (size_t)t * K * b + (size_t)k * b;
            const float wk = mem_weight(&L, z);
            if (idx[t * K + k] != (int32_t)mem_hash(z, b) || memcmp(&w[t * K + k], &wk, 4) != 0)
                hash_ok = 0;
        }
    CHECK(hash_ok, "memlayer_hash differs from mem_hash / mem_weight (b %d K %d n %d)", b, K, n);

    double *ref = xmalloc((size_t)n * out * sizeof *ref), ymax = 0;
    for (int t = 0; t < n; t++)
        for (int c = 0; c < out; c++) {
            double s = bias ? bias[c] : 0;
            for (int k = 0; k < K; k++)
                s += (double)w[t * K + k] * vals[((size_t)k * rows + idx[t * K + k]) * out + c];
            ref[(size_t)t * out + c] = s;
            if (fabs(s) > ymax) ymax = fabs(s);
        }
    float *y[3];
    for (int th = 0; th < 3; th++) {
        y[th] = xmalloc((size_t)n * out * sizeof *y[th]);
        for (size_t i = 0; i < (size_t)n * out; i++) y[th][i] = NAN; /* must be overwritten */
        memlayer_gather(&L, table, TYPES[ti], bias, idx, w, n, y[th], th + 1);
    }
    double err = 0;
    for (size_t i = 0; i < (size_t)n * out; i++) {
        const double e = fabs(y[0][i] - ref[i]);
        if (!(e <= err)) err = e; /* NaN sticks */
    }
    err /= ymax;
    if (!(err <= worst_gather)) worst_gather = err;
    CHECK(err <= GATHER_TOL, "gather %s b %d K %d out %d n %d bias %d: max error %.2e of max |y|",
          TYPE_NAMES[ti], b, K, out, n, with_bias, err);
    for (int th = 1; th < 3; th++)
        CHECK(memcmp(y[0], y[th], (size_t)n * out * sizeof(float)) == 0,
              "gather %s b %d K %d out %d n %d: %d threads differ from 1", TYPE_NAMES[ti], b, K,
              out, n, th + 1);
    /* a batch and its tokens one at a time take different tilings (few tokens sum in registers,
     * many stream the slabs): the same bits */
    if (n > 1) {
        float *one = xmalloc((size_t)n * out * sizeof *one);
        for (int t = 0; t < n; t++)
            memlayer_gather(&L, table, TYPES[ti], bias, idx + (size_t)t * K, w + (size_t)t * K, 1,
                            one + (size_t)t * out, 1);
        CHECK(memcmp(y[0], one, (size_t)n * out * sizeof(float)) == 0,
              "gather %s b %d K %d out %d n %d: token by token differs from the batch",
              TYPE_NAMES[ti], b, K, out, n);
        free(one);
    }
    gather_cases++;
    gather_threaded += (size_t)n * K * out + 1 > (size_t)GATHER_MIN_WORK;
    for (int th = 0; th < 3; th++) free(y[th]);
    free(ref), free(w), free(idx), free(x), free(bias), free(table), free(vals);
}

static void test_gather(void) {
    static const int bs[] = {4, 8, 10}, Ks[] = {1, 3, 8}, outs[] = {1, 7, 48, 100},
                     ns[] = {1, 5, 64};
    for (int ti = 0; ti < 3; ti++)
        for (int bi = 0; bi < 3; bi++)
            for (int ki = 0; ki < 3; ki++)
                for (int oi = 0; oi < 4; oi++)
                    for (int ni = 0; ni < 3; ni++)
                        for (int wb = 0; wb < 2; wb++)
                            gather_case(bs[bi], Ks[ki], outs[oi], ns[ni], wb,
                                        (ni + oi) % 2 ? MEM_WEIGHT_CODE : MEM_WEIGHT_PAPER, ti);
    /* shapes large enough to run threaded, widths off the 8 / 16 lanes */
    for (int ti = 0; ti < 3; ti++) {
        gather_case(8, 8, 333, 64, 1, MEM_WEIGHT_PAPER, ti);
        gather_case(10, 4, 1000, 1, 0, MEM_WEIGHT_CODE, ti);
        gather_case(10, 64, 1537, 1, 1, MEM_WEIGHT_PAPER, ti);
        gather_case(4, 16, 100, 200, 0, MEM_WEIGHT_CODE, ti);
        /* a group of four slabs and a part group (5, 7), few and many tokens */
        gather_case(8, 5, 130, 3, 1, MEM_WEIGHT_PAPER, ti);
        gather_case(8, 7, 72, 40, 0, MEM_WEIGHT_CODE, ti);
    }
    printf("  gather: %d cases (%d large enough to run threaded), worst max error %.2e of max |y| "
           "(limit %.0e), 1 / 2 / 3 threads bit-identical\n",
           gather_cases, gather_threaded, worst_gather, GATHER_TOL);
}

/* ---- 4. backward ------------------------------------------------------------------------------
 */

static double worst_dtable, worst_dbias, worst_dx, worst_acc;

/* L_t = ⟨r_t, y_t(x_t)⟩ in double for the one token, recomputing hash and weight; indices into
 * idx_out (to check that none moved) */
static double token_loss(const memlayer *L, const float *table, const float *bias, const double *xt,
                         const float *rt, int32_t *idx_out) {
    const size_t rows = (size_t)1 << L->bits;
    double s = 0;
    for (int k = 0; k < L->K; k++) {
        const double *z = xt + (size_t)k * L->bits;
        const uint32_t i = ref_hash(z, L->bits);
        idx_out[k] = (int32_t)i;
        const double wk = ref_weight(z, L->bits, L->weighting, L->temp);
        const float *row = table + ((size_t)k * rows + i) * L->out;
        double d = 0;
        for (int c = 0; c < L->out; c++) d += (double)rt[c] * row[c];
        s += wk * d;
    }
    if (bias)
        for (int c = 0; c < L->out; c++) s += (double)rt[c] * bias[c];
    return s;
}

static double max_abs_diff(const float *a, const double *b, size_t n, double *scale) {
    double e = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = fabs(a[i] - b[i]);
        if (!(d <= e)) e = d;
        if (fabs(b[i]) > m) m = fabs(b[i]);
    }
    *scale = m;
    return e;
}

static void backward_case(int b, int K, int out, int n, int weighting, float temp) {
    const memlayer L = {b, K, out, weighting, temp};
    const size_t ne = memlayer_table_elems(&L), rows = (size_t)1 << b, nx = (size_t)n * K * b,
                 ny = (size_t)n * out;
    float *table = xmalloc(ne * sizeof *table), *bias = xmalloc((size_t)out * sizeof *bias);
    for (size_t i = 0; i < ne; i++) table[i] = frand();
    for (int c = 0; c < out; c++) bias[c] = frand();
    float *x = xmalloc(nx * sizeof *x), *r = xmalloc(ny * sizeof *r);
    for (size_t i = 0; i < nx; i++) x[i] = away(0.05, 1.5);
    for (size_t i = 0; i < ny; i++) r[i] = frand();
    int32_t *idx = xmalloc((size_t)n * K * sizeof *idx);
    float *w = xmalloc((size_t)n * K * sizeof *w);
    memlayer_hash(&L, x, n, idx, w, 2);

    float *dT[3], *db[3], *dx[3];
    for (int th = 0; th < 3; th++) {
        dT[th] = calloc(ne, sizeof(float));
        db[th] = calloc((size_t)out, sizeof(float));
        dx[th] = calloc(nx, sizeof(float));
        REQUIRE(dT[th] && db[th] && dx[th], "out of memory");
        memlayer_backward(&L, table, x, idx, w, r, n, dT[th], db[th], dx[th], th + 1);
    }

    /* dtable, dbias: their sums in double */
    double *gT = calloc(ne, sizeof(double)), *gb = calloc((size_t)out, sizeof(double)), scale;
    REQUIRE(gT && gb, "out of memory");
    for (int t = 0; t < n; t++) {
        for (int k = 0; k < K; k++) {
            double *d = gT + ((size_t)k * rows + idx[t * K + k]) * out;
            for (int c = 0; c < out; c++) d[c] += (double)w[t * K + k] * r[(size_t)t * out + c];
        }
        for (int c = 0; c < out; c++) gb[c] += r[(size_t)t * out + c];
    }
    double e = max_abs_diff(dT[0], gT, ne, &scale) / scale;
    if (e > worst_dtable) worst_dtable = e;
    CHECK(e <= TABLE_TOL, "dtable b %d K %d out %d n %d: %.2e of max", b, K, out, n, e);
    e = max_abs_diff(db[0], gb, (size_t)out, &scale) / scale;
    if (e > worst_dbias) worst_dbias = e;
    CHECK(e <= TABLE_TOL, "dbias b %d K %d out %d n %d: %.2e of max", b, K, out, n, e);

    /* dx: central differences of the token's loss, in double */
    double *fd = xmalloc(nx * sizeof *fd), *xt = xmalloc((size_t)K * b * sizeof *xt);
    int32_t *ip = xmalloc((size_t)K * sizeof *ip), *im = xmalloc((size_t)K * sizeof *im);
    int moved = 0;
    for (int t = 0; t < n; t++) {
        for (int i = 0; i < K * b; i++) xt[i] = x[(size_t)t * K * b + i];
        for (int i = 0; i < K * b; i++) {
            const double s = xt[i];
            xt[i] = s + FD_H;
            const double lp = token_loss(&L, table, bias, xt, r + (size_t)t * out, ip);
            xt[i] = s - FD_H;
            const double lm = token_loss(&L, table, bias, xt, r + (size_t)t * out, im);
            xt[i] = s;
            fd[(size_t)t * K * b + i] = (lp - lm) / (2 * FD_H);
            if (memcmp(ip, idx + (size_t)t * K, K * sizeof *ip) != 0 ||
                memcmp(im, idx + (size_t)t * K, K * sizeof *im) != 0)
                moved++;
        }
    }
    CHECK(moved == 0, "an index moved within the difference step (%d times)", moved);
    e = max_abs_diff(dx[0], fd, nx, &scale) / scale;
    if (e > worst_dx) worst_dx = e;
    CHECK(e <= FD_TOL,
          "dx b %d K %d out %d n %d weighting %d: %.2e of max |dx| against central "
          "differences",
          b, K, out, n, weighting, e);

    /* any thread count, the same bits */
    for (int th = 1; th < 3; th++)
        CHECK(memcmp(dT[0], dT[th], ne * sizeof(float)) == 0 &&
                  memcmp(db[0], db[th], (size_t)out * sizeof(float)) == 0 &&
                  memcmp(dx[0], dx[th], nx * sizeof(float)) == 0,
              "backward b %d K %d out %d n %d: %d threads differ from 1", b, K, out, n, th + 1);

    /* NULL dbias and dx: dtable unchanged */
    float *dT2 = calloc(ne, sizeof(float));
    REQUIRE(dT2, "out of memory");
    memlayer_backward(&L, table, x, idx, w, r, n, dT2, NULL, NULL, 3);
    CHECK(memcmp(dT2, dT[0], ne * sizeof(float)) == 0, "dtable with NULL dbias / dx differs");

    /* accumulation: two calls onto nonzero buffers add twice the increment */
    float *a[3] = {dT2, xmalloc((size_t)out * sizeof(float)), xmalloc(nx * sizeof(float))};
    const size_t sz[3] = {ne, (size_t)out, nx};
    double *init[3];
    for (int j = 0; j < 3; j++) {
        init[j] = xmalloc(sz[j] * sizeof(double));
        for (size_t i = 0; i < sz[j]; i++) init[j][i] = a[j][i] = frand();
    }
    memlayer_backward(&L, table, x, idx, w, r, n, a[0], a[1], a[2], 2);
    memlayer_backward(&L, table, x, idx, w, r, n, a[0], a[1], a[2], 2);
    const float *once[3] = {dT[0], db[0], dx[0]};
    for (int j = 0; j < 3; j++) {
        double em = 0, m = 0;
        for (size_t i = 0; i < sz[j]; i++) {
            const double want = init[j][i] + 2.0 * once[j][i];
            if (fabs(a[j][i] - want) > em) em = fabs(a[j][i] - want);
            if (fabs(want) > m) m = fabs(want);
        }
        if (em / m > worst_acc) worst_acc = em / m;
        CHECK(em / m <= ACC_TOL, "accumulation (%s) b %d K %d out %d n %d: %.2e",
              j == 0   ? "dtable"
              : j == 1 ? "dbias"
                       : "dx",
              b, K, out, n, em / m);
        free(init[j]);
    }

    for (int j = 0; j < 3; j++) free(a[j]);
    for (int th = 0; th < 3; th++) free(dT[th]), free(db[th]), free(dx[th]);
    free(ip), free(im), free(xt), free(fd), free(gT), free(gb), free(w), free(idx), free(r),
        free(x), free(bias), free(table);
}

static void test_backward(void) {
    backward_case(4, 3, 7, 5, MEM_WEIGHT_PAPER, 1.0f);
    backward_case(4, 1, 1, 1, MEM_WEIGHT_CODE, 1.0f);
    backward_case(8, 8, 48, 64, MEM_WEIGHT_CODE, 1.0f);
    backward_case(8, 8, 100, 64, MEM_WEIGHT_PAPER, 0.5f); /* threaded */
    backward_case(10, 3, 100, 64, MEM_WEIGHT_PAPER, 1.0f);
    backward_case(10, 16, 333, 40, MEM_WEIGHT_CODE, 1.0f); /* threaded, 16 slabs */
    backward_case(16, 1, 8, 32, MEM_WEIGHT_PAPER, 2.0f);
    backward_case(1, 5, 40, 300, MEM_WEIGHT_CODE, 1.0f); /* tokens share rows */
    printf(
        "  backward: dtable worst %.2e, dbias worst %.2e of max (limit %.0e); dx against central "
        "differences worst %.2e of max (limit %.0e); accumulation worst %.2e (limit %.0e); 1 / 2 "
        "/ 3 threads bit-identical\n",
        worst_dtable, worst_dbias, TABLE_TOL, worst_dx, FD_TOL, worst_acc, ACC_TOL);
}

int main(void) {
    test_hash_ref();
    test_weight_grad();
    test_gather();
    test_backward();
    printf("test_memlayer: %d checks, %d failures\n", checks, failures);
    return failures != 0;
}
