#!/usr/bin/env bash
# bench/http/run.sh [PAKE_BIN]: HTTP throughput of PAKE against nginx on this machine.
#
# Method (docs/performance.md, "HTTP throughput"): everything on 127.0.0.1. nginx (1 worker) answers a
# fixed ~900-byte JSON body, the reference for "the cheapest possible HTTP response here". PAKE runs
# with one loop thread (--threads 1) on the same core; wrk (1 thread) runs on the other core. We load
# the 10,000 benchmark notes, then measure, ~10 s each:
#   a. nginx fixed body           b. pake GET /v1/notes/{id} (random loaded ids)
#   c. pake GET /v1/search?q=word  d. pake search paced at BENCH_RATE req/s (latency at a fixed load)
# and print req/s, p50, p99, the ratio to nginx and the server's CPU microseconds per request (from
# /proc/PID/stat utime+stime around each run), which is the figure to compare: wrk itself saturates
# near 60-75k req/s here. The table also goes to bench/out/http-<date>.md.
#
# Environment: BENCH_PAKE_FLAGS (extra `pake serve` flags, e.g. "--cache-bytes 0" to measure the
# store path without the L1 cache), BENCH_DURATION (s, default 10), BENCH_CONNS (default 32), BENCH_RATE (default 1000),
# BENCH_NOTES (load only N notes; default all), PAKE_BENCH_DATA (default ../shared/data/bench from the
# repo), BENCH_OUT (default bench/out), BENCH_KEEP_TMP=1 keeps the temp dir, NGINX_BIN, WRK_BIN.
# Exit status: 0 all scenarios ran; 3 the PAKE half was skipped (binary missing or never ready);
# 1 on any other failure. Servers are stopped by pid on exit, whatever happens.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PAKE_BIN=${1:-$REPO/build/pake}
DATA=${PAKE_BENCH_DATA:-$REPO/../shared/data/bench}
DURATION=${BENCH_DURATION:-10}
CONNS=${BENCH_CONNS:-32}
RATE=${BENCH_RATE:-1000}
NOTES_LIMIT=${BENCH_NOTES:-0}
OUT_DIR=${BENCH_OUT:-$REPO/bench/out}
NGINX=${NGINX_BIN:-/usr/sbin/nginx}
WRK=${WRK_BIN:-wrk}
READY_TIMEOUT=${BENCH_READY_TIMEOUT:-30}
CLK_TCK=$(getconf CLK_TCK)

log() { printf '[bench/http] %s\n' "$*" >&2; }
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
die() {
    log "error: $*"
    exit 1
}

for tool in "$NGINX" "$WRK" curl python3; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found (Debian: nginx-light, wrk, curl, python3)"
done
[[ -f $DATA/notes-10k.jsonl && -f $DATA/search-words.txt ]] || die "benchmark data not found in $DATA"

# Servers on core 0, load generators on core 1 (when there are two cores and taskset).
SRV_PIN=()
LOAD_PIN=()
if command -v taskset >/dev/null 2>&1 && [[ $(nproc) -ge 2 ]]; then
    SRV_PIN=(taskset -c 0)
    LOAD_PIN=(taskset -c 1)
fi

TMP=$(mktemp -d /tmp/pake-bench-http.XXXXXX)
NGINX_PID=
PAKE_PID=


cleanup() {
    local rc=$?
    stop_pid "$PAKE_PID"
    stop_pid "$NGINX_PID"
    wait 2>/dev/null || true
    if [[ ${BENCH_KEEP_TMP:-0} == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM





# ---- 1. nginx ------------------------------------------------------------------------------------
NGINX_PORT=$(free_port)
mkdir -p "$TMP/nginx"
BODY=$(sed 's/\\/\\\\/g' "$HERE/note-body.json") # nginx un-escapes \\ inside quoted strings
cat >"$TMP/nginx/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location /note { default_type application/json; return 200 '$BODY'; }
        location = /health/ready { return 200 'ok'; }
    }
}
EOF
"${SRV_PIN[@]}" "$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" \
    >"$TMP/nginx/stdout.log" 2>&1 &
NGINX_PID=$!
if ! wait_ready "http://127.0.0.1:$NGINX_PORT/health/ready" "$NGINX_PID" 10; then
    cat "$TMP/nginx/error.log" "$TMP/nginx/stdout.log" >&2 2>/dev/null || true
    die "nginx did not start"
fi
NGINX_WORKER=$(tr ' ' '\n' <"/proc/$NGINX_PID/task/$NGINX_PID/children" | grep -m1 . || true)
[[ -n $NGINX_WORKER ]] || die "nginx worker process not found"
got=$(curl -fsS "http://127.0.0.1:$NGINX_PORT/note")
python3 -c 'import json, sys; json.loads(sys.argv[1])' "$got" || die "nginx body is not JSON"
log "nginx ready on 127.0.0.1:$NGINX_PORT (master $NGINX_PID, worker $NGINX_WORKER, body ${#got} bytes)"

# ---- 2. pake -------------------------------------------------------------------------------------
PAKE_OK=0
PAKE_PORT=$(free_port)
if [[ -x $PAKE_BIN ]]; then
    mkdir -p "$TMP/data"
    "${SRV_PIN[@]}" "$PAKE_BIN" serve --listen "127.0.0.1:$PAKE_PORT" --data-dir "$TMP/data" --threads 1 \
        --no-access-log --rate-read 1000000000 --burst-read 1000000000 --rate-write 1000000000 \
        --burst-write 1000000000 --rate-search 1000000000 --burst-search 1000000000 --rate-max-keys 1000 ${BENCH_PAKE_FLAGS:-} \
        >"$TMP/pake.log" 2>&1 &
    PAKE_PID=$!
    if wait_ready "http://127.0.0.1:$PAKE_PORT/health/ready" "$PAKE_PID" "$READY_TIMEOUT"; then
        PAKE_OK=1
        log "pake ready on 127.0.0.1:$PAKE_PORT (pid $PAKE_PID)"
    else
        log "pake did not become ready within ${READY_TIMEOUT}s; last log lines:"
        tail -n 20 "$TMP/pake.log" >&2 || true
        stop_pid "$PAKE_PID"
        PAKE_PID=
    fi
else
    log "pake binary $PAKE_BIN not found: running the nginx half only"
fi

# ---- 3. load the notes ---------------------------------------------------------------------------
IDS=$TMP/ids.txt
if ((PAKE_OK)); then
    load_rc=0
    timeout 600 "${LOAD_PIN[@]}" python3 "$HERE/load_notes.py" --base "http://127.0.0.1:$PAKE_PORT" \
        --input "$DATA/notes-10k.jsonl" --out "$IDS" --threads 4 --limit "$NOTES_LIMIT" >&2 || load_rc=$?
    nids=$(wc -l <"$IDS" 2>/dev/null || echo 0)
    ((nids > 0)) || die "no note could be created (load_notes exit $load_rc)"
    ((load_rc == 0)) || log "warning: load_notes exit $load_rc; benchmarking with the $nids notes created"
fi

# ---- 4. wrk runs ---------------------------------------------------------------------------------
ROWS=()
NGINX_RPS=

# run_wrk SCENARIO SERVER PID URL MODE FILE RATE
run_wrk() {
    local scen=$1 server=$2 pid=$3 url=$4 mode=$5 file=$6 rate=$7 out t0 t1 line
    log "running: $scen (${DURATION}s, $CONNS connections)"
    t0=$(cpu_ticks "$pid")
    out=$(timeout $((DURATION + 30)) "${LOAD_PIN[@]}" "$WRK" -t1 -c"$CONNS" -d"${DURATION}s" --timeout 5s \
        -s "$HERE/bench.lua" "$url" -- "$mode" "$file" "$rate" "$CONNS") || die "wrk failed for $scen"
    t1=$(cpu_ticks "$pid")
    printf '%s\n' "$out" >"$TMP/wrk-$mode-$rate.txt"
    line=$(grep '^BENCH ' <<<"$out") || die "no BENCH line from wrk for $scen: $out"
    local requests rps p50 p99 errors status_errors cpu_us ratio
    requests=$(sed -E 's/.* requests=([0-9]+).*/\1/' <<<"$line")
    rps=$(sed -E 's/.* rps=([0-9.]+).*/\1/' <<<"$line")
    p50=$(sed -E 's/.* p50_us=([0-9]+).*/\1/' <<<"$line")
    p99=$(sed -E 's/.* p99_us=([0-9]+).*/\1/' <<<"$line")
    errors=$(sed -E 's/.* errors=([0-9]+).*/\1/' <<<"$line")
    status_errors=$(sed -E 's/.* status_errors=([0-9]+).*/\1/' <<<"$line")
    cpu_us=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$requests" \
        'BEGIN { if (n > 0) printf "%.1f", d / hz * 1e6 / n; else print "-" }')
    if [[ $server == nginx && $rate == 0 ]]; then NGINX_RPS=$rps; fi
    ratio=-
    if [[ $server != nginx && $rate == 0 && -n $NGINX_RPS ]]; then
        ratio=$(awk -v a="$rps" -v b="$NGINX_RPS" 'BEGIN { printf "%.3f", a / b }')
    elif [[ $server == nginx && $rate == 0 ]]; then
        ratio=1.000
    fi
    ROWS+=("| $scen | $server | $(printf '%.0f' "$rps") | $(fmt_us "$p50") | $(fmt_us "$p99") | $ratio | $cpu_us | $((errors + status_errors)) |")
}

run_wrk "a. fixed ~900 B JSON body" nginx "$NGINX_WORKER" "http://127.0.0.1:$NGINX_PORT/note" fixed - 0
if ((PAKE_OK)); then
    run_wrk "b. GET /v1/notes/{id}" pake "$PAKE_PID" "http://127.0.0.1:$PAKE_PORT/" notes "$IDS" 0
    run_wrk "c. GET /v1/search?q=word" pake "$PAKE_PID" "http://127.0.0.1:$PAKE_PORT/" search \
        "$DATA/search-words.txt" 0
    run_wrk "d. search paced at $RATE req/s" pake "$PAKE_PID" "http://127.0.0.1:$PAKE_PORT/" search \
        "$DATA/search-words.txt" "$RATE"
fi

# ---- 5. report -----------------------------------------------------------------------------------
mkdir -p "$OUT_DIR"
REPORT=$OUT_DIR/http-$(date +%Y%m%d-%H%M%S).md
{
    echo "# HTTP throughput, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "wrk 1 thread, $CONNS connections, ${DURATION}s per scenario; servers pinned: ${SRV_PIN[*]:-no}," \
        "load: ${LOAD_PIN[*]:-no}; pake: \`$PAKE_BIN --threads 1\`; notes loaded: $( ((PAKE_OK)) && wc -l <"$IDS" || echo 0)."
    echo "CPU us/req: server process utime+stime during the run / requests (nginx: its worker)."
    echo
    echo "| scenario | server | req/s | p50 | p99 | req/s vs nginx | server CPU us/req | errors |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${ROWS[@]}"
    if ((PAKE_OK == 0)); then
        echo
        echo "PAKE half skipped: $PAKE_BIN missing or never ready."
    fi
} >"$REPORT"
echo
cat "$REPORT"
echo
log "written to $REPORT"
((PAKE_OK)) || exit 3
