/* log.h: the library's logger. Silent until the host installs a callback
 * with qv_set_log(); nothing is ever logged per vector. */
#ifndef QV_BASE_LOG_H
#define QV_BASE_LOG_H

#include "quiver.h"

void qv_log(qv_log_level level, const char *subsystem, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
