/* cluster_xfer.c: cluster mode's per-shard machinery on a node — shard
 * locks, per-shard sequence numbers, the transfer source, the janitor.
 *
 * Transfer (this node is the primary of a shard with a partial copy; the
 * controller adds it, src/cluster/plan.h): one thread runs one transfer at
 * a time (the "one out per node" throttle), by streaming points:
 *   1. under the shard lock: the target wipes its copy (xfer_begin);
 *   2. page after page, each under the shard lock: scroll 256 points of the
 *      local copy (ids ascending, with payloads and vectors) and upsert them
 *      on the target (xfer_put);
 *   3. under the lock: if no live write failed to reach the target since
 *      step 1 (not dirty), the transfer is "done": from now on a write that
 *      fails there fails; the report in etcd says done and the controller
 *      turns the copy insync.
 * Meanwhile every live write of the shard is forwarded to the partial copy
 * by the primary (routes_cluster.c), under the same lock. Because a page is
 * read and delivered under the lock, it reflects every write before it and
 * none after it; every later write reaches the target after the page. So
 * when the scroll ends the target equals the primary — deletes included —
 * without per-point versions. Why streaming and not qv_snapshot_create:
 * a snapshot is a point in time, so the writes after it would have to be
 * replayed from a log by sequence number, which the engine's WAL does not
 * expose by shard sequence; streaming needs only the public upsert/scroll,
 * keeps every write path one order, rebuilds the target's index as the
 * single-node upsert does, and is throttled naturally (a page per lock).
 *
 * Janitor: a local shard copy `c.s<k>` that the map no longer lists on this
 * node is dropped after JANITOR_GRACE_MS (in-flight searches finish).
 *
 * Not owned: the map and its decisions (src/cluster), the HTTP endpoints
 * (routes_cluster.c). */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"
#include "base/log.h"
#include "cluster/cluster_http.h"
#include "server/cluster_int.h"

#define N_LOCKS 1024u
#define PAGE_POINTS 256
#define TICK_MS 200
#define XFER_CALL_MS 5000u
#define RETRY_MS 1000
#define REPORT_MS 500
/* A finished transfer's report is written again this often until the copy
 * is insync: the put may have failed, the lease changed, or a former
 * primary's clean-up deleted the key. */
#define REPUBLISH_MS 1500
#define JANITOR_GRACE_MS 3000
#define N_RECS 256u

static pthread_mutex_t g_locks[N_LOCKS];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void init_locks(void) {
  for (size_t i = 0; i < N_LOCKS; i++) pthread_mutex_init(&g_locks[i], NULL);
}

static uint32_t slot(const char *coll, uint32_t k) {
  uint64_t h = 1469598103934665603ull;
  for (const char *p = coll; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
  h = (h ^ k) * 1099511628211ull;
  return (uint32_t)(h % N_LOCKS);
}

void clx_lock(const char *coll, uint32_t k) {
  pthread_once(&g_once, init_locks);
  pthread_mutex_lock(&g_locks[slot(coll, k)]);
}

void clx_unlock(const char *coll, uint32_t k) { pthread_mutex_unlock(&g_locks[slot(coll, k)]); }

/* ---- per-shard records: sequence numbers and transfers (under g_mu) -------------- */

typedef struct rec {
  char coll[CL_NAME_MAX + 1];
  uint32_t k;
  uint64_t term, seq;      /* primary: last assigned; copy: last applied */
  bool is_primary_seq;
  /* transfer (this node as source) */
  bool xfer_on, done, dirty;
  bool delta; /* catching up from the chain's backlog: live writes are not forwarded */
  char to[CL_ID_MAX + 1];
  int64_t xfer, retry_at_ms, started_ms, published_ms;
  uint64_t xterm, copied, total;
  char phase[16];
} rec;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static int64_t now_ms(void);
static rec *g_recs;
static size_t g_n_recs, g_cap_recs;

static rec *rec_get(const char *coll, uint32_t k, bool add) {
  for (size_t i = 0; i < g_n_recs; i++)
    if (g_recs[i].k == k && !strcmp(g_recs[i].coll, coll)) return &g_recs[i];
  if (!add || strlen(coll) > CL_NAME_MAX) return NULL;
  if (g_n_recs == g_cap_recs) {
    size_t cap = g_cap_recs ? 2 * g_cap_recs : 64;
    rec *v = qv_realloc(g_recs, cap * sizeof *v);
    if (v == NULL) return NULL;
    g_recs = v;
    g_cap_recs = cap;
  }
  rec *r = &g_recs[g_n_recs++];
  memset(r, 0, sizeof *r);
  snprintf(r->coll, sizeof r->coll, "%s", coll);
  r->k = k;
  return r;
}

uint64_t clx_next_seq(const char *coll, uint32_t k, uint64_t term) {
  pthread_mutex_lock(&g_mu);
  rec *r = rec_get(coll, k, true);
  uint64_t seq = 0;
  if (r) {
    /* A term's numbers start from the clock (ms << 16), not from 0: a
     * primary that restarts within its term (the controller never saw it
     * gone) must not reuse numbers its copies already applied. */
    if (r->term != term || !r->is_primary_seq) r->term = term, r->seq = (uint64_t)now_ms() << 16;
    r->is_primary_seq = true;
    seq = ++r->seq;
  }
  pthread_mutex_unlock(&g_mu);
  return seq;
}

bool clx_seq_fresh(const char *coll, uint32_t k, uint64_t term, uint64_t seq) {
  pthread_mutex_lock(&g_mu);
  rec *r = rec_get(coll, k, false);
  bool ok = r == NULL || r->is_primary_seq || term > r->term || (term == r->term && seq > r->seq);
  pthread_mutex_unlock(&g_mu);
  return ok;
}

void clx_seq_applied(const char *coll, uint32_t k, uint64_t term, uint64_t seq) {
  pthread_mutex_lock(&g_mu);
  rec *r = rec_get(coll, k, true);
  if (r && (r->is_primary_seq || term > r->term || (term == r->term && seq > r->seq))) {
    r->is_primary_seq = false;
    r->term = term;
    r->seq = seq;
  }
  pthread_mutex_unlock(&g_mu);
}

bool clx_partial_failed(const char *coll, uint32_t k, const char *to, int64_t xfer) {
  bool must_fail = false;
  pthread_mutex_lock(&g_mu);
  rec *r = rec_get(coll, k, false);
  if (r && r->xfer_on && r->xfer == xfer && !strcmp(r->to, to)) {
    /* After "done" the copy may already be insync: the write fails (and is
     * retried by its router) instead of restarting a copy someone may read. */
    must_fail = r->done;
    if (!r->done) r->dirty = true;
  }
  pthread_mutex_unlock(&g_mu);
  return must_fail;
}

/* ---- the transfer source ----------------------------------------------------------- */

static srv *g_srv;
static pthread_t g_thread;
static bool g_started, g_stop;
static pthread_mutex_t g_stop_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_stop_cv = PTHREAD_COND_INITIALIZER;

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static bool stopping(void) {
  pthread_mutex_lock(&g_stop_mu);
  bool s = g_stop;
  pthread_mutex_unlock(&g_stop_mu);
  return s;
}

static void publish(const rec *r) {
  cl_xfer x;
  memset(&x, 0, sizeof x);
  x.shard = r->k;
  snprintf(x.from, sizeof x.from, "%s", cl_node_id(clr_node()));
  snprintf(x.to, sizeof x.to, "%s", r->to);
  x.xfer = r->xfer;
  x.term = r->xterm;
  snprintf(x.phase, sizeof x.phase, "%s", r->phase);
  x.copied = r->copied;
  x.total = r->total;
  x.started_ms = r->started_ms;
  qv_err err = {0};
  if (cl_xfer_publish(clr_node(), r->coll, &x, &err) != QV_OK)
    qv_log(QV_LOG_WARN, "cluster", "publishing transfer of %s shard %u: %s", r->coll, r->k,
           err.msg);
}

/* Updates the record's progress and, when asked, the report in etcd. */
static void progress(const char *coll, uint32_t k, const char *phase, uint64_t copied,
                     uint64_t total, bool report) {
  rec snap;
  bool have = false;
  pthread_mutex_lock(&g_mu);
  rec *r = rec_get(coll, k, false);
  if (r) {
    snprintf(r->phase, sizeof r->phase, "%s", phase);
    r->copied = copied;
    r->total = total;
    if (report) r->published_ms = now_ms();
    snap = *r;
    have = true;
  }
  pthread_mutex_unlock(&g_mu);
  if (have && report) publish(&snap);
}

/* Whether this node is still primary of shard k at `term` with a partial
 * copy on `to` of transfer `xfer` (the map may have moved on). */
static bool still_valid(const char *coll, uint32_t k, uint64_t term, const char *to,
                        int64_t xfer, int64_t *epoch) {
  cl_coll c;
  bool ok = cl_coll_get(clr_node(), coll, &c) == QV_OK && c.has_map && k < c.shard_number &&
            !cl_node_fenced(clr_node());
  if (ok) {
    const cl_shard *sh = &c.shards[k];
    ok = sh->term == term && !strcmp(sh->primary, cl_node_id(clr_node()));
    bool found = false;
    for (uint32_t i = 0; ok && i < sh->n_reps; i++)
      if (!strcmp(sh->reps[i].node, to) && sh->reps[i].state == CL_PARTIAL &&
          sh->reps[i].xfer == xfer)
        found = true;
    ok = ok && found;
    *epoch = c.epoch;
  }
  cl_coll_free(&c);
  return ok;
}

/* One call to the target (shard lock held); true on 200. The message takes
 * the next number of the shard's sequence, like a replicated write; `extra`
 * is appended to the query; *resp (when asked) gets the answer's body. */
static bool target_call(const char *addr, const char *coll, uint32_t k, const char *op,
                        int64_t epoch, uint64_t term, int64_t xfer, const char *extra,
                        const char *body, size_t len, char *why, size_t cap, char **resp) {
  cl_call call;
  memset(&call, 0, sizeof call);
  uint64_t seq = clx_next_seq(coll, k, term);
  snprintf(call.url, sizeof call.url,
           "http://%s/internal/shards/%s/%u/%s?epoch=%lld&term=%llu&seq=%llu&from=%s&xfer=%lld%s",
           addr, coll, k, op, (long long)epoch, (unsigned long long)term,
           (unsigned long long)seq, cl_node_id(clr_node()), (long long)xfer, extra ? extra : "");
  call.body = body ? body : "{}";
  call.len = body ? len : 2;
  call.api_key = clr_api_key();
  cl_http_run(&call, 1, XFER_CALL_MS);
  bool ok = call.status == 200;
  if (!ok)
    snprintf(why, cap, "%s: %u %.200s", op, call.status,
             call.status ? (call.resp ? call.resp : "") : call.err);
  if (ok && resp) {
    *resp = call.resp;
    call.resp = NULL;
  }
  cl_call_clear(&call);
  return ok;
}

bool clx_forward_skip(const char *coll, uint32_t k, const char *to, int64_t xfer) {
  pthread_mutex_lock(&g_mu);
  rec *r = rec_get(coll, k, false);
  bool skip = r && r->xfer_on && r->delta && r->xfer == xfer && !strcmp(r->to, to);
  pthread_mutex_unlock(&g_mu);
  return skip;
}

/* The payload indexes of local copy sn as xfer_begin's body. */
static char *schema_body(const char *sn, size_t *len) {
  clr_reply info = {0};
  clr_sub_run(g_srv, h_coll_get, sn, "", 0, &info);
  char msg[128];
  json_t *o = info.status == 200 ? jsonio_parse(info.body, info.len, msg, sizeof msg) : NULL;
  json_t *schema = json_object_get(json_object_get(o, "result"), "payload_schema");
  json_t *b = json_pack("{s:O}", "payload_schema", schema ? schema : json_object());
  char *text = b ? jsonio_dumps(b, len) : NULL;
  json_decref(b);
  json_decref(o);
  clr_reply_clear(&info);
  return text;
}

/* The target's chain marker, asked under the shard lock: true with *at when
 * it holds its local copy and a valid marker. */
static bool probe(const char *addr, const char *coll, uint32_t k, int64_t epoch, uint64_t term,
                  int64_t xfer, cl_link *at, char *why, size_t cap) {
  char *resp = NULL;
  if (!target_call(addr, coll, k, "xfer_probe", epoch, term, xfer, NULL, NULL, 0, why, cap,
                   &resp))
    return false;
  char msg[128];
  json_t *o = jsonio_parse(resp, strlen(resp), msg, sizeof msg);
  json_t *res = json_object_get(o, "result");
  bool valid = json_is_true(json_object_get(res, "valid")) &&
               jsonio_get_u64(json_object_get(res, "term"), &at->term) &&
               jsonio_get_u64(json_object_get(res, "seq"), &at->seq);
  json_decref(o);
  qv_free(resp);
  return valid;
}

/* Sends the target the writes of the backlog after `from`, in order, a
 * few under each hold of the shard lock; live writes are not forwarded to
 * it meanwhile (rec.delta) because they are in the backlog too. Under the
 * lock that sends the last one the transfer is done. */
static bool catch_up(const char *addr, const char *coll, uint32_t k, uint64_t term,
                     const char *to, int64_t xfer, cl_link from, size_t todo, char *why,
                     size_t cap) {
  cl_link cur = from;
  size_t sent = 0;
  double last_report = mono_ms();
  progress(coll, k, "catching up", 0, todo, true);
  for (;;) {
    if (stopping()) {
      snprintf(why, cap, "node stopping");
      break;
    }
    int64_t epoch = 0;
    clg_entry *e = NULL;
    size_t n = 0, left = 0;
    clx_lock(coll, k);
    bool ok = still_valid(coll, k, term, to, xfer, &epoch);
    if (!ok) snprintf(why, cap, "the map changed");
    else if (!clg_after(g_srv, coll, k, cur, 64, &e, &n, &left)) {
      ok = false;
      snprintf(why, cap, "the writes after (%llu, %llu) left the backlog: a full copy follows",
               (unsigned long long)cur.term, (unsigned long long)cur.seq);
    }
    for (size_t i = 0; ok && i < n; i++) {
      char op[64], extra[128];
      snprintf(op, sizeof op, "repl_%s", clw_name(e[i].op));
      snprintf(extra, sizeof extra, "&at=%llu.%llu&prev=%llu.%llu&root_empty=0",
               (unsigned long long)e[i].at.term, (unsigned long long)e[i].at.seq,
               (unsigned long long)e[i].prev.term, (unsigned long long)e[i].prev.seq);
      ok = target_call(addr, coll, k, op, epoch, term, xfer, extra, e[i].body, e[i].len, why, cap,
                       NULL);
      if (ok) cur = e[i].at, sent++;
    }
    bool finished = ok && n == left;
    pthread_mutex_lock(&g_mu);
    rec *r = rec_get(coll, k, false);
    if (r && (finished || !ok)) r->delta = false; /* live writes are forwarded again */
    if (r && finished) r->done = true;
    pthread_mutex_unlock(&g_mu);
    clx_unlock(coll, k);
    clg_entries_free(e, n);
    if (!ok) break;
    if (finished) {
      progress(coll, k, "done", sent, sent, true);
      return true;
    }
    if (mono_ms() - last_report > REPORT_MS) {
      progress(coll, k, "catching up", sent, sent + left - n, true);
      last_report = mono_ms();
    }
  }
  pthread_mutex_lock(&g_mu);
  rec *r = rec_get(coll, k, false);
  if (r) r->delta = false;
  pthread_mutex_unlock(&g_mu);
  return false;
}

/* Copies shard k to `to`; true when it reported done. */
static bool run_transfer(const char *coll, uint32_t k, uint64_t term, const char *to,
                         int64_t xfer) {
  char addr[300], why[400] = "";
  char sn[CL_NAME_MAX + 16];
  clr_shard_name(coll, k, sn, sizeof sn);
  double t0 = mono_ms();
  int64_t epoch = 0;
  uint64_t total = 0, copied = 0;
  {
    qv_collection *h = NULL;
    if (qv_collection_get(g_srv->db, sn, &h, NULL) == QV_OK) {
      if (qv_count(h, &total, NULL) != QV_OK) total = 0;
      qv_collection_release(h);
    }
  }
  progress(coll, k, "copying", 0, total, true);
  {
    /* A shard that never took a write has no local collection yet. */
    cl_coll c;
    clr_reply rp = {0};
    bool made = cl_coll_get(clr_node(), coll, &c) == QV_OK && c.has_map &&
                clr_ensure_shard(g_srv, &c, k, &rp);
    cl_coll_free(&c);
    clr_reply_clear(&rp);
    if (!made) {
      snprintf(why, sizeof why, "cannot open the local copy %s", sn);
      goto fail;
    }
  }
  if (!cl_node_iaddr(clr_node(), to, addr, sizeof addr)) {
    snprintf(why, sizeof why, "target %s is not live", to);
    goto fail;
  }
  /* A target that holds the chain up to a write still in the backlog is
   * sent the writes after it; any other is emptied and copied. */
  cl_link from = {0, 0};
  size_t todo = 0;
  bool delta = false;
  clx_lock(coll, k);
  bool ok = still_valid(coll, k, term, to, xfer, &epoch);
  if (ok) {
    clg_lead(g_srv, coll, k, term, clx_next_seq(coll, k, term));
    size_t none;
    if (probe(addr, coll, k, epoch, term, xfer, &from, why, sizeof why))
      delta = clg_after(g_srv, coll, k, from, 0, NULL, &none, &todo);
    else if (why[0])
      ok = false;
  }
  if (ok && delta) {
    pthread_mutex_lock(&g_mu);
    rec *r = rec_get(coll, k, false);
    if (r) r->delta = true, r->dirty = false;
    pthread_mutex_unlock(&g_mu);
  }
  clx_unlock(coll, k);
  if (!ok) goto fail;
  if (delta) {
    if (!catch_up(addr, coll, k, term, to, xfer, from, todo, why, sizeof why)) goto fail;
    cl_event(clr_node(), "%s shard %u: %s caught up from the write backlog (%zu writes) in %.0f ms",
             coll, k, to, todo, mono_ms() - t0);
    return true;
  }
  size_t slen = 0;
  char *schema = schema_body(sn, &slen);
  clx_lock(coll, k);
  ok = schema && still_valid(coll, k, term, to, xfer, &epoch) &&
       target_call(addr, coll, k, "xfer_begin", epoch, term, xfer, NULL, schema, slen, why,
                   sizeof why, NULL);
  if (ok) {
    pthread_mutex_lock(&g_mu);
    rec *r = rec_get(coll, k, false);
    if (r) r->dirty = false;
    pthread_mutex_unlock(&g_mu);
  }
  clx_unlock(coll, k);
  qv_free(schema);
  if (!ok) goto fail;
  json_t *offset = json_null();
  double last_report = mono_ms();
  for (;;) {
    if (stopping()) {
      json_decref(offset);
      snprintf(why, sizeof why, "node stopping");
      goto fail;
    }
    clx_lock(coll, k);
    json_t *q = json_pack("{s:i, s:b, s:b, s:O}", "limit", PAGE_POINTS, "with_payload", 1,
                          "with_vector", 1, "offset", offset);
    size_t qlen = 0;
    char *qtext = q ? jsonio_dumps(q, &qlen) : NULL;
    json_decref(q);
    clr_reply page = {0};
    json_t *res = NULL, *pts = NULL, *next = NULL;
    ok = qtext && still_valid(coll, k, term, to, xfer, &epoch);
    if (ok) {
      clr_sub_run(g_srv, h_scroll, sn, qtext, qlen, &page);
      char msg[128];
      json_t *o = page.status == 200 ? jsonio_parse(page.body, page.len, msg, sizeof msg) : NULL;
      res = json_incref(json_object_get(o, "result"));
      json_decref(o);
      pts = json_object_get(res, "points");
      next = json_object_get(res, "next_page_offset");
      ok = json_is_array(pts);
      if (!ok) snprintf(why, sizeof why, "scroll of %s: %u", sn, page.status);
    } else if (!why[0]) {
      snprintf(why, sizeof why, "the map changed");
    }
    if (ok && json_array_size(pts) > 0) {
      json_t *body = json_pack("{s:O}", "points", pts);
      size_t blen = 0;
      char *btext = body ? jsonio_dumps(body, &blen) : NULL;
      json_decref(body);
      ok = btext && target_call(addr, coll, k, "xfer_put", epoch, term, xfer, NULL, btext, blen,
                                why, sizeof why, NULL);
      qv_free(btext);
      copied += json_array_size(pts);
    }
    clx_unlock(coll, k);
    qv_free(qtext);
    clr_reply_clear(&page);
    json_decref(offset);
    offset = ok && next && !json_is_null(next) ? json_incref(next) : NULL;
    json_decref(res);
    if (!ok) goto fail;
    if (offset == NULL) break;
    if (mono_ms() - last_report > REPORT_MS) {
      progress(coll, k, "copying", copied, total > copied ? total : copied, true);
      last_report = mono_ms();
    }
  }
  /* The end, under the lock: no live write missed the target, which now
   * holds the chain up to its head. */
  clx_lock(coll, k);
  pthread_mutex_lock(&g_mu);
  rec *r = rec_get(coll, k, false);
  bool dirty = r == NULL || r->dirty;
  pthread_mutex_unlock(&g_mu);
  cl_link head;
  char extra[64];
  bool ended = !dirty && still_valid(coll, k, term, to, xfer, &epoch) &&
               clg_head(g_srv, coll, k, &head);
  if (ended) {
    snprintf(extra, sizeof extra, "&at=%llu.%llu", (unsigned long long)head.term,
             (unsigned long long)head.seq);
    ended = target_call(addr, coll, k, "xfer_end", epoch, term, xfer, extra, NULL, 0, why,
                        sizeof why, NULL);
  }
  if (ended) {
    pthread_mutex_lock(&g_mu);
    if ((r = rec_get(coll, k, false)) != NULL) r->done = true;
    pthread_mutex_unlock(&g_mu);
  }
  clx_unlock(coll, k);
  if (!ended) {
    if (dirty) snprintf(why, sizeof why, "a live write missed the target: starting over");
    else if (!why[0]) snprintf(why, sizeof why, "the map changed");
    goto fail;
  }
  progress(coll, k, "done", copied, copied, true);
  cl_event(clr_node(), "%s shard %u: copied %" PRIu64 " points to %s in %.0f ms", coll, k, copied,
           to, mono_ms() - t0);
  return true;
fail:
  if (!why[0]) snprintf(why, sizeof why, "the map changed");
  cl_event(clr_node(), "%s shard %u: transfer to %s failed: %s", coll, k, to, why);
  pthread_mutex_lock(&g_mu);
  rec *f = rec_get(coll, k, false);
  if (f) f->retry_at_ms = now_ms() + RETRY_MS;
  pthread_mutex_unlock(&g_mu);
  progress(coll, k, "failed", copied, total, true);
  return false;
}

/* The next transfer to run as source (one at a time), and clean-up of
 * records whose copy is no longer partial. */
static bool pick(char *coll, uint32_t *k, uint64_t *term, char *to, int64_t *xfer) {
  char **names = NULL;
  size_t count = 0;
  bool found = false;
  const char *me = cl_node_id(clr_node());
  if (cl_coll_names(clr_node(), &names, &count) != QV_OK) return false;
  for (size_t i = 0; i < count; i++) {
    cl_coll c;
    if (cl_coll_get(clr_node(), names[i], &c) != QV_OK || !c.has_map) {
      cl_coll_free(&c);
      continue;
    }
    for (uint32_t s = 0; s < c.shard_number; s++) {
      const cl_shard *sh = &c.shards[s];
      const cl_replica *part = NULL;
      for (uint32_t j = 0; j < sh->n_reps; j++)
        if (sh->reps[j].state == CL_PARTIAL) part = &sh->reps[j];
      bool mine = !strcmp(sh->primary, me);
      bool unpublish = false, republish = false;
      rec snap;
      pthread_mutex_lock(&g_mu);
      rec *r = rec_get(c.name, s, part != NULL && mine);
      if (r && r->xfer_on &&
          (!mine || part == NULL || part->xfer != r->xfer || strcmp(part->node, r->to) ||
           r->xterm != sh->term)) {
        r->xfer_on = false; /* finished (insync), or the map moved on */
        unpublish = true;
      }
      if (r && part && mine && !found) {
        bool same = r->xfer_on && r->xfer == part->xfer && !strcmp(r->to, part->node);
        if (!same) {
          r->xfer_on = true;
          r->done = r->dirty = false;
          r->xfer = part->xfer;
          r->xterm = sh->term;
          r->retry_at_ms = 0;
          r->started_ms = now_ms();
          snprintf(r->to, sizeof r->to, "%s", part->node);
        }
        if (r->done && now_ms() - r->published_ms >= REPUBLISH_MS) {
          r->published_ms = now_ms();
          snap = *r;
          republish = true;
        }
        if (!r->done && now_ms() >= r->retry_at_ms) {
          found = true;
          snprintf(coll, CL_NAME_MAX + 1, "%s", c.name);
          *k = s;
          *term = sh->term;
          *xfer = r->xfer;
          snprintf(to, CL_ID_MAX + 1, "%s", r->to);
          r->done = false;
        }
      }
      pthread_mutex_unlock(&g_mu);
      if (unpublish) cl_xfer_unpublish(clr_node(), c.name, s);
      if (republish) publish(&snap);
    }
    cl_coll_free(&c);
  }
  cl_names_free(names, count);
  return found;
}

/* Drops local shard copies the map no longer lists here. */
typedef struct orphan {
  char name[CL_NAME_MAX + 16];
  int64_t since_ms;
} orphan;
static orphan g_orphans[N_RECS];
static size_t g_n_orphans;

static void janitor(void) {
  char **names = NULL;
  size_t count = 0;
  if (cl_coll_names(clr_node(), &names, &count) != QV_OK) return;
  orphan seen[N_RECS];
  size_t n_seen = 0;
  for (size_t i = 0; i < count; i++) {
    cl_coll c;
    if (cl_coll_get(clr_node(), names[i], &c) != QV_OK || !c.has_map) {
      cl_coll_free(&c);
      continue;
    }
    for (uint32_t s = 0; s < c.shard_number && n_seen < N_RECS; s++) {
      if (clr_my_copy(&c.shards[s]) != NULL) continue;
      char sn[CL_NAME_MAX + 16];
      clr_shard_name(c.name, s, sn, sizeof sn);
      qv_collection *h = NULL;
      if (qv_collection_get(g_srv->db, sn, &h, NULL) != QV_OK) continue;
      qv_collection_release(h);
      int64_t since = now_ms();
      for (size_t j = 0; j < g_n_orphans; j++)
        if (!strcmp(g_orphans[j].name, sn)) since = g_orphans[j].since_ms;
      if (now_ms() - since >= JANITOR_GRACE_MS) {
        clx_lock(c.name, s);
        cl_coll again;
        bool still = cl_coll_get(clr_node(), c.name, &again) == QV_OK && again.has_map &&
                     s < again.shard_number && clr_my_copy(&again.shards[s]) == NULL;
        cl_coll_free(&again);
        if (still && qv_collection_drop(g_srv->db, sn, NULL) == QV_OK) {
          clg_remove(g_srv, c.name, s);
          cl_event(clr_node(), "%s shard %u: local copy removed (no longer placed here)", c.name,
                   s);
        }
        clx_unlock(c.name, s);
        continue;
      }
      snprintf(seen[n_seen].name, sizeof seen[n_seen].name, "%s", sn);
      seen[n_seen++].since_ms = since;
    }
    cl_coll_free(&c);
  }
  cl_names_free(names, count);
  memcpy(g_orphans, seen, n_seen * sizeof *seen);
  g_n_orphans = n_seen;
}

static void *xfer_main(void *arg) {
  (void)arg;
  double last_janitor = 0;
  while (!stopping()) {
    char coll[CL_NAME_MAX + 1], to[CL_ID_MAX + 1];
    uint32_t k = 0;
    uint64_t term = 0;
    int64_t xfer = 0;
    bool busy = false;
    if (!cl_node_fenced(clr_node()) && pick(coll, &k, &term, to, &xfer)) {
      run_transfer(coll, k, term, to, xfer);
      busy = true;
    }
    if (mono_ms() - last_janitor > 1000) {
      janitor();
      clc_sweep(g_srv); /* copies of collections deleted while this node was away */
      last_janitor = mono_ms();
    }
    if (busy) continue;
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_nsec += TICK_MS * 1000000L;
    if (dl.tv_nsec >= 1000000000L) dl.tv_sec++, dl.tv_nsec -= 1000000000L;
    pthread_mutex_lock(&g_stop_mu);
    if (!g_stop) pthread_cond_timedwait(&g_stop_cv, &g_stop_mu, &dl);
    pthread_mutex_unlock(&g_stop_mu);
  }
  return NULL;
}

bool clx_start(srv *s) {
  g_srv = s;
  g_stop = false;
  if (pthread_create(&g_thread, NULL, xfer_main, NULL) != 0) return false;
  g_started = true;
  return true;
}

void clx_stop(void) {
  if (!g_started) return;
  pthread_mutex_lock(&g_stop_mu);
  g_stop = true;
  pthread_cond_broadcast(&g_stop_cv);
  pthread_mutex_unlock(&g_stop_mu);
  pthread_join(g_thread, NULL);
  g_started = false;
  pthread_mutex_lock(&g_mu);
  qv_free(g_recs);
  g_recs = NULL;
  g_n_recs = g_cap_recs = 0;
  pthread_mutex_unlock(&g_mu);
  clg_reset();
}

json_t *clx_state_json(void) {
  json_t *xfers = json_array(), *seqs = json_array();
  pthread_mutex_lock(&g_mu);
  for (size_t i = 0; i < g_n_recs; i++) {
    const rec *r = &g_recs[i];
    json_array_append_new(seqs, json_pack("{s:s, s:i, s:I, s:I, s:s}", "collection", r->coll,
                                          "shard", (int)r->k, "term", (json_int_t)r->term, "seq",
                                          (json_int_t)r->seq, "role",
                                          r->is_primary_seq ? "primary" : "copy"));
    if (r->xfer_on)
      json_array_append_new(
          xfers, json_pack("{s:s, s:i, s:s, s:I, s:s, s:I, s:I, s:I}", "collection", r->coll,
                           "shard", (int)r->k, "to", r->to, "xfer", (json_int_t)r->xfer, "phase",
                           r->phase, "copied", (json_int_t)r->copied, "total",
                           (json_int_t)r->total, "started_ms", (json_int_t)r->started_ms));
  }
  pthread_mutex_unlock(&g_mu);
  return json_pack("{s:o, s:o, s:o}", "transfers", xfers, "seqs", seqs, "chains",
                   clg_state_json());
}
