/* routes_collections.c: collection endpoints — list, info, exists, create,
 * delete, patch — and the payload-index declarations (PUT/DELETE
 * /collections/{c}/index) kept in a sidecar file.
 *
 * Declared indexes are remembered, with the parameters they were declared
 * with, in <data>/collections/<c>/payload_index.json (written atomically,
 * guarded by srv.index_mu) so that payload_schema reports them as Qdrant
 * would; the file lives in the collection's directory, so dropping the
 * collection drops it. For the types the engine indexes (keyword, integer,
 * float, bool, datetime, uuid) the engine builds the index too
 * (qv_payload_index_create); geo and text are accepted and filters on them
 * scan. Storage settings (datatype, on_disk, quantization_config,
 * quiver_index) are parsed and printed by json_storage.c; this file places
 * them: the collection level fills every space without its own, and
 * cf->storage (the unnamed vector's) doubles as the collection level when
 * printed. Invariant: CollectionInfo always carries every field the
 * official clients require, and nothing else unless asked (?memory=true). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/fileio.h"
#include "server/server_int.h"

void h_coll_list(srv_req *r) {
  char **names = NULL;
  size_t n = 0;
  qv_err err = {0};
  qv_rc rc = qv_collection_list(r->s->db, &names, &n, &err);
  if (rc != QV_OK) {
    srv_rc_fail(r, rc, &err);
    return;
  }
  json_t *arr = json_array();
  for (size_t i = 0; i < n; i++) {
    json_array_append_new(arr, json_pack("{s:s}", "name", names[i]));
    free(names[i]);
  }
  free(names);
  srv_ok(r, json_pack("{s:o}", "collections", arr));
}

void h_coll_exists(srv_req *r) {
  qv_collection *c = NULL;
  bool exists = qv_collection_get(r->s->db, r->args[0], &c, NULL) == QV_OK;
  qv_collection_release(c);
  srv_ok(r, json_pack("{s:b}", "exists", exists));
}

void h_coll_aliases(srv_req *r) {
  srv_coll sc;
  if (!srv_coll_open(r, &sc)) return;
  srv_coll_close(&sc);
  srv_ok(r, json_pack("{s:[]}", "aliases"));
}

/* ---- payload index sidecar ---------------------------------------------------- */

static void index_path(srv_req *r, const char *coll, char *buf, size_t cap) {
  snprintf(buf, cap, "%s/collections/%s/payload_index.json", r->s->cfg.data_dir, coll);
}

/* The declared indexes ({field: {data_type, params?}}); {} when none. */
static json_t *index_load(srv_req *r, const char *coll) {
  char path[PATH_MAX];
  index_path(r, coll, path, sizeof path);
  char *text;
  size_t n;
  if (fileio_read_file(path, &text, &n, NULL) != QV_OK) return json_object();
  json_t *o = json_loadb(text, n, 0, NULL);
  qv_free(text);
  if (!json_is_object(o)) {
    json_decref(o);
    return json_object();
  }
  return o;
}

static bool index_store(srv_req *r, const char *coll, const json_t *o) {
  char path[PATH_MAX];
  index_path(r, coll, path, sizeof path);
  size_t len;
  char *text = jsonio_dumps(o, &len);
  if (text == NULL) return srv_fail(r, 500, "Service internal error: out of memory");
  qv_err err = {0};
  qv_rc rc = fileio_write_atomic(path, text, len, &err);
  qv_free(text);
  return rc == QV_OK ? true : srv_rc_fail(r, rc, &err);
}

/* Counts the points that have `field`, through the engine's filter. */
static uint64_t points_with(srv_coll *sc, const char *field) {
  json_t *f = json_pack("{s:[{s:{s:s}}]}", "must_not", "is_empty", "key", field);
  size_t len;
  char *text = f ? jsonio_dumps(f, &len) : NULL;
  json_decref(f);
  qv_filter *flt = NULL;
  uint64_t n = 0;
  if (text && qv_filter_parse(text, len, &flt, NULL) == QV_OK)
    if (qv_count_filtered(sc->c, flt, &n, NULL) != QV_OK) n = 0;
  qv_filter_free(flt);
  qv_free(text);
  return n;
}

json_t *index_schema_json(srv_req *r, srv_coll *sc) {
  pthread_mutex_lock(&r->s->index_mu);
  json_t *decl = index_load(r, sc->name);
  pthread_mutex_unlock(&r->s->index_mu);
  json_t *out = json_object();
  const char *field;
  json_t *d;
  json_object_foreach(decl, field, d) {
    json_t *e = json_deep_copy(d);
    if (!json_is_object(e)) {
      json_decref(e);
      continue;
    }
    json_object_set_new(e, "points", jsonio_u64(points_with(sc, field)));
    json_object_set_new(out, field, e);
  }
  json_decref(decl);
  return out;
}

static const char *index_types[] = {"keyword", "integer", "float", "bool", "geo",
                                    "text",    "datetime", "uuid", NULL};

static bool valid_index_type(const char *t) {
  for (int i = 0; index_types[i]; i++)
    if (!strcmp(t, index_types[i])) return true;
  return false;
}

void h_index_create(srv_req *r) {
  json_t *body = srv_body(r, false);
  srv_coll sc = {0};
  const char *field = NULL;
  if (body == NULL || !srv_check_wait(r) || !srv_coll_open(r, &sc)) goto out;
  if (!srv_field_str(r, body, "field_name", true, &field)) goto out;
  if (field[0] == 0) {
    srv_invalid(r, "field_name", "must not be empty");
    goto out;
  }
  const json_t *schema = json_object_get(body, "field_schema");
  json_t *entry = NULL;
  if (json_is_string(schema) && valid_index_type(json_string_value(schema))) {
    entry = json_pack("{s:s}", "data_type", json_string_value(schema));
  } else if (json_is_object(schema) && json_is_string(json_object_get(schema, "type")) &&
             valid_index_type(json_string_value(json_object_get(schema, "type")))) {
    entry = json_pack("{s:s, s:O}", "data_type",
                      json_string_value(json_object_get(schema, "type")), "params", schema);
  } else if (schema == NULL || json_is_null(schema)) {
    srv_wrong_input(r, "field_schema is required (Quiver does not infer index types)");
    goto out;
  } else {
    srv_format_err(r, "field_schema: expected one of keyword, integer, float, bool, geo, "
                      "text, datetime, uuid, or an object with such a \"type\"");
    goto out;
  }
  qv_index_type itype;
  const char *tname = json_string_value(json_object_get(entry, "data_type"));
  if (qv_index_type_parse(tname, &itype, NULL) == QV_OK) {
    qv_err err = {0};
    qv_rc rc = qv_payload_index_create(sc.c, field, itype, &err);
    if (rc != QV_OK) {
      json_decref(entry);
      srv_rc_fail(r, rc, &err);
      goto out;
    }
  }
  pthread_mutex_lock(&r->s->index_mu);
  json_t *decl = index_load(r, sc.name);
  json_object_set_new(decl, field, entry);
  bool ok = index_store(r, sc.name, decl);
  pthread_mutex_unlock(&r->s->index_mu);
  json_decref(decl);
  if (ok) srv_update_ok(r);
out:
  srv_coll_close(&sc);
  json_decref(body);
}

void h_index_delete(srv_req *r) {
  srv_coll sc = {0};
  if (!srv_check_wait(r)) return;
  /* args[0] is the collection, args[1] the field; srv_coll_open reads [0]. */
  if (!srv_coll_open(r, &sc)) return;
  qv_err err = {0};
  qv_rc rc = qv_payload_index_drop(sc.c, r->args[1], &err);
  if (rc != QV_OK && rc != QV_ENOTFOUND) { /* not indexed by the engine: fine */
    srv_coll_close(&sc);
    srv_rc_fail(r, rc, &err);
    return;
  }
  pthread_mutex_lock(&r->s->index_mu);
  json_t *decl = index_load(r, sc.name);
  bool ok = true;
  if (json_object_get(decl, r->args[1]) != NULL) {
    json_object_del(decl, r->args[1]);
    ok = index_store(r, sc.name, decl);
  }
  pthread_mutex_unlock(&r->s->index_mu);
  json_decref(decl);
  srv_coll_close(&sc);
  if (ok) srv_update_ok(r);
}

/* ---- info ---------------------------------------------------------------------- */

/* config.params.vectors in the shape it was created in: one VectorParams
 * for the unnamed vector alone, else a map of names ("" for the unnamed).
 * cf->storage is both the unnamed vector's and the collection level's
 * quantization (see parse_create), so only named vectors that differ from
 * it carry a quantization_config of their own. */
static json_t *vectors_json(const qv_collection_config *cf) {
  if (cf->n_named == 0) {
    json_t *p = json_pack("{s:I, s:s}", "size", (json_int_t)cf->dim, "distance",
                          qv_distance_name(cf->distance));
    if (p) storage_vector_json(p, &cf->storage, &cf->storage);
    return p;
  }
  json_t *o = json_object();
  if (o && cf->dim > 0) {
    json_t *p = json_pack("{s:I, s:s}", "size", (json_int_t)cf->dim, "distance",
                          qv_distance_name(cf->distance));
    if (p) storage_vector_json(p, &cf->storage, &cf->storage);
    json_object_set_new(o, "", p);
  }
  for (uint32_t i = 0; o && i < cf->n_named; i++) {
    const qv_vector_params *v = &cf->named[i];
    json_t *p = json_pack("{s:I, s:s}", "size", (json_int_t)v->dim, "distance",
                          qv_distance_name(v->distance));
    if (p) storage_vector_json(p, &v->storage, &cf->storage);
    if (p && (v->hnsw_m || v->hnsw_ef_construct)) {
      json_t *h = json_object();
      if (v->hnsw_m) json_object_set_new(h, "m", json_integer(v->hnsw_m));
      if (v->hnsw_ef_construct)
        json_object_set_new(h, "ef_construct", json_integer(v->hnsw_ef_construct));
      json_object_set_new(p, "hnsw_config", h);
    }
    json_object_set_new(o, v->name, p);
  }
  return o;
}

void h_coll_get(srv_req *r) {
  srv_coll sc;
  if (!srv_coll_open(r, &sc)) return;
  const qv_collection_info *in = &sc.info;
  const qv_collection_config *cf = &in->config;
  const char *status = in->is_failed ? "red" : in->pending_builds ? "yellow" : "green";
  json_t *opt_status = in->is_failed
                           ? json_pack("{s:s}", "error", "a write failed; the collection "
                                                         "refuses writes until reopened")
                           : json_string("ok");
  json_t *config = json_pack(
      "{s:{s:o, s:I, s:i, s:i, s:b},"
      " s:{s:I, s:I, s:I, s:i, s:b},"
      " s:{s:f, s:i, s:i, s:n, s:n, s:I, s:i, s:n},"
      " s:{s:i, s:i}, s:n}",
      "params", "vectors", vectors_json(cf), "shard_number", (json_int_t)cf->shard_number,
      "replication_factor", 1, "write_consistency_factor", 1, "on_disk_payload", 1,
      "hnsw_config", "m", (json_int_t)cf->hnsw_m, "ef_construct",
      (json_int_t)cf->hnsw_ef_construct, "full_scan_threshold",
      (json_int_t)cf->full_scan_threshold, "max_indexing_threads", 0, "on_disk", 0,
      "optimizer_config", "deleted_threshold", 0.2, "vacuum_min_vector_number", 1000,
      "default_segment_number", 0, "max_segment_size", "memmap_threshold",
      "indexing_threshold", (json_int_t)cf->segment_max_points, "flush_interval_sec", 0,
      "max_optimization_threads", "wal_config", "wal_capacity_mb", 32, "wal_segments_ahead", 0,
      "quantization_config");
  json_t *q = storage_quant_json(&cf->storage);
  if (q) json_object_set_new(config, "quantization_config", q);
  json_t *info = json_pack("{s:s, s:o, s:I, s:o, s:o, s:o, s:o}", "status", status,
                           "optimizer_status", opt_status, "segments_count",
                           (json_int_t)in->segments_count, "points_count",
                           jsonio_u64(in->points_count), "indexed_vectors_count",
                           jsonio_u64(in->indexed_vectors_count), "config", config,
                           "payload_schema", index_schema_json(r, &sc));
  /* Resident memory per component is Quiver's extension; it is only sent
   * when asked for, because clients that validate CollectionInfo strictly
   * (pydantic models with extra="forbid") would refuse an unknown key. */
  const char *mem = srv_query(r, "memory");
  if (info && mem && strcmp(mem, "false") != 0 && strcmp(mem, "0") != 0)
    json_object_set_new(
        info, "memory",
        json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "vector_bytes",
                  jsonio_u64(in->vector_bytes), "vector_disk_bytes",
                  jsonio_u64(in->vector_disk_bytes), "code_bytes", jsonio_u64(in->code_bytes),
                  "graph_bytes", jsonio_u64(in->graph_bytes), "payload_bytes",
                  jsonio_u64(in->payload_bytes), "wal_bytes", jsonio_u64(in->wal_bytes),
                  "resident_index_bytes",
                  jsonio_u64(in->vector_bytes + in->code_bytes + in->graph_bytes)));
  srv_coll_close(&sc);
  srv_ok(r, info);
}

/* ---- create / delete / patch ------------------------------------------------------ */

/* Reads one u32 setting of a config sub-object; 0 < value is not checked
 * here (the engine's config_validate names the bounds). */
static bool cfg_u32(srv_req *r, const json_t *obj, const char *key, uint32_t *out) {
  uint64_t v = *out;
  if (!srv_field_u64(r, obj, key, false, &v)) return false;
  if (v > UINT32_MAX) return srv_wrong_input(r, "%s %llu is too large", key,
                                             (unsigned long long)v);
  *out = (uint32_t)v;
  return true;
}

/* One VectorParams {size, distance, hnsw_config?, on_disk?, datatype?,
 * quantization_config?, quiver_index?} (`what` names it in messages:
 * "vectors" or "vectors.<name>"). hnsw settings go to *m / *ef / *fst (fst
 * may be NULL: per-vector graphs have no threshold of their own; it is
 * accepted and ignored); the storage settings to *st. */
static bool parse_vector_params(srv_req *r, const json_t *v, const char *what, uint32_t *dim,
                                qv_distance *dist, uint32_t *m, uint32_t *ef, uint32_t *fst,
                                storage_spec *st) {
  static const char *const known[] = {"size", "distance", "hnsw_config", "on_disk", "datatype",
                                      "quantization_config", "multivector_config",
                                      "quiver_index", NULL};
  char key[160];
  if (!json_is_object(v))
    return srv_format_err(r, "%s: invalid type: %s, expected a map with size and distance", what,
                          srv_type_name(v));
  const char *k;
  const json_t *kv;
  json_object_foreach((json_t *)v, k, kv) {
    bool is_known = false;
    for (size_t i = 0; known[i] && !is_known; i++) is_known = !strcmp(k, known[i]);
    if (!is_known)
      return srv_format_err(r, "%s: unknown field `%.60s`, expected one of `size`, `distance`, "
                               "`hnsw_config`, `on_disk`, `datatype`, `quantization_config`, "
                               "`multivector_config`, `quiver_index`",
                            what, k);
  }
  uint64_t size = 0;
  const char *dname = NULL;
  snprintf(key, sizeof key, "%s.size", what);
  const json_t *sz = json_object_get(v, "size");
  if (sz == NULL || json_is_null(sz)) return srv_format_err(r, "%s: missing field `size`", what);
  if (!jsonio_get_u64(sz, &size))
    return srv_format_err(r, "%s: invalid type: %s, expected an unsigned integer", key,
                          srv_type_name(sz));
  if (size == 0)
    return srv_format_err(r, "%s: invalid value: integer `0`, expected a nonzero u64", key);
  if (size > 65536)
    return srv_invalid(r, key, "value %llu invalid, must be 65536 or less",
                       (unsigned long long)size);
  if (size > QV_DIM_MAX)
    return srv_wrong_input(r, "vector size %llu: Quiver supports at most %u dimensions",
                           (unsigned long long)size, QV_DIM_MAX);
  *dim = (uint32_t)size;
  if (!srv_field_str(r, v, "distance", true, &dname)) return false;
  static const char *names[] = {"Cosine", "Dot", "Euclid", "Manhattan"};
  int d = -1;
  for (int i = 0; i < 4; i++)
    if (!strcmp(dname, names[i])) d = i;
  if (d < 0)
    return srv_format_err(r, "%s.distance: unknown variant `%.40s`, expected one of "
                             "`Cosine`, `Euclid`, `Dot`, `Manhattan`",
                          what, dname);
  *dist = (qv_distance)d;
  bool ok;
  if (!storage_vector_parse(r, v, what, st)) return false;
  const json_t *mv = json_object_get(v, "multivector_config");
  if (mv && !json_is_null(mv)) return srv_wrong_input(r, "multivectors are not supported yet");
  const json_t *h = srv_field_obj(r, v, "hnsw_config", &ok);
  if (!ok) return false;
  if (h && json_object_get(h, "m") && json_integer_value(json_object_get(h, "m")) == 0 &&
      json_is_integer(json_object_get(h, "m")))
    return srv_wrong_input(r, "hnsw_config.m = 0 (no graph) is not supported yet");
  uint32_t ignored = 0;
  return h == NULL || (cfg_u32(r, h, "m", m) && cfg_u32(r, h, "ef_construct", ef) &&
                       cfg_u32(r, h, "full_scan_threshold", fst ? fst : &ignored));
}

/* `vectors`: one VectorParams (the unnamed vector), or {"name": params}
 * with "" meaning the unnamed vector. The storage settings each space gave
 * go to st[0] (unnamed) and st[1 + i] (named[i]). */
static bool parse_vectors(srv_req *r, const json_t *v, qv_collection_config *cfg,
                          storage_spec st[QV_VECTORS_MAX + 1]) {
  if (!json_is_object(v))
    return srv_format_err(r, "vectors: invalid type: expected a map with size and distance");
  if (json_object_get(v, "size") != NULL || json_object_get(v, "distance") != NULL)
    return parse_vector_params(r, v, "vectors", &cfg->dim, &cfg->distance, &cfg->hnsw_m,
                               &cfg->hnsw_ef_construct, &cfg->full_scan_threshold, &st[0]);
  if (json_object_size(v) == 0)
    return srv_format_err(r, "vectors: expected size and distance, or at least one named vector");
  const char *name;
  json_t *params;
  json_object_foreach((json_t *)v, name, params) {
    char what[96];
    snprintf(what, sizeof what, "vectors.%.80s", name);
    if (name[0] == 0) {
      if (!parse_vector_params(r, params, what, &cfg->dim, &cfg->distance, &cfg->hnsw_m,
                               &cfg->hnsw_ef_construct, &cfg->full_scan_threshold, &st[0]))
        return false;
      continue;
    }
    if (cfg->n_named == QV_VECTORS_MAX)
      return srv_wrong_input(r, "at most %u named vectors per collection", QV_VECTORS_MAX);
    if (strlen(name) > QV_VECTOR_NAME_MAX)
      return srv_wrong_input(r, "vector name \"%.80s...\" is longer than %u bytes", name,
                             QV_VECTOR_NAME_MAX);
    qv_vector_params *vp = &cfg->named[cfg->n_named++];
    snprintf(vp->name, sizeof vp->name, "%s", name);
    if (!parse_vector_params(r, params, what, &vp->dim, &vp->distance, &vp->hnsw_m,
                             &vp->hnsw_ef_construct, NULL, &st[cfg->n_named]))
      return false;
  }
  return true;
}

/* A key that configures something Quiver cannot do is refused rather than
 * silently ignored; keys that only tune Qdrant's internals are accepted. */
static bool refuse_if_set(srv_req *r, const json_t *body, const char *key, const char *what) {
  const json_t *v = json_object_get(body, key);
  if (v == NULL || json_is_null(v)) return true;
  if (json_is_object(v) && json_object_size(v) == 0) return true;
  return srv_wrong_input(r, "%s %s not supported yet", key, what);
}

/* The collection level's quantization_config and quiver_index go to every
 * space without its own (Qdrant's rule for quantization_config). The
 * unnamed vector's storage (cfg->storage) also stands for the collection
 * level when printed, so with named vectors only it holds the collection
 * level's quantization, which no space reads. */
static bool resolve_storage(srv_req *r, const json_t *body, qv_collection_config *cfg,
                            storage_spec st[QV_VECTORS_MAX + 1]) {
  storage_spec coll;
  memset(&coll, 0, sizeof coll);
  if (!storage_quant_parse(r, json_object_get(body, "quantization_config"),
                           "quantization_config", &coll) ||
      !storage_index_parse(r, json_object_get(body, "quiver_index"), "quiver_index", &coll))
    return false;
  if (!storage_resolve(r, &coll, &coll, "quantization_config")) return false;
  for (uint32_t i = 0; i <= cfg->n_named; i++) {
    char what[96];
    if (i == 0 && cfg->dim == 0) continue;
    snprintf(what, sizeof what, i ? "vectors.%.63s" : "vectors", i ? cfg->named[i - 1].name : "");
    if (!storage_resolve(r, &st[i], &coll, what)) return false;
    if (i == 0)
      cfg->storage = st[0].sp;
    else
      cfg->named[i - 1].storage = st[i].sp;
  }
  if (cfg->dim == 0) {
    cfg->storage.quantization = coll.sp.quantization;
    cfg->storage.sq_quantile = coll.sp.sq_quantile;
    cfg->storage.bq_bits = coll.sp.bq_bits;
    cfg->storage.pq_ratio = coll.sp.quantization == QV_QUANT_PRODUCT ? coll.sp.pq_ratio : 0;
    cfg->storage.quant_always_ram = coll.sp.quant_always_ram;
  }
  return true;
}

static bool parse_create(srv_req *r, const json_t *body, qv_collection_config *cfg) {
  qv_collection_config_init(cfg);
  const json_t *v = json_object_get(body, "vectors");
  if (v == NULL || json_is_null(v)) return srv_format_err(r, "missing field `vectors`");
  storage_spec st[QV_VECTORS_MAX + 1];
  memset(st, 0, sizeof st);
  if (!parse_vectors(r, v, cfg, st) || !resolve_storage(r, body, cfg, st)) return false;
  bool ok;
  const json_t *h = srv_field_obj(r, body, "hnsw_config", &ok);
  if (!ok) return false;
  if (h) {
    uint64_t m = 16;
    if (!srv_field_u64(r, h, "m", false, &m)) return false;
    if (json_object_get(h, "m") && m == 0)
      return srv_wrong_input(r, "hnsw_config.m = 0 (no graph) is not supported yet");
    if (!cfg_u32(r, h, "m", &cfg->hnsw_m) ||
        !cfg_u32(r, h, "ef_construct", &cfg->hnsw_ef_construct) ||
        !cfg_u32(r, h, "full_scan_threshold", &cfg->full_scan_threshold))
      return false;
    if (json_object_get(h, "ef_construct") && cfg->hnsw_ef_construct < 4)
      return srv_invalid(r, "hnsw_config.ef_construct", "value %u invalid, must be 4 or larger",
                         cfg->hnsw_ef_construct);
  }
  const json_t *o = srv_field_obj(r, body, "optimizers_config", &ok);
  if (!ok) return false;
  /* indexing_threshold is read as the segment size in points at which the
   * optimizer seals and indexes (what GET reports back; Qdrant's is in KB);
   * 0, Qdrant's "never index", keeps the default because Quiver always
   * indexes. The other knobs are accepted and not applied. */
  uint64_t it = 0;
  if (o && !srv_field_u64(r, o, "indexing_threshold", false, &it)) return false;
  if (it > UINT32_MAX)
    return srv_wrong_input(r, "optimizers_config.indexing_threshold %llu is too large",
                           (unsigned long long)it);
  if (it > 0) cfg->segment_max_points = (uint32_t)it;
  if (!cfg_u32(r, body, "shard_number", &cfg->shard_number)) return false;
  if (json_object_get(body, "shard_number") && cfg->shard_number == 0)
    return srv_format_err(r, "shard_number: invalid value: integer `0`, expected a nonzero u32");
  uint64_t rf = 1, wcf = 1;
  if (!srv_field_u64(r, body, "replication_factor", false, &rf) ||
      !srv_field_u64(r, body, "write_consistency_factor", false, &wcf))
    return false;
  bool on_disk = true;
  if (!srv_field_bool(r, body, "on_disk_payload", &on_disk)) return false;
  return refuse_if_set(r, body, "sparse_vectors", "are") &&
         refuse_if_set(r, body, "init_from", "is") &&
         refuse_if_set(r, body, "sharding_method", "is");
}

/* Names Qdrant refuses (422), then names the engine cannot store (400). */
static bool check_name(srv_req *r, const char *name) {
  if (strlen(name) > QV_NAME_MAX)
    return srv_invalid(r, "collection_name", "length must be at most %u", QV_NAME_MAX);
  if (strpbrk(name, "<>:\"/\\|?*") != NULL)
    return srv_invalid(r, "collection_name",
                       "collection name cannot contain \"<>:\\\"/\\\\|?*\" characters");
  /* The engine treats directories starting with '.' as leftovers of an
   * interrupted create and removes them when it opens the database. */
  if (name[0] == '.')
    return srv_wrong_input(r, "collection name \"%s\" may not start with '.'", name);
  return true;
}

void h_coll_create(srv_req *r) {
  json_t *body = srv_body(r, false);
  qv_collection_config cfg;
  if (body == NULL || !check_name(r, r->args[0]) || !parse_create(r, body, &cfg)) {
    json_decref(body);
    return;
  }
  json_decref(body);
  qv_err err = {0};
  qv_rc rc = qv_collection_create(r->s->db, r->args[0], &cfg, &err);
  if (rc == QV_EEXIST) {
    srv_fail(r, 409, "Wrong input: Collection `%s` already exists!", r->args[0]);
    return;
  }
  if (rc != QV_OK) {
    srv_rc_fail(r, rc, &err);
    return;
  }
  srv_ok(r, json_true());
}

void h_coll_delete(srv_req *r) {
  qv_err err = {0};
  qv_rc rc = qv_collection_drop(r->s->db, r->args[0], &err);
  if (rc == QV_ENOTFOUND || rc == QV_EINVAL) {
    srv_ok(r, json_false());
    return;
  }
  if (rc != QV_OK) {
    srv_rc_fail(r, rc, &err);
    return;
  }
  srv_ok(r, json_true());
}

/* A PATCH's quantization_config at `what` for a space stored with `cur`:
 * parsed like on create ("Disabled" = none); since codes cannot change
 * after creation yet, restating the current setting is the only accepted
 * form. */
static bool patch_quant(srv_req *r, const json_t *q, const char *what,
                        const qv_storage_params *cur) {
  if (q == NULL || json_is_null(q)) return true;
  storage_spec want;
  memset(&want, 0, sizeof want);
  if (!(json_is_string(q) && !strcmp(json_string_value(q), "Disabled"))) {
    if (!json_is_object(q))
      return srv_format_err(r, "%s: invalid type: %s, expected a map or \"Disabled\"", what,
                            srv_type_name(q));
    if (!storage_quant_parse(r, q, what, &want)) return false;
  }
  if (storage_quant_equal(&want.sp, cur)) return true;
  return srv_wrong_input(r, "%s: changing the quantization of an existing collection is not "
                            "supported yet (it is %s); recreate the collection",
                         what, qv_quantization_name(cur->quantization));
}

/* An hnsw_config of a PATCH into *m / *ef (and *fst when not NULL); the
 * engine validates the values. */
static bool patch_hnsw(srv_req *r, const json_t *h, uint32_t *m, uint32_t *ef, uint32_t *fst) {
  if (h == NULL) return true;
  uint32_t ignored = 0;
  if (!cfg_u32(r, h, "m", m) || !cfg_u32(r, h, "ef_construct", ef) ||
      !cfg_u32(r, h, "full_scan_threshold", fst ? fst : &ignored))
    return false;
  if (json_object_get(h, "m") && *m == 0)
    return srv_wrong_input(r, "hnsw_config.m = 0 (no graph) is not supported yet");
  return true;
}

/* `vectors` of a PATCH: {name: {hnsw_config?, quantization_config?,
 * on_disk?}} ("" = the unnamed vector); storage is checked against the
 * stored config, hnsw settings go into *cf. */
static bool patch_vectors(srv_req *r, const json_t *v, qv_collection_config *cf) {
  const char *name;
  json_t *d;
  json_object_foreach((json_t *)v, name, d) {
    char what[120];
    snprintf(what, sizeof what, "vectors.%.80s", name);
    const qv_storage_params *cur = NULL;
    uint32_t *m = NULL, *ef = NULL;
    if (name[0] == 0 && cf->dim > 0) {
      cur = &cf->storage;
      m = &cf->hnsw_m;
      ef = &cf->hnsw_ef_construct;
    }
    for (uint32_t i = 0; cur == NULL && i < cf->n_named; i++)
      if (!strcmp(cf->named[i].name, name)) {
        cur = &cf->named[i].storage;
        /* 0 means "the collection's": a PATCH of one of them sets its own */
        if (cf->named[i].hnsw_m == 0) cf->named[i].hnsw_m = cf->hnsw_m;
        if (cf->named[i].hnsw_ef_construct == 0)
          cf->named[i].hnsw_ef_construct = cf->hnsw_ef_construct;
        m = &cf->named[i].hnsw_m;
        ef = &cf->named[i].hnsw_ef_construct;
      }
    if (cur == NULL) return srv_wrong_input(r, "Not existing vector name error: %.80s", name);
    if (!json_is_object(d))
      return srv_format_err(r, "%s: invalid type: %s, expected a map", what, srv_type_name(d));
    const char *k;
    json_t *kv;
    json_object_foreach(d, k, kv) {
      if (strcmp(k, "hnsw_config") && strcmp(k, "quantization_config") && strcmp(k, "on_disk"))
        return srv_format_err(r, "%s: unknown field `%.60s`, expected one of `hnsw_config`, "
                                 "`quantization_config`, `on_disk`",
                              what, k);
    }
    char qwhat[160];
    snprintf(qwhat, sizeof qwhat, "%s.quantization_config", what);
    bool ok, on_disk = cur->on_disk;
    const json_t *h = srv_field_obj(r, d, "hnsw_config", &ok);
    if (!ok || !patch_hnsw(r, h, m, ef, NULL) ||
        !patch_quant(r, json_object_get(d, "quantization_config"), qwhat, cur) ||
        !srv_field_bool(r, d, "on_disk", &on_disk))
      return false;
    if (on_disk != cur->on_disk)
      return srv_wrong_input(r, "%s.on_disk: moving vectors to or from disk after creation is "
                                "not supported yet",
                             what);
  }
  return true;
}

void h_coll_patch(srv_req *r) {
  json_t *body = srv_body(r, true);
  srv_coll sc = {0};
  if (body == NULL || !srv_coll_open(r, &sc)) goto out;
  /* Every known section is checked for shape. Applied: hnsw_config (m,
   * ef_construct: segments sealed from now on; full_scan_threshold), per
   * vector hnsw_config, optimizers_config.indexing_threshold (the segment
   * size, as on create). Storage settings are compared with the stored
   * ones: restating them is fine, a change is refused rather than ignored.
   * The other sections are accepted and not applied (docs/api.md). */
  static const char *sections[] = {"optimizers_config", "params", "hnsw_config", "vectors",
                                   "sparse_vectors", "strict_mode_config", "metadata"};
  for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++) {
    bool ok;
    srv_field_obj(r, body, sections[i], &ok);
    if (!ok) goto out;
  }
  qv_collection_config cfg = sc.info.config;
  const json_t *v = json_object_get(body, "vectors");
  if (v && json_is_object(v) && !patch_vectors(r, v, &cfg)) goto out;
  if (!patch_quant(r, json_object_get(body, "quantization_config"), "quantization_config",
                   &sc.info.config.storage) ||
      !patch_hnsw(r, json_object_get(body, "hnsw_config"), &cfg.hnsw_m, &cfg.hnsw_ef_construct,
                  &cfg.full_scan_threshold))
    goto out;
  const json_t *o = json_object_get(body, "optimizers_config");
  uint64_t it = 0;
  if (o && !srv_field_u64(r, o, "indexing_threshold", false, &it)) goto out;
  if (it > UINT32_MAX) {
    srv_wrong_input(r, "optimizers_config.indexing_threshold %llu is too large",
                    (unsigned long long)it);
    goto out;
  }
  if (it > 0) cfg.segment_max_points = (uint32_t)it;
  qv_err err = {0};
  qv_rc rc = qv_collection_update(sc.c, &cfg, &err);
  if (rc == QV_EINVAL) {
    srv_wrong_input(r, "%s", err.msg);
    goto out;
  }
  if (rc != QV_OK) {
    srv_rc_fail(r, rc, &err);
    goto out;
  }
  srv_ok(r, json_true());
out:
  srv_coll_close(&sc);
  json_decref(body);
}
