# Server CPU microseconds per request (server_cpu / rps, median of rounds) from lab-bench results dirs, and each row over lab-epoll.
import json, sys, statistics
for path in sys.argv[1:]:
    r = json.load(open(path + "/results.json"))
    table = {}
    for run in r["runs"]:
        per = [rd["server_cpu"] * 1e6 / rd["rps"] for rd in run["rounds"] if rd["rps"] and not rd["errors"] and not rd["lost"]]
        table[(run["server"], run["workload"])] = (statistics.median(per), per, run["rps"]["median"], [round(rd["server_cpu"], 2) for rd in run["rounds"]])
    for (server, workload), (med, per, rps, cpu) in sorted(table.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        print(f"{path} {workload:10} {server:6} {med:6.2f} us/req (rounds {', '.join('%.2f' % p for p in per)}) rps median {rps:.0f} server_cpu {cpu}")
    for workload in sorted({w for _, w in table}):
        for server in sorted({s for s, w in table if w == workload and s != "epoll"}):
            if ("epoll", workload) in table:
                print(f"{path} {workload:10} {server}/epoll {table[(server, workload)][0] / table[('epoll', workload)][0]:.2f}")
