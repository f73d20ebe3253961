/* reader.h: streaming readers of vector files for `quiver import` and the
 * query files of `search` and `bench`.
 *
 * One interface over three formats, chosen by file name (a ".gz" suffix is
 * read through `gzip -dc`):
 *   .fvecs  TEXMEX records: int32 d, then d float32 (little-endian);
 *           id = 0-based record number
 *   .npy    a 2-D float32 ('<f4') C-order array, NPY versions 1.0/2.0/3.0;
 *           id = 0-based row number
 *   .jsonl  one {"id": u64|UUID, "vector": [...], "payload": {...}} a line
 *
 * The reader fills caller-owned buffers a batch at a time, so a file of any
 * size streams through constant memory. Every error names the file and the
 * record ("x.jsonl: line 7: ...", "x.fvecs: record 12: ..."); nothing is
 * skipped silently (only blank lines of a .jsonl file are not records).
 * Assumes a little-endian host, as the formats are little-endian. */
#ifndef QV_CLI_READER_H
#define QV_CLI_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cli/cli_util.h"
#include "quiver.h"

/* Caller-owned buffers for one batch. The caller sets cap, vecs (cap * dim
 * floats), ids and recnos (cap entries each); payloads and payload_lens may
 * be NULL when the caller does not want payloads. cli_reader_next sets n. A
 * payload string belongs to the reader and lives until the next cli_reader_next
 * or cli_reader_close; NULL means the record had none. */
typedef struct reader_batch {
  size_t cap;
  size_t n;
  float *vecs;
  qv_point_id *ids;
  uint64_t *recnos; /* record number: row (0-based) or line (1-based) */
  const char **payloads;
  size_t *payload_lens;
} reader_batch;

typedef struct reader reader;

/* Opens `path`, reads its header (or first record) to learn the dimension.
 * Errors: QV_EIO (cannot open or read), QV_EINVAL (unknown extension or
 * malformed header/first record; the message says what is wrong). */
qv_rc cli_reader_open(const char *path, reader **out, qv_err *err);
/* Dimension of every vector; 0 only for a file with no records. */
uint32_t cli_reader_dim(const reader *r);
/* Records in the file when known ahead (npy shape, plain fvecs size), else
 * 0. Used for the progress bar only. */
uint64_t cli_reader_total(const reader *r);
/* "row" or "line": how reader_batch.recnos count, for messages. */
const char *cli_reader_recno_word(const reader *r);
const char *cli_reader_format(const reader *r); /* "fvecs", "npy", "jsonl" */
const char *cli_reader_path(const reader *r);
/* Fills up to b->cap records; b->n == 0 means end of file. On error b->n is
 * 0 and err names the file and record. */
qv_rc cli_reader_next(reader *r, reader_batch *b, qv_err *err);
/* Closes the file; for .gz, also reports a gzip failure (QV_EIO) when the
 * whole file was read. Accepts NULL. */
qv_rc cli_reader_close(reader *r, qv_err *err);

/* Reads the first `limit` records (0 = all) of a file in any reader format
 * into a malloc'd array of n * dim floats (queries for search and bench).
 * Ids and payloads are dropped. A file with no records is QV_EINVAL. */
qv_rc cli_reader_load_all(const char *path, size_t limit, float **out,
                          size_t *n, uint32_t *dim, qv_err *err);

/* Reads a whole .fvecs / .ivecs file (optionally .gz) into a malloc'd array
 * of n * dim 4-byte values (float for fvecs, int32 for ivecs; the layouts are
 * the same). Records must share one dimension. Errors as for the reader. */
qv_rc cli_vecs_load(const char *path, void **out, size_t *n, uint32_t *dim,
                    qv_err *err);

/* ---- for the format implementations only ------------------------------- */

typedef struct reader_ops {
  const char *format;
  const char *recno_word;
  qv_rc (*next)(reader *r, reader_batch *b, qv_err *err);
  void (*close)(reader *r); /* frees impl; the input is closed by reader.c */
} reader_ops;

struct reader {
  const reader_ops *ops;
  char *path;
  cli_input in;
  uint32_t dim;
  uint64_t total;
  uint64_t next_recno; /* number of the next record to read */
  void *impl;
};

/* Each reads its header from r->in and sets r->ops, r->dim, r->total. */
qv_rc cli_fvecs_init(reader *r, qv_err *err);
qv_rc cli_npy_init(reader *r, qv_err *err);
qv_rc cli_jsonl_init(reader *r, qv_err *err);

#endif
