/* cluster_harness.h: what the cluster tests share — starting and stopping a
 * throwaway etcd through scripts/etcd.sh (which records every pid and kills
 * exactly those), and waiting for a condition with a deadline.
 *
 * Every etcd started here names the calling process as its owner, so the
 * script's watchdog stops it even when a test crashes. Waiting polls a
 * condition every 10 ms up to a generous deadline: the deadline only stops
 * a broken test from hanging, it is never what a test asserts. */
#ifndef QV_TESTS_CLUSTER_HARNESS_H
#define QV_TESTS_CLUSTER_HARNESS_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "quiver.h"

typedef struct th_etcd {
  char dir[512];
  char endpoints[1024]; /* comma-separated */
  int members;
} th_etcd;

static inline uint64_t th_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static inline void th_nap_ms(unsigned ms) {
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* Polls `cond` every 10 ms until it holds or `ms` pass; the value of the
 * last evaluation. */
#define TH_WAIT(cond, ms)                                                      \
  ({                                                                           \
    uint64_t th_deadline_ = th_ms() + (ms);                                    \
    bool th_ok_;                                                               \
    while (!(th_ok_ = (cond)) && th_ms() < th_deadline_) th_nap_ms(10);        \
    th_ok_;                                                                    \
  })

/* scripts/etcd.sh: $QV_ETCD_SH, or found from this header's own path. */
static inline const char *th_script(void) {
  static char path[1024];
  const char *env = getenv("QV_ETCD_SH");
  if (env && *env) return env;
  if (path[0]) return path;
  const char *me = __FILE__,
             *cut = strstr(me, "tests/cluster/cluster_harness.h");
  if (cut == NULL) return "scripts/etcd.sh";
  snprintf(path, sizeof path, "%.*sscripts/etcd.sh", (int)(cut - me), me);
  return path;
}

/* etcd itself, and curl, which scripts/etcd.sh uses for health checks. */
static inline bool th_have_etcd(void) {
  return system("command -v etcd >/dev/null 2>&1 && "
                "command -v curl >/dev/null 2>&1") == 0;
}

/* Starts `members` etcd members owned by this process. */
static inline bool th_etcd_start(th_etcd *e, int members) {
  memset(e, 0, sizeof *e);
  e->members = members;
  char cmd[1400];
  snprintf(cmd, sizeof cmd, "%s start -n %d -o %d", th_script(), members,
           (int)getpid());
  FILE *p = popen(cmd, "r");
  if (p == NULL) return false;
  char line[1200];
  while (fgets(line, sizeof line, p)) {
    line[strcspn(line, "\n")] = '\0';
    if (strncmp(line, "QV_ETCD_DIR=", 12) == 0)
      snprintf(e->dir, sizeof e->dir, "%s", line + 12);
    else if (strncmp(line, "QV_ETCD_ENDPOINTS=", 18) == 0)
      snprintf(e->endpoints, sizeof e->endpoints, "%s", line + 18);
  }
  return pclose(p) == 0 && e->dir[0] && e->endpoints[0];
}

static inline void th_etcd_stop(th_etcd *e) {
  if (e->dir[0] == '\0') return;
  char cmd[1400];
  snprintf(cmd, sizeof cmd, "%s stop '%s' 0", th_script(),
           e->dir); /* KILL at once */
  if (system(cmd) != 0) fprintf(stderr, "harness: %s failed\n", cmd);
  e->dir[0] = '\0';
}

/* `verb` is "kill" or "restart"; `name` "m1", "m2", ... */
static inline bool th_etcd_member(th_etcd *e, const char *verb,
                                  const char *name) {
  char cmd[1400];
  snprintf(cmd, sizeof cmd, "%s %s '%s' %s", th_script(), verb, e->dir, name);
  return system(cmd) == 0;
}

static inline pid_t th_etcd_pid(const th_etcd *e, const char *name) {
  char path[600];
  snprintf(path, sizeof path, "%s/%s.pid", e->dir, name);
  FILE *f = fopen(path, "r");
  int pid = 0;
  if (f) {
    if (fscanf(f, "%d", &pid) != 1) pid = 0;
    fclose(f);
  }
  return (pid_t)pid;
}

/* The i-th endpoint (0-based) into buf. */
static inline const char *th_endpoint(const th_etcd *e, int i, char *buf,
                                      size_t n) {
  const char *p = e->endpoints;
  for (int k = 0; k < i && p; k++) {
    p = strchr(p, ',');
    if (p) p++;
  }
  if (p == NULL) return NULL;
  size_t len = strcspn(p, ",");
  snprintf(buf, n, "%.*s", (int)len, p);
  return buf;
}

/* Logs the library's messages to stderr when QV_TEST_LOG is set. */
static inline void th_log_to_stderr(void *ctx, qv_log_level level,
                                    const char *sub, const char *msg) {
  (void)ctx;
  fprintf(stderr, "[%llu %d %s] %s\n", (unsigned long long)th_ms(), (int)level,
          sub, msg);
}

static inline void th_maybe_log(void) {
  if (getenv("QV_TEST_LOG")) qv_set_log(th_log_to_stderr, NULL, QV_LOG_DEBUG);
}

#endif
