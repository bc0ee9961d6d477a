#!/usr/bin/env bash
# lab-matrix.sh: the lab-machine measurements no session has made yet, in one command sized for a
# lent machine's device time (about 9 minutes on 16 CPUs), the new servers first, each part added to
# one results directory with lab-bench --append, so that a run cut short keeps what it finished.
#
# Usage (on the lab machine, with .lab/ holding nginx, perf, haproxy, apache2 and the release lab-* binaries):
#     source .lab/env.sh; scripts/lab-matrix.sh OUT_DIR
# Here, to check it end to end in a minute: QUICK=1 scripts/lab-matrix.sh /tmp/matrix
#
# Parts, in order:
#   1. throughput (keep-alive, pipelined, churn): lab-oneshot, lab-uring (plain, uring-batch, one ring
#      per CPU) against lab-reuseport, lab-memcached, lab-ramcloud, lab-nginx exclusive and nginx.
#   2. sweep-bimodal: lab-oneshot against lab-memcached, lab-ramcloud and lab-reuseport, with the
#      queueing model beside each (the central queue without a central thread).
#   3. fairness: lab-oneshot, lab-memcached, lab-reuseport (every row of it: the hash, --steer cpu
#      and --steer load, whose eBPF program picks the least loaded worker).
#   4. throughput for every other row, to complete the matrix.
#   5. throughput of the real systems beside nginx (HAProxy and Apache from .lab/root, Node where the
#      machine has it: lab-bench says in one line which are missing and goes on), about a minute more;
#      lab-epoll, lab-reuseport and nginx are in the same results from parts 1 and 4.
# lab-bench chooses the CPU split (half the CPUs each side) unless BENCH_ARGS says otherwise.
set -euo pipefail

OUT=${1:?usage: scripts/lab-matrix.sh OUT_DIR}
LAB_BENCH=$(command -v lab-bench || echo "$(dirname "${BASH_SOURCE[0]}")/../target/release/lab-bench")
# shellcheck disable=SC2206 # BENCH_ARGS is a list of flags
EXTRA=(${BENCH_ARGS:-})
if [[ ${QUICK:-} == 1 ]]; then
    TIMING=(--quick --server-cpus 0 --client-cpus 1 --sweep-server-cpus 0-1 --sweep-client-cpus 1)
else
    TIMING=(--duration 1.5 --warmup 0.5 --rounds 2)
fi
part() { # NAME ARCHS WORKLOADS
    echo "lab-matrix: part $1: --archs $2 --workloads $3" >&2
    "$LAB_BENCH" "${TIMING[@]}" "${EXTRA[@]}" --archs "$2" --workloads "$3" --out "$OUT" --append
}
part 1 oneshot,uring,reuseport,memcached,ramcloud,nginx-exclusive,real-nginx throughput
part 2 oneshot,memcached,ramcloud,reuseport sweep-bimodal
part 3 oneshot,memcached,reuseport fairness
part 4 epoll,nginx-mutex,nginx-herd throughput
part 5 real-node,real-apache,real-haproxy throughput
echo "lab-matrix: results in $OUT (summary.md, results.json)" >&2
