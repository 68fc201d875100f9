/* test_batch.c — several sessions advanced by one forward pass (msrnn_batch_eval), and saved
 * sessions (msrnn_session_save / msrnn_session_load), using only the public API.
 *
 * For a model of every architecture (llama with GQA, llama q8_0, infini, dijiang, memoryformer)
 * and, for llama, the memories full, tova, sink, merge (k = 16, so they evict):
 *   (a) N_SEQ sessions, each alone: its prompt (lengths 1 to 37) through msrnn_session_eval, then
 *       greedy decoding one token per call; the reference.
 *   (b) the same sessions together, as a server runs them: session i joins at step i (its whole
 *       prompt in the batch beside the others' single tokens), then every step feeds each active
 *       session its last greedy token, all in one msrnn_batch_eval. Every step's greedy token must
 *       equal (a)'s, and every logit within LOGIT_TOL of the logit scale (not bit for bit: the
 *       matmuls of a batch of several rows take sgemm where one row takes the dot kernels).
 *   (c) one session saved midway and loaded into a fresh session: the next steps' logits are
 *       bit-identical to the original's; and the loads that must fail do, leaving the session as
 *       it was (n_past and logits unchanged): a truncated file, a flipped data byte (checksum), a
 *       file of other memory settings, of another model, and a file that is not a session.
 *   (d) msrnn_batch_eval's refusals: the same session twice, more tokens than the batch holds, a
 *       token outside the vocabulary, a full context (MSRNN_ERR_FULL) — each without changing any
 *       session's position.
 */
#include "msrnn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define N_SEQ 5
#define N_GEN 24
#define LOGIT_TOL 1e-4 /* max |batched - alone| / max |alone| */

static uint64_t rng = 88172645463325252ULL;
static uint32_t next_u32(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static double rel_diff(const float *a, const float *b, int n) {
    double num = 0, den = 0;
    for (int i = 0; i < n; i++) {
        const double d = fabs((double)a[i] - b[i]);
        if (d > num) num = d;
        if (fabs(b[i]) > den) den = fabs(b[i]);
    }
    return num / (den > 0 ? den : 1);
}

typedef struct {
    int32_t prompt[40];
    int n_prompt;
    int32_t gen[N_GEN];
    float *logits; /* (N_GEN, V): the logits each greedy token was chosen from */
} seq_ref;

static msrnn_session_params params_of(const char *memory, int kv_size) {
    msrnn_session_params p = msrnn_session_default_params();
    p.n_ctx = 256;
    p.n_threads = 2;
    p.memory = memory;
    p.kv_size = kv_size;
    return p;
}

/* tol: LOGIT_TOL for float weights. Quantised weights differ by design: fewer than 8 rows dot
 * against the activations rounded to Q8_0 (as llama.cpp decodes), 8 rows or more take sgemm on
 * the dequantised weights, so a session's decode step batched beside another's prompt is computed
 * without that rounding; there greedy tokens may differ and only the size of the difference is
 * held (measured 0.027 of the logit scale on the random q8_0 model). */
static void run_case(const char *path, const char *memory, int kv_size, double tol) {
    char name[256];
    snprintf(name, sizeof name, "%s %s:%d", strrchr(path, '/') + 1, memory, kv_size);
    msrnn_model *m;
    REQUIRE_OK(msrnn_model_open(path, &m));
    const int V = msrnn_model_get_info(m)->n_vocab;
    const msrnn_session_params p = params_of(memory, kv_size);
    seq_ref ref[N_SEQ];
    /* (a) each alone */
    for (int i = 0; i < N_SEQ; i++) {
        seq_ref *r = &ref[i];
        r->n_prompt = 1 + (int)(next_u32() % 37);
        for (int t = 0; t < r->n_prompt; t++) r->prompt[t] = (int32_t)(next_u32() % (uint32_t)V);
        r->logits = malloc((size_t)N_GEN * V * sizeof(float));
        REQUIRE(r->logits, "out of memory");
        msrnn_session *s;
        REQUIRE_OK(msrnn_session_open(m, &p, &s));
        REQUIRE_OK(msrnn_session_eval(s, r->prompt, r->n_prompt, NULL));
        for (int g = 0; g < N_GEN; g++) {
            memcpy(r->logits + (size_t)g * V, msrnn_session_logits(s), (size_t)V * sizeof(float));
            r->gen[g] = argmax(msrnn_session_logits(s), V);
            if (g + 1 < N_GEN) REQUIRE_OK(msrnn_session_eval(s, &r->gen[g], 1, NULL));
        }
        msrnn_session_close(s);
    }
    /* (b) together, session i joining at step i */
    msrnn_batch *b;
    REQUIRE_OK(msrnn_batch_open(m, 256, 2, &b));
    msrnn_session *ss[N_SEQ];
    int step_of[N_SEQ]; /* tokens generated so far */
    for (int i = 0; i < N_SEQ; i++) {
        REQUIRE_OK(msrnn_session_open(m, &p, &ss[i]));
        step_of[i] = -1; /* not joined */
    }
    double worst = 0;
    int token_mismatch = 0;
    for (int step = 0; step < N_SEQ + N_GEN; step++) {
        msrnn_session *bs[N_SEQ];
        const int32_t *bt[N_SEQ];
        int bn[N_SEQ], idx[N_SEQ], k = 0;
        for (int i = 0; i < N_SEQ; i++) {
            if (step == i) { /* joins: its prompt */
                bs[k] = ss[i], bt[k] = ref[i].prompt, bn[k] = ref[i].n_prompt, idx[k++] = i;
                step_of[i] = 0;
            } else if (step_of[i] >= 1 && step_of[i] < N_GEN) { /* its last token */
                bs[k] = ss[i], bt[k] = &ref[i].gen[step_of[i] - 1], bn[k] = 1, idx[k++] = i;
            }
        }
        if (k == 0) continue;
        REQUIRE_OK(msrnn_batch_eval(b, bs, bt, bn, k));
        for (int j = 0; j < k; j++) {
            const int i = idx[j], g = step_of[i];
            const float *lg = msrnn_session_logits(ss[i]);
            const double d = rel_diff(lg, ref[i].logits + (size_t)g * V, V);
            if (d > worst) worst = d;
            if (argmax(lg, V) != ref[i].gen[g]) token_mismatch++;
            step_of[i]++;
        }
    }
    CHECK(token_mismatch == 0 || tol > LOGIT_TOL,
          "%s: %d greedy tokens differ between batched and alone", name, token_mismatch);
    CHECK(worst <= tol, "%s: batched logits differ by %.3g of the logit scale (> %g)", name, worst,
          tol);
    for (int i = 0; i < N_SEQ; i++)
        CHECK(msrnn_session_n_past(ss[i]) == ref[i].n_prompt + N_GEN - 1, "%s: n_past %lld", name,
              (long long)msrnn_session_n_past(ss[i]));
    printf("%-40s batched %d sessions: %d greedy tokens differ, logits within %.2g\n", name, N_SEQ,
           token_mismatch, worst);

    /* (c) save session 0 midway (it has its whole history now), restore into a fresh one */
    char file[512];
    snprintf(file, sizeof file, "%s/test_batch_%d.session",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)(next_u32() % 1000000));
    REQUIRE_OK(msrnn_session_save(ss[0], file));
    msrnn_session *copy;
    REQUIRE_OK(msrnn_session_open(m, &p, &copy));
    REQUIRE_OK(msrnn_session_load(copy, file));
    CHECK(msrnn_session_n_past(copy) == msrnn_session_n_past(ss[0]), "%s: loaded n_past %lld", name,
          (long long)msrnn_session_n_past(copy));
    CHECK(!memcmp(msrnn_session_logits(copy), msrnn_session_logits(ss[0]), (size_t)V * 4),
          "%s: the loaded logits differ", name);
    CHECK(msrnn_session_memory_bytes(copy) == msrnn_session_memory_bytes(ss[0]),
          "%s: memory bytes %zu after load, %zu before", name, msrnn_session_memory_bytes(copy),
          msrnn_session_memory_bytes(ss[0]));
    int same = 1;
    for (int g = 0; g < 10; g++) {
        int32_t t = argmax(msrnn_session_logits(ss[0]), V);
        REQUIRE_OK(msrnn_session_eval(ss[0], &t, 1, NULL));
        REQUIRE_OK(msrnn_session_eval(copy, &t, 1, NULL));
        same &= !memcmp(msrnn_session_logits(copy), msrnn_session_logits(ss[0]), (size_t)V * 4);
    }
    CHECK(same, "%s: a loaded session does not continue bit for bit", name);

    /* the loads that must fail, each leaving `copy` as it was */
    FILE *f = fopen(file, "rb");
    REQUIRE(f, "reopen %s", file);
    fseek(f, 0, SEEK_END);
    const long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *bytes = malloc((size_t)size);
    REQUIRE(bytes && fread(bytes, 1, (size_t)size, f) == (size_t)size, "read %s", file);
    fclose(f);
    char bad[520];
    snprintf(bad, sizeof bad, "%s.bad", file);
    const int64_t past = msrnn_session_n_past(copy);
    float *before = malloc((size_t)V * 4);
    memcpy(before, msrnn_session_logits(copy), (size_t)V * 4);
    struct {
        const char *what;
        long len;
        long flip; /* -1: none */
        msrnn_status want;
    } cases[] = {{"truncated", size - 7, -1, MSRNN_ERR_FORMAT},
                 {"header only", 300, -1, MSRNN_ERR_FORMAT},
                 {"flipped data byte", size, size - 5, MSRNN_ERR_FORMAT},
                 {"bad magic", size, 0, MSRNN_ERR_FORMAT},
                 {"empty", 0, -1, MSRNN_ERR_FORMAT}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        if (cases[c].flip >= 0) bytes[cases[c].flip] ^= 0x40;
        f = fopen(bad, "wb");
        REQUIRE(f && fwrite(bytes, 1, (size_t)cases[c].len, f) == (size_t)cases[c].len, "write %s",
                bad);
        fclose(f);
        if (cases[c].flip >= 0) bytes[cases[c].flip] ^= 0x40;
        const msrnn_status st = msrnn_session_load(copy, bad);
        CHECK(st == cases[c].want, "%s: load of a %s file gave %s (%s)", name, cases[c].what,
              msrnn_status_name(st), msrnn_last_error());
        CHECK(msrnn_session_n_past(copy) == past &&
                  !memcmp(msrnn_session_logits(copy), before, (size_t)V * 4),
              "%s: a failed load (%s) changed the session", name, cases[c].what);
    }
    /* other memory settings */
    if (!strcmp(memory, "tova")) {
        msrnn_session_params q = params_of("tova", kv_size + 1);
        msrnn_session *other;
        REQUIRE_OK(msrnn_session_open(m, &q, &other));
        const msrnn_status st = msrnn_session_load(other, file);
        CHECK(st == MSRNN_ERR_INVALID && strstr(msrnn_last_error(), "kv_size"),
              "%s: load into another kv_size gave %s (%s)", name, msrnn_status_name(st),
              msrnn_last_error());
        msrnn_session_close(other);
    }
    remove(bad);
    free(bytes);
    free(before);

    /* (d) refusals */
    {
        const int32_t t0 = 1, bad_tok = V;
        msrnn_session *two[2] = {ss[1], ss[1]};
        const int32_t *tt[2] = {&t0, &t0};
        int nn[2] = {1, 1};
        const int64_t p1 = msrnn_session_n_past(ss[1]), p2 = msrnn_session_n_past(ss[2]);
        msrnn_status st = msrnn_batch_eval(b, two, tt, nn, 2);
        CHECK(st == MSRNN_ERR_INVALID, "%s: the same session twice gave %s", name,
              msrnn_status_name(st));
        two[1] = ss[2];
        tt[1] = &bad_tok;
        st = msrnn_batch_eval(b, two, tt, nn, 2);
        CHECK(st == MSRNN_ERR_INVALID && strstr(msrnn_last_error(), "vocabulary"),
              "%s: a token outside the vocabulary gave %s (%s)", name, msrnn_status_name(st),
              msrnn_last_error());
        int32_t *many = calloc(300, sizeof *many);
        tt[1] = many;
        nn[1] = 257;
        st = msrnn_batch_eval(b, two, tt, nn, 2);
        CHECK(st == MSRNN_ERR_INVALID || st == MSRNN_ERR_FULL,
              "%s: more tokens than the batch holds gave %s", name, msrnn_status_name(st));
        if (!strcmp(memory, "full") && !strcmp(msrnn_model_get_info(m)->architecture, "llama")) {
            nn[1] = 256 - (int)p2 + 1; /* one past the context */
            st = msrnn_batch_eval(b, two, tt, nn, 2);
            CHECK(st == MSRNN_ERR_FULL, "%s: a full context gave %s (%s)", name,
                  msrnn_status_name(st), msrnn_last_error());
        }
        free(many);
        CHECK(msrnn_session_n_past(ss[1]) == p1 && msrnn_session_n_past(ss[2]) == p2,
              "%s: a refused batch moved a session", name);
    }
    remove(file);
    msrnn_session_close(copy);
    for (int i = 0; i < N_SEQ; i++) {
        msrnn_session_close(ss[i]);
        free(ref[i].logits);
    }
    msrnn_batch_close(b);
    msrnn_model_close(m);
}

/* A session saved from one model refused by another of the same architecture. */
static void other_model(const char *a, const char *b_path) {
    msrnn_model *m1, *m2;
    REQUIRE_OK(msrnn_model_open(a, &m1));
    REQUIRE_OK(msrnn_model_open(b_path, &m2));
    msrnn_session_params p = params_of("full", 0);
    msrnn_session *s1, *s2;
    REQUIRE_OK(msrnn_session_open(m1, &p, &s1));
    REQUIRE_OK(msrnn_session_open(m2, &p, &s2));
    const int32_t t[3] = {1, 2, 3};
    REQUIRE_OK(msrnn_session_eval(s1, t, 3, NULL));
    const char *file = "/tmp/test_batch_other.session";
    REQUIRE_OK(msrnn_session_save(s1, file));
    const msrnn_status st = msrnn_session_load(s2, file);
    CHECK(st == MSRNN_ERR_INVALID, "a session of another model loaded: %s (%s)",
          msrnn_status_name(st), msrnn_last_error());
    printf("another model's session refused: %s\n", msrnn_last_error());
    remove(file);
    msrnn_session_close(s1);
    msrnn_session_close(s2);
    msrnn_model_close(m1);
    msrnn_model_close(m2);
}

/* A session opened with n_batch < 0 has no workspace of its own: smaller, refused by
 * msrnn_session_eval, advanced by msrnn_batch_eval like any other (same logits). */
static void batch_only(const char *path) {
    msrnn_model *m;
    REQUIRE_OK(msrnn_model_open(path, &m));
    msrnn_session_params p = params_of("tova", 16), q = p;
    q.n_batch = -1;
    msrnn_session *own, *bare;
    REQUIRE_OK(msrnn_session_open(m, &p, &own));
    REQUIRE_OK(msrnn_session_open(m, &q, &bare));
    size_t need = 0;
    REQUIRE_OK(msrnn_session_bytes_needed(m, &q, &need));
    CHECK(msrnn_session_bytes(bare) < msrnn_session_bytes(own) && need == msrnn_session_bytes(bare),
          "batch-only session: %zu bytes (planned %zu), with a workspace %zu",
          msrnn_session_bytes(bare), need, msrnn_session_bytes(own));
    const int32_t t[5] = {1, 2, 3, 4, 5};
    const msrnn_status st = msrnn_session_eval(bare, t, 5, NULL);
    CHECK(st == MSRNN_ERR_INVALID && strstr(msrnn_last_error(), "msrnn_batch_eval"),
          "msrnn_session_eval of a batch-only session: %s (%s)", msrnn_status_name(st),
          msrnn_last_error());
    msrnn_batch *b;
    REQUIRE_OK(msrnn_batch_open(m, 8, 2, &b));
    msrnn_session *one[1] = {bare};
    const int32_t *tk[1] = {t};
    int n[1] = {5};
    REQUIRE_OK(msrnn_batch_eval(b, one, tk, n, 1));
    REQUIRE_OK(msrnn_session_eval(own, t, 5, NULL));
    const int V = msrnn_model_get_info(m)->n_vocab;
    CHECK(rel_diff(msrnn_session_logits(bare), msrnn_session_logits(own), V) <= LOGIT_TOL,
          "batch-only session's logits differ");
    printf("batch-only session: %zu bytes against %zu with a workspace\n",
           msrnn_session_bytes(bare), msrnn_session_bytes(own));
    msrnn_batch_close(b);
    msrnn_session_close(own);
    msrnn_session_close(bare);
    msrnn_model_close(m);
}

int main(void) {
    const char *dir = getenv("MSRNN_REF_DIR");
    REQUIRE(dir, "MSRNN_REF_DIR is not set");
    char path[1024];
    static const struct {
        const char *file, *memory;
        int kv_size;
        double tol;
    } cases[] = {{"kv/kv_h4x2_d32.gguf", "full", 0, LOGIT_TOL},
                 {"kv/kv_h4x2_d32.gguf", "tova", 16, LOGIT_TOL},
                 {"kv/kv_h4x2_d32.gguf", "sink", 16, LOGIT_TOL},
                 {"kv/kv_h4x2_d32.gguf", "merge", 16, LOGIT_TOL},
                 {"kv/kv_h4x2_d32.gguf", "h2o", 16, LOGIT_TOL},
                 {"llama/gqa64_f16.gguf", "tova", 16, LOGIT_TOL},
                 {"llama/gqa48_untied_q8_0.gguf", "full", 0, 0.1},
                 {"infini/inf_h4x2_linear.gguf", "full", 0, LOGIT_TOL},
                 {"infini/inf_h3x3_delta.gguf", "full", 0, LOGIT_TOL},
                 {"dijiang/dj_h4x2_m8.gguf", "full", 0, LOGIT_TOL},
                 {"memoryformer/mf_t8_paper_f16.gguf", "full", 0, LOGIT_TOL},
                 {"memoryformer/mf_t4_paper_bias.gguf", "window", 16, LOGIT_TOL}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, cases[i].file);
        run_case(path, cases[i].memory, cases[i].kv_size, cases[i].tol);
    }
    char p2[1024];
    snprintf(path, sizeof path, "%s/kv/kv_h4x2_d32.gguf", dir);
    snprintf(p2, sizeof p2, "%s/kv/kv_h4x4_d16.gguf", dir);
    other_model(path, p2);
    batch_only(path);
    printf("test_batch: %d checks, %d failed\n", checks, failures);
    return failures != 0;
}
