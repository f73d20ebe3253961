/* f16_avx512.c: float16 kernels with AVX-512 F/BW/VL (built with the
 * AVX-512 flags).
 *
 * Owns f16_ops_avx512. Only f16.c hands it out, after quant_cpu.c checked
 * the CPU. Four 16-lane accumulators hide the FMA latency; the last 1..15
 * values are read with masked loads (AVX-512BW for the halves), which never
 * touch memory past the end and load 0 in both inputs.
 * Invariant: encode is bit-identical to f16_from_f32; distances equal the
 * scalar ones up to float summation order. */
#include <immintrin.h>

#include "quant/f16.h"

static void encode_avx512(const float *src, uint16_t *dst, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256((__m256i *)(dst + i),
                        _mm512_cvtps_ph(_mm512_loadu_ps(src + i),
                                        _MM_FROUND_TO_NEAREST_INT));
  if (i < n) {
    __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
    __m256i h = _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, src + i),
                                _MM_FROUND_TO_NEAREST_INT);
    _mm256_mask_storeu_epi16(dst + i, m, h);
  }
}

static void decode_avx512(const uint16_t *src, float *dst, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(
                                  (const __m256i *)(src + i))));
  if (i < n) {
    __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
    _mm512_mask_storeu_ps(
        dst + i, m, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, src + i)));
  }
}

#define LDH(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p)))
#define LDQ(p) _mm512_loadu_ps(p)

static inline __m512 l2_step(__m512 acc, __m512 a, __m512 b) {
  __m512 d = _mm512_sub_ps(a, b);
  return _mm512_fmadd_ps(d, d, acc);
}
static inline __m512 dot_step(__m512 acc, __m512 a, __m512 b) {
  return _mm512_fmadd_ps(a, b, acc);
}
static inline __m512 l1_step(__m512 acc, __m512 a, __m512 b) {
  return _mm512_add_ps(acc, _mm512_abs_ps(_mm512_sub_ps(a, b)));
}

#define F16_KERNEL(name, STEP)                                                 \
  static float name(const float *q, const uint16_t *v, size_t dim) {           \
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;                \
    size_t i = 0;                                                              \
    for (; i + 64 <= dim; i += 64) {                                           \
      s0 = STEP(s0, LDQ(q + i), LDH(v + i));                                   \
      s1 = STEP(s1, LDQ(q + i + 16), LDH(v + i + 16));                         \
      s2 = STEP(s2, LDQ(q + i + 32), LDH(v + i + 32));                         \
      s3 = STEP(s3, LDQ(q + i + 48), LDH(v + i + 48));                         \
    }                                                                          \
    for (; i + 16 <= dim; i += 16) s0 = STEP(s0, LDQ(q + i), LDH(v + i));      \
    if (i < dim) {                                                             \
      __mmask16 m = (__mmask16)((1u << (dim - i)) - 1u);                       \
      s1 = STEP(s1, _mm512_maskz_loadu_ps(m, q + i),                           \
                _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, v + i)));          \
    }                                                                          \
    return _mm512_reduce_add_ps(                                               \
        _mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));          \
  }

F16_KERNEL(l2sq_avx512, l2_step)
F16_KERNEL(dot_avx512, dot_step)
F16_KERNEL(l1_avx512, l1_step)

const f16_ops f16_ops_avx512 = {
    .encode = encode_avx512,
    .decode = decode_avx512,
    .l2sq = l2sq_avx512,
    .dot = dot_avx512,
    .l1 = l1_avx512,
    .isa = "avx512",
};
