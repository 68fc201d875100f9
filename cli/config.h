/* config.h — configuration files of `name = value` lines (msrnn train --config).
 *
 * One setting per line: `name = value`, or `name` alone for a switch; `#` starts a comment; blanks
 * around names and values are ignored. A name is 1..63 of [a-z0-9-] (a flag's long name without
 * its dashes). The text must be UTF-8 without NUL bytes. Every error names the file and the line.
 */
#ifndef MSRNN_CLI_CONFIG_H
#define MSRNN_CLI_CONFIG_H

#include <stddef.h>

/* Called for each setting; value is NULL for a switch; where is "FILE:LINE" for messages. Returns
 * 0 to go on, or an exit status (the parse stops and returns it). */
typedef int (*config_fn)(void *ctx, const char *name, const char *value, const char *where);

/* Parses text[0..len) read from path (for messages). 0, the callback's status, or 2 after printing
 * "msrnn CMD: FILE:LINE: what is wrong". */
int config_parse(const char *cmd, const char *path, const char *text, size_t len, config_fn fn,
                 void *ctx);

#endif
