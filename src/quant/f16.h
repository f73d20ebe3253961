/* f16.h: IEEE 754 binary16 ("float16") storage for float32 vectors.
 *
 * Conversion rounds to nearest, ties to even, exactly as the F16C
 * instruction VCVTPS2PH with imm 0 does (subnormals kept, overflow to inf,
 * NaN stays NaN with its payload's top bits and the quiet bit set), so the
 * scalar and SIMD encoders produce identical bits. Distances take a float32
 * query and a float16 stored vector and are "lower is better" like
 * vec/dist.h: squared L2, dot (higher is closer: callers negate), L1.
 *
 * Ownership: kernels borrow their arguments for the call and allocate
 * nothing. Thread-safety: all functions are pure; the tables are constant.
 * Stored vectors are plain little-endian uint16 arrays of `dim` halves. */
#ifndef QV_QUANT_F16_H
#define QV_QUANT_F16_H

#include <stddef.h>
#include <stdint.h>

#include "quant/quant.h"

/* One value each way (scalar, bit-exact with F16C). */
uint16_t f16_from_f32(float f);
float f16_to_f32(uint16_t h);

typedef struct f16_ops {
  /* n floats -> n halves and back; src and dst must not overlap. */
  void (*encode)(const float *src, uint16_t *dst, size_t n);
  void (*decode)(const uint16_t *src, float *dst, size_t n);
  /* float32 query `q` against float16 vector `v`, both of `dim` values. */
  float (*l2sq)(const float *q, const uint16_t *v, size_t dim);
  float (*dot)(const float *q, const uint16_t *v, size_t dim);
  float (*l1)(const float *q, const uint16_t *v, size_t dim);
  const char *isa;
} f16_ops;

/* The table of quant_isa_chosen(). Never NULL. */
const f16_ops *f16_ops_get(void);
/* The table of one ISA, or NULL when this CPU cannot run it (tests, bench). */
const f16_ops *f16_ops_isa(quant_isa isa);

/* The scalar reference sums in double and rounds once (the specification);
 * SIMD tables sum in float lanes, so they differ by summation order only. */
extern const f16_ops f16_ops_scalar;
extern const f16_ops f16_ops_avx2;
extern const f16_ops f16_ops_avx512;

#endif
