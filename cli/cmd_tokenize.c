/* cmd_tokenize.c — `msrnn tokenize`: the ids of a text under a file's tokenizer. Needs only the
 * vocabulary (a vocab-only GGUF works). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "io/gguf.h"
#include "text/tokenizer.h"

/* The synopsis and the description name every option: --help prints no table */
static const cli_option options[] = {
    {"-m", "--model", "FILE", .help = "a GGUF file with a vocabulary (a vocab-only one works)",
     .complete = "*.gguf"},
    {"-p", "--prompt", "TEXT", .help = "the text to tokenize", .complete = ""},
    {"-f", "--file", "FILE", .help = "read the text from a file"},
    {NULL, "--no-bos", NULL, .help = "no BOS token before the text", .layout = CLI_SYNOPSIS},
    {NULL, "--special", NULL,
     .help = "the text of a special token (<s>, <|im_start|>) is that token, as llama.cpp's "
             "parse_special",
     .layout = CLI_SYNOPSIS},
    {NULL, "--json", NULL, .help = "print {\"ids\": [...]}", .layout = CLI_SYNOPSIS},
    {NULL, "--ids", NULL, .help = "print the ids on one line", .layout = CLI_SYNOPSIS},
};
static const cli_table table = {.column = 21, CLI_OPTIONS(options)};

const cli_command tokenize_command = {
    .name = "tokenize",
    .summary = "show the token ids of a text",
    .synopsis =
        "msrnn tokenize -m FILE (-p TEXT | -f FILE) [--no-bos] [--special] [--json | --ids]",
    .description = "  prints one 'id<TAB>piece' line per token; --ids prints the ids on one line;\n"
                   "  --json prints {\"ids\": [...]}; --special reads the text of a special token\n"
                   "  (<s>, </s>, <|im_start|>: control, user-defined and unknown tokens) as that\n"
                   "  token, as llama.cpp's parse_special (chat prompts)\n",
    .tables = {&table},
};

static void usage(FILE *f) { cli_help(f, &tokenize_command); }

int cmd_tokenize(int argc, char **argv) {
    arg_set_command(&tokenize_command);
    const char *cmd = "tokenize", *model = NULL, *text = NULL, *file = NULL;
    int bos = 1, json = 0, only_ids = 0, special = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--no-bos"))
            bos = 0;
        else if (!strcmp(a, "--special"))
            special = 1;
        else if (!strcmp(a, "--json"))
            json = 1;
        else if (!strcmp(a, "--ids"))
            only_ids = 1;
        else if (!strcmp(a, "-m") || !strcmp(a, "--model") || !strcmp(a, "-p") ||
                 !strcmp(a, "--prompt") || !strcmp(a, "-f") || !strcmp(a, "--file")) {
            const char *v = arg_value(cmd, argc, argv, i++);
            if (!v) return 2;
            if (a[1] == 'm' || a[2] == 'm')
                model = v;
            else if (a[1] == 'p' || a[2] == 'p')
                text = v;
            else
                file = v;
        } else {
            arg_unknown(cmd, a);
            return 2;
        }
    }
    if (!model || !text == !file) {
        fprintf(stderr, "msrnn %s: needs -m FILE and exactly one of -p TEXT or -f FILE\n", cmd);
        return 2;
    }
    char *owned = NULL;
    size_t len;
    if (file) {
        if (!(owned = read_text_file(cmd, file, &len))) return 1;
        text = owned;
    } else {
        len = strlen(text);
    }
    gguf_file *g = NULL;
    spm_tokenizer *tok = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = 0;
    size_t cap = 0;
    if (gguf_open(model, &g) != MSRNN_OK || spm_tokenizer_from_gguf(g, &tok) != MSRNN_OK ||
        !(ids = malloc((cap = special ? spm_max_ids_special(tok, len) : spm_max_ids(tok, len)) *
                       sizeof *ids)) ||
        (special ? spm_encode_special(tok, text, len, bos, ids, cap, &n)
                 : spm_encode(tok, text, len, bos, ids, cap, &n)) != MSRNN_OK) {
        fprintf(stderr, "msrnn %s: %s\n", cmd, ids || !tok ? msrnn_last_error() : "out of memory");
        rc = 1;
    } else if (json || only_ids) {
        printf(json ? "{\"ids\": [" : "");
        for (size_t i = 0; i < n; i++)
            printf(json ? "%s%d" : "%s%d", i ? (json ? ", " : " ") : "", ids[i]);
        printf(json ? "]}\n" : "\n");
    } else {
        char piece[256];
        for (size_t i = 0; i < n; i++) {
            size_t pl = spm_token_to_text(tok, i ? ids[i - 1] : -1, ids[i], piece, sizeof piece);
            printf("%d\t", ids[i]);
            json_string(stdout, piece, pl < sizeof piece ? pl : sizeof piece);
            printf("\n");
        }
    }
    free(ids);
    spm_tokenizer_free(tok);
    gguf_close(g);
    free(owned);
    return rc;
}
