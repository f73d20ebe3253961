/* etcd_codec.c: the etcd gateway's encodings — base64 for keys and values,
 * int64 fields as JSON strings, key-value records and prefix range ends
 * (etcd_int.h declares these; CLUSTER.md a.2 has the observed rules).
 *
 * Owns the mapping between etcd's JSON and our structs. Does no I/O.
 * Invariant: nothing from the wire is trusted — bad base64 or a record
 * without a key is reported (QV_ECORRUPT), never half-filled. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "cluster/etcd_int.h"

/* ---- base64 -------------------------------------------------------------- */

static const char B64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *etcd_b64_encode(const void *in, size_t len) {
  const unsigned char *p = in;
  char *out = qv_malloc(4 * ((len + 2) / 3) + 1), *o = out;
  if (out == NULL) return NULL;
  size_t i = 0;
  for (; i + 3 <= len; i += 3) {
    uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
    *o++ = B64[v >> 18];
    *o++ = B64[(v >> 12) & 63];
    *o++ = B64[(v >> 6) & 63];
    *o++ = B64[v & 63];
  }
  if (i < len) {
    uint32_t v =
        (uint32_t)p[i] << 16 | (i + 1 < len ? (uint32_t)p[i + 1] << 8 : 0);
    *o++ = B64[v >> 18];
    *o++ = B64[(v >> 12) & 63];
    *o++ = i + 1 < len ? B64[(v >> 6) & 63] : '=';
    *o++ = '=';
  }
  *o = '\0';
  return out;
}

static int b64_val(unsigned char ch) {
  if (ch >= 'A' && ch <= 'Z') return ch - 'A';
  if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
  if (ch >= '0' && ch <= '9') return ch - '0' + 52;
  if (ch == '+') return 62;
  if (ch == '/') return 63;
  return -1;
}

char *etcd_b64_decode(const char *in, size_t len, size_t *out_len,
                      bool *is_bad) {
  *is_bad = false;
  if (len % 4 != 0) {
    *is_bad = true;
    return NULL;
  }
  size_t pad = 0;
  if (len > 0 && in[len - 1] == '=') pad++;
  if (len > 1 && in[len - 2] == '=') pad++;
  unsigned char *out = qv_malloc(len / 4 * 3 + 1);
  if (out == NULL) return NULL;
  size_t n = 0;
  for (size_t i = 0; i < len; i += 4) {
    int v[4];
    for (int k = 0; k < 4; k++) {
      bool is_pad_pos = i + (size_t)k >= len - pad;
      v[k] = is_pad_pos ? (in[i + k] == '=' ? 0 : -1)
                        : b64_val((unsigned char)in[i + k]);
      if (v[k] < 0) {
        qv_free(out);
        *is_bad = true;
        return NULL;
      }
    }
    uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 |
                 (uint32_t)v[2] << 6 | (uint32_t)v[3];
    out[n++] = (unsigned char)(w >> 16);
    out[n++] = (unsigned char)(w >> 8);
    out[n++] = (unsigned char)w;
  }
  n -= pad;
  out[n] = '\0';
  *out_len = n;
  return (char *)out;
}

/* ---- JSON helpers -------------------------------------------------------- */

int64_t etcd_json_i64(const json_t *obj, const char *name) {
  json_t *v = json_object_get(obj, name);
  if (json_is_integer(v)) return (int64_t)json_integer_value(v);
  if (json_is_string(v))
    return (int64_t)strtoll(json_string_value(v), NULL, 10);
  return 0;
}

int64_t etcd_header_revision(const json_t *resp) {
  return etcd_json_i64(json_object_get(resp, "header"), "revision");
}

json_t *etcd_json_i64_str(int64_t v) {
  char buf[24];
  snprintf(buf, sizeof buf, "%lld", (long long)v);
  return json_string(buf);
}

/* Sets obj[name] = base64(bytes); false on no memory. */
bool etcd_set_b64(json_t *obj, const char *name, const void *bytes,
                  size_t len) {
  char *b = etcd_b64_encode(bytes, len);
  if (b == NULL) return false;
  int rc = json_object_set_new(obj, name, json_string(b));
  qv_free(b);
  return rc == 0;
}

char *etcd_prefix_end_b64(const char *prefix) {
  size_t n = strlen(prefix);
  unsigned char *end = qv_malloc(n + 1);
  if (end == NULL) return NULL;
  memcpy(end, prefix, n);
  while (n > 0 && end[n - 1] == 0xff) n--;
  char *b;
  if (n == 0) {
    b = etcd_b64_encode("", 1); /* a single zero byte: to the end */
  } else {
    end[n - 1]++;
    b = etcd_b64_encode(end, n);
  }
  qv_free(end);
  return b;
}

void etcd_kv_clear(etcd_kv *kv) {
  qv_free(kv->key);
  qv_free(kv->value);
  memset(kv, 0, sizeof *kv);
}

qv_rc etcd_kv_parse(const json_t *j, etcd_kv *kv, const char *endpoint,
                    qv_err *err) {
  memset(kv, 0, sizeof *kv);
  const char *k = json_string_value(json_object_get(j, "key"));
  const char *v = json_string_value(json_object_get(j, "value"));
  if (k == NULL)
    return QV_CORRUPT(err, "etcd %s: a key-value without a key", endpoint);
  bool is_bad;
  kv->key = etcd_b64_decode(k, strlen(k), &kv->key_len, &is_bad);
  if (kv->key != NULL)
    kv->value =
        etcd_b64_decode(v ? v : "", v ? strlen(v) : 0, &kv->value_len, &is_bad);
  if (kv->key == NULL || kv->value == NULL) {
    etcd_kv_clear(kv);
    if (is_bad)
      return QV_CORRUPT(err, "etcd %s: key or value is not base64", endpoint);
    return qv_err_set(err, QV_ENOMEM, "etcd %s: no memory for a key-value",
                      endpoint);
  }
  kv->create_revision = etcd_json_i64(j, "create_revision");
  kv->mod_revision = etcd_json_i64(j, "mod_revision");
  kv->version = etcd_json_i64(j, "version");
  kv->lease = etcd_json_i64(j, "lease");
  return QV_OK;
}

void etcd_kvs_free(etcd_kvs *r) {
  if (r == NULL) return;
  for (size_t i = 0; i < r->n; i++) etcd_kv_clear(&r->kvs[i]);
  qv_free(r->kvs);
  memset(r, 0, sizeof *r);
}

/* Appends the kvs of a JSON array to `out`. */
qv_rc etcd_append_kvs(const json_t *arr, etcd_kvs *out, const char *endpoint,
                      qv_err *err) {
  size_t add = json_array_size(arr);
  if (add == 0) return QV_OK;
  etcd_kv *grown = qv_realloc(out->kvs, (out->n + add) * sizeof *grown);
  if (grown == NULL)
    return qv_err_set(err, QV_ENOMEM, "etcd: no memory for %zu keys", add);
  out->kvs = grown;
  for (size_t i = 0; i < add; i++) {
    qv_rc rc =
        etcd_kv_parse(json_array_get(arr, i), &out->kvs[out->n], endpoint, err);
    if (rc != QV_OK) return rc;
    out->n++;
  }
  return QV_OK;
}
