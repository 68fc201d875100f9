/* cmd_completion.c — `msrnn completion bash`: a bash completion script for msrnn on stdout,
 * generated from the commands' descriptors (args.h's cli_command), the tables their --help prints:
 * the command names after `msrnn`, each command's options, and the values of an option that takes
 * one of a few words (--kv's memories) or a file (-m: GGUF files and folders). The build installs
 * it as bash-completion's completions/msrnn; `source <(msrnn completion bash)` loads it by hand. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "args.h"
#include "cli.h"

static const char *const shells[] = {"bash", NULL};

static const cli_option options[] = {
    {NULL, NULL, "bash", .help = "the shell the script is for (the one supported)",
     .values = shells},
};
static const cli_table table = {.column = 12, CLI_OPTIONS(options)};

const cli_command completion_command = {
    .name = "completion",
    .summary = "print the bash completion script",
    .synopsis = "msrnn completion bash",
    .description =
        "  prints a bash completion script on stdout: the commands, their options and the\n"
        "  values of those that take a file or one of a few words, from the tables\n"
        "  that each command's --help prints; load it with:\n"
        "  source <(msrnn completion bash)\n",
    .tables = {&table},
};

static void usage(FILE *f) { cli_help(f, &completion_command); }

/* What the value of o completes to: "@words" (its values, or the words of a metavar such as
 * "f32|f16"), "@command" (a command's name), a glob of files ("*" any, "*.gguf"), "/" (folders),
 * or "" (nothing: a number, a name, a text). NULL for a switch. Files are recognised by the
 * metavar: FILE, TEXT, TSV, GGUF, DIR, or a name with an extension (OUT.json); an entry's .complete
 * overrides that (-p TEXT is a prompt, not a file). */
static const char *value_kind(const cli_option *o, char *glob, size_t cap) {
    if (!o->metavar) return NULL;
    if (o->values || strchr(o->metavar, '|')) return "@words";
    if (o->complete) return o->complete;
    char base[64];
    snprintf(base, sizeof base, "%s", o->metavar);
    const size_t n = strlen(base);
    if (n > 3 && !strcmp(base + n - 3, "...")) base[n - 3] = 0; /* FILE... */
    if (!strcmp(base, "DIR")) return "/";
    if (!strcmp(base, "GGUF")) return "*.gguf";
    const char *dot = strrchr(base, '.');
    if (dot && dot[1] &&
        strspn(dot + 1, "abcdefghijklmnopqrstuvwxyz0123456789") == strlen(dot + 1)) {
        snprintf(glob, cap, "*%s", dot);
        return glob;
    }
    if (!strcmp(base, "FILE") || !strcmp(base, "TEXT") || !strcmp(base, "TSV")) return "*";
    return "";
}

/* The words o's value is one of, separated by blanks: its values, else its metavar's. */
static void print_words(FILE *f, const cli_option *o) {
    if (o->values) {
        for (size_t k = 0; o->values[k]; k++) fprintf(f, "%s%s", k ? " " : "", o->values[k]);
        return;
    }
    for (const char *p = o->metavar; *p; p++) fputc(*p == '|' ? ' ' : *p, f);
}

static void print_commands(FILE *f) {
    for (size_t i = 0; cli_command_at(i); i++)
        fprintf(f, "%s%s", i ? " " : "", cli_command_at(i)->name);
}

/* The statement that completes a value of that kind (o's words, a command, files, folders). */
static void print_action(FILE *f, const cli_option *o, const char *kind) {
    if (!strcmp(kind, "@words")) {
        fputs("COMPREPLY=($(compgen -W '", f);
        print_words(f, o);
        fputs("' -- \"$cur\"))", f);
    } else if (!strcmp(kind, "@command")) {
        fputs("COMPREPLY=($(compgen -W '", f);
        print_commands(f);
        fputs("' -- \"$cur\"))", f);
    } else {
        fprintf(f, "_msrnn_files '%s'", kind);
    }
}

/* 1 when an entry before tables[t]->options[i] has the same flags (convert's two --to rows). */
static int seen_before(const cli_command *c, size_t t, size_t i) {
    const cli_option *o = &c->tables[t]->options[i];
    for (size_t u = 0; u <= t; u++)
        for (size_t j = 0; j < (u < t ? c->tables[u]->n : i); j++) {
            const cli_option *p = &c->tables[u]->options[j];
            if ((o->shortopt || o->longopt) &&
                !strcmp(o->shortopt ? o->shortopt : "", p->shortopt ? p->shortopt : "") &&
                !strcmp(o->longopt ? o->longopt : "", p->longopt ? p->longopt : ""))
                return 1;
        }
    return 0;
}

#define EACH_OPTION(c, t, i, o)                                                                    \
    for (size_t t = 0; t < sizeof(c)->tables / sizeof *(c)->tables && (c)->tables[t]; t++)         \
        for (size_t i = 0; i < (c)->tables[t]->n; i++)                                             \
            for (const cli_option *o = &(c)->tables[t]->options[i]; o; o = NULL)

/* The flags of o as a case pattern ("-m | --model"). */
static void print_pattern(FILE *f, const cli_option *o) {
    fprintf(f, "%s%s%s", o->shortopt ? o->shortopt : "", o->shortopt && o->longopt ? " | " : "",
            o->longopt ? o->longopt : "");
}

static void command_case(FILE *f, const cli_command *c) {
    char glob[80];
    int values = 0; /* options that take a value: the case on the word before the cursor */
    EACH_OPTION(c, t, i, o) values += (o->shortopt || o->longopt) && o->metavar;
    fprintf(f, "    %s)\n", c->name);
    if (values) fputs("        case $prev in\n", f);
    /* a value with something to offer: an arm each */
    EACH_OPTION(c, t, i, o) {
        const char *kind = value_kind(o, glob, sizeof glob);
        if (!(o->shortopt || o->longopt) || !kind || !*kind || seen_before(c, t, i)) continue;
        fputs("        ", f), print_pattern(f, o), fputs(")\n            ", f);
        print_action(f, o, kind);
        fputs("\n            return 0\n            ;;\n", f);
    }
    /* a value with nothing to offer (a number, a name): one arm for all */
    int any = 0;
    EACH_OPTION(c, t, i, o) {
        const char *kind = value_kind(o, glob, sizeof glob);
        if (!(o->shortopt || o->longopt) || !kind || *kind || seen_before(c, t, i)) continue;
        fputs(any++ ? " | " : "        ", f), print_pattern(f, o);
    }
    if (any) fputs(")\n            return 0\n            ;;\n", f);
    if (values) fputs("        esac\n", f);
    /* the first positional argument's values, for a word that is not an option */
    EACH_OPTION(c, t, i, o) {
        const char *kind = value_kind(o, glob, sizeof glob);
        if (o->shortopt || o->longopt || !kind || !*kind) continue;
        fputs("        if [[ $cur != -* ]]; then\n            ", f);
        print_action(f, o, kind);
        fputs("\n            return 0\n        fi\n", f);
        break;
    }
    fputs("        COMPREPLY=($(compgen -W '", f);
    EACH_OPTION(c, t, i, o) {
        if (seen_before(c, t, i)) continue;
        if (o->shortopt) fprintf(f, "%s ", o->shortopt);
        if (o->longopt) fprintf(f, "%s ", o->longopt);
    }
    fputs("-h --help' -- \"$cur\"))\n        ;;\n", f);
}

static void script(FILE *f) {
    fputs(
        "# bash completion for msrnn: generated by `msrnn completion bash` from the option tables\n"
        "# that `msrnn COMMAND --help` prints. Load it with `source <(msrnn completion bash)`, or\n"
        "# install it as bash-completion's completions/msrnn.\n"
        "\n"
        "# The files matching the glob $1 (\"*\": any) and the folders, or the folders alone "
        "(\"/\").\n"
        "_msrnn_files() {\n"
        "    local IFS=$'\\n'\n"
        "    compopt -o filenames 2>/dev/null\n"
        "    if [[ $1 == / ]]; then\n"
        "        COMPREPLY=($(compgen -d -- \"$cur\"))\n"
        "    elif [[ $1 == '*' ]]; then\n"
        "        COMPREPLY=($(compgen -f -- \"$cur\"))\n"
        "    else\n"
        "        COMPREPLY=($(compgen -f -X \"!$1\" -- \"$cur\") $(compgen -d -- \"$cur\"))\n"
        "    fi\n"
        "}\n"
        "\n"
        "_msrnn() {\n"
        "    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}\n"
        "    COMPREPLY=()\n"
        "    if ((COMP_CWORD == 1)); then\n"
        "        COMPREPLY=($(compgen -W '",
        f);
    print_commands(f);
    fputs(" -h --help' -- \"$cur\"))\n"
          "        return 0\n"
          "    fi\n"
          "    case ${COMP_WORDS[1]} in\n",
          f);
    for (size_t i = 0; cli_command_at(i); i++) command_case(f, cli_command_at(i));
    fputs("    esac\n"
          "    return 0\n"
          "}\n"
          "\n"
          "complete -F _msrnn msrnn\n",
          f);
}

int cmd_completion(int argc, char **argv) {
    arg_set_command(&completion_command);
    const char *cmd = "completion", *shell = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (a[0] == '-' && a[1]) {
            arg_unknown(cmd, a);
            return 2;
        } else if (shell) {
            fprintf(stderr, "msrnn %s: one shell at most ('%s' and '%s')\n", cmd, shell, a);
            return 2;
        }
        shell = a;
    }
    if (!shell) {
        fprintf(stderr, "msrnn %s: which shell? (msrnn completion bash)\n", cmd);
        return 2;
    }
    if (strcmp(shell, "bash")) {
        fprintf(stderr, "msrnn %s: unknown shell '%s' (bash is the one supported)\n", cmd, shell);
        return 2;
    }
    script(stdout);
    if (fflush(stdout) || ferror(stdout)) {
        fprintf(stderr, "msrnn %s: cannot write the script: %s\n", cmd, strerror(errno));
        return 1;
    }
    return 0;
}
