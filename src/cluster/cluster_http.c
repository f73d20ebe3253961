/* cluster_http.c: parallel node-to-node HTTP calls (see cluster_http.h).
 * Owns only the curl handles of one cl_http_run; libcurl's global init is
 * done by the etcd client, which every cluster node creates first. */
#include <curl/curl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "cluster/cluster_http.h"

#define RESP_MAX (256u << 20) /* larger answers are an error, not a truncation */

typedef struct sink {
  cl_call *c;
  size_t cap;
  bool overflow;
} sink;

static size_t on_data(char *p, size_t size, size_t nmemb, void *arg) {
  sink *s = arg;
  size_t n = size * nmemb;
  cl_call *c = s->c;
  if (c->resp_len + n + 1 > s->cap) {
    size_t cap = s->cap ? s->cap : 4096;
    while (cap < c->resp_len + n + 1) cap *= 2;
    char *q = cap <= RESP_MAX ? qv_realloc(c->resp, cap) : NULL;
    if (q == NULL) {
      s->overflow = true;
      return 0;
    }
    c->resp = q;
    s->cap = cap;
  }
  memcpy(c->resp + c->resp_len, p, n);
  c->resp_len += n;
  c->resp[c->resp_len] = 0;
  return n;
}

void cl_call_clear(cl_call *c) {
  qv_free(c->resp);
  c->resp = NULL;
  c->resp_len = 0;
  c->status = 0;
  c->err[0] = 0;
}

void cl_http_run(cl_call *calls, size_t n, uint32_t timeout_ms) {
  if (n == 0) return;
  CURLM *m = curl_multi_init();
  CURL **h = qv_calloc(n, sizeof *h);
  sink *sinks = qv_calloc(n, sizeof *sinks);
  struct curl_slist **hdrs = qv_calloc(n, sizeof *hdrs);
  if (m == NULL || h == NULL || sinks == NULL || hdrs == NULL) {
    for (size_t i = 0; i < n; i++) snprintf(calls[i].err, sizeof calls[i].err, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    cl_call *c = &calls[i];
    cl_call_clear(c);
    sinks[i].c = c;
    h[i] = curl_easy_init();
    if (h[i] == NULL) {
      snprintf(c->err, sizeof c->err, "no curl handle");
      continue;
    }
    hdrs[i] = curl_slist_append(NULL, "Content-Type: application/json");
    hdrs[i] = curl_slist_append(hdrs[i], "Expect:");
    if (c->api_key && c->api_key[0]) {
      char line[600];
      snprintf(line, sizeof line, "api-key: %s", c->api_key);
      hdrs[i] = curl_slist_append(hdrs[i], line);
    }
    curl_easy_setopt(h[i], CURLOPT_URL, c->url);
    curl_easy_setopt(h[i], CURLOPT_HTTPHEADER, hdrs[i]);
    curl_easy_setopt(h[i], CURLOPT_NOPROXY, "*");
    curl_easy_setopt(h[i], CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h[i], CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(h[i], CURLOPT_FORBID_REUSE, 1L);
    curl_easy_setopt(h[i], CURLOPT_TIMEOUT_MS, (long)(c->timeout_ms ? c->timeout_ms : timeout_ms));
    curl_easy_setopt(h[i], CURLOPT_CONNECTTIMEOUT_MS, 1000L);
    curl_easy_setopt(h[i], CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h[i], CURLOPT_WRITEDATA, &sinks[i]);
    if (c->method && !strcmp(c->method, "GET")) {
      curl_easy_setopt(h[i], CURLOPT_HTTPGET, 1L);
    } else {
      curl_easy_setopt(h[i], CURLOPT_POST, 1L);
      curl_easy_setopt(h[i], CURLOPT_POSTFIELDS, c->body ? c->body : "");
      curl_easy_setopt(h[i], CURLOPT_POSTFIELDSIZE_LARGE,
                       (curl_off_t)(c->body ? c->len : 0));
    }
    curl_multi_add_handle(m, h[i]);
  }
  int running = 1;
  while (running) {
    if (curl_multi_perform(m, &running) != CURLM_OK) break;
    if (running) curl_multi_poll(m, NULL, 0, 100, NULL);
  }
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(m, &left)) != NULL) {
    if (msg->msg != CURLMSG_DONE) continue;
    for (size_t i = 0; i < n; i++) {
      if (h[i] != msg->easy_handle) continue;
      cl_call *c = &calls[i];
      if (msg->data.result == CURLE_OK) {
        long code = 0;
        curl_easy_getinfo(h[i], CURLINFO_RESPONSE_CODE, &code);
        c->status = (unsigned)code;
      } else {
        snprintf(c->err, sizeof c->err, "%s: %s", c->url,
                 sinks[i].overflow ? "answer too large" : curl_easy_strerror(msg->data.result));
      }
    }
  }
out:
  for (size_t i = 0; h && i < n; i++) {
    if (h[i]) {
      curl_multi_remove_handle(m, h[i]);
      curl_easy_cleanup(h[i]);
    }
    curl_slist_free_all(hdrs ? hdrs[i] : NULL);
    if (calls[i].status == 0 && calls[i].err[0] == 0)
      snprintf(calls[i].err, sizeof calls[i].err, "%s: no answer", calls[i].url);
  }
  if (m) curl_multi_cleanup(m);
  qv_free(h);
  qv_free(sinks);
  qv_free(hdrs);
}
