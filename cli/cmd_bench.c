/* cmd_bench.c — `msrnn bench`, measured like llama-bench: pp = one batch of P prompt tokens from an
 * empty cache, tg = N tokens generated one at a time from an empty cache; a warm-up run first, then
 * the mean and standard deviation of tokens/s over r repetitions. Token ids are random (fixed
 * seed): speed does not depend on them. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "common.h"

static const cli_option options[] = {
    {"-p", "--n-prompt", "N", .help = "prompt tokens for pp (default 512; 0 = skip)"},
    {"-n", "--n-gen", "N", .help = "generated tokens for tg (default 128; 0 = skip)"},
    {"-r", "--repetitions", "N", .help = "(default 5)"},
    {NULL, "--depth", "D1,D2,...",
     .help = "generation speed after a context of D tokens (tg N at each depth),\n"
             "with the memory's bytes there: flat for bounded memories"},
    {NULL, "--json", NULL, .help = "print the results as one JSON object instead of a table",
     .layout = CLI_SYNOPSIS},
};
static const cli_table table = {.column = 24, CLI_OPTIONS(options)};

const cli_command bench_command = {
    .name = "bench",
    .summary = "measure prompt-processing and generation speed",
    .synopsis = "msrnn bench -m FILE [-p 512] [-n 128] [-r 5] [options] [--json]",
    .tables = {&RUN_OPTIONS, &table},
};

static void usage(FILE *f) { cli_help(f, &bench_command); }

static void mean_sd(const double *x, int n, double *mean, double *sd) {
    double s = 0, ss = 0;
    for (int i = 0; i < n; i++) s += x[i];
    *mean = s / n;
    for (int i = 0; i < n; i++) ss += (x[i] - *mean) * (x[i] - *mean);
    *sd = n > 1 ? sqrt(ss / (n - 1)) : 0;
}

static void random_tokens(int32_t *tok, int n, int n_vocab, uint64_t seed) {
    for (int i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        tok[i] = (int32_t)((seed >> 33) % (uint64_t)n_vocab);
    }
}

/* Generation tokens/s after a context of each depth: fill the memory with `depth` tokens (in
 * batches, the memory's own policy applied), then time n_gen single-token steps; r repetitions of
 * the timed part at each depth. */
static int bench_depths(run_options *o, const int *depths, int n_depths, int n_gen, int reps,
                        int json) {
    const char *cmd = "bench";
    int max_depth = 0;
    for (int i = 0; i < n_depths; i++) max_depth = depths[i] > max_depth ? depths[i] : max_depth;
    if (o->sp.n_ctx == 0) o->sp.n_ctx = max_depth + n_gen * reps + 1;
    run_options_cap(cmd, o, (int64_t)max_depth + (int64_t)n_gen * reps + 1);
    msrnn_model *m;
    msrnn_session *s;
    int rc = open_model_session(cmd, o, &m, &s);
    if (rc) return rc;
    const msrnn_model_info *in = msrnn_model_get_info(m);
    int32_t *tok = malloc(((size_t)max_depth + (size_t)n_gen * reps + 1) * sizeof *tok);
    double *tg = calloc((size_t)reps, sizeof *tg);
    if (!tok || !tg) {
        fprintf(stderr, "msrnn %s: out of memory\n", cmd);
        rc = 1;
        goto done;
    }
    random_tokens(tok, max_depth + n_gen * reps + 1, in->n_vocab, 7);
    /* a model whose architecture brings its own memory (infini) is named by it */
    const char *mem = strcmp(in->architecture, "llama") ? in->architecture
                      : o->sp.memory                    ? o->sp.memory
                                                        : "full";
    if (json) {
        printf("{\"model\": ");
        json_string(stdout, o->model_path, strlen(o->model_path));
        printf(", \"memory\": \"%s\", \"kv_size\": %d, \"n_gen\": %d, \"depths\": [", mem,
               o->sp.kv_size, n_gen);
    } else
        printf("| memory | depth | fill s | tg%d t/s | memory bytes | session bytes |\n"
               "|---|---:|---:|---:|---:|---:|\n",
               n_gen);
    for (int di = 0; di < n_depths; di++) {
        msrnn_session_reset(s);
        double t0 = now_seconds();
        if (depths[di] > 0 && msrnn_session_eval(s, tok, depths[di], NULL) != MSRNN_OK) goto fail;
        double fill = now_seconds() - t0;
        size_t bytes = msrnn_session_memory_bytes(s);
        int at = depths[di];
        for (int r = 0; r < reps; r++) {
            double t1 = now_seconds();
            for (int i = 0; i < n_gen; i++, at++)
                if (msrnn_session_eval(s, &tok[at], 1, NULL) != MSRNN_OK) goto fail;
            tg[r] = n_gen / (now_seconds() - t1);
        }
        double mean, sd;
        mean_sd(tg, reps, &mean, &sd);
        if (json)
            printf("%s{\"depth\": %d, \"fill_s\": %.3f, \"tg_tps\": %.3f, \"tg_sd\": %.3f, "
                   "\"memory_bytes\": %zu, \"session_bytes\": %zu}",
                   di ? ", " : "", depths[di], fill, mean, sd, bytes, msrnn_session_bytes(s));
        else
            printf("| %s%s%.0d | %d | %.2f | %.2f ± %.2f | %zu | %zu |\n", mem,
                   o->sp.kv_size ? " k=" : "", o->sp.kv_size, depths[di], fill, mean, sd, bytes,
                   msrnn_session_bytes(s));
        fflush(stdout);
    }
    if (json) printf("]}\n");
    goto done;
fail:
    fprintf(stderr, "msrnn %s: %s\n", cmd, msrnn_last_error());
    if (json) printf("], \"error\": true}\n"); /* keep stdout valid JSON */
    rc = 1;
done:
    free(tok);
    free(tg);
    msrnn_session_close(s);
    msrnn_model_close(m);
    return rc;
}

int cmd_bench(int argc, char **argv) {
    arg_set_command(&bench_command);
    const char *cmd = "bench";
    run_options o;
    run_options_init(&o);
    int n_prompt = 512, n_gen = 128, reps = 5, json = 0, rc = 0, n_depths = 0, depths[16];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
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
        if (!(v = arg_value(cmd, argc, argv, i++))) return 2;
        if (!strcmp(a, "-p") || !strcmp(a, "--n-prompt"))
            rc = arg_int(cmd, a, v, 0, 1 << 20, &n_prompt);
        else if (!strcmp(a, "-n") || !strcmp(a, "--n-gen"))
            rc = arg_int(cmd, a, v, 0, 1 << 20, &n_gen);
        else if (!strcmp(a, "-r") || !strcmp(a, "--repetitions"))
            rc = arg_int(cmd, a, v, 1, 1000, &reps);
        else if (!strcmp(a, "--depth"))
            rc = arg_int_list(cmd, a, v, 0, 1 << 26, depths, 16, &n_depths);
        else {
            arg_unknown(cmd, a);
            return 2;
        }
        if (rc) return rc;
    }
    if (n_depths == 0 && n_prompt == 0 && n_gen == 0) {
        fprintf(stderr, "msrnn %s: -p and -n are both 0: nothing to measure\n", cmd);
        return 2;
    }
    if (n_depths > 0 && n_gen == 0) {
        fprintf(stderr, "msrnn %s: --depth measures generation: -n must be at least 1\n", cmd);
        return 2;
    }
    if (n_depths > 0) return bench_depths(&o, depths, n_depths, n_gen, reps, json);
    if (o.sp.n_ctx == 0) o.sp.n_ctx = (n_prompt > n_gen ? n_prompt : n_gen) + 1;
    run_options_cap(cmd, &o, (int64_t)(n_prompt > n_gen ? n_prompt : n_gen) + 1);
    if (o.sp.n_batch < n_prompt && o.sp.n_batch == 512) /* pp in one batch, as llama-bench */
        o.sp.n_batch = n_prompt < (1 << 16) ? n_prompt : (1 << 16);
    msrnn_model *m;
    msrnn_session *s;
    if ((rc = open_model_session(cmd, &o, &m, &s))) return rc;
    const msrnn_model_info *in = msrnn_model_get_info(m);
    int n_tok = n_prompt > n_gen ? n_prompt : n_gen;
    int32_t *tok = malloc((size_t)(n_tok > 0 ? n_tok : 1) * sizeof *tok);
    double *pp = calloc((size_t)reps, sizeof *pp), *tg = calloc((size_t)reps, sizeof *tg);
    if (!tok || !pp || !tg) {
        fprintf(stderr, "msrnn %s: out of memory\n", cmd);
        rc = 1;
        goto done;
    }
    random_tokens(tok, n_tok, in->n_vocab, 42);
    for (int r = -1; r < reps; r++) { /* r = -1: warm-up */
        if (n_prompt > 0) {
            msrnn_session_reset(s);
            double t0 = now_seconds();
            if (msrnn_session_eval(s, tok, n_prompt, NULL) != MSRNN_OK) goto fail;
            if (r >= 0) pp[r] = n_prompt / (now_seconds() - t0);
        }
        if (n_gen > 0) {
            msrnn_session_reset(s);
            int n = r < 0 ? (n_gen < 8 ? n_gen : 8) : n_gen;
            double t0 = now_seconds();
            for (int i = 0; i < n; i++)
                if (msrnn_session_eval(s, &tok[i], 1, NULL) != MSRNN_OK) goto fail;
            if (r >= 0) tg[r] = n / (now_seconds() - t0);
        }
    }
    double pp_m = 0, pp_sd = 0, tg_m = 0, tg_sd = 0;
    if (n_prompt > 0) mean_sd(pp, reps, &pp_m, &pp_sd);
    if (n_gen > 0) mean_sd(tg, reps, &tg_m, &tg_sd);
    if (json) {
        printf("{\"model\": ");
        json_string(stdout, o.model_path, strlen(o.model_path));
        printf(", \"n_params\": %llu, \"model_bytes\": %llu, \"threads\": %d, \"n_prompt\": %d, "
               "\"n_gen\": %d, \"repetitions\": %d, \"pp_tps\": %.3f, \"pp_sd\": %.3f, "
               "\"tg_tps\": %.3f, \"tg_sd\": %.3f}\n",
               (unsigned long long)in->n_params, (unsigned long long)in->weight_bytes,
               o.sp.n_threads, n_prompt, n_gen, reps, pp_m, pp_sd, tg_m, tg_sd);
    } else {
        printf("| model | size | params | threads | test | t/s |\n|---|---:|---:|---:|---|---:|\n");
        if (n_prompt > 0)
            printf("| %s | %.1f MiB | %.1f M | %d | pp%d | %.2f ± %.2f |\n", o.model_path,
                   in->weight_bytes / 1048576.0, in->n_params / 1e6, o.sp.n_threads, n_prompt, pp_m,
                   pp_sd);
        if (n_gen > 0)
            printf("| %s | %.1f MiB | %.1f M | %d | tg%d | %.2f ± %.2f |\n", o.model_path,
                   in->weight_bytes / 1048576.0, in->n_params / 1e6, o.sp.n_threads, n_gen, tg_m,
                   tg_sd);
    }
    goto done;
fail:
    fprintf(stderr, "msrnn %s: %s\n", cmd, msrnn_last_error());
    rc = 1;
done:
    free(tok);
    free(pp);
    free(tg);
    msrnn_session_close(s);
    msrnn_model_close(m);
    return rc;
}
