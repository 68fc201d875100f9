/* args.c — value parsing, file reading, JSON strings and timing for the subcommands. */
#include "args.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int arg_int(const char *cmd, const char *flag, const char *s, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "msrnn %s: %s expects an integer in [%ld, %ld], got '%s'\n", cmd, flag, lo,
                hi, s);
        return 2;
    }
    *out = (int)v;
    return 0;
}

int arg_list_check(const char *cmd, const char *flag, const char *s, size_t max_len) {
    const char *why = NULL;
    if (!*s)
        why = "is empty";
    else if (strlen(s) > max_len)
        why = "is too long";
    else
        for (const char *item = s; item; item = strchr(item, ',') ? strchr(item, ',') + 1 : NULL) {
            size_t len = strcspn(item, ",");
            if (strspn(item, " \t") >= len) { /* nothing but blanks */
                why = "has an empty item";
                break;
            }
        }
    if (!why) return 0;
    if (strlen(s) > max_len)
        fprintf(stderr, "msrnn %s: the list of %s %s (%zu bytes, at most %zu)\n", cmd, flag, why,
                strlen(s), max_len);
    else
        fprintf(stderr,
                "msrnn %s: the list of %s %s: '%s' (items are separated by single commas)\n", cmd,
                flag, why, s);
    return 2;
}

int arg_int_list(const char *cmd, const char *flag, const char *s, long lo, long hi, int *out,
                 int cap, int *n) {
    char buf[256];
    *n = 0;
    int rc = arg_list_check(cmd, flag, s, sizeof buf - 1);
    if (rc) return rc;
    snprintf(buf, sizeof buf, "%s", s);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        if (*n == cap) {
            fprintf(stderr, "msrnn %s: %s takes at most %d values\n", cmd, flag, cap);
            return 2;
        }
        int rc = arg_int(cmd, flag, tok, lo, hi, &out[(*n)++]);
        if (rc) return rc;
    }
    return 0;
}

int arg_u64(const char *cmd, const char *flag, const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-') {
        fprintf(stderr, "msrnn %s: %s expects a non-negative integer, got '%s'\n", cmd, flag, s);
        return 2;
    }
    *out = v;
    return 0;
}

int arg_float(const char *cmd, const char *flag, const char *s, double lo, double hi, float *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi) {
        fprintf(stderr, "msrnn %s: %s expects a number in [%g, %g], got '%s'\n", cmd, flag, lo, hi,
                s);
        return 2;
    }
    *out = (float)v;
    return 0;
}

const char *arg_value(const char *cmd, int argc, char **argv, int i) {
    if (i + 1 >= argc) {
        fprintf(stderr, "msrnn %s: %s needs a value\n", cmd, argv[i]);
        return NULL;
    }
    return argv[i + 1];
}

char *read_text_file(const char *cmd, const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "msrnn %s: cannot open '%s': %s\n", cmd, path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n - 1, f);
        if (ferror(f)) {
            fprintf(stderr, "msrnn %s: error reading '%s': %s\n", cmd, path, strerror(errno));
            free(buf);
            fclose(f);
            return NULL;
        }
        if (feof(f)) break;
        if (n + 1 >= cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) free(buf);
            buf = nb;
        }
    }
    fclose(f);
    if (!buf) {
        fprintf(stderr, "msrnn %s: out of memory reading '%s'\n", cmd, path);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if it is not one. */
static int utf8_len(const unsigned char *s, size_t left) {
    unsigned c = s[0];
    int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (!n || (size_t)n > left) return 0;
    for (int i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    uint32_t cp = n == 1 ? c : n == 2 ? c & 0x1f : n == 3 ? c & 0x0f : c & 0x07;
    for (int i = 1; i < n; i++) cp = (cp << 6) | (s[i] & 0x3f);
    static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return n;
}

void json_string(FILE *f, const char *str, size_t len) {
    const unsigned char *s = (const unsigned char *)str;
    fputc('"', f);
    for (size_t i = 0; i < len;) {
        unsigned c = s[i];
        int n = utf8_len(s + i, len - i);
        if (n == 0) {
            fputs("\\ufffd", f);
            i++;
            continue;
        }
        if (n == 1) {
            if (c == '"')
                fputs("\\\"", f);
            else if (c == '\\')
                fputs("\\\\", f);
            else if (c == '\n')
                fputs("\\n", f);
            else if (c == '\r')
                fputs("\\r", f);
            else if (c == '\t')
                fputs("\\t", f);
            else if (c < 0x20 || c == 0x7f)
                fprintf(f, "\\u%04x", c);
            else
                fputc((int)c, f);
        } else {
            fwrite(s + i, 1, (size_t)n, f);
        }
        i += (size_t)n;
    }
    fputc('"', f);
}

double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}
