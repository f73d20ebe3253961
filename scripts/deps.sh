#!/usr/bin/env bash
# deps.sh: installs the Debian packages Quiver needs, only those missing.
# Sourced by run.sh, test.sh and bench scripts: `ensure_packages pkg...`.
set -euo pipefail

ensure_packages() {
  local missing=()
  for p in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$p")
    fi
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  fi
}

# What building and testing the library and CLI needs.
QV_BUILD_PACKAGES=(build-essential cmake pkg-config gzip libjansson-dev libcriterion-dev libmicrohttpd-dev
                   libcurl4-openssl-dev libxxhash-dev)
# The fuzzers need clang with its libFuzzer runtime.
# What the test suite needs besides: the server's HTTP tests (Debian's
# python3), the official JS client test (node, npm), valgrind.
QV_TEST_PACKAGES=(python3 valgrind clang libclang-rt-14-dev etcd-server etcd-client curl chromium)

# node and npm may come from another package that bundles both; install
# Debian's only when the commands are missing.
ensure_node() {
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    ensure_packages nodejs npm
  fi
}
