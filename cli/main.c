/* main.c — the msrnn tool: dispatch to one file per subcommand. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "msrnn.h"

/* msrnn --help's list, in its order; each command's name and summary are in its descriptor */
static const struct {
    int (*run)(int, char **);
    const cli_command *about;
} commands[] = {
    {cmd_generate, &generate_command},
    {cmd_tokenize, &tokenize_command},
    {cmd_perplexity, &perplexity_command},
    {cmd_passkey, &passkey_command},
    {cmd_serve, &serve_command},
    {cmd_bench, &bench_command},
    {cmd_info, &info_command},
    {cmd_convert, &convert_command},
    {cmd_init_model, &init_model_command},
    {cmd_tokenizer_train, &tokenizer_train_command},
    {cmd_tokenize_corpus, &tokenize_corpus_command},
    {cmd_train, &train_command},
    {cmd_man, &man_command},
    {cmd_completion, &completion_command},
};

const cli_command *cli_command_at(size_t i) {
    return i < sizeof commands / sizeof *commands ? commands[i].about : NULL;
}

const cli_command *cli_command_named(const char *name) {
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (!strcmp(name, commands[i].about->name)) return commands[i].about;
    return NULL;
}

static void usage(FILE *f) {
    fprintf(f, "usage: msrnn COMMAND [options]   (msrnn COMMAND --help for its options)\n"
               "       msrnn --version\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(f, "  %-16s %s\n", commands[i].about->name, commands[i].about->summary);
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
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
        /* the tool links the library statically: the two are the same version */
        printf("msrnn %s\n", msrnn_version());
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (!strcmp(argv[1], commands[i].about->name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "msrnn: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
