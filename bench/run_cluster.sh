#!/usr/bin/env bash
# run_cluster.sh: write throughput and search QPS of a Quiver cluster with 1,
# 2 and 3 nodes on this machine (etcd + nodes on loopback, one process each).
#
#   bench/run_cluster.sh                 BUILD_DIR defaults to build-cl (Release)
#   NODES="1 3" POINTS=10000 bench/run_cluster.sh
#
# For each node count N and replication factor R (1, and 2 when N >= 2): a
# throwaway etcd and N `quiver serve --cluster` nodes (tests/cluster/
# clusterlib.py starts and stops exactly those), a collection of 12 shards,
# POINTS random vectors of DIM dimensions (Euclid, fixed seed) upserted in
# batches of 100 through the nodes in turn by CLIENTS client threads
# (points/s), then SEARCHES searches (limit 10, default HNSW) by CLIENTS
# threads, round robin over the nodes (QPS, p50/p99 latency).
#
# On 2 cores every node, etcd and the client share the same two CPUs, so
# more nodes show the cost of fan-out and replication, not scaling; the
# per-request work split over nodes is what would scale on separate
# machines (docs/cluster.md, "Benchmark"). Results: bench/out/cluster.txt.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build-cl}
export QV_CLI=${QV_CLI:-$BUILD/quiver}
[ -x "$QV_CLI" ] || { echo "run_cluster.sh: no quiver at $QV_CLI (build Release first)" >&2; exit 1; }
. "$ROOT/scripts/deps.sh"
ensure_packages python3 etcd-server etcd-client curl   # the throwaway etcd of clusterlib.py
mkdir -p "$ROOT/bench/out"
export NODES=${NODES:-1 2 3} POINTS=${POINTS:-20000} DIM=${DIM:-64} CLIENTS=${CLIENTS:-4}
export SEARCHES=${SEARCHES:-4000}
python3 - "$ROOT" <<'EOF' | tee "$ROOT/bench/out/cluster.txt"
import json, os, random, sys, threading, time, http.client
sys.path.insert(0, os.path.join(sys.argv[1], "tests", "cluster"))
import clusterlib as L

POINTS, DIM = int(os.environ["POINTS"]), int(os.environ["DIM"])
CLIENTS, SEARCHES = int(os.environ["CLIENTS"]), int(os.environ["SEARCHES"])
rng = random.Random(1)
vecs = [[rng.uniform(-1, 1) for _ in range(DIM)] for _ in range(POINTS)]
queries = [[rng.uniform(-1, 1) for _ in range(DIM)] for _ in range(200)]


def run_threads(n, fn):
    out = [None] * n
    ts = [threading.Thread(target=lambda i=i: out.__setitem__(i, fn(i))) for i in range(n)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return time.monotonic() - t0, out


def bench(n_nodes, rf):
    c = L.Cluster(move_delay_s=60)
    try:
        for _ in range(n_nodes):
            c.start_node()
        c.wait_members(n_nodes)
        ports = [x.port for x in c.nodes]
        st, body = L.call(ports[0], "PUT", "/collections/b",
                          {"vectors": {"size": DIM, "distance": "Euclid"}, "shard_number": 12,
                           "replication_factor": rf})
        assert st == 200, body
        batches = [list(range(b, min(b + 100, POINTS))) for b in range(0, POINTS, 100)]

        def writer(i):
            conn = http.client.HTTPConnection("127.0.0.1", ports[i % len(ports)], timeout=120)
            for j in range(i, len(batches), CLIENTS):
                body = json.dumps({"points": [{"id": k, "vector": vecs[k]} for k in batches[j]]})
                conn.request("PUT", "/collections/b/points?wait=true", body,
                             {"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                assert r.status == 200, r.status
            return 0
        wt, _ = run_threads(CLIENTS, writer)

        def searcher(i):
            conns = [http.client.HTTPConnection("127.0.0.1", p, timeout=60) for p in ports]
            lat = []
            for j in range(i, SEARCHES, CLIENTS):
                conn = conns[j % len(conns)]
                body = json.dumps({"vector": queries[j % len(queries)], "limit": 10})
                t = time.monotonic()
                conn.request("POST", "/collections/b/points/search", body,
                             {"Content-Type": "application/json"})
                r = conn.getresponse()
                data = json.loads(r.read())
                assert r.status == 200 and "partial" not in data, data
                lat.append(time.monotonic() - t)
            return lat
        st_, lats = run_threads(CLIENTS, searcher)
        lat = sorted(x for l in lats for x in l)
        return {"nodes": n_nodes, "rf": rf, "write_points_per_s": round(POINTS / wt),
                "search_qps": round(len(lat) / st_), "search_p50_ms": round(lat[len(lat) // 2] * 1e3, 2),
                "search_p99_ms": round(lat[int(len(lat) * 0.99)] * 1e3, 2)}
    finally:
        c.stop()


print(f"# {POINTS} points x {DIM} dims, 12 shards, {CLIENTS} client threads, "
      f"{SEARCHES} searches; {os.cpu_count()} CPUs shared by etcd, nodes and client; "
      f"{os.environ['QV_CLI']}")
print(f"{'nodes':>5} {'rf':>3} {'write pts/s':>12} {'search QPS':>11} {'p50 ms':>8} {'p99 ms':>8}")
for n in [int(x) for x in os.environ["NODES"].split()]:
    for rf in ([1, 2] if n >= 2 else [1]):
        r = bench(n, rf)
        print(f"{r['nodes']:>5} {r['rf']:>3} {r['write_points_per_s']:>12} {r['search_qps']:>11} "
              f"{r['search_p50_ms']:>8} {r['search_p99_ms']:>8}")
        print("json " + json.dumps(r), file=sys.stderr)
        sys.stdout.flush()
EOF
