/* json_file.c: see json_file.h. */
#include "engine/json_file.h"

#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/crc32c.h"
#include "base/err.h"
#include "base/fileio.h"

static bool canonical_crc(json_t *o, uint32_t *out) {
  char *canon = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
  if (canon == NULL) return false;
  *out = crc32c(canon, strlen(canon));
  free(canon);
  return true;
}

qv_rc json_file_write(const char *path, json_t *o, qv_err *err) {
  uint32_t crc;
  json_object_del(o, "checksum");
  if (!canonical_crc(o, &crc) || json_object_set_new(o, "checksum", json_integer(crc)) != 0)
    return qv_err_set(err, QV_ENOMEM, "%s: no memory", path);
  char *text = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS);
  if (text == NULL) return qv_err_set(err, QV_ENOMEM, "%s: no memory", path);
  qv_rc rc = fileio_write_atomic(path, text, strlen(text), err);
  free(text);
  return rc;
}

qv_rc json_file_read(const char *path, json_t **out, qv_err *err) {
  char *text;
  size_t n;
  qv_rc rc = fileio_read_file(path, &text, &n, err);
  if (rc != QV_OK) return rc;
  json_error_t je;
  json_t *o = json_loadb(text, n, JSON_REJECT_DUPLICATES, &je);
  qv_free(text);
  if (!json_is_object(o)) {
    json_decref(o);
    return QV_CORRUPT(err, "%s: %s (line %d)", path, o ? "not an object" : je.text, je.line);
  }
  json_t *sum = json_object_get(o, "checksum");
  json_int_t want = json_is_integer(sum) ? json_integer_value(sum) : -1;
  json_object_del(o, "checksum");
  uint32_t crc;
  if (!canonical_crc(o, &crc) || want != (json_int_t)crc) {
    json_decref(o);
    return QV_CORRUPT(err, "%s: checksum mismatch (or missing)", path);
  }
  *out = o;
  return QV_OK;
}
