/* sq8_avx2.c: int8 quantization kernels with AVX2 + FMA (built with -mavx2
 * -mfma -mf16c).
 *
 * Owns sq8_ops_avx2. Only sq8.c hands it out, after quant_cpu.c checked the
 * CPU. Asymmetric kernels widen 8 codes to floats per step (two
 * accumulators); symmetric ones widen 16 codes to 16-bit lanes and use
 * VPMADDWD, whose pairwise 32-bit sums cannot overflow (2 * 255^2).
 * Tails go through zero-padded stack buffers, so nothing past the caller's
 * arrays is read. Invariant: integer kernels equal the scalar ones exactly;
 * float kernels up to summation order. */
#include <immintrin.h>
#include <string.h>

#include "quant/sq8.h"

static inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

static inline uint32_t hsum_epi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v),
                            _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return (uint32_t)_mm_cvtsi128_si32(s);
}

/* 8 codes at p as floats. */
static inline __m256 ld8(const uint8_t *p) {
  __m128i b = _mm_loadl_epi64((const __m128i *)p);
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b));
}

static float l2sq_asym_avx2(const float *a, const float *s, const uint8_t *c,
                            size_t dim) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0;
  size_t i = 0;
  for (; i + 16 <= dim; i += 16) {
    __m256 d0 = _mm256_fnmadd_ps(_mm256_loadu_ps(s + i), ld8(c + i),
                                 _mm256_loadu_ps(a + i));
    __m256 d1 = _mm256_fnmadd_ps(_mm256_loadu_ps(s + i + 8), ld8(c + i + 8),
                                 _mm256_loadu_ps(a + i + 8));
    s0 = _mm256_fmadd_ps(d0, d0, s0);
    s1 = _mm256_fmadd_ps(d1, d1, s1);
  }
  for (; i + 8 <= dim; i += 8) {
    __m256 d0 = _mm256_fnmadd_ps(_mm256_loadu_ps(s + i), ld8(c + i),
                                 _mm256_loadu_ps(a + i));
    s0 = _mm256_fmadd_ps(d0, d0, s0);
  }
  if (i < dim) { /* padding: a = s = c = 0 gives a zero term */
    float ab[8] = {0}, sb[8] = {0};
    uint8_t cb[8] = {0};
    size_t r = dim - i;
    memcpy(ab, a + i, r * sizeof(float));
    memcpy(sb, s + i, r * sizeof(float));
    memcpy(cb, c + i, r);
    __m256 d0 = _mm256_fnmadd_ps(_mm256_loadu_ps(sb), ld8(cb),
                                 _mm256_loadu_ps(ab));
    s1 = _mm256_fmadd_ps(d0, d0, s1);
  }
  return hsum(_mm256_add_ps(s0, s1));
}

static float l2sq_asym_g_avx2(const float *a, const uint8_t *c,
                              size_t dim) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0;
  size_t i = 0;
  for (; i + 16 <= dim; i += 16) {
    __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(a + i), ld8(c + i));
    __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 8), ld8(c + i + 8));
    s0 = _mm256_fmadd_ps(d0, d0, s0);
    s1 = _mm256_fmadd_ps(d1, d1, s1);
  }
  for (; i + 8 <= dim; i += 8) {
    __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(a + i), ld8(c + i));
    s0 = _mm256_fmadd_ps(d0, d0, s0);
  }
  if (i < dim) {
    float ab[8] = {0};
    uint8_t cb[8] = {0};
    memcpy(ab, a + i, (dim - i) * sizeof(float));
    memcpy(cb, c + i, dim - i);
    __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(ab), ld8(cb));
    s1 = _mm256_fmadd_ps(d0, d0, s1);
  }
  return hsum(_mm256_add_ps(s0, s1));
}

static float dot_asym_avx2(const float *w, const uint8_t *c, size_t dim) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0;
  size_t i = 0;
  for (; i + 16 <= dim; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), ld8(c + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), ld8(c + i + 8), s1);
  }
  for (; i + 8 <= dim; i += 8)
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), ld8(c + i), s0);
  if (i < dim) {
    float wb[8] = {0};
    uint8_t cb[8] = {0};
    memcpy(wb, w + i, (dim - i) * sizeof(float));
    memcpy(cb, c + i, dim - i);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(wb), ld8(cb), s1);
  }
  return hsum(_mm256_add_ps(s0, s1));
}

static inline __m256i ld16(const uint8_t *p) {
  return _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)p));
}

static uint32_t l2sq_u8_avx2(const uint8_t *a, const uint8_t *b, size_t dim) {
  __m256i acc = _mm256_setzero_si256();
  size_t i = 0;
  for (; i + 16 <= dim; i += 16) {
    __m256i d = _mm256_sub_epi16(ld16(a + i), ld16(b + i));
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(d, d));
  }
  uint32_t s = hsum_epi32(acc);
  for (; i < dim; i++) {
    int d = (int)a[i] - (int)b[i];
    s += (uint32_t)(d * d);
  }
  return s;
}

static uint32_t dot_u8_avx2(const uint8_t *a, const uint8_t *b, size_t dim) {
  __m256i acc = _mm256_setzero_si256();
  size_t i = 0;
  for (; i + 16 <= dim; i += 16)
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(ld16(a + i), ld16(b + i)));
  uint32_t s = hsum_epi32(acc);
  for (; i < dim; i++) s += (uint32_t)a[i] * b[i];
  return s;
}

const sq8_ops sq8_ops_avx2 = {
    .l2sq_asym = l2sq_asym_avx2,
    .l2sq_asym_g = l2sq_asym_g_avx2,
    .dot_asym = dot_asym_avx2,
    .l2sq_u8 = l2sq_u8_avx2,
    .dot_u8 = dot_u8_avx2,
    .isa = "avx2",
};
