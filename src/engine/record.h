/* record.h: the engine's operations as write-ahead log records.
 *
 *   upsert: u8 1, u32 n, u8 n_spaces, n_spaces x u32 dim,
 *           n x { id, u32 payload_len, payload bytes,
 *                 n_spaces x { u8 present, present ? dim x f32 } }
 *   delete: u8 2, u32 n, n x { id }
 *   id:     u8 0 + u64 (integer) | u8 1 + 16 bytes (UUID)
 *
 * Little-endian. Vectors are logged as they are stored (Cosine ones already
 * normalised), so replay needs no floating-point work. */
#ifndef QV_ENGINE_RECORD_H
#define QV_ENGINE_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "engine/space.h"
#include "quiver.h"

enum { REC_UPSERT = 1, REC_DELETE = 2 };

typedef struct rec_buf {
  unsigned char *p;
  size_t n, cap;
} rec_buf;

void rec_buf_free(rec_buf *b);

/* Encoders; each returns QV_ENOMEM on allocation failure. vecs[i * sp->n + s]
 * is point i's vector of space s, NULL when the point has none. Only the ids
 * and payloads of `pts` are read. */
qv_rc rec_encode_upsert(rec_buf *b, const qv_point *pts, const float *const *vecs,
                        size_t n, const spaces *sp);
qv_rc rec_encode_delete(rec_buf *b, const qv_point_id *ids, size_t n);

typedef struct rec_visitor {
  void *ctx;
  /* vecs[s]: the point's vector of space s, NULL when absent */
  qv_rc (*upsert)(void *ctx, const qv_point_id *id, const float *const *vecs,
                  const char *payload, uint32_t payload_len);
  qv_rc (*del)(void *ctx, const qv_point_id *id);
} rec_visitor;

/* Checks the whole record first (QV_ECORRUPT if it does not parse or its
 * spaces differ from `sp`), then calls the visitor for each item. Vectors
 * passed to the visitor are aligned copies valid for the call. */
qv_rc rec_decode(const void *rec, size_t len, const spaces *sp,
                 const rec_visitor *v, qv_err *err);

#endif
