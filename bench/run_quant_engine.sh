#!/bin/bash
# run_quant_engine.sh: quantized storage and IVF end to end — every Quiver
# configuration through `quiver import` + `quiver bench`, next to Debian's
# hnswlib and faiss on the same data, truth and threads, in one run.
#
#   bench/run_quant_engine.sh [fashion|scifact|sift]      (default fashion)
#   QV_BENCH_QUICK=1 bench/run_quant_engine.sh sift       (smoke: ~1-2 min)
#
# Quiver configurations (name: import flags / bench flags):
#   f32-hnsw     float32 HNSW                         / --ef LIST
#   f16-hnsw     --datatype float16                   / --ef LIST
#   int8-os*     --quantization int8 --on-disk-vectors / --ef LIST --oversampling X
#   bq1-os*      --quantization binary --bq-bits 1 --on-disk-vectors / ... --oversampling X
#   bq1.5-os*    --quantization binary --bq-bits 1.5 --on-disk-vectors / ... --oversampling X
#   bq2-os*      --quantization binary --bq-bits 2 --on-disk-vectors / ... --oversampling X
#   pq16, pq32   --quantization pq --pq-ratio R --on-disk-vectors / ... --oversampling X
#   ivf-flat     --index ivf-flat --nlist NL           / --nprobe LIST
#   ivf-pq16     --index ivf-pq --pq-ratio 16 --nlist NL --on-disk-vectors
#                                                      / --nprobe LIST --oversampling X
# Peers (bench/peer_quant.py, /usr/bin/python3): hnswlib float32 HNSW; faiss
# IndexHNSWFlat, IndexHNSWSQ QT_8bit, IndexIVFFlat, IndexIVFPQ (+refine),
# IndexBinaryHNSW (+ numpy rescoring). Same M (16), ef_construction (100),
# nlist (round(4 sqrt(n))), ef and nprobe lists, k = 10, truth = exact
# top-100 by numpy, single-thread queries (OMP_NUM_THREADS=1), builds with
# QV_BENCH_BUILD_THREADS (default 2) threads on every side.
#
# Output: bench/out/quant-engine/<set>/ (or $QV_BENCH_OUT): quiver-<cfg>.jsonl,
# quiver-<cfg>-import.txt, peers.jsonl, report.md (the table and the
# targets of issue 4), run.txt (this run's command line and settings).
#
# Environment: QV_BENCH_QUICK=1 (5,000 base vectors, 100 queries, short
# lists, one repeat), QV_BENCH_NQ (queries, default 1000), QV_BENCH_REPEAT
# (default 3), QV_BENCH_EF, QV_BENCH_NPROBE, QV_BENCH_OS (oversampling of
# the int8 / binary / pq rows; a list runs one configuration each),
# QV_BENCH_CONFIGS (Quiver configurations to run, default all),
# QV_BENCH_PEERS=0 (skip the peers), QV_BUILD (build dir, default build/),
# QUIVER_SIMD to cap our kernels.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
set_name=${1:-fashion}
case $set_name in fashion | scifact | sift) ;; *)
  echo "usage: $0 [fashion|scifact|sift]" >&2
  exit 2
  ;;
esac
data=${QV_SHARED_DATA:-$root/../shared/data}
out=${QV_BENCH_OUT:-$root/bench/out/quant-engine}/$set_name
build=${QV_BUILD:-$root/build}
quick=${QV_BENCH_QUICK:-0}
build_threads=${QV_BENCH_BUILD_THREADS:-2}
if [ "$quick" = 1 ]; then
  nq=${QV_BENCH_NQ:-100} repeat=${QV_BENCH_REPEAT:-1} limit_base=5000
  efs=${QV_BENCH_EF:-32,64} nprobes=${QV_BENCH_NPROBE:-4,16} oss=${QV_BENCH_OS:-4}
else
  nq=${QV_BENCH_NQ:-1000} repeat=${QV_BENCH_REPEAT:-3} limit_base=0
  efs=${QV_BENCH_EF:-16,32,64,128,256} nprobes=${QV_BENCH_NPROBE:-1,2,4,8,16,32,64}
  oss=${QV_BENCH_OS:-2,4,8}
fi
configs=${QV_BENCH_CONFIGS:-f32-hnsw f16-hnsw int8 bq1 bq1.5 bq2 pq16 pq32 ivf-flat ivf-pq16 ivf-pq32}
export OMP_NUM_THREADS=1
py=/usr/bin/python3

# ---- tools -------------------------------------------------------------------------
if [ "${QV_BENCH_PEERS:-1}" != 0 ] && ! $py -c 'import faiss, hnswlib, numpy' 2>/dev/null; then
  echo "installing the peers (python3-faiss python3-hnswlib python3-numpy)" >&2
  apt-get install -y python3-faiss python3-hnswlib python3-numpy >/dev/null ||
    sudo apt-get install -y python3-faiss python3-hnswlib python3-numpy >/dev/null
fi
if [ ! -x "$build/quiver" ]; then
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$build" -j2 --target quiver_cli >/dev/null
quiver=$build/quiver

rm -rf "$out"
mkdir -p "$out"
{
  echo "# $0 $*"
  echo "date: $(date -u +%FT%TZ)  host: $(hostname)  cpus: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "git: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')" \
    "$(git -C "$root" status --porcelain 2>/dev/null | grep -q . && echo '(dirty tree)')"
  echo "set=$set_name quick=$quick nq=$nq repeat=$repeat limit_base=$limit_base"
  echo "ef=$efs nprobe=$nprobes oversampling=$oss build_threads=$build_threads"
  echo "configs=$configs peers=${QV_BENCH_PEERS:-1} QUIVER_SIMD=${QUIVER_SIMD:-} OMP_NUM_THREADS=1"
  echo "quiver=$quiver ($(grep -m1 CMAKE_BUILD_TYPE: "$build/CMakeCache.txt" | cut -d= -f2))"
} | tee "$out/run.txt"

# ---- data ----------------------------------------------------------------------------
$py "$root/bench/peer_quant.py" prep --set "$set_name" --data "$data" --out "$out" \
  --nq "$nq" --limit-base "$limit_base" | tee -a "$out/run.txt"
meta() { $py -c "import json,sys; print(json.load(open('$out/meta.json'))['$1'])"; }
distance=$(meta distance)
nlist=$(meta nlist)

# ---- Quiver --------------------------------------------------------------------------
# qrun NAME "import flags" "bench flags": a fresh collection per configuration.
qrun() {
  local name=$1 iflags=$2 bflags=$3 db=$out/db
  echo "== quiver $name: import $iflags / bench $bflags" | tee -a "$out/run.txt"
  # shellcheck disable=SC2086
  "$quiver" import --data-dir "$db" --collection "$name" --distance "$distance" \
    --full-scan-threshold 0 --build-threads "$build_threads" $iflags "$out/base.fvecs" \
    >"$out/quiver-$name-import.txt" 2>"$out/quiver-$name-import.log"
  cat "$out/quiver-$name-import.txt"
  # shellcheck disable=SC2086
  "$quiver" bench --data-dir "$db" --collection "$name" --queries "$out/query.fvecs" \
    --gt "$out/gt.ivecs" --k 10 --threads 1 --repeat "$repeat" --json $bflags \
    >"$out/quiver-$name.jsonl" 2>"$out/quiver-$name-bench.log"
  grep -v '"summary"' "$out/quiver-$name.jsonl" |
    $py -c 'import json,sys
for l in sys.stdin:
    r = json.loads(l)
    print("   %-8s ef %-5s nprobe %-5s recall %.4f  qps %8.0f" % (r["mode"], r["ef"], r["nprobe"], r["recall"], r["qps"]))'
  rm -rf "$db" # one collection on disk at a time
}

for cfg in $configs; do
  case $cfg in
  f32-hnsw) qrun f32-hnsw "" "--ef $efs" ;;
  f16-hnsw) qrun f16-hnsw "--datatype float16" "--ef $efs" ;;
  int8)
    for os in ${oss//,/ }; do
      qrun "int8-os$os" "--quantization int8 --on-disk-vectors" "--ef $efs --oversampling $os"
    done
    ;;
  bq1 | bq2 | bq1.5)
    bits=${cfg#bq}
    for os in ${oss//,/ }; do
      qrun "$cfg-os$os" "--quantization binary --bq-bits $bits --on-disk-vectors" \
        "--ef $efs --oversampling $os"
    done
    ;;
  pq16 | pq32)
    r=${cfg#pq}
    qrun "$cfg" "--quantization pq --pq-ratio $r --on-disk-vectors" \
      "--ef $efs --oversampling ${oss##*,}"
    ;;
  ivf-flat) qrun ivf-flat "--index ivf-flat --nlist $nlist" "--nprobe $nprobes" ;;
  ivf-pq16 | ivf-pq32)
    r=${cfg#ivf-pq}
    qrun "$cfg" "--index ivf-pq --pq-ratio $r --nlist $nlist --on-disk-vectors" \
      "--nprobe $nprobes --oversampling ${oss##*,}"
    ;;
  *) echo "unknown configuration $cfg" >&2 ;;
  esac
done

# ---- peers ---------------------------------------------------------------------------
if [ "${QV_BENCH_PEERS:-1}" != 0 ]; then
  common=(--out "$out" --ef "$efs" --nprobe "$nprobes" --os "$oss" --repeat "$repeat"
    --build-threads "$build_threads")
  echo "== hnswlib ${common[*]}" | tee -a "$out/run.txt"
  $py "$root/bench/peer_quant.py" hnswlib "${common[@]}"
  echo "== faiss ${common[*]} --pq-ratios 16" | tee -a "$out/run.txt"
  $py "$root/bench/peer_quant.py" faiss "${common[@]}" --pq-ratios 16
fi

$py "$root/bench/peer_quant.py" report --out "$out" \
  --title "Quantization and IVF: Quiver vs hnswlib and faiss ($set_name)"
echo "report: $out/report.md"
