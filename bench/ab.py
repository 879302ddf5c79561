"""A/B of two ringkeeper builds: the same scenario against each, alternated, so that a
change is reported with the spread of both and not against a number from another day.

    python3 bench/ab.py OLD_BINARY NEW_BINARY [--scenario read|write|mixed|fanout|ensemble-write] [--rounds 5]

For each round, each binary in turn (the order flips every round) gets a fresh server
(data in a temp dir, the same settings), 10,000 keys of 100 bytes, a discarded
warm-up run, then the measured run. Reported per binary: ops/s and the server's CPU
per operation (user + system time from /proc over the measured run, divided by its
ops), min / median / max over the rounds, and new/old ratios of the medians. For
fanout (999 watchers, one setData): the last notification's p50, the median
notification's and the writer's own setData p50. For ensemble-write (a 3-member
ensemble of each build, 64 x 16 setData spread over the members): the members' CPU
per operation in all, and the leader's and a follower's.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import harness
import servers
from harness import REPO, Hosts, bench, cpu_seconds, machine, populate

SCENARIOS = {
    "read": ["--sessions", "32", "--depth", "16", "--mix", "get=100"],
    "write": ["--sessions", "32", "--depth", "16", "--mix", "set=100"],
    "mixed": ["--sessions", "32", "--depth", "16", "--mix", "get=90,set=10"],
    "fanout": ["--sessions", "1000"],
    # A 3-member ensemble (forceSync on), the sessions spread over the members, as
    # bench/ensemble.py's write scenario; CPU per op is the members' sum, with the
    # leader's and each follower's own share.
    "ensemble-write": ["--sessions", "64", "--depth", "16", "--mix", "set=100"],
}


def one_ensemble_run(binary, seconds):
    servers.RINGKEEPER_BIN = Path(binary)
    members = servers.start_ringkeeper_ensemble(3, extra={
        "tickTime": "2000", "initLimit": "10", "syncLimit": "5", "maxClientCnxns": "0",
        "forceSync": "yes"})
    try:
        hosts = Hosts([m.port for m in members])
        modes = [servers.member_mode(m) for m in members]
        populate(hosts, 10_000)
        args = SCENARIOS["ensemble-write"] + ["--keys", "10000", "--value-size", "100",
                                              "--threads", "1", "--warmup", "1"]
        bench("run", hosts, args + ["--duration", "5"])
        before = [cpu_seconds(m.proc.pid) for m in members]
        r = bench("run", hosts, args + ["--duration", str(seconds)])
        cpu = [cpu_seconds(m.proc.pid) - b for m, b in zip(members, before)]
        ops = r["ops"] * (r["window_s"] + 1) / r["window_s"]
        per = {m: [c * 1e6 / ops for c, mode in zip(cpu, modes) if mode == m] for m in set(modes)}
        return {"ops_per_s": r["ops_per_s"], "cpu_us_per_op": sum(cpu) * 1e6 / ops,
                "leader_cpu_us_per_op": per["leader"][0],
                "follower_cpu_us_per_op": statistics.mean(per["follower"]),
                "p50_us": r["latency_us"]["p50"], "p99_us": r["latency_us"]["p99"]}
    finally:
        members.stop()


def one_run(binary, scenario, seconds):
    if scenario == "ensemble-write":
        return one_ensemble_run(binary, seconds)
    servers.RINGKEEPER_BIN = Path(binary)
    server = harness.start("ringkeeper")
    try:
        if scenario == "fanout":
            cmd, args = "fanout", SCENARIOS[scenario] + ["--warmup", "1"]
        else:
            populate(server, 10_000)
            cmd, args = "run", SCENARIOS[scenario] + ["--keys", "10000", "--value-size", "100",
                                                     "--threads", "1", "--warmup", "1"]
        bench(cmd, server, args + ["--duration", "2"])
        before = cpu_seconds(server.proc.pid)
        r = bench(cmd, server, args + ["--duration", str(seconds)])
        cpu = cpu_seconds(server.proc.pid) - before
        if scenario == "fanout":
            by = r["by_op"]
            return {"last_notify_p50_us": by["last_notify"]["latency_us"]["p50"],
                    "notify_p50_us": by["notify"]["latency_us"]["p50"],
                    "set_p50_us": by["set"]["latency_us"]["p50"],
                    "rounds_per_s": by["last_notify"]["ops_per_s"]}
        # The measured window plus the warm-up second the CPU time also covers.
        ops = r["ops"] * (r["window_s"] + 1) / r["window_s"]
        return {"ops_per_s": r["ops_per_s"], "cpu_us_per_op": cpu * 1e6 / ops,
                "p50_us": r["latency_us"]["p50"], "p99_us": r["latency_us"]["p99"]}
    finally:
        server.stop()


def spread(values):
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--scenario", default="read", choices=sorted(SCENARIOS))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=5)
    args = ap.parse_args()
    harness.raise_nofile()
    runs = {"old": [], "new": []}
    for i in range(args.rounds):
        order = ["old", "new"] if i % 2 == 0 else ["new", "old"]
        for which in order:
            r = one_run(getattr(args, which), args.scenario, args.seconds)
            runs[which].append(r)
            print(f"round {i + 1} {which}: {r}", flush=True)
    summary = {"machine": machine(), "scenario": args.scenario, "rounds": args.rounds,
               "old": args.old, "new": args.new}
    for which in ("old", "new"):
        summary[which + "_figures"] = {k: spread([r[k] for r in runs[which]]) for k in runs[which][0]}
    summary["new_over_old_median"] = {
        k: round(summary["new_figures"][k]["median"] / summary["old_figures"][k]["median"], 3)
        for k in runs["old"][0]}
    out = REPO / "bench" / "results" / time.strftime(f"ab-{args.scenario}-%Y%m%d-%H%M%S.json")
    out.write_text(json.dumps({"summary": summary, "runs": runs}, indent=1))
    print(json.dumps(summary, indent=2))
    print(f"ab: {out}")


if __name__ == "__main__":
    main()
