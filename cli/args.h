/* args.h — strict parsing of command-line values: a bad number is an error that names the flag. */
#ifndef MSRNN_CLI_ARGS_H
#define MSRNN_CLI_ARGS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

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
/* argv[i+1] for a flag that needs a value, or NULL after printing an error. */
const char *arg_value(const char *cmd, int argc, char **argv, int i);

/* Read a whole file (NUL-terminated copy); NULL with an error printed on failure. */
char *read_text_file(const char *cmd, const char *path, size_t *len);

/* Write s as a JSON string literal; invalid UTF-8 becomes U+FFFD. */
void json_string(FILE *f, const char *s, size_t len);
double now_seconds(void);

#endif
