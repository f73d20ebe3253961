/* dist_avx512.c: the AVX-512 distance kernels (built with -mavx512f/bw/dq/vl).
 *
 * Owns dist_ops_avx512. Does not decide whether this CPU may run them: only
 * dist.c calls in here, after cpuid and XGETBV said yes, so nothing in this
 * file may run at load time. Each kernel keeps four independent 16-lane
 * accumulators (64 floats a trip) because an FMA's result comes back only
 * after ~4 cycles while the loads allow one a cycle; a single accumulator
 * would stall on its own chain. What is left over after the 64-wide loop is
 * done 32 and 16 wide on the otherwise idle accumulators, and the last 1..15
 * floats with one masked load, which reads nothing past a[dim-1] (masked
 * lanes never fault), so any dim >= 1 and any alignment is fine.
 * Invariant: results equal dist_scalar.c up to float summation order. */
#include <immintrin.h>

#include "vec/dist.h"

static inline __m512 l2sq_step(__m512 acc, __m512 a, __m512 b) {
  __m512 d = _mm512_sub_ps(a, b);
  return _mm512_fmadd_ps(d, d, acc);
}

static inline __m512 dot_step(__m512 acc, __m512 a, __m512 b) {
  return _mm512_fmadd_ps(a, b, acc);
}

static inline __m512 l1_step(__m512 acc, __m512 a, __m512 b) {
  return _mm512_add_ps(acc, _mm512_abs_ps(_mm512_sub_ps(a, b)));
}

#define LD(p, i) _mm512_loadu_ps((p) + (i))

/* A macro rather than an inline function taking STEP, so that the step is
 * inlined even in -O1 debug builds. Masked-off lanes load 0.0 in both
 * inputs, and every STEP maps (0, 0) to +0, leaving the accumulator as is. */
#define AVX512_KERNEL(name, STEP)                                              \
  static float name(const float *a, const float *b, size_t dim) {              \
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;                \
    size_t i = 0;                                                              \
    for (; i + 64 <= dim; i += 64) {                                           \
      s0 = STEP(s0, LD(a, i), LD(b, i));                                       \
      s1 = STEP(s1, LD(a, i + 16), LD(b, i + 16));                             \
      s2 = STEP(s2, LD(a, i + 32), LD(b, i + 32));                             \
      s3 = STEP(s3, LD(a, i + 48), LD(b, i + 48));                             \
    }                                                                          \
    if (i + 32 <= dim) {                                                       \
      s0 = STEP(s0, LD(a, i), LD(b, i));                                       \
      s1 = STEP(s1, LD(a, i + 16), LD(b, i + 16));                             \
      i += 32;                                                                 \
    }                                                                          \
    if (i + 16 <= dim) {                                                       \
      s2 = STEP(s2, LD(a, i), LD(b, i));                                       \
      i += 16;                                                                 \
    }                                                                          \
    if (i < dim) {                                                             \
      __mmask16 m = (__mmask16)((1u << (dim - i)) - 1u);                       \
      s3 = STEP(s3, _mm512_maskz_loadu_ps(m, a + i),                           \
                _mm512_maskz_loadu_ps(m, b + i));                              \
    }                                                                          \
    return _mm512_reduce_add_ps(                                               \
        _mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));          \
  }

AVX512_KERNEL(l2sq_avx512, l2sq_step)
AVX512_KERNEL(dot_avx512, dot_step)
AVX512_KERNEL(l1_avx512, l1_step)

/* At -O3 the dot loop is inlined here, so the negation costs nothing. */
static float neg_dot_avx512(const float *a, const float *b, size_t dim) {
  return -dot_avx512(a, b, dim);
}

const dist_ops dist_ops_avx512 = {
    .l2sq = l2sq_avx512,
    .dot = dot_avx512,
    .neg_dot = neg_dot_avx512,
    .l1 = l1_avx512,
    .isa = "avx512",
};
