/* quant.h: what every module of src/quant/ shares: the SIMD level chosen
 * once for the quantized kernels, the optional CPU extensions some kernels
 * use, the allow-filter and hit types, and a bounded max-heap for top-k.
 *
 * src/quant/ owns compact vector codes (float16, int8, binary, product
 * codes), their distance kernels, k-means and the IVF index. It depends only
 * on src/base/ and src/vec/; src/index/ and src/engine/ call into it, never
 * the other way round.
 *
 * The ISA choice copies src/vec/dist.c's rule (cpuid for the features *and*
 * XGETBV for the OS's register state; QUIVER_SIMD=scalar|avx2|avx512 caps
 * it, never raises it) without calling into dist.c's internals, so the two
 * always agree on the level for the same environment.
 * Thread-safety: everything here is safe to call from any thread; the
 * choice is made once under pthread_once and never changes. */
#ifndef QV_QUANT_QUANT_H
#define QV_QUANT_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum quant_isa {
  QUANT_ISA_SCALAR = 0,
  QUANT_ISA_AVX2,   /* AVX2 + FMA + F16C + POPCNT */
  QUANT_ISA_AVX512, /* AVX-512 F/BW/DQ/VL on top of the AVX2 set */
  QUANT_ISA_COUNT
} quant_isa;

/* The level every *_ops_get() in src/quant/ uses: the best one this CPU and
 * OS run, capped by $QUIVER_SIMD. Decided on the first call. */
quant_isa quant_isa_chosen(void);
/* Whether this CPU and OS can run `isa` (ignores $QUIVER_SIMD). */
bool quant_isa_runs(quant_isa isa);
/* "scalar", "avx2" or "avx512". */
const char *quant_isa_name(quant_isa isa);

/* AVX-512 extensions used by a few kernels inside the avx512 files; only
 * meaningful when quant_isa_runs(QUANT_ISA_AVX512). Not capped by
 * QUIVER_SIMD (the level is). */
bool quant_cpu_has_vnni(void);      /* vpdpbusd / vpdpwssd on zmm */
bool quant_cpu_has_vpopcntdq(void); /* vpopcntq on zmm */

/* Whether `row` may appear in results; the same signature as
 * hnsw_allow_fn, so one callback serves both. Called from search threads:
 * must be cheap and thread-safe. */
typedef bool (*quant_allow_fn)(void *ctx, uint32_t row);

/* One search result; the same layout as hnsw_hit. Lower dist is better. */
typedef struct quant_hit {
  uint32_t row;
  float dist;
} quant_hit;

/* ---- bounded max-heap of the best (lowest dist) `cap` hits -------------- */

/* The caller owns `h` (array of `cap` hits). The worst kept hit is h[0]. */
typedef struct quant_topk {
  quant_hit *h;
  uint32_t n, cap;
} quant_topk;

static inline void quant_topk_init(quant_topk *t, quant_hit *buf,
                                   uint32_t cap) {
  t->h = buf;
  t->n = 0;
  t->cap = cap;
}

/* The distance a candidate must beat to enter (inf while not full). */
static inline float quant_topk_bound(const quant_topk *t) {
  return t->n < t->cap ? __builtin_inff() : t->h[0].dist;
}

static inline void quant_topk_push(quant_topk *t, uint32_t row, float dist) {
  quant_hit *h = t->h;
  uint32_t i;
  if (t->n < t->cap) { /* sift up */
    i = t->n++;
    while (i > 0) {
      uint32_t p = (i - 1) / 2;
      if (h[p].dist >= dist) break;
      h[i] = h[p];
      i = p;
    }
    h[i].row = row;
    h[i].dist = dist;
    return;
  }
  if (t->cap == 0 || dist >= h[0].dist) return;
  i = 0; /* replace the root and sift down */
  for (;;) {
    uint32_t l = 2 * i + 1, r = l + 1, m = i;
    float md = dist;
    if (l < t->n && h[l].dist > md) m = l, md = h[l].dist;
    if (r < t->n && h[r].dist > md) m = r;
    if (m == i) break;
    h[i] = h[m];
    i = m;
  }
  h[i].row = row;
  h[i].dist = dist;
}

/* Sorts the kept hits nearest first (ties by row) in place; returns n. */
uint32_t quant_topk_sort(quant_topk *t);

#endif
