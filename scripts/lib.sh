#!/usr/bin/env bash
# lib.sh: what the scripts share: where the binaries are, which of them are servers, and the one way
# to start a server and wait for its `listening on IP:PORT` line. Source it, do not run it:
#     . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck disable=SC2034 # its variables are for the scripts that source it

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RELEASE_DIR=${CARGO_TARGET_DIR:-$ROOT/target}/release
# The servers; the other lab-* binaries (lab-load, lab-bench, lab-exp, lab-top) are tools.
SERVERS=(lab-epoll lab-memcached lab-ramcloud lab-nginx lab-reuseport lab-oneshot lab-uring)

LISTEN_ADDR= # set by wait_listening: the IP:PORT the server announced
FIRST_LINE=  # set by wait_listening: the first line the server wrote, whatever it was

# Waits (up to 20 s) until the process PID has written a first line to OUT_FILE, the file its stdout
# goes to. Returns 0 with LISTEN_ADDR set if that line is `listening on IP:PORT`; returns 1 if the
# line is anything else, or if PID exits (or the time runs out) before writing one.
wait_listening() { # OUT_FILE PID
    local out=$1 pid=$2 tries
    LISTEN_ADDR=
    for ((tries = 0; tries < 200; tries++)); do
        [[ $(wc -l <"$out") -ge 1 ]] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    FIRST_LINE=$(head -n 1 "$out")
    [[ $FIRST_LINE =~ ^listening\ on\ ([^ ]+:[0-9]+)$ ]] || return 1
    LISTEN_ADDR=${BASH_REMATCH[1]}
}
