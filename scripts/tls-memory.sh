#!/usr/bin/env bash
# tls-memory.sh: what a connection costs the server in resident memory, with and without TLS, idle and
# in the middle of a slow request body (a measurement, not a test).
#
# Usage: scripts/tls-memory.sh [SERVER] [CONNECTIONS]
#   SERVER       a release binary name, default lab-epoll
#   CONNECTIONS  connections opened per measurement, default 1000
#
# For each of plaintext and TLS (make cert's certificate), it starts the server, reads its RSS
# (/proc/PID/status VmRSS), opens CONNECTIONS connections that then stay open and reads the RSS again:
#   idle       connected (over TLS: the handshake done) and silent
#   slow-body  a POST /echo head announcing 100000 bytes and the first 10000 of them, then silence
# and prints the difference per connection. Clients are Python's ssl module (TLS 1.3, X25519).
set -euo pipefail
cd "$(dirname "$0")/.."

SERVER=${1:-lab-epoll}
CONNECTIONS=${2:-1000}
BIN=target/release/$SERVER
CERT=target/cert
[[ -x $BIN ]] || { echo "tls-memory.sh: $BIN is missing: run cargo build --release" >&2; exit 1; }
[[ -f $CERT/server.pem ]] || target/release/lab-cert --out "$CERT" >/dev/null

measure() {
    local mode=$1 tls=$2 port pid out
    out=$(mktemp)
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    local args=(--addr "127.0.0.1:$port" --max-conns $((CONNECTIONS + 10)))
    [[ $tls == 1 ]] && args+=(--tls-cert "$CERT/server.pem" --tls-key "$CERT/server.key")
    "$BIN" "${args[@]}" >"$out" 2>/dev/null &
    pid=$!
    for _ in $(seq 1 100); do grep -q listening "$out" && break; sleep 0.05; done
    python3 - "$port" "$pid" "$CONNECTIONS" "$mode" "$tls" "$CERT/ca.pem" <<'EOF'
import resource, socket, ssl, sys, time
port, pid, count, mode, tls, ca = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5] == "1", sys.argv[6]
resource.setrlimit(resource.RLIMIT_NOFILE, (count + 100, count + 100))
def rss():
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
context = ssl.create_default_context(cafile=ca)
context.set_alpn_protocols(["http/1.1"])
# One connection first, so that what every connection shares (the first buffers, the TLS tables) is in.
warm = socket.create_connection(("127.0.0.1", port))
if tls:
    warm = context.wrap_socket(warm, server_hostname="127.0.0.1")
warm.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
warm.recv(4096)
time.sleep(0.3)
before = rss()
conns = []
for _ in range(count):
    s = socket.create_connection(("127.0.0.1", port))
    if tls:
        s = context.wrap_socket(s, server_hostname="127.0.0.1")
    if mode == "slow-body":
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n" + b"x" * 10000)
    conns.append(s)
time.sleep(1.0)
after = rss()
print(f"{(after - before) * 1024 / count:.0f}")
EOF
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    rm -f "$out"
}

echo "$SERVER, $CONNECTIONS connections: resident bytes per connection (VmRSS difference / connections)"
for mode in idle slow-body; do
    printf '  %-10s plaintext %7s   TLS %7s\n' "$mode" "$(measure "$mode" 0)" "$(measure "$mode" 1)"
done
