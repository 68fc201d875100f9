/* cmd_convert.c — `msrnn convert`: a trained llama model as the starting point of another
 * architecture (src/model/convert.h). */
#include <stdio.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "common.h"
#include "model/convert.h"

static const char *const archs[] = {"infini", "dijiang", NULL}; /* --to */
static const char *const rules[] = {"linear", "delta", NULL};
static const char *const samplers[] = {"halton", "random", NULL};

/* --to's two values each head their own options (indented under it) */
static const cli_option options[] = {
    {"-m", "--model", "LLAMA.gguf", .help = "the llama model to convert"},
    {"-o", "--output", "OUT.gguf", .help = "the model to write (atomically)"},
    {NULL, "--to", "infini",
     .help = "Infini-attention (METHODS.md §2): segment attention plus a\n"
             "compressive memory per kv head, gates beta = 0",
     .values = archs},
    {NULL, "--segment", "N", .help = "tokens per segment (2048)", .indent = 4},
    {NULL, "--rule", "R", .help = "memory rule: linear (default) or delta", .values = rules,
     .indent = 4},
    {NULL, "--to", "dijiang",
     .help = "DiJiang (METHODS.md §3): linear attention through a DCT feature\n"
             "map P with a decay per head; W_G Xavier-uniform (gain 2^-2.5),\n"
             "GroupNorm weight 1 and bias 0",
     .values = archs},
    {NULL, "--features", "M", .help = "features per head, the columns of P (head dim)",
     .indent = 4},
    {NULL, "--sampler", "S",
     .help = "P's weights: halton (default, quasi-Monte Carlo) or random\n"
             "(seeded uniform numbers, the official code's choice)",
     .values = samplers, .indent = 4},
    {NULL, "--seed", "N", .help = "seed of the random sampler and of W_G (1)", .indent = 4},
};
static const cli_table table = {.column = 18, CLI_OPTIONS(options)};

const cli_command convert_command = {
    .name = "convert",
    .summary = "turn a llama model into another architecture (--to infini | dijiang)",
    .synopsis = "msrnn convert --to ARCH -m LLAMA.gguf -o OUT.gguf [options]",
    .description = "  copies every weight of a llama model and adds what ARCH needs\n",
    .tables = {&table},
};

static void usage(FILE *f) { cli_help(f, &convert_command); }

int cmd_convert(int argc, char **argv) {
    arg_set_command(&convert_command);
    const char *cmd = "convert", *in = NULL, *out = NULL, *to = NULL;
    hparams method;
    memset(&method, 0, sizeof method);
    method.segment = 2048;
    method.seed = 1;
    int rc = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!(v = arg_value(cmd, argc, argv, i++))) return 2;
        if (!strcmp(a, "-m") || !strcmp(a, "--model"))
            in = v;
        else if (!strcmp(a, "-o") || !strcmp(a, "--output"))
            out = v;
        else if (!strcmp(a, "--to"))
            to = v;
        else if (!strcmp(a, "--segment"))
            rc = arg_int(cmd, a, v, 1, 1 << 24, &method.segment);
        else if (!strcmp(a, "--features"))
            rc = arg_int(cmd, a, v, 1, 65536, &method.features);
        else if (!strcmp(a, "--seed"))
            rc = arg_u64(cmd, a, v, &method.seed);
        else if (!strcmp(a, "--sampler")) {
            rc = strcmp(v, "halton") && strcmp(v, "random") ? 2 : 0;
            method.sampler = !strcmp(v, "random") ? FEATURE_SAMPLER_RANDOM : FEATURE_SAMPLER_HALTON;
            if (rc)
                fprintf(stderr, "msrnn %s: --sampler expects halton or random, got '%s'\n", cmd, v);
        } else if (!strcmp(a, "--rule")) {
            rc = strcmp(v, "linear") && strcmp(v, "delta") ? 2 : 0;
            method.memory_rule = !strcmp(v, "delta") ? MEMORY_RULE_DELTA : MEMORY_RULE_LINEAR;
            if (rc) fprintf(stderr, "msrnn %s: --rule expects linear or delta, got '%s'\n", cmd, v);
        } else {
            arg_unknown(cmd, a);
            return 2;
        }
        if (rc) return rc;
    }
    if (!in || !out || !to) {
        fprintf(stderr, "msrnn %s: needs --to ARCH, -m LLAMA.gguf and -o OUT.gguf\n", cmd);
        return 2;
    }
    if (strcmp(to, "infini") && strcmp(to, "dijiang")) {
        fprintf(stderr, "msrnn %s: --to expects infini or dijiang, got '%s'\n", cmd, to);
        return 2;
    }
    const file_arg ins[] = {{"-m", in}}, outs[] = {{"-o", out}};
    const int frc = files_check(cmd, ins, 1, outs, 1);
    if (frc) return frc;
    const msrnn_status st = model_convert(in, to, &method, out);
    if (st != MSRNN_OK) {
        fprintf(stderr, "msrnn %s: %s\n", cmd, msrnn_last_error());
        return exit_status(st);
    }
    if (!strcmp(to, "dijiang"))
        fprintf(stderr, "msrnn %s: wrote %s (dijiang, %s sampler)\n", cmd, out,
                method.sampler ? "random" : "halton");
    else
        fprintf(stderr, "msrnn %s: wrote %s (%s, segment %d, %s rule)\n", cmd, out, to,
                method.segment, method.memory_rule == MEMORY_RULE_DELTA ? "delta" : "linear");
    return 0;
}
