/* test_data.c — token shards and the window loader (src/train/data.c).
 *
 * 1. Shards round-trip through token_shard_write / token_shard_open for both id widths (the u16
 *    boundary vocab = 65536 included); bad writer arguments are refused before any file appears; a
 *    write into a missing folder leaves nothing; a write replaces an existing file.
 * 2. Malformed shards, made byte by byte from a valid one, are refused with MSRNN_ERR_FORMAT and a
 *    message naming the file and the problem: empty, truncated at every length, bad magic, wrong
 *    version, width 3, width not matching the vocabulary, token count off by one either way, fewer
 *    than 2 tokens, an id >= vocab (the message names its index), BOS >= vocab, nonzero padding
 *    (56..63; 48..63 in version 1), version 0 or 3; a version 1 shard is read with no hash; the
 *    vocabulary hash round-trips and token_shard_check_vocab refuses another size or hash,
 *    more documents than tokens.
 * 3. The loader: windows are T + 1 consecutive tokens at multiples of T; every window appears
 *    exactly once per epoch (batches straddling epoch boundaries); epochs have different orders;
 *    the same seed gives the same sequence, another seed another; get_state/set_state mid-epoch,
 *    exactly at an epoch's end and just after it reproduce the uninterrupted sequence;
 *    data_loader_window equals the raw tokens; a shard shorter than T + 1 is refused; the
 *    Fisher–Yates shuffle is uniform (all 120 orders of 5 windows equally often over 12,000 seeds).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "files.h"
#include "train/loader.h"
#include "train/shard.h"

static uint64_t rng_state = 0x1234567;
static uint32_t rng_u32(void) {
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}

/* ---- 1. round trips and the writer ------------------------------------------------------------
 */

static void round_trip(uint32_t vocab, uint64_t n, uint32_t width) {
    int32_t *ids = malloc(n * sizeof *ids), *back = malloc(n * sizeof *back);
    for (uint64_t i = 0; i < n; i++) ids[i] = (int32_t)(rng_u32() % vocab);
    ids[0] = (int32_t)(vocab - 1); /* the largest id survives the width */
    const char *path = tmp_path("rt.bin");
    REQUIRE_OK(token_shard_write(path, ids, n, vocab, 0x0123456789abcdefull ^ vocab, vocab / 2, 3,
                                 12345678901ull));
    size_t size;
    free(read_all(path, &size));
    REQUIRE(size == 64 + n * width, "vocab %u: file of %zu bytes, expected %llu", vocab, size,
            (unsigned long long)(64 + n * width));
    token_shard *s;
    REQUIRE_OK(token_shard_open(path, &s));
    REQUIRE(token_shard_n_tokens(s) == n && token_shard_vocab(s) == vocab &&
                token_shard_bos(s) == vocab / 2 && token_shard_n_docs(s) == 3 &&
                token_shard_n_bytes(s) == 12345678901ull && token_shard_version(s) == 2,
            "vocab %u: header fields", vocab);
    uint64_t hash = 0;
    REQUIRE(token_shard_vocab_hash(s, &hash) && hash == (0x0123456789abcdefull ^ vocab),
            "vocab %u: the vocabulary hash did not survive", vocab);
    REQUIRE_OK(token_shard_check_vocab(s, "m.gguf", vocab, 1, hash));
    REQUIRE_OK(token_shard_check_vocab(s, "m.gguf", vocab, 0, 0));
    REQUIRE(token_shard_check_vocab(s, "m.gguf", vocab + 1, 1, hash) == MSRNN_ERR_FORMAT &&
                strstr(msrnn_last_error(), "rt.bin") && strstr(msrnn_last_error(), "m.gguf"),
            "vocab %u: size mismatch: %s", vocab, msrnn_last_error());
    REQUIRE(token_shard_check_vocab(s, "m.gguf", vocab, 1, hash ^ 1) == MSRNN_ERR_FORMAT &&
                strstr(msrnn_last_error(), "hash"),
            "vocab %u: hash mismatch: %s", vocab, msrnn_last_error());
    token_shard_read(s, 0, (int)n, back);
    REQUIRE(!memcmp(ids, back, n * sizeof *ids), "vocab %u: ids differ", vocab);
    token_shard_read(s, n - 7, 7, back);
    REQUIRE(!memcmp(ids + n - 7, back, 7 * sizeof *ids), "vocab %u: tail read differs", vocab);
    token_shard_close(s);
    free(ids), free(back);
}

static void test_writer(void) {
    round_trip(300, 1000, 2);
    round_trip(65536, 5000, 2);
    round_trip(65537, 5000, 4);
    round_trip(70000, 333, 4);
    unlink(tmp_path("rt.bin"));

    int32_t ids[8] = {1, 5, 6, 7, 1, 9, 8, 2};
    const char *path = tmp_path("w.bin");
    struct {
        const int32_t *ids;
        uint64_t n, n_docs;
        uint32_t vocab, bos;
        const char *needle;
    } bad[] = {
        {ids, 8, 2, 9, 1, "token 5 has id 9"}, {ids, 8, 2, 10, 10, "BOS id 10"},
        {ids, 1, 1, 10, 1, "at least 2"},      {ids, 8, 2, 0, 0, "vocabulary size 0"},
        {ids, 8, 9, 10, 1, "9 documents"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        msrnn_status st = token_shard_write(path, bad[k].ids, bad[k].n, bad[k].vocab, 0, bad[k].bos,
                                            bad[k].n_docs, 0);
        REQUIRE(st == MSRNN_ERR_INVALID && strstr(msrnn_last_error(), bad[k].needle) &&
                    strstr(msrnn_last_error(), "w.bin"),
                "bad write %zu: %s: %s (expected '%s')", k, msrnn_status_name(st),
                msrnn_last_error(), bad[k].needle);
    }
    int32_t neg[3] = {0, -1, 2};
    REQUIRE(token_shard_write(path, neg, 3, 10, 0, 0, 1, 0) == MSRNN_ERR_INVALID &&
                strstr(msrnn_last_error(), "token 1 has id -1"),
            "negative id: %s", msrnn_last_error());
    REQUIRE(n_files_in_tmp(SKIP_DOT_FILES) == 0, "a refused write left a file");

    msrnn_status st = token_shard_write(tmp_path("missing/w.bin"), ids, 8, 10, 0, 1, 2, 0);
    REQUIRE(st == MSRNN_ERR_IO && strstr(msrnn_last_error(), "missing/w.bin"), "%s: %s",
            msrnn_status_name(st), msrnn_last_error());
    REQUIRE(n_files_in_tmp(SKIP_DOT_FILES) == 0, "a failed write left a file");

    write_all(path, "old", 3);
    REQUIRE_OK(token_shard_write(path, ids, 8, 10, 0, 1, 2, 40));
    size_t size;
    free(read_all(path, &size));
    REQUIRE(size == 64 + 16 && n_files_in_tmp(SKIP_DOT_FILES) == 1,
            "replacing: %zu bytes, %d files", size, n_files_in_tmp(SKIP_DOT_FILES));
    unlink(path);
}

/* ---- 2. malformed shards ----------------------------------------------------------------------
 */

static void put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

static void expect_bad(const char *name, const uint8_t *bytes, size_t n, const char *needle) {
    const char *path = tmp_path(name);
    write_all(path, bytes, n);
    token_shard *s = (token_shard *)1;
    msrnn_status st = token_shard_open(path, &s);
    REQUIRE(st == MSRNN_ERR_FORMAT && s == NULL, "%s: %s (%s)", name, msrnn_status_name(st),
            msrnn_last_error());
    REQUIRE(strstr(msrnn_last_error(), name) && strstr(msrnn_last_error(), needle),
            "%s: message '%s' should name the file and say '%s'", name, msrnn_last_error(), needle);
    unlink(path);
}

static void test_malformed(void) {
    enum { N = 1000, VOCAB = 300 };
    int32_t ids[N];
    for (int i = 0; i < N; i++) ids[i] = (int32_t)(rng_u32() % VOCAB);
    const char *path = tmp_path("good.bin");
    REQUIRE_OK(token_shard_write(path, ids, N, VOCAB, 0x1122334455667788ull, 1, 4, 4000));
    size_t size;
    uint8_t *good = read_all(path, &size), *b = malloc(size + 8);
    unlink(path);

    expect_bad("empty.bin", good, 0, "empty");
    for (size_t n = 1; n < 64; n++) expect_bad("short-header.bin", good, n, "truncated");
    for (size_t n = 64; n < size; n++) expect_bad("truncated.bin", good, n, "tokens but");
    memcpy(b, good, size), b[size] = 0;
    expect_bad("longer.bin", b, size + 1, "tokens but");
    memcpy(b, good, size), b[size] = 0, b[size + 1] = 0;
    expect_bad("longer2.bin", b, size + 2, "tokens but");

#define MUTATE(name, edit, needle)                                                                 \
    do {                                                                                           \
        memcpy(b, good, size);                                                                     \
        edit;                                                                                      \
        expect_bad(name, b, size, needle);                                                         \
    } while (0)
    MUTATE("magic.bin", b[3] = 'X', "bad magic");
    MUTATE("version.bin", put_u32(b + 8, 3), "version 3, expected 1 or 2");
    MUTATE("version0.bin", put_u32(b + 8, 0), "version 0, expected 1 or 2");
    MUTATE("width3.bin", put_u32(b + 12, 3), "3 bytes per id, expected 2 or 4");
    MUTATE("width4.bin", put_u32(b + 12, 4), "4 bytes per id with a vocabulary of 300");
    MUTATE("vocab0.bin", put_u32(b + 16, 0), "vocabulary size 0");
    MUTATE("bos.bin", put_u32(b + 20, VOCAB), "BOS id 300");
    MUTATE("ntok-plus.bin", put_u64(b + 24, N + 1), "says 1001 tokens");
    MUTATE("ntok-minus.bin", put_u64(b + 24, N - 1), "says 999 tokens");
    MUTATE("ntok-huge.bin", put_u64(b + 24, ~0ull), "tokens but");
    MUTATE("ndocs.bin", put_u64(b + 32, N + 1), "1001 documents");
    MUTATE("padding.bin", b[60] = 1, "header byte 60");
    MUTATE("padding56.bin", b[56] = 1, "header byte 56");
    /* version 1 has no hash: bytes 48..63 are padding */
    MUTATE("v1-hash.bin", put_u32(b + 8, 1), "header byte 48");
    MUTATE("id.bin", (b[64 + 2 * 537] = 44, b[64 + 2 * 537 + 1] = 1), "token 537 has id 300");
    MUTATE("id-last.bin", (b[size - 2] = 0xff, b[size - 1] = 0xff), "token 999 has id 65535");
#undef MUTATE
    /* a version 1 shard (no hash) is still read; only its size can be checked */
    memcpy(b, good, size);
    put_u32(b + 8, 1), put_u64(b + 48, 0);
    write_all(tmp_path("v1.bin"), b, size);
    token_shard *v1 = NULL;
    REQUIRE_OK(token_shard_open(tmp_path("v1.bin"), &v1));
    uint64_t h1 = 1;
    REQUIRE(token_shard_version(v1) == 1 && !token_shard_vocab_hash(v1, &h1) && h1 == 0,
            "version 1: version %u, hash %llx", token_shard_version(v1), (unsigned long long)h1);
    REQUIRE_OK(token_shard_check_vocab(v1, "m.gguf", VOCAB, 1, 0x42));
    REQUIRE(token_shard_check_vocab(v1, "m.gguf", VOCAB + 1, 1, 0x42) == MSRNN_ERR_FORMAT,
            "version 1: a size mismatch passed");
    token_shard_close(v1);
    unlink(tmp_path("v1.bin"));
    /* one token: a valid header and size, but no (input, target) pair */
    memcpy(b, good, 66);
    put_u64(b + 24, 1), put_u64(b + 32, 1);
    expect_bad("one-token.bin", b, 66, "at least 2");
    /* an id >= vocab in a 4-byte shard */
    int32_t big[5] = {0, 69999, 1, 2, 3};
    REQUIRE_OK(token_shard_write(path, big, 5, 70000, 0, 0, 1, 0));
    free(good);
    good = read_all(path, &size);
    unlink(path);
    memcpy(b, good, size);
    put_u32(b + 64 + 4 * 3, 70000);
    expect_bad("id32.bin", b, size, "token 3 has id 70000");

    msrnn_status st = token_shard_open(tmp_path("absent.bin"), &(token_shard *){0});
    REQUIRE(st == MSRNN_ERR_IO && strstr(msrnn_last_error(), "absent.bin"), "%s",
            msrnn_last_error());
    REQUIRE(token_shard_open(tmp_dir, &(token_shard *){0}) == MSRNN_ERR_IO, "a folder opened");
    free(good), free(b);
}

/* ---- 3. the loader ----------------------------------------------------------------------------
 */

/* A shard whose token i is i (vocab 70000, 4-byte ids), so each window names itself. */
static token_shard *position_shard(const char *name, uint64_t n) {
    int32_t *ids = malloc(n * sizeof *ids);
    for (uint64_t i = 0; i < n; i++) ids[i] = (int32_t)i;
    REQUIRE_OK(token_shard_write(tmp_path(name), ids, n, 70000, 0, 0, 1, n));
    free(ids);
    token_shard *s;
    REQUIRE_OK(token_shard_open(tmp_path(name), &s));
    return s;
}

/* Draw n windows in batches of B (last one partial) and return their indices, checking that each
 * is T + 1 consecutive tokens starting at a multiple of T. */
static void draw(data_loader *d, int T, int B, int n, uint64_t *out) {
    int32_t *buf = malloc((size_t)B * (size_t)(T + 1) * sizeof *buf);
    for (int got = 0; got < n;) {
        int b = n - got < B ? n - got : B;
        data_loader_next(d, b, buf);
        for (int r = 0; r < b; r++) {
            const int32_t *w = buf + (size_t)r * (size_t)(T + 1);
            REQUIRE(w[0] % T == 0, "window starts at token %d, not a multiple of %d", w[0], T);
            for (int j = 1; j <= T; j++)
                REQUIRE(w[j] == w[0] + j, "window from %d: token %d is %d", w[0], j, w[j]);
            out[got++] = (uint64_t)(w[0] / T);
        }
    }
    free(buf);
}

static void test_loader_epochs(void) {
    enum { T = 16, NW = 37, EPOCHS = 4 };
    token_shard *s = position_shard("pos.bin", NW * T + 1 + 5); /* 5 tokens left over */
    data_loader *d, *same, *other;
    REQUIRE_OK(data_loader_open(s, T, 42, &d));
    REQUIRE(data_loader_n_windows(d) == NW, "%llu windows, expected %d",
            (unsigned long long)data_loader_n_windows(d), NW);
    uint64_t seq[NW * EPOCHS];
    draw(d, T, 5, NW * EPOCHS, seq); /* 5 does not divide 37: batches straddle epochs */
    int identity = 0;
    for (int e = 0; e < EPOCHS; e++) {
        int seen[NW] = {0}, in_order = 1;
        for (int i = 0; i < NW; i++) {
            REQUIRE(seq[e * NW + i] < NW, "window %llu out of range",
                    (unsigned long long)seq[e * NW + i]);
            seen[seq[e * NW + i]]++;
            in_order &= seq[e * NW + i] == (uint64_t)i;
        }
        for (int w = 0; w < NW; w++)
            REQUIRE(seen[w] == 1, "epoch %d: window %d seen %d times", e, w, seen[w]);
        identity += in_order;
        if (e) {
            REQUIRE(memcmp(seq + e * NW, seq + (e - 1) * NW, NW * sizeof *seq) != 0,
                    "epochs %d and %d have the same order", e - 1, e);
        }
    }
    REQUIRE(identity == 0, "an epoch was not shuffled");
    loader_state st = data_loader_get_state(d);
    REQUIRE(st.seed == 42 && st.epoch == EPOCHS - 1 && st.cursor == NW, "state %llu %llu %llu",
            (unsigned long long)st.seed, (unsigned long long)st.epoch,
            (unsigned long long)st.cursor);

    uint64_t again[NW * EPOCHS], diff[NW * EPOCHS];
    REQUIRE_OK(data_loader_open(s, T, 42, &same));
    REQUIRE_OK(data_loader_open(s, T, 43, &other));
    draw(same, T, 3, NW * EPOCHS, again);
    draw(other, T, 5, NW * EPOCHS, diff);
    REQUIRE(!memcmp(seq, again, sizeof seq), "same seed, different windows");
    REQUIRE(memcmp(seq, diff, NW * sizeof *seq) != 0, "seeds 42 and 43 give the same first epoch");
    data_loader_free(d), data_loader_free(same), data_loader_free(other);

    /* windows in file order */
    REQUIRE_OK(data_loader_open(s, T, 0, &d));
    int32_t w[T + 1], raw[T + 1];
    for (uint64_t i = 0; i < NW; i++) {
        data_loader_window(d, i, w);
        token_shard_read(s, i * T, T + 1, raw);
        REQUIRE(!memcmp(w, raw, sizeof w) && w[0] == (int32_t)(i * T) &&
                    w[T] == (int32_t)(i * T + T),
                "window %llu", (unsigned long long)i);
    }
    data_loader_free(d);
    token_shard_close(s);

    /* n_tokens = k*T + 1 exactly: the last window ends at the last token */
    s = position_shard("exact.bin", 5 * T + 1);
    REQUIRE_OK(data_loader_open(s, T, 7, &d));
    REQUIRE(data_loader_n_windows(d) == 5, "exact: %llu windows",
            (unsigned long long)data_loader_n_windows(d));
    data_loader_window(d, 4, w);
    REQUIRE(w[T] == 5 * T, "exact: last token %d", w[T]);
    data_loader_free(d);
    /* the shortest shard for T: one window, every draw gives it */
    REQUIRE_OK(data_loader_open(s, 5 * T, 7, &d));
    uint64_t one[7];
    draw(d, 5 * T, 2, 7, one);
    for (int i = 0; i < 7; i++)
        REQUIRE(one[i] == 0, "single window: got window %llu", (unsigned long long)one[i]);
    data_loader_free(d);
    /* too short for T */
    msrnn_status rc = data_loader_open(s, 5 * T + 1, 7, &d);
    REQUIRE(rc == MSRNN_ERR_INVALID && d == NULL && strstr(msrnn_last_error(), "81 tokens") &&
                strstr(msrnn_last_error(), "exact.bin"),
            "too short: %s: %s", msrnn_status_name(rc), msrnn_last_error());
    rc = data_loader_open(s, 0, 7, &d);
    REQUIRE(rc == MSRNN_ERR_INVALID && strstr(msrnn_last_error(), "T = 0"), "T = 0: %s",
            msrnn_last_error());
    token_shard_close(s);
}

static void test_loader_resume(void) {
    enum { T = 8, NW = 23, TOTAL = 4 * NW };
    token_shard *s = position_shard("resume.bin", NW * T + 3);
    data_loader *ref;
    REQUIRE_OK(data_loader_open(s, T, 99, &ref));
    uint64_t full[TOTAL];
    draw(ref, T, 4, TOTAL, full);
    data_loader_free(ref);

    /* stop after k windows, save, resume in a fresh loader (opened with another seed) */
    const int stops[] = {0, 1, 10, NW - 1, NW, NW + 1, 2 * NW, 3 * NW - 2};
    for (size_t k = 0; k < sizeof stops / sizeof stops[0]; k++) {
        int at = stops[k];
        data_loader *a, *b;
        REQUIRE_OK(data_loader_open(s, T, 99, &a));
        uint64_t head[TOTAL], tail[TOTAL];
        if (at) draw(a, T, 3, at, head);
        loader_state st = data_loader_get_state(a);
        REQUIRE(st.seed == 99 && st.epoch * NW + st.cursor == (uint64_t)at &&
                    (at == 0 || st.cursor >= 1),
                "stop %d: state epoch %llu cursor %llu", at, (unsigned long long)st.epoch,
                (unsigned long long)st.cursor);
        REQUIRE_OK(data_loader_open(s, T, 12345, &b));
        uint64_t junk[5];
        draw(b, T, 2, 5, junk); /* b has moved on elsewhere before being restored */
        REQUIRE_OK(data_loader_set_state(b, st));
        loader_state back = data_loader_get_state(b);
        REQUIRE(!memcmp(&back, &st, sizeof st), "stop %d: get_state after set_state differs", at);
        draw(b, T, 5, TOTAL - at, tail);
        REQUIRE(!memcmp(tail, full + at, (size_t)(TOTAL - at) * sizeof *tail),
                "stop %d: resumed windows differ from the uninterrupted run", at);
        draw(a, T, 7, TOTAL - at, tail); /* and the original goes on the same way */
        REQUIRE(!memcmp(tail, full + at, (size_t)(TOTAL - at) * sizeof *tail),
                "stop %d: the interrupted loader itself changed course", at);
        data_loader_free(a), data_loader_free(b);
    }

    /* a state at the end of an epoch written as (epoch, n_windows) or (epoch + 1, 0) is the same */
    data_loader *a;
    REQUIRE_OK(data_loader_open(s, T, 99, &a));
    uint64_t x[NW], y[NW];
    REQUIRE_OK(data_loader_set_state(a, (loader_state){99, 1, NW}));
    draw(a, T, 4, NW, x);
    REQUIRE_OK(data_loader_set_state(a, (loader_state){99, 2, 0}));
    draw(a, T, 4, NW, y);
    REQUIRE(!memcmp(x, y, sizeof x) && !memcmp(x, full + 2 * NW, sizeof x),
            "end-of-epoch states disagree");
    msrnn_status rc = data_loader_set_state(a, (loader_state){99, 0, NW + 1});
    REQUIRE(rc == MSRNN_ERR_INVALID && strstr(msrnn_last_error(), "cursor 24") &&
                strstr(msrnn_last_error(), "23 windows"),
            "cursor out of range: %s: %s", msrnn_status_name(rc), msrnn_last_error());
    data_loader_free(a);
    token_shard_close(s);
}

/* All 5! orders of the first epoch appear equally often over 12,000 seeds (expected 100 each). */
static void test_shuffle_uniform(void) {
    token_shard *s = position_shard("five.bin", 6);
    int count[5 * 5 * 5 * 5 * 5] = {0};
    uint64_t w[5];
    for (uint64_t seed = 0; seed < 12000; seed++) {
        data_loader *d;
        REQUIRE_OK(data_loader_open(s, 1, seed, &d));
        draw(d, 1, 5, 5, w);
        count[(((w[0] * 5 + w[1]) * 5 + w[2]) * 5 + w[3]) * 5 + w[4]]++;
        data_loader_free(d);
    }
    int n_orders = 0, lo = 1 << 30, hi = 0;
    double chi2 = 0;
    for (int i = 0; i < 3125; i++) {
        if (!count[i]) continue;
        n_orders++;
        lo = count[i] < lo ? count[i] : lo, hi = count[i] > hi ? count[i] : hi;
        chi2 += (count[i] - 100.0) * (count[i] - 100.0) / 100.0;
    }
    /* 119 degrees of freedom: chi2 has mean 119 and sd 15.4 */
    REQUIRE(n_orders == 120 && lo >= 55 && hi <= 150 && chi2 < 200,
            "%d orders seen (120 expected), counts %d..%d, chi2 %.1f", n_orders, lo, hi, chi2);
    token_shard_close(s);
}

int main(void) {
    make_tmp_dir("/tmp/msrnn-test-data-XXXXXX");
    test_writer();
    test_malformed();
    test_loader_epochs();
    test_loader_resume();
    test_shuffle_uniform();
    const char *made[] = {"pos.bin", "exact.bin", "resume.bin", "five.bin"};
    for (size_t i = 0; i < sizeof made / sizeof made[0]; i++) unlink(tmp_path(made[i]));
    REQUIRE(n_files_in_tmp(SKIP_DOT_FILES) == 0, "files left in %s", tmp_dir);
    rmdir(tmp_dir);
    printf("test_data: %d checks passed\n", checks);
    return 0;
}
