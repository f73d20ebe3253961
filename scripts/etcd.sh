#!/usr/bin/env bash
# etcd.sh: a throwaway etcd (1 or 3 members) on 127.0.0.1, for tests and for
# trying the cluster by hand. Everything lives in one temp directory; every
# process started is recorded there by pid, and `stop` kills exactly those
# (after checking each pid still runs our command line, so a recycled pid is
# never hit). Needs Debian's etcd-server (and curl).
#
#   etcd.sh start [-n 1|3] [-p PORT_BASE] [-o OWNER_PID]
#       Starts the members, waits until they are healthy, prints
#         QV_ETCD_DIR=<dir>
#         QV_ETCD_ENDPOINTS=http://127.0.0.1:<port>[,...]
#       Member i (m1, m2, ...) listens for clients on PORT_BASE + 2(i-1) and
#       for peers on the port after; PORT_BASE defaults to $QV_ETCD_PORT_BASE
#       or 23790, and moves up by 10 until every port is free. With -o, a
#       watchdog stops everything once process OWNER_PID is gone (a test
#       that crashes still cleans up).
#   etcd.sh stop DIR [GRACE_S]    TERM every recorded process, KILL after
#                                 GRACE_S seconds (default 5), remove DIR
#   etcd.sh kill DIR NAME         SIGKILL member NAME (m1, m2, ...)
#   etcd.sh restart DIR NAME      start NAME again on its data and ports
#   etcd.sh pid DIR NAME          print NAME's pid
#   etcd.sh endpoints DIR         print the endpoint list
#
# etcd runs with auto-compaction on (revision, keep 1000) and a watch
# progress notification every second (what the client's idle detection
# expects), data on /dev/shm when available: speed matters more than
# durability here.
set -euo pipefail

die() { echo "etcd.sh: $*" >&2; exit 1; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Is pid $1 alive and running an etcd (or our watchdog) that belongs to DIR $2?
ours() {
  local pid=$1 dir=$2
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir"
}

start_member() { # dir name
  local dir=$1 name=$2
  # fd 9 is the start lock: the member must not inherit (and hold) it.
  # shellcheck disable=SC2046
  etcd $(cat "$dir/$name.args") </dev/null >>"$dir/$name.log" 2>&1 9>&- &
  echo $! >"$dir/$name.pid"
}

# Is the etcd answering on port $1 healthy and one of ours? Member names
# carry the directory's suffix, so an etcd that another start (in a race for
# the same port) left there is not mistaken for ours.
healthy() { # port dir
  local tag; tag=$(basename "$2")
  curl -s --noproxy '*' -m 1 "http://127.0.0.1:$1/health" 2>/dev/null |
    grep -q '"health":"true"' &&
    curl -s --noproxy '*' -m 1 -X POST -d '{}' \
      "http://127.0.0.1:$1/v3/cluster/member/list" 2>/dev/null | grep -qF "\"m1-${tag#qv-etcd.}\""
}

do_stop() { # dir [grace_s]
  local dir=$1 grace=${2:-5} pids=() f pid
  [ -d "$dir" ] || return 0
  for f in "$dir"/*.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    [ "$pid" = "$$" ] && continue # the watchdog (exec'd into us) stopping all
    if ours "$pid" "$dir"; then kill -TERM "$pid" 2>/dev/null || true; pids+=("$pid"); fi
  done
  # etcd may take ~5 s to leave when it was the last member (leadership
  # transfer attempts): give it that, then KILL.
  local i
  for i in $(seq $((grace * 10))); do
    local alive=0
    for pid in "${pids[@]}"; do ours "$pid" "$dir" && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do ours "$pid" "$dir" && kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$dir"
}

cmd_start() {
  local n=1 base=${QV_ETCD_PORT_BASE:-23790} owner=""
  while getopts "n:p:o:" opt; do
    case $opt in
      n) n=$OPTARG ;;
      p) base=$OPTARG ;;
      o) owner=$OPTARG ;;
      *) die "usage: etcd.sh start [-n 1|3] [-p PORT_BASE] [-o OWNER_PID]" ;;
    esac
  done
  command -v etcd >/dev/null || die "no etcd binary (apt-get install etcd-server)"
  [ "$n" -ge 1 ] && [ "$n" -le 9 ] || die "-n $n: expected 1..9 members"
  # One start at a time on this machine: probing ports and binding them is
  # not atomic, and two test programs starting etcd at once would race.
  if command -v flock >/dev/null; then
    exec 9>"${TMPDIR:-/tmp}/qv-etcd.start.lock"
    flock 9
  fi
  local root=/dev/shm
  [ -d "$root" ] && [ -w "$root" ] || root=${TMPDIR:-/tmp}
  local tries dir ok
  for tries in $(seq 20); do
    local i busy=0
    for i in $(seq 0 $((2 * n - 1))); do port_busy $((base + i)) && busy=1; done
    if [ $busy = 1 ]; then base=$((base + 10)); continue; fi
    dir=$(mktemp -d "$root/qv-etcd.XXXXXX")
    local cluster="" eps="" tag=${dir##*/qv-etcd.}
    for i in $(seq 1 "$n"); do
      local peer=$((base + 2 * (i - 1) + 1))
      cluster+="${cluster:+,}m$i-$tag=http://127.0.0.1:$peer"
    done
    for i in $(seq 1 "$n"); do
      local cport=$((base + 2 * (i - 1))) pport=$((base + 2 * (i - 1) + 1))
      eps+="${eps:+,}http://127.0.0.1:$cport"
      cat >"$dir/m$i.args" <<EOF
--name m$i-$tag --data-dir $dir/m$i
--listen-client-urls http://127.0.0.1:$cport --advertise-client-urls http://127.0.0.1:$cport
--listen-peer-urls http://127.0.0.1:$pport --initial-advertise-peer-urls http://127.0.0.1:$pport
--initial-cluster $cluster --initial-cluster-state new
--initial-cluster-token qv-$(basename "$dir")
--auto-compaction-mode=revision --auto-compaction-retention=1000
--experimental-watch-progress-notify-interval=1s
EOF
      echo "$cport" >"$dir/m$i.port"
      start_member "$dir" "m$i"
    done
    echo "$eps" >"$dir/endpoints"
    ok=0
    for _ in $(seq 200); do # up to 20 s
      local all=1
      for i in $(seq 1 "$n"); do
        ours "$(cat "$dir/m$i.pid")" "$dir" || { all=2; break; }
        healthy "$(cat "$dir/m$i.port")" "$dir" || all=0
      done
      [ $all = 1 ] && { ok=1; break; }
      [ $all = 2 ] && break # a member died: most likely a port race
      sleep 0.1
    done
    if [ $ok = 1 ]; then
      if [ -n "$owner" ]; then
        # The watchdog names $dir on its command line so that `ours` knows it.
        nohup bash -c 'while kill -0 "$1" 2>/dev/null && [ -d "$2" ]; do sleep 1; done
                       [ -d "$2" ] && exec "$3" stop "$2"' qv-etcd-watchdog "$owner" "$dir" \
          "$(cd "$(dirname "$0")" && pwd)/$(basename "$0")" </dev/null >/dev/null 2>&1 9>&- &
        echo $! >"$dir/watchdog.pid"
      fi
      echo "QV_ETCD_DIR=$dir"
      echo "QV_ETCD_ENDPOINTS=$eps"
      return 0
    fi
    echo "etcd.sh: members on ports $base.. did not come up; see below, retrying higher" >&2
    tail -n 3 "$dir"/m*.log >&2 || true
    do_stop "$dir"
    base=$((base + 10))
  done
  die "could not start etcd (20 attempts)"
}

member_dir_check() { # dir name
  [ -d "$1" ] && [ -f "$1/$2.args" ] || die "no member $2 in $1"
}

case "${1:-}" in
  start) shift; cmd_start "$@" ;;
  stop)
    [ $# -ge 2 ] && [ $# -le 3 ] || die "usage: etcd.sh stop DIR [GRACE_S]"
    [[ "${3:-5}" =~ ^[0-9]+$ ]] || die "stop: GRACE_S must be a whole number of seconds"
    do_stop "$2" "${3:-5}" ;;
  kill)
    [ $# -eq 3 ] || die "usage: etcd.sh kill DIR NAME"
    member_dir_check "$2" "$3"
    pid=$(cat "$2/$3.pid")
    # `ours` is false for a zombie too (its command line is empty), so this
    # does not wait for a parent that never reaps.
    if ours "$pid" "$2"; then kill -KILL "$pid"; while ours "$pid" "$2"; do sleep 0.05; done; fi ;;
  restart)
    [ $# -eq 3 ] || die "usage: etcd.sh restart DIR NAME"
    member_dir_check "$2" "$3"
    ours "$(cat "$2/$3.pid")" "$2" && die "$3 is still running"
    start_member "$2" "$3"
    port=$(cat "$2/$3.port")
    for _ in $(seq 200); do
      curl -s --noproxy '*' -m 1 "http://127.0.0.1:$port/version" >/dev/null 2>&1 && exit 0
      sleep 0.1
    done
    die "$3 did not answer after restart" ;;
  pid) [ $# -eq 3 ] || die "usage: etcd.sh pid DIR NAME"; member_dir_check "$2" "$3"; cat "$2/$3.pid" ;;
  endpoints) [ $# -eq 2 ] || die "usage: etcd.sh endpoints DIR"; cat "$2/endpoints" ;;
  *) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
