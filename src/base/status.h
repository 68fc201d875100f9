/* status.h — how the library reports failure: a status code plus a thread-local message.
 * Not a logging system: nothing here prints. */
#ifndef MSRNN_BASE_STATUS_H
#define MSRNN_BASE_STATUS_H

#include "msrnn.h"

#if defined(__GNUC__)
#define MSRNN_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define MSRNN_PRINTF(a, b)
#endif

/* Record a message for msrnn_last_error() and return st, so that callers can write
 * `return status_fail(MSRNN_ERR_FORMAT, "%s: tensor '%s' ...", path, name);` */
msrnn_status status_fail(msrnn_status st, const char *fmt, ...) MSRNN_PRINTF(2, 3);
void status_clear(void);

#define MSRNN_TRY(expr)                                                                            \
    do {                                                                                           \
        msrnn_status st_ = (expr);                                                                 \
        if (st_ != MSRNN_OK) return st_;                                                           \
    } while (0)

#endif
