/* test_parts.c — every part of the architecture table, and every architecture whole, driven by
 * arch_at(): no method is named here, so a new part is tested by adding its row to arch.c.
 *
 * Each distinct part (every row's mixer and FFN, deduplicated by pointer) gets small
 * hyper-parameters (D 32, 4 heads of 8, 2 kv heads, FFN 48, 2 layers; RoPE over all 8 dims of a
 * head, or 4 for a partial rotation) and random f32 parameters laid out from its params() list:
 * matrices uniform in ±3/sqrt(ne0), so that every projection of an input uniform in ±1 has unit rms
 * (attention scores of order 1, not a flat softmax), vectors near their init (ones: 1 ± 0.25,
 * zeros: ±0.25, so that no gate is shut), and frozen values a part computes itself (INIT_PART:
 * DiJiang's P and decays) as its fill makes them. Cases (B, T, n_rot): (2, 7, 8), (2, 70, 8) — T is
 * never a multiple of the attention tile (64) and 70 spans two tiles — and (1, 13, 4).
 *
 * 1. Backward. J = Σ r ⊙ train_forward(xn), r and xn random (so dout = r), J summed in double.
 *    train_backward's dxn and every dw (frozen tensors excepted) are compared with central
 *    differences on up to FD_SAMPLE random entries of each tensor (16 under the sanitizers), each
 *    perturbed in float by h = FD_STEP · rms(tensor) = 3e-2 · rms and divided by the step that
 *    rounding actually took. The differences' error is mostly rounding, not truncation: the f32
 *    forward's outputs move by ≈ 1e-7 of their size, and that over 2h is ≈ 1e-5..1e-4 of a gradient
 *    entry (the parameters that J is linear in, W_o and W_down, show 2e-6..2e-5 with no
 *    truncation at all); at h = 1e-2 the errors were 3× larger, at 1e-1 truncation took over for
 *    dxn. Criterion (both): ‖g − fd‖ / ‖fd‖ ≤ TOL_FD_NORM = 1e-3 over the sampled entries, and
 *    max_k |g_k − fd_k| / (|fd_k| + rms(fd) / 10) ≤ TOL_FD_ENTRY = 1e-2 (the floor keeps entries
 *    far below the typical one from being held to a relative accuracy the differences lack).
 *    Seen over six seeds: ≤ 1e-4 and ≤ 2.2e-3 (≥ 10× and ≥ 4.5× room), while one tensor's
 *    gradient off by 1% fails. A sparse gradient (a hash table's unselected rows: exactly 0 on most
 *    entries) is sampled among its nonzero entries, and ZERO_SAMPLE of its zero entries must leave
 *    J bit-identical when moved. A part that hashes its input keeps the forward's buckets while
 *    differencing (memlayer_pin_buckets: the weights continued smoothly from those buckets), so
 *    that a difference never jumps to another bucket. MSRNN_FD_VERBOSE=1 prints every tensor's
 *    errors. Controls, which must FAIL the same criterion: g × 1.1, g against
 *    the differences of the next sampled entry, and g with its largest entry 10% off. Also: a
 *    second backward without zeroing must give 2 g (it accumulates; ≤ 1e-6 relative, seen
 *    4e-8), and a repeated forward gives bit-identical outputs. Buffers a part may not rely on
 *    (activations, scratch, shared tables before train_init, inference workspace and matmul
 *    scratch) start as NaN, so reading one before writing it shows.
 * 2. Inference equals training. The same weights wrapped as f32 `weight`s, a fresh session state
 *    (memory "full", n_ctx = T, 2 threads, batched_attention 0 and 1), prepare then infer for
 *    every layer over one sequence at positions 0..T−1: (a) all T tokens in one call, (b) one
 *    token per call, (c) 5 tokens then the rest (a batch that starts with a filled state). Each
 *    layer's output must be within TOL_INFER = 1e-5 · max|out| of train_forward (B = 1) in max
 *    abs difference: both are f32 with different summation orders (sgemm vs dot kernels, flash
 *    vs plain softmax), ≈ 1e-7 per op over ≤ 70-term sums (seen ≤ 4e-7); a wrong position, mask
 *    or head is ≥ 1e-2. A control (one entry off by 3e-5 of the scale) must fail. Also:
 *    state_reset then the same input gives bit-identical output; two sequences in ONE batch (two
 *    states, seq_start {0, T, 2T}) equal each alone within TOL_BATCH = 1e-6 (whether they are
 *    bit-identical is printed: they are not, since a batch of 2T tokens takes other matmul
 *    blockings than one of T — seen ≤ 4e-7, a few ulps of the largest output); two sequences at
 *    different positions in one batch (one with 5 tokens already in its state) equal training
 *    within TOL_INFER; train_forward with B = 2 equals B = 1 per sequence within TOL_BATCH.
 * 3. Whole model. For every row, a random f32 model (model_write_init, vocabulary of
 *    models/default.gguf, init_std 0.2, tied and untied head, temp file removed after):
 *    msrnn_session_eval's logits (memory "full", batched_attention 0 and 1; n_batch 5, 1) equal
 *    train_model_logits on the same tokens within TOL_MODEL = 1e-5 · max|logit| (max abs; two
 *    layers of the same rounding differences as 2., plus the norms and the head: seen ≤ 1.4e-6);
 *    and train_model_logits of row 1 of a B = 2 batch equals B = 1 within TOL_MODEL (seen 6e-7:
 *    the matmuls of 2T rows round differently from those of T, through two layers).
 *
 * Threads: parts get n_threads = 2 while OpenMP's default is set to 3, so a region that does not
 * own its thread count indexes per-thread scratch out of range (ASan) or differs.
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "model/arch.h"
#include "model/init.h"
#include "msrnn.h"
#include "nn/memlayer.h"
#include "parts/part.h"
#include "tensor/kernels.h"
#include "train/train_model.h"

enum { N_THREADS = 2, FD_SAMPLE = 64, MAX_PARTS = 32 };
static int fd_sample = FD_SAMPLE; /* fewer under the sanitizers (MSRNN_SANITIZED): they are slow */

static const double FD_STEP = 3e-2, TOL_FD_NORM = 1e-3, TOL_FD_ENTRY = 1e-2, TOL_TWICE = 1e-6,
                    TOL_INFER = 1e-5, TOL_BATCH = 1e-6, TOL_MODEL = 1e-5;

/* ---- helpers ------------------------------------------------------------------------------- */

static uint64_t rng = 20250611;
static float frand(void) { /* uniform in [-1, 1) */
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 40) / (double)(1ull << 24)) * 2 - 1;
}
static uint32_t urand(uint32_t n) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)((rng >> 33) % n);
}

static float *fzeros(size_t n) { return calloc(n ? n : 1, sizeof(float)); }
static float *fnans(size_t n) {
    float *p = malloc((n ? n : 1) * sizeof *p);
    for (size_t i = 0; i < n; i++) p[i] = NAN;
    return p;
}
static float *frandv(size_t n, float amp) {
    float *p = malloc((n ? n : 1) * sizeof *p);
    for (size_t i = 0; i < n; i++) p[i] = amp * frand();
    return p;
}
static float *fcopy(const float *x, size_t n) {
    float *p = malloc((n ? n : 1) * sizeof *p);
    memcpy(p, x, n * sizeof *p);
    return p;
}
static double dot_rd(const float *r, const float *x, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)r[i] * x[i];
    return s;
}
static double rms(const float *x, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return n ? sqrt(s / (double)n) : 0;
}
static double max_abs(const float *x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(x[i]));
    return m;
}
/* max |a − b| / max |b| (NaN counts as infinitely wrong) */
static double scaled_err(const float *a, const float *b, size_t n) {
    double e = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = fabs((double)a[i] - b[i]);
        if (d != d) return INFINITY;
        e = fmax(e, d);
    }
    const double m = max_abs(b, n);
    return m > 0 ? e / m : e;
}
static int all_finite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}
static int same_bits(const float *a, const float *b, size_t n) {
    return memcmp(a, b, n * sizeof *a) == 0;
}

/* The worst error seen per (part, check), printed at the end. */
typedef struct {
    char key[112];
    double worst, limit;
    int n;
} worst_row;
static worst_row worst[96];
static int n_worst;

static void note(const char *part, const char *what, double err, double limit) {
    char key[112];
    snprintf(key, sizeof key, "%s: %s", part, what);
    for (int i = 0; i < n_worst; i++)
        if (!strcmp(worst[i].key, key)) {
            if (err > worst[i].worst || err != err) worst[i].worst = err;
            worst[i].n++;
            return;
        }
    if (n_worst == (int)(sizeof worst / sizeof *worst)) return;
    worst_row *w = &worst[n_worst++];
    snprintf(w->key, sizeof w->key, "%s", key);
    w->worst = err, w->limit = limit, w->n = 1;
}

/* ---- a part with random parameters -------------------------------------------------------- */

static hparams small_hparams(int n_rot, int segment, int memory_rule) {
    hparams hp;
    memset(&hp, 0, sizeof hp);
    msrnn_model_info *in = &hp.info;
    in->n_vocab = 64, in->dim = 32, in->n_layers = 2, in->n_heads = 4, in->n_kv_heads = 2;
    in->head_dim = 8, in->ffn_dim = 48, in->n_ctx = 128, in->rope_base = 10000.0f;
    in->norm_eps = 1e-5f, in->tied_output = 1;
    hp.n_rot = n_rot;
    hp.segment = segment, hp.memory_rule = memory_rule; /* read by the parts that have them */
    hp.gn_eps = 1e-5f;
    /* MemoryFormer's: K = 32 / 4 = 8 chunks, block width K·τ₂ = 48, every optional bias */
    hp.hash_bits = 4, hp.block_hash_bits = 6, hp.temperature = 1.0f, hp.ln_eps = 1e-5f;
    hp.mf_biases = MF_BIAS_QKV | MF_BIAS_MEM1 | MF_BIAS_MEM2;
    return hp;
}

typedef struct {
    const part_kind *k;
    const hparams *hp;
    int n;
    part_param p[PART_MAX_PARAMS];
    float *w[PART_MAX_PARAMS];
    size_t len[PART_MAX_PARAMS];
} part_weights;

static void weights_open(part_weights *pw, const part_kind *k, const hparams *hp) {
    memset(pw, 0, sizeof *pw);
    pw->k = k, pw->hp = hp;
    pw->n = k->params(hp, pw->p);
    REQUIRE(pw->n >= 0 && pw->n <= PART_MAX_PARAMS, "%s: params() returned %d", k->name, pw->n);
    for (int i = 0; i < pw->n; i++) {
        const part_param *p = &pw->p[i];
        REQUIRE(p->ne0 > 0 && p->ne1 > 0 && p->ne2 >= 0, "%s: %s has shape %lld × %lld × %lld",
                k->name, p->suffix, (long long)p->ne0, (long long)p->ne1, (long long)p->ne2);
        pw->len[i] = (size_t)p->ne0 * (size_t)p->ne1 * (size_t)(p->ne2 > 1 ? p->ne2 : 1);
        float *w = malloc(pw->len[i] * sizeof *w);
        for (size_t j = 0; j < pw->len[i]; j++) {
            const float u = frand();
            w[j] = p->init == INIT_ONES    ? 1.0f + 0.25f * u
                   : p->init == INIT_ZEROS ? 0.25f * u
                                           : 3.0f / sqrtf((float)p->ne0) * u;
        }
        /* a fixed matrix a part computes itself (DiJiang's P, its decays γ): its own values */
        if (p->init == INIT_PART && p->frozen && k->fill) k->fill(hp, 0, i, w);
        pw->w[i] = w;
    }
}

static void weights_free(part_weights *pw) {
    for (int i = 0; i < pw->n; i++) free(pw->w[i]);
}

/* ---- training: one part's forward and backward on its own --------------------------------- */

typedef struct {
    part_weights *pw;
    int B, T;
    size_t ND; /* B · T · D */
    float *dw[PART_MAX_PARAMS];
    float *act, *shared, *scratch;
    part_train c;
} train_case;

static void train_open(train_case *tc, part_weights *pw, int B, int T) {
    const part_kind *k = pw->k;
    const hparams *hp = pw->hp;
    memset(tc, 0, sizeof *tc);
    tc->pw = pw, tc->B = B, tc->T = T;
    tc->ND = (size_t)B * T * hp->info.dim;
    for (int i = 0; i < pw->n; i++) tc->dw[i] = fzeros(pw->len[i]);
    tc->act = fnans(k->train_act_floats(hp, B, T));
    tc->shared = fnans(k->train_shared_floats(hp, B, T));
    tc->scratch = fnans(k->train_scratch_floats(hp, B, T, N_THREADS));
    k->train_init(hp, B, T, tc->shared);
    const part_train c = {hp,     B,       T,          N_THREADS,  (const float *const *)pw->w,
                          tc->dw, tc->act, tc->shared, tc->scratch};
    tc->c = c;
}

static void train_close(train_case *tc) {
    for (int i = 0; i < tc->pw->n; i++) free(tc->dw[i]);
    free(tc->act), free(tc->shared), free(tc->scratch);
}

static void train_zero_grads(train_case *tc) {
    for (int i = 0; i < tc->pw->n; i++) memset(tc->dw[i], 0, tc->pw->len[i] * sizeof(float));
}

typedef struct {
    train_case *tc;
    const float *xn, *r;
    float *out;
} objective;

static double J(const objective *o) {
    o->tc->pw->k->train_forward(&o->tc->c, o->xn, o->out);
    return dot_rd(o->r, o->out, o->tc->ND);
}

/* Up to m distinct random indices below n (all of them, in order, when n <= m). */
static int sample(size_t n, int m, size_t *idx) {
    if (n <= (size_t)m) {
        for (size_t i = 0; i < n; i++) idx[i] = i;
        return (int)n;
    }
    size_t *all = malloc(n * sizeof *all);
    for (size_t i = 0; i < n; i++) all[i] = i;
    for (int k = 0; k < m; k++) {
        const size_t j = k + urand((uint32_t)(n - k)), t = all[k];
        all[k] = all[j], all[j] = t;
        idx[k] = all[k];
    }
    free(all);
    return m;
}

/* Both error measures of a against the reference g (n entries). */
static void fd_errors(const double *a, const double *g, int n, double *norm, double *entry) {
    double ss = 0, se = 0;
    for (int i = 0; i < n; i++) ss += g[i] * g[i], se += (a[i] - g[i]) * (a[i] - g[i]);
    const double floor = 0.1 * sqrt(ss / n);
    *norm = ss > 0 ? sqrt(se / ss) : sqrt(se / n);
    *entry = 0;
    for (int i = 0; i < n; i++) {
        const double den = fabs(g[i]) + floor, e = fabs(a[i] - g[i]) / (den > 0 ? den : 1);
        if (e > *entry || e != e) *entry = e;
    }
    if (*norm != *norm) *norm = INFINITY;
}
static int fd_ok(double norm, double entry) { return norm <= TOL_FD_NORM && entry <= TOL_FD_ENTRY; }

/* The analytic gradient g (of all n entries of x) against central differences on a sample. */
/* A sparse gradient (a hash table's rows that no token selected) is exactly 0 on most entries,
 * which carry no information for the sampled comparison: up to ZERO_SAMPLE of them are checked to
 * have an exactly-zero difference too (nothing reads them), and the sample is drawn from the
 * nonzero entries. */
enum { ZERO_SAMPLE = 4 };

static void check_grad(const char *part, const char *label, const float *g, float *x, size_t n,
                       const objective *o) {
    size_t idx[FD_SAMPLE], nz = 0;
    for (size_t i = 0; i < n; i++) nz += g[i] != 0.0f;
    const double scale = rms(x, n);
    const float step = (float)(FD_STEP * (scale > 0 ? scale : 1.0));
    int m;
    if (nz > 0 && nz < n) {
        size_t *pos = malloc(nz * sizeof *pos), *zero = malloc((n - nz) * sizeof *zero), a = 0,
               b = 0;
        REQUIRE(pos && zero, "out of memory");
        for (size_t i = 0; i < n; i++) {
            if (g[i] != 0.0f)
                pos[a++] = i;
            else
                zero[b++] = i;
        }
        size_t zi[ZERO_SAMPLE];
        const int mz = sample(b, ZERO_SAMPLE, zi);
        for (int k = 0; k < mz; k++) {
            const size_t i = zero[zi[k]];
            const float x0 = x[i];
            x[i] = x0 + step;
            const double jp = J(o);
            x[i] = x0 - step;
            const double jm = J(o);
            x[i] = x0;
            CHECK(jp == jm, "%s %s: entry %zu has gradient 0 but J moves with it (%.9g vs %.9g)",
                  part, label, i, jp, jm);
        }
        m = sample(nz, fd_sample, idx);
        for (int k = 0; k < m; k++) idx[k] = pos[idx[k]];
        free(pos), free(zero);
    } else
        m = sample(n, fd_sample, idx);
    double fd[FD_SAMPLE], a[FD_SAMPLE], bad[FD_SAMPLE];
    double fd_norm = 0;
    for (int k = 0; k < m; k++) {
        const size_t i = idx[k];
        const float x0 = x[i], xp = x0 + step, xm = x0 - step;
        x[i] = xp;
        const double jp = J(o);
        x[i] = xm;
        const double jm = J(o);
        x[i] = x0;
        fd[k] = (jp - jm) / ((double)xp - xm);
        a[k] = g[i];
        fd_norm += fd[k] * fd[k];
    }
    CHECK(fd_norm > 0, "%s: J does not depend on %s (all %d differences are 0)", part, label, m);
    double norm, entry;
    fd_errors(a, fd, m, &norm, &entry);
    if (getenv("MSRNN_FD_VERBOSE")) printf("    %s %s: %.3g %.3g\n", part, label, norm, entry);
    CHECK(fd_ok(norm, entry),
          "%s %s: backward vs finite differences: normalised error %.3g (limit %.0e), worst "
          "entry %.3g (limit %.0e), over %d entries",
          part, label, norm, TOL_FD_NORM, entry, TOL_FD_ENTRY, m);
    note(part, "backward vs FD, |g-fd|/|fd|", norm, TOL_FD_NORM);
    note(part, "backward vs FD, worst entry", entry, TOL_FD_ENTRY);

    /* controls: each must fail */
    if (m < 2) return;
    double cn, ce;
    for (int k = 0; k < m; k++) bad[k] = 1.1 * a[k];
    fd_errors(bad, fd, m, &cn, &ce);
    CHECK(!fd_ok(cn, ce), "%s %s: control g × 1.1 passed (%.3g, %.3g)", part, label, cn, ce);
    for (int k = 0; k < m; k++) bad[k] = a[(k + 1) % m];
    fd_errors(bad, fd, m, &cn, &ce);
    CHECK(!fd_ok(cn, ce), "%s %s: control (next entry's gradient) passed (%.3g, %.3g)", part, label,
          cn, ce);
    int big = 0;
    for (int k = 0; k < m; k++) {
        bad[k] = a[k];
        if (fabs(a[k]) > fabs(a[big])) big = k;
    }
    bad[big] *= 1.1;
    fd_errors(bad, fd, m, &cn, &ce);
    CHECK(!fd_ok(cn, ce), "%s %s: control (one entry 10%% off) passed (%.3g, %.3g)", part, label,
          cn, ce);
}

static void test_backward(part_weights *pw, int B, int T) {
    const part_kind *k = pw->k;
    train_case tc;
    train_open(&tc, pw, B, T);
    const char *part = k->name;
    float *xn = frandv(tc.ND, 1), *r = frandv(tc.ND, 1), *out = fnans(tc.ND);
    const objective o = {&tc, xn, r, out};
    J(&o);
    float *out0 = fcopy(out, tc.ND);
    CHECK(all_finite(out, tc.ND), "%s B=%d T=%d: the forward's output is not finite", part, B, T);

    float *dxn = fzeros(tc.ND);
    train_zero_grads(&tc);
    k->train_backward(&tc.c, xn, r, dxn);
    float *dxn1 = fcopy(dxn, tc.ND), *dw1[PART_MAX_PARAMS];
    for (int i = 0; i < pw->n; i++) dw1[i] = fcopy(tc.dw[i], pw->len[i]);

    /* a part that hashes (MemoryFormer's memory layers) keeps the buckets of the forward above
     * while differencing: backward has no gradient for the choice of a bucket */
    memlayer_pin_buckets(1);
    char label[96];
    snprintf(label, sizeof label, "B=%d T=%d n_rot=%d dxn", B, T, pw->hp->n_rot);
    check_grad(part, label, dxn1, xn, tc.ND, &o);
    for (int i = 0; i < pw->n; i++) {
        if (pw->p[i].frozen) continue;
        snprintf(label, sizeof label, "B=%d T=%d n_rot=%d d%s", B, T, pw->hp->n_rot,
                 pw->p[i].suffix);
        check_grad(part, label, dw1[i], pw->w[i], pw->len[i], &o);
    }
    memlayer_pin_buckets(0);

    /* the same forward again is bit-identical; a second backward adds the same again */
    J(&o);
    CHECK(same_bits(out, out0, tc.ND), "%s B=%d T=%d: a repeated forward differs", part, B, T);
    k->train_backward(&tc.c, xn, r, dxn);
    double worst_twice = 0;
    for (int i = -1; i < pw->n; i++) {
        const float *once = i < 0 ? dxn1 : dw1[i], *twice = i < 0 ? dxn : tc.dw[i];
        const size_t n = i < 0 ? tc.ND : pw->len[i];
        if (i >= 0 && pw->p[i].frozen) continue;
        double ss = 0, se = 0;
        for (size_t j = 0; j < n; j++) {
            const double want = 2.0 * once[j];
            ss += want * want, se += (twice[j] - want) * (twice[j] - want);
        }
        const double e = ss > 0 ? sqrt(se / ss) : sqrt(se);
        worst_twice = fmax(worst_twice, e == e ? e : INFINITY);
        CHECK(e <= TOL_TWICE, "%s B=%d T=%d: backward twice is not 2× once for %s (error %.3g)",
              part, B, T, i < 0 ? "dxn" : pw->p[i].suffix, e);
    }
    note(part, "backward twice vs 2× once", worst_twice, TOL_TWICE);

    free(xn), free(r), free(out), free(out0), free(dxn), free(dxn1);
    for (int i = 0; i < pw->n; i++) free(dw1[i]);
    train_close(&tc);
}

/* out (B·T, D) = train_forward over xn with fresh buffers */
static void train_out(part_weights *pw, int B, int T, const float *xn, float *out) {
    train_case tc;
    train_open(&tc, pw, B, T);
    pw->k->train_forward(&tc.c, xn, out);
    train_close(&tc);
}

/* ---- inference ------------------------------------------------------------------------------ */

typedef struct {
    const part_kind *k;
    const hparams *hp;
    weight w[PART_MAX_PARAMS];
    msrnn_session_params sp;
    int n_batch;
    float *work, *scratch;
} infer_env;

static void env_open(infer_env *e, part_weights *pw, int n_ctx, int n_batch, int batched) {
    memset(e, 0, sizeof *e);
    e->k = pw->k, e->hp = pw->hp, e->n_batch = n_batch;
    for (int i = 0; i < pw->n; i++) {
        const weight w = {pw->w[i], TYPE_F32, (int)pw->p[i].ne0, (int)pw->p[i].ne1,
                          (size_t)pw->p[i].ne0 * sizeof(float)};
        e->w[i] = w;
    }
    e->sp = msrnn_session_default_params();
    e->sp.n_ctx = n_ctx, e->sp.n_threads = N_THREADS, e->sp.n_batch = n_batch;
    e->sp.batched_attention = batched;
    REQUIRE_OK(e->k->check(e->hp, &e->sp));
    e->work = fnans(e->k->work_floats(e->hp, n_batch));
    int max_in = e->hp->info.dim;
    if (e->k->max_in(e->hp) > max_in) max_in = e->k->max_in(e->hp);
    e->scratch = fnans(matmul_scratch_floats(max_in, N_THREADS));
}

static void env_close(infer_env *e) { free(e->work), free(e->scratch); }

static void *state_open(const infer_env *e) {
    const size_t bytes = e->k->state_bytes(e->hp, &e->sp), alloc = (bytes + 63) & ~(size_t)63;
    void *s = NULL;
    REQUIRE(posix_memalign(&s, 64, alloc ? alloc : 64) == 0, "cannot allocate %zu bytes", bytes);
    memset(s, 0, alloc ? alloc : 64);
    e->k->state_init(s, e->hp, &e->sp);
    return s;
}

/* prepare, then every layer over the same xn: n = seq_start[n_seq] tokens; out (L, n, D). */
static void infer_batch(infer_env *e, void *const *states, int n_seq, const int *seq_start,
                        const int64_t *pos, const float *xn, float *out) {
    const int n = seq_start[n_seq], D = e->hp->info.dim;
    REQUIRE(n <= e->n_batch, "batch of %d over n_batch %d", n, e->n_batch);
    part_step c = {e->hp,  e->w, -1,      n,          n_seq,    seq_start,
                   states, pos,  e->work, e->scratch, N_THREADS};
    if (e->k->prepare) e->k->prepare(&c);
    for (int l = 0; l < e->hp->info.n_layers; l++) {
        c.layer = l;
        REQUIRE_OK(e->k->infer(&c, xn, out + (size_t)l * n * D));
    }
}

/* One sequence of T tokens at positions 0..T−1 through state: `first` tokens in the first call,
 * then calls of `rest`; out (L, T, D). */
static void infer_seq(infer_env *e, void *state, const float *xn, int T, int first, int rest,
                      float *out) {
    const int D = e->hp->info.dim, L = e->hp->info.n_layers;
    float *tmp = malloc(sizeof(float) * L * T * D);
    int64_t *pos = malloc(sizeof(int64_t) * T);
    void *states[1] = {state};
    for (int t0 = 0; t0 < T;) {
        const int want = t0 == 0 ? first : rest, n = want < T - t0 ? want : T - t0;
        const int seq_start[2] = {0, n};
        for (int t = 0; t < n; t++) pos[t] = t0 + t;
        infer_batch(e, states, 1, seq_start, pos, xn + (size_t)t0 * D, tmp);
        for (int l = 0; l < L; l++)
            memcpy(out + ((size_t)l * T + t0) * D, tmp + (size_t)l * n * D, sizeof(float) * n * D);
        t0 += n;
    }
    free(tmp), free(pos);
}

static void test_infer(part_weights *pw, int T) {
    const part_kind *k = pw->k;
    const hparams *hp = pw->hp;
    const int D = hp->info.dim, L = hp->info.n_layers;
    const size_t TD = (size_t)T * D;
    const char *part = k->name;
    float *xa = frandv(TD, 1), *xb = frandv(TD, 1);
    float *ta = fnans(TD), *tb = fnans(TD);
    train_out(pw, 1, T, xa, ta);
    train_out(pw, 1, T, xb, tb);

    /* training's B = 2 equals B = 1 per sequence */
    float *xab = malloc(sizeof(float) * 2 * TD), *tab = fnans(2 * TD);
    memcpy(xab, xa, sizeof(float) * TD), memcpy(xab + TD, xb, sizeof(float) * TD);
    train_out(pw, 2, T, xab, tab);
    const double e_b2 = fmax(scaled_err(tab, ta, TD), scaled_err(tab + TD, tb, TD));
    CHECK(e_b2 <= TOL_BATCH, "%s T=%d: train_forward B=2 differs from B=1 by %.3g", part, T, e_b2);
    note(part, "train B=2 vs B=1", e_b2, TOL_BATCH);

    /* control: the comparison must notice one entry off by 3e-5 of the scale */
    float *bad = fcopy(ta, TD);
    bad[TD / 2] += (float)(3e-5 * max_abs(ta, TD));
    CHECK(scaled_err(bad, ta, TD) > TOL_INFER, "%s: the inference control passed", part);
    free(bad);

    static const int chunks[][2] = {{1 << 30, 1 << 30}, {1, 1}, {5, 1 << 30}};
    static const char *chunk_names[] = {"all T in one call", "one token per call", "5, then rest"};
    float *out = fnans((size_t)L * TD), *out2 = fnans((size_t)L * TD);
    for (int batched = 0; batched <= 1; batched++) {
        infer_env e;
        env_open(&e, pw, T, 2 * T, batched);
        for (int c = 0; c < 3; c++) {
            void *st = state_open(&e);
            infer_seq(&e, st, xa, T, chunks[c][0], chunks[c][1], out);
            for (int l = 0; l < L; l++) {
                const double err = scaled_err(out + (size_t)l * TD, ta, TD);
                CHECK(err <= TOL_INFER,
                      "%s T=%d n_rot=%d batched=%d %s layer %d: infer vs train_forward %.3g "
                      "(limit %.0e)",
                      part, T, hp->n_rot, batched, chunk_names[c], l, err, TOL_INFER);
                char what[96];
                snprintf(what, sizeof what, "infer (%s) vs train", chunk_names[c]);
                note(part, what, err, TOL_INFER);
            }
            /* after a reset, the same input gives the same output */
            k->state_reset(st);
            infer_seq(&e, st, xa, T, chunks[c][0], chunks[c][1], out2);
            CHECK(same_bits(out, out2, (size_t)L * TD),
                  "%s T=%d batched=%d %s: output after state_reset differs", part, T, batched,
                  chunk_names[c]);
            free(st);
        }

        /* two sequences in one batch equal each alone */
        void *sa = state_open(&e), *sb = state_open(&e), *sab[2];
        float *oa = fnans((size_t)L * TD), *ob = fnans((size_t)L * TD);
        infer_seq(&e, sa, xa, T, T, T, oa);
        infer_seq(&e, sb, xb, T, T, T, ob);
        free(sa), free(sb);
        sab[0] = state_open(&e), sab[1] = state_open(&e);
        const int seq_start[3] = {0, T, 2 * T};
        int64_t *pos = malloc(sizeof(int64_t) * 2 * T);
        for (int t = 0; t < 2 * T; t++) pos[t] = t % T;
        float *oab = fnans((size_t)L * 2 * TD);
        infer_batch(&e, sab, 2, seq_start, pos, xab, oab);
        double e2 = 0;
        int identical = 1;
        for (int l = 0; l < L; l++) {
            const float *both = oab + (size_t)l * 2 * TD;
            e2 = fmax(e2, scaled_err(both, oa + (size_t)l * TD, TD));
            e2 = fmax(e2, scaled_err(both + TD, ob + (size_t)l * TD, TD));
            identical &= same_bits(both, oa + (size_t)l * TD, TD) &&
                         same_bits(both + TD, ob + (size_t)l * TD, TD);
        }
        CHECK(e2 <= TOL_BATCH,
              "%s T=%d batched=%d: two sequences in one batch differ from each alone by %.3g", part,
              T, batched, e2);
        char what[96];
        snprintf(what, sizeof what, "two sequences in one batch vs alone (batched=%d)", batched);
        note(part, what, e2, TOL_BATCH);
        printf("  %s T=%d batched=%d: two sequences in one batch %s each alone (%.3g)\n", part, T,
               batched, identical ? "bit-identical to" : "differ from", e2);
        free(sab[0]), free(sab[1]), free(oa), free(ob), free(oab);

        /* two sequences at different points in one batch: a has had its first h tokens already
         * (positions h..T−1 follow), b starts (0..T−1); each must still equal training */
        const int h = 5, n2 = 2 * T - h;
        void *sd[2] = {state_open(&e), state_open(&e)};
        float *head = fnans((size_t)L * h * D), *od = fnans((size_t)L * n2 * D);
        infer_seq(&e, sd[0], xa, h, h, h, head);
        const int seq_start2[3] = {0, T - h, n2};
        for (int t = 0; t < n2; t++) pos[t] = t < T - h ? h + t : t - (T - h);
        memcpy(xab, xa + (size_t)h * D, sizeof(float) * (T - h) * D);
        memcpy(xab + (size_t)(T - h) * D, xb, sizeof(float) * TD);
        infer_batch(&e, sd, 2, seq_start2, pos, xab, od);
        double e3 = 0;
        for (int l = 0; l < L; l++) {
            const float *o = od + (size_t)l * n2 * D;
            e3 = fmax(e3, scaled_err(head + (size_t)l * h * D, ta, (size_t)h * D));
            e3 = fmax(e3, scaled_err(o, ta + (size_t)h * D, (size_t)(T - h) * D));
            e3 = fmax(e3, scaled_err(o + (size_t)(T - h) * D, tb, TD));
        }
        CHECK(e3 <= TOL_INFER,
              "%s T=%d batched=%d: two sequences at different positions in one batch vs "
              "train_forward %.3g (limit %.0e)",
              part, T, batched, e3, TOL_INFER);
        note(part, "infer (two sequences, different positions, one batch) vs train", e3, TOL_INFER);
        memcpy(xab, xa, sizeof(float) * TD), memcpy(xab + TD, xb, sizeof(float) * TD);
        free(sd[0]), free(sd[1]), free(head), free(od), free(pos);
        env_close(&e);
    }
    free(xa), free(xb), free(ta), free(tb), free(xab), free(tab), free(out), free(out2);
}

/* ---- whole models --------------------------------------------------------------------------- */

static void test_model(const arch_row *row, const char *vocab, int T, int tied) {
    char path[] = "/tmp/msrnn_test_parts_XXXXXX";
    const int fd = mkstemp(path);
    REQUIRE(fd >= 0, "mkstemp failed");
    close(fd);
    model_init_params p;
    memset(&p, 0, sizeof p);
    p.dim = 32, p.n_layers = 2, p.n_heads = 4, p.n_kv_heads = 2, p.ffn_dim = 48, p.n_ctx = 128;
    p.rope_base = 10000.0f, p.norm_eps = 1e-5f, p.tied = tied, p.type = TYPE_F32;
    p.init_std = 0.2f, p.seed = 7 + (uint64_t)T + 100u * tied, p.name = "test_parts";
    p.arch = row->name;
    p.segment = 5, p.memory_rule = tied; /* for the architectures with segments */
    p.hash_bits = 4;                     /* for the hashing ones */
    if (model_write_init(&p, vocab, path) != MSRNN_OK) {
        p.n_kv_heads = p.n_heads; /* an architecture without GQA (MemoryFormer's files) */
        REQUIRE_OK(model_write_init(&p, vocab, path));
    }

    train_model *tm = NULL;
    REQUIRE_OK(train_model_open(path, 1, T, N_THREADS, 0, &tm));
    const int V = train_model_hparams(tm)->info.n_vocab;
    int32_t *tokens = malloc(sizeof(int32_t) * (T + 1));
    for (int t = 0; t <= T; t++) tokens[t] = (int32_t)urand((uint32_t)V);
    const size_t TV = (size_t)T * V;
    float *lt = fnans(TV), *li = fnans(TV);
    REQUIRE_OK(train_model_logits(tm, tokens, 0, lt));

    msrnn_model *m = NULL;
    REQUIRE_OK(msrnn_model_open(path, &m));
    /* batched_attention, n_batch (0: the default, all T at once) */
    static const int variants[][2] = {{0, 0}, {1, 0}, {1, 5}, {0, 1}};
    for (int v = 0; v < (int)(sizeof variants / sizeof *variants); v++) {
        msrnn_session_params sp = msrnn_session_default_params();
        sp.n_ctx = T, sp.n_threads = N_THREADS, sp.memory = "full";
        sp.batched_attention = variants[v][0], sp.n_batch = variants[v][1];
        msrnn_session *s = NULL;
        REQUIRE_OK(msrnn_session_open(m, &sp, &s));
        for (size_t i = 0; i < TV; i++) li[i] = NAN;
        REQUIRE_OK(msrnn_session_eval(s, tokens, T, li));
        const double err = scaled_err(li, lt, TV);
        CHECK(err <= TOL_MODEL,
              "%s T=%d tied=%d batched=%d n_batch=%d: session logits vs train_model_logits %.3g "
              "(limit %.0e, logit scale %.3g)",
              row->name, T, tied, variants[v][0], variants[v][1], err, TOL_MODEL, max_abs(lt, TV));
        char what[96];
        snprintf(what, sizeof what, "model logits, session (batched=%d n_batch=%d) vs train",
                 variants[v][0], variants[v][1]);
        note(row->name, what, err, TOL_MODEL);
        msrnn_session_close(s);
    }
    train_model_free(tm);

    /* a batch of two rows: row 1's logits are those of its own tokens alone */
    int32_t *rows = malloc(sizeof(int32_t) * 2 * (T + 1));
    for (int t = 0; t <= T; t++) rows[t] = (int32_t)urand((uint32_t)V), rows[T + 1 + t] = tokens[t];
    REQUIRE_OK(train_model_open(path, 2, T, N_THREADS, 0, &tm));
    REQUIRE_OK(train_model_logits(tm, rows, 1, li));
    const double err = scaled_err(li, lt, TV);
    CHECK(err <= TOL_MODEL, "%s T=%d: train_model_logits of row 1 of 2 vs B = 1: %.3g", row->name,
          T, err);
    note(row->name, "model logits, train B=2 row 1 vs B=1", err, TOL_MODEL);
    train_model_free(tm);
    msrnn_model_close(m);
    free(tokens), free(rows), free(lt), free(li);
    unlink(path);
}

/* ---- driver --------------------------------------------------------------------------------- */

int main(void) {
    omp_set_num_threads(3); /* parts must run the threads they are told, not the default */
    if (getenv("MSRNN_SANITIZED")) fd_sample = 16;
    kernels_set_threads(N_THREADS);
    /* B, T, n_rot, segment, memory rule (0 linear, 1 delta): every T spans several segments, the
     * last one partial */
    static const int cases[][5] = {
        {2, 7, 8, 3, 1}, {2, 70, 8, 16, 0}, {2, 70, 8, 16, 1}, {1, 13, 4, 5, 0}};
    const part_kind *seen[MAX_PARTS];
    int n_seen = 0, n_rows = 0;
    for (int i = 0; arch_at(i); i++, n_rows++) {
        const arch_row *row = arch_at(i);
        const part_kind *parts[2] = {row->mixer, row->ffn};
        for (int j = 0; j < 2; j++) {
            int dup = 0;
            for (int s = 0; s < n_seen; s++) dup |= seen[s] == parts[j];
            if (dup) continue;
            REQUIRE(n_seen < MAX_PARTS, "more than %d parts", MAX_PARTS);
            seen[n_seen++] = parts[j];
            printf("part %s (of %s)\n", parts[j]->name, row->name);
            for (int c = 0; c < (int)(sizeof cases / sizeof *cases); c++) {
                const hparams hp = small_hparams(cases[c][2], cases[c][3], cases[c][4]);
                part_weights pw;
                weights_open(&pw, parts[j], &hp);
                const double t0 = omp_get_wtime();
                test_backward(&pw, cases[c][0], cases[c][1]);
                const double t1 = omp_get_wtime();
                test_infer(&pw, cases[c][1]);
                printf("  B=%d T=%d n_rot=%d segment=%d rule=%d: backward %.2f s, inference "
                       "%.2f s\n",
                       cases[c][0], cases[c][1], cases[c][2], cases[c][3], cases[c][4], t1 - t0,
                       omp_get_wtime() - t1);
                weights_free(&pw);
            }
        }
    }
    REQUIRE(n_rows > 0, "the architecture table is empty");

    char vocab[4096];
    const char *src = getenv("MSRNN_SOURCE_DIR");
    snprintf(vocab, sizeof vocab, "%s/models/default.gguf", src ? src : ".");
    if (access(vocab, R_OK) != 0) snprintf(vocab, sizeof vocab, "models/default.gguf");
    REQUIRE(access(vocab, R_OK) == 0,
            "no vocabulary: set MSRNN_SOURCE_DIR or run from the repository root");
    for (int i = 0; arch_at(i); i++) {
        printf("architecture %s\n", arch_at(i)->name);
        const double t0 = omp_get_wtime();
        test_model(arch_at(i), vocab, 7, 1);
        test_model(arch_at(i), vocab, 70, 0);
        printf("  whole model: %.2f s\n", omp_get_wtime() - t0);
    }

    printf("worst errors (limit, count):\n");
    for (int i = 0; i < n_worst; i++)
        printf("  %-78s %.3g (%.0e, %d)\n", worst[i].key, worst[i].worst, worst[i].limit,
               worst[i].n);
    printf("test_parts: %d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
