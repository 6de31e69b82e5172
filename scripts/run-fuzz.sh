#!/usr/bin/env bash
# Runs every libFuzzer target of a fuzz build for N seconds each (default 60); corpora live in
# fuzz/corpus-<target>/ (not committed). Exit non-zero on any crash, leak or timeout.
set -euo pipefail
BUILD=${1:-build-fuzz}
SECS=${2:-60}
cd "$(dirname "$0")/.."
export LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp"
for f in "$BUILD"/fuzz_*; do
  [ -x "$f" ] || continue
  n=$(basename "$f")
  mkdir -p "fuzz/corpus-$n"
  echo "== $n (${SECS}s)"
  "$f" -max_total_time="$SECS" -timeout=5 -rss_limit_mb=2048 "fuzz/corpus-$n" 2>&1 | tail -n 3
done
