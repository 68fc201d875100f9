/* shard.c — token shards (see shard.h): the header, the writer (through base/atomic_file.h), and
 * the reader (mmap + one validation pass). */
#include "train/shard.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/atomic_file.h"
#include "base/read_file.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "shard.c reads and writes little-endian shards through native integers"
#endif

#define VOCAB_MAX 0x7fffffffu /* ids are handed out as int32 */

/* ---- the header ------------------------------------------------------------------------------ */

typedef struct {
    uint32_t version, width, vocab, bos;
    uint64_t n_tokens, n_docs, n_bytes;
    uint64_t vocab_hash; /* version 2 only */
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
    memcpy(out + 48, &h->vocab_hash, 8);
}

static void header_decode(const uint8_t *in, shard_header *h) {
    memcpy(&h->version, in + 8, 4);
    memcpy(&h->width, in + 12, 4);
    memcpy(&h->vocab, in + 16, 4);
    memcpy(&h->bos, in + 20, 4);
    memcpy(&h->n_tokens, in + 24, 8);
    memcpy(&h->n_docs, in + 32, 8);
    memcpy(&h->n_bytes, in + 40, 8);
    memcpy(&h->vocab_hash, in + 48, 8); /* zero padding in version 1 */
}

/* ---- the writer ------------------------------------------------------------------------------ */

static msrnn_status check_header_args(const char *path, uint64_t n, uint32_t vocab, uint32_t bos,
                                      uint64_t n_docs) {
    if (vocab < 1 || vocab > VOCAB_MAX)
        return status_fail(MSRNN_ERR_INVALID, "%s: vocabulary size %" PRIu32 ", expected 1..%u",
                           path, vocab, VOCAB_MAX);
    if (bos >= vocab)
        return status_fail(MSRNN_ERR_INVALID,
                           "%s: BOS id %" PRIu32 " is not below the vocabulary size %" PRIu32, path,
                           bos, vocab);
    if (n < 2)
        return status_fail(MSRNN_ERR_INVALID, "%s: %" PRIu64 " tokens, a shard needs at least 2",
                           path, n);
    if (n_docs > n)
        return status_fail(MSRNN_ERR_INVALID,
                           "%s: %" PRIu64 " documents but only %" PRIu64 " tokens", path, n_docs,
                           n);
    return MSRNN_OK;
}

struct token_shard_writer {
    atomic_file *f;
    char *path;
    uint32_t width, vocab;
    uint64_t n_tokens, n_put;
    char bad[256]; /* the first bad id's message, "" if none */
};

msrnn_status token_shard_writer_open(const char *path, uint32_t vocab, uint64_t vocab_hash,
                                     uint32_t bos, uint64_t n_tokens, uint64_t n_docs,
                                     uint64_t n_bytes, token_shard_writer **out) {
    *out = NULL;
    MSRNN_TRY(check_header_args(path, n_tokens, vocab, bos, n_docs));
    token_shard_writer *w = calloc(1, sizeof *w);
    char *p = strdup(path);
    if (!w || !p) {
        free(w), free(p);
        return status_fail(MSRNN_ERR_NOMEM, "%s: out of memory", path);
    }
    msrnn_status st = atomic_file_open(path, &w->f);
    if (st != MSRNN_OK) {
        free(w), free(p);
        return st;
    }
    shard_header h = {
        TOKEN_SHARD_VERSION, width_for_vocab(vocab), vocab, bos, n_tokens, n_docs, n_bytes,
        vocab_hash};
    uint8_t hb[TOKEN_SHARD_HEADER_BYTES];
    header_encode(&h, hb);
    atomic_file_write(w->f, hb, sizeof hb);
    w->path = p, w->width = h.width, w->vocab = vocab, w->n_tokens = n_tokens;
    *out = w;
    return MSRNN_OK;
}

void token_shard_writer_put(token_shard_writer *w, const int32_t *ids, size_t n) {
    uint8_t buf[4096 * 4];
    const size_t per = sizeof buf / w->width;
    for (size_t i0 = 0; i0 < n && !w->bad[0]; i0 += per) {
        const size_t k = n - i0 < per ? n - i0 : per;
        for (size_t i = 0; i < k; i++) {
            const int32_t id = ids[i0 + i];
            if (id < 0 || (uint32_t)id >= w->vocab) {
                snprintf(w->bad, sizeof w->bad,
                         "%s: token %" PRIu64 " has id %" PRId32
                         ", outside the vocabulary [0, %" PRIu32 ")",
                         w->path, w->n_put + i0 + i, id, w->vocab);
                return;
            }
            if (w->width == 2) {
                const uint16_t v = (uint16_t)id;
                memcpy(buf + 2 * i, &v, 2);
            } else {
                const uint32_t v = (uint32_t)id;
                memcpy(buf + 4 * i, &v, 4);
            }
        }
        atomic_file_write(w->f, buf, k * w->width);
    }
    w->n_put += n;
}

static void writer_free(token_shard_writer *w) {
    free(w->path);
    free(w);
}

void token_shard_writer_abort(token_shard_writer *w) {
    if (!w) return;
    atomic_file_abort(w->f);
    writer_free(w);
}

msrnn_status token_shard_writer_commit(token_shard_writer *w) {
    msrnn_status st = MSRNN_OK;
    if (w->bad[0])
        st = status_fail(MSRNN_ERR_INVALID, "%s", w->bad);
    else if (w->n_put != w->n_tokens)
        st = status_fail(MSRNN_ERR_INVALID,
                         "%s: %" PRIu64 " ids written but the header says %" PRIu64, w->path,
                         w->n_put, w->n_tokens);
    if (st != MSRNN_OK) {
        token_shard_writer_abort(w);
        return st;
    }
    st = atomic_file_commit(w->f);
    writer_free(w);
    return st;
}

msrnn_status token_shard_write(const char *path, const int32_t *ids, uint64_t n, uint32_t vocab,
                               uint64_t vocab_hash, uint32_t bos, uint64_t n_docs,
                               uint64_t n_bytes) {
    MSRNN_TRY(check_header_args(path, n, vocab, bos, n_docs));
    for (uint64_t i = 0; i < n; i++) /* refused before any file is created */
        if (ids[i] < 0 || (uint32_t)ids[i] >= vocab)
            return status_fail(MSRNN_ERR_INVALID,
                               "%s: token %" PRIu64 " has id %" PRId32
                               ", outside the vocabulary [0, %" PRIu32 ")",
                               path, i, ids[i], vocab);
    if (n > SIZE_MAX) return status_fail(MSRNN_ERR_NOMEM, "%s: too many tokens", path);
    token_shard_writer *w;
    MSRNN_TRY(token_shard_writer_open(path, vocab, vocab_hash, bos, n, n_docs, n_bytes, &w));
    token_shard_writer_put(w, ids, (size_t)n);
    return token_shard_writer_commit(w);
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
        return status_fail(MSRNN_ERR_FORMAT, "%s: bad magic: not a token shard (expected \"%s\")",
                           path, TOKEN_SHARD_MAGIC);
    header_decode(base, h);
    if (h->version != 1 && h->version != TOKEN_SHARD_VERSION)
        return status_fail(MSRNN_ERR_FORMAT,
                           "%s: token shard version %" PRIu32 ", expected 1 or %u", path,
                           h->version, TOKEN_SHARD_VERSION);
    if (h->width != 2 && h->width != 4)
        return status_fail(MSRNN_ERR_FORMAT, "%s: %" PRIu32 " bytes per id, expected 2 or 4", path,
                           h->width);
    if (h->vocab < 1 || h->vocab > VOCAB_MAX)
        return status_fail(MSRNN_ERR_FORMAT, "%s: vocabulary size %" PRIu32 ", expected 1..%u",
                           path, h->vocab, VOCAB_MAX);
    if (h->width != width_for_vocab(h->vocab))
        return status_fail(MSRNN_ERR_FORMAT,
                           "%s: %" PRIu32 " bytes per id with a vocabulary of %" PRIu32
                           ", expected %" PRIu32,
                           path, h->width, h->vocab, width_for_vocab(h->vocab));
    if (h->bos >= h->vocab)
        return status_fail(MSRNN_ERR_FORMAT,
                           "%s: BOS id %" PRIu32 " is not below the vocabulary size %" PRIu32, path,
                           h->bos, h->vocab);
    for (unsigned i = h->version == 1 ? 48 : 56; i < TOKEN_SHARD_HEADER_BYTES; i++)
        if (base[i] != 0)
            return status_fail(MSRNN_ERR_FORMAT, "%s: header byte %u is not zero (padding)", path,
                               i);
    size_t payload = size - TOKEN_SHARD_HEADER_BYTES;
    if (payload % h->width != 0 || h->n_tokens != payload / h->width)
        return status_fail(MSRNN_ERR_FORMAT,
                           "%s: the header says %" PRIu64 " tokens but %zu bytes of %" PRIu32
                           "-byte ids follow it (truncated or corrupt; expected a file of 64 + "
                           "n_tokens * %" PRIu32 " bytes)",
                           path, h->n_tokens, payload, h->width, h->width);
    if (h->n_tokens < 2)
        return status_fail(MSRNN_ERR_FORMAT, "%s: %" PRIu64 " tokens, a shard needs at least 2",
                           path, h->n_tokens);
    if (h->n_docs > h->n_tokens)
        return status_fail(MSRNN_ERR_FORMAT,
                           "%s: the header says %" PRIu64 " documents but only %" PRIu64 " tokens",
                           path, h->n_docs, h->n_tokens);
    return MSRNN_OK;
}

static msrnn_status validate_ids(const token_shard *s) {
    if (s->h.width == 2 && s->h.vocab >= 65536u) return MSRNN_OK; /* every u16 is in range */
    for (uint64_t i = 0; i < s->h.n_tokens; i++) {
        uint32_t id = id_at(s, i);
        if (id >= s->h.vocab)
            return status_fail(MSRNN_ERR_FORMAT,
                               "%s: token %" PRIu64 " has id %" PRIu32
                               ", not below the vocabulary size %" PRIu32,
                               s->path, i, id, s->h.vocab);
    }
    return MSRNN_OK;
}

msrnn_status token_shard_open(const char *path, token_shard **out) {
    *out = NULL;
    int fd;
    struct stat sb;
    MSRNN_TRY(file_open_regular(path, &fd, &sb));
    if (sb.st_size == 0) {
        close(fd);
        return status_fail(MSRNN_ERR_FORMAT, "%s: empty file, not a token shard", path);
    }
    if ((uint64_t)sb.st_size < TOKEN_SHARD_HEADER_BYTES) {
        close(fd);
        return status_fail(MSRNN_ERR_FORMAT,
                           "%s: truncated: %lld bytes, a token shard's header alone is %u", path,
                           (long long)sb.st_size, TOKEN_SHARD_HEADER_BYTES);
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return status_fail(MSRNN_ERR_NOMEM, "%s: %lld bytes do not fit in the address space", path,
                           (long long)sb.st_size);
    }
    size_t size = (size_t)sb.st_size;
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED)
        return status_fail(MSRNN_ERR_IO, "%s: cannot map: %s", path, strerror(e));

    token_shard *s = calloc(1, sizeof *s);
    char *p = strdup(path);
    if (!s || !p) {
        free(s), free(p);
        munmap(map, size);
        return status_fail(MSRNN_ERR_NOMEM, "%s: out of memory", path);
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

const char *token_shard_path(const token_shard *s) { return s->path; }
uint64_t token_shard_n_tokens(const token_shard *s) { return s->h.n_tokens; }
uint32_t token_shard_vocab(const token_shard *s) { return s->h.vocab; }
uint32_t token_shard_bos(const token_shard *s) { return s->h.bos; }
uint64_t token_shard_n_bytes(const token_shard *s) { return s->h.n_bytes; }
uint64_t token_shard_n_docs(const token_shard *s) { return s->h.n_docs; }
uint32_t token_shard_version(const token_shard *s) { return s->h.version; }

int token_shard_vocab_hash(const token_shard *s, uint64_t *hash) {
    *hash = s->h.version >= 2 ? s->h.vocab_hash : 0;
    return s->h.version >= 2;
}

msrnn_status token_shard_check_vocab(const token_shard *s, const char *model_path, uint32_t n_vocab,
                                     int has_hash, uint64_t hash) {
    if (s->h.vocab != n_vocab)
        return status_fail(MSRNN_ERR_FORMAT,
                           "%s: the shard's vocabulary has %" PRIu32
                           " tokens but the model %s has %" PRIu32
                           " (tokenize the corpus with the model's tokenizer)",
                           s->path, s->h.vocab, model_path, n_vocab);
    if (has_hash && s->h.version >= 2 && s->h.vocab_hash != hash)
        return status_fail(
            MSRNN_ERR_FORMAT,
            "%s: the shard's vocabulary hash is %016" PRIx64 " but the model %s's is "
            "%016" PRIx64 " (both %" PRIu32 " tokens, different pieces: tokenize the "
            "corpus with the model's tokenizer)",
            s->path, s->h.vocab_hash, model_path, hash, n_vocab);
    return MSRNN_OK;
}

void token_shard_read(const token_shard *s, uint64_t start, int n, int32_t *dst) {
    if (s->h.width == 2) {
        const uint16_t *p = (const uint16_t *)s->ids + start;
        for (int i = 0; i < n; i++) dst[i] = p[i];
    } else {
        const uint32_t *p = (const uint32_t *)s->ids + start;
        for (int i = 0; i < n; i++) dst[i] = (int32_t)p[i]; /* < 2^31, checked at open */
    }
}
