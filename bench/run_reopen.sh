#!/usr/bin/env bash
# run_reopen.sh: a million-vector collection reopens by mapping its sealed
# segments and graphs, without rebuilding anything. Generates N random
# vectors (default 1,000,000 x 128, float32 .npy, fixed seed), imports them
# (graphs built once), then times `quiver info` — a full open: MANIFEST,
# every segment file and graph mapped and checksummed, id map rebuilt, log
# replayed — median of 3, cold start of the process included.
#   bench/run_reopen.sh [N=1000000] [DIM=128]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
n=${1:-1000000}
dim=${2:-128}
out="$root/bench/out"
mkdir -p "$out"
cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$root/build" -j"$(nproc)" --target quiver_cli >/dev/null
q="$root/build/quiver"
npy="$out/random-$n-$dim.npy"
[ -f "$npy" ] || /usr/bin/python3 -c "
import numpy as np, sys
rng = np.random.default_rng(1)
np.save(sys.argv[1], rng.standard_normal((int(sys.argv[2]), int(sys.argv[3])), dtype=np.float32))
" "$npy" "$n" "$dim"
db="$out/reopen-db"
rm -rf "$db"
echo "== import $n x $dim (M=16, ef_construct=100)"
/usr/bin/time -f "import wall %e s, max RSS %M KB" \
  "$q" import --data-dir "$db" --collection big --distance Euclid --m 16 --ef-construct 100 "$npy"
echo "== reopen (quiver info), 3 runs"
for i in 1 2 3; do
  /usr/bin/time -f "%e" "$q" info --data-dir "$db" --collection big >/dev/null 2>>"$out/reopen-times.txt"
done
sort -n "$out/reopen-times.txt" | sed -n 2p | xargs -I{} echo "reopen median: {} s"
rm -f "$out/reopen-times.txt"
"$q" info --data-dir "$db" --collection big
