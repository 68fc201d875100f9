/* mem.c — see mem.h. */
#include "base/mem.h"

#include <stdio.h>
#include <string.h>

uint64_t mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
    fclose(f);
    return (uint64_t)kb * 1024;
}

msrnn_status mem_check(uint64_t need, uint64_t limit, const char *what, const char *how) {
    const uint64_t avail = mem_available();
    const double gib = 1.0 / (1 << 30);
    if (limit && need > limit)
        return status_fail(MSRNN_ERR_NOMEM,
                           "%s needs %llu bytes (%.2f GiB), above the --max-memory limit of %llu "
                           "bytes (%.2f GiB); lower %s",
                           what, (unsigned long long)need, need * gib, (unsigned long long)limit,
                           limit * gib, how);
    if (avail && need > avail)
        return status_fail(MSRNN_ERR_NOMEM,
                           "%s needs %llu bytes (%.2f GiB), above the %llu bytes (%.2f GiB) this "
                           "machine has available (MemAvailable, swap not counted); lower %s",
                           what, (unsigned long long)need, need * gib, (unsigned long long)avail,
                           avail * gib, how);
    return MSRNN_OK;
}
