/* server.h: what the rest of Quiver may call in src/server/ — the entry
 * point of `quiver serve`, a Qdrant-compatible REST server over the public
 * API of include/quiver.h. */
#ifndef QV_SERVER_H
#define QV_SERVER_H

/* Runs the server until SIGTERM or SIGINT. argv[0] is the command name
 * ("serve"); the flags are described by `serve --help`. Returns the process
 * exit status: 0 after a clean shutdown (or --help), 1 when the server could
 * not start (data directory, address in use), 2 for a usage error. */
int server_main(int argc, char **argv);

#endif
