/* cluster_read.c: every read of a distributed collection through any node
 * (retrieve, GET one point, scroll, count, search, query, recommend and
 * their batches), and the copy side of a shard read.
 *
 *   router --POST /internal/shards/c/k/<op>--> one insync copy per shard:
 *          this node's own first, then the primary, then the others; on a
 *          failure, a 409 or no answer within HEDGE_MS (while another copy
 *          is left) the next one. <op> is a single-node handler (k_ops),
 *          run on the copy's local collection c.s<k>.
 *
 * The router rewrites a request so that each shard's answer holds all the
 * merge needs, then merges as one node would have answered:
 *   - hits (search, query, recommend): each shard returns offset + limit
 *     (+ the number of excluded ids); merged by score (ascending for a
 *     distance), ties by id, cut to [offset, offset + limit);
 *   - point ids given as examples or as a query (recommend, query by id,
 *     nearest by id): their vectors are looked up first (a retrieve on
 *     their shards) and put in the request in place of the ids; the ids
 *     are then dropped from the merged hits, as the single-node handlers
 *     drop them. A missing point is left as an id: every shard then
 *     answers the single node's 404 (or an earlier 400), passed through;
 *   - scroll: every shard scrolls from the same offset; merged in id
 *     order (integers before UUIDs), next_page_offset the smallest id not
 *     returned; with order_by, merged by order_value, then id;
 *   - retrieve: ids split by ring_shard_of, answer in the order asked.
 * A shard whose copies all failed makes the answer partial (HTTP 200 plus
 * "partial": true and "failed_shards"); a 400/422 from a shard is the
 * answer (every shard sees the same request, so it is the single node's).
 *
 * Invariant: a copy answers a read only while the map says it is insync
 * (a partial or dead copy may miss writes).
 * Not owned: writes and transfers (routes_cluster.c, cluster_xfer.c),
 * collection requests (cluster_coll.c). */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/alloc.h"
#include "base/log.h"
#include "cluster/cluster_http.h"
#include "cluster/ring.h"
#include "server/cluster_int.h"

#define READ_CALL_MS 4000
/* Hedging: a shard copy that has not answered within this while another
 * copy could is given up and the next copy asked. */
#define HEDGE_MS 1000
/* The single-node handlers' bound on limit and offset. */
#define LIMIT_MAX 1000000u
/* Prefetch nesting walked when looking for point ids (the handlers refuse
 * more than 8). */
#define WALK_DEPTH_MAX 16
/* An id's sort key: 20 zero-padded digits, or '~' and the canonical UUID. */
#define IDK 48

/* ---- the copy side ------------------------------------------------------------------- */

static const struct shard_op {
  const char *name;
  srv_handler fn;
} k_ops[] = {
    {"search", h_search},       {"search_batch", h_search_batch},
    {"query", h_query},         {"query_batch", h_query_batch},
    {"recommend", h_recommend}, {"recommend_batch", h_recommend_batch},
    {"count", h_count},         {"scroll", h_scroll},
    {"retrieve", h_retrieve},
};

static srv_handler op_fn(const char *op) {
  for (size_t i = 0; i < sizeof k_ops / sizeof k_ops[0]; i++)
    if (!strcmp(k_ops[i].name, op)) return k_ops[i].fn;
  return NULL;
}

/* A read on this node's copy of shard k. */
static void shard_read(srv *s, const char *name, uint32_t k, srv_handler fn, const char *body,
                       size_t len, clr_reply *out) {
  cl_coll c;
  if (!clr_map_at(name, k, 0, &c, out)) goto done;
  const cl_replica *mine = clr_my_copy(&c.shards[k]);
  if (mine == NULL || mine->state != CL_INSYNC) {
    clr_reply_err(out, 409, "Stale shard map: no in-sync copy of shard %u of `%s` here", k, name);
    goto done;
  }
  if (!clr_ensure_shard(s, &c, k, out)) goto done;
  char sn[CL_NAME_MAX + 16];
  clr_shard_name(name, k, sn, sizeof sn);
  clr_sub_run(s, fn, sn, body, len, out);
done:
  cl_coll_free(&c);
}

bool clr_shard_read(srv *s, const char *name, uint32_t k, const char *op, const char *body,
                    size_t len, clr_reply *out) {
  srv_handler fn = op_fn(op);
  if (fn == NULL) return false;
  shard_read(s, name, k, fn, body, len, out);
  return true;
}

/* ---- point ids ------------------------------------------------------------------------- */

/* A point id as the handlers read one (srv_id_parse), without an error. */
static bool json_id(const json_t *v, qv_point_id *out) {
  uint64_t n;
  if (jsonio_get_u64(v, &n)) {
    *out = qv_id_num(n);
    return true;
  }
  return json_is_string(v) && jsonio_raw_text(v) == NULL &&
         qv_id_parse_uuid(json_string_value(v), out, NULL) == QV_OK;
}

/* strcmp on keys is qv_id_cmp's order, and equal keys are equal ids
 * whatever form (case, braces) the id was written in. */
static void id_key(const qv_point_id *id, char key[IDK]) {
  char t[40];
  if (id->is_uuid) snprintf(key, IDK, "~%s", qv_id_format(id, t));
  else snprintf(key, IDK, "%020llu", (unsigned long long)id->num);
}

static void json_key(const json_t *v, char key[IDK]) {
  qv_point_id id;
  if (json_id(v, &id)) id_key(&id, key);
  else key[0] = 0;
}

/* ---- fan-out: one request per shard, one insync copy each ------------------------------- */

typedef bool (*fan_check)(const json_t *result, const void *arg);

typedef struct fan {
  const cl_coll *c;
  const char *op;
  char *one;      /* the body of every shard, or NULL: texts */
  size_t one_len;
  char **texts;   /* per shard (qv_malloc'd); NULL: the shard is not asked */
  size_t *lens;
  bool pass_404;  /* a 404 of a shard is the answer (a point named is missing) */
  fan_check check; /* the shape of a good "result" (NULL: any) */
  const void *check_arg;
  json_t **res;   /* per shard: "result" of the answer taken */
  bool *failed;   /* per shard: asked, and no copy answered */
} fan;

static bool fan_init(fan *f, const cl_coll *c, const char *op) {
  memset(f, 0, sizeof *f);
  f->c = c;
  f->op = op;
  uint32_t ns = c->shard_number;
  f->texts = qv_calloc(ns + 1, sizeof *f->texts);
  f->lens = qv_calloc(ns + 1, sizeof *f->lens);
  f->res = qv_calloc(ns + 1, sizeof *f->res);
  f->failed = qv_calloc(ns + 1, sizeof *f->failed);
  return f->texts && f->lens && f->res && f->failed;
}

static void fan_free(fan *f) {
  for (uint32_t k = 0; k < f->c->shard_number; k++) {
    if (f->texts) qv_free(f->texts[k]);
    if (f->res) json_decref(f->res[k]);
  }
  qv_free(f->one);
  qv_free(f->texts);
  qv_free(f->lens);
  qv_free(f->res);
  qv_free(f->failed);
  memset(f, 0, sizeof *f);
}

static const char *fan_body(const fan *f, uint32_t k, size_t *len) {
  *len = f->one ? f->one_len : f->lens[k];
  return f->one ? f->one : f->texts[k];
}

static bool any_failed(const fan *f) {
  for (uint32_t k = 0; k < f->c->shard_number; k++)
    if (f->failed[k]) return true;
  return false;
}

typedef struct http_job {
  cl_call *calls;
  size_t n;
} http_job;

static void *http_thread(void *arg) {
  http_job *j = arg;
  cl_http_run(j->calls, j->n, READ_CALL_MS);
  return NULL;
}

typedef struct fan_round {
  uint32_t *attempt;
  bool *done;
  clr_reply held; /* the 4xx to answer with, the best so far */
} fan_round;

/* Takes one copy's answer for shard k (*body is taken when kept). A 400 or
 * 422 (a request error) beats a 404 (a missing point) as the answer. */
static void fan_take(fan *f, fan_round *fr, uint32_t k, unsigned status, char **body,
                     size_t len, const char *node) {
  if (status == 200) {
    char msg[128];
    json_t *o = jsonio_parse(*body ? *body : "", len, msg, sizeof msg);
    json_t *res = json_incref(json_object_get(o, "result"));
    json_decref(o);
    if (res && (f->check == NULL || f->check(res, f->check_arg))) {
      f->res[k] = res;
      fr->done[k] = true;
      return;
    }
    json_decref(res);
    qv_log(QV_LOG_WARN, "cluster", "%s on shard %u at %s: unexpected answer", f->op, k, node);
  } else if (status == 400 || status == 422 || (status == 404 && f->pass_404)) {
    fr->done[k] = true;
    if (fr->held.status == 0 || (fr->held.status == 404 && status != 404)) {
      qv_free(fr->held.body);
      fr->held = (clr_reply){status, *body, len};
      *body = NULL;
    }
    return;
  } else if (status != 0) {
    qv_log(QV_LOG_WARN, "cluster", "%s on shard %u at %s: %u", f->op, k, node, status);
  }
  fr->attempt[k]++;
}

/* The copies of shard `sh` to ask, in order: this node's, the primary, the
 * other insync ones. */
uint32_t clr_candidates(const cl_shard *sh, const char *me, const char **cand) {
  uint32_t nc = 0;
  const cl_replica *mine = clr_my_copy(sh);
  if (mine && mine->state == CL_INSYNC) cand[nc++] = me;
  if (strcmp(sh->primary, me)) cand[nc++] = sh->primary;
  for (uint32_t i = 0; i < sh->n_reps; i++)
    if (sh->reps[i].state == CL_INSYNC && strcmp(sh->reps[i].node, me) &&
        strcmp(sh->reps[i].node, sh->primary))
      cand[nc++] = sh->reps[i].node;
  return nc;
}

/* Runs f->op on every shard that has a body, each at one insync copy,
 * failing over to the next copy. True: every shard answered or is marked
 * failed. False: r is answered (a shard's 4xx, or no memory). Remote
 * copies are asked in parallel, beside the local reads. */
static bool fan_run(srv_req *r, fan *f) {
  const cl_coll *c = f->c;
  uint32_t ns = c->shard_number;
  fan_round fr = {qv_calloc(ns + 1, sizeof(uint32_t)), qv_calloc(ns + 1, sizeof(bool)), {0}};
  uint32_t *which = qv_calloc(ns + 1, sizeof *which), *local = qv_calloc(ns + 1, sizeof *local);
  cl_call *calls = qv_calloc(ns + 1, sizeof *calls);
  srv_handler fn = op_fn(f->op);
  bool ok = false;
  if (!fr.attempt || !fr.done || !which || !local || !calls || fn == NULL) {
    srv_fail(r, 500, "Service internal error: out of memory");
    goto out;
  }
  size_t blen;
  for (uint32_t k = 0; k < ns; k++) fr.done[k] = fan_body(f, k, &blen) == NULL;
  const char *me = cl_node_id(clr_node());
  for (;;) {
    size_t n = 0, n_local = 0;
    bool left = false;
    for (uint32_t k = 0; k < ns; k++) {
      if (fr.done[k]) continue;
      const char *cand[CL_RF_MAX + 1];
      uint32_t nc = clr_candidates(&c->shards[k], me, cand);
      if (fr.attempt[k] >= nc) {
        fr.done[k] = f->failed[k] = true;
        continue;
      }
      left = true;
      const char *node = cand[fr.attempt[k]];
      char addr[300];
      if (!strcmp(node, me)) {
        local[n_local++] = k;
      } else if (cl_node_iaddr(clr_node(), node, addr, sizeof addr)) {
        cl_call *cc = &calls[n];
        memset(cc, 0, sizeof *cc);
        snprintf(cc->url, sizeof cc->url, "http://%s/internal/shards/%s/%u/%s", addr, c->name, k,
                 f->op);
        cc->body = fan_body(f, k, &cc->len);
        cc->api_key = clr_api_key();
        cc->timeout_ms = fr.attempt[k] + 1 < nc ? HEDGE_MS : READ_CALL_MS;
        which[n++] = k;
      } else {
        fr.attempt[k]++;
      }
    }
    if (!left) break;
    http_job job = {calls, n};
    pthread_t th;
    bool threaded = n > 0 && n_local > 0 && pthread_create(&th, NULL, http_thread, &job) == 0;
    if (!threaded) cl_http_run(calls, n, READ_CALL_MS);
    for (size_t i = 0; i < n_local; i++) {
      uint32_t k = local[i];
      clr_reply rp = {0};
      const char *body = fan_body(f, k, &blen);
      shard_read(r->s, c->name, k, fn, body, blen, &rp);
      fan_take(f, &fr, k, rp.status, &rp.body, rp.len, me);
      clr_reply_clear(&rp);
    }
    if (threaded) pthread_join(th, NULL);
    for (size_t i = 0; i < n; i++) {
      cl_call *cc = &calls[i];
      if (cc->status == 0)
        qv_log(QV_LOG_WARN, "cluster", "%s on shard %u: %s", f->op, which[i], cc->err);
      fan_take(f, &fr, which[i], cc->status, &cc->resp, cc->resp_len, cc->url);
      cl_call_clear(cc);
    }
    if (fr.held.status) {
      srv_raw(r, fr.held.status, "application/json", fr.held.body, fr.held.len, qv_free);
      fr.held.body = NULL;
      goto out;
    }
  }
  ok = true;
out:
  qv_free(fr.held.body);
  qv_free(fr.attempt);
  qv_free(fr.done);
  qv_free(which);
  qv_free(local);
  qv_free(calls);
  return ok;
}

/* Answers with `result` (stolen; NULL = no memory): Qdrant's envelope, plus
 * "partial" and "failed_shards" when a shard had no answering copy. */
static void answer(srv_req *r, const fan *f, json_t *result) {
  if (result == NULL) {
    srv_fail(r, 500, "Service internal error: out of memory");
    return;
  }
  if (!any_failed(f)) {
    srv_ok(r, result);
    return;
  }
  json_t *failed = json_array();
  for (uint32_t k = 0; k < f->c->shard_number; k++)
    if (f->failed[k]) json_array_append_new(failed, json_integer(k));
  json_t *o = json_pack("{s:o, s:s, s:f, s:b, s:o}", "result", result, "status", "ok", "time",
                        srv_now() - r->t0, "partial", 1, "failed_shards", failed);
  size_t len = 0;
  char *text = o ? jsonio_dumps(o, &len) : NULL;
  json_decref(o);
  if (text) srv_raw(r, 200, "application/json", text, len, qv_free);
  else srv_fail(r, 500, "Service internal error: out of memory");
}

static bool check_array(const json_t *res, const void *arg) {
  (void)arg;
  return json_is_array(res);
}

static bool check_points(const json_t *res, const void *arg) {
  (void)arg;
  return json_is_array(json_object_get(res, "points"));
}

/* ---- merging ranked points ------------------------------------------------------------ */

typedef struct hit {
  json_t *v;
  double score; /* score, or order_value */
  char id[IDK];
} hit;

typedef struct hits {
  hit *h;
  size_t n, cap;
} hits;

static void hits_free(hits *hs) {
  for (size_t i = 0; i < hs->n; i++) json_decref(hs->h[i].v);
  qv_free(hs->h);
  memset(hs, 0, sizeof *hs);
}

/* Adds the points of `arr`, each scored by its field `key`. */
static bool hits_add(hits *hs, const json_t *arr, const char *key) {
  size_t i;
  json_t *v;
  json_array_foreach(arr, i, v) {
    if (hs->n == hs->cap) {
      size_t nc = hs->cap ? 2 * hs->cap : 64;
      hit *p = qv_realloc(hs->h, nc * sizeof *p);
      if (p == NULL) return false;
      hs->h = p;
      hs->cap = nc;
    }
    hit *h = &hs->h[hs->n++];
    h->score = 0;
    jsonio_get_f64(json_object_get(v, key), &h->score);
    json_key(json_object_get(v, "id"), h->id);
    h->v = json_incref(v);
  }
  return true;
}

/* arg: +1 ascending, -1 descending, 0 id order only; ties by id. */
static int hit_cmp(const void *a, const void *b, void *arg) {
  const hit *x = a, *y = b;
  int dir = *(const int *)arg;
  if (dir && x->score != y->score) return (x->score < y->score ? -1 : 1) * dir;
  return strcmp(x->id, y->id);
}

static void hits_sort(hits *hs, int dir) { qsort_r(hs->h, hs->n, sizeof *hs->h, hit_cmp, &dir); }

/* ---- retrieve and GET one point ---------------------------------------------------------- */

static void retrieve(srv_req *r, const cl_coll *c) {
  json_t *body = srv_body(r, false), *parts_all = NULL, **parts = NULL, *byid = NULL;
  qv_point_id *ids = NULL;
  size_t n = 0;
  uint32_t ns = c->shard_number;
  fan f;
  bool fan_ok = fan_init(&f, c, "retrieve");
  if (body == NULL) goto out;
  const json_t *arr = json_object_get(body, "ids");
  if (arr == NULL) {
    srv_format_err(r, "missing field `ids`");
    goto out;
  }
  if (!srv_ids_parse(r, arr, "ids", &ids, &n)) goto out;
  parts = qv_calloc(ns + 1, sizeof *parts);
  byid = json_object();
  if (!fan_ok || parts == NULL || byid == NULL) {
    srv_fail(r, 500, "Service internal error: out of memory");
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    uint32_t k = ring_shard_of(&ids[i], ns);
    if (parts[k] == NULL) parts[k] = json_array();
    json_array_append(parts[k], json_array_get(arr, i));
  }
  /* No ids: one shard still checks with_payload / with_vector. */
  if (n == 0) parts[0] = json_array();
  for (uint32_t k = 0; k < ns; k++) {
    if (parts[k] == NULL) continue;
    json_object_set(body, "ids", parts[k]);
    if ((f.texts[k] = jsonio_dumps(body, &f.lens[k])) == NULL) {
      srv_fail(r, 500, "Service internal error: out of memory");
      goto out;
    }
  }
  f.check = check_array;
  if (!fan_run(r, &f)) goto out;
  for (uint32_t k = 0; k < ns; k++) {
    size_t i;
    json_t *rec;
    json_array_foreach(f.res[k], i, rec) {
      char key[IDK];
      json_key(json_object_get(rec, "id"), key);
      json_object_set(byid, key, rec);
    }
  }
  /* In the order asked, repeats included, missing ids skipped: qv_get's. */
  parts_all = json_array();
  for (size_t i = 0; parts_all && i < n; i++) {
    char key[IDK];
    id_key(&ids[i], key);
    json_t *rec = json_object_get(byid, key);
    if (rec) json_array_append(parts_all, rec);
  }
  answer(r, &f, parts_all);
  parts_all = NULL;
out:
  for (uint32_t k = 0; parts && k < ns; k++) json_decref(parts[k]);
  qv_free(parts);
  qv_free(ids);
  json_decref(byid);
  json_decref(body);
  fan_free(&f);
}

static void point_get(srv_req *r, const cl_coll *c) {
  qv_point_id id;
  if (!srv_path_id(r, r->args[1], &id)) return;
  uint32_t k = ring_shard_of(&id, c->shard_number);
  fan f;
  json_t *q = json_pack("{s:[o], s:b, s:b}", "ids", srv_id_json(&id), "with_payload", 1,
                        "with_vector", 1);
  if (!fan_init(&f, c, "retrieve") || q == NULL ||
      (f.texts[k] = jsonio_dumps(q, &f.lens[k])) == NULL) {
    srv_fail(r, 500, "Service internal error: out of memory");
    goto out;
  }
  f.check = check_array;
  if (!fan_run(r, &f)) goto out;
  char t[40];
  srv_id_text(&id, t);
  if (f.failed[k])
    srv_fail(r, 503, "Service unavailable: no copy of shard %u of `%s` answered", k, c->name);
  else if (json_array_size(f.res[k]) == 0)
    srv_fail(r, 404, "Not found: No point with id %s found", t);
  else
    srv_ok(r, json_incref(json_array_get(f.res[k], 0)));
out:
  json_decref(q);
  fan_free(&f);
}

/* ---- scroll ------------------------------------------------------------------------------- */

/* limit (alias top), as the handlers read it; false when it is not valid
 * (the shards then refuse the request). */
static bool req_limit(const json_t *req, uint64_t dflt, uint64_t *out) {
  const char *key = json_object_get(req, "top") && !json_object_get(req, "limit") ? "top"
                                                                                   : "limit";
  const json_t *v = json_object_get(req, key);
  *out = dflt;
  if (v == NULL || json_is_null(v)) return dflt != 0;
  return jsonio_get_u64(v, out) && *out >= 1 && *out <= LIMIT_MAX;
}

/* order_by's direction: 1 ascending, -1 descending. */
static int order_dir(const json_t *ob) {
  const char *d = json_string_value(json_object_get(ob, "direction"));
  return d && !strcmp(d, "desc") ? -1 : 1;
}

static void scroll(srv_req *r, const cl_coll *c) {
  json_t *body = srv_body(r, true), *pts = NULL, *next = NULL;
  hits hs = {0};
  fan f;
  bool fan_ok = fan_init(&f, c, "scroll");
  if (body == NULL) goto out;
  const json_t *off = json_object_get(body, "offset");
  qv_point_id start;
  if (off && !json_is_null(off) && !srv_id_parse(r, off, "offset", &start)) goto out;
  uint64_t limit;
  req_limit(body, 10, &limit);
  const json_t *ob = json_object_get(body, "order_by");
  bool ordered = ob && !json_is_null(ob);
  if (!fan_ok || (f.one = jsonio_dumps(body, &f.one_len)) == NULL) {
    srv_fail(r, 500, "Service internal error: out of memory");
    goto out;
  }
  f.check = check_points;
  if (!fan_run(r, &f)) goto out;
  /* Each shard returned its first `limit` from the same start; the page is
   * the first `limit` of their union, and the next page starts at the
   * smallest id not on it: the next merged point or a shard's own next. */
  char best[IDK] = "";
  for (uint32_t k = 0; k < c->shard_number; k++) {
    if (f.res[k] == NULL) continue;
    if (!hits_add(&hs, json_object_get(f.res[k], "points"), "order_value")) goto nomem;
    json_t *nx = json_object_get(f.res[k], "next_page_offset");
    char key[IDK];
    json_key(nx, key);
    if (key[0] && (best[0] == 0 || strcmp(key, best) < 0)) {
      memcpy(best, key, IDK);
      next = nx;
    }
  }
  hits_sort(&hs, ordered ? order_dir(ob) : 0);
  if (!ordered && hs.n > limit && (best[0] == 0 || strcmp(hs.h[limit].id, best) < 0))
    next = json_object_get(hs.h[limit].v, "id");
  pts = json_array();
  for (size_t i = 0; pts && i < hs.n && i < limit; i++) json_array_append(pts, hs.h[i].v);
  answer(r, &f, json_pack("{s:o, s:O}", "points", pts, "next_page_offset",
                          !ordered && next ? next : json_null()));
  goto out;
nomem:
  srv_fail(r, 500, "Service internal error: out of memory");
out:
  hits_free(&hs);
  json_decref(body);
  fan_free(&f);
}

/* ---- count ------------------------------------------------------------------------------- */

static bool check_count(const json_t *res, const void *arg) {
  uint64_t n;
  (void)arg;
  return jsonio_get_u64(json_object_get(res, "count"), &n);
}

static void count(srv_req *r, const cl_coll *c) {
  json_t *body = srv_body(r, true);
  fan f;
  bool fan_ok = fan_init(&f, c, "count");
  if (body == NULL) goto out;
  if (!fan_ok || (f.one = jsonio_dumps(body, &f.one_len)) == NULL) {
    srv_fail(r, 500, "Service internal error: out of memory");
    goto out;
  }
  f.check = check_count;
  if (!fan_run(r, &f)) goto out;
  uint64_t total = 0;
  for (uint32_t k = 0; k < c->shard_number; k++) {
    uint64_t n = 0;
    if (f.res[k]) jsonio_get_u64(json_object_get(f.res[k], "count"), &n);
    total += n;
  }
  answer(r, &f, json_pack("{s:o}", "count", jsonio_u64(total)));
out:
  json_decref(body);
  fan_free(&f);
}

/* ---- point ids given as examples or queries ------------------------------------------------ */

/* One top-level request of a search, query or recommend (batches have
 * several): what the merge applies. */
typedef struct sub {
  uint64_t limit, offset;
  int dir;            /* 1: ascending scores (a distance); -1: descending */
  char (*excl)[IDK];  /* ids dropped from the merged hits (examples, query by id) */
  size_t n_excl, cap_excl;
} sub;

enum { W_COLLECT, W_SUBST };

/* A walk over a request looking for point ids where the handlers take a
 * vector or an id. COLLECT gathers them; SUBST replaces each by the
 * point's vector of the space searched. */
typedef struct walk {
  int mode;
  json_t *want;     /* COLLECT: id key -> id */
  json_t *got;      /* SUBST: id key -> the point's "vector" (null: none) */
  bool unresolved;  /* SUBST: an id was left as it was */
  bool nomem;
  sub *top;         /* SUBST: the request's exclusions */
  json_t *level_ex; /* SUBST: ids excluded at the nested level walked */
} walk;

/* The vector of space `space` in a retrieved point's "vector". */
static json_t *vector_of(json_t *pv, const char *space) {
  if (json_is_array(pv)) return space[0] == 0 ? pv : NULL;
  json_t *v = json_object_get(pv, space);
  return json_is_array(v) ? v : NULL;
}

static void excl_add(walk *w, sub *s, const char *key) {
  if (s->n_excl == s->cap_excl) {
    size_t nc = s->cap_excl ? 2 * s->cap_excl : 8;
    char(*p)[IDK] = qv_realloc(s->excl, nc * sizeof *p);
    if (p == NULL) {
      w->nomem = true;
      return;
    }
    s->excl = p;
    s->cap_excl = nc;
  }
  memcpy(s->excl[s->n_excl++], key, IDK);
}

/* parent[key] (an object) or parent[i] (an array): a point id? */
static void walk_slot(walk *w, json_t *parent, const char *key, size_t i, const char *space,
                      bool top) {
  json_t *v = key ? json_object_get(parent, key) : json_array_get(parent, i);
  qv_point_id id;
  if (v == NULL || json_is_array(v) || !json_id(v, &id)) return;
  char k[IDK];
  id_key(&id, k);
  if (w->mode == W_COLLECT) {
    if (json_object_set_new(w->want, k, srv_id_json(&id))) w->nomem = true;
    return;
  }
  json_t *vec = vector_of(json_object_get(w->got, k), space);
  if (vec == NULL) {
    w->unresolved = true;
    return;
  }
  if (key) json_object_set(parent, key, vec);
  else json_array_set(parent, i, vec);
  if (top) excl_add(w, w->top, k);
  else if (json_array_append_new(w->level_ex, srv_id_json(&id))) w->nomem = true;
}

static void walk_examples(walk *w, json_t *obj, const char *space, bool top) {
  static const char *const lists[] = {"positive", "negative"};
  for (size_t l = 0; l < 2; l++) {
    json_t *arr = json_object_get(obj, lists[l]);
    for (size_t i = 0; json_is_array(arr) && i < json_array_size(arr); i++)
      walk_slot(w, arr, NULL, i, space, top);
  }
}

/* A nested level that looked up ids excludes them with a filter, which its
 * own prefetches then inherit (the single node drops them from that level
 * only; see docs/cluster.md). */
static void level_exclude(walk *w, json_t *lv, json_t *ids) {
  json_t *f = json_object_get(lv, "filter");
  bool has = f && !json_is_null(f);
  if (has && !json_is_object(f)) return; /* the shards refuse it */
  json_t *nf = json_pack("{s:[{s:O}]}", "must_not", "has_id", ids);
  if (nf && has) json_object_set_new(nf, "must", json_pack("[O]", f));
  if (nf == NULL || json_object_set_new(lv, "filter", nf)) w->nomem = true;
}

/* A level of the Query API: its query, then its prefetches. */
static void walk_level(walk *w, json_t *lv, bool top, int depth) {
  if (!json_is_object(lv) || depth > WALK_DEPTH_MAX) return;
  const json_t *u = json_object_get(lv, "using");
  if (u && !json_is_null(u) && !json_is_string(u)) return; /* the shards refuse it */
  const char *space = json_is_string(u) ? json_string_value(u) : "";
  json_t *saved = w->level_ex;
  if (!top && w->mode == W_SUBST) w->level_ex = json_array();
  json_t *q = json_object_get(lv, "query");
  if (json_is_object(q)) {
    json_t *rec = json_object_get(q, "recommend");
    if (json_object_get(q, "nearest")) walk_slot(w, q, "nearest", 0, space, top);
    else if (json_is_object(rec)) walk_examples(w, rec, space, top);
  } else if (q) {
    walk_slot(w, lv, "query", 0, space, top);
  }
  json_t *pf = json_object_get(lv, "prefetch");
  if (json_is_object(pf)) walk_level(w, pf, false, depth + 1);
  for (size_t i = 0; json_is_array(pf) && i < json_array_size(pf); i++)
    walk_level(w, json_array_get(pf, i), false, depth + 1);
  if (!top && w->mode == W_SUBST) {
    if (json_array_size(w->level_ex)) level_exclude(w, lv, w->level_ex);
    json_decref(w->level_ex);
    w->level_ex = saved;
  }
}

enum { RQ_SEARCH, RQ_QUERY, RQ_RECOMMEND };

static void walk_request(walk *w, json_t *req, int kind) {
  if (!json_is_object(req)) return;
  if (kind == RQ_QUERY) {
    walk_level(w, req, true, 0);
  } else if (kind == RQ_RECOMMEND) {
    const json_t *u = json_object_get(req, "using");
    if (u && !json_is_null(u) && !json_is_string(u)) return;
    walk_examples(w, req, json_is_string(u) ? json_string_value(u) : "", true);
  }
}

/* Looks up the points of w->want through the cluster (retrieve with every
 * vector, on their shards) into w->got. False: r is answered — an error,
 * or 503 when a shard holding one of them has no answering copy (the id
 * cannot be told missing from unreachable). */
static bool resolve(srv_req *r, const cl_coll *c, walk *w) {
  uint32_t ns = c->shard_number;
  json_t **parts = qv_calloc(ns + 1, sizeof *parts);
  fan f;
  bool ok = false, fan_ok = fan_init(&f, c, "retrieve");
  if (parts == NULL || !fan_ok) goto nomem;
  const char *key;
  json_t *idj;
  json_object_foreach(w->want, key, idj) {
    qv_point_id id;
    json_id(idj, &id);
    uint32_t k = ring_shard_of(&id, ns);
    if (parts[k] == NULL)
      parts[k] = json_pack("{s:[], s:b, s:b}", "ids", "with_payload", 0, "with_vector", 1);
    if (parts[k] == NULL) goto nomem;
    json_array_append(json_object_get(parts[k], "ids"), idj);
  }
  for (uint32_t k = 0; k < ns; k++)
    if (parts[k] && (f.texts[k] = jsonio_dumps(parts[k], &f.lens[k])) == NULL) goto nomem;
  f.check = check_array;
  if (!fan_run(r, &f)) goto out;
  for (uint32_t k = 0; k < ns; k++) {
    if (f.failed[k]) {
      srv_fail(r, 503, "Service unavailable: no copy of shard %u of `%s` answered to look up "
                       "the points given by id", k, c->name);
      goto out;
    }
    size_t i;
    json_t *rec;
    json_array_foreach(f.res[k], i, rec) {
      char rk[IDK];
      json_t *v = json_object_get(rec, "vector");
      json_key(json_object_get(rec, "id"), rk);
      json_object_set(w->got, rk, v ? v : json_null());
    }
  }
  ok = true;
  goto out;
nomem:
  srv_fail(r, 500, "Service internal error: out of memory");
out:
  for (uint32_t k = 0; parts && k < ns; k++) json_decref(parts[k]);
  qv_free(parts);
  fan_free(&f);
  return ok;
}

/* ---- search, query, recommend and their batches --------------------------------------------- */

/* 1 when space `name` ("" = the unnamed vector) ranks ascending (Euclid,
 * Manhattan: a distance), else -1. */
static int space_dir(const json_t *params, const char *name) {
  json_t *vecs = json_object_get(params, "vectors");
  json_t *sp = name && *name ? json_object_get(vecs, name) : vecs;
  if (sp && !json_object_get(sp, "distance") && (!name || !*name)) sp = json_object_get(vecs, "");
  const char *d = json_string_value(json_object_get(sp, "distance"));
  return d && (!strcasecmp(d, "Euclid") || !strcasecmp(d, "Manhattan")) ? 1 : -1;
}

/* The order of a query level's hits: fusion scores descend; no query
 * passes its only prefetch's list through (or is id order, score 0). */
static int query_dir(const json_t *params, const json_t *lv, int depth) {
  const json_t *q = json_object_get(lv, "query");
  if (json_is_object(q) && (json_object_get(q, "fusion") || json_object_get(q, "rrf")))
    return -1;
  if (q == NULL || json_is_null(q)) {
    const json_t *pf = json_object_get(lv, "prefetch");
    if (json_is_array(pf) && json_array_size(pf) == 1) pf = json_array_get(pf, 0);
    return json_is_object(pf) && depth < WALK_DEPTH_MAX ? query_dir(params, pf, depth + 1) : -1;
  }
  return space_dir(params, json_string_value(json_object_get(lv, "using")));
}

static int request_dir(const json_t *params, const json_t *req, int kind) {
  if (kind == RQ_QUERY) return query_dir(params, req, 0);
  if (kind == RQ_RECOMMEND) return space_dir(params, json_string_value(json_object_get(req, "using")));
  const json_t *v = json_object_get(req, "vector");
  return space_dir(params, json_is_object(v) ? json_string_value(json_object_get(v, "name")) : "");
}

/* Rewrites a top-level request so each shard returns every hit the merge
 * may need: limit = offset + limit + excluded ids, offset 0. Invalid
 * values are left for the shards to refuse as a single node would. */
static void widen(json_t *req, int kind, sub *s) {
  uint64_t off = 0;
  const json_t *ov = json_object_get(req, "offset");
  s->limit = 10;
  if (!json_is_object(req) || !req_limit(req, kind == RQ_QUERY ? 10 : 0, &s->limit)) return;
  if (ov && !json_is_null(ov) && (!jsonio_get_u64(ov, &off) || off > LIMIT_MAX)) return;
  s->offset = off;
  uint64_t want = s->limit + off + s->n_excl;
  json_object_del(req, "top");
  json_object_set_new(req, "limit", jsonio_u64(want < LIMIT_MAX ? want : LIMIT_MAX));
  json_object_set_new(req, "offset", json_integer(0));
}

typedef struct shape {
  int kind;
  bool batch;
  size_t n_sub;
} shape;

static const json_t *shard_hits(const json_t *res, const shape *sh, size_t i) {
  const json_t *x = sh->batch ? json_array_get(res, i) : res;
  return sh->kind == RQ_QUERY ? json_object_get(x, "points") : x;
}

static bool check_hits(const json_t *res, const void *arg) {
  const shape *sh = arg;
  if (sh->batch && json_array_size(res) != sh->n_sub) return false;
  for (size_t i = 0; i < sh->n_sub; i++)
    if (!json_is_array(shard_hits(res, sh, i))) return false;
  return true;
}

static bool excluded(const sub *s, const char *key) {
  for (size_t i = 0; i < s->n_excl; i++)
    if (!strcmp(s->excl[i], key)) return true;
  return false;
}

/* The merged answer of request i. */
static json_t *merge_hits(const fan *f, const shape *sh, size_t i, const sub *s) {
  hits hs = {0};
  json_t *out = json_array();
  for (uint32_t k = 0; out && k < f->c->shard_number; k++)
    if (f->res[k] && !hits_add(&hs, shard_hits(f->res[k], sh, i), "score")) {
      json_decref(out);
      out = NULL;
    }
  if (out) hits_sort(&hs, s->dir);
  uint64_t skipped = 0;
  for (size_t j = 0; out && j < hs.n && json_array_size(out) < s->limit; j++) {
    if (excluded(s, hs.h[j].id)) continue;
    if (skipped < s->offset) skipped++;
    else json_array_append(out, hs.h[j].v);
  }
  hits_free(&hs);
  return out && sh->kind == RQ_QUERY ? json_pack("{s:o}", "points", out) : out;
}

/* Request i of a batch (`list`), or the body itself. */
static json_t *req_at(json_t *body, json_t *list, size_t i) {
  return list ? json_array_get(list, i) : body;
}

static void search_like(srv_req *r, const cl_coll *c, int kind, bool batch) {
  static const char *const ops[2][3] = {{"search", "query", "recommend"},
                                        {"search_batch", "query_batch", "recommend_batch"}};
  json_t *body = srv_body(r, kind == RQ_QUERY && !batch);
  json_t *params = json_loads(c->params ? c->params : "{}", 0, NULL);
  walk w = {W_COLLECT, json_object(), json_object(), false, false, NULL, NULL};
  sub *subs = NULL;
  shape sh = {kind, batch, 1};
  fan f;
  bool fan_ok = fan_init(&f, c, ops[batch][kind]);
  if (body == NULL) goto out;
  json_t *list = batch ? json_object_get(body, "searches") : NULL;
  if (batch && !json_is_array(list)) {
    srv_format_err(r, list ? "searches: expected a sequence" : "missing field `searches`");
    goto out;
  }
  sh.n_sub = batch ? json_array_size(list) : 1;
  subs = qv_calloc(sh.n_sub + 1, sizeof *subs);
  if (!fan_ok || subs == NULL || w.want == NULL || w.got == NULL) goto nomem;
  for (size_t i = 0; i < sh.n_sub; i++) walk_request(&w, req_at(body, list, i), kind);
  if (w.nomem) goto nomem;
  if (json_object_size(w.want) && !resolve(r, c, &w)) goto out;
  w.mode = W_SUBST;
  for (size_t i = 0; i < sh.n_sub; i++) {
    json_t *req = req_at(body, list, i);
    w.top = &subs[i];
    walk_request(&w, req, kind);
    widen(req, kind, &subs[i]);
    subs[i].dir = request_dir(params, req, kind);
  }
  if (w.nomem || (f.one = jsonio_dumps(body, &f.one_len)) == NULL) goto nomem;
  f.pass_404 = w.unresolved;
  f.check = check_hits;
  f.check_arg = &sh;
  if (!fan_run(r, &f)) goto out;
  json_t *result = batch ? json_array() : NULL;
  for (size_t i = 0; i < sh.n_sub; i++) {
    json_t *one = merge_hits(&f, &sh, i, &subs[i]);
    if (!batch) result = one;
    else if (one == NULL || json_array_append_new(result, one)) {
      json_decref(result);
      result = NULL;
      break;
    }
  }
  answer(r, &f, result);
  goto out;
nomem:
  srv_fail(r, 500, "Service internal error: out of memory");
out:
  for (size_t i = 0; subs && i < sh.n_sub; i++) qv_free(subs[i].excl);
  qv_free(subs);
  json_decref(w.want);
  json_decref(w.got);
  json_decref(params);
  json_decref(body);
  fan_free(&f);
}

/* ---- routing -------------------------------------------------------------------------------- */

bool clr_read_route(srv_req *r, const cl_coll *c) {
  srv_handler fn = router_routes[r->route].fn;
  int kind = fn == h_search || fn == h_search_batch         ? RQ_SEARCH
             : fn == h_query || fn == h_query_batch         ? RQ_QUERY
             : fn == h_recommend || fn == h_recommend_batch ? RQ_RECOMMEND
                                                            : -1;
  bool known = kind >= 0 || fn == h_count || fn == h_scroll || fn == h_retrieve ||
               fn == h_point_get;
  if (!known) return false;
  if (!c->has_map) {
    srv_fail(r, 503, "Service unavailable: collection `%s` is not placed", c->name);
    return true;
  }
  if (kind >= 0)
    search_like(r, c, kind, fn == h_search_batch || fn == h_query_batch || fn == h_recommend_batch);
  else if (fn == h_count) count(r, c);
  else if (fn == h_scroll) scroll(r, c);
  else if (fn == h_retrieve) retrieve(r, c);
  else point_get(r, c);
  return true;
}
