/* cmd_train.c — `msrnn train`: train a Llama model on a token shard (see src/train/trainer.h).
 *
 * Options come from flags and/or a config file of `name = value` lines using the flags' names
 * without the dashes (flags given on the command line win). Prints the plan and peak memory before
 * the first step, a live progress line, and writes a CSV log and an SVG plot of the training and
 * validation loss (both rewritten atomically at every validation and checkpoint). Ctrl-C writes a
 * checkpoint and stops; --resume continues from it bit-identically.
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "cli.h"
#include "common.h"
#include "config.h"
#include "eval/plot_svg.h"
#include "model/init.h"
#include "train/trainer.h"

static const cli_option files[] = {
    {NULL, "--train", "FILE", .help = "training token shard (msrnn tokenize-corpus)",
     .complete = "*.bin"},
    {NULL, "--val", "FILE", .help = "validation token shard", .complete = "*.bin"},
    {NULL, "--init", "FILE",
     .help = "the model to start from (msrnn init-model), or:", .complete = "*.gguf"},
    {NULL, "--tokenizer", "FILE", .help = "vocabulary for a new model of the shape below",
     .complete = "*.gguf"},
    {"-o", "--output", "FILE", .help = "the final model (a plain llama GGUF)",
     .complete = "*.gguf"},
    {NULL, "--f16", NULL, .help = "write the final model's matrices as f16 (default f32)"},
    {NULL, "--ckpt", "FILE", .help = "checkpoint (default OUT.ckpt.gguf)", .complete = "*.gguf"},
    {NULL, "--resume", NULL, .help = "continue from --ckpt (its configuration is used)"},
    {NULL, "--strict", NULL, .help = "refuse a model file holding tensors it does not use"},
    {NULL, "--log", "FILE.csv", .help = "loss log (default OUT.log.csv)"},
    {NULL, "--plot", "FILE.svg", .help = "loss plot (default OUT.loss.svg)"},
    {NULL, "--config", "FILE", .help = "name = value lines (the flags below, without dashes)"},
};
static const cli_option shape[] = {
    {NULL, "--dim", "N", .help = "(256)", .layout = CLI_INLINE},
    {NULL, "--layers", "N", .help = "(4)", .layout = CLI_JOIN},
    {NULL, "--heads", "N", .help = "(4)", .layout = CLI_JOIN},
    {NULL, "--kv-heads", "N", .help = "(= heads)", .layout = CLI_JOIN},
    {NULL, "--ffn", "N", .help = "(704)", .layout = CLI_JOIN},
    {NULL, "--tied", NULL, .help = "", .layout = CLI_INLINE},
    {NULL, "--init-std", "X", .help = "(0.02)", .layout = CLI_JOIN},
    {NULL, "--init-seed", "N", .help = "(1)", .layout = CLI_JOIN},
    {NULL, "--rope-base", "X", .help = "(10000)", .layout = CLI_JOIN},
};
static const cli_option training[] = {
    {"-c", "--ctx", "N", .help = "(512)", .layout = CLI_INLINE},
    {NULL, "--batch", "N", .help = "(8)", .layout = CLI_JOIN},
    {NULL, "--accum", "N", .help = "(1)", .layout = CLI_JOIN},
    {NULL, "--steps", "N", .help = "(1000)", .layout = CLI_JOIN},
    {NULL, "--warmup", "N", .help = "(100)", .layout = CLI_JOIN},
    {NULL, "--lr", "X", .help = "(1e-3)", .layout = CLI_INLINE},
    {NULL, "--lr-min", "X", .help = "(1e-4)", .layout = CLI_JOIN},
    {NULL, "--wd", "X", .help = "(0.1)", .layout = CLI_JOIN},
    {NULL, "--clip", "X", .help = "(1.0, 0: off)", .layout = CLI_JOIN},
    {NULL, "--beta1", "X", .help = "(0.9)", .layout = CLI_INLINE},
    {NULL, "--beta2", "X", .help = "(0.95)", .layout = CLI_JOIN},
    {NULL, "--seed", "N", .help = "(1: data order)", .layout = CLI_JOIN},
    {NULL, "--own-lr-scale", "X",
     .help = "learning-rate multiplier of the tensors a method gives one of\n"
             "their own (infini's gates beta: 10, no weight decay)"},
    {NULL, "--loss-last", "N",
     .help = "the loss covers only the last N targets of each window (e.g. the\n"
             "answer of passkey --make-data examples; default: all)"},
    {NULL, "--teacher", "FILE",
     .help = "distil: the loss is KL(teacher || model) on each window, the\n"
             "teacher's logits computed on the same tokens (same vocabulary;\n"
             "validation stays the next-token loss)",
     .complete = "*.gguf"},
    {NULL, "--unfreeze", "LIST",
     .help = "also train these tensors a method keeps fixed by default\n"
             "(comma-separated blk.L suffixes: dijiang's attn_decay, its\n"
             "decay gamma, kept in (0, 1), learning rate x0.1)"},
    {NULL, "--eval-every", "N", .help = "(100)", .layout = CLI_INLINE},
    {NULL, "--eval-batches", "N", .help = "(8)", .layout = CLI_JOIN},
    {NULL, "--ckpt-every", "N", .help = "(100)", .layout = CLI_JOIN},
    {NULL, "--stop-after", "N", .help = "stop (with a checkpoint) after N steps of this run"},
    {"-t", "--threads", "N", .help = "(all cores)", .layout = CLI_INLINE},
    {NULL, "--json", NULL, .help = "(print a JSON summary at the end)", .layout = CLI_JOIN},
    {NULL, "--max-memory", "BYTES",
     .help = "refuse a plan above this much memory (suffixes K, M, G, KiB,\n"
             "MiB, GiB; default: the machine's available memory)",
     .wrap = 19},
};
static const cli_table files_table = {"data and files:", 21, NULL, CLI_OPTIONS(files)};
static const cli_table shape_table = {"shape of a new model (with --tokenizer):", 21, " ",
                                      CLI_OPTIONS(shape)};
static const cli_table training_table = {"training:", 21, NULL, CLI_OPTIONS(training)};

const cli_command train_command = {
    .name = "train",
    .summary = "train a model (AdamW, checkpoints, --resume)",
    .synopsis = "msrnn train --train TRAIN.bin -o OUT.gguf (--init MODEL.gguf | --tokenizer "
                "TOK.gguf [shape]) [options]\n"
                "msrnn train --resume --ckpt CKPT.gguf --train TRAIN.bin -o OUT.gguf",
    .tables = {&files_table, &shape_table, &training_table},
    .exit_status = "128 + N when a signal N (SIGINT: 130, SIGTERM: 143) interrupted the run after "
                   "a clean checkpoint; --stop-after is a planned stop and exits 0.",
    .mentions = {"passkey --make-data"},
};

static void usage(FILE *f) { cli_help(f, &train_command); }

typedef struct {
    train_config cfg;
    train_paths paths;
    model_init_params shape;
    const char *tokenizer, *log, *plot, *config;
    int json, stop_after;
    int strict; /* --strict: unused tensors in the model are an error, not a warning */
} options;

/* One option; returns 0 ok, 2 bad, -1 unknown. takes: set to 1 if v was consumed. */
static int set_option(const char *cmd, options *o, const char *a, const char *v, int *takes) {
    *takes = 1;
    train_config *c = &o->cfg;
    train_paths *p = &o->paths;
    model_init_params *s = &o->shape;
    if (!strcmp(a, "--resume")) return *takes = 0, p->resume = 1, 0;
    if (!strcmp(a, "--f16")) return *takes = 0, p->out_f16 = 1, 0;
    if (!strcmp(a, "--tied")) return *takes = 0, s->tied = 1, 0;
    if (!strcmp(a, "--json")) return *takes = 0, o->json = 1, 0;
    if (!strcmp(a, "--strict")) return *takes = 0, o->strict = 1, 0;
    if (!v) {
        if (!arg_known(a)) return -1;
        fprintf(stderr, "msrnn %s: %s%s needs a value\n", cmd, arg_where(), a);
        return 2;
    }
    if (!strcmp(a, "--train")) return p->train_path = v, 0;
    if (!strcmp(a, "--val")) return p->val_path = v, 0;
    if (!strcmp(a, "--init")) return p->init_path = v, 0;
    if (!strcmp(a, "--teacher")) return p->teacher_path = v, 0;
    if (!strcmp(a, "--unfreeze")) {
        if (!*v || strlen(v) >= 4096 || v[0] == ',' || v[strlen(v) - 1] == ',' || strstr(v, ",,")) {
            fprintf(stderr,
                    "msrnn %s: %s--unfreeze \"%s\": need tensor suffixes separated by "
                    "commas (e.g. attn_decay)\n",
                    cmd, arg_where(), v);
            return 2;
        }
        return p->unfreeze = v, 0;
    }
    if (!strcmp(a, "--tokenizer")) return o->tokenizer = v, 0;
    if (!strcmp(a, "-o") || !strcmp(a, "--output")) return p->out_path = v, 0;
    if (!strcmp(a, "--ckpt")) return p->ckpt_path = v, 0;
    if (!strcmp(a, "--log")) return o->log = v, 0;
    if (!strcmp(a, "--plot")) return o->plot = v, 0;
    if (!strcmp(a, "--dim")) return arg_int(cmd, a, v, 2, 65536, &s->dim);
    if (!strcmp(a, "--layers")) return arg_int(cmd, a, v, 1, 1024, &s->n_layers);
    if (!strcmp(a, "--heads")) return arg_int(cmd, a, v, 1, 1024, &s->n_heads);
    if (!strcmp(a, "--kv-heads")) return arg_int(cmd, a, v, 1, 1024, &s->n_kv_heads);
    if (!strcmp(a, "--ffn")) return arg_int(cmd, a, v, 1, 1 << 20, &s->ffn_dim);
    if (!strcmp(a, "--init-std")) return arg_float(cmd, a, v, 1e-6, 10, &s->init_std);
    if (!strcmp(a, "--init-seed")) return arg_u64(cmd, a, v, &s->seed);
    if (!strcmp(a, "--rope-base")) return arg_float(cmd, a, v, 1, 1e9, &s->rope_base);
    if (!strcmp(a, "-c") || !strcmp(a, "--ctx")) return arg_int(cmd, a, v, 2, 1 << 20, &c->ctx);
    if (!strcmp(a, "--batch")) return arg_int(cmd, a, v, 1, 1 << 16, &c->batch);
    if (!strcmp(a, "--accum")) return arg_int(cmd, a, v, 1, 1 << 16, &c->accum);
    if (!strcmp(a, "--steps")) return arg_int(cmd, a, v, 1, 1 << 30, &c->steps);
    if (!strcmp(a, "--warmup")) return arg_int(cmd, a, v, 0, 1 << 30, &c->warmup);
    if (!strcmp(a, "--lr")) return arg_float(cmd, a, v, 1e-9, 10, &c->lr);
    if (!strcmp(a, "--lr-min")) return arg_float(cmd, a, v, 0, 10, &c->lr_min);
    if (!strcmp(a, "--wd")) return arg_float(cmd, a, v, 0, 10, &c->weight_decay);
    if (!strcmp(a, "--clip")) return arg_float(cmd, a, v, 0, 1e9, &c->clip);
    if (!strcmp(a, "--own-lr-scale")) return arg_float(cmd, a, v, 1e-6, 1e4, &c->own_lr_scale);
    if (!strcmp(a, "--loss-last")) return arg_int(cmd, a, v, 1, 1 << 20, &c->loss_last);
    if (!strcmp(a, "--beta1")) return arg_float(cmd, a, v, 0, 0.9999999, &c->beta1);
    if (!strcmp(a, "--beta2")) return arg_float(cmd, a, v, 0, 0.9999999, &c->beta2);
    if (!strcmp(a, "--seed")) return arg_u64(cmd, a, v, &c->seed);
    if (!strcmp(a, "--eval-every")) return arg_int(cmd, a, v, 0, 1 << 30, &c->eval_every);
    if (!strcmp(a, "--eval-batches")) return arg_int(cmd, a, v, 0, 1 << 20, &c->eval_batches);
    if (!strcmp(a, "--ckpt-every")) return arg_int(cmd, a, v, 0, 1 << 30, &c->ckpt_every);
    if (!strcmp(a, "--stop-after")) return arg_int(cmd, a, v, 1, 1 << 30, &o->stop_after);
    if (!strcmp(a, "--max-memory")) {
        const int r = max_memory_parse(cmd, a, v, &p->max_memory);
        s->max_memory = p->max_memory;
        return r;
    }
    if (!strcmp(a, "-t") || !strcmp(a, "--threads"))
        return arg_int(cmd, a, v, 1, 1024, &p->n_threads);
    return -1;
}

typedef struct {
    const char *cmd;
    options *o;
} config_ctx;

static int config_setting(void *ctx, const char *name, const char *value, const char *where) {
    config_ctx *c = ctx;
    char flag[80], prefix[4300];
    snprintf(flag, sizeof flag, "--%s", name);
    snprintf(prefix, sizeof prefix, "%s: ", where);
    if (!strcmp(name, "config") || !strcmp(name, "help")) {
        fprintf(stderr, "msrnn %s: %s: '%s' cannot be set in a config file\n", c->cmd, where, name);
        return 2;
    }
    arg_set_where(prefix);
    int takes, r = set_option(c->cmd, c->o, flag, value, &takes);
    arg_set_where(NULL);
    if (r == -1) {
        fprintf(stderr, "msrnn %s: %s: unknown setting '%s'\n", c->cmd, where, name);
        return 2;
    }
    if (r == 0 && !takes && value) {
        fprintf(stderr, "msrnn %s: %s: '%s' is a switch and takes no value (write '%s' alone)\n",
                c->cmd, where, name, name);
        return 2;
    }
    return r;
}

/* Apply a config file (cli/config.h); every error names the file and line. */
static int read_config(const char *cmd, options *o, const char *path) {
    size_t len;
    char *text = read_text_file(cmd, path, &len);
    if (!text) return 1;
    config_ctx c = {cmd, o};
    int rc = config_parse(cmd, path, text, len, config_setting, &c);
    free(text);
    return rc;
}

static volatile sig_atomic_t g_stop, g_signal; /* stop after this step; the signal that asked */

/* ---- log and plot --------------------------------------------------------------------------- */

typedef struct {
    int step;
    float loss, lr, grad_norm, val_loss;
    double tps, elapsed;
} row;

typedef struct {
    const options *o;
    row *rows;
    int n, cap;
    int tty;
    int steps, start_step;
    double elapsed_before; /* seconds of the run before a resume, from the log */
} run_state;

static int write_log(const run_state *r, const char *path) {
    atomic_file *af;
    if (output_open("train", path, &af)) return 1;
    FILE *f = atomic_file_stream(af);
    fprintf(f, "step,loss,lr,grad_norm,val_loss,tokens_per_s,elapsed_s\n");
    for (int i = 0; i < r->n; i++) {
        const row *w = &r->rows[i];
        fprintf(f, "%d,%.6f,%.6e,%.5f,", w->step, w->loss, w->lr, w->grad_norm);
        if (isfinite(w->val_loss)) fprintf(f, "%.6f", w->val_loss);
        fprintf(f, ",%.1f,%.1f\n", w->tps, w->elapsed);
    }
    return output_commit("train", af);
}

/* The loss against the step: training loss every step, validation loss where it was measured. */
static int write_plot(const run_state *r, const char *path) {
    double *buf = malloc((size_t)(r->n ? r->n : 1) * 3 * sizeof *buf);
    if (!buf) {
        fprintf(stderr, "msrnn train: out of memory\n");
        return 1;
    }
    double *step = buf, *loss = buf + r->n, *val = buf + 2 * r->n;
    for (int i = 0; i < r->n; i++)
        step[i] = r->rows[i].step, loss[i] = r->rows[i].loss, val[i] = r->rows[i].val_loss;
    const plot_series series[2] = {{"train", step, loss, r->n, "#1f77b4", 1, 0},
                                   {"validation", step, val, r->n, "#d62728", 2, 0}};
    const plot_params p = {.title = "training loss (nats per token)",
                           .x_label = "optimizer step",
                           .x_min = 0,
                           .x_max = r->steps > 0 ? r->steps : 1};
    const msrnn_status st = plot_svg_write(path, &p, series, 2);
    free(buf);
    if (st != MSRNN_OK) {
        fprintf(stderr, "msrnn train: %s\n", msrnn_last_error());
        return 1;
    }
    return 0;
}

/* Rows of an earlier log up to start_step (a resumed run continues it). */
static void load_log(run_state *r, const char *path, int start_step) {
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[512];
    if (!fgets(line, sizeof line, f)) {
        fclose(f);
        return;
    }
    while (fgets(line, sizeof line, f)) {
        row w = {0};
        char val[64] = "";
        if (sscanf(line, "%d,%f,%f,%f,%63[^,],%lf,%lf", &w.step, &w.loss, &w.lr, &w.grad_norm, val,
                   &w.tps, &w.elapsed) != 7) {
            /* empty val_loss column */
            if (sscanf(line, "%d,%f,%f,%f,,%lf,%lf", &w.step, &w.loss, &w.lr, &w.grad_norm, &w.tps,
                       &w.elapsed) != 6)
                continue;
            w.val_loss = NAN;
        } else {
            w.val_loss = strtof(val, NULL);
        }
        if (w.step > start_step) break;
        if (r->n == r->cap) {
            int cap = r->cap ? 2 * r->cap : 1024;
            row *n = realloc(r->rows, (size_t)cap * sizeof *n);
            if (!n) break;
            r->rows = n, r->cap = cap;
        }
        r->rows[r->n++] = w;
        r->elapsed_before = w.elapsed;
    }
    fclose(f);
}

static void fmt_time(char *buf, size_t cap, double s) {
    if (!(s >= 0) || s > 1e7) s = 0;
    const long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, cap, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else
        snprintf(buf, cap, "%ldm%02lds", t / 60, t % 60);
}

static void on_start(void *ctx, const train_info *in) {
    run_state *r = ctx;
    const train_config *c = &in->cfg;
    r->steps = c->steps;
    r->start_step = in->start_step;
    load_log(r, r->o->log, in->start_step);
    const double mb = 1e-6;
    fprintf(stderr,
            "train: %zu parameters; batch %d x ctx %d x accum %d = %d tokens per step; %d steps "
            "(%.1fM tokens, %.2f epochs of %llu training tokens)\n",
            in->n_params, c->batch, c->ctx, c->accum, c->batch * c->ctx * c->accum, c->steps,
            (double)c->steps * c->batch * c->ctx * c->accum * 1e-6,
            (double)c->steps * c->accum * c->batch / (in->train_windows ? in->train_windows : 1),
            (unsigned long long)in->train_tokens);
    fprintf(stderr,
            "train: lr %.2e -> %.2e (warm-up %d, cosine), wd %g, clip %g, betas %g/%g, seed %llu; "
            "validation every %d steps on %llu windows\n",
            c->lr, c->lr_min, c->warmup, c->weight_decay, c->clip, c->beta1, c->beta2,
            (unsigned long long)c->seed, c->eval_every, (unsigned long long)in->val_windows);
    fprintf(stderr,
            "train: peak memory %.1f MB = parameters %.1f + gradients %.1f + AdamW moments %.1f "
            "+ activations %.1f\n",
            (in->bytes_params + in->bytes_grads + in->bytes_moments + in->bytes_acts) * mb,
            in->bytes_params * mb, in->bytes_grads * mb, in->bytes_moments * mb,
            in->bytes_acts * mb);
    if (in->start_step) fprintf(stderr, "train: resuming at step %d\n", in->start_step);
}

static void on_step(void *ctx, const train_progress *p) {
    run_state *r = ctx;
    if (r->n == r->cap) {
        int cap = r->cap ? 2 * r->cap : 1024;
        row *n = realloc(r->rows, (size_t)cap * sizeof *n);
        if (n) r->rows = n, r->cap = cap;
    }
    if (r->n < r->cap)
        r->rows[r->n++] = (row){p->step,
                                p->loss,
                                p->lr,
                                p->grad_norm,
                                p->val_loss,
                                p->tokens_per_s,
                                r->elapsed_before + p->elapsed_s};
    char eta[32];
    fmt_time(eta, sizeof eta, p->eta_s);
    const int newline = !r->tty || isfinite(p->val_loss) || p->step == r->steps;
    fprintf(stderr, "%sstep %d/%d | loss %.4f | lr %.2e | norm %.3f | %.0f tok/s | eta %s",
            r->tty ? "\r\033[K" : "", p->step, r->steps, p->loss, p->lr, p->grad_norm,
            p->tokens_per_s, eta);
    if (isfinite(p->val_loss)) fprintf(stderr, " | val %.4f", p->val_loss);
    if (p->checkpointed) fprintf(stderr, " | ckpt");
    if (newline) fputc('\n', stderr);
    if (r->o->stop_after && p->step - r->start_step >= r->o->stop_after) g_stop = 1;
    if (isfinite(p->val_loss) || p->checkpointed || p->step == r->steps || g_stop) {
        /* a failure is reported (by output_commit / write_plot) and training goes on */
        (void)write_log(r, r->o->log);
        (void)write_plot(r, r->o->plot);
    }
}

static void on_signal(int sig) {
    g_signal = sig;
    g_stop = 1;
}

int cmd_train(int argc, char **argv) {
    arg_set_command(&train_command);
    const char *cmd = "train";
    options o;
    memset(&o, 0, sizeof o);
    o.cfg = train_config_default();
    o.shape = (model_init_params){.dim = 256,
                                  .n_layers = 4,
                                  .n_heads = 4,
                                  .ffn_dim = 704,
                                  .rope_base = 10000.0f,
                                  .norm_eps = 1e-5f,
                                  .type = TYPE_F32,
                                  .init_std = 0.02f,
                                  .seed = 1,
                                  .name = "msrnn"};
    /* the config file first, so that flags override it */
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--config")) {
            if (i + 1 == argc) {
                fprintf(stderr, "msrnn %s: --config needs a value\n", cmd);
                return 2;
            }
            o.config = argv[++i];
        }
    if (o.config) {
        int rc = read_config(cmd, &o, o.config);
        if (rc) return rc;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--config")) {
            i++;
            continue;
        }
        int takes;
        const int r = set_option(cmd, &o, a, i + 1 < argc ? argv[i + 1] : NULL, &takes);
        if (r == -1) {
            arg_unknown(cmd, a);
            return 2;
        }
        if (r) return r;
        i += takes;
    }
    train_paths *p = &o.paths;
    if (!p->train_path || !p->out_path) {
        fprintf(stderr, "msrnn %s: needs --train SHARD and -o OUT.gguf\n", cmd);
        return 2;
    }
    if (!p->resume && !p->init_path == !o.tokenizer) {
        fprintf(stderr,
                "msrnn %s: give either --init MODEL.gguf or --tokenizer TOK.gguf (and a "
                "shape), or --resume\n",
                cmd);
        return 2;
    }
    char ckpt[4096], log[4096], plot[4096], init[4096];
    snprintf(ckpt, sizeof ckpt, "%s.ckpt.gguf", p->out_path);
    snprintf(log, sizeof log, "%s.log.csv", p->out_path);
    snprintf(plot, sizeof plot, "%s.loss.svg", p->out_path);
    if (!p->ckpt_path) p->ckpt_path = ckpt;
    if (!o.log) o.log = log;
    if (!o.plot) o.plot = plot;
    /* no output may replace an input or another output, and every output's folder must take a
     * file now, not at the first checkpoint an hour later (with --resume the checkpoint is read
     * and rewritten by design, so it is an output only) */
    const file_arg ins[] = {{"--train", p->train_path}, {"--val", p->val_path},
                            {"--init", p->init_path},   {"--tokenizer", o.tokenizer},
                            {"--config", o.config},     {"--teacher", p->teacher_path}};
    const file_arg outs[] = {
        {"-o", p->out_path}, {"--ckpt", p->ckpt_path}, {"--log", o.log}, {"--plot", o.plot}};
    int frc = files_check(cmd, ins, 6, outs, 4);
    if (frc) return frc;
    if (!p->resume && o.tokenizer) {
        model_init_params *s = &o.shape;
        if (!s->n_kv_heads) s->n_kv_heads = s->n_heads;
        s->n_ctx = o.cfg.ctx;
        /* training holds 4 f32 copies of the parameters (weights, gradients, two moments): a
         * shape that cannot fit is refused before its starting model is written */
        const uint64_t L = (uint64_t)s->n_layers, D = (uint64_t)s->dim,
                       KV = D / (uint64_t)s->n_heads * (uint64_t)s->n_kv_heads;
        const uint64_t n_params = L * (2 * D * D + 2 * D * KV + 3 * D * (uint64_t)s->ffn_dim);
        char what[160];
        snprintf(what, sizeof what,
                 "train: a new model of dim %d, %d layers, ffn %d (%llu parameters in its layers, "
                 "4 f32 copies)",
                 s->dim, s->n_layers, s->ffn_dim, (unsigned long long)n_params);
        if (memory_check(cmd, 16 * n_params, o.paths.max_memory, what, "--dim, --layers or --ffn"))
            return 1;
        snprintf(init, sizeof init, "%s.init.gguf", p->ckpt_path);
        if (model_write_init(s, o.tokenizer, init) != MSRNN_OK) {
            fprintf(stderr, "msrnn %s: %s\n", cmd, msrnn_last_error());
            return 1;
        }
        p->init_path = init;
        p->vocab_from = o.tokenizer; /* messages name the vocabulary the user gave */
    }
    if (p->init_path != init) { /* a file the user gave: warn about (or refuse) unused tensors */
        const char *mpath = p->resume ? p->ckpt_path : p->init_path;
        msrnn_model *mm = NULL;
        if (msrnn_model_open(mpath, &mm) == MSRNN_OK) { /* else train_run reports it */
            const int bad = check_unused_tensors(cmd, mm, mpath, o.strict);
            msrnn_model_close(mm);
            if (bad) return 1;
        }
    }
    run_state rs = {&o, NULL, 0, 0, isatty(2), 0, 0, 0};
    train_callbacks cb = {on_start, on_step, &rs};
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int stopped = 0;
    const double t0 = now_seconds();
    msrnn_status st = train_run(&o.cfg, p, &cb, &g_stop, &stopped);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    /* the fresh model was only the starting point: a resume reads the checkpoint, a failed run
     * starts again from --tokenizer, so it never outlives the run */
    if (p->init_path == init) unlink(init);
    if (st != MSRNN_OK) {
        fprintf(stderr, "\nmsrnn %s: %s\n", cmd, msrnn_last_error());
        free(rs.rows);
        return 1;
    }
    const row *last = rs.n ? &rs.rows[rs.n - 1] : NULL;
    if (stopped)
        fprintf(stderr, "train: stopped at step %d; checkpoint %s (continue with --resume)\n",
                last ? last->step : 0, p->ckpt_path);
    else
        fprintf(stderr, "train: wrote %s (log %s, plot %s)\n", p->out_path, o.log, o.plot);
    if (o.json) {
        float val = NAN;
        for (int i = rs.n - 1; i >= 0 && !isfinite(val); i--) val = rs.rows[i].val_loss;
        printf("{\"steps\": %d, \"stopped\": %s, \"final_loss\": %.6f, \"val_loss\": ",
               last ? last->step : 0, stopped ? "true" : "false", last ? last->loss : NAN);
        if (isfinite(val))
            printf("%.6f", val);
        else
            printf("null");
        printf(", \"tokens_per_s\": %.2f, \"seconds\": %.2f}\n", last ? last->tps : 0.0,
               now_seconds() - t0);
    }
    free(rs.rows);
    /* interrupted (Ctrl-C, kill) after a clean checkpoint: 128 + the signal, as shells report it
     * (130 for SIGINT); --stop-after is a planned stop and exits 0 */
    return stopped && g_signal ? 128 + g_signal : 0;
}
