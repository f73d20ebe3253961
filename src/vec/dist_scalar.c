/* dist_scalar.c: the reference distance kernels, and the fallback on CPUs
 * without AVX2.
 *
 * Owns dist_ops_scalar. These loops are the specification the SIMD files are
 * tested against, so they favour accuracy over speed: every product or
 * difference is formed in double and summed in double, which makes the result
 * the exact sum rounded once to float for all realistic inputs. Four
 * interleaved accumulators give the CPU independent add chains (about twice
 * the speed of one chain); with double sums the order changes nothing a float
 * result can show. Invariant: no SIMD intrinsics here, and nothing that needs
 * -ffast-math to be right. */
#include <math.h>

#include "vec/dist.h"

static float l2sq_scalar(const float *a, const float *b, size_t dim) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  size_t i = 0;
  for (; i + 4 <= dim; i += 4) {
    double d0 = (double)a[i] - b[i], d1 = (double)a[i + 1] - b[i + 1];
    double d2 = (double)a[i + 2] - b[i + 2], d3 = (double)a[i + 3] - b[i + 3];
    s0 += d0 * d0;
    s1 += d1 * d1;
    s2 += d2 * d2;
    s3 += d3 * d3;
  }
  for (; i < dim; i++) {
    double d = (double)a[i] - b[i];
    s0 += d * d;
  }
  return (float)((s0 + s1) + (s2 + s3));
}

static double dot_double(const float *a, const float *b, size_t dim) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  size_t i = 0;
  for (; i + 4 <= dim; i += 4) {
    s0 += (double)a[i] * b[i];
    s1 += (double)a[i + 1] * b[i + 1];
    s2 += (double)a[i + 2] * b[i + 2];
    s3 += (double)a[i + 3] * b[i + 3];
  }
  for (; i < dim; i++) s0 += (double)a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

static float dot_scalar(const float *a, const float *b, size_t dim) {
  return (float)dot_double(a, b, dim);
}

static float neg_dot_scalar(const float *a, const float *b, size_t dim) {
  return (float)-dot_double(a, b, dim);
}

static float l1_scalar(const float *a, const float *b, size_t dim) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  size_t i = 0;
  for (; i + 4 <= dim; i += 4) {
    s0 += fabs((double)a[i] - b[i]);
    s1 += fabs((double)a[i + 1] - b[i + 1]);
    s2 += fabs((double)a[i + 2] - b[i + 2]);
    s3 += fabs((double)a[i + 3] - b[i + 3]);
  }
  for (; i < dim; i++) s0 += fabs((double)a[i] - b[i]);
  return (float)((s0 + s1) + (s2 + s3));
}

const dist_ops dist_ops_scalar = {
    .l2sq = l2sq_scalar,
    .dot = dot_scalar,
    .neg_dot = neg_dot_scalar,
    .l1 = l1_scalar,
    .isa = "scalar",
};
