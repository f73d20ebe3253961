/* wal.c: the write-ahead log of one shard; see wal.h and README.md ("WAL").
 *
 * Owns the files %020llu.wal in the log directory: their record framing,
 * recovery of a crash's torn tail at open, appends, group-committed fsyncs,
 * rotation and dropping of old files. Does not know what a record means (the
 * shard does), does not lock the directory against other processes (the
 * database's lock does), and never keeps records in memory: the index holds
 * one small wal_file per file and replay re-reads the files.
 *
 * Invariants:
 *  - On disk, LSNs run without gaps across files in name order; every file is
 *    named by the LSN of its first record (an empty file: the LSN it will
 *    get); only the newest file grows and only it may hold a torn tail.
 *  - Every file but the newest was fsynced before the next one was created,
 *    so damage in an older file is corruption, never a crash.
 *  - durable_lsn <= next_lsn - 1, both only grow; every record up to
 *    durable_lsn has been fdatasync'ed.
 *
 * Locking: appends, rotate, drop_before and replay are serialised by the
 * caller (the shard's write lock); they own `files`, `buf` and the append
 * side of `fd`. wal_sync, wal_durable_lsn, wal_next_lsn and wal_bytes may run
 * at any time from any thread. `mu` guards is_syncing, is_failed, n_waiting
 * and the switch of `fd` / `cur_path`; the counters readers poll are atomics.
 * Whoever sets is_syncing (a sync leader or wal_rotate) owns `fd` and
 * `cur_path` for fsync until it clears it, so rotate never closes a file
 * under a leader's fsync.
 *
 *   wal_open --> OPEN --(a write or fsync fails: wal_append,
 *                 |      wal_sync, wal_rotate, wal_drop_before)--> FAILED
 *                 |                                                  |
 *                 |     appends, syncs, rotates, drops: QV_ECLOSED   |
 *                 +-------------> wal_close <------------------------+
 */
#include "storage/wal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/crc32c.h"
#include "base/err.h"
#include "base/fileio.h"
#include "base/log.h"

/* "QVW1" as bytes on disk; the digit is the format version. */
#define WAL_MAGIC 0x31575651u
/* 20 digits + ".wal" */
#define WAL_NAME_LEN 24
/* A frame buffer grown past this for one large record is released after it,
 * so a single 1 GiB record does not pin 1 GiB for the log's lifetime. */
#define WAL_BUF_KEEP_BYTES (16u << 20)

typedef struct wal_file {
  uint64_t first_lsn; /* from the name; the LSN of its first record */
  uint64_t n_records;
  uint64_t size_bytes; /* whole records only */
} wal_file;

struct wal {
  char *dir;
  wal_file *files; /* oldest first; the last is being appended to */
  size_t n_files, cap_files;
  int fd; /* the newest file, O_APPEND */
  char cur_path[PATH_MAX];
  unsigned char *buf; /* frame scratch of wal_append */
  size_t buf_cap;

  pthread_mutex_t mu;
  pthread_cond_t cv; /* is_syncing cleared or is_failed set */
  bool is_syncing;   /* a leader (or rotate) is fsyncing `fd` */
  bool is_failed;    /* written under mu, read atomically */
  unsigned n_waiting;
  wal_sync_hook_fn hook;
  void *hook_ctx;

  uint64_t next_lsn;    /* atomic; stored only by the appender */
  uint64_t durable_lsn; /* atomic; stored under mu */
  uint64_t total_bytes; /* atomic */
  uint64_t n_fsyncs;    /* atomic */
};

/* ---- framing ------------------------------------------------------------- */

static void put_u32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get_u32(const unsigned char *p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}
static uint64_t get_u64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

/* Header: magic @0, length @4, LSN @8, CRC @16. The CRC covers the
 * length and LSN bytes as stored and then the payload, so a flipped length
 * or LSN fails it just as a flipped payload byte does. */
static uint32_t frame_crc(const unsigned char *hdr, const void *payload,
                          size_t len) {
  return crc32c_extend(crc32c(hdr + 4, 12), payload, len);
}

typedef enum rec_status {
  REC_OK,
  REC_SHORT_HEADER,
  REC_BAD_MAGIC,
  REC_BAD_LENGTH,
  REC_SHORT,
  REC_BAD_CRC,
} rec_status;

static const char *rec_status_what(rec_status s) {
  switch (s) {
  case REC_OK: return "valid record";
  case REC_SHORT_HEADER: return "incomplete header";
  case REC_BAD_MAGIC: return "bad magic";
  case REC_BAD_LENGTH: return "implausible length";
  case REC_SHORT: return "incomplete record";
  case REC_BAD_CRC: return "checksum mismatch";
  }
  return "?";
}

/* Checks the record at p (avail bytes to the end of the file). The length is
 * checked against WAL_RECORD_MAX and against the bytes present before
 * anything is read past the header, so a damaged length costs nothing. */
static rec_status parse_record(const unsigned char *p, size_t avail,
                               uint32_t *len, uint64_t *lsn) {
  if (avail < WAL_HEADER_BYTES) return REC_SHORT_HEADER;
  if (get_u32(p) != WAL_MAGIC) return REC_BAD_MAGIC;
  uint32_t n = get_u32(p + 4);
  if (n == 0 || n > WAL_RECORD_MAX) return REC_BAD_LENGTH;
  if (n > avail - WAL_HEADER_BYTES) return REC_SHORT;
  if (get_u32(p + 16) != frame_crc(p, p + WAL_HEADER_BYTES, n))
    return REC_BAD_CRC;
  *len = n;
  *lsn = get_u64(p + 8);
  return REC_OK;
}

/* Offset of the first valid record starting in [from, n), or SIZE_MAX. */
static size_t find_valid_after(const unsigned char *p, size_t n, size_t from) {
  unsigned char magic[4];
  put_u32(magic, WAL_MAGIC);
  while (from + WAL_HEADER_BYTES <= n) {
    const unsigned char *hit = memmem(p + from, n - from, magic, 4);
    if (hit == NULL) break;
    size_t off = (size_t)(hit - p);
    uint32_t len;
    uint64_t lsn;
    if (parse_record(hit, n - off, &len, &lsn) == REC_OK) return off;
    from = off + 1;
  }
  return SIZE_MAX;
}

/* ---- small helpers ------------------------------------------------------- */

static void path_of(const wal *w, uint64_t lsn, char *out, size_t cap) {
  snprintf(out, cap, "%s/%020llu.wal", w->dir, (unsigned long long)lsn);
}

static qv_rc closed_err(const wal *w, qv_err *err) {
  return qv_err_set(err, QV_ECLOSED,
                    "wal %s: closed after an earlier I/O error; reopen to "
                    "recover",
                    w->dir);
}

static bool failed(const wal *w) {
  return __atomic_load_n(&w->is_failed, __ATOMIC_ACQUIRE);
}

/* Enters FAILED: wakes every waiter so it returns QV_ECLOSED, and passes
 * the cause on to the caller. Returns the cause's code. */
static qv_rc set_failed(wal *w, const qv_err *cause, qv_err *err) {
  pthread_mutex_lock(&w->mu);
  __atomic_store_n(&w->is_failed, true, __ATOMIC_RELEASE);
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
  qv_log(QV_LOG_ERROR, "wal", "%s; the log refuses writes until reopened",
         cause->msg);
  return qv_err_copy(err, cause);
}

static qv_rc reserve_files(wal *w, size_t n, qv_err *err) {
  if (n <= w->cap_files) return QV_OK;
  size_t cap = w->cap_files ? w->cap_files * 2 : 8;
  while (cap < n) cap *= 2;
  wal_file *f = qv_realloc(w->files, cap * sizeof *f);
  if (f == NULL)
    return qv_err_set(err, QV_ENOMEM, "wal %s: no memory for %zu files", w->dir,
                      n);
  w->files = f;
  w->cap_files = cap;
  return QV_OK;
}

static int open_append(const char *path, bool create) {
  int flags = O_WRONLY | O_APPEND | O_CLOEXEC;
  if (create) flags |= O_CREAT | O_EXCL;
  return open(path, flags, 0644);
}

/* ---- open and recovery --------------------------------------------------- */

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

/* Collects the LSNs of the files named %020llu.wal in w->dir, sorted. Other
 * names (a *.tmp, a README) are not ours and are ignored. */
static qv_rc list_files(wal *w, uint64_t **out, size_t *n_out, qv_err *err) {
  DIR *d = opendir(w->dir);
  if (d == NULL)
    return qv_err_set(err, QV_EIO, "wal %s: opendir: %s", w->dir,
                      strerror(errno));
  uint64_t *lsns = NULL;
  size_t n = 0, cap = 0;
  qv_rc rc = QV_OK;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    const char *s = e->d_name;
    if (strlen(s) != WAL_NAME_LEN || strcmp(s + 20, ".wal") != 0) continue;
    if (strspn(s, "0123456789") != 20) continue;
    errno = 0;
    unsigned long long v = strtoull(s, NULL, 10);
    if (errno == ERANGE || v == 0) {
      rc = QV_CORRUPT(err, "wal %s/%s: name is not a valid LSN at offset 0",
                      w->dir, s);
      break;
    }
    if (n == cap) {
      cap = cap ? cap * 2 : 16;
      uint64_t *p = qv_realloc(lsns, cap * sizeof *p);
      if (p == NULL) {
        rc = qv_err_set(err, QV_ENOMEM, "wal %s: no memory", w->dir);
        break;
      }
      lsns = p;
    }
    lsns[n++] = v;
  }
  closedir(d);
  if (rc != QV_OK) {
    qv_free(lsns);
    return rc;
  }
  if (n > 1) qsort(lsns, n, sizeof *lsns, cmp_u64);
  *out = lsns;
  *n_out = n;
  return QV_OK;
}

static qv_rc truncate_file(const char *path, uint64_t size, qv_err *err) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0)
    return qv_err_set(err, QV_EIO, "wal %s: open: %s", path, strerror(errno));
  qv_rc rc = QV_OK;
  if (ftruncate(fd, (off_t)size) != 0)
    rc = qv_err_set(err, QV_EIO, "wal %s: truncate to %llu: %s", path,
                    (unsigned long long)size, strerror(errno));
  if (rc == QV_OK) rc = fileio_fsync(fd, path, err);
  close(fd);
  return rc;
}

/* Verifies one file and fills *out. The first damaged record of the newest
 * file is a torn tail, cut off here, when nothing valid follows it; any
 * other damage is QV_ECORRUPT (the torn-tail rule in README.md). */
static qv_rc scan_file(const char *path, uint64_t name_lsn, bool is_newest,
                       wal_file *out, qv_err *err) {
  fileio_map m;
  qv_rc rc = fileio_map_file(path, &m, err);
  if (rc != QV_OK) return rc;
  size_t off = 0;
  uint64_t expect = name_lsn;
  rec_status st = REC_OK;
  while (off < m.n) {
    uint32_t len;
    uint64_t lsn;
    st = parse_record(m.p + off, m.n - off, &len, &lsn);
    if (st != REC_OK) break;
    if (lsn != expect) {
      /* A record that passes its CRC was written whole: a wrong LSN is
       * never a torn write. */
      if (off == 0)
        rc = QV_CORRUPT(err,
                        "wal %s: first record's LSN %llu disagrees with the "
                        "file name at offset 0",
                        path, (unsigned long long)lsn);
      else
        rc = QV_CORRUPT(
            err, "wal %s: LSN %llu where %llu was due at offset %zu", path,
            (unsigned long long)lsn, (unsigned long long)expect, off);
      goto out;
    }
    expect++;
    off += WAL_HEADER_BYTES + len;
  }
  if (off < m.n) {
    if (!is_newest) {
      rc = QV_CORRUPT(err,
                      "wal %s: %s at offset %zu (not the newest file, so "
                      "not a torn tail)",
                      path, rec_status_what(st), off);
      goto out;
    }
    size_t later = find_valid_after(m.p, m.n, off + 1);
    if (later != SIZE_MAX) {
      rc = QV_CORRUPT(err,
                      "wal %s: %s at offset %zu (a valid record follows at "
                      "%zu)",
                      path, rec_status_what(st), off, later);
      goto out;
    }
    qv_log(QV_LOG_WARN, "wal",
           "%s: torn tail (%s) at offset %zu: cutting %zu bytes, the log "
           "ends at LSN %llu",
           path, rec_status_what(st), off, m.n - off,
           (unsigned long long)(expect - 1));
    fileio_unmap(&m);
    rc = truncate_file(path, off, err);
    if (rc != QV_OK) return rc;
  }
  out->first_lsn = name_lsn;
  out->n_records = expect - name_lsn;
  out->size_bytes = off;
out:
  fileio_unmap(&m);
  return rc;
}

/* Scans every file oldest first and checks that the LSNs carry on from one
 * file to the next. */
static qv_rc load_index(wal *w, const uint64_t *lsns, size_t n, qv_err *err) {
  qv_rc rc = reserve_files(w, n + 1, err);
  uint64_t expect = 0;
  for (size_t i = 0; rc == QV_OK && i < n; i++) {
    char path[PATH_MAX];
    path_of(w, lsns[i], path, sizeof path);
    if (i > 0 && lsns[i] != expect)
      return QV_CORRUPT(err,
                        "wal %s: LSN gap at offset 0: the file starts at "
                        "%llu, the previous one ends at %llu",
                        path, (unsigned long long)lsns[i],
                        (unsigned long long)(expect - 1));
    rc = scan_file(path, lsns[i], i + 1 == n, &w->files[i], err);
    if (rc != QV_OK) return rc;
    w->n_files = i + 1;
    expect = lsns[i] + w->files[i].n_records;
  }
  return rc;
}

/* The caller's checkpoint is ahead of everything in the log (the tail it
 * covers was lost in a crash, or never made it to disk): continuing at the
 * log's end would hand out LSNs the checkpoint already claims, and a new file
 * at the checkpoint would leave a gap. Every record here is covered by the
 * checkpoint, so the files go. */
static qv_rc drop_all_files(wal *w, uint64_t min_next_lsn, qv_err *err) {
  const wal_file *last = &w->files[w->n_files - 1];
  qv_log(QV_LOG_WARN, "wal",
         "%s: log ends at LSN %llu, below the checkpoint's next LSN %llu; "
         "removing its %zu files",
         w->dir, (unsigned long long)(last->first_lsn + last->n_records - 1),
         (unsigned long long)min_next_lsn, w->n_files);
  for (size_t i = 0; i < w->n_files; i++) {
    char path[PATH_MAX];
    path_of(w, w->files[i].first_lsn, path, sizeof path);
    if (unlink(path) != 0 && errno != ENOENT)
      return qv_err_set(err, QV_EIO, "wal %s: unlink: %s", path,
                        strerror(errno));
  }
  w->n_files = 0;
  /* Durable before a file at min_next_lsn appears beside them. */
  return fileio_fsync_dir(w->dir, err);
}

static qv_rc start_log(wal *w, uint64_t min_next_lsn, qv_err *err) {
  uint64_t *lsns = NULL;
  size_t n = 0;
  qv_rc rc = list_files(w, &lsns, &n, err);
  if (rc == QV_OK) rc = load_index(w, lsns, n, err);
  qv_free(lsns);
  if (rc != QV_OK) return rc;

  uint64_t next = min_next_lsn;
  if (w->n_files > 0) {
    const wal_file *last = &w->files[w->n_files - 1];
    next = last->first_lsn + last->n_records;
    if (next < min_next_lsn) {
      rc = drop_all_files(w, min_next_lsn, err);
      if (rc != QV_OK) return rc;
      next = min_next_lsn;
    }
  }
  bool create = w->n_files == 0;
  if (create) {
    w->files[0] = (wal_file){.first_lsn = next};
    w->n_files = 1;
  }
  path_of(w, w->files[w->n_files - 1].first_lsn, w->cur_path,
          sizeof w->cur_path);
  w->fd = open_append(w->cur_path, create);
  if (w->fd < 0)
    return qv_err_set(err, QV_EIO, "wal %s: open: %s", w->cur_path,
                      strerror(errno));
  /* What we just read may sit only in the page cache (the last process died
   * before its fsync); one fsync makes "everything present is durable" true
   * and the directory fsync keeps a new or truncated file's entry. */
  rc = fileio_fsync(w->fd, w->cur_path, err);
  w->n_fsyncs++;
  if (rc == QV_OK) rc = fileio_fsync_dir(w->dir, err);
  if (rc != QV_OK) return rc;

  uint64_t total = 0;
  for (size_t i = 0; i < w->n_files; i++) total += w->files[i].size_bytes;
  w->total_bytes = total;
  w->next_lsn = next;
  w->durable_lsn = next - 1;
  return QV_OK;
}

qv_rc wal_open(const char *dir, uint64_t min_next_lsn, wal **out, qv_err *err) {
  if (dir == NULL || out == NULL || *dir == 0)
    return qv_err_set(err, QV_EINVAL, "wal: no directory given");
  /* Room for "/" + the file name in every path built later. */
  if (strlen(dir) + 1 + WAL_NAME_LEN >= PATH_MAX)
    return qv_err_set(err, QV_EINVAL, "wal %s: path too long", dir);
  if (min_next_lsn == 0) min_next_lsn = 1; /* LSNs start at 1 */
  wal *w = qv_calloc(1, sizeof *w);
  if (w == NULL) return qv_err_set(err, QV_ENOMEM, "wal %s: no memory", dir);
  w->fd = -1;
  pthread_mutex_init(&w->mu, NULL);
  pthread_cond_init(&w->cv, NULL);
  w->dir = qv_strdup(dir);
  qv_rc rc = w->dir == NULL
                 ? qv_err_set(err, QV_ENOMEM, "wal %s: no memory", dir)
                 : fileio_mkdirs(dir, err);
  if (rc == QV_OK) rc = start_log(w, min_next_lsn, err);
  if (rc != QV_OK) {
    wal_close(w);
    return rc;
  }
  *out = w;
  return QV_OK;
}

void wal_close(wal *w) {
  if (w == NULL) return;
  if (w->fd >= 0) close(w->fd);
  pthread_cond_destroy(&w->cv);
  pthread_mutex_destroy(&w->mu);
  qv_free(w->files);
  qv_free(w->buf);
  qv_free(w->dir);
  qv_free(w);
}

/* ---- replay -------------------------------------------------------------- */

/* Reads one file's indexed bytes through a mapping; the records are checked
 * again because the bytes are read again. */
static qv_rc replay_file(wal *w, const wal_file *f, uint64_t from_lsn,
                         wal_replay_fn fn, void *ctx, qv_err *err) {
  char path[PATH_MAX];
  path_of(w, f->first_lsn, path, sizeof path);
  fileio_map m;
  qv_rc rc = fileio_map_file(path, &m, err);
  if (rc != QV_OK) return rc;
  if (m.n < f->size_bytes) {
    rc = QV_CORRUPT(err, "wal %s: file shrank to %zu bytes at offset %zu", path,
                    m.n, m.n);
    goto out;
  }
  size_t off = 0;
  for (uint64_t lsn = f->first_lsn; off < f->size_bytes; lsn++) {
    uint32_t len;
    uint64_t got;
    rec_status st = parse_record(m.p + off, f->size_bytes - off, &len, &got);
    if (st != REC_OK || got != lsn) {
      rc = QV_CORRUPT(err, "wal %s: %s on re-read at offset %zu", path,
                      st != REC_OK ? rec_status_what(st) : "LSN changed", off);
      goto out;
    }
    if (lsn >= from_lsn) {
      rc = fn(ctx, lsn, m.p + off + WAL_HEADER_BYTES, len, err);
      if (rc != QV_OK) goto out;
    }
    off += WAL_HEADER_BYTES + len;
  }
out:
  fileio_unmap(&m);
  return rc;
}

qv_rc wal_replay(wal *w, uint64_t from_lsn, wal_replay_fn fn, void *ctx,
                 qv_err *err) {
  for (size_t i = 0; i < w->n_files; i++) {
    const wal_file *f = &w->files[i];
    if (f->n_records == 0 || f->first_lsn + f->n_records - 1 < from_lsn)
      continue;
    qv_rc rc = replay_file(w, f, from_lsn, fn, ctx, err);
    if (rc != QV_OK) return rc;
  }
  return QV_OK;
}

/* ---- append and group commit --------------------------------------------- */

qv_rc wal_append(wal *w, const void *rec, size_t len, uint64_t *lsn_out,
                 qv_err *err) {
  if (rec == NULL || len == 0 || len > WAL_RECORD_MAX)
    return qv_err_set(err, QV_EINVAL,
                      "wal %s: record of %zu bytes, expected 1..%u", w->dir,
                      len, WAL_RECORD_MAX);
  if (failed(w)) return closed_err(w, err);
  size_t n = WAL_HEADER_BYTES + len;
  if (n > w->buf_cap) {
    unsigned char *b = qv_realloc(w->buf, n);
    if (b == NULL)
      return qv_err_set(err, QV_ENOMEM,
                        "wal %s: no memory for a %zu-byte "
                        "record",
                        w->dir, len);
    w->buf = b;
    w->buf_cap = n;
  }
  /* Only this (serialised) path stores next_lsn. */
  uint64_t lsn = __atomic_load_n(&w->next_lsn, __ATOMIC_RELAXED);
  put_u32(w->buf, WAL_MAGIC);
  put_u32(w->buf + 4, (uint32_t)len);
  put_u64(w->buf + 8, lsn);
  memcpy(w->buf + WAL_HEADER_BYTES, rec, len);
  put_u32(w->buf + 16, frame_crc(w->buf, rec, len));

  /* One write per record: the header and payload reach the file together
   * or (after a crash) as a torn tail that recovery cuts off. */
  qv_err e = {0};
  qv_rc rc = fileio_write_all(w->fd, w->buf, n, w->cur_path, &e);
  if (w->buf_cap > WAL_BUF_KEEP_BYTES) {
    qv_free(w->buf);
    w->buf = NULL;
    w->buf_cap = 0;
  }
  /* The file may now end in part of this record: nothing more may follow
   * it, or recovery would see damage followed by valid data. */
  if (rc != QV_OK) return set_failed(w, &e, err);

  wal_file *cur = &w->files[w->n_files - 1];
  cur->n_records++;
  cur->size_bytes += n;
  __atomic_add_fetch(&w->total_bytes, n, __ATOMIC_RELAXED);
  /* Release: a sync leader that reads the new value fsyncs after our
   * write() returned, so the fsync covers it. */
  __atomic_store_n(&w->next_lsn, lsn + 1, __ATOMIC_RELEASE);
  if (lsn_out != NULL) *lsn_out = lsn;
  return QV_OK;
}

/* Group commit. A caller finds one of: the log failed (QV_ECLOSED); its LSN
 * durable (done); another thread fsyncing (wait, then look again); nobody
 * fsyncing (lead: fsync everything appended so far for all waiters). */
qv_rc wal_sync(wal *w, uint64_t lsn, qv_err *err) {
  uint64_t next = __atomic_load_n(&w->next_lsn, __ATOMIC_ACQUIRE);
  if (lsn >= next)
    return qv_err_set(err, QV_EINVAL,
                      "wal %s: cannot sync LSN %llu, the last appended is "
                      "%llu",
                      w->dir, (unsigned long long)lsn,
                      (unsigned long long)(next - 1));
  for (;;) {
    pthread_mutex_lock(&w->mu);
    for (;;) {
      if (w->is_failed) {
        pthread_mutex_unlock(&w->mu);
        return closed_err(w, err);
      }
      if (__atomic_load_n(&w->durable_lsn, __ATOMIC_RELAXED) >= lsn) {
        pthread_mutex_unlock(&w->mu);
        return QV_OK;
      }
      if (!w->is_syncing) break;
      __atomic_add_fetch(&w->n_waiting, 1, __ATOMIC_RELAXED);
      pthread_cond_wait(&w->cv, &w->mu);
      __atomic_sub_fetch(&w->n_waiting, 1, __ATOMIC_RELAXED);
    }
    w->is_syncing = true;
    /* Everything appended so far, not just `lsn`: later appenders that
     * arrive while we fsync find their records covered. */
    uint64_t target = __atomic_load_n(&w->next_lsn, __ATOMIC_ACQUIRE) - 1;
    int fd = w->fd;
    wal_sync_hook_fn hook = w->hook;
    void *hook_ctx = w->hook_ctx;
    pthread_mutex_unlock(&w->mu);

    if (hook != NULL) hook(hook_ctx);
    qv_err e = {0};
    qv_rc rc = fileio_fsync(fd, w->cur_path, &e);
    __atomic_add_fetch(&w->n_fsyncs, 1, __ATOMIC_RELAXED);

    pthread_mutex_lock(&w->mu);
    w->is_syncing = false;
    if (rc == QV_OK)
      __atomic_store_n(&w->durable_lsn, target, __ATOMIC_RELEASE);
    else
      __atomic_store_n(&w->is_failed, true, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    if (rc != QV_OK) {
      qv_log(QV_LOG_ERROR, "wal", "%s; the log refuses writes until reopened",
             e.msg);
      return qv_err_copy(err, &e);
    }
    if (target >= lsn) return QV_OK;
  }
}

uint64_t wal_next_lsn(const wal *w) {
  return __atomic_load_n(&w->next_lsn, __ATOMIC_ACQUIRE);
}

uint64_t wal_durable_lsn(const wal *w) {
  return __atomic_load_n(&w->durable_lsn, __ATOMIC_ACQUIRE);
}

uint64_t wal_bytes(const wal *w) {
  return __atomic_load_n(&w->total_bytes, __ATOMIC_RELAXED);
}

uint64_t wal_fsync_count(const wal *w) {
  return __atomic_load_n(&w->n_fsyncs, __ATOMIC_RELAXED);
}

void wal_set_sync_hook(wal *w, wal_sync_hook_fn fn, void *ctx) {
  pthread_mutex_lock(&w->mu);
  w->hook = fn;
  w->hook_ctx = ctx;
  pthread_mutex_unlock(&w->mu);
}

unsigned wal_sync_waiters(const wal *w) {
  return __atomic_load_n(&w->n_waiting, __ATOMIC_RELAXED);
}

/* ---- rotation and dropping ----------------------------------------------- */

/* Takes the leader role so no wal_sync is fsyncing `fd` while it changes.
 * QV_ECLOSED if the log failed meanwhile. */
static qv_rc take_sync_role(wal *w, qv_err *err) {
  pthread_mutex_lock(&w->mu);
  while (w->is_syncing && !w->is_failed) pthread_cond_wait(&w->cv, &w->mu);
  bool is_closed = w->is_failed;
  if (!is_closed) w->is_syncing = true;
  pthread_mutex_unlock(&w->mu);
  return is_closed ? closed_err(w, err) : QV_OK;
}

qv_rc wal_rotate(wal *w, qv_err *err) {
  if (failed(w)) return closed_err(w, err);
  /* An empty newest file is already named by the next LSN; a second file of
   * the same name cannot exist, and an empty file in the middle would read
   * as a gap. */
  if (w->files[w->n_files - 1].n_records == 0) return QV_OK;
  qv_rc rc = reserve_files(w, w->n_files + 1, err);
  if (rc == QV_OK) rc = take_sync_role(w, err);
  if (rc != QV_OK) return rc;

  uint64_t next = __atomic_load_n(&w->next_lsn, __ATOMIC_RELAXED);
  char path[PATH_MAX];
  path_of(w, next, path, sizeof path);
  int fd = -1;
  qv_err e = {0};
  /* The old file complete on disk before the new one exists: recovery
   * treats damage anywhere but in the newest file as corruption. */
  rc = fileio_fsync(w->fd, w->cur_path, &e);
  __atomic_add_fetch(&w->n_fsyncs, 1, __ATOMIC_RELAXED);
  bool is_synced = rc == QV_OK;
  if (rc == QV_OK) {
    fd = open_append(path, true);
    if (fd < 0)
      rc = qv_err_set(&e, QV_EIO, "wal %s: create: %s", path, strerror(errno));
  }
  if (rc == QV_OK) rc = fileio_fsync_dir(w->dir, &e);

  pthread_mutex_lock(&w->mu);
  w->is_syncing = false;
  if (is_synced) __atomic_store_n(&w->durable_lsn, next - 1, __ATOMIC_RELEASE);
  if (rc == QV_OK) {
    close(w->fd);
    w->fd = fd;
    snprintf(w->cur_path, sizeof w->cur_path, "%s", path);
    w->files[w->n_files++] = (wal_file){.first_lsn = next};
  }
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
  if (rc == QV_OK) return QV_OK;
  /* A new file may exist whose entry is not durable; carrying on in the old
   * file could leave two files claiming the same LSNs. Recovery sorts it
   * out: the new file is empty and newest. */
  if (fd >= 0) close(fd);
  return set_failed(w, &e, err);
}

qv_rc wal_drop_before(wal *w, uint64_t lsn, qv_err *err) {
  if (failed(w)) return closed_err(w, err);
  /* Files' LSN ranges increase, so the droppable ones are a prefix; the
   * newest is never dropped because appends go to it. */
  size_t k = 0;
  while (k + 1 < w->n_files && w->files[k].n_records > 0 &&
         w->files[k].first_lsn + w->files[k].n_records - 1 < lsn)
    k++;
  if (k == 0) return QV_OK;
  qv_rc rc = QV_OK;
  size_t done = 0;
  uint64_t freed = 0;
  for (; done < k; done++) {
    char path[PATH_MAX];
    path_of(w, w->files[done].first_lsn, path, sizeof path);
    if (unlink(path) != 0 && errno != ENOENT) {
      /* Stop at the first failure so what is left stays a gap-free run. */
      rc = qv_err_set(err, QV_EIO, "wal %s: unlink: %s", path, strerror(errno));
      break;
    }
    freed += w->files[done].size_bytes;
  }
  memmove(w->files, w->files + done, (w->n_files - done) * sizeof *w->files);
  w->n_files -= done;
  __atomic_sub_fetch(&w->total_bytes, freed, __ATOMIC_RELAXED);
  if (done == 0) return rc;
  qv_err e = {0};
  if (fileio_fsync_dir(w->dir, &e) != QV_OK) return set_failed(w, &e, err);
  return rc;
}

qv_rc wal_list_files(wal *w, wal_file_fn fn, void *ctx, qv_err *err) {
  /* Appends (the caller's lock excludes them) and rotations grow the file
   * table, so the snapshot of it is taken under mu. */
  pthread_mutex_lock(&w->mu);
  size_t n = w->n_files;
  wal_file *copy = qv_malloc((n + 1) * sizeof *copy);
  if (copy != NULL) memcpy(copy, w->files, n * sizeof *copy);
  pthread_mutex_unlock(&w->mu);
  if (copy == NULL) return qv_err_set(err, QV_ENOMEM, "wal %s: no memory", w->dir);
  qv_rc rc = QV_OK;
  for (size_t i = 0; rc == QV_OK && i < n; i++) {
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/%020llu.wal", w->dir,
             (unsigned long long)copy[i].first_lsn);
    rc = fn(ctx, path, copy[i].first_lsn, copy[i].size_bytes, err);
  }
  qv_free(copy);
  return rc;
}

uint64_t wal_first_lsn(wal *w) {
  pthread_mutex_lock(&w->mu);
  uint64_t first = w->n_files ? w->files[0].first_lsn : 0;
  uint64_t next = __atomic_load_n(&w->next_lsn, __ATOMIC_ACQUIRE);
  pthread_mutex_unlock(&w->mu);
  return first && first < next ? first : next;
}
