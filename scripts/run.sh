#!/usr/bin/env bash
# run.sh: builds Quiver (Release, build/quiver) and serves an embedded data
# directory over Qdrant's REST API on http://127.0.0.1:6333 until Ctrl-C.
#   scripts/run.sh [DATA_DIR] [PORT]       (defaults: ./data, 6333)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/deps.sh"
ensure_packages "${QV_BUILD_PACKAGES[@]}" curl

cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=Release -DQV_TESTS=OFF >/dev/null
cmake --build "$root/build" -j"$(nproc)" --target quiver_cli >/dev/null
data=${1:-$root/data}
port=${2:-6333}
url="http://127.0.0.1:$port"
cat <<TXT
Quiver: serving $data at $url (Ctrl-C stops it; every acknowledged write is durable)
Try, from another terminal:
  curl -X PUT $url/collections/demo -H 'Content-Type: application/json' \\
       -d '{"vectors": {"size": 4, "distance": "Cosine"}}'
  curl -X PUT '$url/collections/demo/points?wait=true' -H 'Content-Type: application/json' \\
       -d '{"points": [{"id": 1, "vector": [0.05, 0.61, 0.76, 0.74], "payload": {"city": "Berlin"}},
                       {"id": 2, "vector": [0.19, 0.81, 0.75, 0.11], "payload": {"city": "London"}}]}'
  curl -X POST $url/collections/demo/points/query -H 'Content-Type: application/json' \\
       -d '{"query": [0.2, 0.1, 0.9, 0.7], "limit": 2, "with_payload": true}'
TXT
exec "$root/build/quiver" serve --host 127.0.0.1 --port "$port" --data-dir "$data"
