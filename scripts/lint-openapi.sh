#!/bin/sh
# Lints src/api/openapi.json with a pinned Redocly CLI (tools/openapi-lint/package-lock.json).
# Needs Node.js 20.19+ and npm (Debian: apt-get install nodejs npm); installs into tools/openapi-lint.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/tools/openapi-lint"
python3 -m json.tool "$root/src/api/openapi.json" >/dev/null
[ -x node_modules/.bin/redocly ] || npm ci --no-audit --no-fund --loglevel=error
REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true \
    node_modules/.bin/redocly lint ../../src/api/openapi.json --config redocly.yaml --format=stylish
