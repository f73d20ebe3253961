/* testutil.h: helpers shared by the tests: temporary directories, seeded
 * random data, real data sets from ../shared/data, exact k-NN. */
#ifndef QV_TESTUTIL_H
#define QV_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quiver.h"

/* Creates a fresh empty directory under $TMPDIR (or /tmp); returns a
 * malloc'd path. tu_rmdir removes it and frees the string. */
char *tu_tmpdir(const char *tag);
void tu_rmdir(char *path);

/* Deterministic PRNG (splitmix64). */
uint64_t tu_rand(uint64_t *state);
float tu_randf(uint64_t *state); /* uniform in [-1, 1) */
/* n * dim uniform floats in [-1,1), malloc'd. */
float *tu_random_vectors(size_t n, size_t dim, uint64_t seed);

/* Path of a file under the shared data directory ($QV_SHARED_DATA), or NULL
 * when the data is not there. Caller frees. */
char *tu_data_path(const char *rel);
/* Reads an .fvecs/.ivecs file (optionally .gz, via gzip -dc). Returns a
 * malloc'd n*dim array of floats (or int32 for ivecs), or NULL. */
float *tu_read_fvecs(const char *path, size_t *n, size_t *dim);
int32_t *tu_read_ivecs(const char *path, size_t *n, size_t *dim);
/* Writes n rows of dim floats as .fvecs; false when the file cannot be
 * written. */
bool tu_write_fvecs(const char *path, const float *v, size_t n, size_t dim);

/* Exact k nearest rows of `query` among n base vectors under squared L2,
 * written to out[0..k) nearest first (ties by smaller row). */
void tu_exact_knn_l2(const float *base, size_t n, size_t dim,
                     const float *query, size_t k, uint32_t *out);

/* Fraction of got[0..k) that appear in truth[0..k). */
double tu_recall(const uint32_t *got, size_t n_got, const uint32_t *truth,
                 size_t k);

#endif
