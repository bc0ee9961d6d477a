# lab-uring --listen shared against reuseport: 2 rings on CPUs 0,1, lab-load on CPU 1; Jain over the rings from /stats.
import os, subprocess, re, json, socket, statistics, tempfile
BIN = os.environ.get("BIN", "target/release")  # where lab-uring and lab-load are
TMP = tempfile.mkdtemp()
def stats(port):
    s = socket.create_connection(("127.0.0.1", port)); s.sendall(b"GET /stats HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        d = s.recv(65536)
        if not d: break
        data += d
    return json.loads(data.split(b"\r\n\r\n", 1)[1])
def jain(xs):
    return sum(xs) ** 2 / (len(xs) * sum(x * x for x in xs)) if any(xs) else float("nan")
def main():
    out = {}
    for workload, extra in [("keep-alive", ["-c", "64"]), ("churn", ["-c", "64", "--close"])]:
        for mode in ["shared", "reuseport"]:
            for rnd in range(3):
                p = subprocess.Popen([f"{BIN}/lab-uring", "--addr", "127.0.0.1:0", "--workers", "2", "--cpus", "0,1", "--listen", mode], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                port = int(re.search(r":(\d+)", p.stdout.readline()).group(1))
                subprocess.run([f"{BIN}/lab-load", f"http://127.0.0.1:{port}/", "-d", "3", "--warmup", "0.5", "--cpus", "1", "--json", f"{TMP}/load-{workload}-{mode}-{rnd}.json"] + extra, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
                st = stats(port)
                p.kill(); p.wait()
                rps = json.load(open(f"{TMP}/load-{workload}-{mode}-{rnd}.json"))["rps"]
                ws = [w for w in st["workers"] if w.get("role") == "loop"]
                conns = [w["accepted"] for w in ws]; reqs = [w["requests"] for w in ws]
                row = dict(rps=rps, accepted=conns, requests=reqs, jain_conns=jain(conns), jain_requests=jain(reqs))
                out.setdefault(f"{workload} {mode}", []).append(row)
                print(workload, mode, rnd, json.dumps(row), flush=True)
    for k, rows in out.items():
        print(k, "median rps %.0f" % statistics.median(r["rps"] for r in rows), "Jain conns %.3f" % statistics.median(r["jain_conns"] for r in rows), "Jain requests %.3f" % statistics.median(r["jain_requests"] for r in rows))


if __name__ == "__main__":
    main()
