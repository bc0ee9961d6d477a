# lab-uring's io_uring_enter calls per request on keep-alive: one ring on CPU 0, lab-load on CPU 1, /stats at the end.
import os, subprocess, re
from balance import stats  # the same /stats reader
BIN = os.environ.get("BIN", "target/release")  # where lab-uring and lab-load are
for conns in ["64", "1024"]:
    for rnd in range(3):
        p = subprocess.Popen([f"{BIN}/lab-uring", "--addr", "127.0.0.1:0", "--workers", "1", "--cpus", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        port = int(re.search(r":(\d+)", p.stdout.readline()).group(1))
        subprocess.run([f"{BIN}/lab-load", f"http://127.0.0.1:{port}/", "-d", "3", "--warmup", "0.5", "--cpus", "1", "-c", conns], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        w = stats(port)["workers"][0]
        p.kill(); p.wait()
        ring = w["ring"]
        print(f"keep-alive -c {conns} round {rnd}: requests {w['requests']}, io_uring_enter {ring['enters']} = {ring['enters']/w['requests']:.3f} per request; submissions {ring['submissions']/w['requests']:.2f}, completions {ring['completions']/w['requests']:.2f} per request; enobufs {ring['enobufs']}", flush=True)
