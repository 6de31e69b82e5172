#!/usr/bin/env bash
# Builds and runs the embedded store benchmark against the optimised build's library.
# Usage: bench/store.sh [build-dir]   (run from the repository root, after `ninja -C build`)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
cc -O2 -std=c17 -D_GNU_SOURCE -Isrc $(pkg-config --cflags libcjson) bench/bench_store.c "$BUILD/libpake_lib.a" \
  $(pkg-config --libs sqlite3 libcjson libhs openssl) -lpthread -lm -o "$BUILD/bench_store"
"$BUILD/bench_store" ../shared/data/bench "${2:-${TMPDIR:-/tmp}/pake-bench-store-$$}" ${3:-}
