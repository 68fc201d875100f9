/* passkey.c — the passkey retrieval task (see passkey.h). */
#include "eval/passkey.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/status.h"
#include "model/model.h"
#include "train/shard.h"

static const char FILLER[] =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
static const char QUESTION[] = "What is the pass key? The pass key is";

static uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* A five-digit key from a hash. */
static uint32_t key_of(uint64_t h) { return 10000u + (uint32_t)(h % 90000u); }

uint32_t passkey_key(uint64_t seed, int64_t length, int depth_percent, int trial) {
    uint64_t h = splitmix64(seed);
    h = splitmix64(h ^ (uint64_t)length);
    h = splitmix64(h ^ (uint64_t)(uint32_t)depth_percent);
    h = splitmix64(h ^ (uint64_t)(uint32_t)trial);
    return key_of(h);
}

/* A text's tokens (no BOS), allocated. */
typedef struct {
    int32_t *ids;
    int n;
} toks;

static msrnn_status tokens_of(const msrnn_model *m, const char *text, toks *t) {
    const size_t len = strlen(text), cap = msrnn_tokenize_max(m, len);
    size_t got = 0;
    t->ids = malloc((cap ? cap : 1) * sizeof *t->ids);
    t->n = 0;
    if (!t->ids) return status_fail(MSRNN_ERR_NOMEM, "passkey: out of memory");
    msrnn_status st = msrnn_tokenize(m, text, len, 0, t->ids, cap, &got);
    if (st == MSRNN_OK && got == 0)
        st = status_fail(MSRNN_ERR_FORMAT, "passkey: the tokenizer gives no tokens for \"%s\"",
                         text);
    if (st != MSRNN_OK) {
        free(t->ids);
        t->ids = NULL;
        return st;
    }
    t->n = (int)got;
    return MSRNN_OK;
}

/* The tokens of text where it follows lead_text (whose own tokens are lead) and a space: those of
 * lead_text + " " + text after lead's (so they carry the word-initial space the way the tokenizer
 * writes it inside a text). Should the tokenizer merge across that boundary, the tokens of
 * " " + text. */
static msrnn_status tokens_after(const msrnn_model *m, const char *lead_text, const toks *lead,
                                 const char *text, toks *t) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s %s", lead_text, text);
    toks all;
    MSRNN_TRY(tokens_of(m, buf, &all));
    if (all.n > lead->n && !memcmp(all.ids, lead->ids, (size_t)lead->n * sizeof *all.ids)) {
        memmove(all.ids, all.ids + lead->n, (size_t)(all.n - lead->n) * sizeof *all.ids);
        all.n -= lead->n;
        *t = all;
        return MSRNN_OK;
    }
    free(all.ids);
    snprintf(buf, sizeof buf, " %s", text);
    return tokens_of(m, buf, t);
}

static void key_text(uint32_t key, char *buf, size_t cap) {
    snprintf(buf, cap, "The pass key is %05u. Remember it. %05u is the pass key.", (unsigned)key,
             (unsigned)key);
}

/* The texts' tokens: FILLER alone (also the filler unit opening a prompt), the unit and the
 * question inside a text. */
typedef struct {
    toks lead, unit, question;
    int32_t bos;
} texts;

static void texts_free(texts *x) { free(x->lead.ids), free(x->unit.ids), free(x->question.ids); }

static msrnn_status texts_open(const msrnn_model *m, texts *x) {
    memset(x, 0, sizeof *x);
    x->bos = msrnn_model_get_info(m)->bos_id;
    msrnn_status st = tokens_of(m, FILLER, &x->lead);
    if (st == MSRNN_OK) st = tokens_after(m, FILLER, &x->lead, FILLER, &x->unit);
    if (st == MSRNN_OK) st = tokens_after(m, FILLER, &x->lead, QUESTION, &x->question);
    if (st != MSRNN_OK) texts_free(x);
    return st;
}

/* A key sentence's tokens opening a prompt and inside it. */
static msrnn_status key_tokens(const msrnn_model *m, const texts *x, uint32_t key, toks *first,
                               toks *inside) {
    char kt[128];
    key_text(key, kt, sizeof kt);
    MSRNN_TRY(tokens_of(m, kt, first));
    msrnn_status st = tokens_after(m, FILLER, &x->lead, kt, inside);
    if (st != MSRNN_OK) free(first->ids), first->ids = NULL;
    return st;
}

/* One prompt as segments, each repeated: BOS, the key (depth 0) or the first unit, units, the key,
 * units, the question. */
typedef struct {
    struct {
        const int32_t *ids;
        int n;
        int64_t reps;
    } seg[6];
    int n_seg;
    int64_t n; /* tokens in all */
} prompt;

static void prompt_add(prompt *pr, const int32_t *ids, int n, int64_t reps) {
    if (reps <= 0) return;
    pr->seg[pr->n_seg].ids = ids, pr->seg[pr->n_seg].n = n, pr->seg[pr->n_seg].reps = reps;
    pr->n_seg++;
    pr->n += (int64_t)n * reps;
}

static void prompt_build(prompt *pr, const texts *x, const toks *key_first, const toks *key,
                         int64_t units, int64_t ki) {
    memset(pr, 0, sizeof *pr);
    prompt_add(pr, &x->bos, 1, 1);
    if (ki == 0) {
        prompt_add(pr, key_first->ids, key_first->n, 1);
        prompt_add(pr, x->unit.ids, x->unit.n, units);
    } else {
        prompt_add(pr, x->lead.ids, x->lead.n, 1);
        prompt_add(pr, x->unit.ids, x->unit.n, ki - 1);
        prompt_add(pr, key->ids, key->n, 1);
        prompt_add(pr, x->unit.ids, x->unit.n, units - ki);
    }
    prompt_add(pr, x->question.ids, x->question.n, 1);
}

/* The most filler units whose prompt fits length less the answer's room (at least none). */
static void prompt_plan(prompt *pr, const texts *x, const toks *key_first, const toks *key,
                        int64_t length, double depth) {
    const int64_t room = length - (PASSKEY_MAX_GEN - 1);
    const int64_t fixed = 1 + key->n + x->question.n;
    int64_t units = room > fixed ? (room - fixed) / x->unit.n + 1 : 0;
    for (;; units--) {
        prompt_build(pr, x, key_first, key, units, (int64_t)llround(depth * (double)units));
        if (pr->n <= room || units == 0) break;
    }
}

static void prompt_fill(const prompt *pr, int64_t start, int n, int32_t *out) {
    int s = 0;
    int64_t s0 = 0; /* the first position of segment s */
    for (int i = 0; i < n; i++) {
        const int64_t p = start + i;
        while (s < pr->n_seg - 1 && p >= s0 + (int64_t)pr->seg[s].n * pr->seg[s].reps)
            s0 += (int64_t)pr->seg[s].n * pr->seg[s].reps, s++;
        out[i] = pr->seg[s].ids[(p - s0) % pr->seg[s].n];
    }
}

static int is_full(const msrnn_session_params *sp) {
    return !sp->memory || !strcmp(sp->memory, "full");
}

msrnn_status passkey_min_length(const msrnn_model *m, int64_t *min_length) {
    texts x;
    toks k0 = {0}, k = {0};
    *min_length = 0;
    MSRNN_TRY(texts_open(m, &x));
    msrnn_status st = key_tokens(m, &x, 99999, &k0, &k);
    if (st == MSRNN_OK) {
        prompt pr;
        prompt_build(&pr, &x, &k0, &k, 0, 0);
        *min_length = pr.n + PASSKEY_MAX_GEN - 1;
    }
    free(k0.ids), free(k.ids);
    texts_free(&x);
    return st;
}

int passkey_fits(const msrnn_model *m, const msrnn_session_params *sp, int64_t n_tokens) {
    if (!is_full(sp) || model_memory_bounded(m, sp)) return 1; /* e.g. infini's own memory */
    const int ctx = sp->n_ctx > 0 ? sp->n_ctx : msrnn_model_get_info(m)->n_ctx;
    return n_tokens + PASSKEY_MAX_GEN - 1 <= (int64_t)ctx;
}

static void plan(const passkey_params *p, int n_trials, int *workers, msrnn_session_params *sp,
                 int *B) {
    const int threads = p->session.n_threads > 0 ? p->session.n_threads : omp_get_num_procs();
    *workers = threads < n_trials ? threads : (n_trials > 0 ? n_trials : 1);
    *sp = p->session;
    sp->n_threads = *workers > 1 ? 1 : threads;
    *B = p->n_batch > 0 ? p->n_batch : 512;
}

msrnn_status passkey_bytes(const msrnn_model *m, const passkey_params *p, int n_trials,
                           size_t *bytes, int *n_workers) {
    int workers, B;
    msrnn_session_params sp;
    plan(p, n_trials, &workers, &sp, &B);
    size_t one;
    MSRNN_TRY(msrnn_session_bytes_needed(m, &sp, &one));
    *bytes = (size_t)workers * (one + (size_t)B * sizeof(int32_t));
    if (n_workers) *n_workers = workers;
    return MSRNN_OK;
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

static int32_t argmax(const float *x, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* The answer's state: 0 spaces so far, 1 inside the digits, 2 over. */
static int answer_state(const char *a) {
    while (*a == ' ') a++;
    if (!*a) return 0;
    if (*a < '0' || *a > '9') return 2;
    while (*a >= '0' && *a <= '9') a++;
    return *a ? 2 : 1;
}

static int answer_correct(const char *a, uint32_t key) {
    char want[8];
    snprintf(want, sizeof want, "%05u", (unsigned)key);
    while (*a == ' ') a++;
    size_t n = 0;
    while (a[n] >= '0' && a[n] <= '9') n++;
    return n == 5 && !memcmp(a, want, 5);
}

/* One trial on an open session; on_batch(user, tokens) after each batch of the prompt. */
static msrnn_status run_trial(msrnn_model *m, msrnn_session *s, const texts *x, passkey_trial *t,
                              int32_t *batch, int B, void (*on_batch)(void *, int), void *user) {
    const msrnn_model_info *in = msrnn_model_get_info(m);
    toks k0, k;
    MSRNN_TRY(key_tokens(m, x, t->key, &k0, &k));
    prompt prompt_, *pr = &prompt_;
    prompt_plan(pr, x, &k0, &k, t->length, t->depth);
    msrnn_status st = MSRNN_OK;
    const double t0 = monotonic_seconds();
    msrnn_session_reset(s);
    for (int64_t p0 = 0; p0 < pr->n && st == MSRNN_OK; p0 += B) {
        const int nb = pr->n - p0 < B ? (int)(pr->n - p0) : B;
        prompt_fill(pr, p0, nb, batch);
        st = msrnn_session_eval(s, batch, nb, NULL);
        if (on_batch) on_batch(user, nb);
    }
    free(k0.ids), free(k.ids);
    if (st != MSRNN_OK) return st;
    t->memory_bytes = msrnn_session_memory_bytes(s);
    size_t len = 0;
    t->answer[0] = 0;
    int32_t prev = batch[(pr->n - 1) % B];
    for (int g = 0; g < PASSKEY_MAX_GEN; g++) {
        const float *logits = msrnn_session_logits(s);
        const int32_t id = argmax(logits, in->n_vocab);
        if (!isfinite(logits[id]))
            return status_fail(MSRNN_ERR_FORMAT,
                               "non-finite logits after %lld prompt tokens: the model's weights "
                               "hold NaN or infinity",
                               (long long)pr->n);
        if (id == in->eos_id) break;
        char piece[256];
        size_t pl = msrnn_token_to_text(m, prev, id, piece, sizeof piece);
        if (pl > sizeof piece) pl = sizeof piece;
        if (len + pl > sizeof t->answer - 1) pl = sizeof t->answer - 1 - len;
        memcpy(t->answer + len, piece, pl);
        t->answer[len += pl] = 0;
        prev = id;
        if (answer_state(t->answer) == 2 || g + 1 == PASSKEY_MAX_GEN) break;
        MSRNN_TRY(msrnn_session_eval(s, &id, 1, NULL));
    }
    t->correct = answer_correct(t->answer, t->key);
    t->n_tokens = pr->n;
    t->seconds = monotonic_seconds() - t0;
    t->run = 1;
    return MSRNN_OK;
}

typedef struct {
    const passkey_params *p;
    int64_t *done, total;
    int *trials_done, trials;
    double t0;
} progress_ctx;

static void on_batch(void *user, int nb) {
    progress_ctx *c = user;
    int64_t now;
#pragma omp atomic capture
    now = *c->done += nb;
    if (c->p->progress && omp_get_thread_num() == 0) {
        passkey_progress pr = {now, c->total, 0, c->trials, monotonic_seconds() - c->t0};
#pragma omp atomic read
        pr.trials_done = *c->trials_done;
        c->p->progress(c->p->user, &pr);
    }
}

static int by_length_desc(const void *a, const void *b) {
    const passkey_trial *x = *(passkey_trial *const *)a, *y = *(passkey_trial *const *)b;
    return x->length < y->length ? 1 : x->length > y->length ? -1 : 0;
}

msrnn_status passkey_run(msrnn_model *m, const passkey_params *p, passkey_trial *trials,
                         int n_trials) {
    int64_t min_length;
    MSRNN_TRY(passkey_min_length(m, &min_length));
    for (int i = 0; i < n_trials; i++) {
        if (trials[i].length < min_length)
            return status_fail(MSRNN_ERR_INVALID,
                               "passkey: length %lld is below the shortest prompt, %lld tokens",
                               (long long)trials[i].length, (long long)min_length);
        if (!(trials[i].depth >= 0 && trials[i].depth <= 1))
            return status_fail(MSRNN_ERR_INVALID, "passkey: depth %g is outside 0..1",
                               trials[i].depth);
    }
    texts x;
    MSRNN_TRY(texts_open(m, &x));
    msrnn_status st = MSRNN_OK;
    passkey_trial **order = calloc(n_trials > 0 ? (size_t)n_trials : 1, sizeof *order);
    passkey_trial *out = calloc(n_trials > 0 ? (size_t)n_trials : 1, sizeof *out);
    if (!order || !out) {
        texts_free(&x), free(order), free(out);
        return status_fail(MSRNN_ERR_NOMEM, "passkey: out of memory for %d trials", n_trials);
    }

    /* the trials that run, longest first; their prompts' tokens for the progress total */
    int n_run = 0;
    int64_t total = 0;
    for (int i = 0; i < n_trials; i++) {
        out[i] = trials[i];
        out[i].run = out[i].correct = 0;
        out[i].n_tokens = 0;
        out[i].answer[0] = 0;
        toks k0, k;
        if ((st = key_tokens(m, &x, out[i].key, &k0, &k)) != MSRNN_OK) break;
        prompt pr;
        prompt_plan(&pr, &x, &k0, &k, out[i].length, out[i].depth);
        free(k0.ids), free(k.ids);
        if (!passkey_fits(m, &p->session, pr.n)) continue;
        order[n_run++] = &out[i];
        total += pr.n;
    }
    qsort(order, (size_t)n_run, sizeof *order, by_length_desc);

    int workers, B;
    msrnn_session_params sp;
    plan(p, n_run, &workers, &sp, &B);
    failure fail = {st, ""};
    if (st != MSRNN_OK) snprintf(fail.msg, sizeof fail.msg, "%s", msrnn_last_error());
    int stop = st != MSRNN_OK, trials_done = 0;
    int64_t done = 0;
    progress_ctx pc = {p, &done, total, &trials_done, n_run, monotonic_seconds()};
#pragma omp parallel num_threads(workers) if (n_run > 0 && !stop)
    {
        msrnn_session *s = NULL;
        int32_t *batch = malloc((size_t)B * sizeof *batch);
        msrnn_status ws = !batch ? status_fail(MSRNN_ERR_NOMEM, "passkey: out of memory")
                                 : msrnn_session_open(m, &sp, &s);
        if (ws != MSRNN_OK) {
            record_failure(&fail, ws, msrnn_last_error());
#pragma omp atomic write
            stop = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int i = 0; i < n_run; i++) {
            int stopped;
#pragma omp atomic read
            stopped = stop;
            if (stopped || ws != MSRNN_OK) continue;
            ws = run_trial(m, s, &x, order[i], batch, B, on_batch, &pc);
            if (ws != MSRNN_OK) {
                record_failure(&fail, ws, msrnn_last_error());
#pragma omp atomic write
                stop = 1;
            }
#pragma omp atomic
            trials_done++;
        }
        free(batch);
        msrnn_session_close(s);
    }
    texts_free(&x), free(order);
    if (fail.st != MSRNN_OK) {
        free(out);
        return status_fail(fail.st, "%s", fail.msg);
    }
    memcpy(trials, out, (size_t)n_trials * sizeof *trials);
    free(out);
    return MSRNN_OK;
}

msrnn_status passkey_prompt(const msrnn_model *m, int64_t length, double depth, uint32_t key,
                            int32_t *out, size_t cap, size_t *n) {
    texts x;
    toks k0, k;
    *n = 0;
    MSRNN_TRY(texts_open(m, &x));
    msrnn_status st = key_tokens(m, &x, key, &k0, &k);
    if (st != MSRNN_OK) {
        texts_free(&x);
        return st;
    }
    prompt pr;
    prompt_plan(&pr, &x, &k0, &k, length, depth);
    if (pr.n > (int64_t)cap)
        st = status_fail(MSRNN_ERR_INVALID, "passkey: the prompt has %lld tokens, room for %zu",
                         (long long)pr.n, cap);
    else
        prompt_fill(&pr, 0, (int)pr.n, out), *n = (size_t)pr.n;
    free(k0.ids), free(k.ids);
    texts_free(&x);
    return st;
}

msrnn_status passkey_make_data(const msrnn_model *m, const char *path, int n_examples, int length,
                               uint64_t seed, passkey_data_info *info) {
    if (!m->tok) return status_fail(MSRNN_ERR_FORMAT, "passkey: the model has no vocabulary");
    if (n_examples < 1 || n_examples > (1 << 24))
        return status_fail(MSRNN_ERR_INVALID, "passkey: %d examples, expected 1 to 2^24",
                           n_examples);
    int64_t min_length;
    MSRNN_TRY(passkey_min_length(m, &min_length));
    if (length < min_length || length > (1 << 20))
        return status_fail(MSRNN_ERR_INVALID,
                           "passkey: example length %d, expected %lld to 2^20 tokens", length,
                           (long long)min_length);
    texts x;
    MSRNN_TRY(texts_open(m, &x));
    toks q_alone = {0};
    int32_t *ex = malloc((size_t)length * sizeof *ex);
    msrnn_status st = ex ? tokens_of(m, QUESTION, &q_alone)
                         : status_fail(MSRNN_ERR_NOMEM, "passkey: out of memory");
    const msrnn_model_info *in = msrnn_model_get_info(m);
    token_shard_writer *w = NULL;
    if (st == MSRNN_OK)
        st = token_shard_writer_open(
            path, (uint32_t)in->n_vocab, spm_vocab_hash(m->tok), (uint32_t)in->bos_id,
            (uint64_t)n_examples * (uint64_t)length + 1, (uint64_t)n_examples + 1, 0, &w);
    int64_t answer_tokens_sum = 0;
    int max_answer = 0;
    /* one token before the first example: train's window i is tokens [iL, iL + L], inputs the
     * first L and targets the last L, so with this lead the targets of window i are example i
     * exactly and its last targets are the answer (before: the answer's first token was an input
     * only, and the next example's BOS a target) */
    if (st == MSRNN_OK) {
        const int32_t lead = in->bos_id;
        token_shard_writer_put(w, &lead, 1);
    }
    for (int i = 0; st == MSRNN_OK && i < n_examples; i++) {
        /* key and depth from the seed and the example's index */
        const uint64_t h = splitmix64(splitmix64(seed ^ 0x70a55e7da7aull) ^ (uint64_t)i);
        const uint32_t key = key_of(h);
        const double depth = (double)((h >> 20) % 10001u) / 10000.0;
        toks k0 = {0}, k = {0}, ans = {0};
        st = key_tokens(m, &x, key, &k0, &k);
        char answer[16]; /* as it follows the question */
        snprintf(answer, sizeof answer, "%05u.", (unsigned)key);
        if (st == MSRNN_OK) st = tokens_after(m, QUESTION, &q_alone, answer, &ans);
        if (st == MSRNN_OK) {
            /* the prompt leaves room for the answer; filler units after it fill up to length */
            prompt pr;
            prompt_plan(&pr, &x, &k0, &k, length - ans.n + (PASSKEY_MAX_GEN - 1), depth);
            if (pr.n + ans.n > length) {
                st = status_fail(MSRNN_ERR_INVALID,
                                 "passkey: example length %d is too short for the answer", length);
            } else {
                /* BOS, the slack as the tail of filler units (so that the text goes on into the
                 * prompt), the prompt, the answer: each example ends with its answer, which is
                 * what train --loss-last scores */
                const int slack = length - (int)pr.n - ans.n;
                prompt_fill(&pr, 0, 1, ex);
                for (int j = 0; j < slack; j++)
                    ex[1 + j] = x.unit.ids[(x.unit.n - slack % x.unit.n + j) % x.unit.n];
                prompt_fill(&pr, 1, (int)pr.n - 1, ex + 1 + slack);
                memcpy(ex + length - ans.n, ans.ids, (size_t)ans.n * sizeof *ex);
                token_shard_writer_put(w, ex, (size_t)length);
                answer_tokens_sum += ans.n;
                if (ans.n > max_answer) max_answer = ans.n;
            }
        }
        free(k0.ids), free(k.ids), free(ans.ids);
    }
    if (w) {
        if (st == MSRNN_OK)
            st = token_shard_writer_commit(w);
        else
            token_shard_writer_abort(w);
    }
    if (st == MSRNN_OK && info) {
        info->n_tokens = (int64_t)n_examples * length + 1;
        info->mean_answer_tokens = (double)answer_tokens_sum / n_examples;
        info->max_answer_tokens = max_answer;
    }
    free(ex), free(q_alone.ids);
    texts_free(&x);
    return st;
}
