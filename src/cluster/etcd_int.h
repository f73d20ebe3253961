/* etcd_int.h: what etcd.c (requests, pool, JSON) shares with etcd_watch.c
 * (streams). Not for use outside src/cluster/etcd*.c. */
#ifndef QV_CLUSTER_ETCD_INT_H
#define QV_CLUSTER_ETCD_INT_H

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>

#include "cluster/etcd.h"

#define ETCD_POOL_MAX 8u

struct etcd_client {
  char *endpoints[ETCD_ENDPOINTS_MAX]; /* without a trailing '/' */
  unsigned n_endpoints;
  unsigned cur; /* preferred endpoint index; read and written atomically */
  uint32_t timeout_ms, connect_timeout_ms;
  struct curl_slist *headers; /* Content-Type, no Expect: 100-continue */
  pthread_mutex_t pool_mu;    /* guards pool */
  CURL *pool[ETCD_POOL_MAX];
  unsigned n_pool;
};

/* A growing response buffer, NUL-terminated, bounded by `cap`. */
typedef struct etcd_buf {
  char *data;
  size_t len, alloc, cap;
  bool is_over; /* more than cap bytes arrived */
} etcd_buf;

/* Base64 (RFC 4648, standard alphabet, padded). The encoder returns a
 * qv_malloc'd NUL-terminated string or NULL; the decoder returns a
 * qv_malloc'd buffer (with a NUL after the bytes) or NULL when `in` is not
 * base64 (*is_bad set) or on no memory (*is_bad clear). */
char *etcd_b64_encode(const void *in, size_t len);
char *etcd_b64_decode(const char *in, size_t len, size_t *out_len,
                      bool *is_bad);

/* An int64 field that etcd sends as a string (or a number); absent = 0. */
int64_t etcd_json_i64(const json_t *obj, const char *name);
/* An int64 as the JSON string etcd expects; NULL on no memory. */
json_t *etcd_json_i64_str(int64_t v);
/* header.revision of an answer. */
int64_t etcd_header_revision(const json_t *resp);
/* Sets obj[name] = base64(bytes); false on no memory. */
bool etcd_set_b64(json_t *obj, const char *name, const void *bytes, size_t len);
/* Appends the key-values of JSON array `arr` to `out`. */
qv_rc etcd_append_kvs(const json_t *arr, etcd_kvs *out, const char *endpoint,
                      qv_err *err);

/* Fills `kv` from etcd's {key, value, create_revision, ...} (base64 key and
 * value). On failure `kv` holds nothing. Errors: QV_ECORRUPT (not base64,
 * no key), QV_ENOMEM. */
qv_rc etcd_kv_parse(const json_t *j, etcd_kv *kv, const char *endpoint,
                    qv_err *err);
void etcd_kv_clear(etcd_kv *kv);

/* The range end that selects every key starting with `prefix` (the prefix
 * with its last byte plus one, dropping trailing 0xff bytes; "\0" when the
 * prefix is all 0xff, meaning "to the end"). Base64, qv_malloc'd. */
char *etcd_prefix_end_b64(const char *prefix);

/* A curl handle with the options every request shares, from the pool or
 * new; give it back with etcd_handle_put (which may close it). */
CURL *etcd_handle_get(etcd_client *c);
void etcd_handle_put(etcd_client *c, CURL *h);

/* The write callback that appends into an etcd_buf (passed as userdata). */
size_t etcd_buf_write(char *ptr, size_t size, size_t nmemb, void *userdata);
void etcd_buf_free(etcd_buf *b);

unsigned etcd_cur(const etcd_client *c);
void etcd_set_cur(etcd_client *c, unsigned i);

/* POSTs `body` to `path` ("/v3/kv/range") with failover (see etcd.h) and
 * parses the answer. `what` names the operation for messages ("put
 * /quiver/x"). On QV_OK *resp is the parsed JSON object (caller
 * json_decref's). Errors carry etcd's own message and the endpoint. */
qv_rc etcd_call(etcd_client *c, const char *path, json_t *body,
                const char *what, json_t **resp, qv_err *err);

#endif
