/* test_f16.c: float16 conversion and kernels (src/quant/f16*.c).
 *
 * The scalar converter is checked against IEEE rules (exhaustive round trip
 * of all 65,536 halves, ties to even, overflow, subnormals, relative error
 * <= 2^-11), every SIMD encoder bit for bit against it, and every SIMD
 * distance kernel against the double-summing scalar reference for dims
 * 1..300, 512 and 784 at unaligned addresses. ISAs the CPU lacks are
 * skipped, not passed. */
#include "quant/f16.h"
#include "qtest.h"

static uint32_t fbits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

static float bitsf(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

Test(f16, every_half_survives_a_round_trip) {
  for (uint32_t h = 0; h < 65536; h++) {
    bool nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0;
    uint16_t back = f16_from_f32(f16_to_f32((uint16_t)h));
    if (nan)
      cr_assert_eq(back, h | 0x200, "NaN %04x -> %04x", h, back);
    else
      cr_assert_eq(back, h, "%04x -> %g -> %04x", h,
                   (double)f16_to_f32((uint16_t)h), back);
  }
}

Test(f16, known_values_and_ties_round_to_even) {
  cr_assert_eq(f16_from_f32(1.0f), 0x3c00);
  cr_assert_eq(f16_from_f32(-2.0f), 0xc000);
  cr_assert_eq(f16_from_f32(65504.0f), 0x7bff);
  cr_assert_eq(f16_from_f32(65519.99f), 0x7bff);
  cr_assert_eq(f16_from_f32(65520.0f), 0x7c00);   /* tie -> even = inf */
  cr_assert_eq(f16_from_f32(1.0f + 0x1p-11f), 0x3c00); /* tie -> even */
  cr_assert_eq(f16_from_f32(1.0f + 3 * 0x1p-11f), 0x3c02); /* tie -> even */
  cr_assert_eq(f16_from_f32(0x1p-24f), 0x0001);   /* smallest subnormal */
  cr_assert_eq(f16_from_f32(0x1p-25f), 0x0000);   /* tie -> even (0) */
  cr_assert_eq(f16_from_f32(0x1.8p-25f), 0x0001); /* above the tie */
  cr_assert_eq(f16_from_f32(-0.0f), 0x8000);
  cr_assert_eq(f16_from_f32(__builtin_inff()), 0x7c00);
  cr_assert_eq(f16_from_f32(bitsf(0x7f800001u)) & 0x7e00, 0x7e00);
}

Test(f16, relative_error_is_at_most_two_to_minus_eleven) {
  uint64_t s = 99;
  for (int i = 0; i < 200000; i++) {
    /* log-uniform magnitudes over the normal half range */
    float e = (float)(tu_rand(&s) % 30) - 14.0f;
    float f = ldexpf(1.0f + (float)(tu_rand(&s) % 1000000) / 1e6f, (int)e);
    if (f > 65504.0f) continue;
    float back = f16_to_f32(f16_from_f32(f));
    cr_assert_leq(fabs((double)back - f) / f, 0x1p-11, "%.9g -> %.9g",
                  (double)f, (double)back);
  }
}

/* Random bit patterns (all exponents, NaNs included) and values near the
 * rounding boundaries. */
static void conversion_inputs(float *x, size_t n) {
  uint64_t s = 7;
  for (size_t i = 0; i < n; i++) {
    uint32_t u = (uint32_t)tu_rand(&s);
    if (i % 3 == 1) u = (u & 0x80000fffu) | 0x38000000u | ((i % 64) << 23);
    if (i % 3 == 2) u = (u & 0x8000ffffu) | 0x33000000u; /* subnormal range */
    x[i] = bitsf(u);
  }
}

static void check_encode(quant_isa isa) {
  const f16_ops *ops = f16_ops_isa(isa);
  if (ops == NULL) cr_skip_test("this CPU cannot run %s", quant_isa_name(isa));
  enum { N = 1 << 16 };
  float *x = malloc((N + 1) * sizeof(float));
  uint16_t *a = malloc((N + 1) * 2), *b = malloc((N + 1) * 2);
  float *back = malloc((N + 1) * sizeof(float));
  conversion_inputs(x + 1, N);
  f16_ops_scalar.encode(x + 1, a + 1, N);
  for (size_t len = 1; len < 40; len++) { /* tails, unaligned */
    memset(b, 0xee, (N + 1) * 2);
    ops->encode(x + 1, b + 1, len);
    cr_assert_eq(memcmp(a + 1, b + 1, len * 2), 0, "%s len %zu", ops->isa,
                 len);
    cr_assert_eq(b[len + 1], 0xeeee, "%s wrote past %zu", ops->isa, len);
  }
  ops->encode(x + 1, b + 1, N);
  for (size_t i = 1; i <= N; i++)
    cr_assert_eq(a[i], b[i], "%s: %08x -> %04x, scalar %04x", ops->isa,
                 fbits(x[i]), b[i], a[i]);
  ops->decode(a + 1, back + 1, N);
  for (size_t i = 1; i <= N; i++) {
    float want = f16_to_f32(a[i]);
    cr_assert(fbits(back[i]) == fbits(want) || (isnan(want) && isnan(back[i])),
              "%s decode %04x", ops->isa, a[i]);
  }
  free(x);
  free(a);
  free(b);
  free(back);
}

Test(f16, avx2_encoder_matches_scalar_bit_for_bit) {
  check_encode(QUANT_ISA_AVX2);
}
Test(f16, avx512_encoder_matches_scalar_bit_for_bit) {
  check_encode(QUANT_ISA_AVX512);
}

static void check_kernels(quant_isa isa) {
  const f16_ops *ops = f16_ops_isa(isa);
  if (ops == NULL) cr_skip_test("this CPU cannot run %s", quant_isa_name(isa));
  float *q = malloc((784 + 8) * sizeof(float));
  uint16_t *v = malloc((784 + 8) * 2);
  float *vf = malloc(784 * sizeof(float));
  for (size_t di = 0; di < QT_N_DIMS; di++) {
    size_t dim = qt_dim(di);
    size_t oq = di % 5, ov = (di / 5) % 3; /* unaligned starts */
    qt_fill(q + oq, dim, 2.0f, 1000 + di);
    qt_fill(vf, dim, 2.0f, 2000 + di);
    f16_ops_scalar.encode(vf, v + ov, dim);
    double ml2 = 0, mdot = 0, ml1 = 0;
    for (size_t i = 0; i < dim; i++) {
      double d = (double)q[oq + i] - f16_to_f32(v[ov + i]);
      ml2 += d * d;
      ml1 += fabs(d);
      mdot += fabs((double)q[oq + i] * f16_to_f32(v[ov + i]));
    }
    float r, s;
    r = f16_ops_scalar.l2sq(q + oq, v + ov, dim);
    s = ops->l2sq(q + oq, v + ov, dim);
    cr_assert_leq(fabs((double)r - s), qt_tol(dim, ml2), "%s l2 dim %zu",
                  ops->isa, dim);
    r = f16_ops_scalar.dot(q + oq, v + ov, dim);
    s = ops->dot(q + oq, v + ov, dim);
    cr_assert_leq(fabs((double)r - s), qt_tol(dim, mdot), "%s dot dim %zu",
                  ops->isa, dim);
    r = f16_ops_scalar.l1(q + oq, v + ov, dim);
    s = ops->l1(q + oq, v + ov, dim);
    cr_assert_leq(fabs((double)r - s), qt_tol(dim, ml1), "%s l1 dim %zu",
                  ops->isa, dim);
  }
  free(q);
  free(v);
  free(vf);
}

Test(f16, avx2_kernels_match_scalar) { check_kernels(QUANT_ISA_AVX2); }
Test(f16, avx512_kernels_match_scalar) { check_kernels(QUANT_ISA_AVX512); }

Test(f16, scalar_l2_is_the_distance_to_the_decoded_vector) {
  float q[33], x[33], d[33];
  uint16_t h[33];
  qt_fill(q, 33, 3.0f, 5);
  qt_fill(x, 33, 3.0f, 6);
  f16_ops_scalar.encode(x, h, 33);
  f16_ops_scalar.decode(h, d, 33);
  double want = 0;
  for (int i = 0; i < 33; i++) want += ((double)q[i] - d[i]) * (q[i] - d[i]);
  cr_assert_float_eq(f16_ops_scalar.l2sq(q, h, 33), want, 1e-5 * want);
}

Test(f16, dispatch_table_is_one_the_cpu_runs) {
  const f16_ops *ops = f16_ops_get();
  cr_assert_not_null(ops);
  cr_assert_str_eq(ops->isa, quant_isa_name(quant_isa_chosen()));
}
