/* testutil.c: see testutil.h. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/fileio.h"

char *tu_tmpdir(const char *tag) {
  const char *base = getenv("TMPDIR");
  if (base == NULL || *base == 0) base = "/tmp";
  char *p = malloc(4096);
  snprintf(p, 4096, "%s/qvtest-%s-XXXXXX", base, tag);
  if (mkdtemp(p) == NULL) {
    free(p);
    return NULL;
  }
  return p;
}

void tu_rmdir(char *path) {
  if (path == NULL) return;
  fileio_remove_tree(path, NULL);
  free(path);
}

uint64_t tu_rand(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

float tu_randf(uint64_t *s) {
  return (float)((double)(tu_rand(s) >> 11) / (double)(1ull << 53) * 2.0 - 1.0);
}

float *tu_random_vectors(size_t n, size_t dim, uint64_t seed) {
  float *v = malloc(n * dim * sizeof *v + 1);
  uint64_t s = seed;
  for (size_t i = 0; i < n * dim; i++) v[i] = tu_randf(&s);
  return v;
}

char *tu_data_path(const char *rel) {
  const char *root = getenv("QV_SHARED_DATA");
  if (root == NULL) return NULL;
  char *p = malloc(4096);
  snprintf(p, 4096, "%s/%s", root, rel);
  if (access(p, R_OK) != 0) {
    free(p);
    return NULL;
  }
  return p;
}

static void *read_vecs(const char *path, size_t *n_out, size_t *dim_out) {
  FILE *f;
  int is_pipe = 0;
  size_t len = strlen(path);
  if (len > 3 && strcmp(path + len - 3, ".gz") == 0) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "gzip -dc '%s'", path);
    f = popen(cmd, "r");
    is_pipe = 1;
  } else {
    f = fopen(path, "rb");
  }
  if (f == NULL) return NULL;
  size_t cap = 0, n = 0, dim = 0;
  uint32_t *data = NULL;
  int32_t d;
  while (fread(&d, 4, 1, f) == 1) {
    if (d <= 0 || (dim != 0 && (size_t)d != dim)) break;
    dim = (size_t)d;
    if (n == cap) {
      cap = cap ? cap * 2 : 1024;
      data = realloc(data, cap * dim * 4);
    }
    if (fread(data + n * dim, 4, dim, f) != dim) break;
    n++;
  }
  if (is_pipe)
    pclose(f);
  else
    fclose(f);
  *n_out = n;
  *dim_out = dim;
  return data;
}

float *tu_read_fvecs(const char *path, size_t *n, size_t *dim) {
  return read_vecs(path, n, dim);
}

bool tu_write_fvecs(const char *path, const float *v, size_t n, size_t dim) {
  FILE *f = fopen(path, "wb");
  if (f == NULL) return false;
  int32_t d = (int32_t)dim;
  bool ok = true;
  for (size_t i = 0; i < n && ok; i++)
    ok = fwrite(&d, 4, 1, f) == 1 && fwrite(v + i * dim, 4, dim, f) == dim;
  return fclose(f) == 0 && ok;
}

int32_t *tu_read_ivecs(const char *path, size_t *n, size_t *dim) {
  return read_vecs(path, n, dim);
}

typedef struct cand {
  float d;
  uint32_t row;
} cand;

static int cand_cmp(const void *a, const void *b) {
  const cand *x = a, *y = b;
  if (x->d != y->d) return x->d < y->d ? -1 : 1;
  return x->row < y->row ? -1 : (x->row > y->row);
}

void tu_exact_knn_l2(const float *base, size_t n, size_t dim,
                     const float *query, size_t k, uint32_t *out) {
  cand *c = malloc(n * sizeof *c);
  for (size_t i = 0; i < n; i++) {
    double s = 0;
    for (size_t j = 0; j < dim; j++) {
      double t = (double)base[i * dim + j] - query[j];
      s += t * t;
    }
    c[i].d = (float)s;
    c[i].row = (uint32_t)i;
  }
  qsort(c, n, sizeof *c, cand_cmp);
  for (size_t i = 0; i < k && i < n; i++) out[i] = c[i].row;
  free(c);
}

double tu_recall(const uint32_t *got, size_t n_got, const uint32_t *truth,
                 size_t k) {
  size_t hit = 0;
  for (size_t i = 0; i < n_got && i < k; i++)
    for (size_t j = 0; j < k; j++)
      if (got[i] == truth[j]) {
        hit++;
        break;
      }
  return (double)hit / (double)k;
}
