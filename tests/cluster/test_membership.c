/* test_membership.c: registration, self-fencing, the members view,
 * controller election (src/cluster/membership.c) and the fenced shard-map
 * CAS (src/cluster/shardmap.c), against a real etcd.
 *
 * "Two nodes" are two mship handles with two clients in this one process.
 * A shared single-member etcd serves the ordinary tests (each under its
 * own prefix); the tests that stop or kill etcd start their own. Leases use
 * etcd's minimum TTL, 2 s, so waits are a few seconds; every wait has a
 * deadline that only guards against a hang. */
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <pthread.h>

#include "cluster/membership.h"
#include "cluster/shardmap.h"
#include "cluster_harness.h"

static th_etcd g_shared, g_own;

ReportHook(PRE_ALL)(struct criterion_test_set *set) {
  (void)set;
  if (th_have_etcd() && th_etcd_start(&g_shared, 1))
    setenv("QV_TEST_ETCD", g_shared.endpoints, 1);
}

ReportHook(POST_ALL)(struct criterion_global_stats *st) {
  (void)st;
  th_etcd_stop(&g_shared);
}

static void own_fini(void) { th_etcd_stop(&g_own); }

static const char *shared_endpoints(void) {
  th_maybe_log();
  const char *eps = getenv("QV_TEST_ETCD");
  if (eps == NULL) cr_skip_test("no etcd (apt-get install etcd-server)");
  return eps;
}

static etcd_client *client_for(const char *endpoints) {
  etcd_opts o;
  etcd_opts_init(&o);
  o.endpoints = endpoints;
  o.timeout_ms = 1000;
  etcd_client *c = NULL;
  cr_assert_eq(etcd_client_new(&o, &c, NULL), QV_OK);
  return c;
}

/* What a node's callbacks saw. */
typedef struct node_log {
  pthread_mutex_t mu;
  mship_event events[64];
  int n_events;
  uint64_t last_version;
  size_t last_n_members;
  int n_views;
  bool versions_increase;
  uint64_t fenced_cb_ms;
} node_log;

static void on_state(void *ctx, mship_event ev) {
  node_log *l = ctx;
  pthread_mutex_lock(&l->mu);
  if (l->n_events < 64) l->events[l->n_events++] = ev;
  if (ev == MSHIP_FENCED && l->fenced_cb_ms == 0) l->fenced_cb_ms = th_ms();
  pthread_mutex_unlock(&l->mu);
}

static void on_members(void *ctx, const mship_view *v) {
  node_log *l = ctx;
  pthread_mutex_lock(&l->mu);
  if (l->n_views > 0 && v->version <= l->last_version)
    l->versions_increase = false;
  l->last_version = v->version;
  l->last_n_members = v->n;
  l->n_views++;
  pthread_mutex_unlock(&l->mu);
}

static int count_events(node_log *l, mship_event ev) {
  pthread_mutex_lock(&l->mu);
  int n = 0;
  for (int i = 0; i < l->n_events; i++) n += l->events[i] == ev;
  pthread_mutex_unlock(&l->mu);
  return n;
}

static size_t members_seen(node_log *l) {
  pthread_mutex_lock(&l->mu);
  size_t n = l->last_n_members;
  pthread_mutex_unlock(&l->mu);
  return n;
}

typedef struct node {
  etcd_client *c;
  mship *m;
  node_log log;
} node;

static void node_start(node *n, const char *endpoints, const char *prefix,
                       const char *id, uint32_t ttl_s) {
  memset(n, 0, sizeof *n);
  pthread_mutex_init(&n->log.mu, NULL);
  n->log.versions_increase = true;
  n->c = client_for(endpoints);
  mship_opts o;
  mship_opts_init(&o);
  o.prefix = prefix;
  o.node_id = id;
  char addr[64];
  snprintf(addr, sizeof addr, "127.0.0.1:%d", 7000 + id[strlen(id) - 1]);
  o.addr = addr;
  o.meta_json = "{\"zone\":\"z1\"}";
  o.ttl_s = ttl_s;
  o.on_state = on_state;
  o.on_members = on_members;
  o.ctx = &n->log;
  qv_err err = {0};
  cr_assert_eq(mship_start(n->c, &o, &n->m, &err), QV_OK, "%s", err.msg);
}

static void node_stop(node *n) {
  mship_stop(n->m);
  n->m = NULL;
  etcd_client_free(n->c);
  n->c = NULL;
}

static bool is_ctrl(node *n) { return mship_is_controller(n->m, NULL); }

static mship_status status(node *n) {
  mship_status st;
  mship_status_get(n->m, &st);
  return st;
}

/* ---- registration and the view ------------------------------------------- */

Test(membership, a_node_registers_under_its_lease_and_sees_itself) {
  const char *eps = shared_endpoints();
  node a;
  node_start(&a, eps, "/qt/reg", "node-a", 2);
  mship_status st = status(&a);
  cr_expect(st.is_registered);
  cr_expect_not(st.is_fenced);
  cr_expect_eq(st.incarnation, 1);
  etcd_kvs r;
  cr_assert_eq(etcd_get(a.c, "/qt/reg/members/node-a", &r, NULL), QV_OK);
  cr_assert_eq(r.n, 1);
  cr_expect_eq(r.kvs[0].lease, st.lease);
  cr_expect(strstr(r.kvs[0].value, "\"addr\":\"127.0.0.1:7097\"") != NULL, "%s",
            r.kvs[0].value);
  cr_expect(strstr(r.kvs[0].value, "\"zone\":\"z1\"") != NULL, "%s",
            r.kvs[0].value);
  etcd_kvs_free(&r);
  cr_assert(TH_WAIT(members_seen(&a.log) == 1, 5000));
  mship_view v;
  cr_assert_eq(mship_view_get(a.m, &v, NULL), QV_OK);
  cr_assert_eq(v.n, 1);
  cr_expect_str_eq(v.members[0].node_id, "node-a");
  cr_expect_str_eq(v.members[0].addr, "127.0.0.1:7097");
  mship_view_free(&v);
  cr_assert(TH_WAIT(is_ctrl(&a), 5000), "a lone node becomes controller");
  node_stop(&a);
}

Test(membership, two_nodes_see_each_other_and_elect_exactly_one_controller) {
  const char *eps = shared_endpoints();
  node a, b;
  node_start(&a, eps, "/qt/two", "node-a", 2);
  node_start(&b, eps, "/qt/two", "node-b", 2);
  cr_assert(
      TH_WAIT(members_seen(&a.log) == 2 && members_seen(&b.log) == 2, 5000));
  cr_assert(TH_WAIT(is_ctrl(&a) || is_ctrl(&b), 5000));
  cr_expect_neq(is_ctrl(&a), is_ctrl(&b), "exactly one controller");
  node *ctrl = is_ctrl(&a) ? &a : &b, *other = ctrl == &a ? &b : &a;
  const char *ctrl_id = ctrl == &a ? "node-a" : "node-b";
  cr_assert(TH_WAIT(strcmp(status(other).controller, ctrl_id) == 0, 5000),
            "both agree who the controller is");
  cr_expect_gt(status(ctrl).controller_token, 0);
  cr_expect(a.log.versions_increase && b.log.versions_increase);
  node_stop(&b);
  node_stop(&a);
}

Test(membership,
     a_node_that_leaves_vanishes_from_the_view_and_hands_over_control) {
  const char *eps = shared_endpoints();
  node a, b;
  node_start(&a, eps, "/qt/leave", "node-a", 2);
  cr_assert(TH_WAIT(is_ctrl(&a), 5000));
  node_start(&b, eps, "/qt/leave", "node-b", 2);
  cr_assert(TH_WAIT(members_seen(&b.log) == 2, 5000));
  int64_t old_token = status(&a).controller_token;
  node_stop(&a); /* graceful: revokes its lease, both keys go at once */
  cr_assert(TH_WAIT(members_seen(&b.log) == 1, 5000));
  cr_assert(TH_WAIT(is_ctrl(&b), 5000));
  int64_t token = 0;
  cr_assert(mship_is_controller(b.m, &token));
  cr_expect_gt(token, old_token, "a later controller has a larger token");
  node_stop(&b);
}

Test(membership,
     revoking_the_controllers_lease_fences_it_and_the_other_takes_over) {
  const char *eps = shared_endpoints();
  node a, b;
  node_start(&a, eps, "/qt/revoke", "node-a", 2);
  cr_assert(TH_WAIT(is_ctrl(&a), 5000));
  node_start(&b, eps, "/qt/revoke", "node-b", 2);
  cr_assert(TH_WAIT(members_seen(&b.log) == 2, 5000));
  cr_assert_not(is_ctrl(&b));
  etcd_client *admin = client_for(eps);
  cr_assert_eq(etcd_lease_revoke(admin, status(&a).lease, NULL), QV_OK);
  cr_assert(TH_WAIT(is_ctrl(&b), 5000), "b takes over");
  cr_assert(TH_WAIT(count_events(&a.log, MSHIP_FENCED) == 1, 5000),
            "a fences itself");
  cr_expect_eq(count_events(&a.log, MSHIP_CONTROLLER_LOST), 1);
  /* a comes back as a new incarnation, as an ordinary member. */
  cr_assert(TH_WAIT(count_events(&a.log, MSHIP_REGISTERED) == 1, 5000));
  cr_assert(TH_WAIT(!mship_is_fenced(a.m), 5000));
  mship_status st = status(&a);
  cr_expect_eq(st.incarnation, 2);
  cr_expect_eq(st.fences, 1);
  cr_expect_not(is_ctrl(&a));
  cr_expect(is_ctrl(&b));
  cr_assert(TH_WAIT(members_seen(&b.log) == 2, 5000), "a is back in b's view");
  etcd_client_free(admin);
  node_stop(&b);
  node_stop(&a);
}

/* ---- self-fencing when etcd goes away ------------------------------------ */

/* Starts a private etcd and a node on it; returns the node. */
static void own_etcd_and_node(node *n) {
  th_maybe_log();
  if (!th_have_etcd()) cr_skip_test("no etcd");
  cr_assert(th_etcd_start(&g_own, 1));
  node_start(n, g_own.endpoints, "/qt/fence", "node-a", 2);
  cr_assert(TH_WAIT(is_ctrl(n), 5000));
}

/* The fencing invariant: the node fenced itself before etcd could have
 * expired its lease (TTL after the last renewal was received, which is
 * after it was sent). */
static void expect_fenced_in_time(node *n, const char *how) {
  mship_status st = status(n);
  cr_assert(st.is_fenced);
  cr_expect_not(st.is_controller);
  cr_expect(mship_is_fenced(n->m));
  uint64_t after = st.fenced_at_ms - st.last_renew_ms;
  cr_log_info(
      "%s: fenced %llu ms after the last renewal was sent (TTL 2000 ms)", how,
      (unsigned long long)after);
  cr_expect_lt(after, 2000, "fenced %llu ms after the last renewal",
               (unsigned long long)after);
  cr_expect_eq(count_events(&n->log, MSHIP_CONTROLLER_LOST), 1);
}

Test(membership_fence,
     a_node_whose_etcd_is_stopped_fences_itself_within_the_ttl,
     .fini = own_fini) {
  node a;
  own_etcd_and_node(&a);
  pid_t pid = th_etcd_pid(&g_own, "m1");
  cr_assert_gt(pid, 0);
  uint64_t t0 = th_ms();
  cr_assert_eq(kill(pid, SIGSTOP), 0);
  /* TTL + 3 s only guards a hang; the assertion is the invariant below. */
  bool fenced = TH_WAIT(count_events(&a.log, MSHIP_FENCED) == 1, 5000);
  kill(pid, SIGCONT);
  cr_assert(fenced, "no fence while etcd was stopped");
  cr_log_info("SIGSTOP: fence callback %llu ms after the signal",
              (unsigned long long)(a.log.fenced_cb_ms - t0));
  expect_fenced_in_time(&a, "SIGSTOP");
  cr_assert(TH_WAIT(count_events(&a.log, MSHIP_REGISTERED) == 1 &&
                        !mship_is_fenced(a.m),
                    10000),
            "registers again once etcd is back");
  cr_expect_eq(status(&a).incarnation, 2);
  node_stop(&a);
}

Test(membership_fence, a_node_whose_etcd_dies_fences_itself_and_rejoins_later,
     .fini = own_fini) {
  node a;
  own_etcd_and_node(&a);
  uint64_t t0 = th_ms();
  cr_assert(th_etcd_member(&g_own, "kill", "m1"));
  cr_assert(TH_WAIT(count_events(&a.log, MSHIP_FENCED) == 1, 5000));
  cr_log_info("kill -9: fence callback %llu ms after the kill",
              (unsigned long long)(a.log.fenced_cb_ms - t0));
  expect_fenced_in_time(&a, "kill -9");
  cr_assert(th_etcd_member(&g_own, "restart", "m1"));
  cr_assert(TH_WAIT(!mship_is_fenced(a.m), 15000),
            "registers again once etcd is back");
  cr_assert(TH_WAIT(is_ctrl(&a), 5000), "and, alone, is controller again");
  node_stop(&a);
}

/* ---- shard map ----------------------------------------------------------- */

Test(shardmap, the_controller_creates_then_advances_the_map_by_cas) {
  const char *eps = shared_endpoints();
  node a;
  node_start(&a, eps, "/qt/sm1", "node-a", 2);
  cr_assert(TH_WAIT(is_ctrl(&a), 5000));
  shardmap_doc d1, d2;
  qv_err err = {0};
  cr_assert_eq(shardmap_read(a.c, "/qt/sm1", "docs", &d1, &err), QV_ENOTFOUND);
  int64_t rev1 = 0, rev2 = 0;
  cr_assert_eq(shardmap_cas_write(a.m, "docs", NULL,
                                  "{\"epoch\":1,\"shards\":[]}", &rev1, &err),
               QV_OK, "%s", err.msg);
  cr_assert_eq(shardmap_read(a.c, "/qt/sm1", "docs", &d1, &err), QV_OK, "%s",
               err.msg);
  cr_expect_eq(d1.epoch, 1);
  cr_expect_eq(d1.mod_revision, rev1);
  cr_expect_str_eq(d1.json, "{\"epoch\":1,\"shards\":[]}");
  cr_assert_eq(shardmap_cas_write(a.m, "docs", &d1,
                                  "{\"epoch\":2,\"shards\":[0]}", &rev2, &err),
               QV_OK, "%s", err.msg);
  cr_assert_gt(rev2, rev1);
  cr_assert_eq(shardmap_read(a.c, "/qt/sm1", "docs", &d2, NULL), QV_OK);
  cr_expect_eq(d2.epoch, 2);
  shardmap_doc_free(&d2);
  shardmap_doc_free(&d1);
  node_stop(&a);
}

Test(shardmap, a_write_from_a_stale_epoch_is_refused_and_changes_nothing) {
  const char *eps = shared_endpoints();
  node a;
  node_start(&a, eps, "/qt/sm2", "node-a", 2);
  cr_assert(TH_WAIT(is_ctrl(&a), 5000));
  cr_assert_eq(
      shardmap_cas_write(a.m, "docs", NULL, "{\"epoch\":1}", NULL, NULL),
      QV_OK);
  shardmap_doc e1, now;
  cr_assert_eq(shardmap_read(a.c, "/qt/sm2", "docs", &e1, NULL), QV_OK);
  cr_assert_eq(shardmap_cas_write(a.m, "docs", &e1,
                                  "{\"epoch\":2,\"by\":\"first\"}", NULL, NULL),
               QV_OK);
  /* A second decision based on the epoch-1 read: must lose. */
  qv_err err = {0};
  cr_assert_eq(shardmap_cas_write(a.m, "docs", &e1,
                                  "{\"epoch\":2,\"by\":\"second\"}", NULL,
                                  &err),
               QV_EBUSY);
  cr_expect(strstr(err.msg, "stale epoch 1") != NULL, "%s", err.msg);
  cr_expect(strstr(err.msg, "holds epoch 2") != NULL, "%s", err.msg);
  cr_assert_eq(shardmap_read(a.c, "/qt/sm2", "docs", &now, NULL), QV_OK);
  cr_expect_str_eq(now.json, "{\"epoch\":2,\"by\":\"first\"}");
  /* Creating over an existing map is refused too; epochs must be +1. */
  cr_expect_eq(
      shardmap_cas_write(a.m, "docs", NULL, "{\"epoch\":1}", NULL, &err),
      QV_EBUSY);
  cr_expect_eq(
      shardmap_cas_write(a.m, "docs", &now, "{\"epoch\":4}", NULL, &err),
      QV_EINVAL);
  cr_expect(strstr(err.msg, "expected 3") != NULL, "%s", err.msg);
  cr_expect_eq(shardmap_cas_write(a.m, "docs", &now, "[1,2]", NULL, &err),
               QV_EINVAL);
  cr_expect_eq(
      shardmap_cas_write(a.m, "../x", &now, "{\"epoch\":3}", NULL, &err),
      QV_EINVAL);
  shardmap_doc_free(&now);
  shardmap_doc_free(&e1);
  node_stop(&a);
}

Test(shardmap, only_the_controller_may_write_and_a_deposed_one_is_refused) {
  const char *eps = shared_endpoints();
  node a, b;
  node_start(&a, eps, "/qt/sm3", "node-a", 2);
  cr_assert(TH_WAIT(is_ctrl(&a), 5000));
  node_start(&b, eps, "/qt/sm3", "node-b", 2);
  cr_assert_eq(
      shardmap_cas_write(a.m, "docs", NULL, "{\"epoch\":1}", NULL, NULL),
      QV_OK);
  shardmap_doc d;
  cr_assert_eq(shardmap_read(b.c, "/qt/sm3", "docs", &d, NULL), QV_OK);
  qv_err err = {0};
  cr_expect_eq(shardmap_cas_write(b.m, "docs", &d, "{\"epoch\":2}", NULL, &err),
               QV_EBUSY);
  cr_expect(strstr(err.msg, "node-b is not the controller") != NULL, "%s",
            err.msg);
  /* Someone else takes the controller key behind a's back (as a new
   * controller would after a's lease expired). Whether a learns it first
   * from its watch or from the txn's token compare, it must not write. */
  etcd_client *admin = client_for(eps);
  cr_assert_eq(
      etcd_delete(admin, "/qt/sm3/controller", false, NULL, NULL, NULL), QV_OK);
  cr_assert_eq(
      etcd_put(admin, "/qt/sm3/controller", "intruder", 8, 0, NULL, NULL),
      QV_OK);
  cr_expect_eq(shardmap_cas_write(a.m, "docs", &d, "{\"epoch\":2}", NULL, &err),
               QV_EBUSY);
  cr_expect(strstr(err.msg, "controller") != NULL, "%s", err.msg);
  shardmap_doc now;
  cr_assert_eq(shardmap_read(admin, "/qt/sm3", "docs", &now, NULL), QV_OK);
  cr_expect_eq(now.epoch, 1, "nothing was written");
  shardmap_doc_free(&now);
  shardmap_doc_free(&d);
  etcd_client_free(admin);
  node_stop(&b);
  node_stop(&a);
}

Test(membership, bad_options_are_refused) {
  mship_opts o;
  mship_opts_init(&o);
  mship *m = NULL;
  qv_err err = {0};
  etcd_opts eo;
  etcd_opts_init(&eo);
  eo.endpoints = "http://127.0.0.1:1";
  etcd_client *c = NULL;
  cr_assert_eq(etcd_client_new(&eo, &c, NULL), QV_OK);
  o.node_id = "has space";
  cr_expect_eq(mship_start(c, &o, &m, &err), QV_EINVAL);
  o.node_id = "ok";
  o.prefix = "/trailing/";
  cr_expect_eq(mship_start(c, &o, &m, &err), QV_EINVAL);
  o.prefix = "/p";
  o.ttl_s = 1;
  cr_expect_eq(mship_start(c, &o, &m, &err), QV_EINVAL);
  o.ttl_s = 2;
  o.meta_json = "[1]";
  cr_expect_eq(mship_start(c, &o, &m, &err), QV_EINVAL);
  o.meta_json = NULL;
  cr_expect_eq(mship_start(c, &o, &m, &err), QV_EIO, "etcd unreachable: %s",
               err.msg);
  cr_expect_null(m);
  etcd_client_free(c);
}
