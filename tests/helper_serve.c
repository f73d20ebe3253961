/* helper_serve.c: `helper_serve [serve flags]` runs server_main() like
 * `quiver serve` does, for the server tests while the CLI may not yet route
 * `serve`. argv is shifted so that argv[0] is "serve". */
#include "server/server.h"

int main(int argc, char **argv) {
  char *sub[argc + 1];
  sub[0] = "serve";
  for (int i = 1; i < argc; i++) sub[i] = argv[i];
  sub[argc] = 0;
  return server_main(argc, sub);
}
