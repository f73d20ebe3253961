/* json_io.h: request-body parsing and response writing for the REST server.
 *
 * jansson holds integers as int64, but Qdrant point ids go up to 2^64-1. So
 * the body parser rewrites every bare integer above INT64_MAX into a "raw
 * number" before jansson sees it: a JSON string whose first character is
 * U+0001, followed by the number's digits. Readers of the tree ask
 * jsonio_raw() for them (ids, limits, vector components), and the writer
 * here emits raw numbers as the bare digits again, so a tree may be written
 * back (payloads, filters) without loss. The same raw strings carry f32
 * values (scores, vector components) in their shortest decimal form, which
 * jansson's %.17g output cannot do.
 *
 * Invariant: a tree that may hold raw numbers is only ever serialised by
 * jsonio_write()/jsonio_dumps(), never by json_dumps(). A request string that
 * itself starts with U+0001 (or U+0002, the vector placeholders below) is
 * refused by the parser, so user text can never pose as either. */
#ifndef QV_SERVER_JSON_IO_H
#define QV_SERVER_JSON_IO_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A growable byte buffer (qv_malloc'd). After an allocation failure every
 * further add is ignored and `failed` stays set. */
typedef struct sbuf {
  char *p;
  size_t n, cap;
  bool failed;
} sbuf;

void sbuf_init(sbuf *b);
void sbuf_free(sbuf *b);
void sbuf_add(sbuf *b, const void *p, size_t n);
void sbuf_adds(sbuf *b, const char *s);
void sbuf_addf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Hands over the NUL-terminated bytes (free with qv_free) and resets `b`;
 * NULL if an allocation failed. */
char *sbuf_take(sbuf *b, size_t *len);

/* Parses `len` bytes of JSON (an object or array at top level, duplicate
 * keys refused). On failure returns NULL and writes a message in serde's
 * style ("expected value at line 1 column 1") to msg. */
json_t *jsonio_parse(const char *text, size_t len, char *msg, size_t cap);

/* Vectors parsed outside jansson (json_scan.c). jsonio_parse_vecs reads
 * every array of plain numbers found at one of `vec_paths` straight into
 * float32s here; the tree holds a placeholder string in its place (a
 * string starting with U+0002), which jsonio_vec() turns back into the
 * floats. Paths name keys separated by '.', "[]" for any element of an
 * array and "*" for any key of an object: "points[].vector",
 * "points[].vector.*", "batch.vectors[]". Arrays that are not plain
 * numbers finite as float32 stay ordinary JSON arrays. Error messages are
 * exactly those of jsonio_parse. */
typedef struct jsonio_vecs {
  float *f;      /* the components of every array, one after another */
  size_t n_f, cap_f;
  size_t *off;   /* array k is f[off[k] .. off[k] + len[k]) */
  uint32_t *len;
  size_t n, cap;
} jsonio_vecs;

json_t *jsonio_parse_vecs(const char *text, size_t len, const char *const *vec_paths,
                          jsonio_vecs *vecs, char *msg, size_t cap);
/* The floats behind placeholder `v` (valid while `vecs` lives), or NULL
 * when `v` is not a placeholder of `vecs`. */
const float *jsonio_vec(const jsonio_vecs *vecs, const json_t *v, uint32_t *len);
void jsonio_vecs_free(jsonio_vecs *vecs);

/* Reads the JSON number token at s[0..n) as a float32, rounded correctly
 * (as strtof). Returns the bytes of the token, or 0 when s does not start
 * with a number in JSON's strict grammar or the value overflows float32
 * (underflow gives 0 or a subnormal, as strtof). */
size_t jsonio_scan_f32(const char *s, size_t n, float *out);

/* Writes finite f as the shortest decimal that reads back as f (JSON
 * number grammar, always with a '.' or an exponent so it stays a float),
 * NUL-terminated, into buf of JSONIO_F32_MAX bytes; returns its length.
 * json_float.c. */
#define JSONIO_F32_MAX 32
size_t jsonio_format_f32(float f, char *buf);

/* The pre-pass of the parsers (json_scan.c): refuses U+0001/U+0002
 * strings (-1, message in msg), rewrites integers above INT64_MAX as raw
 * numbers and, with `vecs`, replaces vector arrays. *copy is the text to
 * parse (qv_malloc'd) or NULL when nothing changed. -2: no memory. */
int jsonio_scan(const char *text, size_t len, const char *const *vec_paths, jsonio_vecs *vecs,
                char **copy, char *msg, size_t cap);

/* A raw number: `text` is emitted verbatim by the writer. */
json_t *jsonio_raw(const char *text);
/* Trusted JSON text (a stored payload the engine validated) to be emitted
 * verbatim; NULL on no memory. */
json_t *jsonio_raw_json(const char *text, size_t len);
/* The text of a raw number, or NULL if `v` is not one. */
const char *jsonio_raw_text(const json_t *v);
/* An f32 in its shortest round-tripping decimal form (a raw number). */
json_t *jsonio_f32(float f);
/* A u64 (a json integer up to INT64_MAX, a raw number above). */
json_t *jsonio_u64(uint64_t v);

/* Number readers that understand raw numbers. Return false when `v` is not
 * a number of that kind (or is out of range). */
bool jsonio_get_u64(const json_t *v, uint64_t *out);
bool jsonio_get_f64(const json_t *v, double *out);

/* Appends `v` as compact JSON. Reals are written in their shortest
 * round-tripping form and always keep a '.' or exponent, so a float stays a
 * float. */
void jsonio_write(sbuf *b, const json_t *v);
/* jsonio_write into a fresh qv_malloc'd string; NULL on allocation failure. */
char *jsonio_dumps(const json_t *v, size_t *len);

#endif
