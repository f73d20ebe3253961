/* record.h: the engine's operations as write-ahead log records.
 *
 *   upsert: u8 1, u32 n, u32 dim, n x { id, u32 payload_len, payload bytes,
 *           dim x f32 }
 *   delete: u8 2, u32 n, n x { id }
 *   id:     u8 0 + u64 (integer) | u8 1 + 16 bytes (UUID)
 *
 * Little-endian. Vectors are logged as they are stored (Cosine ones already
 * normalised), so replay needs no floating-point work. */
#ifndef QV_ENGINE_RECORD_H
#define QV_ENGINE_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "quiver.h"

enum { REC_UPSERT = 1, REC_DELETE = 2 };

typedef struct rec_buf {
  unsigned char *p;
  size_t n, cap;
} rec_buf;

void rec_buf_free(rec_buf *b);

/* Encoders; each returns QV_ENOMEM on allocation failure. `vecs` holds the
 * n vectors back to back. */
qv_rc rec_encode_upsert(rec_buf *b, const qv_point *pts, const float *vecs,
                        size_t n, uint32_t dim);
qv_rc rec_encode_delete(rec_buf *b, const qv_point_id *ids, size_t n);

typedef struct rec_visitor {
  void *ctx;
  qv_rc (*upsert)(void *ctx, const qv_point_id *id, const float *vec,
                  const char *payload, uint32_t payload_len);
  qv_rc (*del)(void *ctx, const qv_point_id *id);
} rec_visitor;

/* Checks the whole record first (QV_ECORRUPT if it does not parse or its
 * dimension differs from `dim`), then calls the visitor for each item.
 * Vectors passed to the visitor are aligned copies valid for the call. */
qv_rc rec_decode(const void *rec, size_t len, uint32_t dim,
                 const rec_visitor *v, qv_err *err);

#endif
