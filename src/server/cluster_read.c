/* cluster_read.c: reads of a distributed collection through any node, and
 * the copy side of a shard read.
 *
 *   router  --POST /internal/shards/c/k/search|query|count--> one insync copy
 *           per shard: this node's own first, then the primary, then the
 *           others; on a failure, 409 or no answer within HEDGE_MS (while
 *           another copy is left) the next one; hits merged by score.
 * A shard whose copies all failed makes the answer partial (HTTP 200 plus
 * "partial": true and "failed_shards"); a 400/422 from a shard is passed
 * through as the answer.
 *
 * Invariant: a copy answers a read only while the map says it is insync
 * (a partial or dead copy may miss writes).
 * Not owned: writes and transfers (routes_cluster.c, cluster_xfer.c). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"
#include "cluster/cluster_http.h"
#include "server/cluster_int.h"

#define READ_CALL_MS 4000
/* Hedging: a shard copy that has not answered a search within this while
 * another copy could is given up and the next copy asked. */
#define HEDGE_MS 1000

enum { RD_SEARCH, RD_QUERY, RD_COUNT, RD_SCROLL };

/* A read on this node's copy of shard k. */
static void shard_read(srv *s, const char *name, uint32_t k, int kind, const char *body,
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
  clr_sub_run(s, kind == RD_SEARCH ? h_search : kind == RD_QUERY ? h_query
             : kind == RD_COUNT ? h_count : h_scroll, sn, body, len, out);
done:
  cl_coll_free(&c);
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
  const char *me = cl_node_id(clr_node());
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
      const cl_replica *mine = clr_my_copy(sh);
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
        clr_reply rp = {0};
        shard_read(r->s, c->name, k, kind, text, len, &rp);
        if (rp.status == 200 && collect(rp.body, rp.len, kind, &hits, &n_hits, &cap_hits, &count))
          done[k] = true;
        else if (rp.status == 400 || rp.status == 422) {
          srv_raw(r, rp.status, "application/json", rp.body, rp.len, qv_free);
          goto out;
        } else attempt[k]++;
        clr_reply_clear(&rp);
      } else if (cl_node_iaddr(clr_node(), node, addr, sizeof addr)) {
        memset(&calls[n], 0, sizeof calls[n]);
        snprintf(calls[n].url, sizeof calls[n].url, "http://%s/internal/shards/%s/%u/%s", addr,
                 c->name, k, opname);
        calls[n].body = text;
        calls[n].len = len;
        calls[n].api_key = clr_api_key();
        calls[n].timeout_ms = attempt[k] + 1 < nc ? HEDGE_MS : READ_CALL_MS;
        which[n++] = k;
      } else {
        attempt[k]++;
      }
    }
    cl_http_run(calls, n, READ_CALL_MS);
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


bool clr_shard_read(srv *s, const char *name, uint32_t k, const char *op, const char *body,
                    size_t len, clr_reply *out) {
  int kind = !strcmp(op, "search") ? RD_SEARCH
             : !strcmp(op, "query") ? RD_QUERY
             : !strcmp(op, "count") ? RD_COUNT
             : !strcmp(op, "scroll") ? RD_SCROLL
                                     : -1;
  if (kind < 0) return false;
  shard_read(s, name, k, kind, body, len, out);
  return true;
}

bool clr_read_route(srv_req *r, const cl_coll *c) {
  srv_handler fn = router_routes[r->route].fn;
  if (fn == h_search) read_op(r, c, RD_SEARCH);
  else if (fn == h_query) read_op(r, c, RD_QUERY);
  else if (fn == h_count) read_op(r, c, RD_COUNT);
  else return false;
  return true;
}
