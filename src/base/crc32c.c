/* crc32c.c: CRC-32C with a hardware path (SSE4.2 crc32 instruction, three
 * bytes per cycle or so) and a byte-table reference used on other CPUs and
 * by the tests. Both produce the standard CRC-32C (check value 0xE3069283 for
 * "123456789"). */
#include "base/crc32c.h"

#include <string.h>

#define POLY 0x82F63B78u /* reflected Castagnoli polynomial */

static uint32_t table[256];

static void table_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ POLY : c >> 1;
    table[i] = c;
  }
}

uint32_t crc32c_extend_portable(uint32_t crc, const void *p, size_t n) {
  static int ready;
  if (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE)) {
    table_init(); /* idempotent: racing threads write the same values */
    __atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
  }
  const unsigned char *b = p;
  crc = ~crc;
  while (n--) crc = table[(crc ^ *b++) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t
extend_sse42(uint32_t crc, const void *p, size_t n) {
  const unsigned char *b = p;
  uint64_t c = ~crc;
  while (n >= 8) {
    uint64_t w;
    memcpy(&w, b, 8);
    c = __builtin_ia32_crc32di(c, w);
    b += 8;
    n -= 8;
  }
  uint32_t c32 = (uint32_t)c;
  while (n--) c32 = __builtin_ia32_crc32qi(c32, *b++);
  return ~c32;
}
#endif

uint32_t crc32c_extend(uint32_t crc, const void *p, size_t n) {
#if defined(__x86_64__)
  static int has_hw = -1;
  int hw = __atomic_load_n(&has_hw, __ATOMIC_RELAXED);
  if (hw < 0) {
    __builtin_cpu_init();
    hw = __builtin_cpu_supports("sse4.2") ? 1 : 0;
    __atomic_store_n(&has_hw, hw, __ATOMIC_RELAXED);
  }
  if (hw) return extend_sse42(crc, p, n);
#endif
  return crc32c_extend_portable(crc, p, n);
}
