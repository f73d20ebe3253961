#!/usr/bin/python3
"""peer_hnswlib.py: the hnswlib side of bench/run_core.sh, and its report.

  peer_hnswlib.py run    --base B.fvecs --queries Q.fvecs --gt GT.ivecs[.gz]
                         --m 16 --ef-construction 200 --build-threads 2
                         --ef 10,20,... --k 10 --repeat 3 --index-file F
                         --out peer.json
                         [--quiver-bench "quiver bench ..." --quiver-out q.jsonl]
  peer_hnswlib.py report --dataset NAME --quiver quiver.jsonl
                         --quiver-import import.txt --quiver-reopen-s S
                         --peer peer.json --out core-NAME.md

`run` measures Debian's python3-hnswlib (run it with /usr/bin/python3): build
time with --build-threads threads, recall@k against the ground truth, and
query speed three ways, because they answer different questions:
  loop    one knn_query call per query, one thread, each call timed on its
          own (perf_counter_ns): comparable to `quiver bench --threads 1`,
          but each call also pays Python's call and numpy overhead;
  batch1  one knn_query call for all queries, num_threads=1: hnswlib's C++
          loop with no per-query Python cost;
  batch2  the same with num_threads=2.
With --quiver-bench, the given `quiver bench` command (without --ef) is run
for each ef right before or after hnswlib's measurement at that ef, in
alternating order, so that both systems see the same state of a shared
machine; its JSON rows go to --quiver-out.

QPS is the median of --repeat passes; as in `quiver bench --min-pass-ms`, a
small query set is run in rounds so that each pass lasts at least
--min-pass-ms. The index is saved to --index-file for its size, then loaded
again to time a reopen.

`report` joins those numbers with `quiver bench --json` output into one
markdown table, with Quiver/hnswlib ratios per ef and at the smallest ef
where each reaches recall >= 0.95.
"""
import argparse
import gzip
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time

RECALL_TARGET = 0.95


def read_vecs(path, dtype):
    """Reads an .fvecs/.ivecs file (optionally .gz) into an (n, d) array."""
    import numpy as np

    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = np.frombuffer(f.read(), dtype="<i4")
    if raw.size == 0:
        raise SystemExit("%s: empty" % path)
    d = int(raw[0])
    if d <= 0 or raw.size % (d + 1) != 0:
        raise SystemExit("%s: not a %d-d vecs file" % (path, d))
    rows = raw.reshape(-1, d + 1)
    if not (rows[:, 0] == d).all():
        raise SystemExit("%s: records differ in dimension" % path)
    return np.ascontiguousarray(rows[:, 1:]).view(dtype)


def recall_at(labels, gt, k):
    hits = 0
    for row, truth in zip(labels, gt):
        hits += len(set(row[:k].tolist()) & set(truth[:k].tolist()))
    return hits / float(k * len(gt))


def percentile(sorted_vals, p):
    """Linear interpolation between closest ranks, as quiver bench does."""
    if not sorted_vals:
        return 0.0
    rank = p / 100.0 * (len(sorted_vals) - 1)
    lo = int(rank)
    if lo + 1 >= len(sorted_vals):
        return sorted_vals[-1]
    return sorted_vals[lo] + (sorted_vals[lo + 1] - sorted_vals[lo]) * (rank - lo)


def cmd_run(a):
    import hnswlib
    import numpy as np

    base = read_vecs(a.base, "<f4")
    queries = read_vecs(a.queries, "<f4")
    gt = read_vecs(a.gt, "<i4")
    if a.limit_queries:
        queries = queries[: a.limit_queries]
    gt = gt[: len(queries)]
    n, dim = base.shape
    efs = [int(x) for x in a.ef.split(",")]

    index = hnswlib.Index(space="l2", dim=dim)
    index.init_index(max_elements=n, M=a.m, ef_construction=a.ef_construction,
                     random_seed=100)
    index.set_num_threads(a.build_threads)
    t0 = time.perf_counter()
    index.add_items(base, np.arange(n), num_threads=a.build_threads)
    build_s = time.perf_counter() - t0
    index.save_index(a.index_file)
    file_bytes = os.path.getsize(a.index_file)
    t0 = time.perf_counter()
    reloaded = hnswlib.Index(space="l2", dim=dim)
    reloaded.load_index(a.index_file, max_elements=n)
    reopen_s = time.perf_counter() - t0
    del reloaded
    print("hnswlib: built %d x %d in %.2f s (M=%d, ef_construction=%d, %d "
          "threads); index file %d bytes; reload %.3f s"
          % (n, dim, build_s, a.m, a.ef_construction, a.build_threads,
             file_bytes, reopen_s), file=sys.stderr)

    rows = []
    nq = len(queries)
    one = [queries[i:i + 1] for i in range(nq)]
    min_pass = a.min_pass_ms / 1000.0

    def loop_pass(rounds, lat):
        labels = []
        t_pass = time.perf_counter()
        for _ in range(rounds):
            labels = []
            for q in one:
                t = time.perf_counter_ns()
                lab, _ = index.knn_query(q, k=a.k, num_threads=1)
                lat.append((time.perf_counter_ns() - t) / 1e6)
                labels.append(lab[0])
        return nq * rounds / (time.perf_counter() - t_pass), labels

    def batch_pass(rounds, threads):
        t = time.perf_counter()
        for _ in range(rounds):
            lab, _ = index.knn_query(queries, k=a.k, num_threads=threads)
        return nq * rounds / (time.perf_counter() - t), lab

    def measure(run_pass):
        """Median QPS over --repeat passes after a calibration pass, which
        counts when it is long enough and sets the rounds otherwise."""
        t = time.perf_counter()
        qps0, labels = run_pass(1)
        wall = time.perf_counter() - t
        qps, rounds = [], 1
        if wall >= min_pass:
            qps.append(qps0)
        else:
            rounds = int(min_pass / max(wall, 1e-6)) + 1
        while len(qps) < a.repeat:
            q, labels = run_pass(rounds)
            qps.append(q)
        return statistics.median(qps), labels, rounds

    quiver_rows = []

    def run_quiver(ef):
        cmd = shlex.split(a.quiver_bench) + ["--ef", str(ef), "--json"]
        res = subprocess.run(cmd, stdout=subprocess.PIPE, check=True,
                             universal_newlines=True)
        for line in res.stdout.splitlines():
            row = json.loads(line)
            if row.get("mode") == "hnsw":
                quiver_rows.append(row)
                print("quiver:  ef=%d threads=%d recall=%.4f %.0f qps, p50 "
                      "%.3f ms, p99 %.3f ms" % (ef, row["threads"],
                                                row["recall"], row["qps"],
                                                row["p50_ms"], row["p99_ms"]),
                      file=sys.stderr)

    for i, ef in enumerate(efs):
        if a.quiver_bench and i % 2 == 0:
            run_quiver(ef)
        index.set_ef(ef)
        index.set_num_threads(1)
        lat = []
        loop_qps, labels, rounds = measure(lambda r: loop_pass(r, lat))
        rec = recall_at(labels, gt, a.k)
        batch1, lab1, _ = measure(lambda r: batch_pass(r, 1))
        batch2, _, _ = measure(lambda r: batch_pass(r, 2))
        lat.sort()
        row = {
            "ef": ef, "recall": rec, "recall_batch": recall_at(lab1, gt, a.k),
            "qps_loop": loop_qps, "qps_batch1": batch1, "qps_batch2": batch2,
            "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
            "loop_rounds": rounds,
        }
        rows.append(row)
        print("hnswlib: ef=%d recall=%.4f loop %.0f qps, batch %.0f/%.0f qps "
              "(1/2 threads), p50 %.3f ms, p99 %.3f ms"
              % (ef, rec, loop_qps, batch1, batch2, row["p50_ms"],
                 row["p99_ms"]), file=sys.stderr)
        if a.quiver_bench and i % 2 == 1:
            run_quiver(ef)
    if a.quiver_bench:
        with open(a.quiver_out, "w") as f:
            for row in quiver_rows:
                f.write(json.dumps(row) + "\n")

    result = {
        "hnswlib_version": getattr(hnswlib, "__version__", "0.6.2"),
        "points": index.get_current_count(), "dim": dim, "queries": nq,
        "k": a.k, "m": a.m, "ef_construction": a.ef_construction,
        "build_threads": a.build_threads, "build_s": build_s,
        "index_file_bytes": file_bytes, "reopen_s": reopen_s,
        "repeat": a.repeat, "rows": rows,
    }
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)


# ---- report ----------------------------------------------------------------

def first_at_target(rows, recall_key, qps_key):
    """(ef, recall, qps) of the smallest ef whose recall reaches the target."""
    for r in sorted(rows, key=lambda r: r["ef"]):
        if r[recall_key] >= RECALL_TARGET:
            return r["ef"], r[recall_key], r[qps_key]
    return None


def ratio(a, b):
    return "%.2f" % (a / b) if a and b else "-"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def cmd_report(a):
    quiver = [json.loads(l) for path in a.quiver for l in open(path)
              if l.strip()]
    summary = next(q for q in quiver if q.get("summary"))
    hnsw = {}
    exact = {}
    for q in quiver:
        if q.get("mode") == "hnsw":
            hnsw[(q["ef"], q["threads"])] = q
        elif q.get("mode") == "exact":
            exact[q["threads"]] = q
    peer = json.load(open(a.peer))
    imp = open(a.quiver_import).read()
    m = re.search(r"imported (\d+) points \((\d+)-d\) in ([\d.]+) s: (\d+) "
                  r"points/s; indexed in ([\d.]+) s", imp)
    if not m:
        raise SystemExit("%s: no 'imported ...' line" % a.quiver_import)
    q_load_s, q_index_s = float(m.group(3)), float(m.group(5))

    L = []
    L.append("# Quiver vs hnswlib: %s" % a.dataset)
    L.append("")
    L.append("%d points x %d-d (%s), %d queries, recall@%d against the "
             "exact ground truth. M=%d, ef_construction=%d, %d build threads "
             "for both." % (summary["points"], summary["dim"],
                            summary["distance"], peer["queries"], peer["k"],
                            summary["m"], summary["ef_construct"],
                            peer["build_threads"]))
    L.append("")
    L.append("Machine: %s, %d CPUs; Quiver kernels: %s; hnswlib %s from "
             "Debian (python3-hnswlib, built for baseline x86-64: SSE "
             "kernels, no AVX). Measured %s by `bench/run_core.sh %s`."
             % (cpu_model(), os.cpu_count(), summary["isa"],
                peer["hnswlib_version"], time.strftime("%Y-%m-%d"),
                a.dataset))
    if a.load:
        L.append("")
        L.append("Load average (1/5/15 min) at the start: %s; at the end: %s. "
                 "Other work on the machine skews QPS, most of all with 2 "
                 "threads." % (" ".join(a.load.split()[:3]),
                               " ".join(a.load_end.split()[:3]) or "?"))
    L.append("")
    L.append("## Build, size, reopen")
    L.append("")
    L.append("| | Quiver | hnswlib | Quiver / hnswlib |")
    L.append("|---|---|---|---|")
    L.append("| load (upserts into the WAL) | %.2f s | - | |" % q_load_s)
    L.append("| index build (graph) | %.2f s (build_seconds %.2f) | %.2f s | "
             "%s |" % (q_index_s, summary["build_s"], peer["build_s"],
                       ratio(summary["build_s"], peer["build_s"])))
    L.append("| import + build, wall | %.2f s | %.2f s | %s |"
             % (q_load_s + q_index_s, peer["build_s"],
                ratio(q_load_s + q_index_s, peer["build_s"])))
    L.append("| index bytes | %d (vectors %d + graph %d) | %d (saved file) "
             "| %s |" % (summary["index_bytes"], summary["vector_bytes"],
                         summary["graph_bytes"], peer["index_file_bytes"],
                         ratio(summary["index_bytes"],
                               peer["index_file_bytes"])))
    L.append("| points | %d | %d | |" % (summary["points"], peer["points"]))
    L.append("| reopen | %.3f s (`quiver info`, process included) | %.3f s "
             "(load_index) | %s |" % (a.quiver_reopen_s, peer["reopen_s"],
                                      ratio(a.quiver_reopen_s,
                                            peer["reopen_s"])))
    L.append("")
    L.append("## Queries (k=%d)" % peer["k"])
    L.append("")
    L.append("Quiver: `quiver bench` (a C loop, one `qv_search` per "
             "query), QPS = median of %d passes, p50/p99 per query. hnswlib "
             "loop: one `knn_query` call per query from Python (includes "
             "call overhead); batch: one call for all queries with 1 or 2 "
             "threads. The two were measured alternately, ef by ef."
             % peer["repeat"])
    L.append("")
    L.append("| ef | Q recall | Q QPS 1t | Q QPS 2t | Q p50 ms | Q p99 ms | "
             "H recall | H QPS loop | H QPS batch 1t | H QPS batch 2t | "
             "H p50 ms | H p99 ms | QPS ratio 1t vs loop | 1t vs batch 1t | "
             "2t vs batch 2t |")
    L.append("|" + "---|" * 15)
    for r in peer["rows"]:
        ef = r["ef"]
        q1 = hnsw.get((ef, 1))
        q2 = hnsw.get((ef, 2))
        if q1 is None:
            continue
        L.append("| %d | %.4f | %.0f | %s | %.3f | %.3f | %.4f | %.0f | %.0f "
                 "| %.0f | %.3f | %.3f | %s | %s | %s |" % (
                     ef, q1["recall"], q1["qps"],
                     "%.0f" % q2["qps"] if q2 else "-", q1["p50_ms"],
                     q1["p99_ms"], r["recall"], r["qps_loop"],
                     r["qps_batch1"], r["qps_batch2"], r["p50_ms"],
                     r["p99_ms"], ratio(q1["qps"], r["qps_loop"]),
                     ratio(q1["qps"], r["qps_batch1"]),
                     ratio(q2["qps"], r["qps_batch2"]) if q2 else "-"))
    L.append("")
    for t, e in sorted(exact.items()):
        L.append("Quiver brute force (`--exact`, %d queries, %d thread%s): "
                 "%.1f QPS, recall %.4f, p50 %.2f ms, scan %.2f GB/s."
                 % (e["queries"], t, "s" if t > 1 else "", e["qps"],
                    e["recall"], e["p50_ms"], e["scan_gbps"]))
    L.append("")
    L.append("## At matched recall >= %.2f" % RECALL_TARGET)
    L.append("")
    q_rows = [dict(ef=ef, recall=v["recall"], qps=v["qps"])
              for (ef, t), v in hnsw.items() if t == 1]
    q2_rows = [dict(ef=ef, recall=v["recall"], qps=v["qps"])
               for (ef, t), v in hnsw.items() if t == 2]
    qa = first_at_target(q_rows, "recall", "qps")
    qa2 = first_at_target(q2_rows, "recall", "qps")
    for label, key in (("loop", "qps_loop"), ("batch 1t", "qps_batch1")):
        ha = first_at_target(peer["rows"], "recall", key)
        if qa and ha:
            L.append("- 1 thread, hnswlib %s: Quiver ef=%d recall %.4f %.0f "
                     "QPS; hnswlib ef=%d recall %.4f %.0f QPS; ratio **%s**"
                     % (label, qa[0], qa[1], qa[2], ha[0], ha[1], ha[2],
                        ratio(qa[2], ha[2])))
        else:
            L.append("- 1 thread, hnswlib %s: recall %.2f not reached by "
                     "%s" % (label, RECALL_TARGET,
                             "Quiver" if not qa else "hnswlib"))
    ha2 = first_at_target(peer["rows"], "recall", "qps_batch2")
    if qa2 and ha2:
        L.append("- 2 threads, hnswlib batch 2t: Quiver ef=%d %.0f QPS; "
                 "hnswlib ef=%d %.0f QPS; ratio **%s**"
                 % (qa2[0], qa2[2], ha2[0], ha2[2], ratio(qa2[2], ha2[2])))
    L.append("- index build time ratio (Quiver build_seconds / hnswlib "
             "add_items): **%s**" % ratio(summary["build_s"],
                                           peer["build_s"]))
    L.append("")
    text = "\n".join(L)
    with open(a.out, "w") as f:
        f.write(text)
    print(text)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--base", required=True)
    r.add_argument("--queries", required=True)
    r.add_argument("--gt", required=True)
    r.add_argument("--m", type=int, default=16)
    r.add_argument("--ef-construction", type=int, default=200)
    r.add_argument("--build-threads", type=int, default=2)
    r.add_argument("--ef", default="10,20,40,80")
    r.add_argument("--k", type=int, default=10)
    r.add_argument("--repeat", type=int, default=3)
    r.add_argument("--limit-queries", type=int, default=0)
    r.add_argument("--min-pass-ms", type=int, default=200)
    r.add_argument("--quiver-bench", default="",
                   help="a `quiver bench ...` command without --ef/--json")
    r.add_argument("--quiver-out", default="")
    r.add_argument("--index-file", required=True)
    r.add_argument("--out", required=True)
    s = sub.add_parser("report")
    s.add_argument("--dataset", required=True)
    s.add_argument("--quiver", required=True, nargs="+",
                   help="quiver bench --json outputs (rows and a summary)")
    s.add_argument("--quiver-import", required=True)
    s.add_argument("--quiver-reopen-s", type=float, required=True)
    s.add_argument("--peer", required=True)
    s.add_argument("--load", default="", help="/proc/loadavg at the start")
    s.add_argument("--load-end", default="", help="/proc/loadavg at the end")
    s.add_argument("--out", required=True)
    a = p.parse_args()
    if a.cmd == "run":
        cmd_run(a)
    else:
        cmd_report(a)


if __name__ == "__main__":
    main()
