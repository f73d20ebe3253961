/* test_hnsw_io.c: hnsw_save and hnsw_load.
 *
 * Covers: a loaded graph answers exactly as the built one and is used in
 * place from the mapping; saving a loaded graph reproduces the file; every
 * damaged file (truncated anywhere, any byte flipped, wrong magic, wrong
 * shape, and well-checksummed files that lie about their structure) is
 * QV_ECORRUPT with a message naming the file, never a crash; failed writes
 * are QV_EIO and leave the previous file intact. Knows the file layout of
 * src/index/README.md: header of 128 bytes, level-0 slots from offset 128,
 * CRC-32C in the last 4 bytes. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/crc32c.h"
#include "base/fileio.h"
#include "index/hnsw.h"
#include "index/hnsw_int.h"
#include "testutil.h"

#define N 1500
#define DIM 16
#define M 8

typedef struct fixture {
  float *vecs;
  hnsw *h;
  char *dir;
  char path[4200];
  unsigned char *bytes; /* the saved file */
  size_t n_bytes;
} fixture;

static unsigned char *slurp(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  cr_assert_not_null(f, "open %s", path);
  fseek(f, 0, SEEK_END);
  *n = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *b = malloc(*n + 1);
  cr_assert_eq(fread(b, 1, *n, f), *n);
  fclose(f);
  return b;
}

static void spit(const char *path, const unsigned char *b, size_t n) {
  FILE *f = fopen(path, "wb");
  cr_assert_not_null(f);
  cr_assert_eq(fwrite(b, 1, n, f), n);
  fclose(f);
}

static void setup(fixture *fx) {
  fx->vecs = tu_random_vectors(N, DIM, 31);
  hnsw_params p;
  hnsw_params_init(&p);
  p.m = M;
  p.ef_construct = 40;
  p.seed = 3;
  qv_err err = {0};
  cr_assert_eq(hnsw_build(fx->vecs, N, DIM, VEC_L2SQ, &p, &fx->h, &err), QV_OK);
  cr_assert_gt(fx->h->max_level, 0, "want upper levels in the file");
  fx->dir = tu_tmpdir("hnswio");
  snprintf(fx->path, sizeof fx->path, "%s/graph.hnsw", fx->dir);
  cr_assert_eq(hnsw_save(fx->h, fx->path, &err), QV_OK, "save: %s", err.msg);
  fx->bytes = slurp(fx->path, &fx->n_bytes);
}

static void teardown(fixture *fx) {
  hnsw_free(fx->h);
  free(fx->vecs);
  free(fx->bytes);
  tu_rmdir(fx->dir);
}

/* Loads `path` expecting QV_ECORRUPT and a message naming the file and, if
 * `what` is not NULL, containing it. */
static void expect_corrupt(fixture *fx, const char *path, uint32_t n,
                           uint32_t dim, vec_metric metric, const char *what,
                           const char *label) {
  hnsw *h = (hnsw *)0x1;
  qv_err err = {0};
  qv_rc rc = hnsw_load(path, fx->vecs, n, dim, metric, &h, &err);
  cr_assert_eq(rc, QV_ECORRUPT, "%s: rc %s (%s)", label, qv_rc_name(rc),
               err.msg);
  cr_assert_eq(h, (hnsw *)0x1, "%s: out written on failure", label);
  cr_assert(strstr(err.msg, path) != NULL, "%s: message lacks the path: %s",
            label, err.msg);
  if (what != NULL)
    cr_assert(strstr(err.msg, what) != NULL, "%s: message lacks '%s': %s",
              label, what, err.msg);
}

/* Writes a modified copy of the file with a recomputed checksum, so that
 * only the structural checks stand between it and a search. */
static void write_with_crc(fixture *fx, unsigned char *b) {
  uint32_t crc = crc32c(b, fx->n_bytes - 4);
  memcpy(b + fx->n_bytes - 4, &crc, 4);
  spit(fx->path, b, fx->n_bytes);
}

static uint32_t *l0_slot(fixture *fx, unsigned char *b, uint32_t row) {
  return (uint32_t *)(b + 128 + (size_t)row * (1 + 2 * M) * 4);
}

Test(hnsw_io, loaded_graph_answers_exactly_as_built) {
  fixture fx;
  setup(&fx);
  hnsw *g = NULL;
  qv_err err = {0};
  cr_assert_eq(hnsw_load(fx.path, fx.vecs, N, DIM, VEC_L2SQ, &g, &err), QV_OK,
               "load: %s", err.msg);
  cr_expect_eq(hnsw_size(g), N);
  cr_expect_eq(hnsw_memory_bytes(g), hnsw_memory_bytes(fx.h));
  /* Used in place: level 0 lies inside the mapping, 64-byte aligned. */
  cr_expect(g->is_mapped);
  cr_expect((const unsigned char *)g->l0 == g->map.p + 128);
  cr_expect_eq((uintptr_t)g->l0 % 64, 0);
  float *q = tu_random_vectors(60, DIM, 32);
  hnsw_scratch *s = hnsw_scratch_new();
  for (uint32_t i = 0; i < 60; i++) {
    hnsw_hit a[10], b[10];
    uint32_t na = 0, nb = 0;
    cr_assert_eq(hnsw_search(fx.h, q + i * DIM, 10, 20, NULL, NULL, s, a, &na),
                 QV_OK);
    cr_assert_eq(hnsw_search(g, q + i * DIM, 10, 20, NULL, NULL, s, b, &nb),
                 QV_OK);
    cr_assert_eq(na, nb);
    for (uint32_t j = 0; j < na; j++) {
      cr_assert_eq(a[j].row, b[j].row, "query %u hit %u", i, j);
      cr_assert_eq(a[j].dist, b[j].dist, "query %u hit %u", i, j);
    }
  }
  hnsw_scratch_free(s);
  free(q);
  hnsw_free(g);
  teardown(&fx);
}

Test(hnsw_io, saving_a_loaded_graph_reproduces_the_file) {
  fixture fx;
  setup(&fx);
  hnsw *g = NULL;
  cr_assert_eq(hnsw_load(fx.path, fx.vecs, N, DIM, VEC_L2SQ, &g, NULL), QV_OK);
  char again[4300];
  snprintf(again, sizeof again, "%s/again.hnsw", fx.dir);
  cr_assert_eq(hnsw_save(g, again, NULL), QV_OK);
  size_t n;
  unsigned char *b = slurp(again, &n);
  cr_assert_eq(n, fx.n_bytes);
  cr_expect(memcmp(b, fx.bytes, n) == 0);
  cr_expect_eq(n % 4, 0);
  free(b);
  hnsw_free(g);
  teardown(&fx);
}

Test(hnsw_io, truncated_file_is_corrupt) {
  fixture fx;
  setup(&fx);
  size_t lens[] = {0,
                   1,
                   7,
                   8,
                   64,
                   127,
                   128,
                   131,
                   132,
                   133,
                   1000,
                   fx.n_bytes / 2,
                   fx.n_bytes - 5,
                   fx.n_bytes - 4,
                   fx.n_bytes - 1};
  for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
    spit(fx.path, fx.bytes, lens[i]);
    char label[64];
    snprintf(label, sizeof label, "cut at %zu", lens[i]);
    expect_corrupt(&fx, fx.path, N, DIM, VEC_L2SQ, NULL, label);
  }
  /* An extra byte at the end is damage too. */
  unsigned char *longer = malloc(fx.n_bytes + 1);
  memcpy(longer, fx.bytes, fx.n_bytes);
  longer[fx.n_bytes] = 0;
  spit(fx.path, longer, fx.n_bytes + 1);
  expect_corrupt(&fx, fx.path, N, DIM, VEC_L2SQ, NULL, "one byte longer");
  free(longer);
  teardown(&fx);
}

Test(hnsw_io, any_flipped_byte_is_corrupt) {
  fixture fx;
  setup(&fx);
  unsigned char *b = malloc(fx.n_bytes);
  size_t n_tried = 0;
  /* Every header byte, every byte of the checksum, and a stride through
   * the level-0, levels and upper sections. */
  for (size_t pos = 0; pos < fx.n_bytes; pos++) {
    bool pick = pos < 128 || pos >= fx.n_bytes - 4 || pos % 97 == 0;
    if (!pick) continue;
    for (int bit = 0; bit < 8; bit += 7) {
      memcpy(b, fx.bytes, fx.n_bytes);
      b[pos] ^= (unsigned char)(1u << bit);
      spit(fx.path, b, fx.n_bytes);
      char label[64];
      snprintf(label, sizeof label, "bit %d of byte %zu", bit, pos);
      expect_corrupt(&fx, fx.path, N, DIM, VEC_L2SQ, NULL, label);
      n_tried++;
    }
  }
  cr_expect_gt(n_tried, 600);
  free(b);
  teardown(&fx);
}

Test(hnsw_io, wrong_magic_is_named) {
  fixture fx;
  setup(&fx);
  unsigned char *b = malloc(fx.n_bytes);
  memcpy(b, fx.bytes, fx.n_bytes);
  memcpy(b, "QVHNSW99", 8);
  write_with_crc(&fx, b);
  expect_corrupt(&fx, fx.path, N, DIM, VEC_L2SQ, "magic", "magic");
  free(b);
  teardown(&fx);
}

Test(hnsw_io, wrong_shape_is_corrupt) {
  fixture fx;
  setup(&fx);
  expect_corrupt(&fx, fx.path, N - 1, DIM, VEC_L2SQ, "rows", "n - 1");
  expect_corrupt(&fx, fx.path, N + 1, DIM, VEC_L2SQ, "rows", "n + 1");
  expect_corrupt(&fx, fx.path, N, DIM + 1, VEC_L2SQ, "dim", "dim + 1");
  expect_corrupt(&fx, fx.path, N, DIM, VEC_NEG_DOT, "metric", "metric");
  teardown(&fx);
}

Test(hnsw_io, missing_file_is_an_error) {
  fixture fx;
  setup(&fx);
  unlink(fx.path);
  hnsw *g = NULL;
  qv_err err = {0};
  qv_rc rc = hnsw_load(fx.path, fx.vecs, N, DIM, VEC_L2SQ, &g, &err);
  cr_expect(rc == QV_ECORRUPT || rc == QV_EIO, "rc %s", qv_rc_name(rc));
  cr_expect_null(g);
  teardown(&fx);
}

/* ---- well-checksummed lies --------------------------------------------- */

Test(hnsw_io, neighbour_id_out_of_range_is_caught_despite_good_crc) {
  fixture fx;
  setup(&fx);
  unsigned char *b = malloc(fx.n_bytes);
  memcpy(b, fx.bytes, fx.n_bytes);
  uint32_t *slot = l0_slot(&fx, b, 77);
  cr_assert_gt(slot[0], 0);
  slot[1] = N; /* one past the last row */
  write_with_crc(&fx, b);
  expect_corrupt(&fx, fx.path, N, DIM, VEC_L2SQ, "node 77", "id = n");
  free(b);
  teardown(&fx);
}

Test(hnsw_io, count_over_capacity_is_caught_despite_good_crc) {
  fixture fx;
  setup(&fx);
  unsigned char *b = malloc(fx.n_bytes);
  memcpy(b, fx.bytes, fx.n_bytes);
  l0_slot(&fx, b, N - 1)[0] = 2 * M + 1;
  write_with_crc(&fx, b);
  expect_corrupt(&fx, fx.path, N, DIM, VEC_L2SQ, "count", "count 2m + 1");
  free(b);
  teardown(&fx);
}

Test(hnsw_io, upper_neighbour_missing_from_its_level_is_caught) {
  fixture fx;
  setup(&fx);
  /* Find a node on level 1 with a link, and point the link at a node that
   * only lives on level 0: descent would read past the upper section. */
  const hnsw *h = fx.h;
  uint32_t low = 0;
  while (h->levels[low] != 0) low++;
  uint32_t r = 0;
  while (h->levels[r] == 0 || hnsw_up_list(h, r, 1)[0] == 0) r++;
  size_t up_off = 128 + (size_t)N * (1 + 2 * M) * 4 + N;
  up_off = (up_off + 63) & ~(size_t)63;
  size_t at = up_off + (size_t)h->up_first[r] * (1 + M) * 4 + 4;
  unsigned char *b = malloc(fx.n_bytes);
  memcpy(b, fx.bytes, fx.n_bytes);
  uint32_t was;
  memcpy(&was, b + at, 4);
  cr_assert_eq(was, hnsw_up_list(h, r, 1)[1], "layout assumption");
  memcpy(b + at, &low, 4);
  write_with_crc(&fx, b);
  expect_corrupt(&fx, fx.path, N, DIM, VEC_L2SQ, "level-1", "level-0 node up");
  free(b);
  teardown(&fx);
}

Test(hnsw_io, bad_entry_and_levels_are_caught_despite_good_crc) {
  fixture fx;
  setup(&fx);
  unsigned char *b = malloc(fx.n_bytes);
  /* entry at byte 40, max_level at 36 (README.md). */
  uint32_t v = N;
  memcpy(b, fx.bytes, fx.n_bytes);
  memcpy(b + 40, &v, 4);
  write_with_crc(&fx, b);
  expect_corrupt(&fx, fx.path, N, DIM, VEC_L2SQ, "entry", "entry = n");

  memcpy(b, fx.bytes, fx.n_bytes);
  v = fx.h->max_level + 1;
  memcpy(b + 36, &v, 4);
  write_with_crc(&fx, b);
  expect_corrupt(&fx, fx.path, N, DIM, VEC_L2SQ, NULL, "max_level + 1");

  memcpy(b, fx.bytes, fx.n_bytes);
  size_t levels_off = 128 + (size_t)N * (1 + 2 * M) * 4;
  b[levels_off + 5] = (unsigned char)(fx.h->max_level + 1);
  write_with_crc(&fx, b);
  expect_corrupt(&fx, fx.path, N, DIM, VEC_L2SQ, "node 5", "level too high");

  memcpy(b, fx.bytes, fx.n_bytes);
  v = 2; /* version */
  memcpy(b + 8, &v, 4);
  write_with_crc(&fx, b);
  expect_corrupt(&fx, fx.path, N, DIM, VEC_L2SQ, "version", "version 2");
  free(b);
  teardown(&fx);
}

/* Random lies with a good checksum: whatever passes the checks must be
 * searchable without a crash or an out-of-bounds read (run under ASan). */
Test(hnsw_io, random_damage_with_good_crc_never_crashes) {
  fixture fx;
  setup(&fx);
  unsigned char *b = malloc(fx.n_bytes);
  float *q = tu_random_vectors(3, DIM, 33);
  uint64_t rng = 99;
  size_t words = (fx.n_bytes - 4) / 4;
  int loaded = 0, rejected = 0;
  for (int iter = 0; iter < 300; iter++) {
    memcpy(b, fx.bytes, fx.n_bytes);
    int n_edits = 1 + (int)(tu_rand(&rng) % 4);
    for (int e = 0; e < n_edits; e++) {
      size_t w = tu_rand(&rng) % words;
      uint32_t v;
      switch (tu_rand(&rng) % 4) {
      case 0: v = (uint32_t)(tu_rand(&rng) % N); break; /* plausible id */
      case 1: v = (uint32_t)(tu_rand(&rng) % (2 * M + 2)); break; /* count */
      case 2: v = (uint32_t)tu_rand(&rng); break;
      default: v = N + (uint32_t)(tu_rand(&rng) % 4); break;
      }
      memcpy(b + w * 4, &v, 4);
    }
    write_with_crc(&fx, b);
    hnsw *g = NULL;
    qv_err err = {0};
    qv_rc rc = hnsw_load(fx.path, fx.vecs, N, DIM, VEC_L2SQ, &g, &err);
    if (rc != QV_OK) {
      cr_assert_eq(rc, QV_ECORRUPT, "iter %d: %s", iter, qv_rc_name(rc));
      rejected++;
      continue;
    }
    loaded++;
    for (int i = 0; i < 3; i++) {
      hnsw_hit hits[40];
      uint32_t nh = 0;
      cr_assert_eq(
          hnsw_search(g, q + i * DIM, 40, 40, NULL, NULL, NULL, hits, &nh),
          QV_OK);
      for (uint32_t j = 0; j < nh; j++) cr_assert_lt(hits[j].row, N);
    }
    hnsw_free(g);
  }
  cr_log_info("random damage: %d rejected, %d loaded", rejected, loaded);
  cr_expect_gt(rejected, 100);
  free(q);
  free(b);
  teardown(&fx);
}

/* ---- failed writes ------------------------------------------------------ */

Test(hnsw_io, failed_write_or_fsync_is_eio_and_keeps_the_old_file) {
  fixture fx;
  setup(&fx);
  char tmp[4300];
  snprintf(tmp, sizeof tmp, "%s.tmp", fx.path);
  for (int which = 0; which < 2; which++) {
    qv_err err = {0};
    if (which == 0)
      fileio_fault_write_after(2);
    else
      fileio_fault_fsync_after(1);
    qv_rc rc = hnsw_save(fx.h, fx.path, &err);
    fileio_fault_write_after(0);
    fileio_fault_fsync_after(0);
    cr_expect_eq(rc, QV_EIO, "fault %d: %s", which, qv_rc_name(rc));
    cr_expect(!fileio_exists(tmp), "fault %d left %s", which, tmp);
    size_t n;
    unsigned char *b = slurp(fx.path, &n);
    cr_expect(n == fx.n_bytes && memcmp(b, fx.bytes, n) == 0,
              "fault %d changed the saved file", which);
    free(b);
  }
  teardown(&fx);
}

Test(hnsw_io, save_into_a_missing_directory_is_eio) {
  fixture fx;
  setup(&fx);
  char bad[4300];
  snprintf(bad, sizeof bad, "%s/no/such/dir/g.hnsw", fx.dir);
  qv_err err = {0};
  cr_expect_eq(hnsw_save(fx.h, bad, &err), QV_EIO);
  cr_expect(strstr(err.msg, "no/such/dir") != NULL, "message: %s", err.msg);
  teardown(&fx);
}
