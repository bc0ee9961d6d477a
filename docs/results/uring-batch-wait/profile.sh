#!/usr/bin/env bash
# Where the batch wait's extra CPU goes: perf record -g on one ring (CPU 0) for 3 s of lab-load -c 8
# (CPU 1), with --batch-wait-us 0 and 20; then the share of the server's samples under the kernel
# functions that say whether the thread slept (io_cqring_wait, schedule) and woke the client
# (sock_def_readable), and the samples per request.
set -euo pipefail
BIN=${BIN:-target/release}
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT
for w in 0 20; do
  "$BIN/lab-uring" --addr 127.0.0.1:0 --workers 1 --cpus 0 --batch-wait-us "$w" >"$out/server" 2>/dev/null &
  pid=$!
  sleep 0.4
  port=$(grep -oP '127.0.0.1:\K\d+' "$out/server")
  "$BIN/lab-load" "http://127.0.0.1:$port/" -d 5 --warmup 0.5 --cpus 1 -c 8 --json "$out/load.json" >/dev/null 2>&1 &
  load=$!
  sleep 1.5
  perf record -q -g -o "$out/perf.data" -p "$pid" -- sleep 3 2>/dev/null
  wait "$load"
  kill "$pid"
  wait "$pid" || true
  rps=$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["rps"]))' "$out/load.json")
  samples=$(perf script -i "$out/perf.data" 2>/dev/null | grep -c '^lab-uring' || true)
  echo "== --batch-wait-us $w: $rps req/s, $samples samples in 3 s = $(python3 -c "print(round($samples / ($rps * 3), 4))") per request"
  perf report -i "$out/perf.data" --children --sort sym -q -g none 2>/dev/null |
    grep -E " (io_issue_sqe|tcp_sendmsg|io_cqring_wait|schedule|finish_task_switch.isra.0|sock_def_readable)$" || true
done
