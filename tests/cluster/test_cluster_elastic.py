#!/usr/bin/env python3
"""test_cluster_elastic.py: shard transfer on join and drain (issue 5).

Three `$QV_CLI serve --cluster` nodes and a throwaway etcd (clusterlib.py);
a collection of 24 shards x 2 copies under a write + search load. Node 4
joins: the controller moves copies to it by transfer while writes go on,
and the share of copies moved is at most 1.5/(N+1). Then node 2 is drained
through the admin endpoint: every copy leaves it before it stops. Each step
ends with the checker (every acknowledged write on every insync copy, no
acknowledged delete anywhere, exact search = brute force on every node).
Skips without etcd. Every process started is stopped at the end."""
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clusterlib as L  # noqa: E402

SHARDS = 24
RF = 2


def copies(state):
    return {(sh["id"], r["node"]) for sh in state["shards"] for r in sh["replicas"]}


class Elastic(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = L.Cluster(move_delay_s=3)
        try:
            for _ in range(3):
                cls.c.start_node()
            cls.c.wait_members(3)
        except BaseException:
            cls.c.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.c.stop()
        assert not cls.c.bad_logs, cls.c.bad_logs

    def test_join_then_drain(self):
        c = self.c
        p = c.nodes[0].port
        st, body = L.call(p, "PUT", "/collections/docs",
                          {"vectors": {"size": L.DIM, "distance": "Euclid"},
                           "shard_number": SHARDS, "replication_factor": RF})
        self.assertEqual(st, 200, body)
        # A collection that never took a write moves too (its shards have
        # no local collection until a write or a transfer creates one).
        st, body = L.call(p, "PUT", "/collections/empty",
                          {"vectors": {"size": 4, "distance": "Cosine"}, "shard_number": 6,
                           "replication_factor": 2})
        self.assertEqual(st, 200, body)
        w = L.Workload(c, "docs", seed=11)
        for _ in range(60):
            w.write_once("new")
        self.assertEqual(w.hist.failed, 0, w.errors)
        before = c.wait_stable("docs", timeout=30)

        # Join under load.
        w.start()
        t0 = time.monotonic()
        n4 = c.start_node()
        after = c.wait_stable("docs", timeout=120)
        t_join = time.monotonic() - t0
        c.wait_stable("empty", timeout=60)
        time.sleep(0.5)
        w.stop()
        moved = len(copies(after) - copies(before)) / (SHARDS * RF)
        print(f"\njoin 3->4: {moved:.3f} of copies moved (ideal {1/4:.3f}, bound {1.5/4:.3f}), "
              f"settled in {t_join:.1f} s; writes acked {w.hist.acked}, failed "
              f"{w.hist.failed}; searches {w.search} {w.errors[:3]}", file=sys.stderr)
        self.assertLessEqual(moved, 1.5 / 4)
        self.assertGreater(moved, 0)
        self.assertTrue(any(r["node"] == n4.node_id for sh in after["shards"]
                            for r in sh["replicas"]))
        self.assertEqual(w.search["error"], 0, w.errors)
        self.assertEqual(w.search["partial"], 0)
        L.check(self, c, "docs", w.hist)

        # Drain node 2 (index 1) under load, then stop it.
        victim = c.nodes[1]
        w2 = L.Workload(c, "docs", seed=12)
        w2.hist = w.hist
        w2.next_id = w.next_id
        w2.start()
        st, body = L.call(c.nodes[0].port, "POST", f"/cluster/nodes/{victim.node_id}/drain")
        self.assertEqual(st, 200, body)
        self.assertTrue(body["result"]["draining"])
        t0 = time.monotonic()
        others = {n.node_id for n in c.nodes if n is not victim}
        drained = c.wait_stable("docs", want_nodes=others, timeout=120)
        t_drain = time.monotonic() - t0
        self.assertIn(victim.node_id, c.state()["draining"])
        self.assertFalse(any(r["node"] == victim.node_id for sh in drained["shards"]
                             for r in sh["replicas"]))
        time.sleep(0.5)
        w2.stop()
        moved = len(copies(drained) - copies(after)) / (SHARDS * RF)
        print(f"drain 4->3: {moved:.3f} of copies moved, settled in {t_drain:.1f} s; searches "
              f"{w2.search}", file=sys.stderr)
        self.assertEqual(w2.search["error"], 0, w2.errors)
        L.check(self, c, "docs", w2.hist)
        # The drained node holds nothing the cluster needs: stopping it
        # changes nothing for clients.
        victim.proc.terminate()
        victim.proc.wait(timeout=30)
        L.check(self, c, "docs", w2.hist, n_queries=5)


if __name__ == "__main__":
    why = L.skip_reason()
    if why:
        print(why)
        sys.exit(0)
    if not os.access(L.CLI, os.X_OK):
        print(f"QV_CLI={L.CLI} is not an executable", file=sys.stderr)
        sys.exit(1)
    unittest.main(verbosity=2)
