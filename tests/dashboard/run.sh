#!/usr/bin/env bash
# run.sh: CTest entry of the dashboard browser test. Installs Debian's
# chromium when /usr/bin/chromium is missing (as root only), installs the
# pinned playwright-core with `npm ci` when node_modules is missing or older
# than package-lock.json, then runs `node --test`. QV_CLI and
# QV_DASHBOARD_SCREENSHOT come from CTest.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y chromium || { apt-get update && apt-get install -y chromium; }
  else
    echo "run.sh: /usr/bin/chromium is missing; install Debian's chromium (apt-get install chromium)" >&2
    exit 1
  fi
fi
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
exec node --test dashboard.test.mjs
