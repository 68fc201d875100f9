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

static void usage(FILE *f) {
    fprintf(f,
            "usage: msrnn init-model --vocab-from GGUF -o OUT.gguf [shape options]\n"
            "  --dim N (288)  --layers N (6)  --heads N (6)  --kv-heads N (= heads)\n"
            "  --ffn N (768)  --ctx N (1024)  --type f32|f16|bf16|q8_0|q4_0 (f32)\n"
            "  --tied         share the embedding as output head\n"
            "  --arch A       llama (default), infini (Infini-attention, METHODS.md §2),\n"
            "                 dijiang (DCT-feature linear attention, METHODS.md §3) or\n"
            "                 memoryformer (hash-table projections, METHODS.md §4)\n"
            "  --segment N    infini: tokens per segment (2048)\n"
            "  --rule R       infini: memory rule, linear (default) or delta\n"
            "  --features M   dijiang: features per head (head dim)\n"
            "  --hash-bits T  memoryformer: τ, bits per chunk of Q/K/V and the block's first\n"
            "                 layer (8; dim must be a multiple); --ffn is ignored (K·τ₂)\n"
            "  --block-hash-bits T2  memoryformer: τ₂ of the block's second layer (τ + 2)\n"
            "  --weighting W  memoryformer: paper (default) or code\n"
            "  --temperature X  memoryformer: t of the paper's weighting (1)\n"
            "  --no-bias      memoryformer: no bias on the memory layers\n"
            "                 (tables are f32 unless --type is f16 or bf16)\n"
            "  --std X        init standard deviation (0.02)\n"
            "  --seed N       (0)\n"
            "  --max-memory BYTES  refuse a model whose writing needs more memory (suffixes\n"
            "                 K, M, G, KiB, MiB, GiB; default: the machine's available memory)\n");
}

int cmd_init_model(int argc, char **argv) {
    arg_set_usage(usage);
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
            const char *names[] = {"f32", "f16", "bf16", "q8_0", "q4_0"};
            const tensor_type types[] = {TYPE_F32, TYPE_F16, TYPE_BF16, TYPE_Q8_0, TYPE_Q4_0};
            rc = 2;
            for (int k = 0; k < 5; k++)
                if (!strcmp(v, names[k])) p.type = types[k], rc = 0;
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
