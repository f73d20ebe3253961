/* f16.c: scalar float16 conversion and the reference kernels (f16.h).
 *
 * Owns the bit-level conversion rules every ISA must reproduce and the
 * dispatch of f16_ops. The SIMD tables live in f16_avx2.c / f16_avx512.c and
 * are only handed out after quant_cpu.c said the CPU runs them.
 * Invariant: f16_from_f32 equals VCVTPS2PH(x, imm=0) bit for bit, for every
 * float including NaN, inf, subnormals and the ties. */
#include <math.h>
#include <string.h>

#include "quant/f16.h"

static inline uint32_t f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

static inline float bits_f32(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

uint16_t f16_from_f32(float f) {
  uint32_t x = f32_bits(f);
  uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
  uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) { /* inf or NaN: F16C keeps the top 10 payload
                              bits and sets the quiet bit */
    if (ax == 0x7f800000u) return sign | 0x7c00u;
    return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
  }
  if (ax >= 0x477ff000u) return sign | 0x7c00u; /* >= 65520 rounds to inf */
  if (ax < 0x38800000u) {
    /* Below 2^-14: a subnormal half (or zero). Adding 0.5 puts the value
     * where one float ulp is 2^-24, the half subnormal step, so the FPU's
     * round-to-nearest-even does the rounding; 0x400 (a carry into the
     * exponent) is the smallest normal half, which is the right answer. */
    float v = bits_f32(ax) + 0.5f;
    return (uint16_t)(sign | (f32_bits(v) - 0x3f000000u));
  }
  /* Normal: rebias the exponent (127 -> 15) and round the 13 dropped
   * mantissa bits to nearest even; a carry into the exponent is correct
   * (it may reach 0x7c00 only for values >= 65520, handled above). */
  uint32_t odd = (ax >> 13) & 1u;
  ax += 0xc8000fffu + odd; /* (15 - 127) << 23, + 0xfff, mod 2^32 */
  return (uint16_t)(sign | (ax >> 13));
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0x1f) return bits_f32(sign | 0x7f800000u | (m << 13));
  if (e == 0) { /* zero or subnormal: m * 2^-24, exact in float */
    float v = (float)m * 0x1p-24f;
    return sign ? -v : v;
  }
  return bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

static void encode_scalar(const float *src, uint16_t *dst, size_t n) {
  for (size_t i = 0; i < n; i++) dst[i] = f16_from_f32(src[i]);
}

static void decode_scalar(const uint16_t *src, float *dst, size_t n) {
  for (size_t i = 0; i < n; i++) dst[i] = f16_to_f32(src[i]);
}

/* The references sum in double: the exact result rounded once. */
static float l2sq_scalar(const float *q, const uint16_t *v, size_t dim) {
  double s = 0;
  for (size_t i = 0; i < dim; i++) {
    double d = (double)q[i] - f16_to_f32(v[i]);
    s += d * d;
  }
  return (float)s;
}

static float dot_scalar(const float *q, const uint16_t *v, size_t dim) {
  double s = 0;
  for (size_t i = 0; i < dim; i++) s += (double)q[i] * f16_to_f32(v[i]);
  return (float)s;
}

static float l1_scalar(const float *q, const uint16_t *v, size_t dim) {
  double s = 0;
  for (size_t i = 0; i < dim; i++) s += fabs((double)q[i] - f16_to_f32(v[i]));
  return (float)s;
}

const f16_ops f16_ops_scalar = {
    .encode = encode_scalar,
    .decode = decode_scalar,
    .l2sq = l2sq_scalar,
    .dot = dot_scalar,
    .l1 = l1_scalar,
    .isa = "scalar",
};

static const f16_ops *const f16_tables[QUANT_ISA_COUNT] = {
    &f16_ops_scalar, &f16_ops_avx2, &f16_ops_avx512};

const f16_ops *f16_ops_isa(quant_isa isa) {
  return quant_isa_runs(isa) ? f16_tables[isa] : NULL;
}

const f16_ops *f16_ops_get(void) { return f16_tables[quant_isa_chosen()]; }
