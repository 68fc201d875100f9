/* dijiang.c — the DiJiang token mixer (Chen et al., 2024; METHODS.md §3, file format §6):
 * frequency-domain kernelised linear attention with a per-head decay, everything about it in one
 * file: parameters and their fixed values (P, γ, W_G's initialisation), key reading and writing,
 * the session state, inference, and training.
 *
 * Parameters: Llama's W_q, W_k, W_v, W_o plus, per layer, P (attn_feat, d × m, fixed), γ
 * (attn_decay, one per query head, frozen unless train --unfreeze attn_decay), W_G (attn_gate) and
 * a per-head GroupNorm (attn_gnorm weight and bias). For query head h (kv head g = h / group), q
 * and k after RoPE at absolute positions:
 *
 *     φ(x) = softmax over the m features of x·P           (no 1/sqrt(d))
 *     S_t  = γ_h S_{t−1} + φ(k_t)ᵀ v_t,  S_0 = 0          (S ∈ R^{m×d}, one per query head)
 *     o_t  = φ(q_t) S_t
 *     out  = W_o( silu(W_G · xn) ⊙ GroupNorm_h(o) )        (H groups of d channels)
 *
 * Decoding is the recurrence, O(m·d) per token and head. A prompt is cut into chunks of at most
 * CHUNK tokens; a chunk of c tokens starting with state S:
 *
 *     O  = diag(γ^{i+1}) Φq S + ((Φq Φkᵀ) ⊙ D) V,   D_ij = γ^{i−j} (j ≤ i), else 0
 *     S ← γ^c S + (diag(γ^{c−1−j}) Φk)ᵀ V
 *
 * Only non-negative powers of γ ≤ 1 appear (no γ^{−n}), so the form holds at any length. The
 * state's size is fixed at open: L · H · m · d floats.
 *
 * Training runs the same chunked form over B sequences of T tokens, saving the state entering each
 * chunk; backward walks the chunks last to first carrying G = ∂loss/∂S:
 *
 *     dA  = (dO Vᵀ) ⊙ D
 *     dΦq = diag(γ^{i+1}) dO Sᵀ + dA Φk
 *     dΦk = diag(γ^{c−1−i}) V Gᵀ + dAᵀ Φq              (summed over the kv head's query heads)
 *     dV  = diag(γ^{c−1−i}) Φk G + ((Φq Φkᵀ) ⊙ D)ᵀ dO
 *     G  ← γ^c G + (diag(γ^{i+1}) Φq)ᵀ dO
 *
 * One job per (sequence, kv head), chunks in a fixed order, so results do not depend on the thread
 * count. P is fixed (no gradient). ∂/∂γ is computed too (recurrence_backward); the trainer
 * zeroes it while γ is frozen, the default.
 */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "nn/ops.h"
#include "parts/part.h"
#include "tensor/kernels.h"

enum { W_Q, W_K, W_V, W_O, W_FEAT, W_DECAY, W_GATE, W_GNW, W_GNB, N_W };

#define CHUNK 64
#define MAX_FEATURES 65536

static size_t align16(size_t n) { return (n + 15) & ~(size_t)15; }
static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

static int n_features(const hparams *hp) {
    return hp->features > 0 ? hp->features : hp->info.head_dim;
}

/* ---- the fixed values: P, γ, W_G ---------------------------------------------------------------
 */

/* Φ⁻¹(p), 0 < p < 1: Acklam's rational approximation, refined by one Halley step on erfc (full
 * double precision). */
static double normal_quantile(double p) {
    static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02,
                               -2.759285104469687e+02, 1.383577518672690e+02,
                               -3.066479806614716e+01, 2.506628277459239e+00};
    static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02,
                               -1.556989798598866e+02, 6.680131188771972e+01,
                               -1.328068155288572e+01};
    static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01,
                               -2.400758277161838e+00, -2.549732539343734e+00,
                               4.374664141464968e+00,  2.938163982698783e+00};
    static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                               3.754408661907416e+00};
    double x;
    if (p < 0.02425) {
        const double q = sqrt(-2 * log(p));
        x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    } else if (p > 1 - 0.02425) {
        const double q = sqrt(-2 * log(1 - p));
        x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    } else {
        const double q = p - 0.5, r = q * q;
        x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
            (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
    }
    const double e = 0.5 * erfc(-x / sqrt(2.0)) - p;
    const double u = e * sqrt(2 * M_PI) * exp(x * x / 2);
    return x - u / (1 + x * u / 2);
}

/* the (n+1)-th prime: 2, 3, 5, 7, ... */
static unsigned nth_prime(int n) {
    unsigned p = 1;
    for (int found = -1; found < n;) {
        p++;
        int prime = 1;
        for (unsigned q = 2; q * q <= p && prime; q++) prime = p % q != 0;
        found += prime;
    }
    return p;
}

/* the radical inverse of i in base b: i's digits mirrored after the point */
static double radical_inverse(unsigned long long i, unsigned b) {
    double x = 0, f = 1.0 / b;
    for (; i; i /= b, f /= b) x += f * (double)(i % b);
    return x;
}

static uint64_t splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* a number in (0, 1): 53 random bits, offset by half a step */
static double uniform01(uint64_t *x) { return ((double)(splitmix(x) >> 11) + 0.5) * 0x1.0p-53; }

/* P (d rows of m): P[i][j] = s_i cos(π i (2j + 1) / 2d) · Φ⁻¹(u_j), s_0 = sqrt(1/d), else
 * sqrt(2/d); u_j = the radical inverse of j + 1 in base p_L (Halton, the layer's own prime), or
 * seeded uniform numbers (the official code's choice). */
static void fill_features(const hparams *hp, int layer, float *P) {
    const int d = hp->info.head_dim, m = n_features(hp);
    const unsigned base = nth_prime(layer);
    uint64_t rng = hp->seed ^ (0x5851f42d4c957f2dull * (uint64_t)(layer + 1));
    for (int j = 0; j < m; j++) {
        const double u =
            hp->sampler == FEATURE_SAMPLER_RANDOM ? uniform01(&rng) : radical_inverse(j + 1, base);
        const double w = normal_quantile(u);
        for (int i = 0; i < d; i++) {
            const double s = sqrt((i ? 2.0 : 1.0) / d);
            P[(size_t)i * m + j] = (float)(s * cos(M_PI * i * (2.0 * j + 1) / (2.0 * d)) * w);
        }
    }
}

/* γ_h = 1 − exp(ln(1/32) + (ln(1/512) − ln(1/32)) · h / (H − 1)); 1 − 1/32 when H = 1 */
static void fill_decay(const hparams *hp, float *gamma) {
    const int H = hp->info.n_heads;
    for (int h = 0; h < H; h++) {
        const double f = H > 1 ? (double)h / (H - 1) : 0.0;
        gamma[h] = (float)(1.0 - exp(log(1.0 / 32) + (log(1.0 / 512) - log(1.0 / 32)) * f));
    }
}

/* W_G (H·d rows of D): Xavier-uniform with gain 2^−2.5, as the official code (and RetNet) */
static void fill_gate(const hparams *hp, int layer, float *w) {
    const int D = hp->info.dim, QD = hp->info.n_heads * hp->info.head_dim;
    const double bound = pow(2.0, -2.5) * sqrt(6.0 / (D + QD));
    uint64_t rng = hp->seed ^ (0xda942042e4dd58b5ull * (uint64_t)(layer + 1));
    for (size_t i = 0; i < (size_t)D * QD; i++) w[i] = (float)(bound * (2 * uniform01(&rng) - 1));
}

/* ---- keys --------------------------------------------------------------------------------- */

static msrnn_status dj_read_keys(const gguf_file *f, const char *arch, hparams *hp) {
    char key[128];
    snprintf(key, sizeof key, "%s.feature_count", arch);
    uint32_t m = (uint32_t)hp->info.head_dim;
    MSRNN_TRY(gguf_get_u32(f, key, 0, &m));
    if (m < 1 || m > MAX_FEATURES)
        return status_fail(MSRNN_ERR_FORMAT, "%s: %s = %u is out of range [1, %d]", f->path, key, m,
                           MAX_FEATURES);
    hp->features = (int)m;
    snprintf(key, sizeof key, "%s.attention.group_norm_epsilon", arch);
    hp->gn_eps = 1e-5f;
    MSRNN_TRY(gguf_get_f32(f, key, 0, &hp->gn_eps));
    if (!(hp->gn_eps >= 0) || !isfinite(hp->gn_eps))
        return status_fail(MSRNN_ERR_FORMAT, "%s: %s = %g must be finite and >= 0", f->path, key,
                           hp->gn_eps);
    /* γ must lie in (0, 1); a missing or misshapen tensor is reported when it is bound */
    for (int l = 0; l < hp->info.n_layers; l++) {
        char name[64];
        snprintf(name, sizeof name, "blk.%d.attn_decay", l);
        const gguf_tensor *t = gguf_find_tensor(f, name);
        if (!t || t->type != TYPE_F32 || t->n_elements != (uint64_t)hp->info.n_heads) continue;
        for (int h = 0; h < hp->info.n_heads; h++) {
            float g;
            memcpy(&g, (const uint8_t *)t->data + 4 * (size_t)h, 4);
            if (!(g > 0.0f && g < 1.0f))
                return status_fail(MSRNN_ERR_FORMAT,
                                   "%s: tensor '%s' holds %g for head %d; a decay must lie in "
                                   "(0, 1)",
                                   f->path, name, g, h);
        }
    }
    return MSRNN_OK;
}

static msrnn_status dj_write_keys(const hparams *hp, const char *arch, gguf_writer *w) {
    char key[128];
    snprintf(key, sizeof key, "%s.feature_count", arch);
    MSRNN_TRY(gguf_writer_set_u32(w, key, (uint32_t)n_features(hp)));
    snprintf(key, sizeof key, "%s.attention.group_norm_epsilon", arch);
    return gguf_writer_set_f32(w, key, hp->gn_eps > 0 ? hp->gn_eps : 1e-5f);
}

/* ---- parameters --------------------------------------------------------------------------- */

static int dj_params(const hparams *hp, part_param out[PART_MAX_PARAMS]) {
    const msrnn_model_info *in = &hp->info;
    const int64_t D = in->dim, QD = (int64_t)in->n_heads * in->head_dim,
                  KD = (int64_t)in->n_kv_heads * in->head_dim;
    out[W_Q] = (part_param){"attn_q.weight", D, QD, 1, 1, 1.0f, 0, INIT_NORMAL, 0, 0, 1};
    out[W_K] = (part_param){"attn_k.weight", D, KD, 1, 1, 1.0f, 0, INIT_NORMAL, 0, 0, 1};
    out[W_V] = (part_param){"attn_v.weight", D, KD, 1, 1, 1.0f, 0, INIT_NORMAL, 0, 0, 1};
    out[W_O] = (part_param){"attn_output.weight", QD, D, 1, 1, 1.0f, 0, INIT_NORMAL_RESID, 0, 0, 1};
    out[W_FEAT] = (part_param){
        "attn_feat", n_features(hp), in->head_dim, 0, 0, 1.0f, PARAM_FIXED, INIT_PART, 0, 0, 1};
    /* γ: fixed unless train --unfreeze attn_decay; then its own learning rate (x0.1: AdamW moves
     * a tensor by about lr a step, and 1 − γ is 1/512 .. 1/32) and kept in (0, 1) */
    out[W_DECAY] =
        (part_param){"attn_decay", in->n_heads,    1, 0, 0, 0.1f, PARAM_OPTIONAL, INIT_PART,
                     1e-6f,        0x1.fffffep-1f, 1};
    out[W_GATE] = (part_param){"attn_gate", D, QD, 1, 1, 1.0f, 0, INIT_PART, 0, 0, 1};
    out[W_GNW] = (part_param){"attn_gnorm.weight", QD, 1, 0, 0, 1.0f, 0, INIT_ONES, 0, 0, 1};
    out[W_GNB] = (part_param){"attn_gnorm.bias", QD, 1, 0, 0, 1.0f, 0, INIT_ZEROS, 0, 0, 1};
    return N_W;
}

static void dj_fill(const hparams *hp, int layer, int index, float *out) {
    if (index == W_FEAT) fill_features(hp, layer, out);
    if (index == W_DECAY) fill_decay(hp, out);
    if (index == W_GATE) fill_gate(hp, layer, out);
}

/* ---- the session state ---------------------------------------------------------------------- */

typedef struct {
    int n_layers, H, d, m, n_threads;
    size_t head_floats; /* one S (m × d), padded */
    size_t off_scratch; /* per thread: chunk_floats() */
    size_t total;
    float *base;
} dj_state;

#define HEADER_BYTES align64(sizeof(dj_state))

/* per thread of a chunk: A (C × C), scaled Φk (C × m), powers of γ (C + 1) */
static size_t chunk_floats(int m) {
    return align16((size_t)CHUNK * CHUNK) + align16((size_t)CHUNK * m) + align16(CHUNK + 1);
}

static dj_state shape_of(const hparams *hp, const msrnn_session_params *p) {
    dj_state s;
    memset(&s, 0, sizeof s);
    s.n_layers = hp->info.n_layers, s.H = hp->info.n_heads, s.d = hp->info.head_dim;
    s.m = n_features(hp);
    s.n_threads = p->n_threads > 0 ? p->n_threads : 1;
    s.head_floats = align16((size_t)s.m * s.d);
    s.off_scratch = (size_t)s.n_layers * s.H * s.head_floats;
    s.total = (s.off_scratch + (size_t)s.n_threads * chunk_floats(s.m)) * sizeof(float);
    return s;
}

static float *state_S(const dj_state *s, int layer, int h) {
    return s->base + ((size_t)layer * s->H + h) * s->head_floats;
}

static msrnn_status dj_check(const hparams *hp, const msrnn_session_params *p) {
    (void)hp;
    if (p->memory && strcmp(p->memory, "full") && strcmp(p->memory, "dijiang"))
        return status_fail(MSRNN_ERR_INVALID,
                           "memory '%s': a dijiang model's memory is its own (a fixed recurrent "
                           "state per head); leave the memory unset or 'dijiang'",
                           p->memory);
    if (p->kv_f16)
        return status_fail(MSRNN_ERR_INVALID,
                           "a dijiang model keeps no KV cache (kv_f16 / --kv-type f16 does not "
                           "apply)");
    return MSRNN_OK;
}

static size_t dj_state_bytes(const hparams *hp, const msrnn_session_params *p) {
    return HEADER_BYTES + shape_of(hp, p).total;
}

static void dj_state_reset(void *state) {
    dj_state *s = state;
    memset(s->base, 0, s->off_scratch * sizeof(float));
}

static void dj_state_init(void *state, const hparams *hp, const msrnn_session_params *p) {
    dj_state *s = state;
    *s = shape_of(hp, p);
    s->base = (float *)((uint8_t *)state + HEADER_BYTES);
    dj_state_reset(state);
}

/* the states S of every head; not the per-thread scratch */
static void dj_state_data(const void *state, size_t *offset, size_t *bytes) {
    *offset = HEADER_BYTES;
    *bytes = ((const dj_state *)state)->off_scratch * sizeof(float);
}

static int dj_bounded(const void *state) {
    (void)state;
    return 1;
}

static size_t dj_used_bytes(const void *state) {
    const dj_state *s = state;
    return (size_t)s->n_layers * s->H * s->m * s->d * sizeof(float);
}

/* ---- the chunked form, shared by inference and training -------------------------------------- */

/* pw[i] = γ^i, i = 0..c */
static void powers(float *pw, float gamma, int c) {
    const double lg = log((double)gamma);
    for (int i = 0; i <= c; i++) pw[i] = (float)exp(lg * i);
}

/* One head over c rows: o (c × d, row stride ldo) = the chunk's outputs; S (m × d) advanced by
 * the chunk. fq (ld ldq), fk (ld ldk): features; v (ld ldv). scratch: chunk_floats(m). */
static void chunk_forward(float *o, int ldo, float *S, const float *fq, int ldq, const float *fk,
                          int ldk, const float *v, int ldv, float gamma, int c, int m, int d,
                          float *scratch) {
    if (c == 1) { /* the recurrence itself: S = γ S + φ(k)ᵀ v, o = φ(q) S */
        /* S += φ(k)ᵀv − (1 − γ) S: the small net change first, rounded onto S once. γ S for γ
         * near 1 (1 − 1e-6 moves S by ~8 of its ulps) rounds with a bias of one sign for thousands
         * of tokens: written so, one token per call drifted from the float64 recurrence by 2.6e-4
         * of the logit scale over 2^20 tokens; written this way, 4e-6 (tests/test_dijiang_ref.c) */
        const float decay = 1.0f - gamma;
        memset(o, 0, (size_t)d * sizeof(float));
        for (int a = 0; a < m; a++) {
            float *row = S + (size_t)a * d;
            for (int e = 0; e < d; e++) row[e] += fk[a] * v[e] - decay * row[e];
            axpy_f32(o, fq[a], row, d);
        }
        return;
    }
    float *A = scratch, *Kd = A + align16((size_t)CHUNK * CHUNK),
          *pw = Kd + align16((size_t)CHUNK * m);
    powers(pw, gamma, c);
    /* O = diag(γ^{i+1}) Φq S */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, c, d, m, 1.0f, fq, ldq, S, d, 0.0f, o,
                ldo);
    for (int i = 0; i < c; i++)
        for (int e = 0; e < d; e++) o[(size_t)i * ldo + e] *= pw[i + 1];
    /* A = (Φq Φkᵀ) ⊙ D; O += A V */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, c, c, m, 1.0f, fq, ldq, fk, ldk, 0.0f, A,
                c);
    for (int i = 0; i < c; i++)
        for (int j = 0; j < c; j++) A[(size_t)i * c + j] *= j <= i ? pw[i - j] : 0.0f;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, c, d, c, 1.0f, A, c, v, ldv, 1.0f, o,
                ldo);
    /* S = γ^c S + (diag(γ^{c−1−j}) Φk)ᵀ V */
    for (int j = 0; j < c; j++)
        for (int a = 0; a < m; a++) Kd[(size_t)j * m + a] = fk[(size_t)j * ldk + a] * pw[c - 1 - j];
    for (size_t i = 0; i < (size_t)m * d; i++) S[i] *= pw[c];
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, d, c, 1.0f, Kd, m, v, ldv, 1.0f, S, d);
}

/* φ = softmax over m of x·P for n rows of d (x contiguous rows): out (n × m) */
static void features(float *out, const float *x, const float *P, int n, int d, int m,
                     int n_threads) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, m, d, 1.0f, x, d, P, m, 0.0f, out, m);
#pragma omp parallel for schedule(static) if (n > 64) num_threads(n_threads)
    for (int r = 0; r < n; r++) softmax(out + (size_t)r * m, m);
}

/* per-head GroupNorm of n rows of H·d: y = (o − μ) r w + b, r = 1/sqrt(var + eps) (population);
 * mean, rstd (n × H) kept when non-NULL */
static void group_norm(float *y, float *mean, float *rstd, const float *o, const float *w,
                       const float *b, int n, int H, int d, float eps, int n_threads) {
#pragma omp parallel for schedule(static) if (n > 16) num_threads(n_threads)
    for (int t = 0; t < n; t++)
        for (int h = 0; h < H; h++) {
            const size_t off = ((size_t)t * H + h) * d;
            double mu = 0, var = 0;
            for (int e = 0; e < d; e++) mu += o[off + e];
            mu /= d;
            for (int e = 0; e < d; e++) var += (o[off + e] - mu) * (o[off + e] - mu);
            var /= d;
            const float r = (float)(1.0 / sqrt(var + eps)), mf = (float)mu;
            for (int e = 0; e < d; e++)
                y[off + e] = (o[off + e] - mf) * r * w[h * d + e] + b[h * d + e];
            if (mean) mean[(size_t)t * H + h] = mf, rstd[(size_t)t * H + h] = r;
        }
}

/* ---- inference ------------------------------------------------------------------------------ */

typedef struct {
    float *q, *k, *v, *g, *fq, *fk, *o, *rope;
} dj_work;

static dj_work work_of(const hparams *hp, int n, float *w) {
    const size_t QD = (size_t)hp->info.n_heads * hp->info.head_dim,
                 KD = (size_t)hp->info.n_kv_heads * hp->info.head_dim, m = n_features(hp);
    dj_work s;
    s.q = w, w += (size_t)n * QD;
    s.k = w, w += (size_t)n * KD;
    s.v = w, w += (size_t)n * KD;
    s.g = w, w += (size_t)n * QD;
    s.o = w, w += (size_t)n * QD;
    s.fq = w, w += (size_t)n * hp->info.n_heads * m;
    s.fk = w, w += (size_t)n * hp->info.n_kv_heads * m;
    s.rope = w;
    return s;
}

static size_t dj_work_floats(const hparams *hp, int n_batch) {
    const size_t QD = (size_t)hp->info.n_heads * hp->info.head_dim,
                 KD = (size_t)hp->info.n_kv_heads * hp->info.head_dim, m = n_features(hp);
    return (size_t)n_batch *
               (3 * QD + 2 * KD + (size_t)(hp->info.n_heads + hp->info.n_kv_heads) * m) +
           rope_table_floats(n_batch, hp->n_rot);
}

static int dj_max_in(const hparams *hp) {
    const int QD = hp->info.n_heads * hp->info.head_dim;
    return QD > hp->info.dim ? QD : hp->info.dim;
}

static void dj_prepare(const part_step *c) {
    const dj_work w = work_of(c->hp, c->n, c->work);
    rope_table_at(w.rope, c->pos, c->n, c->hp->n_rot, c->hp->info.rope_base);
}

static msrnn_status dj_infer(const part_step *c, const float *xn, float *out) {
    const hparams *hp = c->hp;
    const int n = c->n, H = hp->info.n_heads, Hkv = hp->info.n_kv_heads, d = hp->info.head_dim;
    const int m = n_features(hp), group = H / Hkv;
    const int QD = H * d, KD = Hkv * d;
    dj_work w = work_of(hp, n, c->work);
    float *ys[4] = {w.q, w.k, w.v, w.g};
    const weight *ws[4] = {&c->w[W_Q], &c->w[W_K], &c->w[W_V], &c->w[W_GATE]};
    matmul_many(4, ys, xn, ws, n, c->scratch, c->n_threads);
    rope_forward(w.q, w.q, w.rope, n, n, H, d, hp->n_rot, c->n_threads);
    rope_forward(w.k, w.k, w.rope, n, n, Hkv, d, hp->n_rot, c->n_threads);
    const float *P = c->w[W_FEAT].data, *gamma = c->w[W_DECAY].data;
    features(w.fq, w.q, P, n * H, d, m, c->n_threads);
    features(w.fk, w.k, P, n * Hkv, d, m, c->n_threads);
    for (int sq = 0; sq < c->n_seq; sq++) {
        dj_state *s = c->state[sq];
        const int t0 = c->seq_start[sq], t1 = c->seq_start[sq + 1];
        float *scratch = s->base + s->off_scratch;
#pragma omp parallel for schedule(static) num_threads(s->n_threads)
        for (int h = 0; h < H; h++) {
            float *S = state_S(s, c->layer, h),
                  *sc = scratch + omp_get_thread_num() * chunk_floats(m);
            const int g = h / group;
            for (int t = t0; t < t1; t += CHUNK) {
                const int len = t1 - t < CHUNK ? t1 - t : CHUNK;
                chunk_forward(w.o + (size_t)t * QD + (size_t)h * d, QD, S,
                              w.fq + ((size_t)t * H + h) * m, H * m,
                              w.fk + ((size_t)t * Hkv + g) * m, Hkv * m,
                              w.v + (size_t)t * KD + (size_t)g * d, KD, gamma[h], len, m, d, sc);
            }
        }
    }
    group_norm(w.o, NULL, NULL, w.o, c->w[W_GNW].data, c->w[W_GNB].data, n, H, d, hp->gn_eps,
               c->n_threads);
    swiglu_forward(w.o, w.g, w.o, n, QD, c->n_threads); /* silu(W_G xn) ⊙ GroupNorm(o) */
    matmul(out, w.o, &c->w[W_O], n, c->scratch, c->n_threads);
    return MSRNN_OK;
}

/* ---- training ------------------------------------------------------------------------------- */

static int n_chunks(int T) { return (T + CHUNK - 1) / CHUNK; }

/* saved per layer: v, the features, the raw heads o, GroupNorm's mean and rstd, the gate's input,
 * W_o's input y, and the state entering every chunk of every (sequence, query head) */
typedef struct {
    float *v, *fq, *fk, *o, *mean, *rstd, *gpre, *y, *states;
} dj_acts;

/* The layout of a layer's saved activations from base (NULL: only its size, returned). */
static size_t acts_layout(const hparams *hp, int B, int T, float *base, dj_acts *a) {
    const size_t N = (size_t)B * T, H = hp->info.n_heads, QD = H * hp->info.head_dim,
                 KD = (size_t)hp->info.n_kv_heads * hp->info.head_dim, m = n_features(hp);
    const size_t sizes[] = {N * KD, N * H * m, N * hp->info.n_kv_heads * m,
                            N * QD, N * H,     N * H,
                            N * QD, N * QD,    (size_t)B * n_chunks(T) * H * m * hp->info.head_dim};
    float **at[] = {&a->v, &a->fq, &a->fk, &a->o, &a->mean, &a->rstd, &a->gpre, &a->y, &a->states};
    size_t off = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        if (base) *at[i] = base + off;
        off += sizes[i];
    }
    return off;
}

static dj_acts acts_of(const part_train *c) {
    dj_acts a;
    acts_layout(c->hp, c->B, c->T, c->act, &a);
    return a;
}

static size_t dj_train_act_floats(const hparams *hp, int B, int T) {
    dj_acts a;
    return acts_layout(hp, B, T, NULL, &a);
}

static size_t dj_train_shared_floats(const hparams *hp, int B, int T) {
    (void)B;
    return rope_table_floats(T, hp->n_rot);
}

static void dj_train_init(const hparams *hp, int B, int T, float *shared) {
    (void)B;
    rope_table_init(shared, T, hp->n_rot, hp->info.rope_base);
}

/* per thread of the chunk jobs: S or G (m × d), A and dA (C × C), Kd (C × m), pw (C + 1), and a
 * (C × max(m, d)) temporary */
static size_t job_floats(const hparams *hp) {
    const size_t m = n_features(hp), d = hp->info.head_dim, w = m > d ? m : d;
    return align16(m * d) + 2 * align16((size_t)CHUNK * CHUNK) + align16((size_t)CHUNK * m) +
           align16(CHUNK + 1) + align16((size_t)CHUNK * w);
}

/* scratch: post-RoPE q and k, then their gradients (same buffers), GroupNorm's output, ∂/∂y,
 * ∂/∂o, ∂/∂features, ∂/∂v, ∂/∂(pre-RoPE q, k), ∂/∂gate input, ∂/∂γ of every (sequence, head),
 * the jobs' own */
typedef struct {
    float *qr, *kr, *gn, *dy, *dO, *dfq, *dfk, *dv, *dq, *dk, *dg, *dgam, *job;
} dj_scratch;

/* The layout of the shared scratch from base (NULL: only its size, returned). */
static size_t scratch_layout(const hparams *hp, int B, int T, int n_threads, float *base,
                             dj_scratch *s) {
    const size_t N = (size_t)B * T, H = hp->info.n_heads, QD = H * hp->info.head_dim,
                 KD = (size_t)hp->info.n_kv_heads * hp->info.head_dim, m = n_features(hp);
    const size_t sizes[] = {N * QD,
                            N * KD,
                            N * QD,
                            N * KD,
                            N * QD,
                            N * QD,
                            N * QD,
                            N * QD,
                            N * H * m,
                            N * hp->info.n_kv_heads * m,
                            N * KD,
                            (size_t)B * H,
                            (size_t)n_threads * job_floats(hp)};
    float **at[] = {&s->qr, &s->kr,  &s->dq,  &s->dk, &s->gn,   &s->dy, &s->dO,
                    &s->dg, &s->dfq, &s->dfk, &s->dv, &s->dgam, &s->job};
    size_t off = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        if (base) *at[i] = base + off;
        off += sizes[i];
    }
    return off;
}

static size_t dj_train_scratch_floats(const hparams *hp, int B, int T, int n_threads) {
    dj_scratch s;
    return scratch_layout(hp, B, T, n_threads, NULL, &s);
}

static dj_scratch scratch_of(const part_train *c) {
    dj_scratch s;
    scratch_layout(c->hp, c->B, c->T, c->n_threads, c->scratch, &s);
    return s;
}

static float *chunk_state(const part_train *c, const dj_acts *a, int b, int ch, int h) {
    const hparams *hp = c->hp;
    const size_t idx = ((size_t)b * n_chunks(c->T) + ch) * hp->info.n_heads + h;
    return a->states + idx * (size_t)n_features(hp) * hp->info.head_dim;
}

static void dj_train_forward(const part_train *c, const float *xn, float *out) {
    const hparams *hp = c->hp;
    const int B = c->B, T = c->T, N = B * T, C = hp->info.dim;
    const int H = hp->info.n_heads, Hk = hp->info.n_kv_heads, d = hp->info.head_dim;
    const int m = n_features(hp), QD = H * d, KD = Hk * d, group = H / Hk, NC = n_chunks(T);
    const dj_acts a = acts_of(c);
    const dj_scratch s = scratch_of(c);
    matmul_forward(s.qr, xn, c->w[W_Q], N, C, QD, c->n_threads);
    matmul_forward(s.kr, xn, c->w[W_K], N, C, KD, c->n_threads);
    matmul_forward(a.v, xn, c->w[W_V], N, C, KD, c->n_threads);
    matmul_forward(a.gpre, xn, c->w[W_GATE], N, C, QD, c->n_threads);
    rope_forward(s.qr, s.qr, c->shared, N, T, H, d, hp->n_rot, c->n_threads);
    rope_forward(s.kr, s.kr, c->shared, N, T, Hk, d, hp->n_rot, c->n_threads);
    features(a.fq, s.qr, c->w[W_FEAT], N * H, d, m, c->n_threads);
    features(a.fk, s.kr, c->w[W_FEAT], N * Hk, d, m, c->n_threads);
    const float *gamma = c->w[W_DECAY];
#pragma omp parallel for schedule(static) num_threads(c->n_threads)
    for (int job = 0; job < B * H; job++) {
        const int b = job / H, h = job % H, g = h / group;
        float *S = s.job + (size_t)omp_get_thread_num() * job_floats(hp),
              *sc = S + align16((size_t)m * d);
        memset(S, 0, (size_t)m * d * sizeof(float));
        for (int ch = 0; ch < NC; ch++) {
            const size_t t = (size_t)b * T + (size_t)ch * CHUNK;
            const int len = T - ch * CHUNK < CHUNK ? T - ch * CHUNK : CHUNK;
            memcpy(chunk_state(c, &a, b, ch, h), S, (size_t)m * d * sizeof(float));
            chunk_forward(a.o + t * QD + (size_t)h * d, QD, S, a.fq + (t * H + h) * m, H * m,
                          a.fk + (t * Hk + g) * m, Hk * m, a.v + t * KD + (size_t)g * d, KD,
                          gamma[h], len, m, d, sc);
        }
    }
    group_norm(s.gn, a.mean, a.rstd, a.o, c->w[W_GNW], c->w[W_GNB], N, H, d, hp->gn_eps,
               c->n_threads);
    swiglu_forward(a.y, a.gpre, s.gn, N, QD, c->n_threads);
    matmul_forward(out, a.y, c->w[W_O], N, QD, C, c->n_threads);
}

/* Backward of the chunked form for sequence b, kv head g: every query head of the group, chunks
 * last to first. Writes ∂/∂φ(q) and ∂/∂γ of those heads, accumulates ∂/∂φ(k), ∂/∂v of the kv head.
 * ∂/∂γ is the sum over chunks of the chunk's own dependence on γ, S0 (the state entering it) and G
 * (∂loss/∂ the state leaving it) held fixed; with i, j the chunk's rows and c its length:
 *   o_i   = γ^{i+1} φq_i S0 + Σ_{j≤i} γ^{i−j} (φq_i·φk_j) v_j
 *   S_end = γ^c S0 + Σ_j γ^{c−1−j} φk_jᵀ v_j
 *   ∂/∂γ  = Σ_i (i+1) γ^i ⟨dO_i, φq_i S0⟩ + Σ_{j<i} (i−j) γ^{i−j−1} (φq_i·φk_j)(dO_i·v_j)
 *         + c γ^{c−1} ⟨G, S0⟩ + Σ_j (c−1−j) γ^{c−2−j} φk_j·(G v_j) */
static void recurrence_backward(const part_train *c, const dj_acts *a, const dj_scratch *s, int b,
                                int g, float *job) {
    const hparams *hp = c->hp;
    const int T = c->T, H = hp->info.n_heads, Hk = hp->info.n_kv_heads, d = hp->info.head_dim;
    const int m = n_features(hp), QD = H * d, KD = Hk * d, group = H / Hk, NC = n_chunks(T);
    float *G = job, *A = G + align16((size_t)m * d), *dA = A + align16((size_t)CHUNK * CHUNK);
    float *Kd = dA + align16((size_t)CHUNK * CHUNK), *pw = Kd + align16((size_t)CHUNK * m);
    float *tmp = pw + align16(CHUNK + 1);
    for (int h = g * group; h < (g + 1) * group; h++) {
        const float gamma = c->w[W_DECAY][h];
        double dgam = 0;
        memset(G, 0, (size_t)m * d * sizeof(float));
        for (int ch = NC - 1; ch >= 0; ch--) {
            const size_t t = (size_t)b * T + (size_t)ch * CHUNK;
            const int cl = T - ch * CHUNK < CHUNK ? T - ch * CHUNK : CHUNK;
            const float *S0 = chunk_state(c, a, b, ch, h);
            const float *fq = a->fq + (t * H + h) * m, *fk = a->fk + (t * Hk + g) * m;
            const float *v = a->v + t * KD + (size_t)g * d, *dO = s->dO + t * QD + (size_t)h * d;
            float *dfq = s->dfq + (t * H + h) * m, *dfk = s->dfk + (t * Hk + g) * m;
            float *dv = s->dv + t * KD + (size_t)g * d;
            const int ldq = H * m, ldk = Hk * m;
            powers(pw, gamma, cl);
            /* A = (Φq Φkᵀ) ⊙ D, dA = (dO Vᵀ) ⊙ D */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, cl, cl, m, 1.0f, fq, ldq, fk, ldk,
                        0.0f, A, cl);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, cl, cl, d, 1.0f, dO, QD, v, KD,
                        0.0f, dA, cl);
            for (int i = 0; i < cl; i++)
                for (int j = 0; j < cl; j++) {
                    const float f = j <= i ? pw[i - j] : 0.0f;
                    if (j < i)
                        dgam += (double)(i - j) * pw[i - j - 1] * A[(size_t)i * cl + j] *
                                dA[(size_t)i * cl + j];
                    A[(size_t)i * cl + j] *= f, dA[(size_t)i * cl + j] *= f;
                }
            /* dΦq = diag(γ^{i+1}) dO S0ᵀ + dA Φk */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, cl, m, d, 1.0f, dO, QD, S0, d,
                        0.0f, tmp, m);
            for (int i = 0; i < cl; i++) {
                dgam +=
                    (double)(i + 1) * pw[i] * dot_f32(tmp + (size_t)i * m, fq + (size_t)i * ldq, m);
                for (int e = 0; e < m; e++)
                    dfq[(size_t)i * ldq + e] = tmp[(size_t)i * m + e] * pw[i + 1];
            }
            dgam += (double)cl * pw[cl - 1] * dot_f32(G, S0, m * d);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cl, m, cl, 1.0f, dA, cl, fk, ldk,
                        1.0f, dfq, ldq);
            /* dΦk += diag(γ^{c−1−i}) V Gᵀ + dAᵀ Φq */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, cl, m, d, 1.0f, v, KD, G, d, 0.0f,
                        tmp, m);
            for (int i = 0; i < cl; i++) {
                if (i < cl - 1)
                    dgam += (double)(cl - 1 - i) * pw[cl - 2 - i] *
                            dot_f32(tmp + (size_t)i * m, fk + (size_t)i * ldk, m);
                for (int e = 0; e < m; e++)
                    dfk[(size_t)i * ldk + e] += tmp[(size_t)i * m + e] * pw[cl - 1 - i];
            }
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, cl, m, cl, 1.0f, dA, cl, fq, ldq,
                        1.0f, dfk, ldk);
            /* dV += diag(γ^{c−1−i}) Φk G + Aᵀ dO */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cl, d, m, 1.0f, fk, ldk, G, d,
                        0.0f, tmp, d);
            for (int i = 0; i < cl; i++)
                for (int e = 0; e < d; e++)
                    dv[(size_t)i * KD + e] += tmp[(size_t)i * d + e] * pw[cl - 1 - i];
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, cl, d, cl, 1.0f, A, cl, dO, QD,
                        1.0f, dv, KD);
            /* G = γ^c G + (diag(γ^{i+1}) Φq)ᵀ dO */
            for (int i = 0; i < cl; i++)
                for (int e = 0; e < m; e++)
                    Kd[(size_t)i * m + e] = fq[(size_t)i * ldq + e] * pw[i + 1];
            for (size_t i = 0; i < (size_t)m * d; i++) G[i] *= pw[cl];
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, d, cl, 1.0f, Kd, m, dO, QD,
                        1.0f, G, d);
        }
        s->dgam[(size_t)b * H + h] = (float)dgam;
    }
}

/* dx += (φ ⊙ (dφ − ⟨dφ, φ⟩)) Pᵀ for n rows: the softmax feature map's backward */
static void features_backward(float *dx, float *dphi, const float *phi, const float *P, int n,
                              int d, int m, int n_threads) {
#pragma omp parallel for schedule(static) if (n > 64) num_threads(n_threads)
    for (int r = 0; r < n; r++) {
        float *dp = dphi + (size_t)r * m;
        const float *p = phi + (size_t)r * m;
        const float dot = dot_f32(dp, p, m);
        for (int e = 0; e < m; e++) dp[e] = p[e] * (dp[e] - dot);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, d, m, 1.0f, dphi, m, P, m, 1.0f, dx, d);
}

static void zero(float *p, size_t n) { memset(p, 0, n * sizeof(float)); }

static void dj_train_backward(const part_train *c, const float *xn, const float *dout, float *dxn) {
    const hparams *hp = c->hp;
    const int B = c->B, T = c->T, N = B * T, C = hp->info.dim;
    const int H = hp->info.n_heads, Hk = hp->info.n_kv_heads, d = hp->info.head_dim;
    const int m = n_features(hp), QD = H * d, KD = Hk * d;
    const dj_acts a = acts_of(c);
    const dj_scratch s = scratch_of(c);
    /* out = W_o y, y = silu(gpre) ⊙ gn */
    zero(s.dy, (size_t)N * QD);
    matmul_backward(s.dy, c->dw[W_O], dout, a.y, c->w[W_O], N, QD, C, c->n_threads);
    group_norm(s.gn, NULL, NULL, a.o, c->w[W_GNW], c->w[W_GNB], N, H, d, hp->gn_eps, c->n_threads);
    zero(s.dg, (size_t)N * QD);
    zero(s.dO, (size_t)N * QD); /* ∂/∂gn first, then ∂/∂o in place */
    swiglu_backward(s.dg, s.dO, s.dy, a.gpre, s.gn, N, QD, c->n_threads);
    /* GroupNorm: parameters (rows in order: deterministic), then ∂/∂o per row */
    float *dgw = c->dw[W_GNW], *dgb = c->dw[W_GNB];
    const float *gw = c->w[W_GNW];
    for (int t = 0; t < N; t++)
        for (int h = 0; h < H; h++) {
            const size_t off = ((size_t)t * H + h) * d;
            const float mu = a.mean[(size_t)t * H + h], r = a.rstd[(size_t)t * H + h];
            for (int e = 0; e < d; e++) {
                dgw[h * d + e] += s.dO[off + e] * (a.o[off + e] - mu) * r;
                dgb[h * d + e] += s.dO[off + e];
            }
        }
#pragma omp parallel for schedule(static) num_threads(c->n_threads)
    for (int t = 0; t < N; t++)
        for (int h = 0; h < H; h++) {
            const size_t off = ((size_t)t * H + h) * d;
            const float mu = a.mean[(size_t)t * H + h], r = a.rstd[(size_t)t * H + h];
            float *g = s.dO + off;
            double s1 = 0, s2 = 0;
            for (int e = 0; e < d; e++) {
                const float dxh = g[e] * gw[h * d + e], xh = (a.o[off + e] - mu) * r;
                s1 += dxh, s2 += dxh * xh;
            }
            const float m1 = (float)(s1 / d), m2 = (float)(s2 / d);
            for (int e = 0; e < d; e++) {
                const float dxh = g[e] * gw[h * d + e], xh = (a.o[off + e] - mu) * r;
                g[e] = r * (dxh - m1 - xh * m2);
            }
        }
    /* the recurrence */
    zero(s.dfk, (size_t)N * Hk * m);
    zero(s.dv, (size_t)N * KD);
#pragma omp parallel for schedule(static) num_threads(c->n_threads)
    for (int job = 0; job < B * Hk; job++)
        recurrence_backward(c, &a, &s, job / Hk, job % Hk,
                            s.job + (size_t)omp_get_thread_num() * job_floats(hp));
    for (int b = 0; b < B; b++) /* sequences in order: deterministic */
        for (int h = 0; h < H; h++) c->dw[W_DECAY][h] += s.dgam[(size_t)b * H + h];
    /* features → post-RoPE q, k → pre-RoPE → projections */
    zero(s.qr, (size_t)N * QD);
    zero(s.kr, (size_t)N * KD);
    features_backward(s.qr, s.dfq, a.fq, c->w[W_FEAT], N * H, d, m, c->n_threads);
    features_backward(s.kr, s.dfk, a.fk, c->w[W_FEAT], N * Hk, d, m, c->n_threads);
    zero(s.dq, (size_t)N * QD);
    zero(s.dk, (size_t)N * KD);
    rope_backward(s.dq, s.qr, c->shared, N, T, H, d, hp->n_rot, c->n_threads);
    rope_backward(s.dk, s.kr, c->shared, N, T, Hk, d, hp->n_rot, c->n_threads);
    matmul_backward(dxn, c->dw[W_Q], s.dq, xn, c->w[W_Q], N, C, QD, c->n_threads);
    matmul_backward(dxn, c->dw[W_K], s.dk, xn, c->w[W_K], N, C, KD, c->n_threads);
    matmul_backward(dxn, c->dw[W_V], s.dv, xn, c->w[W_V], N, C, KD, c->n_threads);
    matmul_backward(dxn, c->dw[W_GATE], s.dg, xn, c->w[W_GATE], N, C, QD, c->n_threads);
}

const part_kind part_dijiang = {
    "dijiang",
    dj_read_keys,
    dj_write_keys,
    dj_params,
    dj_check,
    dj_state_bytes,
    dj_state_init,
    dj_state_reset,
    dj_bounded,
    dj_used_bytes,
    NULL,
    NULL,
    dj_work_floats,
    dj_max_in,
    dj_prepare,
    dj_infer,
    dj_train_act_floats,
    dj_train_shared_floats,
    dj_train_scratch_floats,
    dj_train_init,
    dj_train_forward,
    dj_train_backward,
    dj_fill,
    dj_state_data,
};
