/* membership.c: registration, lease renewal and self-fencing, the members
 * view, controller election (membership.h has the contract and key layout).
 *
 * Owns the node's lease and the keys on it. Does not own the shard map
 * (shardmap.c) or decide placement (ring.c).
 *
 * The renewal thread (lease_main):
 *
 *     [unregistered] --register_once ok--> [registered] --keepalive ok--+
 *          ^   | etcd down / key still held:     |   ^                  |
 *          |   +-- retry every RETRY_MS          |   +------------------+
 *          |                                     | lease gone, or no renewal
 *          +------------- fence() <--------------+ for TTL - margin
 *
 * Invariant: while is_fenced() is false, the lease was confirmed alive less
 * than TTL - margin ago, so etcd cannot have expired it (expiry happens no
 * earlier than TTL after the renewal was received, which is after it was
 * sent). Everything the data path may do as a member or controller hangs on
 * that check.
 *
 * Locks: `mu` guards the state below it in struct mship; `campaign_mu`
 * serialises campaigns (from the renewal thread after registering and from
 * the controller watch). Callbacks are called with neither held. */
#include "cluster/membership.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"
#include "base/err.h"
#include "base/log.h"

#define RETRY_MS 200u
#define REGISTER_RETRY_MS 500u

struct mship {
  etcd_client *c;  /* borrowed: watches and campaigns */
  etcd_client *ka; /* owned: short timeouts, for renewals and revokes */
  char *prefix, *node_id, *addr, *meta_json;
  char *member_key, *members_prefix, *controller_key;
  uint32_t ttl_s;
  bool campaign;
  void (*on_members)(void *ctx, const mship_view *v);
  void (*on_state)(void *ctx, mship_event ev);
  void *ctx;
  uint64_t started_at_ms; /* wall clock, for the member value */

  pthread_mutex_t mu;
  pthread_cond_t cv; /* wakes the renewal thread on stop */
  bool is_stopping;
  bool is_registered;
  int64_t lease;
  int64_t stale_lease; /* a fenced incarnation's lease not yet revoked */
  uint64_t incarnation, fences;
  uint64_t last_renew_ms, fenced_at_ms;
  uint64_t deadline_ms; /* atomic: fenced once the clock reaches it */
  int fenced;           /* atomic */
  int is_ctrl;          /* atomic */
  int64_t ctrl_token;   /* atomic */
  char ctrl_holder[MSHIP_NODE_ID_MAX + 1];
  mship_view view;

  pthread_mutex_t campaign_mu;
  pthread_t lease_thread;
  bool has_thread;
  etcd_watch *w_members, *w_ctrl;
};

static uint64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint32_t margin_ms(const mship *m) {
  uint32_t ttl = m->ttl_s * 1000u;
  return ttl / 4 < 1000u ? ttl / 4 : 1000u;
}

void mship_opts_init(mship_opts *o) {
  memset(o, 0, sizeof *o);
  o->prefix = "/quiver/v1";
  o->ttl_s = MSHIP_TTL_S_DEFAULT;
  o->campaign = true;
}

void mship_view_free(mship_view *v) {
  if (v == NULL) return;
  for (size_t i = 0; i < v->n; i++) {
    qv_free(v->members[i].node_id);
    qv_free(v->members[i].addr);
    qv_free(v->members[i].value);
  }
  qv_free(v->members);
  memset(v, 0, sizeof *v);
}

static bool view_copy(const mship_view *src, mship_view *dst) {
  memset(dst, 0, sizeof *dst);
  dst->version = src->version;
  dst->revision = src->revision;
  if (src->n == 0) return true;
  dst->members = qv_calloc(src->n, sizeof *dst->members);
  if (dst->members == NULL) return false;
  for (size_t i = 0; i < src->n; i++) {
    const mship_member *a = &src->members[i];
    mship_member *b = &dst->members[dst->n++];
    *b = *a;
    b->node_id = qv_strdup(a->node_id);
    b->addr = qv_strdup(a->addr);
    b->value = qv_strdup(a->value);
    if (!b->node_id || !b->addr || !b->value) {
      mship_view_free(dst);
      return false;
    }
  }
  return true;
}

/* ---- fencing and status -------------------------------------------------- */

bool mship_is_fenced(const mship *m) {
  if (__atomic_load_n(&m->fenced, __ATOMIC_ACQUIRE)) return true;
  uint64_t dl = __atomic_load_n(&m->deadline_ms, __ATOMIC_ACQUIRE);
  return dl == 0 || mono_ms() >= dl;
}

bool mship_is_controller(const mship *m, int64_t *token) {
  if (!__atomic_load_n(&m->is_ctrl, __ATOMIC_ACQUIRE) || mship_is_fenced(m))
    return false;
  if (token) *token = __atomic_load_n(&m->ctrl_token, __ATOMIC_ACQUIRE);
  return true;
}

void mship_status_get(mship *m, mship_status *out) {
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&m->mu);
  out->is_registered = m->is_registered;
  out->lease = m->lease;
  out->incarnation = m->incarnation;
  out->fences = m->fences;
  out->controller_token = m->ctrl_token;
  snprintf(out->controller, sizeof out->controller, "%s", m->ctrl_holder);
  out->last_renew_ms = m->last_renew_ms;
  out->fenced_at_ms = m->fenced_at_ms;
  pthread_mutex_unlock(&m->mu);
  out->is_fenced = mship_is_fenced(m);
  out->is_controller = mship_is_controller(m, NULL);
}

etcd_client *mship_client(const mship *m) { return m->c; }
const char *mship_prefix(const mship *m) { return m->prefix; }
const char *mship_node_id(const mship *m) { return m->node_id; }

static void notify(mship *m, mship_event ev) {
  if (m->on_state) m->on_state(m->ctx, ev);
}

/* Records who holds the controller key; calls back on a change of ours.
 * The key is ours only when it sits on the lease we hold *now* (`lease` is
 * the one seen on the key): a campaign that raced a fence, or a watch event
 * about an older incarnation, must not make us controller. */
static void set_controller(mship *m, bool is_us, int64_t lease, int64_t token,
                           const char *holder) {
  pthread_mutex_lock(&m->mu);
  is_us = is_us && lease != 0 && lease == m->lease;
  bool was = __atomic_load_n(&m->is_ctrl, __ATOMIC_ACQUIRE);
  __atomic_store_n(&m->ctrl_token, is_us ? token : 0, __ATOMIC_RELEASE);
  snprintf(m->ctrl_holder, sizeof m->ctrl_holder, "%s", holder ? holder : "");
  __atomic_store_n(&m->is_ctrl, is_us, __ATOMIC_RELEASE);
  pthread_mutex_unlock(&m->mu);
  if (is_us && !was) {
    qv_log(QV_LOG_INFO, "cluster", "%s is the controller (token %lld)",
           m->node_id, (long long)token);
    notify(m, MSHIP_CONTROLLER_GAINED);
  } else if (!is_us && was) {
    qv_log(QV_LOG_INFO, "cluster", "%s is no longer the controller",
           m->node_id);
    notify(m, MSHIP_CONTROLLER_LOST);
  }
}

/* Revokes `lease`; true when it is gone (revoked now or unknown to etcd). */
static bool revoke_ok(mship *m, int64_t lease) {
  qv_rc rc = etcd_lease_revoke(m->ka, lease, NULL);
  return rc == QV_OK || rc == QV_ENOTFOUND;
}

/* Stops acting as a member: see the top of the file. `why` is logged. */
static void fence(mship *m, const char *why) {
  pthread_mutex_lock(&m->mu);
  if (__atomic_load_n(&m->fenced, __ATOMIC_ACQUIRE)) {
    pthread_mutex_unlock(&m->mu);
    return;
  }
  __atomic_store_n(&m->fenced, 1, __ATOMIC_RELEASE);
  m->fences++;
  m->fenced_at_ms = mono_ms();
  int64_t old = m->lease;
  m->lease = 0;
  m->is_registered = false;
  pthread_mutex_unlock(&m->mu);
  qv_log(QV_LOG_WARN, "cluster", "%s fenced itself: %s", m->node_id, why);
  notify(m, MSHIP_FENCED);
  set_controller(m, false, 0, 0, NULL);
  /* If the lease is in fact still alive, its keys would keep telling the
   * others we are here: end it now, or as soon as etcd answers (it would
   * expire anyway, but etcd restarts the TTL of every lease when it elects
   * a leader, so an old key can outlive a restart by a whole TTL). */
  if (old != 0 && revoke_ok(m, old)) old = 0;
  pthread_mutex_lock(&m->mu);
  m->stale_lease = old;
  pthread_mutex_unlock(&m->mu);
}

/* ---- controller election ------------------------------------------------- */

/* Tries to become controller: create-if-absent on our lease. Either way
 * learns who holds the key. */
static void campaign(mship *m) {
  pthread_mutex_lock(&m->campaign_mu);
  pthread_mutex_lock(&m->mu);
  int64_t lease = m->lease;
  bool go = m->campaign && m->is_registered && !m->is_stopping;
  pthread_mutex_unlock(&m->mu);
  if (!go || mship_is_fenced(m)) goto out;
  etcd_cmp cmp = {.key = m->controller_key,
                  .target = ETCD_CMP_CREATE,
                  .result = ETCD_EQUAL,
                  .number = 0};
  etcd_op put = {.kind = ETCD_OP_PUT,
                 .key = m->controller_key,
                 .value = m->node_id,
                 .value_len = strlen(m->node_id),
                 .lease = lease};
  etcd_op get = {.kind = ETCD_OP_GET, .key = m->controller_key};
  etcd_txn t = {.cmp = &cmp,
                .n_cmp = 1,
                .success = &put,
                .n_success = 1,
                .failure = &get,
                .n_failure = 1};
  etcd_txn_result r;
  qv_err err;
  if (etcd_txn_do(m->c, &t, &r, &err) != QV_OK) {
    qv_log(QV_LOG_WARN, "cluster", "%s: campaign failed: %s", m->node_id,
           err.msg);
    goto out;
  }
  if (r.succeeded) {
    /* The put's revision is the key's create_revision: our token. */
    set_controller(m, true, lease, r.revision, m->node_id);
  } else if (r.kvs.n == 1) {
    const etcd_kv *kv = &r.kvs.kvs[0];
    bool is_us = strcmp(kv->value, m->node_id) == 0 && kv->lease == lease;
    set_controller(m, is_us, kv->lease, kv->create_revision, kv->value);
  }
  etcd_kvs_free(&r.kvs);
out:
  pthread_mutex_unlock(&m->campaign_mu);
}

static void on_ctrl_watch(void *ctx, const etcd_watch_msg *msg) {
  mship *m = ctx;
  const etcd_kv *kv = NULL;
  bool is_gone = false;
  if (msg->kind == ETCD_WATCH_SNAPSHOT) {
    if (msg->n_kvs == 1)
      kv = &msg->kvs[0];
    else
      is_gone = true;
  } else if (msg->kind == ETCD_WATCH_EVENTS && msg->n_events > 0) {
    const etcd_event *ev = &msg->events[msg->n_events - 1]; /* the latest */
    if (ev->is_delete)
      is_gone = true;
    else
      kv = &ev->kv;
  }
  if (kv != NULL) {
    set_controller(m, strcmp(kv->value, m->node_id) == 0, kv->lease,
                   kv->create_revision, kv->value);
  } else if (is_gone) {
    set_controller(m, false, 0, 0, NULL);
    campaign(m);
  }
}

/* ---- members view -------------------------------------------------------- */

static int cmp_member(const void *a, const void *b) {
  return strcmp(((const mship_member *)a)->node_id,
                ((const mship_member *)b)->node_id);
}

/* Index of node_id in the sorted view, or -(insertion point) - 1. */
static long view_find(const mship_view *v, const char *id) {
  size_t lo = 0, hi = v->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(v->members[mid].node_id, id);
    if (c == 0) return (long)mid;
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return -(long)lo - 1;
}

/* A member entry from a key-value under members_prefix; false on no memory
 * or a key that is not a member's. */
static bool member_from_kv(const mship *m, const etcd_kv *kv,
                           mship_member *out) {
  size_t plen = strlen(m->members_prefix);
  memset(out, 0, sizeof *out);
  if (kv->key_len <= plen) return false;
  out->node_id = qv_strdup(kv->key + plen);
  out->value = qv_strndup(kv->value, kv->value_len);
  json_error_t je;
  json_t *j = json_loadb(kv->value, kv->value_len, 0, &je);
  const char *addr = json_string_value(json_object_get(j, "addr"));
  out->addr = qv_strdup(addr ? addr : "");
  json_decref(j);
  out->create_revision = kv->create_revision;
  out->mod_revision = kv->mod_revision;
  out->lease = kv->lease;
  if (!out->node_id || !out->value || !out->addr) {
    qv_free(out->node_id);
    qv_free(out->value);
    qv_free(out->addr);
    return false;
  }
  return true;
}

static void member_free(mship_member *x) {
  qv_free(x->node_id);
  qv_free(x->addr);
  qv_free(x->value);
}

/* Applies a put to the view (m->mu held). */
static void view_put(mship *m, const etcd_kv *kv) {
  mship_member x;
  if (!member_from_kv(m, kv, &x)) return;
  mship_view *v = &m->view;
  long at = view_find(v, x.node_id);
  if (at >= 0) {
    member_free(&v->members[at]);
    v->members[at] = x;
    return;
  }
  mship_member *grown = qv_realloc(v->members, (v->n + 1) * sizeof *grown);
  if (grown == NULL) {
    member_free(&x);
    return;
  }
  v->members = grown;
  size_t ins = (size_t)(-at - 1);
  memmove(&v->members[ins + 1], &v->members[ins], (v->n - ins) * sizeof *grown);
  v->members[ins] = x;
  v->n++;
}

static void view_delete(mship *m, const etcd_kv *kv) {
  size_t plen = strlen(m->members_prefix);
  if (kv->key_len <= plen) return;
  mship_view *v = &m->view;
  long at = view_find(v, kv->key + plen);
  if (at < 0) return;
  member_free(&v->members[at]);
  memmove(&v->members[at], &v->members[at + 1],
          (v->n - (size_t)at - 1) * sizeof *v->members);
  v->n--;
}

static void on_members_watch(void *ctx, const etcd_watch_msg *msg) {
  mship *m = ctx;
  if (msg->kind == ETCD_WATCH_PROGRESS) return;
  mship_view copy;
  pthread_mutex_lock(&m->mu);
  if (msg->kind == ETCD_WATCH_SNAPSHOT) {
    uint64_t version = m->view.version;
    mship_view_free(&m->view);
    m->view.version = version;
    for (size_t i = 0; i < msg->n_kvs; i++) view_put(m, &msg->kvs[i]);
    qsort(m->view.members, m->view.n, sizeof *m->view.members, cmp_member);
  } else {
    for (size_t i = 0; i < msg->n_events; i++) {
      if (msg->events[i].is_delete)
        view_delete(m, &msg->events[i].kv);
      else
        view_put(m, &msg->events[i].kv);
    }
  }
  m->view.version++;
  m->view.revision = msg->revision;
  bool ok = m->on_members != NULL && view_copy(&m->view, &copy);
  pthread_mutex_unlock(&m->mu);
  if (ok) {
    m->on_members(m->ctx, &copy);
    mship_view_free(&copy);
  }
}

qv_rc mship_view_get(mship *m, mship_view *out, qv_err *err) {
  pthread_mutex_lock(&m->mu);
  bool ok = view_copy(&m->view, out);
  pthread_mutex_unlock(&m->mu);
  return ok ? QV_OK
            : qv_err_set(err, QV_ENOMEM, "membership: no memory for the view");
}

/* ---- registration and renewal -------------------------------------------- */

static char *member_value(mship *m, uint64_t incarnation) {
  json_t *v = NULL;
  if (m->meta_json) v = json_loads(m->meta_json, 0, NULL);
  if (!json_is_object(v)) {
    json_decref(v);
    v = json_object();
  }
  json_object_set_new(v, "node_id", json_string(m->node_id));
  json_object_set_new(v, "addr", json_string(m->addr));
  json_object_set_new(v, "started_at",
                      json_integer((json_int_t)m->started_at_ms));
  json_object_set_new(v, "incarnation", json_integer((json_int_t)incarnation));
  char *s = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
  json_decref(v);
  return s;
}

/* One registration attempt: a new lease and the member key on it, created
 * only if absent. Errors: QV_EEXIST (the key is held, by a previous
 * incarnation that has not expired yet or by another process), QV_EIO. */
static qv_rc register_once(mship *m, qv_err *err) {
  pthread_mutex_lock(&m->mu);
  int64_t stale = m->stale_lease;
  pthread_mutex_unlock(&m->mu);
  if (stale != 0 && revoke_ok(m, stale)) {
    pthread_mutex_lock(&m->mu);
    m->stale_lease = 0;
    pthread_mutex_unlock(&m->mu);
  }
  int64_t lease = 0, ttl = 0;
  uint64_t sent = mono_ms();
  qv_rc rc = etcd_lease_grant(m->ka, m->ttl_s, &lease, &ttl, err);
  if (rc != QV_OK) return rc;
  pthread_mutex_lock(&m->mu);
  uint64_t inc = m->incarnation + 1;
  pthread_mutex_unlock(&m->mu);
  char *value = member_value(m, inc);
  if (value == NULL) {
    etcd_lease_revoke(m->ka, lease, NULL);
    return qv_err_set(err, QV_ENOMEM, "membership %s: no memory", m->node_id);
  }
  etcd_cmp cmp = {
      .key = m->member_key, .target = ETCD_CMP_CREATE, .result = ETCD_EQUAL};
  etcd_op put = {.kind = ETCD_OP_PUT,
                 .key = m->member_key,
                 .value = value,
                 .value_len = strlen(value),
                 .lease = lease};
  etcd_op get = {.kind = ETCD_OP_GET, .key = m->member_key};
  etcd_txn t = {.cmp = &cmp,
                .n_cmp = 1,
                .success = &put,
                .n_success = 1,
                .failure = &get,
                .n_failure = 1};
  etcd_txn_result r;
  rc = etcd_txn_do(m->c, &t, &r, err);
  free(value); /* json_dumps's allocator */
  if (rc == QV_OK && !r.succeeded)
    rc = qv_err_set(
        err, QV_EEXIST, "membership: %s is registered already (lease %lld)",
        m->member_key, (long long)(r.kvs.n ? r.kvs.kvs[0].lease : 0));
  etcd_kvs_free(&r.kvs); /* etcd_txn_do leaves it empty on errors */
  if (rc != QV_OK) {
    etcd_lease_revoke(m->ka, lease, NULL);
    return rc;
  }
  pthread_mutex_lock(&m->mu);
  m->lease = lease;
  m->incarnation = inc;
  m->is_registered = true;
  m->last_renew_ms = sent;
  __atomic_store_n(&m->deadline_ms, sent + (uint64_t)ttl * 1000u - margin_ms(m),
                   __ATOMIC_RELEASE);
  __atomic_store_n(&m->fenced, 0, __ATOMIC_RELEASE);
  pthread_mutex_unlock(&m->mu);
  qv_log(QV_LOG_INFO, "cluster", "%s registered (lease %lld, incarnation %llu)",
         m->node_id, (long long)lease, (unsigned long long)inc);
  return QV_OK;
}

/* Waits on the condition variable until `until_ms` (monotonic) or stop.
 * Returns false when stopping. m->mu held. */
static bool wait_until(mship *m, uint64_t until_ms) {
  while (!m->is_stopping) {
    uint64_t now = mono_ms();
    if (now >= until_ms) return true;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t ns = (uint64_t)ts.tv_nsec + (until_ms - now) * 1000000u;
    ts.tv_sec += (time_t)(ns / 1000000000u);
    ts.tv_nsec = (long)(ns % 1000000000u);
    pthread_cond_timedwait(&m->cv, &m->mu, &ts);
  }
  return false;
}

static void *lease_main(void *arg) {
  mship *m = arg;
  uint32_t interval = m->ttl_s * 1000u / 3;
  uint64_t next = mono_ms() + interval;
  pthread_mutex_lock(&m->mu);
  while (!m->is_stopping) {
    if (!m->is_registered) {
      if (!wait_until(m, next)) break;
      pthread_mutex_unlock(&m->mu);
      qv_err err;
      qv_rc rc = register_once(m, &err);
      if (rc == QV_OK) {
        notify(m, MSHIP_REGISTERED);
        campaign(m);
        next = mono_ms() + interval;
      } else {
        qv_log(QV_LOG_WARN, "cluster", "%s: re-registration: %s", m->node_id,
               err.msg);
        next = mono_ms() + REGISTER_RETRY_MS;
      }
      pthread_mutex_lock(&m->mu);
      continue;
    }
    uint64_t dl = __atomic_load_n(&m->deadline_ms, __ATOMIC_ACQUIRE);
    if (!wait_until(m, next < dl ? next : dl)) break;
    int64_t lease = m->lease;
    pthread_mutex_unlock(&m->mu);
    uint64_t sent = mono_ms();
    qv_rc rc = QV_OK;
    qv_err err;
    if (sent >= dl) {
      fence(m, "no lease renewal within the TTL");
    } else {
      int64_t ttl = 0;
      rc = etcd_lease_keepalive(m->ka, lease, &ttl, &err);
      if (rc == QV_OK) {
        pthread_mutex_lock(&m->mu);
        if (m->lease == lease) {
          m->last_renew_ms = sent;
          __atomic_store_n(&m->deadline_ms,
                           sent + (uint64_t)ttl * 1000u - margin_ms(m),
                           __ATOMIC_RELEASE);
        }
        pthread_mutex_unlock(&m->mu);
        next = sent + interval;
      } else if (rc == QV_ENOTFOUND) {
        fence(m, "etcd says the lease is gone");
      } else {
        qv_log(QV_LOG_WARN, "cluster", "%s: renewal failed, retrying: %s",
               m->node_id, err.msg);
        next = mono_ms() + RETRY_MS;
      }
      if (mono_ms() >= __atomic_load_n(&m->deadline_ms, __ATOMIC_ACQUIRE) &&
          !__atomic_load_n(&m->fenced, __ATOMIC_ACQUIRE))
        fence(m, "no lease renewal within the TTL");
    }
    if (__atomic_load_n(&m->fenced, __ATOMIC_ACQUIRE))
      next = mono_ms() + RETRY_MS;
    pthread_mutex_lock(&m->mu);
  }
  pthread_mutex_unlock(&m->mu);
  return NULL;
}

/* ---- start and stop ------------------------------------------------------ */

static bool is_id_char(char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
         (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.';
}

static qv_rc check_opts(const mship_opts *o, qv_err *err) {
  if (o->node_id == NULL || *o->node_id == '\0' ||
      strlen(o->node_id) > MSHIP_NODE_ID_MAX)
    return qv_err_set(err, QV_EINVAL, "membership: node id must be 1..%u bytes",
                      MSHIP_NODE_ID_MAX);
  for (const char *p = o->node_id; *p; p++)
    if (!is_id_char(*p))
      return qv_err_set(
          err, QV_EINVAL,
          "membership: node id \"%.64s\": only letters, digits, '-', '_', '.'",
          o->node_id);
  if (o->prefix == NULL || o->prefix[0] != '/' ||
      strlen(o->prefix) > MSHIP_PREFIX_MAX ||
      o->prefix[strlen(o->prefix) - 1] == '/')
    return qv_err_set(
        err, QV_EINVAL,
        "membership: prefix \"%.64s\" must start with '/' and not end with one",
        o->prefix ? o->prefix : "");
  if (o->ttl_s < MSHIP_TTL_S_MIN || o->ttl_s > MSHIP_TTL_S_MAX)
    return qv_err_set(err, QV_EINVAL, "membership: TTL %u s, expected %u..%u",
                      o->ttl_s, MSHIP_TTL_S_MIN, MSHIP_TTL_S_MAX);
  if (o->meta_json) {
    json_t *j = json_loads(o->meta_json, 0, NULL);
    bool is_obj = json_is_object(j);
    json_decref(j);
    if (!is_obj)
      return qv_err_set(err, QV_EINVAL,
                        "membership: meta is not a JSON object");
  }
  return QV_OK;
}

static char *join3(const char *a, const char *b, const char *c) {
  size_t n = strlen(a) + strlen(b) + strlen(c) + 1;
  char *s = qv_malloc(n);
  if (s) snprintf(s, n, "%s%s%s", a, b, c);
  return s;
}

qv_rc mship_start(etcd_client *c, const mship_opts *o, mship **out,
                  qv_err *err) {
  qv_rc rc = check_opts(o, err);
  if (rc != QV_OK) return rc;
  mship *m = qv_calloc(1, sizeof *m);
  if (m == NULL) return qv_err_set(err, QV_ENOMEM, "membership: no memory");
  pthread_mutex_init(&m->mu, NULL);
  pthread_mutex_init(&m->campaign_mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&m->cv, &ca);
  pthread_condattr_destroy(&ca);
  m->c = c;
  m->ttl_s = o->ttl_s;
  m->campaign = o->campaign;
  m->on_members = o->on_members;
  m->on_state = o->on_state;
  m->ctx = o->ctx;
  m->started_at_ms = wall_ms();
  m->prefix = qv_strdup(o->prefix);
  m->node_id = qv_strdup(o->node_id);
  m->addr = qv_strdup(o->addr ? o->addr : "");
  m->meta_json = o->meta_json ? qv_strdup(o->meta_json) : NULL;
  m->members_prefix = join3(o->prefix, "/members/", "");
  m->member_key = join3(o->prefix, "/members/", o->node_id);
  m->controller_key = join3(o->prefix, "/controller", "");
  if (!m->prefix || !m->node_id || !m->addr ||
      (o->meta_json && !m->meta_json) || !m->members_prefix || !m->member_key ||
      !m->controller_key) {
    mship_stop(m);
    return qv_err_set(err, QV_ENOMEM, "membership: no memory");
  }
  /* Renewals get short attempts so that one stalled member cannot hold a
   * renewal past the deadline: a sixth of the TTL, within 200 ms..1 s. */
  uint32_t ka_ms = m->ttl_s * 1000u / 6;
  rc = etcd_client_dup(c,
                       ka_ms < 200    ? 200
                       : ka_ms > 1000 ? 1000
                                      : ka_ms,
                       &m->ka, err);
  if (rc != QV_OK) {
    mship_stop(m);
    return rc;
  }
  /* A previous incarnation's key lives until its lease expires. */
  uint64_t give_up = mono_ms() + m->ttl_s * 1000u + 1000u;
  while ((rc = register_once(m, err)) == QV_EEXIST && mono_ms() < give_up) {
    struct timespec ts = {0, (long)REGISTER_RETRY_MS * 1000000L};
    nanosleep(&ts, NULL);
  }
  etcd_watch_opts wo;
  etcd_watch_opts_init(&wo);
  wo.ctx = m;
  if (rc == QV_OK) {
    wo.key = m->members_prefix;
    wo.prefix = true;
    wo.fn = on_members_watch;
    rc = etcd_watch_start(c, &wo, &m->w_members, err);
  }
  if (rc == QV_OK) {
    wo.key = m->controller_key;
    wo.prefix = false;
    wo.fn = on_ctrl_watch;
    rc = etcd_watch_start(c, &wo, &m->w_ctrl, err);
  }
  if (rc == QV_OK) {
    if (pthread_create(&m->lease_thread, NULL, lease_main, m) != 0)
      rc = qv_err_set(err, QV_EIO, "membership %s: cannot start a thread",
                      m->node_id);
    else
      m->has_thread = true;
  }
  if (rc != QV_OK) {
    mship_stop(m);
    return rc;
  }
  *out = m;
  return QV_OK;
}

void mship_stop(mship *m) {
  if (m == NULL) return;
  pthread_mutex_lock(&m->mu);
  m->is_stopping = true;
  pthread_cond_broadcast(&m->cv);
  pthread_mutex_unlock(&m->mu);
  etcd_watch_stop(m->w_members);
  etcd_watch_stop(m->w_ctrl);
  if (m->has_thread) pthread_join(m->lease_thread, NULL);
  if (m->lease != 0 && m->ka != NULL) {
    qv_err err;
    if (etcd_lease_revoke(m->ka, m->lease, &err) != QV_OK)
      qv_log(QV_LOG_WARN, "cluster", "%s: leaving: %s", m->node_id, err.msg);
  }
  etcd_client_free(m->ka);
  mship_view_free(&m->view);
  pthread_cond_destroy(&m->cv);
  pthread_mutex_destroy(&m->mu);
  pthread_mutex_destroy(&m->campaign_mu);
  qv_free(m->prefix);
  qv_free(m->node_id);
  qv_free(m->addr);
  qv_free(m->meta_json);
  qv_free(m->members_prefix);
  qv_free(m->member_key);
  qv_free(m->controller_key);
  qv_free(m);
}
