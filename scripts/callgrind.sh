#!/usr/bin/env bash
# callgrind.sh: user-space instructions per request of a server under callgrind (a benchmark, not a
# test; instruction counts hardly move with the machine's load, so before/after ratios are sharp).
#
# Usage: scripts/callgrind.sh [SERVER] [REQUESTS]
#   SERVER    a release binary name, default lab-epoll (built with `cargo build --release`)
#   REQUESTS  requests per measurement, default 100000
#   SERVER_ARGS (environment) more flags for the server, e.g. SERVER_ARGS="--workers 1"
#
# For keep-alive (64 connections) and pipelined 16 deep (16 connections), it runs the server under
# valgrind twice, once serving REQUESTS/10 requests and once REQUESTS + REQUESTS/10, and prints
# (Ir of the second - Ir of the first) / REQUESTS: start-up, connecting and shutdown cancel out.
# Needs valgrind (scripts/install-tools.sh valgrind).
set -euo pipefail
cd "$(dirname "$0")/.."

SERVER=${1:-lab-epoll}
REQUESTS=${2:-100000}
BIN=target/release/$SERVER
LOAD=target/release/lab-load
PORT=${CALLGRIND_PORT:-18391}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

for binary in "$BIN" "$LOAD"; do
    [[ -x $binary ]] || { echo "callgrind.sh: $binary is missing: run cargo build --release" >&2; exit 1; }
done
scripts/install-tools.sh valgrind

# instructions SERVED CONNECTIONS PIPELINE: the total Ir of one server run that answered SERVED
# requests (plus lab-load's connects) before SIGTERM.
instructions() {
    local served=$1 connections=$2 pipeline=$3 out="$WORK/callgrind.out" pid line
    rm -f "$out"
    # shellcheck disable=SC2086 # SERVER_ARGS is split into its flags on purpose
    valgrind --tool=callgrind --callgrind-out-file="$out" "$BIN" --addr "127.0.0.1:$PORT" \
        ${SERVER_ARGS:-} >"$WORK/server.out" 2>"$WORK/server.err" &
    pid=$!
    # Ready when the port accepts: lab-uring's `listening on` can wait under valgrind, whose one
    # running thread may be a ring blocked in io_uring_enter (valgrind does not yield around it).
    for _ in $(seq 1 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
        kill -0 "$pid" 2>/dev/null || { cat "$WORK/server.err" >&2; exit 1; }
        sleep 0.1
    done
    "$LOAD" "http://127.0.0.1:$PORT/" -c "$connections" --pipeline "$pipeline" -n "$served" \
        --warmup 0 --cpus 1 >"$WORK/load.out"
    kill -TERM "$pid"
    wait "$pid" || true
    line=$(grep -E '^(summary|totals):' "$out" | head -1)
    echo "${line#*: }"
}

per_request() {
    local connections=$1 pipeline=$2 base=$((REQUESTS / 10)) small large
    small=$(instructions "$base" "$connections" "$pipeline")
    large=$(instructions "$((base + REQUESTS))" "$connections" "$pipeline")
    awk -v s="$small" -v l="$large" -v n="$REQUESTS" 'BEGIN { printf "%.0f", (l - s) / n }'
}

echo "$SERVER, $REQUESTS requests, instructions per request (callgrind Ir):"
echo "  keep-alive (64 connections):   $(per_request 64 1)"
echo "  pipelined 16 (16 connections): $(per_request 16 16)"
