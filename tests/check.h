/* check.h — the assertions of the C tests.
 *
 * CHECK(cond, fmt, ...)    counts a check; on failure prints "FAIL file:line: message" to stdout
 * and goes on (the test reports the count at the end and exits non-zero) REQUIRE(cond, fmt, ...)
 * counts a check; on failure prints the condition and the message to stderr and exits 1 at once
 * (for checks that later code depends on) REQUIRE_OK(expr)         REQUIRE that a library call
 * returned MSRNN_OK, naming the status and error `checks` and `failures` count them; each test
 * prints its own summary. */
#ifndef MSRNN_TESTS_CHECK_H
#define MSRNN_TESTS_CHECK_H

#include <stdio.h>
#include <stdlib.h>

static int checks, failures;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        checks++;                                                                                  \
        if (!(cond)) {                                                                             \
            failures++;                                                                            \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                            \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
        }                                                                                          \
    } while (0)

#define REQUIRE(cond, ...)                                                                         \
    do {                                                                                           \
        checks++;                                                                                  \
        if (!(cond)) {                                                                             \
            failures++;                                                                            \
            fprintf(stderr, "%s:%d: check failed: %s\n  ", __FILE__, __LINE__, #cond);             \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#define REQUIRE_OK(expr)                                                                           \
    do {                                                                                           \
        msrnn_status st_ = (expr);                                                                 \
        REQUIRE(st_ == MSRNN_OK, "%s -> %s: %s", #expr, msrnn_status_name(st_),                    \
                msrnn_last_error());                                                               \
    } while (0)

#endif
