/* cmd_perplexity.c — `msrnn perplexity`: long-document perplexity with the TOVA paper's protocol
 * (METHODS.md §1). Each text is tokenized whole and cut into consecutive chunks of C-1 tokens; each
 * chunk is evaluated from an empty memory as BOS + its tokens, the memory's policy applied token by
 * token (the layer-by-layer scan in the memory kinds), and every text token is scored once: the
 * mean NLL over all of them gives perplexity, and their nats over the text's bytes give bits per
 * byte.
 * --sweep runs every policy at every budget plus the full cache and prints the paper's table. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "common.h"
#include "train/data.h"

#define MAX_FILES 100000 /* texts in one run */
#define MAX_SIZES 16
#define MAX_RESULTS 64

static void usage(FILE *f) {
    fprintf(f,
            "usage: msrnn perplexity -m FILE {-f TEXT ... | --manifest TSV --split NAME} "
            "[options]\n%s",
            RUN_OPTIONS_HELP);
    fprintf(
        f, "  -f, --file TEXT       a text to score (repeatable)\n"
           "  --manifest TSV        with --split: score every file of a split of a manifest\n"
           "                        (tab-separated, columns 'file' and 'split'), before any -f\n"
           "  --split NAME          the manifest rows to score, e.g. validation or test\n"
           "  --ctx C               chunk length in tokens, BOS included (default: the model's)\n"
           "  --max-chunks N        score only the first N chunks of each text\n"
           "  --sweep K1,K2,...     every policy at every size, plus full: the TOVA paper's table\n"
           "  --policies P1,P2,...  policies of the sweep (default window,sink,h2o,tova)\n"
           "  --plot OUT.svg        with --sweep: perplexity against cache size\n"
           "  --out OUT.json        with --sweep: write the results as JSON\n"
           "  --json                print one JSON object on stdout\n");
}

typedef struct {
    int32_t *ids; /* text tokens, no BOS */
    size_t n;
    size_t bytes;
} text;

typedef struct {
    char policy[16];
    int kv_size;
    double nll_sum, bits_per_byte, ppl, tps, seconds;
    size_t n_scored, kv_bytes;
} result;

typedef struct {
    int file;
    size_t start; /* first text token of the chunk */
    int len;      /* tokens in the chunk, BOS included */
} chunk_ref;

/* -sum log softmax(logits_i)[next_i] over the rows of one batch */
static double batch_nll(const float *logits, int n, int n_vocab, const int32_t *next) {
    double nll = 0;
    for (int i = 0; i < n; i++) {
        const float *row = logits + (size_t)i * n_vocab;
        float mx = row[0];
        for (int v = 1; v < n_vocab; v++) mx = row[v] > mx ? row[v] : mx;
        double sum = 0;
        for (int v = 0; v < n_vocab; v++) sum += exp((double)row[v] - mx);
        nll += log(sum) + mx - row[next[i]];
    }
    return nll;
}

/* Score every chunk of every text under one memory configuration. Chunks are independent (each
 * starts from an empty memory), so W workers each own a single-threaded session and take chunks in
 * turn: no synchronisation inside the token scan. Per-chunk sums are added in chunk order at the
 * end, so the result does not depend on the number of workers. */
static int run_config(const char *cmd, msrnn_model *m, const run_options *o, const text *texts,
                      int n_texts, int ctx, int max_chunks, size_t total_bytes, int progress,
                      result *r) {
    const msrnn_model_info *in = msrnn_model_get_info(m);
    size_t n_chunks = 0, total = 0, all = 0;
    for (int f = 0; f < n_texts; f++) {
        size_t nc = (texts[f].n + ctx - 2) / (size_t)(ctx - 1);
        if (max_chunks > 0 && nc > (size_t)max_chunks) nc = (size_t)max_chunks;
        n_chunks += nc;
        all += texts[f].n;
    }
    chunk_ref *chunks = calloc(n_chunks ? n_chunks : 1, sizeof *chunks);
    double *chunk_nll = calloc(n_chunks ? n_chunks : 1, sizeof *chunk_nll);
    if (!chunks || !chunk_nll) {
        free(chunks), free(chunk_nll);
        fprintf(stderr, "msrnn %s: out of memory\n", cmd);
        return 1;
    }
    for (int f = 0, c = 0; f < n_texts; f++)
        for (size_t c0 = 0, ci = 0; c0 < texts[f].n; c0 += (size_t)(ctx - 1), ci++) {
            if (max_chunks > 0 && ci >= (size_t)max_chunks) break;
            size_t n = texts[f].n - c0 < (size_t)(ctx - 1) ? texts[f].n - c0 : (size_t)(ctx - 1);
            chunks[c++] = (chunk_ref){f, c0, (int)n + 1};
            total += n;
        }
    const int threads = o->sp.n_threads > 0 ? o->sp.n_threads : omp_get_num_procs();
    const int workers = (size_t)threads < n_chunks ? threads : (int)(n_chunks ? n_chunks : 1);
    msrnn_session_params sp = o->sp;
    sp.n_ctx = ctx;
    sp.memory = r->policy;
    sp.kv_size = r->kv_size;
    sp.batched_attention = 0; /* every policy through the same scan: comparisons are exact */
    sp.n_threads = workers > 1 ? 1 : threads;
    const int B = sp.n_batch > 0 && sp.n_batch < ctx ? sp.n_batch : (ctx < 512 ? ctx : 512);
    int rc = 0;
    size_t done = 0, kv_bytes = 0, scored_done = 0; /* scored_done: tokens of finished chunks */
    double nll_done = 0;                            /* their NLL, for the running perplexity */
    const double t0 = now_seconds();
#pragma omp parallel num_threads(workers) reduction(max : kv_bytes)
    {
        msrnn_session *s = NULL;
        float *logits = malloc((size_t)B * in->n_vocab * sizeof *logits);
        int32_t *chunk = malloc((size_t)ctx * sizeof *chunk);
        int failed = !logits || !chunk;
        if (failed) {
#pragma omp critical
            fprintf(stderr, "msrnn %s: out of memory\n", cmd);
        } else if (msrnn_session_open(m, &sp, &s) != MSRNN_OK) {
#pragma omp critical
            fprintf(stderr, "msrnn %s: %s\n", cmd, msrnn_last_error());
            failed = 1;
        }
        if (failed) {
#pragma omp atomic write
            rc = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (size_t c = 0; c < n_chunks; c++) {
            int stop;
#pragma omp atomic read
            stop = rc;
            if (stop || failed) continue;
            const chunk_ref *ch = &chunks[c];
            chunk[0] = in->bos_id;
            memcpy(chunk + 1, texts[ch->file].ids + ch->start,
                   (size_t)(ch->len - 1) * sizeof *chunk);
            msrnn_session_reset(s);
            double nll = 0;
            for (int b0 = 0; b0 < ch->len - 1; b0 += B) { /* the last token predicts nothing */
                const int nb = ch->len - 1 - b0 < B ? ch->len - 1 - b0 : B;
                if (msrnn_session_eval(s, chunk + b0, nb, logits) != MSRNN_OK) {
#pragma omp critical
                    fprintf(stderr, "\nmsrnn %s: %s\n", cmd, msrnn_last_error());
#pragma omp atomic write
                    rc = 1;
                    break;
                }
                nll += batch_nll(logits, nb, in->n_vocab, chunk + b0 + 1);
                size_t used = msrnn_session_memory_bytes(s);
                kv_bytes = used > kv_bytes ? used : kv_bytes;
                size_t now;
#pragma omp atomic capture
                now = done += (size_t)nb;
                if (progress && omp_get_thread_num() == 0) {
                    double el = now_seconds() - t0, tps = now / (el > 0 ? el : 1e-9);
                    double nd;
                    size_t sd;
#pragma omp atomic read
                    nd = nll_done;
#pragma omp atomic read
                    sd = scored_done;
                    char ppl[32] = "-"; /* over the chunks finished so far */
                    if (sd) snprintf(ppl, sizeof ppl, "%.3f", exp(nd / sd));
                    fprintf(stderr,
                            "\r%-9s k=%-5d %zu/%zu tokens  %.0f tok/s  ETA %.0f s  ppl %s   ",
                            r->policy, r->kv_size, now, total, tps, (total - now) / tps, ppl);
                }
            }
            chunk_nll[c] = nll;
#pragma omp atomic
            nll_done += nll;
#pragma omp atomic
            scored_done += (size_t)(ch->len - 1);
        }
        free(logits), free(chunk), msrnn_session_close(s);
    }
    if (progress) fprintf(stderr, "\n");
    if (!rc && total == 0) {
        fprintf(stderr, "msrnn %s: the texts hold no tokens to score\n", cmd);
        rc = 1;
    }
    double nll = 0;
    for (size_t c = 0; c < n_chunks; c++) nll += chunk_nll[c];
    r->kv_bytes = kv_bytes;
    r->seconds = now_seconds() - t0;
    r->n_scored = total;
    r->nll_sum = nll;
    r->ppl = exp(nll / (total ? total : 1));
    r->tps = total / (r->seconds > 0 ? r->seconds : 1e-9);
    /* bytes of text scored: all of it, unless --max-chunks cut it (then pro rata by tokens) */
    double bytes =
        total == all ? (double)total_bytes : (double)total_bytes * total / (all ? all : 1);
    r->bits_per_byte = nll / log(2.0) / (bytes > 0 ? bytes : 1);
    free(chunks), free(chunk_nll);
    return rc;
}

static void print_result_json(FILE *f, const result *r) {
    fprintf(f,
            "{\"policy\": \"%s\", \"kv_size\": %d, \"ppl\": %.6f, \"nll_mean\": %.8f, "
            "\"bits_per_byte\": %.6f, \"n_tokens\": %zu, \"tps\": %.2f, \"kv_bytes\": %zu}",
            r->policy, r->kv_size, r->ppl, r->nll_sum / (r->n_scored ? r->n_scored : 1),
            r->bits_per_byte, r->n_scored, r->tps, r->kv_bytes);
}

/* Perplexity against cache size: log-2 x axis, one polyline per policy, full cache dashed. */
static int write_plot(const char *path, const result *res, int n_res, const result *full,
                      const int *sizes, int n_sizes, const char *title) {
    char tmp[4096];
    FILE *f;
    if (atomic_create("perplexity", path, tmp, sizeof tmp, &f)) return 1;
    const double W = 720, H = 460, L = 70, R = 150, T = 40, Bm = 50;
    double ymin = full->ppl, ymax = full->ppl;
    for (int i = 0; i < n_res; i++) {
        if (res[i].ppl < ymin) ymin = res[i].ppl;
        if (res[i].ppl > ymax) ymax = res[i].ppl;
    }
    const double cap = full->ppl * 4; /* exploding windows are clipped at 4x full, and marked */
    if (ymax > cap) ymax = cap;
    const double ly0 = log(ymin * 0.97), ly1 = log(ymax * 1.03);
    const double lx0 = log2(sizes[0]) - 0.3, lx1 = log2(sizes[n_sizes - 1]) + 0.3;
#define X(k) (L + (log2(k) - lx0) / (lx1 - lx0) * (W - L - R))
#define Y(p) (T + (1 - (log((p) < cap ? (p) : cap) - ly0) / (ly1 - ly0)) * (H - T - Bm))
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
            "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" "
            "fill=\"white\"/>\n",
            W, H);
    fprintf(f, "<text x=\"%.0f\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">",
            (W - R + L) / 2);
    for (const char *c = title; *c; c++) {
        if (*c == '<')
            fputs("&lt;", f);
        else if (*c == '&')
            fputs("&amp;", f);
        else
            fputc(*c, f);
    }
    fprintf(f,
            "</text>\n<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n",
            L, H - Bm, W - R, H - Bm);
    fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n", L, T,
            L, H - Bm);
    for (int i = 0; i < n_sizes; i++)
        fprintf(f, "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%d</text>\n", X(sizes[i]),
                H - Bm + 18, sizes[i]);
    fprintf(f,
            "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">cache size k (tokens per layer, "
            "log scale)</text>\n",
            (W - R + L) / 2, H - 12);
    for (int i = 0; i <= 5; i++) {
        double p = exp(ly0 + (ly1 - ly0) * i / 5);
        fprintf(f, "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">%.2f</text>\n", L - 6, Y(p) + 4,
                p);
        fprintf(f, "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", L,
                Y(p), W - R, Y(p));
    }
    fprintf(f,
            "<text transform=\"rotate(-90)\" x=\"%.0f\" y=\"16\" "
            "text-anchor=\"middle\">perplexity</text>\n",
            -(H - Bm + T) / 2);
    fprintf(f,
            "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"black\" "
            "stroke-dasharray=\"6,4\"/>\n",
            L, Y(full->ppl), W - R, Y(full->ppl));
    fprintf(f, "<text x=\"%.0f\" y=\"%.1f\">full %.2f</text>\n", W - R + 8, Y(full->ppl) + 4,
            full->ppl);
    static const char *colors[] = {"#d62728", "#ff7f0e", "#2ca02c",
                                   "#1f77b4", "#9467bd", "#8c564b"};
    int legend = 0;
    for (int i = 0; i < n_res; i++) {
        if (i > 0 && !strcmp(res[i].policy, res[i - 1].policy)) continue;
        const char *col = colors[legend % 6];
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", col);
        for (int j = i; j < n_res && !strcmp(res[j].policy, res[i].policy); j++)
            fprintf(f, "%.1f,%.1f ", X(res[j].kv_size), Y(res[j].ppl));
        fprintf(f, "\"/>\n");
        for (int j = i; j < n_res && !strcmp(res[j].policy, res[i].policy); j++)
            fprintf(f,
                    "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"><title>%s k=%d: "
                    "%.3f</title></circle>\n",
                    X(res[j].kv_size), Y(res[j].ppl), col, res[j].policy, res[j].kv_size,
                    res[j].ppl);
        fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" fill=\"%s\">%s</text>\n", W - R + 8,
                T + 16.0 * legend + 30, col, res[i].policy);
        legend++;
    }
    fprintf(f,
            "<text x=\"%.0f\" y=\"%.0f\" fill=\"#666\" font-size=\"10\">values above %.1f "
            "clipped</text>\n",
            W - R + 8, H - Bm, cap);
    fprintf(f, "</svg>\n");
#undef X
#undef Y
    return atomic_commit("perplexity", path, tmp, f);
}

/* given: room for argc paths (the -f values) */
static int perplexity(int argc, char **argv, const char **given) {
    const char *cmd = "perplexity", *plot = NULL, *out_json = NULL;
    const char *policies = "window,sink,h2o,tova", *manifest = NULL, *split = NULL;
    int n_files = 0, ctx = 0, max_chunks = 0, json = 0, rc = 0, n_sizes = 0, sizes[MAX_SIZES];
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
        else if (!strcmp(a, "--ctx"))
            rc = arg_int(cmd, a, v, 2, 1 << 24, &ctx);
        else if (!strcmp(a, "--max-chunks"))
            rc = arg_int(cmd, a, v, 1, 1 << 30, &max_chunks);
        else if (!strcmp(a, "--policies"))
            policies = v;
        else if (!strcmp(a, "--plot"))
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
            fprintf(stderr, "msrnn %s: unknown option '%s'\n", cmd, a);
            usage(stderr);
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
    n_files = (int)n_paths;
    msrnn_model *m;
    if (msrnn_model_open(o.model_path, &m) != MSRNN_OK) {
        fprintf(stderr, "msrnn %s: %s\n", cmd, msrnn_last_error());
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
    text *texts = calloc((size_t)n_files, sizeof *texts);
    size_t total_bytes = 0;
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
        size_t cap = msrnn_tokenize_max(m, len);
        texts[f].ids = malloc(cap * sizeof(int32_t));
        if (!texts[f].ids ||
            msrnn_tokenize(m, buf, len, 0, texts[f].ids, cap, &texts[f].n) != MSRNN_OK) {
            fprintf(stderr, "msrnn %s: %s: %s\n", cmd, files[f],
                    texts[f].ids ? msrnn_last_error() : "out of memory");
            rc = 1;
        }
        texts[f].bytes = len;
        total_bytes += len;
        free(buf);
    }
    /* a sweep's (policy, size) pairs are checked before anything runs */
    result res[MAX_RESULTS];
    int n_res = 0, n_policies = 0;
    if (!rc && n_sizes > 0) {
        char pbuf[128];
        snprintf(pbuf, sizeof pbuf, "%s", policies);
        for (char *pol = strtok(pbuf, ","); pol && !rc; pol = strtok(NULL, ","), n_policies++)
            for (int k = 0; k < n_sizes && !rc; k++) {
                msrnn_session_params sp = o.sp;
                sp.memory = pol;
                sp.kv_size = sizes[k];
                msrnn_session *probe = NULL;
                if (n_res == MAX_RESULTS) {
                    fprintf(stderr, "msrnn %s: a sweep runs at most %d (policy, size) pairs\n", cmd,
                            MAX_RESULTS);
                    rc = 2;
                } else if (strlen(pol) >= sizeof res[0].policy ||
                           msrnn_session_open(m, &sp, &probe) != MSRNN_OK) {
                    fprintf(stderr, "msrnn %s: --sweep: %s k=%d: %s\n", cmd, pol, sizes[k],
                            msrnn_last_error());
                    rc = 2;
                } else {
                    memset(&res[n_res], 0, sizeof res[n_res]);
                    snprintf(res[n_res].policy, sizeof res[n_res].policy, "%s", pol);
                    res[n_res++].kv_size = sizes[k];
                }
                msrnn_session_close(probe);
            }
    }
    if (!rc && n_sizes == 0) {
        rc = run_config(cmd, m, &o, texts, n_files, ctx, max_chunks, total_bytes, 1, &single);
        if (!rc && json) {
            print_result_json(stdout, &single);
            printf("\n");
        } else if (!rc) {
            printf("%s%s%.0d: ppl %.4f  nll %.5f  bits/byte %.4f  (%zu tokens, %.0f tok/s, memory "
                   "%zu bytes)\n",
                   single.policy, single.kv_size ? " k=" : "", single.kv_size, single.ppl,
                   single.nll_sum / single.n_scored, single.bits_per_byte, single.n_scored,
                   single.tps, single.kv_bytes);
        }
    } else if (!rc) {
        result full = {.policy = "full"};
        rc = run_config(cmd, m, &o, texts, n_files, ctx, max_chunks, total_bytes, 1, &full);
        for (int i = 0; i < n_res && !rc; i++)
            rc = run_config(cmd, m, &o, texts, n_files, ctx, max_chunks, total_bytes, 1, &res[i]);
        if (!rc) {
            FILE *tf = json ? stderr : stdout;
            fprintf(
                tf,
                "\nperplexity, %d-token chunks, %zu tokens scored (full cache: %.4f)\n| policy |",
                ctx, full.n_scored, full.ppl);
            for (int k = 0; k < n_sizes; k++) fprintf(tf, " k=%d |", sizes[k]);
            fprintf(tf, " full |\n|---|");
            for (int k = 0; k <= n_sizes; k++) fprintf(tf, "---:|");
            fprintf(tf, "\n");
            for (int i = 0; i + n_sizes <= n_res; i += n_sizes) { /* one row per policy */
                fprintf(tf, "| %s |", res[i].policy);
                for (int k = 0; k < n_sizes; k++) fprintf(tf, " %.3f |", res[i + k].ppl);
                fprintf(tf, " %.3f |\n", full.ppl);
            }
            FILE *jf = NULL;
            char jtmp[4096];
            if (out_json && atomic_create(cmd, out_json, jtmp, sizeof jtmp, &jf)) rc = 1;
            for (int pass = 0; pass < 2; pass++) {
                FILE *f = pass == 0 ? (json ? stdout : NULL) : jf;
                if (!f) continue;
                fprintf(f, "{\"model\": ");
                json_string(f, o.model_path, strlen(o.model_path));
                fprintf(f, ", \"ctx\": %d, \"max_chunks\": %d, \"files\": [", ctx, max_chunks);
                for (int i = 0; i < n_files; i++) {
                    fprintf(f, "%s", i ? ", " : "");
                    json_string(f, files[i], strlen(files[i]));
                }
                fprintf(f, "], \"full\": ");
                print_result_json(f, &full);
                fprintf(f, ", \"results\": [");
                for (int i = 0; i < n_res; i++) {
                    fprintf(f, "%s", i ? ", " : "");
                    print_result_json(f, &res[i]);
                }
                fprintf(f, "]}\n");
            }
            if (jf && atomic_commit(cmd, out_json, jtmp, jf)) rc = 1;
            if (plot && !rc) {
                char title[256];
                const char *base = strrchr(o.model_path, '/');
                snprintf(title, sizeof title, "%s: perplexity vs KV cache size (%d-token chunks)",
                         base ? base + 1 : o.model_path, ctx);
                if (write_plot(plot, res, n_res, &full, sizes, n_sizes, title)) rc = 1;
            }
        }
    }
    for (int f = 0; texts && f < n_files; f++) free(texts[f].ids);
    free(texts);
    corpus_paths_free(files, n_paths);
    msrnn_model_close(m);
    return rc;
}

int cmd_perplexity(int argc, char **argv) {
    const char **given = calloc((size_t)argc, sizeof *given);
    if (!given) {
        fprintf(stderr, "msrnn perplexity: out of memory\n");
        return 1;
    }
    int rc = perplexity(argc, argv, given);
    free(given);
    return rc;
}
