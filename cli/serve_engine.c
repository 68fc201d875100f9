/* serve_engine.c — the decoding loop of `msrnn serve` (see serve.h). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "args.h"
#include "serve.h"

typedef enum { SLOT_FREE, SLOT_PROMPT, SLOT_DECODE, SLOT_FLUSH, SLOT_PARKED } slot_phase;

typedef struct {
    msrnn_session *s;
    slot_phase phase;
    serve_job *job;                   /* the running job (PROMPT, DECODE), else NULL */
    char session[SERVE_NAME_MAX + 1]; /* the named session it holds ("" none) */
    double last_used;
    int32_t pending;    /* DECODE, FLUSH: the token to feed next */
    msrnn_sampler *smp; /* the job's sampler */
    int32_t *hist;      /* the job's latest tokens, prompt then generated: the repetition penalty's
                         * view (its last repeat_last_n) and the detokenizer's (the last two) */
    int n_hist, cap_hist, keep_hist; /* keep_hist: what a slide keeps */
    int chunk;                       /* tokens this slot has in the step being run */
    int in_step; /* 1 while a forward pass runs on its session (outside the lock) */
} slot;

/* generated tokens a slot's history takes before it slides back to its last repeat_last_n + 2 */
#define HIST_ROOM 1024

struct serve_engine {
    msrnn_model *m;
    serve_config cfg;
    int bounded; /* the slots' memory has a fixed size: no context ends a generation */
    slot *slots;
    msrnn_batch *batch;
    size_t slot_bytes;
    pthread_mutex_t mu;
    pthread_cond_t wake; /* the engine: a job arrived, was cancelled, or stop */
    pthread_t thread;
    int started, stopping;
    serve_job *queue_head, *queue_tail;
    int n_queued;
    serve_stats stats;
    /* one step's batch, sized at open */
    msrnn_session **b_sess;
    const int32_t **b_tok;
    int *b_n, *b_slot;
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int serve_session_name_ok(const char *name) {
    const size_t n = strlen(name);
    if (n == 0 || n > SERVE_NAME_MAX || name[0] == '.') return 0;
    for (size_t i = 0; i < n; i++) {
        const char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return 0;
    }
    return 1;
}

static void session_path(const serve_engine *e, const char *name, char *buf, size_t cap) {
    snprintf(buf, cap, "%s/%s.session", e->cfg.session_dir, name);
}

msrnn_status serve_engine_open(msrnn_model *m, const serve_config *cfg, serve_engine **out) {
    *out = NULL;
    serve_engine *e = calloc(1, sizeof *e);
    if (!e) return MSRNN_ERR_NOMEM;
    e->m = m;
    e->cfg = *cfg;
    e->bounded = msrnn_memory_is_bounded(m, &cfg->sp);
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->wake, NULL);
    const int n = cfg->n_slots;
    e->slots = calloc((size_t)n, sizeof *e->slots);
    e->b_sess = calloc((size_t)n, sizeof *e->b_sess);
    e->b_tok = calloc((size_t)n, sizeof *e->b_tok);
    e->b_n = calloc((size_t)n, sizeof *e->b_n);
    e->b_slot = calloc((size_t)n, sizeof *e->b_slot);
    msrnn_status st = MSRNN_OK;
    if (!e->slots || !e->b_sess || !e->b_tok || !e->b_n || !e->b_slot) st = MSRNN_ERR_NOMEM;
    for (int i = 0; st == MSRNN_OK && i < n; i++)
        st = msrnn_session_open(m, &cfg->sp, &e->slots[i].s);
    if (st == MSRNN_OK) st = msrnn_batch_open(m, cfg->batch_tokens, cfg->n_threads, &e->batch);
    if (st != MSRNN_OK) {
        serve_engine_close(e);
        return st;
    }
    e->slot_bytes = msrnn_session_bytes(e->slots[0].s);
    e->stats.n_slots = n;
    *out = e;
    return MSRNN_OK;
}

size_t serve_engine_slot_bytes(const serve_engine *e) { return e->slot_bytes; }
size_t serve_engine_batch_bytes(const serve_engine *e) { return msrnn_batch_bytes(e->batch); }
const msrnn_model *serve_engine_model(const serve_engine *e) { return e->m; }
const serve_config *serve_engine_config(const serve_engine *e) { return &e->cfg; }

int serve_engine_bounded(const serve_engine *e) { return e->bounded; }

serve_job *serve_job_new(void) {
    serve_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    pthread_cond_init(&j->cond, NULL);
    j->refs = 1;
    j->stop_id = -1;
    j->sampling = msrnn_sampler_default_params();
    return j;
}

static void job_free(serve_job *j) {
    free(j->prompt);
    for (int i = 0; i < j->n_stop; i++) free(j->stop[i]);
    free(j->tokens);
    free(j->tops);
    free(j->text);
    pthread_cond_destroy(&j->cond);
    free(j);
}

/* with the lock held */
static void job_unref(serve_job *j) {
    if (--j->refs == 0) job_free(j);
}

void serve_job_release(serve_engine *e, serve_job *job) {
    pthread_mutex_lock(&e->mu);
    job_unref(job);
    pthread_mutex_unlock(&e->mu);
}

void serve_lock(serve_engine *e) { pthread_mutex_lock(&e->mu); }
void serve_unlock(serve_engine *e) { pthread_mutex_unlock(&e->mu); }

/* ---- ending jobs, freeing slots (lock held) ---------------------------------------------------
 */

static void slot_release_job(slot *sl) {
    msrnn_sampler_close(sl->smp);
    sl->smp = NULL;
    free(sl->hist);
    sl->hist = NULL;
    sl->n_hist = 0;
    sl->job = NULL;
}

/* The job ends (finish reason, or an error status); the slot goes back (free, parked, or first a
 * flush of the last token into a named session). */
static void job_end(serve_engine *e, slot *sl, const char *finish, int status, const char *msg) {
    serve_job *j = sl->job;
    j->finish = finish;
    j->http_status = status;
    if (msg) snprintf(j->error, sizeof j->error, "%s", msg);
    j->state = JOB_DONE;
    j->t_done = now();
    j->n_past = msrnn_session_n_past(sl->s);
    pthread_cond_broadcast(&j->cond);
    const int last = j->n_tokens > j->tok_base ? serve_job_token(j, j->n_tokens - 1)->id : -1;
    const msrnn_model_info *in = msrnn_model_get_info(e->m);
    const int flush = sl->session[0] && status == 0 && !j->cancelled && last >= 0 &&
                      last != in->eos_id &&
                      !(!e->bounded && msrnn_session_n_past(sl->s) >= e->cfg.sp.n_ctx);
    slot_release_job(sl);
    job_unref(j);
    sl->last_used = now();
    if (flush) {
        sl->phase = SLOT_FLUSH, sl->pending = last;
    } else if (sl->session[0] && status == 0) {
        sl->phase = SLOT_PARKED;
    } else {
        /* anonymous, or a named session whose job failed: its state is not kept */
        sl->phase = SLOT_FREE, sl->session[0] = 0;
        msrnn_session_reset(sl->s);
    }
}

/* Save a parked session to the folder (if any) and free its slot. 0 ok. */
static int park_evict(serve_engine *e, slot *sl, const char *why) {
    if (e->cfg.session_dir) {
        char path[1024];
        session_path(e, sl->session, path, sizeof path);
        if (msrnn_session_save(sl->s, path) != MSRNN_OK) {
            fprintf(stderr, "msrnn serve: session '%s' could not be saved (%s): %s\n", sl->session,
                    why, msrnn_last_error());
            return 1;
        }
        fprintf(stderr, "msrnn serve: session '%s' saved to %s (%s)\n", sl->session, path, why);
    } else {
        fprintf(stderr, "msrnn serve: session '%s' forgotten (%s; no --session-dir)\n", sl->session,
                why);
    }
    sl->phase = SLOT_FREE, sl->session[0] = 0;
    msrnn_session_reset(sl->s);
    return 0;
}

static slot *find_session(serve_engine *e, const char *name) {
    for (int i = 0; i < e->cfg.n_slots; i++)
        if (e->slots[i].phase != SLOT_FREE && !strcmp(e->slots[i].session, name))
            return &e->slots[i];
    return NULL;
}

/* A free slot; else, with a session folder, the least recently used parked one saved and freed. */
static slot *take_slot(serve_engine *e) {
    slot *lru = NULL;
    for (int i = 0; i < e->cfg.n_slots; i++) {
        slot *sl = &e->slots[i];
        if (sl->phase == SLOT_FREE) return sl;
        if (sl->phase == SLOT_PARKED && (!lru || sl->last_used < lru->last_used)) lru = sl;
    }
    if (lru && e->cfg.session_dir && park_evict(e, lru, "its slot was needed") == 0) return lru;
    return NULL;
}

/* A job runs on it or one is queued for it (a session still flushing its last token is not busy:
 * a job queued for it starts once that is done). */
static int session_busy(serve_engine *e, const char *name) {
    const slot *sl = find_session(e, name);
    if (sl && sl->job) return 1;
    for (const serve_job *q = e->queue_head; q; q = q->next)
        if (!strcmp(q->session, name)) return 1;
    return 0;
}

int serve_submit(serve_engine *e, serve_job *job) {
    pthread_mutex_lock(&e->mu);
    int status = 0;
    if (e->stopping) {
        status = 503;
        snprintf(job->error, sizeof job->error, "the server is shutting down");
    } else if (job->session[0] && session_busy(e, job->session)) {
        status = 409;
        snprintf(job->error, sizeof job->error,
                 "session '%s' is busy with another request; send one request per session at a "
                 "time",
                 job->session);
    } else if (e->n_queued >= e->cfg.max_queue) {
        status = 503;
        snprintf(job->error, sizeof job->error,
                 "all %d slots are busy and %d requests are queued; retry later", e->cfg.n_slots,
                 e->n_queued);
    }
    if (status) {
        e->stats.refused++;
        pthread_mutex_unlock(&e->mu);
        return status;
    }
    /* a little room to start with; the record grows with what the job generates */
    job->cap_tokens = 16, job->cap_text = 256;
    job->tokens = malloc((size_t)job->cap_tokens * sizeof *job->tokens);
    job->tops = job->top_logprobs > 0
                    ? malloc((size_t)job->cap_tokens * job->top_logprobs * sizeof *job->tops)
                    : NULL;
    job->text = malloc(job->cap_text);
    if (!job->tokens || !job->text || (job->top_logprobs > 0 && !job->tops)) {
        pthread_mutex_unlock(&e->mu);
        snprintf(job->error, sizeof job->error, "out of memory");
        return 500;
    }
    job->state = JOB_QUEUED;
    job->t_submit = now();
    job->refs++;
    job->next = NULL;
    if (e->queue_tail)
        e->queue_tail->next = job;
    else
        e->queue_head = job;
    e->queue_tail = job;
    e->n_queued++;
    e->stats.requests++;
    pthread_cond_signal(&e->wake);
    pthread_mutex_unlock(&e->mu);
    return 0;
}

void serve_cancel(serve_engine *e, serve_job *job) {
    pthread_mutex_lock(&e->mu);
    if (job->state != JOB_DONE && !job->cancelled) {
        job->cancelled = 1;
        e->stats.cancelled++;
        pthread_cond_signal(&e->wake);
    }
    pthread_mutex_unlock(&e->mu);
}

void serve_wait(serve_engine *e, serve_job *job, int n_tokens_seen, size_t n_text_seen,
                int n_fed_seen, double timeout_s) {
    pthread_mutex_lock(&e->mu);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    const double t = until.tv_sec + until.tv_nsec * 1e-9 + timeout_s;
    until.tv_sec = (time_t)t;
    until.tv_nsec = (long)((t - (double)until.tv_sec) * 1e9);
    while (job->state != JOB_DONE && job->n_tokens == n_tokens_seen && job->n_text == n_text_seen &&
           job->n_fed == n_fed_seen && !e->stopping)
        if (pthread_cond_timedwait(&job->cond, &e->mu, &until) == ETIMEDOUT) break;
}

size_t serve_job_sendable(const serve_job *job) {
    if (job->state == JOB_DONE) return job->n_text;
    size_t n = job->n_text - job->text_base; /* bytes held, from job->text */
    /* hold back the longest tail that is a prefix of a stop string */
    size_t hold = 0;
    for (int i = 0; i < job->n_stop; i++) {
        const size_t ls = strlen(job->stop[i]);
        for (size_t k = ls - 1; k > hold; k--)
            if (k <= n && !memcmp(job->text + n - k, job->stop[i], k)) {
                hold = k;
                break;
            }
    }
    n -= hold;
    return job->text_base + n - utf8_cut_tail(job->text, n);
}

void serve_job_consume(serve_job *j, int tokens, size_t text) {
    if (tokens > j->n_tokens - 1) tokens = j->n_tokens - 1;
    if (tokens > j->tok_base) {
        const int drop = tokens - j->tok_base, keep = j->n_tokens - tokens;
        memmove(j->tokens, j->tokens + drop, (size_t)keep * sizeof *j->tokens);
        if (j->tops)
            memmove(j->tops, j->tops + (size_t)drop * j->top_logprobs,
                    (size_t)keep * j->top_logprobs * sizeof *j->tops);
        j->tok_base = tokens;
    }
    if (text > j->n_text) text = j->n_text;
    if (text > j->text_base) {
        memmove(j->text, j->text + (text - j->text_base), j->n_text - text);
        j->text_base = text;
    }
}

/* room for one more token in j's record (lock held); 0 when out of memory */
static int job_token_room(serve_job *j) {
    if (j->n_tokens - j->tok_base < j->cap_tokens) return 1;
    const int cap = j->cap_tokens * 2;
    serve_token *t = realloc(j->tokens, (size_t)cap * sizeof *t);
    if (!t) return 0;
    j->tokens = t;
    if (j->tops) {
        serve_top *q = realloc(j->tops, (size_t)cap * j->top_logprobs * sizeof *q);
        if (!q) return 0;
        j->tops = q;
    }
    j->cap_tokens = cap;
    return 1;
}

/* ---- one step ---------------------------------------------------------------------------------
 */

/* Start the jobs at the head of the queue that can have a slot now (lock held). */
static void sample_next(serve_engine *e, slot *sl);

static void admit(serve_engine *e) {
    serve_job **link = &e->queue_head, *prev = NULL;
    while (*link) {
        serve_job *j = *link;
        slot *sl = NULL;
        int status = 0;
        char msg[512] = "";
        if (j->cancelled) {
            status = 499, snprintf(msg, sizeof msg, "cancelled while queued");
        } else if (j->session[0] && (sl = find_session(e, j->session))) {
            if (sl->phase != SLOT_PARKED) { /* still flushing its last token: next step */
                prev = j, link = &j->next;
                continue;
            }
        } else if ((sl = take_slot(e))) {
            msrnn_session_reset(sl->s);
            if (j->session[0]) {
                snprintf(sl->session, sizeof sl->session, "%s", j->session);
                char path[1024];
                struct stat sb;
                if (e->cfg.session_dir &&
                    (session_path(e, j->session, path, sizeof path), stat(path, &sb) == 0) &&
                    msrnn_session_load(sl->s, path) != MSRNN_OK) {
                    status = 500;
                    snprintf(msg, sizeof msg, "session '%s': its saved file is refused: %s",
                             j->session, msrnn_last_error());
                    sl->session[0] = 0;
                    msrnn_session_reset(sl->s);
                    sl = NULL;
                }
            }
        } else {
            break; /* no slot: the rest keep their place */
        }
        /* unlink */
        *link = j->next;
        if (e->queue_tail == j) e->queue_tail = prev;
        e->n_queued--;
        if (status) {
            j->http_status = status;
            snprintf(j->error, sizeof j->error, "%s", msg);
            j->state = JOB_DONE;
            pthread_cond_broadcast(&j->cond);
            job_unref(j);
            continue;
        }
        /* a session continues: no BOS after the first request */
        const int64_t past = msrnn_session_n_past(sl->s);
        const msrnn_model_info *in = msrnn_model_get_info(e->m);
        int32_t *p = j->prompt;
        if (past > 0 && j->n_prompt > 1 && p[0] == in->bos_id) {
            memmove(p, p + 1, (size_t)(j->n_prompt - 1) * sizeof *p);
            j->n_prompt--;
        }
        const int full = !e->bounded;
        /* the prompt, then room for HIST_ROOM tokens before the window slides */
        const int64_t most = (int64_t)j->n_prompt + j->max_tokens; /* tokens the job can have */
        sl->keep_hist =
            (int)(j->sampling.repeat_last_n < most ? j->sampling.repeat_last_n : most) + 2;
        sl->cap_hist = j->n_prompt + HIST_ROOM + 2 * sl->keep_hist;
        sl->hist = malloc((size_t)sl->cap_hist * sizeof *sl->hist);
        const msrnn_status st =
            sl->hist ? msrnn_sampler_open(&j->sampling, in->n_vocab, &sl->smp) : MSRNN_ERR_NOMEM;
        sl->job = j;
        j->state = JOB_RUNNING;
        j->t_start = now();
        if (st != MSRNN_OK) {
            job_end(e, sl, NULL, 500, "cannot start the sampler");
            continue;
        }
        if (full && e->cfg.sp.n_ctx > 0 && past + j->n_prompt > e->cfg.sp.n_ctx) {
            char m2[256];
            snprintf(m2, sizeof m2,
                     "the session holds %lld tokens and the prompt %d: more than the context of "
                     "%d",
                     (long long)past, j->n_prompt, e->cfg.sp.n_ctx);
            job_end(e, sl, NULL, 400, m2);
            continue;
        }
        memcpy(sl->hist, j->prompt, (size_t)j->n_prompt * sizeof *sl->hist);
        sl->n_hist = j->n_prompt;
        sl->phase = SLOT_PROMPT;
        pthread_cond_broadcast(&j->cond);
        if (j->n_prompt == 0) { /* a session continued with nothing new: from its last logits */
            if (j->max_tokens == 0)
                job_end(e, sl, "length", 0, NULL);
            else
                sample_next(e, sl);
        }
    }
}

static float log_sum_exp(const float *x, int n) {
    float mx = x[0];
    for (int i = 1; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    double s = 0;
    for (int i = 0; i < n; i++) s += exp((double)x[i] - mx);
    return mx + (float)log(s);
}

/* Append id to sl's history, keeping at least its last keep_hist (repeat_last_n + 2) tokens: a
 * job's history does not grow with its length. */
static void slot_hist_push(slot *sl, int32_t id) {
    if (sl->n_hist == sl->cap_hist) {
        const int keep = sl->keep_hist; /* cap_hist ≥ 2·keep: the move leaves room */
        memmove(sl->hist, sl->hist + sl->n_hist - keep, (size_t)keep * sizeof *sl->hist);
        sl->n_hist = keep;
    }
    sl->hist[sl->n_hist++] = id;
}

/* Sample the next token of sl's job from its session's logits and apply it (lock held). */
static void sample_next(serve_engine *e, slot *sl) {
    serve_job *j = sl->job;
    const msrnn_model_info *in = msrnn_model_get_info(e->m);
    const float *lg = msrnn_session_logits(sl->s);
    const int32_t id = msrnn_sample(sl->smp, lg, sl->hist, sl->n_hist);
    if (!job_token_room(j)) {
        job_end(e, sl, NULL, 500, "out of memory");
        return;
    }
    slot_hist_push(sl, id);
    serve_token *t = &j->tokens[j->n_tokens - j->tok_base];
    serve_top *tops =
        j->tops ? j->tops + (size_t)(j->n_tokens - j->tok_base) * j->top_logprobs : NULL;
    j->n_tokens++;
    memset(t, 0, sizeof *t);
    t->id = id;
    const float lse = j->logprobs ? log_sum_exp(lg, in->n_vocab) : 0; /* only when asked */
    t->logprob = j->logprobs ? lg[id] - lse : 0;
    for (int k = 0; k < j->top_logprobs && k < SERVE_MAX_TOP; k++) { /* the k-th largest */
        int best = -1;
        for (int v = 0; v < in->n_vocab; v++) {
            int taken = 0;
            for (int q = 0; q < k && !taken; q++) taken = tops[q].id == v;
            if (!taken && (best < 0 || lg[v] > lg[best])) best = v;
        }
        tops[k].id = best, tops[k].logprob = lg[best] - lse, t->n_top = k + 1;
    }
    if (j->n_tokens == 1) j->t_first = now();
    e->stats.tokens_generated++;
    t->text_start = t->text_end = j->n_text;
    if ((id == in->eos_id && !j->ignore_eos) || id == j->stop_id) {
        job_end(e, sl, "stop", 0, NULL);
        return;
    }
    char piece[256];
    const int32_t prev = sl->n_hist >= 2 ? sl->hist[sl->n_hist - 2] : -1;
    size_t len = msrnn_token_to_text(e->m, prev, id, piece, sizeof piece);
    if (len > sizeof piece) len = sizeof piece;
    const size_t held = j->n_text - j->text_base;
    if (held + len + 1 > j->cap_text) {
        const size_t cap = (held + len + 1) * 2;
        char *grown = realloc(j->text, cap);
        if (!grown) {
            job_end(e, sl, NULL, 500, "out of memory");
            return;
        }
        j->text = grown, j->cap_text = cap;
    }
    const size_t old = j->n_text;
    memcpy(j->text + held, piece, len);
    j->n_text += len;
    t->text_end = j->n_text;
    for (int i = 0; i < j->n_stop; i++) { /* a stop string ending in the new bytes */
        const size_t ls = strlen(j->stop[i]);
        size_t from = old + 1 > ls ? old + 1 - ls : 0;
        if (from < j->text_base) from = j->text_base; /* sent text: no stop string reaches it */
        for (size_t p = from; p + ls <= j->n_text; p++)
            if (!memcmp(j->text + (p - j->text_base), j->stop[i], ls)) {
                j->n_text = p;
                t->text_end =
                    p < t->text_end ? (p > t->text_start ? p : t->text_start) : t->text_end;
                job_end(e, sl, "stop", 0, NULL);
                return;
            }
    }
    const int full = !e->bounded;
    if (j->n_tokens >= j->max_tokens ||
        (full && msrnn_session_n_past(sl->s) + 1 > e->cfg.sp.n_ctx)) {
        job_end(e, sl, "length", 0, NULL);
        return;
    }
    sl->pending = id;
    sl->phase = SLOT_DECODE;
    pthread_cond_broadcast(&j->cond);
}

static void expire_sessions(serve_engine *e) {
    const double t = now();
    for (int i = 0; i < e->cfg.n_slots; i++) {
        slot *sl = &e->slots[i];
        if (sl->phase == SLOT_PARKED && t - sl->last_used > e->cfg.session_ttl)
            park_evict(e, sl, "idle past --session-ttl");
    }
}

static void *engine_main(void *arg) {
    serve_engine *e = arg;
    pthread_mutex_lock(&e->mu);
    while (!e->stopping) {
        /* cancelled jobs free their slots at once */
        for (int i = 0; i < e->cfg.n_slots; i++) {
            slot *sl = &e->slots[i];
            if (sl->job && sl->job->cancelled) job_end(e, sl, NULL, 499, "client disconnected");
        }
        admit(e);
        expire_sessions(e);
        /* the step: decoding slots one token each, then prompt chunks in the room left */
        int k = 0, room = e->cfg.batch_tokens;
        for (int i = 0; i < e->cfg.n_slots && room > 0; i++) {
            slot *sl = &e->slots[i];
            if (sl->phase != SLOT_DECODE && sl->phase != SLOT_FLUSH) continue;
            e->b_sess[k] = sl->s, e->b_tok[k] = &sl->pending, e->b_n[k] = 1, e->b_slot[k++] = i;
            room--;
        }
        for (int i = 0; i < e->cfg.n_slots && room > 0; i++) {
            slot *sl = &e->slots[i];
            if (sl->phase != SLOT_PROMPT) continue;
            int n = sl->job->n_prompt - sl->job->n_fed;
            if (n > e->cfg.prompt_chunk) n = e->cfg.prompt_chunk;
            if (n > room) n = room;
            e->b_sess[k] = sl->s, e->b_tok[k] = sl->job->prompt + sl->job->n_fed, e->b_n[k] = n;
            e->b_slot[k++] = i;
            room -= n;
        }
        if (k == 0) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += 1;
            pthread_cond_timedwait(&e->wake, &e->mu, &until);
            continue;
        }
        for (int b = 0; b < k; b++)
            e->slots[e->b_slot[b]].chunk = e->b_n[b], e->slots[e->b_slot[b]].in_step = 1;
        pthread_mutex_unlock(&e->mu);
        const double t0 = now();
        const msrnn_status st = msrnn_batch_eval(e->batch, e->b_sess, e->b_tok, e->b_n, k);
        const double t1 = now();
        pthread_mutex_lock(&e->mu);
        e->stats.busy_seconds += t1 - t0;
        for (int b = 0; b < k; b++) {
            slot *sl = &e->slots[e->b_slot[b]];
            sl->in_step = 0;
            if (st != MSRNN_OK) {
                char msg[512];
                snprintf(msg, sizeof msg, "the forward pass failed: %s", msrnn_last_error());
                if (sl->job) {
                    sl->session[0] = 0;
                    job_end(e, sl, NULL, 500, msg);
                } else {
                    sl->phase = SLOT_FREE, sl->session[0] = 0;
                    msrnn_session_reset(sl->s);
                }
                continue;
            }
            if (sl->phase == SLOT_FLUSH) {
                sl->phase = SLOT_PARKED;
                continue;
            }
            serve_job *j = sl->job;
            if (sl->phase == SLOT_PROMPT) {
                j->n_fed += sl->chunk;
                e->stats.tokens_prompt += (uint64_t)sl->chunk;
                if (j->cancelled) continue;
                if (j->n_fed < j->n_prompt) {
                    pthread_cond_broadcast(&j->cond);
                    continue;
                }
                if (j->max_tokens == 0) {
                    job_end(e, sl, "length", 0, NULL);
                    continue;
                }
            }
            if (!j->cancelled) sample_next(e, sl);
        }
    }
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

int serve_engine_start(serve_engine *e) {
    if (pthread_create(&e->thread, NULL, engine_main, e) != 0) return 1;
    e->started = 1;
    return 0;
}

void serve_engine_stop(serve_engine *e) {
    pthread_mutex_lock(&e->mu);
    e->stopping = 1;
    pthread_cond_signal(&e->wake);
    pthread_mutex_unlock(&e->mu);
    if (e->started) pthread_join(e->thread, NULL);
    e->started = 0;
    pthread_mutex_lock(&e->mu);
    for (int i = 0; i < e->cfg.n_slots; i++) {
        slot *sl = &e->slots[i];
        if (sl->job) {
            sl->session[0] = 0; /* a half-answered request's state is not saved */
            job_end(e, sl, NULL, 503, "the server is shutting down");
        }
        if (sl->phase == SLOT_FLUSH) sl->phase = SLOT_PARKED; /* its last token is lost */
        if (sl->phase == SLOT_PARKED) park_evict(e, sl, "the server stops");
    }
    while (e->queue_head) {
        serve_job *j = e->queue_head;
        e->queue_head = j->next;
        j->http_status = 503;
        snprintf(j->error, sizeof j->error, "the server is shutting down");
        j->state = JOB_DONE;
        pthread_cond_broadcast(&j->cond);
        job_unref(j);
    }
    e->queue_tail = NULL, e->n_queued = 0;
    pthread_mutex_unlock(&e->mu);
}

void serve_engine_close(serve_engine *e) {
    if (!e) return;
    for (int i = 0; e->slots && i < e->cfg.n_slots; i++) {
        msrnn_session_close(e->slots[i].s);
        msrnn_sampler_close(e->slots[i].smp);
        free(e->slots[i].hist);
    }
    msrnn_batch_close(e->batch);
    free(e->slots);
    free(e->b_sess);
    free(e->b_tok);
    free(e->b_n);
    free(e->b_slot);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->wake);
    free(e);
}

void serve_engine_stats(serve_engine *e, serve_stats *out) {
    pthread_mutex_lock(&e->mu);
    *out = e->stats;
    out->active = out->parked = 0;
    out->memory_bytes = 0;
    for (int i = 0; i < e->cfg.n_slots; i++) {
        const slot *sl = &e->slots[i];
        out->active += sl->job != NULL;
        out->parked += sl->phase == SLOT_PARKED;
        out->memory_bytes += msrnn_session_memory_bytes(sl->s);
    }
    out->queued = e->n_queued;
    pthread_mutex_unlock(&e->mu);
}

size_t serve_sessions_json(serve_engine *e, char *buf, size_t cap) {
    pthread_mutex_lock(&e->mu);
    size_t n = 0;
    const double t = now();
#define PUT(...)                                                                                   \
    do {                                                                                           \
        const int w_ = snprintf(buf + n, n < cap ? cap - n : 0, __VA_ARGS__);                      \
        n += w_ > 0 ? (size_t)w_ : 0;                                                              \
    } while (0)
    PUT("[");
    int first = 1;
    for (int i = 0; i < e->cfg.n_slots; i++) {
        const slot *sl = &e->slots[i];
        if (!sl->session[0] || sl->phase == SLOT_FREE) continue;
        PUT("%s{\"id\": \"%s\", \"object\": \"session\", \"n_past\": %lld, \"memory_bytes\": %zu, "
            "\"idle_seconds\": %.1f, \"state\": \"%s\"}",
            first ? "" : ", ", sl->session, (long long)msrnn_session_n_past(sl->s),
            msrnn_session_memory_bytes(sl->s), sl->phase == SLOT_PARKED ? t - sl->last_used : 0.0,
            sl->phase == SLOT_PARKED ? "idle" : "active");
        first = 0;
    }
    PUT("]");
#undef PUT
    pthread_mutex_unlock(&e->mu);
    return n;
}

int serve_session_delete(serve_engine *e, const char *name) {
    pthread_mutex_lock(&e->mu);
    int status = 404;
    const slot *held = find_session(e, name);
    if (session_busy(e, name) || (held && held->in_step)) {
        status = 409;
    } else {
        slot *sl = find_session(e, name);
        if (sl) {
            sl->phase = SLOT_FREE, sl->session[0] = 0;
            msrnn_session_reset(sl->s);
            status = 0;
        }
        if (e->cfg.session_dir) {
            char path[1024];
            session_path(e, name, path, sizeof path);
            if (unlink(path) == 0) status = 0;
        }
    }
    pthread_mutex_unlock(&e->mu);
    return status;
}

int64_t serve_session_n_past(serve_engine *e, const char *name) {
    pthread_mutex_lock(&e->mu);
    const slot *sl = find_session(e, name);
    const int64_t n = sl ? msrnn_session_n_past(sl->s) : 0;
    pthread_mutex_unlock(&e->mu);
    return n;
}
