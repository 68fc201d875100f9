/* perplexity.h — long-document perplexity with the TOVA paper's protocol (METHODS.md §1), over
 * any memory a session can have.
 *
 * Each text is tokenized whole (no BOS) and cut into consecutive chunks of C − 1 tokens (the last
 * one shorter); each chunk is evaluated from an empty memory as BOS + chunk, so that every text
 * token is scored exactly once, the memory's policy applied token by token. Perplexity = exp(total
 * NLL / tokens scored); bits per byte = total NLL / ln 2 / bytes of text scored (all of the texts'
 * bytes, or, when max_chunks cuts them, that many bytes pro rata by tokens).
 *
 * Chunks are independent, so W workers (W = the thread count, at most one per chunk) each own one
 * single-threaded session and take chunks in turn; nothing is synchronised inside the token scan.
 * Each chunk's NLL is kept and the sums are added in chunk order at the end, so the result does not
 * depend on the thread count. With one worker the session gets all the threads instead.
 *
 * Only the public API (msrnn.h) runs the model here. Nothing prints: progress goes to a callback.
 * Not here: reading files, sweeps over policies and sizes, tables or plots (the `perplexity`
 * command does those).
 */
#ifndef MSRNN_EVAL_PERPLEXITY_H
#define MSRNN_EVAL_PERPLEXITY_H

#include <stddef.h>
#include <stdint.h>

#include "msrnn.h"

typedef struct {
    int32_t *ids;   /* the text's tokens, without BOS */
    size_t n;       /* number of ids */
    size_t n_bytes; /* bytes of text they encode (for bits per byte) */
} ppl_text;

typedef struct {
    size_t done;         /* tokens scored so far (every worker's finished batches) */
    size_t total;        /* tokens the run scores */
    double seconds;      /* since the run started */
    double nll_finished; /* NLL over the chunks finished so far... */
    size_t n_finished;   /* ...and their tokens (0 before the first chunk finishes) */
} ppl_progress;

typedef struct {
    int ctx;        /* chunk length C in tokens, BOS included (>= 2) */
    int max_chunks; /* > 0: score only the first max_chunks chunks of each text */
    /* The session to score with: its memory (memory, kv_size, kv_sinks, kv_f16), n_batch (0 or
     * >= ctx: min(ctx, 512)) and n_threads (0: all cores). n_ctx becomes ctx, and
     * batched_attention 0 (every memory attends through the same per-token scan, so comparisons
     * between memories are exact). */
    msrnn_session_params session;
    /* Called after each batch of one worker (never concurrently with itself); may be NULL. */
    void (*progress)(void *user, const ppl_progress *p);
    void *user;
    /* Optional (NULL: not wanted): each chunk's NLL sum and scored tokens, in chunk order
     * (perplexity_n_chunks entries), for paired comparisons between memories over the same
     * chunks. Written only on success. */
    double *chunk_nll;
    uint32_t *chunk_tokens;
} ppl_params;

typedef struct {
    size_t n_scored;        /* text tokens scored */
    double nll_sum;         /* their total NLL in nats */
    double nll_mean, ppl;   /* nll_sum / n_scored, exp(nll_mean) */
    double bits_per_byte;   /* nll_sum / ln 2 / bytes scored */
    double seconds;         /* wall time of the run */
    double tokens_per_s;    /* n_scored / seconds */
    size_t memory_bytes;    /* the most msrnn_session_memory_bytes() of any session after a batch */
    size_t allocated_bytes; /* what the run allocated: every worker's session (msrnn_session_bytes)
                               and logits and ids buffers; perplexity_bytes() beforehand */
    int n_workers;          /* sessions that ran */
} ppl_result;

/* The bytes perplexity_run(m, texts, n_texts, p) will allocate (its allocated_bytes), computed
 * without allocating, and the number of workers (sessions) it will run; MSRNN_ERR_INVALID for a
 * chunk length or session parameters it would refuse. */
msrnn_status perplexity_bytes(const msrnn_model *m, const ppl_text *texts, size_t n_texts,
                              const ppl_params *p, size_t *bytes, int *n_workers);

/* Tokens of text (len bytes, no BOS) into t->ids (allocated; free with perplexity_text_free). */
msrnn_status perplexity_text_tokenize(const msrnn_model *m, const char *text, size_t len,
                                      ppl_text *t);
void perplexity_text_free(ppl_text *t);

/* Chunks a run with these parameters scores (each text: ceil(n / (ctx − 1)), capped at
 * max_chunks). */
size_t perplexity_n_chunks(const ppl_text *texts, size_t n_texts, int ctx, int max_chunks);

/* Score texts[0..n_texts) under p. MSRNN_ERR_INVALID if ctx < 2 or no text has a token to score;
 * otherwise the first failure of a session (open or eval) stops every worker and is returned with
 * its message. r is filled only on success. */
msrnn_status perplexity_run(msrnn_model *m, const ppl_text *texts, size_t n_texts,
                            const ppl_params *p, ppl_result *r);

#endif
