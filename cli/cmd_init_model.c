/* cmd_init_model.c — `msrnn init-model`: write a Llama GGUF of a chosen shape with freshly
 * initialised weights and another file's vocabulary (a starting point for training; a model of any
 * shape for tests and benchmarks). */
#include <stdio.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "common.h"
#include "model/init.h"
#include "nn/memlayer.h"
#include "parts/part.h"

static const char *const types[] = {"f32", "f16", "bf16", "q8_0", "q4_0", NULL}; /* --type */
static const char *const archs[] = {"llama", "infini", "dijiang", "memoryformer", NULL};
static const char *const rules[] = {"linear", "delta", NULL};
static const char *const weightings[] = {"paper", "code", NULL};

static const cli_option options[] = {
    {NULL, "--vocab-from", "GGUF", .help = "the GGUF file whose vocabulary the model takes",
     .layout = CLI_SYNOPSIS},
    {"-o", "--output", "OUT.gguf", .help = "the model to write (atomically)"},
    {NULL, "--dim", "N", .help = "(288)", .layout = CLI_INLINE},
    {NULL, "--layers", "N", .help = "(6)", .layout = CLI_JOIN},
    {NULL, "--heads", "N", .help = "(6)", .layout = CLI_JOIN},
    {NULL, "--kv-heads", "N", .help = "(= heads)", .layout = CLI_JOIN},
    {NULL, "--ffn", "N", .help = "(768)", .layout = CLI_INLINE},
    {NULL, "--ctx", "N", .help = "(1024)", .layout = CLI_JOIN},
    {NULL, "--type", "f32|f16|bf16|q8_0|q4_0", .help = "(f32)", .values = types,
     .layout = CLI_JOIN},
    {NULL, "--tied", NULL, .help = "share the embedding as output head"},
    {NULL, "--arch", "A",
     .help = "llama (default), infini (Infini-attention, METHODS.md §2),\n"
             "dijiang (DCT-feature linear attention, METHODS.md §3) or\n"
             "memoryformer (hash-table projections, METHODS.md §4)",
     .values = archs},
    {NULL, "--segment", "N", .help = "infini: tokens per segment (2048)"},
    {NULL, "--rule", "R", .help = "infini: memory rule, linear (default) or delta",
     .values = rules},
    {NULL, "--features", "M", .help = "dijiang: features per head (head dim)"},
    {NULL, "--hash-bits", "T",
     .help = "memoryformer: τ, bits per chunk of Q/K/V and the block's first\n"
             "layer (8; dim must be a multiple); --ffn is ignored (K·τ₂)"},
    {NULL, "--block-hash-bits", "T2",
     .help = "memoryformer: τ₂ of the block's second layer (τ + 2)"},
    {NULL, "--weighting", "W", .help = "memoryformer: paper (default) or code",
     .values = weightings},
    {NULL, "--temperature", "X", .help = "memoryformer: t of the paper's weighting (1)"},
    {NULL, "--no-bias", NULL,
     .help = "memoryformer: no bias on the memory layers\n"
             "(tables are f32 unless --type is f16 or bf16)"},
    {NULL, "--std", "X", .help = "init standard deviation (0.02)"},
    {NULL, "--seed", "N", .help = "(0)"},
    {NULL, "--max-memory", "BYTES",
     .help = "refuse a model whose writing needs more memory (suffixes\n"
             "K, M, G, KiB, MiB, GiB; default: the machine's available memory)"},
};
static const cli_table table = {.column = 17, CLI_OPTIONS(options)};

const cli_command init_model_command = {
    .name = "init-model",
    .summary = "write a new model with freshly initialised weights",
    .synopsis = "msrnn init-model --vocab-from GGUF -o OUT.gguf [shape options]",
    .tables = {&table},
};

static void usage(FILE *f) { cli_help(f, &init_model_command); }

int cmd_init_model(int argc, char **argv) {
    arg_set_command(&init_model_command);
    const char *cmd = "init-model", *vocab = NULL, *out = NULL;
    model_init_params p;
    memset(&p, 0, sizeof p);
    p.dim = 288, p.n_layers = 6, p.n_heads = 6, p.ffn_dim = 768, p.n_ctx = 1024;
    p.rope_base = 10000.0f, p.norm_eps = 1e-5f, p.type = TYPE_F32, p.init_std = 0.02f;
    int rc = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--tied")) {
            p.tied = 1;
            continue;
        }
        if (!strcmp(a, "--no-bias")) {
            p.no_bias = 1;
            continue;
        }
        if (!(v = arg_value(cmd, argc, argv, i++))) return 2;
        if (!strcmp(a, "--vocab-from"))
            vocab = v;
        else if (!strcmp(a, "-o") || !strcmp(a, "--output"))
            out = v;
        else if (!strcmp(a, "--dim"))
            rc = arg_int(cmd, a, v, 2, 65536, &p.dim);
        else if (!strcmp(a, "--layers"))
            rc = arg_int(cmd, a, v, 1, 1024, &p.n_layers);
        else if (!strcmp(a, "--heads"))
            rc = arg_int(cmd, a, v, 1, 1024, &p.n_heads);
        else if (!strcmp(a, "--kv-heads"))
            rc = arg_int(cmd, a, v, 1, 1024, &p.n_kv_heads);
        else if (!strcmp(a, "--ffn"))
            rc = arg_int(cmd, a, v, 1, 1 << 20, &p.ffn_dim);
        else if (!strcmp(a, "--ctx"))
            rc = arg_int(cmd, a, v, 1, 1 << 24, &p.n_ctx);
        else if (!strcmp(a, "--std"))
            rc = arg_float(cmd, a, v, 1e-6, 10, &p.init_std);
        else if (!strcmp(a, "--seed"))
            rc = arg_u64(cmd, a, v, &p.seed);
        else if (!strcmp(a, "--arch"))
            p.arch = v;
        else if (!strcmp(a, "--segment"))
            rc = arg_int(cmd, a, v, 1, 1 << 24, &p.segment);
        else if (!strcmp(a, "--features"))
            rc = arg_int(cmd, a, v, 1, 65536, &p.features);
        else if (!strcmp(a, "--hash-bits"))
            rc = arg_int(cmd, a, v, 1, 16, &p.hash_bits);
        else if (!strcmp(a, "--block-hash-bits"))
            rc = arg_int(cmd, a, v, 1, 16, &p.block_hash_bits);
        else if (!strcmp(a, "--temperature"))
            rc = arg_float(cmd, a, v, 1e-3, 1e3, &p.temperature);
        else if (!strcmp(a, "--weighting")) {
            rc = strcmp(v, "paper") && strcmp(v, "code") ? 2 : 0;
            p.weighting = !strcmp(v, "code") ? MEM_WEIGHT_CODE : MEM_WEIGHT_PAPER;
            if (rc)
                fprintf(stderr, "msrnn %s: --weighting expects paper or code, got '%s'\n", cmd, v);
        } else if (!strcmp(a, "--rule")) {
            rc = strcmp(v, "linear") && strcmp(v, "delta") ? 2 : 0;
            p.memory_rule = !strcmp(v, "delta") ? MEMORY_RULE_DELTA : MEMORY_RULE_LINEAR;
            if (rc) fprintf(stderr, "msrnn %s: --rule expects linear or delta, got '%s'\n", cmd, v);
        } else if (!strcmp(a, "--max-memory"))
            rc = max_memory_parse(cmd, a, v, &p.max_memory);
        else if (!strcmp(a, "--type")) {
            const tensor_type as[] = {TYPE_F32, TYPE_F16, TYPE_BF16, TYPE_Q8_0, TYPE_Q4_0};
            rc = 2;
            for (int k = 0; types[k]; k++)
                if (!strcmp(v, types[k])) p.type = as[k], rc = 0;
            if (rc)
                fprintf(stderr, "msrnn %s: --type expects f32, f16, bf16, q8_0 or q4_0, got '%s'\n",
                        cmd, v);
        } else {
            arg_unknown(cmd, a);
            return 2;
        }
        if (rc) return rc;
    }
    if (!vocab || !out) {
        fprintf(stderr, "msrnn %s: needs --vocab-from GGUF and -o OUT.gguf\n", cmd);
        return 2;
    }
    const file_arg ins[] = {{"--vocab-from", vocab}}, outs[] = {{"-o", out}};
    int frc = files_check(cmd, ins, 1, outs, 1);
    if (frc) return frc;
    if (p.n_kv_heads == 0) p.n_kv_heads = p.n_heads;
    if (model_write_init(&p, vocab, out) != MSRNN_OK) {
        fprintf(stderr, "msrnn %s: %s\n", cmd, msrnn_last_error());
        return 1;
    }
    fprintf(stderr, "msrnn %s: wrote %s\n", cmd, out);
    return 0;
}
