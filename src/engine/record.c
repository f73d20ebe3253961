/* record.c: encoding and decoding of log records; see record.h. Decoding
 * never trusts a length: every read is bounds-checked. */
#include "engine/record.h"

#include <string.h>

#include "base/alloc.h"
#include "base/err.h"

void rec_buf_free(rec_buf *b) {
  qv_free(b->p);
  memset(b, 0, sizeof *b);
}

static qv_rc reserve(rec_buf *b, size_t more) {
  if (b->n + more <= b->cap) return QV_OK;
  size_t ncap = b->cap ? b->cap : 4096;
  while (ncap < b->n + more) ncap *= 2;
  unsigned char *p = qv_realloc(b->p, ncap);
  if (p == NULL) return QV_ENOMEM;
  b->p = p;
  b->cap = ncap;
  return QV_OK;
}

static void put(rec_buf *b, const void *p, size_t n) {
  memcpy(b->p + b->n, p, n);
  b->n += n;
}

static void put_id(rec_buf *b, const qv_point_id *id) {
  uint8_t kind = id->is_uuid ? 1 : 0;
  put(b, &kind, 1);
  if (id->is_uuid)
    put(b, id->uuid, 16);
  else
    put(b, &id->num, 8);
}

qv_rc rec_encode_upsert(rec_buf *b, const qv_point *pts, const float *const *vecs,
                        size_t n, const spaces *sp) {
  size_t need = 6 + 4 * (size_t)sp->n;
  for (size_t i = 0; i < n; i++) {
    need += 17 + 4 + pts[i].payload_len;
    for (uint32_t s = 0; s < sp->n; s++)
      need += 1 + (vecs[i * sp->n + s] ? (size_t)sp->s[s].dim * 4 : 0);
  }
  b->n = 0;
  if (reserve(b, need) != QV_OK) return QV_ENOMEM;
  uint8_t type = REC_UPSERT, ns = (uint8_t)sp->n;
  uint32_t n32 = (uint32_t)n;
  put(b, &type, 1);
  put(b, &n32, 4);
  put(b, &ns, 1);
  for (uint32_t s = 0; s < sp->n; s++) put(b, &sp->s[s].dim, 4);
  for (size_t i = 0; i < n; i++) {
    put_id(b, &pts[i].id);
    uint32_t pl = (uint32_t)pts[i].payload_len;
    put(b, &pl, 4);
    if (pl) put(b, pts[i].payload, pl);
    for (uint32_t s = 0; s < sp->n; s++) {
      const float *v = vecs[i * sp->n + s];
      uint8_t present = v != NULL;
      put(b, &present, 1);
      if (v) put(b, v, (size_t)sp->s[s].dim * 4);
    }
  }
  return QV_OK;
}

qv_rc rec_encode_delete(rec_buf *b, const qv_point_id *ids, size_t n) {
  b->n = 0;
  if (reserve(b, 5 + n * 17) != QV_OK) return QV_ENOMEM;
  uint8_t type = REC_DELETE;
  uint32_t n32 = (uint32_t)n;
  put(b, &type, 1);
  put(b, &n32, 4);
  for (size_t i = 0; i < n; i++) put_id(b, &ids[i]);
  return QV_OK;
}

typedef struct cursor {
  const unsigned char *p, *end;
} cursor;

static int take(cursor *c, void *out, size_t n) {
  if ((size_t)(c->end - c->p) < n) return 0;
  if (out) memcpy(out, c->p, n);
  c->p += n;
  return 1;
}

static int take_id(cursor *c, qv_point_id *id) {
  uint8_t kind;
  memset(id, 0, sizeof *id);
  if (!take(c, &kind, 1) || kind > 1) return 0;
  id->is_uuid = kind == 1;
  return kind ? take(c, id->uuid, 16) : take(c, &id->num, 8);
}

/* One pass over the record; with `v` NULL it only checks. scratch holds one
 * vector of every space back to back. */
static qv_rc walk(const void *rec, size_t len, const spaces *sp,
                  const rec_visitor *v, float *scratch, qv_err *err) {
  cursor c = {rec, (const unsigned char *)rec + len};
  uint8_t type;
  uint32_t n;
  if (!take(&c, &type, 1) || !take(&c, &n, 4))
    return QV_CORRUPT(err, "log record of %zu bytes is too short", len);
  qv_point_id id;
  if (type == REC_DELETE) {
    for (uint32_t i = 0; i < n; i++) {
      if (!take_id(&c, &id)) return QV_CORRUPT(err, "delete record: bad id %u", i);
      if (v) {
        qv_rc rc = v->del(v->ctx, &id);
        if (rc != QV_OK) return rc;
      }
    }
  } else if (type == REC_UPSERT) {
    uint8_t ns = 0;
    if (!take(&c, &ns, 1) || ns != sp->n)
      return QV_CORRUPT(err, "upsert record: %u vector spaces, collection has %u", ns, sp->n);
    for (uint32_t s = 0; s < ns; s++) {
      uint32_t rdim = 0;
      if (!take(&c, &rdim, 4) || rdim != sp->s[s].dim)
        return QV_CORRUPT(err, "upsert record: space %u has dimension %u, collection has %u",
                          s, rdim, sp->s[s].dim);
    }
    for (uint32_t i = 0; i < n; i++) {
      uint32_t pl;
      if (!take_id(&c, &id) || !take(&c, &pl, 4))
        return QV_CORRUPT(err, "upsert record: bad point %u", i);
      const char *payload = (const char *)c.p;
      if (!take(&c, NULL, pl)) return QV_CORRUPT(err, "upsert record: point %u overruns", i);
      const float *vecs[QV_SPACES_MAX];
      float *at = scratch;
      for (uint32_t s = 0; s < ns; s++) {
        uint8_t present;
        if (!take(&c, &present, 1) || present > 1)
          return QV_CORRUPT(err, "upsert record: point %u: bad presence byte", i);
        vecs[s] = NULL;
        if (present) {
          if (!take(&c, at, (size_t)sp->s[s].dim * 4))
            return QV_CORRUPT(err, "upsert record: point %u overruns the record", i);
          vecs[s] = at;
        }
        at += sp->s[s].dim;
      }
      if (v) {
        qv_rc rc = v->upsert(v->ctx, &id, vecs, payload, pl);
        if (rc != QV_OK) return rc;
      }
    }
  } else {
    return QV_CORRUPT(err, "log record of unknown type %u", type);
  }
  if (c.p != c.end)
    return QV_CORRUPT(err, "log record has %zu trailing bytes", (size_t)(c.end - c.p));
  return QV_OK;
}

qv_rc rec_decode(const void *rec, size_t len, const spaces *sp,
                 const rec_visitor *v, qv_err *err) {
  size_t floats = 0;
  for (uint32_t s = 0; s < sp->n; s++) floats += sp->s[s].dim;
  float *scratch = qv_malloc(floats * 4 + 4);
  if (scratch == NULL) return qv_err_set(err, QV_ENOMEM, "log record: no memory");
  qv_rc rc = walk(rec, len, sp, NULL, scratch, err);
  if (rc == QV_OK) rc = walk(rec, len, sp, v, scratch, err);
  qv_free(scratch);
  return rc;
}
