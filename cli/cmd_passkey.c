/* cmd_passkey.c — `msrnn passkey`: the passkey retrieval grid (METHODS.md §2) under any memory;
 * the task itself is src/eval/passkey.c. A table of exact-match accuracy per (depth, length) on
 * stdout (or, with --json, one JSON object), --out the same JSON to a file, --plot an SVG heat
 * map; a progress line with the ETA on stderr.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "common.h"
#include "eval/passkey.h"
#include "eval/plot_svg.h"
#include "model/model.h"

#define MAX_LENGTHS 32
#define MAX_DEPTHS 101
#define MAX_LENGTH (1LL << 30)

static const cli_option options[] = {
    {NULL, "--lengths", "L1,L2,...",
     .help = "positions per trial: the prompt plus room for the answer;\n"
             "suffixes K (1024) and M (1048576) (default 1K,2K,4K)"},
    {NULL, "--depths", "D1,D2,...",
     .help = "where the key goes, percent of the filler (default\n"
             "0,25,50,75,100)"},
    {NULL, "--trials", "N", .help = "trials (random keys) per cell (default 5)"},
    {NULL, "--seed", "S", .help = "seed of the keys (default 1)"},
    {NULL, "--json", NULL, .help = "print one JSON object on stdout instead of the table"},
    {NULL, "--out", "OUT.json", .help = "write the JSON to a file too"},
    {NULL, "--plot", "OUT.svg", .help = "an SVG heat map of the accuracy"},
    {NULL, "--show-prompt", NULL,
     .help = "print the prompt of the first cell's first trial and stop"},
    {NULL, "--make-data", "OUT.bin",
     .help = "write passkey training data instead (a token shard for\n"
             "msrnn train -c LENGTH): random keys at random depths,\n"
             "each example ending with its answer (train --loss-last)"},
    {NULL, "--examples", "N", .help = "--make-data: examples (default 1000)"},
    {NULL, "--example-length", "N", .help = "--make-data: tokens per example (default 1024)"},
};
static const cli_table table = {.column = 24, CLI_OPTIONS(options)};

const cli_command passkey_command = {
    .name = "passkey",
    .summary = "passkey retrieval accuracy by length and depth under a memory",
    .synopsis = "msrnn passkey -m FILE [--lengths L1,L2,...] [--depths D1,...] [options]",
    .tables = {&RUN_OPTIONS, &table},
    .mentions = {"train --loss-last"},
};

static void usage(FILE *f) { cli_help(f, &passkey_command); }

/* "1K" -> 1024, "1M" -> 1048576, "5000" -> 5000 */
static int parse_lengths(const char *cmd, const char *flag, const char *s, int64_t *out, int *n) {
    if (arg_list_check(cmd, flag, s, 4096)) return 2;
    *n = 0;
    for (const char *p = s; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char item[64];
        if (len >= sizeof item || *n >= MAX_LENGTHS) {
            fprintf(stderr, "msrnn %s: %s: %s\n", cmd, flag,
                    len >= sizeof item ? "an item is too long" : "more than 32 lengths");
            return 2;
        }
        memcpy(item, p, len);
        item[len] = 0;
        int64_t mult = 1;
        if (len > 1 && (item[len - 1] == 'K' || item[len - 1] == 'k'))
            mult = 1024, item[--len] = 0;
        else if (len > 1 && (item[len - 1] == 'M' || item[len - 1] == 'm'))
            mult = 1048576, item[--len] = 0;
        char *end;
        long long v = strtoll(item, &end, 10);
        if (*end || end == item || v < 1 || v > MAX_LENGTH / mult) {
            fprintf(stderr,
                    "msrnn %s: %s: '%.*s' is not a length from 1 to %lld tokens (a whole number, "
                    "optionally with K or M)\n",
                    cmd, flag, (int)(e ? e - p : (long)strlen(p)), p, MAX_LENGTH);
            return 2;
        }
        out[(*n)++] = v * mult;
        p = e ? e + 1 : p + strlen(p);
    }
    return 0;
}

static void length_name(int64_t l, char *buf, size_t cap) {
    if (l % 1048576 == 0)
        snprintf(buf, cap, "%lldM", (long long)(l / 1048576));
    else if (l % 1024 == 0)
        snprintf(buf, cap, "%lldK", (long long)(l / 1024));
    else
        snprintf(buf, cap, "%lld", (long long)l);
}

/* The prompt's text on stdout; its length and the key on stderr. */
static int print_prompt(const char *cmd, msrnn_model *m, int64_t length, int depth, uint32_t key) {
    int32_t *ids = malloc((size_t)length * sizeof *ids);
    size_t n = 0;
    if (!ids) {
        fprintf(stderr, "msrnn %s: out of memory for %lld tokens\n", cmd, (long long)length);
        return 1;
    }
    msrnn_status st = passkey_prompt(m, length, depth / 100.0, key, ids, (size_t)length, &n);
    if (st != MSRNN_OK) {
        fprintf(stderr, "msrnn %s: %s\n", cmd, msrnn_last_error());
        free(ids);
        return exit_status(st);
    }
    char piece[256];
    for (size_t i = 1; i < n; i++) {
        size_t len = msrnn_token_to_text(m, ids[i - 1], ids[i], piece, sizeof piece);
        fwrite(piece, 1, len < sizeof piece ? len : sizeof piece, stdout);
    }
    printf("\n");
    fprintf(stderr,
            "msrnn %s: %zu prompt tokens (BOS included) for length %lld, depth %d%%, key %05u\n",
            cmd, n, (long long)length, depth, (unsigned)key);
    free(ids);
    return 0;
}

static void show_progress(void *user, const passkey_progress *p) {
    (void)user;
    const double tps = p->done / (p->seconds > 0 ? p->seconds : 1e-9);
    fprintf(stderr, "\rpasskey: %d/%d trials, %lld/%lld tokens  %.0f tok/s  ETA %.0f s   ",
            p->trials_done, p->trials, (long long)p->done, (long long)p->total, tps,
            (double)(p->total - p->done) / (tps > 0 ? tps : 1e-9));
}

/* own: the architecture when its own memory is bounded (infini), else NULL */
static void memory_desc(const run_options *o, const char *own, char *buf, size_t cap) {
    const msrnn_session_params *sp = &o->sp;
    const char *mem = sp->memory ? sp->memory : "full";
    if (!strcmp(mem, "full")) {
        if (own)
            snprintf(buf, cap, "%s's own", own);
        else
            snprintf(buf, cap, "full");
        return;
    }
    msrnn_memory_settings ms = {0, 0, 0};
    msrnn_memory_settings_of(sp, &ms);
    int n = snprintf(buf, cap, "%s k=%d", mem, sp->kv_size);
    if ((!strcmp(mem, "sink") || !strncmp(mem, "merge", 5)) && n > 0 && (size_t)n < cap)
        n += snprintf(buf + n, cap - (size_t)n, ", %d sinks", ms.sinks);
    if (!strncmp(mem, "merge", 5) && n > 0 && (size_t)n < cap)
        n += snprintf(buf + n, cap - (size_t)n, ", beta %g", (double)sp->kv_merge_bias);
    if (!strcmp(mem, "merge-clusters") && n > 0 && (size_t)n < cap)
        snprintf(buf + n, cap - (size_t)n, ", S %d", ms.clusters);
}

static void write_json(FILE *f, const run_options *o, const char *own, const char *mem,
                       const int64_t *lengths, int nl, const int *depths, int nd, int trials,
                       uint64_t seed, const passkey_trial *t, size_t session_bytes,
                       double seconds) {
    const msrnn_session_params *sp = &o->sp;
    fprintf(f, "{\"task\": \"passkey\", \"model\": ");
    json_string(f, o->model_path, strlen(o->model_path));
    fprintf(f, ", \"memory\": ");
    json_string(f, mem, strlen(mem));
    fprintf(f, ", \"description\": ");
    char desc[160];
    memory_desc(o, own, desc, sizeof desc);
    json_string(f, desc, strlen(desc));
    fprintf(
        f,
        ", \"kv_size\": %d, \"n_ctx\": %d, \"seed\": %llu, \"trials\": %d, \"max_answer_tokens\": "
        "%d, \"session_bytes\": %zu, \"seconds\": %.3f,\n \"lengths\": [",
        sp->kv_size, sp->n_ctx, (unsigned long long)seed, trials, PASSKEY_MAX_GEN, session_bytes,
        seconds);
    for (int i = 0; i < nl; i++) fprintf(f, "%s%lld", i ? ", " : "", (long long)lengths[i]);
    fprintf(f, "], \"depths\": [");
    for (int i = 0; i < nd; i++) fprintf(f, "%s%d", i ? ", " : "", depths[i]);
    fprintf(f, "],\n \"cells\": [");
    for (int li = 0; li < nl; li++)
        for (int di = 0; di < nd; di++) {
            const passkey_trial *c = t + ((size_t)li * nd + di) * trials;
            int run = 0, ok = 0;
            for (int k = 0; k < trials; k++) run += c[k].run, ok += c[k].correct;
            fprintf(f, "%s\n  {\"length\": %lld, \"depth\": %d, \"run\": %s, \"correct\": %d, ",
                    li || di ? "," : "", (long long)lengths[li], depths[di], run ? "true" : "false",
                    ok);
            if (run)
                fprintf(f, "\"accuracy\": %.4f, ", (double)ok / run);
            else
                fprintf(f, "\"accuracy\": null, ");
            fprintf(f, "\"answers\": [");
            for (int k = 0; k < trials; k++) {
                fprintf(f, "%s{\"key\": \"%05u\", ", k ? ", " : "", (unsigned)c[k].key);
                if (c[k].run) {
                    fprintf(f, "\"answer\": ");
                    json_string(f, c[k].answer, strlen(c[k].answer));
                    fprintf(f,
                            ", \"correct\": %s, \"n_tokens\": %lld, \"seconds\": %.3f, "
                            "\"memory_bytes\": %zu}",
                            c[k].correct ? "true" : "false", (long long)c[k].n_tokens, c[k].seconds,
                            c[k].memory_bytes);
                } else {
                    fprintf(f, "\"answer\": null}");
                }
            }
            fprintf(f, "]}");
        }
    fprintf(f, "\n]}\n");
}

int cmd_passkey(int argc, char **argv) {
    arg_set_command(&passkey_command);
    const char *cmd = "passkey";
    run_options o;
    run_options_init(&o);
    int64_t lengths[MAX_LENGTHS] = {1024, 2048, 4096};
    int depths[MAX_DEPTHS] = {0, 25, 50, 75, 100};
    int nl = 3, nd = 5, trials = 5, json = 0, show_prompt = 0, rc = 0;
    uint64_t seed = 1;
    const char *out_path = NULL, *plot_path = NULL, *data_path = NULL, *examples_flag = NULL;
    int n_examples = 1000, example_length = 1024;
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
        if (!strcmp(a, "--show-prompt")) {
            show_prompt = 1;
            continue;
        }
        if (!(v = arg_value(cmd, argc, argv, i))) return 2;
        i++;
        if (!strcmp(a, "--lengths"))
            rc = parse_lengths(cmd, a, v, lengths, &nl);
        else if (!strcmp(a, "--depths"))
            rc = arg_int_list(cmd, a, v, 0, 100, depths, MAX_DEPTHS, &nd);
        else if (!strcmp(a, "--trials"))
            rc = arg_int(cmd, a, v, 1, 100000, &trials);
        else if (!strcmp(a, "--seed"))
            rc = arg_u64(cmd, a, v, &seed);
        else if (!strcmp(a, "--out"))
            out_path = v;
        else if (!strcmp(a, "--plot"))
            plot_path = v;
        else if (!strcmp(a, "--make-data"))
            data_path = v;
        else if (!strcmp(a, "--examples"))
            rc = arg_int(cmd, a, v, 1, 1 << 24, &n_examples), examples_flag = a;
        else if (!strcmp(a, "--example-length"))
            rc = arg_int(cmd, a, v, 1, 1 << 20, &example_length), examples_flag = a;
        else {
            arg_unknown(cmd, a);
            return 2;
        }
        if (rc) return rc;
    }
    if (!o.model_path) {
        fprintf(stderr, "msrnn %s: -m FILE is required\n", cmd);
        return 2;
    }
    if ((size_t)nl * (size_t)nd * (size_t)trials > 10000000) {
        fprintf(stderr, "msrnn %s: %d lengths x %d depths x %d trials is more than 10^7 trials\n",
                cmd, nl, nd, trials);
        return 2;
    }
    if (examples_flag && !data_path) {
        fprintf(stderr, "msrnn %s: %s applies to --make-data only\n", cmd, examples_flag);
        return 2;
    }
    if (data_path && (out_path || plot_path || json || show_prompt)) {
        fprintf(stderr, "msrnn %s: --make-data writes training data only: leave out %s\n", cmd,
                out_path    ? "--out"
                : plot_path ? "--plot"
                : json      ? "--json"
                            : "--show-prompt");
        return 2;
    }
    {
        const file_arg in[] = {{"-m", o.model_path}};
        const file_arg outs[] = {
            {"--out", out_path}, {"--plot", plot_path}, {"--make-data", data_path}};
        if ((rc = files_check(cmd, in, 1, outs, 3))) return rc;
    }
    msrnn_model *m = NULL;
    if ((rc = open_model(cmd, &o, &m))) return rc;
    const msrnn_model_info *in = msrnn_model_get_info(m);
    const char *mem = o.sp.memory ? o.sp.memory : "full";
    /* an architecture whose own memory is bounded (infini) runs any length with "full" */
    const char *own =
        !strcmp(mem, "full") && model_memory_bounded(m, &o.sp) ? in->architecture : NULL;
    const int full = !strcmp(mem, "full") && !own;
    int64_t min_len = 0, max_len = 0;
    for (int i = 0; i < nl; i++) max_len = lengths[i] > max_len ? lengths[i] : max_len;
    msrnn_status st = passkey_min_length(m, &min_len);
    if (st != MSRNN_OK) {
        fprintf(stderr, "msrnn %s: %s\n", cmd, msrnn_last_error());
        msrnn_model_close(m);
        return 1;
    }
    for (int i = 0; i < nl; i++)
        if (lengths[i] < min_len) {
            fprintf(
                stderr,
                "msrnn %s: --lengths: %lld is shorter than the shortest trial for this "
                "model's tokenizer, %lld tokens (key sentence, question and the answer's room)\n",
                cmd, (long long)lengths[i], (long long)min_len);
            msrnn_model_close(m);
            return 2;
        }
    if (data_path) {
        passkey_data_info di;
        st = passkey_make_data(m, data_path, n_examples, example_length, seed, &di);
        if (st != MSRNN_OK) {
            fprintf(stderr, "msrnn %s: %s\n", cmd, msrnn_last_error());
            rc = exit_status(st);
        } else {
            fprintf(stderr,
                    "msrnn %s: %s: %d examples of %d tokens (%lld tokens; answers %.1f tokens on "
                    "average, at most %d: train --loss-last %d scores them alone), seed %llu\n",
                    cmd, data_path, n_examples, example_length, (long long)di.n_tokens,
                    di.mean_answer_tokens, di.max_answer_tokens, di.max_answer_tokens,
                    (unsigned long long)seed);
        }
        msrnn_model_close(m);
        return rc;
    }
    if (show_prompt) {
        rc = print_prompt(cmd, m, lengths[0], depths[0],
                          passkey_key(seed, lengths[0], depths[0], 0));
        msrnn_model_close(m);
        return rc;
    }
    /* the full cache needs the context of the longest length it can run, and no more */
    const int ctx = o.sp.n_ctx > 0 ? o.sp.n_ctx : in->n_ctx;
    if (full) {
        int64_t need = 0;
        for (int i = 0; i < nl; i++)
            if (lengths[i] <= ctx && lengths[i] > need) need = lengths[i];
        if (need == 0) {
            fprintf(stderr,
                    "msrnn %s: the full cache holds %d positions, and every length asked is longer "
                    "(use a bounded memory, --kv, or -c)\n",
                    cmd, ctx);
            msrnn_model_close(m);
            return 2;
        }
        o.sp.n_ctx = ctx;
        run_options_cap(cmd, &o, need);
    } else {
        run_options_cap(cmd, &o, max_len);
    }

    const size_t n_trials = (size_t)nl * nd * trials;
    passkey_trial *t = calloc(n_trials, sizeof *t);
    if (!t) {
        fprintf(stderr, "msrnn %s: out of memory for %zu trials\n", cmd, n_trials);
        msrnn_model_close(m);
        return 1;
    }
    for (int li = 0; li < nl; li++)
        for (int di = 0; di < nd; di++)
            for (int k = 0; k < trials; k++) {
                passkey_trial *x = t + ((size_t)li * nd + di) * trials + k;
                x->length = lengths[li];
                x->depth = depths[di] / 100.0;
                x->key = passkey_key(seed, lengths[li], depths[di], k);
            }
    passkey_params pp = {o.sp, o.sp.n_batch, show_progress, NULL};
    size_t bytes = 0, session_bytes = 0;
    int workers = 1;
    st = passkey_bytes(m, &pp, (int)n_trials, &bytes, &workers);
    if (st == MSRNN_OK) msrnn_session_bytes_needed(m, &o.sp, &session_bytes);
    if (st != MSRNN_OK) {
        fprintf(stderr, "msrnn %s: %s\n", cmd, msrnn_last_error());
        rc = exit_status(st);
        goto done;
    }
    if (memory_check(cmd, bytes, o.max_memory, "the sessions",
                     "lower --kv-size, -c or -t (one session per thread)")) {
        rc = 1;
        goto done;
    }
    char desc[160];
    memory_desc(&o, own, desc, sizeof desc);
    fprintf(stderr, "msrnn %s: %s, memory %s, %zu trials on %d worker%s, %zu bytes each\n", cmd,
            o.model_path, desc, n_trials, workers, workers == 1 ? "" : "s", session_bytes);
    const double t0 = now_seconds();
    st = passkey_run(m, &pp, t, (int)n_trials);
    const double seconds = now_seconds() - t0;
    if (pp.progress) fprintf(stderr, "\n");
    if (st != MSRNN_OK) {
        fprintf(stderr, "msrnn %s: %s\n", cmd, msrnn_last_error());
        rc = exit_status(st);
        goto done;
    }

    /* accuracy per cell, rows = depths, columns = lengths */
    double *acc = malloc((size_t)nl * nd * sizeof *acc);
    char **texts = calloc((size_t)nl * nd, sizeof *texts);
    char(*names)[24] = calloc((size_t)nl + nd, sizeof *names);
    const char **xn = calloc((size_t)nl, sizeof *xn), **yn = calloc((size_t)nd, sizeof *yn);
    if (!acc || !texts || !names || !xn || !yn) {
        fprintf(stderr, "msrnn %s: out of memory\n", cmd);
        rc = 1;
    }
    for (int li = 0; !rc && li < nl; li++)
        length_name(lengths[li], names[li], 24), xn[li] = names[li];
    for (int di = 0; !rc && di < nd; di++)
        snprintf(names[nl + di], 24, "%d%%", depths[di]), yn[di] = names[nl + di];
    for (int di = 0; !rc && di < nd; di++)
        for (int li = 0; li < nl; li++) {
            const passkey_trial *c = t + ((size_t)li * nd + di) * trials;
            int run = 0, ok = 0;
            for (int k = 0; k < trials; k++) run += c[k].run, ok += c[k].correct;
            acc[(size_t)di * nl + li] = run ? (double)ok / run : NAN;
            texts[(size_t)di * nl + li] = malloc(24);
            if (texts[(size_t)di * nl + li])
                snprintf(texts[(size_t)di * nl + li], 24, run ? "%d/%d" : "n/a", ok, run);
        }
    if (!rc && !json) {
        printf("passkey  %s  memory %s  %d trial%s a cell  seed %llu\n", o.model_path, desc, trials,
               trials == 1 ? "" : "s", (unsigned long long)seed);
        printf("%-8s", "depth");
        for (int li = 0; li < nl; li++) printf(" %9s", xn[li]);
        printf("\n");
        for (int di = 0; di < nd; di++) {
            printf("%-8s", yn[di]);
            for (int li = 0; li < nl; li++)
                printf(" %9s", texts[(size_t)di * nl + li] ? texts[(size_t)di * nl + li] : "?");
            printf("\n");
        }
        printf("%-8s", "all");
        for (int li = 0; li < nl; li++) {
            int run = 0, ok = 0;
            for (size_t k = (size_t)li * nd * trials; k < (size_t)(li + 1) * nd * trials; k++)
                run += t[k].run, ok += t[k].correct;
            char cell[24];
            snprintf(cell, sizeof cell, run ? "%.0f%%" : "n/a", run ? 100.0 * ok / run : 0.0);
            printf(" %9s", cell);
        }
        printf("\n");
        int not_run = 0;
        for (size_t k = 0; k < n_trials; k++) not_run += !t[k].run;
        if (not_run) printf("(n/a: longer than the full cache's %d positions)\n", ctx);
    }
    if (!rc && json)
        write_json(stdout, &o, own, mem, lengths, nl, depths, nd, trials, seed, t, session_bytes,
                   seconds);
    if (!rc && out_path) {
        atomic_file *f;
        if ((rc = output_open(cmd, out_path, &f)) == 0) {
            write_json(atomic_file_stream(f), &o, own, mem, lengths, nl, depths, nd, trials, seed,
                       t, session_bytes, seconds);
            rc = output_commit(cmd, f);
        }
    }
    if (!rc && plot_path) {
        char title[256];
        snprintf(title, sizeof title, "passkey retrieval, %s (%d trial%s a cell)", desc, trials,
                 trials == 1 ? "" : "s");
        heatmap_params h = {title, "length (positions)",      "depth", xn, yn, nl, nd,
                            acc,   (const char *const *)texts};
        if (heatmap_svg_write(plot_path, &h) != MSRNN_OK) {
            fprintf(stderr, "msrnn %s: %s\n", cmd, msrnn_last_error());
            rc = 1;
        }
    }
    fprintf(stderr, "msrnn %s: %.1f s\n", cmd, seconds);
    for (size_t i = 0; texts && i < (size_t)nl * nd; i++) free(texts[i]);
    free(texts), free(acc), free(names), free(xn), free(yn);
done:
    free(t);
    msrnn_model_close(m);
    return rc;
}
