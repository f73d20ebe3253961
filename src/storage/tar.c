/* tar.c: ustar writing and careful extraction; see tar.h. Owns the format,
 * not what the members mean (engine/snapshot.c). */
#include "storage/tar.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/err.h"
#include "base/fileio.h"

#define BLOCK 512
#define COPY_BUF (1 << 20)

struct tar_writer {
  int fd;
  char *path;
  unsigned char *buf;
};

typedef struct ustar {
  char name[100], mode[8], uid[8], gid[8], size[12], mtime[12], chksum[8];
  char typeflag, linkname[100], magic[6], version[2], uname[32], gname[32];
  char devmajor[8], devminor[8], prefix[155], pad[12];
} ustar;

_Static_assert(sizeof(ustar) == BLOCK, "ustar header is one block");

static void octal(char *dst, size_t n, uint64_t v) {
  dst[n - 1] = 0;
  for (size_t i = n - 1; i-- > 0;) {
    dst[i] = (char)('0' + (v & 7));
    v >>= 3;
  }
}

static unsigned checksum(const ustar *h) {
  const unsigned char *p = (const unsigned char *)h;
  unsigned sum = 0;
  for (size_t i = 0; i < BLOCK; i++)
    sum += (i >= 148 && i < 156) ? ' ' : p[i];
  return sum;
}

qv_rc tar_create(const char *path, tar_writer **out, qv_err *err) {
  tar_writer *t = qv_calloc(1, sizeof *t);
  if (t == NULL) return qv_err_set(err, QV_ENOMEM, "tar: no memory");
  t->path = qv_strdup(path);
  t->buf = qv_malloc(COPY_BUF);
  t->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (t->fd < 0 || t->path == NULL || t->buf == NULL) {
    qv_rc rc = t->fd < 0 ? qv_err_set(err, QV_EIO, "create %s: %s", path, strerror(errno))
                         : qv_err_set(err, QV_ENOMEM, "tar: no memory");
    if (t->fd >= 0) close(t->fd);
    qv_free(t->buf);
    qv_free(t->path);
    qv_free(t);
    return rc;
  }
  *out = t;
  return QV_OK;
}

static qv_rc header(tar_writer *t, const char *name, uint64_t len, qv_err *err) {
  ustar h;
  memset(&h, 0, sizeof h);
  size_t n = strlen(name);
  if (n >= sizeof h.name) return qv_err_set(err, QV_EINVAL, "tar: member name %s too long", name);
  memcpy(h.name, name, n);
  octal(h.mode, sizeof h.mode, 0644);
  octal(h.uid, sizeof h.uid, 0);
  octal(h.gid, sizeof h.gid, 0);
  if (len >= (1ull << 33)) return qv_err_set(err, QV_EINVAL, "tar: member %s over 8 GiB", name);
  octal(h.size, sizeof h.size, len);
  octal(h.mtime, sizeof h.mtime, 0);
  h.typeflag = '0';
  memcpy(h.magic, "ustar", 6);
  memcpy(h.version, "00", 2);
  octal(h.chksum, 7, checksum(&h));
  h.chksum[7] = ' ';
  return fileio_write_all(t->fd, &h, sizeof h, t->path, err);
}

static qv_rc pad(tar_writer *t, uint64_t len, qv_err *err) {
  static const char zeros[BLOCK];
  size_t r = (size_t)(len % BLOCK);
  return r ? fileio_write_all(t->fd, zeros, BLOCK - r, t->path, err) : QV_OK;
}

qv_rc tar_add_bytes(tar_writer *t, const char *name, const void *p, uint64_t len,
                    qv_err *err) {
  qv_rc rc = header(t, name, len, err);
  if (rc == QV_OK && len) rc = fileio_write_all(t->fd, p, len, t->path, err);
  if (rc == QV_OK) rc = pad(t, len, err);
  return rc;
}

qv_rc tar_add_file(tar_writer *t, const char *name, const char *src, uint64_t len,
                   qv_err *err) {
  int fd = open(src, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return qv_err_set(err, QV_EIO, "open %s: %s", src, strerror(errno));
  qv_rc rc = header(t, name, len, err);
  for (uint64_t at = 0; rc == QV_OK && at < len;) {
    size_t n = len - at < COPY_BUF ? (size_t)(len - at) : COPY_BUF;
    rc = fileio_pread_all(fd, t->buf, n, at, src, err);
    if (rc == QV_OK) rc = fileio_write_all(t->fd, t->buf, n, t->path, err);
    at += n;
  }
  close(fd);
  if (rc == QV_OK) rc = pad(t, len, err);
  return rc;
}

static void writer_free(tar_writer *t) {
  qv_free(t->buf);
  qv_free(t->path);
  qv_free(t);
}

qv_rc tar_finish(tar_writer *t, qv_err *err) {
  static const char zeros[2 * BLOCK];
  qv_rc rc = fileio_write_all(t->fd, zeros, sizeof zeros, t->path, err);
  if (rc == QV_OK) rc = fileio_fsync(t->fd, t->path, err);
  close(t->fd);
  if (rc != QV_OK) unlink(t->path);
  writer_free(t);
  return rc;
}

void tar_abort(tar_writer *t) {
  if (t == NULL) return;
  close(t->fd);
  unlink(t->path);
  writer_free(t);
}

/* ---- extraction ------------------------------------------------------------ */

static bool safe_name(const char *name) {
  if (name[0] == 0 || name[0] == '/') return false;
  for (const char *p = name; *p; p++) {
    if ((unsigned char)*p < 0x20) return false;
    if (p[0] == '.' && p[1] == '.' && (p == name || p[-1] == '/') && (p[2] == 0 || p[2] == '/'))
      return false;
  }
  return true;
}

static bool parse_octal(const char *s, size_t n, uint64_t *out) {
  uint64_t v = 0;
  size_t i = 0;
  while (i < n && s[i] == ' ') i++;
  if (i == n || s[i] < '0' || s[i] > '7') return false;
  for (; i < n && s[i] >= '0' && s[i] <= '7'; i++) {
    if (v >> 60) return false;
    v = v * 8 + (uint64_t)(s[i] - '0');
  }
  for (; i < n; i++)
    if (s[i] != 0 && s[i] != ' ') return false;
  *out = v;
  return true;
}

qv_rc tar_extract(const char *path, const char *dir, qv_err *err) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return qv_err_set(err, QV_EIO, "open %s: %s", path, strerror(errno));
  struct stat st;
  fstat(fd, &st);
  uint64_t size = (uint64_t)st.st_size, at = 0;
  unsigned char *buf = qv_malloc(COPY_BUF);
  qv_rc rc = buf ? QV_OK : qv_err_set(err, QV_ENOMEM, "tar: no memory");
  bool ended = false;
  while (rc == QV_OK && !ended) {
    ustar h;
    if (at + BLOCK > size) {
      rc = QV_CORRUPT(err, "snapshot %s: ends without an end-of-archive block", path);
      break;
    }
    rc = fileio_pread_all(fd, &h, BLOCK, at, path, err);
    if (rc != QV_OK) break;
    at += BLOCK;
    static const char zero[BLOCK];
    if (memcmp(&h, zero, BLOCK) == 0) {
      ended = true;
      break;
    }
    uint64_t len, sum;
    char name[256];
    if (!parse_octal(h.chksum, sizeof h.chksum, &sum) || sum != checksum(&h)) {
      rc = QV_CORRUPT(err, "snapshot %s: bad header checksum at %llu", path,
                      (unsigned long long)(at - BLOCK));
      break;
    }
    if (h.prefix[0])
      snprintf(name, sizeof name, "%.155s/%.100s", h.prefix, h.name);
    else
      snprintf(name, sizeof name, "%.100s", h.name);
    if (!parse_octal(h.size, sizeof h.size, &len) || len > size - at) {
      rc = QV_CORRUPT(err, "snapshot %s: member %s has a bad size", path, name);
      break;
    }
    if (!safe_name(name)) {
      rc = QV_CORRUPT(err, "snapshot %s: refusing member path \"%s\"", path, name);
      break;
    }
    char dst[PATH_MAX + 256];
    snprintf(dst, sizeof dst, "%s/%s", dir, name);
    if (h.typeflag == '5') {
      rc = fileio_mkdirs(dst, err);
    } else if (h.typeflag == '0' || h.typeflag == 0) {
      char *slash = strrchr(dst, '/');
      *slash = 0;
      rc = fileio_mkdirs(dst, err);
      *slash = '/';
      int out = rc == QV_OK ? open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644) : -1;
      if (rc == QV_OK && out < 0)
        rc = errno == EEXIST ? QV_CORRUPT(err, "snapshot %s: member %s appears twice", path, name)
                             : qv_err_set(err, QV_EIO, "create %s: %s", dst, strerror(errno));
      for (uint64_t done = 0; rc == QV_OK && done < len;) {
        size_t n = len - done < COPY_BUF ? (size_t)(len - done) : COPY_BUF;
        rc = fileio_pread_all(fd, buf, n, at + done, path, err);
        if (rc == QV_OK) rc = fileio_write_all(out, buf, n, dst, err);
        done += n;
      }
      if (rc == QV_OK) rc = fileio_fsync(out, dst, err);
      if (out >= 0) close(out);
    } else {
      rc = QV_CORRUPT(err, "snapshot %s: member %s is not a regular file or directory", path,
                      name);
    }
    at += (len + BLOCK - 1) / BLOCK * BLOCK;
  }
  qv_free(buf);
  close(fd);
  return rc;
}
