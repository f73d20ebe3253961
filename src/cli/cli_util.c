/* cli_util.c: flag parsing, input files, statistics, progress and logging
 * for the command line; see cli_util.h.
 *
 * Owns nothing global except the log callback's stream. Parsing never
 * guesses: a value that is not exactly a number in range is a usage error
 * naming the flag, because a silently clamped --ef or --m would make a
 * benchmark report the wrong setting. */
#include "cli/cli_util.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

qv_rc cli_err_set(qv_err *err, qv_rc rc, const char *fmt, ...) {
  if (err == NULL) return rc;
  va_list ap;
  va_start(ap, fmt);
  err->rc = rc;
  vsnprintf(err->msg, sizeof err->msg, fmt, ap);
  va_end(ap);
  return rc;
}

/* ---- numbers ------------------------------------------------------------ */

bool cli_parse_u64(const char *s, uint64_t *out) {
  if (s == NULL || *s < '0' || *s > '9') return false;
  uint64_t v = 0;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return false;
    unsigned d = (unsigned)(*s - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  *out = v;
  return true;
}

bool cli_parse_u32_list(const char *s, cli_u32_list *out) {
  cli_u32_list l;
  l.n = 0;
  char item[32];
  while (1) {
    const char *comma = strchr(s, ',');
    size_t len = comma ? (size_t)(comma - s) : strlen(s);
    uint64_t v;
    if (len == 0 || len >= sizeof item || l.n == CLI_LIST_MAX) return false;
    memcpy(item, s, len);
    item[len] = 0;
    if (!cli_parse_u64(item, &v) || v > UINT32_MAX) return false;
    l.v[l.n++] = (uint32_t)v;
    if (comma == NULL) break;
    s = comma + 1;
  }
  *out = l;
  return true;
}

qv_rc cli_parse_floats(const char *s, float **out, size_t *n, qv_err *err) {
  size_t cap = 16, cnt = 0;
  float *v = malloc(cap * sizeof *v);
  if (v == NULL) return cli_err_set(err, QV_ENOMEM, "no memory");
  const char *p = s;
  while (*p == ' ' || *p == '\t') p++;
  bool bracket = *p == '[';
  if (bracket) p++;
  while (1) {
    while (*p == ' ' || *p == '\t' || *p == '\n') p++;
    if (*p == 0 || (bracket && *p == ']')) break;
    char *end;
    errno = 0;
    float f = strtof(p, &end);
    if (end == p) {
      free(v);
      return cli_err_set(err, QV_EINVAL,
                         "component %zu: \"%.20s\" is not a number", cnt, p);
    }
    if (errno == ERANGE && isinf(f)) {
      free(v);
      return cli_err_set(err, QV_EINVAL,
                         "component %zu: %.*s is out of float32 range", cnt,
                         (int)(end - p), p);
    }
    if (cnt == cap) {
      float *nv = realloc(v, 2 * cap * sizeof *v);
      if (nv == NULL) {
        free(v);
        return cli_err_set(err, QV_ENOMEM, "no memory");
      }
      v = nv;
      cap *= 2;
    }
    v[cnt++] = f;
    p = end;
    while (*p == ' ' || *p == '\t') p++;
    if (*p == ',') {
      p++;
    } else if (*p != 0 && !(bracket && *p == ']')) {
      free(v);
      return cli_err_set(err, QV_EINVAL, "component %zu: unexpected \"%.20s\"",
                         cnt, p);
    }
  }
  if (bracket && *p != ']') {
    free(v);
    return cli_err_set(err, QV_EINVAL, "missing closing ']'");
  }
  if (bracket) {
    p++;
    while (*p == ' ' || *p == '\t' || *p == '\n') p++;
    if (*p != 0) {
      free(v);
      return cli_err_set(err, QV_EINVAL, "unexpected \"%.20s\" after ']'", p);
    }
  }
  if (cnt == 0) {
    free(v);
    return cli_err_set(err, QV_EINVAL, "no components");
  }
  *out = v;
  *n = cnt;
  return QV_OK;
}

/* ---- flags -------------------------------------------------------------- */

static cli_flag *find_flag(const cli_cmd_spec *spec, const char *name,
                           size_t len) {
  for (size_t i = 0; i < spec->n_flags; i++)
    if (strlen(spec->flags[i].name) == len &&
        strncmp(spec->flags[i].name, name, len) == 0)
      return &spec->flags[i];
  return NULL;
}

/* The index of `v` in the '|'-separated `choices`, or -1. */
static int choice_index(const char *choices, const char *v) {
  size_t vl = strlen(v);
  int i = 0;
  for (const char *p = choices; p != NULL; i++) {
    const char *bar = strchr(p, '|');
    size_t len = bar ? (size_t)(bar - p) : strlen(p);
    if (len == vl && strncmp(p, v, len) == 0) return i;
    p = bar ? bar + 1 : NULL;
  }
  return -1;
}

/* "a, b or c" from "a|b|c" for messages. */
static void choice_list(const char *choices, char *buf, size_t cap) {
  size_t n = 0;
  int count = 1;
  for (const char *p = choices; *p; p++) count += *p == '|';
  int i = 0;
  for (const char *p = choices; p != NULL && n < cap; i++) {
    const char *bar = strchr(p, '|');
    int len = bar ? (int)(bar - p) : (int)strlen(p);
    const char *sep = i == 0 ? "" : i == count - 1 ? " or " : ", ";
    n += (size_t)snprintf(buf + n, cap - n, "%s%.*s", sep, len, p);
    p = bar ? bar + 1 : NULL;
  }
}

static uint64_t flag_max(const cli_flag *f) {
  if (f->max != 0) return f->max;
  return f->kind == CLI_FLAG_U64 ? UINT64_MAX : UINT32_MAX;
}

static bool set_value(const cli_cmd_spec *spec, cli_flag *f, const char *v,
                      FILE *errf) {
  uint64_t n;
  switch (f->kind) {
  case CLI_FLAG_BOOL: *(bool *)f->dst = true; return true;
  case CLI_FLAG_STR: *(const char **)f->dst = v; return true;
  case CLI_FLAG_U32:
  case CLI_FLAG_U64:
    if (!cli_parse_u64(v, &n)) {
      fprintf(errf, "quiver %s: --%s: \"%s\" is not a non-negative integer\n",
              spec->name, f->name, v);
      return false;
    }
    if (n < f->min || n > flag_max(f)) {
      fprintf(errf, "quiver %s: --%s: %s is out of range (%llu..%llu)\n",
              spec->name, f->name, v, (unsigned long long)f->min,
              (unsigned long long)flag_max(f));
      return false;
    }
    if (f->kind == CLI_FLAG_U32)
      *(uint32_t *)f->dst = (uint32_t)n;
    else
      *(uint64_t *)f->dst = n;
    return true;
  case CLI_FLAG_U32_LIST: {
    cli_u32_list l;
    if (!cli_parse_u32_list(v, &l)) {
      fprintf(errf,
              "quiver %s: --%s: \"%s\" is not a comma-separated list of "
              "non-negative integers (at most %d)\n",
              spec->name, f->name, v, CLI_LIST_MAX);
      return false;
    }
    for (size_t i = 0; i < l.n; i++)
      if (l.v[i] < f->min || l.v[i] > flag_max(f)) {
        fprintf(errf, "quiver %s: --%s: %u is out of range (%llu..%llu)\n",
                spec->name, f->name, l.v[i], (unsigned long long)f->min,
                (unsigned long long)flag_max(f));
        return false;
      }
    *(cli_u32_list *)f->dst = l;
    return true;
  }
  case CLI_FLAG_CHOICE: {
    int i = choice_index(f->metavar, v);
    if (i < 0) {
      char list[256];
      choice_list(f->metavar, list, sizeof list);
      fprintf(errf, "quiver %s: --%s: \"%s\" is not one of %s\n", spec->name, f->name, v,
              list);
      return false;
    }
    *(int *)f->dst = i;
    return true;
  }
  case CLI_FLAG_F64: {
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (end == v || *end != 0 || errno == ERANGE || !isfinite(d)) {
      fprintf(errf, "quiver %s: --%s: \"%s\" is not a number\n", spec->name, f->name, v);
      return false;
    }
    if (d < (double)f->min || (f->max != 0 && d > (double)f->max)) {
      if (f->max != 0)
        fprintf(errf, "quiver %s: --%s: %s is out of range (%llu..%llu)\n", spec->name,
                f->name, v, (unsigned long long)f->min, (unsigned long long)f->max);
      else
        fprintf(errf, "quiver %s: --%s: %s is below %llu\n", spec->name, f->name, v,
                (unsigned long long)f->min);
      return false;
    }
    *(double *)f->dst = d;
    return true;
  }
  case CLI_FLAG_TRUTH:
    if (strcmp(v, "true") == 0 || strcmp(v, "false") == 0) {
      *(bool *)f->dst = v[0] == 't';
      return true;
    }
    fprintf(errf, "quiver %s: --%s: \"%s\" is not true or false\n", spec->name, f->name, v);
    return false;
  }
  return false;
}

int cli_parse(const cli_cmd_spec *spec, int argc, char **argv, const char **pos,
              size_t *n_pos, FILE *out, FILE *errf) {
  size_t np = 0;
  bool only_pos = false;
  for (size_t i = 0; i < spec->n_flags; i++) spec->flags[i].seen = false;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!only_pos && strcmp(a, "--") == 0) {
      only_pos = true;
      continue;
    }
    if (!only_pos && (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)) {
      cli_print_help(spec, out);
      return CLI_PARSE_HELP;
    }
    if (only_pos || a[0] != '-' || a[1] == 0) {
      if (np == spec->max_pos) {
        fprintf(errf, "quiver %s: unexpected argument \"%s\"\n", spec->name, a);
        return CLI_PARSE_ERR;
      }
      pos[np++] = a;
      continue;
    }
    if (a[1] != '-') {
      fprintf(errf, "quiver %s: unknown flag \"%s\" (see --help)\n", spec->name,
              a);
      return CLI_PARSE_ERR;
    }
    const char *name = a + 2;
    const char *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    cli_flag *f = find_flag(spec, name, len);
    if (f == NULL) {
      fprintf(errf, "quiver %s: unknown flag \"--%.*s\" (see --help)\n",
              spec->name, (int)len, name);
      return CLI_PARSE_ERR;
    }
    const char *v = NULL;
    if (f->kind == CLI_FLAG_BOOL) {
      if (eq != NULL) {
        fprintf(errf, "quiver %s: --%s takes no value\n", spec->name, f->name);
        return CLI_PARSE_ERR;
      }
    } else if (eq != NULL) {
      v = eq + 1;
    } else if (i + 1 < argc) {
      v = argv[++i];
    } else {
      fprintf(errf, "quiver %s: --%s needs a value (%s)\n", spec->name, f->name,
              f->metavar ? f->metavar : "VALUE");
      return CLI_PARSE_ERR;
    }
    if (!set_value(spec, f, v, errf)) return CLI_PARSE_ERR;
    f->seen = true;
  }
  for (size_t i = 0; i < spec->n_flags; i++)
    if (spec->flags[i].required && !spec->flags[i].seen) {
      fprintf(errf, "quiver %s: --%s is required (see --help)\n", spec->name,
              spec->flags[i].name);
      return CLI_PARSE_ERR;
    }
  if (np < spec->min_pos) {
    fprintf(errf, "quiver %s: missing %s (see --help)\n", spec->name,
            spec->args ? spec->args : "argument");
    return CLI_PARSE_ERR;
  }
  *n_pos = np;
  return CLI_PARSE_OK;
}

bool cli_flag_seen(const cli_cmd_spec *spec, const char *name) {
  const cli_flag *f = find_flag(spec, name, strlen(name));
  return f != NULL && f->seen;
}

void cli_print_help(const cli_cmd_spec *spec, FILE *out) {
  fprintf(out, "usage: quiver %s [options]%s%s\n\n%s\n\noptions:\n", spec->name,
          spec->args ? " " : "", spec->args ? spec->args : "", spec->summary);
  for (size_t i = 0; i < spec->n_flags; i++) {
    const cli_flag *f = &spec->flags[i];
    char left[64];
    if (f->kind == CLI_FLAG_BOOL)
      snprintf(left, sizeof left, "--%s", f->name);
    else
      snprintf(left, sizeof left, "--%s %s", f->name,
               f->metavar ? f->metavar : "VALUE");
    /* A long left column (the choices of a CLI_FLAG_CHOICE) gets the help
     * on its own line, so the help column stays aligned. */
    if (strlen(left) > 24)
      fprintf(out, "  %s\n  %-24s %s%s\n", left, "", f->help,
              f->required ? " (required)" : "");
    else
      fprintf(out, "  %-24s %s%s\n", left, f->help,
              f->required ? " (required)" : "");
  }
  fprintf(out, "  %-24s %s\n", "-h, --help", "show this help");
}

/* ---- storage flags --------------------------------------------------------- */

void cli_storage_flags_init(cli_storage_flags *f) {
  memset(f, 0, sizeof *f);
  f->datatype = f->quantization = f->index = f->pq_ratio = f->bq_bits = -1;
}

bool cli_storage_given(const cli_storage_flags *f) {
  return f->datatype >= 0 || f->quantization >= 0 || f->index >= 0 || f->pq_ratio >= 0 ||
         f->bq_bits >= 0 || f->nlist > 0 || f->on_disk;
}

bool cli_storage_resolve(const char *cmd, const cli_storage_flags *f, qv_storage_params *out,
                         FILE *errf) {
  static const qv_quantization quants[] = {QV_QUANT_NONE, QV_QUANT_SCALAR, QV_QUANT_BINARY,
                                           QV_QUANT_PRODUCT};
  memset(out, 0, sizeof *out);
  out->datatype = f->datatype >= 0 ? (qv_datatype)f->datatype : QV_DATATYPE_FLOAT32;
  out->quantization = f->quantization >= 0 ? quants[f->quantization] : QV_QUANT_NONE;
  out->index = f->index >= 0 ? (qv_vector_index)f->index : QV_VINDEX_HNSW;
  out->on_disk = f->on_disk;
  bool is_ivf = out->index != QV_VINDEX_HNSW;
  /* IVF scans full vectors (ivf-flat) or its own product codes (ivf-pq):
   * the library takes no separate codes with it. */
  if (is_ivf && out->quantization != QV_QUANT_NONE) {
    fprintf(errf, "quiver %s: --quantization %s cannot be combined with --index %s (%s)\n", cmd,
            out->quantization == QV_QUANT_SCALAR   ? "int8"
            : out->quantization == QV_QUANT_BINARY ? "binary"
                                                   : "pq",
            qv_vector_index_name(out->index),
            out->index == QV_VINDEX_IVF_PQ ? "it keeps its own product codes; size them with "
                                             "--pq-ratio"
                                           : "it scans the full vectors");
    return false;
  }
  if (f->pq_ratio >= 0) {
    if (out->quantization != QV_QUANT_PRODUCT && out->index != QV_VINDEX_IVF_PQ) {
      fprintf(errf, "quiver %s: --pq-ratio needs --quantization pq or --index ivf-pq\n", cmd);
      return false;
    }
    out->pq_ratio = 4u << f->pq_ratio;
  }
  if (f->bq_bits >= 0) {
    if (out->quantization != QV_QUANT_BINARY) {
      fprintf(errf, "quiver %s: --bq-bits needs --quantization binary\n", cmd);
      return false;
    }
    out->bq_bits = (uint32_t)f->bq_bits + 1;
  }
  if (f->nlist > 0) {
    if (!is_ivf) {
      fprintf(errf, "quiver %s: --nlist needs --index ivf-flat or ivf-pq\n", cmd);
      return false;
    }
    out->ivf_nlist = f->nlist;
  }
  return true;
}

void cli_storage_describe(const qv_storage_params *s, char *buf, size_t cap) {
  char codes[48] = "no codes";
  if (s->quantization == QV_QUANT_SCALAR)
    snprintf(codes, sizeof codes, "int8 codes");
  else if (s->quantization == QV_QUANT_BINARY)
    snprintf(codes, sizeof codes, "%s-bit binary codes",
             s->bq_bits == QV_BQ_ONE_AND_HALF_BITS ? "1.5"
             : s->bq_bits == 2                     ? "2"
                                                   : "1");
  else if (s->quantization == QV_QUANT_PRODUCT)
    snprintf(codes, sizeof codes, "pq x%u codes", s->pq_ratio ? s->pq_ratio : 16);
  char index[48];
  if (s->index == QV_VINDEX_IVF_PQ)
    snprintf(index, sizeof index, "ivf-pq x%u", s->pq_ratio ? s->pq_ratio : 16);
  else
    snprintf(index, sizeof index, "%s", qv_vector_index_name(s->index));
  if (s->index != QV_VINDEX_HNSW && s->ivf_nlist)
    snprintf(index + strlen(index), sizeof index - strlen(index), " nlist %u", s->ivf_nlist);
  snprintf(buf, cap, "%s, %s, %s%s", qv_datatype_name(s->datatype), codes, index,
           s->on_disk ? ", vectors on disk" : "");
}

/* ---- input files --------------------------------------------------------- */

bool cli_has_suffix(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && strcmp(s + a - b, suffix) == 0;
}

qv_rc cli_input_open(const char *path, cli_input *in, qv_err *err) {
  memset(in, 0, sizeof *in);
  struct stat st;
  if (stat(path, &st) != 0)
    return cli_err_set(err, QV_EIO, "%s: %s", path, strerror(errno));
  if (S_ISDIR(st.st_mode))
    return cli_err_set(err, QV_EIO, "%s: is a directory", path);
  if (!cli_has_suffix(path, ".gz")) {
    in->f = fopen(path, "rb");
    if (in->f == NULL)
      return cli_err_set(err, QV_EIO, "%s: %s", path, strerror(errno));
    if (S_ISREG(st.st_mode)) in->size = (uint64_t)st.st_size;
    return QV_OK;
  }
  /* The file is opened here, not by gzip, so that "cannot open" is reported
   * by us with the path, and the child needs no shell quoting. */
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return cli_err_set(err, QV_EIO, "%s: %s", path, strerror(errno));
  int pfd[2];
  if (pipe2(pfd, O_CLOEXEC) != 0) {
    close(fd);
    return cli_err_set(err, QV_EIO, "%s: pipe: %s", path, strerror(errno));
  }
  pid_t pid = fork();
  if (pid < 0) {
    close(fd);
    close(pfd[0]);
    close(pfd[1]);
    return cli_err_set(err, QV_EIO, "%s: fork: %s", path, strerror(errno));
  }
  if (pid == 0) {
    if (dup2(fd, 0) < 0 || dup2(pfd[1], 1) < 0) _exit(127);
    execlp("gzip", "gzip", "-dc", (char *)NULL);
    _exit(127);
  }
  close(fd);
  close(pfd[1]);
  in->f = fdopen(pfd[0], "rb");
  if (in->f == NULL) {
    close(pfd[0]);
    waitpid(pid, NULL, 0);
    return cli_err_set(err, QV_EIO, "%s: fdopen: %s", path, strerror(errno));
  }
  in->pid = pid;
  return QV_OK;
}

qv_rc cli_input_close(cli_input *in, const char *path, qv_err *err) {
  qv_rc rc = QV_OK;
  /* A reader that stopped before the end (search --query-index) makes gzip
   * die of SIGPIPE or fail its write; only a pipe read to its end vouches
   * for gzip's exit status. */
  bool at_eof = in->f != NULL && feof(in->f);
  if (in->f != NULL) fclose(in->f);
  in->f = NULL;
  if (in->pid > 0) {
    int st = 0;
    while (waitpid(in->pid, &st, 0) < 0 && errno == EINTR) {}
    bool ok = !at_eof || (WIFEXITED(st) && WEXITSTATUS(st) == 0);
    if (!ok)
      rc = cli_err_set(err, QV_EIO,
                       "%s: gzip -dc failed (exit status %d): not a valid "
                       "gzip file?",
                       path, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    in->pid = 0;
  }
  return rc;
}

size_t cli_read_full(FILE *f, void *p, size_t n) {
  size_t got = 0;
  while (got < n) {
    size_t r = fread((char *)p + got, 1, n - got, f);
    if (r == 0) break;
    got += r;
  }
  return got;
}

/* ---- ids, numbers, time ------------------------------------------------- */

bool cli_id_eq(const qv_point_id *a, const qv_point_id *b) {
  if (a->is_uuid != b->is_uuid) return false;
  return a->is_uuid ? memcmp(a->uuid, b->uuid, 16) == 0 : a->num == b->num;
}

char *cli_fmt_float(float v, char buf[32]) {
  for (int prec = 6; prec <= 9; prec++) {
    snprintf(buf, 32, "%.*g", prec, (double)v);
    if (strtof(buf, NULL) == v) break;
  }
  return buf;
}

double cli_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- statistics --------------------------------------------------------- */

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

void cli_sort_doubles(double *v, size_t n) {
  if (n > 1) qsort(v, n, sizeof *v, cmp_double);
}

double cli_percentile_sorted(const double *v, size_t n, double p) {
  if (n == 0) return 0;
  if (p <= 0) return v[0];
  if (p >= 100) return v[n - 1];
  double rank = p / 100.0 * (double)(n - 1);
  size_t lo = (size_t)rank;
  double frac = rank - (double)lo;
  if (lo + 1 >= n) return v[n - 1];
  return v[lo] + (v[lo + 1] - v[lo]) * frac;
}

double cli_median(double *v, size_t n) {
  cli_sort_doubles(v, n);
  return cli_percentile_sorted(v, n, 50);
}

double cli_recall(const qv_point_id *got, size_t n_got,
                  const qv_point_id *truth, size_t k) {
  if (k == 0) return 1;
  size_t hit = 0;
  for (size_t i = 0; i < k; i++)
    for (size_t j = 0; j < n_got; j++)
      if (cli_id_eq(&truth[i], &got[j])) {
        hit++;
        break;
      }
  return (double)hit / (double)k;
}

/* ---- progress ----------------------------------------------------------- */

void cli_progress_init(cli_progress *p, FILE *f, uint64_t total,
                       const char *what) {
  memset(p, 0, sizeof *p);
  p->f = f;
  p->is_tty = f != NULL && isatty(fileno(f));
  p->total = total;
  p->t0 = p->last = cli_now();
  p->plain_every = 5.0;
  p->what = what;
}

void cli_progress_format(char *buf, size_t cap, uint64_t done, uint64_t total,
                         double elapsed, const char *what, bool bar) {
  double rate = elapsed > 0 ? (double)done / elapsed : 0;
  if (total == 0 || done > total) {
    snprintf(buf, cap, "%llu %s, %.0f %s/s, %.1f s", (unsigned long long)done,
             what, rate, what, elapsed);
    return;
  }
  double frac = (double)done / (double)total;
  double eta = rate > 0 ? (double)(total - done) / rate : 0;
  if (!bar) {
    snprintf(buf, cap, "%llu/%llu %s (%.0f%%), %.0f %s/s, ETA %.0f s",
             (unsigned long long)done, (unsigned long long)total, what,
             frac * 100, rate, what, eta);
    return;
  }
  enum { W = 30 };
  char b[W + 1];
  size_t fill = (size_t)(frac * W);
  for (size_t i = 0; i < W; i++) b[i] = i < fill ? '#' : '.';
  b[W] = 0;
  snprintf(buf, cap, "[%s] %3.0f%% %llu/%llu %s, %.0f/s, ETA %.0f s", b,
           frac * 100, (unsigned long long)done, (unsigned long long)total,
           what, rate, eta);
}

void cli_progress_update(cli_progress *p, uint64_t done) {
  if (p->f == NULL) return;
  double now = cli_now();
  double every = p->is_tty ? 0.1 : p->plain_every;
  if (now - p->last < every) return;
  p->last = now;
  char line[160];
  cli_progress_format(line, sizeof line, done, p->total, now - p->t0, p->what,
                      p->is_tty);
  if (p->is_tty)
    fprintf(p->f, "\r\033[K%s", line);
  else
    fprintf(p->f, "progress: %s\n", line);
  fflush(p->f);
  p->drawn = true;
}

void cli_progress_finish(cli_progress *p) {
  if (p->f != NULL && p->is_tty && p->drawn) {
    fputs("\r\033[K", p->f);
    fflush(p->f);
  }
  p->drawn = false;
}

/* ---- logging ------------------------------------------------------------ */

static void log_to_stderr(void *ctx, qv_log_level level, const char *sub,
                          const char *msg) {
  static const char *names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  localtime_r(&ts.tv_sec, &tm);
  char when[32];
  strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
  const char *name = (unsigned)level <= QV_LOG_ERROR ? names[level] : "?";
  /* One fprintf per message: stdio locks the stream, so lines from the
   * library's threads do not interleave. */
  fprintf(stderr, "%s.%03ld %-5s [%s] %s\n", when, ts.tv_nsec / 1000000, name,
          sub ? sub : "-", msg);
}

void cli_log_install(int verbose) {
  qv_log_level min = verbose > 1   ? QV_LOG_DEBUG
                     : verbose > 0 ? QV_LOG_INFO
                                   : QV_LOG_WARN;
  qv_set_log(log_to_stderr, NULL, min);
}
