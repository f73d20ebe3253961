/* http.c: `quiver serve` — process setup (settings, log, data directory,
 * listening socket), the libmicrohttpd glue (body accumulation under the
 * size limit, responses, metrics per request) and graceful shutdown.
 *
 * Owns the daemon and the request lifecycle:
 *
 *   headers --on_headers------------> state allocated, in_flight++,
 *                                     router_route (route, API key); a
 *                                     refused request keeps its response
 *   body    --on_request(data)------> appended while within max_body_bytes,
 *                                     else dropped and the request marked;
 *                                     a streamed route (snapshot upload)
 *                                     writes it to a file instead, within
 *                                     max_snapshot_upload_bytes
 *   end     --on_request(last)------> router_run -> response queued
 *                                     (a stream: MHD pulls its body from
 *                                     the handler's reader, see below)
 *   sent    --on_completed----------> state freed, upload file removed,
 *                                     in_flight--
 *
 * Streamed responses (GET /cluster/events, cluster_events.c) have no
 * length: MHD calls the handler's reader whenever the socket can take more
 * and sends what it returns as chunks. A reader with nothing to say parks
 * the connection (MHD_suspend_connection, which is why the daemon runs with
 * MHD_ALLOW_SUSPEND_RESUME) instead of returning 0 over and over, which in
 * this polling mode would spin a worker thread; its producer resumes it.
 * A stream is in flight for as long as it is open.
 *
 * Shutdown (SIGTERM/SIGINT, taken by sigwait in the main thread): stop
 * accepting (MHD_quiesce_daemon), end the event streams (clev_stop: else
 * they would hold in_flight up for the whole drain, and MHD must not be
 * stopped with a suspended connection), wait for in_flight to reach 0
 * (bounded), stop the daemon, qv_close. Every write was durable before its
 * response, so nothing is flushed here. Invariant: a request body is either
 * complete or rejected with 413; a handler never sees a truncated body (or
 * upload). */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/log.h"
#include "server/server.h"
#include "server/server_int.h"

#define DRAIN_SECONDS 30      /* longest wait for in-flight requests at shutdown */
#define IDLE_TIMEOUT_SECONDS 300 /* keep-alive connections idle longer are closed */

typedef struct conn_state {
  srv_req req;
  char *body;
  size_t len, cap;    /* len counts every body byte, also dropped ones */
  bool routed;        /* router_route passed: the handler will run */
  bool too_big;
  bool queued;        /* the response is queued (sent before the body ended) */
  uint64_t announced; /* Content-Length, 0 if absent */
  double t_body;      /* monotonic seconds when the body was complete */
  /* A streamed upload (routes with streams_body). */
  struct MHD_PostProcessor *pp;
  int upload_fd;      /* -1 when closed */
  char *upload_path;
  uint64_t upload_bytes; /* bytes of the snapshot field written */
} conn_state;

/* ---- logging -------------------------------------------------------------------- */

static void log_line(void *ctx, qv_log_level level, const char *subsystem, const char *msg) {
  static const char *names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  char when[32], line[1400];
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
  int n = snprintf(line, sizeof line, "%s.%03ldZ %-5s %s: %s\n", when, ts.tv_nsec / 1000000,
                   (unsigned)level < 4 ? names[level] : "?", subsystem, msg);
  if (n < 0) return;
  if ((size_t)n >= sizeof line) n = sizeof line - 1;
  /* One write per line, so lines of concurrent threads do not interleave. */
  ssize_t w = write(STDERR_FILENO, line, (size_t)n);
  (void)w;
  (void)ctx;
}

static int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Percent-decoding of the path and query arguments, in place. libmicrohttpd's
 * own decodes %00 to a NUL, and every C string after it would end there:
 * "/collections/a%00b" would name collection "a" (and a DELETE would drop
 * it). %00 is therefore left as the three characters, which no collection
 * name, id or parameter accepts, so such a request gets a 4xx. */
static size_t unescape(void *cls, struct MHD_Connection *c, char *s) {
  (void)cls, (void)c;
  char *w = s;
  for (const char *r = s; *r;) {
    int hi, lo;
    if (r[0] == '%' && (hi = hex_digit(r[1])) >= 0 && (lo = hex_digit(r[2])) >= 0 &&
        (hi | lo) != 0) {
      *w++ = (char)(hi * 16 + lo);
      r += 3;
    } else {
      *w++ = *r++;
    }
  }
  *w = 0;
  return (size_t)(w - s);
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
  char msg[1024];
  vsnprintf(msg, sizeof msg, fmt, ap);
  size_t n = strlen(msg);
  while (n && msg[n - 1] == '\n') msg[--n] = 0;
  qv_log(QV_LOG_WARN, "http", "%s", msg);
  (void)cls;
}

/* ---- requests ------------------------------------------------------------------- */

static enum MHD_Result send_response(conn_state *st) {
  srv_req *r = &st->req;
  srv_resp *rs = &r->resp;
  struct MHD_Response *resp;
  if (rs->stream_read != NULL) {
    /* 16 KiB blocks, well inside the 64 KiB connection memory limit; a
     * larger state document simply takes several reader calls. */
    resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, rs->stream_read,
                                             rs->stream_cls, rs->stream_free);
    if (resp == NULL) rs->stream_free(rs->stream_cls);
    rs->stream_read = NULL, rs->stream_free = NULL, rs->stream_cls = NULL; /* MHD's now */
  } else if (rs->is_file) {
    resp = MHD_create_response_from_fd64(rs->file_size, rs->fd);
    if (resp == NULL) close(rs->fd);
    rs->is_file = false; /* MHD closes it with the response */
  } else if (rs->body != NULL && rs->free_fn != NULL) {
    resp = MHD_create_response_from_buffer_with_free_callback(rs->len, rs->body, rs->free_fn);
    if (resp != NULL) rs->body = NULL, rs->free_fn = NULL; /* MHD owns it now */
  } else {
    resp = MHD_create_response_from_buffer(rs->len, rs->body ? rs->body : (char *)"",
                                           MHD_RESPMEM_MUST_COPY);
  }
  if (resp == NULL) return MHD_NO;
  st->queued = true;
  MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                          rs->content_type ? rs->content_type : "application/json");
  if (rs->allow[0]) MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, rs->allow);
  if (rs->no_store) MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
  if (rs->disposition[0])
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_DISPOSITION, rs->disposition);
  if (st->too_big) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
  if (rs->content_type && !strcmp(rs->content_type, "text/event-stream"))
    MHD_add_response_header(resp, "X-Accel-Buffering", "no"); /* proxies: do not hold it */
  enum MHD_Result ret = MHD_queue_response(r->conn, rs->status, resp);
  MHD_destroy_response(resp);
  double took = srv_now() - r->t0;
  metrics_record(r->route, r->method, rs->status, took);
  qv_log(QV_LOG_DEBUG, "http", "%s %s %u %.3f ms (body %zu bytes in %.3f ms)", r->method,
         r->path ? r->path : "-", rs->status, took * 1e3, st->len,
         st->t_body > 0 ? (st->t_body - r->t0) * 1e3 : 0.0);
  return ret;
}

static uint64_t body_limit(const conn_state *st) {
  return router_streams_body(&st->req) ? st->req.s->cfg.max_snapshot_upload_bytes
                                       : st->req.s->cfg.max_body_bytes;
}

static void too_big(conn_state *st) {
  uint64_t n = st->announced ? st->announced : st->len;
  srv_fail(&st->req, 413,
           "Payload error: %s (%llu bytes) is larger than allowed (limit: %llu bytes).",
           router_streams_body(&st->req) ? "snapshot upload" : "JSON payload",
           (unsigned long long)n, (unsigned long long)body_limit(st));
}

static bool append(conn_state *st, const char *data, size_t n) {
  if (st->len + n + 1 > st->cap) {
    /* An announced length within the limit sizes the buffer once (MHD
     * holds the client to it); doubling covers bodies without one. */
    bool sized = st->announced > 0 && st->announced <= st->req.s->cfg.max_body_bytes;
    size_t cap = st->cap ? st->cap : sized ? (size_t)st->announced + 1 : 4096;
    while (cap < st->len + n + 1) cap *= 2;
    char *p = qv_realloc(st->body, cap);
    if (p == NULL) return false;
    st->body = p;
    st->cap = cap;
  }
  memcpy(st->body + st->len, data, n);
  st->len += n;
  st->body[st->len] = 0;
  return true;
}

/* ---- streamed uploads ----------------------------------------------------------- */

/* The post processor hands over the parts of a multipart/form-data body;
 * the file of field `snapshot` goes to the temporary file, other fields
 * are ignored. Write errors are remembered and the rest is drained. */
static enum MHD_Result upload_part(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *filename, const char *content_type,
                                   const char *transfer_encoding, const char *data,
                                   uint64_t off, size_t size) {
  conn_state *st = cls;
  srv_req *r = &st->req;
  if (key == NULL || strcmp(key, "snapshot") != 0) return MHD_YES;
  if (off == 0 && st->upload_bytes > 0 && r->upload_error == NULL)
    r->upload_error = "more than one `snapshot` field";
  r->upload_seen = true;
  if (r->upload_error != NULL || size == 0) return MHD_YES;
  while (size > 0) {
    ssize_t w = write(st->upload_fd, data, size);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      r->upload_error = errno == ENOSPC ? "no space left on the device" : "cannot write the upload";
      r->upload_io_error = true;
      qv_log(QV_LOG_WARN, "http", "snapshot upload to %s: %s", st->upload_path, strerror(errno));
      return MHD_YES;
    }
    data += w;
    size -= (size_t)w;
    st->upload_bytes += (uint64_t)w;
  }
  (void)kind, (void)filename, (void)content_type, (void)transfer_encoding;
  return MHD_YES;
}

/* Sets up the sink of a streamed body; false with a response set. */
static bool upload_start(conn_state *st) {
  srv_req *r = &st->req;
  st->upload_fd = snapshots_upload_file(r->s, &st->upload_path);
  if (st->upload_fd < 0)
    return srv_fail(r, 500, "Service internal error: cannot create a file for the upload in %s",
                    r->s->snap_dir);
  r->upload_path = st->upload_path;
  st->pp = MHD_create_post_processor(r->conn, 64 * 1024, upload_part, st);
  if (st->pp == NULL)
    return srv_format_err(r, "expected a multipart/form-data body with a `snapshot` file field");
  return true;
}

static void upload_close(conn_state *st) {
  if (st->pp) MHD_destroy_post_processor(st->pp);
  st->pp = NULL;
  if (st->upload_fd >= 0) close(st->upload_fd);
  st->upload_fd = -1;
}

/* ---- requests ------------------------------------------------------------------- */

/* First call of a request: headers only. Routes and checks the key at
 * once, so that a refused request's body is dropped unread by any
 * handler; a client waiting for 100 Continue gets the refusal (or a 413)
 * before it sends the body. Others get it after their body has been read
 * and dropped: closing on unread bytes would reset the connection and lose
 * the response. */
static enum MHD_Result on_headers(srv *s, struct MHD_Connection *conn, const char *url,
                                  const char *method, void **con_cls) {
  conn_state *st = qv_calloc(1, sizeof *st);
  if (st == NULL) return MHD_NO;
  st->req.s = s;
  st->req.conn = conn;
  st->req.method = method;
  st->req.t0 = srv_now();
  st->req.route = -1;
  st->upload_fd = -1;
  *con_cls = st;
  __atomic_add_fetch(&s->in_flight, 1, __ATOMIC_RELAXED);
  const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
  if (cl) st->announced = strtoull(cl, NULL, 10);
  const char *key = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "api-key");
  const char *authz = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
  if (key == NULL && authz == NULL && clev_key_in_query(url))
    key = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "api-key");
  st->routed = router_route(&st->req, url, key, authz);
  if (st->routed && st->announced > body_limit(st)) {
    st->too_big = true;
    too_big(st);
  }
  if (st->routed && !st->too_big && router_streams_body(&st->req) && !upload_start(st))
    st->routed = false;
  const char *expect = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Expect");
  bool refused = !st->routed || st->too_big;
  if (refused && expect && strcasecmp(expect, "100-continue") == 0) {
    if (st->announced > 0) st->too_big = true; /* close: the body will not come */
    return send_response(st);
  }
  return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
  srv *s = cls;
  conn_state *st = *con_cls;
  (void)version;
  if (st == NULL) return on_headers(s, conn, url, method, con_cls);
  if (*upload_data_size != 0) {
    size_t n = *upload_data_size;
    *upload_data_size = 0;
    if (!st->routed || st->queued) { /* refused: drop the body */
      st->len += n;
      return MHD_YES;
    }
    if (!st->too_big && st->len + n > body_limit(st)) {
      st->too_big = true;
      qv_free(st->body);
      st->body = NULL;
      st->cap = 0;
      upload_close(st);
    }
    if (st->too_big) {
      st->len += n;
      return MHD_YES;
    }
    if (st->pp) {
      st->len += n;
      if (st->req.upload_error == NULL && MHD_post_process(st->pp, upload_data, n) != MHD_YES &&
          st->req.upload_error == NULL)
        st->req.upload_error = "the multipart/form-data body is malformed";
      return MHD_YES;
    }
    return append(st, upload_data, n) ? MHD_YES : MHD_NO;
  }
  if (st->queued) return MHD_YES; /* answered early */
  st->t_body = srv_now();
  if (st->too_big) {
    too_big(st);
    return send_response(st);
  }
  if (!st->routed) return send_response(st);
  st->req.body = st->body ? st->body : "";
  st->req.body_len = st->len;
  upload_close(st); /* flushes the last part of an upload into the file */
  router_run(&st->req);
  return send_response(st);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
  srv *s = cls;
  conn_state *st = *con_cls;
  if (st == NULL) return;
  upload_close(st);
  if (st->upload_path) unlink(st->upload_path);
  qv_free(st->upload_path);
  if (st->req.resp.free_fn) st->req.resp.free_fn(st->req.resp.body);
  if (st->req.resp.is_file) close(st->req.resp.fd);
  if (st->req.resp.stream_free) st->req.resp.stream_free(st->req.resp.stream_cls); /* unsent */
  for (int i = 0; i < SRV_MAX_ARGS; i++) qv_free(st->req.args[i]);
  jsonio_vecs_free(&st->req.vecs);
  qv_free(st->req.path);
  qv_free(st->body);
  qv_free(st);
  *con_cls = NULL;
  __atomic_sub_fetch(&s->in_flight, 1, __ATOMIC_RELAXED);
  (void)conn;
  (void)toe;
}

/* ---- startup -------------------------------------------------------------------- */

static bool is_loopback(const struct sockaddr *sa) {
  if (sa->sa_family == AF_INET)
    return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
  if (sa->sa_family == AF_INET6) {
    const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
  }
  return false;
}

/* Resolves, checks and binds the listening socket; returns it or -1. */
static int open_listener(const srv_config *cfg, unsigned *port_out) {
  struct addrinfo hints = {0}, *ai = NULL;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  char port[16];
  snprintf(port, sizeof port, "%llu", (unsigned long long)cfg->port);
  int e = getaddrinfo(cfg->host, port, &hints, &ai);
  if (e != 0) {
    fprintf(stderr, "serve: cannot resolve --host %s: %s\n", cfg->host, gai_strerror(e));
    return -1;
  }
  if (!is_loopback(ai->ai_addr) && cfg->api_key[0] == 0 && !cfg->allow_insecure_remote) {
    fprintf(stderr,
            "serve: refusing to listen on %s without an API key: anyone who can reach it "
            "could read and change every collection. Set --api-key (or "
            "QUIVER__SERVICE__API_KEY), or pass --allow-insecure-remote to accept the risk.\n",
            cfg->host);
    freeaddrinfo(ai);
    return -2;
  }
  int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
    fprintf(stderr, "serve: cannot listen on %s:%s: %s\n", cfg->host, port, strerror(errno));
    if (fd >= 0) close(fd);
    freeaddrinfo(ai);
    return -1;
  }
  freeaddrinfo(ai);
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  *port_out = (unsigned)cfg->port;
  if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
    *port_out = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                : ((struct sockaddr_in *)&ss)->sin_port);
  return fd;
}

static unsigned worker_threads(const srv_config *cfg) {
  if (cfg->threads) return (unsigned)cfg->threads;
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  /* Handlers block on fsync and on searches, so more threads than CPUs
   * keep the cores busy while some wait. */
  long t = n > 0 ? 2 * n : 4;
  return (unsigned)(t < 4 ? 4 : t > 64 ? 64 : t);
}

static void drain(srv *s) {
  struct timespec tick = {0, 10 * 1000 * 1000};
  for (int i = 0; i < DRAIN_SECONDS * 100; i++) {
    if (__atomic_load_n(&s->in_flight, __ATOMIC_RELAXED) == 0) return;
    nanosleep(&tick, NULL);
  }
  qv_log(QV_LOG_WARN, "server", "%d requests still in flight after %d s; stopping anyway",
         __atomic_load_n(&s->in_flight, __ATOMIC_RELAXED), DRAIN_SECONDS);
}

static int serve(srv *s) {
  int listen_fd = -1, status = 1;
  struct MHD_Daemon *d = NULL;
  qv_open_opts opts;
  qv_open_opts_init(&opts);
  qv_err err = {0};
  unsigned port = 0;
  listen_fd = open_listener(&s->cfg, &port);
  if (listen_fd < 0) return listen_fd == -2 ? 2 : 1;
  qv_rc rc = qv_open(s->cfg.data_dir, &opts, &s->db, &err);
  if (rc != QV_OK) {
    fprintf(stderr, "serve: cannot open --data-dir %s: %s\n", s->cfg.data_dir, err.msg);
    goto out;
  }
  if (!snapshots_init(s)) goto out;
  unsigned threads = worker_threads(&s->cfg);
  d = MHD_start_daemon(
      MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ITC | MHD_USE_ERROR_LOG |
          MHD_ALLOW_SUSPEND_RESUME,
      0,
      NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
      MHD_OPTION_LISTEN_SOCKET, listen_fd,
      MHD_OPTION_THREAD_POOL_SIZE, threads, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
      MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)IDLE_TIMEOUT_SECONDS,
      MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64 * 1024),
      MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL, MHD_OPTION_END);
  if (d == NULL) {
    fprintf(stderr, "serve: cannot start the HTTP server on %s:%u\n", s->cfg.host, port);
    goto out;
  }
  listen_fd = -1; /* the daemon owns it now: quiesce hands it back, stop closes it */
  bool v6 = strchr(s->cfg.host, ':') != NULL;
  fprintf(stderr, "Quiver %s listening on http://%s%s%s:%u (data: %s)\n", QV_VERSION_STRING,
          v6 ? "[" : "", s->cfg.host, v6 ? "]" : "", port, s->cfg.data_dir);
  qv_log(QV_LOG_INFO, "server", "%u worker threads, body limit %llu bytes, auth %s", threads,
         (unsigned long long)s->cfg.max_body_bytes, s->cfg.api_key[0] ? "on" : "off");
  /* Join the cluster only now: peers may call us as soon as we are in it. */
  if (s->cfg.cluster) {
    int st = cluster_boot(&s->cfg, stderr);
    if (st >= 0) {
      status = st;
      goto out;
    }
  }

  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  int sig = 0;
  while (sigwait(&stop, &sig) != 0) {
  }
  qv_log(QV_LOG_INFO, "server", "%s: no new connections; finishing %d requests in flight",
         sig == SIGTERM ? "SIGTERM" : "SIGINT", __atomic_load_n(&s->in_flight, __ATOMIC_RELAXED));
  int qfd = MHD_quiesce_daemon(d);
  if (qfd >= 0) close(qfd);
  clev_stop();
  drain(s);
  status = 0;
out:
  clev_stop(); /* no-op when done above; a stream may exist if cluster_boot failed */
  if (d) MHD_stop_daemon(d);
  if (listen_fd >= 0) close(listen_fd);
  cluster_shutdown();
  qv_close(s->db);
  s->db = NULL;
  if (status == 0) qv_log(QV_LOG_INFO, "server", "stopped");
  return status;
}

int server_main(int argc, char **argv) {
  srv s;
  memset(&s, 0, sizeof s);
  int status = srvcfg_load(argc, argv, &s.cfg, stderr);
  if (status >= 0) {
    srvcfg_free(&s.cfg);
    return status;
  }
  if (s.cfg.read_only_api_key[0] && !s.cfg.api_key[0]) {
    fprintf(stderr, "serve: --read-only-api-key needs --api-key too (else nobody could write)\n");
    srvcfg_free(&s.cfg);
    return 2;
  }
  qv_set_log(log_line, NULL, (qv_log_level)s.cfg.log_level);
  metrics_init();
  pthread_mutex_init(&s.index_mu, NULL);
  /* Block the stop signals in every thread (MHD's and the engine's inherit
   * this mask) so that only sigwait in serve() receives them. */
  sigset_t stop, old;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, &old);
  struct sigaction ign = {0}, old_pipe;
  ign.sa_handler = SIG_IGN;
  sigaction(SIGPIPE, &ign, &old_pipe);
  status = serve(&s);
  sigaction(SIGPIPE, &old_pipe, NULL);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  qv_set_log(NULL, NULL, QV_LOG_ERROR);
  pthread_mutex_destroy(&s.index_mu);
  qv_free(s.snap_dir);
  srvcfg_free(&s.cfg);
  return status;
}
