/* crc32c.h: CRC-32C (Castagnoli), the checksum of every record and file
 * Quiver writes. Uses the SSE4.2 instruction when the CPU has it. */
#ifndef QV_BASE_CRC32C_H
#define QV_BASE_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Extends `crc` (start with 0) over `n` bytes at `p`. */
uint32_t crc32c_extend(uint32_t crc, const void *p, size_t n);

static inline uint32_t crc32c(const void *p, size_t n) {
  return crc32c_extend(0, p, n);
}

/* The portable table implementation, exposed so tests can compare. */
uint32_t crc32c_extend_portable(uint32_t crc, const void *p, size_t n);

#endif
