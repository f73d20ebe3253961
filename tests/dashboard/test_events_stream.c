/* test_events_stream.c: GET /cluster/events (src/server/cluster_events.c)
 * against a real server process, spoken to over raw sockets.
 *
 * Each test starts helper_serve (server_main, beside this binary or in
 * $QV_TEST_BIN) on a free loopback port with a fresh data directory; the
 * child dies with the test process (PR_SET_PDEATHSIG), so a failed assertion
 * leaves nothing running. The cluster test also starts a throwaway etcd
 * (tests/cluster/cluster_harness.h) and skips without one.
 *
 * Owns a minimal HTTP/1.1 client (one request per connection), a chunked
 * decoder and an SSE parser. What is checked: the first event is the state
 * document; a change (a collection created, a node drained) arrives as an
 * `event` with an id and as a fresh `state`; Last-Event-ID (header or
 * ?last_event_id=) resumes after that id; the 17th stream is refused with
 * 503 and a closed stream frees its place; open streams do not hold the
 * worker threads (more streams than threads, requests still answered); the
 * API key may come as ?api-key= on this route only; SIGTERM with open
 * streams ends them and exits 0 without waiting out the drain.
 *
 * Deadlines only stop a broken test from hanging; no timing is asserted. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cluster/cluster_harness.h" /* via -I tests/: its __FILE__ finds scripts/ */
#include "testutil.h"

#define DEADLINE_MS 20000 /* for anything that should take well under a second */
#define STREAMS_MAX 16    /* EV_STREAMS_MAX of cluster_events.c */

/* ---- the server process ------------------------------------------------------- */

typedef struct server {
  pid_t pid;
  int port;
  char *dir;
  char log[600];
} server;

static const char *helper_path(void) {
  static char path[1024];
  const char *bin = getenv("QV_TEST_BIN");
  if (bin != NULL) {
    snprintf(path, sizeof path, "%s/helper_serve", bin);
  } else {
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 32);
    cr_assert_gt(n, 0);
    path[n] = 0;
    snprintf(strrchr(path, '/') + 1, 32, "helper_serve");
  }
  cr_assert_eq(access(path, X_OK), 0, "no helper_serve at %s (set QV_TEST_BIN)", path);
  return path;
}

static char *read_text(const char *path) {
  FILE *f = fopen(path, "r");
  if (f == NULL) return strdup("");
  static char buf[1 << 16];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  return strdup(buf);
}

/* A port that was free a moment ago: a cluster node must know its own
 * port before it binds (the address it registers). */
static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
  close(fd);
  return ntohs(a.sin_port);
}

/* Starts the server on `port` (0: any) with `extra` flags (NULL-terminated)
 * and waits for its ready line, which names the port it bound. */
static void server_start_on(server *s, int port, const char *const *extra) {
  memset(s, 0, sizeof *s);
  s->dir = tu_tmpdir("events");
  snprintf(s->log, sizeof s->log, "%s/server.log", s->dir);
  char data[600], port_s[16];
  snprintf(data, sizeof data, "%s/data", s->dir);
  snprintf(port_s, sizeof port_s, "%d", port);
  const char *argv[32] = {helper_path(), "--port", port_s, "--data-dir", data, "--threads", "4"};
  int argc = 7;
  for (int i = 0; extra && extra[i]; i++) argv[argc++] = extra[i];
  argv[argc] = NULL;
  pid_t parent = getpid();
  s->pid = fork();
  cr_assert_geq(s->pid, 0);
  if (s->pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    int fd = open(s->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    execv(argv[0], (char *const *)argv);
    _exit(127);
  }
  bool ready = TH_WAIT(({
                         char *t = read_text(s->log);
                         const char *p = strstr(t, "listening on http://127.0.0.1:");
                         if (p) s->port = atoi(p + strlen("listening on http://127.0.0.1:"));
                         free(t);
                         s->port > 0;
                       }),
                       DEADLINE_MS);
  cr_assert(ready, "the server did not start; log %s", s->log);
}

static void server_start(server *s, const char *const *extra) { server_start_on(s, 0, extra); }

/* SIGTERM (so that a sanitizer build checks for leaks at exit), SIGKILL
 * if it hangs; then no sanitizer report may be in the log. */
static void server_stop(server *s) {
  if (s->pid > 0) {
    kill(s->pid, SIGTERM);
    if (!TH_WAIT(waitpid(s->pid, NULL, WNOHANG) == s->pid, 60000)) {
      kill(s->pid, SIGKILL);
      waitpid(s->pid, NULL, 0);
    }
  }
  s->pid = 0;
  char *log = read_text(s->log);
  bool clean = !strstr(log, "Sanitizer") && !strstr(log, "runtime error:");
  if (!clean) fprintf(stderr, "%s\n", log);
  free(log);
  tu_rmdir(s->dir);
  s->dir = NULL;
  cr_assert(clean, "a sanitizer report in the server's log (above)");
}

/* ---- HTTP ------------------------------------------------------------------------ */

static int dial(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  cr_assert_geq(fd, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0, "connect: %s", strerror(errno));
  struct timeval tv = {DEADLINE_MS / 1000, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

static void send_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    cr_assert_gt(w, 0, "send: %s", strerror(errno));
    p += w;
    n -= (size_t)w;
  }
}

static void send_request(int fd, int port, const char *method, const char *path,
                         const char *headers, const char *body) {
  char req[4096];
  int n = snprintf(req, sizeof req,
                   "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s%s"
                   "Content-Length: %zu\r\n\r\n%s",
                   method, path, port, headers ? headers : "",
                   body ? "Content-Type: application/json\r\n" : "", body ? strlen(body) : 0,
                   body ? body : "");
  send_all(fd, req, (size_t)n);
}

/* One request on its own connection (Connection: close): the status, and
 * the body into *out (malloc'd) when out is not NULL. */
static int http(int port, const char *method, const char *path, const char *headers,
                const char *body, char **out) {
  int fd = dial(port);
  char h[1024];
  snprintf(h, sizeof h, "Connection: close\r\n%s", headers ? headers : "");
  send_request(fd, port, method, path, h, body);
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap);
  for (;;) {
    if (n + 4096 > cap) buf = realloc(buf, cap *= 2);
    ssize_t r = recv(fd, buf + n, cap - n - 1, 0);
    if (r <= 0) break;
    n += (size_t)r;
  }
  close(fd);
  buf[n] = 0;
  int status = 0;
  sscanf(buf, "HTTP/1.%*d %d", &status);
  if (out) {
    const char *b = strstr(buf, "\r\n\r\n");
    *out = strdup(b ? b + 4 : "");
  }
  free(buf);
  return status;
}

/* ---- a stream: chunked transfer, then SSE ---------------------------------------- */

typedef struct sse {
  int fd;
  int status;
  char head[4096]; /* the response headers */
  char *raw;       /* bytes received, not yet de-chunked */
  size_t n_raw;
  char *text;      /* de-chunked SSE text, not yet parsed */
  size_t n_text;
  bool eof;        /* the last chunk (or the connection's end) came */
} sse;

typedef struct sse_event {
  char name[32];
  char id[32];
  char *data; /* malloc'd */
} sse_event;

static void grow_add(char **p, size_t *n, const char *src, size_t k) {
  *p = realloc(*p, *n + k + 1);
  memcpy(*p + *n, src, k);
  *n += k;
  (*p)[*n] = 0;
}

static void drop_front(char *p, size_t *n, size_t k) {
  memmove(p, p + k, *n - k);
  *n -= k;
  p[*n] = 0;
}

/* Opens `path` as a stream and reads the response headers. */
static void sse_open(sse *s, int port, const char *path, const char *headers) {
  memset(s, 0, sizeof *s);
  s->fd = dial(port);
  send_request(s->fd, port, "GET", path, headers, NULL);
  char *end = NULL;
  while ((end = s->raw ? strstr(s->raw, "\r\n\r\n") : NULL) == NULL) {
    char buf[4096];
    ssize_t r = recv(s->fd, buf, sizeof buf, 0);
    cr_assert_gt(r, 0, "no response headers from %s", path);
    grow_add(&s->raw, &s->n_raw, buf, (size_t)r);
  }
  size_t hl = (size_t)(end - s->raw) + 4;
  snprintf(s->head, sizeof s->head, "%.*s", (int)hl, s->raw);
  sscanf(s->head, "HTTP/1.%*d %d", &s->status);
  drop_front(s->raw, &s->n_raw, hl);
}

static void sse_close(sse *s) {
  if (s->fd >= 0) close(s->fd);
  s->fd = -1;
  free(s->raw);
  free(s->text);
  s->raw = s->text = NULL;
}

/* Moves whole chunks from raw to text. */
static void dechunk(sse *s) {
  for (;;) {
    char *crlf = s->raw ? strstr(s->raw, "\r\n") : NULL;
    if (crlf == NULL) return;
    size_t size = strtoul(s->raw, NULL, 16), hl = (size_t)(crlf - s->raw) + 2;
    if (size == 0) {
      s->eof = true;
      return;
    }
    if (s->n_raw < hl + size + 2) return;
    grow_add(&s->text, &s->n_text, s->raw + hl, size);
    drop_front(s->raw, &s->n_raw, hl + size + 2);
  }
}

/* The next event (comments and `retry:` blocks skipped): true with *ev
 * filled, false at the stream's end or after `ms`. */
static bool sse_next(sse *s, sse_event *ev, unsigned ms) {
  uint64_t deadline = th_ms() + ms;
  memset(ev, 0, sizeof *ev);
  for (;;) {
    dechunk(s); /* the headers' packet may have brought chunks too */
    char *end = s->text ? strstr(s->text, "\n\n") : NULL;
    while (end != NULL) {
      size_t bl = (size_t)(end - s->text) + 2;
      char *block = strndup(s->text, bl - 2);
      drop_front(s->text, &s->n_text, bl);
      bool has_data = false;
      strcpy(ev->name, "message");
      for (char *save = NULL, *line = strtok_r(block, "\n", &save); line;
           line = strtok_r(NULL, "\n", &save)) {
        if (!strncmp(line, "event: ", 7)) snprintf(ev->name, sizeof ev->name, "%s", line + 7);
        else if (!strncmp(line, "id: ", 4)) snprintf(ev->id, sizeof ev->id, "%s", line + 4);
        else if (!strncmp(line, "data: ", 6)) ev->data = strdup(line + 6), has_data = true;
      }
      free(block);
      if (has_data) return true;
      memset(ev, 0, sizeof *ev);
      end = s->text ? strstr(s->text, "\n\n") : NULL;
    }
    if (s->eof) return false;
    uint64_t now = th_ms();
    if (now >= deadline) return false;
    struct pollfd p = {.fd = s->fd, .events = POLLIN};
    if (poll(&p, 1, (int)(deadline - now)) <= 0) continue;
    char buf[8192];
    ssize_t r = recv(s->fd, buf, sizeof buf, 0);
    if (r <= 0) {
      s->eof = true;
      continue;
    }
    grow_add(&s->raw, &s->n_raw, buf, (size_t)r);
  }
}

/* Reads events until one named `name` whose data contains `needle` (NULL:
 * any); false if none came in time. The data of the match in *out. */
static bool sse_wait(sse *s, const char *name, const char *needle, sse_event *out) {
  uint64_t deadline = th_ms() + DEADLINE_MS;
  sse_event ev;
  while (th_ms() < deadline && sse_next(s, &ev, (unsigned)(deadline - th_ms()))) {
    if (!strcmp(ev.name, name) && (needle == NULL || strstr(ev.data, needle))) {
      *out = ev;
      return true;
    }
    free(ev.data);
  }
  return false;
}

/* Reads events until both (name1, needle1) and (name2, needle2) came, in
 * either order; the id of the first match in *id1. */
static bool sse_wait_both(sse *s, const char *name1, const char *needle1, const char *name2,
                          const char *needle2, long long *id1) {
  bool got1 = false, got2 = false;
  uint64_t deadline = th_ms() + DEADLINE_MS;
  sse_event ev;
  while (!(got1 && got2) && th_ms() < deadline &&
         sse_next(s, &ev, (unsigned)(deadline - th_ms()))) {
    if (!got1 && !strcmp(ev.name, name1) && strstr(ev.data, needle1)) {
      got1 = true;
      *id1 = atoll(ev.id);
    } else if (!got2 && !strcmp(ev.name, name2) && strstr(ev.data, needle2)) {
      got2 = true;
    }
    free(ev.data);
  }
  return got1 && got2;
}

static json_t *parse(const char *text) {
  json_error_t e;
  json_t *v = json_loads(text, 0, &e);
  cr_assert_not_null(v, "not JSON (%s): %.200s", e.text, text);
  return v;
}

static void create_collection(server *s, const char *name) {
  char path[128], *body = NULL;
  snprintf(path, sizeof path, "/collections/%s", name);
  int st = http(s->port, "PUT", path, NULL,
                "{\"vectors\": {\"size\": 4, \"distance\": \"Cosine\"}}",
                &body);
  cr_assert_eq(st, 200, "PUT %s: %d %s", path, st, body);
  free(body);
}

/* ---- single node ------------------------------------------------------------------- */

Test(events_stream, first_event_is_the_state_document) {
  server s;
  server_start(&s, NULL);
  sse a;
  sse_open(&a, s.port, "/cluster/events", NULL);
  cr_assert_eq(a.status, 200, "%s", a.head);
  cr_assert(strstr(a.head, "Content-Type: text/event-stream"), "%s", a.head);
  cr_assert(strstr(a.head, "Cache-Control: no-store"), "%s", a.head);
  cr_assert(strstr(a.head, "Transfer-Encoding: chunked"), "%s", a.head);
  sse_event ev;
  cr_assert(sse_next(&a, &ev, DEADLINE_MS), "no first event");
  cr_assert_str_eq(ev.name, "state");
  json_t *st = parse(ev.data);
  cr_assert(json_is_false(json_object_get(st, "enabled")), "%s", ev.data);
  cr_assert(json_is_object(json_object_get(json_object_get(st, "single_node"), "collections")),
            "%s", ev.data);
  cr_assert_null(json_object_get(st, "events"), "events travel as events: %s", ev.data);
  json_decref(st);
  free(ev.data);
  sse_close(&a);
  server_stop(&s);
}

Test(events_stream, a_new_collection_arrives_as_event_and_state) {
  server s;
  server_start(&s, NULL);
  sse a;
  sse_open(&a, s.port, "/cluster/events", NULL);
  sse_event ev;
  cr_assert(sse_wait(&a, "state", NULL, &ev));
  cr_assert_null(strstr(ev.data, "alpha"), "%s", ev.data);
  free(ev.data);
  create_collection(&s, "alpha");
  /* Both must come, in either order. */
  bool got_event = false, got_state = false;
  uint64_t deadline = th_ms() + DEADLINE_MS;
  while (!(got_event && got_state) && th_ms() < deadline &&
         sse_next(&a, &ev, (unsigned)(deadline - th_ms()))) {
    if (!strcmp(ev.name, "event") && strstr(ev.data, "collection alpha created")) {
      cr_assert_neq(ev.id[0], 0, "an event carries an id");
      json_t *e = parse(ev.data);
      cr_assert_eq((long long)json_integer_value(json_object_get(e, "seq")), atoll(ev.id));
      json_decref(e);
      got_event = true;
    } else if (!strcmp(ev.name, "state") && strstr(ev.data, "\"alpha\"")) {
      json_t *st = parse(ev.data);
      json_t *c = json_object_get(
          json_object_get(json_object_get(st, "single_node"), "collections"), "alpha");
      cr_assert_eq(json_integer_value(json_object_get(c, "points_count")), 0, "%s", ev.data);
      json_decref(st);
      got_state = true;
    }
    free(ev.data);
  }
  cr_assert(got_event, "no event for alpha");
  cr_assert(got_state, "no state with alpha");
  sse_close(&a);
  server_stop(&s);
}

/* The ids of the events `a` and `b` created while a stream watched. */
static void two_events(server *s, long long *ida, long long *idb) {
  sse w;
  sse_open(&w, s->port, "/cluster/events", NULL);
  sse_event ev;
  cr_assert(sse_wait(&w, "state", NULL, &ev));
  free(ev.data);
  create_collection(s, "a");
  cr_assert(sse_wait(&w, "event", "collection a created", &ev));
  *ida = atoll(ev.id);
  free(ev.data);
  create_collection(s, "b");
  cr_assert(sse_wait(&w, "event", "collection b created", &ev));
  *idb = atoll(ev.id);
  free(ev.data);
  sse_close(&w);
  cr_assert_gt(*idb, *ida);
}

/* Opens a stream with `headers`/`path` and returns the event texts that
 * follow the first state, up to and including the one holding `until`. */
static char *events_until(server *s, const char *path, const char *headers, const char *until) {
  sse r;
  sse_open(&r, s->port, path, headers);
  cr_assert_eq(r.status, 200);
  sse_event ev;
  cr_assert(sse_next(&r, &ev, DEADLINE_MS));
  cr_assert_str_eq(ev.name, "state", "the state comes first");
  free(ev.data);
  char *seen = strdup("");
  size_t n = 0;
  for (;;) {
    cr_assert(sse_next(&r, &ev, DEADLINE_MS), "stream ended before %s; saw %s", until, seen);
    if (!strcmp(ev.name, "event")) {
      grow_add(&seen, &n, ev.data, strlen(ev.data));
      grow_add(&seen, &n, "\n", 1);
    }
    bool done = !strcmp(ev.name, "event") && strstr(ev.data, until);
    free(ev.data);
    if (done) break;
  }
  sse_close(&r);
  return seen;
}

Test(events_stream, last_event_id_resumes_after_that_event) {
  server s;
  server_start(&s, NULL);
  long long ida, idb;
  two_events(&s, &ida, &idb);
  char h[64], path[96];
  snprintf(h, sizeof h, "Last-Event-ID: %lld\r\n", ida);
  char *seen = events_until(&s, "/cluster/events", h, "collection b created");
  cr_assert_null(strstr(seen, "collection a created"), "resumed after a, got: %s", seen);
  free(seen);
  snprintf(path, sizeof path, "/cluster/events?last_event_id=%lld", ida);
  seen = events_until(&s, path, NULL, "collection b created");
  cr_assert_null(strstr(seen, "collection a created"), "?last_event_id: %s", seen);
  free(seen);
  /* No id: the whole ring. An id beyond the newest (a restarted node):
   * the whole ring again, rather than silence until the ids catch up. */
  seen = events_until(&s, "/cluster/events", NULL, "collection b created");
  cr_assert(strstr(seen, "collection a created"), "%s", seen);
  free(seen);
  snprintf(h, sizeof h, "Last-Event-ID: %lld\r\n", idb + 1000);
  seen = events_until(&s, "/cluster/events", h, "collection b created");
  cr_assert(strstr(seen, "collection a created"), "%s", seen);
  free(seen);
  server_stop(&s);
}

Test(events_stream, the_seventeenth_stream_is_refused_and_a_closed_one_frees_its_place) {
  server s;
  server_start(&s, NULL);
  sse a[STREAMS_MAX];
  sse_event ev;
  for (int i = 0; i < STREAMS_MAX; i++) {
    sse_open(&a[i], s.port, "/cluster/events", NULL);
    cr_assert_eq(a[i].status, 200, "stream %d: %s", i, a[i].head);
    cr_assert(sse_wait(&a[i], "state", NULL, &ev));
    free(ev.data);
  }
  char *body = NULL;
  cr_assert_eq(http(s.port, "GET", "/cluster/events", NULL, NULL, &body), 503);
  cr_assert(strstr(body, "event streams are open"), "%s", body);
  free(body);
  sse_close(&a[0]);
  /* The hang-up is noticed by the server's stream thread. */
  int status = 0;
  bool freed = TH_WAIT(({
                         sse t;
                         sse_open(&t, s.port, "/cluster/events", NULL);
                         status = t.status;
                         sse_close(&t);
                         status == 200;
                       }),
                       DEADLINE_MS);
  cr_assert(freed, "a closed stream kept its place (last status %d)", status);
  for (int i = 1; i < STREAMS_MAX; i++) sse_close(&a[i]);
  server_stop(&s);
}

Test(events_stream, open_streams_do_not_hold_the_worker_threads) {
  server s;
  server_start(&s, NULL); /* --threads 4, fewer than the streams */
  sse a[STREAMS_MAX];
  sse_event ev;
  for (int i = 0; i < STREAMS_MAX; i++) {
    sse_open(&a[i], s.port, "/cluster/events", NULL);
    cr_assert(sse_wait(&a[i], "state", NULL, &ev));
    free(ev.data);
  }
  for (int i = 0; i < 20; i++) {
    char *body = NULL;
    cr_assert_eq(http(s.port, "GET", "/collections", NULL, NULL, &body), 200, "request %d", i);
    free(body);
  }
  create_collection(&s, "busy");
  for (int i = 0; i < STREAMS_MAX; i++) {
    cr_assert(sse_wait(&a[i], "event", "collection busy created", &ev), "stream %d", i);
    free(ev.data);
    sse_close(&a[i]);
  }
  server_stop(&s);
}

Test(events_stream, the_api_key_may_come_in_the_query_on_this_route_only) {
  server s;
  const char *const flags[] = {"--api-key", "sekret", NULL};
  server_start(&s, flags);
  cr_assert_eq(http(s.port, "GET", "/cluster/events", NULL, NULL, NULL), 401);
  cr_assert_eq(http(s.port, "GET", "/cluster/events?api-key=wrong", NULL, NULL, NULL), 401);
  cr_assert_eq(http(s.port, "GET", "/collections?api-key=sekret", NULL, NULL, NULL), 401);
  sse a;
  sse_event ev;
  sse_open(&a, s.port, "/cluster/events?api-key=sekret", NULL);
  cr_assert_eq(a.status, 200, "%s", a.head);
  cr_assert(sse_wait(&a, "state", NULL, &ev));
  free(ev.data);
  sse_close(&a);
  sse_open(&a, s.port, "/cluster/events", "api-key: sekret\r\n");
  cr_assert_eq(a.status, 200, "%s", a.head);
  sse_close(&a);
  server_stop(&s);
}

Test(events_stream, sigterm_with_open_streams_ends_them_and_exits) {
  server s;
  server_start(&s, NULL);
  sse a[3];
  sse_event ev;
  for (int i = 0; i < 3; i++) {
    sse_open(&a[i], s.port, "/cluster/events", NULL);
    cr_assert(sse_wait(&a[i], "state", NULL, &ev));
    free(ev.data);
  }
  cr_assert_eq(kill(s.pid, SIGTERM), 0);
  for (int i = 0; i < 3; i++) {
    while (sse_next(&a[i], &ev, DEADLINE_MS)) free(ev.data);
    cr_assert(a[i].eof, "stream %d was not ended", i);
    sse_close(&a[i]);
  }
  int wst = 0;
  pid_t got = 0;
  bool exited = TH_WAIT((got = waitpid(s.pid, &wst, WNOHANG)) == s.pid, 60000);
  cr_assert(exited, "the server did not exit");
  s.pid = 0;
  cr_assert(WIFEXITED(wst) && WEXITSTATUS(wst) == 0, "exit status %d", wst);
  char *log = read_text(s.log);
  cr_assert_null(strstr(log, "still in flight"), "the drain waited for the streams: %s", log);
  cr_assert(strstr(log, "server: stopped"), "%s", log);
  free(log);
  server_stop(&s);
}

/* ---- cluster mode ------------------------------------------------------------------- */

Test(events_stream, cluster_drain_arrives_and_resumes_by_id, .timeout = 120) {
  if (!th_have_etcd()) cr_skip_test("etcd is not installed");
  th_etcd e;
  cr_assert(th_etcd_start(&e, 1), "cannot start etcd");
  server s;
  const char *const flags[] = {"--cluster", "--etcd", e.endpoints, "--cluster-lease-ttl", "2",
                               NULL};
  server_start_on(&s, free_port(), flags);
  /* Registration may wait for a lease: the state says when it is done. */
  sse a;
  sse_event ev;
  sse_open(&a, s.port, "/cluster/events", NULL);
  cr_assert_eq(a.status, 200, "%s", a.head);
  cr_assert(sse_wait(&a, "state", "\"enabled\":true", &ev), "no cluster state");
  json_t *st = parse(ev.data);
  char node[64];
  snprintf(node, sizeof node, "%s", json_string_value(json_object_get(st, "node_id")));
  cr_assert(json_is_array(json_object_get(st, "members")), "%s", ev.data);
  cr_assert_null(json_object_get(st, "events"));
  json_decref(st);
  free(ev.data);

  char *body = NULL;
  cr_assert_eq(http(s.port, "POST", "/cluster/nodes/self/drain", NULL, "{}", &body), 200, "%s",
               body);
  free(body);
  char needle[96];
  snprintf(needle, sizeof needle, "\"draining\":[\"%s\"]", node);
  long long id_drain = 0;
  cr_assert(sse_wait_both(&a, "event", "marked draining", "state", needle, &id_drain),
            "no drain event, or no state listing the node as draining");
  cr_assert_gt(id_drain, 0);
  cr_assert_eq(http(s.port, "POST", "/cluster/nodes/self/undrain", NULL, "{}", &body), 200);
  free(body);
  cr_assert(sse_wait(&a, "event", "no longer draining", &ev));
  free(ev.data);
  sse_close(&a);

  char h[64];
  snprintf(h, sizeof h, "Last-Event-ID: %lld\r\n", id_drain);
  char *seen = events_until(&s, "/cluster/events", h, "no longer draining");
  cr_assert_null(strstr(seen, "marked draining"), "resumed after the drain, got: %s", seen);
  free(seen);
  snprintf(h, sizeof h, "Last-Event-ID: %lld\r\n", id_drain - 1);
  seen = events_until(&s, "/cluster/events", h, "no longer draining");
  cr_assert(strstr(seen, "marked draining"), "%s", seen);
  free(seen);
  server_stop(&s);
  th_etcd_stop(&e);
}
