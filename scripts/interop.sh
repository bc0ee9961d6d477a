#!/usr/bin/env bash
# interop.sh: runs real HTTP clients (curl, ab, wrk, h2load) against every acceptlab server binary.
#
# Usage: scripts/interop.sh [SERVER...]
#   SERVER is a binary path or a bare name looked up in target/release (lab-epoll), optionally followed
#   by extra server arguments in the same word:  scripts/interop.sh "lab-nginx --accept herd"
#   Default: the five servers in target/release (SERVERS in scripts/lib.sh).
#   lab-nginx given without arguments runs once per accept mode in NGINX_ACCEPT_MODES.
#
# Environment:
#   NGINX_ACCEPT_MODES  accept modes lab-nginx is run with (default "mutex exclusive herd"; empty: once, as is)
#   INTEROP_WORKERS     --workers for every server but lab-epoll (default 2)
#   INTEROP_ARGS        extra arguments for every server (e.g. "--cpus 0-1")
#   CARGO_TARGET_DIR    where the release binaries are (default target/)
#
# With no SERVER given it also checks the real systems lab-bench runs beside the project's servers
# (nginx, Node one process and cluster, Apache's event MPM, HAProxy; installed here if missing): each
# row once, for valid answers (a short keep-alive run: no errors, every answer a 2xx, and lab-bench's
# own GET / at start answered `Hello, World!`).
#
# Prints one PASS/FAIL line per check and exits 1 if any check failed.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PIPELINE_LUA=$ROOT/scripts/pipeline.lua
NGINX_ACCEPT_MODES=${NGINX_ACCEPT_MODES-mutex exclusive herd}
INTEROP_WORKERS=${INTEROP_WORKERS:-2}
INTEROP_ARGS=${INTEROP_ARGS:-}

ECHO_BODY_BYTES=300000 # big enough to need many reads and writes, well under the 1 MiB limit
HELLO='Hello, World!'

WORK=$(mktemp -d "${TMPDIR:-/tmp}/acceptlab-interop.XXXXXX")
SERVER_PID=
SERVER_PORT=
SERVER_LABEL=
PASSED=0
FAILED=0

cleanup() {
    if [[ -n $SERVER_PID ]]; then
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

pass() { # CHECK DETAIL
    PASSED=$((PASSED + 1))
    printf 'PASS  %-30s %-16s %s\n' "$SERVER_LABEL" "$1" "${2:-}"
}

fail() { # CHECK DETAIL [LOG]: the log's last lines are shown indented
    FAILED=$((FAILED + 1))
    printf 'FAIL  %-30s %-16s %s\n' "$SERVER_LABEL" "$1" "${2:-}"
    if [[ -n ${3:-} && -s $3 ]]; then
        tail -n 15 "$3" | sed 's/^/        | /'
    fi
}

# The value after "KEY:" on the first line of FILE that starts with KEY (ab's report format).
report_field() { # FILE KEY
    sed -n "s/^$2:[[:space:]]*//p" "$1" | head -n 1
}

# ---------------------------------------------------------------------------------------------------
# Which servers to run

# Prints one line per server run: the binary's path, then its extra arguments.
expand_server() { # SERVER
    local parts bin
    read -r -a parts <<<"$1"
    bin=${parts[0]}
    if [[ $bin != */* && ! -x $bin ]]; then
        bin=$RELEASE_DIR/$bin
    fi
    if [[ ${bin##*/} == lab-nginx && ${#parts[@]} -eq 1 && -n $NGINX_ACCEPT_MODES ]]; then
        local mode
        for mode in $NGINX_ACCEPT_MODES; do
            echo "$bin --accept $mode"
        done
    else
        echo "$bin ${parts[*]:1}"
    fi
}

default_servers() {
    # The five servers (SERVERS in lib.sh): the other lab-* binaries (lab-load, lab-bench, lab-exp, lab-top) are
    # tools, and a new tool must not turn up here as a server that fails to listen.
    local name
    for name in "${SERVERS[@]}"; do
        if [[ -x $RELEASE_DIR/$name ]]; then echo "$RELEASE_DIR/$name"; fi
    done
}

# ---------------------------------------------------------------------------------------------------
# Starting and stopping one server

start_server() { # BIN [ARGS...]
    local bin=$1
    shift
    local args=(--addr 127.0.0.1:0)
    if [[ ${bin##*/} != lab-epoll ]]; then
        args+=(--workers "$INTEROP_WORKERS")
    fi
    local extra
    read -r -a extra <<<"$INTEROP_ARGS"
    args+=("$@" "${extra[@]}")

    : >"$WORK/server.out"
    "$bin" "${args[@]}" >"$WORK/server.out" 2>"$WORK/server.err" &
    SERVER_PID=$!

    if wait_listening "$WORK/server.out" "$SERVER_PID" && [[ $LISTEN_ADDR =~ ^127\.0\.0\.1:([1-9][0-9]*)$ ]]; then
        SERVER_PORT=${BASH_REMATCH[1]}
        pass start "${bin##*/} ${args[*]} -> port $SERVER_PORT"
        return 0
    fi
    fail start "first stdout line was '${FIRST_LINE}', expected 'listening on 127.0.0.1:PORT'" "$WORK/server.err"
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
    return 1
}

# SIGTERM must drain and exit 0 (docs/spec.md: at most 5 s); stdout must hold nothing but the first line.
stop_server() {
    local status=0 tries
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for ((tries = 0; tries < 100; tries++)); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        fail sigterm "still running 10 s after SIGTERM; killed" "$WORK/server.err"
    else
        wait "$SERVER_PID" || status=$?
        if [[ $status -eq 0 ]]; then
            pass sigterm "exit 0"
        else
            fail sigterm "exit status $status" "$WORK/server.err"
        fi
    fi
    SERVER_PID=

    local stdout_lines
    stdout_lines=$(wc -l <"$WORK/server.out")
    if [[ $stdout_lines -eq 1 ]]; then
        pass stdout "only the listening line"
    else
        fail stdout "$stdout_lines lines on stdout, expected 1" "$WORK/server.out"
    fi
}

# ---------------------------------------------------------------------------------------------------
# The checks; each one gets the base URL (http://127.0.0.1:PORT)

check_curl_get() {
    local url=$1 log=$WORK/curl-get.log code
    code=$(curl -sS --max-time 10 -o "$WORK/got" -w '%{http_code}' "$url/" 2>"$log") || code="curl exit $?"
    if [[ $code == 200 ]] && cmp -s "$WORK/got" "$WORK/hello"; then
        pass "curl GET /" "200, body '$HELLO'"
    else
        fail "curl GET /" "status $code, body '$(head -c 80 "$WORK/got" 2>/dev/null)'" "$log"
    fi
}

# HEAD then GET on the same connection: a server that wrongly sends a body after HEAD breaks the GET.
check_curl_head() {
    local url=$1 log=$WORK/curl-head.log result
    result=$(curl -sS --max-time 10 --head -o "$WORK/head" -w '%{http_code} %{size_download}\n' "$url/" \
        --next -sS --max-time 10 -o "$WORK/got" -w '%{http_code} %{num_connects}\n' "$url/" 2>"$log") ||
        result="curl exit $?"
    if [[ $result == $'200 0\n200 0' ]] && grep -qi '^content-length: *13' "$WORK/head" &&
        cmp -s "$WORK/got" "$WORK/hello"; then
        pass "curl HEAD /" "200, Content-Length 13, no body; GET after it on the same connection OK"
    else
        fail "curl HEAD /" "got '${result//$'\n'/ | }' (want '200 0 | 200 0')" "$log"
    fi
}

check_curl_echo() { # URL NAME [CURL ARGS...]
    local url=$1 name=$2
    shift 2
    local log=$WORK/curl-echo.log result code seconds
    result=$(curl -sS --max-time 20 "$@" --data-binary "@$WORK/body.bin" -o "$WORK/got" \
        -w '%{http_code} %{time_total}' "$url/echo" 2>"$log") || result="curl-exit-$? 0"
    read -r code seconds <<<"$result"
    local note=
    if awk -v s="$seconds" 'BEGIN { exit !(s >= 0.9) }'; then
        note=" (slow: curl waited for a 100 Continue that never came)"
    fi
    if [[ $code == 200 ]] && cmp -s "$WORK/got" "$WORK/body.bin"; then
        pass "$name" "$ECHO_BODY_BYTES bytes echoed intact in ${seconds}s$note"
    else
        fail "$name" "status $code, echoed $(wc -c <"$WORK/got" 2>/dev/null || echo 0) bytes, want $ECHO_BODY_BYTES identical" "$log"
    fi
}

check_curl_reuse() {
    local url=$1 log=$WORK/curl-reuse.log result
    result=$(curl -sS -v --max-time 10 -o "$WORK/got1" -o "$WORK/got2" \
        -w '%{http_code} %{num_connects}\n' "$url/" "$url/" 2>"$log") || result="curl exit $?"
    if [[ $result == $'200 1\n200 0' ]] && grep -q 'Re-using existing connection' "$log" &&
        cmp -s "$WORK/got1" "$WORK/hello" && cmp -s "$WORK/got2" "$WORK/hello"; then
        pass "curl reuse" "two URLs, one connection (second num_connects 0)"
    else
        fail "curl reuse" "got '${result//$'\n'/ | }' (want '200 1 | 200 0')" "$log"
    fi
}

check_ab() {
    local url=$1 log=$WORK/ab.log status=0
    timeout 120 ab -k -n 20000 -c 50 -s 10 -q "$url/" >"$log" 2>&1 || status=$?
    local complete failed keepalive rps
    complete=$(report_field "$log" 'Complete requests')
    failed=$(report_field "$log" 'Failed requests')
    keepalive=$(report_field "$log" 'Keep-Alive requests')
    rps=$(report_field "$log" 'Requests per second' | awk '{ print $1 }')
    if [[ $status -eq 0 && $complete == 20000 && $failed == 0 ]] && ! grep -q '^Non-2xx' "$log"; then
        pass "ab -k" "20000 complete, 0 failed, 0 non-2xx, ${keepalive:-?} keep-alive, $rps req/s"
    else
        fail "ab -k" "exit $status, complete '${complete}', failed '${failed}', $(grep '^Non-2xx' "$log" || echo '0 non-2xx')" "$log"
    fi
}

check_wrk() {
    local url=$1 log=$WORK/wrk.log status=0
    timeout 60 wrk -t2 -c50 -d3s --timeout 5s -s "$PIPELINE_LUA" "$url/" -- 16 >"$log" 2>&1 || status=$?
    local requests rps
    requests=$(awk '/ requests in / { print $1 }' "$log")
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$log")
    if [[ $status -eq 0 && ${requests:-0} -gt 0 ]] && ! grep -Eq 'Socket errors|Non-2xx' "$log"; then
        pass "wrk pipeline16" "$requests requests, 0 socket errors, 0 non-2xx, $rps req/s"
    else
        fail "wrk pipeline16" "exit $status, requests '${requests}', $(grep -E 'Socket errors|Non-2xx' "$log" | tr '\n' ' ')" "$log"
    fi
}

check_h2load() {
    local url=$1 log=$WORK/h2load.log status=0
    timeout 120 h2load --h1 -n 20000 -c 50 -m 16 "$url/" >"$log" 2>&1 || status=$?
    local summary rps
    summary=$(grep -E '^requests: ' "$log" || true)
    rps=$(awk '/^finished in/ { print $4 }' "$log" | tr -d ',')
    if [[ $status -eq 0 && $summary == *' 20000 succeeded, 0 failed, 0 errored, 0 timeout'* ]] &&
        grep -q '^status codes: 20000 2xx' "$log"; then
        pass "h2load --h1" "20000 succeeded, 0 failed, 0 errored, $rps req/s"
    else
        fail "h2load --h1" "exit $status, '${summary}'" "$log"
    fi
}

# The real systems' rows of lab-bench, once each: present and not INVALID in its summary table.
check_real_rows() {
    SERVER_LABEL="lab-bench --archs real"
    "$ROOT/scripts/install-tools.sh" nginx node apache2 haproxy
    local out=$WORK/real log=$WORK/real.log status=0 row line
    "$RELEASE_DIR/lab-bench" --archs real --workloads keep-alive --rounds 1 --duration 0.3 --warmup 0.1 \
        --out "$out" >"$log" 2>&1 || status=$?
    if [[ $status -ne 0 ]]; then
        fail "real rows" "lab-bench exit $status" "$log"
        return
    fi
    for row in real-nginx-1w real-node-1 real-node-rr real-node-none real-apache-event real-haproxy; do
        SERVER_LABEL=$row
        line=$(grep -m1 "^| $row |" "$out/summary.md" || true)
        if [[ -z $line ]]; then
            fail "keep-alive row" "no row in summary.md" "$log"
        elif [[ $line == *INVALID* ]]; then
            fail "keep-alive row" "$line"
        else
            pass "keep-alive row" "valid, $(cut -d'|' -f4 <<<"$line" | awk '{ print $1 }') req/s"
        fi
    done
}

run_server() { # BIN [ARGS...]
    SERVER_LABEL="${1##*/}${2:+ ${*:2}}"
    start_server "$@" || return 0
    local url=http://127.0.0.1:$SERVER_PORT
    check_curl_get "$url"
    check_curl_head "$url"
    check_curl_echo "$url" "curl POST echo"
    check_curl_echo "$url" "curl chunked" -H 'Transfer-Encoding: chunked'
    check_curl_reuse "$url"
    check_ab "$url"
    check_wrk "$url"
    check_h2load "$url"
    stop_server
}

main() {
    "$ROOT/scripts/install-tools.sh" curl ab wrk h2load

    local specs=("$@")
    if [[ ${#specs[@]} -eq 0 ]]; then
        mapfile -t specs < <(default_servers)
    fi
    if [[ ${#specs[@]} -eq 0 ]]; then
        echo "interop: no server binaries in $RELEASE_DIR; build them with cargo build --release" >&2
        exit 1
    fi

    printf '%s' "$HELLO" >"$WORK/hello"
    head -c "$ECHO_BODY_BYTES" /dev/urandom >"$WORK/body.bin"

    # Expanded up front, so that no server or client inherits a pipe as stdin.
    local spec runs=() expanded line run
    for spec in "${specs[@]}"; do
        mapfile -t expanded < <(expand_server "$spec")
        runs+=("${expanded[@]}")
    done

    for line in "${runs[@]}"; do
        read -r -a run <<<"$line"
        if [[ ! -x ${run[0]} ]]; then
            SERVER_LABEL=${run[0]##*/}
            fail start "no executable ${run[0]}"
            continue
        fi
        run_server "${run[@]}" </dev/null
    done

    if [[ $# -eq 0 ]]; then
        check_real_rows </dev/null
    fi

    echo "interop: $PASSED passed, $FAILED failed"
    [[ $FAILED -eq 0 ]]
}

main "$@"
