/* log.c: forwards formatted messages to the host's callback, if any.
 * The callback pointer is read atomically so that installing one while other
 * threads log is safe. */
#include "base/log.h"

#include <stdarg.h>
#include <stdio.h>

static qv_log_fn g_fn;
static void *g_ctx;
static int g_min = QV_LOG_INFO;

void qv_set_log(qv_log_fn fn, void *ctx, qv_log_level min_level) {
  __atomic_store_n(&g_ctx, ctx, __ATOMIC_RELAXED);
  __atomic_store_n(&g_min, (int)min_level, __ATOMIC_RELAXED);
  __atomic_store_n(&g_fn, fn, __ATOMIC_RELEASE);
}

void qv_log(qv_log_level level, const char *subsystem, const char *fmt, ...) {
  qv_log_fn fn = __atomic_load_n(&g_fn, __ATOMIC_ACQUIRE);
  if (fn == NULL || (int)level < __atomic_load_n(&g_min, __ATOMIC_RELAXED))
    return;
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fn(__atomic_load_n(&g_ctx, __ATOMIC_RELAXED), level, subsystem, msg);
}
