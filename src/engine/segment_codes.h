/* segment_codes.h: what a sealed segment keeps per vector space besides its
 * float32 vectors — quantized codes, narrow (float16 / uint8) copies of the
 * vectors, or an IVF index instead of the HNSW graph — decided from the
 * space's storage parameters by one rule (segcodes_plan_for) that the
 * build and the open both apply, so a file the plan expects and cannot find
 * is corruption, never a silent fallback.
 *
 * Files in the segment directory, each checksummed, written before the
 * MANIFEST names the segment (like graph-<space>.qvh):
 *   codes-<space>.qvc  quantized codes (src/quant/qcodes_io.c format)
 *   vecs-<space>.qvc   the vectors in the space's datatype (same format)
 *   ivf-<space>.qvi    IVF-Flat / IVF-PQ index (src/quant/ivf_io.c format),
 *                      written instead of graph-<space>.qvh */
#ifndef QV_ENGINE_SEGMENT_CODES_H
#define QV_ENGINE_SEGMENT_CODES_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/space.h"
#include "quant/ivf.h"
#include "quant/qcodes.h"
#include "quiver.h"

/* Product codes (and IVF-PQ) train 256 centroids per subspace: segments
 * with fewer rows of the vector get no product codes (searched on float32;
 * IVF-PQ falls back to IVF-Flat). */
#define SEGCODES_PQ_MIN_ROWS 256u
/* Default IVF probes: nlist / 16, at least this many. */
#define SEGCODES_NPROBE_MIN 8u

typedef struct segcodes_plan {
  int codes;   /* qcodes_kind walked by the graph (lossy), or 0 */
  int narrow;  /* qcodes_kind of the exact narrow vectors, or 0 */
  bool use_ivf;
  ivf_kind ivf; /* when use_ivf */
  uint32_t nlist;
} segcodes_plan;

/* The plan for space `x` in a sealed segment of n_rows rows, n_present of
 * which carry the vector (n_present > 0). */
void segcodes_plan_for(const vspace *x, uint32_t n_rows, uint32_t n_present,
                       segcodes_plan *p);

/* Builds and saves into `dir` the codes / narrow vectors of space `space`
 * per its plan (not the index; see segcodes_build_ivf). `vecs` holds n rows
 * (zeros where present[r] is 0); training reads only present rows.
 * Errors: QV_EIO, QV_ENOMEM, QV_EINVAL (training). */
qv_rc segcodes_build(const vspace *x, const segcodes_plan *p, const float *vecs,
                     const uint8_t *present, uint32_t n, uint32_t n_present,
                     uint32_t n_threads, uint64_t seed, const char *dir, uint32_t space,
                     qv_err *err);

/* Builds and saves the IVF index of a space whose plan says use_ivf. */
qv_rc segcodes_build_ivf(const vspace *x, const segcodes_plan *p, const float *vecs,
                         uint32_t n, uint32_t n_threads, uint64_t seed, const char *dir,
                         uint32_t space, qv_err *err);

/* Loads what the plan says space `space` of the segment in `dir` has;
 * outputs not in the plan are set to NULL. `vecs` (n rows, the segment
 * file's) is borrowed by an IVF index. Errors: QV_ECORRUPT (a file the
 * plan expects is missing or fails a check; names it), QV_ENOMEM. */
qv_rc segcodes_open(const vspace *x, const segcodes_plan *p, const char *dir, uint32_t space,
                    const float *vecs, uint32_t n, qcodes **codes, qcodes **narrow, ivf **ix,
                    qv_err *err);

/* The file paths of space `i` in segment directory `dir`. */
void segcodes_codes_path(const char *dir, uint32_t i, char *buf, size_t cap);
void segcodes_vecs_path(const char *dir, uint32_t i, char *buf, size_t cap);
void segcodes_ivf_path(const char *dir, uint32_t i, char *buf, size_t cap);

/* The default nprobe for an index of `nlist` lists. */
uint32_t segcodes_nprobe_default(uint32_t nlist);

#endif
