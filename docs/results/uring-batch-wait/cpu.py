# Server CPU microseconds per request (server_cpu / rps, median of rounds) from lab-bench results dirs, and each row over lab-epoll.
import json, sys, statistics
for path in sys.argv[1:]:
    r = json.load(open(path + "/results.json"))
    table = {}
    for run in r["runs"]:
        per = [rd["server_cpu"] * 1e6 / rd["rps"] for rd in run["rounds"] if rd["rps"] and not rd["errors"] and not rd["lost"]]
        table[(run["server"], run["workload"])] = (statistics.median(per), per, run["rps"]["median"])
    for (server, workload), (med, per, rps) in sorted(table.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        epoll = table.get(("epoll", workload))
        ratio = f"{med / epoll[0]:.2f}x epoll" if epoll and server != "epoll" else ""
        print(f"{path} {workload:10} {server:12} {med:6.2f} us/req (rounds {', '.join('%.2f' % p for p in per)}) rps median {rps:.0f} {ratio}")
