/* routes_dashboard.c: GET /dashboard and GET /dashboard/{file} — the static
 * files of the live cluster dashboard (issue 5; web/dashboard/, described in
 * docs/cluster.md, "Dashboard").
 *
 * Owns where the files are looked up and which names may be served. Does
 * not own the page (the plain files in web/dashboard/, fed by GET /cluster/events)
 * nor the state document (routes_cluster.c). The files are read from disk
 * on every request rather than embedded, so editing the page needs no
 * rebuild and the build needs no extra step.
 *
 * Lookup: `--web-dir DIR` when set, else `<dir of the executable>/../web`
 * (build/quiver -> web/ of the source tree), else `<dir of the
 * executable>/web`; the files are DIR/dashboard/<name>. Absent: 404 that
 * names the places tried.
 *
 * Invariant: only the three names of `files[]` are ever opened; the name
 * from the URL is compared whole against them, never joined into a path,
 * so no request can reach any other file (no traversal, no hidden files). */
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fileio.h"
#include "server/server_int.h"

typedef struct dash_file {
  const char *name;
  const char *content_type;
} dash_file;

static const dash_file files[] = {
    {"index.html", "text/html; charset=utf-8"},
    {"dashboard.js", "text/javascript; charset=utf-8"},
    {"dashboard.css", "text/css; charset=utf-8"},
};
#define N_FILES (sizeof files / sizeof files[0])

/* True when DIR/dashboard/index.html exists. */
static bool has_dashboard(const char *dir) {
  char p[PATH_MAX + 64];
  struct stat st;
  snprintf(p, sizeof p, "%s/dashboard/index.html", dir);
  return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* Finds the web directory into out (PATH_MAX bytes); false when none has
 * the dashboard, with the places tried in `tried`. */
static bool find_web_dir(const srv_config *cfg, char *out, char *tried, size_t tried_len) {
  if (cfg->web_dir && cfg->web_dir[0]) {
    snprintf(out, PATH_MAX, "%s", cfg->web_dir);
    snprintf(tried, tried_len, "%s (--web-dir)", cfg->web_dir);
    return has_dashboard(out);
  }
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) {
    snprintf(tried, tried_len, "nowhere: the executable's path is unknown; set --web-dir");
    return false;
  }
  exe[n] = 0;
  char *slash = strrchr(exe, '/');
  if (slash) *slash = 0;
  static const char *const rel[] = {"/../web", "/web"};
  tried[0] = 0;
  for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
    snprintf(out, PATH_MAX, "%.*s%s", PATH_MAX - 16, exe, rel[i]);
    size_t used = strlen(tried);
    snprintf(tried + used, tried_len - used, "%s%s", used ? ", " : "", out);
    if (has_dashboard(out)) return true;
  }
  return false;
}

void h_dashboard(srv_req *r) {
  const char *name = r->args[0] ? r->args[0] : "index.html";
  const dash_file *f = NULL;
  for (size_t i = 0; i < N_FILES; i++)
    if (!strcmp(name, files[i].name)) f = &files[i];
  if (f == NULL) {
    srv_fail(r, 404, "Not found: the dashboard has no file \"%.100s\" (only index.html, "
                     "dashboard.js, dashboard.css)", name);
    return;
  }
  char dir[PATH_MAX], tried[2 * PATH_MAX + 64];
  if (!find_web_dir(&r->s->cfg, dir, tried, sizeof tried)) {
    srv_fail(r, 404, "Not found: the dashboard files are not installed: no "
                     "dashboard/index.html under %s; pass --web-dir DIR (the web/ directory "
                     "of the source tree)", tried);
    return;
  }
  char path[PATH_MAX + 64];
  snprintf(path, sizeof path, "%s/dashboard/%s", dir, f->name);
  char *text;
  size_t len;
  qv_err err = {0};
  qv_rc rc = fileio_read_file(path, &text, &len, &err);
  if (rc != QV_OK) {
    srv_fail(r, rc == QV_ENOTFOUND ? 404 : 500, "%s: %s",
             rc == QV_ENOTFOUND ? "Not found" : "Service internal error", err.msg);
    return;
  }
  srv_raw(r, 200, f->content_type, text, len, qv_free);
  r->resp.no_store = true; /* a live page: always fetch the current one */
}
