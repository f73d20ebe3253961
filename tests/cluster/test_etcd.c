/* test_etcd.c: the etcd v3 JSON-gateway client (src/cluster/etcd*.c)
 * against a real etcd started by scripts/etcd.sh.
 *
 * One single-member etcd is shared by the ordinary tests (started before
 * the first test, stopped after the last; each test works under its own
 * key prefix). Tests that kill, restart or stop etcd start their own. When
 * the etcd binary is missing every test is skipped, not failed. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>

#include "cluster/etcd.h"
#include "cluster_harness.h"

static th_etcd g_shared;

ReportHook(PRE_ALL)(struct criterion_test_set *set) {
  (void)set;
  if (!th_have_etcd()) return;
  if (th_etcd_start(&g_shared, 1))
    setenv("QV_TEST_ETCD", g_shared.endpoints, 1);
  else
    fprintf(stderr, "test_etcd: could not start etcd\n");
}

ReportHook(POST_ALL)(struct criterion_global_stats *st) {
  (void)st;
  th_etcd_stop(&g_shared);
}

static etcd_client *client_for(const char *endpoints, uint32_t timeout_ms) {
  etcd_opts o;
  etcd_opts_init(&o);
  o.endpoints = endpoints;
  if (timeout_ms) o.timeout_ms = timeout_ms;
  etcd_client *c = NULL;
  qv_err err = {0};
  cr_assert_eq(etcd_client_new(&o, &c, &err), QV_OK, "%s", err.msg);
  return c;
}

/* A client on the shared etcd, or the test is skipped. */
static etcd_client *shared(void) {
  th_maybe_log();
  const char *eps = getenv("QV_TEST_ETCD");
  if (eps == NULL) cr_skip_test("no etcd (apt-get install etcd-server)");
  return client_for(eps, 0);
}

static void put_s(etcd_client *c, const char *k, const char *v, int64_t lease) {
  qv_err err = {0};
  cr_assert_eq(etcd_put(c, k, v, strlen(v), lease, NULL, &err), QV_OK, "%s",
               err.msg);
}

static bool key_exists(etcd_client *c, const char *k) {
  etcd_kvs r;
  cr_assert_eq(etcd_get(c, k, &r, NULL), QV_OK);
  bool is_there = r.n == 1;
  etcd_kvs_free(&r);
  return is_there;
}

/* ---- key-value ----------------------------------------------------------- */

Test(etcd_kv, put_then_get_returns_the_value_and_its_revisions) {
  etcd_client *c = shared();
  int64_t rev1 = 0, rev2 = 0;
  cr_assert_eq(etcd_put(c, "/t/kv1/a", "one", 3, 0, &rev1, NULL), QV_OK);
  etcd_kvs r;
  cr_assert_eq(etcd_get(c, "/t/kv1/a", &r, NULL), QV_OK);
  cr_assert_eq(r.n, 1);
  cr_expect_str_eq(r.kvs[0].key, "/t/kv1/a");
  cr_expect_eq(r.kvs[0].value_len, 3);
  cr_expect_str_eq(r.kvs[0].value, "one");
  cr_expect_eq(r.kvs[0].create_revision, rev1);
  cr_expect_eq(r.kvs[0].mod_revision, rev1);
  cr_expect_eq(r.kvs[0].version, 1);
  cr_expect_eq(r.kvs[0].lease, 0);
  etcd_kvs_free(&r);
  cr_assert_eq(etcd_put(c, "/t/kv1/a", "two", 3, 0, &rev2, NULL), QV_OK);
  cr_assert_gt(rev2, rev1);
  cr_assert_eq(etcd_get(c, "/t/kv1/a", &r, NULL), QV_OK);
  cr_expect_str_eq(r.kvs[0].value, "two");
  cr_expect_eq(r.kvs[0].create_revision, rev1);
  cr_expect_eq(r.kvs[0].mod_revision, rev2);
  cr_expect_eq(r.kvs[0].version, 2);
  cr_expect_geq(r.revision, rev2);
  etcd_kvs_free(&r);
  etcd_client_free(c);
}

Test(etcd_kv, binary_and_one_mebibyte_values_round_trip) {
  etcd_client *c = shared();
  unsigned char bin[256];
  for (int i = 0; i < 256; i++)
    bin[i] = (unsigned char)i; /* NULs and 0xff too */
  size_t big_len = 1u << 20;
  unsigned char *big = malloc(big_len);
  uint64_t x = 7;
  for (size_t i = 0; i < big_len; i++)
    big[i] = (unsigned char)((x = x * 6364136223846793005ull + 1) >> 56);
  for (size_t len = 0; len <= 5; len++) { /* every base64 padding case */
    char key[32];
    snprintf(key, sizeof key, "/t/bin/%zu", len);
    cr_assert_eq(etcd_put(c, key, bin + 250, len, 0, NULL, NULL), QV_OK);
    etcd_kvs r;
    cr_assert_eq(etcd_get(c, key, &r, NULL), QV_OK);
    cr_assert_eq(r.n, 1);
    cr_assert_eq(r.kvs[0].value_len, len);
    cr_assert_eq(memcmp(r.kvs[0].value, bin + 250, len), 0);
    etcd_kvs_free(&r);
  }
  cr_assert_eq(etcd_put(c, "/t/bin/all", bin, sizeof bin, 0, NULL, NULL),
               QV_OK);
  qv_err err = {0};
  cr_assert_eq(etcd_put(c, "/t/bin/big", big, big_len, 0, NULL, &err), QV_OK,
               "%s", err.msg);
  etcd_kvs r;
  cr_assert_eq(etcd_get(c, "/t/bin/all", &r, NULL), QV_OK);
  cr_assert_eq(r.kvs[0].value_len, sizeof bin);
  cr_assert_eq(memcmp(r.kvs[0].value, bin, sizeof bin), 0);
  etcd_kvs_free(&r);
  cr_assert_eq(etcd_get(c, "/t/bin/big", &r, NULL), QV_OK);
  cr_assert_eq(r.kvs[0].value_len, big_len);
  cr_assert_eq(memcmp(r.kvs[0].value, big, big_len), 0);
  etcd_kvs_free(&r);
  free(big);
  etcd_client_free(c);
}

Test(etcd_kv, a_value_over_etcds_request_limit_is_refused_with_its_message) {
  etcd_client *c = shared();
  size_t len = 1600u * 1024u; /* etcd accepts requests up to 1.5 MiB */
  char *v = calloc(1, len);
  qv_err err = {0};
  cr_assert_eq(etcd_put(c, "/t/toobig", v, len, 0, NULL, &err), QV_EINVAL);
  cr_expect(strstr(err.msg, "too large") != NULL, "%s", err.msg);
  cr_expect(strstr(err.msg, "put /t/toobig") != NULL, "%s", err.msg);
  free(v);
  etcd_client_free(c);
}

Test(etcd_kv, a_missing_key_reads_as_empty) {
  etcd_client *c = shared();
  etcd_kvs r;
  cr_assert_eq(etcd_get(c, "/t/never/written", &r, NULL), QV_OK);
  cr_expect_eq(r.n, 0);
  cr_expect_gt(r.revision, 0);
  etcd_kvs_free(&r);
  etcd_client_free(c);
}

Test(etcd_kv, a_prefix_range_is_sorted_and_stays_inside_the_prefix) {
  etcd_client *c = shared();
  put_s(c, "/t/pre/b", "2", 0);
  put_s(c, "/t/pre/a", "1", 0);
  put_s(c, "/t/pre/c/deep", "3", 0);
  put_s(c, "/t/pre0", "outside", 0); /* '0' is '/' + 1: the range end */
  put_s(c, "/t/pr", "outside", 0);
  etcd_kvs r;
  cr_assert_eq(etcd_range_prefix(c, "/t/pre/", &r, NULL), QV_OK);
  cr_assert_eq(r.n, 3);
  cr_expect_str_eq(r.kvs[0].key, "/t/pre/a");
  cr_expect_str_eq(r.kvs[1].key, "/t/pre/b");
  cr_expect_str_eq(r.kvs[2].key, "/t/pre/c/deep");
  etcd_kvs_free(&r);
  etcd_client_free(c);
}

Test(etcd_kv, delete_removes_a_key_or_a_prefix_and_counts) {
  etcd_client *c = shared();
  put_s(c, "/t/del/x", "1", 0);
  put_s(c, "/t/del/y/1", "1", 0);
  put_s(c, "/t/del/y/2", "1", 0);
  int64_t n = -1;
  cr_assert_eq(etcd_delete(c, "/t/del/x", false, &n, NULL, NULL), QV_OK);
  cr_expect_eq(n, 1);
  cr_assert_eq(etcd_delete(c, "/t/del/x", false, &n, NULL, NULL), QV_OK);
  cr_expect_eq(n, 0, "deleting nothing is not an error");
  cr_assert_eq(etcd_delete(c, "/t/del/y/", true, &n, NULL, NULL), QV_OK);
  cr_expect_eq(n, 2);
  cr_expect(!key_exists(c, "/t/del/y/1"));
  etcd_client_free(c);
}

/* ---- transactions -------------------------------------------------------- */

Test(etcd_txn,
     cas_on_the_current_mod_revision_succeeds_and_on_a_stale_one_fails) {
  etcd_client *c = shared();
  int64_t rev = 0;
  cr_assert_eq(etcd_put(c, "/t/cas/k", "v1", 2, 0, &rev, NULL), QV_OK);
  etcd_cmp cmp = {.key = "/t/cas/k",
                  .target = ETCD_CMP_MOD,
                  .result = ETCD_EQUAL,
                  .number = rev};
  etcd_op put = {
      .kind = ETCD_OP_PUT, .key = "/t/cas/k", .value = "v2", .value_len = 2};
  etcd_op get = {.kind = ETCD_OP_GET, .key = "/t/cas/k"};
  etcd_txn t = {.cmp = &cmp,
                .n_cmp = 1,
                .success = &put,
                .n_success = 1,
                .failure = &get,
                .n_failure = 1};
  etcd_txn_result r;
  cr_assert_eq(etcd_txn_do(c, &t, &r, NULL), QV_OK);
  cr_assert(r.succeeded);
  cr_assert_gt(r.revision, rev);
  cr_expect_eq(r.kvs.n, 0);
  int64_t rev2 = r.revision;
  etcd_kvs_free(&r.kvs);
  /* Same compare again: rev is stale now. */
  put.value = "v3";
  cr_assert_eq(etcd_txn_do(c, &t, &r, NULL), QV_OK);
  cr_assert_not(r.succeeded);
  cr_assert_eq(r.kvs.n, 1, "the failure branch's read");
  cr_expect_str_eq(r.kvs.kvs[0].value, "v2");
  cr_expect_eq(r.kvs.kvs[0].mod_revision, rev2);
  etcd_kvs_free(&r.kvs);
  etcd_kvs kv;
  cr_assert_eq(etcd_get(c, "/t/cas/k", &kv, NULL), QV_OK);
  cr_expect_str_eq(kv.kvs[0].value, "v2", "a failed CAS writes nothing");
  etcd_kvs_free(&kv);
  etcd_client_free(c);
}

Test(etcd_txn, create_if_absent_wins_once) {
  etcd_client *c = shared();
  etcd_cmp cmp = {.key = "/t/once",
                  .target = ETCD_CMP_CREATE,
                  .result = ETCD_EQUAL,
                  .number = 0};
  etcd_op put = {
      .kind = ETCD_OP_PUT, .key = "/t/once", .value = "first", .value_len = 5};
  etcd_op get = {.kind = ETCD_OP_GET, .key = "/t/once"};
  etcd_txn t = {.cmp = &cmp,
                .n_cmp = 1,
                .success = &put,
                .n_success = 1,
                .failure = &get,
                .n_failure = 1};
  etcd_txn_result r;
  cr_assert_eq(etcd_txn_do(c, &t, &r, NULL), QV_OK);
  cr_assert(r.succeeded);
  etcd_kvs_free(&r.kvs);
  put.value = "second";
  put.value_len = 6;
  cr_assert_eq(etcd_txn_do(c, &t, &r, NULL), QV_OK);
  cr_assert_not(r.succeeded);
  cr_assert_eq(r.kvs.n, 1);
  cr_expect_str_eq(r.kvs.kvs[0].value, "first",
                   "the failure branch names the holder");
  etcd_kvs_free(&r.kvs);
  etcd_client_free(c);
}

Test(etcd_txn,
     writing_one_key_twice_is_refused_with_etcds_message_and_endpoint) {
  etcd_client *c = shared();
  etcd_op put[2] = {
      {.kind = ETCD_OP_PUT, .key = "/t/dup", .value = "a", .value_len = 1},
      {.kind = ETCD_OP_PUT, .key = "/t/dup", .value = "b", .value_len = 1}};
  etcd_txn t = {.success = put, .n_success = 2};
  etcd_txn_result r;
  qv_err err = {0};
  cr_assert_eq(etcd_txn_do(c, &t, &r, &err), QV_EINVAL);
  cr_expect(strstr(err.msg, "duplicate key") != NULL, "%s", err.msg);
  cr_expect(strstr(err.msg, "txn") != NULL, "%s", err.msg);
  cr_expect(strstr(err.msg, etcd_client_endpoint(c)) != NULL, "%s", err.msg);
  cr_expect(!key_exists(c, "/t/dup"));
  etcd_client_free(c);
}

/* ---- leases -------------------------------------------------------------- */

Test(etcd_lease, revoking_a_lease_deletes_its_keys_at_once) {
  etcd_client *c = shared();
  int64_t id = 0, ttl = 0;
  cr_assert_eq(etcd_lease_grant(c, 30, &id, &ttl, NULL), QV_OK);
  cr_assert_gt(id, 0);
  cr_expect_eq(ttl, 30);
  put_s(c, "/t/lease/r1", "x", id);
  put_s(c, "/t/lease/r2", "x", id);
  etcd_kvs r;
  cr_assert_eq(etcd_get(c, "/t/lease/r1", &r, NULL), QV_OK);
  cr_expect_eq(r.kvs[0].lease, id,
               "lease ids above 2^53 survive: kept as text");
  etcd_kvs_free(&r);
  cr_assert_eq(etcd_lease_revoke(c, id, NULL), QV_OK);
  cr_expect(!key_exists(c, "/t/lease/r1"));
  cr_expect(!key_exists(c, "/t/lease/r2"));
  qv_err err = {0};
  cr_expect_eq(etcd_lease_revoke(c, id, &err), QV_ENOTFOUND, "%s", err.msg);
  etcd_client_free(c);
}

Test(etcd_lease, an_expired_lease_takes_its_keys_with_it) {
  etcd_client *c = shared();
  int64_t id = 0, ttl = 0;
  cr_assert_eq(etcd_lease_grant(c, 1, &id, &ttl, NULL), QV_OK);
  cr_expect_eq(ttl, 2, "etcd's minimum TTL is 2 s");
  put_s(c, "/t/lease/exp", "x", id);
  cr_assert(key_exists(c, "/t/lease/exp"));
  /* Behaviour, not timing: the key must go; 10 s only guards a hang. */
  cr_assert(TH_WAIT(!key_exists(c, "/t/lease/exp"), 10000));
  int64_t left = 0;
  cr_assert_eq(etcd_lease_ttl(c, id, &left, NULL), QV_OK);
  cr_expect_eq(left, -1);
  qv_err err = {0};
  cr_expect_eq(etcd_lease_keepalive(c, id, NULL, &err), QV_ENOTFOUND);
  cr_expect(strstr(err.msg, "expired or revoked") != NULL, "%s", err.msg);
  etcd_client_free(c);
}

Test(etcd_lease, keepalives_keep_a_lease_and_its_keys_past_its_ttl) {
  etcd_client *c = shared();
  int64_t id = 0;
  cr_assert_eq(etcd_lease_grant(c, 2, &id, NULL, NULL), QV_OK);
  put_s(c, "/t/lease/kept", "x", id);
  uint64_t until = th_ms() + 5000; /* 2.5 TTLs */
  while (th_ms() < until) {
    int64_t ttl = 0;
    qv_err err = {0};
    cr_assert_eq(etcd_lease_keepalive(c, id, &ttl, &err), QV_OK, "%s", err.msg);
    cr_assert_eq(ttl, 2);
    th_nap_ms(500);
  }
  cr_expect(key_exists(c, "/t/lease/kept"));
  cr_assert_eq(etcd_lease_revoke(c, id, NULL), QV_OK);
  etcd_client_free(c);
}

Test(etcd_lease, a_put_on_an_unknown_lease_is_not_found) {
  etcd_client *c = shared();
  qv_err err = {0};
  cr_assert_eq(
      etcd_put(c, "/t/lease/none", "x", 1, 0x7000000000000001ll, NULL, &err),
      QV_ENOTFOUND);
  cr_expect(strstr(err.msg, "lease not found") != NULL, "%s", err.msg);
  etcd_client_free(c);
}

/* ---- watches ------------------------------------------------------------- */

typedef struct seen {
  pthread_mutex_t mu;
  char keys[64][64];
  char values[64][32];
  bool is_delete[64];
  int64_t rev[64];
  int n, snapshots, snapshot_kvs, progress;
} seen;

static void on_watch(void *ctx, const etcd_watch_msg *m) {
  seen *s = ctx;
  pthread_mutex_lock(&s->mu);
  if (m->kind == ETCD_WATCH_SNAPSHOT) {
    s->snapshots++;
    s->snapshot_kvs = (int)m->n_kvs;
  } else if (m->kind == ETCD_WATCH_PROGRESS) {
    s->progress++;
  }
  for (size_t i = 0; i < m->n_events && s->n < 64; i++, s->n++) {
    snprintf(s->keys[s->n], sizeof s->keys[0], "%s", m->events[i].kv.key);
    snprintf(s->values[s->n], sizeof s->values[0], "%.*s",
             (int)m->events[i].kv.value_len, m->events[i].kv.value);
    s->is_delete[s->n] = m->events[i].is_delete;
    s->rev[s->n] = m->events[i].kv.mod_revision;
  }
  pthread_mutex_unlock(&s->mu);
}

static int seen_n(seen *s) {
  pthread_mutex_lock(&s->mu);
  int n = s->n;
  pthread_mutex_unlock(&s->mu);
  return n;
}

static etcd_watch *watch(etcd_client *c, const char *prefix, int64_t from,
                         seen *s) {
  memset(s, 0, sizeof *s);
  pthread_mutex_init(&s->mu, NULL);
  etcd_watch_opts o;
  etcd_watch_opts_init(&o);
  o.key = prefix;
  o.prefix = true;
  o.start_revision = from;
  o.fn = on_watch;
  o.ctx = s;
  etcd_watch *w = NULL;
  qv_err err = {0};
  cr_assert_eq(etcd_watch_start(c, &o, &w, &err), QV_OK, "%s", err.msg);
  return w;
}

static bool is_connected(etcd_watch *w) {
  etcd_watch_stats st;
  etcd_watch_get_stats(w, &st);
  return st.is_connected;
}

/* The events seen are exactly these "+key=value" / "-key" in order, with
 * strictly increasing revisions. */
static void expect_events(seen *s, const char *const *want, int n) {
  cr_assert_eq(seen_n(s), n, "got %d events, expected %d", seen_n(s), n);
  for (int i = 0; i < n; i++) {
    char got[128];
    if (s->is_delete[i])
      snprintf(got, sizeof got, "-%s", s->keys[i]);
    else
      snprintf(got, sizeof got, "+%s=%s", s->keys[i], s->values[i]);
    cr_expect_str_eq(got, want[i], "event %d", i);
    if (i > 0) cr_expect_gt(s->rev[i], s->rev[i - 1], "event %d revision", i);
  }
}

Test(etcd_watch, delivers_a_snapshot_then_puts_and_deletes_in_order) {
  etcd_client *c = shared();
  put_s(c, "/t/w1/before", "0", 0);
  seen s;
  etcd_watch *w = watch(c, "/t/w1/", 0, &s);
  cr_assert(TH_WAIT(s.snapshots == 1, 5000));
  cr_expect_eq(s.snapshot_kvs, 1);
  put_s(c, "/t/w1/a", "1", 0);
  put_s(c, "/t/w1/b", "2", 0);
  put_s(c, "/t/w1/a", "3", 0);
  cr_assert_eq(etcd_delete(c, "/t/w1/b", false, NULL, NULL, NULL), QV_OK);
  put_s(c, "/t/w1x", "outside the prefix", 0);
  cr_assert(TH_WAIT(seen_n(&s) >= 4, 5000));
  etcd_watch_stop(w);
  const char *want[] = {"+/t/w1/a=1", "+/t/w1/b=2", "+/t/w1/a=3", "-/t/w1/b"};
  expect_events(&s, want, 4);
  etcd_client_free(c);
}

Test(etcd_watch, resumes_after_its_connection_drops_without_loss_or_repeat) {
  etcd_client *c = shared();
  seen s;
  etcd_watch *w = watch(c, "/t/w2/", 0, &s);
  cr_assert(TH_WAIT(is_connected(w), 5000));
  put_s(c, "/t/w2/a", "1", 0);
  cr_assert(TH_WAIT(seen_n(&s) == 1, 5000));
  for (int round = 0; round < 3; round++) {
    etcd_watch_kick(w); /* drops the stream as a dead connection would */
    char k[32];
    snprintf(k, sizeof k, "/t/w2/k%d", round);
    put_s(c, k, "x", 0); /* may land while no stream is open */
    cr_assert(TH_WAIT(seen_n(&s) == 2 + round, 5000));
  }
  etcd_watch_stats st;
  etcd_watch_get_stats(w, &st);
  cr_expect_geq(st.connects, 4);
  etcd_watch_stop(w);
  const char *want[] = {"+/t/w2/a=1", "+/t/w2/k0=x", "+/t/w2/k1=x",
                        "+/t/w2/k2=x"};
  expect_events(&s, want, 4);
  etcd_client_free(c);
}

Test(etcd_watch, from_a_start_revision_replays_history) {
  etcd_client *c = shared();
  int64_t first = 0;
  cr_assert_eq(etcd_put(c, "/t/w3/a", "1", 1, 0, &first, NULL), QV_OK);
  put_s(c, "/t/w3/a", "2", 0);
  cr_assert_eq(etcd_delete(c, "/t/w3/a", false, NULL, NULL, NULL), QV_OK);
  seen s;
  etcd_watch *w = watch(c, "/t/w3/", first, &s);
  cr_assert(TH_WAIT(seen_n(&s) >= 3, 5000));
  etcd_watch_stop(w);
  cr_expect_eq(s.snapshots, 0);
  const char *want[] = {"+/t/w3/a=1", "+/t/w3/a=2", "-/t/w3/a"};
  expect_events(&s, want, 3);
  etcd_client_free(c);
}

Test(etcd_watch, a_compacted_start_revision_resyncs_with_a_snapshot) {
  etcd_client *c = shared();
  int64_t old = 0, now = 0;
  cr_assert_eq(etcd_put(c, "/t/w4/a", "1", 1, 0, &old, NULL), QV_OK);
  cr_assert_eq(etcd_put(c, "/t/w4/a", "2", 1, 0, &now, NULL), QV_OK);
  qv_err err = {0};
  cr_assert_eq(etcd_compact(c, now, &err), QV_OK, "%s", err.msg);
  seen s;
  etcd_watch *w =
      watch(c, "/t/w4/", old, &s); /* history before `now` is gone */
  cr_assert(TH_WAIT(s.snapshots == 1, 5000));
  cr_expect_eq(s.snapshot_kvs, 1, "the snapshot holds the current state");
  put_s(c, "/t/w4/b", "3", 0);
  cr_assert(TH_WAIT(seen_n(&s) == 1, 5000));
  etcd_watch_stop(w);
  const char *want[] = {"+/t/w4/b=3"};
  expect_events(&s, want, 1);
  etcd_client_free(c);
}

/* ---- errors
 * ---------------------------------------------------------------------------
 */

/* A TCP port that accepts connections and never answers: what a stopped
 * (SIGSTOP) or wedged server looks like. */
static int blackhole(int *port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  cr_assert_eq(listen(fd, 16), 0);
  cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
  *port = ntohs(a.sin_port);
  return fd;
}

Test(etcd_errors, with_every_endpoint_down_a_call_fails_within_its_timeouts) {
  th_maybe_log();
  int port, fd = blackhole(&port);
  char eps[128];
  snprintf(eps, sizeof eps, "http://127.0.0.1:%d,http://127.0.0.1:1", port);
  etcd_client *c = client_for(eps, 300);
  qv_err err = {0};
  uint64_t t0 = th_ms();
  cr_assert_eq(etcd_put(c, "/t/x", "1", 1, 0, NULL, &err), QV_EIO);
  uint64_t took = th_ms() - t0;
  cr_expect(strstr(err.msg, "put /t/x") != NULL, "%s", err.msg);
  cr_expect(strstr(err.msg, "all 2 endpoints failed") != NULL, "%s", err.msg);
  cr_expect(strstr(err.msg, "127.0.0.1:1") != NULL, "%s", err.msg);
  /* The contract: at most n_endpoints * timeout (plus scheduling slack). */
  cr_expect_lt(took, 2 * 300 + 1500, "took %llu ms", (unsigned long long)took);
  etcd_kvs r;
  cr_expect_eq(etcd_get(c, "/t/x", &r, &err), QV_EIO);
  cr_expect(strstr(err.msg, "timed out") || strstr(err.msg, "refused") ||
                strstr(err.msg, "connect"),
            "%s", err.msg);
  etcd_client_free(c);
  close(fd);
}

Test(etcd_errors, malformed_endpoints_are_refused) {
  etcd_opts o;
  etcd_opts_init(&o);
  etcd_client *c = NULL;
  qv_err err = {0};
  o.endpoints = "127.0.0.1:2379";
  cr_expect_eq(etcd_client_new(&o, &c, &err), QV_EINVAL);
  cr_expect(strstr(err.msg, "http://host:port") != NULL, "%s", err.msg);
  o.endpoints = " , ";
  cr_expect_eq(etcd_client_new(&o, &c, &err), QV_EINVAL);
  o.endpoints = NULL;
  cr_expect_eq(etcd_client_new(&o, &c, &err), QV_EINVAL);
  o.endpoints = "http://127.0.0.1:1/, http://127.0.0.1:2";
  cr_assert_eq(etcd_client_new(&o, &c, &err), QV_OK, "%s", err.msg);
  cr_expect_str_eq(etcd_client_endpoint(c), "http://127.0.0.1:1");
  etcd_client_free(c);
}

/* ---- failures of etcd itself (own instances) ----------------------------- */

static th_etcd g_own;

static void own_fini(void) { th_etcd_stop(&g_own); }

Test(etcd_restart, a_watch_and_the_client_carry_on_after_etcd_restarts,
     .fini = own_fini) {
  th_maybe_log();
  if (!th_have_etcd()) cr_skip_test("no etcd");
  cr_assert(th_etcd_start(&g_own, 1));
  etcd_client *c = client_for(g_own.endpoints, 1000);
  seen s;
  etcd_watch *w = watch(c, "/t/r/", 0, &s);
  cr_assert(TH_WAIT(is_connected(w), 5000));
  put_s(c, "/t/r/a", "1", 0);
  cr_assert(TH_WAIT(seen_n(&s) == 1, 5000));
  cr_assert(th_etcd_member(&g_own, "kill", "m1"));
  cr_expect_eq(etcd_put(c, "/t/r/lost", "x", 1, 0, NULL, NULL), QV_EIO);
  cr_assert(th_etcd_member(&g_own, "restart", "m1"));
  qv_err err = {0};
  cr_assert(
      TH_WAIT(etcd_put(c, "/t/r/b", "2", 1, 0, NULL, &err) == QV_OK, 10000),
      "%s", err.msg);
  cr_assert(TH_WAIT(seen_n(&s) == 2, 10000));
  etcd_watch_stats st;
  etcd_watch_get_stats(w, &st);
  cr_expect_geq(st.connects, 2);
  etcd_watch_stop(w);
  const char *want[] = {"+/t/r/a=1", "+/t/r/b=2"};
  expect_events(&s, want, 2);
  etcd_client_free(c);
}

/* Which member of a 3-member cluster leads: ask each for its status. */
static int leader_index(const th_etcd *e) {
  for (int i = 0; i < 3; i++) {
    char ep[128], cmd[300], out[2048] = "";
    th_endpoint(e, i, ep, sizeof ep);
    snprintf(
        cmd, sizeof cmd,
        "curl -s --noproxy '*' -m 2 -X POST %s/v3/maintenance/status -d '{}'",
        ep);
    FILE *p = popen(cmd, "r");
    size_t n = p ? fread(out, 1, sizeof out - 1, p) : 0;
    if (p) pclose(p);
    out[n] = '\0';
    json_t *j = json_loads(out, 0, NULL);
    const char *leader = json_string_value(json_object_get(j, "leader"));
    const char *me = json_string_value(
        json_object_get(json_object_get(j, "header"), "member_id"));
    bool is_leader = leader && me && strcmp(leader, me) == 0;
    json_decref(j);
    if (is_leader) return i;
  }
  return -1;
}

Test(etcd_failover, losing_one_of_three_members_changes_nothing_for_the_client,
     .fini = own_fini) {
  th_maybe_log();
  if (!th_have_etcd()) cr_skip_test("no etcd");
  cr_assert(th_etcd_start(&g_own, 3));
  int leader = -1;
  cr_assert(TH_WAIT((leader = leader_index(&g_own)) >= 0, 10000));
  /* Put a follower first, so the client (and the watch) start on the
   * member that dies. Killing the leader would stall etcd itself ~2 s. */
  int victim = (leader + 1) % 3;
  char eps[600], a[128], b[128], v[128], name[8];
  th_endpoint(&g_own, victim, v, sizeof v);
  th_endpoint(&g_own, (victim + 1) % 3, a, sizeof a);
  th_endpoint(&g_own, (victim + 2) % 3, b, sizeof b);
  snprintf(eps, sizeof eps, "%s,%s,%s", v, a, b);
  snprintf(name, sizeof name, "m%d", victim + 1);
  etcd_client *c = client_for(eps, 1000);
  seen s;
  etcd_watch *w = watch(c, "/t/f/", 0, &s);
  cr_assert(TH_WAIT(is_connected(w), 5000));
  put_s(c, "/t/f/a", "1", 0);
  cr_assert_str_eq(etcd_client_endpoint(c), v);
  cr_assert(TH_WAIT(seen_n(&s) == 1, 5000));

  cr_assert(th_etcd_member(&g_own, "kill", name));
  for (int i = 0; i < 20; i++) { /* every call must succeed: no errors at all */
    char k[32];
    snprintf(k, sizeof k, "/t/f/k%02d", i);
    qv_err err = {0};
    cr_assert_eq(etcd_put(c, k, "x", 1, 0, NULL, &err), QV_OK, "put %d: %s", i,
                 err.msg);
  }
  cr_expect_str_neq(etcd_client_endpoint(c), v, "the client moved on");
  etcd_kvs r;
  cr_assert_eq(etcd_range_prefix(c, "/t/f/", &r, NULL), QV_OK);
  cr_expect_eq(r.n, 21);
  etcd_kvs_free(&r);
  int64_t id = 0;
  cr_assert_eq(etcd_lease_grant(c, 5, &id, NULL, NULL), QV_OK);
  cr_assert_eq(etcd_lease_keepalive(c, id, NULL, NULL), QV_OK);
  /* The watch was on the dead member: it must resume elsewhere and deliver
   * everything written meanwhile, once. */
  cr_assert(TH_WAIT(seen_n(&s) == 21, 15000), "watch saw %d of 21", seen_n(&s));
  etcd_watch_stop(w);
  for (int i = 1; i < 21; i++) cr_expect_gt(s.rev[i], s.rev[i - 1]);
  etcd_client_free(c);
}
