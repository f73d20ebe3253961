/* routes_cluster.c: `quiver serve --cluster` — the REST endpoints of
 * distributed collections and the node-to-node shard operations.
 *
 * A distributed collection `c` (its config and shard map live in etcd, see
 * src/cluster/node.h) is stored as one ordinary local collection per shard
 * copy this node holds, named `c.s<k>`; user collection names ending in
 * `.s<digits>` are refused in cluster mode so they cannot collide. Every
 * shard operation is the normal single-node handler run on that local
 * collection (sub_run), so filters, payloads and indexes behave as on one
 * node.
 *
 *   write  any node --POST /internal/shards/c/k/upsert?epoch=E--> primary
 *          primary: applies locally, then --.../repl_upsert?epoch=E--> every
 *          other in-sync copy; answers 200 only when all of them applied it
 *   read   any node --.../search|query|count--> one in-sync copy per shard
 *          (local first), another copy when one fails; merged by score
 *
 * Fencing: a shard operation names the map epoch the sender routed by; a
 * node whose map is newer refuses it (409), one whose map is older waits
 * for its watch (bounded) first. A primary accepts writes only for shards
 * it is primary of at that epoch, and only while its lease is safe
 * (mship_is_fenced). Routers retry refused or failed writes until the
 * controller has repaired the map (TTL + 10 s), so a write is acknowledged
 * only when every in-sync copy of its shard has it.
 *
 * Not owned here: the map itself and the controller (src/cluster/node.c).
 * Without --cluster, cluster_route returns false and nothing here runs but
 * the single-node answers of /cluster/state and /collections/{c}/cluster. */
#include <pthread.h>
#include <stdarg.h>
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
#include "server/server_int.h"

#define WRITE_RETRY_MS 100
#define CALL_TIMEOUT_MS 30000
#define CREATE_WAIT_MS 15000

static cl_node *g_node;
static char *g_api_key;
static pthread_mutex_t g_shard_mu = PTHREAD_MUTEX_INITIALIZER;

enum { OP_UPSERT, OP_DELETE };
static void cluster_info(srv_req *r);
enum { RD_SEARCH, RD_QUERY, RD_COUNT };

/* A response of a shard operation, local or remote. */
typedef struct reply {
  unsigned status;
  char *body; /* qv_malloc'd, NUL-terminated */
  size_t len;
} reply;

static void reply_clear(reply *p) {
  qv_free(p->body);
  memset(p, 0, sizeof *p);
}

static void reply_err(reply *p, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
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

/* Whether `name` ends in ".s<digits>" (reserved for shard copies). */
static bool is_shard_name(const char *name) {
  const char *d = strrchr(name, '.');
  if (d == NULL || d[1] != 's' || d[2] == 0) return false;
  for (const char *p = d + 2; *p; p++)
    if (*p < '0' || *p > '9') return false;
  return true;
}

/* Runs a single-node handler on local collection `coll` with `body`
 * (NUL-terminated) and hands back its response. */
static void sub_run(srv *s, srv_handler fn, const char *coll, const char *body, size_t len,
                    reply *out) {
  srv_req q;
  memset(&q, 0, sizeof q);
  q.s = s;
  q.method = "POST";
  q.route = -1;
  q.t0 = srv_now();
  q.args[0] = qv_strdup(coll);
  q.body = body;
  q.body_len = len;
  reply_clear(out);
  if (q.args[0] == NULL) {
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
  qv_free(q.path);
  jsonio_vecs_free(&q.vecs);
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
  else {
    sub_run(s, h_coll_create, sn, c->params, strlen(c->params), out);
    ok = out->status == 200 || out->status == 409;
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

/* The map of `name` at exactly `epoch` (waiting briefly when this node is
 * behind); false with 404/409/503 in *out. */
static bool map_at(const char *name, uint32_t k, int64_t epoch, cl_coll *c, reply *out) {
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
  if (epoch != 0 && epoch != c->epoch) {
    reply_err(out, epoch < c->epoch ? 409 : 503,
              "Stale shard map: the request was routed at epoch %lld, this node is at %lld",
              (long long)epoch, (long long)c->epoch);
    return false;
  }
  return true;
}

/* A write on shard k: as its primary (then replicated) or as a copy. */
static void shard_write(srv *s, const char *name, uint32_t k, int op, bool as_primary,
                        int64_t epoch, const char *body, size_t len, reply *out) {
  cl_coll c;
  if (cl_node_fenced(g_node)) {
    reply_err(out, 503, "Service unavailable: this node lost its etcd lease (fenced)");
    return;
  }
  if (!map_at(name, k, epoch, &c, out)) goto done;
  const cl_shard *sh = &c.shards[k];
  const cl_replica *mine = my_copy(sh);
  bool is_primary = !strcmp(sh->primary, cl_node_id(g_node));
  if (as_primary ? !is_primary : (is_primary || mine == NULL || mine->state != CL_INSYNC)) {
    reply_err(out, 409, "Stale shard map: this node is not %s of shard %u of `%s` at epoch %lld",
              as_primary ? "the primary" : "an in-sync copy", k, name, (long long)c.epoch);
    goto done;
  }
  if (!ensure_shard(s, &c, k, out)) goto done;
  char sn[CL_NAME_MAX + 16];
  shard_name(name, k, sn, sizeof sn);
  sub_run(s, op == OP_UPSERT ? h_upsert : h_delete, sn, body, len, out);
  if (out->status != 200 || !as_primary) goto done;
  cl_call calls[CL_RF_MAX];
  size_t n = 0;
  for (uint32_t i = 0; i < sh->n_reps; i++) {
    const cl_replica *rp = &sh->reps[i];
    char addr[300];
    if (rp->state != CL_INSYNC || !strcmp(rp->node, cl_node_id(g_node))) continue;
    memset(&calls[n], 0, sizeof calls[n]);
    if (!cl_node_addr(g_node, rp->node, addr, sizeof addr)) {
      reply_err(out, 503, "Service unavailable: copy %s of shard %u is not live", rp->node, k);
      goto done;
    }
    snprintf(calls[n].url, sizeof calls[n].url, "http://%s/internal/shards/%s/%u/%s?epoch=%lld",
             addr, name, k, op == OP_UPSERT ? "repl_upsert" : "repl_delete",
             (long long)c.epoch);
    calls[n].body = body;
    calls[n].len = len;
    calls[n].api_key = g_api_key;
    n++;
  }
  cl_http_run(calls, n, CALL_TIMEOUT_MS);
  for (size_t i = 0; i < n; i++) {
    if (calls[i].status != 200 && out->status == 200)
      reply_err(out, calls[i].status == 409 ? 409 : 503,
                "Service unavailable: a copy of shard %u did not apply the write (%u %s)", k,
                calls[i].status, calls[i].status ? calls[i].resp : calls[i].err);
    cl_call_clear(&calls[i]);
  }
done:
  cl_coll_free(&c);
}

/* A read on this node's copy of shard k. */
static void shard_read(srv *s, const char *name, uint32_t k, int kind, const char *body,
                       size_t len, reply *out) {
  cl_coll c;
  if (!map_at(name, k, 0, &c, out)) goto done;
  const cl_replica *mine = my_copy(&c.shards[k]);
  if (mine == NULL || mine->state != CL_INSYNC) {
    reply_err(out, 409, "Stale shard map: no in-sync copy of shard %u of `%s` here", k, name);
    goto done;
  }
  if (!ensure_shard(s, &c, k, out)) goto done;
  char sn[CL_NAME_MAX + 16];
  shard_name(name, k, sn, sizeof sn);
  sub_run(s, kind == RD_SEARCH ? h_search : kind == RD_QUERY ? h_query : h_count, sn, body, len,
          out);
done:
  cl_coll_free(&c);
}

void h_shard_internal(srv_req *r) {
  if (g_node == NULL) {
    srv_fail(r, 404, "Not found: this node is not in cluster mode");
    return;
  }
  char *end;
  unsigned long k = strtoul(r->args[1], &end, 10);
  const char *ep = srv_query(r, "epoch"), *op = r->args[2];
  int64_t epoch = ep ? strtoll(ep, NULL, 10) : 0;
  if (*end != 0 || k >= CL_SHARDS_MAX) {
    srv_fail(r, 404, "Not found: shard %s", r->args[1]);
    return;
  }
  reply out = {0};
  if (!strcmp(op, "upsert") || !strcmp(op, "delete"))
    shard_write(r->s, r->args[0], (uint32_t)k, op[0] == 'u' ? OP_UPSERT : OP_DELETE, true, epoch,
                r->body, r->body_len, &out);
  else if (!strcmp(op, "repl_upsert") || !strcmp(op, "repl_delete"))
    shard_write(r->s, r->args[0], (uint32_t)k, op[5] == 'u' ? OP_UPSERT : OP_DELETE, false,
                epoch, r->body, r->body_len, &out);
  else if (!strcmp(op, "search") || !strcmp(op, "query") || !strcmp(op, "count"))
    shard_read(r->s, r->args[0], (uint32_t)k,
               op[0] == 's' ? RD_SEARCH : op[0] == 'q' ? RD_QUERY : RD_COUNT, r->body,
               r->body_len, &out);
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
        shard_write(r->s, name, k, op, true, c.epoch, texts[k], lens[k], &rp);
        if (rp.status == 200) pending[k] = false;
        else if (!retryable(rp.status)) {
          srv_raw(r, rp.status, "application/json", rp.body, rp.len, qv_free);
          cl_coll_free(&c);
          goto out;
        } else snprintf(last, sizeof last, "shard %u: %s", k, rp.body ? rp.body : "");
        reply_clear(&rp);
      } else if (cl_node_addr(g_node, prim, addr, sizeof addr)) {
        memset(&calls[n], 0, sizeof calls[n]);
        snprintf(calls[n].url, sizeof calls[n].url,
                 "http://%s/internal/shards/%s/%u/%s?epoch=%lld", addr, name, k,
                 op == OP_UPSERT ? "upsert" : "delete", (long long)c.epoch);
        calls[n].body = texts[k];
        calls[n].len = lens[k];
        calls[n].api_key = g_api_key;
        which[n++] = k;
      } else {
        snprintf(last, sizeof last, "shard %u: its primary %s is not live", k, prim);
      }
    }
    cl_coll_free(&c);
    cl_http_run(calls, n, CALL_TIMEOUT_MS);
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

static void write_op(srv_req *r, const cl_coll *c, int op) {
  if (!srv_check_wait(r)) return;
  json_t *body = srv_body(r, false);
  if (body == NULL) return;
  uint32_t ns = c->shard_number;
  json_t **parts = qv_calloc(ns, sizeof *parts);
  char **texts = qv_calloc(ns, sizeof *texts);
  size_t *lens = qv_calloc(ns, sizeof *lens);
  if (!parts || !texts || !lens) {
    srv_fail(r, 500, "Service internal error: out of memory");
    goto out;
  }
  json_t *list = json_object_get(body, "points");
  if (op == OP_UPSERT && !json_is_array(list)) {
    srv_wrong_input(r, "cluster mode takes upserts as {\"points\": [...]} (the batch form "
                       "is not supported yet)");
    goto out;
  }
  if (json_is_array(list)) {
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v) {
      qv_point_id id;
      if (!srv_id_parse(r, op == OP_UPSERT ? json_object_get(v, "id") : v,
                        op == OP_UPSERT ? "points[].id" : "points[]", &id))
        goto out;
      uint32_t k = ring_shard_of(&id, ns);
      if (parts[k] == NULL) parts[k] = json_pack("{s:[]}", "points");
      if (parts[k] == NULL) {
        srv_fail(r, 500, "Service internal error: out of memory");
        goto out;
      }
      json_array_append(json_object_get(parts[k], "points"), v);
    }
  } else { /* delete by filter: every shard applies the same body */
    for (uint32_t k = 0; k < ns; k++) parts[k] = json_incref(body);
  }
  for (uint32_t k = 0; k < ns; k++)
    if (parts[k] && (texts[k] = jsonio_dumps(parts[k], &lens[k])) == NULL) {
      srv_fail(r, 500, "Service internal error: out of memory");
      goto out;
    }
  if (dispatch_writes(r, c->name, texts, lens, ns, op)) srv_update_ok(r);
out:
  for (uint32_t k = 0; parts && k < ns; k++) json_decref(parts[k]);
  for (uint32_t k = 0; texts && k < ns; k++) qv_free(texts[k]);
  qv_free(parts);
  qv_free(texts);
  qv_free(lens);
  json_decref(body);
}

/* ---- reads through any node ----------------------------------------------------- */

typedef struct hit {
  json_t *v;
  double score;
  char id[48];
} hit;

static int g_cmp_dir; /* set per qsort call under g_sort_mu */
static pthread_mutex_t g_sort_mu = PTHREAD_MUTEX_INITIALIZER;

static int hit_cmp(const void *a, const void *b) {
  const hit *x = a, *y = b;
  if (x->score != y->score) return (x->score < y->score ? -1 : 1) * g_cmp_dir;
  return strcmp(x->id, y->id);
}

/* Whether the space searched sorts ascending (a distance, not a similarity). */
static bool ascending(const cl_coll *c, const json_t *body, int kind) {
  json_t *params = json_loads(c->params, 0, NULL);
  json_t *vecs = json_object_get(params, "vectors");
  const char *space = NULL;
  if (kind == RD_SEARCH && json_is_object(json_object_get(body, "vector")))
    space = json_string_value(json_object_get(json_object_get(body, "vector"), "name"));
  if (kind == RD_QUERY) space = json_string_value(json_object_get(body, "using"));
  json_t *sp = space && *space ? json_object_get(vecs, space) : vecs;
  const char *d = json_string_value(json_object_get(sp, "distance"));
  bool asc = d && (!strcmp(d, "Euclid") || !strcmp(d, "Manhattan"));
  json_decref(params);
  return asc;
}

static void id_key(const json_t *id, char *buf, size_t cap) {
  const char *raw = jsonio_raw_text(id);
  if (raw) { /* above INT64_MAX: 19 or 20 digits, zero-padded to sort as numbers */
    size_t d = strlen(raw + 1);
    snprintf(buf, cap, "%.*s%s", d < 20 ? (int)(20 - d) : 0, "00000000000000000000", raw + 1);
  }
  else if (json_is_integer(id)) snprintf(buf, cap, "%020lld", (long long)json_integer_value(id));
  else snprintf(buf, cap, "~%s", json_string_value(id) ? json_string_value(id) : "");
}

/* Collects the hits (or count) of one shard's answer; false when it is not
 * the expected shape. */
static bool collect(const char *text, size_t len, int kind, hit **hits, size_t *n, size_t *cap,
                    uint64_t *count) {
  char msg[128];
  json_t *o = jsonio_parse(text, len, msg, sizeof msg);
  json_t *res = json_object_get(o, "result");
  bool ok = res != NULL;
  if (ok && kind == RD_COUNT) {
    uint64_t c = 0;
    ok = jsonio_get_u64(json_object_get(res, "count"), &c);
    *count += c;
  } else if (ok) {
    json_t *arr = kind == RD_QUERY ? json_object_get(res, "points") : res;
    size_t i;
    json_t *v;
    ok = json_is_array(arr);
    json_array_foreach(arr, i, v) {
      if (*n == *cap) {
        size_t nc = *cap ? 2 * *cap : 64;
        hit *p = qv_realloc(*hits, nc * sizeof *p);
        if (p == NULL) {
          ok = false;
          break;
        }
        *hits = p;
        *cap = nc;
      }
      hit *h = &(*hits)[*n];
      h->score = 0;
      jsonio_get_f64(json_object_get(v, "score"), &h->score);
      id_key(json_object_get(v, "id"), h->id, sizeof h->id);
      h->v = json_incref(v);
      (*n)++;
    }
  }
  json_decref(o);
  return ok;
}

static void read_op(srv_req *r, const cl_coll *c, int kind) {
  json_t *body = srv_body(r, kind == RD_COUNT);
  if (body == NULL) return;
  uint64_t limit = 10, offset = 0;
  char *text = NULL;
  size_t len = 0, n_hits = 0, cap_hits = 0;
  hit *hits = NULL;
  uint64_t count = 0;
  uint32_t ns = c->shard_number;
  uint32_t *attempt = qv_calloc(ns, sizeof *attempt);
  bool *done = qv_calloc(ns, sizeof *done), *failed = qv_calloc(ns, sizeof *failed);
  cl_call *calls = qv_calloc(ns, sizeof *calls);
  uint32_t *which = qv_calloc(ns, sizeof *which);
  if (!attempt || !done || !failed || !calls || !which || !c->has_map) {
    srv_fail(r, c->has_map ? 500 : 503, "Service unavailable: collection `%s` is not placed",
             c->name);
    goto out;
  }
  if (kind != RD_COUNT) {
    if (json_object_get(body, "top") && !json_object_get(body, "limit") &&
        !srv_field_u64(r, body, "top", false, &limit))
      goto out;
    if (!srv_field_u64(r, body, "limit", false, &limit) ||
        !srv_field_u64(r, body, "offset", false, &offset))
      goto out;
    json_object_del(body, "top");
    json_object_set_new(body, "limit", jsonio_u64(limit + offset));
    json_object_set_new(body, "offset", json_integer(0));
  }
  if ((text = jsonio_dumps(body, &len)) == NULL) {
    srv_fail(r, 500, "Service internal error: out of memory");
    goto out;
  }
  const char *me = cl_node_id(g_node);
  const char *opname = kind == RD_SEARCH ? "search" : kind == RD_QUERY ? "query" : "count";
  for (;;) {
    size_t n = 0;
    bool left = false;
    for (uint32_t k = 0; k < ns; k++) {
      if (done[k]) continue;
      /* Candidates: in-sync copies, this node first, then the primary. */
      const cl_shard *sh = &c->shards[k];
      const char *cand[CL_RF_MAX + 1];
      uint32_t nc = 0;
      const cl_replica *mine = my_copy(sh);
      if (mine && mine->state == CL_INSYNC) cand[nc++] = me;
      if (strcmp(sh->primary, me)) cand[nc++] = sh->primary;
      for (uint32_t i = 0; i < sh->n_reps; i++)
        if (sh->reps[i].state == CL_INSYNC && strcmp(sh->reps[i].node, me) &&
            strcmp(sh->reps[i].node, sh->primary))
          cand[nc++] = sh->reps[i].node;
      if (attempt[k] >= nc) {
        done[k] = failed[k] = true;
        continue;
      }
      const char *node = cand[attempt[k]];
      char addr[300];
      if (!strcmp(node, me)) {
        reply rp = {0};
        shard_read(r->s, c->name, k, kind, text, len, &rp);
        if (rp.status == 200 && collect(rp.body, rp.len, kind, &hits, &n_hits, &cap_hits, &count))
          done[k] = true;
        else if (rp.status == 400 || rp.status == 422) {
          srv_raw(r, rp.status, "application/json", rp.body, rp.len, qv_free);
          goto out;
        } else attempt[k]++;
        reply_clear(&rp);
      } else if (cl_node_addr(g_node, node, addr, sizeof addr)) {
        memset(&calls[n], 0, sizeof calls[n]);
        snprintf(calls[n].url, sizeof calls[n].url, "http://%s/internal/shards/%s/%u/%s", addr,
                 c->name, k, opname);
        calls[n].body = text;
        calls[n].len = len;
        calls[n].api_key = g_api_key;
        which[n++] = k;
      } else {
        attempt[k]++;
      }
    }
    cl_http_run(calls, n, CALL_TIMEOUT_MS);
    bool bad = false;
    for (size_t i = 0; i < n; i++) {
      uint32_t k = which[i];
      cl_call *cc = &calls[i];
      if (cc->status == 200 &&
          collect(cc->resp, cc->resp_len, kind, &hits, &n_hits, &cap_hits, &count))
        done[k] = true;
      else if ((cc->status == 400 || cc->status == 422) && !bad) {
        bad = true;
        srv_raw(r, cc->status, "application/json", cc->resp, cc->resp_len, qv_free);
        cc->resp = NULL;
      } else {
        if (cc->status != 200)
          qv_log(QV_LOG_WARN, "cluster", "%s on shard %u: %u %s", opname, k, cc->status,
                 cc->status ? "" : cc->err);
        attempt[k]++;
      }
      cl_call_clear(cc);
    }
    if (bad) goto out;
    for (uint32_t k = 0; k < ns; k++) left = left || !done[k];
    if (!left) break;
  }
  json_t *result;
  if (kind == RD_COUNT) {
    result = json_pack("{s:o}", "count", jsonio_u64(count));
  } else {
    pthread_mutex_lock(&g_sort_mu);
    g_cmp_dir = ascending(c, body, kind) ? 1 : -1;
    qsort(hits, n_hits, sizeof *hits, hit_cmp);
    pthread_mutex_unlock(&g_sort_mu);
    json_t *arr = json_array();
    for (size_t i = offset; arr && i < n_hits && i < offset + limit; i++)
      json_array_append(arr, hits[i].v);
    result = kind == RD_QUERY ? json_pack("{s:o}", "points", arr) : arr;
  }
  json_t *failed_list = json_array();
  for (uint32_t k = 0; k < ns; k++)
    if (failed[k]) json_array_append_new(failed_list, json_integer(k));
  if (json_array_size(failed_list) == 0) {
    json_decref(failed_list);
    srv_ok(r, result);
  } else {
    /* Partial: Qdrant's envelope plus "partial" and the shards missing. */
    json_t *o = json_pack("{s:o, s:s, s:f, s:b, s:o}", "result", result, "status", "ok", "time",
                          srv_now() - r->t0, "partial", 1, "failed_shards", failed_list);
    size_t olen = 0;
    char *out_text = o ? jsonio_dumps(o, &olen) : NULL;
    json_decref(o);
    if (out_text) srv_raw(r, 200, "application/json", out_text, olen, qv_free);
    else srv_fail(r, 500, "Service internal error: out of memory");
  }
out:
  for (size_t i = 0; i < n_hits; i++) json_decref(hits[i].v);
  qv_free(hits);
  qv_free(text);
  qv_free(attempt);
  qv_free(done);
  qv_free(failed);
  qv_free(calls);
  qv_free(which);
  json_decref(body);
}

/* ---- collections ------------------------------------------------------------------ */

static void coll_create(srv_req *r) {
  const char *name = r->args[0];
  if (is_shard_name(name)) {
    srv_wrong_input(r, "in cluster mode collection names ending in `.s<digits>` are reserved "
                       "for shard copies: `%s`", name);
    return;
  }
  json_t *body = srv_body(r, false);
  if (body == NULL) return;
  uint64_t shards = 1, rf = 1;
  if (!srv_field_u64(r, body, "shard_number", false, &shards) ||
      !srv_field_u64(r, body, "replication_factor", false, &rf))
    goto out;
  if (shards < 1 || shards > CL_SHARDS_MAX || rf < 1 || rf > CL_RF_MAX) {
    srv_wrong_input(r, "shard_number must be 1..%u and replication_factor 1..%u", CL_SHARDS_MAX,
                    CL_RF_MAX);
    goto out;
  }
  json_object_del(body, "shard_number");
  json_object_del(body, "replication_factor");
  json_object_del(body, "write_consistency_factor");
  size_t len;
  char *params = jsonio_dumps(body, &len);
  qv_err err = {0};
  qv_rc rc = params ? cl_coll_create(g_node, name, params, (uint32_t)shards, (uint32_t)rf, &err)
                    : QV_ENOMEM;
  qv_free(params);
  if (rc == QV_EEXIST) srv_fail(r, 409, "Wrong input: Collection `%s` already exists!", name);
  else if (rc != QV_OK) srv_fail(r, 503, "Service unavailable: etcd: %s", err.msg);
  else if (!cl_wait_map(g_node, name, 1, CREATE_WAIT_MS))
    srv_fail(r, 503, "Service unavailable: no controller placed `%s` within %d s", name,
             CREATE_WAIT_MS / 1000);
  else srv_ok(r, json_true());
out:
  json_decref(body);
}

static void coll_info(srv_req *r, const cl_coll *c) {
  json_t *params = json_loads(c->params, 0, NULL);
  if (params == NULL) params = json_object();
  json_object_set_new(params, "shard_number", json_integer(c->shard_number));
  json_object_set_new(params, "replication_factor", json_integer(c->rf));
  srv_ok(r, json_pack("{s:s, s:s, s:{s:o}}", "status", "green", "optimizer_status", "ok",
                      "config", "params", params));
}

bool cluster_route(srv_req *r) {
  if (g_node == NULL || r->route < 0) return false;
  srv_handler fn = router_routes[r->route].fn;
  if (fn == h_cluster) {
    cluster_info(r);
    return true;
  }
  if (fn == h_coll_create) {
    coll_create(r);
    return true;
  }
  if (strncmp(router_routes[r->route].pattern, "/collections/{name}", 19) != 0 ||
      fn == h_coll_cluster || r->args[0] == NULL)
    return false;
  cl_coll c;
  if (cl_coll_get(g_node, r->args[0], &c) != QV_OK) return false; /* a local collection */
  if (fn == h_upsert) write_op(r, &c, OP_UPSERT);
  else if (fn == h_delete) write_op(r, &c, OP_DELETE);
  else if (fn == h_search) read_op(r, &c, RD_SEARCH);
  else if (fn == h_query) read_op(r, &c, RD_QUERY);
  else if (fn == h_count) read_op(r, &c, RD_COUNT);
  else if (fn == h_coll_get) coll_info(r, &c);
  else if (fn == h_coll_exists) srv_ok(r, json_pack("{s:b}", "exists", 1));
  else
    srv_fail(r, 501, "Not implemented in cluster mode yet: %s %s (`%s` is a distributed "
                     "collection; see docs/cluster.md)", r->method, router_routes[r->route].pattern,
             r->args[0]);
  cl_coll_free(&c);
  return true;
}

/* ---- state documents ---------------------------------------------------------------- */

static json_t *peer_json(const char *node_id) { return json_integer((json_int_t)cl_peer_id(node_id)); }

/* GET /cluster in Qdrant's shape; the controller stands in for the Raft
 * leader. */
static void cluster_info(srv_req *r) {
  mship_status st;
  mship_status_get(cl_node_mship(g_node), &st);
  mship_view v = {0};
  qv_err err = {0};
  if (mship_view_get(cl_node_mship(g_node), &v, &err) != QV_OK) {
    srv_fail(r, 503, "Service unavailable: %s", err.msg);
    return;
  }
  json_t *peers = json_object();
  for (size_t i = 0; i < v.n; i++) {
    char uri[400];
    snprintf(uri, sizeof uri, "http://%s/", v.members[i].addr ? v.members[i].addr : "");
    json_object_set_new(peers, v.members[i].node_id, json_pack("{s:s}", "uri", uri));
  }
  json_t *leader = st.controller[0] ? peer_json(st.controller) : json_null();
  srv_ok(r, json_pack("{s:s, s:o, s:o, s:{s:i, s:i, s:i, s:o, s:s, s:b}, s:{s:s}, s:{}}",
                      "status", "enabled", "peer_id", peer_json(cl_node_id(g_node)), "peers",
                      peers, "raft_info", "term", 0, "commit", 0, "pending_operations", 0,
                      "leader", leader, "role", st.is_controller ? "Leader" : "Follower",
                      "is_voter", 1, "consensus_thread_status", "consensus_thread_status",
                      "working", "message_send_failures"));
  mship_view_free(&v);
}

static uint64_t local_count(srv *s, const char *coll, uint32_t k) {
  char sn[CL_NAME_MAX + 16];
  shard_name(coll, k, sn, sizeof sn);
  qv_collection *h = NULL;
  uint64_t n = 0;
  if (qv_collection_get(s->db, sn, &h, NULL) == QV_OK) {
    if (qv_count(h, &n, NULL) != QV_OK) n = 0;
    qv_collection_release(h);
  }
  return n;
}

/* GET /collections/{c}/cluster in Qdrant's shape (CollectionClusterInfo).
 * Quiver adds "epoch" and, per shard copy, "primary" and "term". */
void h_coll_cluster(srv_req *r) {
  if (g_node == NULL) {
    srv_coll sc;
    if (!srv_coll_open(r, &sc)) return;
    uint64_t n = 0;
    if (qv_count(sc.c, &n, NULL) != QV_OK) n = 0;
    srv_coll_close(&sc);
    srv_ok(r, json_pack("{s:i, s:i, s:[{s:i, s:o, s:s}], s:[], s:[]}", "peer_id", 0,
                        "shard_count", 1, "local_shards", "shard_id", 0, "points_count",
                        jsonio_u64(n), "state", "Active", "remote_shards", "shard_transfers"));
    return;
  }
  cl_coll c;
  if (cl_coll_get(g_node, r->args[0], &c) != QV_OK || !c.has_map) {
    cl_coll_free(&c);
    srv_fail(r, 404, "Not found: Collection `%s` doesn't exist!", r->args[0]);
    return;
  }
  json_t *local = json_array(), *remote = json_array();
  for (uint32_t k = 0; k < c.shard_number; k++) {
    const cl_shard *sh = &c.shards[k];
    for (uint32_t i = 0; i < sh->n_reps; i++) {
      const cl_replica *rp = &sh->reps[i];
      const char *state = rp->state == CL_DEAD ? "Dead" : "Active";
      bool primary = !strcmp(rp->node, sh->primary);
      if (!strcmp(rp->node, cl_node_id(g_node)))
        json_array_append_new(local, json_pack("{s:i, s:o, s:s, s:b, s:I}", "shard_id", (int)k,
                                               "points_count",
                                               jsonio_u64(local_count(r->s, c.name, k)),
                                               "state", state, "primary", primary, "term",
                                               (json_int_t)sh->term));
      else
        json_array_append_new(remote, json_pack("{s:i, s:o, s:s, s:b, s:I}", "shard_id", (int)k,
                                                "peer_id", peer_json(rp->node), "state", state,
                                                "primary", primary, "term",
                                                (json_int_t)sh->term));
    }
  }
  srv_ok(r, json_pack("{s:o, s:i, s:o, s:o, s:[], s:I}", "peer_id",
                      peer_json(cl_node_id(g_node)), "shard_count", (int)c.shard_number,
                      "local_shards", local, "remote_shards", remote, "shard_transfers", "epoch",
                      (json_int_t)c.epoch));
  cl_coll_free(&c);
}

/* GET /cluster/state: everything the dashboard draws (docs/cluster.md). */
void h_cluster_state(srv_req *r) {
  if (g_node == NULL) {
    srv_ok(r, json_pack("{s:b}", "enabled", 0));
    return;
  }
  mship *m = cl_node_mship(g_node);
  mship_status st;
  mship_status_get(m, &st);
  mship_view v = {0};
  qv_err err = {0};
  if (mship_view_get(m, &v, &err) != QV_OK) {
    srv_fail(r, 503, "Service unavailable: %s", err.msg);
    return;
  }
  json_t *members = json_array();
  for (size_t i = 0; i < v.n; i++) {
    int64_t ttl = -1;
    if (etcd_lease_ttl(mship_client(m), v.members[i].lease, &ttl, NULL) != QV_OK) ttl = -1;
    json_array_append_new(
        members, json_pack("{s:s, s:o, s:s, s:I, s:I, s:b}", "node_id", v.members[i].node_id,
                           "peer_id", peer_json(v.members[i].node_id), "addr",
                           v.members[i].addr ? v.members[i].addr : "", "lease",
                           (json_int_t)v.members[i].lease, "lease_ttl_left_s", (json_int_t)ttl,
                           "controller", !strcmp(st.controller, v.members[i].node_id)));
  }
  json_t *colls = json_object();
  char **names = NULL;
  size_t count = 0;
  cl_coll_names(g_node, &names, &count);
  for (size_t i = 0; i < count; i++) {
    cl_coll c;
    if (cl_coll_get(g_node, names[i], &c) != QV_OK) continue;
    json_t *shards = json_array(), *load = json_object();
    for (uint32_t k = 0; c.has_map && k < c.shard_number; k++) {
      const cl_shard *sh = &c.shards[k];
      json_t *reps = json_array();
      for (uint32_t j = 0; j < sh->n_reps; j++) {
        const cl_replica *rp = &sh->reps[j];
        json_array_append_new(reps, json_pack("{s:s, s:s}", "node", rp->node, "state",
                                              rp->state == CL_DEAD ? "dead" : "insync"));
        if (rp->state == CL_INSYNC) {
          json_int_t was = json_integer_value(json_object_get(load, rp->node));
          json_object_set_new(load, rp->node, json_integer(was + 1));
        }
      }
      json_array_append_new(shards, json_pack("{s:i, s:I, s:s, s:o}", "id", (int)k, "term",
                                              (json_int_t)sh->term, "primary", sh->primary,
                                              "replicas", reps));
    }
    json_object_set_new(
        colls, c.name,
        json_pack("{s:b, s:I, s:i, s:i, s:i, s:o, s:o}", "placed", c.has_map, "epoch",
                  (json_int_t)c.epoch, "shard_number", (int)c.shard_number,
                  "replication_factor", (int)c.rf, "load_cap",
                  (int)cl_load_cap(c.shard_number * c.rf, (uint32_t)v.n), "load", load,
                  "shards", shards));
    cl_coll_free(&c);
  }
  cl_names_free(names, count);
  srv_ok(r, json_pack("{s:b, s:s, s:o, s:s, s:b, s:b, s:I, s:i, s:o, s:o}", "enabled", 1,
                      "node_id", cl_node_id(g_node), "peer_id", peer_json(cl_node_id(g_node)),
                      "controller", st.controller, "is_controller", st.is_controller, "fenced",
                      st.is_fenced, "incarnation", (json_int_t)st.incarnation, "lease_ttl_s",
                      (int)cl_node_ttl_s(g_node), "members", members, "collections", colls));
  mship_view_free(&v);
}

/* ---- joining ------------------------------------------------------------------------ */

void cluster_shutdown(void) {
  cl_node_stop(g_node);
  g_node = NULL;
  qv_free(g_api_key);
  g_api_key = NULL;
}

int cluster_boot(const srv_config *cfg, FILE *errf) {
  if (g_node != NULL) return -1;
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
  cl_node_opts o = {.endpoints = cfg->etcd, .node_addr = addr, .data_dir = cfg->data_dir,
                    .ttl_s = (uint32_t)cfg->cluster_ttl_s};
  /* The node's threads must not take SIGTERM/SIGINT: http.c waits for
   * them with sigwait in the main thread (it blocks them only later). */
  sigset_t stop, old;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, &old);
  qv_err err = {0};
  qv_rc rc = cl_node_start(&o, &g_node, &err);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != QV_OK) {
    fprintf(errf, "serve: cannot join the cluster at %s: %s\n", cfg->etcd, err.msg);
    return 1;
  }
  g_api_key = qv_strdup(cfg->api_key);
  return -1;
}
