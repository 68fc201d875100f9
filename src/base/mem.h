/* mem.h — how much memory the machine can give now, and the check every large allocation of the
 * library makes first: a session's slabs, training's slabs, a fresh model being written. Swap is
 * not counted: a plan that only fits by swapping would run for hours instead of failing at once. */
#ifndef MSRNN_BASE_MEM_H
#define MSRNN_BASE_MEM_H

#include <stdint.h>

#include "base/status.h"

/* MemAvailable of /proc/meminfo in bytes (0 when it cannot be read: then nothing is refused). */
uint64_t mem_available(void);

/* MSRNN_OK when need bytes fit under limit (0: no limit) and under mem_available(); else
 * MSRNN_ERR_NOMEM with "WHAT needs NEED bytes (X GiB), above LIMIT...; lower HOW". */
msrnn_status mem_check(uint64_t need, uint64_t limit, const char *what, const char *how);

#endif
