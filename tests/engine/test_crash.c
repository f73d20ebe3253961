/* test_crash.c: kill -9 recovery. A helper process (helper_writer.c) writes
 * to a database from several threads with the background optimizer on; this
 * test kills it with SIGKILL at a random moment, reopens the directory
 * in-process and checks that every acknowledged write survived, that nothing
 * it never wrote appeared, and that count, scroll and search agree. Then it
 * starts the helper again on the same directory, so later cycles recover
 * states that were themselves recovered.
 *
 * Owns the expected-state model: per id, the last acknowledged op (from the
 * helper's K lines) and the op in flight when the helper died (a W line with
 * no K). Does not look inside files: corruption is test_corruption.c, injected
 * I/O failures are test_faults.c.
 *
 * The rule checked for every id: if its last acknowledged op is an upsert of
 * version v, the point exists with exactly crash_vec(id, v) and payload
 * {"v":v} -- or with the version of an upsert that was in flight; if it is a
 * delete (or there is none), the point is absent -- or holds the in-flight
 * version. An in-flight delete may or may not have happened.
 *
 * Environment: QV_CRASH_CYCLES (default 20) sets the number of kill cycles
 * per test (long mode: 200 or more), QV_CRASH_SEED the PRNG seed (printed),
 * QV_CRASH_KEEP=1 keeps the directory for a post-mortem. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "quiver.h"
#include "testutil.h"

#define DIM 32
#define N_IDS 3000u
#define N_THREADS 3u
#define MAX_BATCH 8

/* Must match crash_vec in helper_writer.c. */
static void crash_vec(uint64_t id, uint64_t ver, float *out) {
  uint64_t s = id * 0x9E3779B97F4A7C15ull ^ ver * 0xD1B54A32D192ED03ull;
  for (int j = 0; j < DIM; j++) out[j] = tu_randf(&s);
}

/* ---- state shared with the suite's cleanup ------------------------------- */

static pid_t g_child = -1;
static int g_fd = -1;
static char *g_dir;
static uint64_t g_seed;

static void reap_child(void) {
  if (g_child > 0) {
    kill(g_child, SIGKILL);
    waitpid(g_child, NULL, 0);
    g_child = -1;
  }
  if (g_fd >= 0) close(g_fd);
  g_fd = -1;
}

static void cleanup(void) {
  reap_child();
  if (g_dir == NULL) return;
  const char *keep = getenv("QV_CRASH_KEEP");
  if (keep != NULL && *keep == '1')
    fprintf(stderr, "crash: kept %s (seed %llu)\n", g_dir, (unsigned long long)g_seed);
  else
    tu_rmdir(g_dir);
  g_dir = NULL;
}

TestSuite(crash, .fini = cleanup);

/* ---- the model ------------------------------------------------------------- */

typedef struct id_state {
  bool is_live;
  uint64_t ver; /* the live version, or the last one before a delete */
} id_state;

typedef struct op {
  bool is_active, is_delete;
  uint64_t seq;
  size_t n;
  uint64_t ids[MAX_BATCH], vers[MAX_BATCH];
} op;

typedef struct model {
  id_state ids[N_IDS];
  op pending[N_THREADS]; /* announced, not yet acknowledged */
  bool is_created;       /* an R line was seen: the collection must exist */
  uint64_t n_acked, n_cycles_early;
} model;

/* The in-flight op touching `id`, if any (ids are partitioned by thread). */
static const op *in_flight(const model *m, uint64_t id, size_t *at) {
  const op *p = &m->pending[id % N_THREADS];
  if (!p->is_active) return NULL;
  for (size_t i = 0; i < p->n; i++)
    if (p->ids[i] == id) {
      *at = i;
      return p;
    }
  return NULL;
}

static void parse_line(model *m, char *line, unsigned cycle) {
  char *save, *tok = strtok_r(line, " ", &save);
  if (tok == NULL) return;
  if (!strcmp(tok, "R")) {
    m->is_created = true;
    return;
  }
  cr_assert(!strcmp(tok, "W") || !strcmp(tok, "K"),
            "cycle %u (seed %llu): helper said \"%s %s\"", cycle,
            (unsigned long long)g_seed, tok, save);
  unsigned t = (unsigned)strtoul(strtok_r(NULL, " ", &save), NULL, 10);
  uint64_t seq = strtoull(strtok_r(NULL, " ", &save), NULL, 10);
  cr_assert_lt(t, N_THREADS);
  op *p = &m->pending[t];
  if (!strcmp(tok, "K")) {
    cr_assert(p->is_active && p->seq == seq, "K %u %llu without its W", t,
              (unsigned long long)seq);
    for (size_t i = 0; i < p->n; i++) {
      id_state *s = &m->ids[p->ids[i]];
      s->is_live = !p->is_delete;
      if (!p->is_delete) s->ver = p->vers[i];
    }
    p->is_active = false;
    m->n_acked++;
    return;
  }
  cr_assert(!p->is_active, "thread %u announced %llu before %llu was acked", t,
            (unsigned long long)seq, (unsigned long long)p->seq);
  memset(p, 0, sizeof *p);
  p->is_active = true;
  p->seq = seq;
  p->is_delete = !strcmp(strtok_r(NULL, " ", &save), "D");
  while ((tok = strtok_r(NULL, " ", &save)) != NULL && p->n < MAX_BATCH) {
    p->ids[p->n] = strtoull(tok, NULL, 10);
    cr_assert_lt(p->ids[p->n], N_IDS);
    if (!p->is_delete) p->vers[p->n] = strtoull(strtok_r(NULL, " ", &save), NULL, 10);
    p->n++;
  }
}

/* ---- running and killing the helper ----------------------------------------- */

static const char *helper_path(void) {
  static char path[PATH_MAX];
  const char *bin = getenv("QV_TEST_BIN");
  if (bin != NULL) {
    snprintf(path, sizeof path, "%s/helper_writer", bin);
  } else { /* beside this test binary */
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 32);
    cr_assert_gt(n, 0);
    path[n] = 0;
    char *slash = strrchr(path, '/');
    snprintf(slash + 1, 32, "helper_writer");
  }
  cr_assert_eq(access(path, X_OK), 0, "no helper at %s (set QV_TEST_BIN)", path);
  return path;
}

static void spawn(const char *name, uint32_t shards, uint64_t seed, uint64_t base) {
  int fds[2];
  cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
  char a_shards[16], a_seed[32], a_base[32], a_threads[16], a_ids[16];
  snprintf(a_shards, sizeof a_shards, "%u", shards);
  snprintf(a_seed, sizeof a_seed, "%llu", (unsigned long long)seed);
  snprintf(a_base, sizeof a_base, "%llu", (unsigned long long)base);
  snprintf(a_threads, sizeof a_threads, "%u", N_THREADS);
  snprintf(a_ids, sizeof a_ids, "%u", N_IDS);
  const char *path = helper_path();
  fflush(NULL);
  pid_t pid = fork();
  cr_assert_neq(pid, -1);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
    dup2(fds[1], STDOUT_FILENO);
    char *argv[] = {(char *)path, g_dir,     (char *)name, a_shards, a_seed,
                    a_base,       a_threads, a_ids,        NULL};
    execv(path, argv);
    _exit(127);
  }
  close(fds[1]);
  g_child = pid;
  g_fd = fds[0];
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Reads lines into the model; returns false at end of file. `buf` keeps a
 * partial line between calls. */
static bool pump(model *m, char *buf, size_t cap, size_t *len, unsigned cycle) {
  ssize_t r;
  do r = read(g_fd, buf + *len, cap - 1 - *len);
  while (r < 0 && errno == EINTR);
  cr_assert_geq(r, 0, "read from helper: %s", strerror(errno));
  if (r == 0) return false;
  *len += (size_t)r;
  buf[*len] = 0;
  char *start = buf, *nl;
  while ((nl = strchr(start, '\n')) != NULL) {
    *nl = 0;
    parse_line(m, start, cycle);
    start = nl + 1;
  }
  *len = strlen(start);
  memmove(buf, start, *len + 1);
  return true;
}

/* Runs the helper until a random moment, kills it, and drains its output.
 * Mostly the clock starts at the helper's R line (the kill lands among the
 * writes); one cycle in eight starts it at the spawn, to kill it while it is
 * still opening and recovering. */
static void run_and_kill(model *m, const char *name, uint32_t shards, uint64_t *rng,
                         unsigned cycle) {
  bool is_early = tu_rand(rng) % 8 == 0;
  int64_t delay = is_early ? (int64_t)(tu_rand(rng) % 60)
                           : 5 + (int64_t)(tu_rand(rng) % 296);
  spawn(name, shards, tu_rand(rng), (uint64_t)(cycle + 1) << 32);
  char buf[1 << 16];
  size_t len = 0;
  int64_t deadline = is_early ? now_ms() + delay : INT64_MAX;
  bool was_created = m->is_created;
  bool is_open = true;
  m->is_created = false;
  while (is_open) {
    if (!is_early && deadline == INT64_MAX && m->is_created)
      deadline = now_ms() + delay;
    int64_t wait = deadline == INT64_MAX ? 120000 : deadline - now_ms();
    if (wait <= 0) break;
    struct pollfd p = {.fd = g_fd, .events = POLLIN};
    int n = poll(&p, 1, (int)wait);
    cr_assert_geq(n, 0);
    cr_assert(n > 0 || deadline != INT64_MAX,
              "cycle %u: no R line from the helper within 120 s", cycle);
    if (n > 0) is_open = pump(m, buf, sizeof buf, &len, cycle);
  }
  kill(g_child, SIGKILL);
  while (is_open) is_open = pump(m, buf, sizeof buf, &len, cycle);
  int status;
  cr_assert_eq(waitpid(g_child, &status, 0), g_child);
  g_child = -1;
  close(g_fd);
  g_fd = -1;
  cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
            "cycle %u (seed %llu): the helper exited by itself (status 0x%x)",
            cycle, (unsigned long long)g_seed, status);
  m->is_created |= was_created;
  m->n_cycles_early += is_early;
}

/* ---- checking the recovered state -------------------------------------------- */

static qv_db *open_db(unsigned cycle) {
  qv_open_opts o;
  qv_open_opts_init(&o);
  o.create = false;
  o.background_optimizer = false;
  qv_db *db = NULL;
  qv_err e = {0};
  qv_rc rc = qv_open(g_dir, &o, &db, &e);
  cr_assert_eq(rc, QV_OK, "cycle %u (seed %llu): reopen after kill: %s: %s", cycle,
               (unsigned long long)g_seed, qv_rc_name(rc), e.msg);
  return db;
}

/* Checks one scrolled point against the model; returns its version. */
static uint64_t check_point(const model *m, const qv_record *r, unsigned cycle) {
  cr_assert(!r->id.is_uuid && r->id.num < N_IDS,
            "cycle %u: scroll returned id %llu, never written", cycle,
            (unsigned long long)r->id.num);
  uint64_t id = r->id.num;
  unsigned long long v = 0;
  cr_assert(r->payload != NULL && sscanf(r->payload, "{\"v\":%llu}", &v) == 1,
            "cycle %u: point %llu has payload %s", cycle, (unsigned long long)id,
            r->payload ? r->payload : "(null)");
  const id_state *s = &m->ids[id];
  size_t at;
  const op *p = in_flight(m, id, &at);
  bool ok = (s->is_live && s->ver == v) ||
            (p != NULL && !p->is_delete && p->vers[at] == v);
  cr_assert(ok,
            "cycle %u (seed %llu): point %llu has version %llu; last acked: %s "
            "v%llu, in flight: %s v%llu",
            cycle, (unsigned long long)g_seed, (unsigned long long)id, v,
            s->is_live ? "upsert" : "delete/none", (unsigned long long)s->ver,
            p == NULL ? "none" : p->is_delete ? "delete" : "upsert",
            p && !p->is_delete ? (unsigned long long)p->vers[at] : 0ull);
  float want[DIM];
  crash_vec(id, v, want);
  cr_assert(r->vector != NULL && memcmp(r->vector, want, sizeof want) == 0,
            "cycle %u (seed %llu): point %llu v%llu: stored vector differs", cycle,
            (unsigned long long)g_seed, (unsigned long long)id, v);
  return v;
}

/* Scrolls everything; fills seen[id] with the version (0: absent). */
static void scroll_all(const model *m, qv_collection *c, uint64_t *seen,
                       uint64_t *n_seen, unsigned cycle) {
  memset(seen, 0, N_IDS * sizeof *seen);
  *n_seen = 0;
  qv_point_id cursor, *start = NULL;
  bool has_next = true;
  int64_t last = -1;
  while (has_next) {
    qv_records recs;
    qv_err e = {0};
    qv_rc rc = qv_scroll(c, start, 97, true, true, &recs, &cursor, &has_next, &e);
    cr_assert_eq(rc, QV_OK, "cycle %u: scroll: %s", cycle, e.msg);
    for (size_t i = 0; i < recs.n; i++) {
      uint64_t v = check_point(m, &recs.items[i], cycle);
      uint64_t id = recs.items[i].id.num;
      cr_assert_gt((int64_t)id, last, "cycle %u: scroll out of order at %llu",
                   cycle, (unsigned long long)id);
      last = (int64_t)id;
      seen[id] = v;
      (*n_seen)++;
    }
    qv_records_free(&recs);
    start = &cursor;
  }
}

/* Graph lookups of live points and how many missed. HNSW is approximate:
 * a graph can leave a node unreachable (seen: 1 in ~3,300 with m = 8), so a
 * miss of the graph search alone is counted against a floor, not failed. */
static uint64_t g_graph_lookups, g_graph_misses;

/* Exact search must find a live point at distance 0 as its top hit and must
 * never return a deleted one; graph search must never return a deleted one
 * either, and usually finds the live one. */
static void check_search(qv_collection *c, uint64_t id, uint64_t ver, bool is_live,
                         unsigned cycle) {
  float q[DIM];
  crash_vec(id, ver, q);
  for (int exact = 0; exact < 2; exact++) {
    qv_search_params sp;
    qv_search_params_init(&sp);
    sp.k = 10;
    sp.ef = 128;
    sp.exact = exact;
    qv_hit hits[10];
    size_t n = 0;
    qv_err e = {0};
    cr_assert_eq(qv_search(c, q, DIM, &sp, hits, &n, &e), QV_OK, "%s", e.msg);
    bool found = false;
    for (size_t i = 0; i < n; i++)
      if (!hits[i].id.is_uuid && hits[i].id.num == id) {
        found = true;
        cr_assert_eq(hits[i].score, 0.0f, "cycle %u: point %llu scored %g", cycle,
                     (unsigned long long)id, hits[i].score);
      }
    if (!is_live || exact)
      cr_assert_eq(found, is_live,
                   "cycle %u (seed %llu): %s search for point %llu v%llu: %s", cycle,
                   (unsigned long long)g_seed, exact ? "exact" : "graph",
                   (unsigned long long)id, (unsigned long long)ver,
                   is_live ? "missing" : "returned although deleted");
    if (is_live && exact)
      cr_assert(hits[0].id.num == id, "cycle %u: not the top hit", cycle);
    if (is_live && !exact) {
      g_graph_lookups++;
      g_graph_misses += !found;
    }
  }
}

/* Verifies the reopened directory against the model, then makes the model
 * the recovered state (in-flight ops resolved as observed). */
static void verify(model *m, const char *name, unsigned cycle, uint64_t *rng,
                   uint32_t *max_segments) {
  qv_db *db = open_db(cycle);
  qv_collection *c = NULL;
  qv_err e = {0};
  qv_rc rc = qv_collection_get(db, name, &c, &e);
  if (rc == QV_ENOTFOUND && !m->is_created) { /* killed before the create */
    cr_assert_eq(m->n_acked, 0);
    qv_close(db);
    return;
  }
  cr_assert_eq(rc, QV_OK, "cycle %u: collection: %s", cycle, e.msg);
  uint64_t *seen = malloc(N_IDS * sizeof *seen), n_seen;
  scroll_all(m, c, seen, &n_seen, cycle);
  for (uint64_t id = 0; id < N_IDS; id++) {
    size_t at;
    const op *p = in_flight(m, id, &at);
    bool must = m->ids[id].is_live && (p == NULL || !p->is_delete);
    cr_assert(seen[id] != 0 || !must,
              "cycle %u (seed %llu): acknowledged point %llu v%llu is lost", cycle,
              (unsigned long long)g_seed, (unsigned long long)id,
              (unsigned long long)m->ids[id].ver);
    m->ids[id].is_live = seen[id] != 0;
    if (seen[id] != 0) m->ids[id].ver = seen[id];
  }
  memset(m->pending, 0, sizeof m->pending);
  uint64_t count = 0;
  cr_assert_eq(qv_count(c, &count, &e), QV_OK);
  cr_assert_eq(count, n_seen, "cycle %u: count %llu, scroll found %llu", cycle,
               (unsigned long long)count, (unsigned long long)n_seen);
  qv_collection_info info;
  cr_assert_eq(qv_collection_info_get(c, &info, &e), QV_OK);
  cr_assert_eq(info.points_count, n_seen);
  cr_assert(!info.is_failed);
  if (info.segments_count > *max_segments) *max_segments = info.segments_count;
  /* A few live points must be found by their own vector, a few deleted ones
   * must not be found at all. */
  for (int i = 0, live = 0, dead = 0; i < 400 && (live < 6 || dead < 3); i++) {
    uint64_t id = tu_rand(rng) % N_IDS;
    const id_state *s = &m->ids[id];
    if (s->ver == 0) continue;
    if (s->is_live && live < 6) {
      check_search(c, id, s->ver, true, cycle);
      live++;
    } else if (!s->is_live && dead < 3) {
      check_search(c, id, s->ver, false, cycle);
      dead++;
    }
  }
  free(seen);
  qv_collection_release(c);
  qv_close(db);
}

static unsigned cycles_wanted(void) {
  const char *s = getenv("QV_CRASH_CYCLES");
  long n = s ? strtol(s, NULL, 10) : 0;
  return n > 0 ? (unsigned)n : 20;
}

static void log_errors(void *ctx, qv_log_level level, const char *sub,
                       const char *msg) {
  (void)ctx;
  (void)level;
  fprintf(stderr, "crash: quiver %s: %s\n", sub, msg);
}

static void crash_cycles(const char *name, uint32_t shards, unsigned cycles) {
  const char *s = getenv("QV_CRASH_SEED");
  g_seed = s ? strtoull(s, NULL, 10) : 20250611;
  fprintf(stderr, "crash %s: seed %llu, %u cycles (QV_CRASH_SEED, QV_CRASH_CYCLES)\n",
          name, (unsigned long long)g_seed, cycles);
  qv_set_log(log_errors, NULL, QV_LOG_ERROR);
  g_dir = tu_tmpdir("crash");
  cr_assert_not_null(g_dir);
  model *m = calloc(1, sizeof *m);
  uint64_t rng = g_seed ^ shards;
  uint32_t max_segments = 0;
  int64_t t0 = now_ms();
  for (unsigned cycle = 0; cycle < cycles; cycle++) {
    run_and_kill(m, name, shards, &rng, cycle);
    verify(m, name, cycle, &rng, &max_segments);
  }
  uint64_t live = 0;
  for (uint64_t id = 0; id < N_IDS; id++) live += m->ids[id].is_live;
  fprintf(stderr,
          "crash %s: %u cycles in %.1f s: %llu acknowledged writes, %llu live "
          "points, %llu kills during open, up to %u segments, graph search "
          "missed %llu of %llu\n",
          name, cycles, (double)(now_ms() - t0) / 1000.0,
          (unsigned long long)m->n_acked, (unsigned long long)live,
          (unsigned long long)m->n_cycles_early, max_segments,
          (unsigned long long)g_graph_misses, (unsigned long long)g_graph_lookups);
  cr_assert_gt(m->n_acked, 0, "the helper never got a write acknowledged");
  cr_assert_leq(g_graph_misses * 100, g_graph_lookups * 3 + 100,
                "graph search missed %llu of %llu live points (floor: 97%% found)",
                (unsigned long long)g_graph_misses, (unsigned long long)g_graph_lookups);
  free(m);
}

Test(crash, kill9_keeps_every_acknowledged_write, .timeout = 0) {
  crash_cycles("one", 1, cycles_wanted());
}

Test(crash, kill9_keeps_every_acknowledged_write_two_shards, .timeout = 0) {
  crash_cycles("two", 2, cycles_wanted());
}
