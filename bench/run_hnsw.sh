#!/bin/sh
# run_hnsw.sh: builds and runs bench/hnsw_vs_hnswlib.cpp on Fashion-MNIST.
#
# Builds libquiver (Release, build-hnsw/), converts the idx images to .fvecs
# once (into bench/out/, or $QV_BENCH_OUT), compiles the harness against
# libquiver.a and Debian's header-only hnswlib with -O3 -march=native (the
# strongest fair build of the peer; libquiver itself is built without
# -march=native and picks its SIMD kernels at run time), then runs it for
# ef_construction 200 and 100 with M = 16 and 2 build threads.
#
# Environment: QV_BENCH_EFC (default "200 100"), QV_BENCH_M (16),
# QV_BENCH_THREADS (2), QV_BENCH_QUERIES (0 = all 10,000),
# QV_BENCH_BUILD_REPS (3: builds alternate ours/theirs, medians reported),
# QV_BENCH_SKIP_LIB=1 to reuse an existing build-hnsw/libquiver.a.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
data=${QV_SHARED_DATA:-$root/../shared/data}/fashion-mnist-784-euclidean
out=${QV_BENCH_OUT:-$root/bench/out}
build=$root/build-hnsw
mkdir -p "$out"

if [ "${QV_BENCH_SKIP_LIB:-0}" != 1 ]; then
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$build" -j2 --target quiver
fi

vecs=$root/../shared/data/tools/vecs.py
[ -f "$out/fmnist_base.fvecs" ] ||
  python3 "$vecs" idx2fvecs "$data/train-images-idx3-ubyte.gz" "$out/fmnist_base.fvecs"
[ -f "$out/fmnist_query.fvecs" ] ||
  python3 "$vecs" idx2fvecs "$data/t10k-images-idx3-ubyte.gz" "$out/fmnist_query.fvecs"

CXXFLAGS="-O3 -march=native -DNDEBUG -std=c++17"
echo "compiling: g++ $CXXFLAGS (hnswlib $(dpkg-query -W -f='${Version}' libhnswlib-dev 2>/dev/null || echo '?'))"
g++ $CXXFLAGS -I"$root/include" -I"$root/src" \
  "$root/bench/hnsw_vs_hnswlib.cpp" "$build/libquiver.a" \
  -ljansson -lpthread -lm -o "$out/hnsw_vs_hnswlib"

for efc in ${QV_BENCH_EFC:-200 100}; do
  echo
  echo "=== M=${QV_BENCH_M:-16} ef_construction=$efc ==="
  "$out/hnsw_vs_hnswlib" "$out/fmnist_base.fvecs" "$out/fmnist_query.fvecs" \
    "$data/groundtruth.l2.top100.ivecs.gz" "${QV_BENCH_M:-16}" "$efc" \
    "${QV_BENCH_THREADS:-2}" "${QV_BENCH_QUERIES:-0}" "${QV_BENCH_BUILD_REPS:-3}"
done
