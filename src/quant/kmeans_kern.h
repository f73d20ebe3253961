/* kmeans_kern.h: the nearest-centroid kernel for short vectors, written
 * once in plain C and compiled three times (kmeans.c, kmeans_avx2.c,
 * kmeans_avx512.c) so the compiler vectorizes it at each ISA's width.
 * Included only by those files; defines one static function named by
 * KMEANS_KERN_NAME and nothing else.
 *
 * Centroids come transposed (ct[d * k + c]) so the inner loop runs over
 * centroids with unit stride; `acc` is k floats of scratch. Ties go to the
 * lowest index. */
#include <stddef.h>
#include <stdint.h>

static void KMEANS_KERN_NAME(const float *restrict x, size_t n,
                             uint32_t dim, const float *restrict ct,
                             uint32_t k, float *restrict acc,
                             uint32_t *assign, float *dist) {
  for (size_t i = 0; i < n; i++) {
    const float *xi = x + i * dim;
    for (uint32_t c = 0; c < k; c++) acc[c] = 0.0f;
    for (uint32_t d = 0; d < dim; d++) {
      const float v = xi[d];
      const float *restrict row = ct + (size_t)d * k;
      for (uint32_t c = 0; c < k; c++) {
        float t = v - row[c];
        acc[c] += t * t;
      }
    }
    uint32_t best = 0;
    float bd = acc[0];
    for (uint32_t c = 1; c < k; c++)
      if (acc[c] < bd) bd = acc[c], best = c;
    assign[i] = best;
    if (dist != NULL) dist[i] = bd;
  }
}
