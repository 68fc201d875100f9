/* test_dijiang_ref.c — DiJiang (src/parts/dijiang.c) held to the independent float64 PyTorch
 * reference of tests/ref/gen_dijiang_ref.py (METHODS.md §3, §6).
 *
 * For every model of $MSRNN_REF_DIR/dijiang/MANIFEST.tsv (MHA and GQA, m = d, d/2 and 2d, γ per
 * head from 0.5 to float32(1 − 1e-6), tied and untied heads; T and Tt cross several of msrnn's
 * 64-token chunks and end in a partial one):
 *   1. logits of the whole sequence in one msrnn_session_eval call against the reference: max |got
 *      − ref| ≤ LOGIT_TOL × max |ref|;
 *   2. recurrent decoding (one token per call) and batches of 7 and of 64 (n_batch set to match)
 *      against the one-call logits: the same greedy token at every position and max |Δ| ≤
 *      DECODE_TOL × max |logit|; each also against the reference (LOGIT_TOL);
 *   3. training: train_model_step's loss within LOSS_TOL relative, every tensor's gradient
 *      max |g − ref| / max |ref| ≤ GRAD_TOL, P (attn_feat) fixed and γ (attn_decay) frozen by
 *      default: marked so in the parameter list and their gradients exactly 0; the list's names
 *      and sizes are the reference's, in order; then γ unfrozen (train_model_unfreeze, as train
 *      --unfreeze attn_decay): its gradient against the reference's (GRAD_TOL), every other
 *      gradient unchanged, bounds inside (0, 1); unfreezing P or an unknown name refused;
 *      train_model_logits of each row against inference on it (DECODE_TOL);
 *   6. fixed state: msrnn_session_bytes the same at open, after 10 and after 5000 tokens (past the
 *      model's context of 512: a dijiang session accepts any length), msrnn_session_memory_bytes
 *      the same after 100 and after 5000.
 * And for the model of role "stream" (the tiniest: D 32, H 2 / H_kv 1, d = m = 16, γ =
 * float32(1 − 1e-6) in one head of each layer):
 *   4. finite differences: a central difference of train_model_loss along a random direction
 *      against the directional derivative ⟨g, u⟩ from train_model_step, for u over every trainable
 *      tensor, over the mixers' trainable tensors only, over W_q and W_k only (the path through
 *      RoPE and the feature softmax), and over the unfrozen γ only (FD_TOL; u = 0 on P);
 *   5. stability: the STREAM_TOKENS = 2^20 random tokens of NAME.stream fed (a) in batches of 512
 *      (chunked prefill) and (b) one per call (recurrent), no logits asked for but after 2^14
 *      tokens and at the end: the logits finite, each against the float64 logits of NAME.stream at
 *      both points within STREAM_REF_TOL, (a) against (b) at the end within STREAM_TOL × max
 *      |logit|; both timings printed (sanitized builds: 2^14 tokens only, printed as such).
 * Prints one line per model and "test_dijiang_ref: N checks, M failures"; exits 1 on failure.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "msrnn.h"
#include "train/train_model.h"

/* f32 engines against f64: logits through 2 layers whose state sums up to T decayed terms (seen
 * ≤ 1e-6). */
#define LOGIT_TOL 1e-4
/* the same f32 model through other summation orders (chunked, recurrent; seen ≤ 1.7e-6) */
#define DECODE_TOL 1e-5
#define GRAD_TOL 1e-4 /* seen ≤ 2.6e-6 */
#define LOSS_TOL 1e-5 /* seen ≤ 4.8e-8 */
/* f32 loss of ~9.5 (half an ulp 5e-7) differenced over 2h = 2e-2, as test_train_ref.c does (seen
 * ≤ 1.3e-3) */
#define FD_H 1e-2
#define FD_TOL 2e-2
/* 2^20 tokens through the stream model: chunked against recurrent, and each against the float64
 * chunked reference of NAME.stream. Seen: batches of 512 7.6e-7 from the reference; one token per
 * call 1.8e-5 after 2^14 tokens and 2.6e-4 after 2^20 (1.7e-3 on another random stream), where
 * f32 rounding of γ S (γ = 1 − 1e-6, a decrement of ~8 ulps of S) is biased, and so is that of
 * S − (1 − γ) S, the same value; with the update written S + (φ(k)ᵀv − (1 − γ) S), the small net
 * change rounded once onto S, 5.7e-7 and 4e-6. */
#define STREAM_TOKENS (1 << 20)
#define STREAM_BATCH 512
#define STREAM_TOL 1e-4
#define STREAM_REF_TOL 1e-4
#define STR_(x) #x
#define STR(x) STR_(x)
#define N_THREADS 2

typedef struct {
    int T, V, B, Tt, n_tensors, m;
    int32_t *tokens, *train_tokens;
    double *logits, loss, *grads;
    char (*names)[48];
    uint64_t *sizes;
    uint32_t *frozen;
} dijiang_ref;

static int read_ref(const char *path, dijiang_ref *r) {
    memset(r, 0, sizeof *r);
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char magic[4];
    uint32_t h[7];
    int ok = fread(magic, 1, 4, f) == 4 && !memcmp(magic, "DJRF", 4) && fread(h, 4, 7, f) == 7 &&
             h[0] == 1 && h[1] > 0 && h[1] < 4096 && h[2] > 0 && h[2] < (1u << 20) && h[3] > 0 &&
             h[3] < 64 && h[4] > 0 && h[4] < 4096 && h[5] > 0 && h[5] < 4096 && h[6] > 0;
    if (ok) {
        r->T = (int)h[1], r->V = (int)h[2], r->B = (int)h[3], r->Tt = (int)h[4];
        r->n_tensors = (int)h[5], r->m = (int)h[6];
        const size_t TV = (size_t)r->T * r->V, nt = (size_t)r->B * (r->Tt + 1);
        r->tokens = malloc(sizeof(int32_t) * r->T);
        r->logits = malloc(sizeof(double) * TV);
        r->train_tokens = malloc(sizeof(int32_t) * nt);
        r->names = malloc(sizeof *r->names * r->n_tensors);
        r->sizes = malloc(sizeof(uint64_t) * r->n_tensors);
        r->frozen = malloc(sizeof(uint32_t) * r->n_tensors);
        ok = r->tokens && r->logits && r->train_tokens && r->names && r->sizes && r->frozen &&
             fread(r->tokens, 4, r->T, f) == (size_t)r->T && fread(r->logits, 8, TV, f) == TV &&
             fread(r->train_tokens, 4, nt, f) == nt && fread(&r->loss, 8, 1, f) == 1;
        uint64_t total = 0;
        for (int i = 0; ok && i < r->n_tensors; i++) {
            uint32_t fz[2];
            ok = fread(r->names[i], 1, 48, f) == 48 && fread(&r->sizes[i], 8, 1, f) == 1 &&
                 fread(fz, 4, 2, f) == 2 && r->sizes[i] < (1u << 26) && fz[0] <= 2;
            r->names[i][47] = 0;
            r->frozen[i] = fz[0];
            total += r->sizes[i];
        }
        r->grads = ok ? malloc(sizeof(double) * total) : NULL;
        ok = ok && r->grads && fread(r->grads, 8, total, f) == total;
        char extra;
        ok = ok && fread(&extra, 1, 1, f) == 0; /* nothing after the gradients */
    }
    fclose(f);
    return ok;
}

static void ref_free(dijiang_ref *r) {
    free(r->tokens), free(r->train_tokens), free(r->logits), free(r->grads);
    free(r->names), free(r->sizes), free(r->frozen);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double max_abs_d(const double *x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(x[i]));
    return m;
}
static double max_abs_f(const float *x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)x[i]));
    return m;
}
/* max |a − b| / max |b| (NaN anywhere gives infinity) */
static double err_fd(const float *a, const double *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        const double e = fabs((double)a[i] - b[i]);
        m = isnan(e) ? INFINITY : fmax(m, e);
    }
    return m / max_abs_d(b, n);
}
static double err_ff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        const double e = fabs((double)a[i] - (double)b[i]);
        m = isnan(e) ? INFINITY : fmax(m, e);
    }
    return m / max_abs_f(b, n);
}
static int all_finite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* 1: P, fixed by the file, never trained; 2: γ, frozen unless train --unfreeze attn_decay */
static int frozen_kind(const char *name) {
    const size_t n = strlen(name);
    return n >= 10 && !strcmp(name + n - 10, ".attn_feat")    ? PARAM_FIXED
           : n >= 11 && !strcmp(name + n - 11, ".attn_decay") ? PARAM_OPTIONAL
                                                              : PARAM_TRAINED;
}

/* Logits of tokens fed in pieces of `step` tokens (0: all in one call), n_batch = the piece. */
static void run(msrnn_model *m, const int32_t *tokens, int T, int step, float *logits) {
    msrnn_session_params p = msrnn_session_default_params();
    p.n_threads = N_THREADS, p.n_batch = step ? step : T;
    msrnn_session *s = NULL;
    REQUIRE_OK(msrnn_session_open(m, &p, &s));
    const int V = msrnn_model_get_info(m)->n_vocab;
    for (int t = 0; t < T;) {
        const int n = step && T - t > step ? step : T - t;
        REQUIRE_OK(msrnn_session_eval(s, tokens + t, n, logits + (size_t)t * V));
        t += n;
    }
    msrnn_session_close(s);
}

/* 4. d/dh loss(w + h u) at 0 against ⟨g, u⟩, u random (scaled by |w| + 0.01 so that every tensor
 * moves a little) on the trainable tensors that `pick` selects, 0 elsewhere. g: the gradient of
 * train_model_step on the same tokens. Returns the relative error. */
typedef int (*pick_fn)(const param_list *pl, int i);
static int pick_all(const param_list *pl, int i) { return !pl->p[i].frozen; }
static int pick_mixer(const param_list *pl, int i) {
    if (pl->p[i].frozen) return 0;
    for (int l = 0; param_ffn_norm(pl, l) < pl->n; l++)
        if (i >= param_mixer(pl, l) && i < param_ffn_norm(pl, l)) return 1;
    return 0;
}
static int pick_decay(const param_list *pl, int i) {
    return frozen_kind(pl->p[i].name) == PARAM_OPTIONAL;
}
static int pick_qk(const param_list *pl, int i) {
    const char *n = pl->p[i].name;
    return strstr(n, ".attn_q.weight") != NULL || strstr(n, ".attn_k.weight") != NULL;
}

static double fd_check(train_model *tm, const int32_t *tokens, const float *g, pick_fn pick,
                       const char *what, const char *name, uint64_t seed) {
    const param_list *pl = train_model_params_list(tm);
    const size_t np = train_model_n_params(tm);
    float *w = train_model_params(tm);
    float *u = calloc(np, sizeof *u), *w0 = malloc(np * sizeof *w0);
    REQUIRE(u && w0, "out of memory");
    uint64_t x = seed;
    double gu = 0;
    size_t moved = 0;
    for (int t = 0; t < pl->n; t++) {
        if (!pick(pl, t)) continue;
        /* γ moves by a fraction of its distance to 1 (plus 1e-3): a step of |γ| would carry
         * γ = 1 − 1e-6 far past 1, where γ^133 curves too much for a central difference */
        const int decay = frozen_kind(pl->p[t].name) == PARAM_OPTIONAL;
        for (size_t i = pl->p[t].offset; i < pl->p[t].offset + pl->p[t].n; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            const float scale = decay ? 1.0f - fabsf(w[i]) + 1e-3f : fabsf(w[i]) + 0.01f;
            u[i] = (float)((x >> 11) * 0x1.0p-53 - 0.5) * scale;
        }
        moved += pl->p[t].n;
    }
    memcpy(w0, w, np * sizeof *w);
    float lp = 0, lm = 0;
    for (size_t i = 0; i < np; i++) w[i] = w0[i] + (float)FD_H * u[i];
    REQUIRE_OK(train_model_loss(tm, tokens, &lp));
    /* ⟨g, u⟩ along the step actually taken: w0 ± h u rounded to float (γ near 1 moves by a few
     * ulps, whose rounding would otherwise count as error) */
    for (size_t i = 0; i < np; i++) {
        const float wm = w0[i] - (float)FD_H * u[i];
        gu += (double)g[i] * ((double)w[i] - wm) / (2 * FD_H);
        w[i] = wm;
    }
    REQUIRE_OK(train_model_loss(tm, tokens, &lm));
    memcpy(w, w0, np * sizeof *w);
    const double fd = ((double)lp - lm) / (2 * FD_H);
    const double e = fabs(fd - gu) / fmax(fabs(gu), 1e-12);
    CHECK(moved > 0 && e <= FD_TOL,
          "%s: finite difference over %s (%zu elements): <g, u> %.6g, central difference %.6g "
          "(error %.3g, limit %.0e)",
          name, what, moved, gu, fd, e, FD_TOL);
    free(u), free(w0);
    return e;
}

/* NAME.stream: the stream model's tokens and the float64 logits after the last of them */
typedef struct {
    int N, V, N_short;
    int32_t *tokens;
    double *logits_short, *logits; /* after the first N_short tokens, after all N */
} stream_ref;

static int read_stream(const char *path, stream_ref *r) {
    memset(r, 0, sizeof *r);
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char magic[4], extra;
    uint32_t h[4];
    int ok = fread(magic, 1, 4, f) == 4 && !memcmp(magic, "DJST", 4) && fread(h, 4, 4, f) == 4 &&
             h[0] == 1 && h[1] > 0 && h[1] <= (1u << 24) && h[2] > 0 && h[2] < (1u << 20) &&
             h[3] > 0 && h[3] <= h[1];
    if (ok) {
        r->N = (int)h[1], r->V = (int)h[2], r->N_short = (int)h[3];
        r->tokens = malloc(sizeof(int32_t) * r->N);
        r->logits_short = malloc(sizeof(double) * r->V);
        r->logits = malloc(sizeof(double) * r->V);
        ok = r->tokens && r->logits_short && r->logits &&
             fread(r->tokens, 4, r->N, f) == (size_t)r->N &&
             fread(r->logits_short, 8, r->V, f) == (size_t)r->V &&
             fread(r->logits, 8, r->V, f) == (size_t)r->V && fread(&extra, 1, 1, f) == 0;
    }
    fclose(f);
    return ok;
}

/* 5. The stream model fed the N (2^20) tokens of NAME.stream: (a) in batches of STREAM_BATCH, (b)
 * one per call; the logits are read after N_short (2^14, a multiple of STREAM_BATCH) and after N
 * tokens only (NULL logits on every call). Under the sanitizers (MSRNN_SANITIZED, far slower) the
 * run stops at N_short, and says so. One thread: a token of this tiny model is ~100 µs of work, in
 * which two threads' hand-offs weigh (measured 4× slower with two on a busy 2-core machine). */
static void stream_check(msrnn_model *m, const char *dir, const char *name) {
    char path[4400];
    snprintf(path, sizeof path, "%s/%s.stream", dir, name);
    stream_ref r;
    REQUIRE(read_stream(path, &r), "cannot read %s (gen_dijiang_ref.py writes it)", path);
    const int V = msrnn_model_get_info(m)->n_vocab;
    REQUIRE(r.V == V && r.N == STREAM_TOKENS && r.N_short % STREAM_BATCH == 0,
            "%s: %d tokens (checkpoint %d) of vocabulary %d, expected %d of %d", path, r.N,
            r.N_short, r.V, STREAM_TOKENS, V);
    const char *san = getenv("MSRNN_SANITIZED");
    const int sanitized = san && !strcmp(san, "1"), N = sanitized ? r.N_short : r.N;
    float *lg[2][2]; /* [mode][checkpoint] */
    for (int i = 0; i < 4; i++) {
        lg[i / 2][i % 2] = malloc(sizeof(float) * V);
        REQUIRE(lg[i / 2][i % 2], "out of memory");
    }
    const int at[2] = {r.N_short, N};
    const double *want[2] = {r.logits_short, sanitized ? r.logits_short : r.logits};
    double secs[2], e_ref[2][2];
    static const char *what[2] = {"batches of " STR(STREAM_BATCH), "one token per call"};
    for (int mode = 0; mode < 2; mode++) {
        const int step = mode == 0 ? STREAM_BATCH : 1;
        msrnn_session_params p = msrnn_session_default_params();
        p.n_threads = 1, p.n_batch = step;
        msrnn_session *s = NULL;
        REQUIRE_OK(msrnn_session_open(m, &p, &s));
        const double t0 = now();
        for (int t = 0; t < N;) {
            const int n = N - t < step ? N - t : step;
            const msrnn_status st = msrnn_session_eval(s, r.tokens + t, n, NULL);
            if (st != MSRNN_OK) REQUIRE_OK(st); /* counted once, not 2^20 times */
            t += n;
            for (int k = 0; k < 2; k++)
                if (t == at[k]) memcpy(lg[mode][k], msrnn_session_logits(s), sizeof(float) * V);
        }
        secs[mode] = now() - t0;
        CHECK(msrnn_session_n_past(s) == N, "%s: n_past %lld after %d tokens", name,
              (long long)msrnn_session_n_past(s), N);
        msrnn_session_close(s);
        for (int k = 0; k < 2; k++) {
            CHECK(all_finite(lg[mode][k], V), "%s: %s, the logits after %d tokens are not finite",
                  name, what[mode], at[k]);
            e_ref[mode][k] = err_fd(lg[mode][k], want[k], V);
            CHECK(e_ref[mode][k] <= STREAM_REF_TOL,
                  "%s: %s, logits after %d tokens vs float64 reference %.3g (limit %.0e)", name,
                  what[mode], at[k], e_ref[mode][k], STREAM_REF_TOL);
        }
    }
    const double e = err_ff(lg[0][1], lg[1][1], V);
    CHECK(e <= STREAM_TOL,
          "%s: after %d tokens, batches of %d vs one token per call %.3g (limit %.0e)", name, N,
          STREAM_BATCH, e, STREAM_TOL);
    printf("%-12s stream of %d tokens%s (max |logit| %.3g): batches of %d %.1f s, one per call "
           "%.1f s; vs the float64 reference after %d / %d tokens: batches %.2g / %.2g, one per "
           "call %.2g / %.2g; the two differ by %.2g at the end\n",
           name, N, sanitized ? " (MSRNN_SANITIZED: not the 2^20 of a plain build)" : "",
           max_abs_d(want[1], V), STREAM_BATCH, secs[0], secs[1], at[0], at[1], e_ref[0][0],
           e_ref[0][1], e_ref[1][0], e_ref[1][1], e);
    for (int i = 0; i < 4; i++) free(lg[i / 2][i % 2]);
    free(r.tokens), free(r.logits_short), free(r.logits);
}

static void test_model(const char *dir, const char *name, int stream) {
    char path[4400];
    snprintf(path, sizeof path, "%s/%s.ref", dir, name);
    dijiang_ref r;
    REQUIRE(read_ref(path, &r), "cannot read %s", path);
    double t_phase[4], t_mark = now(); /* inference, state, training, finite differences */
    const int T = r.T, V = r.V;
    const size_t TV = (size_t)T * V;
    float *lg = malloc(sizeof(float) * TV), *lg2 = malloc(sizeof(float) * TV);
    REQUIRE(lg && lg2, "out of memory");

    /* 1. the whole sequence in one call against the reference */
    msrnn_model *m = NULL;
    snprintf(path, sizeof path, "%s/%s.gguf", dir, name);
    REQUIRE_OK(msrnn_model_open(path, &m));
    REQUIRE(msrnn_model_get_info(m)->n_vocab == V, "%s: n_vocab %d, reference %d", name,
            msrnn_model_get_info(m)->n_vocab, V);
    run(m, r.tokens, T, 0, lg);
    const double e_ref = err_fd(lg, r.logits, TV);
    CHECK(e_ref <= LOGIT_TOL, "%s: logits vs reference %.3g (limit %.0e)", name, e_ref, LOGIT_TOL);

    /* 2. one token per call, batches of 7 and of 64, against the one-call logits and the reference
     */
    static const int steps[] = {1, 7, 64};
    double e_dec = 0, e_dec_ref = 0;
    for (int k = 0; k < 3; k++) {
        run(m, r.tokens, T, steps[k], lg2);
        const double e = err_ff(lg2, lg, TV), er = err_fd(lg2, r.logits, TV);
        int same_greedy = 1, first = -1;
        for (int t = 0; t < T; t++)
            if (argmax(lg2 + (size_t)t * V, V) != argmax(lg + (size_t)t * V, V)) {
                same_greedy = 0;
                if (first < 0) first = t;
            }
        CHECK(e <= DECODE_TOL, "%s: pieces of %d vs one call %.3g (limit %.0e)", name, steps[k], e,
              DECODE_TOL);
        CHECK(same_greedy, "%s: pieces of %d pick another greedy token than one call (first at %d)",
              name, steps[k], first);
        CHECK(er <= LOGIT_TOL, "%s: pieces of %d vs reference %.3g (limit %.0e)", name, steps[k],
              er, LOGIT_TOL);
        e_dec = fmax(e_dec, e), e_dec_ref = fmax(e_dec_ref, er);
    }

    t_phase[0] = now() - t_mark, t_mark = now();

    /* 6. a fixed state */
    size_t state_bytes = 0, state_mem = 0;
    {
        msrnn_session_params p = msrnn_session_default_params();
        p.n_threads = N_THREADS, p.n_batch = 512; /* the eval calls below: 10, 90 and 4900 tokens */
        msrnn_session *s = NULL;
        REQUIRE_OK(msrnn_session_open(m, &p, &s));
        const size_t bytes0 = msrnn_session_bytes(s);
        int32_t *many = malloc(sizeof(int32_t) * 5000);
        REQUIRE(many, "out of memory");
        many[0] = 1;
        for (int i = 1; i < 5000; i++) many[i] = r.tokens[1 + i % (T - 1)];
        REQUIRE_OK(msrnn_session_eval(s, many, 10, NULL));
        const size_t bytes10 = msrnn_session_bytes(s);
        REQUIRE_OK(msrnn_session_eval(s, many + 10, 90, NULL));
        const size_t mem100 = msrnn_session_memory_bytes(s);
        REQUIRE_OK(msrnn_session_eval(s, many + 100, 4900, NULL));
        const size_t bytes5000 = msrnn_session_bytes(s), mem5000 = msrnn_session_memory_bytes(s);
        CHECK(bytes0 == bytes10 && bytes10 == bytes5000,
              "%s: session bytes %zu at open, %zu after 10 tokens, %zu after 5000", name, bytes0,
              bytes10, bytes5000);
        CHECK(mem100 == mem5000 && mem100 > 0,
              "%s: memory bytes %zu after 100 tokens, %zu after 5000", name, mem100, mem5000);
        CHECK(msrnn_session_n_past(s) == 5000, "%s: n_past %lld after 5000 tokens", name,
              (long long)msrnn_session_n_past(s));
        CHECK(all_finite(msrnn_session_logits(s), V), "%s: logits after 5000 tokens not finite",
              name);
        state_bytes = bytes5000, state_mem = mem5000;
        free(many);
        msrnn_session_close(s);
    }

    t_phase[1] = now() - t_mark, t_mark = now();

    /* 3. training: loss and gradients */
    train_model *tm = NULL;
    REQUIRE_OK(train_model_open(path, r.B, r.Tt, N_THREADS, 0, &tm));
    const param_list *pl = train_model_params_list(tm);
    int names_ok = pl->n == r.n_tensors;
    for (int i = 0; names_ok && i < pl->n; i++)
        names_ok = !strcmp(pl->p[i].name, r.names[i]) && pl->p[i].n == r.sizes[i];
    CHECK(names_ok, "%s: the parameter list (%d tensors) differs from the reference's %d", name,
          pl->n, r.n_tensors);
    float loss = 0;
    train_model_zero_grad(tm);
    REQUIRE_OK(train_model_step(tm, r.train_tokens, 1.0f, &loss));
    const double e_loss = fabs(loss - r.loss) / fabs(r.loss);
    CHECK(e_loss <= LOSS_TOL, "%s: loss %.9g vs reference %.9g", name, (double)loss, r.loss);
    double e_grad = 0;
    char worst[64] = "";
    int n_frozen = 0;
    const float *g = train_model_grads(tm);
    size_t off = 0;
    for (int i = 0; names_ok && i < pl->n; i++) {
        const param_desc *pd = &pl->p[i];
        CHECK(pd->frozen == (int)r.frozen[i] && (int)r.frozen[i] == frozen_kind(pd->name),
              "%s: %s frozen %d, reference %u", name, pd->name, pd->frozen, r.frozen[i]);
        if (r.frozen[i]) {
            size_t nz = 0;
            for (size_t k = 0; k < pd->n; k++) nz += g[pd->offset + k] != 0.0f;
            CHECK(nz == 0, "%s: frozen %s has %zu nonzero gradients", name, pd->name, nz);
            n_frozen++;
        } else {
            const double e = err_fd(g + pd->offset, r.grads + off, pd->n);
            CHECK(e <= GRAD_TOL, "%s: gradient of %s: %.3g (limit %.0e)", name, pd->name, e,
                  GRAD_TOL);
            if (!(e <= e_grad)) e_grad = e, snprintf(worst, sizeof worst, "%s", pd->name);
        }
        off += pd->n;
    }
    /* γ unfrozen (train --unfreeze attn_decay): its gradient against the reference's, nothing
     * else changed; a fixed or unknown tensor refused */
    double e_gamma = 0;
    {
        CHECK(train_model_unfreeze(tm, "attn_feat") == MSRNN_ERR_INVALID &&
                  strstr(msrnn_last_error(), "fixed"),
              "%s: unfreezing P: %s", name, msrnn_last_error());
        CHECK(train_model_unfreeze(tm, "attn_dekay") == MSRNN_ERR_INVALID &&
                  strstr(msrnn_last_error(), "attn_decay"),
              "%s: unfreezing a misspelt tensor: %s", name, msrnn_last_error());
        const size_t np = train_model_n_params(tm);
        float *g_frozen = malloc(np * sizeof *g_frozen);
        REQUIRE(g_frozen, "out of memory");
        memcpy(g_frozen, g, np * sizeof *g);
        REQUIRE_OK(train_model_unfreeze(tm, "attn_decay"));
        train_model_zero_grad(tm);
        REQUIRE_OK(train_model_step(tm, r.train_tokens, 1.0f, &loss));
        size_t o2 = 0, n_dec = 0, other = 0;
        for (int i = 0; names_ok && i < pl->n; i++) {
            const param_desc *pd = &pl->p[i];
            if (r.frozen[i] == PARAM_OPTIONAL) {
                CHECK(!pd->frozen && pd->hi > pd->lo && pd->lo > 0 && pd->hi < 1,
                      "%s: %s unfrozen %d, bounds [%g, %g]", name, pd->name, pd->frozen,
                      (double)pd->lo, (double)pd->hi);
                e_gamma = fmax(e_gamma, err_fd(g + pd->offset, r.grads + o2, pd->n));
                n_dec++;
            } else
                for (size_t k = 0; k < pd->n; k++)
                    other += g[pd->offset + k] != g_frozen[pd->offset + k];
            o2 += pd->n;
        }
        CHECK(n_dec > 0 && e_gamma <= GRAD_TOL,
              "%s: gradient of gamma (%zu tensors): %.3g (limit %.0e)", name, n_dec, e_gamma,
              GRAD_TOL);
        CHECK(other == 0, "%s: unfreezing gamma changed %zu other gradients", name, other);
        free(g_frozen);
    }
    /* the training forward against inference on the same rows */
    double e_train_inf = 0;
    {
        const int Tt = r.Tt;
        float *a = malloc(sizeof(float) * (size_t)Tt * V),
              *b = malloc(sizeof(float) * (size_t)Tt * V);
        REQUIRE(a && b, "out of memory");
        for (int row = 0; row < r.B; row++) {
            REQUIRE_OK(train_model_logits(tm, r.train_tokens, row, a));
            run(m, r.train_tokens + (size_t)row * (Tt + 1), Tt, 0, b);
            e_train_inf = fmax(e_train_inf, err_ff(a, b, (size_t)Tt * V));
        }
        CHECK(e_train_inf <= DECODE_TOL, "%s: train_model_logits vs inference %.3g (limit %.0e)",
              name, e_train_inf, DECODE_TOL);
        free(a), free(b);
    }

    t_phase[2] = now() - t_mark, t_mark = now();

    /* 4. finite differences (the stream model, the tiniest) */
    double e_fd[4] = {0, 0, 0, 0};
    if (stream && names_ok) {
        const size_t np = train_model_n_params(tm);
        float *g0 = malloc(np * sizeof *g0);
        REQUIRE(g0, "out of memory");
        memcpy(g0, g, np * sizeof *g0);
        e_fd[0] = fd_check(tm, r.train_tokens, g0, pick_all, "every trainable tensor", name,
                           0x9e3779b97f4a7c15ull);
        e_fd[1] = fd_check(tm, r.train_tokens, g0, pick_mixer, "the mixers' trainable tensors",
                           name, 0x853c49e6748fea9bull);
        e_fd[2] =
            fd_check(tm, r.train_tokens, g0, pick_qk, "W_q and W_k", name, 0xda3e39cb94b95bdbull);
        e_fd[3] = fd_check(tm, r.train_tokens, g0, pick_decay, "gamma (unfrozen)", name,
                           0x2545f4914f6cdd1dull);
        free(g0);
    }
    train_model_free(tm);
    t_phase[3] = now() - t_mark;
    printf("%-12s T %d Tt %d m %d: logits %.2g, pieces of 1/7/64 vs one call %.2g (vs reference "
           "%.2g), loss %.2g, gradients %.2g (%s; %d frozen at 0; gamma unfrozen %.2g), train vs "
           "inference %.2g, state %zu bytes (memory %zu) at any length",
           name, T, r.Tt, r.m, e_ref, e_dec, e_dec_ref, e_loss, e_grad, worst, n_frozen, e_gamma,
           e_train_inf, state_bytes, state_mem);
    if (stream)
        printf(", finite differences %.2g / %.2g / %.2g / gamma %.2g", e_fd[0], e_fd[1], e_fd[2],
               e_fd[3]);
    printf(" [%.1f + %.1f + %.1f + %.1f s]\n", t_phase[0], t_phase[1], t_phase[2], t_phase[3]);
    fflush(stdout);

    /* 5. stability over 2^20 tokens */
    if (stream) stream_check(m, dir, name);
    msrnn_model_close(m);
    free(lg), free(lg2);
    ref_free(&r);
}

int main(void) {
    const char *ref = getenv("MSRNN_REF_DIR");
    REQUIRE(ref, "MSRNN_REF_DIR is not set (tests/ref/generate.sh writes it)");
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s/dijiang", ref);
    snprintf(path, sizeof path, "%s/MANIFEST.tsv", dir);
    FILE *f = fopen(path, "r");
    REQUIRE(f, "cannot open %s (run tests/ref/gen_dijiang_ref.py)", path);
    char line[1024];
    int n = 0, n_stream = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        char name[128], role[32];
        int T, Tt, m;
        REQUIRE(sscanf(line, "%127s %d %d %d %31s", name, &T, &Tt, &m, role) == 5,
                "bad line in %s: %s", path, line);
        const int stream = !strcmp(role, "stream");
        REQUIRE(stream || !strcmp(role, "ref"), "%s: unknown role '%s'", name, role);
        test_model(dir, name, stream);
        n++, n_stream += stream;
    }
    fclose(f);
    REQUIRE(n >= 4 && n_stream == 1, "%d models, %d of role stream, in %s", n, n_stream, path);
    printf("test_dijiang_ref: %d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
