#!/usr/bin/env bash
# A throwaway PostgreSQL 15 server for tests (Debian's postgresql-15 binaries).
#
#   scripts/pg-test-server.sh start DIR [PORT]   initdb into DIR/data (if new), start on 127.0.0.1:PORT
#                                                (a free port when omitted or 0), wait until it accepts
#                                                connections, write the URL to DIR/url and print it
#   scripts/pg-test-server.sh stop DIR           fast shutdown by the pid in DIR/data/postmaster.pid
#   scripts/pg-test-server.sh kill DIR           SIGKILL the postmaster (crash test), by pid
#   scripts/pg-test-server.sh destroy DIR        stop, then remove DIR
#
# The server runs as an unprivileged user: PostgreSQL refuses to run as root, so as root it runs as
# `nobody` (DIR is handed to that user). Durability is traded for speed (fsync=off,
# synchronous_commit=off, full_page_writes=off): this is only for tests. TCP on 127.0.0.1 only (no Unix
# socket), trust authentication for the user `pake`.
set -euo pipefail
cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop|kill|destroy DIR [PORT]" >&2; exit 2; }
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
[ -x "$PGBIN/postgres" ] || { echo "pg-test-server: $PGBIN/postgres not found (apt-get install postgresql-15)" >&2; exit 3; }

as_user() {
  if [ "$(id -u)" -eq 0 ]; then
    setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$@"
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

pid_of() {
  [ -f "$dir/data/postmaster.pid" ] && head -1 "$dir/data/postmaster.pid" || true
}

case "$cmd" in
start)
  mkdir -p "$dir"
  [ "$(id -u)" -eq 0 ] && chown nobody:nogroup "$dir" && chmod 700 "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    as_user "$PGBIN/initdb" -D "$dir/data" -U pake --auth=trust --encoding=UTF8 --locale=C.UTF-8 \
      --no-sync >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
  fi
  port=${3:-0}
  [ "$port" = 0 ] && port=$(free_port)
  as_user "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 start -o \
    "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories= -c fsync=off \
     -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 \
     -c shared_buffers=32MB -c log_min_messages=warning" >/dev/null \
    || { cat "$dir/server.log" >&2; exit 1; }
  url="postgres://pake@127.0.0.1:$port/postgres"
  echo "$url" >"$dir/url"
  echo "$url"
  ;;
stop | destroy)
  pid=$(pid_of)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    # stop: fast shutdown (clients are disconnected, a checkpoint is written); destroy: immediate
    if [ "$cmd" = stop ]; then kill -INT "$pid"; else kill -QUIT "$pid"; fi
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  [ "$cmd" = destroy ] && rm -rf "$dir"
  exit 0
  ;;
kill)
  pid=$(pid_of)
  [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
  ;;
*)
  echo "usage: $0 start|stop|kill|destroy DIR [PORT]" >&2
  exit 2
  ;;
esac
