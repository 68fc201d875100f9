/* dump.c — print exact fingerprints of what libmsrnn computes, for before/after identity checks.
 *
 *   dump MODEL.gguf TEXT.txt [N_TOKENS (300)]
 *
 * Uses only include/msrnn.h, so the same file builds against any version of the library. Every
 * line is "key value..."; floats are fingerprinted by an FNV-1a 64 hash of their raw bytes, so two
 * outputs are equal only if every bit is. With IDENTITY_VERBOSE=1 in the environment it also prints
 * one hash per logits row (to find the first token that differs). Exit status 1 on any failure.
 *
 * Written to build against both sides of an API change: msrnn_session_n_past returns int or
 * int64_t, and msrnn_session_kept writes int32_t or int64_t positions (the buffer is passed as
 * void *, the element width found from the function's type). Positions are hashed as int64_t.
 */
#include "msrnn.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_fail, g_verbose;

/* bytes of one position written by msrnn_session_kept (int64_t in newer headers, else int32_t) */
#define KEPT_POS_BYTES                                                                             \
    _Generic(&msrnn_session_kept,                                                                  \
             int (*)(const msrnn_session *, int, int, int64_t *, float *, int) : 8, default : 4)
#define N_PAST(s) ((long long)msrnn_session_n_past(s))

#define FNV_INIT 0xcbf29ce484222325ull
static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static void fail(const char *what, msrnn_status st) {
    printf("ERROR %s: %s: %s\n", what, msrnn_status_name(st), msrnn_last_error());
    g_fail = 1;
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        free(buf);
        return NULL;
    }
    fclose(f);
    buf[n] = 0;
    *len = (size_t)n;
    return buf;
}

typedef struct {
    const char *name;
    const char *memory;
    int kv_size, kv_f16, batched, threads, n_batch;
    int token_mode; /* also evaluate one token at a time */
} config;

static msrnn_session_params params_of(const config *c) {
    msrnn_session_params p = msrnn_session_default_params();
    p.n_ctx = 512;
    p.n_threads = c->threads;
    p.n_batch = c->n_batch;
    p.kv_f16 = c->kv_f16;
    p.memory = c->memory;
    p.kv_size = c->kv_size;
    p.batched_attention = c->batched;
    return p;
}

/* Kept positions and scores of every layer (and kv head for tova-head); layer 0 printed. */
static void print_kept(const char *tag, const msrnn_session *s, const msrnn_model_info *in,
                       const config *c) {
    const int cap = 4096;
    void *raw = malloc(cap * sizeof(int64_t));
    int64_t *pos = malloc(cap * sizeof *pos);
    float *score = malloc(cap * sizeof *score);
    const int per_head = !strcmp(c->memory, "tova-head");
    uint64_t h = FNV_INIT;
    for (int l = 0; l < in->n_layers; l++)
        for (int hd = per_head ? 0 : -1; hd < (per_head ? in->n_kv_heads : 0); hd++) {
            int n = msrnn_session_kept(s, l, hd, raw, score, cap);
            for (int i = 0; i < n && i < cap; i++)
                pos[i] = KEPT_POS_BYTES == 8 ? ((const int64_t *)raw)[i]
                                             : (int64_t)((const int32_t *)raw)[i];
            h = fnv(h, &n, sizeof n);
            if (n > 0) {
                h = fnv(h, pos, (size_t)n * sizeof *pos);
                h = fnv(h, score, (size_t)n * sizeof *score);
            }
            if (l == 0) {
                printf("%s %s kept_l0_h%d n=%d pos", c->name, tag, hd, n);
                for (int i = 0; i < n && i < cap; i++) printf(" %lld", (long long)pos[i]);
                uint64_t hs = n > 0 ? fnv(FNV_INIT, score, (size_t)n * sizeof *score) : 0;
                printf(" score_hash=%016" PRIx64 "\n", hs);
            }
        }
    printf("%s %s kept_all_layers_hash %016" PRIx64 "\n", c->name, tag, h);
    free(raw);
    free(pos);
    free(score);
}

static void verbose_rows(const char *name, const char *tag, const float *l, int n, int V) {
    if (!g_verbose) return;
    for (int i = 0; i < n; i++)
        printf("%s %s row %d %016" PRIx64 "\n", name, tag, i,
               fnv(FNV_INIT, l + (size_t)i * V, (size_t)V * sizeof(float)));
}

static void run_config(msrnn_model *m, const config *c, const int32_t *ids, int n) {
    const msrnn_model_info *in = msrnn_model_get_info(m);
    const int V = in->n_vocab;
    const size_t row = (size_t)V * sizeof(float);
    msrnn_session_params p = params_of(c);
    float *all = malloc((size_t)n * row);
    msrnn_session *s = NULL;
    msrnn_status st;
    const int B = 37;

    /* (1) batches of 37 tokens, logits of every token */
    if ((st = msrnn_session_open(m, &p, &s)) != MSRNN_OK) {
        fail(c->name, st);
        free(all);
        return;
    }
    printf("%s params memory=%s kv_size=%d kv_f16=%d batched_attention=%d n_threads=%d "
           "n_batch=%d n_ctx=%d\n",
           c->name, c->memory, c->kv_size, c->kv_f16, c->batched, c->threads, c->n_batch, p.n_ctx);
    printf("%s session_bytes %zu memory_bytes_at_open %zu\n", c->name, msrnn_session_bytes(s),
           msrnn_session_memory_bytes(s));
    for (int i = 0; i < n; i += B) {
        int nb = n - i < B ? n - i : B;
        if ((st = msrnn_session_eval(s, ids + i, nb, all + (size_t)i * V)) != MSRNN_OK) {
            fail(c->name, st);
            break;
        }
    }
    uint64_t h_batch = fnv(FNV_INIT, all, (size_t)n * row);
    printf("%s batch37 logits_all %016" PRIx64 "\n", c->name, h_batch);
    printf("%s batch37 last_logits %016" PRIx64 " first4 %a %a %a %a\n", c->name,
           fnv(FNV_INIT, msrnn_session_logits(s), row), msrnn_session_logits(s)[0],
           msrnn_session_logits(s)[1], msrnn_session_logits(s)[2], msrnn_session_logits(s)[3]);
    verbose_rows(c->name, "batch37", all, n, V);
    printf("%s batch37 n_past %lld memory_bytes %zu session_bytes %zu\n", c->name, N_PAST(s),
           msrnn_session_memory_bytes(s), msrnn_session_bytes(s));
    print_kept("batch37", s, in, c);

    /* (2) reset, the same batches again without logits_all: the last token's logits of each */
    msrnn_session_reset(s);
    printf("%s after_reset n_past %lld memory_bytes %zu\n", c->name, N_PAST(s),
           msrnn_session_memory_bytes(s));
    uint64_t h_last = FNV_INIT;
    for (int i = 0; i < n; i += B) {
        int nb = n - i < B ? n - i : B;
        if ((st = msrnn_session_eval(s, ids + i, nb, NULL)) != MSRNN_OK) {
            fail(c->name, st);
            break;
        }
        h_last = fnv(h_last, msrnn_session_logits(s), row);
    }
    printf("%s batch37_nologits last_of_each_batch %016" PRIx64 "\n", c->name, h_last);
    print_kept("batch37_after_reset", s, in, c);
    msrnn_session_close(s);

    /* (3) a fresh session, one token at a time */
    if (c->token_mode) {
        if ((st = msrnn_session_open(m, &p, &s)) != MSRNN_OK) {
            fail(c->name, st);
            free(all);
            return;
        }
        uint64_t h_mem = FNV_INIT;
        for (int i = 0; i < n; i++) {
            if ((st = msrnn_session_eval(s, ids + i, 1, all + (size_t)i * V)) != MSRNN_OK) {
                fail(c->name, st);
                break;
            }
            size_t mb = msrnn_session_memory_bytes(s);
            h_mem = fnv(h_mem, &mb, sizeof mb);
        }
        uint64_t h_tok = fnv(FNV_INIT, all, (size_t)n * row);
        printf("%s token1 logits_all %016" PRIx64 " (%s batch37)\n", c->name, h_tok,
               h_tok == h_batch ? "equals" : "differs from");
        printf("%s token1 last_logits %016" PRIx64 "\n", c->name,
               fnv(FNV_INIT, msrnn_session_logits(s), row));
        verbose_rows(c->name, "token1", all, n, V);
        printf("%s token1 n_past %lld memory_bytes %zu memory_bytes_per_step_hash %016" PRIx64 "\n",
               c->name, N_PAST(s), msrnn_session_memory_bytes(s), h_mem);
        print_kept("token1", s, in, c);
        msrnn_session_close(s);
    }
    free(all);
}

static void generate(msrnn_model *m, const char *name, const char *memory, int kv_size,
                     const msrnn_sampler_params *sp, const char *prompt) {
    const msrnn_model_info *in = msrnn_model_get_info(m);
    msrnn_session_params p = msrnn_session_default_params();
    p.n_ctx = 512;
    p.n_threads = 2;
    p.memory = memory;
    p.kv_size = kv_size;
    enum { NGEN = 48, CAP = 512 };
    int32_t hist[CAP];
    size_t np = 0;
    msrnn_status st = msrnn_tokenize(m, prompt, strlen(prompt), 1, hist, CAP, &np);
    if (st != MSRNN_OK) {
        fail(name, st);
        return;
    }
    msrnn_session *s = NULL;
    msrnn_sampler *smp = NULL;
    if ((st = msrnn_session_open(m, &p, &s)) != MSRNN_OK) {
        fail(name, st);
        return;
    }
    if ((st = msrnn_sampler_open(sp, in->n_vocab, &smp)) != MSRNN_OK) {
        fail(name, st);
        msrnn_session_close(s);
        return;
    }
    printf("%s sampler temperature=%a top_k=%d top_p=%a min_p=%a repeat_penalty=%a "
           "repeat_last_n=%d seed=%" PRIu64 " memory=%s kv_size=%d\n",
           name, sp->temperature, sp->top_k, sp->top_p, sp->min_p, sp->repeat_penalty,
           sp->repeat_last_n, sp->seed, memory, kv_size);
    printf("%s prompt_ids", name);
    for (size_t i = 0; i < np; i++) printf(" %d", hist[i]);
    printf("\n");
    int n = (int)np;
    if ((st = msrnn_session_eval(s, hist, n, NULL)) != MSRNN_OK) fail(name, st);
    uint64_t h = FNV_INIT;
    printf("%s ids", name);
    for (int g = 0; g < NGEN && st == MSRNN_OK; g++) {
        const float *lg = msrnn_session_logits(s);
        h = fnv(h, lg, (size_t)in->n_vocab * sizeof(float));
        int32_t id = msrnn_sample(smp, lg, hist, n);
        printf(" %d", id);
        hist[n++] = id;
        if ((st = msrnn_session_eval(s, &id, 1, NULL)) != MSRNN_OK) {
            printf("\n");
            fail(name, st);
        }
    }
    printf("\n%s step_logits_hash %016" PRIx64 " memory_bytes %zu\n", name, h,
           msrnn_session_memory_bytes(s));
    msrnn_sampler_close(smp);
    msrnn_session_close(s);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: dump MODEL.gguf TEXT.txt [N_TOKENS]\n");
        return 2;
    }
    const int N = argc > 3 ? atoi(argv[3]) : 300;
    g_verbose = getenv("IDENTITY_VERBOSE") && atoi(getenv("IDENTITY_VERBOSE"));
    setvbuf(stdout, NULL, _IOLBF, 0);
    msrnn_model *m = NULL;
    msrnn_status st = msrnn_model_open(argv[1], &m);
    if (st != MSRNN_OK) {
        fail("model_open", st);
        return 1;
    }
    const msrnn_model_info *in = msrnn_model_get_info(m);
    printf("info n_vocab=%d dim=%d n_layers=%d n_heads=%d n_kv_heads=%d head_dim=%d ffn_dim=%d "
           "n_ctx=%d rope_base=%a norm_eps=%a tied=%d bos=%d eos=%d n_params=%" PRIu64
           " weight_bytes=%" PRIu64 "\n",
           in->n_vocab, in->dim, in->n_layers, in->n_heads, in->n_kv_heads, in->head_dim,
           in->ffn_dim, in->n_ctx, in->rope_base, in->norm_eps, in->tied_output, in->bos_id,
           in->eos_id, in->n_params, in->weight_bytes);

    /* tokenizer: the first 64 KiB of the text, then the detokenised bytes */
    size_t len = 0;
    char *text = read_file(argv[2], &len);
    if (!text) {
        printf("ERROR cannot read %s\n", argv[2]);
        return 1;
    }
    size_t tl = len < 65536 ? len : 65536;
    size_t cap = msrnn_tokenize_max(m, tl), nids = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    if ((st = msrnn_tokenize(m, text, tl, 1, ids, cap, &nids)) != MSRNN_OK) {
        fail("tokenize", st);
        return 1;
    }
    printf("tokenize bytes=%zu n_ids=%zu ids_hash %016" PRIx64 " first16", tl, nids,
           fnv(FNV_INIT, ids, nids * sizeof *ids));
    for (size_t i = 0; i < 16 && i < nids; i++) printf(" %d", ids[i]);
    printf("\n");
    size_t n_nobos = 0;
    st = msrnn_tokenize(m, text, tl, 0, NULL, 0, &n_nobos); /* a size query: cap 0 */
    printf("tokenize_size_query add_bos=0 status=%s n_out=%zu\n", msrnn_status_name(st), n_nobos);
    uint64_t hd = FNV_INIT;
    size_t dl = 0;
    char piece[256];
    for (size_t i = 0; i < nids; i++) {
        size_t k = msrnn_token_to_text(m, i ? ids[i - 1] : -1, ids[i], piece, sizeof piece);
        size_t w = k < sizeof piece ? k : sizeof piece;
        hd = fnv(hd, piece, w);
        hd = fnv(hd, &k, sizeof k);
        dl += k;
    }
    printf("detokenize bytes=%zu hash %016" PRIx64 "\n", dl, hd);
    if ((size_t)N > nids) {
        printf("ERROR only %zu tokens\n", nids);
        return 1;
    }

    static const config cfgs[] = {
        /* name              memory     k   f16 batched thr n_batch token_mode */
        {"full_b1_t2", "full", 0, 0, 1, 2, 512, 1},
        {"full_b0_t2", "full", 0, 0, 0, 2, 512, 1},
        {"full_b1_t1", "full", 0, 0, 1, 1, 512, 1},
        {"full_b0_t1", "full", 0, 0, 0, 1, 512, 1},
        {"full_b1_t2_f16", "full", 0, 1, 1, 2, 512, 1},
        {"full_b0_t2_f16", "full", 0, 1, 0, 2, 512, 0},
        {"full_b1_t2_nb16", "full", 0, 0, 1, 2, 16, 0},
        {"window64", "window", 64, 0, 1, 2, 512, 1},
        {"sink64", "sink", 64, 0, 1, 2, 512, 1},
        {"h2o64", "h2o", 64, 0, 1, 2, 512, 1},
        {"tova64", "tova", 64, 0, 1, 2, 512, 1},
        {"tova64_f16", "tova", 64, 1, 1, 2, 512, 1},
        {"tova64_t1", "tova", 64, 0, 1, 1, 512, 0},
        {"tova-head64", "tova-head", 64, 0, 1, 2, 512, 1},
        {"h2o64_nb16", "h2o", 64, 0, 1, 2, 16, 0},
    };
    for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) run_config(m, &cfgs[i], ids, N);

    const char *prompt = "It was a dark and stormy night";
    msrnn_sampler_params greedy = msrnn_sampler_default_params();
    greedy.temperature = 0;
    greedy.repeat_penalty = 1.0f;
    msrnn_sampler_params sampled = msrnn_sampler_default_params();
    sampled.temperature = 0.8f;
    sampled.top_k = 40;
    sampled.top_p = 0.9f;
    sampled.repeat_penalty = 1.1f;
    sampled.seed = 7;
    generate(m, "gen_greedy_full", "full", 0, &greedy, prompt);
    generate(m, "gen_sampled_full", "full", 0, &sampled, prompt);
    generate(m, "gen_greedy_tova16", "tova", 16, &greedy, prompt);
    generate(m, "gen_sampled_tova16", "tova", 16, &sampled, prompt);

    free(ids);
    free(text);
    msrnn_model_close(m);
    printf("done %s\n", g_fail ? "WITH ERRORS" : "ok");
    return g_fail;
}
