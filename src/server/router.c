/* router.c: the route table of the REST API and dispatch — path
 * normalisation, pattern match with {captures}, the API-key gate, 404/405.
 *
 * Owns which paths exist, which are writes (refused for the read-only key),
 * which are public and which stream their body (snapshot uploads). Does
 * not parse bodies (handlers) or talk to MHD (http.c). Routing happens as
 * soon as the headers are in, so that a request is refused before its body
 * is read. Invariant: a request leaves router_route either routed (true,
 * no response yet) or with exactly one response in r->resp (false), and
 * router_run leaves exactly one response; r->route is the matched row or
 * -1. The pattern string of the row is the `endpoint` label in /metrics,
 * so raw paths (with collection names) never become label values. */
#include <string.h>

#include "base/alloc.h"
#include "server/server_int.h"

#define C "/collections/{name}"
#define P C "/points"

/* Literal rows come before rows whose {capture} would also match them. */
const srv_route router_routes[] = {
    /* service */
    {"GET", "/", h_root, false, true, false},
    {"GET", "/healthz", h_healthz, false, true, false},
    {"GET", "/livez", h_healthz, false, true, false},
    {"GET", "/readyz", h_healthz, false, true, false},
    {"GET", "/metrics", h_metrics, false, false, false},
    {"GET", "/cluster", h_cluster, false, false, false},
    /* cluster mode (routes_cluster.c): Quiver's state document and the
     * node-to-node shard operations (writes: the read-only key may not) */
    {"GET", "/cluster/state", h_cluster_state, false, false, false},
    /* the same state as Server-Sent Events, for the dashboard
     * (cluster_events.c); the key may also come as ?api-key= (http.c) */
    {"GET", "/cluster/events", h_cluster_events, false, false, false},
    {"POST", "/cluster/nodes/{id}/{op}", h_cluster_node_op, true, false, false},
    {"POST", "/internal/shards/{name}/{shard}/{op}", h_shard_internal, true, false, false},
    /* node-to-node collection operations: answered in cluster mode by
     * cluster_coll.c (clc_route_global, before any handler); the handler
     * named is what answers without --cluster (404), and it lets the
     * node-to-node listener (cluster_net.c) serve the row */
    {"POST", "/internal/collections/{name}/{op}", h_shard_internal, true, false, false},
    /* the cluster dashboard (routes_dashboard.c): static files, public
     * because a browser cannot send a header when it navigates; the page
     * itself sends the api-key on its own requests */
    {"GET", "/dashboard", h_dashboard, false, true, false},
    {"GET", "/dashboard/{file}", h_dashboard, false, true, false},
    {"GET", "/aliases", h_aliases, false, false, false},
    /* collections */
    {"GET", "/collections", h_coll_list, false, false, false},
    {"GET", C, h_coll_get, false, false, false},
    {"PUT", C, h_coll_create, true, false, false},
    {"DELETE", C, h_coll_delete, true, false, false},
    {"PATCH", C, h_coll_patch, true, false, false},
    {"GET", C "/exists", h_coll_exists, false, false, false},
    {"GET", C "/aliases", h_coll_aliases, false, false, false},
    {"GET", C "/cluster", h_coll_cluster, false, false, false},
    {"POST", C "/cluster", h_coll_cluster, true, false, false}, /* shard operations */
    {"PUT", C "/index", h_index_create, true, false, false},
    {"DELETE", C "/index/{field_name}", h_index_delete, true, false, false},
    /* points: writes */
    {"PUT", P, h_upsert, true, false, false},
    {"POST", P "/delete", h_delete, true, false, false},
    {"POST", P "/payload", h_payload_set, true, false, false},
    {"PUT", P "/payload", h_payload_overwrite, true, false, false},
    {"POST", P "/payload/delete", h_payload_delete, true, false, false},
    {"POST", P "/payload/clear", h_payload_clear, true, false, false},
    {"PUT", P "/vectors", h_vectors_update, true, false, false},
    {"POST", P "/vectors/delete", h_vectors_delete, true, false, false},
    {"POST", P "/batch", h_batch, true, false, false},
    /* points: reads */
    {"POST", P, h_retrieve, false, false, false},
    {"POST", P "/scroll", h_scroll, false, false, false},
    {"POST", P "/count", h_count, false, false, false},
    {"POST", P "/search", h_search, false, false, false},
    {"POST", P "/search/batch", h_search_batch, false, false, false},
    {"POST", P "/recommend", h_recommend, false, false, false},
    {"POST", P "/recommend/batch", h_recommend_batch, false, false, false},
    {"POST", P "/query", h_query, false, false, false},
    {"POST", P "/query/batch", h_query_batch, false, false, false},
    {"GET", P "/{id}", h_point_get, false, false, false},
    /* snapshots; "recover" and "upload" before {snapshot_name} */
    {"GET", C "/snapshots", h_snap_list, false, false, false},
    {"POST", C "/snapshots", h_snap_create, true, false, false},
    {"PUT", C "/snapshots/recover", h_snap_recover, true, false, false},
    {"POST", C "/snapshots/upload", h_snap_upload, true, false, true},
    {"GET", C "/snapshots/{snapshot_name}", h_snap_download, false, false, false},
    {"DELETE", C "/snapshots/{snapshot_name}", h_snap_delete, true, false, false},
};
const size_t router_n_routes = sizeof router_routes / sizeof router_routes[0];

/* Matches `path` against `pattern`; on success copies the captures into
 * caps (qv_malloc'd strings). */
static bool match(const char *pattern, const char *path, char **caps, int *n_caps) {
  const char *p = pattern, *s = path;
  int n = 0;
  while (*p && *s) {
    if (*p == '{') {
      const char *end = strchr(s, '/');
      size_t len = end ? (size_t)(end - s) : strlen(s);
      if (len == 0 || n == SRV_MAX_ARGS) goto fail;
      caps[n] = qv_strndup(s, len);
      if (caps[n++] == NULL) goto fail;
      s += len;
      p = strchr(p, '}') + 1;
      continue;
    }
    if (*p != *s) goto fail;
    p++;
    s++;
  }
  if (*p == 0 && *s == 0) {
    *n_caps = n;
    return true;
  }
fail:
  for (int i = 0; i < n; i++) qv_free(caps[i]);
  return false;
}

static void set_route_args(srv_req *r, char **caps, int n) {
  for (int i = 0; i < SRV_MAX_ARGS; i++) {
    qv_free(r->args[i]);
    r->args[i] = i < n ? caps[i] : NULL;
  }
}

bool router_route(srv_req *r, const char *url, const char *api_key_header,
                  const char *authorization_header) {
  r->route = -1;
  /* Qdrant trims a trailing '/' (actix NormalizePath); so do we. */
  size_t n = strlen(url);
  while (n > 1 && url[n - 1] == '/') n--;
  r->path = qv_strndup(url, n);
  if (r->path == NULL) return srv_fail(r, 500, "Service internal error: out of memory");
  bool path_known = false;
  char allow[64] = "";
  for (size_t i = 0; i < router_n_routes; i++) {
    char *caps[SRV_MAX_ARGS];
    int n_caps;
    if (!match(router_routes[i].pattern, r->path, caps, &n_caps)) continue;
    if (strcmp(router_routes[i].method, r->method) != 0) {
      path_known = true;
      if (strlen(allow) + 8 < sizeof allow) {
        if (allow[0]) strcat(allow, ", ");
        strcat(allow, router_routes[i].method);
      }
      for (int k = 0; k < n_caps; k++) qv_free(caps[k]);
      continue;
    }
    set_route_args(r, caps, n_caps);
    r->route = (int)i;
    break;
  }
  const srv_route *rt = r->route >= 0 ? &router_routes[r->route] : NULL;
  if (rt == NULL || !rt->is_public) {
    int level = auth_level(&r->s->cfg, api_key_header, authorization_header);
    if (level == SRV_AUTH_NONE) {
      bool given = api_key_header != NULL || authorization_header != NULL;
      srv_text(r, 401, "text/plain",
               given ? "Invalid API key or JWT"
                     : "Must provide an API key or an Authorization bearer token");
      return false;
    }
    if (level == SRV_AUTH_READ && (rt ? rt->is_write : strcmp(r->method, "GET") != 0))
      return srv_fail(r, 403, "Forbidden: Write access is not allowed with a read-only API key");
  }
  if (rt == NULL) {
    if (path_known) {
      srv_fail(r, 405, "Method %s is not allowed on %s", r->method, r->path);
      memcpy(r->resp.allow, allow, sizeof allow);
    } else {
      srv_fail(r, 404, "Not found: no such endpoint: %s %s", r->method, r->path);
    }
    return false;
  }
  return true;
}

bool router_streams_body(const srv_req *r) {
  return r->route >= 0 && router_routes[r->route].streams_body;
}

void router_run(srv_req *r) {
  /* Cluster hook: distributed collections are answered by routes_cluster.c
   * (a no-op returning false without --cluster). */
  if (!cluster_route(r)) router_routes[r->route].fn(r);
  if (r->resp.status == 0) srv_fail(r, 500, "Service internal error: no response");
}
