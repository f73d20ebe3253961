#!/usr/bin/python3
"""quant_faiss.py: the faiss side of bench/run_quant.sh (Debian python3-faiss,
run with /usr/bin/python3). Same data, ground truth, k and nlist as
quant_bench.c; searches single-threaded (omp 1) in one batch per setting,
builds with --threads. Prints markdown tables like quant_bench.

  quant_faiss.py --base B.fvecs --query Q.fvecs [--gt G.ivecs[.gz]]
                 [--metric l2|cos] [--nq N] [--k 10] [--nlist N]
                 [--ivf-pq-ratios 16,32] [--threads 2] [--scan-nq 100]
"""
import argparse
import gzip
import time

import faiss
import numpy as np


def read_vecs(path, dtype):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = np.frombuffer(f.read(), dtype=np.int32)
    d = int(raw[0])
    return raw.reshape(-1, d + 1)[:, 1:].copy().view(dtype)


def recall(I, gt, k):
    hit = 0
    for row, truth in zip(I, gt):
        hit += len(set(row[:k].tolist()) & set(truth[:k].tolist()))
    return hit / (k * len(gt))


def timed_search(index, q, k):
    t0 = time.perf_counter()
    _, I = index.search(q, k)
    return I, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--query", required=True)
    ap.add_argument("--gt")
    ap.add_argument("--metric", default="l2")
    ap.add_argument("--nq", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--nlist", type=int, default=0)
    ap.add_argument("--ivf-pq-ratios", default="16,32")
    ap.add_argument("--pq-ratios", default="")  # accepted, unused
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scan-nq", type=int, default=100)
    a = ap.parse_args()
    xb = read_vecs(a.base, np.float32)
    xq = read_vecs(a.query, np.float32)[: a.nq]
    n, d = xb.shape
    k = a.k
    metric = faiss.METRIC_L2
    if a.metric == "cos":
        faiss.normalize_L2(xb)
        faiss.normalize_L2(xq)
        metric = faiss.METRIC_INNER_PRODUCT
    if a.gt:
        gt = read_vecs(a.gt, np.int32)[: len(xq), :k]
    else:
        flat = faiss.IndexFlat(d, metric)
        flat.add(xb)
        _, gt = flat.search(xq, k)
    nlist = a.nlist
    if nlist == 0:
        nlist = 1
        while nlist * nlist * 2 < n:
            nlist *= 2
    nq = len(xq)
    print(f"# faiss {faiss.__version__}: {a.base} ({n} x {d}), "
          f"{'cosine' if a.metric == 'cos' else 'L2'}, {nq} queries, k={k}, "
          f"nlist {nlist}, search threads 1, build threads {a.threads}\n")
    print("| index | param | recall | QPS | B/vec | build s |")
    print("|---|---|---|---|---|---|")

    def row(name, param, I, t, bpv, bs):
        print(f"| {name} | {param} | {recall(I, gt, k):.4f} | "
              f"{nq / t:.0f} | {bpv:.0f} | {bs:.2f} |", flush=True)

    def build(index, train=True):
        faiss.omp_set_num_threads(a.threads)
        t0 = time.perf_counter()
        if train:
            index.train(xb)
        index.add(xb)
        bs = time.perf_counter() - t0
        faiss.omp_set_num_threads(1)
        return bs

    # brute-force scans: Debian's faiss is the GENERIC build (no AVX2), so
    # these run on at most --scan-nq queries to keep the run short
    sq = xq[: a.scan_nq]
    sgt = gt[: a.scan_nq]

    def srow(name, param, I, t, bpv, bs):
        print(f"| {name} | {param} | {recall(I, sgt, k):.4f} | "
              f"{len(sq) / t:.0f} | {bpv:.0f} | {bs:.2f} |", flush=True)

    for name, index, bpv in (
            ("Flat", faiss.IndexFlat(d, metric), 4 * d),
            ("SQ8 flat", faiss.IndexScalarQuantizer(
                d, faiss.ScalarQuantizer.QT_8bit, metric), d),
            ("SQfp16 flat", faiss.IndexScalarQuantizer(
                d, faiss.ScalarQuantizer.QT_fp16, metric), 2 * d)):
        bs = build(index, train=not name.startswith("Flat"))
        I, t = timed_search(index, sq, k)
        srow(name, "-", I, t, bpv, bs)

    probes = [p for p in (1, 2, 4, 8, 16, 32, 64) if p <= nlist]
    quant = faiss.IndexFlat(d, metric)
    index = faiss.IndexIVFFlat(quant, d, nlist, metric)
    bs = build(index)
    for p in probes:
        index.nprobe = p
        I, t = timed_search(index, xq, k)
        row("IVFFlat", f"nprobe {p}", I, t, 4 * d + 8, bs)

    for r in [int(x) for x in a.ivf_pq_ratios.split(",") if x]:
        m = 4 * d // r
        quant = faiss.IndexFlat(d, metric)
        index = faiss.IndexIVFPQ(quant, d, nlist, m, 8, metric)
        bs = build(index)
        ref = faiss.IndexRefineFlat(index, faiss.swig_ptr(xb))
        for p in probes:
            index.nprobe = p
            I, t = timed_search(index, xq, k)
            row(f"IVFPQ x{r} (m={m})", f"nprobe {p}", I, t, m + 8, bs)
        for kf in (4, 8):
            ref.k_factor = kf
            for p in probes:
                index.nprobe = p
                I, t = timed_search(ref, xq, k)
                row(f"IVFPQ x{r} + refine {kf}", f"nprobe {p}", I, t, m + 8,
                    bs)

    index = faiss.IndexHNSWSQ(d, faiss.ScalarQuantizer.QT_8bit, 16, metric)
    index.hnsw.efConstruction = 100
    bs = build(index)
    for ef in (16, 32, 64, 128, 256):
        index.hnsw.efSearch = ef
        I, t = timed_search(index, xq, k)
        row("HNSWSQ8 M16 efC100", f"ef {ef}", I, t, d + 16 * 2 * 4, bs)


if __name__ == "__main__":
    main()
