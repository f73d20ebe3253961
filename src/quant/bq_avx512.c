/* bq_avx512.c: binary-code kernels with AVX-512 F/BW/VL, and Hamming with
 * VPOPCNTQ (target("avx512vpopcntdq") on that function only).
 *
 * Owns bq_ops_avx512 and bq_ops_avx512_vpopcnt. Only bq.c hands them out,
 * after quant_cpu.c checked the CPU (and quant_cpu_has_vpopcntdq() for the
 * second). The asymmetric kernel uses each 16 bits of a code directly as an
 * AVX-512 mask: acc += w[16 lanes] where the bit is set, four accumulators.
 * Hamming XORs 8 words per step and counts with VPOPCNTQ; the tail is a
 * masked load (zero words add nothing).
 * Invariant: Hamming equals the scalar one exactly; the asymmetric sum up to
 * float summation order. */
#include <immintrin.h>

#include "quant/bq.h"
#include "quant/bq_int.h"

/* Codes are read 16 bits at a time straight into mask registers (a
 * may_alias view, so the uint64_t words can be read as uint16_t), and each
 * 16 weights are loaded under that mask (zeroing) and added. Measured: the
 * same speed as merge-masked adds, and as eight accumulators instead of
 * four (~34 M codes/s at 784 dims on Zen 5, against ~190 M for Hamming);
 * the masked loads, not the add chains, are the limit. */
typedef uint16_t u16_alias __attribute__((may_alias));

#define MADD(acc, j)                                                           \
  acc = _mm512_add_ps(                                                         \
      acc, _mm512_maskz_loadu_ps((__mmask16)c[i + (j)], w + (i + (j)) * 16))

static float asym_avx512(const float *w, const uint64_t *code,
                         size_t n_words) {
  const u16_alias *c = (const u16_alias *)code;
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  for (size_t i = 0; i < n_words * 4; i += 4) {
    MADD(s0, 0);
    MADD(s1, 1);
    MADD(s2, 2);
    MADD(s3, 3);
  }
  return _mm512_reduce_add_ps(
      _mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

__attribute__((target("avx512vpopcntdq"))) static uint32_t
hamming_vpopcnt(const uint64_t *a, const uint64_t *b, size_t n_words) {
  __m512i acc = _mm512_setzero_si512();
  size_t i = 0;
  for (; i + 8 <= n_words; i += 8) {
    __m512i x = _mm512_xor_si512(_mm512_loadu_si512(a + i),
                                 _mm512_loadu_si512(b + i));
    acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(x));
  }
  if (i < n_words) {
    __mmask8 m = (__mmask8)((1u << (n_words - i)) - 1u);
    __m512i x = _mm512_xor_si512(_mm512_maskz_loadu_epi64(m, a + i),
                                 _mm512_maskz_loadu_epi64(m, b + i));
    acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(x));
  }
  return (uint32_t)_mm512_reduce_add_epi64(acc);
}

const bq_ops bq_ops_avx512 = {
    .hamming = bq_hamming_popcnt,
    .asym = asym_avx512,
    .isa = "avx512",
};

const bq_ops bq_ops_avx512_vpopcnt = {
    .hamming = hamming_vpopcnt,
    .asym = asym_avx512,
    .isa = "avx512-vpopcntdq",
};
