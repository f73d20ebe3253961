/* main.c: the `quiver` executable: global flags and dispatch.
 *
 * Owns only the command table, --help/--version and the global --verbose;
 * every command lives in its cmd_*.c (declared in cli.h) so tests can call
 * it directly. Exit status is the command's: 0 ok, 1 failure, 2 usage. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cli_util.h"
#include "quiver.h"
#include "server/server.h"

typedef struct command {
  const char *name;
  int (*run)(int argc, char **argv, FILE *out, FILE *errf);
  const char *summary;
} command;

/* The server parses its own flags (src/server/config.c). */
static int cmd_serve(int argc, char **argv, FILE *out, FILE *err) {
  (void)out;
  (void)err;
  return server_main(argc, argv);
}

static const command commands[] = {
    {"import", cmd_import, "load .fvecs/.npy/.jsonl vectors into a collection"},
    {"search", cmd_search, "k-nearest-neighbour search for one vector"},
    {"info", cmd_info, "list collections or show one collection's state"},
    {"bench", cmd_bench, "recall, QPS and latency over a query file"},
    {"serve", cmd_serve,
     "Qdrant-compatible REST server (see quiver serve --help)"},
};

static void usage(FILE *f) {
  fprintf(f, "usage: quiver [--verbose] <command> [options]\n"
             "       quiver <command> --help\n"
             "       quiver --version\n\ncommands:\n");
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
}

int main(int argc, char **argv) {
  int i = 1;
  bool verbose = false;
  for (; i < argc && argv[i][0] == '-'; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      usage(stdout);
      return CLI_EXIT_OK;
    }
    if (strcmp(argv[i], "--version") == 0) {
      printf("quiver %s\n", QV_VERSION_STRING);
      return CLI_EXIT_OK;
    }
    if (strcmp(argv[i], "--verbose") == 0) {
      verbose = true;
      continue;
    }
    fprintf(stderr, "quiver: unknown flag \"%s\" (see quiver --help)\n",
            argv[i]);
    return CLI_EXIT_USAGE;
  }
  if (i == argc) {
    usage(stderr);
    return CLI_EXIT_USAGE;
  }
  for (size_t c = 0; c < sizeof commands / sizeof commands[0]; c++) {
    if (strcmp(argv[i], commands[c].name) != 0) continue;
    /* A global --verbose is passed on as the command's own flag, right
     * after the command name so that a "--" later cannot swallow it. */
    char *sub[argc + 2];
    int n = 0;
    sub[n++] = argv[i];
    if (verbose) sub[n++] = "--verbose";
    for (int j = i + 1; j < argc; j++) sub[n++] = argv[j];
    sub[n] = NULL;
    return commands[c].run(n, sub, stdout, stderr);
  }
  fprintf(stderr, "quiver: unknown command \"%s\" (see quiver --help)\n",
          argv[i]);
  return CLI_EXIT_USAGE;
}
