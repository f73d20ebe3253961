/* read_npy.c: the NumPy .npy reader for reader.h.
 *
 * Accepts exactly what `numpy.save` writes for a 2-D float32 array in C
 * order: magic "\x93NUMPY", version 1.0 (uint16 header length), 2.0 or 3.0
 * (uint32), then a Python dict literal {'descr': '<f4', 'fortran_order':
 * False, 'shape': (rows, dim)} and the rows. Anything else (another dtype, a
 * Fortran-order or non-2-D array, a file shorter or longer than the shape
 * says) is refused with a message saying what was found and what to do,
 * never converted silently. Row numbers are 0-based and become point ids. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "cli/reader.h"

#define NPY_HEADER_MAX (1u << 20)
#define NPY_NDIM_MAX 8

typedef struct npy_header {
  char descr[64];
  int fortran; /* -1 until seen */
  uint64_t shape[NPY_NDIM_MAX];
  int ndim; /* -1 until seen */
} npy_header;

typedef struct npy_state {
  bool checked_tail;
} npy_state;

/* ---- the header's dict literal ------------------------------------------- */

typedef struct cursor {
  const char *p, *end;
} cursor;

static void skip_ws(cursor *c) {
  while (c->p < c->end && isspace((unsigned char)*c->p)) c->p++;
}

static bool eat(cursor *c, char ch) {
  skip_ws(c);
  if (c->p < c->end && *c->p == ch) {
    c->p++;
    return true;
  }
  return false;
}

/* A Python string literal in ' or " without escapes (numpy writes none). */
static bool parse_str(cursor *c, char *out, size_t cap) {
  skip_ws(c);
  if (c->p >= c->end || (*c->p != '\'' && *c->p != '"')) return false;
  char q = *c->p++;
  size_t n = 0;
  while (c->p < c->end && *c->p != q) {
    if (*c->p == '\\' || n + 1 >= cap) return false;
    out[n++] = *c->p++;
  }
  if (c->p >= c->end) return false;
  c->p++;
  out[n] = 0;
  return true;
}

static bool parse_word(cursor *c, const char *w) {
  skip_ws(c);
  size_t n = strlen(w);
  if ((size_t)(c->end - c->p) < n || strncmp(c->p, w, n) != 0) return false;
  c->p += n;
  return true;
}

static bool parse_shape(cursor *c, npy_header *h) {
  if (!eat(c, '(')) return false;
  h->ndim = 0;
  while (1) {
    skip_ws(c);
    if (eat(c, ')')) return true;
    if (h->ndim == NPY_NDIM_MAX) return false;
    uint64_t v = 0;
    const char *start = c->p;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
      if (v > (UINT64_MAX - 9) / 10) return false;
      v = v * 10 + (uint64_t)(*c->p++ - '0');
    }
    if (c->p == start) return false;
    if (c->p < c->end && *c->p == 'L') c->p++; /* Python 2 longs */
    h->shape[h->ndim++] = v;
    if (!eat(c, ',')) return eat(c, ')');
  }
}

static qv_rc parse_header(reader *r, const char *text, size_t len,
                          npy_header *h, qv_err *err) {
  cursor c = {text, text + len};
  h->descr[0] = 0;
  h->fortran = -1;
  h->ndim = -1;
  if (!eat(&c, '{')) goto bad;
  while (!eat(&c, '}')) {
    char key[32];
    if (!parse_str(&c, key, sizeof key) || !eat(&c, ':')) goto bad;
    if (strcmp(key, "descr") == 0) {
      skip_ws(&c);
      if (c.p < c.end && *c.p == '[')
        return cli_err_set(err, QV_EINVAL,
                           "%s: dtype is a structured type: expected '<f4' "
                           "(little-endian float32)",
                           r->path);
      if (!parse_str(&c, h->descr, sizeof h->descr)) goto bad;
    } else if (strcmp(key, "fortran_order") == 0) {
      if (parse_word(&c, "True"))
        h->fortran = 1;
      else if (parse_word(&c, "False"))
        h->fortran = 0;
      else
        goto bad;
    } else if (strcmp(key, "shape") == 0) {
      if (!parse_shape(&c, h)) goto bad;
    } else {
      return cli_err_set(err, QV_EINVAL,
                         "%s: unexpected key '%s' in the NPY "
                         "header",
                         r->path, key);
    }
    if (!eat(&c, ',')) {
      if (!eat(&c, '}')) goto bad;
      break;
    }
  }
  if (h->descr[0] == 0 || h->fortran < 0 || h->ndim < 0)
    return cli_err_set(err, QV_EINVAL, "%s: NPY header lacks %s", r->path,
                       h->descr[0] == 0 ? "'descr'"
                       : h->fortran < 0 ? "'fortran_order'"
                                        : "'shape'");
  return QV_OK;
bad:
  return cli_err_set(err, QV_EINVAL, "%s: malformed NPY header near \"%.30s\"",
                     r->path, c.p < c.end ? c.p : "<end>");
}

/* ---- reading ------------------------------------------------------------ */

static qv_rc npy_next(reader *r, reader_batch *b, qv_err *err) {
  npy_state *s = r->impl;
  size_t i = 0;
  size_t bytes = (size_t)r->dim * 4;
  while (i < b->cap && r->next_recno < r->total) {
    size_t got = cli_read_full(r->in.f, b->vecs + i * r->dim, bytes);
    if (got < bytes)
      return cli_err_set(err, ferror(r->in.f) ? QV_EIO : QV_EINVAL,
                         "%s: row %llu: %s (%zu of %zu bytes; the shape says "
                         "%llu rows)",
                         r->path, (unsigned long long)r->next_recno,
                         ferror(r->in.f) ? "read error" : "truncated", got,
                         bytes, (unsigned long long)r->total);
    b->ids[i] = qv_id_num(r->next_recno);
    b->recnos[i] = r->next_recno;
    if (b->payloads != NULL) b->payloads[i] = NULL;
    if (b->payload_lens != NULL) b->payload_lens[i] = 0;
    r->next_recno++;
    i++;
  }
  if (r->next_recno == r->total && !s->checked_tail) {
    /* More bytes than the shape accounts for means the header lies or the
     * file was concatenated; either way the rows cannot be trusted. */
    s->checked_tail = true;
    char extra;
    if (cli_read_full(r->in.f, &extra, 1) != 0)
      return cli_err_set(err, QV_EINVAL,
                         "%s: data continues after the %llu rows the shape "
                         "declares",
                         r->path, (unsigned long long)r->total);
  }
  b->n = i;
  return QV_OK;
}

static void npy_close(reader *r) {
  free(r->impl);
  r->impl = NULL;
}

static const reader_ops npy_ops = {"npy", "row", npy_next, npy_close};

qv_rc cli_npy_init(reader *r, qv_err *err) {
  r->ops = &npy_ops;
  npy_state *s = calloc(1, sizeof *s);
  if (s == NULL) return cli_err_set(err, QV_ENOMEM, "no memory");
  r->impl = s;
  unsigned char pre[12];
  size_t got = cli_read_full(r->in.f, pre, 10);
  if (got < 10 || memcmp(pre, "\x93NUMPY", 6) != 0)
    return cli_err_set(err, QV_EINVAL,
                       "%s: not an NPY file (bad magic; expected "
                       "\\x93NUMPY)",
                       r->path);
  unsigned major = pre[6], minor = pre[7];
  if (minor != 0 || major < 1 || major > 3)
    return cli_err_set(err, QV_EINVAL,
                       "%s: NPY version %u.%u is not supported (expected "
                       "1.0, 2.0 or 3.0)",
                       r->path, major, minor);
  uint32_t hlen;
  if (major == 1) {
    hlen = (uint32_t)pre[8] | (uint32_t)pre[9] << 8;
  } else {
    if (cli_read_full(r->in.f, pre + 10, 2) < 2)
      return cli_err_set(err, QV_EINVAL, "%s: truncated NPY header", r->path);
    hlen = (uint32_t)pre[8] | (uint32_t)pre[9] << 8 | (uint32_t)pre[10] << 16 |
           (uint32_t)pre[11] << 24;
  }
  if (hlen == 0 || hlen > NPY_HEADER_MAX)
    return cli_err_set(err, QV_EINVAL,
                       "%s: NPY header length %u is implausible", r->path,
                       hlen);
  char *text = malloc(hlen);
  if (text == NULL) return cli_err_set(err, QV_ENOMEM, "no memory");
  if (cli_read_full(r->in.f, text, hlen) < hlen) {
    free(text);
    return cli_err_set(err, QV_EINVAL, "%s: truncated NPY header", r->path);
  }
  npy_header h;
  qv_rc rc = parse_header(r, text, hlen, &h, err);
  free(text);
  if (rc != QV_OK) return rc;
  if (strcmp(h.descr, "<f4") != 0)
    return cli_err_set(err, QV_EINVAL,
                       "%s: dtype '%s' is not supported: expected '<f4' "
                       "(little-endian float32); convert with "
                       "a.astype('<f4')",
                       r->path, h.descr);
  if (h.fortran)
    return cli_err_set(err, QV_EINVAL,
                       "%s: 'fortran_order': True is not supported: expected "
                       "a C-order array (save np.ascontiguousarray(a))",
                       r->path);
  if (h.ndim != 2)
    return cli_err_set(err, QV_EINVAL,
                       "%s: array has %d dimensions: expected a 2-D array "
                       "(rows, dim)",
                       r->path, h.ndim);
  if (h.shape[1] == 0 || h.shape[1] > QV_DIM_MAX)
    return cli_err_set(err, QV_EINVAL,
                       "%s: vector dimension %llu is outside 1..%u", r->path,
                       (unsigned long long)h.shape[1], QV_DIM_MAX);
  r->dim = (uint32_t)h.shape[1];
  r->total = h.shape[0];
  return QV_OK;
}
