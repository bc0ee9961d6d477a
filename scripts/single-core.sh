#!/usr/bin/env bash
# single-core.sh: benchmarks lab-epoll against nginx, each on one pinned CPU, with wrk pinned to another.
#
# Usage: scripts/single-core.sh            the benchmark; a Markdown report on stdout, progress on stderr
#        scripts/single-core.sh --strace   syscalls per request of lab-epoll instead (runs scripts/syscalls.sh)
#
# Both servers run side by side the whole time; every round measures each workload on both, alternating
# which server goes first, so drift of the machine hits both alike. Workloads:
#   keep-alive     wrk -t1 -c64 -dDURATION
#   pipelined 16   the same with scripts/pipeline.lua (16 requests per round trip, TechEmpower style)
# It builds nothing: it expects target/release/lab-epoll (cargo build --release).
#
# Environment (defaults in brackets):
#   DURATION [10] seconds per wrk run     ROUNDS [3]          CONNECTIONS [64]     DEPTH [16]
#   SERVER_CPU [0]   CLIENT_CPU [1]       LAB_EPOLL [target/release/lab-epoll]   NGINX [nginx on PATH, else /usr/sbin/nginx]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if [[ ${1:-} == --strace ]]; then
    exec "$ROOT/scripts/syscalls.sh"
elif [[ $# -gt 0 ]]; then
    echo "usage: $0 [--strace]" >&2
    exit 2
fi

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
DEPTH=${DEPTH:-16}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
LAB_EPOLL=${LAB_EPOLL:-${CARGO_TARGET_DIR:-$ROOT/target}/release/lab-epoll}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)} # /usr/sbin is not on every PATH
PIPELINE_LUA=$ROOT/scripts/pipeline.lua

SERVERS=(lab-epoll nginx)
WORKLOADS=(keep-alive "pipelined $DEPTH")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/acceptlab-single-core.XXXXXX")
EPOLL_PID=
NGINX_PID=
declare -A URL      # server -> base URL
declare -A RESULTS  # "workload|server" -> req/s of every round, space separated
NOTES=()
LOAD_BEFORE=

cleanup() {
    local pid
    for pid in $EPOLL_PID $NGINX_PID; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

die() {
    echo "single-core: $*" >&2
    exit 1
}

log() {
    echo "$*" >&2
}

# A TCP port no socket uses now (nginx needs one in its config), below the kernel's ephemeral range so
# that no client connection can take it in the meantime.
free_port() {
    local ephemeral_low port hex
    read -r ephemeral_low _ </proc/sys/net/ipv4/ip_local_port_range
    while :; do
        port=$((10000 + RANDOM % (ephemeral_low - 10000)))
        hex=$(printf ':%04X' "$port")
        # Column 2 of /proc/net/tcp* is the local address, ADDR:PORT in hex.
        if ! awk -v p="$hex" 'substr($2, length($2) - 4) == p { found = 1 } END { exit !found }' \
            /proc/net/tcp /proc/net/tcp6 2>/dev/null; then
            echo "$port"
            return
        fi
    done
}

# Waits until URL answers "Hello, World!"; fails if PID exits first or after 10 s.
wait_for_hello() { # URL PID
    local tries
    for ((tries = 0; tries < 100; tries++)); do
        if [[ $(curl -s --max-time 1 "$1/" 2>/dev/null) == 'Hello, World!' ]]; then
            return 0
        fi
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# nginx's CPU mask for worker_cpu_affinity: a 1 followed by one 0 per lower CPU (CPU 2 is "100").
affinity_mask() { # CPU
    local mask=1 i
    for ((i = 0; i < $1; i++)); do
        mask+=0
    done
    echo "$mask"
}

write_nginx_conf() { # PORT
    cat >"$WORK/nginx/nginx.conf" <<EOF
# One worker pinned to CPU $SERVER_CPU, the reference for lab-epoll; every path under $WORK/nginx.
worker_processes 1;
worker_cpu_affinity $(affinity_mask "$SERVER_CPU");
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;

events {
    worker_connections 4096;
}

http {
    access_log off;
    keepalive_requests 1000000000;
    keepalive_timeout 75s;
    client_body_temp_path $WORK/nginx/client_body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;

    server {
        listen 127.0.0.1:$1;
        location / {
            return 200 "Hello, World!";
        }
    }
}
EOF
}

# Starts nginx on a free port; another port if that one was taken before nginx could bind it.
start_nginx() {
    local attempt port
    mkdir -p "$WORK/nginx"
    for attempt in 1 2 3 4 5; do
        port=$(free_port)
        write_nginx_conf "$port"
        # -e: nginx opens its error log before reading the config; keep it out of /var/log.
        taskset -c "$SERVER_CPU" "$NGINX" -p "$WORK/nginx" -e "$WORK/nginx/error.log" \
            -c "$WORK/nginx/nginx.conf" >"$WORK/nginx/stdout" 2>&1 &
        NGINX_PID=$!
        URL[nginx]=http://127.0.0.1:$port
        if wait_for_hello "${URL[nginx]}" "$NGINX_PID"; then
            return 0
        fi
        kill -TERM "$NGINX_PID" 2>/dev/null || true
        wait "$NGINX_PID" 2>/dev/null || true
        NGINX_PID=
        log "nginx did not start on port $port (attempt $attempt): $(tail -n 1 "$WORK/nginx/stdout")"
    done
    die "nginx did not start; see the lines above"
}

start_lab_epoll() {
    : >"$WORK/lab-epoll.out"
    taskset -c "$SERVER_CPU" "$LAB_EPOLL" --addr 127.0.0.1:0 --cpus "$SERVER_CPU" \
        >"$WORK/lab-epoll.out" 2>"$WORK/lab-epoll.err" &
    EPOLL_PID=$!
    local tries first_line
    for ((tries = 0; tries < 100; tries++)); do
        [[ $(wc -l <"$WORK/lab-epoll.out") -ge 1 ]] && break
        kill -0 "$EPOLL_PID" 2>/dev/null || break
        sleep 0.1
    done
    first_line=$(head -n 1 "$WORK/lab-epoll.out")
    [[ $first_line =~ ^listening\ on\ (127\.0\.0\.1:[0-9]+)$ ]] || {
        cat "$WORK/lab-epoll.err" >&2
        die "lab-epoll's first line was '$first_line'"
    }
    URL[lab-epoll]=http://${BASH_REMATCH[1]}
    wait_for_hello "${URL[lab-epoll]}" "$EPOLL_PID" || die "lab-epoll did not answer on ${URL[lab-epoll]}"
}

# The wrk command line of a workload, as the report shows it.
wrk_command_line() { # WORKLOAD
    local line="taskset -c $CLIENT_CPU wrk -t1 -c$CONNECTIONS -d${DURATION}s"
    if [[ $1 == pipelined* ]]; then
        echo "$line -s scripts/pipeline.lua URL/ -- $DEPTH"
    else
        echo "$line URL/"
    fi
}

# Runs one measurement, records its req/s, and notes any error wrk saw.
measure() { # WORKLOAD SERVER ROUND
    local workload=$1 server=$2 round=$3 log=$WORK/wrk.log
    local command=(taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s")
    if [[ $workload == pipelined* ]]; then
        command+=(-s "$PIPELINE_LUA" "${URL[$server]}/" -- "$DEPTH")
    else
        command+=("${URL[$server]}/")
    fi
    "${command[@]}" >"$log" 2>&1 || die "wrk failed: $(tail -n 3 "$log")"

    local rps
    rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$log")
    [[ -n $rps ]] || die "no Requests/sec in wrk's output: $(cat "$log")"
    if grep -Eq 'Socket errors|Non-2xx' "$log"; then
        NOTES+=("round $round, $workload, $server: $(grep -E 'Socket errors|Non-2xx' "$log" | xargs)")
        rps="$rps*"
    fi
    RESULTS["$workload|$server"]+="$rps "
    log "round $round/$ROUNDS  $(printf '%-13s %-10s' "$workload" "$server") $rps req/s"
}

median() { # NUMBERS...: the middle one, or the mean of the middle two
    printf '%s\n' "${@%\*}" | sort -n | awk '{ v[NR] = $1 }
        END { if (NR % 2) printf "%.0f", v[(NR + 1) / 2]; else printf "%.0f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

print_report() {
    local cpu_model kernel
    cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
    kernel=$(uname -r)

    echo "## Single core: lab-epoll vs nginx"
    echo
    echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- Machine: ${cpu_model:-unknown CPU}, $(nproc) CPUs online, Linux $kernel"
    echo "- nginx: $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), 1 worker, worker_cpu_affinity CPU $SERVER_CPU," \
        "access_log off, \`return 200 \"Hello, World!\"\`"
    echo "- lab-epoll: $("$LAB_EPOLL" --version 2>/dev/null | head -n 1 || true)" \
        "(commit $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown))," \
        "\`taskset -c $SERVER_CPU ${LAB_EPOLL#"$ROOT"/} --addr 127.0.0.1:0 --cpus $SERVER_CPU\`"
    echo "- keep-alive: \`$(wrk_command_line keep-alive)\`"
    echo "- pipelined $DEPTH: \`$(wrk_command_line pipelined)\`"
    echo "- $ROUNDS rounds, the two servers alternated within each round; req/s as wrk reports it"
    echo "- Load average (1, 5, 15 min) before: $LOAD_BEFORE; after: $(cut -d ' ' -f 1-3 /proc/loadavg)" \
        "(anything else running skews the numbers)"
    echo

    local header='| workload | server |' rule='|---|---|' round
    for ((round = 1; round <= ROUNDS; round++)); do
        header+=" round $round |"
        rule+='---:|'
    done
    echo "$header median |"
    echo "$rule---:|"

    local workload server values
    declare -A medians
    for workload in "${WORKLOADS[@]}"; do
        for server in "${SERVERS[@]}"; do
            read -r -a values <<<"${RESULTS["$workload|$server"]}"
            medians["$workload|$server"]=$(median "${values[@]}")
            printf '| %s | %s | %s | **%s** |\n' "$workload" "$server" \
                "$(printf '%s | ' "${values[@]}" | sed 's/ | $//')" "${medians["$workload|$server"]}"
        done
    done

    echo
    echo '| workload | lab-epoll / nginx (medians) |'
    echo '|---|---:|'
    for workload in "${WORKLOADS[@]}"; do
        awk -v w="$workload" -v e="${medians["$workload|lab-epoll"]}" -v n="${medians["$workload|nginx"]}" \
            'BEGIN { printf "| %s | %.2f× |\n", w, e / n }'
    done

    if [[ ${#NOTES[@]} -gt 0 ]]; then
        echo
        echo '\* wrk reported errors:'
        printf -- '- %s\n' "${NOTES[@]}"
    fi
}

main() {
    "$ROOT/scripts/install-tools.sh" curl wrk nginx taskset
    [[ -x $LAB_EPOLL ]] || die "no $LAB_EPOLL; build it first with cargo build --release"
    local cpus
    cpus=$(nproc)
    [[ $SERVER_CPU -lt $cpus && $CLIENT_CPU -lt $cpus ]] ||
        die "needs CPUs $SERVER_CPU and $CLIENT_CPU; only $cpus online"
    [[ $SERVER_CPU -ne $CLIENT_CPU ]] || die "SERVER_CPU and CLIENT_CPU must differ"

    LOAD_BEFORE=$(cut -d ' ' -f 1-3 /proc/loadavg)
    start_nginx
    start_lab_epoll
    log "nginx on ${URL[nginx]}, lab-epoll on ${URL[lab-epoll]}; $ROUNDS rounds of ${DURATION}s runs"

    local round workload order
    for ((round = 1; round <= ROUNDS; round++)); do
        if ((round % 2)); then order=(lab-epoll nginx); else order=(nginx lab-epoll); fi
        for workload in "${WORKLOADS[@]}"; do
            measure "$workload" "${order[0]}" "$round"
            measure "$workload" "${order[1]}" "$round"
        done
    done

    print_report
}

main "$@"
