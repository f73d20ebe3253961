/* quant_bench.c: throughput and recall of the quantized codes and IVF
 * indexes of src/quant/, on one data set, single-threaded queries.
 *
 * Owns nothing the library uses; not part of the CMake build (see
 * bench/run_quant.sh, which builds it against build-quant/libquant_all.a).
 * Section "scan": every code type scanned brute force over all rows per
 * query (throughput in vectors/s and GB/s of codes, bytes per vector), and
 * recall@k of the code ranking alone and after exact rescoring of the best
 * k * oversampling (1, 2, 4, 8). Section "ivf": IVF-Flat and IVF-PQ (with
 * and without rescoring) recall@k and QPS for nprobe 1..64, plus build time.
 *
 *   quant_bench --base B.fvecs --query Q.fvecs [--gt G.ivecs[.gz]]
 *               [--metric l2|cos] [--nq N] [--k 10] [--threads T]
 *               [--nlist N] [--pq-ratios 8,16,32,64] [--ivf-pq-ratios 16,32]
 *               [--sections scan,ivf] [--only NAME-PREFIX]
 *
 * --metric cos normalizes every vector and ranks by dot product; without
 * --gt the exact top-k is computed here by brute force. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "quant/bq.h"
#include "quant/f16.h"
#include "quant/ivf.h"
#include "quant/pq.h"
#include "quant/sq8.h"
#include "vec/dist.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *what) {
  fprintf(stderr, "quant_bench: %s\n", what);
  exit(1);
}

/* Reads .fvecs / .ivecs (".gz" through gzip -dc): n rows of dim 4-byte
 * values, malloc'd. */
static void *read_vecs(const char *path, size_t *n_out, size_t *dim_out) {
  size_t len = strlen(path);
  FILE *f;
  int piped = len > 3 && strcmp(path + len - 3, ".gz") == 0;
  if (piped) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "gzip -dc '%s'", path);
    f = popen(cmd, "r");
  } else {
    f = fopen(path, "rb");
  }
  if (f == NULL) die(path);
  size_t cap = 1 << 20, used = 0, dim = 0, n = 0;
  unsigned char *buf = malloc(cap);
  int32_t d;
  while (fread(&d, 4, 1, f) == 1) {
    if (dim == 0) dim = (size_t)d;
    if ((size_t)d != dim || d <= 0) die("ragged vectors");
    if (used + dim * 4 > cap) {
      while (used + dim * 4 > cap) cap *= 2;
      buf = realloc(buf, cap);
    }
    if (fread(buf + used, 4, dim, f) != dim) die("short read");
    used += dim * 4;
    n++;
  }
  if (piped) pclose(f);
  else fclose(f);
  *n_out = n;
  *dim_out = dim;
  return buf;
}

typedef struct bench {
  float *base, *query;
  size_t n, nq, dim, k;
  vec_metric metric;
  vec_dist_fn full;
  uint32_t *gt; /* nq * k */
  unsigned threads;
} bench;

static double recall_one(const quant_hit *h, uint32_t nh, const uint32_t *gt,
                         size_t k) {
  size_t hit = 0;
  for (uint32_t i = 0; i < nh && i < k; i++)
    for (size_t j = 0; j < k; j++)
      if (h[i].row == gt[j]) {
        hit++;
        break;
      }
  return (double)hit / (double)k;
}

/* ---- scan section --------------------------------------------------------- */

enum { OS_MAX = 32, N_OS = 6 };
static const uint32_t oversamplings[N_OS] = {1, 2, 4, 8, 16, 32};

/* A code type: prepare per query, distance per row. */
typedef struct scanner {
  const char *name;
  double bytes_per_vec;
  void (*prepare)(struct scanner *s, const float *q);
  void (*scan)(struct scanner *s, float *out); /* all n distances */
  void *st;
  bench *b;
} scanner;

/* float32 */
static const float *cur_q;
static void f32_prepare(scanner *s, const float *q) { (void)s; cur_q = q; }
static void f32_scan(scanner *s, float *out) {
  bench *b = s->b;
  for (size_t r = 0; r < b->n; r++)
    out[r] = b->full(cur_q, b->base + r * b->dim, b->dim);
}

/* float16 */
static uint16_t *f16_codes;
static void f16_scan(scanner *s, float *out) {
  bench *b = s->b;
  const f16_ops *o = f16_ops_get();
  if (b->metric == VEC_L2SQ)
    for (size_t r = 0; r < b->n; r++)
      out[r] = o->l2sq(cur_q, f16_codes + r * b->dim, b->dim);
  else
    for (size_t r = 0; r < b->n; r++)
      out[r] = -o->dot(cur_q, f16_codes + r * b->dim, b->dim);
}

/* sq8 asymmetric */
static sq8 *sq;
static sq8_query *sqq;
static uint8_t *sq_codes;
static void sq8_prep(scanner *s, const float *q) {
  (void)s;
  sq8_query_prepare(sq, q, sqq);
}
static void sq8_scan(scanner *s, float *out) {
  bench *b = s->b;
  const sq8_ops *o = sq8_ops_get();
  if (b->metric == VEC_L2SQ)
    for (size_t r = 0; r < b->n; r++)
      out[r] = sq8_l2sq(o, sqq, sq_codes + r * b->dim);
  else
    for (size_t r = 0; r < b->n; r++)
      out[r] = -sq8_dot(o, sqq, sq_codes + r * b->dim);
}

/* sq8 symmetric: the query is encoded too, integer kernel (VNNI) */
static uint8_t *sq_qcode;
static uint32_t *sq_sums, sq_qsum; /* per-vector code sums (dot only) */
static void sq8_sym_prep(scanner *s, const float *q) {
  sq8_encode(sq, q, 1, sq_qcode);
  sq_qsum = sq8_code_sum(sq_qcode, (uint32_t)s->b->dim);
}
static void sq8_sym_scan(scanner *s, float *out) {
  bench *b = s->b;
  const sq8_ops *o = sq8_ops_get();
  if (b->metric == VEC_L2SQ)
    for (size_t r = 0; r < b->n; r++)
      out[r] = (float)o->l2sq_u8(sq_qcode, sq_codes + r * b->dim, b->dim);
  else
    for (size_t r = 0; r < b->n; r++)
      out[r] = -sq8_sym_dot(sq, o, sq_qcode, sq_qsum, sq_codes + r * b->dim,
                            sq_sums[r]);
}

/* binary: one per bits, asymmetric or Hamming */
typedef struct bq_state {
  bq *b;
  bq_query *qq;
  uint64_t *codes, *qc;
  int hamming;
} bq_state;
static void bq_prep(scanner *s, const float *q) {
  bq_state *st = s->st;
  if (st->hamming) bq_encode(st->b, q, 1, st->qc);
  else bq_query_prepare(st->b, q, s->b->metric, st->qq);
}
static void bq_scan(scanner *s, float *out) {
  bq_state *st = s->st;
  const bq_ops *o = bq_ops_get();
  size_t w = bq_code_words(st->b);
  if (st->hamming)
    for (size_t r = 0; r < s->b->n; r++)
      out[r] = (float)o->hamming(st->qc, st->codes + r * w, w);
  else
    for (size_t r = 0; r < s->b->n; r++)
      out[r] = o->asym(st->qq->w, st->codes + r * w, w);
}

/* product quantization */
typedef struct pq_state {
  pq *p;
  uint8_t *codes;
  float *lut;
} pq_state;
static void pq_prep(scanner *s, const float *q) {
  pq_state *st = s->st;
  pq_lut(st->p, pq_ops_get(), q, s->b->metric, st->lut);
}
static void pq_scan(scanner *s, float *out) {
  pq_state *st = s->st;
  pq_ops_get()->adc_batch(st->lut, st->codes, s->b->n, st->p->m, out);
}

static const char *only = ""; /* --only: scan just codes named so */

static void run_scanner(bench *b, scanner *s, double prep_s) {
  if (only[0] && strncmp(s->name, only, strlen(only)) != 0) return;
  float *d = malloc(b->n * sizeof(float));
  quant_hit *sb = malloc(b->k * OS_MAX * sizeof(quant_hit));
  quant_hit *fb = malloc(b->k * sizeof(quant_hit));
  double rec[N_OS + 1] = {0}, t_scan = 0, t_resc[N_OS] = {0};
  for (size_t i = 0; i < b->nq; i++) {
    const float *q = b->query + i * b->dim;
    double t0 = now();
    s->prepare(s, q);
    s->scan(s, d);
    quant_topk t;
    quant_topk_init(&t, sb, (uint32_t)(b->k * OS_MAX));
    for (size_t r = 0; r < b->n; r++)
      if (d[r] < quant_topk_bound(&t)) quant_topk_push(&t, (uint32_t)r, d[r]);
    quant_topk_sort(&t);
    t_scan += now() - t0;
    rec[0] += recall_one(sb, t.n < b->k ? t.n : (uint32_t)b->k,
                         b->gt + i * b->k, b->k);
    for (int o = 0; o < N_OS; o++) {
      double t1 = now();
      uint32_t cnt = (uint32_t)(b->k * oversamplings[o]);
      if (cnt > t.n) cnt = t.n;
      quant_topk f;
      quant_topk_init(&f, fb, (uint32_t)b->k);
      for (uint32_t j = 0; j < cnt; j++)
        quant_topk_push(&f, sb[j].row,
                        b->full(q, b->base + (size_t)sb[j].row * b->dim,
                                b->dim));
      quant_topk_sort(&f);
      t_resc[o] += now() - t1;
      rec[o + 1] += recall_one(fb, f.n, b->gt + i * b->k, b->k);
    }
  }
  double vps = (double)b->n * b->nq / t_scan;
  printf("| %-14s | %7.1f | %6.1fx | %8.2f | %6.2f | %8.1f | %.4f |", s->name,
         s->bytes_per_vec, (double)b->dim * 4 / s->bytes_per_vec, vps / 1e6,
         vps * s->bytes_per_vec / 1e9, b->nq / t_scan, rec[0] / b->nq);
  for (int o = 0; o < N_OS; o++)
    printf(" %.4f |", rec[o + 1] / b->nq);
  printf(" %7.2f |\n", prep_s);
  (void)t_resc;
  free(d);
  free(sb);
  free(fb);
  fflush(stdout);
}

static void section_scan(bench *b, const uint32_t *ratios, int n_ratios) {
  printf("\n### brute-force scan, %zu rows x %zu dims, %zu queries, k=%zu, "
         "kernels %s (sq8 %s, bq %s, pq %s)\n\n",
         b->n, b->dim, b->nq, b->k, quant_isa_name(quant_isa_chosen()),
         sq8_ops_get()->isa, bq_ops_get()->isa, pq_ops_get()->isa);
  printf("| code | bytes/vec | compr. | Mvec/s | GB/s | QPS (scan) | "
         "recall codes | os1 | os2 | os4 | os8 | os16 | os32 | train+encode s "
         "|\n");
  printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  scanner s = {.b = b};
  s = (scanner){"float32", b->dim * 4.0, f32_prepare, f32_scan, NULL, b};
  run_scanner(b, &s, 0);

  double t0 = now();
  f16_codes = malloc(b->n * b->dim * 2);
  f16_ops_get()->encode(b->base, f16_codes, b->n * b->dim);
  s = (scanner){"float16", b->dim * 2.0, f32_prepare, f16_scan, NULL, b};
  run_scanner(b, &s, now() - t0);
  free(f16_codes);

  t0 = now();
  sq8_params sp;
  sq8_params_init(&sp);
  if (sq8_train(b->base, b->n, (uint32_t)b->dim, &sp, &sq, NULL) != QV_OK)
    die("sq8_train");
  sq_codes = malloc(b->n * b->dim);
  sq8_encode(sq, b->base, b->n, sq_codes);
  sq8_query_new((uint32_t)b->dim, &sqq, NULL);
  s = (scanner){"int8 (sq8)", (double)b->dim, sq8_prep, sq8_scan, NULL, b};
  run_scanner(b, &s, now() - t0);
  sq_qcode = malloc(b->dim);
  sq_sums = malloc(b->n * sizeof(uint32_t));
  for (size_t r = 0; r < b->n; r++)
    sq_sums[r] = sq8_code_sum(sq_codes + r * b->dim, (uint32_t)b->dim);
  s = (scanner){"int8 symmetric", (double)b->dim, sq8_sym_prep, sq8_sym_scan,
                NULL, b};
  run_scanner(b, &s, now() - t0);
  free(sq_qcode);
  free(sq_sums);
  sq8_free(sq);
  sq8_query_free(sqq);
  free(sq_codes);

  for (uint32_t bits = 1; bits <= 2; bits++) {
    for (int ham = bits == 1 ? 1 : 0; ham >= 0; ham--) {
      t0 = now();
      bq_state st = {.hamming = ham};
      bq_params bp;
      bq_params_init(&bp, bits);
      if (bq_train(b->base, b->n, (uint32_t)b->dim, &bp, &st.b, NULL) != QV_OK)
        die("bq_train");
      size_t w = bq_code_words(st.b);
      st.codes = malloc(b->n * w * 8);
      st.qc = malloc(w * 8);
      bq_encode(st.b, b->base, b->n, st.codes);
      bq_query_new(st.b, &st.qq, NULL);
      s = (scanner){bits == 1 ? (ham ? "bq1 hamming" : "bq1 asym")
                              : "bq2 asym",
                    w * 8.0, bq_prep, bq_scan, &st, b};
      run_scanner(b, &s, now() - t0);
      bq_query_free(st.qq);
      bq_free(st.b);
      free(st.codes);
      free(st.qc);
    }
  }

  for (int i = 0; i < n_ratios; i++) {
    t0 = now();
    pq_state st = {0};
    pq_params pp;
    pq_params_init(&pp, (uint32_t)b->dim);
    pp.m = pq_m_for_ratio((uint32_t)b->dim, ratios[i]);
    pp.n_threads = b->threads;
    if (pq_train(b->base, b->n, (uint32_t)b->dim, &pp, &st.p, NULL) != QV_OK)
      die("pq_train");
    st.codes = malloc(b->n * pp.m);
    if (pq_encode(st.p, b->base, b->n, st.codes, NULL) != QV_OK)
      die("pq_encode");
    st.lut = malloc((size_t)pp.m * PQ_KSUB * 4);
    char name[32];
    snprintf(name, sizeof name, "pq x%u (m=%u)", ratios[i], pp.m);
    s = (scanner){name, (double)pp.m, pq_prep, pq_scan, &st, b};
    run_scanner(b, &s, now() - t0);
    pq_free(st.p);
    free(st.codes);
    free(st.lut);
  }
}

/* ---- ivf section ------------------------------------------------------------ */

static void ivf_curve(bench *b, const ivf *ix, const char *name,
                      uint32_t code_bytes, uint32_t rescore_os,
                      double build_s) {
  static const uint32_t probes[] = {1, 2, 4, 8, 16, 32, 64};
  ivf_scratch *sc = ivf_scratch_new();
  quant_hit *hits = malloc(b->k * sizeof *hits);
  for (size_t pi = 0; pi < sizeof probes / sizeof *probes; pi++) {
    if (probes[pi] > ivf_nlist(ix)) break;
    ivf_search_params sp;
    ivf_search_params_init(&sp);
    sp.nprobe = probes[pi];
    sp.rescore = (uint32_t)(rescore_os * b->k);
    double rec = 0, t0 = now();
    for (size_t i = 0; i < b->nq; i++) {
      uint32_t nh = 0;
      ivf_search(ix, b->query + i * b->dim, (uint32_t)b->k, &sp, sc, hits,
                 &nh);
      rec += recall_one(hits, nh, b->gt + i * b->k, b->k);
    }
    double t = now() - t0;
    /* row id + code (+ the L2 correction term of IVF-PQ, see ivf_int.h) */
    double per_vec = 4.0 + code_bytes +
                     (code_bytes && b->metric == VEC_L2SQ ? 4.0 : 0.0);
    double fixed = (double)ivf_memory_bytes(ix) - per_vec * b->n;
    printf("| %-24s | %5u | %.4f | %9.0f | %5.0f | %7.0f | %7.2f |\n", name,
           probes[pi], rec / b->nq, b->nq / t, per_vec, fixed / 1024,
           build_s);
    fflush(stdout);
  }
  free(hits);
  ivf_scratch_free(sc);
}

static void section_ivf(bench *b, uint32_t nlist, const uint32_t *ratios,
                        int n_ratios) {
  printf("\n### IVF, nlist %u, %zu queries, k=%zu (B/vec: row id + code "
         "resident per vector; fixed: centroids and codebooks; the float32 "
         "vectors, read only to score or rescore, are not counted)\n\n",
         nlist, b->nq, b->k);
  printf("| index | nprobe | recall | QPS | B/vec | fixed KiB | build s |\n");
  printf("|---|---|---|---|---|---|---|\n");
  ivf_params p;
  ivf_params_init(&p, IVF_FLAT, (uint32_t)b->dim);
  p.nlist = nlist;
  p.n_threads = b->threads;
  ivf *ix = NULL;
  qv_err err;
  double t0 = now();
  if (ivf_build(b->base, (uint32_t)b->n, (uint32_t)b->dim, b->metric, &p, &ix,
                &err) != QV_OK)
    die(err.msg);
  ivf_curve(b, ix, "ivf-flat", 0, 0, now() - t0);
  ivf_free(ix);
  for (int i = 0; i < n_ratios; i++) {
    ivf_params_init(&p, IVF_PQ, (uint32_t)b->dim);
    p.nlist = nlist;
    p.n_threads = b->threads;
    p.pq_m = pq_m_for_ratio((uint32_t)b->dim, ratios[i]);
    t0 = now();
    if (ivf_build(b->base, (uint32_t)b->n, (uint32_t)b->dim, b->metric, &p,
                  &ix, &err) != QV_OK)
      die(err.msg);
    double bs = now() - t0;
    char name[64];
    snprintf(name, sizeof name, "ivf-pq x%u (m=%u)", ratios[i], p.pq_m);
    ivf_curve(b, ix, name, p.pq_m, 0, bs);
    snprintf(name, sizeof name, "ivf-pq x%u +rescore os4", ratios[i]);
    ivf_curve(b, ix, name, p.pq_m, 4, bs);
    snprintf(name, sizeof name, "ivf-pq x%u +rescore os8", ratios[i]);
    ivf_curve(b, ix, name, p.pq_m, 8, bs);
    ivf_free(ix);
  }
}

/* ---- main ------------------------------------------------------------------- */

static int parse_list(const char *s, uint32_t *out, int max) {
  int n = 0;
  while (*s && n < max) {
    out[n++] = (uint32_t)strtoul(s, (char **)&s, 10);
    if (*s == ',') s++;
  }
  return n;
}

int main(int argc, char **argv) {
  const char *base = NULL, *query = NULL, *gt = NULL, *metric = "l2",
             *sections = "scan,ivf";
  size_t nq = 1000, k = 10;
  unsigned threads = 2, nlist = 0;
  uint32_t ratios[8] = {8, 16, 32, 64}, ivf_ratios[8] = {16, 32};
  int n_ratios = 4, n_ivf_ratios = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    const char *a = argv[i], *v = argv[i + 1];
    if (!strcmp(a, "--base")) base = v;
    else if (!strcmp(a, "--query")) query = v;
    else if (!strcmp(a, "--gt")) gt = v;
    else if (!strcmp(a, "--metric")) metric = v;
    else if (!strcmp(a, "--nq")) nq = strtoul(v, NULL, 10);
    else if (!strcmp(a, "--k")) k = strtoul(v, NULL, 10);
    else if (!strcmp(a, "--threads")) threads = (unsigned)atoi(v);
    else if (!strcmp(a, "--nlist")) nlist = (unsigned)atoi(v);
    else if (!strcmp(a, "--pq-ratios")) n_ratios = parse_list(v, ratios, 8);
    else if (!strcmp(a, "--ivf-pq-ratios"))
      n_ivf_ratios = parse_list(v, ivf_ratios, 8);
    else if (!strcmp(a, "--sections")) sections = v;
    else if (!strcmp(a, "--only")) only = v;
    else die("unknown option (see the header of bench/quant_bench.c)");
  }
  if (base == NULL || query == NULL) die("--base and --query are required");
  bench b = {.k = k, .threads = threads};
  size_t qdim;
  b.base = read_vecs(base, &b.n, &b.dim);
  b.query = read_vecs(query, &b.nq, &qdim);
  if (qdim != b.dim) die("query and base dims differ");
  if (nq < b.nq) b.nq = nq;
  b.metric = strcmp(metric, "cos") == 0 ? VEC_NEG_DOT : VEC_L2SQ;
  if (b.metric == VEC_NEG_DOT) {
    for (size_t i = 0; i < b.n; i++) vec_normalize(b.base + i * b.dim, b.dim);
    for (size_t i = 0; i < b.nq; i++) vec_normalize(b.query + i * b.dim, b.dim);
  }
  b.full = dist_fn(dist_ops_get(), b.metric);
  b.gt = malloc(b.nq * k * sizeof(uint32_t));
  if (gt != NULL) {
    size_t gn, gd;
    int32_t *g = read_vecs(gt, &gn, &gd);
    if (gn < b.nq || gd < k) die("ground truth too small");
    for (size_t i = 0; i < b.nq; i++)
      for (size_t j = 0; j < k; j++) b.gt[i * k + j] = (uint32_t)g[i * gd + j];
    free(g);
  } else {
    quant_hit *h = malloc(k * sizeof *h);
    for (size_t i = 0; i < b.nq; i++) {
      quant_topk t;
      quant_topk_init(&t, h, (uint32_t)k);
      for (size_t r = 0; r < b.n; r++)
        quant_topk_push(&t, (uint32_t)r,
                        b.full(b.query + i * b.dim, b.base + r * b.dim, b.dim));
      quant_topk_sort(&t);
      for (size_t j = 0; j < k; j++) b.gt[i * k + j] = h[j].row;
    }
    free(h);
  }
  if (nlist == 0) { /* the power of two nearest sqrt(n) */
    nlist = 1;
    while ((double)nlist * nlist * 2 < (double)b.n) nlist *= 2;
  }
  printf("# quant_bench: %s (%zu x %zu), %s, kernels %s\n", base, b.n, b.dim,
         b.metric == VEC_NEG_DOT ? "cosine (dot on unit vectors)" : "L2",
         quant_isa_name(quant_isa_chosen()));
  if (strstr(sections, "scan")) section_scan(&b, ratios, n_ratios);
  if (strstr(sections, "ivf")) section_ivf(&b, nlist, ivf_ratios, n_ivf_ratios);
  free(b.base);
  free(b.query);
  free(b.gt);
  return 0;
}
