/* cmd_import.c: `quiver import`: load a vector file into a collection.
 *
 * Owns the import loop: read a batch (reader.h), upsert it, show progress,
 * and at the end call qv_collection_optimize so that the command returns
 * only when every point is durable and indexed. Does not parse files (the
 * readers do) or validate vectors (the library does; this file only says
 * which row or line the library's complaint is about). The collection is
 * created on first use, with the storage flags (--datatype, --quantization,
 * --index, ... : cli_storage_resolve checks their combination); an existing
 * one must have the file's dimension and the requested distance, because
 * importing into the wrong space would corrupt search results without any
 * error, and keeps its storage settings (a note says so when they differ). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cli_util.h"
#include "cli/reader.h"

typedef struct import_opts {
  const char *data_dir, *name, *distance;
  uint32_t m, ef_construct, shards, batch, build_threads, full_scan;
  /* given on the command line */
  bool m_set, ef_construct_set, shards_set, full_scan_set;
  qv_distance dist; /* parsed --distance, when given */
  cli_storage_flags stf;
  qv_storage_params storage; /* resolved from stf */
  bool verbose;
} import_opts;

/* Names the record a failed upsert is about. The library validates the whole
 * batch before writing any of it. A non-finite component is found here by
 * scanning; otherwise the message names the batch's range, and the
 * library's message says the rest. */
static void report_upsert_error(FILE *errf, const reader *r,
                                const reader_batch *b, const qv_err *e) {
  const char *w = cli_reader_recno_word(r);
  uint32_t dim = cli_reader_dim(r);
  for (size_t i = 0; i < b->n; i++)
    for (uint32_t j = 0; j < dim; j++) {
      float v = b->vecs[i * dim + j];
      if (!isfinite(v)) {
        char idb[40];
        fprintf(errf,
                "quiver import: %s: %s %llu (id %s): vector[%u] is %s "
                "(%s: %s)\n",
                cli_reader_path(r), w, (unsigned long long)b->recnos[i],
                qv_id_format(&b->ids[i], idb), j, isnan(v) ? "NaN" : "infinite",
                qv_rc_name(e->rc), e->msg);
        return;
      }
    }
  /* Only a validation failure is known to have written nothing; after an
   * I/O failure the batch's fate is whatever the log recovers. */
  bool validation = e->rc == QV_EINVAL || e->rc == QV_EDIM;
  if (b->n == 1)
    fprintf(errf, "quiver import: %s: %s %llu: %s: %s\n", cli_reader_path(r), w,
            (unsigned long long)b->recnos[0], qv_rc_name(e->rc), e->msg);
  else
    fprintf(errf, "quiver import: %s: %ss %llu..%llu%s: %s: %s\n",
            cli_reader_path(r), w, (unsigned long long)b->recnos[0],
            (unsigned long long)b->recnos[b->n - 1],
            validation ? " (none of them stored)" : "", qv_rc_name(e->rc),
            e->msg);
}

/* Gets the collection, creating it when missing; checks an existing one
 * against the file. Returns an exit status. */
static int open_collection(const import_opts *o, qv_db *db, uint32_t dim,
                           const char *path, qv_collection **out, FILE *errf) {
  qv_err e = {0};
  qv_distance dist = o->dist;
  qv_rc rc = qv_collection_get(db, o->name, out, &e);
  if (rc == QV_ENOTFOUND) {
    if (o->distance == NULL) {
      fprintf(errf,
              "quiver import: --distance is required to create "
              "collection \"%s\"\n",
              o->name);
      return CLI_EXIT_USAGE;
    }
    qv_collection_config cfg;
    qv_collection_config_init(&cfg);
    cfg.dim = dim;
    cfg.distance = dist;
    if (o->m_set) cfg.hnsw_m = o->m;
    if (o->ef_construct_set) cfg.hnsw_ef_construct = o->ef_construct;
    if (o->shards_set) cfg.shard_number = o->shards;
    if (o->full_scan_set) cfg.full_scan_threshold = o->full_scan;
    cfg.storage = o->storage;
    rc = qv_collection_create(db, o->name, &cfg, &e);
    if (rc == QV_OK || rc == QV_EEXIST)
      rc = qv_collection_get(db, o->name, out, &e);
  }
  if (rc != QV_OK) {
    fprintf(errf, "quiver import: collection \"%s\": %s\n", o->name, e.msg);
    return CLI_EXIT_FAIL;
  }
  qv_collection_info info;
  rc = qv_collection_info_get(*out, &info, &e);
  if (rc != QV_OK) {
    fprintf(errf, "quiver import: collection \"%s\": %s\n", o->name, e.msg);
    return CLI_EXIT_FAIL;
  }
  const qv_collection_config *c = &info.config;
  if (c->dim != dim || (o->distance != NULL && c->distance != dist)) {
    fprintf(errf,
            "quiver import: collection \"%s\" exists with %u-d vectors and "
            "distance %s; %s has %u-d vectors%s%s\n",
            o->name, c->dim, qv_distance_name(c->distance), path, dim,
            o->distance ? " and --distance " : "",
            o->distance ? qv_distance_name(dist) : "");
    qv_collection_release(*out);
    *out = NULL;
    return CLI_EXIT_FAIL;
  }
  /* Graph settings are fixed at creation; say so rather than pretend. */
  if ((o->m_set && o->m != c->hnsw_m) ||
      (o->ef_construct_set && o->ef_construct != c->hnsw_ef_construct) ||
      (o->shards_set && o->shards != c->shard_number))
    fprintf(errf,
            "quiver import: note: collection \"%s\" exists; its settings m=%u "
            "ef_construct=%u shards=%u are kept\n",
            o->name, c->hnsw_m, c->hnsw_ef_construct, c->shard_number);
  if (cli_storage_given(&o->stf) && memcmp(&o->storage, &c->storage, sizeof c->storage) != 0) {
    char have[160];
    cli_storage_describe(&c->storage, have, sizeof have);
    fprintf(errf, "quiver import: note: collection \"%s\" exists; its storage (%s) is kept\n",
            o->name, have);
  }
  return CLI_EXIT_OK;
}

typedef struct batch_bufs {
  reader_batch b;
  qv_point *points;
} batch_bufs;

static bool bufs_alloc(batch_bufs *bb, size_t cap, uint32_t dim) {
  memset(bb, 0, sizeof *bb);
  bb->b.cap = cap;
  bb->b.vecs = malloc(cap * dim * sizeof(float));
  bb->b.ids = malloc(cap * sizeof *bb->b.ids);
  bb->b.recnos = malloc(cap * sizeof *bb->b.recnos);
  bb->b.payloads = malloc(cap * sizeof *bb->b.payloads);
  bb->b.payload_lens = malloc(cap * sizeof *bb->b.payload_lens);
  /* zeroed: the fields we do not set (named vectors) stay empty */
  bb->points = calloc(cap, sizeof *bb->points);
  return bb->b.vecs && bb->b.ids && bb->b.recnos && bb->b.payloads &&
         bb->b.payload_lens && bb->points;
}

static void bufs_free(batch_bufs *bb) {
  free(bb->b.vecs);
  free(bb->b.ids);
  free(bb->b.recnos);
  free(bb->b.payloads);
  free(bb->b.payload_lens);
  free(bb->points);
}

/* Streams the file into the collection. Returns an exit status. */
static int load(qv_collection *c, reader *r, uint32_t batch, uint64_t *n_out,
                FILE *errf) {
  uint32_t dim = cli_reader_dim(r);
  batch_bufs bb;
  int status = CLI_EXIT_OK;
  if (!bufs_alloc(&bb, batch, dim)) {
    fprintf(errf, "quiver import: no memory for a batch of %u points\n", batch);
    bufs_free(&bb);
    return CLI_EXIT_FAIL;
  }
  cli_progress prog;
  cli_progress_init(&prog, errf, cli_reader_total(r), "points");
  uint64_t n = 0;
  qv_err e = {0};
  while (1) {
    if (cli_reader_next(r, &bb.b, &e) != QV_OK) {
      cli_progress_finish(&prog);
      fprintf(errf, "quiver import: %s\n", e.msg);
      status = CLI_EXIT_FAIL;
      break;
    }
    if (bb.b.n == 0) break;
    for (size_t i = 0; i < bb.b.n; i++) {
      bb.points[i].id = bb.b.ids[i];
      bb.points[i].vector = bb.b.vecs + i * dim;
      bb.points[i].dim = dim;
      bb.points[i].payload = bb.b.payloads[i];
      bb.points[i].payload_len = bb.b.payload_lens[i];
    }
    if (qv_upsert(c, bb.points, bb.b.n, &e) != QV_OK) {
      cli_progress_finish(&prog);
      report_upsert_error(errf, r, &bb.b, &e);
      status = CLI_EXIT_FAIL;
      break;
    }
    n += bb.b.n;
    cli_progress_update(&prog, n);
  }
  cli_progress_finish(&prog);
  bufs_free(&bb);
  *n_out = n;
  return status;
}

int cmd_import(int argc, char **argv, FILE *out, FILE *errf) {
  import_opts o = {.m = 16, .ef_construct = 100, .shards = 1, .batch = 1000};
  cli_storage_flags_init(&o.stf);
  cli_flag flags[] = {
      {"data-dir", CLI_FLAG_STR, &o.data_dir, "DIR",
       "database directory (created if missing)", 0, 0, true, false},
      {"collection", CLI_FLAG_STR, &o.name, "NAME",
       "collection to load into (created if missing)", 0, 0, true, false},
      {"distance", CLI_FLAG_STR, &o.distance, "D",
       "Euclid, Cosine, Dot or Manhattan; needed to create the collection, "
       "checked otherwise",
       0, 0, false, false},
      {"m", CLI_FLAG_U32, &o.m, "M",
       "HNSW degree of a new collection "
       "(default 16)",
       4, 128, false, false},
      {"ef-construct", CLI_FLAG_U32, &o.ef_construct, "EF",
       "HNSW build beam of a new collection (default 100)", 8, 4096, false,
       false},
      {"shards", CLI_FLAG_U32, &o.shards, "N",
       "shards of a new collection (default 1)", 1, 1024, false, false},
      {"full-scan-threshold", CLI_FLAG_U32, &o.full_scan, "N",
       "segments of fewer points are searched exactly, in a new collection "
       "(default 10000)",
       0, 0, false, false},
      {"batch", CLI_FLAG_U32, &o.batch, "N", "points per upsert (default 1000)",
       1, 1000000, false, false},
      {"build-threads", CLI_FLAG_U32, &o.build_threads, "N",
       "index build threads; 0 = all CPUs (default)", 0, 1024, false, false},
      {"datatype", CLI_FLAG_CHOICE, &o.stf.datatype, CLI_DATATYPES,
       "how a new collection stores vectors (default float32; uint8 needs "
       "integer components 0..255)",
       0, 0, false, false},
      {"quantization", CLI_FLAG_CHOICE, &o.stf.quantization, CLI_QUANTIZATIONS,
       "compact codes the graph is searched with, rescored with the full "
       "vectors (default none)",
       0, 0, false, false},
      {"pq-ratio", CLI_FLAG_CHOICE, &o.stf.pq_ratio, CLI_PQ_RATIOS,
       "compression of product codes (pq, ivf-pq; default 16)", 0, 0, false,
       false},
      /* "1.5" last: choice index + 1 is qv_storage_params.bq_bits, and
       * index 2 + 1 is QV_BQ_ONE_AND_HALF_BITS */
      {"bq-bits", CLI_FLAG_CHOICE, &o.stf.bq_bits, CLI_BQ_BITS,
       "bits per dimension of binary codes (default 1; 1.5: 2 bits for the "
       "widest dimensions, 1 or 0 for the rest)", 0, 0, false, false},
      {"index", CLI_FLAG_CHOICE, &o.stf.index, CLI_INDEXES,
       "vector index of sealed segments (default hnsw)", 0, 0, false, false},
      {"nlist", CLI_FLAG_U32, &o.stf.nlist, "N",
       "IVF lists per sealed segment (default about 4 sqrt(points))", 1,
       1u << 20, false, false},
      {"on-disk-vectors", CLI_FLAG_BOOL, &o.stf.on_disk, NULL,
       "keep full vectors of sealed segments on disk (read for rescoring "
       "only)",
       0, 0, false, false},
      {"verbose", CLI_FLAG_BOOL, &o.verbose, NULL,
       "log the library's info messages", 0, 0, false, false},
  };
  cli_cmd_spec spec = {
      "import",
      "FILE",
      "Loads FILE (.fvecs, .npy float32 2-D, or .jsonl lines of {\"id\", "
      "\"vector\",\n\"payload\"}; any of them .gz) into a collection, then "
      "builds its index.\nIds of .fvecs/.npy rows are their 0-based row "
      "numbers. The storage flags (--datatype,\n--quantization, --pq-ratio, "
      "--bq-bits, --index, --nlist, --on-disk-vectors) apply\nwhen the "
      "collection is created; IVF takes no --quantization (ivf-pq has its "
      "own\nproduct codes, sized by --pq-ratio).",
      flags,
      sizeof flags / sizeof flags[0],
      1,
      1};
  const char *pos[1];
  size_t n_pos;
  int pr = cli_parse(&spec, argc, argv, pos, &n_pos, out, errf);
  if (pr != CLI_PARSE_OK)
    return pr == CLI_PARSE_HELP ? CLI_EXIT_OK : CLI_EXIT_USAGE;
  cli_log_install(o.verbose);
  o.m_set = cli_flag_seen(&spec, "m");
  o.ef_construct_set = cli_flag_seen(&spec, "ef-construct");
  o.shards_set = cli_flag_seen(&spec, "shards");
  o.full_scan_set = cli_flag_seen(&spec, "full-scan-threshold");
  if (!cli_storage_resolve("import", &o.stf, &o.storage, errf))
    return CLI_EXIT_USAGE;
  qv_err e = {0};
  if (o.distance != NULL &&
      qv_distance_parse(o.distance, &o.dist, &e) != QV_OK) {
    fprintf(errf,
            "quiver import: --distance: \"%s\" is not one of Euclid, "
            "Cosine, Dot, Manhattan\n",
            o.distance);
    return CLI_EXIT_USAGE;
  }

  const char *path = pos[0];
  reader *r = NULL;
  if (cli_reader_open(path, &r, &e) != QV_OK) {
    fprintf(errf, "quiver import: %s\n", e.msg);
    return CLI_EXIT_FAIL;
  }
  uint32_t dim = cli_reader_dim(r);
  if (dim == 0) {
    /* An empty stream from gzip usually means a corrupt .gz: say that. */
    if (cli_reader_close(r, &e) != QV_OK)
      fprintf(errf, "quiver import: %s\n", e.msg);
    else
      fprintf(errf, "quiver import: %s holds no vectors\n", path);
    return CLI_EXIT_FAIL;
  }
  qv_open_opts oo;
  qv_open_opts_init(&oo);
  oo.create = true;
  oo.optimizer_threads = o.build_threads;
  qv_db *db = NULL;
  if (qv_open(o.data_dir, &oo, &db, &e) != QV_OK) {
    fprintf(errf, "quiver import: %s: %s\n", o.data_dir, e.msg);
    cli_reader_close(r, NULL);
    return CLI_EXIT_FAIL;
  }
  qv_collection *c = NULL;
  int status = open_collection(&o, db, dim, path, &c, errf);
  uint64_t n = 0;
  double t0 = cli_now(), t_load = 0, t_index = 0;
  if (status == CLI_EXIT_OK) {
    status = load(c, r, o.batch, &n, errf);
    t_load = cli_now() - t0;
  }
  if (status == CLI_EXIT_OK && cli_reader_close(r, &e) != QV_OK) {
    fprintf(errf, "quiver import: %s\n", e.msg);
    status = CLI_EXIT_FAIL;
  } else if (status != CLI_EXIT_OK) {
    cli_reader_close(r, NULL);
  }
  r = NULL;
  if (status == CLI_EXIT_OK) {
    /* The build can take longer than the load and prints nothing itself. */
    fprintf(errf, "quiver import: loaded %llu points; building the index\n",
            (unsigned long long)n);
    fflush(errf);
    double t1 = cli_now();
    if (qv_collection_optimize(c, &e) != QV_OK) {
      fprintf(errf, "quiver import: building the index: %s: %s\n",
              qv_rc_name(e.rc), e.msg);
      status = CLI_EXIT_FAIL;
    }
    t_index = cli_now() - t1;
  }
  if (status == CLI_EXIT_OK)
    fprintf(out,
            "imported %llu points (%u-d) in %.2f s: %.0f points/s; indexed "
            "in %.2f s\n",
            (unsigned long long)n, dim, t_load,
            t_load > 0 ? (double)n / t_load : 0.0, t_index);
  if (c != NULL) qv_collection_release(c);
  qv_close(db);
  return status;
}
