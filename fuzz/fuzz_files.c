/* fuzz_files.c: every on-disk format through its open call. The first input
 * byte picks the format; the rest is the file:
 *   0 segment.qvs (segfile_open)   1 MANIFEST (manifest_read)
 *   2 a log file (wal_open + wal_replay)   3 graph.qvh (hnsw_load)
 *   4 a snapshot archive (tar_extract)     5 config.json / indexes.json
 *   6 codes-<space>.qvc (qcodes_load, every kind; 300 rows of 8 dims)
 *   7 ivf-<space>.qvi (ivf_load over 300 rows of 8 dims)
 * Each must reject what it cannot trust with an error, never crash. */
#include <stdio.h>

#include "base/fileio.h"
#include "engine/json_file.h"
#include "fuzz_util.h"
#include "index/hnsw.h"
#include "quant/ivf.h"
#include "quant/qcodes.h"
#include "storage/manifest.h"
#include "storage/segfile.h"
#include "storage/tar.h"
#include "storage/wal.h"

static qv_rc count_rec(void *ctx, uint64_t lsn, const void *rec, size_t len, qv_err *err) {
  (void)lsn, (void)rec, (void)err;
  *(size_t *)ctx += len;
  return QV_OK;
}

int LLVMFuzzerTestOneInput(const unsigned char *d, size_t n);
int LLVMFuzzerTestOneInput(const unsigned char *d, size_t n) {
  if (n == 0) return 0;
  const char *dir = fuzz_dir();
  char path[512], sub[512];
  unsigned kind = d[0] % 8;
  d++, n--;
  switch (kind) {
  case 0: {
    snprintf(path, sizeof path, "%s/segment.qvs", dir);
    fuzz_write(path, d, n);
    uint32_t dims[2] = {4, 2};
    fileio_map m;
    segfile_data sd;
    if (segfile_open(path, dims, 2, &m, &sd, NULL) == QV_OK) {
      volatile float sink = sd.n_rows ? sd.vecs[0][0] : 0;
      (void)sink;
      fileio_unmap(&m);
    }
    break;
  }
  case 1: {
    snprintf(path, sizeof path, "%s/MANIFEST", dir);
    fuzz_write(path, d, n);
    manifest m;
    if (manifest_read(path, &m, NULL) == QV_OK) manifest_free(&m);
    break;
  }
  case 2: {
    snprintf(sub, sizeof sub, "%s/wal", dir);
    fileio_remove_tree(sub, NULL);
    fileio_mkdirs(sub, NULL);
    snprintf(path, sizeof path, "%s/00000000000000000001.wal", sub);
    fuzz_write(path, d, n);
    wal *w;
    if (wal_open(sub, 1, &w, NULL) == QV_OK) {
      size_t bytes = 0;
      (void)wal_replay(w, 1, count_rec, &bytes, NULL);
      wal_close(w);
    }
    break;
  }
  case 3: {
    static float vecs[64 * 4];
    snprintf(path, sizeof path, "%s/graph.qvh", dir);
    fuzz_write(path, d, n);
    hnsw *h;
    if (hnsw_load(path, vecs, 64, 4, VEC_L2SQ, &h, NULL) == QV_OK) {
      hnsw_hit hits[5];
      uint32_t nh;
      float q[4] = {0};
      (void)hnsw_search(h, q, 5, 16, NULL, NULL, NULL, hits, &nh);
      hnsw_free(h);
    }
    break;
  }
  case 4: {
    snprintf(path, sizeof path, "%s/in.snapshot", dir);
    fuzz_write(path, d, n);
    snprintf(sub, sizeof sub, "%s/out", dir);
    fileio_remove_tree(sub, NULL);
    fileio_mkdirs(sub, NULL);
    (void)tar_extract(path, sub, NULL);
    break;
  }
  case 5: {
    snprintf(path, sizeof path, "%s/config.json", dir);
    fuzz_write(path, d, n);
    json_t *o;
    if (json_file_read(path, &o, NULL) == QV_OK) json_decref(o);
    break;
  }
  case 6: {
    snprintf(path, sizeof path, "%s/codes-0.qvc", dir);
    fuzz_write(path, d, n);
    for (int k = QCODES_SQ8; k <= QCODES_U8; k++) {
      qcodes *q;
      if (qcodes_load(path, (qcodes_kind)k, 300, 8, VEC_L2SQ, &q, NULL) == QV_OK) {
        float x[8];
        qcodes_decode(q, 299, x); /* every row is there */
        qcodes_free(q);
      }
    }
    break;
  }
  case 7: {
    static float vecs[300 * 8];
    snprintf(path, sizeof path, "%s/ivf-0.qvi", dir);
    fuzz_write(path, d, n);
    ivf *iv;
    if (ivf_load(path, vecs, 300, 8, VEC_L2SQ, &iv, NULL) == QV_OK) ivf_free(iv);
    break;
  }
  }
  return 0;
}
