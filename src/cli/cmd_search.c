/* cmd_search.c: `quiver search`: one k-NN query from the command line.
 *
 * Owns turning --vector or a record of --query-file into a query and
 * printing the hits ("id<TAB>score" a line, or a JSON array with --json).
 * Scores are printed with the fewest digits that read back as the same
 * float, so scripts can compare them exactly. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cli_util.h"
#include "cli/reader.h"

typedef struct search_opts {
  const char *data_dir, *name, *vector, *query_file;
  uint64_t query_index;
  uint32_t k, ef;
  bool exact, json, with_payload, verbose;
} search_opts;

/* Loads the query: --vector, or record --query-index of --query-file. */
static int load_query(const search_opts *o, float **q, size_t *dim,
                      FILE *errf) {
  qv_err e = {0};
  if (o->vector != NULL) {
    if (cli_parse_floats(o->vector, q, dim, &e) != QV_OK) {
      fprintf(errf, "quiver search: --vector: %s\n", e.msg);
      return CLI_EXIT_USAGE;
    }
    return CLI_EXIT_OK;
  }
  float *all = NULL;
  size_t n = 0;
  uint32_t d = 0;
  if (cli_reader_load_all(o->query_file, (size_t)o->query_index + 1, &all, &n,
                          &d, &e) != QV_OK) {
    fprintf(errf, "quiver search: %s\n", e.msg);
    return CLI_EXIT_FAIL;
  }
  if (o->query_index >= n) {
    fprintf(errf,
            "quiver search: --query-index %llu: %s holds only %zu "
            "records\n",
            (unsigned long long)o->query_index, o->query_file, n);
    free(all);
    return CLI_EXIT_FAIL;
  }
  *q = malloc(d * sizeof(float));
  if (*q == NULL) {
    free(all);
    return CLI_EXIT_FAIL;
  }
  memcpy(*q, all + (size_t)o->query_index * d, d * sizeof(float));
  free(all);
  *dim = d;
  return CLI_EXIT_OK;
}

static void print_score(FILE *out, float s) {
  char b[32];
  if (isfinite(s))
    fputs(cli_fmt_float(s, b), out);
  else
    fputs("null", out);
}

static void print_hits(FILE *out, const search_opts *o, const qv_hit *hits,
                       size_t n, const qv_records *payloads) {
  char idb[40];
  if (o->json) fputc('[', out);
  for (size_t i = 0; i < n; i++) {
    const char *payload = NULL;
    /* qv_get skips ids deleted since the search; match by id, not index. */
    for (size_t j = 0; payloads != NULL && j < payloads->n; j++)
      if (cli_id_eq(&payloads->items[j].id, &hits[i].id)) {
        payload = payloads->items[j].payload;
        break;
      }
    qv_id_format(&hits[i].id, idb);
    if (o->json) {
      fprintf(out, "%s{\"id\":", i ? "," : "");
      fprintf(out, hits[i].id.is_uuid ? "\"%s\"" : "%s", idb);
      fputs(",\"score\":", out);
      print_score(out, hits[i].score);
      if (o->with_payload)
        fprintf(out, ",\"payload\":%s", payload ? payload : "null");
      fputc('}', out);
    } else {
      fprintf(out, "%s\t", idb);
      print_score(out, hits[i].score);
      if (o->with_payload) fprintf(out, "\t%s", payload ? payload : "{}");
      fputc('\n', out);
    }
  }
  if (o->json) fputs("]\n", out);
}

int cmd_search(int argc, char **argv, FILE *out, FILE *errf) {
  search_opts o = {.k = 10};
  cli_flag flags[] = {
      {"data-dir", CLI_FLAG_STR, &o.data_dir, "DIR", "database directory", 0, 0,
       true, false},
      {"collection", CLI_FLAG_STR, &o.name, "NAME", "collection to search", 0,
       0, true, false},
      {"k", CLI_FLAG_U32, &o.k, "K", "results wanted (default 10)", 1, 100000,
       false, false},
      {"ef", CLI_FLAG_U32, &o.ef, "EF", "HNSW beam width (default max(k, 64))",
       1, 1000000, false, false},
      {"exact", CLI_FLAG_BOOL, &o.exact, NULL,
       "brute force over every point instead of the index", 0, 0, false, false},
      {"vector", CLI_FLAG_STR, &o.vector, "\"X,Y,...\"",
       "the query as comma-separated numbers", 0, 0, false, false},
      {"query-file", CLI_FLAG_STR, &o.query_file, "FILE",
       "take the query from a .fvecs/.npy/.jsonl file", 0, 0, false, false},
      {"query-index", CLI_FLAG_U64, &o.query_index, "I",
       "0-based record of --query-file (default 0)", 0, 0, false, false},
      {"with-payload", CLI_FLAG_BOOL, &o.with_payload, NULL,
       "print each hit's payload too", 0, 0, false, false},
      {"json", CLI_FLAG_BOOL, &o.json, NULL,
       "print a JSON array of {\"id\", \"score\"}", 0, 0, false, false},
      {"verbose", CLI_FLAG_BOOL, &o.verbose, NULL,
       "log the library's info messages", 0, 0, false, false},
  };
  cli_cmd_spec spec = {
      "search",
      NULL,
      "Finds the k nearest points to a query vector. Prints \"id<TAB>score\" "
      "a line,\nbest first (Cosine/Dot: similarity, descending; "
      "Euclid/Manhattan: distance,\nascending).",
      flags,
      sizeof flags / sizeof flags[0],
      0,
      0};
  size_t n_pos;
  int pr = cli_parse(&spec, argc, argv, NULL, &n_pos, out, errf);
  if (pr != CLI_PARSE_OK)
    return pr == CLI_PARSE_HELP ? CLI_EXIT_OK : CLI_EXIT_USAGE;
  cli_log_install(o.verbose);
  if ((o.vector == NULL) == (o.query_file == NULL)) {
    fprintf(errf, "quiver search: give exactly one of --vector and "
                  "--query-file\n");
    return CLI_EXIT_USAGE;
  }
  if (cli_flag_seen(&spec, "query-index") && o.query_file == NULL) {
    fprintf(errf, "quiver search: --query-index needs --query-file\n");
    return CLI_EXIT_USAGE;
  }
  float *q = NULL;
  size_t dim = 0;
  int status = load_query(&o, &q, &dim, errf);
  if (status != CLI_EXIT_OK) return status;
  qv_db *db = NULL;
  qv_collection *c = NULL;
  status = cli_open_existing("search", o.data_dir, o.name, &db, &c, errf);
  if (status != CLI_EXIT_OK) {
    free(q);
    return status;
  }
  qv_search_params p;
  qv_search_params_init(&p);
  p.k = o.k;
  p.ef = o.ef;
  p.exact = o.exact;
  qv_hit *hits = malloc(o.k * sizeof *hits);
  size_t n = 0;
  qv_err e = {0};
  qv_records recs = {0};
  if (hits == NULL) {
    fprintf(errf, "quiver search: no memory for %u hits\n", o.k);
    status = CLI_EXIT_FAIL;
  } else if (qv_search(c, q, dim, &p, hits, &n, &e) != QV_OK) {
    fprintf(errf, "quiver search: %s: %s\n", qv_rc_name(e.rc), e.msg);
    status = CLI_EXIT_FAIL;
  } else if (o.with_payload) {
    qv_point_id *ids = malloc((n ? n : 1) * sizeof *ids);
    for (size_t i = 0; ids != NULL && i < n; i++) ids[i] = hits[i].id;
    if (ids == NULL || qv_get(c, ids, n, false, true, &recs, &e) != QV_OK) {
      fprintf(errf, "quiver search: reading payloads: %s\n",
              ids ? e.msg : "no memory");
      status = CLI_EXIT_FAIL;
    }
    free(ids);
  }
  if (status == CLI_EXIT_OK)
    print_hits(out, &o, hits, n, o.with_payload ? &recs : NULL);
  qv_records_free(&recs);
  free(hits);
  free(q);
  qv_collection_release(c);
  qv_close(db);
  return status;
}
