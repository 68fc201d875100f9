/* test_shard_writer.c — writing a token shard in pieces (token_shard_writer, src/train/shard.c),
 * as corpus tokenization does document by document.
 *
 * 1. Ids put in pieces of any size give the file token_shard_write gives for the same ids, for
 *    both id widths (vocabulary 1000: u16; 70000: u32), and it opens with the header's counts.
 * 2. A bad id in a later piece fails the commit with MSRNN_ERR_INVALID naming its index in the
 *    whole shard; fewer or more ids than the header says fail it too; open refuses bad header
 *    counts; an abort writes nothing. No failure leaves a file behind.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "files.h"
#include "train/shard.h"

enum { N = 20000 }; /* more than one internal conversion buffer of ids */

static void test_pieces(uint32_t vocab) {
    int32_t *ids = malloc(N * sizeof *ids);
    for (int i = 0; i < N; i++) ids[i] = (int32_t)((i * 7919u + 13) % vocab);
    REQUIRE_OK(token_shard_write(tmp_path("whole.bin"), ids, N, vocab, 0xabcdef0123456789ull, 1, 5,
                                 123456));
    static const size_t pieces[] = {0, 1, 4095, 4096, 4097, 1, 7710}; /* sums to N */
    token_shard_writer *w;
    REQUIRE_OK(token_shard_writer_open(tmp_path("pieces.bin"), vocab, 0xabcdef0123456789ull, 1, N,
                                       5, 123456, &w));
    size_t at = 0;
    for (size_t k = 0; k < sizeof pieces / sizeof *pieces; k++) {
        token_shard_writer_put(w, ids + at, pieces[k]);
        at += pieces[k];
    }
    REQUIRE(at == N, "pieces sum to %zu", at);
    REQUIRE_OK(token_shard_writer_commit(w));
    size_t na, nb;
    uint8_t *a = read_all(tmp_path("whole.bin"), &na), *b = read_all(tmp_path("pieces.bin"), &nb);
    CHECK(na == nb && !memcmp(a, b, na), "vocab %u: pieces give %zu bytes, whole %zu, or others",
          vocab, nb, na);
    free(a), free(b);
    token_shard *s;
    REQUIRE_OK(token_shard_open(tmp_path("pieces.bin"), &s));
    CHECK(token_shard_n_tokens(s) == N && token_shard_n_docs(s) == 5 &&
              token_shard_n_bytes(s) == 123456 && token_shard_vocab(s) == vocab,
          "vocab %u: header read back", vocab);
    token_shard_close(s);
    unlink(tmp_path("whole.bin")), unlink(tmp_path("pieces.bin"));
    free(ids);
}

static void test_failures(void) {
    const int32_t good[4] = {1, 2, 3, 4}, bad[3] = {5, 10, 6}; /* 10 is outside vocabulary 10 */
    const char *path = tmp_path("x.bin");
    token_shard_writer *w;
    REQUIRE_OK(token_shard_writer_open(path, 10, 7, 1, 7, 1, 0, &w));
    token_shard_writer_put(w, good, 4);
    token_shard_writer_put(w, bad, 3);
    CHECK(token_shard_writer_commit(w) == MSRNN_ERR_INVALID &&
              strstr(msrnn_last_error(), "token 5 has id 10") &&
              strstr(msrnn_last_error(), "x.bin"),
          "a bad id in the second piece: %s", msrnn_last_error());
    CHECK(n_files_in_tmp(COUNT_DOT_FILES) == 0, "a refused shard left a file");

    for (int extra = -1; extra <= 1; extra += 2) {
        REQUIRE_OK(token_shard_writer_open(path, 10, 7, 1, (uint64_t)(4 + extra), 1, 0, &w));
        token_shard_writer_put(w, good, 4);
        CHECK(token_shard_writer_commit(w) == MSRNN_ERR_INVALID &&
                  strstr(msrnn_last_error(), "4 ids written"),
              "4 ids for a header of %d: %s", 4 + extra, msrnn_last_error());
        CHECK(n_files_in_tmp(COUNT_DOT_FILES) == 0, "a short or long shard left a file");
    }

    CHECK(token_shard_writer_open(path, 10, 7, 10, 4, 1, 0, &w) == MSRNN_ERR_INVALID && !w,
          "BOS outside the vocabulary accepted");
    CHECK(token_shard_writer_open(path, 10, 7, 1, 4, 5, 0, &w) == MSRNN_ERR_INVALID,
          "more documents than tokens accepted");
    CHECK(token_shard_writer_open(tmp_path("absent/x.bin"), 10, 7, 1, 4, 1, 0, &w) ==
                  MSRNN_ERR_IO &&
              strstr(msrnn_last_error(), "absent/x.bin"),
          "missing folder: %s", msrnn_last_error());

    REQUIRE_OK(token_shard_writer_open(path, 10, 7, 1, 4, 1, 0, &w));
    token_shard_writer_put(w, good, 4);
    token_shard_writer_abort(w);
    CHECK(n_files_in_tmp(COUNT_DOT_FILES) == 0, "an abort left a file");
}

int main(void) {
    make_tmp_dir("/tmp/test_shard_writer.XXXXXX");
    test_pieces(1000);
    test_pieces(70000);
    test_failures();
    CHECK(n_files_in_tmp(COUNT_DOT_FILES) == 0, "files left in %s", tmp_dir);
    rmdir(tmp_dir);
    printf("test_shard_writer: %d passed, %d failed\n", checks - failures, failures);
    return failures != 0;
}
