# Shell helpers shared by the benchmark drivers (sourced, not run). Everything they start binds
# 127.0.0.1 and is stopped by pid.

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

stop_pid() { # pid: TERM, wait up to 5 s, then KILL, and reap it
    local pid=$1 i
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# poll_url CURL_FLAGS URL PID TIMEOUT: 0 once `curl CURL_FLAGS URL` succeeds; 1 if PID dies or the
# time runs out.
poll_url() {
    local flags=$1 url=$2 pid=$3 deadline=$((SECONDS + $4))
    while ((SECONDS < deadline)); do
        kill -0 "$pid" 2>/dev/null || return 1
        curl "$flags" -o /dev/null --max-time 1 "$url" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# wait_ready URL PID TIMEOUT: 0 once URL answers 2xx; 1 if PID dies or the time runs out.
wait_ready() { poll_url -fsS "$@"; }

# wait_http URL PID TIMEOUT: 0 once URL gives any HTTP answer (a 4xx too); 1 as wait_ready.
wait_http() { poll_url -sS "$@"; }

cpu_ticks() { # utime + stime of a process (all its threads), in clock ticks
    sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

fmt_us() { # microseconds -> "412 us" / "1.25 ms"
    awk -v us="$1" 'BEGIN { if (us < 1000) printf "%d us", us; else printf "%.2f ms", us / 1000 }'
}
