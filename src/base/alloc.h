/* alloc.h: counted allocation.
 *
 * Every allocation in src/ goes through these so that bytes are counted per
 * subsystem (for collection info and /metrics) and tests can make the Nth
 * allocation fail. Allocation failure returns NULL; callers turn it into
 * QV_ENOMEM. qv_free(NULL) is a no-op. */
#ifndef QV_BASE_ALLOC_H
#define QV_BASE_ALLOC_H

#include <stddef.h>
#include <stdint.h>

void *qv_malloc(size_t n);
void *qv_calloc(size_t count, size_t size);
void *qv_realloc(void *p, size_t n);
void qv_free(void *p);
char *qv_strdup(const char *s);
char *qv_strndup(const char *s, size_t n);

/* 64-byte aligned, for vectors and graph arrays; free with qv_free_aligned. */
void *qv_malloc_aligned(size_t n);
void qv_free_aligned(void *p);

/* Bytes currently allocated through this module. */
uint64_t qv_alloc_bytes(void);

/* Test hook: the `n`th allocation from now fails (0 disables). */
void qv_alloc_fail_after(uint64_t n);

#endif
