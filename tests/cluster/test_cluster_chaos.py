#!/usr/bin/env python3
"""test_cluster_chaos.py: a bounded random-chaos run (issue 5).

Four `$QV_CLI serve --cluster` nodes and a throwaway etcd (clusterlib.py),
lease TTL 2 s, move delay 4 s, a collection of 16 shards x 2 copies under a
write + search load. For QV_CHAOS_S seconds (default 30) a fixed-seed
random schedule kills (-9), restarts, stops (SIGSTOP) and continues nodes,
at most one node out at a time, while transfers, promotions and rejoins
happen underneath. Then every node is brought back, the map settles, and
the checker runs: every acknowledged write on every insync copy with its
last value, no acknowledged delete anywhere, copies of a shard identical,
exact search = brute force on every node. Skips without etcd; every
process started is stopped at the end."""
import os
import random
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clusterlib as L  # noqa: E402

SEED = int(os.environ.get("QV_CHAOS_SEED", "5"))
DURATION = float(os.environ.get("QV_CHAOS_S", "30"))


class Chaos(unittest.TestCase):
    def test_random_chaos(self):
        c = L.Cluster(move_delay_s=4)
        try:
            self.run_chaos(c)
        finally:
            c.stop()
        self.assertFalse(c.bad_logs, c.bad_logs)

    def run_chaos(self, c):
        for _ in range(4):
            c.start_node()
        c.wait_members(4)
        st, body = L.call(c.nodes[0].port, "PUT", "/collections/docs",
                          {"vectors": {"size": L.DIM, "distance": "Euclid"},
                           "shard_number": 16, "replication_factor": 2})
        self.assertEqual(st, 200, body)
        w = L.Workload(c, "docs", seed=SEED)
        for _ in range(40):
            w.write_once("new")
        c.wait_stable("docs", timeout=30)
        w.start()
        rng = random.Random(SEED)
        actions = []
        out = None  # (node, "killed" | "stopped")
        t_end = time.monotonic() + DURATION
        while time.monotonic() < t_end:
            time.sleep(rng.uniform(1.0, 3.5))
            if out is None:
                node = rng.choice(c.nodes)
                if rng.random() < 0.5:
                    c.kill(node)
                    out = (node, "killed")
                else:
                    c.sigstop(node)
                    out = (node, "stopped")
            else:
                node, how = out
                if how == "killed":
                    c.start_node(node.idx)
                else:
                    c.sigcont(node)
                out = None
            actions.append((round(time.monotonic() - t_end + DURATION, 1),
                            "back" if out is None else out[1], node.idx))
        if out is not None:
            node, how = out
            if how == "killed":
                c.start_node(node.idx)
            else:
                c.sigcont(node)
        t_heal = time.monotonic()
        s = c.wait_stable("docs", timeout=120)
        t_settle = time.monotonic() - t_heal
        time.sleep(0.5)
        w.stop()
        print(f"\nchaos seed {SEED}, {DURATION:.0f} s: {actions}; settled {t_settle:.1f} s after "
              f"healing at epoch {s['epoch']}; writes acked {w.hist.acked}, failed "
              f"{w.hist.failed}; searches {w.search}", file=sys.stderr)
        self.assertGreater(w.hist.acked, 0)
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
