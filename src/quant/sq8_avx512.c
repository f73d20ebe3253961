/* sq8_avx512.c: int8 quantization kernels with AVX-512 F/BW/VL, and the
 * VNNI variants of the symmetric ones (built with the AVX-512 flags; the
 * VNNI functions carry target("avx512vnni") themselves).
 *
 * Owns sq8_ops_avx512 and sq8_ops_avx512_vnni. Only sq8.c hands them out,
 * after quant_cpu.c checked the CPU (and quant_cpu_has_vnni() for the
 * second). Asymmetric kernels widen 16 codes to floats per step with four
 * accumulators; symmetric ones widen 32 codes to 16 bits (VPMADDWD, or
 * VPDPWSSD with VNNI). The VNNI dot uses VPDPBUSD on 64 bytes at once: it
 * multiplies unsigned by *signed* bytes, so b is shifted to b - 128 (xor
 * 0x80) and 128 * sum(a) (VPSADBW) is added back. Tails use masked loads,
 * which read nothing past the end and give 0 in both inputs.
 * Invariant: integer kernels equal the scalar ones exactly; float kernels up
 * to summation order. */
#include <immintrin.h>

#include "quant/sq8.h"

static inline __m512 ld16f(const uint8_t *p) {
  return _mm512_cvtepi32_ps(
      _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p)));
}

static inline __m512 ld16f_mask(__mmask16 m, const uint8_t *p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, p)));
}

#define L2_STEP(acc, off)                                                      \
  do {                                                                         \
    __m512 d_ = _mm512_fnmadd_ps(_mm512_loadu_ps(s + i + (off)),              \
                                 ld16f(c + i + (off)),                         \
                                 _mm512_loadu_ps(a + i + (off)));              \
    acc = _mm512_fmadd_ps(d_, d_, acc);                                        \
  } while (0)

static float l2sq_asym_avx512(const float *a, const float *s,
                              const uint8_t *c, size_t dim) {
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  size_t i = 0;
  for (; i + 64 <= dim; i += 64) {
    L2_STEP(s0, 0);
    L2_STEP(s1, 16);
    L2_STEP(s2, 32);
    L2_STEP(s3, 48);
  }
  for (; i + 16 <= dim; i += 16) L2_STEP(s0, 0);
  if (i < dim) {
    __mmask16 m = (__mmask16)((1u << (dim - i)) - 1u);
    __m512 d = _mm512_fnmadd_ps(_mm512_maskz_loadu_ps(m, s + i),
                                ld16f_mask(m, c + i),
                                _mm512_maskz_loadu_ps(m, a + i));
    s1 = _mm512_fmadd_ps(d, d, s1);
  }
  return _mm512_reduce_add_ps(
      _mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

#define L2G_STEP(acc, off)                                                     \
  do {                                                                         \
    __m512 d_ = _mm512_sub_ps(_mm512_loadu_ps(a + i + (off)),                  \
                              ld16f(c + i + (off)));                           \
    acc = _mm512_fmadd_ps(d_, d_, acc);                                        \
  } while (0)

static float l2sq_asym_g_avx512(const float *a, const uint8_t *c,
                                size_t dim) {
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  size_t i = 0;
  for (; i + 64 <= dim; i += 64) {
    L2G_STEP(s0, 0);
    L2G_STEP(s1, 16);
    L2G_STEP(s2, 32);
    L2G_STEP(s3, 48);
  }
  for (; i + 16 <= dim; i += 16) L2G_STEP(s0, 0);
  if (i < dim) {
    __mmask16 m = (__mmask16)((1u << (dim - i)) - 1u);
    __m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, a + i),
                             ld16f_mask(m, c + i));
    s1 = _mm512_fmadd_ps(d, d, s1);
  }
  return _mm512_reduce_add_ps(
      _mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

static float dot_asym_avx512(const float *w, const uint8_t *c, size_t dim) {
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  size_t i = 0;
  for (; i + 64 <= dim; i += 64) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), ld16f(c + i), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 16), ld16f(c + i + 16), s1);
    s2 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 32), ld16f(c + i + 32), s2);
    s3 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 48), ld16f(c + i + 48), s3);
  }
  for (; i + 16 <= dim; i += 16)
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), ld16f(c + i), s0);
  if (i < dim) {
    __mmask16 m = (__mmask16)((1u << (dim - i)) - 1u);
    s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w + i),
                         ld16f_mask(m, c + i), s1);
  }
  return _mm512_reduce_add_ps(
      _mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

static inline __m512i ld32w(const uint8_t *p) {
  return _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)p));
}

static inline __m512i ld32w_mask(__mmask32 m, const uint8_t *p) {
  return _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(m, p));
}

static inline __mmask32 mask32(size_t r) {
  return (__mmask32)(r >= 32 ? 0xffffffffu : ((1u << r) - 1u));
}

/* Lanes hold unsigned partial sums; widened to 64 bits before adding,
 * because _mm512_reduce_add_epi32 adds in signed int and the total may
 * pass 2^31 (it is below 2^32 for dim <= 66051). */
static inline uint32_t reduce_u32(__m512i v) {
  __m512i lo = _mm512_cvtepu32_epi64(_mm512_castsi512_si256(v));
  __m512i hi = _mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64(v, 1));
  return (uint32_t)_mm512_reduce_add_epi64(_mm512_add_epi64(lo, hi));
}

/* The same for signed lanes (the VNNI dot's sum of a * (b - 128)). */
static inline int64_t reduce_i64(__m512i v) {
  __m512i lo = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(v));
  __m512i hi = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(v, 1));
  return _mm512_reduce_add_epi64(_mm512_add_epi64(lo, hi));
}

static uint32_t l2sq_u8_avx512(const uint8_t *a, const uint8_t *b,
                               size_t dim) {
  __m512i s0 = _mm512_setzero_si512(), s1 = s0;
  size_t i = 0;
  for (; i + 64 <= dim; i += 64) {
    __m512i d0 = _mm512_sub_epi16(ld32w(a + i), ld32w(b + i));
    __m512i d1 = _mm512_sub_epi16(ld32w(a + i + 32), ld32w(b + i + 32));
    s0 = _mm512_add_epi32(s0, _mm512_madd_epi16(d0, d0));
    s1 = _mm512_add_epi32(s1, _mm512_madd_epi16(d1, d1));
  }
  for (; i < dim; i += 32) {
    __mmask32 m = mask32(dim - i);
    __m512i d = _mm512_sub_epi16(ld32w_mask(m, a + i), ld32w_mask(m, b + i));
    s0 = _mm512_add_epi32(s0, _mm512_madd_epi16(d, d));
  }
  return reduce_u32(_mm512_add_epi32(s0, s1));
}

static uint32_t dot_u8_avx512(const uint8_t *a, const uint8_t *b,
                              size_t dim) {
  __m512i s0 = _mm512_setzero_si512(), s1 = s0;
  size_t i = 0;
  for (; i + 64 <= dim; i += 64) {
    s0 = _mm512_add_epi32(s0, _mm512_madd_epi16(ld32w(a + i), ld32w(b + i)));
    s1 = _mm512_add_epi32(
        s1, _mm512_madd_epi16(ld32w(a + i + 32), ld32w(b + i + 32)));
  }
  for (; i < dim; i += 32) {
    __mmask32 m = mask32(dim - i);
    s0 = _mm512_add_epi32(
        s0, _mm512_madd_epi16(ld32w_mask(m, a + i), ld32w_mask(m, b + i)));
  }
  return reduce_u32(_mm512_add_epi32(s0, s1));
}

#define VNNI __attribute__((target("avx512vnni")))

VNNI static uint32_t l2sq_u8_vnni(const uint8_t *a, const uint8_t *b,
                                  size_t dim) {
  __m512i s0 = _mm512_setzero_si512(), s1 = s0;
  size_t i = 0;
  for (; i + 64 <= dim; i += 64) {
    __m512i d0 = _mm512_sub_epi16(ld32w(a + i), ld32w(b + i));
    __m512i d1 = _mm512_sub_epi16(ld32w(a + i + 32), ld32w(b + i + 32));
    s0 = _mm512_dpwssd_epi32(s0, d0, d0);
    s1 = _mm512_dpwssd_epi32(s1, d1, d1);
  }
  for (; i < dim; i += 32) {
    __mmask32 m = mask32(dim - i);
    __m512i d = _mm512_sub_epi16(ld32w_mask(m, a + i), ld32w_mask(m, b + i));
    s0 = _mm512_dpwssd_epi32(s0, d, d);
  }
  return reduce_u32(_mm512_add_epi32(s0, s1));
}

VNNI static uint32_t dot_u8_vnni(const uint8_t *a, const uint8_t *b,
                                 size_t dim) {
  const __m512i flip = _mm512_set1_epi8((char)0x80);
  const __m512i zero = _mm512_setzero_si512();
  __m512i acc = zero, sums = zero; /* sum a (b - 128); sum a (64-bit) */
  size_t i = 0;
  for (; i < dim; i += 64) {
    size_t r = dim - i;
    __mmask64 m = r >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << r) - 1);
    __m512i va = _mm512_maskz_loadu_epi8(m, a + i);
    __m512i vb = _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, b + i), flip);
    acc = _mm512_dpbusd_epi32(acc, va, vb);
    sums = _mm512_add_epi64(sums, _mm512_sad_epu8(va, zero));
  }
  int64_t t = reduce_i64(acc) +
              128 * (int64_t)_mm512_reduce_add_epi64(sums);
  return (uint32_t)t;
}

const sq8_ops sq8_ops_avx512 = {
    .l2sq_asym = l2sq_asym_avx512,
    .l2sq_asym_g = l2sq_asym_g_avx512,
    .dot_asym = dot_asym_avx512,
    .l2sq_u8 = l2sq_u8_avx512,
    .dot_u8 = dot_u8_avx512,
    .isa = "avx512",
};

const sq8_ops sq8_ops_avx512_vnni = {
    .l2sq_asym = l2sq_asym_avx512,
    .l2sq_asym_g = l2sq_asym_g_avx512,
    .dot_asym = dot_asym_avx512,
    .l2sq_u8 = l2sq_u8_vnni,
    .dot_u8 = dot_u8_vnni,
    .isa = "avx512-vnni",
};
