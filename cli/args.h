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
/* The running command's usage function: the options its text names are the known ones (set once
 * at the start of each command; arg_value and arg_unknown use it). */
void arg_set_usage(void (*usage)(FILE *));
/* 1 when a is an option the usage text names (always 1 when no usage is set). */
int arg_known(const char *a);
/* Prints "unknown option 'A'" and the closest known option (or, for '--flag=value', how to write
 * it; for a word without '-', that it is stray). */
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

/* The length of the longest prefix of s[0..len) that is valid UTF-8 (len when all of it is). */
size_t utf8_valid_prefix(const char *s, size_t len);

/* Write s as a JSON string literal; invalid UTF-8 becomes U+FFFD. */
void json_string(FILE *f, const char *s, size_t len);
double now_seconds(void);

#endif
