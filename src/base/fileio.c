/* fileio.c: durable file operations behind one seam; see fileio.h.
 * Owns retries of short writes and EINTR, and the fault-injection counters
 * the tests use. Knows nothing about what the bytes mean. */
#include "base/fileio.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/err.h"

static uint64_t g_write_fault, g_fsync_fault;

void fileio_fault_write_after(uint64_t n) {
  __atomic_store_n(&g_write_fault, n, __ATOMIC_RELAXED);
}
void fileio_fault_fsync_after(uint64_t n) {
  __atomic_store_n(&g_fsync_fault, n, __ATOMIC_RELAXED);
}

static int fault_hit(uint64_t *counter) {
  uint64_t n = __atomic_load_n(counter, __ATOMIC_RELAXED);
  if (n == 0) return 0;
  return __atomic_sub_fetch(counter, 1, __ATOMIC_RELAXED) == 0;
}

qv_rc fileio_write_all(int fd, const void *p, size_t n, const char *path,
                       qv_err *err) {
  const unsigned char *b = p;
  if (fault_hit(&g_write_fault)) {
    if (n / 2 > 0 && write(fd, b, n / 2) < 0) { /* a torn write, as in a crash */
    }
    return qv_err_set(err, QV_EIO, "write %s: injected fault", path);
  }
  while (n > 0) {
    ssize_t w = write(fd, b, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return qv_err_set(err, QV_EIO, "write %s: %s", path, strerror(errno));
    }
    b += w;
    n -= (size_t)w;
  }
  return QV_OK;
}

qv_rc fileio_pread_all(int fd, void *p, size_t n, uint64_t off,
                       const char *path, qv_err *err) {
  unsigned char *b = p;
  while (n > 0) {
    ssize_t r = pread(fd, b, n, (off_t)off);
    if (r < 0) {
      if (errno == EINTR) continue;
      return qv_err_set(err, QV_EIO, "read %s: %s", path, strerror(errno));
    }
    if (r == 0)
      return QV_CORRUPT(err, "%s: file ends at %llu, %zu bytes short", path,
                        (unsigned long long)off, n);
    b += r;
    n -= (size_t)r;
    off += (uint64_t)r;
  }
  return QV_OK;
}

qv_rc fileio_fsync(int fd, const char *path, qv_err *err) {
  if (fault_hit(&g_fsync_fault))
    return qv_err_set(err, QV_EIO, "fsync %s: injected fault", path);
  if (fdatasync(fd) != 0)
    return qv_err_set(err, QV_EIO, "fsync %s: %s", path, strerror(errno));
  return QV_OK;
}

qv_rc fileio_fsync_dir(const char *dir, qv_err *err) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return qv_err_set(err, QV_EIO, "open dir %s: %s", dir, strerror(errno));
  qv_rc rc = QV_OK;
  if (fault_hit(&g_fsync_fault))
    rc = qv_err_set(err, QV_EIO, "fsync %s: injected fault", dir);
  else if (fsync(fd) != 0)
    rc = qv_err_set(err, QV_EIO, "fsync %s: %s", dir, strerror(errno));
  close(fd);
  return rc;
}

static void dir_of(const char *path, char *out, size_t cap) {
  snprintf(out, cap, "%s", path);
  char *slash = strrchr(out, '/');
  if (slash == NULL)
    snprintf(out, cap, ".");
  else if (slash == out)
    out[1] = 0;
  else
    *slash = 0;
}

qv_rc fileio_write_atomic(const char *path, const void *p, size_t n,
                          qv_err *err) {
  char tmp[PATH_MAX], dir[PATH_MAX];
  if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
    return qv_err_set(err, QV_EINVAL, "path too long: %s", path);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return qv_err_set(err, QV_EIO, "create %s: %s", tmp, strerror(errno));
  qv_rc rc = fileio_write_all(fd, p, n, tmp, err);
  if (rc == QV_OK) rc = fileio_fsync(fd, tmp, err);
  close(fd);
  if (rc == QV_OK && rename(tmp, path) != 0)
    rc = qv_err_set(err, QV_EIO, "rename %s: %s", tmp, strerror(errno));
  if (rc != QV_OK) {
    unlink(tmp);
    return rc;
  }
  dir_of(path, dir, sizeof dir);
  return fileio_fsync_dir(dir, err);
}

qv_rc fileio_read_file(const char *path, char **out, size_t *n, qv_err *err) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT)
      return qv_err_set(err, QV_ENOTFOUND, "%s does not exist", path);
    return qv_err_set(err, QV_EIO, "open %s: %s", path, strerror(errno));
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    close(fd);
    return qv_err_set(err, QV_EIO, "stat %s: %s", path, strerror(errno));
  }
  size_t len = (size_t)st.st_size;
  char *buf = qv_malloc(len + 1);
  if (buf == NULL) {
    close(fd);
    return qv_err_set(err, QV_ENOMEM, "read %s: no memory for %zu bytes",
                      path, len);
  }
  qv_rc rc = fileio_pread_all(fd, buf, len, 0, path, err);
  close(fd);
  if (rc != QV_OK) {
    qv_free(buf);
    return rc;
  }
  buf[len] = 0;
  *out = buf;
  *n = len;
  return QV_OK;
}

qv_rc fileio_mkdirs(const char *path, qv_err *err) {
  char buf[PATH_MAX];
  if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
    return qv_err_set(err, QV_EINVAL, "path too long: %s", path);
  for (char *s = buf + 1; *s; s++) {
    if (*s != '/') continue;
    *s = 0;
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
      return qv_err_set(err, QV_EIO, "mkdir %s: %s", buf, strerror(errno));
    *s = '/';
  }
  if (mkdir(buf, 0755) != 0 && errno != EEXIST)
    return qv_err_set(err, QV_EIO, "mkdir %s: %s", buf, strerror(errno));
  return QV_OK;
}

qv_rc fileio_remove_tree(const char *path, qv_err *err) {
  struct stat st;
  if (lstat(path, &st) != 0)
    return errno == ENOENT ? QV_OK
                           : qv_err_set(err, QV_EIO, "stat %s: %s", path,
                                        strerror(errno));
  if (S_ISDIR(st.st_mode)) {
    DIR *d = opendir(path);
    if (d == NULL)
      return qv_err_set(err, QV_EIO, "opendir %s: %s", path, strerror(errno));
    struct dirent *e;
    qv_rc rc = QV_OK;
    while (rc == QV_OK && (e = readdir(d)) != NULL) {
      if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
      char child[PATH_MAX];
      if (snprintf(child, sizeof child, "%s/%s", path, e->d_name) >=
          (int)sizeof child) {
        rc = qv_err_set(err, QV_EINVAL, "path too long under %s", path);
        break;
      }
      rc = fileio_remove_tree(child, err);
    }
    closedir(d);
    if (rc != QV_OK) return rc;
    if (rmdir(path) != 0)
      return qv_err_set(err, QV_EIO, "rmdir %s: %s", path, strerror(errno));
    return QV_OK;
  }
  if (unlink(path) != 0)
    return qv_err_set(err, QV_EIO, "unlink %s: %s", path, strerror(errno));
  return QV_OK;
}

int fileio_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

qv_rc fileio_map_file(const char *path, fileio_map *out, qv_err *err) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT)
      return QV_CORRUPT(err, "%s is missing", path);
    return qv_err_set(err, QV_EIO, "open %s: %s", path, strerror(errno));
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    close(fd);
    return qv_err_set(err, QV_EIO, "stat %s: %s", path, strerror(errno));
  }
  out->n = (size_t)st.st_size;
  out->p = NULL;
  if (out->n > 0) {
    void *m = mmap(NULL, out->n, PROT_READ, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
      close(fd);
      return qv_err_set(err, QV_EIO, "mmap %s: %s", path, strerror(errno));
    }
    out->p = m;
  }
  close(fd);
  return QV_OK;
}

void fileio_unmap(fileio_map *m) {
  if (m != NULL && m->p != NULL) munmap((void *)m->p, m->n);
  if (m != NULL) {
    m->p = NULL;
    m->n = 0;
  }
}
