/* etcd_watch.c: watch streams over the JSON gateway — one thread and one
 * curl multi handle per watch, parsing the chunked answer line by line,
 * reconnecting from the last revision delivered, re-reading everything
 * after a compaction (etcd.h has the contract).
 *
 * Owns the stream lifecycle. Unary calls (the snapshot range) go through
 * etcd.c.
 *
 * The stream thread (watch_main):
 *
 *      +-> [snapshot] --range ok--> deliver SNAPSHOT, next_rev = rev + 1
 *      |        | range failed: back off, retry
 *      |        v
 *      |   [open stream at next_rev on endpoint ep]
 *      |        |  created -> connected; events -> deliver, next_rev moves
 *      |        v
 *      |   stream ends: error / idle / server closed -> ep + 1, back off
 *      |                kick                         -> same ep, at once
 *      +------- canceled with compact_revision       -> next_rev = 0
 *
 * Invariant: events reach the callback in revision order, each once: the
 * stream restarts at last delivered revision + 1, and anything older that
 * etcd replays is dropped here. The callback runs on this thread only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"
#include "base/err.h"
#include "base/log.h"
#include "cluster/etcd_int.h"

#define BACKOFF_MIN_MS 50u
#define BACKOFF_MAX_MS 1000u
#define POLL_MS 200
#define LINE_MAX_BYTES (ETCD_RESPONSE_MAX)

struct etcd_watch {
  etcd_client *c;
  char *key;
  bool prefix;
  uint32_t idle_ms;
  etcd_watch_fn fn;
  void *ctx;
  pthread_t thread;
  CURLM *multi;
  int stop, kick; /* set by other threads, read atomically */

  pthread_mutex_t mu; /* guards st */
  etcd_watch_stats st;

  /* Below: the watch thread's own. */
  int64_t next_rev; /* first revision not yet delivered; 0 = need snapshot */
  etcd_buf line;    /* bytes of the current, incomplete line */
  bool is_created, end_stream, need_resync;
  uint64_t last_byte_ms;
};

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void etcd_watch_opts_init(etcd_watch_opts *o) {
  memset(o, 0, sizeof *o);
  o->idle_timeout_ms = ETCD_WATCH_IDLE_MS_DEFAULT;
}

static void set_connected(etcd_watch *w, bool is_connected) {
  pthread_mutex_lock(&w->mu);
  w->st.is_connected = is_connected;
  pthread_mutex_unlock(&w->mu);
}

static void delivered(etcd_watch *w, int64_t rev, bool is_snapshot) {
  pthread_mutex_lock(&w->mu);
  w->st.revision = rev;
  if (is_snapshot) w->st.snapshots++;
  pthread_mutex_unlock(&w->mu);
}

/* Reads the whole range and hands it over as a SNAPSHOT. */
static qv_rc snapshot(etcd_watch *w) {
  etcd_kvs kvs;
  qv_err err;
  qv_rc rc = w->prefix ? etcd_range_prefix(w->c, w->key, &kvs, &err)
                       : etcd_get(w->c, w->key, &kvs, &err);
  if (rc != QV_OK) {
    qv_log(QV_LOG_WARN, "etcd", "watch %s: snapshot failed: %s", w->key,
           err.msg);
    return rc;
  }
  etcd_watch_msg m = {.kind = ETCD_WATCH_SNAPSHOT,
                      .revision = kvs.revision,
                      .kvs = kvs.kvs,
                      .n_kvs = kvs.n};
  w->fn(w->ctx, &m);
  w->next_rev = kvs.revision + 1;
  delivered(w, kvs.revision, true);
  etcd_kvs_free(&kvs);
  return QV_OK;
}

/* Delivers the events of one watch response that are not older than
 * next_rev. A malformed event ends the stream and forces a snapshot: a
 * view with a hole in it is worse than a re-read. */
static void deliver_events(etcd_watch *w, json_t *evs) {
  size_t n = json_array_size(evs), k = 0;
  etcd_event *out = qv_calloc(n ? n : 1, sizeof *out);
  if (out == NULL) {
    w->end_stream = w->need_resync = true;
    return;
  }
  int64_t last = 0;
  for (size_t i = 0; i < n; i++) {
    json_t *e = json_array_get(evs, i);
    qv_err err;
    etcd_event ev = {0};
    ev.is_delete =
        json_is_string(json_object_get(e, "type")) &&
        strcmp(json_string_value(json_object_get(e, "type")), "DELETE") == 0;
    if (etcd_kv_parse(json_object_get(e, "kv"), &ev.kv,
                      etcd_client_endpoint(w->c), &err) != QV_OK) {
      qv_log(QV_LOG_ERROR, "etcd", "watch %s: %s; re-reading", w->key, err.msg);
      w->end_stream = w->need_resync = true;
      break;
    }
    if (ev.kv.mod_revision < w->next_rev) { /* already delivered */
      etcd_kv_clear(&ev.kv);
      continue;
    }
    last = ev.kv.mod_revision;
    out[k++] = ev;
  }
  if (k > 0 && !w->need_resync) {
    etcd_watch_msg m = {.kind = ETCD_WATCH_EVENTS,
                        .revision = last,
                        .events = out,
                        .n_events = k};
    w->fn(w->ctx, &m);
    w->next_rev = last + 1;
    delivered(w, last, false);
  }
  for (size_t i = 0; i < k; i++) etcd_kv_clear(&out[i].kv);
  qv_free(out);
}

static void handle_line(etcd_watch *w, const char *text, size_t len) {
  json_error_t je;
  json_t *j = json_loadb(text, len, JSON_DISABLE_EOF_CHECK, &je);
  json_t *r = json_object_get(j, "result");
  if (!json_is_object(r)) {
    const char *m = json_is_object(json_object_get(j, "error"))
                        ? json_string_value(json_object_get(
                              json_object_get(j, "error"), "message"))
                        : NULL;
    qv_log(QV_LOG_WARN, "etcd", "watch %s: %s: %s", w->key,
           etcd_client_endpoint(w->c),
           m ? m : "unexpected message; reconnecting");
    w->end_stream = true;
    json_decref(j);
    return;
  }
  int64_t rev = etcd_json_i64(json_object_get(r, "header"), "revision");
  if (json_is_true(json_object_get(r, "canceled"))) {
    int64_t compacted = etcd_json_i64(r, "compact_revision");
    qv_log(QV_LOG_WARN, "etcd", "watch %s: canceled%s (compact revision %lld)",
           w->key, compacted ? ", history compacted: re-reading" : "",
           (long long)compacted);
    w->end_stream = true;
    w->need_resync = compacted > 0;
  } else if (json_is_true(json_object_get(r, "created"))) {
    w->is_created = true;
    set_connected(w, true);
  } else if (json_array_size(json_object_get(r, "events")) > 0) {
    deliver_events(w, json_object_get(r, "events"));
  } else if (rev >= w->next_rev) { /* progress: nothing up to rev */
    etcd_watch_msg m = {.kind = ETCD_WATCH_PROGRESS, .revision = rev};
    w->fn(w->ctx, &m);
    w->next_rev = rev + 1;
    delivered(w, rev, false);
  }
  json_decref(j);
}

/* curl's write callback: arbitrary slices of the stream; whole lines are
 * handled as they complete. */
static size_t stream_write(char *ptr, size_t size, size_t nmemb,
                           void *userdata) {
  etcd_watch *w = userdata;
  size_t n = size * nmemb, i = 0;
  w->last_byte_ms = now_ms();
  while (i < n && !w->end_stream) {
    const char *nl = memchr(ptr + i, '\n', n - i);
    size_t chunk = nl ? (size_t)(nl - (ptr + i)) : n - i;
    if (chunk > 0 && etcd_buf_write(ptr + i, 1, chunk, &w->line) != chunk)
      return 0; /* a line beyond ETCD_RESPONSE_MAX, or no memory: drop it */
    i += chunk;
    if (nl == NULL) break;
    i++;
    if (w->line.len > 0) handle_line(w, w->line.data, w->line.len);
    w->line.len = 0;
  }
  return n;
}

static json_t *create_body(etcd_watch *w) {
  json_t *cr = json_object(), *b = json_object();
  char *k = etcd_b64_encode(w->key, strlen(w->key));
  char *end = w->prefix ? etcd_prefix_end_b64(w->key) : NULL;
  char rev[24];
  snprintf(rev, sizeof rev, "%lld", (long long)w->next_rev);
  bool ok = cr && b && k && (!w->prefix || end) &&
            json_object_set_new(cr, "key", json_string(k)) == 0 &&
            (!w->prefix ||
             json_object_set_new(cr, "range_end", json_string(end)) == 0) &&
            json_object_set_new(cr, "start_revision", json_string(rev)) == 0 &&
            json_object_set_new(cr, "progress_notify", json_true()) == 0 &&
            json_object_set(b, "create_request", cr) == 0;
  qv_free(k);
  qv_free(end);
  json_decref(cr);
  if (!ok) {
    json_decref(b);
    return NULL;
  }
  return b;
}

/* Sleeps up to `ms`, waking early on stop or kick. */
static void pause_ms(etcd_watch *w, uint32_t ms) {
  curl_multi_poll(w->multi, NULL, 0, (int)ms, NULL);
}

static bool is_stopping(etcd_watch *w) {
  return __atomic_load_n(&w->stop, __ATOMIC_ACQUIRE);
}

/* Runs one stream on endpoint `ep` until it ends. Returns whether the
 * watch was confirmed by etcd (a healthy stream that later died). */
static bool run_stream(etcd_watch *w, unsigned ep, bool *was_kicked) {
  json_t *b = create_body(w);
  char *text = b ? json_dumps(b, JSON_COMPACT) : NULL;
  json_decref(b);
  CURL *h = curl_easy_init();
  *was_kicked = false;
  if (text == NULL || h == NULL) {
    free(text);
    if (h) curl_easy_cleanup(h);
    return false;
  }
  char url[512];
  snprintf(url, sizeof url, "%s/v3/watch", w->c->endpoints[ep]);
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                   (long)w->c->connect_timeout_ms);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, w->c->headers);
  curl_easy_setopt(h, CURLOPT_POSTFIELDS, text);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, stream_write);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, w);
  w->is_created = w->end_stream = false;
  w->line.len = 0;
  w->last_byte_ms = now_ms();
  pthread_mutex_lock(&w->mu);
  w->st.connects++;
  pthread_mutex_unlock(&w->mu);
  curl_multi_add_handle(w->multi, h);
  int running = 1;
  while (running && !w->end_stream && !is_stopping(w)) {
    curl_multi_perform(w->multi, &running);
    if (!running || w->end_stream) break;
    if (__atomic_exchange_n(&w->kick, 0, __ATOMIC_ACQ_REL)) {
      *was_kicked = true;
      break;
    }
    if (w->idle_ms && now_ms() - w->last_byte_ms > w->idle_ms) {
      qv_log(QV_LOG_INFO, "etcd", "watch %s: %s silent for %u ms; reconnecting",
             w->key, w->c->endpoints[ep], w->idle_ms);
      break;
    }
    curl_multi_poll(w->multi, NULL, 0, POLL_MS, NULL);
  }
  bool was_created = w->is_created;
  curl_multi_remove_handle(w->multi, h);
  curl_easy_cleanup(h);
  free(text);
  set_connected(w, false);
  return was_created;
}

static void *watch_main(void *arg) {
  etcd_watch *w = arg;
  unsigned ep = etcd_cur(w->c), failures = 0;
  uint32_t backoff = BACKOFF_MIN_MS;
  while (!is_stopping(w)) {
    if (w->next_rev == 0 && snapshot(w) != QV_OK) {
      pause_ms(w, backoff);
      backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
      continue;
    }
    bool was_kicked;
    bool was_created = run_stream(w, ep, &was_kicked);
    if (is_stopping(w)) break;
    if (w->need_resync) {
      w->need_resync = false;
      w->next_rev = 0;
      continue;
    }
    if (was_kicked) continue;
    /* Move on: the member may be dead or partitioned; the next attempt
     * resumes from next_rev wherever it lands. */
    ep = (ep + 1) % w->c->n_endpoints;
    if (was_created) {
      failures = 0;
      backoff = BACKOFF_MIN_MS;
    } else if (++failures >= w->c->n_endpoints) {
      failures = 0;
      pause_ms(w, backoff);
      backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
  }
  return NULL;
}

qv_rc etcd_watch_start(etcd_client *c, const etcd_watch_opts *o,
                       etcd_watch **out, qv_err *err) {
  if (o == NULL || o->key == NULL || o->fn == NULL || o->start_revision < 0)
    return qv_err_set(
        err, QV_EINVAL,
        "etcd watch: a key, a callback and a start revision >= 0 are required");
  etcd_watch *w = qv_calloc(1, sizeof *w);
  if (w == NULL)
    return qv_err_set(err, QV_ENOMEM, "etcd watch %s: no memory", o->key);
  w->c = c;
  w->prefix = o->prefix;
  w->idle_ms = o->idle_timeout_ms;
  w->fn = o->fn;
  w->ctx = o->ctx;
  w->next_rev = o->start_revision;
  w->line.cap = LINE_MAX_BYTES;
  pthread_mutex_init(&w->mu, NULL);
  w->key = qv_strdup(o->key);
  w->multi = curl_multi_init();
  if (w->key == NULL || w->multi == NULL) {
    etcd_watch_stop(w);
    return qv_err_set(err, QV_ENOMEM, "etcd watch %s: no memory", o->key);
  }
  if (pthread_create(&w->thread, NULL, watch_main, w) != 0) {
    curl_multi_cleanup(w->multi);
    w->multi = NULL;
    etcd_watch_stop(w);
    return qv_err_set(err, QV_EIO, "etcd watch %s: cannot start a thread",
                      o->key);
  }
  *out = w;
  return QV_OK;
}

void etcd_watch_stop(etcd_watch *w) {
  if (w == NULL) return;
  if (w->multi) {
    __atomic_store_n(&w->stop, 1, __ATOMIC_RELEASE);
    curl_multi_wakeup(w->multi);
    pthread_join(w->thread, NULL);
    curl_multi_cleanup(w->multi);
  }
  etcd_buf_free(&w->line);
  pthread_mutex_destroy(&w->mu);
  qv_free(w->key);
  qv_free(w);
}

void etcd_watch_get_stats(etcd_watch *w, etcd_watch_stats *out) {
  pthread_mutex_lock(&w->mu);
  *out = w->st;
  pthread_mutex_unlock(&w->mu);
}

void etcd_watch_kick(etcd_watch *w) {
  __atomic_store_n(&w->kick, 1, __ATOMIC_RELEASE);
  curl_multi_wakeup(w->multi);
}
