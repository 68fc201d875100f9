/* main.c — the msrnn tool: dispatch to one file per subcommand. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const struct {
    const char *name;
    int (*run)(int, char **);
    const char *help;
} commands[] = {
    {"generate", cmd_generate, "generate text from a prompt"},
    {"tokenize", cmd_tokenize, "show the token ids of a text"},
    {"perplexity", cmd_perplexity, "long-document perplexity under a memory policy (--sweep: all)"},
    {"passkey", cmd_passkey, "passkey retrieval accuracy by length and depth under a memory"},
    {"serve", cmd_serve, "an OpenAI-compatible server: many sessions decoded in one batch"},
    {"bench", cmd_bench, "measure prompt-processing and generation speed"},
    {"info", cmd_info, "print a GGUF file's metadata and tensors"},
    {"convert", cmd_convert,
     "turn a llama model into another architecture (--to infini | dijiang)"},
    {"init-model", cmd_init_model, "write a new model with freshly initialised weights"},
    {"tokenizer-train", cmd_tokenizer_train,
     "learn a SentencePiece-style BPE vocabulary from text"},
    {"tokenize-corpus", cmd_tokenize_corpus, "turn text files into a token shard for training"},
    {"train", cmd_train, "train a model (AdamW, checkpoints, --resume)"},
};

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: msrnn COMMAND [options]   (msrnn COMMAND --help for its options)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(f, "  %-16s %s\n", commands[i].name, commands[i].help);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "msrnn: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
