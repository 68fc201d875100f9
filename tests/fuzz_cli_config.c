/* fuzz_cli_config.c — libFuzzer target for the config-file parser (cli/config.c).
 *
 * Any input must either be refused with status 2 (the message naming the file and line) or parse
 * into settings whose names are 1..63 of [a-z0-9-] not starting with '-', whose values are
 * non-empty and without the newline, '#' or surrounding blanks, and whose "where" names the file
 * and a line within the text. Each setting is then applied as `--name value` through the shared
 * option parser (cli/common.c) and the value parsers (cli/args.c), as `msrnn train` does.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "common.h"
#include "config.h"

typedef struct {
    int n_lines, n_settings;
    run_options o;
} state;

static void usage(FILE *f) {
    fprintf(f, "%s  --lr X  --steps N  --sizes A,B  --resume\n", RUN_OPTIONS_HELP);
}

static int on_setting(void *ctx, const char *name, const char *value, const char *where) {
    state *s = ctx;
    size_t n = strlen(name);
    if (n == 0 || n > 63 || name[0] == '-' ||
        strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789-") != n)
        abort();
    if (value && (!*value || strchr(value, '\n') || strchr(value, '#') ||
                  strchr(" \t\r", value[0]) || strchr(" \t\r", value[strlen(value) - 1])))
        abort();
    const char *colon = strrchr(where, ':');
    if (!colon || strncmp(where, "fuzz.conf:", 10) || atoi(colon + 1) < 1 ||
        atoi(colon + 1) > s->n_lines)
        abort();
    s->n_settings++;
    char flag[80];
    snprintf(flag, sizeof flag, "--%s", name);
    char *argv[] = {"fuzz", flag, (char *)(value ? value : ""), NULL};
    int i = 1, rc = 0;
    if (value && run_options_parse("fuzz", &s->o, 3, argv, &i, &rc)) return rc;
    if (!value) return arg_known(flag) ? 0 : 2;
    int iv;
    float fv;
    uint64_t uv;
    int list[8], n_list;
    if (!strcmp(name, "lr")) return arg_float("fuzz", flag, value, 1e-9, 10, &fv);
    if (!strcmp(name, "steps")) return arg_int("fuzz", flag, value, 1, 1 << 30, &iv);
    if (!strcmp(name, "sizes"))
        return arg_int_list("fuzz", flag, value, 1, 1 << 20, list, 8, &n_list);
    return arg_u64("fuzz", flag, value, &uv);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    stderr = fopen("/dev/null", "w"); /* the parsers' messages; sanitizer reports use fd 2 */
    arg_set_usage(usage);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    state s = {1, 0, {0}};
    for (size_t i = 0; i < size; i++) s.n_lines += data[i] == '\n';
    run_options_init(&s.o);
    int rc = config_parse("fuzz", "fuzz.conf", (const char *)data, size, on_setting, &s);
    if (rc != 0 && rc != 2) abort();
    if (rc == 0) (void)run_options_check("fuzz", &s.o);
    return 0;
}
