/* bq_int.h: kernels shared between the bq_*.c files only (not an API). */
#ifndef QV_QUANT_BQ_INT_H
#define QV_QUANT_BQ_INT_H

#include <stddef.h>
#include <stdint.h>

/* Hamming distance with the POPCNT instruction (bq_avx2.c); callable only
 * where quant_cpu.c found the avx2 level. */
uint32_t bq_hamming_popcnt(const uint64_t *a, const uint64_t *b,
                           size_t n_words);

#endif
