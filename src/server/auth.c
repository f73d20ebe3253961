/* auth.c: API-key checks, as Qdrant does them: the key arrives in an
 * `api-key` header or as `Authorization: Bearer <key>`.
 *
 * Owns only the comparison. Which routes are exempt (/, the probes) and
 * which are writes is the router's table. Keys are compared in time that
 * does not depend on where they differ, so a remote client cannot find a
 * key byte by byte. */
#include <string.h>
#include <strings.h>

#include "server/server_int.h"

/* Constant-time for equal lengths; the length itself is not secret. */
static bool key_eq(const char *given, const char *key) {
  size_t n = strlen(key);
  if (key[0] == 0 || strlen(given) != n) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < n; i++) diff |= (unsigned char)(given[i] ^ key[i]);
  return diff == 0;
}

static int level_of(const srv_config *cfg, const char *given) {
  if (given == NULL) return SRV_AUTH_NONE;
  if (key_eq(given, cfg->api_key)) return SRV_AUTH_FULL;
  if (key_eq(given, cfg->read_only_api_key)) return SRV_AUTH_READ;
  return SRV_AUTH_NONE;
}

int auth_level(const srv_config *cfg, const char *api_key_header,
               const char *authorization_header) {
  if (cfg->api_key[0] == 0 && cfg->read_only_api_key[0] == 0) return SRV_AUTH_FULL;
  int a = level_of(cfg, api_key_header);
  const char *bearer = NULL;
  if (authorization_header && strncasecmp(authorization_header, "Bearer ", 7) == 0) {
    bearer = authorization_header + 7;
    while (*bearer == ' ') bearer++;
  }
  int b = level_of(cfg, bearer);
  return a > b ? a : b;
}
