/* segment.c: segment memory — reservation, appends, opening sealed files,
 * reference counting; see segment.h for the life cycle and visibility rule. */
#include "engine/segment.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include <jansson.h>

#include "base/alloc.h"
#include "base/err.h"
#include "base/log.h"
#include "engine/id.h"
#include "filter/filter.h"

/* Anonymous, lazily committed reservation. */
static void *reserve(size_t n) {
  if (n == 0) n = 1;
  void *p = mmap(NULL, n, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  return p == MAP_FAILED ? NULL : p;
}

static void release(const void *p, size_t n) {
  if (p != NULL) munmap((void *)p, n ? n : 1);
}

/* Full vectors read only for rescoring, get and exact scans are touched at
 * random: no read-ahead of neighbouring pages into the page cache. */
static void advise_random(const void *p, size_t n) {
  uintptr_t a = (uintptr_t)p & ~(uintptr_t)4095;
  if (n > 0) (void)madvise((void *)a, n + ((uintptr_t)p - a), MADV_RANDOM);
}

static size_t vec_bytes(const segment *s, uint32_t i) {
  return (size_t)s->cap * s->sp->s[i].dim * sizeof(float);
}

void segment_graph_path(const char *dir, uint32_t i, char *buf, size_t cap) {
  snprintf(buf, cap, "%s/graph-%u.qvh", dir, i);
}

qv_rc segment_new_mutable(const spaces *sp, uint32_t cap, uint64_t first_lsn,
                          segment **out, qv_err *err) {
  segment *s = qv_calloc(1, sizeof *s);
  if (s == NULL) return qv_err_set(err, QV_ENOMEM, "segment: no memory");
  s->state = SEG_MUTABLE;
  segidx_init(&s->pix);
  s->sp = sp;
  s->cap = cap;
  s->refs = 1;
  s->first_lsn = first_lsn;
  bool ok = true;
  for (uint32_t i = 0; i < sp->n; i++) {
    s->vecs[i] = reserve(vec_bytes(s, i));
    s->present[i] = reserve(cap);
    ok &= s->vecs[i] != NULL && s->present[i] != NULL;
  }
  s->ids = reserve((size_t)cap * sizeof(qv_point_id));
  s->ins_lsn = reserve((size_t)cap * 8);
  s->del_lsn = reserve((size_t)cap * 8);
  s->payloads = reserve((size_t)cap * sizeof(char *));
  s->payload_lens = reserve((size_t)cap * 4);
  s->pjson = reserve((size_t)cap * sizeof(json_t *));
  if (!ok || !s->ids || !s->ins_lsn || !s->del_lsn || !s->payloads ||
      !s->payload_lens || !s->pjson) {
    segment_unref(s);
    return qv_err_set(err, QV_ENOMEM, "segment: cannot reserve %u rows", cap);
  }
  *out = s;
  return QV_OK;
}

qv_rc segment_open_sealed(const char *dir, uint64_t seg_id, const spaces *sp,
                          segment **out, qv_err *err) {
  char path[PATH_MAX];
  segment *s = qv_calloc(1, sizeof *s);
  if (s == NULL) return qv_err_set(err, QV_ENOMEM, "segment: no memory");
  s->state = SEG_SEALED;
  segidx_init(&s->pix);
  s->seg_id = seg_id;
  s->sp = sp;
  s->refs = 1;
  s->dir = qv_strdup(dir);
  segfile_data d;
  uint32_t dims[QV_SPACES_MAX];
  for (uint32_t i = 0; i < sp->n; i++) dims[i] = sp->s[i].dim;
  snprintf(path, sizeof path, "%s/segment.qvs", dir);
  qv_rc rc = s->dir ? segfile_open(path, dims, sp->n, &s->map, &d, err)
                    : qv_err_set(err, QV_ENOMEM, "segment: no memory");
  if (rc != QV_OK) goto fail;
  s->cap = s->n_rows = d.n_rows;
  for (uint32_t i = 0; i < sp->n; i++) {
    s->vecs[i] = d.vecs[i];
    s->present[i] = d.present[i];
  }
  s->ids = d.ids;
  s->ins_lsn = d.lsns;
  s->payload_off = d.payload_off;
  s->payload_blob = d.payload_blob;
  s->first_lsn = d.first_lsn;
  s->end_lsn = d.end_lsn;
  s->build_seconds = d.build_seconds;
  s->n_tombs = s->cap_tombs = d.n_tombs;
  if (d.n_tombs) {
    s->tombs = qv_malloc((size_t)d.n_tombs * sizeof *s->tombs);
    if (s->tombs == NULL) {
      rc = qv_err_set(err, QV_ENOMEM, "segment %s: no memory", dir);
      goto fail;
    }
    memcpy(s->tombs, d.tombs, (size_t)d.n_tombs * sizeof *s->tombs);
  }
  s->del_lsn = qv_malloc((size_t)d.n_rows * 8 + 8);
  s->pjson = qv_calloc((size_t)d.n_rows + 1, sizeof(json_t *));
  if (s->del_lsn == NULL || s->pjson == NULL) {
    rc = qv_err_set(err, QV_ENOMEM, "segment %s: no memory", dir);
    goto fail;
  }
  for (uint32_t i = 0; i < d.n_rows; i++) s->del_lsn[i] = LSN_LIVE;
  /* A space gets a graph (or an IVF index) and the codes of its plan when
   * some row has its vector (shard_build.c). */
  for (uint32_t i = 0; i < sp->n && d.n_rows > 0; i++) {
    uint32_t n_present = 0;
    for (uint32_t r = 0; r < d.n_rows; r++) n_present += d.present[i][r] != 0;
    s->all_present[i] = n_present == d.n_rows;
    if (n_present == 0) continue;
    segcodes_plan plan;
    segcodes_plan_for(&sp->s[i], d.n_rows, n_present, &plan);
    if (!plan.use_ivf) {
      segment_graph_path(dir, i, path, sizeof path);
      rc = hnsw_load(path, d.vecs[i], d.n_rows, sp->s[i].dim, sp->s[i].metric, &s->graph[i],
                     err);
    }
    if (rc == QV_OK)
      rc = segcodes_open(&sp->s[i], &plan, dir, i, d.vecs[i], d.n_rows, &s->codes[i],
                         &s->narrow[i], &s->ivf[i], err);
    if (rc != QV_OK) goto fail;
    if (sp->s[i].st.on_disk || s->narrow[i] != NULL)
      advise_random(d.vecs[i], (size_t)d.n_rows * sp->s[i].dim * sizeof(float));
  }
  *out = s;
  return QV_OK;
fail:
  segment_unref(s);
  return rc;
}

void segment_ref(segment *s) { __atomic_add_fetch(&s->refs, 1, __ATOMIC_RELAXED); }

/* Marks "parsed, and empty" in the payload cache. */
static json_t empty_marker;
#define EMPTY_PAYLOAD (&empty_marker)

static void free_pjson(segment *s) {
  if (s->pjson == NULL) return;
  uint32_t n = s->n_rows;
  for (uint32_t i = 0; i < n; i++)
    if (s->pjson[i] != NULL && s->pjson[i] != EMPTY_PAYLOAD) json_decref(s->pjson[i]);
}

const json_t *segment_payload_json(segment *s, uint32_t row) {
  json_t *j = __atomic_load_n(&s->pjson[row], __ATOMIC_ACQUIRE);
  if (j == NULL) {
    uint32_t len;
    const char *text = segment_payload(s, row, &len);
    j = len ? json_loadb(text, len, 0, NULL) : NULL;
    if (j == NULL) j = EMPTY_PAYLOAD; /* empty (or, impossibly, unparsable) */
    json_t *expected = NULL;
    if (!__atomic_compare_exchange_n(&s->pjson[row], &expected, j, false,
                                     __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
      if (j != EMPTY_PAYLOAD) json_decref(j); /* another thread won */
      j = expected;
    }
  }
  return j == EMPTY_PAYLOAD ? NULL : j;
}

void segment_unref(segment *s) {
  if (s == NULL || __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
  segidx_destroy(&s->pix); /* before the payloads its strings point into */
  free_pjson(s);
  if (s->state == SEG_SEALED) {
    for (uint32_t i = 0; i < QV_SPACES_MAX; i++) {
      hnsw_free(s->graph[i]);
      qcodes_free(s->codes[i]);
      qcodes_free(s->narrow[i]);
      ivf_free(s->ivf[i]);
    }
    fileio_unmap(&s->map);
    qv_free(s->del_lsn);
    qv_free(s->pjson);
    if (s->remove_on_free && s->dir != NULL) {
      qv_err e;
      if (fileio_remove_tree(s->dir, &e) != QV_OK)
        qv_log(QV_LOG_WARN, "segment", "remove %s: %s", s->dir, e.msg);
    }
  } else {
    uint32_t n = s->n_rows;
    if (s->payloads)
      for (uint32_t i = 0; i < n; i++) qv_free(s->payloads[i]);
    for (uint32_t i = 0; s->sp && i < s->sp->n; i++) {
      release(s->vecs[i], vec_bytes(s, i));
      release(s->present[i], s->cap);
    }
    release(s->ids, (size_t)s->cap * sizeof(qv_point_id));
    release(s->ins_lsn, (size_t)s->cap * 8);
    release(s->del_lsn, (size_t)s->cap * 8);
    release(s->payloads, (size_t)s->cap * sizeof(char *));
    release(s->payload_lens, (size_t)s->cap * 4);
    release(s->pjson, (size_t)s->cap * sizeof(json_t *));
  }
  qv_free(s->tombs);
  qv_free(s->dir);
  qv_free(s);
}

qv_rc segment_append(segment *s, const qv_point_id *id, const float *const *vecs,
                     const char *payload, uint32_t payload_len, char *owned_payload,
                     uint64_t lsn, uint32_t *row) {
  uint32_t r = s->n_rows;
  char *pl = owned_payload;
  if (pl == NULL && payload_len > 0) {
    pl = qv_strndup(payload, payload_len);
    if (pl == NULL) return QV_ENOMEM;
  }
  /* Reserved pages start zeroed, so an absent vector stays all zeros. */
  for (uint32_t i = 0; i < s->sp->n; i++) {
    if (vecs[i] == NULL) continue;
    uint32_t dim = s->sp->s[i].dim;
    memcpy((float *)s->vecs[i] + (size_t)r * dim, vecs[i], (size_t)dim * sizeof(float));
    ((uint8_t *)s->present[i])[r] = 1;
  }
  ((qv_point_id *)s->ids)[r] = id_clean(id);
  ((uint64_t *)s->ins_lsn)[r] = lsn;
  s->del_lsn[r] = LSN_LIVE;
  s->payloads[r] = pl;
  s->payload_lens[r] = payload_len;
  __atomic_store_n(&s->n_rows, r + 1, __ATOMIC_RELEASE);
  *row = r;
  return QV_OK;
}

qv_rc segment_reserve_tombs(segment *s, uint32_t more) {
  if (s->n_tombs + more <= s->cap_tombs) return QV_OK;
  uint32_t ncap = s->cap_tombs ? s->cap_tombs : 64;
  while (ncap < s->n_tombs + more) ncap *= 2;
  segfile_tomb *t = qv_realloc(s->tombs, (size_t)ncap * sizeof *t);
  if (t == NULL) return QV_ENOMEM;
  s->tombs = t;
  s->cap_tombs = ncap;
  return QV_OK;
}

qv_rc segment_add_tomb(segment *s, const qv_point_id *id, uint64_t lsn) {
  if (s->n_tombs == s->cap_tombs) {
    uint32_t ncap = s->cap_tombs ? s->cap_tombs * 2 : 64;
    segfile_tomb *t = qv_realloc(s->tombs, (size_t)ncap * sizeof *t);
    if (t == NULL) return QV_ENOMEM;
    s->tombs = t;
    s->cap_tombs = ncap;
  }
  s->tombs[s->n_tombs].id = id_clean(id);
  s->tombs[s->n_tombs].lsn = lsn;
  s->n_tombs++;
  return QV_OK;
}

void segment_kill(segment *s, uint32_t row, uint64_t lsn) {
  __atomic_store_n(&s->del_lsn[row], lsn, __ATOMIC_RELEASE);
  __atomic_add_fetch(&s->n_dead, 1, __ATOMIC_RELAXED);
}

const char *segment_payload(const segment *s, uint32_t row, uint32_t *len) {
  if (s->state == SEG_SEALED) {
    *len = (uint32_t)(s->payload_off[row + 1] - s->payload_off[row]);
    return s->payload_blob + s->payload_off[row];
  }
  *len = s->payload_lens[row];
  return s->payloads[row];
}

/* Whether space i's float32 vectors are only read from disk. */
static bool vecs_on_disk(const segment *s, uint32_t i) {
  return s->state == SEG_SEALED && (s->sp->s[i].st.on_disk || s->narrow[i] != NULL);
}

uint64_t segment_vector_bytes(const segment *s) {
  uint64_t b = 0;
  for (uint32_t i = 0; i < s->sp->n; i++) {
    if (s->narrow[i] != NULL)
      b += (uint64_t)s->narrow[i]->n * s->narrow[i]->stride;
    else if (!vecs_on_disk(s, i))
      b += (uint64_t)segment_rows(s) * s->sp->s[i].dim * sizeof(float);
  }
  return b;
}

uint64_t segment_vector_disk_bytes(const segment *s) {
  uint64_t b = 0;
  for (uint32_t i = 0; i < s->sp->n; i++)
    if (vecs_on_disk(s, i)) b += (uint64_t)s->n_rows * s->sp->s[i].dim * sizeof(float);
  return b;
}

uint64_t segment_code_bytes(const segment *s) {
  uint64_t b = 0;
  for (uint32_t i = 0; i < s->sp->n; i++) {
    if (s->codes[i] != NULL) b += qcodes_memory_bytes(s->codes[i]);
    if (s->ivf[i] != NULL) b += ivf_code_bytes(s->ivf[i]);
  }
  return b;
}

uint64_t segment_graph_bytes(const segment *s) {
  uint64_t b = 0;
  for (uint32_t i = 0; i < s->sp->n; i++) {
    if (s->graph[i] != NULL) b += hnsw_memory_bytes(s->graph[i]);
    if (s->ivf[i] != NULL) b += ivf_memory_bytes(s->ivf[i]) - ivf_code_bytes(s->ivf[i]);
  }
  return b;
}

uint64_t segment_payload_bytes(const segment *s) {
  if (s->state == SEG_SEALED) return s->payload_off[s->n_rows];
  uint64_t b = 0;
  uint32_t n = segment_rows(s);
  for (uint32_t i = 0; i < n; i++) b += s->payload_lens[i];
  return b;
}

typedef struct row_ref {
  const segment *s;
  uint32_t row;
} row_ref;

static bool row_has_vector(void *ctx, const char *name) {
  const row_ref *r = ctx;
  int space = spaces_find(r->s->sp, name);
  return space >= 0 && segment_has(r->s, (uint32_t)space, r->row);
}

bool segment_filter_match(segment *s, uint32_t row, const struct qv_filter *f) {
  if (f == NULL) return true;
  row_ref ref = {s, row};
  filter_point pt = {&s->ids[row], row_has_vector, &ref};
  return filter_match_point(f, &pt, segment_payload_json(s, row));
}
