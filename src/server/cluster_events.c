/* cluster_events.c: GET /cluster/events — the cluster dashboard's live feed
 * as Server-Sent Events (text/event-stream; docs/cluster.md, section 8).
 *
 * What a client receives, in order:
 *
 *   : quiver event stream          comment, then `retry: 2000`
 *   event: state                   the current state document, always first
 *   id: <seq> / event: event       each event of the node's ring newer than
 *                                  Last-Event-ID (header, or ?last_event_id=)
 *   event: state                   again whenever the document changes
 *   event: unavailable             instead, while the state cannot be built
 *                                  ({"status", "error"}, e.g. etcd is down)
 *   : heartbeat                    after 10 s without anything else
 *
 * The state document is GET /cluster/state's `result` without its `events`
 * (they travel as events of their own). Without --cluster it is
 * {"enabled": false, "single_node": {"collections": {name: {points_count}}}}
 * and the events are this file's own ring of "collection created/removed",
 * seen by comparing the collection list each tick; while a --cluster node
 * is still joining it is {"enabled": false, "joining": true}.
 *
 * Owns the stream registry, the producer thread ("pump") and the SSE
 * framing. Does not build the state (cluster_state.c), keep the cluster's
 * events (cl_events_json, src/cluster/node.c) or talk HTTP (http.c).
 *
 * Why suspend/resume: MHD runs a small pool of polling threads and every
 * connection is bound to one of them. A reader that blocks (waiting for
 * news) would stall every other connection of its thread, and a reader
 * that returns 0 is called again at once (a busy loop). So a reader with
 * nothing to send parks its connection with MHD_suspend_connection; one
 * pump thread builds the document once per tick for all streams, queues
 * the bytes and resumes the streams that have something to send (or whose
 * client hung up: a parked socket is not watched by MHD, so the pump polls
 * it for POLLRDHUP). Handling requests never waits for a stream.
 *
 * Lifecycle of one stream (all fields under g_mu):
 *
 *   h_cluster_events --> registered, first bytes queued, response queued
 *   stream_read ------> bytes queued: hand them over
 *                       none, ended or stopping: END_OF_STREAM
 *                       none: suspended = true, MHD_suspend_connection
 *   pump tick --------> queues state/events/heartbeat; suspended and has
 *                       bytes (or ended): suspended = false, resume
 *   stream_free ------> (MHD is done with the response) unregistered, freed
 *
 * Invariants: `suspended` is set only by the reader, under g_mu, together
 * with its MHD_suspend_connection call, and cleared only by whoever then
 * resumes the connection — so a connection is resumed exactly once per
 * suspension and never while MHD runs it; MHD is never called with g_mu
 * held except MHD_suspend_connection from the reader. A suspended
 * connection is not processed by MHD, so its stream cannot be freed before
 * the pending resume. After clev_stop no stream suspends again.
 * At most EV_STREAMS_MAX streams exist (503 above). */
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"
#include "base/log.h"
#include "server/cluster_int.h"

#define EV_STREAMS_MAX 16
#define EV_TICK_MS 250           /* how often the document is rebuilt and compared */
#define EV_HEARTBEAT_MS 10000    /* comment after this long without other bytes */
#define EV_RETRY_MS 2000         /* EventSource's reconnect delay (`retry:`) */
#define EV_PENDING_MAX (4u << 20) /* queued bytes after which a stalled client is cut */
#define EV_LOCAL_MAX 256u        /* the single-node event ring */
#define EV_STOP_WAIT_MS 5000     /* how long clev_stop waits for streams to end */

typedef struct ev_stream {
  struct MHD_Connection *conn;
  int fd;             /* the client socket (hang-up check), -1 unknown */
  sbuf out;           /* SSE text; out.p[sent..out.n) is not handed to MHD yet */
  size_t sent;
  uint64_t last_seq;  /* id of the newest event queued */
  uint64_t doc_hash;  /* of the last document queued (state or unavailable) */
  double last_write;  /* monotonic seconds when bytes were last queued */
  bool suspended;     /* parked by stream_read; see the invariants above */
  bool ended;         /* to be closed: client gone or too far behind */
  bool end_seen;      /* stream_read returned END_OF_STREAM */
  int slot;           /* index in g_streams */
} ev_stream;

/* A document ready to send. */
typedef struct ev_doc {
  const char *kind; /* "state" or "unavailable" */
  char *text;       /* compact JSON, qv_malloc'd */
  size_t len;
  uint64_t hash;
} ev_doc;

/* One event, framed once for every stream. */
typedef struct ev_item {
  uint64_t seq;
  char *sse; /* "id: ..\nevent: event\ndata: ..\n\n", qv_malloc'd */
  size_t len;
} ev_item;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv; /* CLOCK_MONOTONIC; wakes the pump early */
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static ev_stream *g_streams[EV_STREAMS_MAX];
static size_t g_n_streams;
static bool g_stopping;
static bool g_pump_on;
static pthread_t g_pump;

/* The single-node ring and the collection list last seen (g_lev_mu). */
static pthread_mutex_t g_lev_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
  uint64_t seq;
  int64_t ms;
  char text[CL_NAME_MAX + 64];
} g_lev[EV_LOCAL_MAX];
static uint64_t g_lev_seq;
static char **g_seen;
static size_t g_n_seen;
static bool g_have_seen;
static bool g_lev_closed; /* clev_stop freed the list: no scan may refill it */

static void init_once(void) {
  pthread_condattr_t a;
  pthread_condattr_init(&a);
  pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
  pthread_cond_init(&g_cv, &a);
  pthread_condattr_destroy(&a);
}

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t fnv1a(uint64_t h, const char *p, size_t n) {
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 0x100000001b3ull;
  return h;
}

bool clev_key_in_query(const char *url) {
  return url != NULL && (!strcmp(url, "/cluster/events") || !strcmp(url, "/cluster/events/"));
}

/* ---- the single-node ring ------------------------------------------------------ */

/* Appends to the ring; g_lev_mu held. */
static void local_event(const char *verb, const char *name) {
  uint64_t seq = ++g_lev_seq;
  __typeof__(g_lev[0]) *e = &g_lev[seq % EV_LOCAL_MAX];
  e->seq = seq;
  e->ms = wall_ms();
  snprintf(e->text, sizeof e->text, "collection %s %s", name, verb);
  qv_log(QV_LOG_DEBUG, "events", "collection %s %s", name, verb);
}

static void free_names(char **names, size_t n) {
  for (size_t i = 0; i < n; i++) free(names[i]);
  free(names);
}

/* Compares the collection list with the last one seen and records the
 * differences (both lists are in byte order: one merge pass). The first
 * call only takes the baseline; the first stream's handler makes it, before
 * its answer, so that nothing its client does afterwards is missed. A
 * collection created and dropped between two ticks leaves no event. */
static void local_scan(srv *s) {
  char **names = NULL;
  size_t n = 0;
  pthread_mutex_lock(&g_lev_mu);
  if (g_lev_closed || qv_collection_list(s->db, &names, &n, NULL) != QV_OK) {
    pthread_mutex_unlock(&g_lev_mu);
    return;
  }
  if (g_have_seen) {
    size_t i = 0, j = 0;
    while (i < n || j < g_n_seen) {
      int c = i == n ? 1 : j == g_n_seen ? -1 : strcmp(names[i], g_seen[j]);
      if (c < 0) local_event("created", names[i++]);
      else if (c > 0) local_event("removed", g_seen[j++]);
      else i++, j++;
    }
  }
  free_names(g_seen, g_n_seen);
  g_seen = names;
  g_n_seen = n;
  g_have_seen = true;
  pthread_mutex_unlock(&g_lev_mu);
}

/* ---- documents and events ------------------------------------------------------ */

/* {"collections": {name: {"points_count": n}}} of the local database. */
static json_t *single_json(srv *s) {
  json_t *colls = json_object();
  char **names = NULL;
  size_t n = 0;
  if (qv_collection_list(s->db, &names, &n, NULL) == QV_OK) {
    for (size_t i = 0; i < n; i++) {
      qv_collection *h = NULL;
      uint64_t count = 0;
      if (qv_collection_get(s->db, names[i], &h, NULL) == QV_OK) {
        if (qv_count(h, &count, NULL) != QV_OK) count = 0;
        qv_collection_release(h);
      }
      json_object_set_new(colls, names[i], json_pack("{s:o}", "points_count", jsonio_u64(count)));
    }
    free_names(names, n);
  }
  return json_pack("{s:o}", "collections", colls);
}

/* Builds the current document by running GET /cluster/state's handler on a
 * request of our own (it is answered from the node's watched view, plus
 * one etcd lease look-up per member). d->text is NULL on no memory. */
static void build_doc(srv *s, ev_doc *d) {
  srv_req q;
  memset(&q, 0, sizeof q);
  q.s = s;
  q.method = "GET";
  q.route = -1;
  q.t0 = srv_now();
  h_cluster_state(&q);
  char msg[256];
  json_t *o = q.resp.body ? jsonio_parse(q.resp.body, q.resp.len, msg, sizeof msg) : NULL;
  json_t *res = json_object_get(o, "result");
  json_t *doc;
  if (q.resp.status == 200 && json_is_object(res)) {
    d->kind = "state";
    doc = json_incref(res);
    json_object_del(doc, "events"); /* sent as events of their own */
    if (!json_is_true(json_object_get(doc, "enabled"))) {
      if (s->cfg.cluster) json_object_set_new(doc, "joining", json_true());
      else json_object_set_new(doc, "single_node", single_json(s));
    }
  } else {
    d->kind = "unavailable";
    const char *err = json_string_value(json_object_get(json_object_get(o, "status"), "error"));
    doc = json_pack("{s:i, s:s}", "status", (int)q.resp.status, "error", err ? err : "no state");
  }
  d->text = doc ? jsonio_dumps(doc, &d->len) : NULL;
  d->hash = fnv1a(fnv1a(0xcbf29ce484222325ull, d->kind, strlen(d->kind) + 1),
                  d->text ? d->text : "", d->len);
  json_decref(doc);
  json_decref(o);
  if (q.resp.free_fn) q.resp.free_fn(q.resp.body);
  qv_free(q.path);
  jsonio_vecs_free(&q.vecs);
}

/* The events with seq > after, oldest first, framed; *n items (NULL when
 * none or on no memory). From the cluster node's ring, else the local one. */
static ev_item *events_after(srv *s, uint64_t after, size_t *n) {
  *n = 0;
  json_t *arr = NULL;
  if (clr_node() != NULL) {
    char *t = cl_events_json(clr_node(), after);
    char msg[256];
    arr = t ? jsonio_parse(t, strlen(t), msg, sizeof msg) : NULL;
    qv_free(t);
  } else if (!s->cfg.cluster) {
    arr = json_array();
    pthread_mutex_lock(&g_lev_mu);
    uint64_t first = g_lev_seq >= EV_LOCAL_MAX ? g_lev_seq - EV_LOCAL_MAX + 1 : 1;
    if (after + 1 > first) first = after + 1;
    for (uint64_t q = first; arr && q <= g_lev_seq; q++) {
      const __typeof__(g_lev[0]) *e = &g_lev[q % EV_LOCAL_MAX];
      json_array_append_new(arr, json_pack("{s:I, s:I, s:s}", "seq", (json_int_t)e->seq, "ms",
                                           (json_int_t)e->ms, "text", e->text));
    }
    pthread_mutex_unlock(&g_lev_mu);
  }
  size_t m = json_array_size(arr);
  ev_item *items = m ? qv_calloc(m, sizeof *items) : NULL;
  for (size_t i = 0; items && i < m; i++) {
    json_t *e = json_array_get(arr, i);
    json_int_t seq = json_integer_value(json_object_get(e, "seq"));
    size_t len = 0;
    char *data = jsonio_dumps(e, &len);
    if (data == NULL || seq <= 0) {
      qv_free(data);
      continue;
    }
    sbuf b;
    sbuf_init(&b);
    sbuf_addf(&b, "id: %lld\nevent: event\ndata: ", (long long)seq);
    sbuf_add(&b, data, len);
    sbuf_adds(&b, "\n\n");
    qv_free(data);
    items[*n].seq = (uint64_t)seq;
    items[*n].sse = sbuf_take(&b, &items[*n].len);
    if (items[*n].sse) (*n)++;
  }
  json_decref(arr);
  if (*n == 0) {
    qv_free(items);
    items = NULL;
  }
  return items;
}

static void items_free(ev_item *items, size_t n) {
  for (size_t i = 0; i < n; i++) qv_free(items[i].sse);
  qv_free(items);
}

/* Queues `d` on `st` (under g_mu for a registered stream). */
static void queue_doc(ev_stream *st, const ev_doc *d, double now) {
  sbuf_addf(&st->out, "event: %s\ndata: ", d->kind);
  sbuf_add(&st->out, d->text, d->len);
  sbuf_adds(&st->out, "\n\n");
  st->doc_hash = d->hash;
  st->last_write = now;
}

static void queue_events(ev_stream *st, const ev_item *items, size_t n, double now) {
  for (size_t i = 0; i < n; i++) {
    if (items[i].seq <= st->last_seq) continue;
    sbuf_add(&st->out, items[i].sse, items[i].len);
    st->last_seq = items[i].seq;
    st->last_write = now;
  }
}

/* ---- MHD's side ------------------------------------------------------------------ */

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
  ev_stream *st = cls;
  ssize_t n;
  (void)pos;
  pthread_mutex_lock(&g_mu);
  if (st->sent < st->out.n && !st->out.failed) {
    size_t k = st->out.n - st->sent;
    if (k > max) k = max;
    memcpy(buf, st->out.p + st->sent, k);
    st->sent += k;
    if (st->sent == st->out.n) st->out.n = st->sent = 0; /* reuse the buffer */
    n = (ssize_t)k;
  } else if (st->ended || g_stopping || st->out.failed) {
    st->end_seen = true;
    n = MHD_CONTENT_READER_END_OF_STREAM;
  } else {
    /* Nothing to say: park the connection (not return 0, which MHD would
     * answer by calling again at once). Under g_mu, so that the pump sees
     * `suspended` only once the suspension is done. */
    st->suspended = true;
    MHD_suspend_connection(st->conn);
    n = 0;
  }
  pthread_mutex_unlock(&g_mu);
  return n;
}

static void stream_free(void *cls) {
  ev_stream *st = cls;
  pthread_mutex_lock(&g_mu);
  if (st->slot >= 0 && g_streams[st->slot] == st) {
    g_streams[st->slot] = NULL;
    g_n_streams--;
  }
  pthread_mutex_unlock(&g_mu);
  sbuf_free(&st->out);
  qv_free(st);
}

/* True when the peer of a parked socket closed or reset it. */
static bool hung_up(int fd) {
  if (fd < 0) return false;
  struct pollfd p = {.fd = fd, .events = POLLRDHUP};
  return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

/* ---- the pump ------------------------------------------------------------------- */

static double mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* One tick: build once, queue per stream, then resume outside g_mu. */
static void pump_tick(srv *s, size_t n_streams, uint64_t min_seq) {
  if (!s->cfg.cluster) local_scan(s); /* also with no stream: Last-Event-ID resumes */
  if (n_streams == 0) return;
  ev_doc d = {0};
  build_doc(s, &d);
  size_t n_items = 0;
  ev_item *items = events_after(s, min_seq, &n_items);
  struct MHD_Connection *wake[EV_STREAMS_MAX];
  size_t n_wake = 0;
  double now = mono();
  pthread_mutex_lock(&g_mu);
  for (size_t i = 0; i < EV_STREAMS_MAX; i++) {
    ev_stream *st = g_streams[i];
    if (st == NULL) continue;
    if (d.text && st->doc_hash != d.hash) queue_doc(st, &d, now);
    queue_events(st, items, n_items, now);
    if (st->out.n == st->sent && (now - st->last_write) * 1000 >= EV_HEARTBEAT_MS) {
      sbuf_adds(&st->out, ": heartbeat\n\n");
      st->last_write = now;
    }
    if (st->out.n - st->sent > EV_PENDING_MAX) {
      /* The client does not read: drop what waits and end the stream;
       * EventSource reconnects with Last-Event-ID and loses nothing. */
      qv_log(QV_LOG_WARN, "events", "a client of /cluster/events is %zu bytes behind; closing it",
             st->out.n - st->sent);
      st->out.n = st->sent;
      st->ended = true;
    }
    if (st->suspended && !st->ended && hung_up(st->fd)) st->ended = true;
    if (st->suspended && (st->out.n > st->sent || st->ended)) {
      st->suspended = false;
      wake[n_wake++] = st->conn;
    }
  }
  pthread_mutex_unlock(&g_mu);
  for (size_t i = 0; i < n_wake; i++) MHD_resume_connection(wake[i]);
  items_free(items, n_items);
  qv_free(d.text);
}

static void *pump_main(void *arg) {
  srv *s = arg;
  pthread_mutex_lock(&g_mu);
  while (!g_stopping) {
    size_t n = g_n_streams;
    uint64_t min_seq = UINT64_MAX;
    for (size_t i = 0; i < EV_STREAMS_MAX; i++)
      if (g_streams[i] && g_streams[i]->last_seq < min_seq) min_seq = g_streams[i]->last_seq;
    pthread_mutex_unlock(&g_mu);
    pump_tick(s, n, min_seq == UINT64_MAX ? 0 : min_seq);
    pthread_mutex_lock(&g_mu);
    if (g_stopping) break;
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += EV_TICK_MS * 1000000L;
    until.tv_sec += until.tv_nsec / 1000000000L;
    until.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(&g_cv, &g_mu, &until);
  }
  pthread_mutex_unlock(&g_mu);
  return NULL;
}

/* ---- the endpoint and shutdown ---------------------------------------------------- */

/* The client's last event id: the Last-Event-ID header (EventSource's
 * reconnect) or ?last_event_id= (a page opening a fresh stream); 0 = none
 * or not a number. */
static uint64_t last_event_id(srv_req *r) {
  const char *v = r->conn ? MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Last-Event-ID")
                          : NULL;
  if (v == NULL || !*v) v = srv_query(r, "last_event_id");
  if (v == NULL || *v < '0' || *v > '9') return 0;
  char *end;
  unsigned long long x = strtoull(v, &end, 10);
  return *end == 0 ? (uint64_t)x : 0;
}

static bool full_or_stopping(srv_req *r) {
  pthread_mutex_lock(&g_mu);
  bool stopping = g_stopping, full = g_n_streams >= EV_STREAMS_MAX;
  pthread_mutex_unlock(&g_mu);
  if (stopping) srv_fail(r, 503, "Service unavailable: the server is shutting down");
  else if (full)
    srv_fail(r, 503, "Service unavailable: %d event streams are open, the most this node "
                     "serves; poll GET /cluster/state instead", EV_STREAMS_MAX);
  return stopping || full;
}

void h_cluster_events(srv_req *r) {
  pthread_once(&g_once, init_once);
  if (r->conn == NULL) {
    srv_fail(r, 500, "Service internal error: an event stream needs a connection");
    return;
  }
  if (full_or_stopping(r)) return; /* before the work of a first document */
  ev_stream *st = qv_calloc(1, sizeof *st);
  if (st == NULL) {
    srv_fail(r, 500, "Service internal error: out of memory");
    return;
  }
  sbuf_init(&st->out);
  st->conn = r->conn;
  st->slot = -1;
  const union MHD_ConnectionInfo *ci =
      MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
  st->fd = ci ? ci->connect_fd : -1;
  double now = mono();
  if (!r->s->cfg.cluster) local_scan(r->s);
  ev_doc d = {0};
  build_doc(r->s, &d);
  sbuf_addf(&st->out, ": quiver event stream\nretry: %d\n\n", EV_RETRY_MS);
  if (d.text) queue_doc(st, &d, now);
  qv_free(d.text);
  /* Every event still in the ring: to see whether the client's id is from
   * before a restart of this node (ids then start again at 1). */
  uint64_t after = last_event_id(r);
  size_t n_items = 0;
  ev_item *items = events_after(r->s, 0, &n_items);
  uint64_t head = n_items ? items[n_items - 1].seq : 0;
  st->last_seq = after > head ? 0 : after;
  queue_events(st, items, n_items, now);
  items_free(items, n_items);
  if (st->out.failed) {
    sbuf_free(&st->out);
    qv_free(st);
    srv_fail(r, 500, "Service internal error: out of memory");
    return;
  }
  pthread_mutex_lock(&g_mu);
  bool ok = !g_stopping && g_n_streams < EV_STREAMS_MAX;
  if (ok && !g_pump_on) {
    ok = pthread_create(&g_pump, NULL, pump_main, r->s) == 0;
    g_pump_on = ok;
    if (!ok) qv_log(QV_LOG_ERROR, "events", "cannot start the event stream thread");
  }
  for (int i = 0; ok && i < EV_STREAMS_MAX; i++)
    if (g_streams[i] == NULL) {
      g_streams[i] = st;
      st->slot = i;
      g_n_streams++;
      break;
    }
  if (ok) pthread_cond_signal(&g_cv); /* tick now rather than at the next 250 ms */
  pthread_mutex_unlock(&g_mu);
  if (!ok) {
    sbuf_free(&st->out);
    qv_free(st);
    if (!full_or_stopping(r)) srv_fail(r, 503, "Service unavailable: no event stream thread");
    return;
  }
  srv_raw(r, 200, "text/event-stream", NULL, 0, NULL);
  r->resp.no_store = true;
  r->resp.stream_read = stream_read;
  r->resp.stream_free = stream_free;
  r->resp.stream_cls = st;
}

void clev_stop(void) {
  pthread_once(&g_once, init_once);
  pthread_mutex_lock(&g_mu);
  g_stopping = true;
  pthread_cond_broadcast(&g_cv);
  bool join = g_pump_on;
  g_pump_on = false;
  pthread_mutex_unlock(&g_mu);
  if (join) pthread_join(g_pump, NULL);
  /* Wake every parked stream: its reader now ends it. Streams not parked
   * end at their next read; a client that does not read keeps its stream
   * until the drain gives up (http.c), which is why this wait is bounded. */
  double deadline = mono() + EV_STOP_WAIT_MS / 1000.0;
  for (;;) {
    struct MHD_Connection *wake[EV_STREAMS_MAX];
    size_t n_wake = 0, open = 0;
    pthread_mutex_lock(&g_mu);
    for (size_t i = 0; i < EV_STREAMS_MAX; i++) {
      ev_stream *st = g_streams[i];
      if (st == NULL || st->end_seen) continue;
      open++;
      if (st->suspended) {
        st->suspended = false;
        wake[n_wake++] = st->conn;
      }
    }
    pthread_mutex_unlock(&g_mu);
    for (size_t i = 0; i < n_wake; i++) MHD_resume_connection(wake[i]);
    if (open == 0 || mono() > deadline) break;
    struct timespec tick = {0, 10 * 1000 * 1000};
    nanosleep(&tick, NULL);
  }
  pthread_mutex_lock(&g_lev_mu);
  free_names(g_seen, g_n_seen);
  g_seen = NULL;
  g_n_seen = 0;
  g_have_seen = false;
  g_lev_closed = true;
  pthread_mutex_unlock(&g_lev_mu);
}
