#!/bin/sh
# Builds and runs the L1 cache benchmark against the library of the release build.
# Usage: bench/cache/run.sh [--quick] [--seed N] [--shards N]
# Needs build/libpake_lib.a: cmake -S . -B build -G Ninja && ninja -C build
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
lib="$root/build/libpake_lib.a"
[ -f "$lib" ] || { echo "missing $lib: run 'cmake -S . -B build -G Ninja && ninja -C build' first" >&2; exit 1; }
out="$root/build/cache_bench"
cc -std=c17 -O2 -Wall -Wextra -Werror -D_GNU_SOURCE -I"$root/src" "$root/bench/cache/cache_bench.c" "$lib" \
    -lpthread -lm -o "$out"
exec "$out" "$@"
