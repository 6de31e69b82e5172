#!/usr/bin/env bash
# A stand-in for `pake serve`, to test bench/http/run.sh end to end before the real server exists:
#   bench/http/run.sh bench/http/testing/fake-pake.sh
# It accepts `serve --listen HOST:PORT --data-dir DIR [--threads N]` and execs nginx (single process,
# so the pid run.sh measures is the one doing the work) with the routes the benchmark uses:
# GET /health/ready, POST /v1/notes -> 201 {"data":{"id":<random hex>}}, GET /v1/notes/{id},
# GET /v1/search. It checks nothing about the requests: it only exercises the script's plumbing.
set -euo pipefail
[[ ${1:-} == serve ]] || { echo "usage: $0 serve --listen HOST:PORT --data-dir DIR [--threads N]" >&2; exit 2; }
shift
listen=""
dir=""
while (($#)); do
    case $1 in
    --listen) listen=$2; shift 2 ;;
    --data-dir) dir=$2; shift 2 ;;
    --threads) shift 2 ;;
    *) echo "fake-pake: unknown option $1" >&2; exit 2 ;;
    esac
done
[[ -n $listen && -n $dir ]] || { echo "fake-pake: --listen and --data-dir are required" >&2; exit 2; }
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BODY=$(sed 's/\\/\\\\/g' "$HERE/../note-body.json")
cat >"$dir/nginx.conf" <<CONF
daemon off;
master_process off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 1000000;
    default_type application/json;
    server {
        listen $listen;
        location = /health/ready { return 200 '{"status":"ready"}'; }
        location = /v1/notes {
            if (\$request_method != POST) { return 405; }
            return 201 '{"data":{"id":"\$request_id"},"meta":{}}';
        }
        location /v1/notes/ { return 200 '$BODY'; }
        location = /v1/search { return 200 '{"data":[],"meta":{"q":"\$arg_q"}}'; }
    }
}
CONF
exec "${NGINX_BIN:-/usr/sbin/nginx}" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log"
