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
bool clr_shard_read(srv *s, const char *name, uint32_t k, const char *op, const char *body,
                    size_t len, clr_reply *out);

/* cluster_coll.c: collection-level requests. clc_route_global takes those
 * not about one existing distributed collection (create); clc_route those
 * on distributed collection c. False: not one it knows. */
bool clc_route_global(srv_req *r);
bool clc_route(srv_req *r, const cl_coll *c);

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
/* Starts and stops the transfer source thread and janitor. */
bool clx_start(srv *s);
void clx_stop(void);
/* Transfers this node runs as source, and this node's shard sequence
 * numbers, for /cluster/state. */
json_t *clx_state_json(void);

#endif
