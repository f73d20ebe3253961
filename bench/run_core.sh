#!/usr/bin/env bash
# run_core.sh: the end-to-end core benchmark, Quiver against hnswlib, in one
# run on this machine.
#
#   bench/run_core.sh [fashion|sift]      (default: fashion)
#
# 1. builds Release into build/ (BUILD_DIR overrides),
# 2. converts the data set into bench/out/ (Fashion-MNIST idx -> .fvecs),
# 3. imports it into a fresh data dir with M=16, ef_construct=200 (timed),
# 4. runs bench/peer_hnswlib.py (Debian's hnswlib; /usr/bin/python3): builds
#    with the same M/ef_construction and 2 threads, then for each ef of
#    10..512 measures hnswlib and runs `quiver bench --ef <ef> --threads 1,2`
#    alternately, so both see the same state of this shared machine,
# 5. runs `quiver bench --exact-only` (brute force, 1 and 2 threads),
# 6. times a reopen (`quiver info` on the data dir),
# 7. writes the combined table to bench/out/core-<dataset>.md and prints it.
#
# Environment: BUILD_DIR, REPEAT (passes per setting, default 3),
# LIMIT_QUERIES (default: all), EXACT_QUERIES (brute-force queries, default
# 500), QV_SHARED_DATA (default ../shared/data next to the repository).
set -euo pipefail

DATASET=${1:-fashion}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build}
OUT=$ROOT/bench/out
DATA=${QV_SHARED_DATA:-$(cd "$ROOT/.." && pwd)/shared/data}
REPEAT=${REPEAT:-3}
EXACT_QUERIES=${EXACT_QUERIES:-500}
LIMIT_QUERIES=${LIMIT_QUERIES:-}
M=16
EFC=200
BUILD_THREADS=2
EF=10,16,20,32,40,64,80,128,256,512
PY=/usr/bin/python3 # Debian's python: the one with hnswlib and numpy

mkdir -p "$OUT"
LOAD_AT_START=$(cat /proc/loadavg)
log() { printf '== %s\n' "$*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

case "$DATASET" in
fashion)
  SRC=$DATA/fashion-mnist-784-euclidean
  BASE=$OUT/core-fashion-base.fvecs
  QUERIES=$OUT/core-fashion-query.fvecs
  GT=$SRC/groundtruth.l2.top100.ivecs.gz
  # vecs.py is stdlib-only, so any python3 will do.
  for pair in "train-images-idx3-ubyte.gz:$BASE" "t10k-images-idx3-ubyte.gz:$QUERIES"; do
    src=${pair%%:*} dst=${pair#*:}
    if [ ! -s "$dst" ]; then
      log "converting $src -> $dst"
      python3 "$DATA/tools/vecs.py" idx2fvecs "$SRC/$src" "$dst.tmp"
      mv "$dst.tmp" "$dst"
    fi
  done
  ;;
sift)
  SRC=$DATA/siftsmall
  BASE=$SRC/siftsmall_base.fvecs
  QUERIES=$SRC/siftsmall_query.fvecs
  GT=$SRC/siftsmall_groundtruth.ivecs
  ;;
*)
  echo "usage: $0 [fashion|sift]" >&2
  exit 2
  ;;
esac

log "building Release into $BUILD"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j2 --target quiver_cli >/dev/null
QV=$BUILD/quiver

DB=$OUT/core-$DATASET-db
rm -rf "$DB"
log "importing $BASE (M=$M, ef_construct=$EFC)"
t0=$(now)
"$QV" import --data-dir "$DB" --collection "$DATASET" --distance Euclid \
  --m $M --ef-construct $EFC --build-threads $BUILD_THREADS "$BASE" \
  | tee "$OUT/core-$DATASET-import.txt"
t1=$(now)
echo "import wall $(elapsed "$t0" "$t1") s" >>"$OUT/core-$DATASET-import.txt"

log "hnswlib (same M/ef_construction, $BUILD_THREADS build threads), then per ef"
log "quiver bench and hnswlib alternately (ef $EF, threads 1,2, repeat $REPEAT)"
QBENCH="$QV bench --data-dir $DB --collection $DATASET --queries $QUERIES --gt $GT --k 10 --threads 1,2 --repeat $REPEAT"
PEER_LIMIT=()
if [ -n "$LIMIT_QUERIES" ]; then
  QBENCH="$QBENCH --limit-queries $LIMIT_QUERIES"
  PEER_LIMIT=(--limit-queries "$LIMIT_QUERIES")
fi
$PY "$ROOT/bench/peer_hnswlib.py" run --base "$BASE" --queries "$QUERIES" \
  --gt "$GT" --m $M --ef-construction $EFC --build-threads $BUILD_THREADS \
  --ef $EF --k 10 --repeat "$REPEAT" "${PEER_LIMIT[@]}" \
  --index-file "$OUT/core-$DATASET-hnswlib.bin" \
  --out "$OUT/core-$DATASET-hnswlib.json" \
  --quiver-bench "$QBENCH" --quiver-out "$OUT/core-$DATASET-quiver.jsonl"

log "quiver bench --exact-only ($EXACT_QUERIES queries, threads 1,2)"
$QBENCH --exact-only --exact-queries "$EXACT_QUERIES" --json \
  | tee "$OUT/core-$DATASET-exact.jsonl"

log "reopen: quiver info (median of 3)"
times=()
for _ in 1 2 3; do
  t0=$(now)
  "$QV" info --data-dir "$DB" >/dev/null
  t1=$(now)
  times+=("$(elapsed "$t0" "$t1")")
done
REOPEN=$(printf '%s\n' "${times[@]}" | sort -g | sed -n 2p)
log "reopen ${times[*]} -> $REOPEN s"

LOAD_AT_END=$(cat /proc/loadavg)
$PY "$ROOT/bench/peer_hnswlib.py" report --dataset "$DATASET" \
  --quiver "$OUT/core-$DATASET-quiver.jsonl" "$OUT/core-$DATASET-exact.jsonl" \
  --quiver-import "$OUT/core-$DATASET-import.txt" \
  --quiver-reopen-s "$REOPEN" \
  --peer "$OUT/core-$DATASET-hnswlib.json" \
  --load "$LOAD_AT_START" --load-end "$LOAD_AT_END" --out "$OUT/core-$DATASET.md"
log "wrote $OUT/core-$DATASET.md"
