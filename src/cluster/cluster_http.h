/* cluster_http.h: node-to-node HTTP calls of the cluster data path —
 * forwarding writes to primaries, replicating to copies, fanning searches
 * out — run in parallel over one libcurl multi handle.
 *
 * Every call uses a fresh connection (no keep-alive): a peer's HTTP worker
 * that is blocked in a handler would otherwise hold a pooled connection
 * hostage, and chains of blocked workers across nodes could stall until a
 * timeout. Connections on loopback cost ~0.1 ms, far below a search.
 *
 * Invariant: after cl_http_run every call has status (0 = no HTTP answer:
 * refused, reset, timed out; `err` says which) and, for an answer, its body
 * in resp (qv_malloc'd, NUL-terminated; free with cl_call_clear). */
#ifndef QV_CLUSTER_HTTP_H
#define QV_CLUSTER_HTTP_H

#include <stddef.h>
#include <stdint.h>

typedef struct cl_call {
  char url[512];
  const char *method; /* "POST" (default) or "GET" */
  const char *body;   /* borrowed; NULL = no body */
  size_t len;
  const char *api_key; /* sent as `api-key` when non-empty */
  uint32_t timeout_ms; /* this call's bound; 0 = cl_http_run's */
  /* results */
  unsigned status;
  char *resp;
  size_t resp_len;
  char err[160];
} cl_call;

/* Runs the n calls concurrently and returns when all ended; each is bounded
 * by timeout_ms. */
void cl_http_run(cl_call *calls, size_t n, uint32_t timeout_ms);
void cl_call_clear(cl_call *c); /* frees resp and resets the results */

#endif
