/* test_atomic_file.c — the one atomic file writer (src/base/atomic_file.c) and sync_parent_dir.
 *
 * 1. A commit writes exactly the bytes given, through atomic_file_write (small writes, a write
 *    larger than the buffer) and the stdio stream mixed in order, with mode 0644; a second commit
 *    replaces the file; the temporary file sits beside the target as "NAME.tmp-XXXXXX" while
 *    writing and is gone afterwards; atomic_file_write_all does the same in one call.
 * 2. Every failure leaves the folder as it was and names the path: no folder to write in (at
 *    open), the rename failing (the target is a folder), a write failing (a file size limit, so
 *    write(2) fails with EFBIG), and an abort.
 * 3. sync_parent_dir takes a bare name, a path in the root, a nested path and "" (which used to get
 *    "." copied into a 1-byte buffer: the sanitizer build fails on that).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/atomic_file.h"
#include "base/sync_dir.h"
#include "check.h"
#include "files.h"

static void test_commit(void) {
    const char *path = tmp_path("out.bin");
    enum { BIG = 3 << 20 }; /* larger than the writer's buffer */
    uint8_t *big = malloc(BIG);
    for (size_t i = 0; i < BIG; i++) big[i] = (uint8_t)(i * 7 + 3);

    atomic_file *f;
    REQUIRE_OK(atomic_file_open(path, &f));
    char names[512];
    REQUIRE(list_dir(tmp_dir, COUNT_DOT_FILES, names, sizeof names) == 1 &&
                !strncmp(names, "out.bin.tmp-", 12) &&
                strlen(names) == strlen("out.bin.tmp-XXXXXX "),
            "while writing, the folder holds: %s", names);
    atomic_file_write(f, "head", 4);
    fprintf(atomic_file_stream(f), "[%d|%s]", 42, "text");
    atomic_file_write(f, big, BIG);
    fputs("tail", atomic_file_stream(f));
    CHECK(atomic_file_offset(f) == 4 + 9 + BIG + 4, "offset %llu",
          (unsigned long long)atomic_file_offset(f));
    CHECK(!atomic_file_failed(f), "a write failed");
    REQUIRE_OK(atomic_file_commit(f));

    size_t n;
    uint8_t *got = read_all(path, &n);
    CHECK(n == 4 + 9 + BIG + 4 && !memcmp(got, "head[42|text]", 13) &&
              !memcmp(got + 13, big, BIG) && !memcmp(got + 13 + BIG, "tail", 4),
          "%zu bytes, or not the bytes written in order", n);
    free(got);
    struct stat sb;
    CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0644, "mode %o", sb.st_mode & 0777);
    CHECK(list_dir(tmp_dir, COUNT_DOT_FILES, names, sizeof names) == 1, "after commit: %s", names);

    /* a second write replaces the first */
    REQUIRE_OK(atomic_file_write_all(path, "second", 6));
    got = read_all(path, &n);
    CHECK(n == 6 && !memcmp(got, "second", 6), "replaced by %zu bytes", n);
    free(got);
    CHECK(list_dir(tmp_dir, COUNT_DOT_FILES, names, sizeof names) == 1, "after replacing: %s",
          names);
    free(big);
}

static void test_failures(void) {
    const char *path = tmp_path("out.bin"); /* holds "second" */
    char names[512];

    /* no folder: refused at open, naming the path */
    atomic_file *f;
    CHECK(atomic_file_open(tmp_path("absent/x.bin"), &f) == MSRNN_ERR_IO &&
              strstr(msrnn_last_error(), "absent/x.bin") &&
              strstr(msrnn_last_error(), "cannot create a temporary file"),
          "missing folder: %s", msrnn_last_error());

    /* a target that is a folder (or a device) is refused at open, never replaced */
    const char *dir = tmp_path("is-a-dir");
    REQUIRE(mkdir(dir, 0755) == 0, "mkdir %s", dir);
    CHECK(atomic_file_open(dir, &f) == MSRNN_ERR_IO && strstr(msrnn_last_error(), "a folder") &&
              strstr(msrnn_last_error(), "is-a-dir"),
          "open over a folder: %s", msrnn_last_error());
    CHECK(atomic_file_open("/dev/null", &f) == MSRNN_ERR_IO && strstr(msrnn_last_error(), "device"),
          "open over /dev/null: %s", msrnn_last_error());
    rmdir(dir);

    /* the rename fails: the target became a folder while the file was written */
    REQUIRE_OK(atomic_file_open(dir, &f));
    REQUIRE(mkdir(dir, 0755) == 0, "mkdir %s", dir);
    atomic_file_write(f, "x", 1);
    CHECK(atomic_file_commit(f) == MSRNN_ERR_IO && strstr(msrnn_last_error(), "renaming") &&
              strstr(msrnn_last_error(), "is-a-dir"),
          "rename over a folder: %s", msrnn_last_error());
    CHECK(list_dir(tmp_dir, COUNT_DOT_FILES, names, sizeof names) == 2, "after a failed rename: %s",
          names);
    rmdir(dir);

    /* a write fails (a file size limit: write(2) gives EFBIG); the old file stays */
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 1 << 16;
    signal(SIGXFSZ, SIG_IGN);
    REQUIRE(setrlimit(RLIMIT_FSIZE, &lim) == 0, "setrlimit");
    REQUIRE_OK(atomic_file_open(path, &f));
    uint8_t block[4096] = {1};
    for (int i = 0; i < 64; i++) atomic_file_write(f, block, sizeof block);
    fprintf(atomic_file_stream(f), "more");
    CHECK(atomic_file_commit(f) == MSRNN_ERR_IO && strstr(msrnn_last_error(), "writing") &&
              strstr(msrnn_last_error(), "out.bin"),
          "write past the size limit: %s", msrnn_last_error());
    REQUIRE(setrlimit(RLIMIT_FSIZE, &old) == 0, "setrlimit back");
    signal(SIGXFSZ, SIG_DFL);
    size_t n;
    uint8_t *got = read_all(path, &n);
    CHECK(n == 6 && !memcmp(got, "second", 6), "a failed write changed the file (%zu bytes)", n);
    free(got);
    CHECK(list_dir(tmp_dir, COUNT_DOT_FILES, names, sizeof names) == 1, "after a failed write: %s",
          names);

    /* abort: nothing written, nothing left */
    REQUIRE_OK(atomic_file_open(path, &f));
    atomic_file_write(f, "gone", 4);
    atomic_file_abort(f);
    atomic_file_abort(NULL);
    got = read_all(path, &n);
    CHECK(n == 6 && !memcmp(got, "second", 6), "an abort changed the file");
    free(got);
    CHECK(list_dir(tmp_dir, COUNT_DOT_FILES, names, sizeof names) == 1, "after an abort: %s",
          names);
    unlink(path);
}

/* Nothing to assert but that it returns: the sanitizer build catches an overflow. */
static void test_sync_dir(void) {
    sync_parent_dir("no-slash-here");
    sync_parent_dir("/in-the-root");
    sync_parent_dir(tmp_path("a/b/c"));
    sync_parent_dir("");
}

int main(void) {
    make_tmp_dir("/tmp/test_atomic_file.XXXXXX");
    test_commit();
    test_failures();
    test_sync_dir();
    CHECK(n_files_in_tmp(COUNT_DOT_FILES) == 0, "files left in %s", tmp_dir);
    rmdir(tmp_dir);
    printf("test_atomic_file: %d passed, %d failed\n", checks - failures, failures);
    return failures != 0;
}
