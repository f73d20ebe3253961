/* quiver.h: the embeddable C API of Quiver, a vector database.
 *
 * A database is a directory. Open it with qv_open(), create collections in it,
 * upsert points (an id, a float32 vector and a JSON payload) and search them.
 * Every function that can fail returns a qv_rc and fills an optional qv_err
 * with a message naming the offending value and what was expected.
 *
 * Threads: a qv_db and its collections may be used from any number of threads
 * at once. Searches run in parallel with writes and with background index
 * builds; each search sees one consistent snapshot of the collection.
 *
 * Durability: a write function that returns QV_OK has put the write in a
 * checksummed write-ahead log and fsynced it; it survives kill -9 and power
 * loss. Concurrent writers share fsyncs (group commit).
 *
 * Scores follow Qdrant's convention: Cosine and Dot return a similarity
 * (higher is better, results sorted descending); Euclid and Manhattan return a
 * distance (lower is better, sorted ascending). */
#ifndef QUIVER_H
#define QUIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define QV_VERSION_MAJOR 0
#define QV_VERSION_MINOR 1
#define QV_VERSION_PATCH 0
#define QV_VERSION_STRING "0.1.0"

#if defined(QV_BUILDING_LIBRARY)
#define QV_API __attribute__((visibility("default")))
#else
#define QV_API
#endif

/* ---- errors ------------------------------------------------------------ */

typedef enum qv_rc {
  QV_OK = 0,
  QV_EINVAL,    /* the caller passed something malformed */
  QV_EDIM,      /* vector length differs from the collection's */
  QV_ENOTFOUND, /* no such collection or point */
  QV_EEXIST,    /* a collection of that name exists already */
  QV_ENOMEM,    /* an allocation failed */
  QV_EIO,       /* the operating system refused a read, write or fsync */
  QV_EBUSY,     /* another process holds the data directory */
  QV_ECORRUPT,  /* stored bytes failed a check; they are never trusted */
  QV_ECLOSED,   /* the object refuses work after an earlier fatal error */
} qv_rc;

typedef struct qv_err {
  qv_rc rc;
  char msg[256];
} qv_err;

/* A static, human-readable name for `rc` ("QV_EDIM"). */
QV_API const char *qv_rc_name(qv_rc rc);

/* ---- logging ------------------------------------------------------------ */

typedef enum qv_log_level {
  QV_LOG_DEBUG = 0,
  QV_LOG_INFO,
  QV_LOG_WARN,
  QV_LOG_ERROR,
} qv_log_level;

/* The library is silent until a host installs a log callback. `subsystem` is
 * a short tag ("wal", "optimizer"). The callback may be called from any
 * thread and must not call back into Quiver. Pass NULL to silence again. */
typedef void (*qv_log_fn)(void *ctx, qv_log_level level, const char *subsystem,
                          const char *msg);
QV_API void qv_set_log(qv_log_fn fn, void *ctx, qv_log_level min_level);

/* ---- ids, points, configuration ---------------------------------------- */

/* A point id is an unsigned 64-bit integer or a UUID, as in Qdrant. Integer
 * ids sort before UUIDs; integers by value, UUIDs by their 16 bytes. */
typedef struct qv_point_id {
  uint64_t num;     /* the id when !is_uuid */
  uint8_t uuid[16]; /* the id when is_uuid, in RFC 4122 byte order */
  bool is_uuid;
} qv_point_id;

QV_API qv_point_id qv_id_num(uint64_t num);
/* Parses any common UUID form (hyphenated, 32 hex digits, braced, urn:uuid:).
 * Errors: QV_EINVAL when `text` is not a UUID. */
QV_API qv_rc qv_id_parse_uuid(const char *text, qv_point_id *out, qv_err *err);
/* Writes the canonical lowercase hyphenated form (37 bytes with the NUL) or the
 * decimal integer; returns `buf`. */
QV_API char *qv_id_format(const qv_point_id *id, char buf[40]);
/* <0, 0, >0 in scroll order. */
QV_API int qv_id_cmp(const qv_point_id *a, const qv_point_id *b);

typedef enum qv_distance {
  QV_COSINE = 0,
  QV_DOT,
  QV_EUCLID,
  QV_MANHATTAN,
} qv_distance;

/* "Cosine", "Dot", "Euclid", "Manhattan"; parsing ignores case. */
QV_API const char *qv_distance_name(qv_distance d);
QV_API qv_rc qv_distance_parse(const char *name, qv_distance *out, qv_err *err);

#define QV_DIM_MAX 65535u
#define QV_NAME_MAX 255u
#define QV_VECTORS_MAX 16u     /* named vectors per collection */
#define QV_VECTOR_NAME_MAX 63u /* bytes of a vector name */

/* How a vector space stores, compresses and indexes its vectors (Qdrant's
 * `datatype`, `on_disk`, `quantization_config`, plus Quiver's IVF index
 * extension). All zeros = the defaults: float32 in RAM, no codes, HNSW. */
typedef enum qv_datatype {
  QV_DATATYPE_FLOAT32 = 0,
  QV_DATATYPE_FLOAT16, /* stored as IEEE binary16; upserts round to it */
  QV_DATATYPE_UINT8,   /* stored as integers 0..255; upserts must give them
                        * (QV_EINVAL otherwise); not with Cosine */
} qv_datatype;

typedef enum qv_quantization {
  QV_QUANT_NONE = 0,
  QV_QUANT_SCALAR,  /* int8 codes (Qdrant's "scalar", type int8) */
  QV_QUANT_BINARY,  /* 1 or 2 bits per dimension */
  QV_QUANT_PRODUCT, /* product codes, compression ratio x4..x64 */
} qv_quantization;

typedef enum qv_vector_index {
  QV_VINDEX_HNSW = 0,
  QV_VINDEX_IVF_FLAT, /* IVF indexes take no `quantization` (IVF-PQ has its
                       * own product codes) and no Manhattan distance */
  QV_VINDEX_IVF_PQ,
} qv_vector_index;

#define QV_BQ_ONE_AND_HALF_BITS 3u /* qv_storage_params.bq_bits: 1.5 bits a dimension */

typedef struct qv_storage_params {
  qv_datatype datatype;
  /* Full vectors of sealed segments are only read from the mapped file
   * (for rescoring and with_vector) and not counted as resident. */
  bool on_disk;
  qv_quantization quantization;
  float sq_quantile;     /* scalar: in [0.5, 1]; 0 = 0.99 */
  /* binary: 1, 2 or QV_BQ_ONE_AND_HALF_BITS; 0 = 1. One and a half bits
   * (Qdrant's one_and_half_bits) is ceil(1.5 dim / 64) 64-bit words a
   * vector, shared out per segment: 2 bits to the dimensions whose values
   * vary most, 1 or 0 to the rest. */
  uint32_t bq_bits;
  uint32_t pq_ratio;     /* product and IVF-PQ: 4, 8, 16, 32, 64; 0 = 16 */
  bool quant_always_ram; /* accepted for Qdrant; codes always live in RAM */
  qv_vector_index index;
  uint32_t ivf_nlist;    /* IVF lists per sealed segment, <= 65536 (and at
                          * most its rows); 0 = about 4 sqrt(n) */
} qv_storage_params;

/* "float32", "float16", "uint8" / "none", "scalar", "binary", "product" /
 * "hnsw", "ivf-flat", "ivf-pq"; parsing ignores case. */
QV_API const char *qv_datatype_name(qv_datatype d);
QV_API const char *qv_quantization_name(qv_quantization q);
QV_API const char *qv_vector_index_name(qv_vector_index t);

/* A named vector of a collection (Qdrant's named vectors). */
typedef struct qv_vector_params {
  char name[QV_VECTOR_NAME_MAX + 1]; /* non-empty: letters, digits, _ - . */
  uint32_t dim;                      /* 1..65535 */
  qv_distance distance;
  uint32_t hnsw_m;            /* 0 = the collection's */
  uint32_t hnsw_ef_construct; /* 0 = the collection's */
  qv_storage_params storage;  /* this vector's own; zeros = defaults */
} qv_vector_params;

typedef struct qv_collection_config {
  /* The unnamed vector: 1..65535, or 0 when the collection has only named
   * vectors (n_named > 0). */
  uint32_t dim;
  qv_distance distance;  /* default QV_COSINE */
  uint32_t hnsw_m;       /* graph degree, 4..128, default 16 */
  uint32_t hnsw_ef_construct; /* build beam, 8..4096, default 100 */
  uint32_t shard_number; /* 1..1024, default 1 */
  /* The optimizer seals the mutable segment and builds its graph when it
   * holds this many points (default 200,000). */
  uint32_t segment_max_points;
  /* Segments smaller than this are searched exactly (default 10,000). */
  uint32_t full_scan_threshold;
  /* Named vectors, besides or instead of the unnamed one. A point must carry
   * the unnamed vector when the collection has one; named ones are optional
   * per point (a point without one is never found through it). */
  uint32_t n_named;
  qv_vector_params named[QV_VECTORS_MAX];
  qv_storage_params storage; /* of the unnamed vector */
} qv_collection_config;

/* Fills `c` with the defaults; dim stays 0 and must be set. */
QV_API void qv_collection_config_init(qv_collection_config *c);

typedef struct qv_open_opts {
  bool create;                /* create the directory if missing (default true) */
  uint32_t optimizer_threads; /* index build threads; 0 = number of CPUs */
  bool background_optimizer;  /* seal and index segments automatically
                               * (default true; false: only on
                               * qv_collection_optimize) */
} qv_open_opts;

QV_API void qv_open_opts_init(qv_open_opts *o);

typedef struct qv_named_vector {
  const char *name;
  const float *vector;
  uint32_t dim;
} qv_named_vector;

/* A point to write. The library copies everything it keeps; the caller keeps
 * ownership of the vectors and `payload`. `payload` is a JSON object as text
 * (NULL or "" means {}); it is stored and returned verbatim. */
typedef struct qv_point {
  qv_point_id id;
  const float *vector; /* the unnamed vector, `dim` floats (NULL when the
                          collection has only named vectors) */
  uint32_t dim;        /* length of vector; must equal the collection's */
  const char *payload;
  size_t payload_len;  /* bytes of payload; 0 with non-NULL payload = strlen */
  const qv_named_vector *named; /* named vectors of the point, any subset */
  uint32_t n_named;
} qv_point;

/* A point read back. Owned by the qv_records that holds it. */
typedef struct qv_record {
  qv_point_id id;
  const float *vector; /* the unnamed vector, NULL unless requested (or the
                          collection has none) */
  const char *payload; /* NUL-terminated JSON, NULL unless requested */
  size_t payload_len;
  qv_named_vector *named; /* the point's named vectors when requested */
  uint32_t n_named;
} qv_record;

typedef struct qv_records {
  qv_record *items;
  size_t n;
  void *priv_;
} qv_records;

/* Releases what a get or scroll returned. Accepts NULL and empty records. */
QV_API void qv_records_free(qv_records *r);

/* ---- database ------------------------------------------------------------ */

typedef struct qv_db qv_db;
typedef struct qv_collection qv_collection;

/* Opens the database directory `path` (opts may be NULL for defaults),
 * recovering every collection from its manifest and write-ahead log.
 * On QV_OK, *out is a handle the caller owns; release it with qv_close().
 * Errors: QV_EIO (cannot create or read `path`), QV_EBUSY (another process
 * holds it), QV_ECORRUPT (a collection's stored state fails a check; the
 * message names the file). */
QV_API qv_rc qv_open(const char *path, const qv_open_opts *opts, qv_db **out,
                     qv_err *err);

/* Stops background work, waits for running index builds to finish or abandon,
 * and releases everything. Every acknowledged write is already durable.
 * Collection handles from this db become invalid. Accepts NULL. */
QV_API void qv_close(qv_db *db);

/* Creates collection `name` (1..255 bytes of letters, digits, '_', '-', '.',
 * not "." or ".."). On QV_OK the collection exists durably.
 * Errors: QV_EINVAL (bad name or config), QV_EEXIST, QV_EIO. */
QV_API qv_rc qv_collection_create(qv_db *db, const char *name,
                                  const qv_collection_config *cfg,
                                  qv_err *err);

/* Drops collection `name` and its files. Handles to it become invalid once
 * every borrower has released them (qv_collection_release).
 * Errors: QV_ENOTFOUND, QV_EIO. */
QV_API qv_rc qv_collection_drop(qv_db *db, const char *name, qv_err *err);

/* Looks up a collection. On QV_OK *out is a counted reference: release it
 * with qv_collection_release(). Errors: QV_ENOTFOUND, QV_EINVAL. */
QV_API qv_rc qv_collection_get(qv_db *db, const char *name,
                               qv_collection **out, qv_err *err);
QV_API void qv_collection_release(qv_collection *c);

/* Fills `names` (caller frees each string and the array with free()) with
 * the collection names in byte order. */
QV_API qv_rc qv_collection_list(qv_db *db, char ***names, size_t *n,
                                qv_err *err);

typedef struct qv_collection_info {
  qv_collection_config config;
  uint64_t points_count;          /* live points */
  uint64_t indexed_vectors_count; /* live points in segments with a graph */
  uint32_t segments_count;        /* sealed + mutable, over all shards */
  uint32_t pending_builds;        /* segments waiting for or in index build */
  uint64_t vector_bytes;          /* resident bytes of full vectors (by
                                   * design: on_disk ones are not counted) */
  uint64_t vector_disk_bytes;     /* bytes of full vectors read from disk
                                   * only (on_disk, or the float32 copies
                                   * behind float16/uint8 ones) */
  uint64_t code_bytes;            /* resident bytes of quantized codes and
                                   * their codebooks */
  uint64_t graph_bytes;           /* resident bytes of HNSW graphs and IVF
                                   * lists and centroids */
  uint64_t payload_bytes;         /* bytes of stored payloads */
  uint64_t wal_bytes;             /* bytes of write-ahead log on disk */
  double build_seconds;           /* wall time of the graph builds of the
                                   * live sealed segments */
  const char *isa;                /* distance kernels in use ("avx512") */
  bool is_failed;                 /* a fatal I/O error closed the collection */
} qv_collection_info;

/* Changes the settings that may change after creation: hnsw_m and
 * hnsw_ef_construct (collection and named vectors; used by segments sealed
 * from now on), segment_max_points (from the next mutable segment) and
 * full_scan_threshold (from the next search). `cfg` is the whole config —
 * the one qv_collection_info_get returned, with those fields changed; any
 * other difference is QV_EINVAL naming the field. Durable on QV_OK.
 * Errors: QV_EINVAL, QV_EIO. */
QV_API qv_rc qv_collection_update(qv_collection *c, const qv_collection_config *cfg,
                                  qv_err *err);

QV_API qv_rc qv_collection_info_get(qv_collection *c, qv_collection_info *out,
                                    qv_err *err);
QV_API const char *qv_collection_name(const qv_collection *c);

/* ---- writes ------------------------------------------------------------- */

/* Inserts or replaces `n` points (an id written twice in one call: the last
 * wins). Cosine vectors are normalised before they are stored. Validates
 * every point before writing any: on error nothing is written.
 * Errors: QV_EDIM (wrong vector length), QV_EINVAL (NaN or infinite
 * component, payload not a JSON object, NULL vector), QV_EIO and QV_ECLOSED
 * (the log could not be made durable; the collection refuses further writes
 * until reopened). */
QV_API qv_rc qv_upsert(qv_collection *c, const qv_point *points, size_t n,
                       qv_err *err);

/* Deletes the points with these ids; ids that do not exist are ignored.
 * *n_deleted (may be NULL) receives how many existed. */
QV_API qv_rc qv_delete(qv_collection *c, const qv_point_id *ids, size_t n,
                       size_t *n_deleted, qv_err *err);

/* ---- reads -------------------------------------------------------------- */

/* Fetches the points with these ids, in the order asked; ids not found are
 * skipped. Vectors and payloads are included when asked for. */
QV_API qv_rc qv_get(qv_collection *c, const qv_point_id *ids, size_t n,
                    bool with_vector, bool with_payload, qv_records *out,
                    qv_err *err);

QV_API qv_rc qv_count(qv_collection *c, uint64_t *out, qv_err *err);

/* Returns up to `limit` points in id order starting at `start` (inclusive;
 * NULL = the first). *has_next says whether more follow; then *next is the id
 * to pass as `start` to continue (a resumable cursor, stable across writes). */
QV_API qv_rc qv_scroll(qv_collection *c, const qv_point_id *start,
                       size_t limit, bool with_vector, bool with_payload,
                       qv_records *out, qv_point_id *next, bool *has_next,
                       qv_err *err);

/* ---- filters ------------------------------------------------------------ */

/* A parsed payload filter in Qdrant's filter language: must / should /
 * must_not / min_should; match (value, any, except, text), range (numbers and
 * RFC 3339 datetimes), has_id, is_empty, is_null, values_count, nested keys
 * (a.b, a[].b), geo radius and bounding box. Immutable once parsed; may be
 * shared by threads. */
typedef struct qv_filter qv_filter;

/* Parses `json` (len bytes; 0 = strlen) holding a Qdrant Filter object.
 * On QV_OK *out is owned by the caller (qv_filter_free). Errors: QV_EINVAL
 * with a message naming the offending key or value. */
QV_API qv_rc qv_filter_parse(const char *json, size_t len, qv_filter **out,
                             qv_err *err);
QV_API void qv_filter_free(qv_filter *f); /* accepts NULL */

/* Parses an RFC 3339 date-time as filters do ("2023-02-08T10:49:00Z",
 * fractional seconds, offsets, a space for T, a plain date) into
 * microseconds since the epoch. Returns false when `s` is not one. */
QV_API bool qv_datetime_parse(const char *s, int64_t *us);

/* Points matching `filter` (NULL = all). */
QV_API qv_rc qv_count_filtered(qv_collection *c, const qv_filter *filter,
                               uint64_t *out, qv_err *err);
/* qv_scroll over the points matching `filter` (NULL = all). */
QV_API qv_rc qv_scroll_filtered(qv_collection *c, const qv_filter *filter,
                                const qv_point_id *start, size_t limit,
                                bool with_vector, bool with_payload,
                                qv_records *out, qv_point_id *next,
                                bool *has_next, qv_err *err);
/* Up to `limit` points matching `filter`, ordered by the number (or RFC 3339
 * date-time, as microseconds since the epoch) at payload key `key`:
 * ascending, or descending with `descending`; with `start_from`, only values
 * >= it (ascending) or <= it (descending). A point with several values is
 * ordered by its smallest (ascending) or largest (descending); points
 * without one are left out. Ties are broken by id. order_values (may be
 * NULL) receives a malloc'd array of each record's value (free() it).
 * Errors: QV_EINVAL (bad key). */
QV_API qv_rc qv_scroll_ordered(qv_collection *c, const qv_filter *filter,
                               const char *key, bool descending,
                               const double *start_from, size_t limit,
                               bool with_vector, bool with_payload,
                               qv_records *out, double **order_values,
                               qv_err *err);

/* Deletes the points matching `filter`; *n_deleted (may be NULL) says how
 * many. */
QV_API qv_rc qv_delete_filtered(qv_collection *c, const qv_filter *filter,
                                size_t *n_deleted, qv_err *err);

/* ---- payload updates ------------------------------------------------------ */

/* Each applies to the points with the given ids (n > 0; ids that do not exist
 * are ignored) or, when ids is NULL, to the points matching `filter` (NULL =
 * every point). Each point is rewritten atomically and durably; vectors are
 * kept. Errors: QV_EINVAL (payload not a JSON object, bad key). */

/* Merges the top-level keys of `payload` into each point's payload (a key
 * whose value is null is removed). With `key` (a path like "a.b") the merge
 * happens inside that nested object, which is created if missing. */
QV_API qv_rc qv_payload_set(qv_collection *c, const qv_point_id *ids, size_t n,
                            const qv_filter *filter, const char *payload,
                            const char *key, qv_err *err);
/* Replaces each point's whole payload with `payload`. */
QV_API qv_rc qv_payload_overwrite(qv_collection *c, const qv_point_id *ids,
                                  size_t n, const qv_filter *filter,
                                  const char *payload, qv_err *err);
/* Removes the listed keys (paths like "a.b" allowed). */
QV_API qv_rc qv_payload_delete_keys(qv_collection *c, const qv_point_id *ids,
                                    size_t n, const qv_filter *filter,
                                    const char *const *keys, size_t n_keys,
                                    qv_err *err);
/* Sets each payload to {}. */
QV_API qv_rc qv_payload_clear(qv_collection *c, const qv_point_id *ids,
                              size_t n, const qv_filter *filter, qv_err *err);

/* ---- payload indexes ------------------------------------------------------ */

typedef enum qv_index_type {
  QV_INDEX_KEYWORD = 0, /* strings: match value / any */
  QV_INDEX_INTEGER,     /* numbers: match value / any on integers, range */
  QV_INDEX_FLOAT,       /* numbers: range */
  QV_INDEX_BOOL,        /* booleans: match value */
  QV_INDEX_DATETIME,    /* RFC 3339 strings: range */
  QV_INDEX_UUID,        /* UUID strings: match value / any */
} qv_index_type;

/* Indexes payload field `field` (a key path like "a.b" or "tags[]") so that
 * filters on it find their candidates without a scan. An index never
 * changes results, only speed; filters work without one. Creating an
 * existing index with the same type is a no-op; with another type it is
 * replaced. Errors: QV_EINVAL (bad path), QV_EIO. */
QV_API qv_rc qv_payload_index_create(qv_collection *c, const char *field,
                                     qv_index_type type, qv_err *err);
/* Errors: QV_ENOTFOUND (no index on that field), QV_EIO. */
QV_API qv_rc qv_payload_index_drop(qv_collection *c, const char *field,
                                   qv_err *err);

typedef struct qv_payload_index_info {
  char field[256];
  qv_index_type type;
  uint64_t points; /* live points with at least one value indexed */
} qv_payload_index_info;

/* Lists the collection's payload indexes (*out is malloc'd; free() it). */
QV_API qv_rc qv_payload_index_list(qv_collection *c, qv_payload_index_info **out,
                                   size_t *n, qv_err *err);
/* "keyword", "integer", "float", "bool", "datetime", "uuid". */
QV_API const char *qv_index_type_name(qv_index_type t);
QV_API qv_rc qv_index_type_parse(const char *name, qv_index_type *out, qv_err *err);

/* ---- search ------------------------------------------------------------- */

typedef struct qv_hit {
  qv_point_id id;
  float score; /* Qdrant's convention, see the top of this file */
} qv_hit;

typedef struct qv_search_params {
  uint32_t k;            /* results wanted, >= 1 (default 10) */
  uint32_t offset;       /* best results skipped first (default 0) */
  uint32_t ef;           /* HNSW beam; 0 = max(k + offset, 64) */
  bool exact;            /* brute force over every point */
  bool has_score_threshold;
  float score_threshold; /* Cosine/Dot: keep score > t; Euclid/Manhattan:
                            keep distance < t */
  /* An optional allow-set: when allow_ids is non-NULL, only points with one
   * of these n_allow ids may be returned (n_allow 0: none). The search still
   * returns k results whenever at least k allowed points exist. */
  const qv_point_id *allow_ids;
  size_t n_allow;
  /* An optional payload filter, combined with allow_ids by AND. The same
   * promise holds: k results whenever k points match. Borrowed. */
  const qv_filter *filter;
  /* Which vector to search: NULL or "" = the unnamed one, else a named
   * vector; `dim` of the query must be that vector's. */
  const char *vector_name;
  /* Quantized search (Qdrant's params.quantization); ignored where the
   * space has no codes. */
  bool quant_ignore;        /* search the full vectors, not the codes */
  int quant_rescore;        /* 0 = default (on), 1 = on, -1 = off: zeroed
                             * params rescore */
  float quant_oversampling; /* shortlist of ceil(x * k) candidates; 0 = 1 */
  uint32_t nprobe;          /* IVF lists probed; 0 = max(8, nlist / 16) */
} qv_search_params;

QV_API void qv_search_params_init(qv_search_params *p);

/* Finds the nearest points to `query` (`dim` floats, which must equal the
 * collection's dimension). `hits` must hold
 * params->k entries; *n_hits receives how many were found (fewer than k only
 * when fewer points qualify). Errors: QV_EDIM, QV_EINVAL (NaN in the query,
 * k == 0). */
QV_API qv_rc qv_search(qv_collection *c, const float *query, size_t dim,
                       const qv_search_params *params, qv_hit *hits,
                       size_t *n_hits, qv_err *err);

/* Runs `n` searches (queries are n * dim floats, row after row; `dim` must
 * equal the collection's) with the same params. hits holds n * params->k entries, query i's at i * k; n_hits[i] says
 * how many each found. */
QV_API qv_rc qv_search_batch(qv_collection *c, const float *queries, size_t n,
                             size_t dim, const qv_search_params *params, qv_hit *hits,
                             size_t *n_hits, qv_err *err);

/* ---- maintenance --------------------------------------------------------- */

/* Seals the mutable segments and builds every pending index now, returning
 * when the collection is fully indexed and durable (used by importers).
 * Errors: QV_EIO, QV_ENOMEM, QV_ECLOSED. */
QV_API qv_rc qv_collection_optimize(qv_collection *c, qv_err *err);

/* ---- snapshots ----------------------------------------------------------- */

/* Writes a consistent snapshot of the collection to the file `path` (a tar
 * archive of its configuration and, per shard, the MANIFEST, the sealed
 * segments and the log records not yet sealed). Writes may continue
 * meanwhile; the snapshot holds every write acknowledged before the call.
 * Errors: QV_EIO. */
QV_API qv_rc qv_snapshot_create(qv_collection *c, const char *path, qv_err *err);

/* Creates collection `name` from the snapshot file `path`, after checking
 * all of it (every checksum, by opening it where it was unpacked). With
 * `replace`, an existing collection of that name is dropped first; without,
 * it is QV_EEXIST. Errors: QV_ECORRUPT (the archive or its contents fail a
 * check; nothing is changed), QV_EINVAL (bad name), QV_EIO. */
QV_API qv_rc qv_snapshot_restore(qv_db *db, const char *name, const char *path,
                                 bool replace, qv_err *err);

#ifdef __cplusplus
}
#endif
#endif /* QUIVER_H */
