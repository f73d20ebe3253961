/* sha256.h: SHA-256 (FIPS 180-4) for snapshot checksums — the `checksum`
 * of a SnapshotDescription and the `checksum` a client may give when it
 * recovers a snapshot, both lowercase hex as Qdrant writes them.
 *
 * Streaming: init, update any number of times, final. A context is plain
 * memory (no allocation), used by one thread at a time. */
#ifndef QV_SERVER_SHA256_H
#define QV_SERVER_SHA256_H

#include <stddef.h>
#include <stdint.h>

#include "quiver.h"

#define SHA256_HEX_LEN 64

typedef struct sha256_ctx {
  uint32_t h[8];
  uint64_t n_bytes; /* message length so far */
  uint8_t buf[64];  /* a partial block */
  size_t n_buf;
} sha256_ctx;

void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t n);
/* Pads, writes the 32-byte digest and leaves `c` unusable until init. */
void sha256_final(sha256_ctx *c, uint8_t out[32]);
/* 64 lowercase hex digits and a NUL. */
void sha256_hex(const uint8_t digest[32], char out[SHA256_HEX_LEN + 1]);
/* The hex digest of the whole file `path`, read in 1 MiB pieces.
 * Errors: QV_EIO (cannot open or read it), QV_ENOMEM. */
qv_rc sha256_file(const char *path, char out[SHA256_HEX_LEN + 1], qv_err *err);

#endif
