/* cli_util.h: small pieces shared by the `quiver` commands.
 *
 * Table-driven flag parsing (the same table prints --help), strict number
 * parsing, input files that may be gzip-compressed, the import progress bar,
 * percentiles and recall, the log callback, timing. Everything here uses only
 * the public API (quiver.h) and libc: the command line is a host program of
 * libquiver like any other, so it allocates with malloc/free.
 *
 * Exit codes of every command: 0 success, 1 a runtime failure (a file, the
 * library), 2 a usage error (unknown flag, missing value, bad number). */
#ifndef QV_CLI_UTIL_H
#define QV_CLI_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "quiver.h"

#define CLI_EXIT_OK 0
#define CLI_EXIT_FAIL 1
#define CLI_EXIT_USAGE 2

/* Formats a message into an optional qv_err and returns `rc`. */
qv_rc cli_err_set(qv_err *err, qv_rc rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- flags -------------------------------------------------------------- */

#define CLI_LIST_MAX 64

typedef struct cli_u32_list {
  uint32_t v[CLI_LIST_MAX];
  size_t n;
} cli_u32_list;

typedef enum cli_flag_kind {
  CLI_FLAG_BOOL,     /* dst: bool *; takes no value */
  CLI_FLAG_STR,      /* dst: const char ** (points into argv) */
  CLI_FLAG_U32,      /* dst: uint32_t * */
  CLI_FLAG_U64,      /* dst: uint64_t * */
  CLI_FLAG_U32_LIST, /* dst: cli_u32_list *; "10,20,40" */
  CLI_FLAG_CHOICE,   /* dst: int *, the index of the value in metavar's
                      * '|'-separated list ("float32|float16|uint8") */
  CLI_FLAG_F64,      /* dst: double *; finite, in [min, max] (max 0: no
                      * upper bound) */
  CLI_FLAG_TRUTH,    /* dst: bool *; takes a value, "true" or "false" */
} cli_flag_kind;

/* One row of a command's flag table. Numbers must lie in [min, max]
 * (max 0 means the type's maximum). `seen` is set by cli_parse. */
typedef struct cli_flag {
  const char *name; /* without the leading "--" */
  cli_flag_kind kind;
  void *dst;
  const char *metavar; /* "N", "DIR"; ignored for bools */
  const char *help;
  uint64_t min, max;
  bool required;
  bool seen;
} cli_flag;

typedef struct cli_cmd_spec {
  const char *name;    /* "import" */
  const char *args;    /* positional arguments for the usage line, "FILE" */
  const char *summary; /* one paragraph for --help */
  cli_flag *flags;
  size_t n_flags;
  size_t min_pos, max_pos; /* how many positional arguments are allowed */
} cli_cmd_spec;

enum { CLI_PARSE_OK = 0, CLI_PARSE_HELP, CLI_PARSE_ERR };

/* Parses argv[1..argc) (argv[0] is the command name) against spec->flags.
 * Accepts "--flag value", "--flag=value", "--help"/"-h" and "--" (the rest
 * is positional). Positional arguments are stored in pos[0..*n_pos), which
 * must hold spec->max_pos entries. Returns CLI_PARSE_HELP after printing the
 * help to `out`, CLI_PARSE_ERR after printing a message that names the flag
 * to `errf`. */
int cli_parse(const cli_cmd_spec *spec, int argc, char **argv, const char **pos,
              size_t *n_pos, FILE *out, FILE *errf);
void cli_print_help(const cli_cmd_spec *spec, FILE *out);
/* Whether the last cli_parse saw flag `name` (given, not defaulted). */
bool cli_flag_seen(const cli_cmd_spec *spec, const char *name);

/* Strict decimal parsing: no sign, no spaces, no trailing characters, no
 * overflow. Return false when `s` is not such a number. */
bool cli_parse_u64(const char *s, uint64_t *out);
bool cli_parse_u32_list(const char *s, cli_u32_list *out);
/* Parses "0.1,0.2,3" (optionally in [ ], spaces allowed around commas) into
 * a malloc'd array. */
qv_rc cli_parse_floats(const char *s, float **out, size_t *n, qv_err *err);

/* ---- storage flags (import) ---------------------------------------------- */

/* The choices of the storage flags, in the order of the public enums
 * (qv_datatype, the CLI's quantization names, qv_vector_index). */
#define CLI_DATATYPES "float32|float16|uint8"
#define CLI_QUANTIZATIONS "none|int8|binary|pq"
#define CLI_INDEXES "hnsw|ivf-flat|ivf-pq"
#define CLI_PQ_RATIOS "4|8|16|32|64"
#define CLI_BQ_BITS "1|2|1.5" /* choice index + 1 = bq_bits */

/* What `quiver import` was told about storage: choice indexes as set by
 * CLI_FLAG_CHOICE (-1 = not given) and the numbers. */
typedef struct cli_storage_flags {
  int datatype, quantization, index, pq_ratio, bq_bits;
  uint32_t nlist; /* 0 = not given */
  bool on_disk;
} cli_storage_flags;

/* Initialises every choice to "not given". */
void cli_storage_flags_init(cli_storage_flags *f);
/* Checks the combination and fills *out (zeroed first). A combination the
 * library would refuse, or a flag that means nothing with the others
 * (--pq-ratio without pq codes, --bq-bits without binary, --nlist without
 * IVF, codes with IVF), is a usage error: a message naming the flags goes
 * to errf and false is returned. `cmd` names the command in messages. */
bool cli_storage_resolve(const char *cmd, const cli_storage_flags *f, qv_storage_params *out,
                         FILE *errf);
/* Whether the flags asked for anything but the defaults. */
bool cli_storage_given(const cli_storage_flags *f);
/* "float16, int8 codes (quantile 0.99), hnsw, vectors on disk" for notes. */
void cli_storage_describe(const qv_storage_params *s, char *buf, size_t cap);

/* ---- input files --------------------------------------------------------- */

/* A file opened for sequential reading; "*.gz" is read through a
 * `gzip -dc` child process. */
typedef struct cli_input {
  FILE *f;
  pid_t pid;     /* the gzip child, or 0 */
  uint64_t size; /* bytes of a plain regular file, 0 if unknown (pipe) */
} cli_input;

bool cli_has_suffix(const char *s, const char *suffix);
qv_rc cli_input_open(const char *path, cli_input *in, qv_err *err);
/* Closes the file; for a pipe, waits for gzip and fails (QV_EIO) if it did
 * not exit cleanly, which is how a corrupt .gz is reported. Accepts a
 * zeroed cli_input. */
qv_rc cli_input_close(cli_input *in, const char *path, qv_err *err);
/* Reads up to n bytes, retrying short reads; returns bytes read (less than n
 * only at end of file or on error, see ferror). */
size_t cli_read_full(FILE *f, void *p, size_t n);

/* ---- ids, numbers, time ------------------------------------------------- */

bool cli_id_eq(const qv_point_id *a, const qv_point_id *b);
/* The shortest "%.Ng" (N = 6..9) that reads back as exactly `v`. */
char *cli_fmt_float(float v, char buf[32]);
/* Seconds on CLOCK_MONOTONIC. */
double cli_now(void);

/* ---- statistics --------------------------------------------------------- */

void cli_sort_doubles(double *v, size_t n);
/* Percentile p (0..100) of sorted v[0..n) with linear interpolation between
 * the closest ranks (numpy's default); 0 when n == 0. */
double cli_percentile_sorted(const double *v, size_t n, double p);
/* Median of v[0..n); sorts v in place. */
double cli_median(double *v, size_t n);
/* Fraction of truth[0..k) that occur in got[0..n_got) (recall@k). Needs
 * n_truth >= k; k == 0 gives 1. */
double cli_recall(const qv_point_id *got, size_t n_got,
                  const qv_point_id *truth, size_t k);

/* ---- progress ----------------------------------------------------------- */

/* On a TTY a bar redrawn in place at most every 100 ms; otherwise one plain
 * line every `plain_every` seconds (default 5). */
typedef struct cli_progress {
  FILE *f;
  bool is_tty;
  uint64_t total; /* 0 = unknown */
  double t0, last;
  double plain_every;
  const char *what; /* "points" */
  bool drawn;
} cli_progress;

void cli_progress_init(cli_progress *p, FILE *f, uint64_t total,
                       const char *what);
void cli_progress_update(cli_progress *p, uint64_t done);
/* Clears the bar (TTY) so the caller's final line starts clean. */
void cli_progress_finish(cli_progress *p);
/* The text of the bar for `done` of `total` after `elapsed` seconds. */
void cli_progress_format(char *buf, size_t cap, uint64_t done, uint64_t total,
                         double elapsed, const char *what, bool bar);

/* ---- opening ------------------------------------------------------------ */

/* Opens the existing database `dir` (never creates it) with the background
 * optimizer off, so a read-only command does no index work, and gets
 * collection `name` unless it is NULL (then *c is untouched). On failure
 * prints "quiver <cmd>: ..." to errf, leaves nothing open and returns
 * CLI_EXIT_FAIL; otherwise CLI_EXIT_OK. */
int cli_open_existing(const char *cmd, const char *dir, const char *name,
                      qv_db **db, qv_collection **c, FILE *errf);

/* ---- logging ------------------------------------------------------------ */

/* Installs a qv_set_log callback that writes "YYYY-mm-dd HH:MM:SS.mmm LEVEL
 * [subsystem] message" to stderr: warnings and errors, info too when
 * `verbose` (debug too when verbose > 1). */
void cli_log_install(int verbose);

#endif
