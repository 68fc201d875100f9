/* cli.h — the subcommands of the msrnn tool. Each takes argc/argv starting at its own name and
 * returns the process exit code (0 ok, 1 runtime failure, 2 bad usage). Only cli/ prints.
 *
 * Each also has a descriptor (args.h's cli_command: its summary, synopsis and option tables), the
 * one source of its --help, its man page (msrnn man) and its shell completion (msrnn completion).
 */
#ifndef MSRNN_CLI_H
#define MSRNN_CLI_H

#include <stddef.h>

#include "args.h"

int cmd_info(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_init_model(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);
int cmd_tokenizer_train(int argc, char **argv);
int cmd_tokenize_corpus(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_passkey(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_man(int argc, char **argv);
int cmd_completion(int argc, char **argv);

extern const cli_command info_command, tokenize_command, generate_command, bench_command,
    init_model_command, perplexity_command, tokenizer_train_command, tokenize_corpus_command,
    train_command, passkey_command, convert_command, serve_command, man_command, completion_command;

/* The commands in msrnn --help's order (main.c): the i-th, or NULL past the last. */
const cli_command *cli_command_at(size_t i);
/* The command of that name, or NULL. */
const cli_command *cli_command_named(const char *name);

#endif
