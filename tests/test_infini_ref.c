/* test_infini_ref.c — Infini-attention (src/parts/infini.c) held to the independent float64
 * PyTorch reference of tests/ref/gen_infini_ref.py (METHODS.md §2, §6).
 *
 * For every model of $MSRNN_REF_DIR/infini/MANIFEST.tsv (MHA and GQA, odd head counts, linear and
 * delta rules, T = 4 whole segments and a partial one):
 *   1. logits of the whole sequence in one call against the reference: max |got − ref| ≤ LOGIT_TOL
 *      × max |ref| (f32 against f64 through 2–3 layers and a memory of sums over segments);
 *   2. decoding equals prefill: one token per call, and batches of 5 (pieces that cross segment
 *      boundaries), against the one-call logits: the same greedy token at every position and max
 *      |Δ| ≤ DECODE_TOL × max |logit|;
 *   3. β = −∞ (NAME_local.gguf) against the reference's segment-local attention (LOGIT_TOL);
 *   4. one segment covering the input: the llama file converted by model_convert (segment = T and
 *      4T) against the llama file itself, both prefilling the whole sequence with blocked sgemm
 *      attention: bit for bit (the same arithmetic in the same order); one token per call, where
 *      the llama path takes its decoding kernels (dot_rows, mix_rows) and infini sgemm,
 *      within DECODE_TOL;
 *   5. training: train_model_step's loss and the gradient of every tensor (β and Q/K/V through the
 *      memory across every segment included) against autograd: loss within 1e-5 relative, each
 *      tensor max |g − ref| / max |ref| ≤ GRAD_TOL; the parameter list's names and sizes are the
 *      reference's, in the same order;
 *   6. state bytes: msrnn_session_bytes is the same after 1 segment and after 2000 tokens (past the
 *      model's context of 64: an infini session accepts any length), and msrnn_session_memory_bytes
 *      at a segment boundary is the same after one segment and after many.
 * Prints one line per model and "test_infini_ref: N checks, M failures"; exits 1 on failure.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "model/convert.h"
#include "msrnn.h"
#include "train/train_model.h"

/* f32 engines against f64: logits of std ~1 through 2–3 layers (seen ≤ 2e-6 relative). */
#define LOGIT_TOL 1e-4
/* the same f32 model through other summation orders (seen ≤ 1e-6) */
#define DECODE_TOL 1e-5
#define GRAD_TOL 1e-4
#define LOSS_TOL 1e-5
#define N_THREADS 2

typedef struct {
    int T, V, B, Tt, n_tensors, segment, rule;
    int32_t *tokens, *train_tokens;
    double *logits, *local, loss, *grads;
    char (*names)[48];
    uint64_t *sizes;
} infini_ref;

static int read_ref(const char *path, infini_ref *r) {
    memset(r, 0, sizeof *r);
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char magic[4];
    uint32_t h[8];
    int ok = fread(magic, 1, 4, f) == 4 && !memcmp(magic, "INFR", 4) && fread(h, 4, 8, f) == 8 &&
             h[0] == 1 && h[1] > 0 && h[1] < 4096 && h[2] > 0 && h[2] < (1u << 20) && h[3] > 0 &&
             h[3] < 64 && h[4] > 0 && h[4] < 4096 && h[5] > 0 && h[5] < 4096;
    if (ok) {
        r->T = (int)h[1], r->V = (int)h[2], r->B = (int)h[3], r->Tt = (int)h[4];
        r->n_tensors = (int)h[5], r->segment = (int)h[6], r->rule = (int)h[7];
        const size_t TV = (size_t)r->T * r->V, nt = (size_t)r->B * (r->Tt + 1);
        r->tokens = malloc(sizeof(int32_t) * r->T);
        r->logits = malloc(sizeof(double) * TV);
        r->local = malloc(sizeof(double) * TV);
        r->train_tokens = malloc(sizeof(int32_t) * nt);
        r->names = malloc(sizeof *r->names * r->n_tensors);
        r->sizes = malloc(sizeof(uint64_t) * r->n_tensors);
        ok = r->tokens && r->logits && r->local && r->train_tokens && r->names && r->sizes &&
             fread(r->tokens, 4, r->T, f) == (size_t)r->T && fread(r->logits, 8, TV, f) == TV &&
             fread(r->local, 8, TV, f) == TV && fread(r->train_tokens, 4, nt, f) == nt &&
             fread(&r->loss, 8, 1, f) == 1;
        uint64_t total = 0;
        for (int i = 0; ok && i < r->n_tensors; i++) {
            ok = fread(r->names[i], 1, 48, f) == 48 && fread(&r->sizes[i], 8, 1, f) == 1 &&
                 r->sizes[i] < (1u << 26);
            r->names[i][47] = 0;
            total += r->sizes[i];
        }
        r->grads = ok ? malloc(sizeof(double) * total) : NULL;
        ok = ok && r->grads && fread(r->grads, 8, total, f) == total;
    }
    fclose(f);
    return ok;
}

static void ref_free(infini_ref *r) {
    free(r->tokens), free(r->train_tokens), free(r->logits), free(r->local), free(r->grads);
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

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* Logits of tokens fed in batches of `step` tokens (0: all at once) through one session. */
static void run(msrnn_model *m, const int32_t *tokens, int T, int step, int batched,
                float *logits) {
    msrnn_session_params p = msrnn_session_default_params();
    p.n_threads = N_THREADS, p.n_ctx = T, p.batched_attention = batched;
    if (step) p.n_batch = step;
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
    infini_ref r;
    REQUIRE(read_ref(path, &r), "cannot read %s", path);
    const int T = r.T, V = r.V;
    const size_t TV = (size_t)T * V;
    float *lg = malloc(sizeof(float) * TV), *lg2 = malloc(sizeof(float) * TV);
    REQUIRE(lg && lg2, "out of memory");

    /* 1. prefill against the reference */
    msrnn_model *m = NULL;
    snprintf(path, sizeof path, "%s/%s.gguf", dir, name);
    REQUIRE_OK(msrnn_model_open(path, &m));
    run(m, r.tokens, T, 0, 1, lg);
    const double e_ref = err_fd(lg, r.logits, TV);
    CHECK(e_ref <= LOGIT_TOL, "%s: logits vs reference %.3g (limit %.0e)", name, e_ref, LOGIT_TOL);

    /* 2. decoding (1 token per call) and batches of 5 against the one-call prefill */
    double e_dec = 0;
    int same_greedy = 1;
    for (int step = 1; step <= 5; step += 4) {
        run(m, r.tokens, T, step, 1, lg2);
        e_dec = fmax(e_dec, err_ff(lg2, lg, TV));
        for (int t = 0; t < T; t++)
            same_greedy &= argmax(lg2 + (size_t)t * V, V) == argmax(lg + (size_t)t * V, V);
    }
    CHECK(e_dec <= DECODE_TOL, "%s: token-by-token / batches of 5 vs prefill %.3g (limit %.0e)",
          name, e_dec, DECODE_TOL);
    CHECK(same_greedy, "%s: decoding picks another greedy token than prefill", name);

    /* 6. state bytes */
    {
        msrnn_session_params p = msrnn_session_default_params();
        p.n_threads = N_THREADS, p.n_batch = 16;
        msrnn_session *s = NULL;
        REQUIRE_OK(msrnn_session_open(m, &p, &s));
        const size_t bytes0 = msrnn_session_bytes(s);
        REQUIRE_OK(msrnn_session_eval(s, r.tokens, r.segment, NULL));
        const size_t mem1 = msrnn_session_memory_bytes(s), bytes1 = msrnn_session_bytes(s);
        int32_t *many = malloc(sizeof(int32_t) * 2000);
        for (int i = 0; i < 2000; i++) many[i] = r.tokens[1 + i % (T - 1)];
        const int upto = (2000 / r.segment) * r.segment - r.segment; /* a segment boundary */
        REQUIRE_OK(msrnn_session_eval(s, many, upto, NULL));
        const size_t mem_many = msrnn_session_memory_bytes(s);
        REQUIRE_OK(msrnn_session_eval(s, many, 2000 - upto, NULL));
        CHECK(bytes0 == bytes1 && bytes1 == msrnn_session_bytes(s),
              "%s: session bytes %zu at open, %zu after a segment, %zu after %lld tokens", name,
              bytes0, bytes1, msrnn_session_bytes(s), (long long)msrnn_session_n_past(s));
        CHECK(mem1 == mem_many, "%s: memory bytes %zu after one segment, %zu after %d", name, mem1,
              mem_many, upto / r.segment + 1);
        CHECK(msrnn_session_n_past(s) == 2000 + r.segment, "%s: n_past %lld", name,
              (long long)msrnn_session_n_past(s));
        free(many);
        msrnn_session_close(s);
    }
    msrnn_model_close(m);

    /* 3. β = −∞: segment-local attention */
    snprintf(path, sizeof path, "%s/%s_local.gguf", dir, name);
    REQUIRE_OK(msrnn_model_open(path, &m));
    run(m, r.tokens, T, 0, 1, lg);
    const double e_local = err_fd(lg, r.local, TV);
    CHECK(e_local <= LOGIT_TOL, "%s: beta = -inf vs segment-local reference %.3g (limit %.0e)",
          name, e_local, LOGIT_TOL);
    msrnn_model_close(m);

    /* 4. one segment over the input: the llama model it was converted from */
    char llama[4400], conv[4400];
    snprintf(llama, sizeof llama, "%s/%s_llama.gguf", dir, name);
    snprintf(conv, sizeof conv, "%s/%s_converted.gguf", dir, name);
    msrnn_model *ml = NULL;
    REQUIRE_OK(msrnn_model_open(llama, &ml));
    run(ml, r.tokens, T, 0, 1, lg2);
    double e_one_tok = 0;
    int bitwise = 1;
    for (int seg = T; seg <= 4 * T; seg += 3 * T) {
        hparams method;
        memset(&method, 0, sizeof method);
        method.segment = seg, method.memory_rule = r.rule;
        REQUIRE_OK(model_convert(llama, "infini", &method, conv));
        REQUIRE_OK(msrnn_model_open(conv, &m));
        run(m, r.tokens, T, 0, 1, lg);
        bitwise &= !memcmp(lg, lg2, sizeof(float) * TV);
        float *tok = malloc(sizeof(float) * TV);
        run(m, r.tokens, T, 1, 1, tok);
        e_one_tok = fmax(e_one_tok, err_ff(tok, lg2, TV));
        free(tok);
        msrnn_model_close(m);
    }
    remove(conv);
    msrnn_model_close(ml);
    CHECK(bitwise,
          "%s: converted with one segment over the input, prefill is not bit-identical to "
          "the llama model",
          name);
    CHECK(e_one_tok <= DECODE_TOL, "%s: converted, one token per call vs llama %.3g", name,
          e_one_tok);

    /* 5. training: loss and gradients */
    snprintf(path, sizeof path, "%s/%s.gguf", dir, name);
    train_model *tm = NULL;
    REQUIRE_OK(train_model_open(path, r.B, r.Tt, N_THREADS, 0, &tm));
    const param_list *pl = train_model_params_list(tm);
    int names_ok = pl->n == r.n_tensors;
    for (int i = 0; names_ok && i < pl->n; i++)
        names_ok = !strcmp(pl->p[i].name, r.names[i]) && pl->p[i].n == r.sizes[i];
    CHECK(names_ok, "%s: the parameter list differs from the reference's %d tensors", name,
          r.n_tensors);
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
        const double e = err_fd(g + pl->p[i].offset, r.grads + off, pl->p[i].n);
        CHECK(e <= GRAD_TOL, "%s: gradient of %s: %.3g (limit %.0e)", name, pl->p[i].name, e,
              GRAD_TOL);
        if (e > e_grad) e_grad = e, snprintf(worst, sizeof worst, "%s", pl->p[i].name);
        off += pl->p[i].n;
    }
    train_model_free(tm);
    printf("%-18s T %d segment %d %s: logits %.2g, decode %.2g, beta=-inf %.2g, one segment "
           "bit-identical %s (token by token %.2g), loss %.2g, gradients %.2g (%s)\n",
           name, T, r.segment, r.rule ? "delta " : "linear", e_ref, e_dec, e_local,
           bitwise ? "yes" : "NO", e_one_tok, e_loss, e_grad, worst);
    free(lg), free(lg2);
    ref_free(&r);
}

int main(void) {
    const char *ref = getenv("MSRNN_REF_DIR");
    REQUIRE(ref, "MSRNN_REF_DIR is not set (tests/ref/generate.sh writes it)");
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s/infini", ref);
    snprintf(path, sizeof path, "%s/MANIFEST.tsv", dir);
    FILE *f = fopen(path, "r");
    REQUIRE(f, "cannot open %s (run tests/ref/gen_infini_ref.py)", path);
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        char name[128];
        if (sscanf(line, "%127s", name) != 1) continue;
        test_model(dir, name);
        n++;
    }
    fclose(f);
    REQUIRE(n >= 4, "only %d models in %s", n, path);
    printf("test_infini_ref: %d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
