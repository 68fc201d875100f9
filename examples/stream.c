/* stream.c — generate text with a bounded memory, printing each token as it is sampled.
 *
 *   cc stream.c $(pkg-config --cflags --libs msrnn) -o stream
 *   ./stream MODEL.gguf "Once upon a time" [N_TOKENS [MEMORY [KV_SIZE]]]
 *
 * The session keeps at most KV_SIZE entries per layer (default: TOVA with 256), so its memory is
 * fixed at open however many tokens are generated. Errors go to stderr with the library's message.
 */
#include <msrnn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what, msrnn_status st) {
    fprintf(stderr, "stream: %s: %s: %s\n", what, msrnn_status_name(st), msrnn_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL.gguf PROMPT [N_TOKENS [MEMORY [KV_SIZE]]]\n", argv[0]);
        return 2;
    }
    if (msrnn_version_number() / 10000 != MSRNN_VERSION_MAJOR) {
        fprintf(stderr, "stream: built for msrnn %s, linked with %s\n", MSRNN_VERSION_STRING,
                msrnn_version());
        return 1;
    }
    const int n_gen = argc > 3 ? atoi(argv[3]) : 64;
    msrnn_session_params sp = msrnn_session_default_params();
    sp.memory = argc > 4 ? argv[4] : "tova";
    sp.kv_size = argc > 5 ? atoi(argv[5]) : 256;

    msrnn_model *model = NULL;
    msrnn_session *session = NULL;
    msrnn_sampler *sampler = NULL;
    int32_t *ids = NULL;
    int rc = 0;
    msrnn_status st = msrnn_model_open(argv[1], &model);
    if (st != MSRNN_OK) return fail(argv[1], st);
    const msrnn_model_info *info = msrnn_model_get_info(model);

    /* the prompt's tokens, BOS first; room for the generated ones after them */
    const size_t len = strlen(argv[2]);
    size_t n_prompt = 0, cap = msrnn_tokenize_max(model, len) + (size_t)(n_gen > 0 ? n_gen : 0);
    ids = malloc(cap * sizeof *ids);
    if (!ids) {
        fprintf(stderr, "stream: out of memory\n");
        rc = 1;
        goto done;
    }
    if ((st = msrnn_tokenize(model, argv[2], len, 1, ids, cap, &n_prompt)) != MSRNN_OK ||
        (st = msrnn_session_open(model, &sp, &session)) != MSRNN_OK) {
        rc = fail("open", st);
        goto done;
    }
    msrnn_sampler_params smp = msrnn_sampler_default_params();
    smp.temperature = 0.8f;
    smp.top_k = 40;
    smp.seed = 1;
    if ((st = msrnn_sampler_open(&smp, info->n_vocab, &sampler)) != MSRNN_OK) {
        rc = fail("sampler", st);
        goto done;
    }

    fputs(argv[2], stdout);
    size_t n = n_prompt;
    /* the prompt in one call, then one token per call, each fed back as it is printed */
    if ((st = msrnn_session_eval(session, ids, (int)n_prompt, NULL)) != MSRNN_OK) {
        rc = fail("eval", st);
        goto done;
    }
    for (int i = 0; i < n_gen; i++) {
        const int32_t next = msrnn_sample(sampler, msrnn_session_logits(session), ids, (int)n);
        if (next == info->eos_id) break;
        char piece[256];
        const size_t k = msrnn_token_to_text(model, ids[n - 1], next, piece, sizeof piece);
        fwrite(piece, 1, k < sizeof piece ? k : sizeof piece, stdout);
        fflush(stdout);
        ids[n++] = next;
        if ((st = msrnn_session_eval(session, &next, 1, NULL)) != MSRNN_OK) {
            rc = fail("eval", st);
            goto done;
        }
    }
    fprintf(stderr, "\n[%s, %d entries per layer: %zu bytes of memory after %lld tokens]\n",
            sp.memory, sp.kv_size, msrnn_session_memory_bytes(session),
            (long long)msrnn_session_n_past(session));
    putchar('\n');
done:
    free(ids);
    msrnn_sampler_close(sampler);
    msrnn_session_close(session);
    msrnn_model_close(model);
    return rc;
}
