/* server_int.h: the structures and helpers shared by the files of
 * src/server/ and by nothing outside it (server.h is the public face).
 *
 * A request travels http.c (MHD glue, body accumulation) -> router.c (route
 * match, API-key check) -> one handler in routes_*.c, which reads the body
 * with the helpers of json_api.c and leaves exactly one response in
 * r->resp. Handlers talk to the engine only through include/quiver.h. */
#ifndef QV_SERVER_INT_H
#define QV_SERVER_INT_H

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "quiver.h"
#include "server/json_io.h"

/* Qdrant version reported by GET / (clients warn unless major/minor are
 * close to their own). */
#define SRV_QDRANT_VERSION "1.18.0"

/* ---- configuration (config.c) ---------------------------------------------- */

typedef struct srv_config {
  char *host;
  uint64_t port;
  char *data_dir;
  char *api_key;           /* "" = no authentication */
  char *read_only_api_key; /* "" = none */
  uint64_t max_body_bytes;
  uint64_t max_snapshot_upload_bytes;
  uint64_t threads;        /* 0 = automatic */
  uint64_t log_level;      /* a qv_log_level */
  bool allow_insecure_remote;
  char *config_file;       /* "" = none */
  /* cluster mode (routes_cluster.c) */
  bool cluster;
  char *etcd;              /* endpoints, "" = none */
  char *node_addr;         /* "" = host:port */
  uint64_t cluster_ttl_s;
  uint64_t cluster_move_delay_s; /* seconds a dead copy is waited for */
  uint64_t cluster_backlog_bytes; /* per shard, of the primary's write backlog */
  /* dashboard (routes_dashboard.c): directory holding dashboard/, "" = found
   * next to the executable */
  char *web_dir;
} srv_config;

/* Fills `cfg` from defaults < config file < environment < flags (argv[0] is
 * the command name). Returns -1 to go on serving, or an exit status: 0 after
 * --help, 2 after a usage error (reported on errf). */
int srvcfg_load(int argc, char **argv, srv_config *cfg, FILE *errf);
void srvcfg_free(srv_config *cfg);
void srvcfg_help(FILE *f);
/* The settings table as Markdown, for docs/api.md (`serve --help-markdown`). */
void srvcfg_markdown(FILE *f);
const char *srvcfg_level_name(uint64_t level);

/* ---- the server ------------------------------------------------------------ */

typedef struct srv {
  srv_config cfg;
  qv_db *db;
  char *snap_dir;          /* realpath of <data>/snapshots (routes_snapshots.c) */
  uint64_t op_seq;         /* UpdateResult.operation_id; atomic */
  int in_flight;           /* requests between headers and completion; atomic */
  pthread_mutex_t index_mu; /* serialises payload_index.json updates */
} srv;

/* ---- one request ------------------------------------------------------------- */

typedef struct srv_resp {
  unsigned status;
  char *body; /* freed with free_fn after sending */
  size_t len;
  void (*free_fn)(void *);
  const char *content_type;
  char allow[64];    /* Allow header of a 405, "" otherwise */
  /* A file response (snapshot download): MHD sends fd's first file_size
   * bytes and closes it. */
  bool is_file;
  int fd;
  uint64_t file_size;
  char disposition[320]; /* Content-Disposition, "" for none */
  bool no_store;         /* send Cache-Control: no-store (live pages) */
  /* A streamed body of unknown length (GET /cluster/events): MHD pulls it
   * with stream_read(stream_cls, ...) in chunked encoding and calls
   * stream_free(stream_cls) once done with it. http.c takes both over:
   * stream_free runs exactly once, also when the response is never queued.
   * A handler sets them last (srv_raw and srv_fail do not know them). */
  MHD_ContentReaderCallback stream_read;
  MHD_ContentReaderFreeCallback stream_free;
  void *stream_cls;
} srv_resp;

#define SRV_MAX_ARGS 3

typedef struct srv_req {
  srv *s;
  jsonio_vecs vecs;            /* vectors the body parser read itself */
  struct MHD_Connection *conn; /* NULL in unit tests */
  const char *method;
  char *path;                  /* without the query or a trailing '/' */
  char *args[SRV_MAX_ARGS];    /* the {...} captures of the route, in order */
  const char *body;            /* NUL-terminated */
  size_t body_len;
  double t0;                   /* monotonic seconds when the headers arrived */
  /* A streamed upload (routes with streams_body): the temporary file that
   * holds the `snapshot` field, whether the field was present, and why
   * the upload failed (NULL: it did not). http.c removes the file. */
  const char *upload_path;
  bool upload_seen;
  const char *upload_error;
  bool upload_io_error;        /* the error was the server's (disk), not the body's */
  int route;                   /* index in router_routes, -1 if none */
  srv_resp resp;
} srv_req;

typedef void (*srv_handler)(srv_req *r);

typedef struct srv_route {
  const char *method;
  const char *pattern; /* "/collections/{name}/points"; also the metrics label */
  srv_handler fn;
  bool is_write;       /* refused for the read-only key */
  bool is_public;      /* served without an API key (/, the probes) */
  bool streams_body;   /* http.c streams the body to a file (snapshot upload) */
} srv_route;

/* router.c */
extern const srv_route router_routes[];
extern const size_t router_n_routes;
/* Normalises `url` into r->path (qv_malloc'd, like r->args; the caller
 * frees them), finds the route and checks the API key. True: run it with
 * router_run; false: the response (401, 403, 404, 405) is set. */
bool router_route(srv_req *r, const char *url, const char *api_key_header,
                  const char *authorization_header);
bool router_streams_body(const srv_req *r);
void router_run(srv_req *r);

/* auth.c: SRV_AUTH_* from the request's api-key / Authorization header. */
enum { SRV_AUTH_NONE, SRV_AUTH_READ, SRV_AUTH_FULL };
int auth_level(const srv_config *cfg, const char *api_key_header,
               const char *authorization_header);

/* metrics.c */
void metrics_init(void);
void metrics_record(int route, const char *method, unsigned status, double seconds);
char *metrics_render(srv *s, size_t *len); /* qv_malloc'd */

/* ---- responses and request parsing (json_api.c) ------------------------------- */

double srv_now(void);
/* The success envelope {"result", "status": "ok", "time"}; steals result. */
void srv_ok(srv_req *r, json_t *result);
/* The error envelope {"status": {"error"}, "time"}; returns false so that
 * parsers can `return srv_fail(...)`. */
bool srv_fail(srv_req *r, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* 400 "Format error in JSON body: ..." */
bool srv_format_err(srv_req *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* 422 "Validation error in JSON body: [field: ...]" */
bool srv_invalid(srv_req *r, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* 400 "Wrong input: ..." */
bool srv_wrong_input(srv_req *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The one qv_rc -> HTTP table. */
bool srv_rc_fail(srv_req *r, qv_rc rc, const qv_err *err);
unsigned srv_rc_status(qv_rc rc);
/* A non-JSON body (copied). */
void srv_text(srv_req *r, unsigned status, const char *content_type, const char *text);
/* A body the caller built (taken over; freed with free_fn). */
void srv_raw(srv_req *r, unsigned status, const char *content_type, char *body,
             size_t len, void (*free_fn)(void *));
/* A file (taken over: closed after sending, or when replaced). */
void srv_file(srv_req *r, int fd, uint64_t size, const char *content_type,
              const char *filename);
/* The 202 answer of an operation run with wait=false:
 * {"status": "accepted", "time"} (no result). */
void srv_accepted(srv_req *r);

/* A query-string argument or NULL. */
const char *srv_query(srv_req *r, const char *key);
/* The request body as a JSON object; an empty body is {} when allow_empty.
 * NULL after setting an error response. Caller decrefs. */
json_t *srv_body(srv_req *r, bool allow_empty);
/* srv_body, with the number arrays at `vec_paths` (see jsonio_parse_vecs)
 * read into r->vecs; srv_vector_parse understands the placeholders. */
json_t *srv_body_vecs(srv_req *r, bool allow_empty, const char *const *vec_paths);
/* Vector positions of the request bodies (NULL-terminated lists). */
extern const char *const srv_paths_upsert[];
extern const char *const srv_paths_search[];
/* The UpdateResult reply of a write that is already durable. */
void srv_update_ok(srv_req *r);
bool srv_check_wait(srv_req *r);

/* One vector space of a collection, in the engine's order: the unnamed
 * vector (name "") first when the collection has one, then the named ones.
 * A point's vectors are laid out in one row of floats, space after space. */
typedef struct srv_space {
  const char *name;   /* "" or a name inside srv_coll.info.config */
  uint32_t dim;
  qv_distance distance;
  size_t offset;      /* of the space's floats in a row */
} srv_space;

/* A collection with its configuration, looked up from the first route
 * argument; on failure a 404 is set and false returned. */
typedef struct srv_coll {
  qv_collection *c;
  qv_collection_info info;
  const char *name;
  srv_space sp[QV_VECTORS_MAX + 1];
  uint32_t n_sp;
  size_t row_floats;  /* floats of a full row (every space) */
} srv_coll;
bool srv_coll_open(srv_req *r, srv_coll *out);
void srv_coll_close(srv_coll *sc);

/* "map", "sequence", "integer", ... for type errors in serde's words. */
const char *srv_type_name(const json_t *v);
/* An array of strings (not raw numbers). */
bool srv_is_string_list(const json_t *v);

/* Typed fields of a request object. A missing key or null leaves *out at
 * the default and is fine unless `required`; a wrong type sets a 400. */
bool srv_field_u64(srv_req *r, const json_t *obj, const char *key, bool required,
                   uint64_t *out);
bool srv_field_bool(srv_req *r, const json_t *obj, const char *key, bool *out);
bool srv_field_f64(srv_req *r, const json_t *obj, const char *key, bool *present,
                   double *out);
bool srv_field_str(srv_req *r, const json_t *obj, const char *key, bool required,
                   const char **out);
/* A present, non-null field that must be an object / array (else 400). */
json_t *srv_field_obj(srv_req *r, const json_t *obj, const char *key, bool *ok);
json_t *srv_field_arr(srv_req *r, const json_t *obj, const char *key, bool *ok);

/* Point ids: an unsigned integer (up to 2^64-1) or a UUID string. */
bool srv_id_parse(srv_req *r, const json_t *v, const char *what, qv_point_id *out);
/* A point id from a URL path segment (digits or a UUID); false: answered 400. */
bool srv_path_id(srv_req *r, const char *text, qv_point_id *out);
/* An array of ids, qv_malloc'd into *out (n may be 0). */
bool srv_ids_parse(srv_req *r, const json_t *arr, const char *what,
                   qv_point_id **out, size_t *n);
json_t *srv_id_json(const qv_point_id *id);
void srv_id_text(const qv_point_id *id, char buf[40]);

/* ---- vectors (json_vectors.c) ---- */

/* The index of space `name` ("" = unnamed) or -1. */
int srv_space_find(const srv_coll *sc, const char *name);
/* The same, or 400 "Wrong input: Not existing vector name error: name". */
bool srv_space_get(srv_req *r, const srv_coll *sc, const char *name, int *out);
/* A dense vector of exactly `dim` floats finite as float32 into
 * out[0..dim): a JSON array of numbers or a placeholder of r->vecs. */
bool srv_vector_parse(srv_req *r, const json_t *v, const char *what,
                      uint32_t dim, float *out);
/* Whether `v` is a dense vector (an array not holding arrays, or a
 * placeholder) rather than a point id or an object. */
bool srv_is_vector(srv_req *r, const json_t *v);
/* A point's vectors (Qdrant's VectorStruct): an array is the unnamed
 * vector, {"name": [...], ...} any subset of the spaces. Each given space
 * goes to row + sp[s].offset and sets bit s of *mask. */
bool srv_point_vectors(srv_req *r, const srv_coll *sc, const json_t *v, const char *what,
                       float *row, uint32_t *mask);
/* Points `p` at the vectors of `row` selected by `mask`; nv holds n_sp
 * entries of scratch for the named ones. */
void srv_point_set_vectors(const srv_coll *sc, qv_point *p, const float *row, uint32_t mask,
                           qv_named_vector *nv);
/* Copies the vectors of a stored record into `row`, setting *mask. */
void srv_record_to_row(const srv_coll *sc, const qv_record *rec, float *row, uint32_t *mask);

/* The `filter` key of `obj` (absent or null: *out = NULL). */
bool srv_filter_parse(srv_req *r, const json_t *obj, const char *key, qv_filter **out);

/* with_payload: true / false / ["k"] / {"include": [...]} / {"exclude": [...]}. */
typedef struct srv_sel {
  enum { SEL_NONE, SEL_ALL, SEL_INCLUDE, SEL_EXCLUDE } mode;
  const json_t *keys; /* borrowed from the request body */
} srv_sel;
bool srv_sel_parse(srv_req *r, const json_t *obj, bool dflt, srv_sel *out);
/* with_vector (or with_vectors): true / false / ["name", ...]. */
typedef struct srv_vsel {
  bool any;           /* fetch vectors at all */
  const json_t *names; /* the list (borrowed from the body), NULL = every vector */
} srv_vsel;
bool srv_with_vector(srv_req *r, const json_t *obj, bool dflt, srv_vsel *out);
/* The payload to return for `text` under `sel` (NULL: leave the key out). */
json_t *srv_payload_json(const srv_sel *sel, const char *text, size_t len);
/* The `vector` of a point under `vs`: a plain array when what is
 * selected is just the unnamed vector, else {"name": [...]} (Qdrant's
 * rule); NULL to leave the key out. */
json_t *srv_vectors_json(const srv_coll *sc, const qv_record *rec, const srv_vsel *vs);
/* A Record {id, payload?, vector?}. */
json_t *srv_record_json(const srv_coll *sc, const qv_record *rec, const srv_sel *sel,
                        const srv_vsel *vs);
/* ScoredPoint[] for hits, fetching payloads/vectors when asked. */
json_t *srv_hits_json(srv_req *r, srv_coll *sc, const qv_hit *hits, size_t n,
                      const srv_sel *sel, const srv_vsel *vs);

/* ---- storage, quantization, IVF and search params (json_storage.c) ---- */

/* What one VectorParams (or the collection level) says about storage. */
typedef struct storage_spec {
  qv_storage_params sp;
  bool has_quant;          /* its own quantization_config was given */
  bool has_index;          /* its own quiver_index was given */
  uint32_t index_pq_ratio; /* quiver_index.compression (ivf_pq), 0 = none */
} storage_spec;

/* `datatype` names: float32, float16, uint8 (else 400 naming `what`). */
bool storage_datatype_parse(srv_req *r, const char *s, const char *what, qv_datatype *out);
/* A quantization_config at `what` ({"scalar"|"binary"|"product": {...}});
 * absent or null leaves *out. Unknown keys and wrong types are 400s
 * naming the full path. */
bool storage_quant_parse(srv_req *r, const json_t *q, const char *what, storage_spec *out);
/* Quiver's quiver_index {type: hnsw|ivf_flat|ivf_pq, nlist?, compression?}. */
bool storage_index_parse(srv_req *r, const json_t *v, const char *what, storage_spec *out);
/* datatype, on_disk, quantization_config and quiver_index of one
 * VectorParams `vp` (zeroes *out first). */
bool storage_vector_parse(srv_req *r, const json_t *vp, const char *what, storage_spec *out);
/* Gives `space` the collection level's quantization / index where it has
 * none of its own (Qdrant's rule), then checks the combination. */
bool storage_resolve(srv_req *r, storage_spec *space, const storage_spec *coll,
                     const char *what);
/* {"scalar": {...}} etc., or NULL for no quantization. */
json_t *storage_quant_json(const qv_storage_params *sp);
bool storage_quant_equal(const qv_storage_params *a, const qv_storage_params *b);
/* Adds datatype / on_disk / quiver_index to VectorParams `vp` when not the
 * defaults, and quantization_config when it differs from `coll` (NULL:
 * whenever set). */
void storage_vector_json(json_t *vp, const qv_storage_params *sp, const qv_storage_params *coll);
/* A search request's `params` (hnsw_ef, exact, quantization {ignore,
 * rescore, oversampling}, indexed_only, acorn, nprobe) into *p; absent or
 * null leaves *p. The one parser every search, query and recommend uses. */
bool search_params_parse(srv_req *r, const json_t *params, qv_search_params *p);

/* ---- handlers (routes_*.c) ------------------------------------------------------ */

void h_root(srv_req *r);
void h_healthz(srv_req *r);
void h_metrics(srv_req *r);
void h_cluster(srv_req *r);
void h_aliases(srv_req *r);

void h_coll_list(srv_req *r);
void h_coll_get(srv_req *r);
void h_coll_create(srv_req *r);
void h_coll_delete(srv_req *r);
void h_coll_patch(srv_req *r);
void h_coll_exists(srv_req *r);
void h_coll_aliases(srv_req *r);
void h_index_create(srv_req *r);
void h_index_delete(srv_req *r);

void h_upsert(srv_req *r);
void h_retrieve(srv_req *r);
void h_point_get(srv_req *r);
void h_delete(srv_req *r);
void h_payload_set(srv_req *r);
void h_payload_overwrite(srv_req *r);
void h_payload_delete(srv_req *r);
void h_payload_clear(srv_req *r);
void h_vectors_update(srv_req *r);
void h_vectors_delete(srv_req *r);
void h_batch(srv_req *r);

void h_scroll(srv_req *r);
void h_count(srv_req *r);
void h_search(srv_req *r);
void h_search_batch(srv_req *r);
void h_recommend(srv_req *r);
void h_recommend_batch(srv_req *r);
void h_query(srv_req *r);
void h_query_batch(srv_req *r);

/* routes_points.c: the write operations, shared by their endpoints and by
 * POST .../points/batch. Each applies `body` durably or sets an error. */
bool op_upsert(srv_req *r, srv_coll *sc, const json_t *body);
bool op_delete(srv_req *r, srv_coll *sc, const json_t *body);
bool op_payload(srv_req *r, srv_coll *sc, const json_t *body, int kind);
bool op_vectors(srv_req *r, srv_coll *sc, const json_t *body);
bool op_delete_vectors(srv_req *r, srv_coll *sc, const json_t *body);
enum { PAYLOAD_SET, PAYLOAD_OVERWRITE, PAYLOAD_DELETE, PAYLOAD_CLEAR };

/* routes_search.c: the search machinery shared with the Query API. */
typedef struct search_spec {
  int space;            /* the vector space searched (index in srv_coll.sp) */
  float *vec;           /* sp[space].dim floats, qv_malloc'd */
  qv_filter *filter;
  qv_search_params p;   /* k = limit, offset, ef, exact, threshold, vector_name */
  srv_sel sel;
  srv_vsel vsel;
  qv_point_id *exclude; /* ids never returned (query by id, recommend) */
  size_t n_exclude;
} search_spec;
void search_spec_free(search_spec *s);
/* limit (alias top; default_limit 0 = required), offset, score_threshold,
 * params (search_params_parse), filter, with_payload, with_vector of
 * `obj`. */
bool search_spec_parse(srv_req *r, const json_t *obj, uint32_t default_limit, search_spec *s);
/* Chooses the space to search (`using`; NULL or "" = unnamed) and
 * allocates s->vec for it. */
bool search_spec_space(srv_req *r, srv_coll *sc, const char *name, search_spec *s);
/* Runs the search; *hits is qv_malloc'd (may be NULL when n == 0). */
bool search_run(srv_req *r, srv_coll *sc, const search_spec *s, qv_hit **hits, size_t *n);
/* Recommend's average_vector query from positive/negative examples (ids or
 * vectors) into s->vec (space chosen); the example ids are appended to
 * s->exclude. */
bool recommend_vector(srv_req *r, srv_coll *sc, const json_t *pos, const json_t *neg,
                      search_spec *s);
/* Fetches the stored vector of space `space` of point `id` into out (404
 * when the point is absent, 400 when it has no such vector). */
bool point_vector(srv_req *r, srv_coll *sc, const qv_point_id *id, int space, float *out);

/* routes_snapshots.c */
void h_snap_list(srv_req *r);
void h_snap_create(srv_req *r);
void h_snap_recover(srv_req *r);
void h_snap_upload(srv_req *r);
void h_snap_download(srv_req *r);
void h_snap_delete(srv_req *r);
/* Creates <data>/snapshots, sets s->snap_dir and removes the leftovers of
 * interrupted uploads and creates. False after printing why. */
bool snapshots_init(srv *s);
/* A fresh temporary file for an upload in the snapshots directory:
 * returns its fd and sets *path (qv_malloc'd), or -1. */
int snapshots_upload_file(srv *s, char **path);

/* Cluster mode (issue 5, docs/cluster.md): routes_cluster.c (boot, routing,
 * internal shard endpoints), cluster_state.c (h_cluster_state,
 * h_coll_cluster, h_cluster_node_op), cluster_xfer.c and cluster_net.c
 * (cluster_int.h). serve() calls
 * cluster_boot once the database is open and the port is bound (-1 = go
 * on, else an exit status) and cluster_shutdown (safe without a cluster)
 * after the last request, before closing the database; cluster_route is
 * router_run's hook: in cluster mode it answers the requests on distributed
 * collections itself (true) and leaves the rest to the normal handlers. */
int cluster_boot(const srv_config *cfg, FILE *errf);
void cluster_shutdown(void);
bool cluster_route(srv_req *r);
void h_cluster_state(srv_req *r);
void h_coll_cluster(srv_req *r);
void h_shard_internal(srv_req *r);
void h_cluster_node_op(srv_req *r);

/* routes_dashboard.c: the static files of the cluster dashboard
 * (GET /dashboard, GET /dashboard/{file}; public, no API key). */
void h_dashboard(srv_req *r);

/* cluster_events.c: GET /cluster/events, the dashboard's Server-Sent Events
 * stream (state documents, node events, heartbeats; docs/cluster.md,
 * section 8). The connections are parked with MHD_suspend_connection while
 * there is nothing to send, so the daemon must be started with
 * MHD_ALLOW_SUSPEND_RESUME. clev_stop (http.c, after MHD_quiesce_daemon and
 * before waiting for requests in flight) ends every stream, refuses new ones
 * and stops the stream thread; no connection is left suspended afterwards.
 * clev_key_in_query: whether `url` may carry the API key as the query
 * argument `api-key` (a browser's EventSource cannot send headers). */
void h_cluster_events(srv_req *r);
void clev_stop(void);
bool clev_key_in_query(const char *url);

/* routes_search.c: run one request body through `fn` (search, query, ...),
 * or each of a batch body's "searches", and answer with the result(s).
 * `fn` answers the request itself and returns NULL on error. */
typedef json_t *(*srv_one_fn)(srv_req *r, srv_coll *sc, const json_t *req);
void srv_run_one(srv_req *r, bool empty_ok, srv_one_fn fn);
void srv_run_batch(srv_req *r, srv_one_fn fn);

/* routes_collections.c: payload_schema for GET /collections/{c}. */
json_t *index_schema_json(srv_req *r, srv_coll *sc);

#endif
