/* node_int.h: what the three files of a cluster node share — node.c
 * (lifecycle, membership, addresses, etcd writes), node_view.c (the watched
 * view of every collection: decoding etcd's keys, queries, waits) and
 * node_ctl.c (the controller, operators' requests). Nothing outside
 * src/cluster/node*.c includes it; node.h is the interface.
 *
 * Locking: `mu` guards the table of collections, the member view and the
 * drain marks, and every change to them is broadcast on `cv`; `ev_mu`
 * guards the event ring. Nothing here calls etcd with `mu` held. */
#ifndef QV_CLUSTER_NODE_INT_H
#define QV_CLUSTER_NODE_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "cluster/etcd.h"
#include "cluster/membership.h"
#include "cluster/node.h"

#define EVENTS_MAX 256u

/* One collection as the watch last delivered it. */
typedef struct node_entry {
  cl_coll c;
  bool has_config;
} node_entry;

struct cl_node {
  etcd_client *etcd;
  mship *m;
  etcd_watch *w;
  char prefix[MSHIP_PREFIX_MAX + 1];
  char id[CL_ID_MAX + 1];
  uint32_t ttl_s;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  node_entry *colls;
  size_t n_colls, cap_colls;
  mship_view view; /* live members, under mu */
  pthread_t ctl;
  bool ctl_started, stop;
  uint32_t move_delay_s;
  bool synced; /* the collections watch delivered its first snapshot */
  etcd_watch *dw;  /* <prefix>/drain/ */
  char **draining; /* ids, under mu */
  size_t n_draining;
  /* Event ring (under ev_mu): the last EVENTS_MAX lines, seq-numbered. */
  pthread_mutex_t ev_mu;
  struct {
    uint64_t seq;
    int64_t ms;
    char text[240];
  } ev[EVENTS_MAX];
  uint64_t ev_seq;
};

/* node.c */
int64_t node_wall_ms(void); /* unix ms */
/* A random odd u63 (fits int64, never 0); false when /dev/urandom fails. */
bool node_random_u63(uint64_t *out);

/* node_view.c */
/* The collections watch's callback (ctx is the node). */
void node_on_watch(void *ctx, const etcd_watch_msg *m);
void node_drop_entry(cl_node *n, node_entry *e); /* mu held */
/* Waits until done(entry of `name` with a config, or NULL, arg) holds
 * (true) or timeout_ms passed (false); done runs under mu. */
bool node_wait_view(cl_node *n, const char *name, uint32_t timeout_ms,
                    bool (*done)(const node_entry *e, void *arg), void *arg);
/* The names of cl_op_kind in op.<k> keys, indexed by kind. */
extern const char *const node_op_kinds[];
extern const size_t node_n_op_kinds;

/* node_ctl.c: the controller thread's body (arg is the node). */
void *node_controller_main(void *arg);

#endif
