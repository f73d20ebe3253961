/* cli_db.c: opening an existing database for the read-only commands
 * (search, info, bench); see cli_open_existing in cli_util.h. Kept apart
 * from cli_util.c so that the readers and helpers link without the engine. */
#include "cli/cli_util.h"

int cli_open_existing(const char *cmd, const char *dir, const char *name,
                      qv_db **db, qv_collection **c, FILE *errf) {
  qv_open_opts oo;
  qv_open_opts_init(&oo);
  oo.create = false;
  oo.background_optimizer = false;
  qv_err e = {0};
  qv_db *d = NULL;
  if (qv_open(dir, &oo, &d, &e) != QV_OK) {
    fprintf(errf, "quiver %s: %s: %s\n", cmd, dir, e.msg);
    return CLI_EXIT_FAIL;
  }
  if (name != NULL && qv_collection_get(d, name, c, &e) != QV_OK) {
    fprintf(errf, "quiver %s: collection \"%s\": %s\n", cmd, name, e.msg);
    qv_close(d);
    return CLI_EXIT_FAIL;
  }
  *db = d;
  return CLI_EXIT_OK;
}
