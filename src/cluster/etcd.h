/* etcd.h: a small client for etcd v3's JSON gateway (etcd 3.4 and later),
 * over libcurl: key-value reads and writes, transactions with compares,
 * leases, and watches that survive lost connections.
 *
 * What the cluster keeps in etcd is small and slow-changing (members,
 * controller, shard maps); nothing here is meant for per-request traffic.
 *
 * Endpoints: a client holds a list of base URLs ("http://127.0.0.1:2379").
 * A call starts at the endpoint that last answered and moves to the next one
 * on a connection error, a timeout or a 5xx answer, so a cluster that lost
 * one member keeps working. Each attempt is bounded by opts.timeout_ms, so a
 * call returns within n_endpoints * timeout_ms at worst.
 *
 * Outcomes: a write (put, delete, txn, lease grant) that fails with QV_EIO
 * after reaching etcd may still have been applied — etcd's own answer to a
 * lost quorum is "request timed out" and the write can land later. Make
 * every write that matters a compare-and-swap (etcd_txn) and re-read on
 * failure.
 *
 * Threads: a client may be used by any number of threads at once (each call
 * borrows a connection from a small pool). Callbacks of a watch run on that
 * watch's own thread.
 *
 * Keys are NUL-terminated text; values are bytes. Everything returned is
 * owned by the caller and freed with the matching _free function. */
#ifndef QV_CLUSTER_ETCD_H
#define QV_CLUSTER_ETCD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quiver.h"

#define ETCD_TIMEOUT_MS_DEFAULT 2000u
#define ETCD_CONNECT_TIMEOUT_MS_DEFAULT 500u
#define ETCD_ENDPOINTS_MAX 16u
/* Largest response body accepted; larger is an error, not a truncation. */
#define ETCD_RESPONSE_MAX (64u << 20)
#define ETCD_WATCH_IDLE_MS_DEFAULT 3000u

typedef struct etcd_opts {
  /* Comma-separated base URLs, "http://host:port", at most
   * ETCD_ENDPOINTS_MAX. Borrowed for the call to etcd_client_new. */
  const char *endpoints;
  uint32_t timeout_ms;         /* per attempt, whole request (default 2000) */
  uint32_t connect_timeout_ms; /* per attempt, TCP connect (default 500) */
} etcd_opts;

void etcd_opts_init(etcd_opts *o);

typedef struct etcd_client etcd_client;

/* Errors: QV_EINVAL (no endpoint, a URL that is not http://host:port),
 * QV_ENOMEM. Nothing is contacted yet. */
qv_rc etcd_client_new(const etcd_opts *o, etcd_client **out, qv_err *err);
/* A second client on the same endpoints with another per-attempt timeout
 * (e.g. short ones for lease keepalives, so that a stalled member cannot
 * hold a renewal past the lease's TTL). Errors: QV_ENOMEM. */
qv_rc etcd_client_dup(const etcd_client *c, uint32_t timeout_ms,
                      etcd_client **out, qv_err *err);
/* Releases the client. Every watch on it must be stopped first. Accepts
 * NULL. */
void etcd_client_free(etcd_client *c);
/* The endpoint calls start from now (the last one that answered); borrowed
 * from the client. */
const char *etcd_client_endpoint(const etcd_client *c);

typedef struct etcd_kv {
  char *key; /* NUL-terminated */
  size_t key_len;
  char *value; /* value_len bytes, plus a NUL after them for text values */
  size_t value_len;
  int64_t create_revision, mod_revision, version;
  int64_t lease; /* 0 = none */
} etcd_kv;

typedef struct etcd_kvs {
  etcd_kv *kvs;
  size_t n;
  int64_t revision; /* the store's revision when etcd answered */
} etcd_kvs;

void etcd_kvs_free(etcd_kvs *r); /* accepts NULL; leaves *r empty */

/* Writes `key` = value (len bytes, may be 0). lease 0 = no lease (and a
 * put without a lease detaches the key from any lease it had). *revision
 * (may be NULL) receives the revision of the write.
 * Errors: QV_ENOTFOUND (the lease does not exist), QV_EINVAL (etcd refused
 * the request, e.g. too large), QV_EBUSY (etcd is out of space), QV_EIO. */
qv_rc etcd_put(etcd_client *c, const char *key, const void *value, size_t len,
               int64_t lease, int64_t *revision, qv_err *err);

/* Reads `key`: out->n is 1, or 0 when the key does not exist (not an
 * error). Linearizable. Errors: QV_EIO, QV_EINVAL. */
qv_rc etcd_get(etcd_client *c, const char *key, etcd_kvs *out, qv_err *err);

/* Reads every key that starts with `prefix`, sorted by key, at one
 * revision (out->revision). Errors: as etcd_get. */
qv_rc etcd_range_prefix(etcd_client *c, const char *prefix, etcd_kvs *out,
                        qv_err *err);

/* Deletes `key`, or with `prefix` every key that starts with it.
 * *n_deleted and *revision may be NULL. */
qv_rc etcd_delete(etcd_client *c, const char *key, bool prefix,
                  int64_t *n_deleted, int64_t *revision, qv_err *err);

/* Discards the history before `revision` (etcd keeps every old version
 * until compacted; the cluster runs etcd with auto-compaction, this is for
 * operators and tests). Errors: QV_EINVAL (revision compacted already or
 * in the future), QV_EIO. */
qv_rc etcd_compact(etcd_client *c, int64_t revision, qv_err *err);

/* ---- transactions -------------------------------------------------------- */

typedef enum etcd_target {
  ETCD_CMP_CREATE = 0, /* create_revision; 0 = the key does not exist */
  ETCD_CMP_MOD,        /* mod_revision */
  ETCD_CMP_VERSION,    /* version; 0 = the key does not exist */
  ETCD_CMP_VALUE,      /* the value bytes */
  ETCD_CMP_LEASE,      /* the lease id; 0 = none */
} etcd_target;

typedef enum etcd_result {
  ETCD_EQUAL = 0,
  ETCD_NOT_EQUAL,
  ETCD_GREATER,
  ETCD_LESS,
} etcd_result;

typedef struct etcd_cmp {
  const char *key;
  etcd_target target;
  etcd_result result;
  int64_t number;    /* for CREATE, MOD, VERSION, LEASE */
  const void *value; /* for VALUE */
  size_t value_len;
} etcd_cmp;

typedef enum etcd_op_kind {
  ETCD_OP_PUT = 0,
  ETCD_OP_GET,
  ETCD_OP_DELETE,
} etcd_op_kind;

typedef struct etcd_op {
  etcd_op_kind kind;
  const char *key;
  bool prefix;       /* GET, DELETE: every key starting with `key` */
  const void *value; /* PUT */
  size_t value_len;
  int64_t lease; /* PUT; 0 = none */
} etcd_op;

typedef struct etcd_txn {
  const etcd_cmp *cmp; /* all must hold for the success branch */
  size_t n_cmp;
  const etcd_op *success;
  size_t n_success;
  const etcd_op *failure;
  size_t n_failure;
} etcd_txn;

typedef struct etcd_txn_result {
  bool succeeded;   /* which branch ran */
  int64_t revision; /* the store's revision after the txn */
  etcd_kvs kvs;     /* what the GET ops of that branch returned, in order */
} etcd_txn_result;

/* Runs `t` atomically. A compare that does not hold is not an error: it
 * runs the failure branch and returns QV_OK with succeeded = false. Free
 * out->kvs with etcd_kvs_free (on an error it is empty, so freeing it
 * anyway is harmless). Errors: QV_EINVAL (e.g. the same key written
 * twice), QV_ENOTFOUND (a put names a lease that does not exist), QV_EIO
 * (outcome unknown, see the top of this file). */
qv_rc etcd_txn_do(etcd_client *c, const etcd_txn *t, etcd_txn_result *out,
                  qv_err *err);

/* ---- leases -------------------------------------------------------------- */

/* Grants a lease of ttl_s seconds (etcd raises it to its minimum, 2 s with
 * default settings). *granted_ttl may be NULL. */
qv_rc etcd_lease_grant(etcd_client *c, int64_t ttl_s, int64_t *id,
                       int64_t *granted_ttl, qv_err *err);
/* Renews lease `id` once. *ttl (may be NULL) receives the renewed TTL.
 * Errors: QV_ENOTFOUND (the lease expired or was revoked), QV_EIO. */
qv_rc etcd_lease_keepalive(etcd_client *c, int64_t id, int64_t *ttl,
                           qv_err *err);
/* Revokes lease `id`; every key attached to it is deleted at once.
 * Errors: QV_ENOTFOUND (no such lease), QV_EIO. */
qv_rc etcd_lease_revoke(etcd_client *c, int64_t id, qv_err *err);
/* Seconds lease `id` has left; -1 when it is gone. */
qv_rc etcd_lease_ttl(etcd_client *c, int64_t id, int64_t *ttl, qv_err *err);

/* ---- watches ------------------------------------------------------------- */

typedef struct etcd_event {
  bool is_delete;
  etcd_kv kv; /* for a delete: key and mod_revision only */
} etcd_event;

typedef enum etcd_watch_kind {
  /* The whole watched range as of `revision` (kvs, n_kvs): sent first when
   * the watch starts without a start revision, and again whenever etcd
   * compacted away history the watch still needed. Replace the local view
   * with it; events follow from revision + 1. */
  ETCD_WATCH_SNAPSHOT = 0,
  /* Changes, in revision order, never repeated and never skipped. */
  ETCD_WATCH_EVENTS,
  /* Nothing changed up to `revision` (etcd's progress notification). */
  ETCD_WATCH_PROGRESS,
} etcd_watch_kind;

typedef struct etcd_watch_msg {
  etcd_watch_kind kind;
  int64_t revision;
  const etcd_event *events; /* EVENTS */
  size_t n_events;
  const etcd_kv *kvs; /* SNAPSHOT */
  size_t n_kvs;
} etcd_watch_msg;

/* Called on the watch's thread; everything in `m` is borrowed for the
 * call. Must not call etcd_watch_stop on its own watch. */
typedef void (*etcd_watch_fn)(void *ctx, const etcd_watch_msg *m);

typedef struct etcd_watch_opts {
  const char *key; /* borrowed for the call to etcd_watch_start */
  bool prefix;     /* watch every key starting with `key` */
  /* > 0: deliver every change from this revision on. 0: deliver a SNAPSHOT
   * of the range first, then the changes after it. */
  int64_t start_revision;
  /* No message for this long means the connection is dead: reconnect (to
   * the next endpoint) from the last revision seen. etcd sends progress
   * notifications every 10 minutes by default; run it with
   * --experimental-watch-progress-notify-interval=1s so that a healthy idle
   * watch is not reconnected. Default 3000; 0 = never. */
  uint32_t idle_timeout_ms;
  etcd_watch_fn fn;
  void *ctx;
} etcd_watch_opts;

void etcd_watch_opts_init(etcd_watch_opts *o);

typedef struct etcd_watch etcd_watch;

/* Starts a thread that follows the range and calls o->fn. Connection losses,
 * member deaths and compactions are handled inside: the caller sees an
 * unbroken sequence of revisions (with a SNAPSHOT where history was lost).
 * Errors: QV_EINVAL, QV_ENOMEM, QV_EIO (no thread). A watch whose etcd is
 * unreachable is not an error: it keeps retrying with backoff. */
qv_rc etcd_watch_start(etcd_client *c, const etcd_watch_opts *o,
                       etcd_watch **out, qv_err *err);
/* Stops the thread and frees the watch; o->fn is not called after this
 * returns. Accepts NULL. */
void etcd_watch_stop(etcd_watch *w);

typedef struct etcd_watch_stats {
  int64_t revision;   /* everything up to here has been delivered */
  uint64_t connects;  /* streams opened (1 when nothing went wrong) */
  uint64_t snapshots; /* SNAPSHOT messages delivered */
  bool is_connected;  /* a stream is open and etcd confirmed the watch */
} etcd_watch_stats;

void etcd_watch_get_stats(etcd_watch *w, etcd_watch_stats *out);

/* Forces the current stream to close as if the connection dropped (tests
 * and operators use it to exercise the resume path). */
void etcd_watch_kick(etcd_watch *w);

#endif
