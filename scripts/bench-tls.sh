#!/usr/bin/env bash
# bench-tls.sh: the servers over TLS beside nginx with `ssl` on the same certificate (a benchmark, not a
# test): `make bench-tls`.
#
# Usage: scripts/bench-tls.sh [ROW...]
#   ROW       lab servers to run, by binary name without lab-, default: epoll
#   DURATION  (environment) measured seconds per workload, default 3; ROUNDS, default 3 (0: no table)
#   SPLIT     (environment) e.g. "memcached ramcloud": after the table, which thread pays (see below)
#
# Each server runs one worker on CPU 0 (the lab rows with --workers 1 --cpus 0, nginx with
# worker_processes 1 pinned to CPU 0), lab-load one thread on CPU 1. Workloads:
#   keep-alive      plaintext, 64 connections (the reference for the record layer's cost)
#   tls-keep-alive  64 TLS connections, handshakes once
#   tls-churn       a new TLS connection per request, 32 at a time, every handshake full
#   tls-resume      as tls-churn with --tls-resume: handshakes resumed by ticket
# Server CPU is the server's own (utime + stime of all its processes, from /proc) over the run,
# divided by the requests lab-load counted, and for the churn workloads by the handshakes it made.
# TLS 1.3, X25519, ECDSA P-256 (make cert), ALPN http/1.1, on both sides.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-3}
ROUNDS=${ROUNDS:-3}
ROWS=("$@")
[[ ${#ROWS[@]} -gt 0 ]] || ROWS=(epoll)
LOAD=target/release/lab-load
CERT=target/cert
WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
    [[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

for binary in "$LOAD" target/release/lab-cert; do
    [[ -x $binary ]] || { echo "bench-tls.sh: $binary is missing: run cargo build --release" >&2; exit 1; }
done
[[ -f $CERT/server.pem ]] || target/release/lab-cert --out "$CERT" >/dev/null
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# A port nothing listens on.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Clock ticks of CPU the process PID and its children have used.
cpu_ticks() {
    local total=0 pid stat
    for pid in "$1" $(pgrep -P "$1" || true); do
        stat=$(cut -d' ' -f14,15 "/proc/$pid/stat" 2>/dev/null) || continue
        total=$((total + ${stat% *} + ${stat#* }))
    done
    echo "$total"
}

# start ROW TLS(0/1): starts the server, sets SERVER_PID and PORT, waits until it accepts.
start() {
    local row=$1 tls=$2
    PORT=$(free_port)
    if [[ $row == nginx-ssl ]]; then
        local ssl="" user=""
        [[ $tls == 1 ]] && ssl=" ssl"
        [[ $(id -u) == 0 ]] && user="user root root;"
        cat >"$WORK/nginx.conf" <<EOF
daemon off; master_process on; pid $WORK/nginx.pid; error_log $WORK/error.log warn; $user
worker_processes 1; worker_cpu_affinity 01;
events { worker_connections 16384; }
http {
  access_log off; default_type text/plain; keepalive_requests 1000000000; keepalive_timeout 75s;
  client_body_temp_path $WORK/body; proxy_temp_path $WORK/proxy; fastcgi_temp_path $WORK/fastcgi;
  uwsgi_temp_path $WORK/uwsgi; scgi_temp_path $WORK/scgi;
  ssl_certificate $PWD/$CERT/server.pem; ssl_certificate_key $PWD/$CERT/server.key;
  ssl_protocols TLSv1.3 TLSv1.2; ssl_ecdh_curve X25519:prime256v1:secp384r1; ssl_session_tickets on;
  server { listen 127.0.0.1:$PORT$ssl backlog=511; location / { return 200 "Hello, World!"; } }
}
EOF
        "$NGINX" -p "$WORK" -c "$WORK/nginx.conf" -e "$WORK/error.log" &
    else
        local args=(--addr "127.0.0.1:$PORT" --cpus 0)
        [[ $row != epoll ]] && args+=(--workers 1)
        [[ $tls == 1 ]] && args+=(--tls-cert "$CERT/server.pem" --tls-key "$CERT/server.key")
        "target/release/lab-$row" "${args[@]}" >/dev/null 2>"$WORK/server.err" &
    fi
    SERVER_PID=$!
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "bench-tls.sh: $row did not start" >&2
    exit 1
}

stop() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

# run ROW WORKLOAD: one measurement; prints "req/s cpu-us-per-request cpu-us-per-handshake handshakes".
run() {
    local row=$1 workload=$2 tls=1 scheme=https flags=() before after
    case $workload in
        keep-alive) tls=0 scheme=http flags=(-c 64) ;;
        tls-keep-alive) flags=(-c 64) ;;
        tls-churn) flags=(-c 32 --close) ;;
        tls-resume) flags=(-c 32 --close --tls-resume) ;;
    esac
    [[ $tls == 1 ]] && flags+=(--cacert "$CERT/ca.pem")
    start "$row" "$tls"
    "$LOAD" "$scheme://127.0.0.1:$PORT/" "${flags[@]}" -d 0.5 --warmup 0 --cpus 1 --no-progress >/dev/null
    before=$(cpu_ticks "$SERVER_PID")
    "$LOAD" "$scheme://127.0.0.1:$PORT/" "${flags[@]}" -d "$DURATION" --warmup 0 --cpus 1 \
        --json "$WORK/load.json" --no-progress >/dev/null
    after=$(cpu_ticks "$SERVER_PID")
    stop
    python3 -c '
import json, os, sys
report, ticks = json.load(open(sys.argv[1])), int(sys.argv[2])
cpu_us = ticks / os.sysconf("SC_CLK_TCK") * 1e6
requests = report["requests"]
errors = sum(report["errors"].values())
handshakes = sum((report.get("tls") or {}).values())
per_handshake = cpu_us / handshakes if handshakes and sys.argv[3] != "tls-keep-alive" else 0
rps = report["rps"]
print(f"{rps:.0f} {cpu_us / max(requests, 1):.1f} {per_handshake:.1f} {handshakes} {errors}")
' "$WORK/load.json" "$((after - before))" "$workload"
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

[[ $ROUNDS -gt 0 ]] && printf '%-10s %-15s %12s %16s %18s\n' server workload "req/s" "cpu µs/request" "cpu µs/handshake"
for row in "${ROWS[@]}" nginx-ssl; do
    [[ $ROUNDS -gt 0 ]] || break
    for workload in keep-alive tls-keep-alive tls-churn tls-resume; do
        : >"$WORK/rounds"
        for _ in $(seq 1 "$ROUNDS"); do
            run "$row" "$workload" >>"$WORK/rounds"
        done
        errors=$(awk '{ s += $5 } END { print s }' "$WORK/rounds")
        [[ $errors == 0 ]] || echo "bench-tls.sh: $row $workload: $errors errors" >&2
        printf '%-10s %-15s %12s %16s %18s\n' "$row" "$workload" \
            "$(cut -d' ' -f1 "$WORK/rounds" | median)" "$(cut -d' ' -f2 "$WORK/rounds" | median)" \
            "$(cut -d' ' -f3 "$WORK/rounds" | median)"
    done
done
[[ $ROUNDS -gt 0 ]] && echo "(medians of $ROUNDS rounds of ${DURATION} s; server on CPU 0, lab-load on CPU 1; µs/handshake: tls-churn and tls-resume only)"

# Which thread pays, where a design has one in the middle (SPLIT="memcached ramcloud"): the server
# with 2 workers, unpinned, the main thread (lab-memcached's acceptor, lab-ramcloud's dispatcher)
# against the worker threads, in CPU µs per handshake (tls-churn) and per request (tls-keep-alive).
thread_ticks() {
    local pid=$1 main=0 others=0 task stat ticks
    for task in /proc/"$pid"/task/*; do
        stat=$(cut -d' ' -f14,15 "$task/stat" 2>/dev/null) || continue
        ticks=$((${stat% *} + ${stat#* }))
        if [[ ${task##*/} == "$pid" ]]; then main=$((main + ticks)); else others=$((others + ticks)); fi
    done
    echo "$main $others"
}
if [[ -n ${SPLIT:-} ]]; then
    printf '\n%-10s %-15s %12s %22s %22s\n' server workload "req/s" "main thread cpu µs/op" "workers cpu µs/op"
    for row in $SPLIT; do
        for workload in tls-churn tls-keep-alive; do
            flags=(-c 32 --close)
            [[ $workload == tls-keep-alive ]] && flags=(-c 64)
            PORT=$(free_port)
            "target/release/lab-$row" --addr "127.0.0.1:$PORT" --workers 2 \
                --tls-cert "$CERT/server.pem" --tls-key "$CERT/server.key" >/dev/null 2>&1 &
            SERVER_PID=$!
            for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.05; done
            read -r main_before others_before < <(thread_ticks "$SERVER_PID")
            "$LOAD" "https://127.0.0.1:$PORT/" "${flags[@]}" --cacert "$CERT/ca.pem" -d "$DURATION" \
                --warmup 0 --json "$WORK/load.json" --no-progress >/dev/null
            read -r main_after others_after < <(thread_ticks "$SERVER_PID")
            stop
            python3 -c '
import json, os, sys
report = json.load(open(sys.argv[1]))
tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
ops = sum(report["tls"].values()) if sys.argv[4] == "tls-churn" else report["requests"]
main, others = int(sys.argv[2]) * tick_us / ops, int(sys.argv[3]) * tick_us / ops
rps = report["rps"]
print(f"{sys.argv[5]:<10} {sys.argv[4]:<15} {rps:>12.0f} {main:>22.1f} {others:>22.1f}")
' "$WORK/load.json" "$((main_after - main_before))" "$((others_after - others_before))" "$workload" "$row"
        done
    done
fi
