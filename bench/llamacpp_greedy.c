/* llamacpp_greedy.c — greedy decoding with llama.cpp, the peer msrnn's outputs are checked against.
 *
 * Loads a GGUF model through libllama with the settings msrnn uses (f32 KV cache, flash attention
 * off, CPU only), evaluates the prompt in one batch, then picks the arg-max token N times, one
 * token per decode. Prints one JSON object on stdout:
 *   {"prompt_ids": [...], "ids": [...], "margins": [...]}
 * where margins[i] is the gap between the best and second-best logit at step i (how close greedy
 * decoding came to choosing differently there). It is not a sampler and does not stop at EOS.
 *
 * usage: llamacpp-greedy -m FILE (-p TEXT | --ids 1,2,3) [-n 32] [-t 2] [-c 0]
 *   -p TEXT   tokenise TEXT with the model's tokenizer (BOS added when the model asks for it)
 *   --ids L   use these prompt token ids as given
 *   -c N      context size (0: prompt + n)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama.h"

static void log_quiet(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

static int parse_ids(const char *s, llama_token **out) {
    int cap = 16, n = 0;
    llama_token *ids = malloc(cap * sizeof *ids);
    while (ids && *s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s) break;
        if (n == cap) {
            cap *= 2;
            llama_token *grown = realloc(ids, cap * sizeof *ids);
            if (!grown) break;
            ids = grown;
        }
        ids[n++] = (llama_token)v;
        s = *end == ',' ? end + 1 : end;
    }
    *out = ids;
    return n;
}

static void print_ids(const char *key, const llama_token *ids, int n) {
    printf("\"%s\": [", key);
    for (int i = 0; i < n; i++) printf(i ? ", %d" : "%d", ids[i]);
    printf("]");
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *text = NULL, *ids_arg = NULL;
    int n_gen = 32, n_threads = 2, n_ctx = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "llamacpp-greedy: %s needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "-m"))
            model_path = v;
        else if (!strcmp(a, "-p"))
            text = v;
        else if (!strcmp(a, "--ids"))
            ids_arg = v;
        else if (!strcmp(a, "-n"))
            n_gen = atoi(v);
        else if (!strcmp(a, "-t"))
            n_threads = atoi(v);
        else if (!strcmp(a, "-c"))
            n_ctx = atoi(v);
        else {
            fprintf(stderr, "llamacpp-greedy: unknown option %s\n", a);
            return 2;
        }
        i++;
    }
    if (!model_path || (!text == !ids_arg) || n_gen < 0) {
        fprintf(stderr,
                "usage: llamacpp-greedy -m FILE (-p TEXT | --ids 1,2,3) [-n 32] [-t 2] [-c 0]\n");
        return 2;
    }

    llama_log_set(log_quiet, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    struct llama_model *model = llama_model_load_from_file(model_path, mp);
    if (!model) {
        fprintf(stderr, "llamacpp-greedy: cannot load %s\n", model_path);
        return 1;
    }
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);

    llama_token *prompt = NULL;
    int n_prompt;
    if (text) {
        int len = (int)strlen(text);
        n_prompt = -llama_tokenize(vocab, text, len, NULL, 0, true, false);
        prompt = malloc((n_prompt > 0 ? n_prompt : 1) * sizeof *prompt);
        n_prompt = llama_tokenize(vocab, text, len, prompt, n_prompt, true, false);
    } else {
        n_prompt = parse_ids(ids_arg, &prompt);
    }
    if (n_prompt <= 0) {
        fprintf(stderr, "llamacpp-greedy: empty prompt\n");
        return 1;
    }

    /* msrnn's settings: f32 keys and values, plain (not flash) attention, the whole prompt in one
     * batch. */
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n_ctx > 0 ? (uint32_t)n_ctx : (uint32_t)(n_prompt + n_gen);
    cp.n_batch = cp.n_ubatch = (uint32_t)(n_prompt > 512 ? n_prompt : 512);
    cp.n_threads = cp.n_threads_batch = n_threads;
    cp.type_k = cp.type_v = GGML_TYPE_F32;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.no_perf = true;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        fprintf(stderr, "llamacpp-greedy: cannot create a context\n");
        return 1;
    }

    llama_token *out = malloc((n_gen > 0 ? n_gen : 1) * sizeof *out);
    float *margins = malloc((n_gen > 0 ? n_gen : 1) * sizeof *margins);
    struct llama_batch batch = llama_batch_get_one(prompt, n_prompt);
    for (int step = 0; step < n_gen; step++) {
        if (llama_decode(ctx, batch) != 0) {
            fprintf(stderr, "llamacpp-greedy: llama_decode failed at step %d\n", step);
            return 1;
        }
        const float *logits = llama_get_logits_ith(ctx, -1);
        int best = 0, second = -1;
        for (int v = 1; v < n_vocab; v++) {
            if (logits[v] > logits[best]) {
                second = best;
                best = v;
            } else if (second < 0 || logits[v] > logits[second]) {
                second = v;
            }
        }
        out[step] = best;
        margins[step] = logits[best] - logits[second];
        batch = llama_batch_get_one(&out[step], 1);
    }

    printf("{");
    print_ids("prompt_ids", prompt, n_prompt);
    printf(", ");
    print_ids("ids", out, n_gen);
    printf(", \"margins\": [");
    for (int i = 0; i < n_gen; i++) printf(i ? ", %.6g" : "%.6g", margins[i]);
    printf("]}\n");

    free(margins);
    free(out);
    free(prompt);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
