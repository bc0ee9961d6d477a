#!/usr/bin/env bash
# syscalls.sh: counts lab-epoll's system calls per request with strace -c, under keep-alive and pipelined load.
#
# Usage: scripts/syscalls.sh        a Markdown report on stdout
#
# For each workload it starts lab-epoll pinned to SERVER_CPU under `strace -c -f`, drives it from
# CLIENT_CPU, reads how many requests it served from /stats (totals.requests), stops it with SIGINT so
# that strace writes its summary, and divides. Workloads:
#   keep-alive    ab -k -n REQUESTS -c CONNECTIONS          (a known number of requests)
#   pipelined 16  wrk -t1 -cCONNECTIONS -dDURATION -s scripts/pipeline.lua -- DEPTH
# The counts include start-up and shutdown, a few dozen calls: noise over this many requests.
# strace slows every call down, so the rates here mean nothing; only the counts do.
#
# Environment (defaults in brackets):
#   REQUESTS [100000]   CONNECTIONS [64]   DURATION [5] seconds of pipelined load   DEPTH [16]
#   SERVER_CPU [0]   CLIENT_CPU [1]   LAB_EPOLL [target/release/lab-epoll]
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
REQUESTS=${REQUESTS:-100000}
CONNECTIONS=${CONNECTIONS:-64}
DURATION=${DURATION:-5}
DEPTH=${DEPTH:-16}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
LAB_EPOLL=${LAB_EPOLL:-$RELEASE_DIR/lab-epoll}
PIPELINE_LUA=$ROOT/scripts/pipeline.lua

# The calls counted together in each column of the report.
READ_CALLS=(read readv recvfrom recvmsg)
WRITE_CALLS=(write writev sendto sendmsg sendmmsg)
WAIT_CALLS=(epoll_wait epoll_pwait epoll_pwait2)
ACCEPT_CALLS=(accept accept4)
CTL_CALLS=(epoll_ctl)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/acceptlab-syscalls.XXXXXX")
STRACE_PID=
SERVER_PID=
SERVER_URL=
ROWS=()

# The process strace started (strace forks it), or nothing yet.
strace_child() {
    cat /proc/"$STRACE_PID"/task/*/children 2>/dev/null | xargs
}

# Killing strace would detach lab-epoll and leave it running: kill lab-epoll, and strace then exits.
cleanup() {
    if [[ -n $STRACE_PID ]]; then
        SERVER_PID=${SERVER_PID:-$(strace_child)}
        if [[ -n $SERVER_PID ]]; then
            kill -KILL "$SERVER_PID" 2>/dev/null || true
        else
            kill -TERM "$STRACE_PID" 2>/dev/null || true
        fi
        wait "$STRACE_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

die() {
    echo "syscalls: $*" >&2
    exit 1
}

log() {
    echo "$*" >&2
}

# Starts lab-epoll under strace; sets STRACE_PID, SERVER_PID (strace's child) and SERVER_URL.
start_traced_server() { # WORKLOAD_FILE_STEM
    : >"$WORK/server.out"
    taskset -c "$SERVER_CPU" strace -c -f -U name,calls,errors -S calls -o "$WORK/$1.strace" \
        "$LAB_EPOLL" --addr 127.0.0.1:0 --cpus "$SERVER_CPU" >"$WORK/server.out" 2>"$WORK/server.err" &
    STRACE_PID=$!
    wait_listening "$WORK/server.out" "$STRACE_PID" || {
        cat "$WORK/server.err" >&2
        die "lab-epoll's first line was '$FIRST_LINE'"
    }
    SERVER_URL=http://$LISTEN_ADDR
    SERVER_PID=$(strace_child)
    [[ $SERVER_PID =~ ^[0-9]+$ ]] || die "strace $STRACE_PID has children '$SERVER_PID', expected one"
}

# A number from /stats: "pid" at the top, or "requests" inside "totals"; empty when it is not there.
stats_field() { # STATS_JSON FIELD
    local json
    json=$(tr -d '\n' <<<"$1")
    if [[ $2 == requests ]]; then
        json=$(grep -o '"totals"[[:space:]]*:[[:space:]]*{[^}]*}' <<<"$json" || true)
    fi
    grep -o "\"$2\"[[:space:]]*:[[:space:]]*[0-9]*" <<<"$json" | head -n 1 | grep -o '[0-9]*$' || true
}

# SIGINT to lab-epoll itself (not to strace): it drains and exits 0, and strace then writes its summary.
stop_traced_server() {
    kill -INT "$SERVER_PID"
    local status=0
    wait "$STRACE_PID" || status=$?
    STRACE_PID=
    SERVER_PID=
    [[ $status -eq 0 ]] || log "warning: lab-epoll exited with status $status after SIGINT"
}

# Sum of the calls of the given names in a strace -c summary.
sum_calls() { # STRACE_FILE NAME...
    local file=$1
    shift
    awk -v names=" $* " '$1 != "syscall" && $1 !~ /^-/ && index(names, " " $1 " ") { sum += $2 }
        END { print sum + 0 }' "$file"
}

run_workload() { # WORKLOAD
    local workload=$1 stem=${1// /-}
    start_traced_server "$stem"
    local url=$SERVER_URL

    local log=$WORK/$stem.client
    if [[ $workload == keep-alive ]]; then
        log "$workload: ab -k -n $REQUESTS -c $CONNECTIONS against lab-epoll under strace"
        taskset -c "$CLIENT_CPU" ab -k -q -n "$REQUESTS" -c "$CONNECTIONS" -s 30 "$url/" >"$log" 2>&1 ||
            die "ab failed: $(tail -n 3 "$log")"
        grep -q "^Failed requests:[[:space:]]*0$" "$log" || log "warning: ab saw failed requests"
    else
        log "$workload: wrk -t1 -c$CONNECTIONS -d${DURATION}s pipelining $DEPTH, against lab-epoll under strace"
        taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" -s "$PIPELINE_LUA" "$url/" -- "$DEPTH" \
            >"$log" 2>&1 || die "wrk failed: $(tail -n 3 "$log")"
        if grep -Eq 'Socket errors|Non-2xx' "$log"; then
            log "warning: wrk reported: $(grep -E 'Socket errors|Non-2xx' "$log" | xargs)"
        fi
    fi

    local stats pid requests
    stats=$(curl -sS --max-time 10 "$url/stats") || die "GET /stats failed"
    pid=$(stats_field "$stats" pid)
    requests=$(stats_field "$stats" requests)
    [[ -n $pid && -n $requests ]] || die "no pid or totals.requests in /stats: $stats"
    [[ $requests -gt 0 ]] || die "lab-epoll served no requests"
    [[ $pid == "$SERVER_PID" ]] || die "/stats says pid $pid, but strace started $SERVER_PID"
    stop_traced_server

    local file=$WORK/$stem.strace reads writes waits ctls accepts total
    reads=$(sum_calls "$file" "${READ_CALLS[@]}")
    writes=$(sum_calls "$file" "${WRITE_CALLS[@]}")
    waits=$(sum_calls "$file" "${WAIT_CALLS[@]}")
    ctls=$(sum_calls "$file" "${CTL_CALLS[@]}")
    accepts=$(sum_calls "$file" "${ACCEPT_CALLS[@]}")
    total=$(awk '$1 == "total" { print $2 }' "$file")
    ROWS+=("$(awk -v w="$workload" -v n="$requests" -v r="$reads" -v wr="$writes" -v e="$waits" \
        -v c="$ctls" -v a="$accepts" -v t="$total" 'BEGIN {
            printf "| %s | %d | %.3f | %.3f | %.3f | %.3f | %.4f | %.3f |", w, n, r / n, wr / n, e / n, c / n, a / n, t / n
        }')")
    cp "$file" "$WORK/$stem.summary"
}

print_report() {
    echo "## System calls per request: lab-epoll under strace -c -f"
    echo
    echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); Linux $(uname -r); $(strace -V | head -n 1)"
    echo "- Server: \`taskset -c $SERVER_CPU strace -c -f ${LAB_EPOLL#"$ROOT"/} --addr 127.0.0.1:0 --cpus $SERVER_CPU\`," \
        "stopped with SIGINT; requests = /stats totals.requests"
    echo "- keep-alive: \`taskset -c $CLIENT_CPU ab -k -n $REQUESTS -c $CONNECTIONS URL/\`"
    echo "- pipelined $DEPTH: \`taskset -c $CLIENT_CPU wrk -t1 -c$CONNECTIONS -d${DURATION}s -s scripts/pipeline.lua URL/ -- $DEPTH\`"
    echo "- read = ${READ_CALLS[*]}; write = ${WRITE_CALLS[*]}; epoll_wait = ${WAIT_CALLS[*]}"
    echo
    echo "| workload | requests | read | write | epoll_wait | epoll_ctl | accept | total |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${ROWS[@]}"

    local workload
    for workload in "${WORKLOADS[@]}"; do
        echo
        echo "strace -c, $workload:"
        echo
        echo '```'
        head -n 14 "$WORK/${workload// /-}.summary"
        echo '```'
    done
}

main() {
    "$ROOT/scripts/install-tools.sh" curl ab wrk strace taskset
    [[ -x $LAB_EPOLL ]] || die "no $LAB_EPOLL; build it first with cargo build --release"
    WORKLOADS=(keep-alive "pipelined $DEPTH")
    local workload
    for workload in "${WORKLOADS[@]}"; do
        run_workload "$workload"
    done
    print_report
}

main "$@"
