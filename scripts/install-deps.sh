#!/usr/bin/env bash
# Installs the Debian packages PAKE needs to build, test and benchmark. Idempotent: only packages
# that are missing are installed, and apt-get update runs only when something is missing.
set -euo pipefail
PKGS=(
  build-essential cmake ninja-build pkg-config clang libclang-rt-14-dev clang-format
  libh2o-evloop-dev libcjson-dev libsqlite3-dev libssl-dev libcurl4-openssl-dev
  libvectorscan-dev libcriterion-dev libhiredis-dev libpq-dev postgresql-15
  python3 curl openssl prometheus nginx-light wrk redis-server redis-tools
)
if [ "${1:-}" = "--list" ]; then printf '%s\n' "${PKGS[@]}"; exit 0; fi
# Node.js + npm run the official MCP clients (conformance suite, TypeScript SDK); the image may bring
# its own Node (then Debian's is not needed).
command -v npm >/dev/null 2>&1 || PKGS+=(nodejs npm)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
