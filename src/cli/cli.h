/* cli.h: the `quiver` subcommands, callable from main.c and from tests.
 *
 * Each takes the command's own argv (argv[0] is the command name, "import"),
 * writes results to `out` and messages (errors, progress, timings that are
 * not the result) to `errf`, and returns the process exit status: 0 success,
 * 1 failure, 2 usage error (see cli_util.h). None of them calls exit(). */
#ifndef QV_CLI_H
#define QV_CLI_H

#include <stdio.h>

int cmd_import(int argc, char **argv, FILE *out, FILE *errf);
int cmd_search(int argc, char **argv, FILE *out, FILE *errf);
int cmd_info(int argc, char **argv, FILE *out, FILE *errf);
int cmd_bench(int argc, char **argv, FILE *out, FILE *errf);

#endif
