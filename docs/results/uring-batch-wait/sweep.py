# lab-uring's batch wait (--batch-wait-us) against none, on keep-alive: one ring on CPU 0, lab-load on
# CPU 1. Per run: io_uring_enter calls and server CPU (utime+stime from /proc) per request, both over
# /stats deltas around the load; req/s and latency from lab-load's --json.
import json, os, re, statistics, subprocess, sys, tempfile
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "uring-2core"))
from balance import stats  # the same /stats reader

BIN = os.environ.get("BIN", "target/release")  # where lab-uring and lab-load are
WAITS = [int(w) for w in os.environ.get("WAITS", "0,20,50,100").split(",")]
CONNS = [int(c) for c in os.environ.get("CONNS", "1,64,1024").split(",")]
ROUNDS = int(os.environ.get("ROUNDS", "3"))
TICK = os.sysconf("SC_CLK_TCK")
TMP = tempfile.mkdtemp()


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def run(wait, conns, rnd):
    cmd = [f"{BIN}/lab-uring", "--addr", "127.0.0.1:0", "--workers", "1", "--cpus", "0",
           "--batch-wait-us", str(wait)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    port = int(re.search(r":(\d+)", p.stdout.readline()).group(1))
    before, cpu0 = stats(port)["workers"][0], cpu_seconds(p.pid)
    out = f"{TMP}/{wait}-{conns}-{rnd}.json"
    subprocess.run([f"{BIN}/lab-load", f"http://127.0.0.1:{port}/", "-d", "3", "--warmup", "0.5",
                    "--cpus", "1", "-c", str(conns), "--json", out],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    cpu1, after = cpu_seconds(p.pid), stats(port)["workers"][0]
    p.kill()
    p.wait()
    load = json.load(open(out))
    requests = after["requests"] - before["requests"]
    row = dict(wait_us=wait, conns=conns, round=rnd, rps=load["rps"], errors=sum(load["errors"].values()),
               lost=load["lost"], p50_us=load["latency_us"]["p50"], p99_us=load["latency_us"]["p99"],
               enters_per_request=(after["ring"]["enters"] - before["ring"]["enters"]) / requests,
               cpu_us_per_request=(cpu1 - cpu0) * 1e6 / requests)
    print(json.dumps(row), flush=True)
    return row


rows = [run(w, c, r) for r in range(ROUNDS) for c in CONNS for w in WAITS]
print("\nmedians of", ROUNDS, "rounds")
print("| connections | batch wait µs | io_uring_enter / request | server CPU µs / request | req/s | p50 µs | p99 µs |")
print("|---:|---:|---:|---:|---:|---:|---:|")
for c in CONNS:
    for w in WAITS:
        rs = [r for r in rows if r["conns"] == c and r["wait_us"] == w]
        m = lambda k: statistics.median(r[k] for r in rs)
        print(f"| {c} | {w} | {m('enters_per_request'):.3f} | {m('cpu_us_per_request'):.2f} | {m('rps'):.0f} | {m('p50_us'):.0f} | {m('p99_us'):.0f} |")
