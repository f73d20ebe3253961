/* err.h: status codes and error messages shared by every subsystem.
 *
 * qv_err_set() formats a message into an optional qv_err and returns the code,
 * so a failure is reported in one line: `return qv_err_set(err, QV_EDIM, ...)`.
 * Corruption goes through QV_CORRUPT, which also logs file and line: one place
 * to put a breakpoint when stored bytes fail a check. */
#ifndef QV_BASE_ERR_H
#define QV_BASE_ERR_H

#include "quiver.h"

qv_rc qv_err_set(qv_err *err, qv_rc rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

qv_rc qv_corrupt_at(const char *file, int line, qv_err *err, const char *fmt,
                    ...) __attribute__((format(printf, 4, 5)));

#define QV_CORRUPT(err, ...) qv_corrupt_at(__FILE__, __LINE__, (err), __VA_ARGS__)

/* Copies src into dst (either may be NULL); returns src's code. */
qv_rc qv_err_copy(qv_err *dst, const qv_err *src);

#endif
