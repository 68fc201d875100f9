/* status.c — the thread-local error message behind msrnn_last_error(). */
#include "base/status.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char last_error[1024];

msrnn_status status_fail(msrnn_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return st;
}

void status_clear(void) { last_error[0] = 0; }

const char *msrnn_last_error(void) { return last_error; }

const char *msrnn_status_name(msrnn_status st) {
    switch (st) {
    case MSRNN_OK: return "ok";
    case MSRNN_ERR_IO: return "I/O error";
    case MSRNN_ERR_FORMAT: return "malformed file";
    case MSRNN_ERR_INVALID: return "invalid argument";
    case MSRNN_ERR_NOMEM: return "out of memory";
    case MSRNN_ERR_UNSUPPORTED: return "unsupported";
    case MSRNN_ERR_FULL: return "context full";
    }
    return "unknown status";
}
