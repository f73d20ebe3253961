#!/usr/bin/env bash
# run_rejoin.sh: how long a node that was down takes to be back in sync,
# caught up from its primaries' write backlogs versus copied in full
# (docs/cluster.md, section 9 "Rejoin").
#
#   bench/run_rejoin.sh            BUILD_DIR defaults to build-cl (Release)
#   MISSED=200 REPEAT=3 bench/run_rejoin.sh
#
# Data: the SIFT-small base set (10,000 x 128, ../shared/data/siftsmall),
# real vectors. For each mode — backlog (default --cluster-backlog-bytes)
# and full (--cluster-backlog-bytes 0, every returning copy copied again) —
# a throwaway etcd and 3 `quiver serve --cluster` nodes (clusterlib.py
# starts and stops exactly those; lease TTL 2 s, move delay 60 s so the dead
# copies wait), a collection of 6 shards x 2 copies loaded with the base
# set; then REPEAT times: kill -9 of node 3, MISSED acknowledged writes of
# 8 points (overwrites) while it is down, restart, and the time from the
# restart to every copy insync. Medians are printed; the two modes run in
# the same invocation. Results: bench/out/rejoin.txt.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build-cl}
export QV_CLI=${QV_CLI:-$BUILD/quiver}
[ -x "$QV_CLI" ] || { echo "run_rejoin.sh: no quiver at $QV_CLI (build Release first)" >&2; exit 1; }
. "$ROOT/scripts/deps.sh"
ensure_packages python3 etcd-server etcd-client curl   # the throwaway etcd of clusterlib.py
DATA=${QV_SHARED_DATA:-$ROOT/../shared/data}/siftsmall/siftsmall_base.fvecs
[ -f "$DATA" ] || { echo "run_rejoin.sh: $DATA is missing" >&2; exit 1; }
mkdir -p "$ROOT/bench/out"
export MISSED=${MISSED:-100} REPEAT=${REPEAT:-3} DATA
python3 - "$ROOT" <<'PY' | tee "$ROOT/bench/out/rejoin.txt"
import os, random, re, statistics, struct, sys, time
sys.path.insert(0, os.path.join(sys.argv[1], "tests", "cluster"))
import clusterlib as L

MISSED, REPEAT = int(os.environ["MISSED"]), int(os.environ["REPEAT"])


def fvecs(path):
    out = []
    with open(path, "rb") as f:
        while True:
            h = f.read(4)
            if not h:
                return out
            d = struct.unpack("<i", h)[0]
            out.append(list(struct.unpack(f"<{d}f", f.read(4 * d))))


base = fvecs(os.environ["DATA"])
dim = len(base[0])
print(f"SIFT-small: {len(base)} x {dim}; 3 nodes, 6 shards x 2 copies; "
      f"{MISSED} writes of 8 points missed per outage; {REPEAT} outages per mode")


def transfer_ms(c, after, victim_id):
    """The transfers to victim_id logged since `after` (per node, updated):
    (count, sum of their ms, points copied in full)."""
    n = ms = pts = 0
    for node in c.live():
        key = (node.idx, node.proc.pid)  # a restarted node numbers its events from 1
        st, body = L.call(node.port, "GET", f"/cluster/state?events_after={after.get(key, 0)}")
        for e in body["result"]["events"] if st == 200 else []:
            after[key] = max(after.get(key, 0), e["seq"])
            t = e["text"]
            m = re.search(r"copied (\d+) points to (\S+) in (\d+) ms", t)
            if m and m.group(2) == victim_id:
                n, ms, pts = n + 1, ms + int(m.group(3)), pts + int(m.group(1))
            m = re.search(r"(\S+) caught up from the write backlog .* in (\d+) ms", t)
            if m and m.group(1) == victim_id:
                n, ms = n + 1, ms + int(m.group(2))
    return n, ms, pts


def run(mode, args):
    c = L.Cluster(move_delay_s=60, node_args=args)
    try:
        for _ in range(3):
            c.start_node()
        c.wait_members(3)
        st, body = L.call(c.nodes[0].port, "PUT", "/collections/sift",
                          {"vectors": {"size": dim, "distance": "Euclid"},
                           "shard_number": 6, "replication_factor": 2})
        assert st == 200, body
        for b in range(0, len(base), 500):
            pts = [{"id": i, "vector": base[i]} for i in range(b, min(b + 500, len(base)))]
            st, body = L.call(c.nodes[b // 500 % 3].port, "PUT",
                              "/collections/sift/points?wait=true", {"points": pts})
            assert st == 200, body
        c.wait_stable("sift", timeout=120)
        rng = random.Random(5)
        victim = c.nodes[2]
        times, xfer = [], []
        after = {}
        transfer_ms(c, after, "")
        for rep in range(REPEAT):
            held = sum(1 for sh in c.state()["collections"]["sift"]["shards"]
                       for r in sh["replicas"] if r["node"] == victim.node_id)
            c.kill(victim)
            L.wait_for("dead copies", lambda: any(
                r["node"] == victim.node_id and r["state"] == "dead"
                for sh in c.state()["collections"]["sift"]["shards"] for r in sh["replicas"]), 30)
            for _ in range(MISSED):
                ids = rng.sample(range(len(base)), 8)
                st, body = L.call(c.nodes[0].port, "PUT", "/collections/sift/points?wait=true",
                                  {"points": [{"id": i, "vector": base[rng.randrange(len(base))]}
                                              for i in ids]})
                assert st == 200, body
            t0 = time.monotonic()
            c.start_node(victim.idx)
            c.wait_stable("sift", timeout=300)
            times.append(time.monotonic() - t0)
            n, ms, pts = transfer_ms(c, after, victim.node_id)
            xfer.append(ms)
            print(f"  {mode}: outage {rep + 1}: {held} copies back in sync {times[-1]:.2f} s "
                  f"after the restart; {n} transfers took {ms} ms in all, {pts} points "
                  f"copied in full")
        return statistics.median(times), statistics.median(xfer)
    finally:
        c.stop()


tb, xb = run("backlog", ())
tf, xf = run("full", ("--cluster-backlog-bytes", "0"))
print(f"median time to in sync after a restart (includes the node's start and registration): "
      f"backlog {tb:.2f} s, full copy {tf:.2f} s ({tf / tb:.1f}x)")
print(f"median time in transfers to the returning node: backlog {xb} ms, full copy {xf} ms "
      f"({xf / max(xb, 1):.0f}x)")
PY
