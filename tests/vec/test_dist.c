/* test_dist.c: the distance kernels and their dispatch (src/vec/dist*.c).
 *
 * Every SIMD table this CPU can run is checked against dist_ops_scalar, the
 * specification: on random data within a summation-order tolerance, on
 * exactly representable data bit for bit, and element by element against a
 * guard page so that a skipped, doubled or over-read tail shows up exactly.
 * Tests of an ISA the CPU lacks are skipped, not passed. Dispatch tests that
 * depend on the environment run in a forked child, the first caller of
 * dist_ops_get() in that process. */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"
#include "vec/dist.h"

#define SEED 20240611u

/* ---- helpers ------------------------------------------------------------ */

enum kernel { K_L2SQ, K_DOT, K_NEG_DOT, K_L1, K_COUNT };
static const char *const kernel_name[] = {"l2sq", "dot", "neg_dot", "l1"};

static vec_dist_fn kernel_of(const dist_ops *ops, enum kernel k) {
  switch (k) {
  case K_L2SQ: return ops->l2sq;
  case K_DOT: return ops->dot;
  case K_NEG_DOT: return ops->neg_dot;
  default: return ops->l1;
  }
}

/* The table of `isa`, or skip the test when this CPU cannot run it. */
static const dist_ops *need_isa(const char *isa) {
  const dist_ops *ops = dist_ops_isa(isa);
  if (ops == NULL) cr_skip_test("this CPU cannot run %s", isa);
  cr_assert_str_eq(ops->isa, isa);
  return ops;
}

/* sum |term_i| in double: the scale that float rounding errors of any
 * summation order are proportional to (for dot it can dwarf the result). */
static double magnitude(enum kernel k, const float *a, const float *b,
                        size_t dim) {
  double m = 0;
  for (size_t i = 0; i < dim; i++) {
    double d = (double)a[i] - b[i];
    if (k == K_L2SQ) m += d * d;
    else if (k == K_L1) m += fabs(d);
    else m += fabs((double)a[i] * b[i]);
  }
  return m;
}

/* Float error bound for a sum of `dim` terms kept in at least 8 parallel
 * lanes: each lane adds at most dim/8 terms, the lanes are combined in a
 * tree of depth <= 6, and forming each term (sub, mul or fma) rounds twice
 * at most. Doubled for margin; plus one rounding of the result itself. */
static double tolerance(size_t dim, double mag) {
  double steps = (double)(dim / 8 + 1) + 6.0 + 2.0;
  return 2.0 * steps * (FLT_EPSILON / 2) * mag + FLT_MIN;
}

static float *alloc_floats(size_t n) {
  float *p = aligned_alloc(64, ((n * sizeof(float)) + 63) / 64 * 64);
  cr_assert_not_null(p);
  return p;
}

static const size_t big_dims[] = {512, 784, 1000, 4096, 65535};
#define MAX_DIM 65535
#define PAD 80 /* room for window shifts and misalignment */

/* Runs `fn` on every dim 1..300 and big_dims, with a and b misaligned by
 * 0..3 floats independently; `check` is told each case. */
typedef void (*case_fn)(const float *a, const float *b, size_t dim,
                        size_t off_a, size_t off_b, void *ctx);

static void for_each_case(const float *A, const float *B, case_fn check,
                          void *ctx) {
  for (size_t t = 1; t <= 300 + sizeof big_dims / sizeof big_dims[0]; t++) {
    size_t d = t <= 300 ? t : big_dims[t - 301];
    /* Shift the window by whole cache lines per dim so that dims do not all
     * see prefixes of the same numbers. */
    size_t shift = 16 * (d % 4);
    for (size_t oa = 0; oa < 4; oa++)
      for (size_t ob = 0; ob < 4; ob++)
        check(A + shift + oa, B + shift + ob, d, oa, ob, ctx);
  }
}

static void fill_random(float *v, size_t n, uint64_t seed) {
  uint64_t s = seed;
  for (size_t i = 0; i < n; i++) v[i] = tu_randf(&s);
}

/* ---- SIMD against scalar on random data --------------------------------- */

struct vs_scalar {
  const dist_ops *ops;
  enum kernel k;
  size_t n_checked;
};

static void check_vs_scalar(const float *a, const float *b, size_t dim,
                            size_t oa, size_t ob, void *vctx) {
  struct vs_scalar *c = vctx;
  float want = kernel_of(&dist_ops_scalar, c->k)(a, b, dim);
  float got = kernel_of(c->ops, c->k)(a, b, dim);
  double tol = tolerance(dim, magnitude(c->k, a, b, dim));
  cr_assert(fabs((double)got - want) <= tol,
            "%s %s: dim %zu, offsets %zu/%zu, seed %u: got %.9g, scalar "
            "%.9g, |diff| %.3g > tolerance %.3g",
            c->ops->isa, kernel_name[c->k], dim, oa, ob, SEED, got, want,
            fabs((double)got - want), tol);
  c->n_checked++;
}

static void simd_vs_scalar(const char *isa, enum kernel k) {
  const dist_ops *ops = need_isa(isa);
  float *A = alloc_floats(MAX_DIM + PAD), *B = alloc_floats(MAX_DIM + PAD);
  fill_random(A, MAX_DIM + PAD, SEED);
  fill_random(B, MAX_DIM + PAD, SEED + 1);
  struct vs_scalar c = {ops, k, 0};
  for_each_case(A, B, check_vs_scalar, &c);
  cr_assert_eq(c.n_checked, (300 + 5) * 16);
  free(A);
  free(B);
}

Test(dist_avx2, l2sq_matches_scalar) { simd_vs_scalar("avx2", K_L2SQ); }
Test(dist_avx2, dot_matches_scalar) { simd_vs_scalar("avx2", K_DOT); }
Test(dist_avx2, neg_dot_matches_scalar) { simd_vs_scalar("avx2", K_NEG_DOT); }
Test(dist_avx2, l1_matches_scalar) { simd_vs_scalar("avx2", K_L1); }
Test(dist_avx512, l2sq_matches_scalar) { simd_vs_scalar("avx512", K_L2SQ); }
Test(dist_avx512, dot_matches_scalar) { simd_vs_scalar("avx512", K_DOT); }
Test(dist_avx512, neg_dot_matches_scalar) {
  simd_vs_scalar("avx512", K_NEG_DOT);
}
Test(dist_avx512, l1_matches_scalar) { simd_vs_scalar("avx512", K_L1); }

/* The reference itself against a naive long double loop: it must be the
 * exact sum rounded to float, give or take one rounding. */
static void check_scalar_vs_naive(const float *a, const float *b, size_t dim,
                                  size_t oa, size_t ob, void *vctx) {
  enum kernel k = *(enum kernel *)vctx;
  long double s = 0;
  for (size_t i = 0; i < dim; i++) {
    long double d = (long double)a[i] - b[i];
    if (k == K_L2SQ) s += d * d;
    else if (k == K_L1) s += fabsl(d);
    else s += (long double)a[i] * b[i];
  }
  if (k == K_NEG_DOT) s = -s;
  float got = kernel_of(&dist_ops_scalar, k)(a, b, dim);
  double mag = magnitude(k, a, b, dim);
  double tol = 2.0 * FLT_EPSILON * fabs((double)s) + 1e-12 * mag + FLT_MIN;
  cr_assert(fabs((double)got - (double)s) <= tol,
            "scalar %s: dim %zu, offsets %zu/%zu: got %.9g, exact %.12Lg",
            kernel_name[k], dim, oa, ob, got, s);
}

Test(dist_scalar, every_kernel_is_the_exact_sum_rounded_to_float) {
  float *A = alloc_floats(MAX_DIM + PAD), *B = alloc_floats(MAX_DIM + PAD);
  fill_random(A, MAX_DIM + PAD, SEED + 2);
  fill_random(B, MAX_DIM + PAD, SEED + 3);
  for (enum kernel k = 0; k < K_COUNT; k++)
    for_each_case(A, B, check_scalar_vs_naive, &k);
  free(A);
  free(B);
}

/* ---- bit-exact on exactly representable data ---------------------------- */

/* Quarters in [-2, 2]: every difference, product and partial sum up to dim
 * 65535 is a multiple of 1/16 below 2^20, exact in float, so any summation
 * order must give the scalar result bit for bit. */
static void fill_quarters(float *v, size_t n, uint64_t seed) {
  uint64_t s = seed;
  for (size_t i = 0; i < n; i++)
    v[i] = (float)((int)(tu_rand(&s) % 17) - 8) / 4;
}

struct exact_ctx {
  const dist_ops *ops;
};

static void check_exact(const float *a, const float *b, size_t dim, size_t oa,
                        size_t ob, void *vctx) {
  const dist_ops *ops = ((struct exact_ctx *)vctx)->ops;
  for (enum kernel k = 0; k < K_COUNT; k++) {
    float want = kernel_of(&dist_ops_scalar, k)(a, b, dim);
    float got = kernel_of(ops, k)(a, b, dim);
    cr_assert(got == want,
              "%s %s: dim %zu, offsets %zu/%zu: got %.9g, scalar %.9g",
              ops->isa, kernel_name[k], dim, oa, ob, got, want);
  }
}

static void simd_exact(const char *isa) {
  struct exact_ctx c = {need_isa(isa)};
  float *A = alloc_floats(MAX_DIM + PAD), *B = alloc_floats(MAX_DIM + PAD);
  fill_quarters(A, MAX_DIM + PAD, SEED + 4);
  fill_quarters(B, MAX_DIM + PAD, SEED + 5);
  for_each_case(A, B, check_exact, &c);
  free(A);
  free(B);
}

Test(dist_avx2, exact_on_representable_data) { simd_exact("avx2"); }
Test(dist_avx512, exact_on_representable_data) { simd_exact("avx512"); }

/* ---- every element counts, nothing outside [0, dim) is read ------------- */

/* Two pages: `dim` floats end exactly at the start of an inaccessible page,
 * and the float just before them is a NaN that would poison any sum. */
struct guarded {
  char *base;
  size_t page;
};

static float *guarded_vec(struct guarded *g, size_t dim) {
  float *end = (float *)(g->base + g->page);
  float *v = end - dim;
  v[-1] = NAN;
  return v;
}

static struct guarded guarded_new(void) {
  struct guarded g;
  g.page = (size_t)sysconf(_SC_PAGESIZE);
  g.base = mmap(NULL, 2 * g.page, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  cr_assert_neq(g.base, MAP_FAILED);
  cr_assert_eq(mprotect(g.base + g.page, g.page, PROT_NONE), 0);
  return g;
}

static void guarded_free(struct guarded *g) { munmap(g->base, 2 * g->page); }

/* a = 3 at position p and 0 elsewhere, b = all ones: the exact answers are
 * l2sq dim+3, dot 3, l1 dim+1. Dropping or doubling any element changes
 * them; reading past the end faults, reading before the start gives NaN. */
static void every_element_counts(const char *isa) {
  const dist_ops *ops = need_isa(isa);
  struct guarded ga = guarded_new(), gb = guarded_new();
  size_t max_dim = ga.page / sizeof(float) - 1;
  static const size_t extra[] = {512, 784, 1000};
  for (size_t t = 1; t <= 300 + 3; t++) {
    size_t dim = t <= 300 ? t : extra[t - 301];
    if (dim > max_dim) continue;
    float *a = guarded_vec(&ga, dim), *b = guarded_vec(&gb, dim);
    for (size_t i = 0; i < dim; i++) b[i] = 1.0f;
    for (size_t p = 0; p < dim; p++) {
      memset(a, 0, dim * sizeof *a);
      a[p] = 3.0f;
      float l2 = ops->l2sq(a, b, dim), dot = ops->dot(a, b, dim);
      float nd = ops->neg_dot(a, b, dim), l1 = ops->l1(a, b, dim);
      cr_assert(l2 == (float)(dim + 3) && dot == 3.0f && nd == -3.0f &&
                    l1 == (float)(dim + 1),
                "%s dim %zu, element %zu: l2sq %g (want %zu), dot %g, "
                "neg_dot %g, l1 %g (want %zu)",
                isa, dim, p, l2, dim + 3, dot, nd, l1, dim + 1);
    }
  }
  guarded_free(&ga);
  guarded_free(&gb);
}

Test(dist_scalar, every_element_counts_and_no_overread) {
  every_element_counts("scalar");
}
Test(dist_avx2, every_element_counts_and_no_overread) {
  every_element_counts("avx2");
}
Test(dist_avx512, every_element_counts_and_no_overread) {
  every_element_counts("avx512");
}

/* ---- special values ----------------------------------------------------- */

static const char *const all_isas[] = {"scalar", "avx2", "avx512"};
#define N_ISAS 3

Test(dist, zero_vectors_give_zero_everywhere) {
  float z[1000] = {0};
  for (int i = 0; i < N_ISAS; i++) {
    const dist_ops *ops = dist_ops_isa(all_isas[i]);
    if (ops == NULL) continue;
    for (size_t dim = 1; dim <= 1000; dim += 37)
      for (enum kernel k = 0; k < K_COUNT; k++)
        cr_assert(kernel_of(ops, k)(z, z, dim) == 0.0f, "%s %s dim %zu",
                  ops->isa, kernel_name[k], dim);
  }
}

Test(dist, identical_vectors_give_exactly_zero_l2sq_and_l1) {
  float *v = alloc_floats(MAX_DIM);
  fill_random(v, MAX_DIM, SEED + 6);
  for (int i = 0; i < N_ISAS; i++) {
    const dist_ops *ops = dist_ops_isa(all_isas[i]);
    if (ops == NULL) continue;
    for (size_t t = 1; t <= 305; t++) {
      size_t dim = t <= 300 ? t : big_dims[t - 301];
      cr_assert(ops->l2sq(v, v, dim) == 0.0f, "%s dim %zu", ops->isa, dim);
      cr_assert(ops->l1(v, v, dim) == 0.0f, "%s dim %zu", ops->isa, dim);
    }
  }
  free(v);
}

/* a = -x, b = +x with |x| = 1.5: (a-b)^2 = 9, |a-b| = 3, a*b = -2.25 per
 * element, all exact. */
Test(dist, negative_values_give_exact_sums) {
  float a[1000], b[1000];
  for (size_t i = 0; i < 1000; i++) {
    b[i] = (i % 3 == 0) ? -1.5f : 1.5f;
    a[i] = -b[i];
  }
  for (int i = 0; i < N_ISAS; i++) {
    const dist_ops *ops = dist_ops_isa(all_isas[i]);
    if (ops == NULL) continue;
    for (size_t dim = 1; dim <= 1000; dim++) {
      cr_assert(ops->l2sq(a, b, dim) == 9.0f * dim, "%s dim %zu", ops->isa,
                dim);
      cr_assert(ops->l1(a, b, dim) == 3.0f * dim, "%s dim %zu", ops->isa, dim);
      cr_assert(ops->dot(a, b, dim) == -2.25f * dim, "%s dim %zu", ops->isa,
                dim);
      cr_assert(ops->neg_dot(a, b, dim) == 2.25f * dim, "%s dim %zu",
                ops->isa, dim);
    }
  }
}

Test(dist, neg_dot_is_exactly_minus_dot) {
  float *A = alloc_floats(1000), *B = alloc_floats(1000);
  fill_random(A, 1000, SEED + 7);
  fill_random(B, 1000, SEED + 8);
  for (int i = 0; i < N_ISAS; i++) {
    const dist_ops *ops = dist_ops_isa(all_isas[i]);
    if (ops == NULL) continue;
    for (size_t dim = 1; dim <= 1000; dim++)
      cr_assert(ops->neg_dot(A, B, dim) == -ops->dot(A, B, dim),
                "%s dim %zu", ops->isa, dim);
  }
  free(A);
  free(B);
}

/* ---- dispatch ----------------------------------------------------------- */

/* The best table this CPU runs, found through dist_ops_isa alone. */
static const dist_ops *best_available(void) {
  for (int i = N_ISAS - 1; i >= 0; i--)
    if (dist_ops_isa(all_isas[i]) != NULL) return dist_ops_isa(all_isas[i]);
  return NULL;
}

Test(dist_dispatch, scalar_is_always_available) {
  cr_assert_eq(dist_ops_isa("scalar"), &dist_ops_scalar);
}

Test(dist_dispatch, unknown_isa_name_gives_null) {
  cr_assert_null(dist_ops_isa("neon"));
  cr_assert_null(dist_ops_isa(""));
  cr_assert_null(dist_ops_isa(NULL));
}

Test(dist_dispatch, no_cap_picks_the_best_available) {
  cr_assert_eq(dist_choose(NULL), best_available());
  cr_assert_eq(dist_choose(""), best_available());
}

Test(dist_dispatch, cap_lowers_the_choice) {
  cr_assert_eq(dist_choose("scalar"), &dist_ops_scalar);
  cr_assert_eq(dist_choose("SCALAR"), &dist_ops_scalar);
  const dist_ops *avx2 = dist_ops_isa("avx2");
  cr_assert_eq(dist_choose("avx2"), avx2 ? avx2 : &dist_ops_scalar);
}

Test(dist_dispatch, cap_never_picks_what_the_cpu_lacks) {
  /* avx512 is the highest cap, so it must give whatever the CPU can do. */
  cr_assert_eq(dist_choose("avx512"), best_available());
  if (dist_ops_isa("avx2") == NULL)
    cr_assert_eq(dist_choose("avx2"), &dist_ops_scalar);
}

Test(dist_dispatch, unknown_cap_is_ignored) {
  cr_assert_eq(dist_choose("sse9"), best_available());
}

/* Forks a child that sets QUIVER_SIMD (unset when NULL) and exits 0 iff
 * dist_ops_get()->isa is `want`. */
static void expect_env_choice(const char *env, const char *want) {
  pid_t pid = fork();
  cr_assert_neq(pid, -1);
  if (pid == 0) {
    if (env) setenv("QUIVER_SIMD", env, 1);
    else unsetenv("QUIVER_SIMD");
    const dist_ops *ops = dist_ops_get();
    _exit(ops != NULL && strcmp(ops->isa, want) == 0 ? 0 : 1);
  }
  int status = 0;
  cr_assert_eq(waitpid(pid, &status, 0), pid);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
            "QUIVER_SIMD=%s: dist_ops_get() did not choose %s",
            env ? env : "(unset)", want);
}

Test(dist_dispatch, env_scalar_forces_the_reference_kernels) {
  expect_env_choice("scalar", "scalar");
}

Test(dist_dispatch, env_unset_gives_the_best_available) {
  expect_env_choice(NULL, best_available()->isa);
}

Test(dist_dispatch, env_avx2_caps_at_avx2) {
  expect_env_choice("avx2", dist_ops_isa("avx2") ? "avx2" : "scalar");
}

static void *get_ops(void *arg) {
  (void)arg;
  return (void *)dist_ops_get();
}

Test(dist_dispatch, concurrent_first_calls_agree) {
  pthread_t t[8];
  void *got[8];
  for (int i = 0; i < 8; i++)
    cr_assert_eq(pthread_create(&t[i], NULL, get_ops, NULL), 0);
  for (int i = 0; i < 8; i++) cr_assert_eq(pthread_join(t[i], &got[i]), 0);
  for (int i = 0; i < 8; i++) {
    cr_assert_not_null(got[i]);
    cr_assert_eq(got[i], got[0]);
  }
  dist_init(); /* idempotent: the choice does not change */
  cr_assert_eq(dist_ops_get(), got[0]);
}

Test(dist_dispatch, dist_fn_maps_each_metric) {
  const dist_ops *ops = dist_ops_get();
  cr_assert_eq(dist_fn(ops, VEC_L2SQ), ops->l2sq);
  cr_assert_eq(dist_fn(ops, VEC_NEG_DOT), ops->neg_dot);
  cr_assert_eq(dist_fn(ops, VEC_L1), ops->l1);
}

/* ---- norms -------------------------------------------------------------- */

Test(vec_norm, pythagorean_triple_is_exact) {
  float v[2] = {3.0f, -4.0f};
  cr_assert_eq(vec_norm(v, 2), 5.0f);
}

Test(vec_normalize, gives_unit_norm_and_keeps_direction) {
  static const float scales[] = {1e-3f, 1.0f, 1e4f};
  float *v = alloc_floats(1000), *orig = alloc_floats(1000);
  uint64_t s = SEED + 9;
  for (size_t t = 0; t < 3; t++)
    for (size_t dim = 1; dim <= 1000; dim += (dim < 300 ? 1 : 97)) {
      for (size_t i = 0; i < dim; i++)
        orig[i] = v[i] = tu_randf(&s) * scales[t];
      if (vec_norm(v, dim) == 0.0f) continue;
      double n0 = vec_norm(orig, dim);
      vec_normalize(v, dim);
      double n = 0;
      for (size_t i = 0; i < dim; i++) n += (double)v[i] * v[i];
      cr_assert(fabs(sqrt(n) - 1.0) <= 4 * FLT_EPSILON,
                "dim %zu scale %g: norm after normalize %.9g", dim,
                scales[t], sqrt(n));
      for (size_t i = 0; i < dim; i++)
        cr_assert(fabs(v[i] * n0 - orig[i]) <=
                      4 * FLT_EPSILON * (fabs(orig[i]) + n0 * FLT_EPSILON),
                  "dim %zu, element %zu changed direction", dim, i);
    }
  free(v);
  free(orig);
}

Test(vec_normalize, leaves_zero_vector_unchanged) {
  float v[300], z[300];
  for (size_t i = 0; i < 300; i++) v[i] = z[i] = (i % 2) ? -0.0f : 0.0f;
  for (size_t dim = 1; dim <= 300; dim++) {
    vec_normalize(v, dim);
    cr_assert_eq(memcmp(v, z, sizeof v), 0, "dim %zu", dim);
  }
  cr_assert_eq(vec_norm(v, 300), 0.0f);
}
