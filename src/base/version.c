/* version.c — the version of the library linked at run time (msrnn.h's MSRNN_VERSION_* are the
 * version a program was compiled against). */
#include "msrnn.h"

const char *msrnn_version(void) { return MSRNN_VERSION_STRING; }

int msrnn_version_number(void) { return MSRNN_VERSION_NUMBER; }
