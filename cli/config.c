/* config.c — configuration files of `name = value` lines (see config.h). */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"

static int bad(const char *cmd, const char *path, int line, const char *what) {
    fprintf(stderr, "msrnn %s: %s:%d: %s\n", cmd, path, line, what);
    return 2;
}

int config_parse(const char *cmd, const char *path, const char *text, size_t len, config_fn fn,
                 void *ctx) {
    /* whole-file checks first, so that a binary given by mistake is named as such */
    const char *nul = memchr(text, 0, len);
    if (nul) {
        int line = 1;
        for (const char *c = text; c < nul; c++) line += *c == '\n';
        return bad(cmd, path, line,
                   "not a text file (a NUL byte): a config file is name = value "
                   "lines");
    }
    size_t bad_at = utf8_valid_prefix(text, len);
    if (bad_at < len) {
        int line = 1;
        for (size_t i = 0; i < bad_at; i++) line += text[i] == '\n';
        return bad(cmd, path, line, "not UTF-8 text: a config file is name = value lines");
    }
    char *buf = malloc(len + 1);
    if (!buf) return bad(cmd, path, 0, "out of memory");
    memcpy(buf, text, len);
    buf[len] = 0;
    int rc = 0, line_no = 0;
    char where[4200];
    for (char *line = buf, *next; rc == 0 && line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        line_no++;
        snprintf(where, sizeof where, "%.4000s:%d", path, line_no);
        char *hash = strchr(line, '#');
        if (hash) *hash = 0;
        char *name = line + strspn(line, " \t\r");
        if (!*name) continue;
        char *eq = strchr(name, '='), *val = NULL;
        if (eq) {
            *eq = 0;
            val = eq + 1 + strspn(eq + 1, " \t\r");
            for (char *e = val + strlen(val); e > val && strchr(" \t\r", e[-1]); *--e = 0) {
            }
        }
        for (char *e = name + strlen(name); e > name && strchr(" \t\r", e[-1]); *--e = 0) {
        }
        size_t n = strlen(name);
        if (n == 0 || n > 63 || strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789-") != n ||
            name[0] == '-') {
            char msg[200];
            snprintf(msg, sizeof msg,
                     "'%.60s%s' is not a setting name (a flag's name without its dashes, as "
                     "'lr = 1e-3')",
                     name, n > 60 ? "..." : "");
            rc = bad(cmd, path, line_no, msg);
            break;
        }
        if (val && !*val) {
            char msg[200];
            snprintf(msg, sizeof msg, "'%s =' without a value", name);
            rc = bad(cmd, path, line_no, msg);
            break;
        }
        rc = fn(ctx, name, val, where);
    }
    free(buf);
    return rc;
}
