/* common.h — the options every model-running subcommand shares (-m, -t, -c, -b, --kv-type) and
 * opening a model + session from them. */
#ifndef MSRNN_CLI_COMMON_H
#define MSRNN_CLI_COMMON_H

#include "msrnn.h"

typedef struct {
    const char *model_path;
    msrnn_session_params sp;
} run_options;

void run_options_init(run_options *o);
/* If argv[*i] is a shared option, consume it (and its value), set *rc (0 ok, 2 bad value),
 * return 1. */
int run_options_parse(const char *cmd, run_options *o, int argc, char **argv, int *i, int *rc);
extern const char *const RUN_OPTIONS_HELP;

/* Open the model and a session; prints the error and returns 1 on failure. */
int open_model_session(const char *cmd, const run_options *o, msrnn_model **m, msrnn_session **s);

#endif
