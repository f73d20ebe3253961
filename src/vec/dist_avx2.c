/* dist_avx2.c: the AVX2 + FMA distance kernels (built with -mavx2 -mfma).
 *
 * Owns dist_ops_avx2. Does not decide whether this CPU may run them: only
 * dist.c calls in here, after cpuid and XGETBV said yes, so nothing in this
 * file may run at load time. Same shape as dist_avx512.c at half the width:
 * four independent 8-lane accumulators (32 floats a trip) hide the FMA
 * latency, 16- and 8-wide steps use the idle accumulators, and the last
 * 1..7 floats go through one VMASKMOVPS, which neither reads nor faults on
 * masked-off lanes, so nothing past a[dim-1] is touched.
 * Invariant: results equal dist_scalar.c up to float summation order. */
#include <immintrin.h>
#include <stdint.h>

#include "vec/dist.h"

/* tail_mask(r) for r in 1..7: the first r lanes all-ones, the rest zero. */
static const int32_t tail_mask_tbl[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                          0,  0,  0,  0,  0,  0,  0,  0};

static inline __m256i tail_mask(size_t r) {
  return _mm256_loadu_si256((const __m256i *)(tail_mask_tbl + 8 - r));
}

static inline __m256 l2sq_step(__m256 acc, __m256 a, __m256 b) {
  __m256 d = _mm256_sub_ps(a, b);
  return _mm256_fmadd_ps(d, d, acc);
}

static inline __m256 dot_step(__m256 acc, __m256 a, __m256 b) {
  return _mm256_fmadd_ps(a, b, acc);
}

static inline __m256 l1_step(__m256 acc, __m256 a, __m256 b) {
  /* |x| by clearing the sign bit: no compare, no branch. */
  __m256 d = _mm256_sub_ps(a, b);
  return _mm256_add_ps(acc, _mm256_andnot_ps(_mm256_set1_ps(-0.0f), d));
}

static inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

#define LD(p, i) _mm256_loadu_ps((p) + (i))

/* A macro rather than an inline function taking STEP, so that the step is
 * inlined even in -O1 debug builds. Masked-off lanes load 0.0 in both
 * inputs, and every STEP maps (0, 0) to +0, leaving the accumulator as is. */
#define AVX2_KERNEL(name, STEP)                                                \
  static float name(const float *a, const float *b, size_t dim) {              \
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;                \
    size_t i = 0;                                                              \
    for (; i + 32 <= dim; i += 32) {                                           \
      s0 = STEP(s0, LD(a, i), LD(b, i));                                       \
      s1 = STEP(s1, LD(a, i + 8), LD(b, i + 8));                               \
      s2 = STEP(s2, LD(a, i + 16), LD(b, i + 16));                             \
      s3 = STEP(s3, LD(a, i + 24), LD(b, i + 24));                             \
    }                                                                          \
    if (i + 16 <= dim) {                                                       \
      s0 = STEP(s0, LD(a, i), LD(b, i));                                       \
      s1 = STEP(s1, LD(a, i + 8), LD(b, i + 8));                               \
      i += 16;                                                                 \
    }                                                                          \
    if (i + 8 <= dim) {                                                        \
      s2 = STEP(s2, LD(a, i), LD(b, i));                                       \
      i += 8;                                                                  \
    }                                                                          \
    if (i < dim) {                                                             \
      __m256i m = tail_mask(dim - i);                                          \
      s3 = STEP(s3, _mm256_maskload_ps(a + i, m),                              \
                _mm256_maskload_ps(b + i, m));                                 \
    }                                                                          \
    return hsum256(                                                            \
        _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));          \
  }

AVX2_KERNEL(l2sq_avx2, l2sq_step)
AVX2_KERNEL(dot_avx2, dot_step)
AVX2_KERNEL(l1_avx2, l1_step)

/* At -O3 the dot loop is inlined here, so the negation costs nothing. */
static float neg_dot_avx2(const float *a, const float *b, size_t dim) {
  return -dot_avx2(a, b, dim);
}

const dist_ops dist_ops_avx2 = {
    .l2sq = l2sq_avx2,
    .dot = dot_avx2,
    .neg_dot = neg_dot_avx2,
    .l1 = l1_avx2,
    .isa = "avx2",
};
