/* cluster_net.c: cluster mode's node-to-node listener — a second HTTP
 * endpoint, one thread per connection, that serves only
 * POST /internal/shards/{name}/{shard}/{op} (h_shard_internal).
 *
 * Why a second listener: the public server's pool threads multiplex
 * connections (http.c), so a handler that waits — a router waiting for a
 * primary, a primary holding a shard lock while its copies answer — also
 * holds up the unrelated requests queued on its thread. Node-to-node calls
 * are exactly such waits, and two nodes replicating to each other could
 * each end up waiting for a request stuck behind the other's handler until
 * a timeout broke the cycle (measured: write throughput of 2 nodes with rf 2
 * varied 1,100–9,700 points/s between runs). Here every connection has its
 * own thread, so a node-to-node request is never queued behind a handler,
 * and chains of waits end when the work does.
 *
 * The listener binds the public host on an ephemeral port; its address is
 * advertised in the member record as "iaddr" (host of --node-addr, this
 * port), and peers dial it (cl_node_iaddr). Requests pass through the same
 * router (API key, route table) as public ones; anything but the shard
 * operation is 404.
 *
 * Invariant: the daemon is started before the node registers (so the
 * address it advertises answers) and stopped before the node's state goes. */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "base/alloc.h"
#include "base/log.h"
#include "server/cluster_int.h"

#define BODY_MAX (512ull << 20)

typedef struct nconn {
  srv_req req;
  bool routed;
  char *body;
  size_t len, cap;
  bool too_big;
} nconn;

static struct MHD_Daemon *g_daemon;

static enum MHD_Result respond(nconn *st) {
  srv_resp *rs = &st->req.resp;
  struct MHD_Response *resp;
  if (rs->body != NULL && rs->free_fn != NULL) {
    resp = MHD_create_response_from_buffer_with_free_callback(rs->len, rs->body, rs->free_fn);
    if (resp != NULL) rs->body = NULL, rs->free_fn = NULL;
  } else {
    resp = MHD_create_response_from_buffer(rs->len, rs->body ? rs->body : (char *)"",
                                           MHD_RESPMEM_MUST_COPY);
  }
  if (resp == NULL) return MHD_NO;
  MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                          rs->content_type ? rs->content_type : "application/json");
  enum MHD_Result ret = MHD_queue_response(st->req.conn, rs->status ? rs->status : 500, resp);
  MHD_destroy_response(resp);
  return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
  srv *s = cls;
  nconn *st = *con_cls;
  (void)version;
  if (st == NULL) {
    st = qv_calloc(1, sizeof *st);
    if (st == NULL) return MHD_NO;
    st->req.s = s;
    st->req.conn = conn;
    st->req.method = method;
    st->req.t0 = srv_now();
    st->req.route = -1;
    *con_cls = st;
    const char *key = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "api-key");
    const char *authz = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    st->routed = router_route(&st->req, url, key, authz);
    if (st->routed && router_routes[st->req.route].fn != h_shard_internal) {
      st->routed = false;
      srv_fail(&st->req, 404, "Not found: this port serves node-to-node shard operations only");
    }
    return MHD_YES;
  }
  if (*upload_data_size != 0) {
    size_t n = *upload_data_size;
    *upload_data_size = 0;
    if (!st->routed || st->too_big) return MHD_YES;
    if (st->len + n + 1 > BODY_MAX) {
      st->too_big = true;
      return MHD_YES;
    }
    if (st->len + n + 1 > st->cap) {
      size_t cap = st->cap ? st->cap : 4096;
      while (cap < st->len + n + 1) cap *= 2;
      char *b = qv_realloc(st->body, cap);
      if (b == NULL) return MHD_NO;
      st->body = b;
      st->cap = cap;
    }
    memcpy(st->body + st->len, upload_data, n);
    st->len += n;
    st->body[st->len] = 0;
    return MHD_YES;
  }
  if (st->too_big) srv_fail(&st->req, 413, "Payload too large for a shard operation");
  else if (st->routed) {
    st->req.body = st->body ? st->body : "";
    st->req.body_len = st->len;
    router_run(&st->req);
  }
  return respond(st);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
  nconn *st = *con_cls;
  (void)cls, (void)conn, (void)toe;
  if (st == NULL) return;
  if (st->req.resp.free_fn) st->req.resp.free_fn(st->req.resp.body);
  for (int i = 0; i < SRV_MAX_ARGS; i++) qv_free(st->req.args[i]);
  jsonio_vecs_free(&st->req.vecs);
  qv_free(st->req.path);
  qv_free(st->body);
  qv_free(st);
  *con_cls = NULL;
}

bool cln_start(srv *s, const char *advertise_host, char *iaddr, size_t cap) {
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = 0;
  const char *bind_host = s->cfg.host && s->cfg.host[0] ? s->cfg.host : "127.0.0.1";
  if (!strcmp(bind_host, "localhost")) bind_host = "127.0.0.1";
  if (inet_pton(AF_INET, bind_host, &sa.sin_addr) != 1) {
    qv_log(QV_LOG_WARN, "cluster", "node-to-node listener: cannot bind %s (IPv4 only); peers "
           "use the public port", bind_host);
    return false;
  }
  g_daemon = MHD_start_daemon(
      MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
          MHD_USE_ERROR_LOG,
      0, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
      MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_CONNECTION_TIMEOUT,
      (unsigned)120, MHD_OPTION_END);
  if (g_daemon == NULL) {
    qv_log(QV_LOG_WARN, "cluster", "node-to-node listener did not start; peers use the public "
           "port");
    return false;
  }
  const union MHD_DaemonInfo *info = MHD_get_daemon_info(g_daemon, MHD_DAEMON_INFO_BIND_PORT);
  unsigned port = info ? info->port : 0;
  if (port == 0) {
    cln_stop();
    return false;
  }
  snprintf(iaddr, cap, "%s:%u", advertise_host, port);
  qv_log(QV_LOG_INFO, "cluster", "node-to-node listener on %s:%u (advertised %s)", bind_host,
         port, iaddr);
  return true;
}

void cln_stop(void) {
  if (g_daemon) MHD_stop_daemon(g_daemon);
  g_daemon = NULL;
}
