/* json_storage.c: how a vector space is stored, compressed and indexed, in
 * Qdrant's JSON — `datatype`, `on_disk`, `quantization_config` — plus
 * Quiver's `quiver_index` extension (IVF-Flat / IVF-PQ), and the search-time
 * `params` object (hnsw_ef, exact, quantization {ignore, rescore,
 * oversampling}, Quiver's `nprobe`).
 *
 * Owns parsing these objects into qv_storage_params / qv_search_params and
 * printing qv_storage_params back in the shape they were given. Does not
 * decide what the engine can do with them (config_validate and the search
 * do) nor where in a request they sit (routes_collections.c and
 * routes_search.c call in here).
 *
 * Invariant: whatever parses here prints back to JSON that parses to the
 * same qv_storage_params (one_and_half_bits included: it is
 * QV_BQ_ONE_AND_HALF_BITS and prints back as itself). Every rejection is a 400 whose
 * message names the full path of the field ("vectors.img.quantization_config
 * .scalar.quantile: ..."), because these objects nest three deep and "type"
 * alone would not say which one was wrong. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/server_int.h"

/* oversampling above this is refused: the engine shortlists ceil(x * k)
 * candidates, and a typo like 1e9 should not become an allocation. */
#define STORAGE_OVERSAMPLING_MAX 1000.0
#define STORAGE_NLIST_MAX (1u << 20)
#define STORAGE_NPROBE_MAX (1u << 20)
#define STORAGE_HNSW_EF_MAX 100000u

/* ---- typed fields with full paths ---------------------------------------------- */

static const json_t *present(const json_t *obj, const char *key) {
  const json_t *v = json_object_get(obj, key);
  return json_is_null(v) ? NULL : v;
}

/* Refuses a key of `obj` not in the NULL-terminated `known`. */
static bool check_keys(srv_req *r, const json_t *obj, const char *what,
                       const char *const *known) {
  const char *key;
  const json_t *v;
  json_object_foreach((json_t *)obj, key, v) {
    bool ok = false;
    for (size_t i = 0; known[i] && !ok; i++) ok = strcmp(key, known[i]) == 0;
    if (ok) continue;
    char list[256] = "";
    size_t len = 0;
    for (size_t i = 0; known[i] && len < sizeof list; i++)
      len += (size_t)snprintf(list + len, sizeof list - len, "%s`%s`", i ? ", " : "", known[i]);
    return srv_format_err(r, "%s: unknown field `%.60s`, expected one of %s", what, key, list);
  }
  return true;
}

static bool want_obj(srv_req *r, const json_t *v, const char *what, const char *shape) {
  if (json_is_object(v)) return true;
  return srv_format_err(r, "%s: invalid type: %s, expected %s", what, srv_type_name(v), shape);
}

static bool get_bool(srv_req *r, const json_t *obj, const char *what, const char *key,
                     bool *out, bool *seen) {
  const json_t *v = present(obj, key);
  if (seen) *seen = v != NULL;
  if (v == NULL) return true;
  if (!json_is_boolean(v))
    return srv_format_err(r, "%s.%s: invalid type: %s, expected a boolean", what, key,
                          srv_type_name(v));
  *out = json_is_true(v);
  return true;
}

static bool get_str(srv_req *r, const json_t *obj, const char *what, const char *key,
                    bool required, const char **out) {
  const json_t *v = present(obj, key);
  if (v == NULL)
    return required ? srv_format_err(r, "%s: missing field `%s`", what, key) : true;
  if (!json_is_string(v) || jsonio_raw_text(v))
    return srv_format_err(r, "%s.%s: invalid type: %s, expected a string", what, key,
                          srv_type_name(v));
  *out = json_string_value(v);
  return true;
}

static bool get_num(srv_req *r, const json_t *obj, const char *what, const char *key,
                    bool *seen, double *out) {
  const json_t *v = present(obj, key);
  *seen = v != NULL;
  if (v == NULL) return true;
  if (!jsonio_get_f64(v, out) || !isfinite(*out))
    return srv_format_err(r, "%s.%s: invalid type: %s, expected a number", what, key,
                          srv_type_name(v));
  return true;
}

/* An unsigned integer in [lo, hi]; absent leaves *out. */
static bool get_u32(srv_req *r, const json_t *obj, const char *what, const char *key,
                    uint32_t lo, uint32_t hi, uint32_t *out) {
  const json_t *v = present(obj, key);
  if (v == NULL) return true;
  uint64_t x;
  if (!jsonio_get_u64(v, &x))
    return srv_format_err(r, "%s.%s: invalid type: %s, expected an unsigned integer", what,
                          key, srv_type_name(v));
  if (x < lo || x > hi)
    return srv_wrong_input(r, "%s.%s: %llu is out of range %u..%u", what, key,
                           (unsigned long long)x, lo, hi);
  *out = (uint32_t)x;
  return true;
}

/* ---- names ----------------------------------------------------------------------- */

static const char *const compressions[] = {"x4", "x8", "x16", "x32", "x64", NULL};

static bool parse_compression(srv_req *r, const char *s, const char *what, uint32_t *ratio) {
  for (int i = 0; compressions[i]; i++)
    if (!strcmp(s, compressions[i])) {
      *ratio = 4u << i;
      return true;
    }
  return srv_format_err(r, "%s: unknown variant `%.20s`, expected one of `x4`, `x8`, `x16`, "
                           "`x32`, `x64`",
                        what, s);
}

static const char *compression_name(uint32_t ratio) {
  for (int i = 0; compressions[i]; i++)
    if (ratio == (4u << i)) return compressions[i];
  return "x16"; /* 0 = the engine's default */
}

bool storage_datatype_parse(srv_req *r, const char *s, const char *what, qv_datatype *out) {
  static const char *names[] = {"float32", "float16", "uint8"};
  for (int i = 0; i < 3; i++)
    if (!strcmp(s, names[i])) {
      *out = (qv_datatype)i;
      return true;
    }
  return srv_format_err(r, "%s: unknown variant `%.20s`, expected one of `float32`, `float16`, "
                           "`uint8`",
                        what, s);
}

/* ---- quantization_config ------------------------------------------------------------ */

static bool parse_scalar(srv_req *r, const json_t *o, const char *what, qv_storage_params *sp) {
  static const char *const keys[] = {"type", "quantile", "always_ram", NULL};
  if (!want_obj(r, o, what, "a map with `type`") || !check_keys(r, o, what, keys)) return false;
  const char *type = NULL;
  if (!get_str(r, o, what, "type", true, &type)) return false;
  if (strcmp(type, "int8") != 0)
    return srv_format_err(r, "%s.type: unknown variant `%.20s`, expected `int8`", what, type);
  double q = 0;
  bool has_q;
  if (!get_num(r, o, what, "quantile", &has_q, &q)) return false;
  if (has_q && !(q >= 0.5 && q <= 1.0))
    return srv_wrong_input(r, "%s.quantile: %g is out of range 0.5..1", what, q);
  sp->quantization = QV_QUANT_SCALAR;
  sp->sq_quantile = has_q ? (float)q : 0;
  return get_bool(r, o, what, "always_ram", &sp->quant_always_ram, NULL);
}

/* Qdrant's binary encodings: one_bit, two_bits and one_and_half_bits
 * (QV_BQ_ONE_AND_HALF_BITS), each its own code. */
static bool parse_binary(srv_req *r, const json_t *o, const char *what, qv_storage_params *sp) {
  static const char *const keys[] = {"always_ram", "encoding", "query_encoding", NULL};
  if (!want_obj(r, o, what, "a map") || !check_keys(r, o, what, keys)) return false;
  const char *enc = NULL, *qenc = NULL;
  char path[200];
  snprintf(path, sizeof path, "%s.encoding", what);
  if (!get_str(r, o, what, "encoding", false, &enc) ||
      !get_str(r, o, what, "query_encoding", false, &qenc))
    return false;
  sp->quantization = QV_QUANT_BINARY;
  sp->bq_bits = 0;
  if (enc) {
    if (!strcmp(enc, "one_bit"))
      sp->bq_bits = 1;
    else if (!strcmp(enc, "two_bits"))
      sp->bq_bits = 2;
    else if (!strcmp(enc, "one_and_half_bits"))
      sp->bq_bits = QV_BQ_ONE_AND_HALF_BITS;
    else
      return srv_format_err(r, "%s: unknown variant `%.20s`, expected one of `one_bit`, "
                               "`two_bits`, `one_and_half_bits`",
                            path, enc);
  }
  /* The query side is always the engine's own asymmetric form; the names
   * are accepted so that Qdrant configs load. */
  static const char *const qencs[] = {"default", "binary", "scalar4bits", "scalar8bits", NULL};
  bool known = qenc == NULL;
  for (int i = 0; !known && qencs[i]; i++) known = !strcmp(qenc, qencs[i]);
  if (!known)
    return srv_format_err(r, "%s.query_encoding: unknown variant `%.20s`, expected one of "
                             "`default`, `binary`, `scalar4bits`, `scalar8bits`",
                          what, qenc);
  return get_bool(r, o, what, "always_ram", &sp->quant_always_ram, NULL);
}

static bool parse_product(srv_req *r, const json_t *o, const char *what, qv_storage_params *sp) {
  static const char *const keys[] = {"compression", "always_ram", NULL};
  if (!want_obj(r, o, what, "a map with `compression`") || !check_keys(r, o, what, keys))
    return false;
  const char *c = NULL;
  char path[200];
  snprintf(path, sizeof path, "%s.compression", what);
  if (!get_str(r, o, what, "compression", true, &c) ||
      !parse_compression(r, c, path, &sp->pq_ratio))
    return false;
  sp->quantization = QV_QUANT_PRODUCT;
  return get_bool(r, o, what, "always_ram", &sp->quant_always_ram, NULL);
}

bool storage_quant_parse(srv_req *r, const json_t *q, const char *what, storage_spec *out) {
  if (q == NULL || json_is_null(q)) return true;
  if (!json_is_object(q) || json_object_size(q) != 1)
    return srv_format_err(r, "%s: expected exactly one of `scalar`, `binary`, `product` "
                             "(got %s)",
                          what, json_is_object(q) ? "a map with another number of keys"
                                                  : srv_type_name(q));
  const char *kind = json_object_iter_key(json_object_iter((json_t *)q));
  const json_t *v = json_object_iter_value(json_object_iter((json_t *)q));
  char path[200];
  snprintf(path, sizeof path, "%s.%s", what, kind);
  qv_storage_params *sp = &out->sp;
  bool ok;
  if (!strcmp(kind, "scalar"))
    ok = parse_scalar(r, v, path, sp);
  else if (!strcmp(kind, "binary"))
    ok = parse_binary(r, v, path, sp);
  else if (!strcmp(kind, "product"))
    ok = parse_product(r, v, path, sp);
  else
    return srv_format_err(r, "%s: unknown variant `%.40s`, expected one of `scalar`, `binary`, "
                             "`product`",
                          what, kind);
  out->has_quant = ok;
  return ok;
}

/* ---- quiver_index ---------------------------------------------------------------------- */

bool storage_index_parse(srv_req *r, const json_t *v, const char *what, storage_spec *out) {
  static const char *const keys[] = {"type", "nlist", "compression", NULL};
  if (v == NULL || json_is_null(v)) return true;
  if (!want_obj(r, v, what, "a map with `type`") || !check_keys(r, v, what, keys)) return false;
  const char *type = NULL, *comp = NULL;
  if (!get_str(r, v, what, "type", true, &type) ||
      !get_str(r, v, what, "compression", false, &comp))
    return false;
  qv_storage_params *sp = &out->sp;
  if (!strcmp(type, "hnsw"))
    sp->index = QV_VINDEX_HNSW;
  else if (!strcmp(type, "ivf_flat") || !strcmp(type, "ivf-flat"))
    sp->index = QV_VINDEX_IVF_FLAT;
  else if (!strcmp(type, "ivf_pq") || !strcmp(type, "ivf-pq"))
    sp->index = QV_VINDEX_IVF_PQ;
  else
    return srv_format_err(r, "%s.type: unknown variant `%.20s`, expected one of `hnsw`, "
                             "`ivf_flat`, `ivf_pq`",
                          what, type);
  sp->ivf_nlist = 0;
  if (!get_u32(r, v, what, "nlist", 1, STORAGE_NLIST_MAX, &sp->ivf_nlist)) return false;
  if (sp->index == QV_VINDEX_HNSW && sp->ivf_nlist)
    return srv_wrong_input(r, "%s.nlist: only an IVF index has lists", what);
  if (comp) {
    char path[200];
    snprintf(path, sizeof path, "%s.compression", what);
    if (sp->index != QV_VINDEX_IVF_PQ)
      return srv_wrong_input(r, "%s: only `ivf_pq` takes a compression", path);
    uint32_t ratio = 0;
    if (!parse_compression(r, comp, path, &ratio)) return false;
    out->index_pq_ratio = ratio;
  }
  out->has_index = true;
  return true;
}

/* ---- VectorParams and the collection level ------------------------------------------------ */

bool storage_vector_parse(srv_req *r, const json_t *vp, const char *what, storage_spec *out) {
  memset(out, 0, sizeof *out);
  const char *dt = NULL;
  if (!get_str(r, vp, what, "datatype", false, &dt) ||
      !get_bool(r, vp, what, "on_disk", &out->sp.on_disk, NULL))
    return false;
  char path[200];
  if (dt) {
    snprintf(path, sizeof path, "%s.datatype", what);
    if (!storage_datatype_parse(r, dt, path, &out->sp.datatype)) return false;
  }
  snprintf(path, sizeof path, "%s.quantization_config", what);
  if (!storage_quant_parse(r, json_object_get(vp, "quantization_config"), path, out))
    return false;
  snprintf(path, sizeof path, "%s.quiver_index", what);
  return storage_index_parse(r, json_object_get(vp, "quiver_index"), path, out);
}

bool storage_resolve(srv_req *r, storage_spec *space, const storage_spec *coll,
                     const char *what) {
  qv_storage_params *sp = &space->sp;
  if (!space->has_quant) {
    sp->quantization = coll->sp.quantization;
    sp->sq_quantile = coll->sp.sq_quantile;
    sp->bq_bits = coll->sp.bq_bits;
    sp->pq_ratio = coll->sp.pq_ratio;
    sp->quant_always_ram = coll->sp.quant_always_ram;
  }
  uint32_t index_ratio = space->index_pq_ratio;
  if (!space->has_index) {
    sp->index = coll->sp.index;
    sp->ivf_nlist = coll->sp.ivf_nlist;
    index_ratio = coll->index_pq_ratio;
  }
  if (sp->index == QV_VINDEX_HNSW) return true;
  /* An IVF index scans full vectors (ivf_flat) or its own product codes
   * (ivf_pq), so it takes no quantization_config. One inherited from the
   * collection level gives way to the space's own index (its product
   * compression still sizes IVF-PQ codes); two settings of the same rank
   * contradict each other and are refused. */
  uint32_t ratio = index_ratio;
  if (sp->quantization != QV_QUANT_NONE) {
    if (space->has_quant || !space->has_index)
      return srv_wrong_input(r, "%s: quiver_index %s takes no quantization_config (%s); "
                                "drop one of them",
                             what, sp->index == QV_VINDEX_IVF_PQ ? "ivf_pq" : "ivf_flat",
                             sp->index == QV_VINDEX_IVF_PQ ? "it keeps its own product codes"
                                                           : "it scans the full vectors");
    if (ratio == 0 && sp->quantization == QV_QUANT_PRODUCT) ratio = sp->pq_ratio;
    sp->quantization = QV_QUANT_NONE;
    sp->sq_quantile = 0;
    sp->bq_bits = 0;
    sp->quant_always_ram = false;
  }
  sp->pq_ratio = sp->index == QV_VINDEX_IVF_PQ ? ratio : 0;
  return true;
}

/* ---- printing ----------------------------------------------------------------------------- */

/* A float32 setting as the shortest decimal that reads back as it, so that
 * 0.99 prints as 0.99 and not 0.9900000095367432. */
static json_t *real_f32(float v) {
  char buf[32];
  for (int prec = 6; prec <= 9; prec++) {
    snprintf(buf, sizeof buf, "%.*g", prec, (double)v);
    if (strtof(buf, NULL) == v) break;
  }
  return json_real(strtod(buf, NULL));
}

json_t *storage_quant_json(const qv_storage_params *sp) {
  json_t *in = json_object();
  const char *kind = NULL;
  switch (sp->quantization) {
  case QV_QUANT_SCALAR:
    kind = "scalar";
    json_object_set_new(in, "type", json_string("int8"));
    if (sp->sq_quantile > 0) json_object_set_new(in, "quantile", real_f32(sp->sq_quantile));
    break;
  case QV_QUANT_BINARY:
    kind = "binary";
    if (sp->bq_bits)
      json_object_set_new(in, "encoding",
                          json_string(sp->bq_bits == 2                         ? "two_bits"
                                      : sp->bq_bits == QV_BQ_ONE_AND_HALF_BITS ? "one_and_half_bits"
                                                                               : "one_bit"));
    break;
  case QV_QUANT_PRODUCT:
    kind = "product";
    json_object_set_new(in, "compression", json_string(compression_name(sp->pq_ratio)));
    break;
  default:
    json_decref(in);
    return NULL;
  }
  if (sp->quant_always_ram) json_object_set_new(in, "always_ram", json_true());
  return json_pack("{s:o}", kind, in);
}

static bool same_quant(const qv_storage_params *a, const qv_storage_params *b) {
  if (a->quantization != b->quantization) return false;
  if (a->quantization == QV_QUANT_NONE) return true;
  return a->sq_quantile == b->sq_quantile && a->bq_bits == b->bq_bits &&
         a->pq_ratio == b->pq_ratio && a->quant_always_ram == b->quant_always_ram;
}

bool storage_quant_equal(const qv_storage_params *a, const qv_storage_params *b) {
  return same_quant(a, b);
}

void storage_vector_json(json_t *vp, const qv_storage_params *sp,
                         const qv_storage_params *coll) {
  if (sp->datatype != QV_DATATYPE_FLOAT32)
    json_object_set_new(vp, "datatype", json_string(qv_datatype_name(sp->datatype)));
  if (sp->on_disk) json_object_set_new(vp, "on_disk", json_true());
  if (coll == NULL || !same_quant(sp, coll)) {
    json_t *q = storage_quant_json(sp);
    if (q) json_object_set_new(vp, "quantization_config", q);
  }
  if (sp->index != QV_VINDEX_HNSW) {
    json_t *ix = json_pack("{s:s}", "type", sp->index == QV_VINDEX_IVF_PQ ? "ivf_pq" : "ivf_flat");
    if (sp->ivf_nlist) json_object_set_new(ix, "nlist", json_integer(sp->ivf_nlist));
    if (sp->index == QV_VINDEX_IVF_PQ && sp->pq_ratio)
      json_object_set_new(ix, "compression", json_string(compression_name(sp->pq_ratio)));
    json_object_set_new(vp, "quiver_index", ix);
  }
}

/* ---- search params ---------------------------------------------------------------------- */

static bool parse_quant_search(srv_req *r, const json_t *q, qv_search_params *p) {
  static const char *const keys[] = {"ignore", "rescore", "oversampling", NULL};
  const char *what = "params.quantization";
  if (q == NULL || json_is_null(q)) return true;
  if (!want_obj(r, q, what, "a map") || !check_keys(r, q, what, keys)) return false;
  bool rescore = true, seen;
  if (!get_bool(r, q, what, "ignore", &p->quant_ignore, NULL) ||
      !get_bool(r, q, what, "rescore", &rescore, &seen))
    return false;
  if (seen) p->quant_rescore = rescore ? 1 : -1;
  double x;
  if (!get_num(r, q, what, "oversampling", &seen, &x)) return false;
  if (seen && !(x >= 1.0 && x <= STORAGE_OVERSAMPLING_MAX))
    return srv_wrong_input(r, "params.quantization.oversampling: %g is out of range 1..%g", x,
                           STORAGE_OVERSAMPLING_MAX);
  if (seen) p->quant_oversampling = (float)x;
  return true;
}

bool search_params_parse(srv_req *r, const json_t *params, qv_search_params *p) {
  static const char *const keys[] = {"hnsw_ef", "exact", "quantization", "indexed_only",
                                     "acorn", "nprobe", NULL};
  if (params == NULL || json_is_null(params)) return true;
  if (!want_obj(r, params, "params", "a map") || !check_keys(r, params, "params", keys))
    return false;
  uint64_t ef = 0;
  if (!srv_field_u64(r, params, "hnsw_ef", false, &ef) ||
      !get_bool(r, params, "params", "exact", &p->exact, NULL))
    return false;
  if (ef > STORAGE_HNSW_EF_MAX) return srv_invalid(r, "params.hnsw_ef", "value too large");
  p->ef = (uint32_t)ef;
  bool indexed_only = false; /* every live point is searchable: nothing to skip */
  if (!get_bool(r, params, "params", "indexed_only", &indexed_only, NULL)) return false;
  const json_t *acorn = present(params, "acorn");
  if (acorn && !json_is_object(acorn)) return want_obj(r, acorn, "params.acorn", "a map");
  return get_u32(r, params, "params", "nprobe", 1, STORAGE_NPROBE_MAX, &p->nprobe) &&
         parse_quant_search(r, json_object_get(params, "quantization"), p);
}
