/* cluster_int.h: what the two halves of cluster mode's server side share —
 * routes_cluster.c (routing, the write path), cluster_read.c (reads),
 * cluster_coll.c (collection requests), cluster_xfer.c (shard locks,
 * per-shard sequence numbers, the transfer source thread, the janitor) and
 * cluster_state.c (state documents, drain).
 *
 * Invariant both keep: every write that changes a shard copy on its
 * primary — a client write, or a page of a transfer — runs under that
 * shard's lock (clx_lock), from the moment the primary reads its map to the
 * moment every copy answered. So copies see the shard's writes in one order
 * and a transfer page never overtakes a later write. */
#ifndef QV_SERVER_CLUSTER_INT_H
#define QV_SERVER_CLUSTER_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "cluster/node.h"
#include "server/server_int.h"

/* A response of a shard operation, local or remote. */
typedef struct clr_reply {
  unsigned status;
  char *body; /* qv_malloc'd, NUL-terminated */
  size_t len;
} clr_reply;

/* routes_cluster.c */
cl_node *clr_node(void);
const char *clr_api_key(void);
void clr_reply_clear(clr_reply *p);
void clr_reply_err(clr_reply *p, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The map of `name` at `epoch` or later (waiting briefly when this node is
 * behind); false with 404/503 in *out. */
bool clr_map_at(const char *name, uint32_t k, int64_t epoch, cl_coll *c, clr_reply *out);
/* Runs a single-node handler on local collection `coll`. */
void clr_sub_run(srv *s, srv_handler fn, const char *coll, const char *body, size_t len,
                 clr_reply *out);
/* Creates the local collection of shard k unless it exists. */
bool clr_ensure_shard(srv *s, const cl_coll *c, uint32_t k, clr_reply *out);
void clr_shard_name(const char *coll, uint32_t k, char *buf, size_t cap);
/* The copy of shard `sh` on this node, or NULL. */
const cl_replica *clr_my_copy(const cl_shard *sh);

/* cluster_read.c: reads through any node. clr_read_route answers a read
 * request on distributed collection c (false: not a read it knows);
 * clr_shard_read runs shard operation `op` on this node's copy (false: not
 * a read operation). */
bool clr_read_route(srv_req *r, const cl_coll *c);
/* The copies of shard `sh` a read asks, in order: this node's (me), the
 * primary, the other insync ones; returns how many (<= CL_RF_MAX + 1). */
uint32_t clr_candidates(const cl_shard *sh, const char *me, const char **cand);
bool clr_shard_read(srv *s, const char *name, uint32_t k, const char *op, const char *body,
                    size_t len, clr_reply *out);

/* cluster_coll.c: collection-level requests. clc_route_global takes those
 * not about one existing distributed collection (create, list, and the
 * node-to-node POST /internal/collections/{c}/{op}); clc_route those on
 * distributed collection c (info, exists, delete, patch). False: not one
 * it knows. */
bool clc_route_global(srv_req *r);
bool clc_route(srv_req *r, const cl_coll *c);
/* Drops the local shard copies `x.s<k>` whose collection `x` is gone from a
 * complete view, whose k is out of range, or whose incarnation mark names
 * another incarnation of `x`; does nothing while the view may be
 * incomplete (not loaded yet, fenced). For the janitor's tick. */
void clc_sweep(srv *s);
/* Incarnation marks of local copies: whether the existing local copy of
 * shard k of c was made for c's incarnation (c->uid; an unmarked copy
 * counts as incarnation 0, i.e. a collection created before uids), and
 * marking a copy just created for c. For ensure_shard: an existing copy
 * that is not current is dropped and created again, then marked. */
bool clc_copy_current(srv *s, const cl_coll *c, uint32_t k);
void clc_copy_mark(srv *s, const cl_coll *c, uint32_t k);

/* cluster_split.c: the write operations and how a request is cut into
 * per-shard parts. */
enum {
  CLW_UPSERT,
  CLW_DELETE,
  CLW_PAYLOAD_SET,
  CLW_PAYLOAD_OVERWRITE,
  CLW_PAYLOAD_DELETE,
  CLW_PAYLOAD_CLEAR,
  CLW_VECTORS_UPDATE,
  CLW_VECTORS_DELETE,
  CLW_INDEX_CREATE,
  CLW_INDEX_DELETE, /* body {"field_name": F} */
  CLW_N
};
const char *clw_name(int op);
srv_handler clw_handler(int op);
int clw_parse(const char *name);         /* -1: not a write */
int clw_of_handler(srv_handler fn);      /* -1: not a write */
int clw_of_batch_name(const char *name); /* "set_payload" -> CLW_PAYLOAD_SET, or -1 */
/* parts[0..ns) (NULL-initialised) get each shard's part of `body`, NULL
 * where a shard has nothing to do. False: the request is wrong (answered). */
bool clw_split(srv_req *r, int op, const json_t *body, uint32_t ns, json_t **parts);

/* cluster_chain.c: a shard's write chain (see the file's comment). A link
 * names one write of the chain; every replicated write carries its own link
 * and its predecessor's. */
typedef struct cl_link {
  uint64_t term, seq;
} cl_link;
typedef struct clg_entry {
  cl_link at, prev;
  int op; /* routes_cluster.c's write operation */
  char *body;
  size_t len;
} clg_entry;
typedef enum { CLG_FOLLOWS, CLG_ADOPTS, CLG_UNKNOWN, CLG_BROKEN } clg_verdict;
/* Primary, shard lock held, before a write of `term` whose message number
 * is first_seq: starts the term's chain on this node when it is new. */
void clg_lead(srv *s, const char *coll, uint32_t k, uint64_t term, uint64_t first_seq);
/* Primary, shard lock held, after write `at` applied locally: logs it; the
 * copies get *prev and *root_empty with it. */
void clg_append(srv *s, const char *coll, uint32_t k, cl_link at, int op, const char *body,
                size_t len, cl_link *prev, bool *root_empty);
/* Copy, before applying a write that follows `prev`: CLG_BROKEN refuses. */
clg_verdict clg_check(srv *s, const char *coll, uint32_t k, cl_link prev, bool root_empty);
/* Copy, after the write `at` applied with verdict v. */
void clg_applied(srv *s, const char *coll, uint32_t k, cl_link at, clg_verdict v);
void clg_describe(srv *s, const char *coll, uint32_t k, char *buf, size_t cap);
/* Marker transitions: being refilled; just created (or dropped: removed);
 * a full transfer ended at `at`. */
void clg_break(srv *s, const char *coll, uint32_t k);
void clg_forget(srv *s, const char *coll, uint32_t k);
void clg_remove(srv *s, const char *coll, uint32_t k);
void clg_set(srv *s, const char *coll, uint32_t k, cl_link at);
/* This node's marker when VALID. */
bool clg_marker(srv *s, const char *coll, uint32_t k, cl_link *at);
/* Primary: the last link of its chain. */
bool clg_head(srv *s, const char *coll, uint32_t k, cl_link *at);
/* Primary: copies of up to `max` entries after `after` (*left: how many
 * there are in all); false when `after` is not in the backlog. */
bool clg_after(srv *s, const char *coll, uint32_t k, cl_link after, size_t max, clg_entry **out,
               size_t *n_out, size_t *left);
void clg_entries_free(clg_entry *e, size_t n);
json_t *clg_state_json(void);
void clg_reset(void);

/* cluster_net.c: the node-to-node listener (a thread per connection).
 * Binds the public host on an ephemeral port; *iaddr = advertise_host:port.
 * False (peers then use the public port) when it cannot start. */
bool cln_start(srv *s, const char *advertise_host, char *iaddr, size_t cap);
void cln_stop(void);

/* cluster_state.c: GET /cluster in Qdrant's shape (cluster mode only). */
void clr_cluster_info(srv_req *r);

/* cluster_xfer.c */
void clx_lock(const char *coll, uint32_t k);
void clx_unlock(const char *coll, uint32_t k);
/* The next sequence number of shard k as its primary (lock held). */
uint64_t clx_next_seq(const char *coll, uint32_t k, uint64_t term);
/* On a copy: whether (term, seq) is newer than the last applied write of
 * shard k (a reordered or replayed message is refused); clx_seq_applied
 * records it. Unknown shards (after a restart) accept anything. */
bool clx_seq_fresh(const char *coll, uint32_t k, uint64_t term, uint64_t seq);
void clx_seq_applied(const char *coll, uint32_t k, uint64_t term, uint64_t seq);
/* A live write could not be forwarded to partial copy `to` (transfer id
 * `xfer`). Returns true when the write must fail: the transfer already
 * reported it caught up, so the controller may be turning the copy insync.
 * Otherwise the transfer is marked dirty and starts over. */
bool clx_partial_failed(const char *coll, uint32_t k, const char *to, int64_t xfer);
/* Whether a live write must not be forwarded to partial copy `to` of
 * transfer `xfer`: it is being caught up from the backlog, which has it. */
bool clx_forward_skip(const char *coll, uint32_t k, const char *to, int64_t xfer);
/* Starts and stops the transfer source thread and janitor. */
bool clx_start(srv *s);
void clx_stop(void);
/* Transfers this node runs as source, and this node's shard sequence
 * numbers, for /cluster/state. */
json_t *clx_state_json(void);

#endif
