/* data.c — token shards, the shuffling window loader and corpus tokenization (see data.h).
 *
 * Sections: the shard header; the atomic shard writer; the shard reader (mmap + one validation
 * pass); the loader (splitmix64 + Fisher–Yates per epoch); manifests; corpus tokenization (OpenMP
 * over files, written in order).
 */
#include "train/data.h"

#include "base/sync_dir.h"
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "data.c reads and writes little-endian shards through native integers"
#endif

#define VOCAB_MAX 0x7fffffffu /* ids are handed out as int32 */

/* ---- the header ------------------------------------------------------------------------------ */

typedef struct {
    uint32_t version, width, vocab, bos;
    uint64_t n_tokens, n_docs, n_bytes;
} shard_header;

static uint32_t width_for_vocab(uint32_t vocab) { return vocab <= 65536u ? 2u : 4u; }

static void header_encode(const shard_header *h, uint8_t out[TOKEN_SHARD_HEADER_BYTES]) {
    memset(out, 0, TOKEN_SHARD_HEADER_BYTES);
    memcpy(out, TOKEN_SHARD_MAGIC, 8);
    memcpy(out + 8, &h->version, 4);
    memcpy(out + 12, &h->width, 4);
    memcpy(out + 16, &h->vocab, 4);
    memcpy(out + 20, &h->bos, 4);
    memcpy(out + 24, &h->n_tokens, 8);
    memcpy(out + 32, &h->n_docs, 8);
    memcpy(out + 40, &h->n_bytes, 8);
}

static void header_decode(const uint8_t *in, shard_header *h) {
    memcpy(&h->version, in + 8, 4);
    memcpy(&h->width, in + 12, 4);
    memcpy(&h->vocab, in + 16, 4);
    memcpy(&h->bos, in + 20, 4);
    memcpy(&h->n_tokens, in + 24, 8);
    memcpy(&h->n_docs, in + 32, 8);
    memcpy(&h->n_bytes, in + 40, 8);
}

/* ---- the atomic writer ----------------------------------------------------------------------- */

/* Ids go through a buffer into a temporary file beside the destination; commit fsyncs it and
 * renames it over the destination (and removes it if anything failed). */
typedef struct {
    const char *path;
    char *tmp;
    int fd;
    int err; /* errno of the first failure, 0 if none */
    const char *step;
    uint32_t width;
    size_t used;
    uint8_t buf[1 << 16];
} shard_out;

static void out_raw(shard_out *o, const void *p, size_t n) {
    const uint8_t *b = p;
    while (n && !o->err) {
        ssize_t k = write(o->fd, b, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            o->err = k < 0 ? errno : EIO;
            o->step = "writing";
            return;
        }
        b += k, n -= (size_t)k;
    }
}

static void out_flush(shard_out *o) {
    out_raw(o, o->buf, o->used);
    o->used = 0;
}

static void out_ids(shard_out *o, const int32_t *ids, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (o->used + o->width > sizeof o->buf) out_flush(o);
        if (o->width == 2) {
            uint16_t v = (uint16_t)ids[i];
            memcpy(o->buf + o->used, &v, 2);
        } else {
            uint32_t v = (uint32_t)ids[i];
            memcpy(o->buf + o->used, &v, 4);
        }
        o->used += o->width;
    }
}

static msrnn_status out_begin(const char *path, const shard_header *h, shard_out **out) {
    *out = NULL;
    size_t n = strlen(path);
    shard_out *o = malloc(sizeof *o);
    char *tmp = malloc(n + sizeof ".tmp-XXXXXX");
    if (!o || !tmp) {
        free(o), free(tmp);
        return msrnn_fail(MSRNN_ERR_NOMEM, "%s: out of memory", path);
    }
    memcpy(tmp, path, n);
    memcpy(tmp + n, ".tmp-XXXXXX", sizeof ".tmp-XXXXXX");
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        msrnn_status st =
            msrnn_fail(MSRNN_ERR_IO, "%s: cannot create a temporary file beside it: %s", path,
                       strerror(errno));
        free(o), free(tmp);
        return st;
    }
    o->path = path, o->tmp = tmp, o->fd = fd, o->err = 0, o->step = NULL;
    o->width = h->width, o->used = 0;
    uint8_t hb[TOKEN_SHARD_HEADER_BYTES];
    header_encode(h, hb);
    out_raw(o, hb, sizeof hb);
    *out = o;
    return MSRNN_OK;
}

static msrnn_status out_commit(shard_out *o) {
    out_flush(o);
    if (!o->err && fchmod(o->fd, 0644) != 0) o->err = errno, o->step = "chmod of";
    if (!o->err && fsync(o->fd) != 0) o->err = errno, o->step = "fsync of";
    if (close(o->fd) != 0 && !o->err) o->err = errno, o->step = "closing";
    o->fd = -1;
    if (!o->err && rename(o->tmp, o->path) != 0) o->err = errno, o->step = "renaming";
    msrnn_status st = MSRNN_OK;
    if (o->err) {
        st = msrnn_fail(MSRNN_ERR_IO, "%s: %s the temporary file %s failed: %s", o->path, o->step,
                        o->tmp, strerror(o->err));
        unlink(o->tmp);
    } else {
        sync_parent_dir(o->path);
    }
    free(o->tmp);
    free(o);
    return st;
}

static msrnn_status check_header_args(const char *path, uint64_t n, uint32_t vocab, uint32_t bos,
                                      uint64_t n_docs) {
    if (vocab < 1 || vocab > VOCAB_MAX)
        return msrnn_fail(MSRNN_ERR_INVALID, "%s: vocabulary size %" PRIu32 ", expected 1..%u",
                          path, vocab, VOCAB_MAX);
    if (bos >= vocab)
        return msrnn_fail(MSRNN_ERR_INVALID,
                          "%s: BOS id %" PRIu32 " is not below the vocabulary size %" PRIu32, path,
                          bos, vocab);
    if (n < 2)
        return msrnn_fail(MSRNN_ERR_INVALID, "%s: %" PRIu64 " tokens, a shard needs at least 2",
                          path, n);
    if (n_docs > n)
        return msrnn_fail(MSRNN_ERR_INVALID,
                          "%s: %" PRIu64 " documents but only %" PRIu64 " tokens", path, n_docs, n);
    return MSRNN_OK;
}

msrnn_status token_shard_write(const char *path, const int32_t *ids, uint64_t n, uint32_t vocab,
                               uint32_t bos, uint64_t n_docs, uint64_t n_bytes) {
    MSRNN_TRY(check_header_args(path, n, vocab, bos, n_docs));
    for (uint64_t i = 0; i < n; i++)
        if (ids[i] < 0 || (uint32_t)ids[i] >= vocab)
            return msrnn_fail(MSRNN_ERR_INVALID,
                              "%s: token %" PRIu64 " has id %" PRId32
                              ", outside the vocabulary [0, %" PRIu32 ")",
                              path, i, ids[i], vocab);
    if (n > SIZE_MAX) return msrnn_fail(MSRNN_ERR_NOMEM, "%s: too many tokens", path);
    shard_header h = {TOKEN_SHARD_VERSION, width_for_vocab(vocab), vocab, bos, n, n_docs, n_bytes};
    shard_out *o;
    MSRNN_TRY(out_begin(path, &h, &o));
    out_ids(o, ids, (size_t)n);
    return out_commit(o);
}

/* ---- the reader ------------------------------------------------------------------------------ */

struct token_shard {
    char *path;
    const uint8_t *base; /* the mapping */
    size_t size;
    const void *ids; /* base + 64: u16 or u32, aligned (the mapping is page-aligned) */
    shard_header h;
};

static uint32_t id_at(const token_shard *s, uint64_t i) {
    return s->h.width == 2 ? ((const uint16_t *)s->ids)[i] : ((const uint32_t *)s->ids)[i];
}

/* Everything about a mapped file of size bytes (>= 64) except the ids. */
static msrnn_status validate_header(const char *path, const uint8_t *base, size_t size,
                                    shard_header *h) {
    if (memcmp(base, TOKEN_SHARD_MAGIC, 8) != 0)
        return msrnn_fail(MSRNN_ERR_FORMAT, "%s: bad magic: not a token shard (expected \"%s\")",
                          path, TOKEN_SHARD_MAGIC);
    header_decode(base, h);
    if (h->version != TOKEN_SHARD_VERSION)
        return msrnn_fail(MSRNN_ERR_FORMAT, "%s: token shard version %" PRIu32 ", expected %u",
                          path, h->version, TOKEN_SHARD_VERSION);
    if (h->width != 2 && h->width != 4)
        return msrnn_fail(MSRNN_ERR_FORMAT, "%s: %" PRIu32 " bytes per id, expected 2 or 4", path,
                          h->width);
    if (h->vocab < 1 || h->vocab > VOCAB_MAX)
        return msrnn_fail(MSRNN_ERR_FORMAT, "%s: vocabulary size %" PRIu32 ", expected 1..%u", path,
                          h->vocab, VOCAB_MAX);
    if (h->width != width_for_vocab(h->vocab))
        return msrnn_fail(MSRNN_ERR_FORMAT,
                          "%s: %" PRIu32 " bytes per id with a vocabulary of %" PRIu32
                          ", expected %" PRIu32,
                          path, h->width, h->vocab, width_for_vocab(h->vocab));
    if (h->bos >= h->vocab)
        return msrnn_fail(MSRNN_ERR_FORMAT,
                          "%s: BOS id %" PRIu32 " is not below the vocabulary size %" PRIu32, path,
                          h->bos, h->vocab);
    for (unsigned i = 48; i < TOKEN_SHARD_HEADER_BYTES; i++)
        if (base[i] != 0)
            return msrnn_fail(MSRNN_ERR_FORMAT, "%s: header byte %u is not zero (padding)", path,
                              i);
    size_t payload = size - TOKEN_SHARD_HEADER_BYTES;
    if (payload % h->width != 0 || h->n_tokens != payload / h->width)
        return msrnn_fail(MSRNN_ERR_FORMAT,
                          "%s: the header says %" PRIu64 " tokens but %zu bytes of %" PRIu32
                          "-byte ids follow it (truncated or corrupt; expected a file of 64 + "
                          "n_tokens * %" PRIu32 " bytes)",
                          path, h->n_tokens, payload, h->width, h->width);
    if (h->n_tokens < 2)
        return msrnn_fail(MSRNN_ERR_FORMAT, "%s: %" PRIu64 " tokens, a shard needs at least 2",
                          path, h->n_tokens);
    if (h->n_docs > h->n_tokens)
        return msrnn_fail(MSRNN_ERR_FORMAT,
                          "%s: the header says %" PRIu64 " documents but only %" PRIu64 " tokens",
                          path, h->n_docs, h->n_tokens);
    return MSRNN_OK;
}

static msrnn_status validate_ids(const token_shard *s) {
    if (s->h.width == 2 && s->h.vocab >= 65536u) return MSRNN_OK; /* every u16 is in range */
    for (uint64_t i = 0; i < s->h.n_tokens; i++) {
        uint32_t id = id_at(s, i);
        if (id >= s->h.vocab)
            return msrnn_fail(MSRNN_ERR_FORMAT,
                              "%s: token %" PRIu64 " has id %" PRIu32
                              ", not below the vocabulary size %" PRIu32,
                              s->path, i, id, s->h.vocab);
    }
    return MSRNN_OK;
}

msrnn_status token_shard_open(const char *path, token_shard **out) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return msrnn_fail(MSRNN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return msrnn_fail(MSRNN_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return msrnn_fail(MSRNN_ERR_IO, "%s: not a regular file", path);
    }
    if (sb.st_size == 0) {
        close(fd);
        return msrnn_fail(MSRNN_ERR_FORMAT, "%s: empty file, not a token shard", path);
    }
    if ((uint64_t)sb.st_size < TOKEN_SHARD_HEADER_BYTES) {
        close(fd);
        return msrnn_fail(MSRNN_ERR_FORMAT,
                          "%s: truncated: %lld bytes, a token shard's header alone is %u", path,
                          (long long)sb.st_size, TOKEN_SHARD_HEADER_BYTES);
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return msrnn_fail(MSRNN_ERR_NOMEM, "%s: %lld bytes do not fit in the address space", path,
                          (long long)sb.st_size);
    }
    size_t size = (size_t)sb.st_size;
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED) return msrnn_fail(MSRNN_ERR_IO, "%s: cannot map: %s", path, strerror(e));

    token_shard *s = calloc(1, sizeof *s);
    char *p = strdup(path);
    if (!s || !p) {
        free(s), free(p);
        munmap(map, size);
        return msrnn_fail(MSRNN_ERR_NOMEM, "%s: out of memory", path);
    }
    s->path = p, s->base = map, s->size = size, s->ids = s->base + TOKEN_SHARD_HEADER_BYTES;
    msrnn_status st = validate_header(path, s->base, size, &s->h);
    if (st == MSRNN_OK) st = validate_ids(s);
    if (st != MSRNN_OK) {
        token_shard_close(s);
        return st;
    }
    *out = s;
    return MSRNN_OK;
}

void token_shard_close(token_shard *s) {
    if (!s) return;
    munmap((void *)s->base, s->size);
    free(s->path);
    free(s);
}

uint64_t token_shard_n_tokens(const token_shard *s) { return s->h.n_tokens; }
uint32_t token_shard_vocab(const token_shard *s) { return s->h.vocab; }
uint32_t token_shard_bos(const token_shard *s) { return s->h.bos; }
uint64_t token_shard_n_bytes(const token_shard *s) { return s->h.n_bytes; }
uint64_t token_shard_n_docs(const token_shard *s) { return s->h.n_docs; }

void token_shard_read(const token_shard *s, uint64_t start, int n, int32_t *dst) {
    if (s->h.width == 2) {
        const uint16_t *p = (const uint16_t *)s->ids + start;
        for (int i = 0; i < n; i++) dst[i] = p[i];
    } else {
        const uint32_t *p = (const uint32_t *)s->ids + start;
        for (int i = 0; i < n; i++) dst[i] = (int32_t)p[i]; /* < 2^31, checked at open */
    }
}

/* ---- the loader ------------------------------------------------------------------------------ */

struct data_loader {
    const token_shard *s; /* not owned */
    int T;
    uint64_t n_windows;
    uint64_t seed, epoch, cursor;
    uint64_t *perm; /* (n_windows) window order of the current epoch */
};

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t splitmix64(uint64_t *state) { return mix64(*state += 0x9E3779B97F4A7C15ull); }

/* Uniform in [0, bound): reject the draws below 2^64 mod bound, so that every residue is equally
 * likely. */
static uint64_t uniform_below(uint64_t *state, uint64_t bound) {
    uint64_t threshold = (0 - bound) % bound, r;
    do r = splitmix64(state);
    while (r < threshold);
    return r % bound;
}

/* The permutation of epoch d->epoch: Fisher–Yates over the identity. */
static void shuffle(data_loader *d) {
    uint64_t state = mix64(d->seed ^ mix64(d->epoch + 0x632BE59BD9B4E019ull));
    for (uint64_t i = 0; i < d->n_windows; i++) d->perm[i] = i;
    for (uint64_t i = d->n_windows; i-- > 1;) {
        uint64_t j = uniform_below(&state, i + 1), t = d->perm[i];
        d->perm[i] = d->perm[j];
        d->perm[j] = t;
    }
}

msrnn_status data_loader_open(const token_shard *s, int T, uint64_t seed, data_loader **out) {
    *out = NULL;
    if (T < 1)
        return msrnn_fail(MSRNN_ERR_INVALID, "%s: window length T = %d, expected at least 1",
                          s->path, T);
    uint64_t n = s->h.n_tokens;
    if (n < (uint64_t)T + 1)
        return msrnn_fail(MSRNN_ERR_INVALID,
                          "%s: %" PRIu64
                          " tokens are fewer than one training window of T + 1 = %" PRIu64,
                          s->path, n, (uint64_t)T + 1);
    uint64_t n_windows = (n - 1) / (uint64_t)T;
    data_loader *d = calloc(1, sizeof *d);
    uint64_t *perm = n_windows <= SIZE_MAX / sizeof *perm ? malloc(n_windows * sizeof *perm) : NULL;
    if (!d || !perm) {
        free(d), free(perm);
        return msrnn_fail(MSRNN_ERR_NOMEM, "%s: out of memory for %" PRIu64 " windows", s->path,
                          n_windows);
    }
    *d = (data_loader){s, T, n_windows, seed, 0, 0, perm};
    shuffle(d);
    *out = d;
    return MSRNN_OK;
}

void data_loader_free(data_loader *d) {
    if (!d) return;
    free(d->perm);
    free(d);
}

uint64_t data_loader_n_windows(const data_loader *d) { return d->n_windows; }

void data_loader_window(const data_loader *d, uint64_t i, int32_t *tokens) {
    token_shard_read(d->s, i * (uint64_t)d->T, d->T + 1, tokens);
}

void data_loader_next(data_loader *d, int B, int32_t *tokens) {
    for (int b = 0; b < B; b++) {
        if (d->cursor == d->n_windows) { /* epoch done: the next one's order */
            d->epoch++;
            d->cursor = 0;
            shuffle(d);
        }
        data_loader_window(d, d->perm[d->cursor++], tokens + (size_t)b * (size_t)(d->T + 1));
    }
}

loader_state data_loader_get_state(const data_loader *d) {
    return (loader_state){d->seed, d->epoch, d->cursor};
}

msrnn_status data_loader_set_state(data_loader *d, loader_state st) {
    if (st.cursor > d->n_windows)
        return msrnn_fail(MSRNN_ERR_INVALID,
                          "%s: loader cursor %" PRIu64 " is beyond the %" PRIu64
                          " windows of an epoch (T = %d)",
                          d->s->path, st.cursor, d->n_windows, d->T);
    int same_order = st.seed == d->seed && st.epoch == d->epoch;
    d->seed = st.seed, d->epoch = st.epoch, d->cursor = st.cursor;
    if (!same_order) shuffle(d);
    return MSRNN_OK;
}

/* ---- manifests ------------------------------------------------------------------------------- */

/* A whole file into a new buffer (NUL-terminated). */
static msrnn_status read_file(const char *path, char **buf, size_t *len) {
    *buf = NULL, *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return msrnn_fail(MSRNN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return msrnn_fail(MSRNN_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return msrnn_fail(MSRNN_ERR_IO, "%s: not a regular file", path);
    }
    size_t cap = (size_t)sb.st_size + 1, n = 0;
    char *b = malloc(cap);
    if (!b) {
        close(fd);
        return msrnn_fail(MSRNN_ERR_NOMEM, "%s: out of memory for %zu bytes", path, cap);
    }
    for (;;) {
        if (n + 1 == cap) { /* the file grew while reading */
            char *nb = realloc(b, cap *= 2);
            if (!nb) {
                free(b), close(fd);
                return msrnn_fail(MSRNN_ERR_NOMEM, "%s: out of memory", path);
            }
            b = nb;
        }
        ssize_t k = read(fd, b + n, cap - 1 - n);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            int e = errno;
            free(b), close(fd);
            return msrnn_fail(MSRNN_ERR_IO, "%s: read error: %s", path, strerror(e));
        }
        if (k == 0) break;
        n += (size_t)k;
    }
    close(fd);
    b[n] = 0;
    *buf = b, *len = n;
    return MSRNN_OK;
}

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
    MSRNN_TRY(read_file(manifest, &text, &len));
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
        return msrnn_fail(MSRNN_ERR_FORMAT,
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
            st = msrnn_fail(MSRNN_ERR_FORMAT, "%s: line %zu has no '%s' field (too few tabs)",
                            manifest, line, tsv_field(p, e, col_file, &ff, &nf) ? "split" : "file");
            break;
        }
        if (!field_eq(fs, ns, split)) continue;
        if (nf == 0) {
            st = msrnn_fail(MSRNN_ERR_FORMAT, "%s: line %zu has an empty 'file' field", manifest,
                            line);
            break;
        }
        if (n_rows == cap) {
            size_t nc = cap ? 2 * cap : 16;
            char **np = realloc(out, nc * sizeof *np);
            if (!np) {
                st = msrnn_fail(MSRNN_ERR_NOMEM, "%s: out of memory", manifest);
                break;
            }
            out = np, cap = nc;
        }
        if (!(out[n_rows] = join_path(manifest, dlen, ff, nf))) {
            st = msrnn_fail(MSRNN_ERR_NOMEM, "%s: out of memory", manifest);
            break;
        }
        n_rows++;
    }
    if (st == MSRNN_OK && n_rows == 0) {
        char have[512];
        list_splits(body, end, col_split, have, sizeof have);
        st = msrnn_fail(MSRNN_ERR_INVALID, "%s: no file has split '%s' (splits there: %s)",
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

/* ---- corpus tokenization --------------------------------------------------------------------- */

typedef struct {
    int32_t *ids;
    size_t n_ids;
    uint64_t n_bytes;
    msrnn_status st;
    char *err; /* the failing thread's message (messages are thread-local) */
} document;

static msrnn_status encode_file(const spm_tokenizer *t, const char *path, document *doc) {
    char *text;
    size_t len;
    MSRNN_TRY(read_file(path, &text, &len));
    size_t cap = spm_max_ids(t, len);
    int32_t *ids = cap <= SIZE_MAX / sizeof *ids ? malloc(cap * sizeof *ids) : NULL;
    if (!ids) {
        free(text);
        return msrnn_fail(MSRNN_ERR_NOMEM, "%s: out of memory for %zu ids", path, cap);
    }
    size_t n = 0;
    msrnn_status st = spm_encode(t, text, len, 1, ids, cap, &n);
    free(text);
    if (st != MSRNN_OK) { /* cannot happen with cap = spm_max_ids; kept for the message */
        char why[512];
        snprintf(why, sizeof why, "%s", msrnn_last_error());
        free(ids);
        return msrnn_fail(st, "%s: %s", path, why);
    }
    int32_t *shrunk = realloc(ids, (n ? n : 1) * sizeof *ids); /* cap can be 3x what is used */
    doc->ids = shrunk ? shrunk : ids;
    doc->n_ids = n;
    doc->n_bytes = len;
    return MSRNN_OK;
}

msrnn_status corpus_tokenize(const spm_tokenizer *t, const char *const *paths, size_t n_paths,
                             int n_threads, const char *out, corpus_stats *stats) {
    int32_t probe[4];
    size_t n_probe = 0; /* the empty text with add_bos gives just BOS, if there is one */
    if (spm_encode(t, "", 0, 1, probe, 4, &n_probe) != MSRNN_OK || n_probe != 1)
        return msrnn_fail(MSRNN_ERR_INVALID,
                          "%s: the tokenizer has no BOS token, which starts every document", out);
    int32_t bos = probe[0];
    uint32_t vocab = (uint32_t)spm_n_vocab(t);
    if (n_paths == 0) return msrnn_fail(MSRNN_ERR_INVALID, "%s: no input files", out);
    if (n_paths > (size_t)INT32_MAX)
        return msrnn_fail(MSRNN_ERR_INVALID, "%s: too many input files", out);
    document *docs = calloc(n_paths, sizeof *docs);
    if (!docs) return msrnn_fail(MSRNN_ERR_NOMEM, "%s: out of memory", out);

    int nt = n_threads > 0 ? n_threads : omp_get_max_threads();
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
    for (int32_t i = 0; i < (int32_t)n_paths; i++) {
        document *doc = &docs[i];
        doc->st = encode_file(t, paths[i], doc);
        if (doc->st != MSRNN_OK) doc->err = strdup(msrnn_last_error());
    }

    msrnn_status st = MSRNN_OK;
    corpus_stats cs = {n_paths, 0, 0};
    for (size_t i = 0; i < n_paths && st == MSRNN_OK; i++) {
        if (docs[i].st != MSRNN_OK)
            st = msrnn_fail(docs[i].st, "%s", docs[i].err ? docs[i].err : "out of memory");
        cs.n_bytes += docs[i].n_bytes;
        cs.n_tokens += docs[i].n_ids;
    }
    if (st == MSRNN_OK) st = check_header_args(out, cs.n_tokens, vocab, (uint32_t)bos, cs.n_docs);
    if (st == MSRNN_OK) {
        shard_header h = {TOKEN_SHARD_VERSION,
                          width_for_vocab(vocab),
                          vocab,
                          (uint32_t)bos,
                          cs.n_tokens,
                          cs.n_docs,
                          cs.n_bytes};
        shard_out *o;
        st = out_begin(out, &h, &o);
        if (st == MSRNN_OK) {
            for (size_t i = 0; i < n_paths; i++) {
                out_ids(o, docs[i].ids, docs[i].n_ids);
                free(docs[i].ids);
                docs[i].ids = NULL;
            }
            st = out_commit(o);
        }
    }
    for (size_t i = 0; i < n_paths; i++) free(docs[i].ids), free(docs[i].err);
    free(docs);
    if (st == MSRNN_OK && stats) *stats = cs;
    return st;
}
