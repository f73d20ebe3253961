#!/usr/bin/env bash
# run_filtered.sh: filtered search on Fashion-MNIST per selectivity (recall@10
# against exact filtered search, QPS, latency), with and without payload
# indexes. Builds Release, converts the data into bench/out/, prints a table.
#   bench/run_filtered.sh [N_QUERIES=1000] [EF=64]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data="$root/../shared/data/fashion-mnist-784-euclidean"
out="$root/bench/out"
mkdir -p "$out"
cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$root/build" -j"$(nproc)" --target quiver >/dev/null
for f in train t10k; do
  [ -f "$out/fmnist-$f.fvecs" ] || python3 "$root/../shared/data/tools/vecs.py" idx2fvecs \
    "$data/$f-images-idx3-ubyte.gz" "$out/fmnist-$f.fvecs" >/dev/null
done
cc -O2 -I"$root/include" "$root/bench/filtered_bench.c" "$root/build/libquiver.a" \
  $(pkg-config --libs jansson) -lpthread -lm -o "$out/filtered_bench"
"$out/filtered_bench" "$out/fmnist-train.fvecs" "$data/train-labels-idx1-ubyte.gz" \
  "$out/fmnist-t10k.fvecs" "$out/filtered-db" "${1:-1000}" "${2:-64}" | tee "$out/filtered.md"
