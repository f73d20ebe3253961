#!/usr/bin/env bash
# test.sh: the whole test suite. Installs what is missing, builds with
# AddressSanitizer + UBSan (warnings are errors) and runs every test under
# CTest; then builds Release (the shipped flags) and runs the fast unit
# tests again there, valgrind over the parsers and storage, and the fuzzers.
#   scripts/test.sh            everything
#   QV_QUICK=1 scripts/test.sh only the sanitizer run
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/deps.sh"
ensure_packages "${QV_BUILD_PACKAGES[@]}" "${QV_TEST_PACKAGES[@]}"
ensure_node
jobs=$(nproc)

echo "== ASan + UBSan build"
cmake -S "$root" -B "$root/build-asan" -DCMAKE_BUILD_TYPE=Debug -DQV_SANITIZE=ON -DQV_TESTS=ON >/dev/null
cmake --build "$root/build-asan" -j"$jobs"
echo "== tests (ASan + UBSan)"
ctest --test-dir "$root/build-asan" --output-on-failure -j"$jobs"

if [ "${QV_QUICK:-0}" != 1 ]; then
  echo "== Release build (build/quiver)"
  cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=Release -DQV_TESTS=ON >/dev/null
  cmake --build "$root/build" -j"$jobs"
  echo "== valgrind: parsers, storage and engine unit tests (Release build)"
  for t in test_record test_segfile test_wal test_collection; do
    if ! QV_SHARED_DATA="$root/../shared/data" valgrind -q --error-exitcode=99 \
        --trace-children=yes --leak-check=full --errors-for-leak-kinds=definite \
        "$root/build/tests/$t" --jobs 1 >"$root/build/valgrind-$t.log" 2>&1; then
      cat "$root/build/valgrind-$t.log"
      echo "valgrind $t: FAILED" >&2
      exit 1
    fi
    echo "valgrind $t: clean"
  done
  echo "== fuzzers: filter JSON, log records, every file format (${QV_FUZZ_SECONDS:-20}s each)"
  "$root/fuzz/run.sh" "${QV_FUZZ_SECONDS:-20}"
fi
