/* kmeans.c: k-means++ seeding, Lloyd iterations, empty-cluster repair and
 * the (threaded) nearest-centroid assignment (kmeans.h).
 *
 * Owns the clustering; PQ (pq.c) and IVF (ivf.c) call it. Distances:
 * vectors of >= KMEANS_SHORT_DIM floats use dist.h's dot kernel with
 * |x|^2 + |c|^2 - 2<x,c>, over blocks of points so each centroid is read
 * from memory once per block rather than once per point; shorter ones (PQ
 * sub-vectors) use kmeans_kern.h, vectorized across centroids, because a
 * kernel call per 2..16 floats would cost more than the arithmetic.
 * Invariant: results depend on the seed and data only, never on n_threads:
 * threads split the points of an assignment, and the updates that follow
 * run on one thread in a fixed order. */
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "quant/kmeans.h"
#include "quant/kmeans_int.h"
#include "quant/quant.h"
#include "vec/dist.h"

#define KMEANS_SHORT_DIM 32 /* below: the transposed kernel */
#define BLOCK_POINTS 32     /* points per block of the long-vector path:
                               32 * 784 floats = 100 KB stays in L2 */

#define KMEANS_KERN_NAME kern_scalar
#include "quant/kmeans_kern.h"

void kmeans_kern_scalar(const float *x, size_t n, uint32_t dim,
                        const float *ct, uint32_t k, float *acc,
                        uint32_t *assign, float *dist) {
  kern_scalar(x, n, dim, ct, k, acc, assign, dist);
}

void kmeans_params_init(kmeans_params *p, uint32_t k) {
  p->k = k;
  p->n_iter = KMEANS_ITER_DEFAULT;
  p->max_per_centroid = KMEANS_MAX_PER_CENTROID_DEFAULT;
  p->n_threads = 1;
  p->seed = 0x6b6d65616e73ull; /* "kmeans" */
}

static uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static double rand01(uint64_t *s) {
  return (double)(splitmix64(s) >> 11) * 0x1p-53;
}

/* ---- assignment --------------------------------------------------------- */

typedef struct assign_job {
  const float *cent, *ct, *cnorm;
  uint32_t k, dim;
  const float *x;
  size_t lo, hi;
  uint32_t *assign;
  float *dist;
  kmeans_kern_fn kern;
  vec_dist_fn dot;
  float *scratch; /* k floats (short path) */
} assign_job;

static void assign_long(const assign_job *j) {
  float bestd[BLOCK_POINTS];
  uint32_t best[BLOCK_POINTS];
  float xnorm[BLOCK_POINTS];
  for (size_t b = j->lo; b < j->hi; b += BLOCK_POINTS) {
    size_t nb = j->hi - b < BLOCK_POINTS ? j->hi - b : BLOCK_POINTS;
    for (size_t i = 0; i < nb; i++) {
      const float *xi = j->x + (b + i) * j->dim;
      xnorm[i] = j->dot(xi, xi, j->dim);
      bestd[i] = __builtin_inff();
      best[i] = 0;
    }
    for (uint32_t c = 0; c < j->k; c++) {
      const float *cc = j->cent + (size_t)c * j->dim;
      for (size_t i = 0; i < nb; i++) {
        float d = j->cnorm[c] - 2.0f * j->dot(j->x + (b + i) * j->dim, cc,
                                              j->dim);
        if (d < bestd[i]) bestd[i] = d, best[i] = c;
      }
    }
    for (size_t i = 0; i < nb; i++) {
      j->assign[b + i] = best[i];
      if (j->dist != NULL) {
        float d = bestd[i] + xnorm[i];
        j->dist[b + i] = d > 0 ? d : 0; /* cancellation may dip below 0 */
      }
    }
  }
}

static void *assign_thread(void *arg) {
  const assign_job *j = arg;
  if (j->ct != NULL)
    j->kern(j->x + j->lo * j->dim, j->hi - j->lo, j->dim, j->ct, j->k,
            j->scratch, j->assign + j->lo,
            j->dist != NULL ? j->dist + j->lo : NULL);
  else
    assign_long(j);
  return NULL;
}

static kmeans_kern_fn short_kernel(void) {
  switch (quant_isa_chosen()) {
  case QUANT_ISA_AVX512: return kmeans_kern_avx512;
  case QUANT_ISA_AVX2: return kmeans_kern_avx2;
  default: return kmeans_kern_scalar;
  }
}

qv_rc kmeans_assign(const float *centroids, uint32_t k, uint32_t dim,
                    const float *x, size_t n, uint32_t n_threads,
                    uint32_t *assign, float *dist, qv_err *err) {
  if (n_threads == 0)
    return qv_err_set(err, QV_EINVAL, "kmeans: 0 threads");
  if (n == 0) return QV_OK;
  if ((size_t)n_threads > n) n_threads = (uint32_t)n;
  bool is_short = dim < KMEANS_SHORT_DIM;
  /* short: transposed centroids + per-thread accumulators; long: norms */
  size_t extra = is_short ? (size_t)k * dim + (size_t)k * n_threads : k;
  float *buf = qv_malloc(extra * sizeof(float));
  assign_job *jobs = qv_calloc(n_threads, sizeof *jobs);
  pthread_t *tid = qv_calloc(n_threads, sizeof *tid);
  qv_rc rc = QV_OK;
  if (buf == NULL || jobs == NULL || tid == NULL) {
    rc = qv_err_set(err, QV_ENOMEM, "kmeans: no memory to assign %zu points",
                    n);
    goto out;
  }
  const float *ct = NULL, *cnorm = NULL;
  vec_dist_fn dot = dist_ops_get()->dot;
  if (is_short) {
    float *t = buf;
    for (uint32_t c = 0; c < k; c++)
      for (uint32_t d = 0; d < dim; d++)
        t[(size_t)d * k + c] = centroids[(size_t)c * dim + d];
    ct = t;
  } else {
    for (uint32_t c = 0; c < k; c++) {
      const float *cc = centroids + (size_t)c * dim;
      buf[c] = dot(cc, cc, dim);
    }
    cnorm = buf;
  }
  uint32_t started = 0;
  for (uint32_t t = 0; t < n_threads; t++) {
    assign_job *j = &jobs[t];
    *j = (assign_job){.cent = centroids, .ct = ct, .cnorm = cnorm, .k = k,
                      .dim = dim, .x = x, .lo = n * t / n_threads,
                      .hi = n * (t + 1) / n_threads, .assign = assign,
                      .dist = dist, .kern = short_kernel(), .dot = dot,
                      .scratch = is_short ? buf + (size_t)k * dim +
                                                (size_t)k * t
                                          : NULL};
    if (t == 0) continue; /* the calling thread takes the first range */
    if (pthread_create(&tid[t], NULL, assign_thread, j) != 0) break;
    started = t;
  }
  assign_thread(&jobs[0]);
  for (uint32_t t = 1; t <= started; t++) pthread_join(tid[t], NULL);
  /* A thread that could not start: do its share here (same result). */
  for (uint32_t t = started + 1; t < n_threads; t++) assign_thread(&jobs[t]);
out:
  qv_free(buf);
  qv_free(jobs);
  qv_free(tid);
  return rc;
}

/* ---- training ----------------------------------------------------------- */

static float l2sq_any(const float *a, const float *b, uint32_t dim,
                      vec_dist_fn l2) {
  if (dim >= KMEANS_SHORT_DIM) return l2(a, b, dim);
  float s = 0;
  for (uint32_t d = 0; d < dim; d++) {
    float t = a[d] - b[d];
    s += t * t;
  }
  return s;
}

/* k-means++ (Arthur & Vassilvitskii 2007): each next seed is a point drawn
 * with probability proportional to its squared distance to the nearest
 * seed so far. `mind` is m floats of scratch. */
static void seed_plus_plus(const float *x, size_t m, uint32_t dim, uint32_t k,
                           uint64_t *rng, float *mind, float *cent) {
  vec_dist_fn l2 = dist_ops_get()->l2sq;
  size_t first = (size_t)(rand01(rng) * (double)m);
  memcpy(cent, x + first * dim, dim * sizeof(float));
  for (size_t i = 0; i < m; i++) mind[i] = l2sq_any(x + i * dim, cent, dim, l2);
  for (uint32_t c = 1; c < k; c++) {
    double total = 0;
    for (size_t i = 0; i < m; i++) total += mind[i];
    size_t pick = 0;
    if (total > 0) {
      double r = rand01(rng) * total, run = 0;
      for (pick = 0; pick + 1 < m; pick++) {
        run += mind[pick];
        if (run > r && mind[pick] > 0) break;
      }
    } else { /* every point sits on a seed: duplicates; repair splits them */
      pick = (size_t)(rand01(rng) * (double)m);
    }
    float *cc = cent + (size_t)c * dim;
    memcpy(cc, x + pick * dim, dim * sizeof(float));
    for (size_t i = 0; i < m; i++) {
      float d = l2sq_any(x + i * dim, cc, dim, l2);
      if (d < mind[i]) mind[i] = d;
    }
  }
}

/* Re-seeds each empty cluster by splitting a cluster drawn with probability
 * proportional to its size (faiss's rule): both halves move apart by a
 * relative 1/1024 plus a tiny absolute nudge (for zero components), and the
 * counts are split so a second empty cluster picks elsewhere. */
static uint32_t repair_empty(float *cent, double *count, uint32_t k,
                             uint32_t dim, size_t n_train, uint64_t *rng) {
  const float eps = 1.0f / 1024;
  uint32_t repaired = 0;
  for (uint32_t ci = 0; ci < k; ci++) {
    if (count[ci] > 0) continue;
    uint32_t cj = 0;
    for (;;) {
      double r = rand01(rng) * (double)n_train, run = 0;
      for (cj = 0; cj + 1 < k; cj++) {
        run += count[cj];
        if (run > r) break;
      }
      if (count[cj] > 1) break; /* a singleton cannot be split */
    }
    float *a = cent + (size_t)ci * dim, *b = cent + (size_t)cj * dim;
    for (uint32_t d = 0; d < dim; d++) {
      float nudge = (d % 2 ? eps : -eps) * 1e-3f;
      a[d] = b[d] * (1 + eps) + nudge;
      b[d] = b[d] * (1 - eps) - nudge;
    }
    count[ci] = count[cj] / 2;
    count[cj] -= count[ci];
    repaired++;
  }
  return repaired;
}

qv_rc kmeans_train(const float *x, size_t n, uint32_t dim,
                   const kmeans_params *p, float *centroids,
                   kmeans_stats *stats, qv_err *err) {
  uint32_t k = p->k;
  if (k == 0 || dim == 0 || n < k || p->n_threads == 0)
    return qv_err_set(err, QV_EINVAL,
                      "kmeans: %zu points of %u dimensions into %u clusters "
                      "with %u threads",
                      n, dim, k, p->n_threads);
  uint64_t rng = p->seed;
  size_t per = p->max_per_centroid ? p->max_per_centroid : 1;
  size_t ns = (size_t)k * per < n ? (size_t)k * per : n;
  size_t m = (size_t)k * KMEANS_SEED_PER_CENTROID;
  if (m > ns) m = ns;
  uint32_t *perm = qv_malloc(n * sizeof(uint32_t));
  float *sample = NULL;
  uint32_t *assign = qv_malloc(ns * sizeof(uint32_t));
  float *dist = qv_malloc(ns * sizeof(float));
  double *sum = qv_malloc(((size_t)k * dim + k) * sizeof(double));
  qv_rc rc = QV_OK;
  if (perm == NULL || assign == NULL || dist == NULL || sum == NULL) {
    rc = qv_err_set(err, QV_ENOMEM, "kmeans: no memory for %zu points", n);
    goto out;
  }
  /* A random order of the points: the first ns are the training sample,
   * the first m of those the seeding sample. Partial Fisher-Yates. */
  for (size_t i = 0; i < n; i++) perm[i] = (uint32_t)i;
  for (size_t i = 0; i < ns && i + 1 < n; i++) {
    size_t j = i + (size_t)(rand01(&rng) * (double)(n - i));
    uint32_t t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  sample = qv_malloc(ns * (size_t)dim * sizeof(float));
  if (sample == NULL) {
    rc = qv_err_set(err, QV_ENOMEM, "kmeans: no memory for %zu points", ns);
    goto out;
  }
  for (size_t i = 0; i < ns; i++)
    memcpy(sample + i * dim, x + (size_t)perm[i] * dim, dim * sizeof(float));
  seed_plus_plus(sample, m, dim, k, &rng, dist, centroids);

  double *count = sum + (size_t)k * dim;
  double objective = 0;
  uint32_t n_repair = 0;
  for (uint32_t it = 0; it < p->n_iter; it++) {
    rc = kmeans_assign(centroids, k, dim, sample, ns, p->n_threads, assign,
                       dist, err);
    if (rc != QV_OK) goto out;
    objective = 0;
    memset(sum, 0, ((size_t)k * dim + k) * sizeof(double));
    for (size_t i = 0; i < ns; i++) {
      double *s = sum + (size_t)assign[i] * dim;
      const float *xi = sample + i * dim;
      for (uint32_t d = 0; d < dim; d++) s[d] += xi[d];
      count[assign[i]] += 1;
      objective += dist[i];
    }
    objective /= (double)ns;
    for (uint32_t c = 0; c < k; c++) {
      if (count[c] == 0) continue;
      for (uint32_t d = 0; d < dim; d++)
        centroids[(size_t)c * dim + d] =
            (float)(sum[(size_t)c * dim + d] / count[c]);
    }
    n_repair += repair_empty(centroids, count, k, dim, ns, &rng);
  }
  if (stats != NULL) {
    if (p->n_iter == 0) { /* seeds only: measure them */
      rc = kmeans_assign(centroids, k, dim, sample, ns, p->n_threads, assign,
                         dist, err);
      if (rc != QV_OK) goto out;
      objective = 0;
      for (size_t i = 0; i < ns; i++) objective += dist[i];
      objective /= (double)ns;
    }
    stats->objective = objective;
    stats->n_repair = n_repair;
    stats->n_train = ns;
  }
out:
  qv_free(perm);
  qv_free(sample);
  qv_free(assign);
  qv_free(dist);
  qv_free(sum);
  return rc;
}
