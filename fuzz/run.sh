#!/usr/bin/env bash
# fuzz/run.sh: builds each fuzz target with clang (-fsanitize=fuzzer,address,
# undefined) and runs it for SECONDS (default 20) on a corpus seeded from
# fuzz/seeds/<target>/. A crash leaves the input in fuzz/out/ and fails the
# run; keep it (minimized) under tests/corpus/ so an ordinary test replays it.
#   fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-20}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_filter fuzz_record fuzz_files)
out="$root/fuzz/out"
mkdir -p "$out"
srcs=$(ls "$root"/src/base/*.c "$root"/src/vec/*.c "$root"/src/index/*.c "$root"/src/storage/*.c \
          "$root"/src/filter/*.c "$root"/src/engine/*.c "$root"/src/quant/*.c)
flags="-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -D_GNU_SOURCE -DQV_BUILDING_LIBRARY -I$root/include -I$root/src -I$root/fuzz"
# The library, instrumented for coverage, once; then each target.
obj="$out/obj"
rm -rf "$obj" && mkdir -p "$obj"
for s in $srcs; do
  extra=""
  case "$s" in
    *_avx512.c) extra="-mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2 -mfma -mf16c" ;;
    *_avx2.c) extra="-mavx2 -mfma -mf16c" ;;
  esac
  clang $flags -fsanitize=fuzzer-no-link $extra -c "$s" -o "$obj/$(basename "$s" .c).o"
done
libs="$(pkg-config --libs jansson) -lpthread -lm"
# Seeds: real files of a tiny database, made with the same library.
clang $flags -fsanitize=fuzzer-no-link -fno-sanitize=fuzzer "$root/fuzz/make_seeds.c" "$obj"/*.o \
  $libs -fsanitize=address,undefined -o "$out/make_seeds" 2>/dev/null ||
  clang -g -O1 -D_GNU_SOURCE -I"$root/include" -I"$root/src" "$root/fuzz/make_seeds.c" \
    $(ls $srcs | grep -v _avx) $libs -o "$out/make_seeds"
"$out/make_seeds" "$out/seedwork" "$out/seeds"
status=0
for t in "${targets[@]}"; do
  clang $flags "$root/fuzz/$t.c" "$obj"/*.o $libs -o "$out/$t"
  corpus="$out/corpus-$t"
  mkdir -p "$corpus"
  cp -n "$out/seeds/$t"/* "$corpus"/ 2>/dev/null || true
  echo "== $t: ${secs}s"
  if ! (cd "$out" && "./$t" -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 \
          -artifact_prefix="$out/$t-" "$corpus" >"$out/$t.log" 2>&1); then
    tail -40 "$out/$t.log"
    echo "fuzz target $t found a crash; input in $out/$t-*" >&2
    status=1
  else
    grep -E "^(#[0-9]+ +DONE|Done)" "$out/$t.log" | tail -1
  fi
done
exit $status
