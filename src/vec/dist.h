/* dist.h: float32 distance kernels with runtime SIMD dispatch.
 *
 * dist_scalar.c is the specification and is always built; dist_avx2.c and
 * dist_avx512.c are compiled with their own flags and chosen once, from cpuid
 * and the OS's register-state support, by dist_init(). QUIVER_SIMD=scalar
 * (or avx2) in the environment caps the choice. Indexes use the "lower is
 * better" form: squared L2, negated dot product, L1. */
#ifndef QV_VEC_DIST_H
#define QV_VEC_DIST_H

#include <stddef.h>

typedef enum vec_metric {
  VEC_L2SQ = 0, /* sum (a-b)^2 */
  VEC_NEG_DOT,  /* -sum a*b: dot and cosine (on unit vectors) */
  VEC_L1,       /* sum |a-b| */
} vec_metric;

typedef float (*vec_dist_fn)(const float *a, const float *b, size_t dim);

typedef struct dist_ops {
  vec_dist_fn l2sq;
  vec_dist_fn dot;
  vec_dist_fn neg_dot;
  vec_dist_fn l1;
  const char *isa; /* "scalar", "avx2" or "avx512" */
} dist_ops;

/* Chooses the kernels once; safe to call from many threads, idempotent. */
void dist_init(void);
/* The chosen kernels (calls dist_init if needed). */
const dist_ops *dist_ops_get(void);
/* The kernels of one ISA ("scalar", "avx2", "avx512"), or NULL when this CPU
 * or build cannot run them. For tests and benchmarks. */
const dist_ops *dist_ops_isa(const char *isa);
/* The lower-is-better function of `m` within `ops`. */
vec_dist_fn dist_fn(const dist_ops *ops, vec_metric m);
/* The table dist_init() picks when QUIVER_SIMD holds `simd_cap` (NULL or ""
 * for no cap): the best ISA this CPU runs, capped at the named one. An
 * unknown value is logged and ignored. Never NULL. Pure apart from the log,
 * so tests can check the env parsing without a fresh process. */
const dist_ops *dist_choose(const char *simd_cap);

/* Euclidean norm, and in-place scaling to unit length (a zero vector is left
 * as it is). Scalar code: called once per write, not per distance. */
float vec_norm(const float *v, size_t dim);
void vec_normalize(float *v, size_t dim);

/* Per-ISA tables, defined in dist_<isa>.c (NULL-free only where built). */
extern const dist_ops dist_ops_scalar;
extern const dist_ops dist_ops_avx2;
extern const dist_ops dist_ops_avx512;

#endif
