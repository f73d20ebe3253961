/* cmd_info.c: `quiver info`: list the collections of a data directory, or
 * show one collection's configuration, counts, memory and build time.
 *
 * Only reads qv_collection_list / qv_collection_info_get; opening the
 * directory is also what `bench/run_core.sh` times as the reopen cost, so
 * this command must not do any work beyond opening and reporting. */
#include <jansson.h>
#include <stdlib.h>

#include "cli/cli.h"
#include "cli/cli_util.h"

static json_t *info_json(const char *name, const qv_collection_info *in) {
  const qv_collection_config *c = &in->config;
  return json_pack(
      "{s:s, s:{s:I, s:s, s:I, s:I, s:I, s:I, s:I}, s:I, s:I, s:I, s:I, "
      "s:I, s:I, s:I, s:I, s:I, s:f, s:s, s:b}",
      "name", name, "config", "dim", (json_int_t)c->dim, "distance",
      qv_distance_name(c->distance), "hnsw_m", (json_int_t)c->hnsw_m,
      "hnsw_ef_construct", (json_int_t)c->hnsw_ef_construct, "shard_number",
      (json_int_t)c->shard_number, "segment_max_points",
      (json_int_t)c->segment_max_points, "full_scan_threshold",
      (json_int_t)c->full_scan_threshold, "points_count",
      (json_int_t)in->points_count, "indexed_vectors_count",
      (json_int_t)in->indexed_vectors_count, "segments_count",
      (json_int_t)in->segments_count, "pending_builds",
      (json_int_t)in->pending_builds, "vector_bytes",
      (json_int_t)in->vector_bytes, "graph_bytes", (json_int_t)in->graph_bytes,
      "index_bytes", (json_int_t)(in->vector_bytes + in->graph_bytes),
      "payload_bytes", (json_int_t)in->payload_bytes, "wal_bytes",
      (json_int_t)in->wal_bytes, "build_seconds", in->build_seconds, "isa",
      in->isa ? in->isa : "", "is_failed", (int)in->is_failed);
}

static const char *human_bytes(uint64_t b, char buf[32]) {
  static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = (double)b;
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    u++;
  }
  snprintf(buf, 32, u ? "%.1f %s" : "%.0f %s", v, units[u]);
  return buf;
}

static void info_text(FILE *out, const char *name,
                      const qv_collection_info *in) {
  const qv_collection_config *c = &in->config;
  char b1[32], b2[32], b3[32], b4[32];
  fprintf(out,
          "collection %s\n"
          "  dim                  %u\n"
          "  distance             %s\n"
          "  hnsw m               %u\n"
          "  hnsw ef_construct    %u\n"
          "  shards               %u\n"
          "  segment_max_points   %u\n"
          "  full_scan_threshold  %u\n"
          "  points               %llu\n"
          "  indexed vectors      %llu\n"
          "  segments             %u (%u pending builds)\n"
          "  vector bytes         %llu (%s)\n"
          "  graph bytes          %llu (%s)\n"
          "  payload bytes        %llu (%s)\n"
          "  wal bytes            %llu (%s)\n"
          "  build seconds        %.2f\n"
          "  isa                  %s\n"
          "  state                %s\n",
          name, c->dim, qv_distance_name(c->distance), c->hnsw_m,
          c->hnsw_ef_construct, c->shard_number, c->segment_max_points,
          c->full_scan_threshold, (unsigned long long)in->points_count,
          (unsigned long long)in->indexed_vectors_count, in->segments_count,
          in->pending_builds, (unsigned long long)in->vector_bytes,
          human_bytes(in->vector_bytes, b1),
          (unsigned long long)in->graph_bytes, human_bytes(in->graph_bytes, b2),
          (unsigned long long)in->payload_bytes,
          human_bytes(in->payload_bytes, b3), (unsigned long long)in->wal_bytes,
          human_bytes(in->wal_bytes, b4), in->build_seconds,
          in->isa ? in->isa : "?",
          in->is_failed ? "FAILED (closed after an I/O error)" : "ok");
}

static int show_collection(qv_db *db, const char *name, bool json, FILE *out,
                           FILE *errf) {
  qv_collection *c = NULL;
  qv_collection_info info;
  qv_err e = {0};
  if (qv_collection_get(db, name, &c, &e) != QV_OK ||
      qv_collection_info_get(c, &info, &e) != QV_OK) {
    fprintf(errf, "quiver info: collection \"%s\": %s\n", name, e.msg);
    if (c != NULL) qv_collection_release(c);
    return CLI_EXIT_FAIL;
  }
  if (json) {
    json_t *j = info_json(name, &info);
    json_dumpf(j, out, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
    fputc('\n', out);
    json_decref(j);
  } else {
    info_text(out, name, &info);
  }
  qv_collection_release(c);
  return CLI_EXIT_OK;
}

static int list_collections(qv_db *db, bool json, FILE *out, FILE *errf) {
  char **names = NULL;
  size_t n = 0;
  qv_err e = {0};
  if (qv_collection_list(db, &names, &n, &e) != QV_OK) {
    fprintf(errf, "quiver info: %s\n", e.msg);
    return CLI_EXIT_FAIL;
  }
  json_t *arr = json ? json_array() : NULL;
  for (size_t i = 0; i < n; i++) {
    qv_collection *c = NULL;
    qv_collection_info info;
    bool ok = qv_collection_get(db, names[i], &c, &e) == QV_OK &&
              qv_collection_info_get(c, &info, &e) == QV_OK;
    if (json) {
      json_array_append_new(
          arr, ok ? info_json(names[i], &info)
                  : json_pack("{s:s, s:s}", "name", names[i], "error", e.msg));
    } else if (ok) {
      fprintf(out, "%s\t%llu points\t%u-d\t%s\n", names[i],
              (unsigned long long)info.points_count, info.config.dim,
              qv_distance_name(info.config.distance));
    } else {
      fprintf(out, "%s\t(error: %s)\n", names[i], e.msg);
    }
    if (c != NULL) qv_collection_release(c);
    free(names[i]);
  }
  free(names);
  if (json) {
    json_dumpf(arr, out, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
    fputc('\n', out);
    json_decref(arr);
  }
  return CLI_EXIT_OK;
}

int cmd_info(int argc, char **argv, FILE *out, FILE *errf) {
  const char *dir = NULL, *name = NULL;
  bool json = false, verbose = false;
  cli_flag flags[] = {
      {"data-dir", CLI_FLAG_STR, &dir, "DIR", "database directory", 0, 0, true,
       false},
      {"collection", CLI_FLAG_STR, &name, "NAME",
       "show this collection (default: list all)", 0, 0, false, false},
      {"json", CLI_FLAG_BOOL, &json, NULL, "print JSON", 0, 0, false, false},
      {"verbose", CLI_FLAG_BOOL, &verbose, NULL,
       "log the library's info messages", 0, 0, false, false},
  };
  cli_cmd_spec spec = {
      "info",
      NULL,
      "Lists the collections of a database directory, or shows one "
      "collection's\nconfiguration, point counts, memory and index build "
      "time.",
      flags,
      sizeof flags / sizeof flags[0],
      0,
      0};
  size_t n_pos;
  int pr = cli_parse(&spec, argc, argv, NULL, &n_pos, out, errf);
  if (pr != CLI_PARSE_OK)
    return pr == CLI_PARSE_HELP ? CLI_EXIT_OK : CLI_EXIT_USAGE;
  cli_log_install(verbose);
  qv_db *db = NULL;
  int status = cli_open_existing("info", dir, NULL, &db, NULL, errf);
  if (status != CLI_EXIT_OK) return status;
  status = name ? show_collection(db, name, json, out, errf)
                : list_collections(db, json, out, errf);
  qv_close(db);
  return status;
}
