/* files.h — the file helpers of the C tests that write files: one temporary folder per test.
 *
 * make_tmp_dir(pattern)    creates the folder tmp_dir from a mkdtemp pattern ("/tmp/NAME.XXXXXX")
 * tmp_path(name)           "tmp_dir/name" (four buffers in turn: up to four at once are valid)
 * read_all(path, &len)     a file's bytes in a malloc'd buffer (never NULL; free it)
 * write_all(path, p, n)    a file made of the n bytes at p
 * list_dir(dir, dots, buf, cap) the entries of a folder, counted, "." and ".." left out and the
 *                          other names starting with '.' counted or not (dots); the names joined by
 *                          spaces into buf unless buf is NULL
 * n_files_in_tmp(dots)     list_dir of tmp_dir, without the names
 * Every failure to open, read, write or list REQUIREs (counts a check and exits). The functions are
 * static inline so that a test need not use them all. */
#ifndef MSRNN_TESTS_FILES_H
#define MSRNN_TESTS_FILES_H

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

static char tmp_dir[64];

static inline void make_tmp_dir(const char *pattern) {
    snprintf(tmp_dir, sizeof tmp_dir, "%s", pattern);
    REQUIRE(mkdtemp(tmp_dir) != NULL, "mkdtemp %s", pattern);
}

static inline char *tmp_path(const char *name) {
    static char buf[4][256];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, sizeof buf[0], "%s/%s", tmp_dir, name);
    return p;
}

static inline uint8_t *read_all(const char *path, size_t *len) {
    FILE *fp = fopen(path, "rb");
    REQUIRE(fp != NULL, "cannot open %s", path);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *p = malloc(n ? (size_t)n : 1);
    REQUIRE(fread(p, 1, (size_t)n, fp) == (size_t)n, "short read of %s", path);
    fclose(fp);
    *len = (size_t)n;
    return p;
}

static inline void write_all(const char *path, const void *data, size_t len) {
    FILE *fp = fopen(path, "wb");
    REQUIRE(fp != NULL, "cannot create %s", path);
    REQUIRE(fwrite(data, 1, len, fp) == len, "short write to %s", path);
    fclose(fp);
}

/* Whether list_dir counts the names other than "." and ".." that start with '.'. */
typedef enum { COUNT_DOT_FILES, SKIP_DOT_FILES } dot_files;

static inline int list_dir(const char *dir, dot_files dots, char *buf, size_t cap) {
    DIR *d = opendir(dir);
    REQUIRE(d != NULL, "cannot list %s", dir);
    int n = 0;
    if (buf) buf[0] = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (dots == SKIP_DOT_FILES ? e->d_name[0] == '.'
                                   : !strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        n++;
        if (buf) {
            strncat(buf, e->d_name, cap - strlen(buf) - 2);
            strcat(buf, " ");
        }
    }
    closedir(d);
    return n;
}

static inline int n_files_in_tmp(dot_files dots) { return list_dir(tmp_dir, dots, NULL, 0); }

#endif
