/* ivf_int.h: the in-memory layout of an IVF index, shared by ivf.c (build,
 * search) and ivf_io.c (save, load) only.
 * Invariant: list_off[0] = 0, list_off is non-decreasing, list_off[nlist] =
 * n; ids[list_off[l] .. list_off[l+1]) are the rows of list l, each row in
 * exactly one list; for IVF_PQ, codes + i * pq->m is the code of ids[i]. */
#ifndef QV_QUANT_IVF_INT_H
#define QV_QUANT_IVF_INT_H

#include "quant/ivf.h"
#include "quant/pq.h"

struct ivf {
  ivf_kind kind;
  vec_metric metric;
  uint32_t n, dim, nlist;
  const float *vecs; /* borrowed */
  float *cent;       /* nlist * dim */
  uint32_t *list_off; /* nlist + 1 */
  uint32_t *ids;      /* n, grouped by list */
  uint32_t max_list;  /* longest list, for scratch sizing */
  pq *pq;             /* IVF_PQ only */
  uint8_t *codes;     /* IVF_PQ only: n * pq->m, in ids order */
  /* IVF_PQ with VEC_L2SQ only, in ids order: |r|^2 + 2 <c, r> for the
   * decoded residual r of each row and its list's centroid c. Derived from
   * the codes (never stored in the file), it lets one query-wide table
   * serve every list: |q - c - r|^2 = |q - c|^2 - 2 <q, r> + this. */
  float *rterm;
};

/* Fills ix->rterm from the codes (allocating it); L2 IVF-PQ only.
 * Errors: QV_ENOMEM. O(n * dim). */
qv_rc ivf_compute_rterm(ivf *ix, qv_err *err);

/* An empty shell with the shape set; arrays are allocated by the caller. */
qv_rc ivf_shell_new(ivf_kind kind, vec_metric metric, uint32_t n,
                    uint32_t dim, uint32_t nlist, const float *vecs,
                    ivf **out, qv_err *err);

#endif
