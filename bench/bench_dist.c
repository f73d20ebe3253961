/* bench_dist.c: throughput of the distance kernels, per ISA.
 *
 * Not a test and not in the CMake build: timings decide nothing here, they
 * only inform. Two measurements per ISA this CPU runs:
 *   scan   one query against N x dim stored vectors (default 60,000 x 784,
 *          188 MB, the Fashion-MNIST shape), as a brute-force search does:
 *          bytes of stored vectors read per second, median of 5 passes;
 *   cached one pair of vectors that stay in L1, as HNSW's hot neighbours
 *          do: nanoseconds per call at dims 128, 512, 784.
 *
 * Build and run (from the repository root, after building libquiver):
 *   gcc -O3 -Iinclude -Isrc bench/bench_dist.c build-vec/libquiver.a \
 *       -lpthread -lm -ljansson -o /tmp/bench_dist && /tmp/bench_dist
 * Optional arguments: n dim. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "vec/dist.h"

#define RUNS 5

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float randf(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (float)(rng >> 40) / (float)(1u << 24) * 2.0f - 1.0f;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return v[n / 2];
}

/* Keeps the compiler from dropping calls whose results are unused. */
static volatile float sink;

static double scan_gbs(vec_dist_fn f, const float *q, const float *base,
                       size_t n, size_t dim) {
  double t[RUNS];
  for (int r = -1; r < RUNS; r++) { /* r = -1 warms caches and TLB */
    float acc = 0;
    double t0 = now_s();
    for (size_t i = 0; i < n; i++) acc += f(q, base + i * dim, dim);
    double dt = now_s() - t0;
    sink = acc;
    if (r >= 0) t[r] = dt;
  }
  return (double)n * dim * sizeof(float) / median(t, RUNS) / 1e9;
}

static double cached_ns(vec_dist_fn f, const float *a, const float *b,
                        size_t dim) {
  const size_t calls = 2000000;
  double t[RUNS];
  for (int r = 0; r < RUNS; r++) {
    float acc = 0;
    double t0 = now_s();
    /* Calls go through a pointer, so the compiler cannot hoist them; the
     * CPU may overlap consecutive calls, as it does in a real search. */
    for (size_t i = 0; i < calls; i++) acc += f(a, b, dim);
    t[r] = now_s() - t0;
    sink = acc;
  }
  return median(t, RUNS) / (double)calls * 1e9;
}

int main(int argc, char **argv) {
  size_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 60000;
  size_t dim = argc > 2 ? strtoull(argv[2], NULL, 10) : 784;
  size_t bytes = n * dim * sizeof(float);
  float *base = aligned_alloc(64, (bytes + 63) / 64 * 64);
  float *q = aligned_alloc(64, 4096 * sizeof(float));
  float *p = aligned_alloc(64, 4096 * sizeof(float));
  if (!base || !q || !p) return 1;
  for (size_t i = 0; i < n * dim; i++) base[i] = randf();
  for (size_t i = 0; i < 4096; i++) q[i] = randf(), p[i] = randf();

  printf("scan: %zu x %zu floats (%.1f MB), median of %d passes\n", n,
         dim, bytes / 1e6, RUNS);
  static const char *const isas[] = {"scalar", "avx2", "avx512"};
  for (int i = 0; i < 3; i++) {
    const dist_ops *ops = dist_ops_isa(isas[i]);
    if (ops == NULL) {
      printf("  %-7s not available\n", isas[i]);
      continue;
    }
    printf("  %-7s l2sq %6.2f GB/s   dot %6.2f GB/s\n", ops->isa,
           scan_gbs(ops->l2sq, q, base, n, dim),
           scan_gbs(ops->dot, q, base, n, dim));
  }

  static const size_t dims[] = {128, 512, 784};
  printf("cached: one pair in L1, ns per call (l2sq / neg_dot / l1)\n");
  for (int i = 0; i < 3; i++) {
    const dist_ops *ops = dist_ops_isa(isas[i]);
    if (ops == NULL) continue;
    for (int d = 0; d < 3; d++)
      printf("  %-7s dim %4zu: %6.2f / %6.2f / %6.2f\n", ops->isa, dims[d],
             cached_ns(ops->l2sq, q, p, dims[d]),
             cached_ns(ops->neg_dot, q, p, dims[d]),
             cached_ns(ops->l1, q, p, dims[d]));
  }
  free(base);
  free(q);
  free(p);
  return 0;
}
