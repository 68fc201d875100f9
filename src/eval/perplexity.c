/* perplexity.c — the perplexity protocol (see perplexity.h): chunking, the workers, the sums. */
#include "eval/perplexity.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/status.h"

typedef struct {
    size_t text;
    size_t start; /* first text token of the chunk */
    int len;      /* tokens in the chunk, BOS included */
} chunk_ref;

msrnn_status perplexity_text_tokenize(const msrnn_model *m, const char *text, size_t len,
                                      ppl_text *t) {
    memset(t, 0, sizeof *t);
    size_t cap = msrnn_tokenize_max(m, len);
    t->ids = cap <= SIZE_MAX / sizeof *t->ids ? malloc((cap ? cap : 1) * sizeof *t->ids) : NULL;
    if (!t->ids) return status_fail(MSRNN_ERR_NOMEM, "out of memory");
    msrnn_status st = msrnn_tokenize(m, text, len, 0, t->ids, cap, &t->n);
    if (st != MSRNN_OK) {
        perplexity_text_free(t);
        return st;
    }
    t->n_bytes = len;
    return MSRNN_OK;
}

void perplexity_text_free(ppl_text *t) {
    free(t->ids);
    memset(t, 0, sizeof *t);
}

/* Chunks of text t: ceil(n / (ctx - 1)), capped at max_chunks. */
static size_t text_chunks(const ppl_text *t, int ctx, int max_chunks) {
    size_t nc = (t->n + (size_t)ctx - 2) / (size_t)(ctx - 1);
    return max_chunks > 0 && nc > (size_t)max_chunks ? (size_t)max_chunks : nc;
}

size_t perplexity_n_chunks(const ppl_text *texts, size_t n_texts, int ctx, int max_chunks) {
    size_t n = 0;
    for (size_t i = 0; ctx >= 2 && i < n_texts; i++) n += text_chunks(&texts[i], ctx, max_chunks);
    return n;
}

/* -sum log softmax(logits_i)[next_i] over the n rows of one batch */
static double batch_nll(const float *logits, int n, int n_vocab, const int32_t *next) {
    double nll = 0;
    for (int i = 0; i < n; i++) {
        const float *row = logits + (size_t)i * n_vocab;
        float mx = row[0];
        for (int v = 1; v < n_vocab; v++) mx = row[v] > mx ? row[v] : mx;
        double sum = 0;
        for (int v = 0; v < n_vocab; v++) sum += exp((double)row[v] - mx);
        nll += log(sum) + mx - row[next[i]];
    }
    return nll;
}

/* The first failure of any worker: its status and message (messages are thread-local). */
typedef struct {
    msrnn_status st;
    char msg[1024];
} failure;

static void record_failure(failure *f, msrnn_status st, const char *msg) {
#pragma omp critical
    if (f->st == MSRNN_OK) {
        f->st = st;
        snprintf(f->msg, sizeof f->msg, "%s", msg);
    }
}

/* One single-threaded session per worker, or one session with every thread; B rows of logits. */
static void run_plan(const ppl_params *p, size_t n_chunks, int *workers, msrnn_session_params *sp,
                     int *B) {
    const int ctx = p->ctx;
    const int threads = p->session.n_threads > 0 ? p->session.n_threads : omp_get_num_procs();
    *workers = (size_t)threads < n_chunks ? threads : (int)(n_chunks ? n_chunks : 1);
    *sp = p->session;
    sp->n_ctx = ctx;
    sp->batched_attention = 0; /* every memory through the same scan: comparisons are exact */
    sp->n_threads = *workers > 1 ? 1 : threads;
    *B = sp->n_batch > 0 && sp->n_batch < ctx ? sp->n_batch : (ctx < 512 ? ctx : 512);
}

/* What one worker allocates besides its session: B rows of logits and a chunk of ids. */
static size_t worker_buffers(const msrnn_model *m, int B, int ctx) {
    return (size_t)B * (size_t)msrnn_model_get_info(m)->n_vocab * sizeof(float) +
           (size_t)ctx * sizeof(int32_t);
}

msrnn_status perplexity_bytes(const msrnn_model *m, const ppl_text *texts, size_t n_texts,
                              const ppl_params *p, size_t *bytes, int *n_workers) {
    *bytes = 0;
    if (p->ctx < 2)
        return status_fail(MSRNN_ERR_INVALID, "perplexity: chunk length %d, expected >= 2", p->ctx);
    int workers, B;
    msrnn_session_params sp;
    run_plan(p, perplexity_n_chunks(texts, n_texts, p->ctx, p->max_chunks), &workers, &sp, &B);
    size_t one;
    MSRNN_TRY(msrnn_session_bytes_needed(m, &sp, &one));
    *bytes = (size_t)workers * (one + worker_buffers(m, B, p->ctx));
    if (n_workers) *n_workers = workers;
    return MSRNN_OK;
}

msrnn_status perplexity_run(msrnn_model *m, const ppl_text *texts, size_t n_texts,
                            const ppl_params *p, ppl_result *r) {
    const int ctx = p->ctx;
    if (ctx < 2)
        return status_fail(MSRNN_ERR_INVALID, "perplexity: chunk length %d, expected >= 2", ctx);
    const msrnn_model_info *in = msrnn_model_get_info(m);

    /* the chunks, in order: text by text, C - 1 text tokens each */
    const size_t n_chunks = perplexity_n_chunks(texts, n_texts, ctx, p->max_chunks);
    size_t total = 0, all = 0, total_bytes = 0;
    for (size_t t = 0; t < n_texts; t++) all += texts[t].n, total_bytes += texts[t].n_bytes;
    chunk_ref *chunks = calloc(n_chunks ? n_chunks : 1, sizeof *chunks);
    double *chunk_nll = calloc(n_chunks ? n_chunks : 1, sizeof *chunk_nll);
    if (!chunks || !chunk_nll) {
        free(chunks), free(chunk_nll);
        return status_fail(MSRNN_ERR_NOMEM, "perplexity: out of memory for %zu chunks", n_chunks);
    }
    for (size_t t = 0, c = 0; t < n_texts; t++)
        for (size_t c0 = 0, ci = 0; c0 < texts[t].n; c0 += (size_t)(ctx - 1), ci++) {
            if (p->max_chunks > 0 && ci >= (size_t)p->max_chunks) break;
            size_t n = texts[t].n - c0 < (size_t)(ctx - 1) ? texts[t].n - c0 : (size_t)(ctx - 1);
            chunks[c++] = (chunk_ref){t, c0, (int)n + 1};
            total += n;
        }
    if (total == 0) {
        free(chunks), free(chunk_nll);
        return status_fail(MSRNN_ERR_FORMAT, "the texts hold no tokens to score");
    }

    int workers, B;
    msrnn_session_params sp;
    run_plan(p, n_chunks, &workers, &sp, &B);

    failure fail = {MSRNN_OK, ""};
    int stop = 0;
    size_t allocated = 0;                              /* every worker's session and buffers */
    size_t done = 0, memory_bytes = 0, n_finished = 0; /* n_finished: tokens of finished chunks */
    double nll_finished = 0;                           /* their NLL, for the running perplexity */
    const double t0 = monotonic_seconds();
#pragma omp parallel num_threads(workers) reduction(max : memory_bytes)
    {
        msrnn_session *s = NULL;
        float *logits = malloc((size_t)B * (size_t)in->n_vocab * sizeof *logits);
        int32_t *chunk = malloc((size_t)ctx * sizeof *chunk);
        msrnn_status st = !logits || !chunk
                              ? status_fail(MSRNN_ERR_NOMEM, "perplexity: out of memory")
                              : msrnn_session_open(m, &sp, &s);
        if (st != MSRNN_OK) {
            record_failure(&fail, st, msrnn_last_error());
#pragma omp atomic write
            stop = 1;
        } else {
#pragma omp atomic
            allocated += msrnn_session_bytes(s) + worker_buffers(m, B, ctx);
        }
#pragma omp for schedule(dynamic, 1)
        for (size_t c = 0; c < n_chunks; c++) {
            int stopped;
#pragma omp atomic read
            stopped = stop;
            if (stopped || st != MSRNN_OK) continue;
            const chunk_ref *ch = &chunks[c];
            chunk[0] = in->bos_id;
            memcpy(chunk + 1, texts[ch->text].ids + ch->start,
                   (size_t)(ch->len - 1) * sizeof *chunk);
            msrnn_session_reset(s);
            double nll = 0;
            for (int b0 = 0; b0 < ch->len - 1; b0 += B) { /* the last token predicts nothing */
                const int nb = ch->len - 1 - b0 < B ? ch->len - 1 - b0 : B;
                st = msrnn_session_eval(s, chunk + b0, nb, logits);
                if (st != MSRNN_OK) {
                    record_failure(&fail, st, msrnn_last_error());
#pragma omp atomic write
                    stop = 1;
                    break;
                }
                const double bn = batch_nll(logits, nb, in->n_vocab, chunk + b0 + 1);
                if (!isfinite(bn)) { /* one test per batch; the culprit is looked up only now */
                    int at = 0;
                    for (int i = 0; i < nb && !at; i++)
                        for (int v = 0; v < in->n_vocab; v++)
                            if (!isfinite(logits[(size_t)i * in->n_vocab + v])) {
                                at = i + 1;
                                break;
                            }
                    const int pos = b0 + (at ? at - 1 : 0);
                    st = status_fail(MSRNN_ERR_FORMAT,
                                     "non-finite logits at token %zu of text %zu (position %d of "
                                     "chunk %zu): the model's weights hold NaN or infinity",
                                     ch->start + (size_t)pos, ch->text, pos, c);
                    record_failure(&fail, st, msrnn_last_error());
#pragma omp atomic write
                    stop = 1;
                    break;
                }
                nll += bn;
                const size_t used = msrnn_session_memory_bytes(s);
                memory_bytes = used > memory_bytes ? used : memory_bytes;
                size_t now;
#pragma omp atomic capture
                now = done += (size_t)nb;
                if (p->progress && omp_get_thread_num() == 0) {
                    ppl_progress pr = {now, total, monotonic_seconds() - t0, 0, 0};
#pragma omp atomic read
                    pr.nll_finished = nll_finished;
#pragma omp atomic read
                    pr.n_finished = n_finished;
                    p->progress(p->user, &pr);
                }
            }
            chunk_nll[c] = nll;
#pragma omp atomic
            nll_finished += nll;
#pragma omp atomic
            n_finished += (size_t)(ch->len - 1);
        }
        free(logits), free(chunk);
        msrnn_session_close(s);
    }
    if (fail.st != MSRNN_OK) {
        free(chunks), free(chunk_nll);
        return status_fail(fail.st, "%s", fail.msg);
    }
    double nll = 0; /* in chunk order: the same sum whatever the number of workers */
    for (size_t c = 0; c < n_chunks; c++) nll += chunk_nll[c];
    if (p->chunk_nll) memcpy(p->chunk_nll, chunk_nll, n_chunks * sizeof *chunk_nll);
    for (size_t c = 0; p->chunk_tokens && c < n_chunks; c++)
        p->chunk_tokens[c] = (uint32_t)(chunks[c].len - 1);
    free(chunks);
    free(chunk_nll);
    memset(r, 0, sizeof *r);
    r->n_scored = total;
    r->nll_sum = nll;
    r->nll_mean = nll / (double)total;
    r->ppl = exp(r->nll_mean);
    r->seconds = monotonic_seconds() - t0;
    r->tokens_per_s = (double)total / (r->seconds > 0 ? r->seconds : 1e-9);
    /* bytes of text scored: all of it, unless max_chunks cut it (then pro rata by tokens) */
    const double bytes = total == all ? (double)total_bytes : (double)total_bytes * total / all;
    r->bits_per_byte = nll / log(2.0) / (bytes > 0 ? bytes : 1);
    r->memory_bytes = memory_bytes;
    r->allocated_bytes = allocated;
    r->n_workers = workers;
    return MSRNN_OK;
}

/* ---- the public entry point (msrnn.h) ---- */

msrnn_perplexity_params msrnn_perplexity_default_params(void) {
    msrnn_perplexity_params p;
    memset(&p, 0, sizeof p);
    p.session = msrnn_session_default_params();
    return p;
}

msrnn_status msrnn_perplexity(msrnn_model *m, const char *const *texts, const size_t *lens,
                              int n_texts, const msrnn_perplexity_params *p,
                              msrnn_perplexity_result *r) {
    if (!m || !r || n_texts < 0 || (n_texts > 0 && (!texts || !lens)))
        return status_fail(MSRNN_ERR_INVALID, "msrnn_perplexity: NULL model, texts or result");
    const msrnn_perplexity_params defaults = msrnn_perplexity_default_params();
    if (!p) p = &defaults;
    for (int i = 0; i < n_texts; i++)
        if (!texts[i] && lens[i])
            return status_fail(MSRNN_ERR_INVALID, "msrnn_perplexity: text %d is NULL", i);
    ppl_params pp = {p->ctx, p->max_chunks, p->session, NULL, NULL, NULL, NULL};
    if (pp.ctx == 0)
        pp.ctx = p->session.n_ctx > 0 ? p->session.n_ctx : msrnn_model_get_info(m)->n_ctx;
    ppl_text *t = calloc(n_texts > 0 ? (size_t)n_texts : 1, sizeof *t);
    if (!t) return status_fail(MSRNN_ERR_NOMEM, "out of memory");
    msrnn_status st = MSRNN_OK;
    for (int i = 0; i < n_texts && st == MSRNN_OK; i++)
        st = perplexity_text_tokenize(m, texts[i] ? texts[i] : "", lens[i], &t[i]);
    ppl_result res;
    if (st == MSRNN_OK) st = perplexity_run(m, t, (size_t)n_texts, &pp, &res);
    for (int i = 0; i < n_texts; i++) perplexity_text_free(&t[i]);
    free(t);
    if (st != MSRNN_OK) return st;
    memset(r, 0, sizeof *r);
    r->n_scored = res.n_scored;
    r->nll_sum = res.nll_sum;
    r->nll_mean = res.nll_mean;
    r->ppl = res.ppl;
    r->bits_per_byte = res.bits_per_byte;
    r->seconds = res.seconds;
    r->tokens_per_s = res.tokens_per_s;
    r->memory_bytes = res.memory_bytes;
    return MSRNN_OK;
}
