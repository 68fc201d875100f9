/* clock.h — wall-clock seconds for measuring speed (tokens per second, ETA). */
#ifndef MSRNN_BASE_CLOCK_H
#define MSRNN_BASE_CLOCK_H

#include <time.h>

/* Seconds on a monotonic clock (differences only: the origin is arbitrary). */
static inline double monotonic_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#endif
