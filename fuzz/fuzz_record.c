/* fuzz_record.c: write-ahead log record payloads -> rec_decode. */
#include <string.h>

#include "engine/record.h"

static qv_rc on_up(void *c, const qv_point_id *id, const float *const *v, const char *p,
                   uint32_t len) {
  (void)c, (void)id, (void)p, (void)len;
  volatile float sink = v[0] ? v[0][0] : 0;
  (void)sink;
  return QV_OK;
}
static qv_rc on_del(void *c, const qv_point_id *id) {
  (void)c, (void)id;
  return QV_OK;
}

int LLVMFuzzerTestOneInput(const unsigned char *d, size_t n);
int LLVMFuzzerTestOneInput(const unsigned char *d, size_t n) {
  static spaces sp;
  if (sp.n == 0) {
    qv_collection_config cfg;
    qv_collection_config_init(&cfg);
    cfg.dim = 3;
    cfg.n_named = 1;
    strcpy(cfg.named[0].name, "v");
    cfg.named[0].dim = 2;
    spaces_from_config(&cfg, &sp);
  }
  rec_visitor v = {NULL, on_up, on_del};
  (void)rec_decode(d, n, &sp, &v, NULL);
  return 0;
}
