/* memory.c — the table of memory kinds. Adding a kind: one file implementing memory_kind, one row here. */
#include "memory/memory.h"

#include <string.h>

static const memory_kind *const kinds[] = {&memory_full};

const memory_kind *memory_kind_find(const char *name) {
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++)
        if (strcmp(kinds[i]->name, name) == 0) return kinds[i];
    return NULL;
}
