#!/usr/bin/env bash
# cluster.sh: a 3-node Quiver cluster with its own etcd on 127.0.0.1, for
# trying cluster mode by hand. Every process started is recorded by pid in
# one directory; `stop` kills exactly those (after checking each pid still
# runs a command line naming that directory) and removes it.
#
#   cluster.sh start [-n NODES] [-p PORT_BASE] [-b QUIVER_BINARY]
#       starts etcd (scripts/etcd.sh) and NODES (default 3) nodes on ports
#       PORT_BASE+1.. (default 7001..), data in the directory, and prints
#         QV_CLUSTER_DIR=<dir>
#         QV_NODES=http://127.0.0.1:7001,...
#   cluster.sh stop DIR            TERM the nodes (KILL after 10 s), stop etcd
#   cluster.sh kill DIR I          SIGKILL node I (1-based)
#   cluster.sh add DIR             start one more node (the controller moves
#                                  copies to it); prints its QV_NODE=URL
#   cluster.sh restart DIR I       start node I again on its data dir (rejoin)
#   cluster.sh drain DIR I         move every copy off node I (POST
#                                  /cluster/nodes/{id}/drain), wait until it
#                                  holds none, then stop it
# Env: QUIVER_CLUSTER_MOVE_DELAY_S (or the serve flag --cluster-move-delay; default 60) is passed to the nodes: how
# long a dead node's copies are waited for before they are re-created.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
die() { echo "cluster.sh: $*" >&2; exit 1; }
ours() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null && tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF -- "$2"; }

# start_node DIR I: node I on port base+I with data dir DIR/nodeI, in the background.
start_node() {
  local dir=$1 i=$2 port
  port=$(( $(cat "$dir/base") + i ))
  "$(cat "$dir/bin")" serve --cluster --etcd "$(cat "$dir/etcd.endpoints")" --port "$port" \
    --data-dir "$dir/node$i" --threads 8 </dev/null >>"$dir/node$i.log" 2>&1 &
  echo $! >"$dir/node$i.pid"
}

wait_up() {
  local port=$1
  for _ in $(seq 1 150); do
    curl -s --noproxy '*' -m 1 "http://127.0.0.1:$port/cluster/state" | grep -q node_id && return 0
    sleep 0.1
  done
  return 1
}

case "${1:-}" in
add)
  dir=${2:?usage: cluster.sh add DIR}
  i=1
  while [ -e "$dir/node$i.pid" ]; do i=$((i + 1)); done
  start_node "$dir" "$i"
  port=$(( $(cat "$dir/base") + i ))
  wait_up "$port" || die "node $i did not come up (see $dir/node$i.log)"
  echo "QV_NODE=http://127.0.0.1:$port"
  ;;
restart)
  dir=${2:?usage: cluster.sh restart DIR I} i=${3:?usage: cluster.sh restart DIR I}
  ours "$(cat "$dir/node$i.pid")" "$dir" && die "node $i is running"
  start_node "$dir" "$i"
  wait_up $(( $(cat "$dir/base") + i )) || die "node $i did not come up"
  ;;
drain)
  dir=${2:?usage: cluster.sh drain DIR I} i=${3:?usage: cluster.sh drain DIR I}
  port=$(( $(cat "$dir/base") + i ))
  id=$(curl -s --noproxy '*' "http://127.0.0.1:$port/cluster/state" | sed -n 's/.*"node_id":"\([0-9]*\)".*/\1/p')
  [ -n "$id" ] || die "node $i does not answer"
  curl -s --noproxy '*' -X POST "http://127.0.0.1:$port/cluster/nodes/$id/drain" >/dev/null
  for _ in $(seq 1 600); do
    held=$(curl -s --noproxy '*' -X POST "http://127.0.0.1:$port/cluster/nodes/$id/drain" |
      sed -n 's/.*"copies_held":\([0-9]*\).*/\1/p')
    [ "$held" = 0 ] && break
    sleep 0.5
  done
  [ "$held" = 0 ] || die "node $i still holds $held copies"
  pid=$(cat "$dir/node$i.pid")
  ours "$pid" "$dir" && kill -TERM "$pid"
  echo "node $i drained and stopped"
  ;;
start)
  shift
  n=3 base=7000 bin="$HERE/../build/quiver"
  while getopts "n:p:b:" o; do
    case $o in n) n=$OPTARG ;; p) base=$OPTARG ;; b) bin=$OPTARG ;; *) die "bad option" ;; esac
  done
  [ -x "$bin" ] || die "no quiver binary at $bin (build first, or pass -b)"
  dir=$(mktemp -d /tmp/qv-cluster.XXXXXX)
  "$HERE/etcd.sh" start >"$dir/etcd.env" || die "etcd did not start"
  etcd_dir=$(sed -n 's/^QV_ETCD_DIR=//p' "$dir/etcd.env")
  endpoints=$(sed -n 's/^QV_ETCD_ENDPOINTS=//p' "$dir/etcd.env")
  nodes=""
  echo "$bin" >"$dir/bin"
  echo "$base" >"$dir/base"
  echo "$endpoints" >"$dir/etcd.endpoints"
  for i in $(seq 1 "$n"); do
    port=$((base + i))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && die "port $port is busy (use -p)"
    start_node "$dir" "$i"
    nodes="$nodes${nodes:+,}http://127.0.0.1:$port"
  done
  for i in $(seq 1 "$n"); do
    port=$((base + i))
    for _ in $(seq 1 100); do
      curl -s --noproxy '*' -m 1 "http://127.0.0.1:$port/cluster" | grep -q enabled && break
      sleep 0.1
    done
  done
  echo "$etcd_dir" >"$dir/etcd.dir"
  echo "QV_CLUSTER_DIR=$dir"
  echo "QV_NODES=$nodes"
  ;;
stop)
  dir=${2:?usage: cluster.sh stop DIR}
  [ -d "$dir" ] || die "no such directory $dir"
  for f in "$dir"/node*.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    if ours "$pid" "$dir"; then kill -TERM "$pid"; fi
  done
  for _ in $(seq 1 100); do
    alive=0
    for f in "$dir"/node*.pid; do [ -e "$f" ] && ours "$(cat "$f")" "$dir" && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for f in "$dir"/node*.pid; do
    [ -e "$f" ] && ours "$(cat "$f")" "$dir" && kill -KILL "$(cat "$f")"
  done
  [ -f "$dir/etcd.dir" ] && "$HERE/etcd.sh" stop "$(cat "$dir/etcd.dir")" 5
  rm -rf "$dir"
  ;;
kill)
  dir=${2:?usage: cluster.sh kill DIR I} i=${3:?usage: cluster.sh kill DIR I}
  pid=$(cat "$dir/node$i.pid")
  ours "$pid" "$dir" && kill -KILL "$pid"
  ;;
*) die "usage: cluster.sh start|stop|kill (see the top of this file)" ;;
esac
