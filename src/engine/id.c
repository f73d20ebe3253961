/* id.c: point ids — integers or UUIDs — parsing, formatting, ordering and a
 * stable hash. Integer ids sort before UUIDs (Qdrant's scroll order). */
#include "engine/id.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "base/err.h"

qv_point_id qv_id_num(uint64_t num) {
  qv_point_id id;
  memset(&id, 0, sizeof id);
  id.num = num;
  return id;
}

qv_point_id id_clean(const qv_point_id *src) {
  qv_point_id id;
  memset(&id, 0, sizeof id);
  id.is_uuid = src->is_uuid;
  if (src->is_uuid)
    memcpy(id.uuid, src->uuid, 16);
  else
    id.num = src->num;
  return id;
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = tolower(c);
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

qv_rc qv_id_parse_uuid(const char *text, qv_point_id *out, qv_err *err) {
  const char *s = text;
  size_t len = strlen(s);
  if (len >= 9 && strncasecmp(s, "urn:uuid:", 9) == 0) {
    s += 9;
    len -= 9;
  }
  int braced = len >= 2 && s[0] == '{' && s[len - 1] == '}';
  if (braced) {
    s++;
    len -= 2;
  }
  /* 32 hex digits, or 8-4-4-4-12 with hyphens */
  int hyphenated = len == 36;
  if (!(len == 32 || hyphenated) || (braced && !hyphenated))
    goto bad;
  qv_point_id id;
  memset(&id, 0, sizeof id);
  id.is_uuid = true;
  int nib = 0;
  for (size_t i = 0; i < len; i++) {
    if (hyphenated && (i == 8 || i == 13 || i == 18 || i == 23)) {
      if (s[i] != '-') goto bad;
      continue;
    }
    int v = hexval((unsigned char)s[i]);
    if (v < 0) goto bad;
    id.uuid[nib / 2] = (uint8_t)(id.uuid[nib / 2] | (v << ((nib % 2) ? 0 : 4)));
    nib++;
  }
  if (nib != 32) goto bad;
  *out = id;
  return QV_OK;
bad:
  return qv_err_set(err, QV_EINVAL,
                    "point id \"%.60s\" is neither an unsigned integer nor a UUID",
                    text);
}

char *qv_id_format(const qv_point_id *id, char buf[40]) {
  if (!id->is_uuid) {
    snprintf(buf, 40, "%llu", (unsigned long long)id->num);
    return buf;
  }
  static const char hex[] = "0123456789abcdef";
  char *p = buf;
  for (int i = 0; i < 16; i++) {
    if (i == 4 || i == 6 || i == 8 || i == 10) *p++ = '-';
    *p++ = hex[id->uuid[i] >> 4];
    *p++ = hex[id->uuid[i] & 15];
  }
  *p = 0;
  return buf;
}

int qv_id_cmp(const qv_point_id *a, const qv_point_id *b) {
  if (a->is_uuid != b->is_uuid) return a->is_uuid ? 1 : -1;
  if (!a->is_uuid) return a->num < b->num ? -1 : (a->num > b->num);
  return memcmp(a->uuid, b->uuid, 16);
}

bool id_eq(const qv_point_id *a, const qv_point_id *b) {
  if (a->is_uuid != b->is_uuid) return false;
  return a->is_uuid ? memcmp(a->uuid, b->uuid, 16) == 0 : a->num == b->num;
}

static uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t id_hash(const qv_point_id *id) {
  if (!id->is_uuid) return mix64(id->num + 0x9E3779B97F4A7C15ull);
  uint64_t hi = 0, lo = 0;
  for (int i = 0; i < 8; i++) hi = hi << 8 | id->uuid[i];
  for (int i = 8; i < 16; i++) lo = lo << 8 | id->uuid[i];
  return mix64(hi ^ mix64(lo ^ 0x5851F42D4C957F2Dull));
}
