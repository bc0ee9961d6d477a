#!/usr/bin/env bash
# echo.sh BEFORE AFTER [ROUNDS]: POST /echo of 64 KiB and 1 MiB against two lab-epoll binaries,
# alternating, ROUNDS times each (default 5): lab-epoll on CPU 0, lab-load on CPU 1 (-c 8, 3 s after
# 0.5 s of warm-up). Prints each run's req/s, then the medians, their ratio, and the median of the
# after/before ratios of each pair of runs (the two of a pair run back to back, so a change in the
# machine's other load moves both).
# Run under flock /tmp/acceptlab-bench.lock so that no other benchmark shares the CPUs.
set -euo pipefail
cd "$(dirname "$0")/../../.."
BEFORE=$1 AFTER=$2 ROUNDS=${3:-5} PORT=18493
LOAD=target/release/lab-load
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# rps BINARY SIZE: one run's req/s.
rps() {
    local bin=$1 size=$2 pid
    taskset -c 0 "$bin" --addr "127.0.0.1:$PORT" >"$WORK/server.out" 2>/dev/null &
    pid=$!
    for _ in $(seq 1 100); do grep -q "listening on" "$WORK/server.out" && break; sleep 0.05; done
    "$LOAD" "http://127.0.0.1:$PORT/echo" -X POST --body-size "$size" -c 8 -d 3 --warmup 0.5 --cpus 1 \
        --json "$WORK/load.json" >/dev/null
    kill -TERM "$pid"
    wait "$pid" || true
    python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["rps"]))' "$WORK/load.json"
}

for size in ${SIZES:-65536 1048576}; do
    before=() after=()
    for _ in $(seq 1 "$ROUNDS"); do
        before+=("$(rps "$BEFORE" "$size")")
        after+=("$(rps "$AFTER" "$size")")
    done
    echo "POST /echo $size bytes: before ${before[*]}; after ${after[*]}"
    python3 - "$size" "${before[*]}" "${after[*]}" <<'PY'
import statistics, sys
size, before, after = sys.argv[1], [float(x) for x in sys.argv[2].split()], [float(x) for x in sys.argv[3].split()]
b, a = statistics.median(before), statistics.median(after)
pairs = statistics.median(x / y for x, y in zip(after, before))
print(f"  medians: before {b:.0f} req/s, after {a:.0f} req/s: {a / b:.3f}x; median of pair ratios {pairs:.3f}x")
PY
done
