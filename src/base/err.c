/* err.c: formatting of error messages; see err.h. Allocates nothing. */
#include "base/err.h"

#include <stdarg.h>
#include <stdio.h>

#include "base/log.h"

const char *qv_rc_name(qv_rc rc) {
  switch (rc) {
  case QV_OK: return "QV_OK";
  case QV_EINVAL: return "QV_EINVAL";
  case QV_EDIM: return "QV_EDIM";
  case QV_ENOTFOUND: return "QV_ENOTFOUND";
  case QV_EEXIST: return "QV_EEXIST";
  case QV_ENOMEM: return "QV_ENOMEM";
  case QV_EIO: return "QV_EIO";
  case QV_EBUSY: return "QV_EBUSY";
  case QV_ECORRUPT: return "QV_ECORRUPT";
  case QV_ECLOSED: return "QV_ECLOSED";
  }
  return "QV_E?";
}

static void vset(qv_err *err, qv_rc rc, const char *fmt, va_list ap) {
  if (err == NULL) return;
  err->rc = rc;
  vsnprintf(err->msg, sizeof err->msg, fmt, ap);
}

qv_rc qv_err_set(qv_err *err, qv_rc rc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vset(err, rc, fmt, ap);
  va_end(ap);
  return rc;
}

qv_rc qv_corrupt_at(const char *file, int line, qv_err *err, const char *fmt,
                    ...) {
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  qv_log(QV_LOG_ERROR, "corrupt", "%s (detected at %s:%d)", msg, file, line);
  return qv_err_set(err, QV_ECORRUPT, "%s", msg);
}

qv_rc qv_err_copy(qv_err *dst, const qv_err *src) {
  if (src == NULL) return QV_OK;
  if (dst != NULL && dst != src) *dst = *src;
  return src->rc;
}
