/* shard_read.h: searching and reading one shard (shard_read.c). */
#ifndef QV_ENGINE_SHARD_READ_H
#define QV_ENGINE_SHARD_READ_H

#include "engine/shard.h"
#include "engine/topk.h"

typedef struct shard_search_args {
  const float *query; /* prepared: normalised for Cosine */
  uint32_t space;     /* which vector space to search */
  uint32_t ef;
  bool exact;
  const idmap *allow;  /* ids allowed, or NULL for all */
  size_t n_allow;      /* allowed ids routed to this shard */
  const qv_filter *filter; /* payload filter, or NULL */
  /* codes and IVF (see qv_search_params) */
  bool quant_ignore;  /* walk the full vectors, not the codes */
  bool rescore;       /* re-score the codes' shortlist with full vectors */
  float oversampling; /* shortlist = max(k, ceil(oversampling * k)), >= 1 */
  uint32_t nprobe;    /* IVF lists probed; 0 = segcodes_nprobe_default */
} shard_search_args;

/* Pushes the shard's best hits into `out` (whose k is k + offset). */
qv_rc shard_search(shard *sh, const shard_search_args *a, topk *out,
                   qv_err *err);

/* Copies point `id` into *rec (vector and payload qv_malloc'd when asked);
 * *found says whether it exists. */
qv_rc shard_get(shard *sh, const qv_point_id *id, bool with_vector,
                bool with_payload, qv_record *rec, bool *found, qv_err *err);

/* Up to `limit` records matching `filter` (NULL: all) with id >= start
 * (NULL: from the first) in id order, copied into out[] (room for `limit`);
 * *n receives how many. */
qv_rc shard_scroll(shard *sh, const qv_filter *filter, const qv_point_id *start,
                   size_t limit, bool with_vector, bool with_payload,
                   qv_record *out, size_t *n, qv_err *err);

uint64_t shard_count(shard *sh);
/* Points matching `filter`. */
qv_rc shard_count_filtered(shard *sh, const qv_filter *filter, uint64_t *out,
                           qv_err *err);
/* The ids of the points matching `filter` (qv_malloc'd array). */
qv_rc shard_select(shard *sh, const qv_filter *filter, qv_point_id **ids,
                   size_t *n, qv_err *err);
void record_clear(qv_record *r);

#endif
