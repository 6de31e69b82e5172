#!/usr/bin/env bash
# Runs the resilience modules' multi-threaded scenarios under ThreadSanitizer.
# Criterion cannot run under TSan (Snaipe/Criterion#274), so this builds the library with PAKE_TSAN=ON
# and links a plain driver (tests/tsan/tsan_foundation.c) against it.
# Usage: scripts/tsan-foundation.sh [build-dir]   (default build-tsan)
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build-tsan}
[ -f "$B/build.ninja" ] || cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DPAKE_TSAN=ON >/dev/null
ninja -C "$B" pake_lib
# shellcheck disable=SC2046
cc -std=c17 -D_GNU_SOURCE -g -O1 -fsanitize=thread -fno-omit-frame-pointer -Wall -Wextra -Werror \
    -Wno-unused-parameter -Isrc $(pkg-config --cflags libcjson) tests/tsan/tsan_foundation.c \
    "$B/libpake_lib.a" $(pkg-config --libs libh2o-evloop libcjson sqlite3 libhs) -lssl -lcrypto -lpthread -lm \
    -o "$B/tsan_foundation"
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 ${TSAN_OPTIONS:-}" "$B/tsan_foundation"
