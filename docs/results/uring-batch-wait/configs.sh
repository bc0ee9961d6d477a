#!/usr/bin/env bash
# lab-uring with and without --batch-wait-us 20 away from the benchmark's one configuration: one
# ring with 8 connections, with 64 (closed loop, and open loop at 40 000 req/s), and two rings on
# CPUs 0-1 (ring 1 sharing CPU 1 with lab-load). lab-load -d 3 on CPU 1; server CPU from /proc,
# io_uring_enter calls per request from /stats. ROUNDS rounds, the two waits alternating.
set -euo pipefail
BIN=${BIN:-target/release}
ROUNDS=${ROUNDS:-3}
TICK=$(getconf CLK_TCK)
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT
run() { # workers cpus connections batch-wait [rate]
  "$BIN/lab-uring" --addr 127.0.0.1:0 --workers "$1" --cpus "$2" --batch-wait-us "$4" >"$out/server" 2>/dev/null &
  local pid=$!
  sleep 0.4
  local port c0 c1
  port=$(grep -oP '127.0.0.1:\K\d+' "$out/server")
  c0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  "$BIN/lab-load" "http://127.0.0.1:$port/" -d 3 --warmup 0.5 --cpus 1 -c "$3" ${5:+--rate "$5"} \
    --json "$out/load.json" >/dev/null 2>&1
  c1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  curl -s "http://127.0.0.1:$port/stats" >"$out/stats.json"
  kill "$pid"
  wait "$pid" || true
  python3 - "$out" "$1" "$3" "${5:-closed}" "$4" "$((c1 - c0))" "$TICK" <<'PY'
import json, sys
out, workers, conns, rate, wait, ticks, tick = sys.argv[1:]
load = json.load(open(f"{out}/load.json"))
rings = [w for w in json.load(open(f"{out}/stats.json"))["workers"] if "ring" in w]
requests = sum(w["requests"] for w in rings)
print(json.dumps(dict(workers=int(workers), conns=int(conns), rate=rate, wait_us=int(wait), rps=round(load["rps"]),
    errors=sum(load["errors"].values()), p50_us=load["latency_us"]["p50"], p99_us=load["latency_us"]["p99"],
    # the server's CPU over warm-up and run (3.5 s) per request served in them
    cpu_us_per_request=round(int(ticks) / int(tick) * 1e6 / requests, 2),
    enters_per_request=round(sum(w["ring"]["enters"] for w in rings) / requests, 3))), flush=True)
PY
}
for _ in $(seq "$ROUNDS"); do
  for w in 0 20; do run 1 0 8 "$w"; done
  for w in 0 20; do run 1 0 64 "$w"; done
  for w in 0 20; do run 1 0 64 "$w" 40000; done
  for w in 0 20; do run 2 0,1 64 "$w"; done
done
