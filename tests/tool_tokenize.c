/* tool_tokenize — drives the SentencePiece tokenizer for tests/test_tokenizer.py.
 *
 *   tool_tokenize VOCAB.gguf lines FILE      encode each line (without its '\n'), no BOS
 *   tool_tokenize VOCAB.gguf whole FILE      encode the whole file as one string, no BOS
 *   tool_tokenize VOCAB.gguf hex FILE        each line of FILE is a hex string of bytes to encode
 *   tool_tokenize VOCAB.gguf roundtrip FILE  check decode(encode(x)) == x for every line and the
 *                                            whole file; prints mismatches, exit 1 if any
 *   tool_tokenize VOCAB.gguf bench FILE      encode the whole file a few times, print MB/s
 *
 * Encoding modes print one line per encoded item, ids separated by single spaces (an empty encoding
 * gives an empty line). A file ending with '\n' has no empty last line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "io/gguf.h"
#include "text/tokenizer.h"

static char *read_file(const char *path, size_t *len) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) break;
        if (n == cap) {
            char *b = realloc(buf, cap *= 2);
            if (!b) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = b;
        }
        size_t got = fread(buf + n, 1, cap - n, fp);
        n += got;
        if (got == 0) break;
    }
    fclose(fp);
    *len = n;
    return buf;
}

typedef struct {
    int32_t *ids;
    size_t cap;
    char *text; /* decode buffer */
    size_t text_cap;
} scratch;

static int encode(const spm_tokenizer *t, scratch *s, const char *text, size_t len, size_t *n) {
    size_t need = spm_max_ids(t, len);
    if (need > s->cap) {
        free(s->ids);
        s->cap = need;
        s->ids = malloc(need * sizeof *s->ids);
        if (!s->ids) {
            fprintf(stderr, "out of memory\n");
            return 1;
        }
    }
    msrnn_status st = spm_encode(t, text, len, 0, s->ids, s->cap, n);
    if (st != MSRNN_OK) {
        fprintf(stderr, "encode: %s\n", msrnn_last_error());
        return 1;
    }
    return 0;
}

static void print_ids(FILE *out, const int32_t *ids, size_t n) {
    char buf[16];
    for (size_t i = 0; i < n; i++) {
        int len = snprintf(buf, sizeof buf, i ? " %d" : "%d", (int)ids[i]);
        fwrite(buf, 1, (size_t)len, out);
    }
    fputc('\n', out);
}

/* Check decode(encode(text)) == text; 1 on mismatch (printed). */
static int roundtrip_one(const spm_tokenizer *t, scratch *s, const char *text, size_t len,
                         const char *what, size_t index) {
    size_t n;
    if (encode(t, s, text, len, &n)) return 1;
    size_t dlen = spm_decode(t, s->ids, n, NULL, 0);
    if (dlen + 1 > s->text_cap) {
        free(s->text);
        s->text_cap = dlen + 1;
        s->text = malloc(s->text_cap);
        if (!s->text) return 1;
    }
    size_t dlen2 = spm_decode(t, s->ids, n, s->text, s->text_cap);
    if (dlen2 == len && dlen == len && memcmp(s->text, text, len) == 0) return 0;
    size_t at = 0;
    while (at < len && at < dlen && s->text[at] == text[at]) at++;
    printf("roundtrip mismatch: %s %zu: %zu bytes in, %zu out, first difference at byte %zu\n",
           what, index, len, dlen, at);
    size_t from = at > 20 ? at - 20 : 0;
    printf("  in:  '%.*s'\n  out: '%.*s'\n", (int)((len < at + 20 ? len : at + 20) - from),
           text + from, (int)((dlen < at + 20 ? dlen : at + 20) - from), s->text + from);
    return 1;
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s VOCAB.gguf lines|whole|hex|roundtrip|bench FILE\n", argv[0]);
        return 2;
    }
    const char *mode = argv[2];
    gguf_file *f;
    spm_tokenizer *t;
    if (gguf_open(argv[1], &f) != MSRNN_OK) {
        fprintf(stderr, "%s\n", msrnn_last_error());
        return 1;
    }
    msrnn_status st = spm_tokenizer_from_gguf(f, &t);
    gguf_close(f);
    if (st != MSRNN_OK) {
        fprintf(stderr, "%s: %s\n", msrnn_status_name(st), msrnn_last_error());
        return 1;
    }
    size_t len;
    char *text = read_file(argv[3], &len);
    if (!text) {
        fprintf(stderr, "cannot read %s\n", argv[3]);
        spm_tokenizer_free(t);
        return 1;
    }
    static char outbuf[1 << 20];
    setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);
    scratch s = {0};
    int rc = 0;
    size_t n;
    if (!strcmp(mode, "whole")) {
        rc = encode(t, &s, text, len, &n);
        if (!rc) print_ids(stdout, s.ids, n);
    } else if (!strcmp(mode, "lines") || !strcmp(mode, "hex") || !strcmp(mode, "roundtrip")) {
        int hex = !strcmp(mode, "hex"), rt = !strcmp(mode, "roundtrip");
        size_t mismatches = 0, lines = 0;
        for (size_t p = 0; p < len && !rc; lines++) {
            const char *nl = memchr(text + p, '\n', len - p);
            size_t e = nl ? (size_t)(nl - text) : len;
            char *line = text + p;
            size_t ll = e - p;
            if (hex) { /* decode in place: the bytes are never longer than their hex */
                if (ll % 2) {
                    fprintf(stderr, "line %zu: odd number of hex digits\n", lines + 1);
                    rc = 1;
                    break;
                }
                for (size_t i = 0; i < ll / 2; i++) {
                    int hi = hex_value(line[2 * i]), lo = hex_value(line[2 * i + 1]);
                    if (hi < 0 || lo < 0) {
                        fprintf(stderr, "line %zu: not hex\n", lines + 1);
                        rc = 1;
                        break;
                    }
                    line[i] = (char)(hi * 16 + lo);
                }
                ll /= 2;
            }
            if (rc) break;
            if (rt) {
                mismatches += (size_t)roundtrip_one(t, &s, line, ll, "line", lines + 1);
            } else {
                rc = encode(t, &s, line, ll, &n);
                if (!rc) print_ids(stdout, s.ids, n);
            }
            p = e + 1;
        }
        if (rt && !rc) {
            free(text);
            text = read_file(argv[3], &len);
            if (!text) rc = 1;
            if (!rc) mismatches += (size_t)roundtrip_one(t, &s, text, len, "whole file", 0);
            printf("roundtrip: %zu lines and the whole file (%zu bytes): %zu mismatches\n", lines,
                   len, mismatches);
            if (mismatches) rc = 1;
        }
    } else if (!strcmp(mode, "bench")) {
        int reps = 3;
        double best = 1e30;
        for (int r = 0; r < reps && !rc; r++) {
            struct timespec a, b;
            clock_gettime(CLOCK_MONOTONIC, &a);
            rc = encode(t, &s, text, len, &n);
            clock_gettime(CLOCK_MONOTONIC, &b);
            double sec = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
            if (sec < best) best = sec;
        }
        if (!rc)
            printf("encoded %zu bytes into %zu tokens in %.3f s: %.1f MB/s\n", len, n, best,
                   (double)len / best / 1e6);
    } else {
        fprintf(stderr, "unknown mode '%s'\n", mode);
        rc = 2;
    }
    fflush(stdout);
    free(s.ids);
    free(s.text);
    free(text);
    spm_tokenizer_free(t);
    return rc;
}
