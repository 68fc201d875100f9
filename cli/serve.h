/* serve.h — `msrnn serve`'s engine: slots, the batched decoding loop, named sessions.
 *
 * The HTTP side (cmd_serve.c) turns a request into a serve_job (tokens, sampling settings, stop
 * strings) and submits it; one engine thread (serve_engine.c) runs every step: it admits queued
 * jobs into free slots, builds one batch of every active slot's next tokens (a decoding slot's
 * last sampled token; a prompt's next chunk, so long prompts interleave with decoding), runs it
 * through msrnn_batch_eval, samples, detokenizes, applies the stop strings and wakes the
 * job's waiter. Everything a job shares with its HTTP thread is guarded by the engine's mutex;
 * each job has its own condition variable.
 *
 * A slot is one msrnn_session. A job naming a session takes that session's slot; when it ends
 * the slot stays with the session (parked) until another job names it, it is deleted, it idles
 * past the time limit or its slot is needed — then, with a session folder, it is saved there
 * (msrnn_session_save: atomic, checked on load) and restored by the next job that names it.
 */
#ifndef MSRNN_CLI_SERVE_H
#define MSRNN_CLI_SERVE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "msrnn.h"

#define SERVE_MAX_STOP 4
#define SERVE_MAX_TOP 20
#define SERVE_NAME_MAX 64

typedef enum { JOB_QUEUED, JOB_RUNNING, JOB_DONE } job_state;

/* One generated token: its id, its log-probability under the model (log-softmax of the raw
 * logits) and how many alternatives were recorded for it (serve_job_tops). */
typedef struct {
    int32_t id;
    float logprob;
    int n_top;
    size_t text_start, text_end; /* its bytes in the job's text (clipped by a stop string) */
} serve_token;

/* One recorded alternative of a token: the most likely ids and their log-probabilities */
typedef struct {
    int32_t id;
    float logprob;
} serve_top;

typedef struct serve_job {
    /* ---- set by the submitter, read-only afterwards */
    int32_t *prompt; /* (n_prompt) tokens to feed first (owned, freed with the job) */
    int n_prompt;
    int max_tokens;
    msrnn_sampler_params sampling;
    char *stop[SERVE_MAX_STOP];
    int n_stop;
    int top_logprobs; /* alternatives per token to record (0: none) */
    int logprobs;     /* 1: record each token's log-probability */
    int ignore_eos;
    int32_t stop_id;                  /* a token that ends the job as EOS does (-1: none) */
    char session[SERVE_NAME_MAX + 1]; /* "" : none */
    /* ---- progress, guarded by the engine's mutex; cond signalled at every change */
    pthread_cond_t cond;
    job_state state;
    int cancelled;   /* the client went away: the engine drops it at its next step */
    int http_status; /* 0, or the error status the job ended with */
    char error[512]; /* its message */
    /* Generated tokens [tok_base, n_tokens) and text bytes [text_base, n_text): the job's record
     * grows with what it generates, from nothing (no room is set aside for max_tokens), and a
     * stream drops what it has sent (serve_job_consume), so that a generation of any length holds
     * only what is unsent. Positions are absolute: read them with serve_job_token / _tops / _text.
     */
    serve_token *tokens;
    serve_top *tops; /* top_logprobs per token beside tokens (NULL when none are asked for) */
    int n_tokens, tok_base, cap_tokens;
    char *text; /* the generated text, clipped at a stop string */
    size_t n_text, text_base, cap_text;
    const char *finish;                        /* "stop", "length" (or NULL while running) */
    int n_fed;                                 /* prompt tokens fed */
    int64_t n_past;                            /* the slot's position when the job ended */
    double t_submit, t_start, t_first, t_done; /* queued, admitted to a slot, first token, done */
    int refs; /* the submitter and the engine; freed when both let go */
    struct serve_job *next;
} serve_job;

typedef struct {
    int n_slots;
    int n_threads;
    int batch_tokens; /* tokens per step */
    int prompt_chunk; /* prompt tokens one slot feeds per step */
    int max_queue;    /* jobs waiting for a slot beyond which a request is refused */
    double session_ttl;
    const char *session_dir; /* NULL: sessions live in memory only */
    msrnn_session_params sp; /* every slot's memory */
} serve_config;

typedef struct serve_engine serve_engine;

/* Opens the slots and the batch; prints nothing. Errors through msrnn_last_error. */
msrnn_status serve_engine_open(msrnn_model *m, const serve_config *cfg, serve_engine **out);
/* Starts the engine thread. */
int serve_engine_start(serve_engine *e);
/* Stops the thread; saves parked sessions when there is a session folder. */
void serve_engine_stop(serve_engine *e);
void serve_engine_close(serve_engine *e);

size_t serve_engine_slot_bytes(const serve_engine *e);
size_t serve_engine_batch_bytes(const serve_engine *e);

/* A new job with refs = 1 (the caller's). */
serve_job *serve_job_new(void);
/* Queue the job (the engine takes a reference). 0 ok; else the HTTP status to answer (503 when
 * the queue is full, 409 when its session is busy) with job->error set. */
int serve_submit(serve_engine *e, serve_job *job);
/* Wait until the job has changed after `seen` tokens / bytes, is done, or timeout_s passes.
 * Returns with the engine's lock held (serve_unlock releases it). */
void serve_wait(serve_engine *e, serve_job *job, int n_tokens_seen, size_t n_text_seen,
                int n_fed_seen, double timeout_s);
void serve_lock(serve_engine *e);
void serve_unlock(serve_engine *e);
/* The client is gone: the engine frees the job's slot at its next step. */
void serve_cancel(serve_engine *e, serve_job *job);
/* Drop the caller's reference. */
void serve_job_release(serve_engine *e, serve_job *job);

static inline const serve_token *serve_job_token(const serve_job *j, int t) {
    return &j->tokens[t - j->tok_base];
}
static inline const serve_top *serve_job_tops(const serve_job *j, int t) {
    return j->tops + (size_t)(t - j->tok_base) * (size_t)j->top_logprobs;
}
static inline const char *serve_job_text(const serve_job *j, size_t at) {
    return j->text + (at - j->text_base);
}
/* A stream has sent tokens below `tokens` and text below `text`: forget them (the last token is
 * kept, the engine reads it when the job ends). Call with the lock held. */
void serve_job_consume(serve_job *j, int tokens, size_t text);

/* The text of job->text that can be sent now: up to a point no stop string can still cut and
 * that does not split a UTF-8 character (all of it once done). Call with the lock held. */
size_t serve_job_sendable(const serve_job *job);

typedef struct {
    uint64_t requests, tokens_generated, tokens_prompt, cancelled, refused;
    double busy_seconds; /* time spent in forward passes */
    int active, queued, parked, n_slots;
    size_t memory_bytes; /* slots' attention memory in use */
} serve_stats;
void serve_engine_stats(serve_engine *e, serve_stats *out);

/* Sessions: a JSON array of {id, n_past, memory_bytes, idle_seconds, state} into buf (cap bytes;
 * the length is returned). */
size_t serve_sessions_json(serve_engine *e, char *buf, size_t cap);
/* 0 deleted, 404 unknown, 409 busy. */
int serve_session_delete(serve_engine *e, const char *name);
/* 1 when name is a valid session id: 1 to 64 of [A-Za-z0-9_.-], not starting with '.'. */
int serve_session_name_ok(const char *name);
/* The tokens a session holds now (0 when it does not exist anywhere). */
int64_t serve_session_n_past(serve_engine *e, const char *name);

const msrnn_model *serve_engine_model(const serve_engine *e);
const serve_config *serve_engine_config(const serve_engine *e);
/* 1 when the slots' memory keeps a fixed size (msrnn_memory_is_bounded: a bounded --kv, or an
 * infini or dijiang model), so that no context limits a prompt or a generation. */
int serve_engine_bounded(const serve_engine *e);

#endif
