/* args.h — strict parsing of command-line values: a bad number is an error that names the flag. */
#ifndef MSRNN_CLI_ARGS_H
#define MSRNN_CLI_ARGS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Messages of the parsers below start with where ("FILE:LINE: ", for a config file's line) until
 * it is set back to NULL. */
void arg_set_where(const char *where);
const char *arg_where(void); /* "" when none is set */
/* Each returns 0 on success; on failure prints "msrnn CMD: FLAG: ..." to stderr and returns 2. */
int arg_int(const char *cmd, const char *flag, const char *s, long lo, long hi, int *out);
/* A comma-separated list of up to cap integers in [lo, hi] into out; *n receives the count. */
/* 0 when s is a list of non-empty items separated by single commas, at most max_len bytes; else
 * prints what is wrong (naming the flag) and returns 2. */
int arg_list_check(const char *cmd, const char *flag, const char *s, size_t max_len);
int arg_int_list(const char *cmd, const char *flag, const char *s, long lo, long hi, int *out,
                 int cap, int *n);
int arg_u64(const char *cmd, const char *flag, const char *s, uint64_t *out);
int arg_float(const char *cmd, const char *flag, const char *s, double lo, double hi, float *out);

/* ---- option tables ----------------------------------------------------------------------------
 * Each command describes its options once, as data: `msrnn CMD --help` prints them (cli_help), the
 * parsers know them (arg_known, arg_unknown's suggestions), and `msrnn man` and `msrnn completion
 * bash` are generated from them, so the four cannot disagree. The tables live here, beside the
 * known-option check, because the fuzz targets link args.c, config.c and common.c alone. */

/* How an option's entry is laid out in --help (the man page gives each its own paragraph). */
enum {
    CLI_ROW,      /* "  LABEL      help": the help at the table's column (two blanks at least) */
    CLI_INLINE,   /* "  LABEL help": starts a line of short entries ("--dim N (288)") */
    CLI_JOIN,     /* "LABEL help" on the current line, after the table's separator */
    CLI_SYNOPSIS, /* no entry: the synopsis or the description names it */
};

/* An entry, written {"-m", "--model", "FILE", .help = "..."}: the designator keeps -Wextra's
 * missing-initializer warning off the fields left 0. */
typedef struct {
    const char *shortopt; /* "-m", or NULL */
    const char *longopt;  /* "--model", or NULL; neither: a positional argument (its metavar) */
    const char *metavar;  /* "FILE", "f32|f16" ...; NULL for a switch */
    const char *help;     /* lines separated by '\n', wrapped by hand as --help prints them */
    const char *const *values; /* the values it accepts (NULL-terminated), for completion */
    const char *complete; /* what its value completes to: a glob of files ("*.gguf"), "/" folders,
                           * "" nothing, "@command" a command's name; NULL: from the metavar */
    int layout;           /* CLI_ROW ... */
    int indent;           /* blanks before the label (0: 2) */
    int wrap;             /* column of the help's later lines (0: the table's column) */
} cli_option;

typedef struct {
    const char *heading; /* a line above the entries ("training:"), or NULL */
    int column;          /* where a CLI_ROW's help starts */
    const char *join;    /* between the entries of a line of CLI_JOIN ones (NULL: two blanks) */
    const cli_option *options;
    size_t n;
} cli_table;
#define CLI_OPTIONS(array) .options = (array), .n = sizeof(array) / sizeof *(array)

typedef struct {
    const char *name;           /* "generate" */
    const char *summary;        /* one line: msrnn --help's list, the man page's NAME */
    const char *synopsis;       /* "msrnn NAME ..." lines, separated by '\n' */
    const char *description;    /* printed as it is after the synopsis, or NULL */
    const cli_table *tables[4]; /* printed in order; NULL ends */
    const char *exit_status;    /* a paragraph the man page adds to EXIT STATUS, or NULL */
    /* "COMMAND --option": options of other commands that the help names ("passkey --make-data"
     * in train's). Not options of this one: a typo of one is still suggested, as the help names
     * it, and the option itself is refused naming the command it belongs to. */
    const char *mentions[4];
} cli_command;

/* The label of an entry: "-m, --model FILE", "--json", "FILE...". */
void cli_label(char *buf, size_t cap, const cli_option *o);
/* Prints a table's entries, as --help shows them. */
void cli_print_table(FILE *f, const cli_table *t);
/* Prints the command's --help: "usage: " and the synopsis, the description and the tables. */
void cli_help(FILE *f, const cli_command *c);

/* The running command (set once at the start of each command; arg_value and arg_unknown use it):
 * the options of its tables are the known ones. */
void arg_set_command(const cli_command *c);
/* The same from a usage function instead of a command's tables: the options its text names (a
 * '-' at the start of a word) are the known ones. */
void arg_set_usage(void (*usage)(FILE *));
/* 1 when a is a known option (always 1 when neither is set). */
int arg_known(const char *a);
/* Prints "unknown option 'A'" and the closest known option (or, for '--flag=value', how to write
 * it; for a word without '-', that it is stray; for another command's option the help names, that
 * command). */
void arg_unknown(const char *cmd, const char *a);
/* argv[i+1] for a flag that needs a value, or NULL after printing an error (an unknown option is
 * reported as such, not as a missing value). */
const char *arg_value(const char *cmd, int argc, char **argv, int i);

/* Read a whole file (NUL-terminated copy); NULL with an error printed on failure. At most the
 * limit (1 GiB unless read_text_set_limit lowered it) is read: a larger file, or a device such as
 * /dev/zero, is refused with a message naming the file and the limit. */
char *read_text_file(const char *cmd, const char *path, size_t *len);
void read_text_set_limit(uint64_t bytes);
/* A byte count: a number with an optional suffix K, M, G, T (powers of 1000) or KiB, MiB, GiB, TiB
 * (powers of 1024). 0 on success; else prints "msrnn CMD: FLAG: ..." and returns 2. */
int arg_bytes(const char *cmd, const char *flag, const char *s, uint64_t *out);

/* UTF-8 as Unicode §3.9 reads it (see utf8_next in args.c). */
typedef enum { UTF8_CHAR, UTF8_BAD, UTF8_CUT } utf8_unit;
utf8_unit utf8_next(const char *s, size_t len, size_t *n);
/* The length of the longest prefix of s[0..len) that is valid UTF-8 (len when all of it is). */
size_t utf8_valid_prefix(const char *s, size_t len);
/* s[0..len) into out (room for 3 * len bytes) with each maximal ill-formed subpart replaced by
 * U+FFFD; returns the bytes written. */
size_t utf8_clean(const char *s, size_t len, char *out);
/* Bytes at the end of s[0..len) that begin a valid character the input cut off (0..3). */
size_t utf8_cut_tail(const char *s, size_t len);
/* Text written in pieces (generated tokens) as valid UTF-8: a character split between pieces is
 * held until it is whole, ill-formed bytes become U+FFFD, and utf8_stream_end replaces a start
 * left unfinished. Zero-initialise. */
typedef struct {
    char bytes[3];
    size_t held;
} utf8_stream;
void utf8_stream_write(utf8_stream *u, FILE *f, const char *s, size_t len);
void utf8_stream_end(utf8_stream *u, FILE *f);

/* Write s as a JSON string literal; invalid UTF-8 becomes U+FFFD. */
void json_string(FILE *f, const char *s, size_t len);
double now_seconds(void);

#endif
