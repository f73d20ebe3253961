/* read_fvecs.c: the TEXMEX .fvecs reader (and .ivecs, whose layout is the
 * same with int32 values) for reader.h.
 *
 * A record is int32 d followed by d 4-byte values. The first record fixes
 * the dimension; a later record with another d, a d outside 1..65535, or a
 * record cut short is an error naming the record number (0-based, which is
 * also the point id the importer gives it). Values are copied as raw bytes,
 * so NaNs pass through to the library, which rejects them with a message the
 * importer attributes to the row. */
#include <stdlib.h>
#include <string.h>

#include "cli/reader.h"

typedef struct fvecs_state {
  bool have_header; /* the header of record r->next_recno is already read */
  bool at_end;
} fvecs_state;

/* Reads the int32 dimension of record r->next_recno. *eof is set at a clean
 * end of file (no byte of a new record). */
static qv_rc read_header(reader *r, int32_t *d, bool *eof, qv_err *err) {
  unsigned char h[4];
  size_t got = cli_read_full(r->in.f, h, 4);
  *eof = false;
  if (got == 0 && !ferror(r->in.f)) {
    *eof = true;
    return QV_OK;
  }
  if (got < 4)
    return cli_err_set(err, ferror(r->in.f) ? QV_EIO : QV_EINVAL,
                       "%s: record %llu: %s (%zu of 4 header bytes)", r->path,
                       (unsigned long long)r->next_recno,
                       ferror(r->in.f) ? "read error" : "truncated header",
                       got);
  memcpy(d, h, 4);
  if (*d <= 0 || (uint32_t)*d > QV_DIM_MAX)
    return cli_err_set(err, QV_EINVAL,
                       "%s: record %llu: dimension %d is outside 1..%u (not "
                       "an .fvecs file?)",
                       r->path, (unsigned long long)r->next_recno, (int)*d,
                       QV_DIM_MAX);
  return QV_OK;
}

static qv_rc fvecs_next(reader *r, reader_batch *b, qv_err *err) {
  fvecs_state *s = r->impl;
  size_t i = 0;
  while (i < b->cap && !s->at_end) {
    if (!s->have_header) {
      int32_t d = 0;
      bool eof;
      qv_rc rc = read_header(r, &d, &eof, err);
      if (rc != QV_OK) return rc;
      if (eof) {
        s->at_end = true;
        break;
      }
      if ((uint32_t)d != r->dim)
        return cli_err_set(err, QV_EINVAL,
                           "%s: record %llu: dimension %d, but record 0 has "
                           "%u",
                           r->path, (unsigned long long)r->next_recno, (int)d,
                           r->dim);
    }
    s->have_header = false;
    size_t bytes = (size_t)r->dim * 4;
    size_t got = cli_read_full(r->in.f, b->vecs + i * r->dim, bytes);
    if (got < bytes)
      return cli_err_set(err, ferror(r->in.f) ? QV_EIO : QV_EINVAL,
                         "%s: record %llu: %s (%zu of %zu data bytes)", r->path,
                         (unsigned long long)r->next_recno,
                         ferror(r->in.f) ? "read error" : "truncated", got,
                         bytes);
    b->ids[i] = qv_id_num(r->next_recno);
    b->recnos[i] = r->next_recno;
    if (b->payloads != NULL) b->payloads[i] = NULL;
    if (b->payload_lens != NULL) b->payload_lens[i] = 0;
    r->next_recno++;
    i++;
  }
  b->n = i;
  return QV_OK;
}

static void fvecs_close(reader *r) {
  free(r->impl);
  r->impl = NULL;
}

static const reader_ops fvecs_ops = {"fvecs", "row", fvecs_next, fvecs_close};

qv_rc cli_fvecs_init(reader *r, qv_err *err) {
  r->ops = &fvecs_ops;
  fvecs_state *s = calloc(1, sizeof *s);
  if (s == NULL) return cli_err_set(err, QV_ENOMEM, "no memory");
  r->impl = s;
  int32_t d = 0;
  bool eof;
  qv_rc rc = read_header(r, &d, &eof, err);
  if (rc != QV_OK) return rc;
  if (eof) {
    s->at_end = true;
    return QV_OK;
  }
  s->have_header = true;
  r->dim = (uint32_t)d;
  if (r->in.size > 0) r->total = r->in.size / (4 + 4 * (uint64_t)r->dim);
  return QV_OK;
}

qv_rc cli_vecs_load(const char *path, void **out, size_t *n_out, uint32_t *dim,
                    qv_err *err) {
  reader r;
  memset(&r, 0, sizeof r);
  r.path = (char *)path;
  qv_rc rc = cli_input_open(path, &r.in, err);
  if (rc != QV_OK) return rc;
  float *data = NULL;
  size_t n = 0, cap = 0;
  qv_point_id *ids = NULL;
  uint64_t *recnos = NULL;
  rc = cli_fvecs_init(&r, err);
  if (rc == QV_OK && r.dim > 0) {
    enum { CHUNK = 4096 };
    ids = malloc(CHUNK * sizeof *ids);
    recnos = malloc(CHUNK * sizeof *recnos);
    if (ids == NULL || recnos == NULL)
      rc = cli_err_set(err, QV_ENOMEM, "no memory");
    while (rc == QV_OK) {
      if (cap - n < CHUNK) {
        size_t ncap = cap ? cap * 2 : CHUNK;
        float *nd = realloc(data, ncap * r.dim * sizeof *nd);
        if (nd == NULL) {
          rc = cli_err_set(err, QV_ENOMEM, "%s: no memory for %zu records",
                           path, ncap);
          break;
        }
        data = nd;
        cap = ncap;
      }
      reader_batch b = {
          .cap = CHUNK, .vecs = data + n * r.dim, .ids = ids, .recnos = recnos};
      rc = fvecs_next(&r, &b, err);
      if (rc != QV_OK || b.n == 0) break;
      n += b.n;
    }
  }
  free(ids);
  free(recnos);
  fvecs_close(&r);
  qv_rc crc = cli_input_close(&r.in, path, rc == QV_OK ? err : NULL);
  if (rc == QV_OK) rc = crc;
  if (rc != QV_OK) {
    free(data);
    return rc;
  }
  *out = data;
  *n_out = n;
  *dim = r.dim;
  return QV_OK;
}
