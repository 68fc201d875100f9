/* test_memoryformer_ref.c — MemoryFormer (src/parts/mf_attn.c, mf_block.c, src/nn/memlayer.c) held
 * to the independent float64 PyTorch reference of tests/ref/gen_memoryformer_ref.py (METHODS.md
 * §4, §6).
 *
 * For every model of $MSRNN_REF_DIR/memoryformer/MANIFEST.tsv (τ = 4 and 8, τ₂ = τ + 1 / + 2,
 * "paper" weighting at t = 1 and 0.5 and "code", all / some / no biases, tied and untied head, f32
 * and f16 tables; the reference keeps every hashed input at least 1e-4 away from 0, so that f32
 * and f64 pick the same buckets):
 *   1. logits of the whole sequence in one msrnn_session_eval call against the reference: max |got
 *      − ref| ≤ LOGIT_TOL × max |ref|;
 *   2. one token per call and batches of 7 against the one-call logits (DECODE_TOL, the same
 *      greedy token at every position) and the reference (LOGIT_TOL);
 *   3. the greedy continuation of the prompt (n_gen tokens, one per call) equals the reference's;
 *   4. training: train_model_step's loss within LOSS_TOL relative; the parameter list's names and
 *      sizes are the reference's, in order; every tensor's gradient (table rows, biases, norms,
 *      LayerNorm, embedding, head) max |g − ref| / max |ref| ≤ GRAD_TOL; train_model_logits of each
 *      row against inference (DECODE_TOL).
 * Prints one line per model and "test_memoryformer_ref: N checks, M failures"; exits 1 on failure.
 * The memory layer alone (hash convention, weights, their derivatives, gather and backward against
 * plain loops) is tests/test_memlayer.c.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "msrnn.h"
#include "train/train_model.h"

#define LOGIT_TOL 1e-4
#define DECODE_TOL 1e-5
#define GRAD_TOL 1e-4
#define LOSS_TOL 1e-5
#define N_THREADS 2

typedef struct {
    int T, V, B, Tt, n_tensors, n_gen;
    int32_t *tokens, *greedy, *train_tokens;
    double *logits, loss, *grads;
    char (*names)[48];
    uint64_t *sizes;
} mf_ref;

static int read_ref(const char *path, mf_ref *r) {
    memset(r, 0, sizeof *r);
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char magic[4];
    uint32_t h[7];
    int ok = fread(magic, 1, 4, f) == 4 && !memcmp(magic, "MFRF", 4) && fread(h, 4, 7, f) == 7 &&
             h[0] == 1 && h[1] > 0 && h[1] < 4096 && h[2] > 0 && h[2] < (1u << 20) && h[3] > 0 &&
             h[3] < 64 && h[4] > 0 && h[4] < 4096 && h[5] > 0 && h[5] < 4096 && h[6] < 4096;
    if (ok) {
        r->T = (int)h[1], r->V = (int)h[2], r->B = (int)h[3], r->Tt = (int)h[4];
        r->n_tensors = (int)h[5], r->n_gen = (int)h[6];
        const size_t TV = (size_t)r->T * r->V, nt = (size_t)r->B * (r->Tt + 1);
        r->tokens = malloc(sizeof(int32_t) * r->T);
        r->logits = malloc(sizeof(double) * TV);
        r->greedy = malloc(sizeof(int32_t) * (r->n_gen + 1));
        r->train_tokens = malloc(sizeof(int32_t) * nt);
        r->names = malloc(sizeof *r->names * r->n_tensors);
        r->sizes = malloc(sizeof(uint64_t) * r->n_tensors);
        ok = r->tokens && r->logits && r->greedy && r->train_tokens && r->names && r->sizes &&
             fread(r->tokens, 4, r->T, f) == (size_t)r->T && fread(r->logits, 8, TV, f) == TV &&
             fread(r->greedy, 4, r->n_gen, f) == (size_t)r->n_gen &&
             fread(r->train_tokens, 4, nt, f) == nt && fread(&r->loss, 8, 1, f) == 1;
        uint64_t total = 0;
        for (int i = 0; ok && i < r->n_tensors; i++) {
            uint32_t pad[2];
            ok = fread(r->names[i], 1, 48, f) == 48 && fread(&r->sizes[i], 8, 1, f) == 1 &&
                 fread(pad, 4, 2, f) == 2 && r->sizes[i] < (1u << 26);
            r->names[i][47] = 0;
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

static void ref_free(mf_ref *r) {
    free(r->tokens), free(r->greedy), free(r->train_tokens), free(r->logits), free(r->grads);
    free(r->names), free(r->sizes);
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
    return m / fmax(max_abs_d(b, n), 1e-30);
}
static double err_ff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        const double e = fabs((double)a[i] - (double)b[i]);
        m = isnan(e) ? INFINITY : fmax(m, e);
    }
    return m / fmax(max_abs_f(b, n), 1e-30);
}
static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
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

static void test_model(const char *dir, const char *name) {
    char path[4400];
    snprintf(path, sizeof path, "%s/%s.ref", dir, name);
    mf_ref r;
    REQUIRE(read_ref(path, &r), "cannot read %s", path);
    const int T = r.T, V = r.V;
    const size_t TV = (size_t)T * V;
    float *lg = malloc(sizeof(float) * TV), *lg2 = malloc(sizeof(float) * TV);
    REQUIRE(lg && lg2, "out of memory");

    /* 1. one call */
    msrnn_model *m = NULL;
    snprintf(path, sizeof path, "%s/%s.gguf", dir, name);
    REQUIRE_OK(msrnn_model_open(path, &m));
    REQUIRE(msrnn_model_get_info(m)->n_vocab == V, "%s: n_vocab %d, reference %d", name,
            msrnn_model_get_info(m)->n_vocab, V);
    run(m, r.tokens, T, 0, lg);
    const double e_ref = err_fd(lg, r.logits, TV);
    CHECK(e_ref <= LOGIT_TOL, "%s: logits vs reference %.3g (limit %.0e)", name, e_ref, LOGIT_TOL);

    /* 2. pieces of 1 and 7 */
    static const int steps[] = {1, 7};
    double e_dec = 0, e_dec_ref = 0;
    for (int k = 0; k < 2; k++) {
        run(m, r.tokens, T, steps[k], lg2);
        const double e = err_ff(lg2, lg, TV), er = err_fd(lg2, r.logits, TV);
        int first = -1;
        for (int t = 0; t < T && first < 0; t++)
            if (argmax(lg2 + (size_t)t * V, V) != argmax(lg + (size_t)t * V, V)) first = t;
        CHECK(e <= DECODE_TOL, "%s: pieces of %d vs one call %.3g (limit %.0e)", name, steps[k], e,
              DECODE_TOL);
        CHECK(first < 0, "%s: pieces of %d pick another greedy token than one call (first at %d)",
              name, steps[k], first);
        CHECK(er <= LOGIT_TOL, "%s: pieces of %d vs reference %.3g (limit %.0e)", name, steps[k],
              er, LOGIT_TOL);
        e_dec = fmax(e_dec, e), e_dec_ref = fmax(e_dec_ref, er);
    }

    /* 3. greedy continuation, one token per call after the prompt */
    int same_gen = 1, first_diff = -1;
    {
        msrnn_session_params p = msrnn_session_default_params();
        p.n_threads = N_THREADS, p.n_batch = T;
        msrnn_session *s = NULL;
        REQUIRE_OK(msrnn_session_open(m, &p, &s));
        REQUIRE_OK(msrnn_session_eval(s, r.tokens, T, NULL));
        for (int i = 0; i < r.n_gen; i++) {
            int32_t tok = argmax(msrnn_session_logits(s), V);
            if (tok != r.greedy[i] && same_gen) same_gen = 0, first_diff = i;
            tok = r.greedy[i]; /* keep following the reference to report every step */
            REQUIRE_OK(msrnn_session_eval(s, &tok, 1, NULL));
        }
        msrnn_session_close(s);
    }
    CHECK(r.n_gen > 0 && same_gen, "%s: greedy continuation differs from the reference at step %d",
          name, first_diff);

    /* 4. training */
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
    const float *g = train_model_grads(tm);
    size_t off = 0;
    for (int i = 0; names_ok && i < pl->n; i++) {
        const param_desc *pd = &pl->p[i];
        const double e = err_fd(g + pd->offset, r.grads + off, pd->n);
        CHECK(e <= GRAD_TOL, "%s: gradient of %s: %.3g (limit %.0e)", name, pd->name, e, GRAD_TOL);
        if (!(e <= e_grad)) e_grad = e, snprintf(worst, sizeof worst, "%s", pd->name);
        off += pd->n;
    }
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
    train_model_free(tm);
    printf("%-18s T %d Tt %d: logits %.2g, pieces of 1/7 vs one call %.2g (vs reference %.2g), "
           "greedy %d tokens %s, loss %.2g, gradients %.2g (%s), train vs inference %.2g\n",
           name, T, r.Tt, e_ref, e_dec, e_dec_ref, r.n_gen, same_gen ? "equal" : "DIFFER", e_loss,
           e_grad, worst, e_train_inf);
    fflush(stdout);
    msrnn_model_close(m);
    free(lg), free(lg2);
    ref_free(&r);
}

int main(void) {
    const char *ref = getenv("MSRNN_REF_DIR");
    REQUIRE(ref, "MSRNN_REF_DIR is not set (tests/ref/generate.sh writes it)");
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s/memoryformer", ref);
    snprintf(path, sizeof path, "%s/MANIFEST.tsv", dir);
    FILE *f = fopen(path, "r");
    REQUIRE(f, "cannot open %s (run tests/ref/gen_memoryformer_ref.py)", path);
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        char name[128];
        REQUIRE(sscanf(line, "%127s", name) == 1, "bad line in %s: %s", path, line);
        test_model(dir, name);
        n++;
    }
    fclose(f);
    REQUIRE(n >= 4, "%d models in %s", n, path);
    printf("test_memoryformer_ref: %d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
