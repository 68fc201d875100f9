/* cmd_perplexity.c — `msrnn perplexity`: long-document perplexity with the TOVA paper's protocol
 * (METHODS.md §1), run by the library (src/eval/perplexity.h: chunks of C-1 tokens, each from an
 * empty memory as BOS + chunk, every text token scored once; perplexity and bits per byte). This
 * file reads the texts, prints the progress line and the results, and runs --sweep: every policy
 * at every budget plus the full cache, printed as the paper's table, written as JSON and plotted.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "base/atomic_file.h"
#include "cli.h"
#include "common.h"
#include "eval/perplexity.h"
#include "eval/plot_svg.h"
#include "train/manifest.h"

#define MAX_FILES 100000 /* texts in one run */
#define MAX_SIZES 16
#define MAX_RESULTS 64
#define POLICIES_MAX 127 /* bytes of the --policies list */

/* 1 when the comma-separated list holds item */
static int list_has(const char *list, const char *item) {
    const size_t n = strlen(item);
    for (const char *p = list; p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
        if (!strncmp(p, item, n) && (p[n] == ',' || p[n] == 0)) return 1;
    return 0;
}

static const cli_option options[] = {
    {"-f", "--file", "TEXT", .help = "a text to score (repeatable)"},
    {NULL, "--manifest", "TSV",
     .help = "with --split: score every file of a split of a manifest\n"
             "(tab-separated, columns 'file' and 'split'), before any -f"},
    {NULL, "--split", "NAME", .help = "the manifest rows to score, e.g. validation or test"},
    {NULL, "--ctx", "C", .help = "chunk length in tokens, BOS included (default: the model's)"},
    {NULL, "--max-chunks", "N", .help = "score only the first N chunks of each text"},
    {NULL, "--sweep", "K1,K2,...",
     .help = "every policy at every size, plus full: the TOVA paper's table"},
    {NULL, "--policies", "P1,P2,...",
     .help = "policies of the sweep (default window,sink,h2o,tova,merge)"},
    {NULL, "--plot", "OUT.svg", .help = "with --sweep: perplexity against cache size"},
    {NULL, "--out", "OUT.json", .help = "with --sweep: write the results as JSON"},
    {NULL, "--json", NULL, .help = "print one JSON object on stdout"},
};
static const cli_table table = {.column = 24, CLI_OPTIONS(options)};

const cli_command perplexity_command = {
    .name = "perplexity",
    .summary = "long-document perplexity under a memory policy (--sweep: all)",
    .synopsis = "msrnn perplexity -m FILE {-f TEXT ... | --manifest TSV --split NAME} [options]",
    .tables = {&RUN_OPTIONS, &table},
};

static void usage(FILE *f) { cli_help(f, &perplexity_command); }

typedef struct {
    char policy[16];
    int kv_size;
    ppl_result r;
    double *chunk_nll; /* (n_chunks) each chunk's NLL sum, for paired comparisons */
    uint32_t *chunk_tokens;
    size_t n_chunks;
} result;

static void result_free(result *res) {
    free(res->chunk_nll), free(res->chunk_tokens);
    res->chunk_nll = NULL, res->chunk_tokens = NULL;
}

/* The progress line (stderr), rewritten after each batch of the first worker. */
static void show_progress(void *user, const ppl_progress *p) {
    const result *res = user;
    const double tps = p->done / (p->seconds > 0 ? p->seconds : 1e-9);
    char ppl[32] = "-"; /* over the chunks finished so far */
    if (p->n_finished) snprintf(ppl, sizeof ppl, "%.3f", exp(p->nll_finished / p->n_finished));
    fprintf(stderr, "\r%-9s k=%-5d %zu/%zu tokens  %.0f tok/s  ETA %.0f s  ppl %s   ", res->policy,
            res->kv_size, p->done, p->total, tps, (p->total - p->done) / tps, ppl);
}

/* Score the texts under res's memory (policy, size) with the other session options of o. */
static int run_config(const char *cmd, msrnn_model *m, const run_options *o, const ppl_text *texts,
                      int n_texts, int ctx, int max_chunks, result *res) {
    ppl_params p = {ctx, max_chunks, o->sp, show_progress, res, NULL, NULL};
    result_free(res);
    res->n_chunks = perplexity_n_chunks(texts, (size_t)n_texts, ctx, max_chunks);
    res->chunk_nll = calloc(res->n_chunks + 1, sizeof *res->chunk_nll);
    res->chunk_tokens = calloc(res->n_chunks + 1, sizeof *res->chunk_tokens);
    if (!res->chunk_nll || !res->chunk_tokens) {
        fprintf(stderr, "msrnn %s: out of memory for %zu chunks\n", cmd, res->n_chunks);
        return 1;
    }
    p.chunk_nll = res->chunk_nll, p.chunk_tokens = res->chunk_tokens;
    p.session.memory = res->policy;
    p.session.kv_size = res->kv_size;
    /* a chunk starts from an empty memory and holds ctx tokens: a larger budget is never used */
    const int least = kv_size_min(&p.session, res->policy);
    const int most = ctx > least ? ctx : least;
    if (strcmp(res->policy, "full") && p.session.kv_size > most) {
        fprintf(stderr,
                "msrnn %s: note: --kv-size %d is more than the %d tokens of a chunk; the cache "
                "is sized for %d\n",
                cmd, p.session.kv_size, ctx, most);
        p.session.kv_size = most;
    }
    size_t need = 0;
    int workers = 0;
    msrnn_status st = perplexity_bytes(m, texts, (size_t)n_texts, &p, &need, &workers);
    if (st == MSRNN_OK) {
        char what[160];
        snprintf(what, sizeof what, "perplexity with %s%s%.0d (%d session%s of %d-token chunks)",
                 res->policy, res->kv_size ? " k=" : "", p.session.kv_size, workers,
                 workers == 1 ? "" : "s", ctx);
        if (memory_check(cmd, need, o->max_memory, what,
                         strcmp(res->policy, "full")
                             ? "--kv-size, -b/--batch-size or -t/--threads (one session each)"
                             : "-c/--ctx-size, -b/--batch-size or -t/--threads (one session each)"))
            return 1;
        st = perplexity_run(m, texts, (size_t)n_texts, &p, &res->r);
    }
    fprintf(stderr, "\n"); /* ends the progress line */
    if (st != MSRNN_OK) {
        fprintf(stderr, "msrnn %s: %s\n", cmd, msrnn_last_error());
        return exit_status(st);
    }
    return 0;
}

/* What a result is called: the policy, or the architecture whose own memory it is (infini,
 * dijiang: "full" is what such a session is opened with). */
static const char *shown(const msrnn_model *m, const char *policy) {
    const char *arch = msrnn_model_get_info(m)->architecture;
    return !strcmp(policy, "full") && strcmp(arch, "llama") ? arch : policy;
}

static void print_result_json(FILE *f, const msrnn_model *m, const result *res) {
    const ppl_result *r = &res->r;
    fprintf(f,
            "{\"policy\": \"%s\", \"kv_size\": %d, \"ppl\": %.6f, \"nll_mean\": %.8f, "
            "\"bits_per_byte\": %.6f, \"n_tokens\": %zu, \"tps\": %.2f, \"kv_bytes\": %zu, "
            "\"allocated_bytes\": %zu, \"chunk_nll\": [",
            shown(m, res->policy), res->kv_size, r->ppl, r->nll_mean, r->bits_per_byte, r->n_scored,
            r->tokens_per_s, r->memory_bytes, r->allocated_bytes);
    for (size_t c = 0; c < res->n_chunks; c++)
        fprintf(f, "%s%.6f", c ? ", " : "", res->chunk_nll[c]);
    fprintf(f, "], \"chunk_tokens\": [");
    for (size_t c = 0; c < res->n_chunks; c++)
        fprintf(f, "%s%u", c ? ", " : "", (unsigned)res->chunk_tokens[c]);
    fprintf(f, "]}");
}

/* Perplexity against cache size: log x axis, one line per policy (res holds n_sizes results per
 * policy, policy by policy), the full cache a dashed line, values above 4x full clipped. */
static int write_plot(const char *cmd, const char *path, const result *res, int n_res,
                      const result *full, const int *sizes, int n_sizes, const char *title) {
    double xs[MAX_SIZES], ys[MAX_RESULTS];
    plot_series series[MAX_RESULTS];
    int n_series = 0;
    for (int k = 0; k < n_sizes; k++) xs[k] = sizes[k];
    for (int i = 0; i < n_res; i++) ys[i] = res[i].r.ppl;
    for (int i = 0; i + n_sizes <= n_res; i += n_sizes)
        series[n_series++] = (plot_series){res[i].policy, xs, ys + i, n_sizes, NULL, 2, 1};
    char full_label[64];
    snprintf(full_label, sizeof full_label, "full %.2f", full->r.ppl);
    const double pad = exp2(0.3); /* room either side of the smallest and largest size */
    const plot_params pp = {.title = title,
                            .x_label = "cache size k (tokens per layer, log scale)",
                            .y_label = "perplexity",
                            .x_log = 1,
                            .y_log = 1,
                            .x_min = sizes[0] / pad,
                            .x_max = sizes[n_sizes - 1] * pad,
                            .x_ticks = xs,
                            .n_x_ticks = n_sizes,
                            .x_symbol = "k",
                            .y_clip = full->r.ppl * 4, /* exploding windows */
                            .ref_label = full_label,
                            .ref_y = full->r.ppl};
    if (plot_svg_write(path, &pp, series, n_series) != MSRNN_OK) {
        fprintf(stderr, "msrnn %s: %s\n", cmd, msrnn_last_error());
        return 1;
    }
    return 0;
}

/* given: room for argc paths (the -f values) */
static int perplexity(int argc, char **argv, const char **given) {
    const char *cmd = "perplexity", *plot = NULL, *out_json = NULL;
    const char *policies = "window,sink,h2o,tova,merge", *manifest = NULL, *split = NULL;
    const char *policies_flag = NULL;
    int n_files = 0, ctx = 0, ctx_given = 0, max_chunks = 0, json = 0, rc = 0, n_sizes = 0,
        sizes[MAX_SIZES];
    run_options o;
    run_options_init(&o);
    result single = {.policy = "full"};
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
        if (!strcmp(a, "-f") || !strcmp(a, "--file")) {
            if (n_files == MAX_FILES) {
                fprintf(stderr, "msrnn %s: at most %d files\n", cmd, MAX_FILES);
                return 2;
            }
            given[n_files++] = v;
        } else if (!strcmp(a, "--manifest"))
            manifest = v;
        else if (!strcmp(a, "--split"))
            split = v;
        else if (!strcmp(a, "--ctx")) {
            rc = arg_int(cmd, a, v, 2, 1 << 24, &ctx);
            ctx_given = 1;
        } else if (!strcmp(a, "--max-chunks"))
            rc = arg_int(cmd, a, v, 1, 1 << 30, &max_chunks);
        else if (!strcmp(a, "--policies")) {
            policies = v;
            policies_flag = a;
            if ((rc = arg_list_check(cmd, a, v, POLICIES_MAX))) return rc;
        } else if (!strcmp(a, "--plot"))
            plot = v;
        else if (!strcmp(a, "--out"))
            out_json = v;
        else if (!strcmp(a, "--sweep")) {
            if ((rc = arg_int_list(cmd, a, v, 1, 1 << 24, sizes, MAX_SIZES, &n_sizes))) return rc;
            for (int k = 1; k < n_sizes; k++)
                if (sizes[k] <= sizes[k - 1]) {
                    fprintf(stderr, "msrnn %s: --sweep sizes must increase\n", cmd);
                    return 2;
                }
        } else {
            arg_unknown(cmd, a);
            return 2;
        }
        if (rc) return rc;
    }
    snprintf(single.policy, sizeof single.policy, "%s", o.sp.memory ? o.sp.memory : "full");
    single.kv_size = o.sp.kv_size;
    if (!o.model_path || (n_files == 0 && !manifest && !split)) {
        fprintf(stderr,
                "msrnn %s: needs -m FILE and at least one -f TEXT (or --manifest TSV "
                "--split NAME)\n",
                cmd);
        return 2;
    }
    if ((plot || out_json) && n_sizes == 0) {
        fprintf(stderr, "msrnn %s: --plot and --out go with --sweep\n", cmd);
        return 2;
    }
    if (o.ctx_flag) { /* -c is the chunk length too, as in llama.cpp's perplexity */
        if (ctx_given && ctx != o.sp.n_ctx) {
            fprintf(stderr, "msrnn %s: %s %d and --ctx %d disagree (both set the chunk length)\n",
                    cmd, o.ctx_flag, o.sp.n_ctx, ctx);
            return 2;
        }
        if (o.sp.n_ctx < 2) {
            fprintf(stderr, "msrnn %s: %s %d: a chunk needs at least 2 tokens\n", cmd, o.ctx_flag,
                    o.sp.n_ctx);
            return 2;
        }
        ctx = o.sp.n_ctx;
    }
    if (policies_flag && n_sizes == 0) {
        fprintf(stderr, "msrnn %s: --policies goes with --sweep\n", cmd);
        return 2;
    }
    if (n_sizes > 0 && (o.kv_flag || o.kv_size_flag)) {
        fprintf(
            stderr,
            "msrnn %s: %s does not apply with --sweep, which runs every policy of --policies at "
            "every size\n",
            cmd, o.kv_flag ? o.kv_flag : o.kv_size_flag);
        return 2;
    }
    const int merges = list_has(policies, "merge") || list_has(policies, "merge-var") ||
                       list_has(policies, "merge-clusters");
    if (n_sizes > 0 && o.kv_sinks_flag && !list_has(policies, "sink") && !merges) {
        fprintf(stderr,
                "msrnn %s: --kv-sinks applies to the sink and merge* policies, which --policies "
                "lacks\n",
                cmd);
        return 2;
    }
    if (n_sizes > 0 && o.kv_bias_flag && !merges) {
        fprintf(stderr,
                "msrnn %s: --kv-merge-bias applies to the merge* policies, which --policies "
                "lacks\n",
                cmd);
        return 2;
    }
    if (n_sizes > 0 && o.kv_clusters_flag && !list_has(policies, "merge-clusters")) {
        fprintf(stderr,
                "msrnn %s: --kv-clusters applies to the merge-clusters policy, which --policies "
                "lacks\n",
                cmd);
        return 2;
    }
    if (n_sizes == 0 && (rc = run_options_check(cmd, &o))) return rc;
    if (n_sizes == 0 && strcmp(single.policy, "full") && single.kv_size == 0) {
        fprintf(stderr, "msrnn %s: --kv %s needs --kv-size K\n", cmd, single.policy);
        return 2;
    }
    char **files = NULL; /* the split's files, then the -f files */
    size_t n_paths = 0;
    if ((rc = corpus_inputs(cmd, manifest, split, given, (size_t)n_files, &files, &n_paths)))
        return rc;
    if (n_paths > MAX_FILES) {
        fprintf(stderr, "msrnn %s: at most %d texts (got %zu)\n", cmd, MAX_FILES, n_paths);
        corpus_paths_free(files, n_paths);
        return 2;
    }
    const file_arg ins[] = {{"-m", o.model_path}, {"--manifest", manifest}},
                   outs[] = {{"--out", out_json}, {"--plot", plot}};
    if ((rc = files_check_corpus(cmd, ins, 2, files, n_paths, n_paths - (size_t)n_files, "-f", outs,
                                 2))) {
        corpus_paths_free(files, n_paths);
        return rc;
    }
    n_files = (int)n_paths;
    msrnn_model *m;
    if (msrnn_model_open(o.model_path, &m) != MSRNN_OK) {
        fprintf(stderr, "msrnn %s: %s\n", cmd, msrnn_last_error());
        corpus_paths_free(files, n_paths);
        return 1;
    }
    if (check_unused_tensors(cmd, m, o.model_path, o.strict)) {
        msrnn_model_close(m);
        corpus_paths_free(files, n_paths);
        return 1;
    }
    const msrnn_model_info *in = msrnn_model_get_info(m);
    if (ctx == 0) ctx = o.sp.n_ctx > 0 ? o.sp.n_ctx : in->n_ctx;
    if (ctx > in->n_ctx)
        fprintf(stderr,
                "msrnn %s: warning: chunks of %d tokens run past the model's trained context of "
                "%d (what bounded memories are for; the full cache is out of its depth there)\n",
                cmd, ctx, in->n_ctx);
    ppl_text *texts = calloc((size_t)n_files, sizeof *texts);
    if (!texts) {
        fprintf(stderr, "msrnn %s: out of memory\n", cmd);
        rc = 1;
    }
    for (int f = 0; f < n_files && !rc; f++) {
        size_t len;
        char *buf = read_text_file(cmd, files[f], &len);
        if (!buf) {
            rc = 1;
            break;
        }
        if (perplexity_text_tokenize(m, buf, len, &texts[f]) != MSRNN_OK) {
            fprintf(stderr, "msrnn %s: %s: %s\n", cmd, files[f], msrnn_last_error());
            rc = 1;
        }
        free(buf);
    }
    /* a sweep's (policy, size) pairs are checked before anything runs */
    result res[MAX_RESULTS];
    int n_res = 0, n_policies = 0;
    if (!rc && n_sizes > 0) {
        char pbuf[POLICIES_MAX + 1];
        snprintf(pbuf, sizeof pbuf, "%s", policies);
        for (char *pol = strtok(pbuf, ","); pol && !rc; pol = strtok(NULL, ","), n_policies++)
            for (int k = 0; k < n_sizes && !rc; k++) {
                msrnn_session_params sp = o.sp;
                sp.memory = pol;
                sp.kv_size = sizes[k];
                size_t probe_bytes = 0;
                msrnn_status st = MSRNN_OK;
                if (n_res == MAX_RESULTS) {
                    fprintf(stderr, "msrnn %s: a sweep runs at most %d (policy, size) pairs\n", cmd,
                            MAX_RESULTS);
                    rc = 2;
                } else if (strlen(pol) >= sizeof res[0].policy) {
                    fprintf(stderr, "msrnn %s: --policies: '%s' is not a memory\n", cmd, pol);
                    rc = 2;
                } else if ((st = msrnn_session_bytes_needed(m, &sp, &probe_bytes)) !=
                           MSRNN_OK) { /* the parameters' checks, without allocating */
                    fprintf(stderr, "msrnn %s: --sweep: %s k=%d: %s\n", cmd, pol, sizes[k],
                            msrnn_last_error());
                    rc = exit_status(st);
                } else {
                    memset(&res[n_res], 0, sizeof res[n_res]);
                    snprintf(res[n_res].policy, sizeof res[n_res].policy, "%s", pol);
                    res[n_res++].kv_size = sizes[k];
                }
            }
    }
    if (!rc && n_sizes == 0) {
        rc = run_config(cmd, m, &o, texts, n_files, ctx, max_chunks, &single);
        if (!rc && json) {
            print_result_json(stdout, m, &single);
            printf("\n");
        } else if (!rc) {
            printf("%s%s%.0d: ppl %.4f  nll %.5f  bits/byte %.4f  (%zu tokens, %.0f tok/s, memory "
                   "%zu bytes held of %zu allocated)\n",
                   shown(m, single.policy), single.kv_size ? " k=" : "", single.kv_size,
                   single.r.ppl, single.r.nll_mean, single.r.bits_per_byte, single.r.n_scored,
                   single.r.tokens_per_s, single.r.memory_bytes, single.r.allocated_bytes);
        }
    } else if (!rc) {
        result full = {.policy = "full"};
        rc = run_config(cmd, m, &o, texts, n_files, ctx, max_chunks, &full);
        for (int i = 0; i < n_res && !rc; i++)
            rc = run_config(cmd, m, &o, texts, n_files, ctx, max_chunks, &res[i]);
        if (!rc) {
            FILE *tf = json ? stderr : stdout;
            fprintf(
                tf,
                "\nperplexity, %d-token chunks, %zu tokens scored (full cache: %.4f)\n| policy |",
                ctx, full.r.n_scored, full.r.ppl);
            for (int k = 0; k < n_sizes; k++) fprintf(tf, " k=%d |", sizes[k]);
            fprintf(tf, " full |\n|---|");
            for (int k = 0; k <= n_sizes; k++) fprintf(tf, "---:|");
            fprintf(tf, "\n");
            for (int i = 0; i + n_sizes <= n_res; i += n_sizes) { /* one row per policy */
                fprintf(tf, "| %s |", res[i].policy);
                for (int k = 0; k < n_sizes; k++) fprintf(tf, " %.3f |", res[i + k].r.ppl);
                fprintf(tf, " %.3f |\n", full.r.ppl);
            }
            atomic_file *jf = NULL; /* --out */
            if (out_json && output_open(cmd, out_json, &jf)) rc = 1;
            for (int pass = 0; pass < 2; pass++) {
                FILE *f = pass == 0 ? (json ? stdout : NULL) : jf ? atomic_file_stream(jf) : NULL;
                if (!f) continue;
                fprintf(f, "{\"model\": ");
                json_string(f, o.model_path, strlen(o.model_path));
                fprintf(f, ", \"ctx\": %d, \"max_chunks\": %d, ", ctx, max_chunks);
                const float beta = o.sp.kv_merge_bias;
                if (isinf(beta)) /* JSON has no infinities */
                    fprintf(f, "\"kv_merge_bias\": \"%s\", ", beta < 0 ? "-inf" : "inf");
                else
                    fprintf(f, "\"kv_merge_bias\": %g, ", (double)beta);
                msrnn_session_params rp = o.sp; /* the resolved defaults (any memory) */
                msrnn_memory_settings ms = {0, 0, 0};
                rp.memory = "full";
                msrnn_memory_settings_of(&rp, &ms);
                fprintf(f, "\"kv_sinks\": %d, \"kv_clusters\": %d, \"files\": [", ms.sinks,
                        ms.clusters);
                for (int i = 0; i < n_files; i++) {
                    fprintf(f, "%s", i ? ", " : "");
                    json_string(f, files[i], strlen(files[i]));
                }
                fprintf(f, "], \"full\": ");
                print_result_json(f, m, &full);
                fprintf(f, ", \"results\": [");
                for (int i = 0; i < n_res; i++) {
                    fprintf(f, "%s", i ? ", " : "");
                    print_result_json(f, m, &res[i]);
                }
                fprintf(f, "]}\n");
            }
            if (jf && output_commit(cmd, jf)) rc = 1;
            if (plot && !rc) {
                char title[256];
                const char *base = strrchr(o.model_path, '/');
                snprintf(title, sizeof title, "%s: perplexity vs KV cache size (%d-token chunks)",
                         base ? base + 1 : o.model_path, ctx);
                if (write_plot(cmd, plot, res, n_res, &full, sizes, n_sizes, title)) rc = 1;
            }
        }
        result_free(&full);
    }
    result_free(&single);
    for (int i = 0; i < n_res; i++) result_free(&res[i]);
    for (int f = 0; texts && f < n_files; f++) perplexity_text_free(&texts[f]);
    free(texts);
    corpus_paths_free(files, n_paths);
    msrnn_model_close(m);
    return rc;
}

int cmd_perplexity(int argc, char **argv) {
    arg_set_command(&perplexity_command);
    const char **given = calloc((size_t)argc, sizeof *given);
    if (!given) {
        fprintf(stderr, "msrnn perplexity: out of memory\n");
        return 1;
    }
    int rc = perplexity(argc, argv, given);
    free(given);
    return rc;
}
