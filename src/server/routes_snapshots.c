/* routes_snapshots.c: collection snapshots (Qdrant's /collections/{c}/
 * snapshots endpoints) — create, list, download, delete, recover from a
 * file:// location and recover from an upload — over qv_snapshot_create /
 * qv_snapshot_restore.
 *
 * On disk, beside the engine's collections/:
 *
 *   <data>/snapshots/<c>/<c>-<YYYY-MM-DD-HH-MM-SS>[-N].snapshot  a tar archive
 *   <data>/snapshots/<c>/<name>.checksum     its sha256, hex, written at creation
 *   <data>/snapshots/<c>/.tmp-*              a snapshot being written
 *   <data>/snapshots/.upload-*               an upload being received
 *
 * A snapshot is written under a temporary name, hashed, then linked to its
 * final name (link refuses to replace, so two snapshots in one second get
 * -1, -2 ...); the temporaries of a crash are removed at startup.
 * Snapshots outlive their collection (so a dropped collection can be
 * recovered), but as in Qdrant they are listed, downloaded and deleted
 * through an existing collection.
 *
 * Invariant: the only files this server reads for a recovery are inside
 * its snapshots directory — a file:// location is resolved (symlinks
 * included) and refused when it leads elsewhere; snapshot names from URLs
 * never contain '/', a leading '.' or "..". */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fileio.h"
#include "base/log.h"
#include "server/server_int.h"
#include "server/sha256.h"

#define SUFFIX ".snapshot"
#define CHECKSUM_SUFFIX ".checksum"

/* ---- setup -------------------------------------------------------------------- */

static void remove_prefixed(const char *dir, const char *prefix) {
  DIR *d = opendir(dir);
  if (d == NULL) return;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (strncmp(e->d_name, prefix, strlen(prefix)) != 0) continue;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    if (unlink(path) == 0) qv_log(QV_LOG_INFO, "snapshot", "removed leftover %s", path);
  }
  closedir(d);
}

bool snapshots_init(srv *s) {
  char dir[PATH_MAX], real[PATH_MAX];
  qv_err err = {0};
  snprintf(dir, sizeof dir, "%s/snapshots", s->cfg.data_dir);
  if (fileio_mkdirs(dir, &err) != QV_OK || realpath(dir, real) == NULL) {
    fprintf(stderr, "serve: cannot create the snapshots directory %s: %s\n", dir,
            err.msg[0] ? err.msg : strerror(errno));
    return false;
  }
  s->snap_dir = qv_strdup(real);
  if (s->snap_dir == NULL) return false;
  remove_prefixed(real, ".upload-");
  DIR *d = opendir(real);
  struct dirent *e;
  while (d && (e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    snprintf(dir, sizeof dir, "%s/%s", real, e->d_name);
    remove_prefixed(dir, ".tmp-");
  }
  if (d) closedir(d);
  return true;
}

int snapshots_upload_file(srv *s, char **path) {
  char tmpl[PATH_MAX];
  snprintf(tmpl, sizeof tmpl, "%s/.upload-XXXXXX", s->snap_dir);
  int fd = mkostemp(tmpl, O_CLOEXEC);
  if (fd < 0) {
    qv_log(QV_LOG_WARN, "snapshot", "cannot create %s: %s", tmpl, strerror(errno));
    return -1;
  }
  *path = qv_strdup(tmpl);
  if (*path == NULL) {
    close(fd);
    unlink(tmpl);
    return -1;
  }
  return fd;
}

/* ---- names and descriptions -------------------------------------------------------- */

static void coll_dir(srv_req *r, const char *coll, char *buf, size_t cap) {
  snprintf(buf, cap, "%s/%s", r->s->snap_dir, coll);
}

static bool has_suffix(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n > k && strcmp(s + n - k, suffix) == 0;
}

/* A snapshot name from a URL: 400 for names that could leave the
 * directory or name a hidden file, 404 for names no snapshot can have. */
static bool check_snapshot_name(srv_req *r, const char *name) {
  bool bad = name[0] == 0 || name[0] == '.' || strlen(name) > 255 || strstr(name, "..") ||
             strpbrk(name, "/\\") != NULL;
  for (const char *p = name; !bad && *p; p++) bad = (unsigned char)*p < 0x20;
  if (bad) return srv_wrong_input(r, "invalid snapshot name \"%.100s\"", name);
  if (!has_suffix(name, SUFFIX))
    return srv_fail(r, 404, "Not found: Snapshot %.255s not found", name);
  return true;
}

/* SnapshotDescription {name, creation_time, size, checksum} of dir/name;
 * NULL when it is gone. creation_time is UTC without a zone suffix, as
 * Qdrant writes it. */
static json_t *describe(const char *dir, const char *name) {
  char path[PATH_MAX], when[32];
  struct stat st;
  snprintf(path, sizeof path, "%s/%s", dir, name);
  if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return NULL;
  struct tm tm;
  gmtime_r(&st.st_mtime, &tm);
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
  json_t *sum = json_null();
  char *text = NULL;
  size_t n = 0;
  snprintf(path, sizeof path, "%s/%s%s", dir, name, CHECKSUM_SUFFIX);
  if (fileio_read_file(path, &text, &n, NULL) == QV_OK && n == SHA256_HEX_LEN &&
      strspn(text, "0123456789abcdef") == SHA256_HEX_LEN) {
    json_decref(sum);
    sum = json_string(text);
  }
  qv_free(text);
  return json_pack("{s:s, s:s, s:o, s:o}", "name", name, "creation_time", when, "size",
                   jsonio_u64((uint64_t)st.st_size), "checksum", sum);
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The answer of a write that ran: `result`, or 202 for wait=false. */
static void done(srv_req *r, json_t *result) {
  const char *w = srv_query(r, "wait");
  if (w && strcmp(w, "false") == 0) {
    json_decref(result);
    srv_accepted(r);
  } else {
    srv_ok(r, result);
  }
}

/* ---- list, create, download, delete -------------------------------------------------- */

void h_snap_list(srv_req *r) {
  srv_coll sc;
  if (!srv_coll_open(r, &sc)) return;
  srv_coll_close(&sc);
  char dir[PATH_MAX];
  coll_dir(r, r->args[0], dir, sizeof dir);
  json_t *arr = json_array();
  char **names = NULL;
  size_t n = 0, cap = 0;
  DIR *d = opendir(dir);
  struct dirent *e;
  while (d && (e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.' || !has_suffix(e->d_name, SUFFIX)) continue;
    if (n == cap) {
      cap = cap ? 2 * cap : 16;
      char **p = qv_realloc(names, cap * sizeof *p);
      if (p == NULL) break;
      names = p;
    }
    if ((names[n] = qv_strdup(e->d_name)) != NULL) n++;
  }
  if (d) closedir(d);
  if (n > 1) qsort(names, n, sizeof *names, cmp_str);
  for (size_t i = 0; i < n; i++) {
    json_t *one = describe(dir, names[i]);
    if (one) json_array_append_new(arr, one);
    qv_free(names[i]);
  }
  qv_free(names);
  srv_ok(r, arr);
}

static uint64_t tmp_seq;

void h_snap_create(srv_req *r) {
  srv_coll sc;
  if (!srv_check_wait(r) || !srv_coll_open(r, &sc)) return;
  char dir[PATH_MAX], tmp[PATH_MAX], path[PATH_MAX], name[300], hex[SHA256_HEX_LEN + 1];
  qv_err err = {0};
  coll_dir(r, sc.name, dir, sizeof dir);
  snprintf(tmp, sizeof tmp, "%s/.tmp-%d-%llu%s", dir, (int)getpid(),
           (unsigned long long)__atomic_add_fetch(&tmp_seq, 1, __ATOMIC_RELAXED), SUFFIX);
  qv_rc rc = fileio_mkdirs(dir, &err);
  if (rc == QV_OK) rc = qv_snapshot_create(sc.c, tmp, &err);
  srv_coll_close(&sc);
  if (rc == QV_OK) rc = sha256_file(tmp, hex, &err);
  if (rc != QV_OK) {
    unlink(tmp);
    srv_rc_fail(r, rc, &err);
    return;
  }
  time_t now = time(NULL);
  struct tm tm;
  char stamp[32];
  gmtime_r(&now, &tm);
  strftime(stamp, sizeof stamp, "%Y-%m-%d-%H-%M-%S", &tm);
  int k = 0;
  for (; k < 1000; k++) {
    if (k == 0) snprintf(name, sizeof name, "%s-%s%s", r->args[0], stamp, SUFFIX);
    else snprintf(name, sizeof name, "%s-%s-%d%s", r->args[0], stamp, k, SUFFIX);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (link(tmp, path) == 0 || errno != EEXIST) break;
  }
  int e = errno;
  bool linked = k < 1000 && fileio_exists(path);
  unlink(tmp);
  if (!linked) {
    srv_fail(r, 500, "Service internal error: cannot name snapshot %s: %s", path, strerror(e));
    return;
  }
  snprintf(path, sizeof path, "%s/%s%s", dir, name, CHECKSUM_SUFFIX);
  rc = fileio_write_atomic(path, hex, SHA256_HEX_LEN, &err);
  if (rc == QV_OK) rc = fileio_fsync_dir(dir, &err);
  if (rc != QV_OK) {
    srv_rc_fail(r, rc, &err);
    return;
  }
  qv_log(QV_LOG_INFO, "snapshot", "created %s/%s", dir, name);
  json_t *desc = describe(dir, name);
  if (desc == NULL) {
    srv_fail(r, 500, "Service internal error: snapshot %s vanished", name);
    return;
  }
  done(r, desc);
}

void h_snap_download(srv_req *r) {
  srv_coll sc;
  if (!srv_coll_open(r, &sc)) return;
  srv_coll_close(&sc);
  const char *name = r->args[1];
  if (!check_snapshot_name(r, name)) return;
  char path[PATH_MAX];
  coll_dir(r, r->args[0], path, sizeof path);
  size_t n = strlen(path);
  snprintf(path + n, sizeof path - n, "/%s", name);
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  struct stat st;
  if (fd >= 0 && (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))) {
    close(fd);
    fd = -1;
    errno = ENOENT;
  }
  if (fd < 0) {
    if (errno == ENOENT || errno == ELOOP)
      srv_fail(r, 404, "Not found: Snapshot %s not found", name);
    else
      srv_fail(r, 500, "Service internal error: open %s: %s", path, strerror(errno));
    return;
  }
  /* Streamed by MHD from the file (sendfile where it can), never loaded. */
  srv_file(r, fd, (uint64_t)st.st_size, "application/octet-stream", name);
}

void h_snap_delete(srv_req *r) {
  srv_coll sc;
  if (!srv_check_wait(r) || !srv_coll_open(r, &sc)) return;
  srv_coll_close(&sc);
  const char *name = r->args[1];
  if (!check_snapshot_name(r, name)) return;
  char dir[PATH_MAX], path[PATH_MAX];
  coll_dir(r, r->args[0], dir, sizeof dir);
  snprintf(path, sizeof path, "%s/%s", dir, name);
  if (unlink(path) != 0) {
    if (errno == ENOENT) srv_fail(r, 404, "Not found: Snapshot %s not found", name);
    else srv_fail(r, 500, "Service internal error: unlink %s: %s", path, strerror(errno));
    return;
  }
  snprintf(path, sizeof path, "%s/%s%s", dir, name, CHECKSUM_SUFFIX);
  unlink(path);
  qv_err err = {0};
  if (fileio_fsync_dir(dir, &err) != QV_OK) {
    srv_rc_fail(r, QV_EIO, &err);
    return;
  }
  qv_log(QV_LOG_INFO, "snapshot", "deleted %s/%s", dir, name);
  done(r, json_true());
}

/* ---- recovery ---------------------------------------------------------------------------- */

static bool priority_ok(srv_req *r, const char *p) {
  if (p == NULL || !strcmp(p, "no_sync") || !strcmp(p, "snapshot") || !strcmp(p, "replica"))
    return true;
  return srv_format_err(r, "priority: unknown variant `%.40s`, expected one of `no_sync`, "
                           "`snapshot`, `replica`",
                        p);
}

/* dst = src with every `needle` replaced by `with` (truncated to cap). */
static void replace_all(char *dst, size_t cap, const char *src, const char *needle,
                        const char *with) {
  size_t n = 0, k = strlen(needle);
  while (*src && n + 1 < cap) {
    if (k > 0 && strncmp(src, needle, k) == 0) {
      n += (size_t)snprintf(dst + n, cap - n, "%s", with);
      if (n >= cap) n = cap - 1;
      src += k;
    } else {
      dst[n++] = *src++;
    }
  }
  dst[n] = 0;
}

/* Restores collection args[0] from `path` (replacing it), after checking
 * `checksum` (hex, may be NULL). A snapshot that fails the engine's checks
 * is 400 with its message; the existing collection is then untouched. */
static void restore_from(srv_req *r, const char *path, const char *checksum) {
  qv_err err = {0};
  if (checksum != NULL) {
    char hex[SHA256_HEX_LEN + 1];
    qv_rc rc = sha256_file(path, hex, &err);
    if (rc != QV_OK) {
      srv_rc_fail(r, rc, &err);
      return;
    }
    if (strcasecmp(hex, checksum) != 0) {
      srv_wrong_input(r, "Snapshot checksum mismatch: expected %.64s, got %s", checksum, hex);
      return;
    }
  }
  qv_rc rc = qv_snapshot_restore(r->s->db, r->args[0], path, true, &err);
  if (rc == QV_ECORRUPT || rc == QV_EINVAL) {
    /* An upload's temporary name means nothing to the client. */
    char msg[sizeof err.msg];
    if (r->upload_path) replace_all(msg, sizeof msg, err.msg, r->upload_path, "(upload)");
    else snprintf(msg, sizeof msg, "%s", err.msg);
    srv_wrong_input(r, "%s", msg);
    return;
  }
  if (rc != QV_OK) {
    srv_rc_fail(r, rc, &err);
    return;
  }
  done(r, json_true());
}

static bool under(const char *path, const char *dir) {
  size_t n = strlen(dir);
  return strncmp(path, dir, n) == 0 && path[n] == '/';
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* A file:// location -> the real path of a regular file inside the
 * snapshots directory (in out[PATH_MAX]). */
static bool resolve_location(srv_req *r, const char *loc, char *out) {
  if (!strncasecmp(loc, "http://", 7) || !strncasecmp(loc, "https://", 8))
    return srv_wrong_input(r, "recovering from http(s) locations is not supported; upload the "
                              "file with POST /collections/%s/snapshots/upload",
                           r->args[0]);
  if (strncasecmp(loc, "file://", 7) != 0)
    return srv_wrong_input(r, "snapshot location \"%.200s\": expected a file:// URL", loc);
  const char *p = loc + 7;
  if (!strncasecmp(p, "localhost/", 10)) p += 9;
  if (p[0] != '/')
    return srv_wrong_input(r, "snapshot location \"%.200s\": expected file:///absolute/path", loc);
  char path[PATH_MAX];
  size_t n = 0;
  for (; *p && n + 1 < sizeof path; p++) {
    int hi, lo;
    if (*p == '%' && (hi = hexval(p[1])) >= 0 && (lo = hexval(p[2])) >= 0 && (hi || lo)) {
      path[n++] = (char)(hi * 16 + lo);
      p += 2;
    } else if (*p == '%' || *p == '?' || *p == '#') {
      return srv_wrong_input(r, "snapshot location \"%.200s\": bad URL", loc);
    } else {
      path[n++] = *p;
    }
  }
  path[n] = 0;
  char real[PATH_MAX];
  const char *dir = r->s->snap_dir;
  if (realpath(path, real) == NULL) {
    if (errno == ENOENT && under(path, dir))
      return srv_fail(r, 404, "Not found: Snapshot file %.200s does not exist", path);
    real[0] = 0;
  }
  struct stat st;
  if (real[0] == 0 || !under(real, dir) || stat(real, &st) != 0 || !S_ISREG(st.st_mode))
    return srv_wrong_input(r, "snapshot location %.200s is not a file in the snapshots "
                              "directory %s; only those can be recovered from (or upload it)",
                           path, dir);
  memcpy(out, real, strlen(real) + 1);
  return true;
}

void h_snap_recover(srv_req *r) {
  json_t *body = srv_body(r, false);
  const char *loc = NULL, *checksum = NULL, *priority = NULL, *api_key = NULL;
  char path[PATH_MAX];
  if (body && srv_check_wait(r) && srv_field_str(r, body, "location", true, &loc) &&
      srv_field_str(r, body, "checksum", false, &checksum) &&
      srv_field_str(r, body, "priority", false, &priority) && priority_ok(r, priority) &&
      srv_field_str(r, body, "api_key", false, &api_key) && resolve_location(r, loc, path))
    restore_from(r, path, checksum);
  json_decref(body);
}

void h_snap_upload(srv_req *r) {
  if (!srv_check_wait(r) || !priority_ok(r, srv_query(r, "priority"))) return;
  if (r->upload_error != NULL) {
    if (r->upload_io_error)
      srv_fail(r, 500, "Service internal error: snapshot upload: %s", r->upload_error);
    else
      srv_wrong_input(r, "snapshot upload: %s", r->upload_error);
    return;
  }
  if (!r->upload_seen || r->upload_path == NULL) {
    srv_wrong_input(r, "expected a multipart/form-data body with a `snapshot` file field");
    return;
  }
  restore_from(r, r->upload_path, srv_query(r, "checksum"));
}
