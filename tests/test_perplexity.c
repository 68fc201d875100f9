/* test_perplexity.c — the perplexity protocol in the library (src/eval/perplexity.c), on msrnn's
 * default model (models/default.gguf) and the start of a validation book.
 *
 * 1. Chunk counts: ceil(n / (C − 1)) per text, capped by max_chunks; a text of 0 tokens has none.
 * 2. The protocol against an independent computation through the public API alone: every chunk of
 *    C − 1 text tokens evaluated from a reset session as BOS + chunk in one batch, its NLL from a
 *    float64 log-softmax; the sum agrees to 1e-9 relative, every text token is scored once, and
 *    ppl and bits per byte follow from the sum and the texts' bytes.
 * 3. The result does not depend on the thread count (1, 2, 3 workers: the same NLL bits).
 * 4. max_chunks scores the first chunks of each text, bits per byte over their share of the bytes.
 * 5. A bounded memory whose budget covers a chunk gives the full cache's NLL bit for bit; a small
 *    budget gives another NLL and less memory.
 * 6. Progress reaches the total, in order; errors (C < 2, nothing to score, a memory the session
 *    refuses) come back with their status and message.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "eval/perplexity.h"

enum { CTX = 64 };

static char *read_prefix(const char *path, size_t max, size_t *len) {
    FILE *f = fopen(path, "rb");
    REQUIRE(f != NULL, "cannot open %s", path);
    char *buf = malloc(max + 1);
    *len = fread(buf, 1, max, f);
    buf[*len] = 0;
    fclose(f);
    return buf;
}

/* NLL of every text token, chunk by chunk, with nothing but msrnn.h and float64 arithmetic. */
static double reference_nll(msrnn_model *m, const ppl_text *texts, int n_texts, size_t *n_scored) {
    const msrnn_model_info *in = msrnn_model_get_info(m);
    msrnn_session_params sp = msrnn_session_default_params();
    sp.n_ctx = CTX, sp.n_threads = 1, sp.batched_attention = 0;
    msrnn_session *s;
    REQUIRE_OK(msrnn_session_open(m, &sp, &s));
    float *logits = malloc((size_t)CTX * in->n_vocab * sizeof *logits);
    int32_t chunk[CTX];
    double total = 0;
    *n_scored = 0;
    for (int t = 0; t < n_texts; t++)
        for (size_t c0 = 0; c0 < texts[t].n; c0 += CTX - 1) {
            const int n = texts[t].n - c0 < CTX - 1 ? (int)(texts[t].n - c0) : CTX - 1;
            chunk[0] = in->bos_id;
            memcpy(chunk + 1, texts[t].ids + c0, (size_t)n * sizeof *chunk);
            msrnn_session_reset(s);
            REQUIRE_OK(msrnn_session_eval(s, chunk, n, logits)); /* token i predicts i + 1 */
            for (int i = 0; i < n; i++) {
                const float *row = logits + (size_t)i * in->n_vocab;
                double mx = -INFINITY, sum = 0;
                for (int v = 0; v < in->n_vocab; v++) mx = fmax(mx, row[v]);
                for (int v = 0; v < in->n_vocab; v++) sum += exp((double)row[v] - mx);
                total += mx + log(sum) - row[chunk[i + 1]];
            }
            *n_scored += (size_t)n;
        }
    free(logits);
    msrnn_session_close(s);
    return total;
}

typedef struct {
    int calls, in_order;
    size_t last_done, total;
} progress_log;

static void on_progress(void *user, const ppl_progress *p) {
    progress_log *g = user;
    g->in_order &= p->done > g->last_done && p->done <= p->total && p->n_finished <= p->done &&
                   isfinite(p->nll_finished) && p->seconds >= 0;
    g->calls++;
    g->last_done = p->done;
    g->total = p->total;
}

static ppl_params params(int n_threads) {
    ppl_params p = {CTX, 0, msrnn_session_default_params(), NULL, NULL, NULL, NULL};
    p.session.n_threads = n_threads;
    return p;
}

int main(void) {
    const char *src = getenv("MSRNN_SOURCE_DIR"), *shared = getenv("MSRNN_SHARED");
    REQUIRE(src && shared, "MSRNN_SOURCE_DIR and MSRNN_SHARED must be set (ctest sets them)");
    char path[4096];
    snprintf(path, sizeof path, "%s/models/default.gguf", src);
    msrnn_model *m;
    REQUIRE_OK(msrnn_model_open(path, &m));

    /* 1. chunk counts */
    ppl_text lens[6] = {{NULL, 0, 0},  {NULL, 1, 0},   {NULL, 63, 0},
                        {NULL, 64, 0}, {NULL, 127, 0}, {NULL, 200, 0}};
    CHECK(perplexity_n_chunks(lens, 6, CTX, 0) == 0 + 1 + 1 + 2 + 3 + 4, "chunks: %zu",
          perplexity_n_chunks(lens, 6, CTX, 0));
    CHECK(perplexity_n_chunks(lens, 6, CTX, 2) == 0 + 1 + 1 + 2 + 2 + 2, "chunks, max 2: %zu",
          perplexity_n_chunks(lens, 6, CTX, 2));

    /* the texts: 2000 bytes of a book, 60 bytes of another (one partial chunk), an empty one */
    ppl_text texts[3];
    size_t len;
    snprintf(path, sizeof path, "%s/data/gutenberg/pg55.txt", shared);
    char *a = read_prefix(path, 2000, &len);
    REQUIRE_OK(perplexity_text_tokenize(m, a, len, &texts[0]));
    snprintf(path, sizeof path, "%s/data/gutenberg/pg23.txt", shared);
    char *b = read_prefix(path, 60, &len);
    REQUIRE_OK(perplexity_text_tokenize(m, b, len, &texts[1]));
    REQUIRE_OK(perplexity_text_tokenize(m, "", 0, &texts[2]));
    REQUIRE(texts[0].n > 4 * CTX && texts[1].n > 0 && texts[1].n < CTX - 1 && texts[2].n == 0,
            "text sizes %zu %zu %zu", texts[0].n, texts[1].n, texts[2].n);
    const size_t all = texts[0].n + texts[1].n, bytes = texts[0].n_bytes + texts[1].n_bytes;

    /* 2. against the independent computation */
    size_t ref_n;
    const double ref = reference_nll(m, texts, 3, &ref_n);
    ppl_result r1;
    progress_log g = {0, 1, 0, 0};
    ppl_params p = params(1);
    p.progress = on_progress, p.user = &g;
    REQUIRE_OK(perplexity_run(m, texts, 3, &p, &r1));
    CHECK(r1.n_scored == all && ref_n == all, "scored %zu tokens, the texts hold %zu", r1.n_scored,
          all);
    CHECK(fabs(r1.nll_sum - ref) <= 1e-9 * fabs(ref), "NLL %.12f, the reference %.12f", r1.nll_sum,
          ref);
    CHECK(r1.nll_mean == r1.nll_sum / all && r1.ppl == exp(r1.nll_mean), "mean %.9f ppl %.6f",
          r1.nll_mean, r1.ppl);
    CHECK(fabs(r1.bits_per_byte - r1.nll_sum / log(2.0) / bytes) <= 1e-12 * r1.bits_per_byte,
          "bits per byte %.9f", r1.bits_per_byte);
    CHECK(r1.n_workers == 1 && r1.memory_bytes > 0 && r1.tokens_per_s > 0, "workers %d, memory %zu",
          r1.n_workers, r1.memory_bytes);

    /* 6a. progress */
    CHECK(g.calls > 0 && g.in_order && g.last_done == all && g.total == all,
          "progress: %d calls, in order %d, last %zu of %zu", g.calls, g.in_order, g.last_done,
          g.total);

    /* 3. any thread count, the same bits */
    for (int t = 2; t <= 3; t++) {
        ppl_result r;
        ppl_params pt = params(t);
        REQUIRE_OK(perplexity_run(m, texts, 3, &pt, &r));
        CHECK(r.n_workers == t && !memcmp(&r.nll_sum, &r1.nll_sum, sizeof r.nll_sum) &&
                  r.n_scored == r1.n_scored,
              "%d threads: %d workers, NLL %.17g vs %.17g", t, r.n_workers, r.nll_sum, r1.nll_sum);
    }

    /* 4. max_chunks */
    ppl_result rm;
    p = params(2);
    p.max_chunks = 1;
    REQUIRE_OK(perplexity_run(m, texts, 3, &p, &rm));
    const size_t first = (CTX - 1) + texts[1].n;
    CHECK(rm.n_scored == first, "max_chunks 1: %zu tokens, expected %zu", rm.n_scored, first);
    const double share = (double)bytes * first / all;
    CHECK(fabs(rm.bits_per_byte - rm.nll_sum / log(2.0) / share) <= 1e-12 * rm.bits_per_byte,
          "max_chunks 1: bits per byte %.9f over %.1f bytes", rm.bits_per_byte, share);

    /* 5. bounded memories */
    ppl_result rb;
    p = params(2);
    p.session.memory = "tova", p.session.kv_size = CTX;
    REQUIRE_OK(perplexity_run(m, texts, 3, &p, &rb));
    CHECK(!memcmp(&rb.nll_sum, &r1.nll_sum, sizeof rb.nll_sum),
          "tova with a budget covering the chunk: NLL %.17g, full %.17g", rb.nll_sum, r1.nll_sum);
    p.session.kv_size = 8;
    REQUIRE_OK(perplexity_run(m, texts, 3, &p, &rb));
    CHECK(rb.nll_sum != r1.nll_sum && rb.memory_bytes < r1.memory_bytes,
          "tova k=8: NLL %.9f (full %.9f), memory %zu (full %zu)", rb.nll_sum, r1.nll_sum,
          rb.memory_bytes, r1.memory_bytes);

    /* 6b. errors */
    ppl_result re;
    p = params(2);
    p.ctx = 1;
    CHECK(perplexity_run(m, texts, 3, &p, &re) == MSRNN_ERR_INVALID, "C = 1 accepted");
    p = params(2);
    CHECK(perplexity_run(m, texts + 2, 1, &p, &re) == MSRNN_ERR_FORMAT &&
              strstr(msrnn_last_error(), "no tokens"),
          "nothing to score: %s", msrnn_last_error());
    p.session.memory = "bogus";
    p.session.kv_size = 8;
    msrnn_status st = perplexity_run(m, texts, 3, &p, &re);
    CHECK(st == MSRNN_ERR_INVALID && strstr(msrnn_last_error(), "bogus"),
          "a memory the session refuses: %s: %s", msrnn_status_name(st), msrnn_last_error());

    for (int i = 0; i < 3; i++) perplexity_text_free(&texts[i]);
    free(a), free(b);
    msrnn_model_close(m);
    printf("test_perplexity: %d passed, %d failed\n", checks - failures, failures);
    return failures != 0;
}
