#!/usr/bin/env bash
# The whole suite (called by `make test`): formatting, then unit + integration tests on the optimised
# build and on the ASan/UBSan build (which also carries the fault-injection hooks).
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
ASAN=${2:-build-asan}
JOBS=${JOBS:-2}
fail=0

echo "== clang-format check"
if ! make -s format-check; then echo "format check FAILED (run 'make format')"; fail=1; fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:fast_unwind_on_malloc=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# Compile the guard's rules once per build (the compiled database is cached; see src/guard/rules.c),
# so the many server starts of the suite do not each pay seconds of pattern compilation.
for b in "$BUILD" "$ASAN"; do "$b/pake" guard check-rules rules/guard.rules >/dev/null || fail=1; done

for b in "$BUILD" "$ASAN"; do
  echo "== ctest in $b"
  if ! ctest --test-dir "$b" --output-on-failure -j "$JOBS" --timeout 900; then fail=1; fi
done

if [ $fail -ne 0 ]; then echo "make test: FAILED"; exit 1; fi
echo "make test: all passed"
