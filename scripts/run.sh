#!/usr/bin/env bash
# run.sh: builds Quiver (Release, build/quiver), imports SIFT-small into an
# embedded data directory and runs a first search. Safe to run again.
#   scripts/run.sh [DATA_DIR]      (default: ./data)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/deps.sh"
ensure_packages "${QV_BUILD_PACKAGES[@]}"

cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=Release -DQV_TESTS=OFF >/dev/null
cmake --build "$root/build" -j"$(nproc)" >/dev/null
q="$root/build/quiver"
data=${1:-$root/data}
sift="$root/../shared/data/siftsmall"
if [ ! -f "$sift/siftsmall_base.fvecs" ]; then
  echo "SIFT-small not found at $sift; see README.md" >&2
  exit 1
fi

echo "== import SIFT-small (10,000 x 128) into $data"
"$q" import --data-dir "$data" --collection sift --distance Euclid \
  --m 16 --ef-construct 200 "$sift/siftsmall_base.fvecs"
echo "== collection info"
"$q" info --data-dir "$data" --collection sift
echo "== the 5 nearest neighbours of query 0"
"$q" search --data-dir "$data" --collection sift --k 5 \
  --query-file "$sift/siftsmall_query.fvecs" --query-index 0
echo "== recall and speed against the exact ground truth"
"$q" bench --data-dir "$data" --collection sift \
  --queries "$sift/siftsmall_query.fvecs" --gt "$sift/siftsmall_groundtruth.ivecs" \
  --k 10 --ef 16,32,64,128 --threads 1
