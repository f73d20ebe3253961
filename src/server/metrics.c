/* metrics.c: request counters and latency histograms, and the Prometheus
 * text exposition of GET /metrics (with per-collection gauges read from
 * qv_collection_info_get and process memory from /proc/self/statm).
 *
 * Owns the counters; a single mutex guards them (one short critical section
 * per request, far below the cost of parsing the request). Invariant: the
 * `endpoint` label is always a route pattern from router_routes[] or
 * "unknown", never a raw path, so label cardinality stays bounded. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "server/server_int.h"

#define MAX_ROUTES 64
#define MAX_COUNTERS 24 /* distinct (method, status) pairs kept per route */
#define N_BOUNDS 14

static const double bounds[N_BOUNDS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                        0.1,    0.25,  0.5,    1,     2.5,   5,    10};

typedef struct counter {
  char method[8];
  unsigned status;
  uint64_t n;
} counter;

typedef struct route_stats {
  counter c[MAX_COUNTERS];
  int n_c;
  uint64_t buckets[N_BOUNDS + 1]; /* not cumulative; the last is +Inf */
  double sum;
  uint64_t count;
} route_stats;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static route_stats stats[MAX_ROUTES + 1]; /* the last row: unknown routes */

void metrics_init(void) {
  pthread_mutex_lock(&mu);
  memset(stats, 0, sizeof stats);
  pthread_mutex_unlock(&mu);
}

static route_stats *row(int route) {
  return route >= 0 && route < (int)router_n_routes && route < MAX_ROUTES ? &stats[route]
                                                                           : &stats[MAX_ROUTES];
}

static const char *label(int route) {
  return route >= 0 && route < (int)router_n_routes && route < MAX_ROUTES
             ? router_routes[route].pattern
             : "unknown";
}

void metrics_record(int route, const char *method, unsigned status, double seconds) {
  pthread_mutex_lock(&mu);
  route_stats *st = row(route);
  /* An unknown method string is folded into OTHER so that clients cannot
   * mint labels. */
  static const char *known[] = {"GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS"};
  const char *m = "OTHER";
  for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
    if (!strcmp(method, known[i])) m = known[i];
  counter *c = NULL;
  for (int i = 0; i < st->n_c; i++)
    if (st->c[i].status == status && !strcmp(st->c[i].method, m)) c = &st->c[i];
  if (c == NULL && st->n_c < MAX_COUNTERS) {
    c = &st->c[st->n_c++];
    snprintf(c->method, sizeof c->method, "%s", m);
    c->status = status;
  }
  if (c) c->n++;
  int b = 0;
  while (b < N_BOUNDS && seconds > bounds[b]) b++;
  st->buckets[b]++;
  st->sum += seconds;
  st->count++;
  pthread_mutex_unlock(&mu);
}

static void render_http(sbuf *b) {
  sbuf_adds(b, "# HELP quiver_http_requests_total HTTP requests by method, route and status.\n"
               "# TYPE quiver_http_requests_total counter\n");
  pthread_mutex_lock(&mu);
  for (int r = 0; r <= MAX_ROUTES; r++) {
    const route_stats *st = &stats[r];
    int route = r == MAX_ROUTES ? -1 : r;
    for (int i = 0; i < st->n_c; i++)
      sbuf_addf(b, "quiver_http_requests_total{method=\"%s\",endpoint=\"%s\",status=\"%u\"} %llu\n",
                st->c[i].method, label(route), st->c[i].status,
                (unsigned long long)st->c[i].n);
  }
  sbuf_adds(b, "# HELP quiver_http_request_duration_seconds Time from request headers to "
               "response, by route.\n"
               "# TYPE quiver_http_request_duration_seconds histogram\n");
  for (int r = 0; r <= MAX_ROUTES; r++) {
    const route_stats *st = &stats[r];
    if (st->count == 0) continue;
    const char *ep = label(r == MAX_ROUTES ? -1 : r);
    uint64_t cum = 0;
    for (int i = 0; i < N_BOUNDS; i++) {
      cum += st->buckets[i];
      sbuf_addf(b, "quiver_http_request_duration_seconds_bucket{endpoint=\"%s\",le=\"%g\"} %llu\n",
                ep, bounds[i], (unsigned long long)cum);
    }
    sbuf_addf(b, "quiver_http_request_duration_seconds_bucket{endpoint=\"%s\",le=\"+Inf\"} %llu\n",
              ep, (unsigned long long)st->count);
    sbuf_addf(b, "quiver_http_request_duration_seconds_sum{endpoint=\"%s\"} %.9g\n", ep, st->sum);
    sbuf_addf(b, "quiver_http_request_duration_seconds_count{endpoint=\"%s\"} %llu\n", ep,
              (unsigned long long)st->count);
  }
  pthread_mutex_unlock(&mu);
}

/* Collection names are letters, digits, '_', '-' and '.', but a label value
 * is escaped anyway so that the exposition stays parseable. */
static void add_label_value(sbuf *b, const char *s) {
  for (; *s; s++) {
    if (*s == '\\' || *s == '"') sbuf_add(b, "\\", 1);
    if (*s == '\n') {
      sbuf_adds(b, "\\n");
      continue;
    }
    sbuf_add(b, s, 1);
  }
}

typedef struct gauge {
  const char *name, *help;
  size_t offset; /* of a uint64_t or uint32_t in qv_collection_info */
  bool is_u32;
} gauge;

static const gauge gauges[] = {
    {"quiver_collection_points", "Live points.", offsetof(qv_collection_info, points_count), false},
    {"quiver_collection_segments", "Segments, sealed and mutable.",
     offsetof(qv_collection_info, segments_count), true},
    {"quiver_collection_indexed_vectors", "Live points in segments with a graph.",
     offsetof(qv_collection_info, indexed_vectors_count), false},
    {"quiver_collection_pending_builds", "Segments waiting for or in an index build.",
     offsetof(qv_collection_info, pending_builds), true},
    {"quiver_collection_vector_bytes", "Resident bytes of full vectors (on_disk ones excluded).",
     offsetof(qv_collection_info, vector_bytes), false},
    {"quiver_collection_vector_disk_bytes", "Bytes of full vectors read from disk only (on_disk).",
     offsetof(qv_collection_info, vector_disk_bytes), false},
    {"quiver_collection_code_bytes", "Resident bytes of quantized codes and codebooks.",
     offsetof(qv_collection_info, code_bytes), false},
    {"quiver_collection_graph_bytes", "Resident bytes of HNSW graphs and IVF lists.",
     offsetof(qv_collection_info, graph_bytes), false},
    {"quiver_collection_payload_bytes", "Bytes of stored payloads.",
     offsetof(qv_collection_info, payload_bytes), false},
    {"quiver_collection_wal_bytes", "Bytes of write-ahead log on disk.",
     offsetof(qv_collection_info, wal_bytes), false},
};
#define N_GAUGES (sizeof gauges / sizeof gauges[0])

static void render_collections(sbuf *b, srv *s) {
  char **names = NULL;
  size_t n = 0;
  if (qv_collection_list(s->db, &names, &n, NULL) != QV_OK) return;
  qv_collection_info *infos = qv_calloc(n + 1, sizeof *infos);
  bool *ok = qv_calloc(n + 1, sizeof *ok);
  const char *isa = NULL;
  for (size_t i = 0; infos && ok && i < n; i++) {
    qv_collection *c;
    if (qv_collection_get(s->db, names[i], &c, NULL) != QV_OK) continue;
    ok[i] = qv_collection_info_get(c, &infos[i], NULL) == QV_OK;
    if (ok[i]) isa = infos[i].isa; /* a static string of the library */
    qv_collection_release(c);
  }
  sbuf_addf(b, "# HELP quiver_collections_total Collections in the database.\n"
               "# TYPE quiver_collections_total gauge\nquiver_collections_total %zu\n",
            n);
  for (size_t g = 0; infos && ok && g < N_GAUGES; g++) {
    sbuf_addf(b, "# HELP %s %s\n# TYPE %s gauge\n", gauges[g].name, gauges[g].help,
              gauges[g].name);
    for (size_t i = 0; i < n; i++) {
      if (!ok[i]) continue;
      const char *field = (const char *)&infos[i] + gauges[g].offset;
      uint64_t v = gauges[g].is_u32 ? *(const uint32_t *)field : *(const uint64_t *)field;
      sbuf_addf(b, "%s{collection=\"", gauges[g].name);
      add_label_value(b, names[i]);
      sbuf_addf(b, "\"} %llu\n", (unsigned long long)v);
    }
  }
  if (isa)
    sbuf_addf(b, "# HELP quiver_simd_info Distance kernels in use.\n"
                 "# TYPE quiver_simd_info gauge\nquiver_simd_info{isa=\"%s\"} 1\n",
              isa);
  qv_free(infos);
  qv_free(ok);
  for (size_t i = 0; i < n; i++) free(names[i]);
  free(names);
}

static void render_process(sbuf *b, srv *s) {
  unsigned long long size = 0, resident = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (f) {
    if (fscanf(f, "%llu %llu", &size, &resident) != 2) size = resident = 0;
    fclose(f);
  }
  long page = sysconf(_SC_PAGESIZE);
  if (page <= 0) page = 4096;
  sbuf_addf(b, "# HELP quiver_process_resident_memory_bytes Resident set size.\n"
               "# TYPE quiver_process_resident_memory_bytes gauge\n"
               "quiver_process_resident_memory_bytes %llu\n"
               "# HELP quiver_process_virtual_memory_bytes Virtual memory size.\n"
               "# TYPE quiver_process_virtual_memory_bytes gauge\n"
               "quiver_process_virtual_memory_bytes %llu\n",
            resident * (unsigned long long)page, size * (unsigned long long)page);
  sbuf_addf(b, "# HELP quiver_http_requests_in_flight Requests being handled.\n"
               "# TYPE quiver_http_requests_in_flight gauge\n"
               "quiver_http_requests_in_flight %d\n",
            __atomic_load_n(&s->in_flight, __ATOMIC_RELAXED));
}

char *metrics_render(srv *s, size_t *len) {
  sbuf b;
  sbuf_init(&b);
  sbuf_addf(&b, "# HELP quiver_info Quiver build information.\n# TYPE quiver_info gauge\n"
                "quiver_info{version=\"%s\",qdrant_api=\"%s\"} 1\n",
            QV_VERSION_STRING, SRV_QDRANT_VERSION);
  render_http(&b);
  render_collections(&b, s);
  render_process(&b, s);
  return sbuf_take(&b, len);
}
