/* config.c: the settings of `quiver serve` — one table that parses flags,
 * environment variables and the config file, validates values, prints
 * --help and the Markdown table of docs/api.md.
 *
 * Precedence: flags > environment > config file > defaults. The config file
 * is JSON (when its first non-blank character is '{') or a small YAML
 * subset: nested maps of `key: value` lines indented with spaces, `#`
 * comments, optionally quoted scalars; no lists, anchors or multi-line
 * values. Keys are the dotted paths of the table (service.http_port); keys
 * the table does not know are ignored with a warning, as Qdrant's config
 * files carry many settings Quiver has no use for.
 *
 * Invariant: every setting is defined by exactly one row of `settings[]`;
 * nothing else in the server names a flag, variable or key. */
#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/fileio.h"
#include "server/server_int.h"

typedef enum { T_STR, T_U64, T_BOOL, T_LEVEL } setting_type;

typedef struct setting {
  const char *flag;       /* --flag */
  const char *file_key;   /* dotted key in the config file */
  const char *file_alias; /* a second accepted key, or NULL */
  const char *env;        /* environment variable */
  const char *env_alias;  /* a second accepted variable, or NULL */
  setting_type type;
  const char *def;        /* default, as text */
  uint64_t min, max;      /* bounds of T_U64 */
  uint64_t ext_scale;     /* env and file values are multiplied by this */
  size_t offset;          /* of the field in srv_config */
  const char *help;
} setting;

#define OFF(f) offsetof(srv_config, f)
#define MIB (1ull << 20)

static const setting settings[] = {
    {"host", "service.host", NULL, "QUIVER__SERVICE__HOST", NULL, T_STR, "127.0.0.1", 0, 0,
     1, OFF(host),
     "address to listen on; a non-loopback address needs --api-key or "
     "--allow-insecure-remote"},
    {"port", "service.http_port", "service.port", "QUIVER__SERVICE__HTTP_PORT",
     "QUIVER__SERVICE__PORT", T_U64, "6333", 0, 65535, 1, OFF(port),
     "TCP port of the REST API (0 = any free port)"},
    {"data-dir", "storage.storage_path", NULL, "QUIVER__STORAGE__STORAGE_PATH", NULL, T_STR,
     "./data", 0, 0, 1, OFF(data_dir), "database directory (created if missing)"},
    {"api-key", "service.api_key", NULL, "QUIVER__SERVICE__API_KEY", NULL, T_STR, "", 0, 0, 1,
     OFF(api_key), "require this key (api-key header or Authorization: Bearer) on every "
                   "request but / and the probes"},
    {"read-only-api-key", "service.read_only_api_key", NULL,
     "QUIVER__SERVICE__READ_ONLY_API_KEY", NULL, T_STR, "", 0, 0, 1, OFF(read_only_api_key),
     "a second key that may only read (writes answer 403)"},
    {"max-body-bytes", "service.max_request_size_mb", NULL,
     "QUIVER__SERVICE__MAX_REQUEST_SIZE_MB", NULL, T_U64, "33554432", 1024, 1ull << 32, MIB,
     OFF(max_body_bytes),
     "largest request body in bytes (413 above); the env variable and file key are in MiB"},
    {"max-snapshot-upload-bytes", "service.max_snapshot_upload_bytes", NULL,
     "QUIVER__SERVICE__MAX_SNAPSHOT_UPLOAD_BYTES", NULL, T_U64, "17179869184", 1024, 1ull << 44,
     1, OFF(max_snapshot_upload_bytes),
     "largest body of POST /collections/{c}/snapshots/upload in bytes (413 above); streamed "
     "to a file in DATA-DIR/snapshots, never held in memory"},
    {"threads", "service.max_workers", NULL, "QUIVER__SERVICE__MAX_WORKERS", NULL, T_U64, "0",
     0, 256, 1, OFF(threads), "HTTP worker threads (0 = 2 per CPU, at least 4)"},
    {"log-level", "log_level", NULL, "QUIVER__LOG_LEVEL", NULL, T_LEVEL, "info", 0, 0, 1,
     OFF(log_level), "debug, info, warn or error (debug adds one line per request)"},
    {"allow-insecure-remote", "service.allow_insecure_remote", NULL,
     "QUIVER__SERVICE__ALLOW_INSECURE_REMOTE", NULL, T_BOOL, "false", 0, 0, 1,
     OFF(allow_insecure_remote), "allow a non-loopback --host without an API key"},
    /* ---- cluster mode (issue 5; src/server/routes_cluster.c, docs/cluster.md) ---- */
    {"cluster", "cluster.enabled", NULL, "QUIVER__CLUSTER__ENABLED", NULL, T_BOOL, "false", 0,
     0, 1, OFF(cluster), "join the cluster coordinated by --etcd (default: a single node)"},
    {"etcd", "cluster.etcd", NULL, "QUIVER__CLUSTER__ETCD", NULL, T_STR, "", 0, 0, 1, OFF(etcd),
     "etcd endpoints of the cluster, comma-separated (http://127.0.0.1:2379,...)"},
    {"node-addr", "cluster.node_addr", NULL, "QUIVER__CLUSTER__NODE_ADDR", NULL, T_STR, "", 0, 0,
     1, OFF(node_addr), "host:port other nodes reach this one at (default: --host:--port)"},
    {"cluster-lease-ttl", "cluster.lease_ttl_s", NULL, "QUIVER__CLUSTER__LEASE_TTL_S", NULL,
     T_U64, "5", 2, 3600, 1, OFF(cluster_ttl_s),
     "seconds without renewing its etcd lease after which a node counts as dead"},
    {"cluster-move-delay", "cluster.move_delay_s", NULL, "QUIVER__CLUSTER__MOVE_DELAY_S",
     "QUIVER_CLUSTER_MOVE_DELAY_S", T_U64, "60", 1, 86400, 1, OFF(cluster_move_delay_s),
     "seconds a dead node's shard copies are waited for (it may come back and catch up) "
     "before they are recreated on other nodes"},
    {"cluster-backlog-bytes", "cluster.backlog_bytes", NULL, "QUIVER__CLUSTER__BACKLOG_BYTES",
     NULL, T_U64, "33554432", 0, 1ull << 40, 1, OFF(cluster_backlog_bytes),
     "per shard, how many bytes of its newest writes its primary keeps so that a copy "
     "that comes back is sent only what it missed (0: always a full copy)"},
    /* ---- the cluster dashboard (routes_dashboard.c, docs/cluster.md) ---- */
    {"web-dir", "service.web_dir", NULL, "QUIVER__SERVICE__WEB_DIR", NULL, T_STR, "", 0, 0, 1,
     OFF(web_dir),
     "directory holding dashboard/ (the page at /dashboard); default: ../web, then web, "
     "next to the executable"},
    /* "config" must stay the last row (srvcfg_load looks it up there). */
    {"config", NULL, NULL, "QUIVER__CONFIG", NULL, T_STR, "", 0, 0, 1, OFF(config_file),
     "settings file (JSON, or the YAML subset of src/server/README.md)"},
};
#define N_SETTINGS (sizeof settings / sizeof settings[0])

static const char *levels[] = {"debug", "info", "warn", "error"};

const char *srvcfg_level_name(uint64_t level) { return level < 4 ? levels[level] : "?"; }

/* Sets the field of `s` from `text` (from `source`, for messages); values
 * of T_U64 are multiplied by `scale`. Returns false after reporting. */
static bool apply(srv_config *cfg, const setting *s, const char *text, uint64_t scale,
                  const char *source, FILE *errf) {
  void *field = (char *)cfg + s->offset;
  switch (s->type) {
  case T_STR: {
    char *copy = qv_strdup(text);
    if (copy == NULL) return false;
    qv_free(*(char **)field);
    *(char **)field = copy;
    return true;
  }
  case T_U64: {
    errno = 0;
    char *end;
    unsigned long long v = isdigit((unsigned char)text[0]) ? strtoull(text, &end, 10) : 0;
    if (!isdigit((unsigned char)text[0]) || *end != 0 || errno != 0) {
      fprintf(errf, "serve: %s: \"%s\" is not a non-negative integer\n", source, text);
      return false;
    }
    if (scale > 1 && v > UINT64_MAX / scale) v = UINT64_MAX;
    else v *= scale;
    if (v < s->min || v > s->max) {
      fprintf(errf, "serve: %s: %llu is out of range %llu..%llu%s\n", source, v,
              (unsigned long long)s->min, (unsigned long long)s->max,
              scale > 1 ? " (after conversion to bytes)" : "");
      return false;
    }
    *(uint64_t *)field = v;
    return true;
  }
  case T_BOOL:
    if (!strcmp(text, "true") || !strcmp(text, "1") || !strcmp(text, "yes")) {
      *(bool *)field = true;
      return true;
    }
    if (!strcmp(text, "false") || !strcmp(text, "0") || !strcmp(text, "no")) {
      *(bool *)field = false;
      return true;
    }
    fprintf(errf, "serve: %s: \"%s\" is not true or false\n", source, text);
    return false;
  case T_LEVEL:
    for (uint64_t i = 0; i < 4; i++)
      if (!strcmp(text, levels[i]) || (i == 2 && !strcmp(text, "warning"))) {
        *(uint64_t *)field = i;
        return true;
      }
    fprintf(errf, "serve: %s: \"%s\" is not debug, info, warn or error\n", source, text);
    return false;
  }
  return false;
}

/* ---- config file -------------------------------------------------------------- */

/* Applies one dotted key of the file. */
static bool apply_key(srv_config *cfg, const char *key, const char *value, const char *path,
                      FILE *errf) {
  for (size_t i = 0; i < N_SETTINGS; i++) {
    const setting *s = &settings[i];
    if (s->file_key == NULL) continue;
    if (strcmp(key, s->file_key) != 0 && !(s->file_alias && !strcmp(key, s->file_alias)))
      continue;
    char source[512];
    snprintf(source, sizeof source, "%s: %s", path, key);
    return apply(cfg, s, value, s->ext_scale, source, errf);
  }
  fprintf(errf, "serve: %s: ignoring unknown setting \"%s\"\n", path, key);
  return true;
}

static bool json_walk(srv_config *cfg, const json_t *o, const char *prefix, const char *path,
                      FILE *errf) {
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)o, k, v) {
    char key[256], num[64];
    snprintf(key, sizeof key, "%s%s%s", prefix, *prefix ? "." : "", k);
    const char *text = NULL;
    if (json_is_object(v)) {
      if (!json_walk(cfg, v, key, path, errf)) return false;
      continue;
    }
    if (json_is_string(v)) text = json_string_value(v);
    else if (json_is_true(v)) text = "true";
    else if (json_is_false(v)) text = "false";
    else if (json_is_integer(v)) {
      snprintf(num, sizeof num, "%lld", (long long)json_integer_value(v));
      text = num;
    } else if (json_is_null(v)) continue;
    else {
      fprintf(errf, "serve: %s: %s: expected a string, number or boolean\n", path, key);
      return false;
    }
    if (!apply_key(cfg, key, text, path, errf)) return false;
  }
  return true;
}

/* Strips a trailing comment and blanks, and one level of quotes. */
static char *yaml_scalar(char *v) {
  while (*v == ' ') v++;
  if (*v == '"' || *v == '\'') {
    char q = *v++;
    char *end = strchr(v, q);
    if (end) *end = 0;
    return v;
  }
  char *hash = strstr(v, " #");
  if (hash) *hash = 0;
  if (*v == '#') *v = 0;
  size_t n = strlen(v);
  while (n && (v[n - 1] == ' ' || v[n - 1] == '\r')) v[--n] = 0;
  return v;
}

static bool yaml_walk(srv_config *cfg, char *text, const char *path, FILE *errf) {
  /* The open maps: their indentation and key. */
  int indent[16];
  char keys[16][64];
  int depth = 0, line_no = 0;
  for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
    line_no++;
    int ind = 0;
    while (line[ind] == ' ') ind++;
    char *p = line + ind;
    if (*p == '#' || *p == 0 || *p == '\r' || !strncmp(p, "---", 3)) continue;
    if (*p == '\t' || *p == '-') {
      fprintf(errf, "serve: %s: line %d: tabs and lists are not supported\n", path, line_no);
      return false;
    }
    char *colon = strchr(p, ':');
    if (colon == NULL || colon == p) {
      fprintf(errf, "serve: %s: line %d: expected \"key: value\"\n", path, line_no);
      return false;
    }
    *colon = 0;
    while (depth > 0 && indent[depth - 1] >= ind) depth--;
    char key[512] = "";
    for (int i = 0; i < depth; i++) {
      strncat(key, keys[i], sizeof key - strlen(key) - 1);
      strncat(key, ".", sizeof key - strlen(key) - 1);
    }
    strncat(key, p, sizeof key - strlen(key) - 1);
    char *value = yaml_scalar(colon + 1);
    if (*value == 0) { /* opens a nested map */
      if (depth == 16) {
        fprintf(errf, "serve: %s: line %d: nested too deeply\n", path, line_no);
        return false;
      }
      indent[depth] = ind;
      snprintf(keys[depth++], sizeof keys[0], "%s", p);
      continue;
    }
    if (!strcmp(value, "null") || !strcmp(value, "~")) continue;
    if (!apply_key(cfg, key, value, path, errf)) return false;
  }
  return true;
}

static bool load_file(srv_config *cfg, const char *path, FILE *errf) {
  char *text;
  size_t n;
  qv_err err = {0};
  if (fileio_read_file(path, &text, &n, &err) != QV_OK) {
    fprintf(errf, "serve: --config: %s\n", err.msg);
    return false;
  }
  const char *p = text;
  while (*p && isspace((unsigned char)*p)) p++;
  bool ok;
  if (*p == '{') {
    json_error_t je;
    json_t *o = json_loadb(text, n, JSON_REJECT_DUPLICATES, &je);
    if (o == NULL)
      fprintf(errf, "serve: %s: line %d: %s\n", path, je.line, je.text);
    ok = o != NULL && json_walk(cfg, o, "", path, errf);
    json_decref(o);
  } else {
    ok = yaml_walk(cfg, text, path, errf);
  }
  qv_free(text);
  return ok;
}

/* ---- flags ----------------------------------------------------------------------- */

static const setting *find_flag(const char *arg, const char **inline_value) {
  *inline_value = NULL;
  if (strncmp(arg, "--", 2) != 0) return NULL;
  arg += 2;
  const char *eq = strchr(arg, '=');
  size_t n = eq ? (size_t)(eq - arg) : strlen(arg);
  for (size_t i = 0; i < N_SETTINGS; i++)
    if (strlen(settings[i].flag) == n && !strncmp(settings[i].flag, arg, n)) {
      if (eq) *inline_value = eq + 1;
      return &settings[i];
    }
  return NULL;
}

void srvcfg_help(FILE *f) {
  fprintf(f, "usage: quiver serve [options]\n\n"
             "Serves the database directory over Qdrant's REST API.\n"
             "Precedence: flags > environment > --config file > defaults.\n\noptions:\n");
  for (size_t i = 0; i < N_SETTINGS; i++) {
    const setting *s = &settings[i];
    char left[64];
    snprintf(left, sizeof left, "--%s%s", s->flag, s->type == T_BOOL ? "" : " VALUE");
    fprintf(f, "  %-28s %s", left, s->help);
    if (s->def[0]) fprintf(f, " [default %s]", s->def);
    fprintf(f, "\n");
    if (s->env)
      fprintf(f, "  %-28s env %s%s%s%s%s\n", "", s->env, s->env_alias ? " or " : "",
              s->env_alias ? s->env_alias : "", s->file_key ? ", file key " : "",
              s->file_key ? s->file_key : "");
  }
  fprintf(f, "  %-28s this text\n", "--help");
}

/* "`a`, `b`" for up to two names, "" for none. */
static void md_names(FILE *f, const char *a, const char *b) {
  if (a) fprintf(f, "`%s`", a);
  if (b) fprintf(f, ", `%s`", b);
}

void srvcfg_markdown(FILE *f) {
  fprintf(f, "| flag | type | default | bounds | environment | config file key | meaning |\n"
             "|---|---|---|---|---|---|---|\n");
  static const char *type_names[] = {"string", "integer", "boolean", "level"};
  for (size_t i = 0; i < N_SETTINGS; i++) {
    const setting *s = &settings[i];
    fprintf(f, "| `--%s` | %s | %s%s%s | ", s->flag, type_names[s->type], s->def[0] ? "`" : "",
            s->def[0] ? s->def : "(none)", s->def[0] ? "`" : "");
    if (s->type == T_U64)
      fprintf(f, "%llu..%llu", (unsigned long long)s->min, (unsigned long long)s->max);
    fprintf(f, " | ");
    md_names(f, s->env, s->env_alias);
    fprintf(f, " | ");
    md_names(f, s->file_key, s->file_alias);
    fprintf(f, " | %s |\n", s->help);
  }
}

void srvcfg_free(srv_config *cfg) {
  for (size_t i = 0; i < N_SETTINGS; i++)
    if (settings[i].type == T_STR) {
      char **p = (char **)((char *)cfg + settings[i].offset);
      qv_free(*p);
      *p = NULL;
    }
}

int srvcfg_load(int argc, char **argv, srv_config *cfg, FILE *errf) {
  memset(cfg, 0, sizeof *cfg);
  for (size_t i = 0; i < N_SETTINGS; i++)
    if (!apply(cfg, &settings[i], settings[i].def, 1, "default", errf)) return 2;
  /* Pass 1: --help, unknown flags, and where the config file is. */
  const setting *config_row = &settings[N_SETTINGS - 1];
  const char *config_path = getenv(config_row->env);
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      srvcfg_help(stdout);
      return 0;
    }
    if (!strcmp(argv[i], "--help-markdown")) {
      srvcfg_markdown(stdout);
      return 0;
    }
    const char *inl;
    const setting *s = find_flag(argv[i], &inl);
    if (s == NULL) {
      fprintf(errf, "serve: unknown option \"%s\" (see quiver serve --help)\n", argv[i]);
      return 2;
    }
    if (s->type != T_BOOL && inl == NULL) {
      if (i + 1 == argc) {
        fprintf(errf, "serve: --%s needs a value\n", s->flag);
        return 2;
      }
      inl = argv[++i];
    }
    if (!strcmp(s->flag, "config")) config_path = inl;
  }
  if (config_path && *config_path) {
    if (!apply(cfg, config_row, config_path, 1, "--config", errf)) return 2;
    if (!load_file(cfg, config_path, errf)) return 2;
  }
  for (size_t i = 0; i < N_SETTINGS; i++) {
    const setting *s = &settings[i];
    const char *names[2] = {s->env_alias, s->env}; /* the main name wins */
    for (int k = 0; k < 2; k++) {
      const char *v = names[k] ? getenv(names[k]) : NULL;
      if (v && !apply(cfg, s, v, s->ext_scale, names[k], errf)) return 2;
    }
  }
  for (int i = 1; i < argc; i++) {
    const char *inl;
    const setting *s = find_flag(argv[i], &inl);
    if (s->type != T_BOOL && inl == NULL) inl = argv[++i];
    if (s->type == T_BOOL && inl == NULL) inl = "true";
    char source[80];
    snprintf(source, sizeof source, "--%s", s->flag);
    if (!apply(cfg, s, inl, 1, source, errf)) return 2;
  }
  if (cfg->data_dir[0] == 0) {
    fprintf(errf, "serve: --data-dir must not be empty\n");
    return 2;
  }
  return -1;
}
