#!/usr/bin/env bash
# loadgen-vs-wrk.sh: lab-load against wrk on the same server, alternated round by round.
#
#   scripts/loadgen-vs-wrk.sh [epoll|nginx] [ROUNDS] [SECS]     (defaults: epoll 3 5)
#
# The server is pinned to CPU $SERVER_CPU (0) and both clients to CPU $CLIENT_CPU (1), one thread and
# 64 connections each, in three modes: keep-alive; 16 requests pipelined per connection (wrk with
# scripts/pipeline.lua); and a new connection per request (lab-load --close, wrk with
# "Connection: close"). Prints a Markdown table: the median requests/s of each client, their ratio,
# and the median CPU time (user + system) each client spent per request, which a busy machine
# disturbs far less than the rate. lab-load's runs must end with no error and nothing lost.
set -euo pipefail

cd "$(dirname "$0")/.."
SERVER=${1:-epoll}
ROUNDS=${2:-3}
SECS=${3:-5}
PORT=${PORT:-18181}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
MODES=${MODES:-keep-alive pipelined-16 close}
URL="http://127.0.0.1:$PORT/"
WORK=$(mktemp -d)
SERVER_PID=
trap '[ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT

cargo build --release -q -p load -p epoll
for tool in wrk python3; do
  command -v "$tool" >/dev/null || { echo "loadgen-vs-wrk.sh: $tool is not installed" >&2; exit 1; }
done

case "$SERVER" in
  epoll)
    taskset -c "$SERVER_CPU" target/release/lab-epoll --addr "127.0.0.1:$PORT" --cpus "$SERVER_CPU" \
      >"$WORK/server.out" 2>"$WORK/server.err" &
    SERVER_PID=$! ;;
  nginx)
    mkdir -p "$WORK/nginx/logs"
    cat >"$WORK/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
master_process off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000000;
  server {
    listen 127.0.0.1:$PORT;
    location / { default_type text/plain; return 200 "Hello, World!"; }
  }
}
CONF
    # master_process off: the one worker is this process, which taskset pins.
    taskset -c "$SERVER_CPU" nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" 2>"$WORK/server.err" &
    SERVER_PID=$! ;;
  *) echo "loadgen-vs-wrk.sh: the server is epoll or nginx, not $SERVER" >&2; exit 2 ;;
esac
for _ in $(seq 50); do curl -fs "$URL" >/dev/null 2>&1 && break; sleep 0.1; done

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# Prints "requests/s CPU-µs-per-request". No warm-up, as wrk has none, so that the CPU time and
# the request count cover the same run.
lab_load() { # extra lab-load flags...
  /usr/bin/time -o "$WORK/cpu" -f "%U %S" target/release/lab-load "$URL" -t1 -c64 --cpus "$CLIENT_CPU" \
    -d "$SECS" --warmup 0 --no-progress --json "$WORK/load.json" "$@" >/dev/null
  python3 - "$WORK/load.json" "$WORK/cpu" <<'PY'
import json, sys
run = json.load(open(sys.argv[1]))
assert run["lost"] == 0 and sum(run["errors"].values()) == 0, (run["errors"], run["first_errors"], run["lost"])
user, system = map(float, open(sys.argv[2]).read().split()[-2:])
print(run["rps"], (user + system) * 1e6 / run["requests"])
PY
}

wrk_run() { # extra wrk flags...
  /usr/bin/time -o "$WORK/cpu" -f "%U %S" taskset -c "$CLIENT_CPU" wrk -t1 -c64 -d"${SECS}s" "$@" >"$WORK/wrk.out"
  read -r user system < <(tail -1 "$WORK/cpu")
  awk -v u="$user" -v s="$system" '
    / requests in / { n = $1 } /^Requests\/sec:/ { r = $2 } /Non-2xx|Socket errors/ { bad = $0 }
    END { if (bad != "") print "wrk: " bad > "/dev/stderr"; print r, (u + s) * 1e6 / n }' "$WORK/wrk.out"
}

echo "| server | mode | lab-load req/s | wrk req/s | ratio | lab-load CPU µs/req | wrk CPU µs/req | CPU ratio |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
for mode in $MODES; do
  : >"$WORK/load.txt"; : >"$WORK/wrk.txt"
  for round in $(seq "$ROUNDS"); do
    case "$mode" in
      keep-alive) lab_load >>"$WORK/load.txt"; wrk_run "$URL" >>"$WORK/wrk.txt" ;;
      pipelined-16)
        lab_load --pipeline 16 >>"$WORK/load.txt"
        wrk_run -s scripts/pipeline.lua "$URL" -- 16 >>"$WORK/wrk.txt" ;;
      close) lab_load --close >>"$WORK/load.txt"; wrk_run -H "Connection: close" "$URL" >>"$WORK/wrk.txt" ;;
      *) echo "loadgen-vs-wrk.sh: unknown mode $mode" >&2; exit 2 ;;
    esac
    echo "round $round $mode: lab-load $(tail -1 "$WORK/load.txt"); wrk $(tail -1 "$WORK/wrk.txt")" >&2
  done
  load_rps=$(cut -d' ' -f1 "$WORK/load.txt" | median); wrk_rps=$(cut -d' ' -f1 "$WORK/wrk.txt" | median)
  load_cpu=$(cut -d' ' -f2 "$WORK/load.txt" | median); wrk_cpu=$(cut -d' ' -f2 "$WORK/wrk.txt" | median)
  awk -v s="$SERVER" -v m="$mode" -v l="$load_rps" -v w="$wrk_rps" -v lc="$load_cpu" -v wc="$wrk_cpu" \
    'BEGIN { printf "| %s | %s | %.0f | %.0f | %.2f | %.3f | %.3f | %.2f |\n", s, m, l, w, l / w, lc, wc, wc / lc }'
done
