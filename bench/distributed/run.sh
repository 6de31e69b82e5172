#!/usr/bin/env bash
# bench/distributed/run.sh [PAKE_BIN]: distributed mode (PostgreSQL store + Redis L2) against the
# embedded SQLite store, with one and with two `pake serve` processes, and the cache hit rate under a
# Zipf 0.99 read mix.
#
# Method (docs/performance.md, "Distributed mode"): everything on 127.0.0.1. PostgreSQL 15
# (scripts/pg-test-server.sh: fsync=off, 32 MB shared_buffers) and redis-server
# (scripts/redis-test-server.sh: no persistence) are started for the run. Servers (pake, postgres,
# redis) are pinned to core 0, the load (wrk, the loader) to core 1, as in bench/http. Every pake runs
# `--threads 1 --no-access-log` with all rate limits raised to 1e9.
#
#  1. SQLite reference: one pake (embedded store), the 10,000 notes of notes-10k.jsonl loaded with
#     POST /v1/notes (bench/http/load_notes.py), then GET /v1/notes/{id} (uniform over the ids) and
#     GET /v1/search?q=word&limit=20 (200 words cycled), with the L1 cache (64 MiB default) and with
#     --cache-bytes 0.
#  2. Distributed: pake --database-url (PostgreSQL) --redis-url; the notes are loaded into PostgreSQL
#     through this one process (then VACUUM ANALYZE + CHECKPOINT, so that autovacuum and the checkpoint
#     the load makes due do not run during a measurement); the same runs with one process and with two processes on the same
#     database and Redis. Two processes: there is no load balancer, so one wrk with 2 threads is
#     pointed at both (dist.lua's setup() gives thread 1 the first port and thread 2 the second:
#     16 connections each); wrk merges both threads' latency histograms, so p50/p99 are exact over all
#     requests and req/s is the sum. With --cache-bytes 0 the L1 is off: note reads then hit Redis
#     (L2), searches hit PostgreSQL (query pages are L1-only).
#     One more row: one process with --no-redis-ratelimit (local rate limiter), to show what the
#     shared (Redis GCRA) rate limit costs per request.
#  3. Hit rate, Zipf(0.99) over the 10,000 ids (dist.lua zipf): Redis FLUSHDB and fresh pake processes,
#     then two consecutive windows of BENCH_DURATION: "cold" (from empty caches: compulsory misses
#     included) and "warm" (the next window). Counters from /metrics before/after each window, summed
#     over the processes: L1 hits/misses (pake_cache_*), L2 hits/misses (pake_l2_*), store reads
#     (pake_store_query_duration_seconds_count{operation="note_get"}). Combined hit rate = requests
#     answered without the store = (L1 hits + L2 hits) / (L1 hits + L1 misses). Configurations: one
#     process with the default L1 (64 MiB: holds all notes, so L2 plays no part once warm); one and two
#     processes with an L1 of BENCH_SMALL_FRACTION (default 0.15) of the notes' bytes (measured:
#     pake_cache_bytes / pake_cache_entries after the first Zipf configuration, whose L1 holds notes only), so that L2 carries the misses.
#
# CPU us/req: utime+stime from /proc (bench/distributed/probe.py cpu) before/after each run of all pake
# processes, of the postmaster and all its children (backends, checkpointer, ... including exited
# ones through cutime/cstime), and of redis-server, divided by the requests.
#
# Warm-up: after each start of a process with an L1, probe.py warm GETs every note and every search
# word once on it, so that the L1 runs measure hits only (and L2 holds every note).
#
# Environment: BENCH_DURATION (s per run, default 8), BENCH_CONNS (default 32), BENCH_SMALL_FRACTION (0.15),
# BENCH_NOTES (load only N notes), PAKE_BENCH_DATA (default ../shared/data/bench), BENCH_OUT (default
# bench/out), BENCH_KEEP_TMP=1, WRK_BIN, PGBIN (see pg-test-server.sh).
# Exit status: 0 all runs without errors; 1 otherwise. Every process started here is stopped by pid on
# exit (pake: TERM then KILL; postgres: pg-test-server.sh destroy; redis: TERM by pid).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PAKE_BIN=$(realpath "${1:-$REPO/build/pake}")
DATA=${PAKE_BENCH_DATA:-$REPO/../shared/data/bench}
DURATION=${BENCH_DURATION:-8}
CONNS=${BENCH_CONNS:-32}
SMALL_FRACTION=${BENCH_SMALL_FRACTION:-0.15}
NOTES_LIMIT=${BENCH_NOTES:-0}
OUT_DIR=${BENCH_OUT:-$REPO/bench/out}
WRK=${WRK_BIN:-wrk}
READY_TIMEOUT=30
CLK_TCK=$(getconf CLK_TCK)
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
WORDS=$DATA/search-words.txt
PROBE=$HERE/probe.py
LUA=$HERE/dist.lua

log() { printf '[bench/distributed] %s\n' "$*" >&2; }
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
die() {
    log "error: $*"
    exit 1
}

for tool in "$WRK" curl python3 redis-server redis-cli; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found (Debian: wrk curl python3 redis-server)"
done
[[ -x $PAKE_BIN ]] || die "pake binary $PAKE_BIN not found (build it: ninja -C build pake)"
[[ -f $DATA/notes-10k.jsonl && -f $WORDS ]] || die "benchmark data not found in $DATA"

SRV_PIN=()
LOAD_PIN=()
if command -v taskset >/dev/null 2>&1 && [[ $(nproc) -ge 2 ]]; then
    SRV_PIN=(taskset -c 0)
    LOAD_PIN=(taskset -c 1)
fi

LOAD_START=$(cut -d" " -f1-3 /proc/loadavg)
TMP=$(mktemp -d /tmp/pake-bench-dist.XXXXXX)
chmod 711 "$TMP" # PostgreSQL runs as `nobody` when we are root and must reach $TMP/pg
PG_DIR=$TMP/pg
PG_STARTED=0
REDIS_PID=
REDIS_DIR=
PAKE_PIDS=()
PAKE_PORTS=()
FAILED=0

stop_pakes() {
    local pid
    for pid in "${PAKE_PIDS[@]}"; do stop_pid "$pid"; done
    PAKE_PIDS=()
    PAKE_PORTS=()
}

cleanup() {
    local rc=$?
    stop_pakes
    stop_pid "$REDIS_PID"
    ((PG_STARTED)) && "$REPO/scripts/pg-test-server.sh" destroy "$PG_DIR" >/dev/null 2>&1
    [[ -n $REDIS_DIR && -d $REDIS_DIR ]] && rm -rf "$REDIS_DIR"
    if [[ ${BENCH_KEEP_TMP:-0} == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

field() { sed -nE "s/.* $1=([0-9.]+).*/\\1/p" <<<" $2"; } # field NAME "k=v k=v"
metric() { awk -v k="$1" '$1 == k { print $2 }' <<<"$2"; } # metric NAME SNAPSHOT

# ---- 1. PostgreSQL and Redis ---------------------------------------------------------------------
PG_STARTED=1
PG_URL=$("${SRV_PIN[@]}" "$REPO/scripts/pg-test-server.sh" start "$PG_DIR") || die "PostgreSQL did not start"
PG_PID=$(head -1 "$PG_DIR/data/postmaster.pid")
read -r REDIS_URL REDIS_PID REDIS_DIR < <("${SRV_PIN[@]}" "$REPO/scripts/redis-test-server.sh") ||
    die "redis-server did not start"
[[ -n $REDIS_PID ]] || die "redis-server did not start"
REDIS_PORT=${REDIS_URL##*:}
REDIS_PORT=${REDIS_PORT%%/*}
log "postgres $PG_URL (postmaster $PG_PID); redis $REDIS_URL (pid $REDIS_PID)"

# ---- pake processes -------------------------------------------------------------------------------
COMMON=(--threads 1 --no-access-log --rate-read 1000000000 --burst-read 1000000000
    --rate-write 1000000000 --burst-write 1000000000 --rate-search 1000000000 --burst-search 1000000000
    --rate-max-keys 1000)
DIST=(--database-url "$PG_URL" --redis-url "$REDIS_URL")

start_pake() { # start_pake NAME FLAGS...: one more process; appends to PAKE_PIDS / PAKE_PORTS
    local name=$1 port pid
    shift
    port=$(free_port)
    mkdir -p "$TMP/$name"
    "${SRV_PIN[@]}" "$PAKE_BIN" serve --listen "127.0.0.1:$port" --data-dir "$TMP/$name" "${COMMON[@]}" "$@" \
        >"$TMP/$name.log" 2>&1 &
    pid=$!
    if ! wait_ready "http://127.0.0.1:$port/health/ready" "$pid" "$READY_TIMEOUT"; then
        tail -n 20 "$TMP/$name.log" >&2 || true
        die "pake $name did not become ready"
    fi
    PAKE_PIDS+=("$pid")
    PAKE_PORTS+=("$port")
    log "pake $name ready on 127.0.0.1:$port (pid $pid): ${*:-embedded store}"
}

ports_csv() { local IFS=,; echo "${PAKE_PORTS[*]}"; }
metrics_snapshot() { # summed counters of all running processes (probe.py metrics)
    local urls=() p
    for p in "${PAKE_PORTS[@]}"; do urls+=("http://127.0.0.1:$p/metrics"); done
    python3 "$PROBE" metrics "${urls[@]}"
}
cpu_snapshot() { # "pake T\npg T\nredis T"
    local IFS=,
    python3 "$PROBE" cpu "pake=${PAKE_PIDS[*]}" "pg=$PG_PID" "redis=$REDIS_PID"
}

load_notes() { # load_notes IDS_FILE LABEL: through the first running pake process
    local ids=$1 rc=0 out
    out=$(timeout 900 "${LOAD_PIN[@]}" python3 "$REPO/bench/http/load_notes.py" \
        --base "http://127.0.0.1:${PAKE_PORTS[0]}" --input "$DATA/notes-10k.jsonl" --out "$ids" \
        --threads 4 --limit "$NOTES_LIMIT") || rc=$?
    log "$out"
    LOAD_LINES+=("$2: $out")
    [[ -s $ids ]] || die "no note could be created (load_notes exit $rc)"
    ((rc == 0)) || { log "warning: load_notes exit $rc"; FAILED=1; }
}

# wrk_run MODE FILE [DURATION]: prints the BENCH line; wrk threads spread over PAKE_PORTS
wrk_run() {
    local mode=$1 file=$2 dur=${3:-$DURATION} out
    out=$(BENCH_PORTS=$(ports_csv) timeout $((dur + 30)) "${LOAD_PIN[@]}" "$WRK" -t2 -c"$CONNS" -d"${dur}s" \
        --timeout 5s -s "$LUA" "http://127.0.0.1:${PAKE_PORTS[0]}/" -- "$mode" "$file" 0.99) ||
        die "wrk failed ($mode)"
    grep '^BENCH ' <<<"$out" || die "no BENCH line from wrk: $out"
}

warm() { # warm IDS [PORT...]: one GET of every note and every search word on each process (default:
    local ids=$1 port t0=$SECONDS ports #       all), which fills its L1 and the L2
    shift
    ports=("$@")
    ((${#ports[@]})) || ports=("${PAKE_PORTS[@]}")
    for port in "${ports[@]}"; do
        "${LOAD_PIN[@]}" python3 "$PROBE" warm "http://127.0.0.1:$port" "$ids" "$WORDS" || die "warm-up failed"
    done
    log "warm-up: every note and search once per process ($((SECONDS - t0))s)"
}

ROWS=()
# measure LABEL STORE MODE FILE: one recorded run of the running processes
measure() {
    local label=$1 store=$2 mode=$3 file=$4 c0 c1 line req rps p50 p99 err dp dg dr cpu
    log "running: $label ($store, ${#PAKE_PIDS[@]} process(es), ${DURATION}s)"
    c0=$(cpu_snapshot)
    line=$(wrk_run "$mode" "$file")
    c1=$(cpu_snapshot)
    req=$(field requests "$line")
    rps=$(field rps "$line")
    p50=$(field p50_us "$line")
    p99=$(field p99_us "$line")
    err=$(($(field errors "$line") + $(field status_errors "$line")))
    ((err == 0)) || FAILED=1
    dp=$(($(metric pake "$c1") - $(metric pake "$c0")))
    dg=$(($(metric pg "$c1") - $(metric pg "$c0")))
    dr=$(($(metric redis "$c1") - $(metric redis "$c0")))
    cpu=$(awk -v n="$req" -v hz="$CLK_TCK" -v a="$dp" -v b="$dg" -v c="$dr" 'BEGIN {
        f = 1e6 / hz / (n > 0 ? n : 1); printf "%.0f | %.0f | %.0f | %.0f", a * f, b * f, c * f, (a + b + c) * f }')
    ROWS+=("| $label | $store | ${#PAKE_PIDS[@]} | $(printf '%.0f' "$rps") | $(fmt_us "$p50") | $(fmt_us "$p99") | $cpu | $err |")
}

ZROWS=()
# zipf_windows LABEL: cold + warm Zipf windows on the running (fresh) processes
zipf_windows() {
    local label=$1 m0 m1 line w
    m0=$(metrics_snapshot)
    for w in cold warm; do
        log "running: zipf $label, $w window (${DURATION}s)"
        line=$(wrk_run zipf "$IDS_PG")
        m1=$(metrics_snapshot)
        local req rps err h m h2 m2 sg
        req=$(field requests "$line")
        rps=$(field rps "$line")
        err=$(($(field errors "$line") + $(field status_errors "$line")))
        ((err == 0)) || FAILED=1
        h=$(($(metric l1_hits "$m1") - $(metric l1_hits "$m0")))
        m=$(($(metric l1_misses "$m1") - $(metric l1_misses "$m0")))
        h2=$(($(metric l2_hits "$m1") - $(metric l2_hits "$m0")))
        m2=$(($(metric l2_misses "$m1") - $(metric l2_misses "$m0")))
        sg=$(($(metric store_note_get "$m1") - $(metric store_note_get "$m0")))
        ZROWS+=("$(awk -v lab="$label" -v w="$w" -v n="$req" -v rps="$rps" -v h="$h" -v m="$m" -v h2="$h2" \
            -v m2="$m2" -v sg="$sg" -v err="$err" 'function pct(a, b) { return b > 0 ? sprintf("%.1f%%", 100 * a / b) : "-" }
            BEGIN { printf "| %s | %s | %d | %.0f | %s | %s | %s | %s | %d |", lab, w, n, rps, pct(h, h + m),
                    pct(h2, h2 + m2), pct(h + h2, h + m), pct(n - sg, n), err }')")
        m0=$m1
    done
}

LOAD_LINES=()
IDS_SQLITE=$TMP/ids-sqlite.txt
IDS_PG=$TMP/ids-pg.txt

# ---- 2. SQLite reference --------------------------------------------------------------------------
start_pake sqlite
load_notes "$IDS_SQLITE" SQLite
warm "$IDS_SQLITE"
measure "GET /v1/notes/{id}" "SQLite, L1 64 MiB" notes "$IDS_SQLITE"
measure "GET /v1/search?q=word" "SQLite, L1 64 MiB" search "$WORDS"
stop_pakes
start_pake sqlite --cache-bytes 0
measure "GET /v1/notes/{id}" "SQLite, no L1" notes "$IDS_SQLITE"
measure "GET /v1/search?q=word" "SQLite, no L1" search "$WORDS"
stop_pakes

# ---- 3. PostgreSQL + Redis ------------------------------------------------------------------------
start_pake pg-a "${DIST[@]}"
load_notes "$IDS_PG" "PostgreSQL (through pake with Redis)"
# Quiesce: the load leaves autovacuum/analyze and a checkpoint due; run them now rather than during a run.
"${LOAD_PIN[@]}" "$PGBIN/psql" -q -X "$PG_URL" -c 'VACUUM ANALYZE' -c 'CHECKPOINT' >&2 || die "VACUUM/CHECKPOINT failed"
warm "$IDS_PG"
measure "GET /v1/notes/{id}" "PG + Redis, L1 64 MiB" notes "$IDS_PG"
measure "GET /v1/search?q=word" "PG + Redis, L1 64 MiB" search "$WORDS"
start_pake pg-b "${DIST[@]}"
warm "$IDS_PG" "${PAKE_PORTS[1]}" # pg-a is warm already
measure "GET /v1/notes/{id}" "PG + Redis, L1 64 MiB" notes "$IDS_PG"
measure "GET /v1/search?q=word" "PG + Redis, L1 64 MiB" search "$WORDS"
stop_pakes
start_pake pg-a "${DIST[@]}" --cache-bytes 0
measure "GET /v1/notes/{id}" "PG + Redis, no L1" notes "$IDS_PG"
measure "GET /v1/search?q=word" "PG + Redis, no L1" search "$WORDS"
start_pake pg-b "${DIST[@]}" --cache-bytes 0
measure "GET /v1/notes/{id}" "PG + Redis, no L1" notes "$IDS_PG"
measure "GET /v1/search?q=word" "PG + Redis, no L1" search "$WORDS"
stop_pakes
start_pake pg-a "${DIST[@]}" --no-redis-ratelimit
warm "$IDS_PG"
measure "GET /v1/notes/{id}" "PG + Redis, L1 64 MiB, local rate limit" notes "$IDS_PG"
stop_pakes

# ---- 4. Zipf 0.99 hit rates -----------------------------------------------------------------------
redis-cli -p "$REDIS_PORT" FLUSHDB >/dev/null
start_pake pg-a "${DIST[@]}"
zipf_windows "1 process, L1 64 MiB"
# L1 charge of one note: this L1 holds notes only (no search page), all it ever loaded (no eviction)
snap=$(metrics_snapshot)
ENTRY_BYTES=$(awk -v b="$(metric l1_bytes "$snap")" -v e="$(metric l1_entries "$snap")" \
    'BEGIN { printf "%d", (e > 0 ? b / e : 1100) }')
NIDS=$(wc -l <"$IDS_PG")
SMALL=$(awk -v f="$SMALL_FRACTION" -v n="$NIDS" -v b="$ENTRY_BYTES" 'BEGIN { printf "%d", f * n * b }')
log "L1 charge per note: $ENTRY_BYTES bytes; small L1 = $SMALL bytes (~${SMALL_FRACTION} of $NIDS notes)"
stop_pakes
redis-cli -p "$REDIS_PORT" FLUSHDB >/dev/null
start_pake pg-a "${DIST[@]}" --cache-bytes "$SMALL"
zipf_windows "1 process, L1 $((SMALL / 1024)) KiB"
stop_pakes
redis-cli -p "$REDIS_PORT" FLUSHDB >/dev/null
start_pake pg-a "${DIST[@]}" --cache-bytes "$SMALL"
start_pake pg-b "${DIST[@]}" --cache-bytes "$SMALL"
zipf_windows "2 processes, L1 $((SMALL / 1024)) KiB each"
stop_pakes

# ---- 5. report ------------------------------------------------------------------------------------
mkdir -p "$OUT_DIR"
REPORT=$OUT_DIR/distributed-$(date +%Y%m%d-%H%M%S).md
{
    echo "# Distributed mode, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "wrk 2 threads, $CONNS connections, ${DURATION}s per run (L1 runs after one GET of every note and search per process);" \
        "servers pinned: ${SRV_PIN[*]:-no}, load: ${LOAD_PIN[*]:-no}; \`$PAKE_BIN serve --threads 1\` per process;" \
        "$("$PGBIN/postgres" --version 2>/dev/null || echo postgres);" \
        "$(redis-server --version | awk '{ print $1, $2, $3 }'); load average at the start: $LOAD_START, at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
    printf 'Load: %s\n' "${LOAD_LINES[@]}"
    echo
    echo "CPU us/req: utime+stime during the run / requests, for all pake processes, PostgreSQL" \
        "(postmaster and children) and redis-server."
    echo
    echo "| request | store | pake processes | req/s | p50 | p99 | CPU us/req pake | postgres | redis | total | errors |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "Zipf(0.99) over $NIDS ids, GET /v1/notes/{id}; caches empty at the start of the cold window" \
        "(Redis FLUSHDB, fresh processes); small L1 = $SMALL bytes = $SMALL_FRACTION x $NIDS notes x" \
        "$ENTRY_BYTES bytes (L1 charge per note). L2 hit = of the L1 misses; combined = (L1 + L2 hits) /" \
        "requests; 'not from store' = 1 - store note reads / requests (cross-check)."
    echo
    echo "| configuration | window | requests | req/s | L1 hit | L2 hit | combined | not from store | errors |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${ZROWS[@]}"
} >"$REPORT"
echo
cat "$REPORT"
echo
log "written to $REPORT"
exit "$FAILED"
