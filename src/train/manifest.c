/* manifest.c — reading a split of a corpus manifest (see manifest.h). */
#include "train/manifest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/read_file.h"

/* Field k (0-based) of the tab-separated line [p, end): its start and length; 0 if absent. */
static int tsv_field(const char *p, const char *end, int k, const char **f, size_t *n) {
    for (int i = 0; i < k; i++) {
        const char *tab = memchr(p, '\t', (size_t)(end - p));
        if (!tab) return 0;
        p = tab + 1;
    }
    const char *tab = memchr(p, '\t', (size_t)(end - p));
    *f = p;
    *n = (size_t)((tab ? tab : end) - p);
    return 1;
}

static const char *line_end(const char *p, const char *end, const char **next) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    *next = nl ? nl + 1 : end;
    const char *e = nl ? nl : end;
    if (e > p && e[-1] == '\r') e--;
    return e;
}

static int field_eq(const char *f, size_t n, const char *s) {
    return n == strlen(s) && memcmp(f, s, n) == 0;
}

void corpus_paths_free(char **paths, size_t n) {
    if (!paths) return;
    for (size_t i = 0; i < n; i++) free(paths[i]);
    free(paths);
}

/* "dir/file" for a relative file name (dir: the manifest's folder, dlen bytes, may be 0). */
static char *join_path(const char *dir, size_t dlen, const char *f, size_t n) {
    if (n && f[0] == '/') dlen = 0;
    char *p = malloc(dlen + 1 + n + 1);
    if (!p) return NULL;
    memcpy(p, dir, dlen);
    size_t k = dlen;
    if (dlen && dir[dlen - 1] != '/') p[k++] = '/';
    memcpy(p + k, f, n);
    p[k + n] = 0;
    return p;
}

/* The distinct values of the split column, for the message when a split is unknown. */
static void list_splits(const char *body, const char *end, int col_split, char *out, size_t cap) {
    size_t used = 0;
    out[0] = 0;
    for (const char *p = body, *next; p < end; p = next) {
        const char *e = line_end(p, end, &next), *f;
        size_t n;
        if (e == p || !tsv_field(p, e, col_split, &f, &n)) continue;
        int seen = 0; /* already listed: earlier rows with the same value */
        for (const char *q = body, *qn; q < p && !seen; q = qn) {
            const char *qe = line_end(q, end, &qn), *g;
            size_t m;
            seen = qe != q && tsv_field(q, qe, col_split, &g, &m) && m == n && !memcmp(f, g, n);
        }
        if (seen) continue;
        int k = snprintf(out + used, cap - used, "%s'%.*s'", used ? ", " : "", (int)n, f);
        if (k < 0 || (size_t)k >= cap - used) break;
        used += (size_t)k;
    }
}

msrnn_status corpus_manifest_files(const char *manifest, const char *split, char ***paths,
                                   size_t *n_out) {
    *paths = NULL, *n_out = 0;
    char *text;
    size_t len;
    MSRNN_TRY(file_read_all(manifest, &text, &len));
    const char *end = text + len, *body;
    const char *hend = line_end(text, end, &body);
    int col_file = -1, col_split = -1;
    for (int k = 0;; k++) {
        const char *f;
        size_t n;
        if (!tsv_field(text, hend, k, &f, &n)) break;
        if (col_file < 0 && field_eq(f, n, "file")) col_file = k;
        if (col_split < 0 && field_eq(f, n, "split")) col_split = k;
    }
    if (col_file < 0 || col_split < 0) {
        free(text);
        return status_fail(MSRNN_ERR_FORMAT,
                           "%s: the header row (tab-separated) has no '%s' column; expected the "
                           "columns 'file' and 'split'",
                           manifest, col_file < 0 ? "file" : "split");
    }
    const char *slash = strrchr(manifest, '/');
    size_t dlen = slash ? (size_t)(slash - manifest) + (slash == manifest) : 0;

    size_t n_rows = 0, cap = 0, line = 1;
    char **out = NULL;
    msrnn_status st = MSRNN_OK;
    for (const char *p = body, *next; p < end && st == MSRNN_OK; p = next) {
        const char *e = line_end(p, end, &next), *ff, *fs;
        size_t nf, ns;
        line++;
        if (e == p) continue; /* blank line */
        if (!tsv_field(p, e, col_file, &ff, &nf) || !tsv_field(p, e, col_split, &fs, &ns)) {
            st =
                status_fail(MSRNN_ERR_FORMAT, "%s: line %zu has no '%s' field (too few tabs)",
                            manifest, line, tsv_field(p, e, col_file, &ff, &nf) ? "split" : "file");
            break;
        }
        if (!field_eq(fs, ns, split)) continue;
        if (nf == 0) {
            st = status_fail(MSRNN_ERR_FORMAT, "%s: line %zu has an empty 'file' field", manifest,
                             line);
            break;
        }
        if (n_rows == cap) {
            size_t nc = cap ? 2 * cap : 16;
            char **np = realloc(out, nc * sizeof *np);
            if (!np) {
                st = status_fail(MSRNN_ERR_NOMEM, "%s: out of memory", manifest);
                break;
            }
            out = np, cap = nc;
        }
        if (!(out[n_rows] = join_path(manifest, dlen, ff, nf))) {
            st = status_fail(MSRNN_ERR_NOMEM, "%s: out of memory", manifest);
            break;
        }
        n_rows++;
    }
    if (st == MSRNN_OK && n_rows == 0) {
        char have[512];
        list_splits(body, end, col_split, have, sizeof have);
        st = status_fail(MSRNN_ERR_INVALID, "%s: no file has split '%s' (splits there: %s)",
                         manifest, split, have[0] ? have : "none");
    }
    free(text);
    if (st != MSRNN_OK) {
        corpus_paths_free(out, n_rows);
        return st;
    }
    *paths = out, *n_out = n_rows;
    return MSRNN_OK;
}
