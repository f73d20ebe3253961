/* routes_cluster.c: `quiver serve --cluster` — routing of requests on
 * distributed collections, the write path, and the node-to-node shard
 * operations (reads: cluster_read.c; collection requests: cluster_coll.c;
 * how a write is cut per shard: cluster_split.c; the write chain and
 * catch-up: cluster_chain.c, cluster_xfer.c).
 *
 * A distributed collection `c` (its config and shard map live in etcd, see
 * src/cluster/node.h) is stored as one ordinary local collection per shard
 * copy this node holds, named `c.s<k>`; user collection names ending in
 * `.s<digits>` are refused in cluster mode so they cannot collide. Every
 * shard operation is the normal single-node handler run on that local
 * collection (sub_run), so filters, payloads and indexes behave as on one
 * node.
 *
 *   write  any node --POST /internal/shards/c/k/<op>?epoch=E--> primary
 *          primary, under the shard lock (cluster_int.h): applies locally,
 *          logs it in the shard's write chain, then
 *          --.../repl_<op>?epoch&term&seq&from&at&prev[&xfer]--> every other
 *          insync and partial copy; answers 200 only when every insync copy
 *          applied it (a copy that missed it is reported stale)
 *   read   any node --.../search|query|scroll|...--> one insync copy per
 *          shard (cluster_read.c)
 *
 * Fencing: a copy takes a message only from its shard's primary at the
 * shard's current term, in the primary's (term, seq) order; a node behind
 * the sender's epoch waits for its watch (bounded) first. A primary takes
 * writes only for shards it leads in its own map, and only while its lease
 * is safe (mship_is_fenced). Routers retry refused or failed writes until
 * the controller has repaired the map (TTL + 10 s), so a write is
 * acknowledged only when every insync copy of its shard has it.
 *
 * Not owned here: the map itself and the controller (src/cluster/node.c,
 * plan.c), the transfer source and shard locks (cluster_xfer.c), the state
 * documents (cluster_state.c).
 * Without --cluster, cluster_route returns false and nothing here runs but
 * the single-node answers of /cluster/state and /collections/{c}/cluster. */
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/log.h"
#include "cluster/cluster_http.h"
#include "cluster/node.h"
#include "cluster/ring.h"
#include "server/cluster_int.h"

#define WRITE_RETRY_MS 100
/* Node-to-node calls are bounded so that a chain of HTTP workers blocked
 * on each other (MHD's pool threads multiplex connections, so a handler
 * that waits can hold up an unrelated request queued on its thread) ends
 * in a retry instead of a hang. A write to a primary is retried by the
 * router; a read goes to the next copy. */
#define WRITE_CALL_MS_MAX 30000
/* A copy that does not answer a replicated write within this fails the
 * write (the router retries); the shard lock is held meanwhile. */
#define REPL_TIMEOUT_MS 3000

/* Published once joined (release) and read by request threads (acquire)
 * while the main thread may still be joining: every request path reads it
 * through clr_node() before anything else, which orders what boot set up
 * before it (g_api_key) too. */
static cl_node *g_node;
static char *g_api_key;
static pthread_mutex_t g_shard_mu = PTHREAD_MUTEX_INITIALIZER;


typedef clr_reply reply;

static void reply_clear(reply *p) {
  qv_free(p->body);
  memset(p, 0, sizeof *p);
}

cl_node *clr_node(void) { return __atomic_load_n(&g_node, __ATOMIC_ACQUIRE); }
const char *clr_api_key(void) { return g_api_key; }
void clr_reply_clear(clr_reply *p) { reply_clear(p); }

static void reply_err(reply *p, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void clr_reply_err(reply *p, unsigned status, const char *fmt, ...) {
  char msg[600];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  reply_err(p, status, "%s", msg);
}

static void reply_err(reply *p, unsigned status, const char *fmt, ...) {
  char msg[600];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  reply_clear(p);
  json_t *o = json_pack("{s:{s:s}, s:f}", "status", "error", msg, "time", 0.0);
  p->body = o ? jsonio_dumps(o, &p->len) : NULL;
  json_decref(o);
  p->status = p->body ? status : 500;
}

static double mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static void shard_name(const char *coll, uint32_t k, char *buf, size_t cap) {
  snprintf(buf, cap, "%s.s%u", coll, k);
}

void clr_shard_name(const char *coll, uint32_t k, char *buf, size_t cap) {
  shard_name(coll, k, buf, cap);
}

/* Runs a single-node handler on local collection `coll` with `body`
 * (NUL-terminated) and hands back its response. */
static void sub_run2(srv *s, srv_handler fn, const char *coll, const char *arg1,
                     const char *body, size_t len, reply *out) {
  srv_req q;
  memset(&q, 0, sizeof q);
  q.s = s;
  q.method = "POST";
  q.route = -1;
  q.t0 = srv_now();
  q.args[0] = qv_strdup(coll);
  q.args[1] = arg1 ? qv_strdup(arg1) : NULL;
  q.body = body;
  q.body_len = len;
  reply_clear(out);
  if (q.args[0] == NULL || (arg1 && q.args[1] == NULL)) {
    qv_free(q.args[0]);
    qv_free(q.args[1]);
    reply_err(out, 500, "Service internal error: out of memory");
    return;
  }
  fn(&q);
  out->status = q.resp.status ? q.resp.status : 500;
  out->body = qv_strndup(q.resp.body ? q.resp.body : "", q.resp.body ? q.resp.len : 0);
  out->len = out->body ? q.resp.len : 0;
  if (q.resp.free_fn) q.resp.free_fn(q.resp.body);
  if (q.resp.is_file) close(q.resp.fd);
  qv_free(q.args[0]);
  qv_free(q.args[1]);
  qv_free(q.path);
  jsonio_vecs_free(&q.vecs);
}

static void sub_run(srv *s, srv_handler fn, const char *coll, const char *body, size_t len,
                    reply *out) {
  sub_run2(s, fn, coll, NULL, body, len, out);
}

/* Applies write operation `op` (cluster_split.c) to local collection sn. */
static void apply_op(srv *s, int op, const char *sn, const char *body, size_t len, reply *out) {
  const char *field = NULL;
  json_t *o = NULL;
  if (op == CLW_INDEX_DELETE) { /* the field travels in the body, the handler reads the path */
    o = json_loadb(body, len, 0, NULL);
    field = json_string_value(json_object_get(o, "field_name"));
    if (field == NULL) {
      json_decref(o);
      reply_err(out, 400, "Wrong input: index_delete needs {\"field_name\": ...}");
      return;
    }
  }
  sub_run2(s, clw_handler(op), sn, field, body, len, out);
  json_decref(o);
}

/* Creates the local collection of shard k from the stored params unless it
 * exists. False with the error in *out. */
static bool ensure_shard(srv *s, const cl_coll *c, uint32_t k, reply *out) {
  char sn[CL_NAME_MAX + 16];
  shard_name(c->name, k, sn, sizeof sn);
  pthread_mutex_lock(&g_shard_mu);
  qv_collection *h = NULL;
  bool ok = qv_collection_get(s->db, sn, &h, NULL) == QV_OK;
  if (ok) qv_collection_release(h);
  if (ok && !clc_copy_current(s, c, k)) {
    /* Left by an earlier collection of the same name (deleted while this
     * node was away): never serve or extend it. */
    qv_log(QV_LOG_INFO, "cluster", "dropping %s: made for another incarnation of `%s`", sn,
           c->name);
    clg_remove(s, c->name, k);
    qv_collection_drop(s->db, sn, NULL);
    ok = false;
  }
  if (!ok) {
    clg_forget(s, c->name, k); /* a new, empty copy: its marker says so first */
    sub_run(s, h_coll_create, sn, c->params, strlen(c->params), out);
    ok = out->status == 200 || out->status == 409;
    if (out->status == 200) clc_copy_mark(s, c, k);
    if (ok) qv_log(QV_LOG_INFO, "cluster", "created local shard copy %s", sn);
  }
  pthread_mutex_unlock(&g_shard_mu);
  return ok;
}

static const cl_replica *my_copy(const cl_shard *sh) {
  for (uint32_t i = 0; i < sh->n_reps; i++)
    if (!strcmp(sh->reps[i].node, cl_node_id(g_node))) return &sh->reps[i];
  return NULL;
}

const cl_replica *clr_my_copy(const cl_shard *sh) { return my_copy(sh); }

void clr_sub_run(srv *s, srv_handler fn, const char *coll, const char *body, size_t len,
                 clr_reply *out) {
  sub_run(s, fn, coll, body, len, out);
}

bool clr_ensure_shard(srv *s, const cl_coll *c, uint32_t k, clr_reply *out) {
  return ensure_shard(s, c, k, out);
}

/* The map of `name` at `epoch` or later (waiting briefly when this node is
 * behind); with `exact`, a newer map refuses (409). False with 404/409/503
 * in *out. */
static bool map_at(const char *name, uint32_t k, int64_t epoch, bool exact, cl_coll *c,
                   reply *out) {
  if (cl_coll_get(g_node, name, c) != QV_OK) {
    reply_err(out, 404, "Not found: Collection `%s` doesn't exist!", name);
    return false;
  }
  if (epoch > c->epoch || !c->has_map) {
    cl_wait_map(g_node, name, epoch, 2000);
    cl_coll_free(c);
    if (cl_coll_get(g_node, name, c) != QV_OK || !c->has_map) {
      reply_err(out, 503, "Service unavailable: no shard map of `%s` yet", name);
      return false;
    }
  }
  if (k >= c->shard_number) {
    reply_err(out, 404, "Not found: shard %u of `%s`", k, name);
    return false;
  }
  if (epoch > c->epoch || (exact && epoch != 0 && epoch != c->epoch)) {
    reply_err(out, epoch < c->epoch ? 409 : 503,
              "Stale shard map: the request was routed at epoch %lld, this node is at %lld",
              (long long)epoch, (long long)c->epoch);
    return false;
  }
  return true;
}

/* What a shard operation says about its sender (the query string): the
 * map and term it was sent at, its message number, the transfer it belongs
 * to, and its place in the shard's write chain (cluster_chain.c). */
typedef struct wmsg {
  int64_t epoch, xfer;
  uint64_t term, seq;
  const char *from;
  bool has_at, chained; /* at given; at and prev given */
  cl_link at, prev;
  bool root_empty;
} wmsg;

enum {
  ROLE_PRIMARY,    /* a client's write, to the shard's primary */
  ROLE_COPY,       /* repl_<op>: the primary's write, to a copy */
  ROLE_XFER_PROBE, /* the primary asks a partial copy for its chain marker */
  ROLE_XFER_BEGIN, /* a full transfer starts: the copy is emptied */
  ROLE_XFER_PUT,   /* a page of a full transfer */
  ROLE_XFER_END    /* a full transfer ended at the chain link `at` */
};

static void reply_ok(reply *out, json_t *result) {
  json_t *o = json_pack("{s:o, s:s, s:f}", "result", result ? result : json_true(), "status",
                        "ok", "time", 0.0);
  reply_clear(out);
  out->body = o ? jsonio_dumps(o, &out->len) : NULL;
  json_decref(o);
  out->status = out->body ? 200 : 500;
}

/* The primary's part of a write, shard lock held: apply, log it in the
 * shard's chain, then every other copy (insync and partial) in parallel. */
static void primary_write(srv *s, const cl_coll *c, uint32_t k, int op, const char *body,
                          size_t len, reply *out) {
  const cl_shard *sh = &c->shards[k];
  char sn[CL_NAME_MAX + 16];
  shard_name(c->name, k, sn, sizeof sn);
  /* write_consistency_factor: every insync copy must apply a write (that
   * is what lets any of them be promoted); W only says how few insync
   * copies the shard may be down to and still take writes. */
  uint32_t insync = 0;
  for (uint32_t i = 0; i < sh->n_reps; i++) insync += sh->reps[i].state == CL_INSYNC;
  if (insync < c->wcf) {
    reply_err(out, 503, "Service unavailable: shard %u of `%s` has %u insync copies, "
              "write_consistency_factor is %u", k, c->name, insync, c->wcf);
    return;
  }
  uint64_t seq = clx_next_seq(c->name, k, sh->term);
  clg_lead(s, c->name, k, sh->term, seq);
  apply_op(s, op, sn, body, len, out);
  if (out->status != 200) return;
  cl_link at = {sh->term, seq}, prev;
  bool root_empty;
  clg_append(s, c->name, k, at, op, body, len, &prev, &root_empty);
  cl_call calls[CL_RF_MAX];
  const cl_replica *to[CL_RF_MAX];
  size_t n = 0;
  for (uint32_t i = 0; i < sh->n_reps; i++) {
    const cl_replica *rp = &sh->reps[i];
    char addr[300];
    if (rp->state == CL_DEAD || !strcmp(rp->node, cl_node_id(g_node))) continue;
    /* A copy being caught up from the chain gets this write from the
     * backlog, in order, after the ones it missed. */
    if (rp->state == CL_PARTIAL && clx_forward_skip(c->name, k, rp->node, rp->xfer)) continue;
    if (!cl_node_iaddr(g_node, rp->node, addr, sizeof addr)) {
      if (rp->state == CL_PARTIAL && !clx_partial_failed(c->name, k, rp->node, rp->xfer)) continue;
      reply_err(out, 503, "Service unavailable: copy %s of shard %u is not live", rp->node, k);
      return;
    }
    memset(&calls[n], 0, sizeof calls[n]);
    snprintf(calls[n].url, sizeof calls[n].url,
             "http://%s/internal/shards/%s/%u/repl_%s?epoch=%lld&term=%llu&seq=%llu&from=%s"
             "&xfer=%lld&at=%llu.%llu&prev=%llu.%llu&root_empty=%d",
             addr, c->name, k, clw_name(op), (long long)c->epoch, (unsigned long long)sh->term,
             (unsigned long long)seq, cl_node_id(g_node),
             (long long)(rp->state == CL_PARTIAL ? rp->xfer : 0), (unsigned long long)at.term,
             (unsigned long long)at.seq, (unsigned long long)prev.term,
             (unsigned long long)prev.seq, root_empty ? 1 : 0);
    calls[n].body = body;
    calls[n].len = len;
    calls[n].api_key = g_api_key;
    to[n++] = rp;
  }
  cl_http_run(calls, n, REPL_TIMEOUT_MS);
  for (size_t i = 0; i < n; i++) {
    bool fails = calls[i].status != 200 &&
                 (to[i]->state == CL_INSYNC ||
                  clx_partial_failed(c->name, k, to[i]->node, to[i]->xfer));
    /* An insync copy that did not apply a write this primary applied, or
     * whose chain does not lead to it (412), differs from this primary:
     * have the controller mark it dead (it comes back by a transfer)
     * instead of leaving the copies apart. A 409 is a copy that knows a
     * newer map (this primary may be deposed): not reported. */
    if (fails && to[i]->state == CL_INSYNC && calls[i].status != 409) {
      qv_err err = {0};
      if (cl_stale_publish(g_node, c->name, k, to[i]->node, sh->term, &err) != QV_OK)
        qv_log(QV_LOG_WARN, "cluster", "reporting a stale copy of %s shard %u: %s", c->name, k,
               err.msg);
    }
    if (fails && out->status == 200)
      reply_err(out, calls[i].status == 409 ? 409 : 503,
                "Service unavailable: a copy of shard %u did not apply the write (%u %s)", k,
                calls[i].status, calls[i].status ? calls[i].resp : calls[i].err);
    cl_call_clear(&calls[i]);
  }
}

/* Creates the payload indexes a transfer's source has (xfer_begin's body:
 * {"payload_schema": {field: {"data_type", "params"?}}}). */
static bool make_indexes(srv *s, const char *sn, const char *body, size_t len, reply *out) {
  json_t *o = json_loadb(body, len, 0, NULL);
  const char *field;
  json_t *d;
  bool ok = true;
  json_object_foreach(json_object_get(o, "payload_schema"), field, d) {
    json_t *params = json_object_get(d, "params");
    json_t *schema = json_is_object(params) ? json_incref(params)
                                            : json_incref(json_object_get(d, "data_type"));
    json_t *req = json_pack("{s:s, s:o}", "field_name", field, "field_schema", schema);
    size_t rlen = 0;
    char *text = req ? jsonio_dumps(req, &rlen) : NULL;
    json_decref(req);
    if (text) sub_run(s, h_index_create, sn, text, rlen, out);
    qv_free(text);
    if (text == NULL || out->status != 200) {
      ok = false;
      break;
    }
  }
  json_decref(o);
  return ok;
}

/* A shard operation of `role` on this node. Fencing: a copy takes a
 * message only from the shard's primary at the shard's current term (a
 * deposed primary's late writes are refused), in (term, seq) order, and a
 * replicated write only when it follows the copy's place in the chain. */
static void shard_write(srv *s, const char *name, uint32_t k, int op, int role, const wmsg *m,
                        const char *body, size_t len, reply *out) {
  cl_coll c;
  memset(&c, 0, sizeof c);
  if (cl_node_fenced(g_node)) {
    reply_err(out, 503, "Service unavailable: this node lost its etcd lease (fenced)");
    return;
  }
  if (role == ROLE_PRIMARY) clx_lock(name, k);
  if (!map_at(name, k, m->epoch, false, &c, out)) goto done;
  const cl_shard *sh = &c.shards[k];
  const cl_replica *mine = my_copy(sh);
  bool is_primary = !strcmp(sh->primary, cl_node_id(g_node));
  if (role == ROLE_PRIMARY) {
    if (!is_primary || cl_node_fenced(g_node)) {
      reply_err(out, 409, "Stale shard map: this node is not the primary of shard %u of `%s` at "
                "epoch %lld", k, name, (long long)c.epoch);
      goto done;
    }
    if (ensure_shard(s, &c, k, out)) primary_write(s, &c, k, op, body, len, out);
    goto done;
  }
  bool ok_state = mine && (role == ROLE_COPY ? mine->state == CL_INSYNC ||
                                                   (mine->state == CL_PARTIAL && mine->xfer == m->xfer)
                                             : mine->state == CL_PARTIAL && mine->xfer == m->xfer);
  if (is_primary || !ok_state || m->from == NULL || strcmp(m->from, sh->primary) ||
      m->term != sh->term) {
    reply_err(out, 409, "Stale shard map: refused %s of shard %u of `%s` from %s at term %llu "
              "(this node: epoch %lld, primary %s, term %llu, copy %s)",
              role == ROLE_COPY ? "a replicated write" : "a transfer step", k, name,
              m->from ? m->from : "?", (unsigned long long)m->term, (long long)c.epoch,
              sh->primary, (unsigned long long)sh->term,
              mine == NULL ? "none" : mine->state == CL_INSYNC ? "insync"
                                      : mine->state == CL_PARTIAL ? "partial" : "dead");
    goto done;
  }
  char sn[CL_NAME_MAX + 16];
  shard_name(name, k, sn, sizeof sn);
  /* Every message of the primary to a copy — replicated writes, transfer
   * steps — draws from the shard's one sequence: one that arrives after a
   * newer one (its sender timed out and moved on) is refused. */
  if (!clx_seq_fresh(name, k, m->term, m->seq)) {
    reply_err(out, 409, "Stale message: shard %u of `%s` already applied term %llu seq %llu", k,
              name, (unsigned long long)m->term, (unsigned long long)m->seq);
    goto done;
  }
  if (role == ROLE_XFER_PROBE) {
    /* What this copy holds of the chain, if it holds its local copy. */
    qv_collection *h = NULL;
    cl_link at;
    bool have = qv_collection_get(s->db, sn, &h, NULL) == QV_OK;
    if (have) qv_collection_release(h);
    bool valid = have && clg_marker(s, name, k, &at);
    clx_seq_applied(name, k, m->term, m->seq);
    reply_ok(out, valid ? json_pack("{s:b, s:I, s:I}", "valid", 1, "term", (json_int_t)at.term,
                                    "seq", (json_int_t)at.seq)
                        : json_pack("{s:b}", "valid", 0));
    goto done;
  }
  if (role == ROLE_XFER_END) {
    if (!m->has_at) {
      reply_err(out, 400, "Wrong input: xfer_end needs at=TERM.SEQ");
      goto done;
    }
    clg_set(s, name, k, m->at);
    clx_seq_applied(name, k, m->term, m->seq);
    reply_ok(out, NULL);
    goto done;
  }
  if (role == ROLE_XFER_BEGIN) {
    /* A fresh copy: whatever an earlier attempt or incarnation left goes;
     * the marker says "being refilled" before the content changes. */
    clg_break(s, name, k);
    pthread_mutex_lock(&g_shard_mu);
    qv_collection_drop(s->db, sn, NULL);
    pthread_mutex_unlock(&g_shard_mu);
    if (ensure_shard(s, &c, k, out)) {
      clg_break(s, name, k);
      if (make_indexes(s, sn, body, len, out)) {
        clx_seq_applied(name, k, m->term, m->seq);
        reply_ok(out, NULL);
      }
    }
    goto done;
  }
  if (!ensure_shard(s, &c, k, out)) goto done;
  clg_verdict v = CLG_UNKNOWN;
  if (role == ROLE_COPY) {
    v = m->chained ? clg_check(s, name, k, m->prev, m->root_empty) : CLG_UNKNOWN;
    if (v == CLG_BROKEN) {
      char mark[64];
      clg_describe(s, name, k, mark, sizeof mark);
      reply_err(out, 412, "Chain broken: the copy of shard %u of `%s` on this node holds the "
                "writes up to %s; the primary's write follows (%llu, %llu)", k, name, mark,
                (unsigned long long)m->prev.term, (unsigned long long)m->prev.seq);
      goto done;
    }
  }
  apply_op(s, op, sn, body, len, out);
  if (out->status == 200) {
    clx_seq_applied(name, k, m->term, m->seq);
    if (role == ROLE_COPY) clg_applied(s, name, k, m->chained ? m->at : (cl_link){0, 0}, v);
  }
done:
  if (role == ROLE_PRIMARY) clx_unlock(name, k);
  cl_coll_free(&c);
}

bool clr_map_at(const char *name, uint32_t k, int64_t epoch, cl_coll *c, clr_reply *out) {
  return map_at(name, k, epoch, false, c, out);
}

static bool parse_link(const char *q, cl_link *out) {
  if (q == NULL) return false;
  char *end;
  out->term = strtoull(q, &end, 10);
  if (*end != '.') return false;
  out->seq = strtoull(end + 1, &end, 10);
  return *end == 0;
}

void h_shard_internal(srv_req *r) {
  if (clr_node() == NULL) {
    srv_fail(r, 404, "Not found: this node is not in cluster mode");
    return;
  }
  char *end;
  unsigned long k = strtoul(r->args[1], &end, 10);
  const char *op = r->args[2], *q;
  wmsg m = {0};
  m.epoch = (q = srv_query(r, "epoch")) ? strtoll(q, NULL, 10) : 0;
  m.term = (q = srv_query(r, "term")) ? strtoull(q, NULL, 10) : 0;
  m.seq = (q = srv_query(r, "seq")) ? strtoull(q, NULL, 10) : 0;
  m.xfer = (q = srv_query(r, "xfer")) ? strtoll(q, NULL, 10) : 0;
  m.from = srv_query(r, "from");
  m.has_at = parse_link(srv_query(r, "at"), &m.at);
  m.chained = m.has_at && parse_link(srv_query(r, "prev"), &m.prev);
  m.root_empty = (q = srv_query(r, "root_empty")) && !strcmp(q, "1");
  if (*end != 0 || k >= CL_SHARDS_MAX) {
    srv_fail(r, 404, "Not found: shard %s", r->args[1]);
    return;
  }
  reply out = {0};
  int wop;
  static const char *const xfer_ops[] = {"xfer_probe", "xfer_begin", "xfer_put", "xfer_end"};
  static const int xfer_roles[] = {ROLE_XFER_PROBE, ROLE_XFER_BEGIN, ROLE_XFER_PUT, ROLE_XFER_END};
  int xrole = -1;
  for (int i = 0; i < 4; i++)
    if (!strcmp(op, xfer_ops[i])) xrole = xfer_roles[i];
  if ((wop = clw_parse(op)) >= 0)
    shard_write(r->s, r->args[0], (uint32_t)k, wop, ROLE_PRIMARY, &m, r->body, r->body_len, &out);
  else if (!strncmp(op, "repl_", 5) && (wop = clw_parse(op + 5)) >= 0)
    shard_write(r->s, r->args[0], (uint32_t)k, wop, ROLE_COPY, &m, r->body, r->body_len, &out);
  else if (xrole >= 0)
    shard_write(r->s, r->args[0], (uint32_t)k, CLW_UPSERT, xrole, &m, r->body, r->body_len,
                &out);
  else if (clr_shard_read(r->s, r->args[0], (uint32_t)k, op, r->body, r->body_len, &out))
    ;
  else {
    srv_fail(r, 404, "Not found: shard operation %s", op);
    return;
  }
  srv_raw(r, out.status, "application/json", out.body, out.len, qv_free);
}

/* ---- writes through any node ---------------------------------------------------- */

static bool retryable(unsigned status) {
  return status == 0 || status == 409 || status == 502 || status == 503 || status == 504;
}

/* Sends texts[k] (NULL: nothing for shard k) to each shard's primary,
 * retrying refused and failed parts until the deadline. */
static bool dispatch_writes(srv_req *r, const char *name, char **texts, size_t *lens,
                            uint32_t n_shards, int op) {
  bool *pending = qv_calloc(n_shards, sizeof *pending);
  cl_call *calls = qv_calloc(n_shards, sizeof *calls);
  uint32_t *which = qv_calloc(n_shards, sizeof *which);
  bool ok = false;
  if (!pending || !calls || !which) {
    srv_fail(r, 500, "Service internal error: out of memory");
    goto out;
  }
  for (uint32_t k = 0; k < n_shards; k++) pending[k] = texts[k] != NULL;
  double deadline = mono_ms() + cl_node_ttl_s(g_node) * 1000.0 + 10000.0;
  unsigned round = 0;
  char last[700] = "";
  for (;;) {
    cl_coll c;
    if (cl_coll_get(g_node, name, &c) != QV_OK || !c.has_map) {
      cl_coll_free(&c);
      srv_fail(r, 404, "Not found: Collection `%s` doesn't exist!", name);
      goto out;
    }
    size_t n = 0;
    bool left = false;
    for (uint32_t k = 0; k < n_shards; k++) {
      if (!pending[k]) continue;
      const char *prim = c.shards[k].primary;
      char addr[300];
      if (!strcmp(prim, cl_node_id(g_node))) {
        reply rp = {0};
        wmsg m = {.epoch = c.epoch};
        shard_write(r->s, name, k, op, ROLE_PRIMARY, &m, texts[k], lens[k], &rp);
        if (rp.status == 200) pending[k] = false;
        else if (!retryable(rp.status)) {
          srv_raw(r, rp.status, "application/json", rp.body, rp.len, qv_free);
          cl_coll_free(&c);
          goto out;
        } else snprintf(last, sizeof last, "shard %u: %s", k, rp.body ? rp.body : "");
        reply_clear(&rp);
      } else if (cl_node_iaddr(g_node, prim, addr, sizeof addr)) {
        memset(&calls[n], 0, sizeof calls[n]);
        snprintf(calls[n].url, sizeof calls[n].url,
                 "http://%s/internal/shards/%s/%u/%s?epoch=%lld", addr, name, k, clw_name(op),
                 (long long)c.epoch);
        calls[n].body = texts[k];
        calls[n].len = lens[k];
        calls[n].api_key = g_api_key;
        which[n++] = k;
      } else {
        snprintf(last, sizeof last, "shard %u: its primary %s is not live", k, prim);
      }
    }
    cl_coll_free(&c);
    /* A primary that does not answer within the lease TTL may be paused and
     * replaced: ask again with the current map; each round waits longer so
     * that a slow, large write still gets through. */
    uint32_t wait_ms = cl_node_ttl_s(g_node) * 1000u << (round < 4 ? round : 4);
    cl_http_run(calls, n, wait_ms < WRITE_CALL_MS_MAX ? wait_ms : WRITE_CALL_MS_MAX);
    round++;
    bool failed = false;
    for (size_t i = 0; i < n; i++) {
      if (calls[i].status == 200) pending[which[i]] = false;
      else if (!retryable(calls[i].status) && !failed) {
        failed = true;
        srv_raw(r, calls[i].status, "application/json", calls[i].resp, calls[i].resp_len,
                qv_free);
        calls[i].resp = NULL;
      } else {
        snprintf(last, sizeof last, "shard %u: %s", which[i],
                 calls[i].status ? calls[i].resp : calls[i].err);
      }
      cl_call_clear(&calls[i]);
    }
    if (failed) goto out;
    for (uint32_t k = 0; k < n_shards; k++) left = left || pending[k];
    if (!left) {
      ok = true;
      goto out;
    }
    if (mono_ms() > deadline) {
      srv_fail(r, 503, "Service unavailable: write not acknowledged by every copy: %s", last);
      goto out;
    }
    sleep_ms(WRITE_RETRY_MS);
  }
out:
  qv_free(pending);
  qv_free(calls);
  qv_free(which);
  return ok;
}

/* One write operation on every shard it concerns; false when answered
 * with an error. */
static bool write_parts(srv_req *r, const cl_coll *c, int op, const json_t *body) {
  uint32_t ns = c->shard_number;
  json_t **parts = qv_calloc(ns, sizeof *parts);
  char **texts = qv_calloc(ns, sizeof *texts);
  size_t *lens = qv_calloc(ns, sizeof *lens);
  bool ok = false;
  if (!parts || !texts || !lens) {
    srv_fail(r, 500, "Service internal error: out of memory");
    goto out;
  }
  if (!clw_split(r, op, body, ns, parts)) goto out;
  for (uint32_t k = 0; k < ns; k++)
    if (parts[k] && (texts[k] = jsonio_dumps(parts[k], &lens[k])) == NULL) {
      srv_fail(r, 500, "Service internal error: out of memory");
      goto out;
    }
  ok = dispatch_writes(r, c->name, texts, lens, ns, op);
out:
  for (uint32_t k = 0; parts && k < ns; k++) json_decref(parts[k]);
  for (uint32_t k = 0; texts && k < ns; k++) qv_free(texts[k]);
  qv_free(parts);
  qv_free(texts);
  qv_free(lens);
  return ok;
}

/* POST .../points/batch: the operations in order, each as its own write
 * (so one that fails leaves the earlier ones applied on every copy and the
 * later ones on none, as on a single node). */
static void batch_op(srv_req *r, const cl_coll *c) {
  if (!srv_check_wait(r)) return;
  json_t *body = srv_body(r, false);
  if (body == NULL) return;
  const json_t *list = json_object_get(body, "operations");
  json_t *results = json_array();
  if (!json_is_array(list)) {
    srv_format_err(r, list ? "operations: expected a sequence" : "missing field `operations`");
    goto out;
  }
  const char *w = srv_query(r, "wait");
  for (size_t i = 0; i < json_array_size(list); i++) {
    json_t *one = json_array_get(list, i);
    const char *kind = NULL;
    json_t *arg = NULL;
    if (json_is_object(one) && json_object_size(one) == 1) {
      void *it = json_object_iter(one);
      kind = json_object_iter_key(it);
      arg = json_object_iter_value(it);
    }
    int op = kind ? clw_of_batch_name(kind) : -1;
    if (op < 0 || !json_is_object(arg)) {
      srv_format_err(r, "operations[%zu]: expected an object with one operation (upsert, "
                     "delete, set_payload, overwrite_payload, delete_payload, clear_payload, "
                     "update_vectors, delete_vectors)", i);
      goto out;
    }
    if (!write_parts(r, c, op, arg)) goto out;
    uint64_t id = __atomic_add_fetch(&r->s->op_seq, 1, __ATOMIC_RELAXED);
    json_array_append_new(results,
                          json_pack("{s:o, s:s}", "operation_id", jsonio_u64(id), "status",
                                    w && !strcmp(w, "true") ? "completed" : "acknowledged"));
  }
  srv_ok(r, json_incref(results));
out:
  json_decref(results);
  json_decref(body);
}

static void write_op(srv_req *r, const cl_coll *c, int op) {
  if (!srv_check_wait(r)) return;
  json_t *body = op == CLW_INDEX_DELETE ? json_pack("{s:s}", "field_name", r->args[1])
                                        : srv_body(r, false);
  if (body == NULL) {
    if (op == CLW_INDEX_DELETE) srv_fail(r, 500, "Service internal error: out of memory");
    return;
  }
  if (write_parts(r, c, op, body)) srv_update_ok(r);
  json_decref(body);
}

bool cluster_route(srv_req *r) {
  if (r->route < 0) return false;
  if (clr_node() == NULL && r->s->cfg.cluster) {
    /* Still joining (registration waits for a previous incarnation's lease):
     * a distributed collection must not be answered as a local one. */
    const char *pat = router_routes[r->route].pattern;
    if (!strncmp(pat, "/collections", 12) || !strncmp(pat, "/internal", 9) ||
        !strcmp(pat, "/cluster")) {
      srv_fail(r, 503, "Service unavailable: this node is still joining the cluster");
      return true;
    }
  }
  if (clr_node() == NULL) return false;
  srv_handler fn = router_routes[r->route].fn;
  if (fn == h_cluster) {
    clr_cluster_info(r);
    return true;
  }
  if (clc_route_global(r)) return true;
  if (strncmp(router_routes[r->route].pattern, "/collections/{name}", 19) != 0 ||
      fn == h_coll_cluster || r->args[0] == NULL)
    return false;
  cl_coll c;
  if (cl_coll_get(g_node, r->args[0], &c) != QV_OK) return false; /* a local collection */
  int wop = clw_of_handler(fn);
  if (wop >= 0) write_op(r, &c, wop);
  else if (fn == h_batch) batch_op(r, &c);
  else if (clr_read_route(r, &c) || clc_route(r, &c))
    ;
  else
    srv_fail(r, 501, "Not implemented in cluster mode yet: %s %s (`%s` is a distributed "
                     "collection; see docs/cluster.md)", r->method, router_routes[r->route].pattern,
             r->args[0]);
  cl_coll_free(&c);
  return true;
}

/* ---- joining ------------------------------------------------------------------------ */

void cluster_shutdown(void) {
  cln_stop();
  clx_stop();
  cl_node_stop(g_node);
  __atomic_store_n(&g_node, NULL, __ATOMIC_RELEASE);
  qv_free(g_api_key);
  g_api_key = NULL;
}

/* serve() passes &s->cfg (http.c); the transfer thread needs the server
 * (its database) before any request arrives. */
static srv *srv_of_config(const srv_config *cfg) {
  return (srv *)((char *)cfg - offsetof(srv, cfg));
}

int cluster_boot(const srv_config *cfg, FILE *errf) {
  if (clr_node() != NULL) return -1;
  if (cfg->etcd[0] == 0) {
    fprintf(errf, "serve: --cluster needs --etcd URL[,URL...]\n");
    return 2;
  }
  char addr[300];
  if (cfg->node_addr[0]) snprintf(addr, sizeof addr, "%s", cfg->node_addr);
  else if (cfg->port == 0) {
    fprintf(errf, "serve: --cluster with --port 0 needs --node-addr HOST:PORT\n");
    return 2;
  } else snprintf(addr, sizeof addr, "%s:%llu", cfg->host, (unsigned long long)cfg->port);
  /* The node's threads must not take SIGTERM/SIGINT: http.c waits for
   * them with sigwait in the main thread (it blocks them only later). */
  sigset_t stop, old;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, &old);
  /* Node-to-node calls get their own listener (cluster_net.c), advertised
   * with the host peers already dial. */
  char host[300], iaddr[320] = "";
  snprintf(host, sizeof host, "%s", addr);
  char *colon = strrchr(host, ':');
  if (colon) *colon = 0;
  if (!cln_start(srv_of_config(cfg), host, iaddr, sizeof iaddr)) iaddr[0] = 0;
  cl_node_opts o = {.endpoints = cfg->etcd, .node_addr = addr, .data_dir = cfg->data_dir,
                    .ttl_s = (uint32_t)cfg->cluster_ttl_s,
                    .move_delay_s = (uint32_t)cfg->cluster_move_delay_s,
                    .internal_addr = iaddr};
  g_api_key = qv_strdup(cfg->api_key);
  qv_err err = {0};
  cl_node *node = NULL;
  qv_rc rc = cl_node_start(&o, &node, &err);
  if (rc == QV_OK) __atomic_store_n(&g_node, node, __ATOMIC_RELEASE);
  if (rc == QV_OK && !clx_start(srv_of_config(cfg))) rc = QV_EIO;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != QV_OK) {
    cln_stop();
    fprintf(errf, "serve: cannot join the cluster at %s: %s\n", cfg->etcd, err.msg);
    return 1;
  }
  return -1;
}
