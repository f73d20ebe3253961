/* alloc.c: counted malloc wrappers with a fault-injection hook; see alloc.h.
 * Each block carries a 16-byte header holding its size, so frees can be
 * counted without a lookup. */
#include "base/alloc.h"

#include <stdlib.h>
#include <string.h>

#define HDR 16u

static uint64_t g_bytes;
static uint64_t g_fail_countdown;

static int should_fail(void) {
  uint64_t n = __atomic_load_n(&g_fail_countdown, __ATOMIC_RELAXED);
  if (n == 0) return 0;
  return __atomic_sub_fetch(&g_fail_countdown, 1, __ATOMIC_RELAXED) == 0;
}

void qv_alloc_fail_after(uint64_t n) {
  __atomic_store_n(&g_fail_countdown, n, __ATOMIC_RELAXED);
}

uint64_t qv_alloc_bytes(void) {
  return __atomic_load_n(&g_bytes, __ATOMIC_RELAXED);
}

void *qv_malloc(size_t n) {
  if (should_fail() || n > SIZE_MAX - HDR) return NULL;
  unsigned char *p = malloc(n + HDR);
  if (p == NULL) return NULL;
  memcpy(p, &n, sizeof n);
  __atomic_add_fetch(&g_bytes, n, __ATOMIC_RELAXED);
  return p + HDR;
}

void *qv_calloc(size_t count, size_t size) {
  if (size != 0 && count > SIZE_MAX / size) return NULL;
  void *p = qv_malloc(count * size);
  if (p != NULL) memset(p, 0, count * size);
  return p;
}

void *qv_realloc(void *p, size_t n) {
  if (p == NULL) return qv_malloc(n);
  if (should_fail() || n > SIZE_MAX - HDR) return NULL;
  unsigned char *base = (unsigned char *)p - HDR;
  size_t old;
  memcpy(&old, base, sizeof old);
  unsigned char *q = realloc(base, n + HDR);
  if (q == NULL) return NULL;
  memcpy(q, &n, sizeof n);
  if (n >= old)
    __atomic_add_fetch(&g_bytes, n - old, __ATOMIC_RELAXED);
  else
    __atomic_sub_fetch(&g_bytes, old - n, __ATOMIC_RELAXED);
  return q + HDR;
}

void qv_free(void *p) {
  if (p == NULL) return;
  unsigned char *base = (unsigned char *)p - HDR;
  size_t n;
  memcpy(&n, base, sizeof n);
  __atomic_sub_fetch(&g_bytes, n, __ATOMIC_RELAXED);
  free(base);
}

char *qv_strndup(const char *s, size_t n) {
  char *d = qv_malloc(n + 1);
  if (d == NULL) return NULL;
  memcpy(d, s, n);
  d[n] = 0;
  return d;
}

char *qv_strdup(const char *s) { return qv_strndup(s, strlen(s)); }

void *qv_malloc_aligned(size_t n) {
  if (should_fail()) return NULL;
  size_t rounded = (n + 63) & ~(size_t)63;
  if (rounded < n || rounded > SIZE_MAX - 64) return NULL;
  unsigned char *p = aligned_alloc(64, rounded + 64);
  if (p == NULL) return NULL;
  memcpy(p, &rounded, sizeof rounded);
  __atomic_add_fetch(&g_bytes, rounded, __ATOMIC_RELAXED);
  return p + 64;
}

void qv_free_aligned(void *p) {
  if (p == NULL) return;
  unsigned char *base = (unsigned char *)p - 64;
  size_t n;
  memcpy(&n, base, sizeof n);
  __atomic_sub_fetch(&g_bytes, n, __ATOMIC_RELAXED);
  free(base);
}
