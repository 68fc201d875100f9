/* passkey.h — the passkey retrieval task (METHODS.md §2, after Mohtashami & Jaggi) over any memory
 * a session can have.
 *
 * A trial of `length` positions: the prompt and room for the answer (PASSKEY_MAX_GEN - 1 tokens, so
 * that length = the context of a full cache fits it). The prompt: BOS, then the filler unit ("The
 * grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.") repeated,
 * with the key sentence ("The pass key is NNNNN. Remember it. NNNNN is the pass key.") inserted
 * before filler unit round(depth · units) (depth 0: right after BOS, 1: right before the question),
 * and the question ("What is the pass key? The pass key is") last. Each of the three texts is
 * tokenized once on its own (so each begins with the tokenizer's word-initial space) and the prompt
 * is their token-level concatenation, produced batch by batch and never held whole: a trial at 1M
 * tokens needs the memory of one at 1K. The number of filler units is the largest that keeps the
 * prompt within length - (PASSKEY_MAX_GEN - 1), so a prompt is at most one unit (~30 tokens)
 * shorter than that; its exact length is reported.
 *
 * The answer is decoded greedily (the highest logit; the lowest id on a tie), at most
 * PASSKEY_MAX_GEN tokens, stopping at EOS or once the digits are over; it is correct when its
 * first run of ASCII digits (after any spaces) is exactly the key's five digits.
 *
 * Trials are independent: W workers (W = the thread count, at most one per trial) each own one
 * single-threaded session and take trials in turn, longest first. Results do not depend on the
 * number of workers. Only the public API (msrnn.h) runs the model; nothing prints.
 */
#ifndef MSRNN_EVAL_PASSKEY_H
#define MSRNN_EVAL_PASSKEY_H

#include <stddef.h>
#include <stdint.h>

#include "msrnn.h"

#define PASSKEY_MAX_GEN 12 /* tokens decoded for an answer at most */

typedef struct {
    int64_t length; /* positions asked for: the prompt (BOS and question included) + answer */
    double depth;   /* where the key goes, 0..1 */
    uint32_t key;   /* 10000..99999 */
    /* filled by passkey_run: */
    int run;          /* 0: not run (the memory cannot hold the prompt; full beyond its context) */
    int correct;      /* the answer's first digits are the key */
    int64_t n_tokens; /* the prompt's exact length */
    char answer[64];  /* the decoded answer (UTF-8, NUL-terminated, cut at 63 bytes) */
    double seconds;   /* wall time of the trial (prompt and answer) */
    size_t memory_bytes; /* msrnn_session_memory_bytes() after the prompt */
} passkey_trial;

typedef struct {
    int64_t done, total; /* prompt tokens fed so far, in all (trials that run) */
    int trials_done, trials;
    double seconds;
} passkey_progress;

typedef struct {
    /* The session to run with: its memory and n_threads (0: all cores); n_ctx as the full
     * memory's context (0: the model's). With one worker the session gets all the threads. */
    msrnn_session_params session;
    int n_batch; /* tokens per eval call (0: 512) */
    /* Called after each batch of the first worker (never concurrently with itself); may be NULL. */
    void (*progress)(void *user, const passkey_progress *p);
    void *user;
} passkey_params;

/* The key of trial `trial` of cell (length, depth_percent) under seed: 10000..99999, the same
 * whatever other cells a run holds. */
uint32_t passkey_key(uint64_t seed, int64_t length, int depth_percent, int trial);

/* The shortest length a trial can have (BOS, the key sentence, the question, the answer's room),
 * by this model's tokenizer. */
msrnn_status passkey_min_length(const msrnn_model *m, int64_t *min_length);

/* Whether the session's memory can hold a prompt of n_tokens plus the answer: 1 for bounded
 * memories (the bounded caches, and architectures whose own memory is bounded, such as infini),
 * n_tokens + PASSKEY_MAX_GEN - 1 <= the context for the full cache. */
int passkey_fits(const msrnn_model *m, const msrnn_session_params *sp, int64_t n_tokens);

/* The bytes passkey_run will allocate (sessions and buffers) and its number of workers. */
msrnn_status passkey_bytes(const msrnn_model *m, const passkey_params *p, int n_trials,
                           size_t *bytes, int *n_workers);

/* The prompt of a trial (length, depth, key) into out (cap tokens; MSRNN_ERR_INVALID when it is
 * longer), *n its length: what passkey_run feeds, for showing and checking it. */
msrnn_status passkey_prompt(const msrnn_model *m, int64_t length, double depth, uint32_t key,
                            int32_t *out, size_t cap, size_t *n);

/* Run every trial that fits (passkey_fits of its length; the others get run = 0). The first
 * failure of a session stops every worker and is returned with its message; trials are filled
 * only on success. MSRNN_ERR_INVALID for a length below passkey_min_length or a depth outside
 * 0..1. */
msrnn_status passkey_run(msrnn_model *m, const passkey_params *p, passkey_trial *trials,
                         int n_trials);

/* Passkey training data (the paper's fine-tuning, METHODS.md §2): a token shard (train/shard.h,
 * the model's vocabulary hash) of n_examples documents of exactly `length` tokens each, so that
 * `msrnn train -c length` windows hold one example apiece: BOS, the tail of filler units that pads
 * the example to its length (fewer tokens than a unit), the rest of a prompt as passkey_run makes
 * it (key and depth drawn from seed and the example's index, depth uniform in 0..1), and the
 * answer (" NNNNN." tokenized as it follows the question) as the example's last tokens, so that
 * `msrnn train --loss-last max_answer_tokens` scores the answer alone; one BOS before the
 * first example (the first window's first input), so that the targets of train's window i (tokens
 * [iL, iL + L]) are example i exactly.
 * Written atomically;
 * MSRNN_ERR_INVALID for a count outside 1..2^24 or a length below passkey_min_length. */
typedef struct {
    int64_t n_tokens;
    double mean_answer_tokens;
    int max_answer_tokens;
} passkey_data_info;
msrnn_status passkey_make_data(const msrnn_model *m, const char *path, int n_examples, int length,
                               uint64_t seed, passkey_data_info *info);

#endif
