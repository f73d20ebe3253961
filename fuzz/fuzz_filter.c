/* fuzz_filter.c: Qdrant filter JSON -> parse -> evaluate on a few payloads. */
#include <jansson.h>

#include "filter/filter.h"

int LLVMFuzzerTestOneInput(const unsigned char *d, size_t n);
int LLVMFuzzerTestOneInput(const unsigned char *d, size_t n) {
  static json_t *payloads[3];
  if (payloads[0] == NULL) {
    payloads[0] = json_loads("{\"a\":1,\"b\":\"x\",\"c\":[1,2,{\"d\":null}],\"t\":\"2024-01-01T00:00:00Z\"}", 0, NULL);
    payloads[1] = json_loads("{\"l\":{\"lon\":1.5,\"lat\":2},\"a\":[[1]],\"n\":[{\"x\":1},{\"x\":[2,3]}]}", 0, NULL);
    payloads[2] = json_object();
  }
  qv_filter *f;
  if (n == 0 || qv_filter_parse((const char *)d, n, &f, NULL) != QV_OK) return 0;
  qv_point_id id = qv_id_num(7);
  for (int i = 0; i < 3; i++) (void)filter_match(f, &id, payloads[i]);
  qv_filter_free(f);
  return 0;
}
