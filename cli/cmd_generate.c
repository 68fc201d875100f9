/* cmd_generate.c — `msrnn generate`: tokenize a prompt, evaluate it in batches, then sample and
 * stream tokens. Speeds go to stderr; with --json, stdout carries one JSON object instead of text.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "common.h"

static const cli_option options[] = {
    {"-p", "--prompt", "TEXT", .help = "prompt", .complete = ""},
    {"-f", "--file", "FILE", .help = "read the prompt from a file"},
    {"-n", "--n-predict", "N", .help = "tokens to generate (default 128; stops early at EOS)"},
    {NULL, "--temp", "X", .help = "temperature (default 0.8; 0 = greedy)"},
    {NULL, "--top-k", "N", .help = "(default 40; 0 = off)"},
    {NULL, "--top-p", "X", .help = "(default 0.95; 1 = off)"},
    {NULL, "--min-p", "X", .help = "(default 0.05; 0 = off)"},
    {NULL, "--repeat-penalty", "X", .help = "(default 1.0 = off)"},
    {NULL, "--repeat-last-n", "N", .help = "tokens the penalty looks back (default 64)"},
    {"-s", "--seed", "N", .help = "random seed (default: from the clock, printed)"},
    {NULL, "--ignore-eos", NULL, .help = "keep generating after EOS"},
    {NULL, "--json", NULL, .help = "print {prompt_ids, ids, text, prompt_tps, gen_tps}"},
};
static const cli_table table = {.column = 24, CLI_OPTIONS(options)};

const cli_command generate_command = {
    .name = "generate",
    .summary = "generate text from a prompt",
    .synopsis = "msrnn generate -m FILE (-p TEXT | -f FILE) [-n N] [options]",
    .tables = {&RUN_OPTIONS, &table},
};

static void usage(FILE *f) { cli_help(f, &generate_command); }

int cmd_generate(int argc, char **argv) {
    arg_set_command(&generate_command);
    const char *cmd = "generate";
    run_options o;
    run_options_init(&o);
    msrnn_sampler_params sp = msrnn_sampler_default_params();
    int seed_set = 0, n_predict = 128, json = 0, ignore_eos = 0, rc = 0;
    const char *prompt = NULL, *prompt_file = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (run_options_parse(cmd, &o, argc, argv, &i, &rc)) {
            if (rc) return rc;
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--json")) {
            json = 1;
            continue;
        }
        if (!strcmp(a, "--ignore-eos")) {
            ignore_eos = 1;
            continue;
        }
        if (!(v = arg_value(cmd, argc, argv, i))) return 2;
        i++;
        if (!strcmp(a, "-p") || !strcmp(a, "--prompt"))
            prompt = v;
        else if (!strcmp(a, "-f") || !strcmp(a, "--file"))
            prompt_file = v;
        else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict"))
            rc = arg_int(cmd, a, v, 0, 1 << 28, &n_predict);
        else if (!strcmp(a, "--temp"))
            rc = arg_float(cmd, a, v, 0, 1e6, &sp.temperature);
        else if (!strcmp(a, "--top-k"))
            rc = arg_int(cmd, a, v, 0, 1 << 24, &sp.top_k);
        else if (!strcmp(a, "--top-p"))
            rc = arg_float(cmd, a, v, 0, 1, &sp.top_p);
        else if (!strcmp(a, "--min-p"))
            rc = arg_float(cmd, a, v, 0, 1, &sp.min_p);
        else if (!strcmp(a, "--repeat-penalty"))
            rc = arg_float(cmd, a, v, 1e-3, 1e3, &sp.repeat_penalty);
        else if (!strcmp(a, "--repeat-last-n"))
            rc = arg_int(cmd, a, v, 0, 1 << 24, &sp.repeat_last_n);
        else if (!strcmp(a, "-s") || !strcmp(a, "--seed"))
            rc = arg_u64(cmd, a, v, &sp.seed), seed_set = 1;
        else {
            arg_unknown(cmd, a);
            return 2;
        }
        if (rc) return rc;
    }
    if (!prompt == !prompt_file) {
        fprintf(stderr, "msrnn %s: give exactly one of -p TEXT or -f FILE\n", cmd);
        return 2;
    }
    char *owned = NULL;
    size_t plen;
    if (prompt_file) {
        if (!(owned = read_text_file(cmd, prompt_file, &plen))) return 1;
        prompt = owned;
    } else {
        plen = strlen(prompt);
    }
    if (!seed_set) {
        sp.seed = (uint64_t)(now_seconds() * 1e6);
        if (sp.temperature > 0)
            fprintf(stderr, "msrnn %s: seed %llu\n", cmd, (unsigned long long)sp.seed);
    }

    msrnn_model *m;
    msrnn_session *s = NULL; /* opened once the prompt's length is known */
    if ((rc = open_model(cmd, &o, &m))) {
        free(owned);
        return rc;
    }
    const msrnn_model_info *in = msrnn_model_get_info(m);
    int n_ctx = o.sp.n_ctx > 0 ? o.sp.n_ctx : in->n_ctx;
    size_t cap = msrnn_tokenize_max(m, plen), n_prompt = 0;
    int32_t *ids = malloc((cap + (size_t)n_predict) * sizeof *ids);
    msrnn_sampler *smp = NULL;
    char piece[256];
    if (!ids) {
        fprintf(stderr, "msrnn %s: out of memory\n", cmd);
        rc = 1;
        goto done;
    }
    if (msrnn_tokenize(m, prompt, plen, 1, ids, cap, &n_prompt) != MSRNN_OK ||
        msrnn_sampler_open(&sp, in->n_vocab, &smp) != MSRNN_OK) {
        fprintf(stderr, "msrnn %s: %s\n", cmd, msrnn_last_error());
        rc = 1;
        goto done;
    }
    const int bounded = msrnn_memory_is_bounded(m, &o.sp); /* infini, dijiang: even "full" */
    /* the last sampled token is never fed back: n_prompt + n_predict - 1 positions are evaluated */
    if (!bounded && (int)n_prompt + (n_predict > 0 ? n_predict - 1 : 0) > n_ctx) {
        fprintf(stderr,
                "msrnn %s: prompt (%zu tokens) + %d to generate exceed the context of %d "
                "(use -c to raise it or -n to lower it)\n",
                cmd, n_prompt, n_predict, n_ctx);
        rc = 1;
        goto done;
    }
    /* the session holds at most the tokens this run feeds it: a larger -c or --kv-size would only
     * allocate memory that is never used */
    run_options_cap(cmd, &o, (int64_t)n_prompt + (n_predict > 0 ? n_predict - 1 : 0));
    if ((rc = open_session(cmd, &o, m, &s))) goto done;
    /* the text goes out as valid UTF-8: a character whose bytes come in several byte tokens is
     * written once whole, and bytes that make no character are written as U+FFFD */
    utf8_stream out = {0};
    if (!json) {
        utf8_stream_write(&out, stdout, prompt, plen);
        fflush(stdout);
    }
    double t0 = now_seconds();
    if (msrnn_session_eval(s, ids, (int)n_prompt, NULL) != MSRNN_OK) {
        fprintf(stderr, "msrnn %s: %s\n", cmd, msrnn_last_error());
        rc = 1;
        goto done;
    }
    double t1 = now_seconds();
    int n_gen = 0;
    while (n_gen < n_predict) {
        const float *logits = msrnn_session_logits(s);
        for (int v = 0; v < in->n_vocab; v++) /* n_vocab floats: nothing beside the forward pass */
            if (!isfinite(logits[v])) {
                fprintf(stderr,
                        "%smsrnn %s: non-finite logits at token %zu (logit %d is %g): the model's "
                        "weights hold NaN or infinity\n",
                        json ? "" : "\n", cmd, n_prompt + (size_t)n_gen, v, logits[v]);
                rc = 1;
                goto done;
            }
        int32_t id = msrnn_sample(smp, logits, ids, (int)n_prompt + n_gen);
        ids[n_prompt + n_gen++] = id;
        if (id == in->eos_id && !ignore_eos) break;
        if (!json) {
            size_t len = msrnn_token_to_text(m, ids[n_prompt + n_gen - 2], id, piece, sizeof piece);
            utf8_stream_write(&out, stdout, piece, len < sizeof piece ? len : sizeof piece);
            fflush(stdout);
        }
        if (n_gen == n_predict) break;
        if (msrnn_session_eval(s, &id, 1, NULL) != MSRNN_OK) {
            fprintf(stderr, "msrnn %s: %s\n", cmd, msrnn_last_error());
            rc = 1;
            goto done;
        }
    }
    double t2 = now_seconds();
    /* generation speed counts the evaluations of generated tokens (the last sampled one is not fed)
     */
    int n_fed = n_gen > 0 ? n_gen - 1 : 0;
    double pp_tps = n_prompt / (t1 - t0), tg_tps = n_fed > 0 ? n_fed / (t2 - t1) : 0;
    if (json) {
        printf("{\"prompt_ids\": [");
        for (size_t i = 0; i < n_prompt; i++) printf("%s%d", i ? ", " : "", ids[i]);
        printf("], \"ids\": [");
        for (int i = 0; i < n_gen; i++) printf("%s%d", i ? ", " : "", ids[n_prompt + i]);
        printf("], \"text\": ");
        /* the generated text, decoded as a whole (byte tokens joined before escaping) */
        size_t tcap = (size_t)n_gen * 64 + 1, tlen = 0;
        char *text = malloc(tcap);
        for (int i = 0; text && i < n_gen; i++) {
            int32_t id = ids[n_prompt + i];
            if (id == in->eos_id) continue;
            tlen += msrnn_token_to_text(m, ids[n_prompt + i - 1], id, text + tlen, tcap - tlen);
            if (tlen > tcap) tlen = tcap;
        }
        json_string(stdout, text ? text : "", text ? tlen : 0);
        free(text);
        printf(", \"prompt_tps\": %.3f, \"gen_tps\": %.3f}\n", pp_tps, tg_tps);
    } else {
        utf8_stream_end(&out, stdout);
        printf("\n");
    }
    fprintf(stderr,
            "msrnn %s: prompt %zu tokens, %.1f tok/s; generated %d tokens, %.1f tok/s; session "
            "memory %zu bytes\n",
            cmd, n_prompt, pp_tps, n_gen, tg_tps, msrnn_session_bytes(s));
done:
    msrnn_sampler_close(smp);
    free(ids);
    free(owned);
    msrnn_session_close(s);
    msrnn_model_close(m);
    return rc;
}
