#!/usr/bin/env bash
# run_http.sh: search QPS over HTTP (keep-alive, from a second process)
# against in-process QPS at the same ef, and upsert throughput over HTTP, on
# Fashion-MNIST (60,000 x 784, Euclid).
#
#   bench/run_http.sh            (BUILD_DIR defaults to build-srv)
#   MODE=upsert bench/run_http.sh   only steps 4-6 for upserts, on an empty
#                                   data dir (no import, no search runs);
#                                   UPSERT_REPEAT=N runs each batch size N times
#
# 1. builds Release, converts the data set (as run_core.sh does),
# 2. imports it into a fresh data dir with M=16, ef_construct=200,
# 3. `quiver bench` at each ef with 1 and 2 threads (in-process),
# 4. starts `quiver serve` (helper_serve until main.c routes `serve`) and runs
#    bench/http_load.py search at each ef with 1, 2 and 4 client threads,
#    and wrk (Debian; installed if missing) with 1 thread, 4 connections, 10 s,
#    cycling through the first 1,000 queries, with the CPU time the server
#    and wrk each spend per request,
# 5. http_load.py upsert: 20,000 points in batches of 100 and of 1,000, and
#    http_load.py parse: the same bodies sent to a missing collection (the
#    server parses them whole, then answers 404) to isolate the JSON cost,
# 6. the server-side mean time per route from /metrics (sum / count).
# Results go to bench/out/http-*.txt and stdout.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build-srv}
DATA=${QV_SHARED_DATA:-$(cd "$ROOT/.." && pwd)/shared/data}
OUT=$ROOT/bench/out
EF_LIST=${EF_LIST:-20 32 40}
REQUESTS=${REQUESTS:-4000}
MODE=${MODE:-all}
UPSERT_REPEAT=${UPSERT_REPEAT:-1}
mkdir -p "$OUT"
. "$ROOT/scripts/deps.sh"
ensure_packages wrk time curl   # load generator, CPU accounting, readiness probe
SRC=$DATA/fashion-mnist-784-euclidean
BASE=$OUT/core-fashion-base.fvecs
QUERIES=$OUT/core-fashion-query.fvecs
GT=$SRC/groundtruth.l2.top100.ivecs.gz
for pair in "train-images-idx3-ubyte.gz:$BASE" "t10k-images-idx3-ubyte.gz:$QUERIES"; do
  src=${pair%%:*} dst=${pair#*:}
  if [ ! -s "$dst" ]; then
    python3 "$DATA/tools/vecs.py" idx2fvecs "$SRC/$src" "$dst.tmp" && mv "$dst.tmp" "$dst"
  fi
done
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j2 --target quiver_cli helper_serve >/dev/null
QV=$BUILD/quiver
if "$QV" serve --help >/dev/null 2>&1; then SERVE=("$QV" serve); else SERVE=("$BUILD/tests/helper_serve"); fi

DB=$(mktemp -d /tmp/qv-http-bench.XXXXXX)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$DB"; }
trap cleanup EXIT
echo "== load average at start: $(cat /proc/loadavg)"
if [ "$MODE" = all ]; then
"$QV" import --data-dir "$DB" --collection fashion --distance Euclid --m 16 \
  --ef-construct 200 --build-threads 2 "$BASE" | tee "$OUT/http-import.txt"

EF_CSV=$(echo $EF_LIST | tr ' ' ',')
echo "== in-process: quiver bench --ef $EF_CSV --threads 1,2"
"$QV" bench --data-dir "$DB" --collection fashion --queries "$QUERIES" --gt "$GT" \
  --k 10 --ef "$EF_CSV" --threads 1,2 --repeat 3 | tee "$OUT/http-inprocess.txt"
fi

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"${SERVE[@]}" --port "$PORT" --data-dir "$DB" --log-level warn 2>"$OUT/http-server.log" &
PID=$!
until curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null; do sleep 0.2; done
if [ "$MODE" = all ]; then
: >"$OUT/http-search.txt"
for ef in $EF_LIST; do
  for t in 1 2 4; do
    python3 "$ROOT/bench/http_load.py" search --port "$PORT" --collection fashion \
      --queries "$QUERIES" --gt "$GT" --ef "$ef" --threads "$t" --requests "$REQUESTS" \
      | tee -a "$OUT/http-search.txt"
  done
done
: >"$OUT/http-wrk.txt"
for ef in $EF_LIST; do
  python3 "$ROOT/bench/http_load.py" bodies --queries "$QUERIES" --ef "$ef" --out "$OUT/http-bodies-$ef.txt"
  echo "== wrk ef=$ef" | tee -a "$OUT/http-wrk.txt"
  wrk -t1 -c4 -d2s -s "$ROOT/bench/wrk_search.lua" \
    "http://127.0.0.1:$PORT/collections/fashion/points/search" -- "$OUT/http-bodies-$ef.txt" >/dev/null
  # CPU seconds of the server and of wrk per request: with both on the same
  # 2 cores, QPS is bounded by 2 / (server + wrk), whatever else runs.
  s0=$(awk '{print $14 + $15}' "/proc/$PID/stat")
  /usr/bin/time -f "%U %S" -o "$OUT/http-wrk-cpu.txt" wrk -t1 -c4 -d10s -s "$ROOT/bench/wrk_search.lua" \
    "http://127.0.0.1:$PORT/collections/fashion/points/search" -- "$OUT/http-bodies-$ef.txt" \
    | tee -a "$OUT/http-wrk.txt" >"$OUT/http-wrk-last.txt"
  s1=$(awk '{print $14 + $15}' "/proc/$PID/stat")
  awk -v ef="$ef" -v s0="$s0" -v s1="$s1" -v tck="$(getconf CLK_TCK)" -v wrkcpu="$(cat "$OUT/http-wrk-cpu.txt")" '
    / requests in / { n = $1 }
    /Requests\/sec/ { q = $2 }
    END { split(wrkcpu, w, " "); printf "ef=%s qps=%.0f server_cpu_us_per_req=%.1f wrk_cpu_us_per_req=%.1f\n",
          ef, q, 1e6 * (s1 - s0) / tck / n, 1e6 * (w[1] + w[2]) / n }' \
    "$OUT/http-wrk-last.txt" | tee -a "$OUT/http-wrk.txt"
done
fi
: >"$OUT/http-upsert.txt"
for b in 100 1000; do
  for r in $(seq "$UPSERT_REPEAT"); do
    python3 "$ROOT/bench/http_load.py" upsert --port "$PORT" --collection "up$b" \
      --base "$BASE" --batch "$b" --points 20000 | tee -a "$OUT/http-upsert.txt"
  done
  python3 "$ROOT/bench/http_load.py" parse --port "$PORT" --base "$BASE" --batch "$b" \
    | tee -a "$OUT/http-upsert.txt"
done
python3 "$ROOT/bench/http_load.py" parse --kind search --requests 2000 --port "$PORT" \
  --base "$BASE" --batch 1 | tee -a "$OUT/http-upsert.txt"
echo "== server-side mean per route (from /metrics)"
curl -s "http://127.0.0.1:$PORT/metrics" | awk '
  /^quiver_http_request_duration_seconds_sum/ { match($0, /endpoint="[^"]*"/); e = substr($0, RSTART, RLENGTH); s[e] = $2 }
  /^quiver_http_request_duration_seconds_count/ { match($0, /endpoint="[^"]*"/); e = substr($0, RSTART, RLENGTH); c[e] = $2 }
  END { for (e in s) if (c[e] > 0) printf "%s: %d requests, mean %.3f ms\n", e, c[e], 1000 * s[e] / c[e] }' \
  | tee "$OUT/http-server-mean.txt"
kill -TERM "$PID"
wait "$PID" && echo "== server exited 0"
PID=
echo "== load average at end: $(cat /proc/loadavg)"
