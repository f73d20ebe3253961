/* f16_avx2.c: float16 kernels with F16C + AVX2 + FMA (built with -mavx2
 * -mfma -mf16c).
 *
 * Owns f16_ops_avx2. Only f16.c hands this table out, after quant_cpu.c
 * checked the CPU; nothing here runs at load time. Kernels keep two 8-lane
 * accumulators; the last dim % 8 values are copied into zero-padded stack
 * buffers so no load reaches past the caller's arrays.
 * Invariant: encode is bit-identical to f16_from_f32 (VCVTPS2PH imm 0 is
 * round-to-nearest-even); distances equal the scalar ones up to float
 * summation order. */
#include <immintrin.h>
#include <string.h>

#include "quant/f16.h"

static void encode_avx2(const float *src, uint16_t *dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128((__m128i *)(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i),
                                     _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; i++) dst[i] = f16_from_f32(src[i]);
}

static void decode_avx2(const uint16_t *src, float *dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(
                                  (const __m128i *)(src + i))));
  for (; i < n; i++) dst[i] = f16_to_f32(src[i]);
}

#define LDH(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))

/* Pads the tail (r < 8 values) into zeroed buffers: both inputs are 0 in
 * the padding, and every step maps (0, 0) to +0. */
#define TAIL(q, v, i, r, qb, vb)                                               \
  float qb[8] = {0};                                                           \
  uint16_t vb[8] = {0};                                                        \
  memcpy(qb, (q) + (i), (r) * sizeof(float));                                  \
  memcpy(vb, (v) + (i), (r) * sizeof(uint16_t))

static inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

static inline __m256 l2_step(__m256 acc, __m256 a, __m256 b) {
  __m256 d = _mm256_sub_ps(a, b);
  return _mm256_fmadd_ps(d, d, acc);
}
static inline __m256 dot_step(__m256 acc, __m256 a, __m256 b) {
  return _mm256_fmadd_ps(a, b, acc);
}
static inline __m256 l1_step(__m256 acc, __m256 a, __m256 b) {
  __m256 d = _mm256_sub_ps(a, b);
  return _mm256_add_ps(acc, _mm256_andnot_ps(_mm256_set1_ps(-0.0f), d));
}

#define F16_KERNEL(name, STEP)                                                 \
  static float name(const float *q, const uint16_t *v, size_t dim) {           \
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;                                  \
    size_t i = 0;                                                              \
    for (; i + 16 <= dim; i += 16) {                                           \
      s0 = STEP(s0, _mm256_loadu_ps(q + i), LDH(v + i));                       \
      s1 = STEP(s1, _mm256_loadu_ps(q + i + 8), LDH(v + i + 8));               \
    }                                                                          \
    if (i + 8 <= dim) {                                                        \
      s0 = STEP(s0, _mm256_loadu_ps(q + i), LDH(v + i));                       \
      i += 8;                                                                  \
    }                                                                          \
    if (i < dim) {                                                             \
      TAIL(q, v, i, dim - i, qb, vb);                                          \
      s1 = STEP(s1, _mm256_loadu_ps(qb), LDH(vb));                             \
    }                                                                          \
    return hsum(_mm256_add_ps(s0, s1));                                        \
  }

F16_KERNEL(l2sq_avx2, l2_step)
F16_KERNEL(dot_avx2, dot_step)
F16_KERNEL(l1_avx2, l1_step)

const f16_ops f16_ops_avx2 = {
    .encode = encode_avx2,
    .decode = decode_avx2,
    .l2sq = l2sq_avx2,
    .dot = dot_avx2,
    .l1 = l1_avx2,
    .isa = "avx2",
};
