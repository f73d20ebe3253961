#!/usr/bin/env python3
"""test_cluster_etcd.py: the data path when etcd fails (issue 5).

A 3-member etcd (scripts/etcd.sh -n 3) and three `$QV_CLI serve --cluster`
nodes (clusterlib.py), lease TTL 5 s (the default: an etcd leader election
takes 2.0-2.4 s, longer than a 2 s lease, CLUSTER.md a.6), a collection of 12 shards x 2 copies
under a write + search load:

  1. kill -9 of the etcd leader: no write and no search fails (metadata
     fails over to the other members; nothing on the data path waits for
     etcd), then the member is restarted;
  2. kill -9 of two members (quorum lost): searches keep answering,
     complete, for 2 x TTL (nodes route by the map they hold; writes stop
     once the nodes fence themselves); the members are restarted, every
     node registers again, the map settles and the checker finds every
     acknowledged write on every insync copy and search = brute force.

Skips without etcd. Every process started is stopped at the end."""
import json
import os
import subprocess
import sys
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clusterlib as L  # noqa: E402

ETCD_SH = os.path.join(L.ROOT, "scripts", "etcd.sh")
TTL = 5


def etcd_status(endpoint):
    req = urllib.request.Request(endpoint + "/v3/maintenance/status", data=b"{}", method="POST")
    with urllib.request.urlopen(req, timeout=2) as r:
        return json.loads(r.read())


def etcd_leader_name(c):
    """m<i> of the current leader (members listen on consecutive ports)."""
    eps = c.etcd.split(",")
    for i, ep in enumerate(eps):
        try:
            st = etcd_status(ep)
        except OSError:
            continue
        if st.get("leader") == st["header"]["member_id"]:
            return f"m{i + 1}"
    return None


def etcd_cmd(c, *args):
    out = subprocess.run([ETCD_SH, *args[:1], c.etcd_dir, *args[1:]], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr


class EtcdFailures(unittest.TestCase):
    def test_etcd_member_and_quorum_loss(self):
        c = L.Cluster(move_delay_s=30, etcd_args=("-n", "3"), ttl=TTL)
        try:
            self.run_scenarios(c)
        finally:
            c.stop()
        self.assertFalse(c.bad_logs, c.bad_logs)

    def run_scenarios(self, c):
        for _ in range(3):
            c.start_node()
        c.wait_members(3)
        st, body = L.call(c.nodes[0].port, "PUT", "/collections/docs",
                          {"vectors": {"size": L.DIM, "distance": "Euclid"},
                           "shard_number": 12, "replication_factor": 2})
        self.assertEqual(st, 200, body)
        w = L.Workload(c, "docs", seed=31)
        for _ in range(40):
            w.write_once("new")
        c.wait_stable("docs", timeout=30)

        # 1. The etcd leader dies under load.
        w.start()
        time.sleep(0.5)
        leader = L.wait_for("an etcd leader", lambda: etcd_leader_name(c), 10)
        failed0 = w.hist.failed
        etcd_cmd(c, "kill", leader)
        time.sleep(2 * TTL + 1)
        self.assertEqual(w.hist.failed, failed0, w.errors)
        self.assertEqual(w.search["error"], 0, w.errors)
        self.assertEqual(w.search["partial"], 0)
        self.assertTrue(all(not n.proc.poll() for n in c.nodes))
        st = c.state()
        self.assertEqual(len(st["members"]), 3, "a node lost its membership")
        etcd_cmd(c, "restart", leader)
        w.stop()
        print(f"\netcd leader {leader} killed: writes acked {w.hist.acked}, failed "
              f"{w.hist.failed - failed0}; searches {w.search}", file=sys.stderr)

        # 2. Quorum lost: searches keep working on the maps the nodes hold.
        leader = L.wait_for("an etcd leader", lambda: etcd_leader_name(c), 15)
        others = [f"m{i}" for i in (1, 2, 3) if f"m{i}" != leader][:2]
        for m in others:
            etcd_cmd(c, "kill", m)
        t0 = time.monotonic()
        n_ok = 0
        q = L.vec(w.srng)
        while time.monotonic() - t0 < 2 * TTL + 1:
            for node in c.nodes:
                st, body = L.call(node.port, "POST", "/collections/docs/points/search",
                                  {"vector": q, "limit": 5}, timeout=10)
                self.assertEqual(st, 200, body)
                self.assertNotIn("partial", body)
                n_ok += 1
            time.sleep(0.05)
        print(f"quorum lost for {time.monotonic() - t0:.1f} s: {n_ok} searches, all complete",
              file=sys.stderr)
        for m in others:
            etcd_cmd(c, "restart", m)
        L.wait_for("every node registered again", lambda: len(c.state()["members"]) == 3, 60)
        c.wait_stable("docs", timeout=90)
        L.check(self, c, "docs", w.hist)


if __name__ == "__main__":
    why = L.skip_reason()
    if why:
        print(why)
        sys.exit(0)
    if not os.access(L.CLI, os.X_OK):
        print(f"QV_CLI={L.CLI} is not an executable", file=sys.stderr)
        sys.exit(1)
    unittest.main(verbosity=2)
