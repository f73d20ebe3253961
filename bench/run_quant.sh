#!/bin/sh
# run_quant.sh: reproduces every number in bench/README-quant.md.
#
# Builds src/base + src/vec + src/quant and bench/quant_bench.c with the
# library's Release flags (build-quant/build.sh; no -march=native: kernels
# are picked at run time), converts Fashion-MNIST to .fvecs once (into
# bench/out/quant/, or $QV_BENCH_OUT), then for each data set runs
# quant_bench and, when Debian's python3-faiss is installed, the same
# settings through faiss (bench/quant_faiss.py under /usr/bin/python3).
# Output: one markdown file per data set and program in the out directory,
# also echoed.
#
# Environment: QV_BENCH_SETS (default "fashion scifact siftsmall"),
# QV_BENCH_NQ (queries, default 1000; scifact has 300, siftsmall 100),
# QV_BENCH_THREADS (build threads, default 2), QUIVER_SIMD to cap the ISA,
# QV_BENCH_FAISS=0 to skip faiss.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
data=${QV_SHARED_DATA:-$root/../shared/data}
out=${QV_BENCH_OUT:-$root/bench/out/quant}
nq=${QV_BENCH_NQ:-1000}
threads=${QV_BENCH_THREADS:-2}
mkdir -p "$out"

"$root/build-quant/build.sh" release >/dev/null
bench=$root/build-quant/quant_bench

fm=$data/fashion-mnist-784-euclidean
vecs=$data/tools/vecs.py

run() { # name, then the common arguments
  name=$1
  shift
  echo "== $name: quant_bench $*"
  "$bench" "$@" --threads "$threads" | tee "$out/$name-quiver.md"
  if [ "${QV_BENCH_FAISS:-1}" != 0 ] && /usr/bin/python3 -c 'import faiss' 2>/dev/null; then
    echo "== $name: quant_faiss.py $*"
    /usr/bin/python3 "$root/bench/quant_faiss.py" "$@" --threads "$threads" \
      2>"$out/$name-faiss.log" | tee "$out/$name-faiss.md"
  fi
}

for set in ${QV_BENCH_SETS:-fashion scifact siftsmall}; do
  case $set in
  fashion)
    [ -f "$out/fmnist_base.fvecs" ] ||
      python3 "$vecs" idx2fvecs "$fm/train-images-idx3-ubyte.gz" "$out/fmnist_base.fvecs"
    [ -f "$out/fmnist_query.fvecs" ] ||
      python3 "$vecs" idx2fvecs "$fm/t10k-images-idx3-ubyte.gz" "$out/fmnist_query.fvecs"
    run fashion --base "$out/fmnist_base.fvecs" --query "$out/fmnist_query.fvecs" \
      --gt "$fm/groundtruth.l2.top100.ivecs.gz" --metric l2 --nq "$nq" \
      --pq-ratios 8,16,32,64 --ivf-pq-ratios 16,32
    ;;
  scifact)
    d=$data/scifact-use512
    run scifact --base "$d/docs.fvecs" --query "$d/queries.fvecs" --metric cos \
      --nq "$nq" --pq-ratios 8,16,32,64 --ivf-pq-ratios 16,32
    ;;
  siftsmall)
    d=$data/siftsmall
    run siftsmall --base "$d/siftsmall_base.fvecs" --query "$d/siftsmall_query.fvecs" \
      --metric l2 --nq "$nq" --pq-ratios 8,16,32,64 --ivf-pq-ratios 16,32
    ;;
  *) echo "unknown set $set" >&2; exit 2 ;;
  esac
done
