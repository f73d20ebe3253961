/* kmeans_avx2.c: kmeans_kern.h compiled with the avx2 flags (see there).
 * Owns kmeans_kern_avx2 only; kmeans.c calls it after quant_cpu.c said the
 * level runs. Invariant: same result as kmeans_kern_scalar up to float
 * rounding of the per-centroid sums. */
#include "quant/kmeans_int.h"

#define KMEANS_KERN_NAME kern_avx2
#include "quant/kmeans_kern.h"

void kmeans_kern_avx2(const float *x, size_t n, uint32_t dim,
                      const float *ct, uint32_t k, float *acc,
                      uint32_t *assign, float *dist) {
  kern_avx2(x, n, dim, ct, k, acc, assign, dist);
}
