/* test_tails.c: no kernel of src/quant/ reads or writes past the end of
 * its arrays, at any length, on any ISA this CPU runs.
 *
 * Each operand is placed so that its last byte is the last byte before a
 * PROT_NONE page: a kernel that touches even one element too many faults,
 * and Criterion reports the crash. Values are checked elsewhere (the
 * per-module tests); here only the reads and writes matter, for lengths
 * 1..130 (every tail of every vector width) and 784. */
#include <sys/mman.h>
#include <unistd.h>

#include "quant/bq.h"
#include "quant/f16.h"
#include "quant/pq.h"
#include "quant/sq8.h"
#include "qtest.h"

typedef struct guarded {
  unsigned char *map;
  size_t len;
} guarded;

/* `bytes` of memory ending right before an inaccessible page, filled with
 * a pattern that is a valid small float / code everywhere. */
static void *guard(guarded *g, size_t bytes) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  size_t body = (bytes + page - 1) / page * page;
  g->len = body + page;
  g->map = mmap(NULL, g->len, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  cr_assert_neq(g->map, MAP_FAILED);
  cr_assert_eq(mprotect(g->map + body, page, PROT_NONE), 0);
  unsigned char *p = g->map + body - bytes;
  memset(p, 0x3c, bytes); /* 0x3c3c3c3c is 0.0115f; 0x3c3c is 1.06 half */
  return p;
}

static void unguard(guarded *g) { munmap(g->map, g->len); }

static const size_t lens[] = {1,  2,  3,  4,  5,  7,  8,  9,  15, 16, 17,
                              31, 32, 33, 47, 63, 64, 65, 79, 95, 127, 128,
                              129, 130, 784};
#define N_LENS (sizeof lens / sizeof *lens)

static void need(quant_isa isa) {
  if (!quant_isa_runs(isa))
    cr_skip_test("this CPU cannot run %s", quant_isa_name(isa));
}

static void f16_tails(const f16_ops *o) {
  for (size_t li = 0; li < N_LENS; li++) {
    size_t n = lens[li];
    guarded gq, gv, gf;
    float *q = guard(&gq, n * 4);
    uint16_t *v = guard(&gv, n * 2);
    float *f = guard(&gf, n * 4);
    volatile float sink = o->l2sq(q, v, n) + o->dot(q, v, n) + o->l1(q, v, n);
    (void)sink;
    o->encode(q, v, n);
    o->decode(v, f, n);
    unguard(&gq);
    unguard(&gv);
    unguard(&gf);
  }
}

static void sq8_tails(const sq8_ops *o) {
  for (size_t li = 0; li < N_LENS; li++) {
    size_t n = lens[li];
    guarded ga, gs, gc, gd;
    float *a = guard(&ga, n * 4), *s = guard(&gs, n * 4);
    uint8_t *c = guard(&gc, n), *d = guard(&gd, n);
    volatile float sink = o->l2sq_asym(a, s, c, n) + o->l2sq_asym_g(a, c, n) +
                          o->dot_asym(a, c, n) + (float)o->l2sq_u8(c, d, n) +
                          (float)o->dot_u8(c, d, n);
    (void)sink;
    unguard(&ga);
    unguard(&gs);
    unguard(&gc);
    unguard(&gd);
  }
}

static void bq_tails(const bq_ops *o) {
  for (size_t nw = 1; nw <= 26; nw++) {
    guarded ga, gb, gw;
    uint64_t *a = guard(&ga, nw * 8), *b = guard(&gb, nw * 8);
    float *w = guard(&gw, nw * 64 * 4);
    volatile float sink = (float)o->hamming(a, b, nw) + o->asym(w, b, nw);
    (void)sink;
    unguard(&ga);
    unguard(&gb);
    unguard(&gw);
  }
}

static void pq_tails(const pq_ops *o) {
  float *lut = calloc(784 * PQ_KSUB, sizeof(float));
  for (size_t li = 0; li < N_LENS; li++) {
    size_t m = lens[li];
    guarded gc, gb;
    uint8_t *c = guard(&gc, m);
    uint8_t *b = guard(&gb, 3 * m);
    float out[3];
    volatile float sink = o->adc(lut, c, m);
    o->adc_batch(lut, b, 3, m, out);
    (void)sink;
    unguard(&gc);
    unguard(&gb);
  }
  for (uint32_t len = 1; len <= 32; len++) {
    guarded gq, gt, gl;
    float *q = guard(&gq, len * 4), *ct = guard(&gt, len * PQ_KSUB * 4);
    float *l = guard(&gl, PQ_KSUB * 4);
    o->lut_l2(q, ct, len, l);
    o->lut_neg_dot(q, ct, len, l);
    unguard(&gq);
    unguard(&gt);
    unguard(&gl);
  }
  free(lut);
}

Test(tails, scalar_kernels_stay_in_bounds) {
  f16_tails(&f16_ops_scalar);
  sq8_tails(&sq8_ops_scalar);
  bq_tails(&bq_ops_scalar);
  pq_tails(&pq_ops_scalar);
}

Test(tails, avx2_kernels_stay_in_bounds) {
  need(QUANT_ISA_AVX2);
  f16_tails(&f16_ops_avx2);
  sq8_tails(&sq8_ops_avx2);
  bq_tails(&bq_ops_avx2);
  pq_tails(&pq_ops_avx2);
}

Test(tails, avx512_kernels_stay_in_bounds) {
  need(QUANT_ISA_AVX512);
  f16_tails(&f16_ops_avx512);
  sq8_tails(&sq8_ops_avx512);
  bq_tails(&bq_ops_avx512);
  pq_tails(&pq_ops_avx512);
}

Test(tails, avx512_extension_kernels_stay_in_bounds) {
  need(QUANT_ISA_AVX512);
  if (quant_cpu_has_vnni()) sq8_tails(&sq8_ops_avx512_vnni);
  if (quant_cpu_has_vpopcntdq()) bq_tails(&bq_ops_avx512_vpopcnt);
  if (!quant_cpu_has_vnni() && !quant_cpu_has_vpopcntdq())
    cr_skip_test("no VNNI and no VPOPCNTDQ");
}
