#!/usr/bin/env bash
# Every benchmark, each printing ratios against a reference measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
bench/http/run.sh build/pake
bench/cache/run.sh
bench/store.sh build
