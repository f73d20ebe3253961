/* node.c: a node in cluster mode — node id, membership, the watched view of
 * every collection's config and shard map, and the controller loop.
 *
 * Owns: the table of collections (guarded by `mu`, changes broadcast on
 * `cv`), the controller thread. Does not own: HTTP, the engine, shard data
 * (src/server/routes_cluster.c). See node.h for the keys and the
 * invariants; the controller is the only writer of a shard map and writes
 * only through shardmap_cas_write (fenced by its controller token), so a
 * deposed controller's decisions never land. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/err.h"
#include "base/log.h"
#include "cluster/etcd.h"
#include "cluster/node.h"
#include "cluster/ring.h"
#include "cluster/shardmap.h"

#define CONTROLLER_TICK_MS 200

typedef struct entry {
  cl_coll c;
  bool has_config;
} entry;

struct cl_node {
  etcd_client *etcd;
  mship *m;
  etcd_watch *w;
  char prefix[MSHIP_PREFIX_MAX + 1];
  char id[CL_ID_MAX + 1];
  uint32_t ttl_s;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  entry *colls;
  size_t n_colls, cap_colls;
  mship_view view; /* live members, under mu */
  pthread_t ctl;
  bool ctl_started, stop;
};

void cl_coll_free(cl_coll *c) {
  if (c == NULL) return;
  qv_free(c->params);
  qv_free(c->shards);
  memset(c, 0, sizeof *c);
}

static void coll_copy(cl_coll *dst, const cl_coll *src) {
  *dst = *src;
  dst->params = src->params ? qv_strdup(src->params) : NULL;
  dst->shards = NULL;
  if (src->has_map && src->shards) {
    dst->shards = qv_malloc(sizeof *src->shards * src->shard_number);
    if (dst->shards) memcpy(dst->shards, src->shards, sizeof *src->shards * src->shard_number);
    else dst->has_map = false;
  }
}

uint64_t cl_peer_id(const char *node_id) { return strtoull(node_id, NULL, 10); }
const char *cl_node_id(const cl_node *n) { return n->id; }
mship *cl_node_mship(cl_node *n) { return n->m; }
bool cl_node_fenced(const cl_node *n) { return mship_is_fenced(n->m); }
uint32_t cl_node_ttl_s(const cl_node *n) { return n->ttl_s; }

uint32_t cl_load_cap(uint32_t copies, uint32_t n_nodes) {
  if (n_nodes == 0) return 0;
  return (uint32_t)ceil(1.25 * copies / n_nodes);
}

/* ---- parsing what etcd holds ------------------------------------------------- */

static bool parse_config(const char *text, size_t len, cl_coll *c) {
  json_t *o = json_loadb(text, len, 0, NULL);
  if (!json_is_object(o)) {
    json_decref(o);
    return false;
  }
  json_int_t p = json_integer_value(json_object_get(o, "shard_number"));
  json_int_t r = json_integer_value(json_object_get(o, "replication_factor"));
  json_t *params = json_object_get(o, "params");
  bool ok = p >= 1 && p <= CL_SHARDS_MAX && r >= 1 && r <= CL_RF_MAX && json_is_object(params);
  if (ok) {
    char *t = json_dumps(params, JSON_COMPACT);
    qv_free(c->params);
    c->params = t ? qv_strdup(t) : NULL;
    free(t);
    c->shard_number = (uint32_t)p;
    c->rf = (uint32_t)r;
    ok = c->params != NULL;
  }
  json_decref(o);
  return ok;
}

static bool parse_map(const char *text, size_t len, int64_t mod_rev, cl_coll *c) {
  json_t *o = json_loadb(text, len, 0, NULL);
  json_t *shards = json_object_get(o, "shards");
  size_t n = json_array_size(shards);
  bool ok = json_is_object(o) && n >= 1 && n <= CL_SHARDS_MAX;
  cl_shard *sh = ok ? qv_calloc(n, sizeof *sh) : NULL;
  ok = ok && sh != NULL;
  for (size_t i = 0; ok && i < n; i++) {
    json_t *s = json_array_get(shards, i);
    json_t *reps = json_object_get(s, "replicas");
    const char *prim = json_string_value(json_object_get(s, "primary"));
    sh[i].id = (uint32_t)i;
    sh[i].term = (uint64_t)json_integer_value(json_object_get(s, "term"));
    if (prim == NULL || strlen(prim) > CL_ID_MAX || json_array_size(reps) > CL_RF_MAX) {
      ok = false;
      break;
    }
    strcpy(sh[i].primary, prim);
    for (size_t k = 0; k < json_array_size(reps); k++) {
      json_t *rp = json_array_get(reps, k);
      const char *node = json_string_value(json_object_get(rp, "node"));
      const char *st = json_string_value(json_object_get(rp, "state"));
      if (node == NULL || strlen(node) > CL_ID_MAX) {
        ok = false;
        break;
      }
      strcpy(sh[i].reps[k].node, node);
      sh[i].reps[k].state = st && !strcmp(st, "dead") ? CL_DEAD : CL_INSYNC;
      sh[i].n_reps++;
    }
  }
  if (ok) {
    qv_free(c->shards);
    c->shards = sh;
    c->shard_number = (uint32_t)n;
    c->epoch = json_integer_value(json_object_get(o, "epoch"));
    c->map_rev = mod_rev;
    c->has_map = true;
  } else {
    qv_free(sh);
  }
  json_decref(o);
  return ok;
}

/* ---- the watched table (mu held) ---------------------------------------------- */

static entry *find(cl_node *n, const char *name) {
  for (size_t i = 0; i < n->n_colls; i++)
    if (!strcmp(n->colls[i].c.name, name)) return &n->colls[i];
  return NULL;
}

static entry *find_or_add(cl_node *n, const char *name) {
  entry *e = find(n, name);
  if (e || strlen(name) > CL_NAME_MAX) return e;
  if (n->n_colls == n->cap_colls) {
    size_t cap = n->cap_colls ? 2 * n->cap_colls : 8;
    entry *p = qv_realloc(n->colls, cap * sizeof *p);
    if (p == NULL) return NULL;
    n->colls = p;
    n->cap_colls = cap;
  }
  e = &n->colls[n->n_colls++];
  memset(e, 0, sizeof *e);
  strcpy(e->c.name, name);
  return e;
}

static void drop_entry(cl_node *n, entry *e) {
  cl_coll_free(&e->c);
  *e = n->colls[--n->n_colls];
}

/* Applies one key of <prefix>/collections/. */
static void apply_kv(cl_node *n, const char *key, const char *val, size_t len, int64_t rev,
                     bool is_delete) {
  size_t pl = strlen(n->prefix) + strlen("/collections/");
  if (strlen(key) <= pl) return;
  const char *rest = key + pl, *slash = strrchr(rest, '/');
  if (slash == NULL || (size_t)(slash - rest) > CL_NAME_MAX) return;
  char name[CL_NAME_MAX + 1];
  memcpy(name, rest, (size_t)(slash - rest));
  name[slash - rest] = 0;
  bool is_cfg = !strcmp(slash + 1, "config"), is_map = !strcmp(slash + 1, "shardmap");
  if (!is_cfg && !is_map) return;
  if (is_delete) {
    entry *e = find(n, name);
    if (e && is_cfg) drop_entry(n, e);
    else if (e) e->c.has_map = false;
    return;
  }
  entry *e = find_or_add(n, name);
  if (e == NULL) return;
  bool ok = is_cfg ? parse_config(val, len, &e->c) : parse_map(val, len, rev, &e->c);
  if (is_cfg && ok) e->has_config = true;
  if (!ok) qv_log(QV_LOG_WARN, "cluster", "ignoring malformed %s", key);
}

static void on_watch(void *ctx, const etcd_watch_msg *m) {
  cl_node *n = ctx;
  pthread_mutex_lock(&n->mu);
  if (m->kind == ETCD_WATCH_SNAPSHOT) {
    while (n->n_colls) drop_entry(n, &n->colls[0]);
    for (size_t i = 0; i < m->n_kvs; i++)
      apply_kv(n, m->kvs[i].key, m->kvs[i].value, m->kvs[i].value_len, m->kvs[i].mod_revision,
               false);
  } else if (m->kind == ETCD_WATCH_EVENTS) {
    for (size_t i = 0; i < m->n_events; i++) {
      const etcd_kv *kv = &m->events[i].kv;
      apply_kv(n, kv->key, kv->value, kv->value_len, kv->mod_revision, m->events[i].is_delete);
    }
  }
  pthread_cond_broadcast(&n->cv);
  pthread_mutex_unlock(&n->mu);
}

static void on_members(void *ctx, const mship_view *v) {
  cl_node *n = ctx;
  mship_view copy = {0};
  /* The view passed in is borrowed: keep our own copy of it. */
  copy.version = v->version;
  copy.revision = v->revision;
  copy.members = qv_calloc(v->n ? v->n : 1, sizeof *copy.members);
  if (copy.members == NULL) return;
  for (size_t i = 0; i < v->n; i++) {
    copy.members[i].node_id = qv_strdup(v->members[i].node_id);
    copy.members[i].addr = qv_strdup(v->members[i].addr);
    copy.members[i].value = qv_strdup(v->members[i].value);
    copy.members[i].lease = v->members[i].lease;
    copy.members[i].create_revision = v->members[i].create_revision;
    copy.members[i].mod_revision = v->members[i].mod_revision;
    copy.n++;
  }
  pthread_mutex_lock(&n->mu);
  mship_view old = n->view;
  n->view = copy;
  pthread_cond_broadcast(&n->cv);
  pthread_mutex_unlock(&n->mu);
  mship_view_free(&old);
}

/* ---- queries -------------------------------------------------------------------- */

bool cl_node_addr(cl_node *n, const char *node_id, char *buf, size_t cap) {
  bool found = false;
  pthread_mutex_lock(&n->mu);
  for (size_t i = 0; i < n->view.n; i++)
    if (!strcmp(n->view.members[i].node_id, node_id) && n->view.members[i].addr) {
      snprintf(buf, cap, "%s", n->view.members[i].addr);
      found = true;
      break;
    }
  pthread_mutex_unlock(&n->mu);
  return found;
}

qv_rc cl_coll_get(cl_node *n, const char *name, cl_coll *out) {
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&n->mu);
  entry *e = find(n, name);
  bool ok = e && e->has_config;
  if (ok) coll_copy(out, &e->c);
  pthread_mutex_unlock(&n->mu);
  return ok ? QV_OK : QV_ENOTFOUND;
}

qv_rc cl_coll_names(cl_node *n, char ***names, size_t *count) {
  pthread_mutex_lock(&n->mu);
  char **v = qv_calloc(n->n_colls ? n->n_colls : 1, sizeof *v);
  size_t k = 0;
  for (size_t i = 0; v && i < n->n_colls; i++)
    if (n->colls[i].has_config && (v[k] = qv_strdup(n->colls[i].c.name)) != NULL) k++;
  pthread_mutex_unlock(&n->mu);
  *names = v;
  *count = k;
  return v ? QV_OK : QV_ENOMEM;
}

void cl_names_free(char **names, size_t count) {
  for (size_t i = 0; names && i < count; i++) qv_free(names[i]);
  qv_free(names);
}

bool cl_wait_map(cl_node *n, const char *name, int64_t min_epoch, uint32_t timeout_ms) {
  struct timespec dl;
  clock_gettime(CLOCK_REALTIME, &dl);
  dl.tv_sec += timeout_ms / 1000;
  dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
  if (dl.tv_nsec >= 1000000000L) dl.tv_sec++, dl.tv_nsec -= 1000000000L;
  bool ok = false;
  pthread_mutex_lock(&n->mu);
  for (;;) {
    entry *e = find(n, name);
    if (e && e->c.has_map && e->c.epoch >= min_epoch) {
      ok = true;
      break;
    }
    if (pthread_cond_timedwait(&n->cv, &n->mu, &dl) == ETIMEDOUT) break;
  }
  pthread_mutex_unlock(&n->mu);
  return ok;
}

qv_rc cl_coll_create(cl_node *n, const char *name, const char *params_json,
                     uint32_t shard_number, uint32_t rf, qv_err *err) {
  json_t *params = json_loads(params_json, 0, NULL);
  if (!json_is_object(params) || shard_number < 1 || shard_number > CL_SHARDS_MAX || rf < 1 ||
      rf > CL_RF_MAX) {
    json_decref(params);
    return qv_err_set(err, QV_EINVAL, "bad collection config for %s", name);
  }
  json_t *o = json_pack("{s:I, s:I, s:o}", "shard_number", (json_int_t)shard_number,
                        "replication_factor", (json_int_t)rf, "params", params);
  char *val = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  if (val == NULL) return qv_err_set(err, QV_ENOMEM, "out of memory");
  char key[MSHIP_PREFIX_MAX + CL_NAME_MAX + 32];
  snprintf(key, sizeof key, "%s/collections/%s/config", n->prefix, name);
  etcd_cmp cmp = {.key = key, .target = ETCD_CMP_CREATE, .result = ETCD_EQUAL, .number = 0};
  etcd_op put = {.kind = ETCD_OP_PUT, .key = key, .value = val, .value_len = strlen(val)};
  etcd_txn t = {.cmp = &cmp, .n_cmp = 1, .success = &put, .n_success = 1};
  etcd_txn_result res = {0};
  qv_rc rc = etcd_txn_do(n->etcd, &t, &res, err);
  free(val);
  bool won = res.succeeded;
  etcd_kvs_free(&res.kvs);
  if (rc != QV_OK) return rc;
  if (!won) return qv_err_set(err, QV_EEXIST, "collection %s exists", name);
  return QV_OK;
}

/* ---- the controller ---------------------------------------------------------------- */

static bool is_live(const mship_view *v, const char *node) {
  for (size_t i = 0; i < v->n; i++)
    if (!strcmp(v->members[i].node_id, node)) return true;
  return false;
}

static char *map_json(const cl_coll *c, int64_t epoch) {
  json_t *shards = json_array();
  for (uint32_t s = 0; shards && s < c->shard_number; s++) {
    const cl_shard *sh = &c->shards[s];
    json_t *reps = json_array();
    for (uint32_t k = 0; k < sh->n_reps; k++)
      json_array_append_new(reps, json_pack("{s:s, s:s}", "node", sh->reps[k].node, "state",
                                            sh->reps[k].state == CL_DEAD ? "dead" : "insync"));
    json_array_append_new(shards, json_pack("{s:I, s:I, s:s, s:o}", "id", (json_int_t)s, "term",
                                            (json_int_t)sh->term, "primary", sh->primary,
                                            "replicas", reps));
  }
  json_t *o = json_pack("{s:I, s:I, s:I, s:o}", "epoch", (json_int_t)epoch, "shard_number",
                        (json_int_t)c->shard_number, "replication_factor", (json_int_t)c->rf,
                        "shards", shards);
  char *t = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  return t;
}

/* First placement of a collection over the live members. */
static void place_new(cl_node *n, const mship_view *v, cl_coll *c) {
  if (v->n == 0) return;
  const char **ids = qv_calloc(v->n, sizeof *ids);
  if (ids == NULL) return;
  for (size_t i = 0; i < v->n; i++) ids[i] = v->members[i].node_id;
  ring_opts ro;
  ring_opts_init(&ro);
  ro.rf = c->rf;
  ro.salt = c->name;
  ring_placement *p = NULL;
  qv_err err = {0};
  qv_rc rc = ring_place(ids, v->n, c->shard_number, &ro, &p, &err);
  qv_free(ids);
  if (rc != QV_OK) {
    qv_log(QV_LOG_WARN, "cluster", "placing %s: %s", c->name, err.msg);
    return;
  }
  c->shards = qv_calloc(c->shard_number, sizeof *c->shards);
  if (c->shards == NULL) goto out;
  for (uint32_t s = 0; s < c->shard_number; s++) {
    cl_shard *sh = &c->shards[s];
    sh->id = s;
    sh->term = 1;
    for (uint32_t k = 0; k < p->rf; k++) {
      snprintf(sh->reps[k].node, sizeof sh->reps[k].node, "%s", ring_replica(p, s, k));
      sh->reps[k].state = CL_INSYNC;
      sh->n_reps++;
    }
    snprintf(sh->primary, sizeof sh->primary, "%s", sh->reps[0].node);
  }
  char *json = map_json(c, 1);
  if (json) {
    rc = shardmap_cas_write(n->m, c->name, NULL, json, NULL, &err);
    if (rc == QV_OK)
      qv_log(QV_LOG_INFO, "cluster", "placed %s: %u shards x %u copies on %zu nodes, epoch 1",
             c->name, c->shard_number, p->rf, v->n);
    else
      qv_log(QV_LOG_WARN, "cluster", "placing %s: %s", c->name, err.msg);
  }
  free(json);
out:
  ring_placement_free(p);
}

/* Marks the copies of dead nodes and promotes a live in-sync copy where the
 * primary died; one CAS for the whole map. */
static void repair(cl_node *n, const mship_view *v, cl_coll *c) {
  bool changed = false;
  for (uint32_t s = 0; s < c->shard_number; s++) {
    cl_shard *sh = &c->shards[s];
    uint32_t live_insync = 0;
    for (uint32_t k = 0; k < sh->n_reps; k++)
      live_insync += sh->reps[k].state == CL_INSYNC && is_live(v, sh->reps[k].node);
    if (live_insync == 0) continue; /* keep the last copies: wait for them */
    for (uint32_t k = 0; k < sh->n_reps; k++)
      if (sh->reps[k].state == CL_INSYNC && !is_live(v, sh->reps[k].node)) {
        sh->reps[k].state = CL_DEAD;
        changed = true;
        qv_log(QV_LOG_INFO, "cluster", "%s shard %u: copy on %s is dead", c->name, s,
               sh->reps[k].node);
      }
    bool primary_ok = false;
    for (uint32_t k = 0; k < sh->n_reps; k++)
      if (!strcmp(sh->reps[k].node, sh->primary) && sh->reps[k].state == CL_INSYNC)
        primary_ok = true;
    if (primary_ok) continue;
    for (uint32_t k = 0; k < sh->n_reps; k++)
      if (sh->reps[k].state == CL_INSYNC) {
        snprintf(sh->primary, sizeof sh->primary, "%s", sh->reps[k].node);
        sh->term++;
        changed = true;
        qv_log(QV_LOG_INFO, "cluster", "%s shard %u: %s promoted to primary, term %" PRIu64,
               c->name, s, sh->primary, sh->term);
        break;
      }
  }
  if (!changed) return;
  char *json = map_json(c, c->epoch + 1);
  if (json == NULL) return;
  shardmap_doc prev = {.epoch = c->epoch, .mod_revision = c->map_rev};
  qv_err err = {0};
  if (shardmap_cas_write(n->m, c->name, &prev, json, NULL, &err) != QV_OK)
    qv_log(QV_LOG_WARN, "cluster", "updating the map of %s: %s", c->name, err.msg);
  free(json);
}

static void *controller_main(void *arg) {
  cl_node *n = arg;
  pthread_mutex_lock(&n->mu);
  while (!n->stop) {
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_nsec += CONTROLLER_TICK_MS * 1000000L;
    if (dl.tv_nsec >= 1000000000L) dl.tv_sec++, dl.tv_nsec -= 1000000000L;
    pthread_cond_timedwait(&n->cv, &n->mu, &dl);
    if (n->stop) break;
    pthread_mutex_unlock(&n->mu);
    if (mship_is_controller(n->m, NULL)) {
      mship_view v = {0};
      qv_err err = {0};
      char **names = NULL;
      size_t count = 0;
      if (mship_view_get(n->m, &v, &err) == QV_OK && cl_coll_names(n, &names, &count) == QV_OK) {
        for (size_t i = 0; i < count; i++) {
          cl_coll c;
          if (cl_coll_get(n, names[i], &c) != QV_OK) continue;
          if (!c.has_map) place_new(n, &v, &c);
          else repair(n, &v, &c);
          cl_coll_free(&c);
        }
      }
      cl_names_free(names, count);
      mship_view_free(&v);
    }
    pthread_mutex_lock(&n->mu);
  }
  pthread_mutex_unlock(&n->mu);
  return NULL;
}

/* ---- start and stop -------------------------------------------------------------------- */

static bool mkdirs(const char *path) {
  char buf[4096];
  if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return false;
  for (char *p = buf + 1; *p; p++)
    if (*p == '/') {
      *p = 0;
      if (mkdir(buf, 0755) != 0 && errno != EEXIST) return false;
      *p = '/';
    }
  return mkdir(buf, 0755) == 0 || errno == EEXIST;
}

/* The node id survives restarts: a random u63 in decimal, kept in
 * <data_dir>/cluster_node_id. */
static qv_rc node_id_load(const char *dir, char *id, size_t cap, qv_err *err) {
  if (!mkdirs(dir)) return qv_err_set(err, QV_EIO, "cannot create %s: %s", dir, strerror(errno));
  char path[4200];
  snprintf(path, sizeof path, "%s/cluster_node_id", dir);
  FILE *f = fopen(path, "r");
  unsigned long long v = 0;
  if (f) {
    int got = fscanf(f, "%llu", &v);
    fclose(f);
    if (got != 1 || v == 0) return qv_err_set(err, QV_ECORRUPT, "%s: not a node id", path);
  } else {
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read(fd, &v, sizeof v) != (ssize_t)sizeof v) {
      if (fd >= 0) close(fd);
      return qv_err_set(err, QV_EIO, "cannot read /dev/urandom");
    }
    close(fd);
    v = (v >> 1) | 1; /* fits int64 (Qdrant clients parse peer ids), never 0 */
    f = fopen(path, "w");
    if (f == NULL || fprintf(f, "%llu\n", v) < 0 || fflush(f) != 0 || fsync(fileno(f)) != 0) {
      if (f) fclose(f);
      return qv_err_set(err, QV_EIO, "cannot write %s", path);
    }
    fclose(f);
  }
  snprintf(id, cap, "%llu", v);
  return QV_OK;
}

qv_rc cl_node_start(const cl_node_opts *o, cl_node **out, qv_err *err) {
  *out = NULL;
  cl_node *n = qv_calloc(1, sizeof *n);
  if (n == NULL) return qv_err_set(err, QV_ENOMEM, "out of memory");
  pthread_mutex_init(&n->mu, NULL);
  pthread_cond_init(&n->cv, NULL);
  snprintf(n->prefix, sizeof n->prefix, "%s", o->prefix ? o->prefix : "/quiver/v1");
  n->ttl_s = o->ttl_s ? o->ttl_s : MSHIP_TTL_S_DEFAULT;
  qv_rc rc = node_id_load(o->data_dir, n->id, sizeof n->id, err);
  if (rc != QV_OK) goto fail;
  etcd_opts eo;
  etcd_opts_init(&eo);
  eo.endpoints = o->endpoints;
  rc = etcd_client_new(&eo, &n->etcd, err);
  if (rc != QV_OK) goto fail;
  mship_opts mo;
  mship_opts_init(&mo);
  mo.prefix = n->prefix;
  mo.node_id = n->id;
  mo.addr = o->node_addr;
  mo.ttl_s = n->ttl_s;
  mo.on_members = on_members;
  mo.ctx = n;
  rc = mship_start(n->etcd, &mo, &n->m, err);
  if (rc != QV_OK) goto fail;
  char wkey[MSHIP_PREFIX_MAX + 32];
  snprintf(wkey, sizeof wkey, "%s/collections/", n->prefix);
  etcd_watch_opts wo;
  etcd_watch_opts_init(&wo);
  wo.key = wkey;
  wo.prefix = true;
  wo.fn = on_watch;
  wo.ctx = n;
  rc = etcd_watch_start(n->etcd, &wo, &n->w, err);
  if (rc != QV_OK) goto fail;
  if (pthread_create(&n->ctl, NULL, controller_main, n) != 0) {
    rc = qv_err_set(err, QV_EIO, "cannot start the controller thread");
    goto fail;
  }
  n->ctl_started = true;
  qv_log(QV_LOG_INFO, "cluster", "node %s (%s) joined %s at %s, lease TTL %u s", n->id,
         o->node_addr, o->endpoints, n->prefix, n->ttl_s);
  *out = n;
  return QV_OK;
fail:
  cl_node_stop(n);
  return rc;
}

void cl_node_stop(cl_node *n) {
  if (n == NULL) return;
  pthread_mutex_lock(&n->mu);
  n->stop = true;
  pthread_cond_broadcast(&n->cv);
  pthread_mutex_unlock(&n->mu);
  if (n->ctl_started) pthread_join(n->ctl, NULL);
  etcd_watch_stop(n->w);
  mship_stop(n->m);
  etcd_client_free(n->etcd);
  while (n->n_colls) drop_entry(n, &n->colls[0]);
  qv_free(n->colls);
  mship_view_free(&n->view);
  pthread_cond_destroy(&n->cv);
  pthread_mutex_destroy(&n->mu);
  qv_free(n);
}
