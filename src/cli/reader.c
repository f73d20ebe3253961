/* reader.c: picks a format from the file name and forwards to it; see
 * reader.h. Owns the reader object and its input stream; the formats own
 * only their `impl` state and header parsing. */
#include "cli/reader.h"

#include <stdlib.h>
#include <string.h>

typedef qv_rc (*init_fn)(reader *r, qv_err *err);

static init_fn pick_format(const char *path) {
  size_t len = strlen(path);
  if (cli_has_suffix(path, ".gz")) len -= 3;
  static const struct {
    const char *ext;
    init_fn init;
  } formats[] = {
      {".fvecs", cli_fvecs_init},
      {".npy", cli_npy_init},
      {".jsonl", cli_jsonl_init},
      {".ndjson", cli_jsonl_init},
  };
  for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++) {
    size_t el = strlen(formats[i].ext);
    if (len >= el && strncmp(path + len - el, formats[i].ext, el) == 0)
      return formats[i].init;
  }
  return NULL;
}

qv_rc cli_reader_open(const char *path, reader **out, qv_err *err) {
  init_fn init = pick_format(path);
  if (init == NULL)
    return cli_err_set(err, QV_EINVAL,
                       "%s: unknown file type: expected .fvecs, .npy or "
                       ".jsonl (optionally .gz)",
                       path);
  reader *r = calloc(1, sizeof *r);
  if (r == NULL) return cli_err_set(err, QV_ENOMEM, "no memory");
  r->path = strdup(path);
  if (r->path == NULL) {
    free(r);
    return cli_err_set(err, QV_ENOMEM, "no memory");
  }
  qv_rc rc = cli_input_open(path, &r->in, err);
  if (rc == QV_OK) rc = init(r, err);
  if (rc != QV_OK) {
    cli_reader_close(r, NULL);
    return rc;
  }
  *out = r;
  return QV_OK;
}

uint32_t cli_reader_dim(const reader *r) { return r->dim; }
uint64_t cli_reader_total(const reader *r) { return r->total; }
const char *cli_reader_recno_word(const reader *r) {
  return r->ops->recno_word;
}
const char *cli_reader_format(const reader *r) { return r->ops->format; }
const char *cli_reader_path(const reader *r) { return r->path; }

qv_rc cli_reader_next(reader *r, reader_batch *b, qv_err *err) {
  b->n = 0;
  return r->ops->next(r, b, err);
}

qv_rc cli_reader_close(reader *r, qv_err *err) {
  if (r == NULL) return QV_OK;
  if (r->ops != NULL && r->ops->close != NULL) r->ops->close(r);
  qv_rc rc = cli_input_close(&r->in, r->path, err);
  free(r->path);
  free(r);
  return rc;
}

qv_rc cli_reader_load_all(const char *path, size_t limit, float **out,
                          size_t *n_out, uint32_t *dim_out, qv_err *err) {
  reader *r = NULL;
  qv_rc rc = cli_reader_open(path, &r, err);
  if (rc != QV_OK) return rc;
  uint32_t dim = r->dim;
  if (dim == 0) {
    rc = cli_reader_close(r, err);
    return rc != QV_OK
               ? rc
               : cli_err_set(err, QV_EINVAL, "%s holds no vectors", path);
  }
  enum { CHUNK = 1024 };
  float *data = NULL;
  size_t n = 0, cap = 0;
  qv_point_id *ids = malloc(CHUNK * sizeof *ids);
  uint64_t *recnos = malloc(CHUNK * sizeof *recnos);
  if (ids == NULL || recnos == NULL)
    rc = cli_err_set(err, QV_ENOMEM, "no memory");
  while (rc == QV_OK && (limit == 0 || n < limit)) {
    if (cap - n < CHUNK) {
      size_t ncap = cap ? 2 * cap : CHUNK;
      float *nd = realloc(data, ncap * dim * sizeof *nd);
      if (nd == NULL) {
        rc = cli_err_set(err, QV_ENOMEM, "%s: no memory", path);
        break;
      }
      data = nd;
      cap = ncap;
    }
    size_t want = CHUNK;
    if (limit != 0 && limit - n < want) want = limit - n;
    reader_batch b = {
        .cap = want, .vecs = data + n * dim, .ids = ids, .recnos = recnos};
    rc = cli_reader_next(r, &b, err);
    if (rc != QV_OK || b.n == 0) break;
    n += b.n;
  }
  free(ids);
  free(recnos);
  qv_rc crc = cli_reader_close(r, rc == QV_OK ? err : NULL);
  if (rc == QV_OK) rc = crc;
  if (rc != QV_OK) {
    free(data);
    return rc;
  }
  *out = data;
  *n_out = n;
  *dim_out = dim;
  return QV_OK;
}
