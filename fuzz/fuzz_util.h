/* fuzz_util.h: helpers shared by the fuzz targets: a per-process scratch
 * directory and writing the input into a file there (file decoders are
 * fuzzed through the same open calls the engine uses). */
#ifndef QV_FUZZ_UTIL_H
#define QV_FUZZ_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static inline const char *fuzz_dir(void) {
  static char dir[256];
  if (dir[0] == 0) {
    snprintf(dir, sizeof dir, "/tmp/qvfuzz-%d", (int)getpid());
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir -p %s", dir, dir);
    if (system(cmd) != 0) abort();
  }
  return dir;
}

static inline void fuzz_write(const char *path, const unsigned char *d, size_t n) {
  FILE *f = fopen(path, "wb");
  if (f == NULL) abort();
  if (n && fwrite(d, 1, n, f) != n) abort();
  fclose(f);
}

#endif
