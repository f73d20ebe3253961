#!/usr/bin/env bash
# run.sh: CTest entry of the JS client test. Installs the pinned client with
# `npm ci` when node_modules is missing or older than package-lock.json,
# then runs `node --test`. QV_TEST_BIN / QV_CLI come from CTest.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
exec node --test client.test.mjs
