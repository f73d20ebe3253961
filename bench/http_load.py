#!/usr/bin/env python3
"""http_load.py: load generator for `quiver serve` (standard library only).

  http_load.py search --port P --collection C --queries Q.fvecs --gt GT.ivecs[.gz]
                      --ef 32 [--k 10] [--threads 4] [--requests 5000]
      N threads, each with one persistent keep-alive http.client connection,
      send POST /collections/C/points/search with params.hnsw_ef; prints QPS
      (requests / wall time), p50/p99 latency and recall@k against GT.
      Request bodies are encoded before the clock starts.

  http_load.py upsert --port P --collection C --base B.fvecs --batch 100
                      [--points 20000] [--threads 1]
      (Re)creates C (Euclid, dim of B) and upserts the first --points vectors
      in batches with wait=true; prints points/s seen by the client and the
      server-side mean time per upsert request (from /metrics, so the
      client's own cost is left out).

  http_load.py parse --port P --base B.fvecs --batch 1000 [--requests 9] [--kind search]
      Sends upsert bodies of --batch points (or, with --kind search, search
      bodies of one vector) to a collection that does not exist: the server
      parses each body whole, then answers 404. Prints the server-side mean
      per request (from /metrics): the cost of receiving and parsing the
      body without the engine's work.

  http_load.py bodies --queries Q.fvecs --ef 32 [--k 10] --out FILE [--limit-queries N]
      Writes one search request body a line, for wrk (bench/wrk_search.lua).

Each run prints one JSON line (for scripts) after a human-readable line.
"""
import argparse
import gzip
import http.client
import json
import struct
import sys
import threading
import time


def read_vecs(path, fmt="f", limit=None):
    opener = gzip.open if path.endswith(".gz") else open
    out = []
    with opener(path, "rb") as f:
        while limit is None or len(out) < limit:
            head = f.read(4)
            if len(head) < 4:
                break
            (d,) = struct.unpack("<i", head)
            out.append(list(struct.unpack("<%d%s" % (d, fmt), f.read(4 * d))))
    return out


def conn(port):
    return http.client.HTTPConnection("127.0.0.1", port, timeout=120)


def call(c, method, path, body):
    c.request(method, path, body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    if r.status != 200:
        raise RuntimeError("%s %s -> %d %s" % (method, path, r.status, data[:200]))
    return data


def search(a):
    queries = read_vecs(a.queries, "f", a.limit_queries)
    gt = read_vecs(a.gt, "i", len(queries))
    path = "/collections/%s/points/search" % a.collection
    bodies = [json.dumps({"vector": q, "limit": a.k, "params": {"hnsw_ef": a.ef}}).encode()
              for q in queries]
    lock = threading.Lock()
    lat, hits = [], 0
    next_i = [0]

    def worker():
        nonlocal hits
        c = conn(a.port)
        mine, found = [], 0
        while True:
            with lock:
                i = next_i[0]
                if i >= a.requests:
                    break
                next_i[0] += 1
            qi = i % len(bodies)
            t0 = time.perf_counter()
            data = call(c, "POST", path, bodies[qi])
            mine.append(time.perf_counter() - t0)
            ids = {p["id"] for p in json.loads(data)["result"]}
            found += len(ids & set(gt[qi][: a.k]))
        c.close()
        with lock:
            lat.extend(mine)
            hits += found

    # Warm-up: caches, connections, the server's first-touch allocations.
    c = conn(a.port)
    for b in bodies[: min(100, len(bodies))]:
        call(c, "POST", path, b)
    c.close()
    threads = [threading.Thread(target=worker) for _ in range(a.threads)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat.sort()
    res = {"mode": "search", "ef": a.ef, "k": a.k, "threads": a.threads, "requests": len(lat),
           "qps": len(lat) / wall, "p50_ms": 1e3 * lat[len(lat) // 2],
           "p99_ms": 1e3 * lat[min(len(lat) - 1, int(len(lat) * 0.99))],
           "recall": hits / (a.k * len(lat))}
    print("search ef=%d threads=%d: %.0f QPS, p50 %.2f ms, p99 %.2f ms, recall@%d %.4f"
          % (a.ef, a.threads, res["qps"], res["p50_ms"], res["p99_ms"], a.k, res["recall"]))
    print(json.dumps(res))


UPSERT_ROUTE = 'endpoint="/collections/{name}/points"'
SEARCH_ROUTE = 'endpoint="/collections/{name}/points/search"'


def route_totals(port, route):
    """(sum of seconds, count) of the duration histogram of `route`."""
    c = conn(port)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    c.close()
    total, count = 0.0, 0
    for line in text.splitlines():
        if route not in line:
            continue
        if line.startswith("quiver_http_request_duration_seconds_sum"):
            total = float(line.split()[-1])
        elif line.startswith("quiver_http_request_duration_seconds_count"):
            count = int(line.split()[-1])
    return total, count


def upsert(a):
    base = read_vecs(a.base, "f", a.points)
    dim = len(base[0])
    c = conn(a.port)
    c.request("DELETE", "/collections/" + a.collection)
    c.getresponse().read()
    call(c, "PUT", "/collections/" + a.collection,
         json.dumps({"vectors": {"size": dim, "distance": "Euclid"}}).encode())
    c.close()
    path = "/collections/%s/points?wait=true" % a.collection
    bodies = [json.dumps({"points": [{"id": j, "vector": base[j]}
                                     for j in range(i, min(i + a.batch, len(base)))]}).encode()
              for i in range(0, len(base), a.batch)]
    next_i = [0]
    lock = threading.Lock()

    def worker():
        cc = conn(a.port)
        while True:
            with lock:
                i = next_i[0]
                if i >= len(bodies):
                    break
                next_i[0] += 1
            call(cc, "PUT", path, bodies[i])
        cc.close()

    threads = [threading.Thread(target=worker) for _ in range(a.threads)]
    s0, n0 = route_totals(a.port, UPSERT_ROUTE)
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    s1, n1 = route_totals(a.port, UPSERT_ROUTE)
    server_ms = 1e3 * (s1 - s0) / max(1, n1 - n0)
    res = {"mode": "upsert", "server_ms_per_request": server_ms, "batch": a.batch,
           "threads": a.threads, "points": len(base),
           "dim": dim, "seconds": wall, "points_per_s": len(base) / wall,
           "body_mb": sum(len(b) for b in bodies) / 1e6}
    print("upsert batch=%d threads=%d: %d points of %d-d in %.2f s = %.0f points/s (%.1f MB of JSON); "
          "server %.2f ms per request"
          % (a.batch, a.threads, len(base), dim, wall, res["points_per_s"], res["body_mb"], server_ms))
    print(json.dumps(res))


def parse(a):
    base = read_vecs(a.base, "f", a.batch)
    if a.kind == "search":
        body = json.dumps({"vector": base[0], "limit": 10, "params": {"hnsw_ef": 32}}).encode()
        method, path, route = "POST", "/collections/qv-no-such-collection/points/search", SEARCH_ROUTE
    else:
        body = json.dumps({"points": [{"id": j, "vector": base[j]} for j in range(len(base))]}).encode()
        method, path, route = "PUT", "/collections/qv-no-such-collection/points?wait=true", UPSERT_ROUTE
    c = conn(a.port)
    c.request(method, path, body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    r.read()
    if r.status != 404:
        raise RuntimeError("expected 404 from a missing collection, got %d" % r.status)
    s0, n0 = route_totals(a.port, route)
    for _ in range(a.requests):
        c.request(method, path, body=body, headers={"Content-Type": "application/json"})
        c.getresponse().read()
    s1, n1 = route_totals(a.port, route)
    c.close()
    ms = 1e3 * (s1 - s0) / max(1, n1 - n0)
    res = {"mode": "parse", "kind": a.kind, "batch": a.batch, "requests": a.requests,
           "body_mb": len(body) / 1e6, "server_ms_per_request": ms}
    print("parse %s batch=%d: %.3f MB body, server %.3f ms per request (parse + 404)"
          % (a.kind, a.batch if a.kind == "upsert" else 1, len(body) / 1e6, ms))
    print(json.dumps(res))


def bodies(a):
    queries = read_vecs(a.queries, "f", a.limit_queries)
    with open(a.out, "w") as f:
        for q in queries:
            f.write(json.dumps({"vector": q, "limit": a.k, "params": {"hnsw_ef": a.ef}}) + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("search")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--collection", required=True)
    s.add_argument("--queries", required=True)
    s.add_argument("--gt", required=True)
    s.add_argument("--ef", type=int, default=32)
    s.add_argument("--k", type=int, default=10)
    s.add_argument("--threads", type=int, default=4)
    s.add_argument("--requests", type=int, default=5000)
    s.add_argument("--limit-queries", type=int, default=None)
    u = sub.add_parser("upsert")
    u.add_argument("--port", type=int, required=True)
    u.add_argument("--collection", required=True)
    u.add_argument("--base", required=True)
    u.add_argument("--batch", type=int, default=100)
    u.add_argument("--points", type=int, default=20000)
    u.add_argument("--threads", type=int, default=1)
    pp = sub.add_parser("parse")
    pp.add_argument("--port", type=int, required=True)
    pp.add_argument("--base", required=True)
    pp.add_argument("--batch", type=int, default=1000)
    pp.add_argument("--requests", type=int, default=9)
    pp.add_argument("--kind", choices=("upsert", "search"), default="upsert")
    b = sub.add_parser("bodies")
    b.add_argument("--queries", required=True)
    b.add_argument("--ef", type=int, default=32)
    b.add_argument("--k", type=int, default=10)
    b.add_argument("--out", required=True)
    b.add_argument("--limit-queries", type=int, default=1000)
    a = p.parse_args()
    {"search": search, "upsert": upsert, "parse": parse, "bodies": bodies}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
