#!/usr/bin/env python3
"""lab-reuseport --steer load and --migrate, measured on this machine (issue 32's targets).

Usage (after `cargo build --release`, as root, nothing else benchmarking):
    flock /tmp/acceptlab-bench.lock python3 docs/results/reuseport-steer-load/measure.py [PART...]
PART: neighbour, scale, cpu (default: all three). BIN=DIR picks the binaries (default target/release).

neighbour: one of two workers held by GET /sleep?ms=3000; 200 ms later 20 new connections, opened
           at once, each GET / with Connection: close; the slowest one's time to its response.
scale:     lab-load --close -c 32 for 8 s; SIGTTIN at 1 s, SIGTTOU at 2 s, SIGHUP at 3 s, SIGTTOU at
           5.5 s; lab-load's resets and lost requests.
cpu:       lab-load --close -c 32 for 3 s against --steer hash and --steer load in turn; the server's
           CPU time (supervisor and workers, /proc/PID/stat utime+stime) over the connections it
           accepted (/stats totals.accepted), before and after.
"""
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

BIN = os.environ.get("BIN", "target/release")
TICK = os.sysconf("SC_CLK_TCK")


def start(args):
    proc = subprocess.Popen([f"{BIN}/lab-reuseport", "--addr", "127.0.0.1:0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    port = int(line.rsplit(":", 1)[1])
    time.sleep(0.3)  # every worker live
    return proc, port


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    return proc.stderr.read()


def get(port, path):
    c = socket.create_connection(("127.0.0.1", port))
    c.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while True:
        chunk = c.recv(65536)
        if not chunk:
            return data
        data += chunk


def stats(port):
    return json.loads(get(port, "/stats").split(b"\r\n\r\n", 1)[1])


def neighbour(steer):
    proc, port = start(["--workers", "2", "--cpus", "0,1", "--steer", steer])
    held = socket.create_connection(("127.0.0.1", port))
    held.sendall(b"GET /sleep?ms=3000 HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.2)
    times = []

    def one():
        t0 = time.monotonic()
        get(port, "/")
        times.append(time.monotonic() - t0)

    threads = [threading.Thread(target=one) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    held.recv(100)
    stop(proc)
    return max(times), sum(t > 1 for t in times)


def scale_run(steer, migrate):
    proc, port = start(["--workers", "2", "--cpus", "0,1", "--steer", steer, "--migrate", migrate])
    load = subprocess.Popen([f"{BIN}/lab-load", "--close", "-c", "32", "-d", "8", "--warmup", "0",
                             "--json", "-", f"http://127.0.0.1:{port}/"], stdout=subprocess.PIPE, text=True)
    began = time.monotonic()
    for at, sig in [(1, signal.SIGTTIN), (2, signal.SIGTTOU), (3, signal.SIGHUP), (5.5, signal.SIGTTOU)]:
        time.sleep(max(0, at - (time.monotonic() - began)))
        proc.send_signal(sig)
    out = json.loads(load.communicate()[0])
    scaling = stats(port)["scaling"]
    stop(proc)
    return out["errors"], out["lost"], out["requests"], out["latency_us"]["p99"], scaling


def cpu_seconds(pid):
    pids = [pid] + [int(p) for p in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    total = 0
    for p in pids:
        fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (children are counted alive)
    return total / TICK


def cpu_per_conn(steer):
    proc, port = start(["--workers", "2", "--cpus", "0,1", "--steer", steer])
    before_cpu, before = cpu_seconds(proc.pid), stats(port)["totals"]["accepted"]
    subprocess.run([f"{BIN}/lab-load", "--close", "-c", "32", "-d", "3", "--warmup", "0",
                    f"http://127.0.0.1:{port}/"], stdout=subprocess.DEVNULL, check=True)
    after_cpu, after = cpu_seconds(proc.pid), stats(port)["totals"]["accepted"]
    stop(proc)
    return (after_cpu - before_cpu) / (after - before) * 1e6, after - before


def main():
    parts = sys.argv[1:] or ["neighbour", "scale", "cpu"]
    if "neighbour" in parts:
        for steer in ["hash", "cpu", "load"]:
            runs = [neighbour(steer) for _ in range(5)]
            slowest = [round(r[0] * 1000, 1) for r in runs]
            print(f"neighbour --steer {steer}: slowest of 20 (ms) per run {slowest}, median "
                  f"{statistics.median(slowest)}; waited > 1 s per run {[r[1] for r in runs]}", flush=True)
    if "scale" in parts:
        for steer, migrate in [("load", "on"), ("load", "off"), ("hash", "on"), ("hash", "off")]:
            for _ in range(3):
                errors, lost, requests, p99, scaling = scale_run(steer, migrate)
                print(f"scale --steer {steer} --migrate {migrate}: {requests} requests, errors {errors}, "
                      f"lost {lost}, p99 {p99 / 1000:.1f} ms; scaling {scaling}", flush=True)
    if "cpu" in parts:
        ratios = []
        for _ in range(5):
            hash_us, hash_n = cpu_per_conn("hash")
            load_us, load_n = cpu_per_conn("load")
            ratios.append(load_us / hash_us)
            print(f"cpu per connection: hash {hash_us:.1f} us ({hash_n} conns), load {load_us:.1f} us "
                  f"({load_n} conns), load/hash {load_us / hash_us:.3f}", flush=True)
        print(f"cpu per connection: load/hash median {statistics.median(ratios):.3f} over {len(ratios)} pairs")


if __name__ == "__main__":
    main()
