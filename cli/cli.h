/* cli.h — the subcommands of the msrnn tool. Each takes argc/argv starting at its own name and
 * returns the process exit code (0 ok, 1 runtime failure, 2 bad usage). Only cli/ prints. */
#ifndef MSRNN_CLI_H
#define MSRNN_CLI_H

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

#endif
