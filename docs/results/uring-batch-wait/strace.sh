#!/usr/bin/env bash
# System calls per keep-alive request, counted by strace -c -f on the running server (one worker on
# CPU 0, lab-load -c 64 on CPU 1), for lab-uring with and without the batch wait and for lab-epoll.
# strace slows every call, so the absolute rates are lower than without it; the counts are exact.
set -euo pipefail
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
BIN=${BIN:-target/release}
for server in "lab-uring --batch-wait-us 20" "lab-uring --batch-wait-us 0" "lab-epoll"; do
  log=$(mktemp)
  # shellcheck disable=SC2086 # the server's name and its flags
  "$BIN"/$server --addr 127.0.0.1:0 --workers 1 --cpus 0 >"$log" 2>/dev/null &
  pid=$!
  sleep 0.5
  port=$(grep -oP '127.0.0.1:\K\d+' "$log")
  trace=$(mktemp)
  strace -c -f -o "$trace" -p "$pid" &
  tracer=$!
  sleep 0.5
  "$BIN/lab-load" "http://127.0.0.1:$port/" -d 3 --warmup 0 --cpus 1 -c 64 --json "$log.json" >/dev/null 2>&1
  requests=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["requests"])' "$log.json")
  kill -INT "$tracer"; wait "$tracer" || true
  kill "$pid"; wait "$pid" || true
  # strace -c: % time, seconds, usecs/call, calls, [errors,] syscall; between the two rules of dashes.
  calls=$(awk '/^-/ {rule++; next} rule == 1 && NF {printf "%s %s\n", $NF, $4}' "$trace" | sort -k2 -nr)
  total=$(awk '{sum += $2} END {print sum}' <<<"$calls")
  echo "== $server: $requests requests, $total system calls = $(python3 -c "print(round($total / $requests, 3))") per request"
  awk '{printf "   %-20s %10s calls\n", $1, $2}' <<<"$calls" | head -6
  rm -f "$log" "$log.json" "$trace"
done
