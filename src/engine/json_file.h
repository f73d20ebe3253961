/* json_file.h: small JSON files written atomically with a checksum of their
 * canonical form (config.json, indexes.json). A flipped digit is still valid
 * JSON; the CRC-32C of the compact, key-sorted text without the checksum
 * field catches it. */
#ifndef QV_ENGINE_JSON_FILE_H
#define QV_ENGINE_JSON_FILE_H

#include <jansson.h>

#include "quiver.h"

/* Writes `o` (adds a "checksum" member to it). */
qv_rc json_file_write(const char *path, json_t *o, qv_err *err);
/* Reads and verifies; on QV_OK *out (without "checksum") is the caller's.
 * Errors: QV_ENOTFOUND (no file), QV_ECORRUPT, QV_EIO. */
qv_rc json_file_read(const char *path, json_t **out, qv_err *err);

#endif
