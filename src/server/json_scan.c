/* json_scan.c: the one pass over a request body before jansson sees it.
 *
 * It does three things and copies the body only when one of them applies:
 *   1. refuses strings that start with U+0001 or U+0002 (the markers of raw
 *      numbers and vector placeholders, see json_io.h), so request text can
 *      never pose as either;
 *   2. rewrites bare integers above INT64_MAX as raw-number strings (jansson
 *      holds integers as int64, Qdrant ids go to 2^64-1);
 *   3. at the caller's vector paths ("points[].vector", "batch.vectors[]"),
 *      parses arrays of plain numbers itself, straight into floats, and puts
 *      a placeholder string in their place. Vectors are >95 % of the bytes
 *      of an upsert; jansson's generic number path (a json_t allocation and
 *      a strtod per component) was nearly all of its cost.
 *
 * Owns the decimal -> float32 conversion (jsonio_scan_f32: correctly
 * rounded, as strtof) and the path matcher. Does not validate JSON: jansson
 * still parses what is left, and when it fails, jsonio_parse_vecs parses
 * the original text again without vector paths so that error messages are
 * exactly those of the plain path.
 *
 * Invariant: an array is replaced only if it is, strictly by the JSON
 * grammar, `[` number (`,` number)* `]` with every number finite as a
 * float32; so the rewritten text is valid JSON exactly when the original
 * is, and anything else (empty arrays, nested arrays, strings, NaN, 1e999,
 * 1e39) is left for jansson and the handlers' usual error messages. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "server/json_io.h"

#define VEC_MARK '\x02'
#define SCAN_DEPTH 16   /* containers whose keys are tracked for matching */
#define PATH_SEGS 10    /* segments of one vector path */
#define MAX_PATHS 32

/* ---- decimal -> float32 -------------------------------------------------- */

static inline bool is_digit(char c) { return c >= '0' && c <= '9'; }

/* Powers of ten exact in a long double with a 64-bit significand: 5^27 <
 * 2^64, so every 10^k with k <= 27 is exact, and m * 10^k or m / 10^k with
 * an exact m < 2^64 is then rounded once (Clinger's fast path, widened). */
static const long double p10[28] = {
    1e0L,  1e1L,  1e2L,  1e3L,  1e4L,  1e5L,  1e6L,  1e7L,  1e8L,  1e9L,
    1e10L, 1e11L, 1e12L, 1e13L, 1e14L, 1e15L, 1e16L, 1e17L, 1e18L, 1e19L,
    1e20L, 1e21L, 1e22L, 1e23L, 1e24L, 1e25L, 1e26L, 1e27L};

static const double p10d[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* strtof on a NUL-terminated copy: the reference for the cases the fast
 * path leaves (long mantissas, large exponents, subnormals, midpoints). */
static bool slow_f32(const char *s, size_t n, float *out) {
  char small[64], *buf = n < sizeof small ? small : qv_malloc(n + 1);
  if (buf == NULL) return false;
  memcpy(buf, s, n);
  buf[n] = 0;
  float f = strtof(buf, NULL);
  if (buf != small) qv_free(buf);
  if (isinf(f) || isnan(f)) return false;
  *out = f;
  return true;
}

size_t jsonio_scan_f32(const char *s, size_t n, float *out) {
  size_t i = 0;
  bool neg = false, inexact = false;
  if (i < n && s[i] == '-') neg = true, i++;
  if (i >= n) return 0;
  uint64_t m = 0;
  int nd = 0;     /* significant digits kept in m (at most 19) */
  long e10 = 0;   /* value = m * 10^e10 (when !inexact) */
  if (s[i] == '0') {
    i++;
  } else if (s[i] >= '1' && s[i] <= '9') {
    for (; i < n && is_digit(s[i]); i++) {
      if (nd < 19) m = m * 10 + (uint64_t)(s[i] - '0'), nd++;
      else e10++, inexact |= s[i] != '0';
    }
  } else {
    return 0;
  }
  if (i < n && s[i] == '.') {
    size_t f0 = ++i;
    for (; i < n && is_digit(s[i]); i++) {
      if (nd < 19) {
        if (m != 0 || s[i] != '0') m = m * 10 + (uint64_t)(s[i] - '0'), nd++;
        e10--;
      } else {
        inexact |= s[i] != '0';
      }
    }
    if (i == f0) return 0;
  }
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    i++;
    bool eneg = false;
    if (i < n && (s[i] == '+' || s[i] == '-')) eneg = s[i] == '-', i++;
    size_t x0 = i;
    long x = 0;
    for (; i < n && is_digit(s[i]); i++)
      if (x < 100000) x = x * 10 + (s[i] - '0');
    if (i == x0) return 0;
    e10 += eneg ? -x : x;
  }
  if (m == 0) {
    *out = neg ? -0.0f : 0.0f;
    return i;
  }
  if (!inexact && m <= (1ull << 53) && e10 >= -22 && e10 <= 22) {
    /* Clinger's fast path in double: m and 10^|e10| are exact, so x is
     * rounded once. The second rounding, to float, drops the low 29 bits
     * of the significand; it is wrong only when they are exactly 1000...0
     * (x on a midpoint between two floats) — those go on below. */
    double x = e10 < 0 ? (double)m / p10d[-e10] : (double)m * p10d[e10];
    uint64_t u;
    memcpy(&u, &x, 8);
    float f = (float)x;
    if (x >= (double)FLT_MIN && !isinf(f) && (u & 0x1fffffffu) != 0x10000000u) {
      *out = neg ? -f : f;
      return i;
    }
  }
  if (!inexact && LDBL_MANT_DIG >= 64 && e10 >= -27 && e10 <= 27) {
    long double x = e10 < 0 ? (long double)m / p10[-e10] : (long double)m * p10[e10];
    float f = (float)x;
    if (x >= (long double)FLT_MIN && !isinf(f)) {
      /* x is the exactly rounded value; (float)x rounds it a second time,
       * which is wrong only when x sits exactly on a midpoint between two
       * floats (the decimal itself need not). Those go to strtof. */
      long double fl = f;
      bool mid = false;
      if (fl != x) {
        float g = nextafterf(f, x > fl ? INFINITY : -INFINITY);
        mid = (fl + (long double)g) / 2 == x;
      }
      if (!mid) {
        *out = neg ? -f : f;
        return i;
      }
    }
  }
  return slow_f32(s, i, out) ? i : 0;
}

/* ---- the vector table -------------------------------------------------------- */

void jsonio_vecs_free(jsonio_vecs *v) {
  qv_free(v->f);
  qv_free(v->off);
  qv_free(v->len);
  memset(v, 0, sizeof *v);
}

static bool vecs_reserve_floats(jsonio_vecs *v, size_t extra) {
  if (v->n_f + extra <= v->cap_f) return true;
  size_t cap = v->cap_f ? v->cap_f : 1024;
  while (cap < v->n_f + extra) cap *= 2;
  float *f = qv_realloc(v->f, cap * sizeof *f);
  if (f == NULL) return false;
  v->f = f;
  v->cap_f = cap;
  return true;
}

static bool vecs_push(jsonio_vecs *v, size_t off, size_t len) {
  if (v->n == v->cap) {
    size_t cap = v->cap ? v->cap * 2 : 64;
    size_t *o = qv_realloc(v->off, cap * sizeof *o);
    if (o == NULL) return false;
    v->off = o;
    uint32_t *l = qv_realloc(v->len, cap * sizeof *l);
    if (l == NULL) return false;
    v->len = l;
    v->cap = cap;
  }
  v->off[v->n] = off;
  v->len[v->n++] = (uint32_t)len;
  return true;
}

const float *jsonio_vec(const jsonio_vecs *v, const json_t *j, uint32_t *len) {
  if (v == NULL || !json_is_string(j)) return NULL;
  const char *s = json_string_value(j);
  if (s[0] != VEC_MARK) return NULL;
  char *end;
  unsigned long k = strtoul(s + 1, &end, 10);
  if (*end != 0 || k >= v->n) return NULL;
  *len = v->len[k];
  return v->f + v->off[k];
}

static inline bool is_ws(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

/* Parses the array at s[0] == '[' into the table. Returns the bytes it
 * spans, or 0 (and the table unchanged) when it is not a non-empty array
 * of numbers that are all finite as float32. */
static size_t scan_array(const char *s, size_t n, jsonio_vecs *v, bool *oom) {
  size_t i = 1, start = v->n_f;
  while (i < n && is_ws(s[i])) i++;
  if (i >= n || s[i] == ']') return 0;
  for (;;) {
    float f;
    size_t k = jsonio_scan_f32(s + i, n - i, &f);
    if (k == 0) goto fail;
    if (v->n_f == v->cap_f && !vecs_reserve_floats(v, 1)) {
      *oom = true;
      goto fail;
    }
    v->f[v->n_f++] = f;
    i += k;
    while (i < n && is_ws(s[i])) i++;
    if (i >= n) goto fail;
    if (s[i] == ']') break;
    if (s[i] != ',') goto fail;
    i++;
    while (i < n && is_ws(s[i])) i++;
  }
  if (v->n_f - start > UINT32_MAX) goto fail;
  if (!vecs_push(v, start, v->n_f - start)) {
    *oom = true;
    goto fail;
  }
  return i + 1;
fail:
  v->n_f = start;
  return 0;
}

/* ---- paths ------------------------------------------------------------------- */

typedef struct seg {
  const char *s; /* "[]" for an array element, "*" for any key */
  size_t n;
} seg;

typedef struct path {
  seg s[PATH_SEGS];
  int n;
} path;

/* "points[].vector.*" -> points / [] / vector / *. */
static bool path_compile(const char *p, path *out) {
  out->n = 0;
  while (*p) {
    size_t k = strcspn(p, ".[");
    if (k > 0) {
      if (out->n == PATH_SEGS) return false;
      out->s[out->n++] = (seg){p, k};
      p += k;
    }
    while (p[0] == '[' && p[1] == ']') {
      if (out->n == PATH_SEGS) return false;
      out->s[out->n++] = (seg){"[]", 2};
      p += 2;
    }
    if (*p == '.') p++;
    else if (*p) return false;
  }
  return true;
}

typedef struct frame {
  bool is_obj;
  bool want_key;  /* the next string of this object is a key */
  bool key_plain; /* the key has no escapes (else it never matches) */
  const char *key;
  size_t key_len;
} frame;

/* Does the value inside frames[0..depth) match one of the paths? */
static bool path_match(const frame *fr, int depth, const path *paths, int n_paths) {
  for (int p = 0; p < n_paths; p++) {
    const path *pa = &paths[p];
    if (pa->n != depth) continue;
    int i = 0;
    for (; i < depth; i++) {
      const seg *sg = &pa->s[i];
      if (!fr[i].is_obj) {
        if (sg->n != 2 || memcmp(sg->s, "[]", 2) != 0) break;
      } else if (!fr[i].key_plain || (sg->n == 2 && !memcmp(sg->s, "[]", 2))) {
        break;
      } else if (!(sg->n == 1 && sg->s[0] == '*') &&
                 (sg->n != fr[i].key_len || memcmp(sg->s, fr[i].key, sg->n) != 0)) {
        break;
      }
    }
    if (i == depth) return true;
  }
  return false;
}

/* ---- the pass ------------------------------------------------------------------ */

/* True if the digits d[0..n) (no sign, no leading zero) exceed INT64_MAX. */
static bool exceeds_i64(const char *d, size_t n) {
  static const char max[] = "9223372036854775807";
  return n > 19 || (n == 19 && memcmp(d, max, 19) > 0);
}

int jsonio_scan(const char *text, size_t len, const char *const *vec_paths, jsonio_vecs *vecs,
                char **copy, char *msg, size_t cap) {
  path paths[MAX_PATHS];
  int n_paths = 0;
  for (int k = 0; vecs && vec_paths && vec_paths[k] && n_paths < MAX_PATHS; k++)
    if (path_compile(vec_paths[k], &paths[n_paths])) n_paths++;
  frame fr[SCAN_DEPTH];
  int depth = 0;
  sbuf out;
  sbuf_init(&out);
  size_t copied = 0;
  bool changed = false, oom = false;
  *copy = NULL;
  for (size_t i = 0; i < len; i++) {
    char c = text[i];
    frame *top = depth > 0 && depth <= SCAN_DEPTH ? &fr[depth - 1] : NULL;
    switch (c) {
    case '"': {
      size_t s0 = i;
      if (len - i >= 7 && memcmp(text + i + 1, "\\u000", 5) == 0 &&
          (text[i + 6] == '1' || text[i + 6] == '2')) {
        snprintf(msg, cap, "strings starting with U+000%c are not accepted", text[i + 6]);
        sbuf_free(&out);
        return -1;
      }
      bool plain = true;
      for (i++; i < len && text[i] != '"'; i++)
        if (text[i] == '\\') plain = false, i++;
      if (top && top->is_obj && top->want_key) {
        top->key = text + s0 + 1;
        top->key_len = i - s0 - 1;
        top->key_plain = plain;
        top->want_key = false;
      }
      continue;
    }
    case '{':
    case '[': {
      bool value_pos = !(top && top->is_obj && top->want_key);
      if (c == '[' && n_paths > 0 && depth <= SCAN_DEPTH && value_pos &&
          path_match(fr, depth, paths, n_paths)) {
        size_t k = scan_array(text + i, len - i, vecs, &oom);
        if (oom) goto nomem;
        if (k > 0) {
          sbuf_add(&out, text + copied, i - copied);
          sbuf_addf(&out, "\"\\u0002%zu\"", vecs->n - 1);
          copied = i + k;
          changed = true;
          i += k - 1;
          continue;
        }
      }
      if (depth < SCAN_DEPTH) fr[depth] = (frame){c == '{', c == '{', false, NULL, 0};
      depth++;
      continue;
    }
    case '}':
    case ']':
      if (depth > 0) depth--;
      continue;
    case ',':
      if (top && top->is_obj) top->want_key = true;
      continue;
    default:
      break;
    }
    if (c != '-' && (c < '0' || c > '9')) continue;
    size_t j = i + (c == '-');
    size_t d0 = j;
    while (j < len && text[j] >= '0' && text[j] <= '9') j++;
    bool is_int = j == len || (text[j] != '.' && text[j] != 'e' && text[j] != 'E');
    size_t nd = j - d0;
    if (is_int && c != '-' && nd > 0 && text[d0] != '0' && exceeds_i64(text + d0, nd)) {
      sbuf_add(&out, text + copied, i - copied);
      sbuf_adds(&out, "\"\\u0001");
      sbuf_add(&out, text + d0, nd);
      sbuf_adds(&out, "\"");
      copied = j;
      changed = true;
    }
    i = j > i ? j - 1 : i;
  }
  if (!changed) {
    sbuf_free(&out);
    return 0;
  }
  sbuf_add(&out, text + copied, len - copied);
  *copy = sbuf_take(&out, NULL);
  if (*copy != NULL) return 0;
nomem:
  sbuf_free(&out);
  snprintf(msg, cap, "out of memory");
  return -2;
}
