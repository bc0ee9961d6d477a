#!/usr/bin/env bash
# install-tools.sh: installs the named client/server tools (curl wrk ab h2load nginx ...) with apt-get when missing.
#
# Usage: scripts/install-tools.sh TOOL...
#   TOOL is a command name: curl, wrk, ab, h2load, nginx, strace, perf, taskset, shellcheck, tmux, ip, ss,
#   and the real systems lab-bench runs beside nginx: node (or Debian's nodejs), apache2, haproxy.
#   With no arguments: curl wrk ab h2load.
# Runs `apt-get update` only when something is missing; uses sudo only when not root.
set -euo pipefail

# The Debian/Ubuntu package that provides each command.
package_for() {
    case "$1" in
        curl) echo curl ;;
        wrk) echo wrk ;;
        ab) echo apache2-utils ;;
        h2load) echo nghttp2-client ;;
        nginx) echo nginx ;;
        node) echo nodejs ;;
        apache2) echo apache2-bin ;; # the server and its modules, without Debian's service and site
        haproxy) echo haproxy ;;
        strace) echo strace ;;
        perf) echo linux-perf ;;
        valgrind) echo valgrind ;;
        taskset) echo util-linux ;;
        shellcheck) echo shellcheck ;;
        tmux) echo tmux ;;
        ip | ss) echo iproute2 ;;
        *) return 1 ;;
    esac
}

main() {
    local tools=("$@")
    if [[ ${#tools[@]} -eq 0 ]]; then
        tools=(curl wrk ab h2load)
    fi

    local missing=() tool pkg
    for tool in "${tools[@]}"; do
        if ! pkg=$(package_for "$tool"); then
            echo "install-tools: unknown tool '$tool'" >&2
            exit 2
        fi
        # nginx lives in /usr/sbin, which is not on every user's PATH; Debian's linux-perf may
        # install only a versioned /usr/bin/perf_X.Y.
        if [[ $tool == node ]] && command -v nodejs >/dev/null 2>&1; then
            continue
        fi
        if ! command -v "$tool" >/dev/null 2>&1 && [[ ! -x "/usr/sbin/$tool" ]] \
            && ! compgen -G "/usr/bin/${tool}_[0-9]*" >/dev/null; then
            missing+=("$pkg")
        fi
    done

    if [[ ${#missing[@]} -eq 0 ]]; then
        return 0
    fi

    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install-tools: missing ${missing[*]} and no apt-get here; install them by hand" >&2
        exit 1
    fi

    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        sudo=(sudo)
    fi

    echo "install-tools: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq >/dev/null
    "${sudo[@]}" apt-get install -qq -y --no-install-recommends "${missing[@]}" >/dev/null
}

main "$@"
