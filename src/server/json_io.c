/* json_io.c: the server's JSON boundary — parsing request bodies (after the
 * pre-pass of json_scan.c: u64 ids, vector arrays) and writing responses.
 *
 * Owns the raw-number convention and the serialiser. Does not know about
 * envelopes, ids or vectors (json_api.c). Invariant: the writer emits valid
 * JSON for every tree the parser or the handlers can build; a raw number's
 * text is produced only here or by the pre-pass, so it is always a valid
 * JSON number. */
#include "server/json_io.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"

#define RAW_MARK '\x01'

/* ---- sbuf ----------------------------------------------------------------- */

void sbuf_init(sbuf *b) { memset(b, 0, sizeof *b); }

void sbuf_free(sbuf *b) {
  qv_free(b->p);
  sbuf_init(b);
}

static bool sbuf_reserve(sbuf *b, size_t extra) {
  if (b->failed) return false;
  if (b->n + extra + 1 <= b->cap) return true;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->n + extra + 1) {
    if (cap > SIZE_MAX / 2) {
      b->failed = true;
      return false;
    }
    cap *= 2;
  }
  char *p = qv_realloc(b->p, cap);
  if (p == NULL) {
    b->failed = true;
    return false;
  }
  b->p = p;
  b->cap = cap;
  return true;
}

void sbuf_add(sbuf *b, const void *p, size_t n) {
  if (!sbuf_reserve(b, n)) return;
  memcpy(b->p + b->n, p, n);
  b->n += n;
  b->p[b->n] = 0;
}

void sbuf_adds(sbuf *b, const char *s) { sbuf_add(b, s, strlen(s)); }

void sbuf_addf(sbuf *b, const char *fmt, ...) {
  char small[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n < sizeof small) {
    sbuf_add(b, small, (size_t)n);
    return;
  }
  if (!sbuf_reserve(b, (size_t)n)) return;
  va_start(ap, fmt);
  vsnprintf(b->p + b->n, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->n += (size_t)n;
}

char *sbuf_take(sbuf *b, size_t *len) {
  if (!b->failed && b->p == NULL) sbuf_reserve(b, 0);
  if (b->failed) {
    sbuf_free(b);
    return NULL;
  }
  b->p[b->n] = 0;
  char *p = b->p;
  if (len) *len = b->n;
  sbuf_init(b);
  return p;
}

/* ---- parsing --------------------------------------------------------------- */

/* Parses `text` after the pre-pass; NULL with the message on failure. */
static json_t *parse(const char *text, size_t len, const char *const *vec_paths,
                     jsonio_vecs *vecs, char *msg, size_t cap) {
  char *copy;
  if (jsonio_scan(text, len, vec_paths, vecs, &copy, msg, cap) != 0) return NULL;
  json_error_t je;
  json_t *v = copy ? json_loads(copy, JSON_REJECT_DUPLICATES, &je)
                   : json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
  qv_free(copy);
  if (v == NULL) {
    size_t k = 0;
    while (k < len && strchr(" \t\n\r", text[k]) != NULL && text[k] != 0) k++;
    if (k == len)
      snprintf(msg, cap, "EOF while parsing a value at line 1 column 0");
    else
      snprintf(msg, cap, "%s at line %d column %d", je.text, je.line, je.column);
  }
  return v;
}

json_t *jsonio_parse(const char *text, size_t len, char *msg, size_t cap) {
  return parse(text, len, NULL, NULL, msg, cap);
}

json_t *jsonio_parse_vecs(const char *text, size_t len, const char *const *vec_paths,
                          jsonio_vecs *vecs, char *msg, size_t cap) {
  json_t *v = parse(text, len, vec_paths, vecs, msg, cap);
  if (v != NULL || vecs == NULL || vecs->n == 0) return v;
  /* The rewritten text moved columns (and the error may be in a vector):
   * parse the original the plain way for the message a client would get
   * without the fast path. */
  jsonio_vecs_free(vecs);
  return parse(text, len, NULL, NULL, msg, cap);
}

/* ---- raw numbers ----------------------------------------------------------- */

json_t *jsonio_raw(const char *text) {
  char buf[64];
  size_t n = strlen(text);
  if (n + 2 > sizeof buf) return NULL;
  buf[0] = RAW_MARK;
  memcpy(buf + 1, text, n + 1);
  return json_stringn_nocheck(buf, n + 1);
}

json_t *jsonio_raw_json(const char *text, size_t len) {
  char *buf = qv_malloc(len + 2);
  if (buf == NULL) return NULL;
  buf[0] = RAW_MARK;
  memcpy(buf + 1, text, len);
  buf[len + 1] = 0;
  json_t *v = json_stringn_nocheck(buf, len + 1);
  qv_free(buf);
  return v;
}

const char *jsonio_raw_text(const json_t *v) {
  if (!json_is_string(v)) return NULL;
  const char *s = json_string_value(v);
  return s[0] == RAW_MARK ? s + 1 : NULL;
}

/* Shortest %.Ng (N in lo..hi) that reads back as the same value. */
static void shortest(char *buf, size_t cap, double v, bool is_f32) {
  int lo = is_f32 ? 6 : 15, hi = is_f32 ? 9 : 17;
  for (int p = lo; p <= hi; p++) {
    snprintf(buf, cap, "%.*g", p, v);
    if (is_f32 ? strtof(buf, NULL) == (float)v : strtod(buf, NULL) == v) break;
  }
  /* A float must stay a float once written: "1" would read back as an
   * integer and change how filters treat it. */
  if (strpbrk(buf, ".eEn") == NULL) strncat(buf, ".0", cap - strlen(buf) - 1);
}

json_t *jsonio_f32(float f) {
  char buf[JSONIO_F32_MAX];
  if (!isfinite(f)) return json_null();
  jsonio_format_f32(f, buf);
  return jsonio_raw(buf);
}

json_t *jsonio_u64(uint64_t v) {
  if (v <= INT64_MAX) return json_integer((json_int_t)v);
  char buf[32];
  snprintf(buf, sizeof buf, "%" PRIu64, v);
  return jsonio_raw(buf);
}

bool jsonio_get_u64(const json_t *v, uint64_t *out) {
  if (json_is_integer(v)) {
    json_int_t i = json_integer_value(v);
    if (i < 0) return false;
    *out = (uint64_t)i;
    return true;
  }
  const char *raw = jsonio_raw_text(v);
  if (raw == NULL || strpbrk(raw, ".eE-") != NULL) return false;
  errno = 0;
  char *end;
  unsigned long long x = strtoull(raw, &end, 10);
  if (errno != 0 || *end != 0) return false;
  *out = x;
  return true;
}

bool jsonio_get_f64(const json_t *v, double *out) {
  if (json_is_number(v)) {
    *out = json_number_value(v);
    return true;
  }
  const char *raw = jsonio_raw_text(v);
  if (raw == NULL) return false;
  *out = strtod(raw, NULL);
  return true;
}

/* ---- writing ---------------------------------------------------------------- */

static void write_string(sbuf *b, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  sbuf_add(b, "\"", 1);
  size_t run = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    sbuf_add(b, s + run, i - run);
    run = i + 1;
    switch (c) {
    case '"': sbuf_add(b, "\\\"", 2); break;
    case '\\': sbuf_add(b, "\\\\", 2); break;
    case '\n': sbuf_add(b, "\\n", 2); break;
    case '\r': sbuf_add(b, "\\r", 2); break;
    case '\t': sbuf_add(b, "\\t", 2); break;
    case '\b': sbuf_add(b, "\\b", 2); break;
    case '\f': sbuf_add(b, "\\f", 2); break;
    default: {
      char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
      sbuf_add(b, e, 6);
    }
    }
  }
  sbuf_add(b, s + run, n - run);
  sbuf_add(b, "\"", 1);
}

void jsonio_write(sbuf *b, const json_t *v) {
  char num[48];
  switch (json_typeof(v)) {
  case JSON_OBJECT: {
    const char *key;
    json_t *val;
    bool first = true;
    sbuf_add(b, "{", 1);
    json_object_foreach((json_t *)v, key, val) {
      if (!first) sbuf_add(b, ",", 1);
      first = false;
      write_string(b, key, strlen(key));
      sbuf_add(b, ":", 1);
      jsonio_write(b, val);
    }
    sbuf_add(b, "}", 1);
    break;
  }
  case JSON_ARRAY: {
    sbuf_add(b, "[", 1);
    for (size_t i = 0; i < json_array_size(v); i++) {
      if (i) sbuf_add(b, ",", 1);
      jsonio_write(b, json_array_get(v, i));
    }
    sbuf_add(b, "]", 1);
    break;
  }
  case JSON_STRING: {
    const char *raw = jsonio_raw_text(v);
    if (raw)
      sbuf_adds(b, raw);
    else
      write_string(b, json_string_value(v), json_string_length(v));
    break;
  }
  case JSON_INTEGER:
    sbuf_addf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    break;
  case JSON_REAL: {
    double d = json_real_value(v);
    if (!isfinite(d)) { /* jansson cannot hold these, but stay valid */
      sbuf_adds(b, "null");
      break;
    }
    shortest(num, sizeof num, d, false);
    sbuf_adds(b, num);
    break;
  }
  case JSON_TRUE: sbuf_adds(b, "true"); break;
  case JSON_FALSE: sbuf_adds(b, "false"); break;
  default: sbuf_adds(b, "null"); break;
  }
}

char *jsonio_dumps(const json_t *v, size_t *len) {
  sbuf b;
  sbuf_init(&b);
  jsonio_write(&b, v);
  return sbuf_take(&b, len);
}
