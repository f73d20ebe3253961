/* bq_avx2.c: binary-code kernels with AVX2 and POPCNT (built with -mavx2
 * -mfma -mf16c, which implies -mpopcnt in GCC).
 *
 * Owns bq_ops_avx2 and the two kernels the AVX-512 table without
 * VPOPCNTDQ reuses (bq_hamming_popcnt). Only bq.c hands them out, after
 * quant_cpu.c checked the CPU (avx2 level includes popcnt).
 * Hamming: one POPCNT per word into four independent sums. Asymmetric: each
 * byte of a code is broadcast, compared against the lane bits 1..128 to make
 * an 8-lane mask, and the masked weights are added (two accumulators).
 * Invariant: Hamming equals the scalar one exactly; the asymmetric sum up to
 * float summation order. */
#include <immintrin.h>

#include "quant/bq.h"
#include "quant/bq_int.h"

uint32_t bq_hamming_popcnt(const uint64_t *a, const uint64_t *b,
                           size_t n_words) {
  uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  size_t i = 0;
  for (; i + 4 <= n_words; i += 4) {
    s0 += (uint64_t)_mm_popcnt_u64(a[i] ^ b[i]);
    s1 += (uint64_t)_mm_popcnt_u64(a[i + 1] ^ b[i + 1]);
    s2 += (uint64_t)_mm_popcnt_u64(a[i + 2] ^ b[i + 2]);
    s3 += (uint64_t)_mm_popcnt_u64(a[i + 3] ^ b[i + 3]);
  }
  for (; i < n_words; i++) s0 += (uint64_t)_mm_popcnt_u64(a[i] ^ b[i]);
  return (uint32_t)(s0 + s1 + s2 + s3);
}

static float asym_avx2(const float *w, const uint64_t *code, size_t n_words) {
  const __m256i lane_bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  __m256 s0 = _mm256_setzero_ps(), s1 = s0;
  for (size_t i = 0; i < n_words; i++) {
    uint64_t word = code[i];
    const float *wi = w + i * 64;
    for (int k = 0; k < 8; k += 2, word >>= 16) {
      if ((word & 0xffffu) == 0) continue; /* common for sparse planes */
      __m256i b0 = _mm256_set1_epi32((int)(word & 0xffu));
      __m256i b1 = _mm256_set1_epi32((int)((word >> 8) & 0xffu));
      __m256 m0 = _mm256_castsi256_ps(_mm256_cmpeq_epi32(
          _mm256_and_si256(b0, lane_bit), lane_bit));
      __m256 m1 = _mm256_castsi256_ps(_mm256_cmpeq_epi32(
          _mm256_and_si256(b1, lane_bit), lane_bit));
      s0 = _mm256_add_ps(s0, _mm256_and_ps(m0, _mm256_loadu_ps(wi + k * 8)));
      s1 = _mm256_add_ps(s1,
                         _mm256_and_ps(m1, _mm256_loadu_ps(wi + k * 8 + 8)));
    }
  }
  __m256 v = _mm256_add_ps(s0, s1);
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

const bq_ops bq_ops_avx2 = {
    .hamming = bq_hamming_popcnt,
    .asym = asym_avx2,
    .isa = "avx2",
};
