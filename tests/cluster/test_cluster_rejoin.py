#!/usr/bin/env python3
"""test_cluster_rejoin.py: a copy that comes back is caught up from its
primary's write backlog (only the writes it missed), not copied again, and
falls back to a full copy when it missed more than the backlog keeps (issue 5).

Three `$QV_CLI serve --cluster` nodes and a throwaway etcd (clusterlib.py),
lease TTL 2 s, move delay 30 s (so a dead node's copies wait for it), and a
small backlog (--cluster-backlog-bytes 48 KiB per shard) so that both paths
run in seconds. A collection of 6 shards x 2 copies under write + search load:

  1. kill -9 of a node, a few writes while it is down, restart: every copy
     it held comes back by a catch-up from the backlog (the primaries' event
     logs say so; none is copied in full), and the checker passes (every
     acknowledged write on every insync copy, no acknowledged delete, copies
     identical, exact search = brute force).
  2. SIGSTOP of a node past its lease, writes, SIGCONT: the same, without a
     restart (the chain markers are those in memory).
  3. kill -9, many more writes than the backlog holds, restart: the copies
     come back by full copies, and the checker passes.
  4. a client batch with every write kind (payload, vectors, deletes by
     filter, a payload index) while a copy is down: the catch-up replays
     them all; the copies are identical.

Skips without etcd. Every process started is stopped at the end."""
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clusterlib as L  # noqa: E402

SHARDS = 6
RF = 2
MOVE_DELAY = 30
BACKLOG = 48 * 1024


def events(c, after):
    """Every live node's event texts newer than after[process] (updated). A
    restarted node numbers its events from 1 again: keyed by process."""
    out = []
    for n in c.live():
        key = (n.idx, n.proc.pid)
        st, body = L.call(n.port, "GET", f"/cluster/state?events_after={after.get(key, 0)}")
        if st != 200:
            continue
        for e in body["result"]["events"]:
            after[key] = max(after.get(key, 0), e["seq"])
            out.append(e["text"])
    return out


def settled_events(c, after, victim, n_copies):
    """The events since `after` once the source of every one of victim's
    n_copies transfers has logged how it ended (a source logs it just after
    its report lets the controller turn the copy insync, so the map can be
    settled a moment before)."""
    ev = []

    def ended():
        ev.extend(events(c, after))
        done = [e for e in ev if victim.node_id in e and (
            "caught up from the write backlog" in e or "points to " + victim.node_id in e)]
        return len(done) >= n_copies

    try:
        L.wait_for("the transfers' own events", ended, 10)
    except AssertionError:
        pass  # the assertions below say what is missing
    return ev


def held_by(c, node_id):
    s = c.state()["collections"]["docs"]
    return sorted(sh["id"] for sh in s["shards"] for r in sh["replicas"] if r["node"] == node_id)


def wait_dead(c, victim):
    L.wait_for("its copies marked dead", lambda: any(
        r["node"] == victim.node_id and r["state"] == "dead"
        for sh in c.state()["collections"]["docs"]["shards"] for r in sh["replicas"]), 30)


class Rejoin(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        reason = L.skip_reason()
        if reason:
            raise unittest.SkipTest(reason)
        cls.c = L.Cluster(move_delay_s=MOVE_DELAY,
                          node_args=("--cluster-backlog-bytes", str(BACKLOG)))
        try:
            for _ in range(3):
                cls.c.start_node()
            cls.c.wait_members(3)
            st, body = L.call(cls.c.nodes[0].port, "PUT", "/collections/docs",
                              {"vectors": {"size": L.DIM, "distance": "Euclid"},
                               "shard_number": SHARDS, "replication_factor": RF})
            assert st == 200, body
            cls.w = L.Workload(cls.c, "docs", seed=31)
            for _ in range(40):
                cls.w.write_once("new")
            cls.c.wait_stable("docs", timeout=30)
            cls.after = {}
            events(cls.c, cls.after)
        except BaseException:
            cls.c.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.c.stop()
        assert not cls.c.bad_logs, cls.c.bad_logs

    def outage(self, victim, writes, pause=False):
        """Takes victim down (kill -9, or SIGSTOP past its lease), acknowledges
        `writes` writes meanwhile, brings it back; returns the events logged
        from the outage to the settled map, and how many copies it held."""
        c = self.c
        held = held_by(c, victim.node_id)
        w = self.w.sibling(len(self.after) + writes)
        if pause:
            c.sigstop(victim)
        else:
            c.kill(victim)
        wait_dead(c, victim)
        done = 0
        while done < writes:
            done += w.write_once()
        t_back = time.monotonic()
        if pause:
            c.sigcont(victim)
        else:
            c.start_node(victim.idx)
        s = c.wait_stable("docs", timeout=90)
        took = time.monotonic() - t_back
        self.assertEqual(held_by(c, victim.node_id), held)  # came back to the same copies
        for sh in s["shards"]:
            self.assertEqual(sum(r["state"] == "insync" for r in sh["replicas"]), RF)
        return settled_events(c, self.after, victim, len(held)), held, took

    def test_1_killed_copy_catches_up_from_the_backlog(self):
        c = self.c
        victim = c.nodes[2]
        ev, held, took = self.outage(victim, writes=20)
        caught = [e for e in ev if "caught up from the write backlog" in e and victim.node_id in e]
        full = [e for e in ev if "points to " + victim.node_id in e]
        print(f"\nkill -9 + restart after 20 writes: {len(caught)} of {len(held)} copies caught "
              f"up from the backlog, {len(full)} copied in full, settled in {took:.1f} s",
              file=sys.stderr)
        self.assertEqual(full, [], ev)
        self.assertGreaterEqual(len(caught), len(held), ev)
        L.check(self, c, "docs", self.w.hist)

    def test_2_paused_copy_catches_up_from_the_backlog(self):
        c = self.c
        victim = c.nodes[1]
        ev, held, took = self.outage(victim, writes=20, pause=True)
        caught = [e for e in ev if "caught up from the write backlog" in e and victim.node_id in e]
        full = [e for e in ev if "points to " + victim.node_id in e]
        print(f"SIGSTOP/SIGCONT after 20 writes: {len(caught)} of {len(held)} copies caught up, "
              f"{len(full)} copied in full, settled in {took:.1f} s", file=sys.stderr)
        self.assertEqual(full, [], ev)
        self.assertGreaterEqual(len(caught), len(held), ev)
        L.check(self, c, "docs", self.w.hist)

    def test_3_more_than_the_backlog_means_a_full_copy(self):
        c = self.c
        victim = c.nodes[2]
        # Each write is ~8 points of DIM floats spread over the shards: 600
        # of them put well over BACKLOG bytes into every shard's backlog.
        ev, held, took = self.outage(victim, writes=600)
        full = [e for e in ev if "points to " + victim.node_id in e]
        print(f"kill -9 + restart after 600 writes: {len(full)} of {len(held)} copies copied in "
              f"full, settled in {took:.1f} s", file=sys.stderr)
        self.assertGreaterEqual(len(full), 1, ev)
        L.check(self, c, "docs", self.w.hist)

    def test_4_every_write_kind_is_replayed(self):
        c = self.c
        victim = c.nodes[0]
        held = held_by(c, victim.node_id)
        c.kill(victim)
        wait_dead(c, victim)
        port = c.nodes[1].port
        ids = sorted(i for i, v in self.w.hist.certain().items() if v is not None)[:30]
        ops = [
            {"set_payload": {"payload": {"tag": "a"}, "points": ids[:10]}},
            {"overwrite_payload": {"payload": {"i": -1}, "points": ids[10:12]}},
            {"delete_payload": {"keys": ["i"], "points": ids[12:14]}},
            {"clear_payload": {"points": ids[14:16]}},
            {"update_vectors": {"points": [{"id": i, "vector": [0.5] * L.DIM}
                                           for i in ids[16:18]]}},
            {"delete": {"filter": {"must": [{"key": "i", "match": {"value": ids[20]}}]}}},
        ]
        st, body = L.call(port, "POST", "/collections/docs/points/batch?wait=true",
                          {"operations": ops})
        self.assertEqual(st, 200, body)
        self.assertEqual(len(body["result"]), len(ops))
        st, body = L.call(port, "PUT", "/collections/docs/index?wait=true",
                          {"field_name": "tag", "field_schema": "keyword"})
        self.assertEqual(st, 200, body)
        self.w.hist.record(ids[16:18], [[0.5] * L.DIM] * 2, True)
        self.w.hist.record([ids[20]], [None], True)
        c.start_node(victim.idx)
        c.wait_stable("docs", timeout=90)
        ev = settled_events(c, self.after, victim, len(held))
        caught = [e for e in ev if "caught up from the write backlog" in e and victim.node_id in e]
        self.assertGreaterEqual(len(caught), len(held), ev)
        # Every copy of a shard holds the same points and payloads.
        for k in range(SHARDS):
            seen = {}
            s = c.state()["collections"]["docs"]
            for r in s["shards"][k]["replicas"]:
                node = c.by_id(r["node"])
                st, body = L.call(node.port, "POST", f"/collections/docs.s{k}/points/scroll",
                                  {"limit": 100000, "with_payload": True, "with_vector": True})
                self.assertEqual(st, 200, body)
                seen[r["node"]] = sorted(((p["id"], repr(sorted(p["payload"].items())),
                                           repr(p["vector"])) for p in body["result"]["points"]))
            vals = list(seen.values())
            self.assertTrue(all(v == vals[0] for v in vals), f"shard {k} copies differ")
        # The index reached the copies of the node that was down, and
        # filters on it count the same through every node.
        for k in held:
            st, body = L.call(victim.port, "GET", f"/collections/docs.s{k}")
            self.assertEqual(st, 200, body)
            self.assertIn("tag", body["result"]["payload_schema"], k)
        for n in c.live():
            st, body = L.call(n.port, "POST", "/collections/docs/points/count",
                              {"filter": {"must": [{"key": "tag", "match": {"value": "a"}}]},
                               "exact": True})
            self.assertEqual(st, 200, body)
            self.assertEqual(body["result"]["count"], 10)
        L.check(self, c, "docs", self.w.hist)


if __name__ == "__main__":
    unittest.main(verbosity=2)
