#!/usr/bin/env bash
# Starts a throw-away redis-server for tests on 127.0.0.1: a free port (or --port N), a temporary
# directory (or --dir D), no persistence (--persist: an AOF fsynced on every write, reloaded by a
# restart with the same --port and --dir), optionally `requirepass` (--password PW). Waits until it
# answers PING, then prints one line:  URL PID DIR   and exits (the server keeps running).
# Stop it by pid: kill PID (or kill -9 PID to simulate a crash), then rm -rf DIR.
set -euo pipefail
port="" dir="" password="" persist=""
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port="$2"; shift 2 ;;
    --dir) dir="$2"; shift 2 ;;
    --password) password="$2"; shift 2 ;;
    --persist) persist=1; shift ;;
    *) echo "usage: $0 [--port N] [--dir D] [--password PW] [--persist]" >&2; exit 2 ;;
  esac
done
command -v redis-server >/dev/null || { echo "redis-server is not installed (scripts/install-deps.sh)" >&2; exit 3; }
[ -n "$port" ] || port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
[ -n "$dir" ] || dir=$(mktemp -d /tmp/pake-redis-XXXXXX)
args=(--port "$port" --bind 127.0.0.1 --dir "$dir" --save "" --appendonly no --daemonize no
      --logfile "$dir/redis.log" --protected-mode yes --maxmemory 64mb --maxmemory-policy volatile-ttl)
[ -n "$password" ] && args+=(--requirepass "$password")
[ -n "$persist" ] && args+=(--appendonly yes --appendfsync always)
redis-server "${args[@]}" </dev/null >/dev/null 2>&1 &
pid=$!
auth=()
[ -n "$password" ] && auth=(--no-auth-warning -a "$password")
for _ in $(seq 1 100); do
  if redis-cli -h 127.0.0.1 -p "$port" "${auth[@]}" PING 2>/dev/null | grep -q PONG; then
    if [ -n "$password" ]; then url="redis://:$password@127.0.0.1:$port/0"; else url="redis://127.0.0.1:$port/0"; fi
    echo "$url $pid $dir"
    exit 0
  fi
  kill -0 "$pid" 2>/dev/null || { echo "redis-server exited; log:" >&2; cat "$dir/redis.log" >&2 || true; exit 1; }
  sleep 0.05
done
kill "$pid" 2>/dev/null || true
echo "redis-server did not answer PING in time" >&2
exit 1
