/* kmeans.h: k-means clustering under squared L2, for IVF coarse centroids
 * and PQ codebooks.
 *
 * k-means++ seeding on a subsample, then Lloyd iterations on a training
 * sample of at most k * max_per_centroid points; a cluster that empties is
 * re-seeded by splitting a populous one (so all k centroids stay distinct
 * and used). Deterministic: the same data, parameters and seed give the same
 * centroids whatever n_threads is (threads only split the assignment, whose
 * result does not depend on the split).
 *
 * Ownership: the caller owns every array; nothing is kept after a call.
 * Thread-safety: calls share no state; each may use n_threads threads. */
#ifndef QV_QUANT_KMEANS_H
#define QV_QUANT_KMEANS_H

#include <stddef.h>
#include <stdint.h>

#include "quiver.h"

#define KMEANS_ITER_DEFAULT 20
#define KMEANS_MAX_PER_CENTROID_DEFAULT 256
/* k-means++ reads at most this many points per centroid: seeding costs
 * O(k * points * dim), and more points than this barely change the seeds. */
#define KMEANS_SEED_PER_CENTROID 32

typedef struct kmeans_params {
  uint32_t k;                /* clusters, 1 <= k <= n */
  uint32_t n_iter;           /* Lloyd iterations after seeding */
  uint32_t max_per_centroid; /* training sample: at most k * this points */
  uint32_t n_threads;        /* >= 1 */
  uint64_t seed;
} kmeans_params;

typedef struct kmeans_stats {
  double objective;  /* mean squared distance to the nearest centroid, on
                        the training sample, after the last iteration */
  uint32_t n_repair; /* empty clusters re-seeded over all iterations */
  size_t n_train;    /* points the iterations ran on */
} kmeans_stats;

/* k = `k`, KMEANS_ITER_DEFAULT iterations, 256 points per centroid, one
 * thread, a fixed seed. */
void kmeans_params_init(kmeans_params *p, uint32_t k);

/* Clusters n points of `dim` floats (row r at x + r*dim, borrowed) into
 * p->k centroids written to `centroids` (k * dim floats, caller memory).
 * `stats` may be NULL. Errors: QV_EINVAL (k == 0, n < k, dim == 0,
 * n_threads == 0), QV_ENOMEM. */
qv_rc kmeans_train(const float *x, size_t n, uint32_t dim,
                   const kmeans_params *p, float *centroids,
                   kmeans_stats *stats, qv_err *err);

/* For each of n points, the nearest of k centroids (ties: lowest index)
 * into assign[i], and its squared distance into dist[i] (dist may be NULL).
 * Errors: QV_ENOMEM (thread or scratch), QV_EINVAL (n_threads == 0). */
qv_rc kmeans_assign(const float *centroids, uint32_t k, uint32_t dim,
                    const float *x, size_t n, uint32_t n_threads,
                    uint32_t *assign, float *dist, qv_err *err);

#endif
