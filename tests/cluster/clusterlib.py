"""clusterlib.py: shared harness of the elastic cluster tests (issue 5).

Owns: starting a throwaway etcd (scripts/etcd.sh, watchdog on this
process) and `$QV_CLI serve --cluster` nodes on free loopback ports, each
with its own data directory (reused when a node restarts, so it comes back
with the same node id); killing, stopping and continuing them; a bounded
workload (one writer, one searcher) that logs every operation with its
outcome; and the checker that compares the acknowledged history with every
in-sync copy and exact search with brute force.

Not a test itself (CTest runs tests/cluster/test_cluster_*.py). Every wait
is a deadline poll; every process started is killed by Cluster.stop(),
which the tests call from tearDown/atexit paths. Python stdlib only.
"""
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CLI = os.environ.get("QV_CLI", os.path.join(ROOT, "build", "quiver"))
TTL = 2
DIM = 8


def skip_reason():
    if shutil.which("etcd") is None:
        return "skipped: no etcd (apt-get install etcd-server)"
    return None


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def call(port, method, path, body=None, timeout=60):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=data,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, raw


def wait_for(what, fn, timeout):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except (OSError, ValueError, KeyError) as e:
            last = e
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


class Node:
    def __init__(self, idx, port, proc, data):
        self.idx, self.port, self.proc, self.data = idx, port, proc, data
        self.node_id = None
        self.stopped = False
        self.ready = False  # answered /cluster/state as a member

    @property
    def alive(self):
        return self.proc.poll() is None and not self.stopped and self.ready


class Cluster:
    def __init__(self, move_delay_s=3, etcd_args=(), ttl=TTL, node_args=()):
        self.tmp = tempfile.mkdtemp(prefix="qv-elastic-")
        out = subprocess.run([os.path.join(ROOT, "scripts", "etcd.sh"), "start", "-o",
                              str(os.getpid()), *etcd_args],
                             capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError("etcd.sh start failed: " + out.stderr)
        env = dict(l.split("=", 1) for l in out.stdout.split() if "=" in l)
        self.etcd_dir = env["QV_ETCD_DIR"]
        self.etcd = env["QV_ETCD_ENDPOINTS"]
        self.move_delay_s = move_delay_s
        self.node_args = list(node_args)  # extra `serve` flags of every node
        self.ttl = ttl
        self.nodes = []  # every Node ever started (restarts replace .proc)
        self.bad_logs = []

    def start_node(self, idx=None):
        """Starts node idx (new when None); a known idx restarts with its data."""
        if idx is None:
            idx = len(self.nodes)
        node = self.nodes[idx] if idx < len(self.nodes) else None
        port = node.port if node else free_port()
        data = os.path.join(self.tmp, f"d{idx}")
        log = open(os.path.join(self.tmp, f"n{idx}.log"), "a")
        env = dict(os.environ, QUIVER__CLUSTER__MOVE_DELAY_S=str(self.move_delay_s))
        p = subprocess.Popen([CLI, "serve", "--cluster", "--etcd", self.etcd, "--port", str(port),
                              "--data-dir", data, "--cluster-lease-ttl", str(self.ttl),
                              "--threads", "8", *self.node_args], stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        if node:
            node.proc, node.stopped, node.ready = p, False, False
        else:
            node = Node(idx, port, p, data)
            self.nodes.append(node)
        node.node_id = wait_for(
            f"node {idx} to answer",
            lambda: call(port, "GET", "/cluster/state", timeout=2)[1]["result"].get("node_id"), 60)
        node.ready = True
        return node

    def live(self):
        return [n for n in self.nodes if n.alive]

    def kill(self, node):
        node.ready = False  # before the signal: requests in flight to it fail now
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(timeout=10)

    def sigstop(self, node):
        node.stopped = True
        node.proc.send_signal(signal.SIGSTOP)

    def sigcont(self, node):
        node.proc.send_signal(signal.SIGCONT)
        node.stopped = False

    def state(self, node=None):
        node = node or self.live()[0]
        st, body = call(node.port, "GET", "/cluster/state", timeout=10)
        if st != 200:
            raise AssertionError(f"/cluster/state: {st} {body}")
        return body["result"]

    def by_id(self, node_id):
        return next(n for n in self.nodes if n.node_id == node_id)

    def wait_members(self, n, timeout=30):
        wait_for(f"{n} members", lambda: len(self.state()["members"]) == n, timeout)

    def wait_stable(self, coll, want_nodes=None, timeout=120):
        """Waits until the map of `coll` has no transfer, no dead copy, every
        shard rf insync copies, and (when given) copies only on want_nodes."""
        def ok():
            s = self.state()["collections"][coll]
            if want_nodes is None and s["moves_left"] != 0:
                return False
            rf = s["replication_factor"]
            ids = want_nodes or {m["node_id"] for m in self.state()["members"]}
            for sh in s["shards"]:
                reps = sh["replicas"]
                if any(r["state"] != "insync" for r in reps):
                    return False
                if len(reps) != min(rf, len(ids)):
                    return False
                if any(r["node"] not in ids for r in reps):
                    return False
            return s
        return wait_for(f"{coll} to settle", ok, timeout)

    def stop(self):
        for n in self.nodes:
            if n.proc.poll() is None:
                if n.stopped:
                    n.proc.send_signal(signal.SIGCONT)
                n.proc.send_signal(signal.SIGTERM)
        for n in self.nodes:
            try:
                n.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                n.proc.kill()
                n.proc.wait()
        subprocess.run([os.path.join(ROOT, "scripts", "etcd.sh"), "stop", self.etcd_dir, "2"],
                       capture_output=True, timeout=30)
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


def vec(rng):
    # Multiples of 1/1024: exact in float32, so copies compare exactly.
    return [rng.randint(-1024, 1024) / 1024 for _ in range(DIM)]


class History:
    """What the writer did. For each id the set of states it may be in: an
    acknowledged op fixes it; an op with an unknown outcome adds its state."""

    def __init__(self):
        self.possible = {}  # id -> list of vectors (None = absent)
        self.lock = threading.Lock()
        self.acked = self.failed = 0

    def record(self, ids, vectors, ok):
        with self.lock:
            for i, v in zip(ids, vectors):
                if ok:
                    self.possible[i] = [v]
                else:
                    self.possible.setdefault(i, [None]).append(v)
            if ok:
                self.acked += 1
            else:
                self.failed += 1

    def certain(self):
        with self.lock:
            return {i: p[0] for i, p in self.possible.items() if len(p) == 1}


class Workload:
    """One writer and one searcher against the live nodes, in threads, until
    stop(). The writer upserts new ids in batches, overwrites and deletes
    existing ones; the searcher counts complete, partial and failed answers."""

    def __init__(self, cluster, coll, seed, write_timeout=60):
        self.c, self.coll = cluster, coll
        self.rng = random.Random(seed)
        self.srng = random.Random(seed + 1)
        self.hist = History()
        self.stop_ev = threading.Event()
        self.next_id = 1_000_000 * (seed % 100 + 1)
        self.search = {"complete": 0, "partial": 0, "error": 0}
        self.write_timeout = write_timeout
        self.pick_lock = threading.Lock()
        self.errors = []
        self.threads = [threading.Thread(target=self._writer, daemon=True),
                        threading.Thread(target=self._searcher, daemon=True)]

    def sibling(self, seed):
        """A new workload on the same collection that records into this one's
        history, with ids of its own (seed picks both its choices and its ids)."""
        w = Workload(self.c, self.coll, seed=seed, write_timeout=self.write_timeout)
        w.hist = self.hist
        w.next_id = self.next_id + 100_000 * seed
        return w

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(timeout=120)

    def _port(self, rng):
        live = self.c.live()
        return rng.choice(live).port if live else None

    def write_once(self, kind=None, n_new=8, delete=None):
        """One op; returns whether it was acknowledged."""
        with self.pick_lock:  # the test thread may write beside the writer thread
            rng = self.rng
            kind = kind or rng.choices(["new", "over", "del"], [6, 3, 1])[0]
            known = list(self.hist.certain())
            port = self._port(rng)
            if port is None:
                return False
            if delete is not None:
                kind, ids, vs = "del", list(delete), [None] * len(delete)
            elif kind == "new" or not known:
                kind = "new"
                ids = [self.next_id + j for j in range(n_new)]
                self.next_id += n_new
                vs = [vec(rng) for _ in ids]
            elif kind == "over":
                ids = rng.sample(known, min(4, len(known)))
                vs = [vec(rng) for _ in ids]
            elif kind == "del":
                ids = rng.sample(known, min(2, len(known)))
                vs = [None for _ in ids]
        try:
            if kind == "del":
                st, body = call(port, "POST", f"/collections/{self.coll}/points/delete?wait=true",
                                {"points": ids}, timeout=self.write_timeout)
            else:
                st, body = call(port, "PUT", f"/collections/{self.coll}/points?wait=true",
                                {"points": [{"id": i, "vector": v, "payload": {"i": i}}
                                            for i, v in zip(ids, vs)]},
                                timeout=self.write_timeout)
        except OSError as e:
            st, body = 0, str(e)
        self.hist.record(ids, vs, st == 200)
        if st != 200 and len(self.errors) < 20:
            self.errors.append((kind, st, str(body)[:300]))
        return st == 200

    def _writer(self):
        while not self.stop_ev.is_set():
            self.write_once()

    def _searcher(self):
        while not self.stop_ev.is_set():
            port = self._port(self.srng)
            if port is None:
                time.sleep(0.05)
                continue
            q = vec(self.srng)
            try:
                st, body = call(port, "POST", f"/collections/{self.coll}/points/search",
                                {"vector": q, "limit": 5}, timeout=30)
            except OSError:
                st, body = 0, None
            if st != 200:
                # A node that was just killed refuses; that is the client's view
                # of a dead node, not of the cluster.
                if any(n.port == port and n.alive for n in self.c.nodes):
                    self.search["error"] += 1
                    if len(self.errors) < 20:
                        self.errors.append(("search", st, str(body)[:300]))
            elif body.get("partial"):
                self.search["partial"] += 1
            else:
                self.search["complete"] += 1
            time.sleep(0.02)


def grid(v):
    """A vector as written by vec() (the server prints float32 shortest)."""
    return None if v is None else [round(x * 1024) / 1024 for x in v]


def dist(a, b):
    return sum((x - y) ** 2 for x, y in zip(a, b)) ** 0.5


def read_copies(cluster, coll):
    """{shard: {node_id: {id: vector}}} for every insync copy, read from each
    live node's local shard collection."""
    state = cluster.state()["collections"][coll]
    out = {}
    for sh in state["shards"]:
        for r in sh["replicas"]:
            if r["state"] != "insync":
                continue
            node = cluster.by_id(r["node"])
            if not node.alive:
                continue
            st, body = call(node.port, "POST", f"/collections/{coll}.s{sh['id']}/points/scroll",
                            {"limit": 1_000_000, "with_payload": False, "with_vector": True})
            if st != 200:
                raise AssertionError(f"reading {coll}.s{sh['id']} on node {node.idx}: {st} {body}")
            out.setdefault(sh["id"], {})[r["node"]] = {
                p["id"]: grid(p["vector"]) for p in body["result"]["points"]}
    return state, out


def check(tc, cluster, coll, hist, n_queries=10, seed=7):
    """The checker: every acknowledged upsert present with its last value on
    every insync copy of its shard, no acknowledged delete present anywhere,
    copies of a shard identical on every id whose history is certain, and
    exact search through every live node equal to brute force."""
    state, copies = read_copies(cluster, coll)
    certain = hist.certain()
    where = {}  # id -> shard
    for k, by_node in copies.items():
        for node, pts in by_node.items():
            for i in pts:
                where.setdefault(i, k)
    lost, resurrected, wrong, diverged = [], [], [], []
    for i, v in certain.items():
        if v is None:
            if i in where:
                resurrected.append(i)
            continue
        if i not in where:
            lost.append(i)
            continue
        for node, pts in copies[where[i]].items():
            if i not in pts:
                diverged.append((i, node))
            elif pts[i] != v:
                wrong.append((i, node))
    for i, p in hist.possible.items():  # unknown outcomes: one of the states
        if len(p) > 1 and i in where:
            for node, pts in copies[where[i]].items():
                if i in pts and pts[i] not in p:
                    wrong.append((i, node))
    tc.assertEqual(lost, [], f"acknowledged upserts lost: {lost[:10]}")
    tc.assertEqual(resurrected, [], f"acknowledged deletes came back: {resurrected[:10]}")
    tc.assertEqual(wrong, [], f"copies with a value never written last: {wrong[:10]}")
    tc.assertEqual(diverged, [], f"copies missing an acknowledged point: {diverged[:10]}")
    # Insync copies of a shard are identical, also on ids whose writes were
    # never acknowledged (a copy that missed a write is marked dead by its
    # primary and refilled, never left apart).
    apart = []
    for k, by_node in copies.items():
        tc.assertTrue(by_node, f"shard {k} has no readable insync copy")
        first = next(iter(by_node.values()))
        for node, pts in by_node.items():
            if pts != first:
                apart.append((k, node, sorted(set(pts) ^ set(first))[:5]))
    tc.assertEqual(apart, [], f"insync copies differ: {apart[:5]}")
    tc.assertEqual(len(copies), len(state["shards"]), "a shard has no readable insync copy")
    actual = {}
    for k, by_node in copies.items():
        actual.update(next(iter(by_node.values())))
    rng = random.Random(seed)
    for node in cluster.live():
        for _ in range(n_queries):
            q = vec(rng)
            st, body = call(node.port, "POST", f"/collections/{coll}/points/search",
                            {"vector": q, "limit": 10, "params": {"exact": True},
                             "with_vector": True})
            tc.assertEqual(st, 200, body)
            tc.assertNotIn("partial", body)
            got = [dist(h["vector"], q) for h in body["result"]]
            want = sorted(dist(v, q) for v in actual.values())[:10]
            tc.assertEqual(len(got), len(want))
            for a, b in zip(got, want):
                tc.assertAlmostEqual(a, b, places=4)
    return state
