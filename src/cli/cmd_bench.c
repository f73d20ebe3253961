/* cmd_bench.c: `quiver bench`: recall, throughput and latency of a
 * collection over a query file, for a grid of ef and thread counts.
 *
 * Owns the measurement protocol, which bench/run_core.sh and the README's
 * numbers depend on:
 *  - the queries are split into contiguous slices, one per thread; all
 *    threads start together at a barrier, and QPS is queries / wall time of
 *    the whole pass;
 *  - every query is timed on its own with CLOCK_MONOTONIC; p50/p99 pool the
 *    latencies of all repeats; QPS is the median over --repeat passes;
 *  - recall@k is |hits ∩ truth[:k]| / k averaged over queries, where truth
 *    is the --gt file (ids = base row numbers) or, without one, the
 *    collection's own exact search (qv_search with exact=true);
 *  - an --exact row measures brute force on at most --exact-queries queries
 *    and reports the scan rate (points * dim * 4 bytes * QPS).
 *  - quantized search settings (--oversampling, --rescore) apply to every
 *    row; --nprobe adds a dimension to the grid (ef x nprobe x threads) and
 *    only matters to IVF indexes, as ef only matters to HNSW.
 * One JSON object per setting a line with --json, then a summary line from
 * qv_collection_info: index_bytes is what stays resident by design, full
 * vectors in RAM + codes + graph / IVF lists (vector_bytes + code_bytes +
 * graph_bytes); full vectors kept on disk for rescoring (vector_disk_bytes)
 * are reported but not counted. */
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cli_util.h"
#include "cli/reader.h"

typedef struct bench_opts {
  const char *data_dir, *name, *queries, *gt;
  uint32_t k, repeat;
  cli_u32_list ef, threads, nprobe;
  uint64_t limit, exact_limit;
  uint32_t min_pass_ms;
  bool exact, exact_only, json, verbose;
  double oversampling; /* 0 = the library's default */
  bool rescore, rescore_set;
  const char *mode;    /* row label of approximate rows: hnsw, ivf-flat, ivf-pq */
} bench_opts;

/* What every pass shares. */
typedef struct bench_ctx {
  qv_collection *c;
  const float *q;
  size_t nq;
  uint32_t dim, k;
  qv_point_id *truth; /* nq * k; query i's at i * k */
  size_t *n_truth;    /* how many of truth[i * k ..] are valid (<= k) */
  qv_hit *hits;       /* nq * k */
  size_t *n_hits;     /* nq */
} bench_ctx;

/* All threads of a pass wait here until the main thread opens it, so the
 * pass's clock starts when every thread is ready to search. */
typedef struct start_gate {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool open;
} start_gate;

typedef struct worker {
  pthread_t th;
  const bench_ctx *ctx;
  const qv_search_params *p;
  size_t begin, end;
  uint32_t rounds; /* times the slice is run */
  double *lat_ms;  /* rounds * nq; round r of query i at r * nq + i */
  size_t nq;
  start_gate *gate;
  qv_rc rc;
  qv_err err;
} worker;

static void *worker_main(void *arg) {
  worker *w = arg;
  const bench_ctx *x = w->ctx;
  pthread_mutex_lock(&w->gate->mu);
  while (!w->gate->open) pthread_cond_wait(&w->gate->cv, &w->gate->mu);
  pthread_mutex_unlock(&w->gate->mu);
  for (uint32_t r = 0; r < w->rounds; r++)
    for (size_t i = w->begin; i < w->end; i++) {
      double t0 = cli_now();
      qv_rc rc = qv_search(x->c, x->q + i * x->dim, x->dim, w->p,
                           x->hits + i * x->k, &x->n_hits[i], &w->err);
      w->lat_ms[r * w->nq + i] = (cli_now() - t0) * 1e3;
      if (rc != QV_OK) {
        w->rc = rc;
        return NULL;
      }
    }
  return NULL;
}

/* Runs queries [0, nq) `rounds` times over `threads` threads, writing each
 * query's latency to lat_ms (rounds * nq entries); *wall_s is the time from
 * opening the gate to the last thread's end. */
static qv_rc run_pass(const bench_ctx *x, const qv_search_params *p, size_t nq,
                      uint32_t threads, uint32_t rounds, double *lat_ms,
                      double *wall_s, qv_err *err) {
  if (threads > nq) threads = (uint32_t)nq;
  if (threads == 0) threads = 1;
  worker *w = calloc(threads, sizeof *w);
  if (w == NULL) return cli_err_set(err, QV_ENOMEM, "no memory");
  start_gate gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                     false};
  uint32_t started = 0;
  qv_rc rc = QV_OK;
  for (uint32_t t = 0; t < threads; t++) {
    w[t].ctx = x;
    w[t].p = p;
    w[t].begin = nq * t / threads;
    w[t].end = nq * (t + 1) / threads;
    w[t].rounds = rounds;
    w[t].lat_ms = lat_ms;
    w[t].nq = nq;
    w[t].gate = &gate;
    if (pthread_create(&w[t].th, NULL, worker_main, &w[t]) != 0) {
      rc = cli_err_set(err, QV_ENOMEM, "cannot start search thread %u", t);
      /* The started threads still run their slices; the pass is void. */
      break;
    }
    started++;
  }
  pthread_mutex_lock(&gate.mu);
  gate.open = true;
  double t0 = cli_now();
  pthread_cond_broadcast(&gate.cv);
  pthread_mutex_unlock(&gate.mu);
  for (uint32_t t = 0; t < started; t++) pthread_join(w[t].th, NULL);
  *wall_s = cli_now() - t0;
  for (uint32_t t = 0; rc == QV_OK && t < started; t++)
    if (w[t].rc != QV_OK) {
      if (err != NULL) *err = w[t].err;
      rc = w[t].rc;
    }
  free(w);
  return rc;
}

typedef struct setting_result {
  bool exact;
  uint32_t ef, nprobe, threads;
  size_t nq;
  uint32_t rounds;
  double recall, qps, qps_min, qps_max, p50, p99, mean_ms, scan_gbps;
} setting_result;

static double mean_recall(const bench_ctx *x, size_t nq) {
  qv_point_id *got = malloc(x->k * sizeof *got);
  double sum = 0;
  for (size_t i = 0; got != NULL && i < nq; i++) {
    for (size_t j = 0; j < x->n_hits[i]; j++) got[j] = x->hits[i * x->k + j].id;
    sum += cli_recall(got, x->n_hits[i], x->truth + i * x->k, x->n_truth[i]);
  }
  free(got);
  return nq ? sum / (double)nq : 0;
}

/* Measures one setting. A calibration pass comes first: when it lasts at
 * least --min-pass-ms it counts as the first of the --repeat passes;
 * otherwise (a small query set) it is discarded and every pass runs the
 * query set enough rounds to last that long, so that thread start-up and
 * clock granularity do not dominate the QPS. */
static qv_rc run_setting(const bench_ctx *x, const bench_opts *o,
                         const qv_collection_info *info, setting_result *res,
                         qv_err *err) {
  qv_search_params p;
  qv_search_params_init(&p);
  p.k = x->k;
  p.ef = res->exact ? 0 : res->ef;
  p.nprobe = res->exact ? 0 : res->nprobe;
  p.exact = res->exact;
  p.quant_oversampling = (float)o->oversampling;
  if (o->rescore_set) p.quant_rescore = o->rescore ? 1 : -1;
  size_t nq = res->nq;
  double *qps = calloc(o->repeat, sizeof *qps);
  double *lat = malloc(nq * sizeof *lat);
  qv_rc rc = QV_OK;
  double wall = 0, min_pass = o->min_pass_ms / 1e3;
  uint32_t done = 0, rounds = 1;
  if (qps == NULL || lat == NULL) rc = cli_err_set(err, QV_ENOMEM, "no memory");
  if (rc == QV_OK) rc = run_pass(x, &p, nq, res->threads, 1, lat, &wall, err);
  if (rc == QV_OK && wall >= min_pass) {
    qps[done++] = wall > 0 ? (double)nq / wall : 0;
  } else if (rc == QV_OK) {
    double want = min_pass / (wall > 1e-6 ? wall : 1e-6);
    rounds = want > 100000 ? 100000 : (uint32_t)want + 1;
  }
  size_t per_pass = nq * rounds;
  if (rc == QV_OK) {
    double *nl = realloc(lat, o->repeat * per_pass * sizeof *lat);
    if (nl == NULL)
      rc = cli_err_set(err, QV_ENOMEM, "no memory for %zu latencies",
                       o->repeat * per_pass);
    else
      lat = nl;
  }
  for (uint32_t r = done; rc == QV_OK && r < o->repeat; r++) {
    rc = run_pass(x, &p, nq, res->threads, rounds, lat + r * per_pass, &wall,
                  err);
    qps[r] = wall > 0 ? (double)per_pass / wall : 0;
  }
  if (rc == QV_OK) {
    res->rounds = rounds;
    res->recall = mean_recall(x, nq);
    cli_sort_doubles(qps, o->repeat);
    res->qps_min = qps[0];
    res->qps_max = qps[o->repeat - 1];
    res->qps = cli_percentile_sorted(qps, o->repeat, 50);
    size_t nl = o->repeat * per_pass;
    double sum = 0;
    for (size_t i = 0; i < nl; i++) sum += lat[i];
    res->mean_ms = nl ? sum / (double)nl : 0;
    cli_sort_doubles(lat, nl);
    res->p50 = cli_percentile_sorted(lat, nl, 50);
    res->p99 = cli_percentile_sorted(lat, nl, 99);
    res->scan_gbps = res->exact ? (double)info->points_count *
                                      info->config.dim * 4.0 * res->qps / 1e9
                                : 0;
  }
  free(qps);
  free(lat);
  return rc;
}

/* ---- ground truth ------------------------------------------------------- */

static qv_rc load_gt(bench_ctx *x, const char *path, qv_err *err) {
  void *raw = NULL;
  size_t n = 0;
  uint32_t d = 0;
  qv_rc rc = cli_vecs_load(path, &raw, &n, &d, err);
  if (rc != QV_OK) return rc;
  const int32_t *g = raw;
  if (n < x->nq)
    rc = cli_err_set(err, QV_EINVAL,
                     "%s has %zu rows, fewer than the %zu "
                     "queries",
                     path, n, x->nq);
  else if (d < x->k)
    rc = cli_err_set(err, QV_EINVAL,
                     "%s lists %u neighbours a query, fewer "
                     "than --k %u",
                     path, d, x->k);
  for (size_t i = 0; rc == QV_OK && i < x->nq; i++) {
    for (uint32_t j = 0; j < x->k; j++) {
      int32_t id = g[i * d + j];
      if (id < 0) {
        rc = cli_err_set(err, QV_EINVAL, "%s: record %zu: negative id %d", path,
                         i, (int)id);
        break;
      }
      x->truth[i * x->k + j] = qv_id_num((uint64_t)id);
    }
    x->n_truth[i] = x->k;
  }
  free(raw);
  return rc;
}

/* Truth from the collection's own brute force, over `threads` threads. */
static qv_rc exact_gt(bench_ctx *x, uint32_t threads, FILE *errf, qv_err *err) {
  fprintf(errf,
          "quiver bench: no --gt: computing exact top-%u for %zu "
          "queries...\n",
          x->k, x->nq);
  qv_search_params p;
  qv_search_params_init(&p);
  p.k = x->k;
  p.exact = true;
  double wall;
  double *lat = malloc(x->nq * sizeof *lat);
  if (lat == NULL) return cli_err_set(err, QV_ENOMEM, "no memory");
  qv_rc rc = run_pass(x, &p, x->nq, threads, 1, lat, &wall, err);
  free(lat);
  for (size_t i = 0; rc == QV_OK && i < x->nq; i++) {
    for (size_t j = 0; j < x->n_hits[i]; j++)
      x->truth[i * x->k + j] = x->hits[i * x->k + j].id;
    x->n_truth[i] = x->n_hits[i];
  }
  return rc;
}

/* ---- output ------------------------------------------------------------- */

static void print_json(FILE *out, json_t *j) {
  json_dumpf(j, out, JSON_COMPACT | JSON_REAL_PRECISION(6));
  fputc('\n', out);
  fflush(out);
  json_decref(j);
}

static void print_result(FILE *out, const bench_opts *o,
                         const setting_result *r, bool *header) {
  if (o->json) {
    json_t *j = json_pack(
        "{s:s, s:o, s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:f, s:f, s:f, s:f, "
        "s:f}",
        "mode", r->exact ? "exact" : o->mode, "ef",
        r->exact || r->ef == 0 ? json_null() : json_integer(r->ef), "threads",
        (json_int_t)r->threads, "k", (json_int_t)o->k, "queries",
        (json_int_t)r->nq, "repeat", (json_int_t)o->repeat, "rounds",
        (json_int_t)r->rounds, "recall", r->recall, "qps", r->qps, "qps_min",
        r->qps_min, "qps_max", r->qps_max, "p50_ms", r->p50, "p99_ms", r->p99,
        "mean_ms", r->mean_ms);
    if (r->exact) json_object_set_new(j, "scan_gbps", json_real(r->scan_gbps));
    json_object_set_new(j, "nprobe",
                        r->exact || r->nprobe == 0 ? json_null() : json_integer(r->nprobe));
    json_object_set_new(j, "oversampling",
                        o->oversampling > 0 ? json_real(o->oversampling) : json_null());
    json_object_set_new(j, "rescore", o->rescore_set ? json_boolean(o->rescore) : json_null());
    print_json(out, j);
    return;
  }
  if (!*header) {
    fprintf(out, "%-8s %6s %6s %7s %9s %10s %9s %9s %9s\n", "mode", "ef",
            "nprobe", "threads", "recall", "qps", "p50_ms", "p99_ms", "scan");
    *header = true;
  }
  char ef[16], np[16];
  snprintf(ef, sizeof ef, r->exact || r->ef == 0 ? "-" : "%u", r->ef);
  snprintf(np, sizeof np, r->exact || r->nprobe == 0 ? "-" : "%u", r->nprobe);
  fprintf(out, "%-8s %6s %6s %7u %9.4f %10.1f %9.3f %9.3f",
          r->exact ? "exact" : o->mode, ef, np, r->threads, r->recall, r->qps,
          r->p50, r->p99);
  if (r->exact) fprintf(out, " %6.2f GB/s", r->scan_gbps);
  fputc('\n', out);
  fflush(out);
}

static void print_summary(FILE *out, const bench_opts *o,
                          const qv_collection_info *in) {
  const qv_collection_config *c = &in->config;
  const qv_storage_params *st = &c->storage;
  uint64_t index_bytes = in->vector_bytes + in->code_bytes + in->graph_bytes;
  char storage[160];
  cli_storage_describe(st, storage, sizeof storage);
  if (o->json) {
    json_t *j = json_pack(
        "{s:b, s:s, s:I, s:I, s:s, s:I, s:I, s:I, s:I, s:I, s:f, s:s, s:I, "
        "s:s}",
        "summary", 1, "collection", o->name, "points",
        (json_int_t)in->points_count, "dim", (json_int_t)c->dim, "distance",
        qv_distance_name(c->distance), "m", (json_int_t)c->hnsw_m,
        "ef_construct", (json_int_t)c->hnsw_ef_construct, "index_bytes",
        (json_int_t)index_bytes, "vector_bytes", (json_int_t)in->vector_bytes,
        "graph_bytes", (json_int_t)in->graph_bytes, "build_s",
        in->build_seconds, "isa", in->isa ? in->isa : "", "segments",
        (json_int_t)in->segments_count, "truth", o->gt ? o->gt : "exact");
    json_object_set_new(j, "code_bytes", json_integer((json_int_t)in->code_bytes));
    json_object_set_new(j, "vector_disk_bytes",
                        json_integer((json_int_t)in->vector_disk_bytes));
    json_object_set_new(j, "datatype", json_string(qv_datatype_name(st->datatype)));
    json_object_set_new(j, "quantization",
                        json_string(qv_quantization_name(st->quantization)));
    json_object_set_new(j, "index", json_string(qv_vector_index_name(st->index)));
    json_object_set_new(j, "on_disk", json_boolean(st->on_disk));
    json_object_set_new(j, "pq_ratio", json_integer(st->pq_ratio));
    json_object_set_new(j, "bq_bits", st->bq_bits == QV_BQ_ONE_AND_HALF_BITS
                                          ? json_real(1.5)
                                          : json_integer(st->bq_bits ? st->bq_bits : 1));
    json_object_set_new(j, "ivf_nlist", json_integer(st->ivf_nlist));
    print_json(out, j);
    return;
  }
  fprintf(out,
          "collection %s: %llu points, %u-d, %s, m=%u ef_construct=%u, isa "
          "%s\nstorage: %s\nindex %.1f MB resident (vectors %.1f MB + codes "
          "%.1f MB + graph %.1f MB; %.1f MB of vectors on disk), built in "
          "%.2f s; recall@%u against %s\n",
          o->name, (unsigned long long)in->points_count, c->dim,
          qv_distance_name(c->distance), c->hnsw_m, c->hnsw_ef_construct,
          in->isa ? in->isa : "?", storage, (double)index_bytes / 1e6,
          (double)in->vector_bytes / 1e6, (double)in->code_bytes / 1e6,
          (double)in->graph_bytes / 1e6, (double)in->vector_disk_bytes / 1e6,
          in->build_seconds, o->k, o->gt ? o->gt : "exact search");
}

/* ---- the command -------------------------------------------------------- */

static int bench_run(const bench_opts *o, qv_collection *c, FILE *out,
                     FILE *errf) {
  qv_err e = {0};
  qv_collection_info info;
  if (qv_collection_info_get(c, &info, &e) != QV_OK) {
    fprintf(errf, "quiver bench: %s\n", e.msg);
    return CLI_EXIT_FAIL;
  }
  bench_opts oo = *o;
  oo.mode = qv_vector_index_name(info.config.storage.index);
  o = &oo;
  bench_ctx x = {.c = c, .k = o->k};
  float *q = NULL;
  if (cli_reader_load_all(o->queries, (size_t)o->limit, &q, &x.nq, &x.dim,
                          &e) != QV_OK) {
    fprintf(errf, "quiver bench: %s\n", e.msg);
    return CLI_EXIT_FAIL;
  }
  x.q = q;
  if (x.dim != info.config.dim) {
    fprintf(errf,
            "quiver bench: %s has %u-d queries; collection \"%s\" is "
            "%u-d\n",
            o->queries, x.dim, o->name, info.config.dim);
    free(q);
    return CLI_EXIT_FAIL;
  }
  x.truth = calloc(x.nq * x.k, sizeof *x.truth);
  x.n_truth = calloc(x.nq, sizeof *x.n_truth);
  x.hits = calloc(x.nq * x.k, sizeof *x.hits);
  x.n_hits = calloc(x.nq, sizeof *x.n_hits);
  int status = CLI_EXIT_OK;
  qv_rc rc = QV_OK;
  if (!x.truth || !x.n_truth || !x.hits || !x.n_hits)
    rc = cli_err_set(&e, QV_ENOMEM, "no memory for %zu queries", x.nq);
  uint32_t max_threads = 1;
  for (size_t i = 0; i < o->threads.n; i++)
    if (o->threads.v[i] > max_threads) max_threads = o->threads.v[i];
  if (rc == QV_OK)
    rc = o->gt ? load_gt(&x, o->gt, &e) : exact_gt(&x, max_threads, errf, &e);
  /* One untimed pass first, so the first setting does not pay for faulting
   * in the collection's pages. */
  if (rc == QV_OK && !o->exact_only) {
    qv_search_params p;
    qv_search_params_init(&p);
    p.k = x.k;
    p.ef = o->ef.v[0];
    p.nprobe = o->nprobe.n ? o->nprobe.v[0] : 0;
    double wall;
    size_t nw = x.nq < 1000 ? x.nq : 1000;
    double *lat = malloc(nw * sizeof *lat);
    rc = lat ? run_pass(&x, &p, nw, 1, 1, lat, &wall, &e)
             : cli_err_set(&e, QV_ENOMEM, "no memory");
    free(lat);
  }
  bool header = false;
  /* Without --nprobe the grid has one nprobe, 0 (the library's default). */
  size_t n_np = o->nprobe.n ? o->nprobe.n : 1;
  for (size_t i = 0; rc == QV_OK && !o->exact_only && i < o->ef.n; i++)
    for (size_t j = 0; rc == QV_OK && j < n_np; j++)
      for (size_t t = 0; rc == QV_OK && t < o->threads.n; t++) {
        setting_result r = {.ef = o->ef.v[i],
                            .nprobe = o->nprobe.n ? o->nprobe.v[j] : 0,
                            .threads = o->threads.v[t],
                            .nq = x.nq};
        rc = run_setting(&x, o, &info, &r, &e);
        if (rc == QV_OK) print_result(out, o, &r, &header);
      }
  for (size_t t = 0; rc == QV_OK && o->exact && t < o->threads.n; t++) {
    setting_result r = {.exact = true,
                        .threads = o->threads.v[t],
                        .nq = x.nq < o->exact_limit ? x.nq : o->exact_limit};
    rc = run_setting(&x, o, &info, &r, &e);
    if (rc == QV_OK) print_result(out, o, &r, &header);
  }
  if (rc == QV_OK) {
    print_summary(out, o, &info);
  } else {
    fprintf(errf, "quiver bench: %s: %s\n", qv_rc_name(e.rc), e.msg);
    status = CLI_EXIT_FAIL;
  }
  free(q);
  free(x.truth);
  free(x.n_truth);
  free(x.hits);
  free(x.n_hits);
  return status;
}

int cmd_bench(int argc, char **argv, FILE *out, FILE *errf) {
  bench_opts o = {
      .k = 10, .repeat = 3, .exact_limit = 1000, .min_pass_ms = 200};
  const char *ef_default = "10,20,40,80", *threads_default = "1";
  cli_parse_u32_list(ef_default, &o.ef);
  cli_parse_u32_list(threads_default, &o.threads);
  cli_flag flags[] = {
      {"data-dir", CLI_FLAG_STR, &o.data_dir, "DIR", "database directory", 0, 0,
       true, false},
      {"collection", CLI_FLAG_STR, &o.name, "NAME", "collection to measure", 0,
       0, true, false},
      {"queries", CLI_FLAG_STR, &o.queries, "FILE",
       "query vectors (.fvecs, .npy or .jsonl, optionally .gz)", 0, 0, true,
       false},
      {"gt", CLI_FLAG_STR, &o.gt, "FILE",
       "ground truth .ivecs(.gz): base row numbers, nearest first (default: "
       "exact search)",
       0, 0, false, false},
      {"k", CLI_FLAG_U32, &o.k, "K", "neighbours per query (default 10)", 1,
       10000, false, false},
      {"ef", CLI_FLAG_U32_LIST, &o.ef, "LIST",
       "HNSW beam widths (default 10,20,40,80)", 1, 1000000, false, false},
      {"threads", CLI_FLAG_U32_LIST, &o.threads, "LIST",
       "query threads per setting (default 1)", 1, 256, false, false},
      {"repeat", CLI_FLAG_U32, &o.repeat, "N",
       "passes per setting; QPS is their median (default 3)", 1, 1000, false,
       false},
      {"limit-queries", CLI_FLAG_U64, &o.limit, "N",
       "use only the first N queries", 1, 0, false, false},
      {"nprobe", CLI_FLAG_U32_LIST, &o.nprobe, "LIST",
       "IVF lists probed per query, a grid dimension like --ef (default: "
       "the library's)",
       1, 1u << 20, false, false},
      {"oversampling", CLI_FLAG_F64, &o.oversampling, "X",
       "quantized search: shortlist X * k candidates by code, then rescore "
       "(1..1000; default: the library's)",
       1, 1000, false, false},
      {"rescore", CLI_FLAG_TRUTH, &o.rescore, "true|false",
       "quantized search: rescore the shortlist with the full vectors "
       "(default true)",
       0, 0, false, false},
      {"exact", CLI_FLAG_BOOL, &o.exact, NULL,
       "add brute-force rows (ef ignored) with the scan rate", 0, 0, false,
       false},
      {"exact-only", CLI_FLAG_BOOL, &o.exact_only, NULL,
       "only the brute-force rows (implies --exact)", 0, 0, false, false},
      {"exact-queries", CLI_FLAG_U64, &o.exact_limit, "N",
       "queries for the brute-force rows (default 1000)", 1, 0, false, false},
      {"min-pass-ms", CLI_FLAG_U32, &o.min_pass_ms, "MS",
       "run a small query set in rounds so each pass lasts this long "
       "(default 200; 0 = one round)",
       0, 600000, false, false},
      {"json", CLI_FLAG_BOOL, &o.json, NULL,
       "one JSON object a line per setting, then a summary line", 0, 0, false,
       false},
      {"verbose", CLI_FLAG_BOOL, &o.verbose, NULL,
       "log the library's info messages", 0, 0, false, false},
  };
  cli_cmd_spec spec = {
      "bench",
      NULL,
      "Measures recall@k, QPS (median of --repeat passes) and p50/p99 "
      "latency for\nevery (ef, nprobe, threads) setting, and brute force with --exact. "
      "Ground truth ids are\nbase row numbers (= point ids of an .fvecs/.npy "
      "import).",
      flags,
      sizeof flags / sizeof flags[0],
      0,
      0};
  size_t n_pos;
  int pr = cli_parse(&spec, argc, argv, NULL, &n_pos, out, errf);
  if (pr != CLI_PARSE_OK)
    return pr == CLI_PARSE_HELP ? CLI_EXIT_OK : CLI_EXIT_USAGE;
  cli_log_install(o.verbose);
  if (o.exact_only) o.exact = true;
  o.rescore_set = cli_flag_seen(&spec, "rescore");
  /* With only --nprobe given, ef is left to the library (IVF ignores it)
   * rather than multiplying the grid by the default ef list. */
  if (o.nprobe.n && !cli_flag_seen(&spec, "ef")) {
    o.ef.n = 1;
    o.ef.v[0] = 0;
  }
  qv_db *db = NULL;
  qv_collection *c = NULL;
  int status = cli_open_existing("bench", o.data_dir, o.name, &db, &c, errf);
  if (status != CLI_EXIT_OK) return status;
  status = bench_run(&o, c, out, errf);
  qv_collection_release(c);
  qv_close(db);
  return status;
}
