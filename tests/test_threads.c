/* test_threads.c — what msrnn.h promises about threads, using only the public API.
 *
 * One model is opened once and shared; N_THREADS threads each own a session (each of a different
 * memory) and at the same time tokenize a text, evaluate its tokens as a prompt, then decode
 * greedily one token per call. Every logit of every step must equal, bit for bit, the same
 * session's run alone on the main thread beforehand (the model is read-only after open, and a
 * session's arithmetic does not depend on what else runs). Run for every architecture, with the
 * sessions single-threaded and with two OpenMP threads each (parallel regions started from
 * several threads at once).
 *
 * And msrnn_last_error() is per thread: a failure on one thread leaves another thread's message
 * as it was; and msrnn_memory_is_bounded gives each architecture's and memory's answer.
 */
#include "msrnn.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define N_THREADS 4
#define N_GEN 24
#define MAX_STEPS (1 + N_GEN)

static const char *const texts[N_THREADS] = {
    "It was a dark and stormy night; the rain fell in torrents.",
    "Call me Ishmael. Some years ago, never mind how long precisely,",
    "In the beginning the Universe was created.",
    "The quick brown fox jumps over the lazy dog, again and again and again.",
};
static const char *const memories[N_THREADS] = {"full", "tova", "sink", "merge"};

typedef struct {
    msrnn_model *model;
    int index, n_threads, bounded, no_tokenizer;
    int32_t ids[256];
    size_t n_ids;
    float *logits; /* (MAX_STEPS × n_vocab) the last logits after the prompt and after each step */
    msrnn_status st;
    char err[256];
} job;

static void *run_job(void *arg) {
    job *j = arg;
    const int V = msrnn_model_get_info(j->model)->n_vocab;
    msrnn_session_params sp = msrnn_session_default_params();
    sp.n_threads = j->n_threads;
    if (j->bounded) {
        sp.memory = memories[j->index];
        sp.kv_size = 12; /* the prompts are longer: every bounded memory evicts */
    }
    msrnn_session *s = NULL;
    const char *text = texts[j->index];
    j->st = msrnn_tokenize(j->model, text, strlen(text), 1, j->ids, 256, &j->n_ids);
    if (j->st != MSRNN_OK && j->no_tokenizer) { /* the text's bytes as ids */
        j->n_ids = strlen(text);
        for (size_t i = 0; i < j->n_ids; i++) j->ids[i] = (unsigned char)text[i] % V;
        j->st = MSRNN_OK;
    }
    if (j->st == MSRNN_OK) j->st = msrnn_session_open(j->model, &sp, &s);
    if (j->st == MSRNN_OK) j->st = msrnn_session_eval(s, j->ids, (int)j->n_ids, NULL);
    for (int step = 0; j->st == MSRNN_OK && step < MAX_STEPS; step++) {
        const float *l = msrnn_session_logits(s);
        memcpy(j->logits + (size_t)step * V, l, (size_t)V * sizeof *l);
        int32_t best = 0;
        for (int i = 1; i < V; i++)
            if (l[i] > l[best]) best = i;
        if (step + 1 < MAX_STEPS) j->st = msrnn_session_eval(s, &best, 1, NULL);
    }
    if (j->st != MSRNN_OK) snprintf(j->err, sizeof j->err, "%s", msrnn_last_error());
    msrnn_session_close(s);
    return NULL;
}

static void run_model(const char *path, int bounded) {
    msrnn_model *m = NULL;
    REQUIRE_OK(msrnn_model_open(path, &m));
    const int V = msrnn_model_get_info(m)->n_vocab;
    int32_t probe[8];
    size_t n_probe;
    const int no_tokenizer = msrnn_tokenize(m, "a", 1, 1, probe, 8, &n_probe) != MSRNN_OK;
    for (int nt = 1; nt <= 2; nt++) {
        job alone[N_THREADS], together[N_THREADS];
        for (int i = 0; i < N_THREADS; i++) {
            alone[i] = (job){.model = m,
                             .index = i,
                             .n_threads = nt,
                             .bounded = bounded,
                             .no_tokenizer = no_tokenizer};
            alone[i].logits = calloc((size_t)MAX_STEPS * V, sizeof(float));
            together[i] = alone[i];
            together[i].logits = calloc((size_t)MAX_STEPS * V, sizeof(float));
            REQUIRE(alone[i].logits && together[i].logits, "out of memory");
            run_job(&alone[i]);
            REQUIRE(alone[i].st == MSRNN_OK, "%s alone: %s", path, alone[i].err);
        }
        pthread_t th[N_THREADS];
        for (int i = 0; i < N_THREADS; i++)
            REQUIRE(!pthread_create(&th[i], NULL, run_job, &together[i]), "pthread_create");
        for (int i = 0; i < N_THREADS; i++) pthread_join(th[i], NULL);
        for (int i = 0; i < N_THREADS; i++) {
            const char *mem = bounded ? memories[i] : "full";
            CHECK(together[i].st == MSRNN_OK, "%s %s threads: %s", path, mem, together[i].err);
            CHECK(together[i].n_ids == alone[i].n_ids &&
                      !memcmp(together[i].ids, alone[i].ids, alone[i].n_ids * sizeof(int32_t)),
                  "%s: text %d tokenized differently on a thread", path, i);
            CHECK(
                !memcmp(together[i].logits, alone[i].logits, (size_t)MAX_STEPS * V * sizeof(float)),
                "%s %s (%d OpenMP threads a session): logits on a thread beside %d others "
                "differ from the run alone",
                path, mem, nt, N_THREADS - 1);
            free(alone[i].logits), free(together[i].logits);
        }
    }
    msrnn_model_close(m);
}

/* A failure on one thread does not touch another thread's message. */
static void *fail_open(void *arg) {
    (void)arg;
    msrnn_model *m = NULL;
    msrnn_model_open("/nonexistent/other-thread.gguf", &m);
    return NULL;
}

static void check_error_per_thread(void) {
    msrnn_model *m = NULL;
    CHECK(msrnn_model_open("/nonexistent/main-thread.gguf", &m) == MSRNN_ERR_IO,
          "opening a missing file is MSRNN_ERR_IO");
    pthread_t th;
    REQUIRE(!pthread_create(&th, NULL, fail_open, NULL), "pthread_create");
    pthread_join(th, NULL);
    CHECK(strstr(msrnn_last_error(), "main-thread.gguf") &&
              !strstr(msrnn_last_error(), "other-thread"),
          "the main thread's message is its own: '%s'", msrnn_last_error());
}

/* msrnn_memory_is_bounded: the parts' own answer, whatever the memory's name. */
static void check_bounded(const char *dir) {
    static const struct {
        const char *file, *memory;
        int want;
    } cases[] = {{"kv/kv_h4x2_d32.gguf", "full", 0},
                 {"kv/kv_h4x2_d32.gguf", "tova", 1},
                 {"kv/kv_h4x2_d32.gguf", "merge", 1},
                 {"kv/kv_h4x2_d32.gguf", "no-such-memory", 0},
                 {"infini/inf_h4x2_linear.gguf", "full", 1},
                 {"dijiang/dj_h4x2_m8.gguf", "full", 1},
                 {"memoryformer/mf_t8_paper_f16.gguf", "full", 0},
                 {"memoryformer/mf_t4_paper_bias.gguf", "window", 1}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, cases[i].file);
        msrnn_model *m = NULL;
        REQUIRE_OK(msrnn_model_open(path, &m));
        msrnn_session_params sp = msrnn_session_default_params();
        sp.memory = cases[i].memory;
        sp.kv_size = 16;
        CHECK(msrnn_memory_is_bounded(m, &sp) == cases[i].want, "%s with %s: bounded %d",
              cases[i].file, cases[i].memory, cases[i].want);
        msrnn_model_close(m);
    }
}

int main(void) {
    const char *dir = getenv("MSRNN_REF_DIR");
    REQUIRE(dir, "MSRNN_REF_DIR is not set");
    static const struct {
        const char *file;
        int bounded;
    } models[] = {{"kv/kv_h4x2_d32.gguf", 1},
                  {"llama/gqa48_untied_q8_0.gguf", 0},
                  {"infini/inf_h4x2_linear.gguf", 0},
                  {"dijiang/dj_h4x2_m8.gguf", 0},
                  {"memoryformer/mf_t8_paper_f16.gguf", 0}};
    for (size_t i = 0; i < sizeof models / sizeof *models; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, models[i].file);
        run_model(path, models[i].bounded);
    }
    check_error_per_thread();
    check_bounded(dir);
    printf("test_threads: %d checks, %d failures\n", checks, failures);
    return failures != 0;
}
