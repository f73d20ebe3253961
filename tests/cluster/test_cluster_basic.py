#!/usr/bin/env python3
"""test_cluster_basic.py: `quiver serve --cluster` end to end (issue 5, M1).

Starts a throwaway etcd (scripts/etcd.sh, watchdog on this process) and
three `$QV_CLI serve --cluster` nodes on free loopback ports, each with its
own data directory, and kills exactly those processes at the end. Checks:
placement and replication (every point on exactly rf nodes), exact search
through any node equals brute force, and after `kill -9` of a node that is a
primary: searches stay complete, no acknowledged point is missing, and
writes to the shards it led resume once the controller promoted copies.

Every wait polls with a deadline. Python stdlib only. Skips (exit 0 with a
message) when etcd is not installed."""
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

from clusterlib import call, free_port, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CLI = os.environ.get("QV_CLI", os.path.join(ROOT, "build", "quiver"))
TTL = 2
DIM = 8
N_POINTS = 2000
SHARDS = 6
RF = 2


class Cluster:
    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="qv-cluster-")
        out = subprocess.run([os.path.join(ROOT, "scripts", "etcd.sh"), "start", "-o",
                              str(os.getpid())], capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError("etcd.sh start failed: " + out.stderr)
        env = dict(l.split("=", 1) for l in out.stdout.split() if "=" in l)
        self.etcd_dir = env["QV_ETCD_DIR"]
        self.etcd = env["QV_ETCD_ENDPOINTS"]
        self.nodes = []  # [port, Popen]

    def start_node(self, i):
        port = free_port()
        log = open(os.path.join(self.tmp, f"n{i}.log"), "w")
        p = subprocess.Popen([CLI, "serve", "--cluster", "--etcd", self.etcd, "--port", str(port),
                              "--data-dir", os.path.join(self.tmp, f"d{i}"),
                              "--cluster-lease-ttl", str(TTL), "--threads", "8"],
                             stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.nodes.append([port, p])
        wait_for(f"node {i} to answer", lambda: call(port, "GET", "/cluster", timeout=2)[0] == 200,
                 30)
        return port

    def stop(self):
        for port, p in self.nodes:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for port, p in self.nodes:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        subprocess.run([os.path.join(ROOT, "scripts", "etcd.sh"), "stop", self.etcd_dir, "2"],
                       capture_output=True, timeout=30)
        self.bad_logs = []
        for name in sorted(os.listdir(self.tmp)):
            if name.endswith(".log"):
                with open(os.path.join(self.tmp, name), errors="replace") as f:
                    text = f.read()
                if "Sanitizer" in text or "runtime error:" in text:
                    self.bad_logs.append((name, text[-3000:]))
        if os.environ.get("QV_KEEP_LOGS"):
            print("logs kept in", self.tmp, file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def brute(points, q, k):
    d = sorted((sum((a - b) ** 2 for a, b in zip(v, q)) ** 0.5, i) for i, v in points.items())
    return [i for _, i in d[:k]]


class ClusterBasic(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = Cluster()
        try:
            cls.ports = [cls.c.start_node(i) for i in range(3)]
            wait_for("3 members", lambda: len(call(cls.ports[0], "GET", "/cluster")[1]["result"]
                                              ["peers"]) == 3, 15)
        except BaseException:
            cls.c.stop()
            raise
        cls.rng = random.Random(5)
        cls.points = {}

    @classmethod
    def tearDownClass(cls):
        for port, p in cls.c.nodes:
            if p.poll() not in (None, 0, -signal.SIGKILL):
                print(f"node on {port} exited with {p.returncode}", file=sys.stderr)
        cls.c.stop()
        # A sanitizer report in any node's log fails the suite.
        assert not cls.c.bad_logs, cls.c.bad_logs

    def state(self, port):
        return call(port, "GET", "/cluster/state")[1]["result"]

    def upsert(self, port, ids):
        pts = []
        for i in ids:
            v = [self.rng.uniform(-1, 1) for _ in range(DIM)]
            pts.append({"id": i, "vector": v, "payload": {"i": i, "even": i % 2 == 0}})
        st, body = call(port, "PUT", "/collections/docs/points?wait=true", {"points": pts})
        self.assertEqual(st, 200, body)
        for p in pts:
            self.points[p["id"]] = p["vector"]

    def check_search(self, port, n_queries=20):
        for _ in range(n_queries):
            q = [self.rng.uniform(-1, 1) for _ in range(DIM)]
            st, body = call(port, "POST", "/collections/docs/points/search",
                            {"vector": q, "limit": 10, "params": {"exact": True}})
            self.assertEqual(st, 200, body)
            self.assertNotIn("partial", body)
            self.assertEqual([h["id"] for h in body["result"]], brute(self.points, q, 10))

    def copies_per_point(self, ports):
        """{id: number of live in-sync copies holding it}, read shard by shard
        from each node's local shard collections."""
        seen = {}
        for port in ports:
            info = call(port, "GET", "/collections/docs/cluster")[1]["result"]
            for sh in info["local_shards"]:
                if sh["state"] != "Active":
                    continue
                st, body = call(port, "POST", f"/collections/docs.s{sh['shard_id']}/points/scroll",
                                {"limit": 100000, "with_payload": False})
                self.assertEqual(st, 200, body)
                self.assertEqual(len(body["result"]["points"]), sh["points_count"])
                for p in body["result"]["points"]:
                    seen[p["id"]] = seen.get(p["id"], 0) + 1
        return seen

    def test_all(self):
        # Steps share the cluster, so they run in order in one test.
        p1, p2, p3 = self.ports
        st, body = call(p1, "PUT", "/collections/docs",
                        {"vectors": {"size": DIM, "distance": "Euclid"},
                         "shard_number": SHARDS, "replication_factor": RF})
        self.assertEqual(st, 200, body)
        st, body = call(p2, "PUT", "/collections/docs", {"vectors": {"size": DIM,
                                                                     "distance": "Euclid"}})
        self.assertEqual(st, 409, body)
        st, body = call(p1, "PUT", "/collections/x.s1", {"vectors": {"size": 2,
                                                                     "distance": "Dot"}})
        self.assertEqual(st, 400, body)

        # Placement: 6 shards x 2 copies on distinct nodes, within the cap.
        s = self.state(p3)["collections"]["docs"]
        self.assertEqual(len(s["shards"]), SHARDS)
        for sh in s["shards"]:
            nodes = [r["node"] for r in sh["replicas"]]
            self.assertEqual(len(set(nodes)), RF)
            self.assertIn(sh["primary"], nodes)
        self.assertTrue(all(v <= s["load_cap"] for v in s["load"].values()), s)

        # 2000 points through node 2, in batches.
        for b in range(0, N_POINTS, 250):
            self.upsert(p2, range(b, b + 250))
        st, body = call(p3, "POST", "/collections/docs/points/count", {"exact": True})
        self.assertEqual(body["result"]["count"], N_POINTS)
        copies = self.copies_per_point(self.ports)
        self.assertEqual(set(copies), set(self.points))
        self.assertEqual(set(copies.values()), {RF})

        # Exact search through node 3 equals brute force; query API + offset too.
        self.check_search(p3)
        q = [0.1] * DIM
        st, body = call(p1, "POST", "/collections/docs/points/query",
                        {"query": q, "limit": 5, "offset": 3, "params": {"exact": True}})
        self.assertEqual(st, 200, body)
        self.assertEqual([h["id"] for h in body["result"]["points"]], brute(self.points, q, 8)[3:])
        # A filter is applied on every shard.
        st, body = call(p1, "POST", "/collections/docs/points/search",
                        {"vector": q, "limit": 7, "params": {"exact": True}, "with_payload": True,
                         "filter": {"must": [{"key": "even", "match": {"value": True}}]}})
        self.assertEqual(st, 200, body)
        evens = {i: v for i, v in self.points.items() if i % 2 == 0}
        self.assertEqual([h["id"] for h in body["result"]], brute(evens, q, 7))

        # Deletes by id go to every copy.
        gone = list(range(0, 40))
        st, body = call(p1, "POST", "/collections/docs/points/delete?wait=true", {"points": gone})
        self.assertEqual(st, 200, body)
        for i in gone:
            del self.points[i]
        copies = self.copies_per_point(self.ports)
        self.assertEqual(set(copies), set(self.points))
        self.assertEqual(set(copies.values()), {RF})

        # kill -9 the node that is primary of the most shards (not node 3).
        s = self.state(p3)
        ids = {m["addr"]: m["node_id"] for m in s["members"]}
        victim_port = max((p1, p2), key=lambda p: sum(
            sh["primary"] == ids[f"127.0.0.1:{p}"] for sh in s["collections"]["docs"]["shards"]))
        victim = ids[f"127.0.0.1:{victim_port}"]
        led = [sh["id"] for sh in s["collections"]["docs"]["shards"] if sh["primary"] == victim]
        term0 = {sh["id"]: sh["term"] for sh in s["collections"]["docs"]["shards"]}
        self.assertTrue(led)
        epoch0 = s["collections"]["docs"]["epoch"]
        proc = next(p for port, p in self.c.nodes if port == victim_port)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        t_kill = time.monotonic()
        alive = [p for p in self.ports if p != victim_port]

        # Searches stay complete right away (the other copies answer).
        self.check_search(alive[0], 5)

        # Writes to the shards the victim led resume after the promotion.
        # 60 ids over 6 shards: every shard gets some (fixed ids; checked
        # below through the copies of each point).
        new_ids = list(range(100000, 100060))
        self.upsert(alive[1], new_ids)
        resumed = time.monotonic() - t_kill
        print(f"\nwrite after kill -9 of a primary acknowledged {resumed:.2f} s after the kill "
              f"(lease TTL {TTL} s)", file=sys.stderr)
        s = self.state(alive[0])["collections"]["docs"]
        self.assertGreater(s["epoch"], epoch0)
        for sh in s["shards"]:
            self.assertNotEqual(sh["primary"], victim)
            if sh["id"] in led:  # promoted: a new term
                self.assertGreater(sh["term"], term0[sh["id"]])

        # No acknowledged point is missing; survivors hold every live copy.
        self.check_search(alive[1], 10)
        st, body = call(alive[0], "POST", "/collections/docs/points/count", {"exact": True})
        self.assertEqual(body["result"]["count"], len(self.points))
        copies = self.copies_per_point(alive)
        self.assertEqual(set(copies), set(self.points))
        live_copies = {sh["id"]: sum(r["state"] == "insync" for r in sh["replicas"])
                       for sh in s["shards"]}
        self.assertTrue(all(v >= 1 for v in live_copies.values()))


if __name__ == "__main__":
    if shutil.which("etcd") is None:
        print("skipped: no etcd (apt-get install etcd-server)")
        sys.exit(0)
    if not os.access(CLI, os.X_OK):
        print(f"QV_CLI={CLI} is not an executable", file=sys.stderr)
        sys.exit(1)
    unittest.main(verbosity=2)
