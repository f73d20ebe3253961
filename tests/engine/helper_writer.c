/* helper_writer.c: the process that test_crash.c kills with SIGKILL.
 *
 * Owns nothing but its own loop: it opens the database directory given on the
 * command line (background optimizer on, so sealing, graph builds, merges,
 * log rotation and log drops all happen while it writes), creates the
 * collection if it is missing, and then writes forever from several threads
 * until it is killed. It does not check anything; the test does, by reading
 * what it printed.
 *
 * Usage: helper_writer DIR COLLECTION SHARDS SEED VERSION_BASE THREADS IDS
 *
 * Protocol (stdout, one write() per line, each line < PIPE_BUF so lines from
 * different threads never interleave):
 *   R                                  the collection exists durably
 *   W <t> <seq> U <id> <ver> ...       thread t is about to upsert these
 *   W <t> <seq> D <id> ...             thread t is about to delete these
 *   K <t> <seq>                        that call returned QV_OK
 *   E <t> <seq> <rc> <message>         that call failed; the helper exits 3
 * A K line is printed only after the call returned, so every K the test reads
 * is an acknowledged write; a W without its K is in flight when killed.
 *
 * Invariants the test relies on: thread t only touches ids with
 * id % THREADS == t, and waits for each call before announcing the next, so
 * every id has at most one write in flight. A point written with version v
 * has vector crash_vec(id, v) and payload {"v":v}; versions start at
 * VERSION_BASE + 1 and only grow, so (id, version) names one write. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "quiver.h"
#include "testutil.h"

#define DIM 32
#define MAX_BATCH 8

/* Must match crash_vec in test_crash.c. */
static void crash_vec(uint64_t id, uint64_t ver, float *out) {
  uint64_t s = id * 0x9E3779B97F4A7C15ull ^ ver * 0xD1B54A32D192ED03ull;
  for (int j = 0; j < DIM; j++) out[j] = tu_randf(&s);
}

typedef struct writer {
  qv_collection *c;
  uint32_t t, n_threads;
  uint64_t n_ids;
  uint64_t rng;
  uint64_t next_ver;
} writer;

static void emit(const char *line, size_t n) {
  while (n > 0) {
    ssize_t w = write(STDOUT_FILENO, line, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) _exit(4); /* the test went away */
    line += w;
    n -= (size_t)w;
  }
}

static void fail(const writer *w, uint64_t seq, const qv_err *e) {
  char line[512];
  int n = snprintf(line, sizeof line, "E %u %llu %s %s\n", w->t,
                   (unsigned long long)seq, qv_rc_name(e->rc), e->msg);
  emit(line, (size_t)n);
  _exit(3);
}

/* `n` distinct ids owned by this thread. */
static void pick_ids(writer *w, size_t n, uint64_t *ids) {
  uint64_t per = w->n_ids / w->n_threads;
  for (size_t i = 0; i < n; i++) {
    for (;;) {
      uint64_t id = (tu_rand(&w->rng) % per) * w->n_threads + w->t;
      bool dup = false;
      for (size_t j = 0; j < i; j++) dup |= ids[j] == id;
      if (!dup) {
        ids[i] = id;
        break;
      }
    }
  }
}

static void *run(void *arg) {
  writer *w = arg;
  float vecs[MAX_BATCH][DIM];
  char payloads[MAX_BATCH][32];
  qv_point pts[MAX_BATCH];
  qv_point_id del[MAX_BATCH];
  uint64_t ids[MAX_BATCH], vers[MAX_BATCH];
  char line[1024];
  for (uint64_t seq = 1;; seq++) {
    uint64_t r = tu_rand(&w->rng) % 1000;
    qv_err e = {0};
    if (r < 3) { /* now and then an explicit optimize races the writers */
      if (qv_collection_optimize(w->c, &e) != QV_OK) fail(w, seq, &e);
      continue;
    }
    bool is_delete = r < 200;
    size_t n = 1 + tu_rand(&w->rng) % (is_delete ? 3 : MAX_BATCH);
    pick_ids(w, n, ids);
    int at = snprintf(line, sizeof line, "W %u %llu %c", w->t,
                      (unsigned long long)seq, is_delete ? 'D' : 'U');
    for (size_t i = 0; i < n; i++) {
      if (is_delete) {
        del[i] = qv_id_num(ids[i]);
        at += snprintf(line + at, sizeof line - (size_t)at, " %llu",
                       (unsigned long long)ids[i]);
        continue;
      }
      vers[i] = ++w->next_ver;
      crash_vec(ids[i], vers[i], vecs[i]);
      snprintf(payloads[i], sizeof payloads[i], "{\"v\":%llu}",
               (unsigned long long)vers[i]);
      pts[i] = (qv_point){.id = qv_id_num(ids[i]), .vector = vecs[i],
                          .dim = DIM, .payload = payloads[i]};
      at += snprintf(line + at, sizeof line - (size_t)at, " %llu %llu",
                     (unsigned long long)ids[i], (unsigned long long)vers[i]);
    }
    line[at++] = '\n';
    emit(line, (size_t)at);
    qv_rc rc = is_delete ? qv_delete(w->c, del, n, NULL, &e)
                         : qv_upsert(w->c, pts, n, &e);
    if (rc != QV_OK) fail(w, seq, &e);
    at = snprintf(line, sizeof line, "K %u %llu\n", w->t, (unsigned long long)seq);
    emit(line, (size_t)at);
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 8) {
    fprintf(stderr,
            "usage: %s DIR COLLECTION SHARDS SEED VERSION_BASE THREADS IDS\n",
            argv[0]);
    return 2;
  }
  const char *dir = argv[1], *name = argv[2];
  uint32_t shards = (uint32_t)strtoul(argv[3], NULL, 10);
  uint64_t seed = strtoull(argv[4], NULL, 10);
  uint64_t base = strtoull(argv[5], NULL, 10);
  uint32_t n_threads = (uint32_t)strtoul(argv[6], NULL, 10);
  uint64_t n_ids = strtoull(argv[7], NULL, 10);
  if (n_threads < 1 || n_threads > 16 || n_ids < n_threads * MAX_BATCH) {
    fprintf(stderr, "helper_writer: bad THREADS or IDS\n");
    return 2;
  }
  /* A safety net: never outlive a test that forgot us. */
  alarm(600);

  qv_open_opts o;
  qv_open_opts_init(&o);
  o.create = false;
  o.optimizer_threads = 1;
  o.background_optimizer = true;
  qv_db *db;
  qv_err e = {0};
  if (qv_open(dir, &o, &db, &e) != QV_OK) {
    fprintf(stderr, "helper_writer: open %s: %s %s\n", dir, qv_rc_name(e.rc), e.msg);
    return 3;
  }
  qv_collection_config cfg;
  qv_collection_config_init(&cfg);
  cfg.dim = DIM;
  cfg.distance = QV_EUCLID;
  cfg.shard_number = shards;
  cfg.hnsw_m = 8;
  cfg.hnsw_ef_construct = 32;
  /* Small segments so that seals, merges and log drops happen within a
   * run of a few hundred milliseconds; graphs are used once a sealed
   * segment has 50 live rows. */
  cfg.segment_max_points = 500;
  cfg.full_scan_threshold = 50;
  qv_rc rc = qv_collection_create(db, name, &cfg, &e);
  if (rc != QV_OK && rc != QV_EEXIST) {
    fprintf(stderr, "helper_writer: create: %s %s\n", qv_rc_name(rc), e.msg);
    return 3;
  }
  qv_collection *c;
  if (qv_collection_get(db, name, &c, &e) != QV_OK) {
    fprintf(stderr, "helper_writer: get: %s\n", e.msg);
    return 3;
  }
  emit("R\n", 2);

  pthread_t th[16];
  writer w[16];
  for (uint32_t t = 0; t < n_threads; t++) {
    w[t] = (writer){.c = c, .t = t, .n_threads = n_threads, .n_ids = n_ids,
                    .rng = seed ^ (0x51ull << 32) ^ t, .next_ver = base};
    /* Versions of different threads never meet: they own different ids. */
    pthread_create(&th[t], NULL, run, &w[t]);
  }
  for (uint32_t t = 0; t < n_threads; t++) pthread_join(th[t], NULL);
  return 0; /* not reached: writers loop until killed */
}
