#!/usr/bin/env python3
"""test_cluster_api_colls.py: collection requests and Qdrant's shard
operations on a distributed collection, through any node (issue 5).

A throwaway etcd and three `$QV_CLI serve --cluster` nodes (clusterlib.py),
plus one single-node `$QV_CLI serve` as the oracle for what a Qdrant-like
server answers. Covered, each through several nodes:
  * GET /collections lists the distributed collection, not its shard
    copies; GET /collections/{c} has the single-node shape with the points
    counted over every shard and shard_number / replication_factor /
    write_consistency_factor; PATCH reaches every copy (and is refused, with
    the single-node message, when the single node refuses it);
  * POST /collections/{c}/cluster: move_shard (the copy moves and stays
    moved while later plan rounds run; data complete: checker = every
    acknowledged point on every insync copy, copies identical, exact search
    equal to brute force), replicate_shard, drop_replica (never the last
    copy), abort_transfer of a transfer held up by a paused source,
    unpin_shard, and the errors (unknown shard 404, unknown peer 400, ...);
  * DELETE while a node is down, then the same name created again (every
    copy on every node): no node shows the old points.
Lease TTL 5 s so that pausing a node for a moment does not fence it.
Skips without etcd. Every process started is stopped at the end."""
import os
import random
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clusterlib as L  # noqa: E402

TTL = 5


def shape(v):
    """The keys of a JSON value, recursively (values left out)."""
    if isinstance(v, dict):
        return {k: shape(x) for k, x in v.items()}
    return type(v).__name__ if v is not None else None


class ApiColls(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        reason = L.skip_reason()
        if reason:
            raise unittest.SkipTest(reason)
        cls.c = L.Cluster(move_delay_s=30, ttl=TTL)
        cls.oracle = None
        try:
            for _ in range(3):
                cls.c.start_node()
            cls.c.wait_members(3)
            cls.oport = L.free_port()
            cls.odir = os.path.join(cls.c.tmp, "oracle")
            log = open(os.path.join(cls.c.tmp, "oracle.log"), "a")
            cls.oracle = subprocess.Popen([L.CLI, "serve", "--port", str(cls.oport),
                                           "--data-dir", cls.odir], stdout=log,
                                          stderr=subprocess.STDOUT)
            log.close()
            L.wait_for("the single-node server", lambda: L.call(cls.oport, "GET", "/")[0] == 200,
                       30)
        except BaseException:
            cls.stop_all()
            raise

    @classmethod
    def stop_all(cls):
        if cls.oracle is not None and cls.oracle.poll() is None:
            cls.oracle.terminate()
            cls.oracle.wait(timeout=10)
        cls.c.stop()

    @classmethod
    def tearDownClass(cls):
        cls.stop_all()
        assert not cls.c.bad_logs, cls.c.bad_logs

    # ---- helpers -------------------------------------------------------------------

    def ports(self):
        return [n.port for n in self.c.live()]

    def ok(self, port, method, path, body=None):
        st, b = L.call(port, method, path, body)
        self.assertEqual(st, 200, f"{method} {path}: {b}")
        return b["result"]

    def shards(self, coll):
        return self.c.state()["collections"][coll]["shards"]

    def holders(self, coll, k):
        return [r["node"] for r in self.shards(coll)[k]["replicas"]]

    def upsert(self, coll, hist, ids, seed, port=None):
        rng = random.Random(seed)
        vs = [L.vec(rng) for _ in ids]
        pts = [{"id": i, "vector": v, "payload": {"i": i}} for i, v in zip(ids, vs)]
        self.ok(port or self.ports()[0], "PUT", f"/collections/{coll}/points?wait=true",
                {"points": pts})
        if hist is not None:
            hist.record(ids, vs, True)
        return pts

    def shard_op(self, port, coll, op, body, status=200):
        st, b = L.call(port, "POST", f"/collections/{coll}/cluster", {op: body})
        self.assertEqual(st, status, f"{op} {body}: {b}")
        if status != 200:
            self.assertIsInstance(b["status"]["error"], str)
        return b

    def wait_copies(self, coll, k, nodes, timeout=60):
        """Waits until shard k of coll is exactly on `nodes`, every copy insync."""
        want = set(nodes)
        return L.wait_for(
            f"shard {k} of {coll} on {sorted(want)}",
            lambda: (lambda sh: sh if {r["node"] for r in sh["replicas"]} == want and all(
                r["state"] == "insync" for r in sh["replicas"]) else None)(
                self.shards(coll)[k]), timeout)

    # ---- 1. list, info, patch --------------------------------------------------------

    def test_a_list_info_and_patch(self):
        p = self.ports()
        create = {"vectors": {"size": L.DIM, "distance": "Euclid"}}
        self.ok(p[0], "PUT", "/collections/docs",
                dict(create, shard_number=6, replication_factor=2))
        self.ok(self.oport, "PUT", "/collections/docs", create)
        pts = self.upsert("docs", None, list(range(1, 301)), seed=3, port=p[1])
        self.ok(self.oport, "PUT", "/collections/docs/points?wait=true", {"points": pts})

        # The list: the distributed collection, never its shard copies (which
        # exist on every node as local collections).
        for port in p:
            names = [x["name"] for x in self.ok(port, "GET", "/collections")["collections"]]
            self.assertEqual(names, ["docs"], port)
        k0 = self.shards("docs")[0]
        holder = self.c.by_id(k0["replicas"][0]["node"])
        self.ok(holder.port, "GET", "/collections/docs.s0")

        # Info through every node: the single node's shape, counts summed.
        want = self.ok(self.oport, "GET", "/collections/docs")
        for port in p:
            got = self.ok(port, "GET", "/collections/docs")
            self.assertEqual(shape(got), shape(want), port)
            self.assertEqual(got["points_count"], 300)
            self.assertEqual(got["points_count"], want["points_count"])
            self.assertEqual(got["status"], "green")
            params = got["config"]["params"]
            self.assertEqual((params["shard_number"], params["replication_factor"],
                              params["write_consistency_factor"]), (6, 2, 1))
            self.assertEqual(params["vectors"], want["config"]["params"]["vectors"])

        # PATCH through node 3 reaches every copy and reads back like the
        # single node's.
        patch = {"hnsw_config": {"m": 24, "ef_construct": 150},
                 "optimizers_config": {"indexing_threshold": 5000}}
        t0 = time.monotonic()
        self.assertIs(self.ok(p[2], "PATCH", "/collections/docs", patch), True)
        print(f"\nPATCH of 6 shards x 2 copies answered in {time.monotonic() - t0:.3f} s",
              file=sys.stderr)
        self.ok(self.oport, "PATCH", "/collections/docs", patch)
        want = self.ok(self.oport, "GET", "/collections/docs")["config"]
        for port in p:
            got = self.ok(port, "GET", "/collections/docs")["config"]
            for key in ("shard_number", "replication_factor", "write_consistency_factor"):
                got["params"].pop(key)
                want["params"].pop(key, None)
            self.assertEqual(got, want, port)
        for sh in self.shards("docs"):
            for r in sh["replicas"]:
                node = self.c.by_id(r["node"])
                cfg = self.ok(node.port, "GET", f"/collections/docs.s{sh['id']}")["config"]
                self.assertEqual(cfg["hnsw_config"]["m"], 24, (sh["id"], r["node"]))
                self.assertEqual(cfg["optimizer_config"]["indexing_threshold"], 5000)

        # What the single node refuses is refused with its words, and changes
        # nothing.
        for bad in ({"vectors": {"nope": {"hnsw_config": {"m": 8}}}},
                    {"quantization_config": {"scalar": {"type": "int8"}}},
                    {"hnsw_config": {"m": 0}}):
            st_o, b_o = L.call(self.oport, "PATCH", "/collections/docs", bad)
            st, b = L.call(p[1], "PATCH", "/collections/docs", bad)
            self.assertEqual(st_o, 400, b_o)
            self.assertEqual((st, b["status"]), (st_o, b_o["status"]), bad)
        for port in p:
            cfg = self.ok(port, "GET", "/collections/docs")["config"]
            self.assertEqual(cfg["hnsw_config"]["m"], 24)

    # ---- 2. move, replicate, drop, unpin, errors ---------------------------------------

    def test_b_shard_operations(self):
        p = self.ports()
        self.ok(p[0], "PUT", "/collections/mv", {"vectors": {"size": L.DIM, "distance": "Euclid"},
                                                 "shard_number": 4, "replication_factor": 2})
        hist = L.History()
        for b in range(4):
            self.upsert("mv", hist, list(range(1000 + 100 * b, 1100 + 100 * b)), seed=10 + b)
        ids = [n.node_id for n in self.c.live()]

        # move_shard: shard 0 from its primary to the node without a copy.
        sh0 = self.shards("mv")[0]
        src = sh0["primary"]
        stay = next(n for n in self.holders("mv", 0) if n != src)
        dst = next(n for n in ids if n not in self.holders("mv", 0))
        t0 = time.monotonic()
        self.shard_op(p[1], "mv", "move_shard",
                      {"shard_id": 0, "from_peer_id": int(src), "to_peer_id": int(dst)})
        moved = self.wait_copies("mv", 0, [stay, dst])
        print(f"\nmove_shard of 100 points settled {time.monotonic() - t0:.2f} s after the "
              f"answer", file=sys.stderr)
        self.assertTrue(moved.get("pinned"))
        self.assertEqual(moved["primary"], stay)
        self.assertEqual(self.c.state()["collections"]["mv"]["moves_left"], 0)
        L.check(self, self.c, "mv", hist)

        # replicate_shard: shard 1 gets a third copy, kept beyond rf.
        h1 = self.holders("mv", 1)
        extra = next(n for n in ids if n not in h1)
        epoch = self.c.state()["collections"]["mv"]["epoch"]
        self.shard_op(p[2], "mv", "replicate_shard",
                      {"shard_id": 1, "from_peer_id": int(h1[1]), "to_peer_id": int(extra)})
        self.wait_copies("mv", 1, h1 + [extra])
        L.check(self, self.c, "mv", hist)

        # drop_replica down to one copy; the last one is refused.
        prim = self.shards("mv")[1]["primary"]
        others = [n for n in h1 + [extra] if n != prim]
        self.shard_op(p[0], "mv", "drop_replica", {"shard_id": 1, "peer_id": int(others[0])})
        self.wait_copies("mv", 1, [prim, others[1]])
        self.shard_op(p[0], "mv", "drop_replica", {"shard_id": 1, "peer_id": int(prim)})
        left = self.wait_copies("mv", 1, [others[1]])
        self.assertEqual(left["primary"], others[1])
        b = self.shard_op(p[1], "mv", "drop_replica", {"shard_id": 1, "peer_id": int(others[1])},
                          status=400)
        self.assertIn("last active replica", b["status"]["error"])

        # Those were several more map epochs and plan rounds: shard 0 stayed
        # where it was moved, and so it does a few controller ticks later.
        self.assertGreater(self.c.state()["collections"]["mv"]["epoch"], epoch + 3)
        time.sleep(1.0)  # ~5 controller ticks with nothing to do
        self.assertEqual(set(self.holders("mv", 0)), {stay, dst})
        self.assertEqual(set(self.holders("mv", 1)), {others[1]})
        for port in p:
            self.assertEqual(self.ok(port, "POST", "/collections/mv/points/count", {})["count"],
                             400)
        L.check(self, self.c, "mv", hist)

        # Errors, in Qdrant's envelope.
        h2 = self.holders("mv", 2)
        free2 = next(n for n in ids if n not in h2)
        b = self.shard_op(p[0], "mv", "move_shard",
                          {"shard_id": 99, "from_peer_id": int(h2[0]), "to_peer_id": int(free2)},
                          status=404)
        self.assertIn("Shard 99", b["status"]["error"])
        b = self.shard_op(p[0], "mv", "move_shard",
                          {"shard_id": 2, "from_peer_id": int(h2[0]), "to_peer_id": 12345},
                          status=400)
        self.assertIn("Peer 12345 does not exist", b["status"]["error"])
        self.shard_op(p[0], "mv", "move_shard",
                      {"shard_id": 2, "from_peer_id": int(free2), "to_peer_id": int(h2[0])},
                      status=400)
        self.shard_op(p[0], "mv", "replicate_shard",
                      {"shard_id": 2, "from_peer_id": int(h2[0]), "to_peer_id": int(h2[1])},
                      status=400)
        self.shard_op(p[0], "mv", "abort_transfer",
                      {"shard_id": 2, "from_peer_id": int(h2[0]), "to_peer_id": int(free2)},
                      status=400)
        self.shard_op(p[0], "mv", "move_shard", {"shard_id": 2}, status=400)
        self.shard_op(p[0], "mv", "create_sharding_key", {"shard_key": "a"}, status=400)
        st, b = L.call(p[0], "POST", "/collections/nothere/cluster",
                       {"drop_replica": {"shard_id": 0, "peer_id": int(h2[0])}})
        self.assertEqual(st, 404, b)
        self.assertEqual(set(self.holders("mv", 2)), set(h2), "a refused request changed the map")

        # unpin_shard: the ring places shard 0 again (settled, data intact).
        self.shard_op(p[2], "mv", "unpin_shard", {"shard_id": 0})
        self.assertFalse(self.shards("mv")[0].get("pinned"))
        L.wait_for("shard 0 back on the ring",
                   lambda: self.c.state()["collections"]["mv"]["moves_left"] == 0
                   and not any(s.get("pinned") and s["id"] == 0 for s in self.shards("mv")), 60)
        L.check(self, self.c, "mv", hist)

    # ---- 3. abort_transfer --------------------------------------------------------------

    def test_c_abort_transfer(self):
        p = self.ports()
        self.ok(p[0], "PUT", "/collections/ab", {"vectors": {"size": L.DIM, "distance": "Euclid"},
                                                 "shard_number": 3, "replication_factor": 2})
        hist = L.History()
        self.upsert("ab", hist, list(range(5000, 5200)), seed=21)
        st = self.c.state()
        ctl = st["controller"]
        k, sh = next((i, s) for i, s in enumerate(st["collections"]["ab"]["shards"])
                     if s["primary"] != ctl)
        src = sh["primary"]
        before = {r["node"] for r in sh["replicas"]}
        dst = next(n.node_id for n in self.c.live() if n.node_id not in before)
        via = next(n for n in self.c.live() if n.node_id != src)
        # A paused source cannot run the transfer: it stays in flight. (A
        # pause well under the lease TTL does not fence the node.)
        paused = self.c.by_id(src)
        self.c.sigstop(paused)
        try:
            self.shard_op(via.port, "ab", "move_shard",
                          {"shard_id": k, "from_peer_id": int(src), "to_peer_id": int(dst)})
            info = self.ok(via.port, "GET", "/collections/ab/cluster")
            xfers = [(t["shard_id"], t["from"], t["to"]) for t in info["shard_transfers"]]
            self.assertEqual(xfers, [(k, int(src), int(dst))])
            self.shard_op(via.port, "ab", "abort_transfer",
                          {"shard_id": k, "from_peer_id": int(src), "to_peer_id": int(dst)})
            info = self.ok(via.port, "GET", "/collections/ab/cluster")
            self.assertEqual(info["shard_transfers"], [])
        finally:
            self.c.sigcont(paused)
        after = self.shards("ab")[k]
        self.assertEqual({r["node"] for r in after["replicas"]}, before)
        self.assertTrue(all(r["state"] == "insync" and not r.get("leaving")
                            for r in after["replicas"]))
        self.assertEqual(after["primary"], src)
        L.check(self, self.c, "ab", hist)

    # ---- 4. delete while a node is down, create again ---------------------------------

    def test_d_delete_then_create_again(self):
        p = self.ports()
        self.ok(p[0], "PUT", "/collections/tmp", {"vectors": {"size": L.DIM, "distance": "Euclid"},
                                                  "shard_number": 4, "replication_factor": 2})
        self.upsert("tmp", None, list(range(7000, 7200)), seed=31)
        victim = self.c.nodes[2]
        self.assertTrue(any(victim.node_id in self.holders("tmp", k) for k in range(4)))
        self.c.kill(victim)
        p = self.ports()
        t0 = time.monotonic()
        self.assertIs(self.ok(p[0], "DELETE", "/collections/tmp"), True)
        print(f"\nDELETE with a node down answered in {time.monotonic() - t0:.3f} s",
              file=sys.stderr)
        # Forgotten, and the live nodes' copies gone, before the answer.
        for port in p:
            st, b = L.call(port, "GET", "/collections/tmp")
            self.assertEqual(st, 404, b)
            self.assertNotIn("tmp", [x["name"] for x in
                                     self.ok(port, "GET", "/collections")["collections"]])
            for k in range(4):
                st, _ = L.call(port, "GET", f"/collections/tmp.s{k}")
                self.assertEqual(st, 404, (port, k))
        st, b = L.call(p[1], "DELETE", "/collections/tmp")
        self.assertEqual((st, b.get("result")), (200, False))

        # The node that was down comes back with its old copies; the same
        # name is created again with a copy of every shard on every node.
        self.c.start_node(victim.idx)
        self.c.wait_members(3)
        p = self.ports()
        t0 = time.monotonic()
        self.ok(p[1], "PUT", "/collections/tmp", {"vectors": {"size": L.DIM, "distance": "Euclid"},
                                                  "shard_number": 2, "replication_factor": 3})
        print(f"PUT of the same name (its old copies dropped on every node first) answered in "
              f"{time.monotonic() - t0:.3f} s", file=sys.stderr)
        for port in p:
            self.assertEqual(self.ok(port, "POST", "/collections/tmp/points/count", {})["count"],
                             0, port)
            self.assertEqual(self.ok(port, "GET", "/collections/tmp")["points_count"], 0)
        for port in p:  # every local copy: none or empty
            for k in range(4):
                st, b = L.call(port, "POST", f"/collections/tmp.s{k}/points/count", {})
                self.assertTrue(st == 404 or (st == 200 and b["result"]["count"] == 0),
                                (port, k, st, b))
        hist = L.History()
        self.upsert("tmp", hist, list(range(9000, 9010)), seed=41, port=p[2])
        for port in p:
            self.assertEqual(self.ok(port, "POST", "/collections/tmp/points/count", {})["count"],
                             10)
        L.check(self, self.c, "tmp", hist)


if __name__ == "__main__":
    unittest.main(verbosity=2)
