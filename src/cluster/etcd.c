/* etcd.c: the request side of the etcd v3 JSON-gateway client — endpoints
 * and failover, a pool of keep-alive connections, error mapping, key-value
 * calls, transactions and leases (etcd.h has the contract; CLUSTER.md
 * section (a) the observed wire format).
 *
 * Owns every unary call. Does not own watch streams (etcd_watch.c) or the
 * encodings (etcd_codec.c).
 *
 * Wire rules worth knowing (each observed against etcd 3.4): keys and values
 * travel as padded standard base64; int64 fields come back as JSON strings
 * and are sent as strings (lease ids exceed 2^53, so they never pass
 * through a double); a field at its default value is omitted, so absent
 * means 0, false or empty; errors are {"error","message","code"} with a gRPC
 * code; the lease keepalive answer is wrapped in {"result": ...}.
 *
 * Global state: one pthread_once for curl_global_init (libcurl requires it
 * before the first handle; it is never undone because another part of the
 * program may still use libcurl). */
#include "cluster/etcd_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "base/log.h"

static pthread_once_t g_curl_once = PTHREAD_ONCE_INIT;
static CURLcode g_curl_rc;

static void curl_init_once(void) {
  g_curl_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

void etcd_opts_init(etcd_opts *o) {
  memset(o, 0, sizeof *o);
  o->timeout_ms = ETCD_TIMEOUT_MS_DEFAULT;
  o->connect_timeout_ms = ETCD_CONNECT_TIMEOUT_MS_DEFAULT;
}

/* ---- client, pool and transport ------------------------------------------ */

unsigned etcd_cur(const etcd_client *c) {
  return __atomic_load_n(&c->cur, __ATOMIC_RELAXED);
}
void etcd_set_cur(etcd_client *c, unsigned i) {
  __atomic_store_n(&c->cur, i, __ATOMIC_RELAXED);
}

const char *etcd_client_endpoint(const etcd_client *c) {
  return c->endpoints[etcd_cur(c)];
}

static qv_rc add_endpoint(etcd_client *c, const char *s, size_t len,
                          qv_err *err) {
  while (len > 0 && (*s == ' ' || *s == '\t')) s++, len--;
  while (len > 0 &&
         (s[len - 1] == ' ' || s[len - 1] == '\t' || s[len - 1] == '/'))
    len--;
  size_t scheme = strncmp(s, "http://", 7) == 0    ? 7
                  : strncmp(s, "https://", 8) == 0 ? 8
                                                   : 0;
  if (len == 0) return QV_OK; /* "a,,b" and a trailing comma are forgiven */
  if (scheme == 0 || len <= scheme || len > 200)
    return qv_err_set(err, QV_EINVAL,
                      "etcd endpoint \"%.*s\": expected http://host:port",
                      (int)(len > 80 ? 80 : len), s);
  if (c->n_endpoints == ETCD_ENDPOINTS_MAX)
    return qv_err_set(err, QV_EINVAL, "etcd: more than %u endpoints",
                      ETCD_ENDPOINTS_MAX);
  if ((c->endpoints[c->n_endpoints] = qv_strndup(s, len)) == NULL)
    return qv_err_set(err, QV_ENOMEM, "etcd: no memory");
  c->n_endpoints++;
  return QV_OK;
}

qv_rc etcd_client_new(const etcd_opts *o, etcd_client **out, qv_err *err) {
  pthread_once(&g_curl_once, curl_init_once);
  if (g_curl_rc != CURLE_OK)
    return qv_err_set(err, QV_EIO, "etcd: libcurl failed to initialise: %s",
                      curl_easy_strerror(g_curl_rc));
  if (o == NULL || o->endpoints == NULL)
    return qv_err_set(err, QV_EINVAL, "etcd: no endpoints given");
  etcd_client *c = qv_calloc(1, sizeof *c);
  if (c == NULL) return qv_err_set(err, QV_ENOMEM, "etcd: no memory");
  pthread_mutex_init(&c->pool_mu, NULL);
  c->timeout_ms = o->timeout_ms ? o->timeout_ms : ETCD_TIMEOUT_MS_DEFAULT;
  c->connect_timeout_ms = o->connect_timeout_ms
                              ? o->connect_timeout_ms
                              : ETCD_CONNECT_TIMEOUT_MS_DEFAULT;
  qv_rc rc = QV_OK;
  for (const char *p = o->endpoints; rc == QV_OK;) {
    const char *comma = strchr(p, ',');
    size_t len = comma ? (size_t)(comma - p) : strlen(p);
    rc = add_endpoint(c, p, len, err);
    if (comma == NULL) break;
    p = comma + 1;
  }
  if (rc == QV_OK && c->n_endpoints == 0)
    rc = qv_err_set(err, QV_EINVAL, "etcd: no endpoints in \"%.100s\"",
                    o->endpoints);
  if (rc == QV_OK) {
    /* Without "Expect:" curl waits for a 100 Continue before sending bodies
     * over 1 MiB, which large values are. */
    struct curl_slist *h =
        curl_slist_append(NULL, "Content-Type: application/json");
    if (h) c->headers = curl_slist_append(h, "Expect:");
    if (c->headers == NULL) {
      curl_slist_free_all(h);
      rc = qv_err_set(err, QV_ENOMEM, "etcd: no memory");
    }
  }
  if (rc != QV_OK) {
    etcd_client_free(c);
    return rc;
  }
  *out = c;
  return QV_OK;
}

qv_rc etcd_client_dup(const etcd_client *c, uint32_t timeout_ms,
                      etcd_client **out, qv_err *err) {
  char list[ETCD_ENDPOINTS_MAX * 208];
  size_t off = 0;
  for (unsigned i = 0; i < c->n_endpoints; i++)
    off += (size_t)snprintf(list + off, sizeof list - off, "%s%s", i ? "," : "",
                            c->endpoints[i]);
  etcd_opts o = {.endpoints = list,
                 .timeout_ms = timeout_ms,
                 .connect_timeout_ms = c->connect_timeout_ms};
  qv_rc rc = etcd_client_new(&o, out, err);
  if (rc == QV_OK) etcd_set_cur(*out, etcd_cur(c));
  return rc;
}

void etcd_client_free(etcd_client *c) {
  if (c == NULL) return;
  for (unsigned i = 0; i < c->n_pool; i++) curl_easy_cleanup(c->pool[i]);
  for (unsigned i = 0; i < c->n_endpoints; i++) qv_free(c->endpoints[i]);
  curl_slist_free_all(c->headers);
  pthread_mutex_destroy(&c->pool_mu);
  qv_free(c);
}

CURL *etcd_handle_get(etcd_client *c) {
  CURL *h = NULL;
  pthread_mutex_lock(&c->pool_mu);
  if (c->n_pool > 0) h = c->pool[--c->n_pool];
  pthread_mutex_unlock(&c->pool_mu);
  if (h == NULL && (h = curl_easy_init()) == NULL) return NULL;
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L); /* timeouts without SIGALRM */
  curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(h, CURLOPT_NOPROXY, "*"); /* etcd is never behind a proxy */
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)c->timeout_ms);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)c->connect_timeout_ms);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, c->headers);
  curl_easy_setopt(h, CURLOPT_POST, 1L);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, etcd_buf_write);
  return h;
}

void etcd_handle_put(etcd_client *c, CURL *h) {
  if (h == NULL) return;
  pthread_mutex_lock(&c->pool_mu);
  if (c->n_pool < ETCD_POOL_MAX) {
    c->pool[c->n_pool++] = h;
    h = NULL;
  }
  pthread_mutex_unlock(&c->pool_mu);
  if (h) curl_easy_cleanup(h);
}

size_t etcd_buf_write(char *ptr, size_t size, size_t nmemb, void *userdata) {
  etcd_buf *b = userdata;
  size_t n = size * nmemb;
  if (b->len + n + 1 > b->cap) {
    b->is_over = true;
    return 0; /* aborts the transfer */
  }
  if (b->len + n + 1 > b->alloc) {
    size_t a = b->alloc ? b->alloc : 4096;
    while (a < b->len + n + 1) a *= 2;
    char *d = qv_realloc(b->data, a);
    if (d == NULL) return 0;
    b->data = d;
    b->alloc = a;
  }
  memcpy(b->data + b->len, ptr, n);
  b->len += n;
  b->data[b->len] = '\0';
  return n;
}

void etcd_buf_free(etcd_buf *b) {
  qv_free(b->data);
  memset(b, 0, sizeof *b);
}

/* gRPC status code (from etcd's error body) to ours. */
static qv_rc map_grpc(int64_t code) {
  switch (code) {
  case 3: return QV_EINVAL; /* INVALID_ARGUMENT: bad key, too large, dup key */
  case 5: return QV_ENOTFOUND; /* NOT_FOUND: lease not found */
  case 6: return QV_EEXIST;    /* ALREADY_EXISTS */
  case 9: return QV_EEXIST;    /* FAILED_PRECONDITION: lease already exists */
  case 11: return QV_EINVAL;   /* OUT_OF_RANGE: revision compacted or future */
  case 8: return QV_EBUSY;     /* RESOURCE_EXHAUSTED: database space exceeded */
  default: return QV_EIO;
  }
}

/* etcd's message from an error body: {"error","message","code"} or, in a
 * stream wrapper, {"error":{"grpc_code","http_code","message"}}. */
static const char *error_text(json_t *j, int64_t *code) {
  json_t *e = json_object_get(j, "error");
  if (json_is_object(e)) {
    *code = etcd_json_i64(e, "grpc_code");
    return json_string_value(json_object_get(e, "message"));
  }
  *code = etcd_json_i64(j, "code");
  const char *m = json_string_value(json_object_get(j, "message"));
  return m ? m : json_string_value(e);
}

/* One POST to one endpoint. */
static CURLcode attempt(etcd_client *c, CURL *h, unsigned e, const char *path,
                        const char *text, size_t len, etcd_buf *buf,
                        long *http) {
  char url[512];
  snprintf(url, sizeof url, "%s%s", c->endpoints[e], path);
  etcd_buf_free(buf);
  buf->cap = ETCD_RESPONSE_MAX;
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_POSTFIELDS, text);
  curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, buf);
  CURLcode rc = curl_easy_perform(h);
  *http = 0;
  if (rc == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, http);
  return rc;
}

qv_rc etcd_call(etcd_client *c, const char *path, json_t *body,
                const char *what, json_t **resp, qv_err *err) {
  char *text = json_dumps(body, JSON_COMPACT);
  CURL *h = etcd_handle_get(c);
  etcd_buf buf = {0};
  qv_rc rc = QV_EIO;
  char last[200] = "no endpoint tried";
  if (text == NULL || h == NULL) {
    rc = qv_err_set(err, QV_ENOMEM, "etcd %s: no memory", what);
    goto out;
  }
  size_t len = strlen(text);
  unsigned start = etcd_cur(c);
  for (unsigned i = 0; i < c->n_endpoints; i++) {
    unsigned e = (start + i) % c->n_endpoints;
    const char *ep = c->endpoints[e];
    long http = 0;
    CURLcode cc = attempt(c, h, e, path, text, len, &buf, &http);
    if (cc != CURLE_OK) {
      if (buf.is_over) {
        rc = qv_err_set(err, QV_EIO, "etcd %s: %s: answer larger than %u bytes",
                        what, ep, ETCD_RESPONSE_MAX);
        goto out;
      }
      snprintf(last, sizeof last, "%s: %s", ep,
               cc == CURLE_OPERATION_TIMEDOUT ? "timed out"
                                              : curl_easy_strerror(cc));
      qv_log(QV_LOG_DEBUG, "etcd", "%s: %s, trying the next endpoint", what,
             last);
      continue;
    }
    json_error_t je;
    json_t *j = buf.len
                    ? json_loadb(buf.data, buf.len, JSON_DISABLE_EOF_CHECK, &je)
                    : NULL;
    if (http >= 500) { /* no leader, no quorum: another member may do better */
      int64_t code = 0;
      const char *m = j ? error_text(j, &code) : NULL;
      snprintf(last, sizeof last, "%s: HTTP %ld: %.100s", ep, http,
               m ? m : "(no message)");
      json_decref(j);
      continue;
    }
    etcd_set_cur(c, e); /* it answered: start there next time */
    if (http != 200 || j == NULL || !json_is_object(j)) {
      int64_t code = 0;
      const char *m = j ? error_text(j, &code) : NULL;
      if (j == NULL || m == NULL)
        rc = qv_err_set(err, http == 200 ? QV_EIO : QV_EINVAL,
                        "etcd %s: %s: HTTP %ld, unexpected answer \"%.60s\"",
                        what, ep, http, buf.data ? buf.data : "");
      else
        rc =
            qv_err_set(err, map_grpc(code), "etcd %s: %s: %.120s", what, ep, m);
      json_decref(j);
      goto out;
    }
    json_t *result = json_object_get(j, "result"); /* stream wrapper */
    int64_t code = 0;
    const char *m = json_is_object(json_object_get(j, "error"))
                        ? error_text(j, &code)
                        : NULL;
    if (m != NULL) {
      rc = qv_err_set(err, map_grpc(code), "etcd %s: %s: %.120s", what, ep, m);
      json_decref(j);
      goto out;
    }
    if (json_is_object(result)) {
      json_incref(result);
      json_decref(j);
      j = result;
    }
    *resp = j;
    rc = QV_OK;
    goto out;
  }
  rc = qv_err_set(err, QV_EIO, "etcd %s: all %u endpoints failed, last %s",
                  what, c->n_endpoints, last);
out:
  free(text); /* json_dumps allocates with jansson's allocator */
  etcd_handle_put(c, h);
  etcd_buf_free(&buf);
  return rc;
}

/* ---- key-value ----------------------------------------------------------- */

/* Builds {"key":..., "range_end":...} for a key or a prefix. */
static json_t *key_body(const char *key, bool prefix) {
  json_t *b = json_object();
  if (b == NULL || !etcd_set_b64(b, "key", key, strlen(key))) goto fail;
  if (prefix) {
    char *end = etcd_prefix_end_b64(key);
    if (end == NULL ||
        json_object_set_new(b, "range_end", json_string(end)) != 0) {
      qv_free(end);
      goto fail;
    }
    qv_free(end);
  }
  return b;
fail:
  json_decref(b);
  return NULL;
}

static json_t *put_body(const char *key, const void *value, size_t len,
                        int64_t lease) {
  json_t *b = key_body(key, false);
  if (b == NULL) return NULL;
  if ((len > 0 && !etcd_set_b64(b, "value", value, len)) ||
      (lease != 0 &&
       json_object_set_new(b, "lease", etcd_json_i64_str(lease)) != 0)) {
    json_decref(b);
    return NULL;
  }
  return b;
}

qv_rc etcd_put(etcd_client *c, const char *key, const void *value, size_t len,
               int64_t lease, int64_t *revision, qv_err *err) {
  char what[128];
  snprintf(what, sizeof what, "put %.80s", key);
  json_t *b = put_body(key, value, len, lease), *r = NULL;
  if (b == NULL) return qv_err_set(err, QV_ENOMEM, "etcd %s: no memory", what);
  qv_rc rc = etcd_call(c, "/v3/kv/put", b, what, &r, err);
  json_decref(b);
  if (rc != QV_OK) return rc;
  if (revision) *revision = etcd_header_revision(r);
  json_decref(r);
  return QV_OK;
}

static qv_rc range(etcd_client *c, const char *key, bool prefix, etcd_kvs *out,
                   qv_err *err) {
  char what[128];
  snprintf(what, sizeof what, "range %.80s%s", key, prefix ? "*" : "");
  memset(out, 0, sizeof *out);
  json_t *b = key_body(key, prefix), *r = NULL;
  if (b == NULL) return qv_err_set(err, QV_ENOMEM, "etcd %s: no memory", what);
  qv_rc rc = etcd_call(c, "/v3/kv/range", b, what, &r, err);
  json_decref(b);
  if (rc != QV_OK) return rc;
  rc = etcd_append_kvs(json_object_get(r, "kvs"), out, etcd_client_endpoint(c),
                       err);
  out->revision = etcd_header_revision(r);
  json_decref(r);
  if (rc != QV_OK) etcd_kvs_free(out);
  return rc;
}

qv_rc etcd_get(etcd_client *c, const char *key, etcd_kvs *out, qv_err *err) {
  return range(c, key, false, out, err);
}

qv_rc etcd_range_prefix(etcd_client *c, const char *prefix, etcd_kvs *out,
                        qv_err *err) {
  return range(c, prefix, true, out, err);
}

qv_rc etcd_delete(etcd_client *c, const char *key, bool prefix,
                  int64_t *n_deleted, int64_t *revision, qv_err *err) {
  char what[128];
  snprintf(what, sizeof what, "delete %.80s%s", key, prefix ? "*" : "");
  json_t *b = key_body(key, prefix), *r = NULL;
  if (b == NULL) return qv_err_set(err, QV_ENOMEM, "etcd %s: no memory", what);
  qv_rc rc = etcd_call(c, "/v3/kv/deleterange", b, what, &r, err);
  json_decref(b);
  if (rc != QV_OK) return rc;
  if (n_deleted) *n_deleted = etcd_json_i64(r, "deleted");
  if (revision) *revision = etcd_header_revision(r);
  json_decref(r);
  return QV_OK;
}

qv_rc etcd_compact(etcd_client *c, int64_t revision, qv_err *err) {
  char what[64];
  snprintf(what, sizeof what, "compact at %lld", (long long)revision);
  json_t *b = json_object(), *r = NULL;
  if (b == NULL ||
      json_object_set_new(b, "revision", etcd_json_i64_str(revision)) != 0 ||
      json_object_set_new(b, "physical", json_true()) != 0) {
    json_decref(b);
    return qv_err_set(err, QV_ENOMEM, "etcd %s: no memory", what);
  }
  qv_rc rc = etcd_call(c, "/v3/kv/compaction", b, what, &r, err);
  json_decref(b);
  json_decref(r);
  return rc;
}

/* ---- transactions -------------------------------------------------------- */

static json_t *cmp_json(const etcd_cmp *cm) {
  static const char *const targets[] = {"CREATE", "MOD", "VERSION", "VALUE",
                                        "LEASE"};
  static const char *const fields[] = {"create_revision", "mod_revision",
                                       "version", "value", "lease"};
  static const char *const results[] = {"EQUAL", "NOT_EQUAL", "GREATER",
                                        "LESS"};
  if ((unsigned)cm->target > ETCD_CMP_LEASE ||
      (unsigned)cm->result > ETCD_LESS || cm->key == NULL)
    return NULL;
  json_t *j = key_body(cm->key, false);
  if (j == NULL) return NULL;
  bool ok =
      json_object_set_new(j, "target", json_string(targets[cm->target])) == 0 &&
      json_object_set_new(j, "result", json_string(results[cm->result])) == 0;
  if (ok && cm->target == ETCD_CMP_VALUE)
    ok = etcd_set_b64(j, "value", cm->value ? cm->value : "", cm->value_len);
  else if (ok)
    ok = json_object_set_new(j, fields[cm->target],
                             etcd_json_i64_str(cm->number)) == 0;
  if (!ok) {
    json_decref(j);
    return NULL;
  }
  return j;
}

static json_t *op_json(const etcd_op *op) {
  json_t *inner = NULL;
  const char *name = NULL;
  if (op->key == NULL) return NULL;
  switch (op->kind) {
  case ETCD_OP_PUT:
    inner = put_body(op->key, op->value, op->value_len, op->lease);
    name = "request_put";
    break;
  case ETCD_OP_GET:
    inner = key_body(op->key, op->prefix);
    name = "request_range";
    break;
  case ETCD_OP_DELETE:
    inner = key_body(op->key, op->prefix);
    name = "request_delete_range";
    break;
  }
  if (inner == NULL) return NULL;
  json_t *j = json_object();
  if (j == NULL || json_object_set_new(j, name, inner) != 0) {
    json_decref(j);
    return NULL;
  }
  return j;
}

static json_t *op_array(const etcd_op *ops, size_t n) {
  json_t *a = json_array();
  for (size_t i = 0; a != NULL && i < n; i++) {
    json_t *o = op_json(&ops[i]);
    if (o == NULL || json_array_append_new(a, o) != 0) {
      json_decref(a);
      return NULL;
    }
  }
  return a;
}

static json_t *txn_body(const etcd_txn *t) {
  json_t *b = json_object(), *cmps = json_array();
  json_t *succ = op_array(t->success, t->n_success);
  json_t *fail = op_array(t->failure, t->n_failure);
  bool ok = b && cmps && succ && fail;
  for (size_t i = 0; ok && i < t->n_cmp; i++) {
    json_t *cj = cmp_json(&t->cmp[i]);
    ok = cj != NULL && json_array_append_new(cmps, cj) == 0;
  }
  /* json_object_set takes its own reference, so the locals are released the
   * same way whether or not everything went in. */
  ok = ok && json_object_set(b, "compare", cmps) == 0 &&
       json_object_set(b, "success", succ) == 0 &&
       json_object_set(b, "failure", fail) == 0;
  json_decref(cmps);
  json_decref(succ);
  json_decref(fail);
  if (!ok) {
    json_decref(b);
    return NULL;
  }
  return b;
}

qv_rc etcd_txn_do(etcd_client *c, const etcd_txn *t, etcd_txn_result *out,
                  qv_err *err) {
  char what[128];
  snprintf(what, sizeof what, "txn on %.80s",
           t->n_cmp       ? t->cmp[0].key
           : t->n_success ? t->success[0].key
                          : "(nothing)");
  memset(out, 0, sizeof *out);
  json_t *b = txn_body(t), *r = NULL;
  if (b == NULL)
    return qv_err_set(err, QV_EINVAL,
                      "etcd %s: a compare or op without a key, or no memory",
                      what);
  qv_rc rc = etcd_call(c, "/v3/kv/txn", b, what, &r, err);
  json_decref(b);
  if (rc != QV_OK) return rc;
  out->succeeded = json_is_true(json_object_get(r, "succeeded"));
  out->revision = etcd_header_revision(r);
  out->kvs.revision = out->revision;
  json_t *resps = json_object_get(r, "responses"), *one;
  size_t i;
  json_array_foreach(resps, i, one) {
    json_t *rr = json_object_get(one, "response_range");
    if (rr == NULL) continue;
    rc = etcd_append_kvs(json_object_get(rr, "kvs"), &out->kvs,
                         etcd_client_endpoint(c), err);
    if (rc != QV_OK) break;
  }
  json_decref(r);
  if (rc != QV_OK) etcd_kvs_free(&out->kvs);
  return rc;
}

/* ---- leases -------------------------------------------------------------- */

static qv_rc lease_call(etcd_client *c, const char *path, const char *verb,
                        int64_t id, int64_t ttl, json_t **r, qv_err *err) {
  char what[64];
  snprintf(what, sizeof what, "lease %s %lld", verb, (long long)id);
  json_t *b = json_object();
  bool ok = b != NULL;
  if (ok && id != 0)
    ok = json_object_set_new(b, "ID", etcd_json_i64_str(id)) == 0;
  if (ok && ttl != 0)
    ok = json_object_set_new(b, "TTL", etcd_json_i64_str(ttl)) == 0;
  if (!ok) {
    json_decref(b);
    return qv_err_set(err, QV_ENOMEM, "etcd %s: no memory", what);
  }
  qv_rc rc = etcd_call(c, path, b, what, r, err);
  json_decref(b);
  return rc;
}

qv_rc etcd_lease_grant(etcd_client *c, int64_t ttl_s, int64_t *id,
                       int64_t *granted_ttl, qv_err *err) {
  if (ttl_s <= 0)
    return qv_err_set(err, QV_EINVAL, "etcd lease grant: TTL %lld s",
                      (long long)ttl_s);
  json_t *r = NULL;
  qv_rc rc = lease_call(c, "/v3/lease/grant", "grant", 0, ttl_s, &r, err);
  if (rc != QV_OK) return rc;
  const char *e = json_string_value(json_object_get(r, "error"));
  int64_t got = etcd_json_i64(r, "ID");
  if ((e != NULL && *e) || got == 0) {
    rc = qv_err_set(err, QV_EIO, "etcd lease grant: %s: %.120s",
                    etcd_client_endpoint(c),
                    e && *e ? e : "no lease id in the answer");
  } else {
    *id = got;
    if (granted_ttl) *granted_ttl = etcd_json_i64(r, "TTL");
  }
  json_decref(r);
  return rc;
}

qv_rc etcd_lease_keepalive(etcd_client *c, int64_t id, int64_t *ttl,
                           qv_err *err) {
  json_t *r = NULL;
  qv_rc rc = lease_call(c, "/v3/lease/keepalive", "keepalive", id, 0, &r, err);
  if (rc != QV_OK) return rc;
  int64_t t = etcd_json_i64(r, "TTL"); /* absent: the lease is gone */
  json_decref(r);
  if (t <= 0)
    return qv_err_set(err, QV_ENOTFOUND,
                      "etcd lease keepalive %lld: %s: lease expired or revoked",
                      (long long)id, etcd_client_endpoint(c));
  if (ttl) *ttl = t;
  return QV_OK;
}

qv_rc etcd_lease_revoke(etcd_client *c, int64_t id, qv_err *err) {
  json_t *r = NULL;
  qv_rc rc = lease_call(c, "/v3/lease/revoke", "revoke", id, 0, &r, err);
  json_decref(r);
  return rc;
}

qv_rc etcd_lease_ttl(etcd_client *c, int64_t id, int64_t *ttl, qv_err *err) {
  json_t *r = NULL;
  qv_rc rc =
      lease_call(c, "/v3/lease/timetolive", "timetolive", id, 0, &r, err);
  if (rc != QV_OK) return rc;
  *ttl = etcd_json_i64(r, "TTL"); /* -1 for a lease that is gone */
  json_decref(r);
  return QV_OK;
}
