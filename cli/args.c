/* args.c — value parsing, file reading, JSON strings and timing for the subcommands. */
#include "args.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static const char *g_where = ""; /* "FILE:LINE: " while a config file's line is applied */

void arg_set_where(const char *where) { g_where = where ? where : ""; }
const char *arg_where(void) { return g_where; }

int arg_int(const char *cmd, const char *flag, const char *s, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "msrnn %s: %s%s expects an integer in [%ld, %ld], got '%s'\n", cmd, g_where,
                flag, lo, hi, s);
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
        fprintf(stderr, "msrnn %s: %sthe list of %s %s (%zu bytes, at most %zu)\n", cmd, g_where,
                flag, why, strlen(s), max_len);
    else
        fprintf(stderr,
                "msrnn %s: %sthe list of %s %s: '%s' (items are separated by single commas)\n", cmd,
                g_where, flag, why, s);
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
            fprintf(stderr, "msrnn %s: %s%s takes at most %d values\n", cmd, g_where, flag, cap);
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
        fprintf(stderr, "msrnn %s: %s%s expects a non-negative integer, got '%s'\n", cmd, g_where,
                flag, s);
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
        fprintf(stderr, "msrnn %s: %s%s expects a number in [%g, %g], got '%s'\n", cmd, g_where,
                flag, lo, hi, s);
        return 2;
    }
    *out = (float)v;
    return 0;
}

/* ---- option tables ----------------------------------------------------------------------- */

void cli_label(char *buf, size_t cap, const cli_option *o) {
    const int flag = o->shortopt || o->longopt;
    snprintf(buf, cap, "%s%s%s%s%s", o->shortopt ? o->shortopt : "",
             o->shortopt && o->longopt ? ", " : "", o->longopt ? o->longopt : "",
             flag && o->metavar ? " " : "", o->metavar ? o->metavar : "");
}

static void blanks(FILE *f, int n) {
    for (; n > 0; n--) fputc(' ', f);
}

/* The help's first line as it is; each later one on a line of its own, at column wrap. */
static void help_lines(FILE *f, const char *help, int wrap) {
    for (const char *line = help; line;) {
        const char *nl = strchr(line, '\n');
        fwrite(line, 1, nl ? (size_t)(nl - line) : strlen(line), f);
        if (!nl) break;
        fputc('\n', f);
        blanks(f, wrap);
        line = nl + 1;
    }
}

void cli_print_table(FILE *f, const cli_table *t) {
    if (t->heading) fprintf(f, "%s\n", t->heading);
    int open = 0; /* a line of CLI_INLINE / CLI_JOIN entries is not ended yet */
    for (size_t i = 0; i < t->n; i++) {
        const cli_option *o = &t->options[i];
        if (o->layout == CLI_SYNOPSIS) continue;
        const int indent = o->indent ? o->indent : 2, wrap = o->wrap ? o->wrap : t->column;
        const int has_help = o->help && *o->help;
        char label[128];
        cli_label(label, sizeof label, o);
        if (o->layout == CLI_JOIN && open) {
            fputs(t->join ? t->join : "  ", f);
        } else {
            if (open) fputc('\n', f);
            blanks(f, indent);
        }
        fputs(label, f);
        if (o->layout == CLI_INLINE || o->layout == CLI_JOIN) {
            if (has_help) fputc(' ', f), help_lines(f, o->help, wrap);
            open = 1;
            continue;
        }
        open = 0;
        if (has_help) {
            const int used = indent + (int)strlen(label);
            blanks(f, used + 2 > t->column ? 2 : t->column - used);
            help_lines(f, o->help, wrap);
        }
        fputc('\n', f);
    }
    if (open) fputc('\n', f);
}

void cli_help(FILE *f, const cli_command *c) {
    fputs("usage: ", f);
    help_lines(f, c->synopsis, 7); /* later lines under the first, after "usage: " */
    fputc('\n', f);
    if (c->description) fputs(c->description, f);
    for (size_t i = 0; i < sizeof c->tables / sizeof *c->tables && c->tables[i]; i++)
        cli_print_table(f, c->tables[i]);
}

/* ---- known options ----------------------------------------------------------------------- */

static const cli_command *g_command; /* the running command: its tables list its options */
static void (*g_usage)(FILE *);      /* or its usage text */

void arg_set_command(const cli_command *c) { g_command = c, g_usage = NULL; }
void arg_set_usage(void (*usage)(FILE *)) { g_usage = usage, g_command = NULL; }

/* Calls fn(option, len, ctx) for each known option: with a command, each flag of its tables (and,
 * with mentions, the other commands' options its help names); with a usage function, each option
 * its text names: a '-' at the start of a word (after a blank, '(', '[', '|' or ','), followed by a
 * letter or a second '-'. */
static void each_known(void (*fn)(const char *, size_t, void *), void *ctx, int mentions) {
    if (g_command) {
        for (size_t t = 0; t < sizeof g_command->tables / sizeof *g_command->tables; t++)
            for (size_t i = 0; g_command->tables[t] && i < g_command->tables[t]->n; i++) {
                const cli_option *o = &g_command->tables[t]->options[i];
                if (o->shortopt) fn(o->shortopt, strlen(o->shortopt), ctx);
                if (o->longopt) fn(o->longopt, strlen(o->longopt), ctx);
            }
        for (size_t k = 0; mentions && k < sizeof g_command->mentions / sizeof *g_command->mentions;
             k++) {
            const char *m = g_command->mentions[k], *opt = m ? strchr(m, ' ') : NULL;
            if (opt) fn(opt + 1, strlen(opt + 1), ctx);
        }
        return;
    }
    if (!g_usage) return;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return;
    g_usage(f);
    fclose(f);
    for (size_t i = 0; text && i < len; i++) {
        if (text[i] != '-' || (i > 0 && !strchr(" \t\n([|,", text[i - 1]))) continue;
        size_t n = 1;
        while (i + n < len && (isalnum((unsigned char)text[i + n]) || text[i + n] == '-')) n++;
        if (n >= 2 && (isalpha((unsigned char)text[i + 1]) || text[i + 1] == '-'))
            fn(text + i, n, ctx);
        i += n - 1;
    }
    free(text);
}

static void is_known_fn(const char *o, size_t n, void *ctx) {
    const char *a = *(const char **)ctx;
    if (a && strlen(a) == n && !memcmp(a, o, n)) *(const char **)ctx = NULL;
}

int arg_known(const char *a) {
    if (!g_usage && !g_command) return 1; /* no list to check against */
    const char *probe = a;
    each_known(is_known_fn, &probe, 0);
    return probe == NULL;
}

/* The command whose option a is, when the running command's help names it as another's ("passkey"
 * for train's "--make-data"), into cmd[0..cap); else 0. */
static int mention_of(const char *a, char *cmd, size_t cap) {
    for (size_t k = 0; g_command && k < sizeof g_command->mentions / sizeof *g_command->mentions;
         k++) {
        const char *m = g_command->mentions[k], *opt = m ? strchr(m, ' ') : NULL;
        if (opt && !strcmp(opt + 1, a) && (size_t)(opt - m) < cap) {
            memcpy(cmd, m, (size_t)(opt - m));
            cmd[opt - m] = 0;
            return 1;
        }
    }
    return 0;
}

/* Edit distance of a[0..n) and b[0..m), both at most 63 bytes: insertions, deletions,
 * substitutions and swaps of two neighbours each count 1 (optimal string alignment). */
static int edit_distance(const char *a, size_t n, const char *b, size_t m) {
    int d[64][64];
    for (size_t i = 0; i <= n; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= m; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= n; i++)
        for (size_t j = 1; j <= m; j++) {
            int best = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (d[i - 1][j] + 1 < best) best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best) best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    return d[n][m];
}

typedef struct {
    const char *a;
    size_t n;
    char best[64];
    int dist;
} closest;

static void closest_fn(const char *o, size_t n, void *ctx) {
    closest *c = ctx;
    if (n >= sizeof c->best || c->n >= sizeof c->best) return;
    int d = edit_distance(c->a, c->n, o, n);
    if (d < c->dist) c->dist = d, memcpy(c->best, o, n), c->best[n] = 0;
}

void arg_unknown(const char *cmd, const char *a) {
    const char *eq = a[0] == '-' ? strchr(a, '=') : NULL;
    char name[64];
    if (eq && (size_t)(eq - a) < sizeof name) {
        memcpy(name, a, (size_t)(eq - a));
        name[eq - a] = 0;
        if (arg_known(name)) {
            fprintf(stderr,
                    "msrnn %s: unknown option '%s' (write '%s %s': a value follows its "
                    "flag as the next argument)\n",
                    cmd, a, name, eq + 1);
            return;
        }
        char other[64];
        if (mention_of(name, other, sizeof other)) {
            fprintf(stderr,
                    "msrnn %s: unknown option '%s' (an option of msrnn %s, written '%s %s' "
                    "there)\n",
                    cmd, a, other, name, eq + 1);
            return;
        }
    }
    char other[64];
    if (mention_of(a, other, sizeof other)) {
        fprintf(stderr, "msrnn %s: unknown option '%s' (an option of msrnn %s, not of %s)\n", cmd,
                a, other, cmd);
        return;
    }
    if (a[0] != '-') {
        fprintf(stderr,
                "msrnn %s: unknown option '%s' (a stray word: options start with '-'; "
                "see msrnn %s --help)\n",
                cmd, a, cmd);
        return;
    }
    closest c = {a, strlen(a), "", 1 << 30};
    each_known(closest_fn, &c, 1);
    /* close enough to be a typo: at most a quarter of the longer name changed, plus one */
    size_t longer = c.n > strlen(c.best) ? c.n : strlen(c.best);
    if (c.best[0] && c.dist <= (int)(longer / 4) + 1)
        fprintf(stderr, "msrnn %s: unknown option '%s' (did you mean '%s'?)\n", cmd, a, c.best);
    else
        fprintf(stderr, "msrnn %s: unknown option '%s' (see msrnn %s --help)\n", cmd, a, cmd);
}

const char *arg_value(const char *cmd, int argc, char **argv, int i) {
    if (!arg_known(argv[i])) {
        arg_unknown(cmd, argv[i]);
        return NULL;
    }
    if (i + 1 >= argc) {
        fprintf(stderr, "msrnn %s: %s needs a value\n", cmd, argv[i]);
        return NULL;
    }
    return argv[i + 1];
}

static uint64_t g_read_limit = (uint64_t)1 << 30; /* read_text_file's limit */

void read_text_set_limit(uint64_t bytes) { g_read_limit = bytes; }

char *read_text_file(const char *cmd, const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "msrnn %s: cannot open '%s': %s\n", cmd, path, strerror(errno));
        return NULL;
    }
    /* a regular file's size is checked first; a device or pipe (/dev/zero) has none, so it is read
     * up to the limit */
    const size_t limit = (size_t)g_read_limit;
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size > limit) {
        fprintf(stderr,
                "msrnn %s: '%s' holds %llu bytes, more than %zu, the limit of text read into "
                "memory (%s)\n",
                cmd, path, (unsigned long long)st.st_size, limit,
                limit == (size_t)1 << 30 ? "1 GiB" : "lowered by --max-memory");
        fclose(f);
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
        if (n > limit) {
            fprintf(stderr,
                    "msrnn %s: '%s' holds more than %zu bytes, the limit of text read into "
                    "memory (%s)\n",
                    cmd, path, limit,
                    limit == (size_t)1 << 30 ? "1 GiB" : "lowered by --max-memory");
            free(buf);
            fclose(f);
            return NULL;
        }
        if (n + 1 >= cap) {
            cap = 2 * cap > limit + 2 ? limit + 2 : 2 * cap;
            char *nb = realloc(buf, cap);
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

int arg_bytes(const char *cmd, const char *flag, const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    const double v = strtod(s, &end);
    static const struct {
        const char *suffix;
        double scale;
    } units[] = {{"", 1},
                 {"B", 1},
                 {"K", 1e3},
                 {"KB", 1e3},
                 {"KiB", 1024.0},
                 {"M", 1e6},
                 {"MB", 1e6},
                 {"MiB", 1048576.0},
                 {"G", 1e9},
                 {"GB", 1e9},
                 {"GiB", 1073741824.0},
                 {"T", 1e12},
                 {"TiB", 1099511627776.0}};
    double scale = 0;
    for (size_t i = 0; end != s && i < sizeof units / sizeof *units; i++)
        if (!strcmp(end, units[i].suffix)) scale = units[i].scale;
    if (errno || end == s || !scale || !(v * scale >= 1) || v * scale > 1.8e19 || s[0] == '-') {
        fprintf(stderr,
                "msrnn %s: %s%s expects a size in bytes of at least 1, with an optional suffix "
                "K/M/G/T (powers of 1000) or KiB/MiB/GiB/TiB (powers of 1024), got '%s'\n",
                cmd, g_where, flag, s);
        return 2;
    }
    *out = (uint64_t)(v * scale);
    return 0;
}

/* The unit of UTF-8 at s[0..len) (len >= 1): a whole character (UTF8_CHAR), the maximal ill-formed
 * subpart that one U+FFFD replaces (UTF8_BAD), or a valid character's start cut off by the end of
 * the input (UTF8_CUT). Its length goes to *n. The ranges are Unicode's Table 3-7 (no overlong
 * forms, surrogates or code points above U+10FFFF); replacing maximal subparts is the practice
 * Unicode §3.9 recommends, and the one Python's errors="replace" and WHATWG decoders follow. */
utf8_unit utf8_next(const char *str, size_t len, size_t *n) {
    const unsigned char *s = (const unsigned char *)str;
    const unsigned c = s[0];
    size_t need;
    unsigned lo = 0x80, hi = 0xBF; /* the second byte's range */
    if (c < 0x80) {
        *n = 1;
        return UTF8_CHAR;
    } else if (c >= 0xC2 && c <= 0xDF) {
        need = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        *n = 1; /* a continuation byte alone, C0, C1 or F5..FF */
        return UTF8_BAD;
    }
    for (size_t i = 1; i < need; i++) {
        if (i == len) {
            *n = i;
            return UTF8_CUT;
        }
        if (s[i] < lo || s[i] > hi) {
            *n = i;
            return UTF8_BAD;
        }
        lo = 0x80, hi = 0xBF;
    }
    *n = need;
    return UTF8_CHAR;
}

size_t utf8_valid_prefix(const char *s, size_t len) {
    size_t i = 0, n;
    while (i < len && utf8_next(s + i, len - i, &n) == UTF8_CHAR) i += n;
    return i;
}

size_t utf8_clean(const char *s, size_t len, char *out) {
    size_t i = 0, o = 0, n;
    while (i < len) {
        if (utf8_next(s + i, len - i, &n) == UTF8_CHAR) {
            memcpy(out + o, s + i, n);
            o += n;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
        }
        i += n;
    }
    return o;
}

size_t utf8_cut_tail(const char *s, size_t len) {
    size_t n;
    for (size_t back = 1; back <= 3 && back <= len; back++)
        if (utf8_next(s + len - back, back, &n) == UTF8_CUT) return back;
    return 0;
}

void utf8_stream_write(utf8_stream *u, FILE *f, const char *s, size_t len) {
    char buf[256 + 3];
    while (len > 0) {
        /* the held bytes (a character's start) and as much of s as fits, cleaned as one run */
        size_t take = len < sizeof buf - u->held ? len : sizeof buf - u->held;
        memcpy(buf, u->bytes, u->held);
        memcpy(buf + u->held, s, take);
        size_t run = u->held + take, keep = utf8_cut_tail(buf, run);
        char out[3 * sizeof buf];
        fwrite(out, 1, utf8_clean(buf, run - keep, out), f);
        memcpy(u->bytes, buf + run - keep, keep);
        u->held = keep;
        s += take, len -= take;
    }
}

void utf8_stream_end(utf8_stream *u, FILE *f) {
    if (u->held) fwrite("\xEF\xBF\xBD", 1, 3, f); /* a character's start that never ended */
    u->held = 0;
}

void json_string(FILE *f, const char *str, size_t len) {
    const unsigned char *s = (const unsigned char *)str;
    fputc('"', f);
    for (size_t i = 0, n; i < len; i += n) {
        const unsigned c = s[i];
        if (utf8_next(str + i, len - i, &n) != UTF8_CHAR) {
            fputs("\\ufffd", f); /* one per maximal ill-formed subpart, as utf8_clean */
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
            fwrite(s + i, 1, n, f);
        }
    }
    fputc('"', f);
}

double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}
