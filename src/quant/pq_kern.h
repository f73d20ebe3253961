/* pq_kern.h: the lookup-table kernels of pq.h, written once in plain C and
 * compiled per ISA (pq.c, pq_avx2.c, pq_avx512.c) so the compiler
 * vectorizes the loop over the 256 centroids at each width. Included only by
 * those files; defines static functions suffixed with PQ_KERN_SUFFIX. */
#include <stddef.h>
#include <stdint.h>

#define PQ_CAT2(a, b) a##b
#define PQ_CAT(a, b) PQ_CAT2(a, b)

static void PQ_CAT(lut_l2_, PQ_KERN_SUFFIX)(const float *restrict q,
                                            const float *restrict ct,
                                            uint32_t len,
                                            float *restrict lut) {
  for (int c = 0; c < 256; c++) lut[c] = 0.0f;
  for (uint32_t d = 0; d < len; d++) {
    const float v = q[d];
    const float *restrict row = ct + (size_t)d * 256;
    for (int c = 0; c < 256; c++) {
      float t = v - row[c];
      lut[c] += t * t;
    }
  }
}

static void PQ_CAT(lut_neg_dot_, PQ_KERN_SUFFIX)(const float *restrict q,
                                                 const float *restrict ct,
                                                 uint32_t len,
                                                 float *restrict lut) {
  for (int c = 0; c < 256; c++) lut[c] = 0.0f;
  for (uint32_t d = 0; d < len; d++) {
    const float v = q[d];
    const float *restrict row = ct + (size_t)d * 256;
    for (int c = 0; c < 256; c++) lut[c] -= v * row[c];
  }
}
