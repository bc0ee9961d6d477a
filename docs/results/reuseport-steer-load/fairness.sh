#!/usr/bin/env bash
# The fairness workload of lab-bench (2 heavy and 2 light long-lived connections, one /stats read)
# on 2 workers, RUNS times, for lab-reuseport's three steerings: the connections' split per worker
# and Jain over connections and over requests, from each run's results.json.
# Usage: flock /tmp/acceptlab-bench.lock docs/results/reuseport-steer-load/fairness.sh [BIN_DIR]
set -euo pipefail
BIN=${1:-target/release}
RUNS=${RUNS:-10}
OUT=$(mktemp -d)
for run in $(seq "$RUNS"); do
    "$BIN/lab-bench" --archs reuseport --workloads fairness --sweep-server-cpus 0-1 --sweep-client-cpus 1 \
        --duration 1 --warmup 0.3 --out "$OUT/$run" > /dev/null 2>&1
    python3 - "$OUT/$run/results.json" "$run" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
runs = doc["runs"] if isinstance(doc, dict) and "runs" in doc else doc
for r in runs:
    if r.get("workload") != "fairness":
        continue
    conns = [w["conns"] for w in r["workers_detail"] if w["executes"]]
    reqs = [w["requests"] for w in r["workers_detail"] if w["executes"]]
    print(f"run {sys.argv[2]} {r['server']}: conns per worker {conns}, Jain conns {r['jain_conns']:.2f}, "
          f"requests {reqs}, Jain requests {r['jain_requests']:.2f}")
PY
done
rm -rf "$OUT"
