/* fuzz_cli_args.c — libFuzzer target for the command-line argument parsers: the shared options of
 * generate/perplexity/bench (cli/common.c's run_options_parse and run_options_check) and the value
 * parsers, the known-option check and the "unknown option / did you mean" report (cli/args.c).
 *
 * The input is split at NUL bytes into up to 64 arguments and parsed as a command would parse
 * them. Every parser must return 0 or 2 (never crash, read out of bounds or loop), a consumed
 * index must stay inside argv, and a value a parser accepted must lie in the range it was given.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "common.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: msrnn fuzz [options]\n%s"
            "  -n, --n-predict N  --temp X  --seed N  --sweep A,B,C  --json\n",
            RUN_OPTIONS_HELP);
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
    char *buf = malloc(size + 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    buf[size] = 0;
    char *argv[66];
    int argc = 0;
    argv[argc++] = "fuzz";
    for (char *p = buf; argc < 65 && p <= buf + size; p += strlen(p) + 1) argv[argc++] = p;
    argv[argc] = NULL;
    run_options o;
    run_options_init(&o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int rc = 0, before = i;
        if (run_options_parse("fuzz", &o, argc, argv, &i, &rc)) {
            if ((rc != 0 && rc != 2) || i >= argc || i < before) abort();
            if (rc) break;
            continue;
        }
        if (!strcmp(a, "--json")) continue;
        const char *v = arg_value("fuzz", argc, argv, i);
        if (!v) {
            if (arg_known(a) && i + 1 < argc) abort(); /* a known flag with a value after it */
            break;
        }
        i++;
        int iv = 0, list[8], n = 0;
        float fv = 0;
        uint64_t uv = 0;
        if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) {
            if (!arg_int("fuzz", a, v, 0, 1 << 28, &iv) && (iv < 0 || iv > 1 << 28)) abort();
        } else if (!strcmp(a, "--temp")) {
            if (!arg_float("fuzz", a, v, 0, 1e6, &fv) && !(fv >= 0 && fv <= 1e6f)) abort();
        } else if (!strcmp(a, "--seed")) {
            (void)arg_u64("fuzz", a, v, &uv);
        } else if (!strcmp(a, "--sweep")) {
            if (!arg_int_list("fuzz", a, v, 1, 1 << 20, list, 8, &n))
                for (int k = 0; k < n; k++)
                    if (n > 8 || list[k] < 1 || list[k] > 1 << 20) abort();
        } else {
            arg_unknown("fuzz", a);
        }
    }
    (void)run_options_check("fuzz", &o);
    /* the report of an unknown option for every argument as such (the '=' and stray-word forms) */
    for (int i = 1; i < argc; i++) arg_unknown("fuzz", argv[i]);
    free(buf);
    return 0;
}
