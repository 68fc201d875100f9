/* tool_logits — logits through the public API alone (include/msrnn.h), for tests/test_python.py to
 * compare the Python bindings' against, bit for bit.
 *
 *   tool_logits MODEL MEMORY KV_SIZE THREADS PIECE OUT ID...
 *       open a session (MEMORY: full or a bounded memory with KV_SIZE entries per layer; THREADS
 *       worker threads; every other parameter the library's default), feed the ids in evals of at
 *       most PIECE tokens (0: one eval of all), each with logits_all; write to OUT every position's
 *       logits (n × n_vocab float32, row i for id i) and then msrnn_session_logits() after the last
 *       eval (n_vocab float32), in the machine's byte order. Prints "n_past N session_bytes B
 *       memory_bytes M".
 *   tool_logits layout
 *       the layout of the public structs: a line "STRUCT size N" per struct and "STRUCT.FIELD
 * OFFSET SIZE" per field, in declaration order (the bindings' ctypes structures must match).
 *
 * Exit status: 0, 1 on a library error (its message on stderr), 2 on bad usage.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "msrnn.h"

#define FIELD(T, f) printf("%s.%s %zu %zu\n", #T, #f, offsetof(T, f), sizeof(((T *)0)->f))
#define SIZE(T) printf("%s size %zu\n", #T, sizeof(T))

static void layout(void) {
    SIZE(msrnn_model_info);
    FIELD(msrnn_model_info, n_vocab);
    FIELD(msrnn_model_info, dim);
    FIELD(msrnn_model_info, n_layers);
    FIELD(msrnn_model_info, n_heads);
    FIELD(msrnn_model_info, n_kv_heads);
    FIELD(msrnn_model_info, head_dim);
    FIELD(msrnn_model_info, ffn_dim);
    FIELD(msrnn_model_info, n_ctx);
    FIELD(msrnn_model_info, rope_base);
    FIELD(msrnn_model_info, norm_eps);
    FIELD(msrnn_model_info, tied_output);
    FIELD(msrnn_model_info, bos_id);
    FIELD(msrnn_model_info, eos_id);
    FIELD(msrnn_model_info, n_params);
    FIELD(msrnn_model_info, weight_bytes);
    FIELD(msrnn_model_info, architecture);
    SIZE(msrnn_session_params);
    FIELD(msrnn_session_params, n_ctx);
    FIELD(msrnn_session_params, n_threads);
    FIELD(msrnn_session_params, n_batch);
    FIELD(msrnn_session_params, kv_f16);
    FIELD(msrnn_session_params, memory);
    FIELD(msrnn_session_params, kv_size);
    FIELD(msrnn_session_params, kv_sinks);
    FIELD(msrnn_session_params, batched_attention);
    FIELD(msrnn_session_params, kv_merge_bias);
    FIELD(msrnn_session_params, kv_clusters);
    SIZE(msrnn_memory_settings);
    FIELD(msrnn_memory_settings, sinks);
    FIELD(msrnn_memory_settings, clusters);
    FIELD(msrnn_memory_settings, min_kv_size);
    SIZE(msrnn_perplexity_params);
    FIELD(msrnn_perplexity_params, ctx);
    FIELD(msrnn_perplexity_params, max_chunks);
    FIELD(msrnn_perplexity_params, session);
    SIZE(msrnn_perplexity_result);
    FIELD(msrnn_perplexity_result, n_scored);
    FIELD(msrnn_perplexity_result, nll_sum);
    FIELD(msrnn_perplexity_result, nll_mean);
    FIELD(msrnn_perplexity_result, ppl);
    FIELD(msrnn_perplexity_result, bits_per_byte);
    FIELD(msrnn_perplexity_result, seconds);
    FIELD(msrnn_perplexity_result, tokens_per_s);
    FIELD(msrnn_perplexity_result, memory_bytes);
    SIZE(msrnn_sampler_params);
    FIELD(msrnn_sampler_params, temperature);
    FIELD(msrnn_sampler_params, top_k);
    FIELD(msrnn_sampler_params, top_p);
    FIELD(msrnn_sampler_params, min_p);
    FIELD(msrnn_sampler_params, repeat_penalty);
    FIELD(msrnn_sampler_params, repeat_last_n);
    FIELD(msrnn_sampler_params, seed);
}

static int fail(const char *what) {
    fprintf(stderr, "tool_logits: %s: %s\n", what, msrnn_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc == 2 && !strcmp(argv[1], "layout")) {
        layout();
        return 0;
    }
    if (argc < 8) {
        fprintf(stderr, "usage: tool_logits MODEL MEMORY KV_SIZE THREADS PIECE OUT ID...\n"
                        "       tool_logits layout\n");
        return 2;
    }
    const int n = argc - 7, piece = atoi(argv[5]);
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    if (!ids) return 1;
    for (int i = 0; i < n; i++) ids[i] = (int32_t)atoi(argv[7 + i]);

    msrnn_model *m;
    if (msrnn_model_open(argv[1], &m) != MSRNN_OK) return fail("open");
    const size_t V = (size_t)msrnn_model_get_info(m)->n_vocab;
    msrnn_session_params p = msrnn_session_default_params();
    p.memory = argv[2];
    p.kv_size = atoi(argv[3]);
    p.n_threads = atoi(argv[4]);
    msrnn_session *s;
    if (msrnn_session_open(m, &p, &s) != MSRNN_OK) return fail("session");
    float *all = malloc(((size_t)n + 1) * V * sizeof *all);
    if (!all) return 1;
    for (int i = 0; i < n;) {
        const int k = piece > 0 && n - i > piece ? piece : n - i;
        if (msrnn_session_eval(s, ids + i, k, all + (size_t)i * V) != MSRNN_OK) return fail("eval");
        i += k;
    }
    memcpy(all + (size_t)n * V, msrnn_session_logits(s), V * sizeof *all);
    FILE *f = fopen(argv[6], "wb");
    if (!f || fwrite(all, sizeof *all, ((size_t)n + 1) * V, f) != ((size_t)n + 1) * V ||
        fclose(f) != 0) {
        fprintf(stderr, "tool_logits: cannot write %s\n", argv[6]);
        return 1;
    }
    printf("n_past %lld session_bytes %zu memory_bytes %zu\n", (long long)msrnn_session_n_past(s),
           msrnn_session_bytes(s), msrnn_session_memory_bytes(s));
    msrnn_session_close(s);
    msrnn_model_close(m);
    free(all);
    free(ids);
    return 0;
}
