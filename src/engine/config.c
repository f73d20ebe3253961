/* config.c: collection configuration — defaults, validation, and its
 * config.json (written atomically; read back with every field checked). */
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "base/alloc.h"
#include "base/err.h"
#include "base/fileio.h"
#include "engine/engine.h"
#include "engine/json_file.h"
#include "index/hnsw.h"
#include "quant/ivf.h"
#include "quant/sq8.h"

#define SEGMENT_MAX_POINTS_DEFAULT 200000u
#define FULL_SCAN_THRESHOLD_DEFAULT 10000u
#define SHARDS_MAX 1024u

void qv_collection_config_init(qv_collection_config *c) {
  memset(c, 0, sizeof *c);
  c->distance = QV_COSINE;
  c->hnsw_m = HNSW_M_DEFAULT;
  c->hnsw_ef_construct = HNSW_EF_CONSTRUCT_DEFAULT;
  c->shard_number = 1;
  c->segment_max_points = SEGMENT_MAX_POINTS_DEFAULT;
  c->full_scan_threshold = FULL_SCAN_THRESHOLD_DEFAULT;
}

const char *qv_datatype_name(qv_datatype d) {
  static const char *names[] = {"float32", "float16", "uint8"};
  return (unsigned)d < 3 ? names[d] : "?";
}

const char *qv_quantization_name(qv_quantization q) {
  static const char *names[] = {"none", "scalar", "binary", "product"};
  return (unsigned)q < 4 ? names[q] : "?";
}

const char *qv_vector_index_name(qv_vector_index t) {
  static const char *names[] = {"hnsw", "ivf-flat", "ivf-pq"};
  return (unsigned)t < 3 ? names[t] : "?";
}

static const char *dist_names[] = {"Cosine", "Dot", "Euclid", "Manhattan"};

const char *qv_distance_name(qv_distance d) {
  return (unsigned)d < 4 ? dist_names[d] : "?";
}

qv_rc qv_distance_parse(const char *name, qv_distance *out, qv_err *err) {
  for (int i = 0; i < 4; i++)
    if (name != NULL && strcasecmp(name, dist_names[i]) == 0) {
      *out = (qv_distance)i;
      return QV_OK;
    }
  return qv_err_set(err, QV_EINVAL,
                    "distance \"%.40s\": expected Cosine, Dot, Euclid or Manhattan",
                    name ? name : "(null)");
}

static bool name_char_ok(char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
         ch == '_' || ch == '-' || ch == '.';
}

/* Checks one vector space's storage parameters; `what` names the vector
 * ("vector" or "vector \"name\"") in messages. Zeros mean defaults. The
 * combinations refused here are the ones the engine cannot honour:
 * - IVF scans full vectors (Flat) or its own product codes (PQ), so it takes
 *   no separate `quantization`, and its k-means is L2 / dot only (no
 *   Manhattan);
 * - uint8 with Cosine: Cosine vectors are normalised before they are stored,
 *   and unit vectors are not integers 0..255. */
static qv_rc validate_storage(const qv_storage_params *s, qv_distance dist, const char *what,
                              qv_err *err) {
  if ((unsigned)s->datatype > QV_DATATYPE_UINT8)
    return qv_err_set(err, QV_EINVAL, "%s: datatype %d, expected float32, float16 or uint8",
                      what, (int)s->datatype);
  if ((unsigned)s->quantization > QV_QUANT_PRODUCT)
    return qv_err_set(err, QV_EINVAL,
                      "%s: quantization %d, expected none, scalar, binary or product", what,
                      (int)s->quantization);
  if ((unsigned)s->index > QV_VINDEX_IVF_PQ)
    return qv_err_set(err, QV_EINVAL, "%s: index %d, expected hnsw, ivf-flat or ivf-pq", what,
                      (int)s->index);
  if (s->sq_quantile != 0 && !(s->sq_quantile >= SQ8_QUANTILE_MIN && s->sq_quantile <= SQ8_QUANTILE_MAX))
    return qv_err_set(err, QV_EINVAL, "%s: sq_quantile %g, expected 0.5..1 (0 = 0.99)", what,
                      (double)s->sq_quantile);
  if (s->bq_bits > QV_BQ_ONE_AND_HALF_BITS)
    return qv_err_set(err, QV_EINVAL,
                      "%s: bq_bits %u, expected 1, 2 or %u (one and a half; 0 = 1)", what,
                      s->bq_bits, QV_BQ_ONE_AND_HALF_BITS);
  uint32_t r = s->pq_ratio;
  if (r != 0 && r != 4 && r != 8 && r != 16 && r != 32 && r != 64)
    return qv_err_set(err, QV_EINVAL, "%s: pq_ratio %u, expected 4, 8, 16, 32 or 64 (0 = 16)",
                      what, r);
  if (s->ivf_nlist > IVF_NLIST_MAX)
    return qv_err_set(err, QV_EINVAL, "%s: ivf_nlist %u, expected 1..%u (0 = about 4 sqrt(n))",
                      what, s->ivf_nlist, IVF_NLIST_MAX);
  if (s->index != QV_VINDEX_HNSW && s->quantization != QV_QUANT_NONE)
    return qv_err_set(err, QV_EINVAL,
                      "%s: index %s takes no quantization (ivf-pq has its own product codes; "
                      "use quantization none)",
                      what, qv_vector_index_name(s->index));
  if (s->index != QV_VINDEX_HNSW && dist == QV_MANHATTAN)
    return qv_err_set(err, QV_EINVAL, "%s: index %s supports Euclid, Cosine and Dot, not Manhattan",
                      what, qv_vector_index_name(s->index));
  if (s->datatype == QV_DATATYPE_UINT8 && dist == QV_COSINE)
    return qv_err_set(err, QV_EINVAL,
                      "%s: datatype uint8 with Cosine: Cosine vectors are normalised, which makes "
                      "them non-integers; use Dot or Euclid",
                      what);
  return QV_OK;
}

static qv_rc validate_named(const qv_collection_config *c, qv_err *err) {
  if (c->n_named > QV_VECTORS_MAX)
    return qv_err_set(err, QV_EINVAL, "%u named vectors: at most %u", c->n_named, QV_VECTORS_MAX);
  for (uint32_t i = 0; i < c->n_named; i++) {
    const qv_vector_params *v = &c->named[i];
    size_t len = strnlen(v->name, sizeof v->name);
    if (len == 0 || len > QV_VECTOR_NAME_MAX)
      return qv_err_set(err, QV_EINVAL, "named vector %u: name of %zu bytes, expected 1..%u", i,
                        len, QV_VECTOR_NAME_MAX);
    for (size_t k = 0; k < len; k++)
      if (!name_char_ok(v->name[k]))
        return qv_err_set(err, QV_EINVAL,
                          "vector name \"%.63s\": only letters, digits, '_', '-', '.'", v->name);
    for (uint32_t j = 0; j < i; j++)
      if (strncmp(c->named[j].name, v->name, sizeof v->name) == 0)
        return qv_err_set(err, QV_EINVAL, "vector name \"%.63s\" appears twice", v->name);
    if (v->dim < 1 || v->dim > QV_DIM_MAX)
      return qv_err_set(err, QV_EINVAL, "vector \"%.63s\": size %u, expected 1..%u", v->name,
                        v->dim, QV_DIM_MAX);
    if ((unsigned)v->distance > QV_MANHATTAN)
      return qv_err_set(err, QV_EINVAL, "vector \"%.63s\": unknown distance", v->name);
    if (v->hnsw_m && (v->hnsw_m < HNSW_M_MIN || v->hnsw_m > HNSW_M_MAX))
      return qv_err_set(err, QV_EINVAL, "vector \"%.63s\": hnsw m %u, expected %u..%u",
                        v->name, v->hnsw_m, HNSW_M_MIN, HNSW_M_MAX);
    if (v->hnsw_ef_construct && (v->hnsw_ef_construct < HNSW_EF_CONSTRUCT_MIN ||
                                 v->hnsw_ef_construct > HNSW_EF_CONSTRUCT_MAX))
      return qv_err_set(err, QV_EINVAL, "vector \"%.63s\": ef_construct %u, expected %u..%u",
                        v->name, v->hnsw_ef_construct, HNSW_EF_CONSTRUCT_MIN,
                        HNSW_EF_CONSTRUCT_MAX);
    char what[96];
    snprintf(what, sizeof what, "vector \"%.63s\"", v->name);
    qv_rc rc = validate_storage(&v->storage, v->distance, what, err);
    if (rc != QV_OK) return rc;
  }
  return QV_OK;
}

qv_rc config_validate(const qv_collection_config *c, qv_err *err) {
  qv_rc rc = validate_named(c, err);
  if (rc != QV_OK) return rc;
  if (c->dim == 0 && c->n_named == 0)
    return qv_err_set(err, QV_EINVAL, "vector size 0: expected 1..%u, or named vectors",
                      QV_DIM_MAX);
  if (c->dim > QV_DIM_MAX)
    return qv_err_set(err, QV_EINVAL, "vector size %u: expected 1..%u", c->dim, QV_DIM_MAX);
  if ((unsigned)c->distance > QV_MANHATTAN)
    return qv_err_set(err, QV_EINVAL, "distance %d: unknown", (int)c->distance);
  if (c->hnsw_m < HNSW_M_MIN || c->hnsw_m > HNSW_M_MAX)
    return qv_err_set(err, QV_EINVAL, "hnsw m %u: expected %u..%u", c->hnsw_m,
                      HNSW_M_MIN, HNSW_M_MAX);
  if (c->hnsw_ef_construct < HNSW_EF_CONSTRUCT_MIN ||
      c->hnsw_ef_construct > HNSW_EF_CONSTRUCT_MAX)
    return qv_err_set(err, QV_EINVAL, "hnsw ef_construct %u: expected %u..%u",
                      c->hnsw_ef_construct, HNSW_EF_CONSTRUCT_MIN,
                      HNSW_EF_CONSTRUCT_MAX);
  if (c->shard_number < 1 || c->shard_number > SHARDS_MAX)
    return qv_err_set(err, QV_EINVAL, "shard_number %u: expected 1..%u",
                      c->shard_number, SHARDS_MAX);
  if (c->segment_max_points < 16)
    return qv_err_set(err, QV_EINVAL, "segment_max_points %u: expected >= 16",
                      c->segment_max_points);
  return validate_storage(&c->storage, c->distance, "vector", err);
}

qv_rc name_validate(const char *name, qv_err *err) {
  size_t n = name ? strlen(name) : 0;
  if (n == 0 || n > QV_NAME_MAX)
    return qv_err_set(err, QV_EINVAL, "collection name of %zu bytes: expected 1..%u",
                      n, QV_NAME_MAX);
  /* A leading '.' marks the engine's own temporary directories (.tmp-*,
   * .trash-*), which opening removes: a collection may not look like one. */
  if (name[0] == '.')
    return qv_err_set(err, QV_EINVAL, "collection name \"%.60s\" may not start with '.'", name);
  for (size_t i = 0; i < n; i++) {
    char ch = name[i];
    if (!name_char_ok(ch))
      return qv_err_set(err, QV_EINVAL,
                        "collection name \"%.60s\": character %zu (0x%02x) is not a "
                        "letter, digit, '_', '-' or '.'",
                        name, i, (unsigned char)ch);
  }
  return QV_OK;
}

/* ---- storage parameters in config.json -------------------------------------
 * An object "storage" beside the vector's other fields, written only when
 * some field differs from the defaults, so a float32/HNSW collection's file
 * is the same as before storage parameters existed and older files (without
 * the key) read as the defaults. Enum fields are stored by name. */

static bool storage_is_default(const qv_storage_params *s) {
  return s->datatype == 0 && !s->on_disk && s->quantization == 0 && s->sq_quantile == 0 &&
         s->bq_bits == 0 && s->pq_ratio == 0 && !s->quant_always_ram && s->index == 0 &&
         s->ivf_nlist == 0;
}

static json_t *storage_to_json(const qv_storage_params *s) {
  return json_pack("{s:s, s:b, s:s, s:f, s:I, s:I, s:b, s:s, s:I}", "datatype",
                   qv_datatype_name(s->datatype), "on_disk", s->on_disk, "quantization",
                   qv_quantization_name(s->quantization), "sq_quantile", (double)s->sq_quantile,
                   "bq_bits", (json_int_t)s->bq_bits, "pq_ratio", (json_int_t)s->pq_ratio,
                   "always_ram", s->quant_always_ram, "index", qv_vector_index_name(s->index),
                   "ivf_nlist", (json_int_t)s->ivf_nlist);
}

/* Adds "storage" to `o` when `s` is not all defaults; false on no memory. */
static bool storage_add(json_t *o, const qv_storage_params *s) {
  if (o == NULL || storage_is_default(s)) return o != NULL;
  json_t *j = storage_to_json(s);
  return j != NULL && json_object_set_new(o, "storage", j) == 0;
}

static int name_index(const char *name, const char *(*fn)(int), int n) {
  for (int i = 0; i < n; i++)
    if (strcasecmp(name, fn(i)) == 0) return i;
  return -1;
}
static const char *dt_name(int i) { return qv_datatype_name((qv_datatype)i); }
static const char *qz_name(int i) { return qv_quantization_name((qv_quantization)i); }
static const char *ix_name(int i) { return qv_vector_index_name((qv_vector_index)i); }

/* Reads a "storage" object (NULL: defaults). Range checks are left to
 * config_validate, which config_read runs on the whole result. */
static bool storage_from_json(json_t *j, qv_storage_params *s) {
  memset(s, 0, sizeof *s);
  if (j == NULL) return true;
  const char *dt, *qz, *ix;
  int on_disk, always_ram;
  double quantile;
  json_int_t bits, ratio, nlist;
  json_error_t je;
  if (json_unpack_ex(j, &je, JSON_STRICT, "{s:s, s:b, s:s, s:F, s:I, s:I, s:b, s:s, s:I}",
                     "datatype", &dt, "on_disk", &on_disk, "quantization", &qz, "sq_quantile",
                     &quantile, "bq_bits", &bits, "pq_ratio", &ratio, "always_ram",
                     &always_ram, "index", &ix, "ivf_nlist", &nlist) != 0)
    return false;
  int d = name_index(dt, dt_name, 3), q = name_index(qz, qz_name, 4), x = name_index(ix, ix_name, 3);
  if (d < 0 || q < 0 || x < 0 || bits < 0 || bits > 64 || ratio < 0 || ratio > 64 ||
      nlist < 0 || nlist > UINT32_MAX || !(quantile >= 0 && quantile <= 1))
    return false;
  s->datatype = (qv_datatype)d;
  s->on_disk = on_disk;
  s->quantization = (qv_quantization)q;
  s->sq_quantile = (float)quantile;
  s->bq_bits = (uint32_t)bits;
  s->pq_ratio = (uint32_t)ratio;
  s->quant_always_ram = always_ram;
  s->index = (qv_vector_index)x;
  s->ivf_nlist = (uint32_t)nlist;
  return true;
}

qv_rc config_write(const char *path, const qv_collection_config *c, qv_err *err) {
  json_t *o = json_pack("{s:i, s:I, s:s, s:I, s:I, s:I, s:I, s:I}", "format", 1,
                        "dim", (json_int_t)c->dim, "distance",
                        qv_distance_name(c->distance), "hnsw_m",
                        (json_int_t)c->hnsw_m, "hnsw_ef_construct",
                        (json_int_t)c->hnsw_ef_construct, "shard_number",
                        (json_int_t)c->shard_number, "segment_max_points",
                        (json_int_t)c->segment_max_points, "full_scan_threshold",
                        (json_int_t)c->full_scan_threshold);
  if (o != NULL && c->n_named > 0) {
    json_t *arr = json_array();
    for (uint32_t i = 0; arr && i < c->n_named; i++) {
      const qv_vector_params *v = &c->named[i];
      json_t *jv = json_pack("{s:s, s:I, s:s, s:I, s:I}", "name", v->name, "dim",
                             (json_int_t)v->dim, "distance", qv_distance_name(v->distance),
                             "hnsw_m", (json_int_t)v->hnsw_m, "hnsw_ef_construct",
                             (json_int_t)v->hnsw_ef_construct);
      if (!storage_add(jv, &v->storage) || json_array_append_new(arr, jv) != 0) {
        json_decref(arr);
        arr = NULL;
      }
    }
    if (arr == NULL || json_object_set_new(o, "vectors", arr) != 0) {
      json_decref(o);
      o = NULL;
    }
  }
  if (o != NULL && !storage_add(o, &c->storage)) {
    json_decref(o);
    o = NULL;
  }
  if (o == NULL) return qv_err_set(err, QV_ENOMEM, "config %s: no memory", path);
  qv_rc rc = json_file_write(path, o, err);
  json_decref(o);
  return rc;
}

qv_rc config_read(const char *path, qv_collection_config *c, qv_err *err) {
  json_t *o;
  json_error_t je;
  qv_rc rc = json_file_read(path, &o, err);
  if (rc == QV_ENOTFOUND) return QV_CORRUPT(err, "%s is missing", path);
  if (rc != QV_OK) return rc;
  json_int_t format, dim, m, efc, shards, segmax, fst;
  const char *dist;
  json_t *named = NULL, *storage = NULL;
  qv_collection_config cfg;
  qv_collection_config_init(&cfg);
  if (json_unpack_ex(o, &je, JSON_STRICT, "{s:I, s:I, s:s, s:I, s:I, s:I, s:I, s:I, s?o, s?o}",
                     "format", &format, "dim", &dim, "distance", &dist, "hnsw_m",
                     &m, "hnsw_ef_construct", &efc, "shard_number", &shards,
                     "segment_max_points", &segmax, "full_scan_threshold",
                     &fst, "vectors", &named, "storage", &storage) != 0) {
    rc = QV_CORRUPT(err, "%s: %s", path, je.text);
  } else if (format != 1) {
    rc = QV_CORRUPT(err, "%s: format %lld, expected 1", path, (long long)format);
  } else if (qv_distance_parse(dist, &cfg.distance, err) != QV_OK) {
    rc = QV_CORRUPT(err, "%s: %s", path, err ? err->msg : "bad distance");
  } else if (dim < 0 || dim > QV_DIM_MAX || m < 0 || m > 100000 || efc < 0 ||
             efc > 100000 || shards < 0 || shards > 100000 || segmax < 0 ||
             segmax > UINT32_MAX || fst < 0 || fst > UINT32_MAX) {
    rc = QV_CORRUPT(err, "%s: a value is out of range", path);
  } else if (named != NULL &&
             (!json_is_array(named) || json_array_size(named) > QV_VECTORS_MAX)) {
    rc = QV_CORRUPT(err, "%s: \"vectors\" must be an array of at most %u", path,
                    QV_VECTORS_MAX);
  } else if (!storage_from_json(storage, &cfg.storage)) {
    rc = QV_CORRUPT(err, "%s: \"storage\" is malformed", path);
  } else {
    for (size_t i = 0; named && rc == QV_OK && i < json_array_size(named); i++) {
      qv_vector_params *v = &cfg.named[cfg.n_named++];
      const char *vname, *vdist;
      json_int_t vdim, vm, vefc;
      json_t *vst = NULL;
      if (json_unpack_ex(json_array_get(named, i), &je, JSON_STRICT,
                         "{s:s, s:I, s:s, s:I, s:I, s?o}", "name", &vname, "dim", &vdim,
                         "distance", &vdist, "hnsw_m", &vm, "hnsw_ef_construct", &vefc,
                         "storage", &vst) != 0 ||
          !storage_from_json(vst, &v->storage) ||
          strlen(vname) > QV_VECTOR_NAME_MAX || vdim < 0 || vdim > QV_DIM_MAX || vm < 0 ||
          vm > 100000 || vefc < 0 || vefc > 100000 ||
          qv_distance_parse(vdist, &v->distance, NULL) != QV_OK) {
        rc = QV_CORRUPT(err, "%s: named vector %zu is malformed", path, i);
        break;
      }
      snprintf(v->name, sizeof v->name, "%s", vname);
      v->dim = (uint32_t)vdim;
      v->hnsw_m = (uint32_t)vm;
      v->hnsw_ef_construct = (uint32_t)vefc;
    }
    cfg.dim = (uint32_t)dim;
    cfg.hnsw_m = (uint32_t)m;
    cfg.hnsw_ef_construct = (uint32_t)efc;
    cfg.shard_number = (uint32_t)shards;
    cfg.segment_max_points = (uint32_t)segmax;
    cfg.full_scan_threshold = (uint32_t)fst;
    if (rc == QV_OK && config_validate(&cfg, err) != QV_OK)
      rc = QV_CORRUPT(err, "%s: %s", path, err ? err->msg : "invalid");
  }
  json_decref(o);
  if (rc == QV_OK) *c = cfg;
  return rc;
}
