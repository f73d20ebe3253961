/* routes_service.c: the endpoints that are not about one collection —
 * the version document, the Kubernetes probes, /metrics, and the
 * single-node answers of /cluster and /aliases.
 *
 * GET / answers with Qdrant's title and a Qdrant version, because the
 * official clients compare it with their own and warn otherwise; Quiver's
 * own version rides in an extra field. */
#include "base/alloc.h"
#include "server/server_int.h"

void h_root(srv_req *r) {
  json_t *o = json_pack("{s:s, s:s, s:s}", "title", "qdrant - vector search engine", "version",
                        SRV_QDRANT_VERSION, "quiver_version", QV_VERSION_STRING);
  size_t len;
  char *text = o ? jsonio_dumps(o, &len) : NULL;
  json_decref(o);
  if (text == NULL) {
    srv_fail(r, 500, "Service internal error: out of memory");
    return;
  }
  srv_raw(r, 200, "application/json", text, len, qv_free);
}

/* The database is opened before the daemon starts, so once a probe can be
 * answered the server is ready. */
void h_healthz(srv_req *r) { srv_text(r, 200, "text/plain", "healthz check passed"); }

void h_metrics(srv_req *r) {
  size_t len;
  char *text = metrics_render(r->s, &len);
  if (text == NULL) {
    srv_fail(r, 500, "Service internal error: out of memory");
    return;
  }
  srv_raw(r, 200, "text/plain; version=0.0.4", text, len, qv_free);
}

void h_cluster(srv_req *r) { srv_ok(r, json_pack("{s:s}", "status", "disabled")); }

void h_aliases(srv_req *r) { srv_ok(r, json_pack("{s:[]}", "aliases")); }
