#!/usr/bin/env python3
"""failure-modes.py: short runs that make each architecture's failure mode visible in /stats.

Usage: scripts/failure-modes.py [BIN_DIR]   (default target/release; build with `make build` first)
Prints Markdown: for each scenario what was done, and the /stats figures it left behind. These are
the numbers quoted in docs/architectures.md.
"""
import json
import os
import socket
import subprocess
import sys
import threading
import time

BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "target", "release")


class Server:
    def __init__(self, name, *args):
        self.proc = subprocess.Popen([os.path.join(BIN, name), "--addr", "127.0.0.1:0", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        self.port = int(line.rsplit(":", 1)[1])

    def stats(self):
        return json.loads(request(self.port, "/stats")[1])

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def connect(port):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def exchange(sock, path):
    """One keep-alive request on an open socket; returns (seconds, body)."""
    start = time.monotonic()
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = int([h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")][0].split(b":")[1])
    while len(body) < length:
        body += sock.recv(65536)
    return time.monotonic() - start, body.decode()


def request(port, path):
    with connect(port) as sock:
        return exchange(sock, path)


def workers_table(stats, keys=("role", "cpu", "accepted", "conns", "requests", "open", "wakeups")):
    rows = ["| id | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for w in stats["workers"]:
        rows.append(f"| {w['id']} | " + " | ".join(json.dumps(w[k]).strip('"') for k in keys) + " |")
    return "\n".join(rows)


def loop_requests(port, path, seconds, results, key):
    """Keep-alive requests on one connection for `seconds`; records count and mean latency."""
    with connect(port) as sock:
        count, total, end = 0, 0.0, time.monotonic() + seconds
        while time.monotonic() < end:
            elapsed, _ = exchange(sock, path)
            count, total = count + 1, total + elapsed
        results[key] = (count, total / max(count, 1))


def accept_queue_by_ss(port):
    """Recv-Q of the listener in `ss -ltn`: for a listening socket, the accept queue's length."""
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout.split()
    return int(out[1]) if len(out) > 1 else None


def epoll_stall():
    print("## lab-epoll: one slow request stalls everyone, and the accept queue fills\n")
    server = Server("lab-epoll")
    sleeper = threading.Thread(target=request, args=(server.port, "/sleep?ms=1000"))
    sleeper.start()
    time.sleep(0.1)
    waiting = [connect(server.port) for _ in range(20)]  # handshakes complete in the kernel
    time.sleep(0.1)
    queued = accept_queue_by_ss(server.port)
    start = time.monotonic()
    elapsed, _ = request(server.port, "/")
    sleeper.join()
    for sock in waiting:
        sock.close()
    stats = server.stats()
    print(f"While `GET /sleep?ms=1000` executes, 20 clients connect. `ss -ltn` then shows "
          f"**{queued}** connections in the listener's accept queue (Recv-Q): complete in the kernel, "
          f"with nobody calling accept. A `GET /` sent 200 ms into the sleep is answered after "
          f"**{elapsed * 1000:.0f} ms**. Afterwards `/stats` shows the one loop accepted them all: "
          f"`accepted` {stats['workers'][0]['accepted']}, `wakeups` {stats['workers'][0]['wakeups']}.\n")
    server.stop()


def memcached_imbalance():
    print("## lab-memcached: round-robin balances connections, not work\n")
    server = Server("lab-memcached", "--workers", "2")
    results, threads = {}, []
    # Connections open in the order heavy, light, heavy, light: round-robin puts both heavy ones on
    # the first worker and both light ones on the second.
    for index, path in enumerate(["/spin?us=2000", "/", "/spin?us=2000", "/"]):
        thread = threading.Thread(target=loop_requests, args=(server.port, path, 3.0, results, f"{index}:{path}"))
        thread.start()
        threads.append(thread)
        time.sleep(0.05)
    for thread in threads:
        thread.join()
    stats = server.stats()
    print("Four keep-alive connections for 3 s, opened in the order heavy (`/spin?us=2000`), light "
          "(`/`), heavy, light:\n")
    print(workers_table(stats) + "\n")
    for key, (count, mean) in sorted(results.items()):
        print(f"- connection {key}: {count} requests, mean latency {mean * 1e3:.2f} ms")
    print("\nRound-robin dealt the connections evenly (the fifth, worker 1's third, is the `/stats` request "
          "itself), but both heavy ones landed on worker 1, which is saturated while worker 2 idles "
          "between tiny requests; a heavy request waits for its neighbour's spin, so it takes about "
          "twice its own 2 ms.\n")
    server.stop()


def ramcloud_balance():
    print("## lab-ramcloud: per-request balance; the dispatcher is the ceiling\n")
    server = Server("lab-ramcloud", "--workers", "2")
    sleeper = threading.Thread(target=request, args=(server.port, "/sleep?ms=1000"))
    sleeper.start()
    time.sleep(0.1)
    with connect(server.port) as sock:
        latencies = [exchange(sock, "/")[0] for _ in range(100)]
    sleeper.join()
    results = {}
    threads = [threading.Thread(target=loop_requests, args=(server.port, "/", 2.0, results, i)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = server.stats()
    print(f"While one worker sleeps 1 s in `/sleep?ms=1000`, 100 `GET /` on another connection take "
          f"at most **{max(latencies) * 1e3:.2f} ms** each: the other worker serves them. Then 8 "
          "connections for 2 s:\n")
    print(workers_table(stats) + "\n")
    print("Every request passed through the dispatcher twice (in as bytes, out as a response); its "
          "`wakeups` against the workers' `requests` shows how much batching the reply queue got.\n")
    server.stop()


def nginx_modes():
    print("## lab-nginx: who accepts, and who is woken\n")
    print("| --accept | accepted per worker | wakeups per worker | context_switches per worker |")
    print("|---|---|---|---|")
    for mode in ("mutex", "exclusive", "herd"):
        server = Server("lab-nginx", "--workers", "3", "--accept", mode)
        time.sleep(0.2)
        before = [w["context_switches"] for w in server.stats()["workers"]]
        held = []
        for _ in range(60):  # connect and say nothing: the only event is the accept
            held.append(connect(server.port))
            time.sleep(0.005)
        time.sleep(0.2)
        stats = server.stats()
        accepted = [w["accepted"] for w in stats["workers"]]
        wakeups = [w["wakeups"] for w in stats["workers"]]
        switches = [w["context_switches"] - b for w, b in zip(stats["workers"], before)]
        print(f"| {mode} | {accepted} | {wakeups} | {switches} |")
        for sock in held:
            sock.close()
        server.stop()
    print("\n60 connections opened one at a time and held silent, between two `/stats` requests; "
          "`context_switches` is the growth over the 60 connections (each worker thread's "
          "voluntary context switches, which /stats reads from /proc).\n")


def reuseport_hash():
    print("## lab-reuseport: the kernel's hash decides, blind to a busy process\n")
    server = Server("lab-reuseport", "--workers", "3")
    socks = [connect(server.port) for _ in range(30)]
    for sock in socks:
        exchange(sock, "/")
    stats = server.stats()
    print("30 keep-alive connections spread by the 4-tuple hash:\n")
    print(workers_table(stats) + "\n")
    for sock in socks:
        sock.close()
    sleeper = threading.Thread(target=request, args=(server.port, "/sleep?ms=1500"))
    sleeper.start()
    time.sleep(0.1)
    waiting = [connect(server.port) for _ in range(30)]
    time.sleep(0.2)
    out = subprocess.run(["ss", "-ltnH", f"sport = :{server.port}"], capture_output=True, text=True).stdout
    queues = sorted((int(line.split()[1]) for line in out.splitlines() if line.strip()), reverse=True)
    sleeper.join()
    print(f"Then one process is kept busy by `GET /sleep?ms=1500` while 30 new clients connect. `ss -ltn` "
          f"shows the three sockets' accept queues (Recv-Q): **{queues}**. The kernel went on hashing "
          "new connections to the busy process's socket, where they wait, while the other two "
          "processes accepted theirs at once and idle.\n")
    for sock in waiting:
        sock.close()
    server.stop()


if __name__ == "__main__":
    scenarios = [epoll_stall, memcached_imbalance, ramcloud_balance, nginx_modes]
    if os.path.exists(os.path.join(BIN, "lab-reuseport")):
        scenarios.append(reuseport_hash)
    for scenario in scenarios:
        scenario()
