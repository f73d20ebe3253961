/* kmeans_int.h: the per-ISA copies of the short-vector assignment kernel
 * (kmeans_kern.h), shared inside src/quant/ only. Call them only at a level
 * quant_cpu.c says runs. */
#ifndef QV_QUANT_KMEANS_INT_H
#define QV_QUANT_KMEANS_INT_H

#include <stddef.h>
#include <stdint.h>

typedef void (*kmeans_kern_fn)(const float *x, size_t n, uint32_t dim,
                               const float *ct, uint32_t k, float *acc,
                               uint32_t *assign, float *dist);

void kmeans_kern_scalar(const float *x, size_t n, uint32_t dim,
                        const float *ct, uint32_t k, float *acc,
                        uint32_t *assign, float *dist);
void kmeans_kern_avx2(const float *x, size_t n, uint32_t dim,
                      const float *ct, uint32_t k, float *acc,
                      uint32_t *assign, float *dist);
void kmeans_kern_avx512(const float *x, size_t n, uint32_t dim,
                        const float *ct, uint32_t k, float *acc,
                        uint32_t *assign, float *dist);

#endif
