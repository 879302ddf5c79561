"""ringkeeper vs Apache ZooKeeper 3.8, side by side in one run, on this machine.

    python3 bench/compare.py [--quick] [--repeats N] [--scenarios a,b,...] [--out DIR]

Builds the release binaries, then for each server in turn (ZooKeeper from the Debian
package with its own temp zoo.cfg, log4j at INFO, -Xms2g -Xmx2g, forceSync on;
ringkeeper with the same settings; data of both in the same temp file system):
populates 10,000 keys of 100 bytes, runs a discarded warm-up (JIT), runs every scenario
`--repeats` times; then, on a fresh server, RSS growth while loading 500,000 znodes of
100 bytes and the restart time (kill -9 to the first getData) with them. Prints the ringkeeper/ZooKeeper
ratios (median of the repeats) against the project's goals and writes results.json,
summary.md and compare.svg (throughput ratios and latency CDFs) to
bench/results/compare-<time>/.

--quick: short runs, one repeat, small sizes: a smoke test of the instrument itself.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from harness import REPO, bench, cpu_seconds, fanout_floor, machine, populate, raise_nofile, restart_seconds, rss, start

KEYS = 10_000
LARGE_VALUE = 1_000_000  # under ZooKeeper's default jute.maxbuffer (1 MiB - 1) with headers


def scenarios(quick):
    """name -> (bench command, args, what it shows)."""
    d = ["--duration", "2" if quick else "5", "--warmup", "0.5" if quick else "1"]
    run = ["--keys", str(KEYS), "--value-size", "100", "--threads", "1"]
    return {
        "read": ("run", ["--sessions", "32", "--depth", "16", "--mix", "get=100"] + run + d,
                 "getData, 32 sessions x 16 in flight, closed loop"),
        "write": ("run", ["--sessions", "32", "--depth", "16", "--mix", "set=100"] + run + d,
                  "setData, 32 sessions x 16 in flight, closed loop"),
        "mixed": ("run", ["--sessions", "32", "--depth", "16", "--mix", "get=90,set=10"] + run + d,
                  "90% getData / 10% setData, closed loop"),
        "latency": ("run", ["--sessions", "32", "--depth", "16", "--mix", "get=90,set=10",
                            "--rate", "5000"] + run + d,
                    "90/10 open loop at 5,000 ops/s offered to both: latency at the same load"),
        "zipf-write": ("run", ["--sessions", "16", "--depth", "4", "--dist", "zipf",
                               "--mix", "set=40,create=20,delete=20,multi=20"] + run + d,
                       "setData/create/delete/multi on zipfian keys"),
        "discovery": ("discovery", ["--sessions", "200", "--services", "50", "--instances", "10",
                                    "--registrars", "4", "--churn", "50", "--threads", "1"] + d,
                      "196 readers getChildren+getData with watches, 4 registrars churn 50/s"),
        "locks": ("locks", ["--sessions", "64", "--locks", "8", "--threads", "1"] + d,
                  "64 sessions on 8 locks: ephemeral-sequential, watch predecessor, delete"),
        "fanout": ("fanout", ["--sessions", "200" if quick else "1000"] + d,
                   "N-1 sessions watch one znode; one setData; time to the last notification"),
        "storm": ("storm", ["--sessions", "500" if quick else "5000", "--threads", "1"],
                  "connect + handshake N sessions (256 at a time), then close them"),
        "large": ("run", ["--sessions", "4", "--depth", "2", "--mix", "get=50,set=50",
                          "--keys", "16", "--value-size", str(LARGE_VALUE), "--prefix", "/bench-large",
                          "--threads", "1"] + d,
                  "1,000,000-byte values, 50% getData / 50% setData"),
    }


# name -> (label, how to read the value from a result, higher_is_better, goal ratio)
METRICS = {
    "read": [("reads/s", lambda r: r["ops_per_s"], True, 5.0),
             ("p99 us", lambda r: r["latency_us"]["p99"], False, None),
             ("server CPU us/op", lambda r: r["server_cpu_us_per_op"], False, None),
             ("client CPU us/op", lambda r: r["client_cpu_us_per_op"], False, None)],
    "write": [("writes/s", lambda r: r["ops_per_s"], True, 3.0),
              ("p99 us", lambda r: r["latency_us"]["p99"], False, None),
              ("server CPU us/op", lambda r: r["server_cpu_us_per_op"], False, None),
              ("client CPU us/op", lambda r: r["client_cpu_us_per_op"], False, None),
              ("server + client CPU us/op", lambda r: r["machine_cpu_us_per_op"], False, None),
              ("machine busy", lambda r: r["machine_busy"], False, None)],
    "mixed": [("ops/s", lambda r: r["ops_per_s"], True, None),
              ("p99 us", lambda r: r["latency_us"]["p99"], False, None),
              ("server CPU us/op", lambda r: r["server_cpu_us_per_op"], False, None),
              ("client CPU us/op", lambda r: r["client_cpu_us_per_op"], False, None)],
    "latency": [("p50 us", lambda r: r["latency_us"]["p50"], False, None),
                ("p99 us", lambda r: r["latency_us"]["p99"], False, 0.2),
                ("p99.9 us", lambda r: r["latency_us"]["p999"], False, None),
                ("max us", lambda r: r["latency_us"]["max"], False, None),
                ("server CPU us/op", lambda r: r["server_cpu_us_per_op"], False, None)],
    "zipf-write": [("ops/s", lambda r: r["ops_per_s"], True, None),
                   ("p99 us", lambda r: r["latency_us"]["p99"], False, None)],
    "discovery": [("reads/s", lambda r: r["by_op"]["children"]["ops_per_s"] + r["by_op"]["get"]["ops_per_s"], True, None),
                  ("p99 us", lambda r: r["latency_us"]["p99"], False, None),
                  ("server CPU us/op", lambda r: r["server_cpu_us_per_op"], False, None),
                  ("client CPU us/op", lambda r: r["client_cpu_us_per_op"], False, None),
                  ("server + client CPU us/op", lambda r: r["machine_cpu_us_per_op"], False, None),
                  ("machine busy", lambda r: r["machine_busy"], False, None)],
    "locks": [("acquires/s", lambda r: r["by_op"]["acquire"]["ops_per_s"], True, None),
              ("acquire p99 us", lambda r: r["by_op"]["acquire"]["latency_us"]["p99"], False, None),
              ("requests per acquire", lambda r: r["ops_per_s"] / r["by_op"]["acquire"]["ops_per_s"], False, None),
              ("server CPU us/op", lambda r: r["server_cpu_us_per_op"], False, None),
              ("client CPU us/op", lambda r: r["client_cpu_us_per_op"], False, None),
              ("server + client CPU us/op", lambda r: r["machine_cpu_us_per_op"], False, None),
              ("machine busy", lambda r: r["machine_busy"], False, None)],
    "fanout": [("last notify p50 us", lambda r: r["by_op"]["last_notify"]["latency_us"]["p50"], False, None),
               ("writer's setData p50 us", lambda r: r["by_op"]["set"]["latency_us"]["p50"], False, None),
               ("machine floor, no server, p50 us", lambda r: r["floor"]["by_op"]["last_notify"]["latency_us"]["p50"],
                False, None)],
    "storm": [("sessions/s", lambda r: r["sessions_per_s"], True, None),
              ("connect p99 us", lambda r: r["by_op"]["connect"]["latency_us"]["p99"], False, None)],
    "large": [("ops/s", lambda r: r["ops_per_s"], True, None),
              ("p99 us", lambda r: r["latency_us"]["p99"], False, None)],
    "memory": [("RSS bytes/znode", lambda r: r["rss_per_znode"], False, 0.2)],
    "restart": [("restart s", lambda r: r["restart_s"], False, 0.1)],
}


def memory_and_restart(kind, znodes, restarts):
    """On a fresh server: RSS growth per znode while loading `znodes` znodes of 100
    bytes, then restart time (kill -9 to the first getData answered) with them."""
    s = start(kind, heap="2g")
    try:
        time.sleep(1)  # let start-up settle before the baseline
        before = rss(s.proc.pid)["VmRSS"]
        load_s = populate(s, znodes, 100, prefix="/bench-mem")
        after = rss(s.proc.pid)["VmRSS"]
        mem = {"znodes": znodes, "rss_before": before, "rss_after": after, "load_s": round(load_s, 2),
               "rss_per_znode": round((after - before) / znodes, 1)}
        res = [{"restart_s": round(restart_seconds(s, f"/bench-mem/k{znodes - 1:010}"), 3)}
               for _ in range(restarts)]
        return mem, res
    finally:
        s.stop()


def run_server(kind, names, table, repeats, quick):
    out = {}
    if any(n in table for n in names):
        s = start(kind, heap="2g")
        try:
            populate(s, KEYS, 100)
            if "large" in names:
                populate(s, 16, LARGE_VALUE, prefix="/bench-large")
            # Discarded: warms the JIT (and ringkeeper's caches the same way).
            for warm in ("read", "write"):
                cmd, args, _ = table[warm]
                bench(cmd, s, args)
            for name in names:
                if name not in table:
                    continue
                cmd, args, _ = table[name]
                out[name] = []
                for i in range(repeats):
                    before = cpu_seconds(s.proc.pid)
                    r = bench(cmd, s, args)
                    add_server_cpu(r, cpu_seconds(s.proc.pid) - before, args)
                    if name == "fanout":
                        # The same fan-out with no server, right after: what this
                        # machine's loopback and client cost at this moment.
                        r["floor"] = fanout_floor(args[args.index("--sessions") + 1])
                    out[name].append(r)
                    print(f"  {kind:10} {name:10} #{i + 1}: {summary_line(name, r)}", flush=True)
        finally:
            s.stop()
    if "memory" in names or "restart" in names:
        mem, restarts = memory_and_restart(kind, 20_000 if quick else 500_000, 1 if quick else 3)
        out["memory"] = [mem]
        out["restart"] = restarts
        print(f"  {kind:10} memory    : {mem['rss_per_znode']:.0f} B/znode "
              f"({mem['znodes']} znodes, RSS {mem['rss_before'] / 2**20:.0f} -> {mem['rss_after'] / 2**20:.0f} MiB)")
        print(f"  {kind:10} restart   : {[r['restart_s'] for r in restarts]} s", flush=True)
    return out


def add_server_cpu(r, cpu_s, args):
    """The server's CPU time (user + system, from /proc, all its threads) per request
    over a run: the run's ops plus those of its warm-up, which the CPU time also
    covers (at the same load), so ops/s x (window + warm-up)."""
    if "ops_per_s" not in r or "--warmup" not in args:
        return
    warmup = float(args[args.index("--warmup") + 1])
    ops = r["ops_per_s"] * (r.get("window_s", 0) + warmup)
    if ops > 0:
        r["server_cpu_us_per_op"] = round(cpu_s * 1e6 / ops, 2)
        # The client's time also covers connecting and closing its sessions: an upper
        # bound on its share per request.
        if "client_cpu_s" in r:
            r["client_cpu_us_per_op"] = round(r["client_cpu_s"] * 1e6 / ops, 2)
            # Server and client share the machine: with its CPUs busy, ops/s cannot
            # pass CPUs / (server + client CPU per op), whatever either does alone.
            r["machine_cpu_us_per_op"] = round((cpu_s + r["client_cpu_s"]) * 1e6 / ops, 2)
            if r.get("wall_s"):
                r["machine_busy"] = round((cpu_s + r["client_cpu_s"]) / (r["wall_s"] * len(os.sched_getaffinity(0))), 3)


def summary_line(name, r):
    return "  ".join(f"{label} {fmt(f(r))}" for label, f, _, _ in METRICS[name])


def fmt(x):
    if isinstance(x, float) and x < 10:
        return f"{x:.3f}"
    return f"{x:,.0f}"


def ratios(results, names):
    """Per metric: each server's median and range, and ringkeeper/ZooKeeper."""
    rows = []
    for name in names:
        for label, f, higher, goal in METRICS[name]:
            vals = {}
            for kind in ("zookeeper", "ringkeeper"):
                rs = results[kind].get(name) or []
                try:
                    vals[kind] = [f(r) for r in rs]
                except KeyError:
                    vals[kind] = []
            if not vals["zookeeper"] or not vals["ringkeeper"]:
                continue
            zk, rk = statistics.median(vals["zookeeper"]), statistics.median(vals["ringkeeper"])
            ratio = rk / zk if zk else math.inf
            met = None if goal is None else (ratio >= goal if higher else ratio <= goal)
            rows.append({"scenario": name, "metric": label, "zookeeper": zk, "ringkeeper": rk,
                         "zookeeper_range": [min(vals["zookeeper"]), max(vals["zookeeper"])],
                         "ringkeeper_range": [min(vals["ringkeeper"]), max(vals["ringkeeper"])],
                         "ratio": ratio, "higher_is_better": higher, "goal": goal, "goal_met": met})
    return rows


def table_md(rows, repeats):
    lines = [f"| scenario | metric | ZooKeeper | ringkeeper | ringkeeper/ZooKeeper | goal |",
             "|---|---|---:|---:|---:|---|"]
    for r in rows:
        goal = ""
        if r["goal"] is not None:
            op = "≥" if r["higher_is_better"] else "≤"
            goal = f"{op} {r['goal']:g} {'met' if r['goal_met'] else 'not met'}"
        better = "higher is better" if r["higher_is_better"] else "lower is better"
        lines.append(f"| {r['scenario']} | {r['metric']} ({better}) | {fmt(r['zookeeper'])} | "
                     f"{fmt(r['ringkeeper'])} | **{r['ratio']:.2f}** | {goal} |")
    lines.append(f"\nMedian of {repeats} run(s) per server; ranges in results.json.")
    return "\n".join(lines)


# --- picture -------------------------------------------------------------------------

COLORS = {"zookeeper": "#d62728", "ringkeeper": "#1f77b4"}
DASH = {"read": "", "write": "6,3", "latency": "2,2"}


def svg(rows, results):
    """Left: ringkeeper/ZooKeeper per metric (log scale, 1 = parity, right of 1 =
    ringkeeper better). Right: latency CDFs of read, write and the fixed-load run."""
    W, H = 1100, max(420, 60 + 22 * len(rows))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
           f'<rect width="{W}" height="{H}" fill="white"/>']
    # Bars: advantage = ratio if higher is better, else 1/ratio; log2 axis -8x..8x.
    x0, bw, top = 250, 250, 40
    out.append(f'<text x="10" y="20" font-size="14" font-weight="bold">ringkeeper vs ZooKeeper (advantage, log scale; right = ringkeeper better)</text>')
    lim = 4.0  # log2(16)

    def bx(adv):
        v = max(-lim, min(lim, math.log2(adv))) if adv > 0 else -lim
        return x0 + bw / 2 + v / lim * bw / 2

    for g in (1 / 16, 1 / 4, 1, 4, 16):
        gx = bx(g)
        out.append(f'<line x1="{gx:.1f}" y1="{top - 5}" x2="{gx:.1f}" y2="{top + 22 * len(rows)}" stroke="#ccc"/>')
        out.append(f'<text x="{gx:.1f}" y="{top + 22 * len(rows) + 14}" text-anchor="middle">{g:g}x</text>')
    for i, r in enumerate(rows):
        y = top + 22 * i
        adv = r["ratio"] if r["higher_is_better"] else (1 / r["ratio"] if r["ratio"] else 16)
        xa, xb = sorted((bx(1), bx(adv)))
        color = "#2ca02c" if adv >= 1 else "#d62728"
        out.append(f'<text x="{x0 - 6}" y="{y + 14}" text-anchor="end">{r["scenario"]}: {r["metric"]}</text>')
        out.append(f'<rect x="{xa:.1f}" y="{y + 3}" width="{max(xb - xa, 1):.1f}" height="15" fill="{color}"/>')
        out.append(f'<text x="{x0 + bw + 8}" y="{y + 14}">{adv:.2f}x</text>')
    # CDFs: x = percentile on a "nines" scale, y = latency (log).
    cx0, cy0, cw, ch = 640, 50, 420, 300
    out.append(f'<text x="{cx0}" y="20" font-size="14" font-weight="bold">latency by percentile</text>')
    pts_all = [p for kind in COLORS for name in DASH for r in results[kind].get(name, []) for p in r.get("latency_cdf", [])]
    if pts_all:
        lo = max(1, min(p[1] for p in pts_all))
        hi = max(p[1] for p in pts_all)
        lo_l, hi_l = math.log10(lo), math.log10(max(hi, lo * 10))

        def px(p):
            n = -math.log10(max(1e-5, 1 - p / 100))
            return cx0 + min(n, 5) / 5 * cw

        def py(v):
            return cy0 + ch - (math.log10(max(v, 1)) - lo_l) / (hi_l - lo_l) * ch

        out.append(f'<rect x="{cx0}" y="{cy0}" width="{cw}" height="{ch}" fill="none" stroke="#888"/>')
        for p, lab in ((0, "0"), (90, "90"), (99, "99"), (99.9, "99.9"), (99.99, "99.99")):
            out.append(f'<text x="{px(p):.1f}" y="{cy0 + ch + 14}" text-anchor="middle">p{lab}</text>')
        e = math.floor(lo_l)
        while e <= hi_l:
            if e >= lo_l:
                out.append(f'<text x="{cx0 - 4}" y="{py(10 ** e) + 4:.1f}" text-anchor="end">{fmt_us(10 ** e)}</text>')
                out.append(f'<line x1="{cx0}" y1="{py(10 ** e):.1f}" x2="{cx0 + cw}" y2="{py(10 ** e):.1f}" stroke="#eee"/>')
            e += 1
        ly = cy0 + ch + 34
        for kind in ("zookeeper", "ringkeeper"):
            for name, dash in DASH.items():
                rs = results[kind].get(name) or []
                if not rs:
                    continue
                pts = rs[len(rs) // 2].get("latency_cdf", [])
                path = " ".join(f"{px(p):.1f},{py(v):.1f}" for p, v in pts if p < 100)
                out.append(f'<polyline points="{path}" fill="none" stroke="{COLORS[kind]}" stroke-width="2" stroke-dasharray="{dash}"/>')
                out.append(f'<line x1="{cx0}" y1="{ly - 4}" x2="{cx0 + 30}" y2="{ly - 4}" stroke="{COLORS[kind]}" stroke-width="2" stroke-dasharray="{dash}"/>')
                out.append(f'<text x="{cx0 + 36}" y="{ly}">{kind} {name}</text>')
                ly += 15
    out.append("</svg>")
    return "\n".join(out)


def fmt_us(v):
    return f"{v / 1000:g} ms" if v >= 1000 else f"{v:g} us"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--scenarios", help="comma-separated; default: all")
    ap.add_argument("--out", help="results folder (default bench/results/compare-<time>)")
    ap.add_argument("--no-build", action="store_true")
    a = ap.parse_args()
    t0 = time.time()
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "--workspace", "--quiet"], cwd=REPO, check=True)
    nofile = raise_nofile()
    table = scenarios(a.quick)
    names = list(table) + ["memory", "restart"]
    if a.scenarios:
        names = [n.strip() for n in a.scenarios.split(",")]
        bad = [n for n in names if n not in METRICS]
        if bad:
            raise SystemExit(f"unknown scenario(s) {bad}; known: {', '.join(METRICS)}")
    repeats = a.repeats or (1 if a.quick else 2)
    results = {"machine": machine(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "command": " ".join(["python3", "bench/compare.py"] + sys.argv[1:]), "repeats": repeats,
               "nofile_limit": nofile,
               "scenarios": {n: {"command": table[n][0], "args": table[n][1], "what": table[n][2]}
                             for n in names if n in table}}
    print(f"machine: {results['machine']}", flush=True)
    for kind in ("zookeeper", "ringkeeper"):
        print(f"{kind}:", flush=True)
        results[kind] = run_server(kind, names, table, repeats, a.quick)
    rows = ratios(results, names)
    results["ratios"] = rows
    results["elapsed_s"] = round(time.time() - t0, 1)
    md = table_md(rows, repeats)
    print("\n" + md)
    out = Path(a.out) if a.out else REPO / "bench" / "results" / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "summary.md").write_text(
        f"# ringkeeper vs Apache ZooKeeper 3.8\n\n`{results['command']}` on {results['machine']['cpus']} x "
        f"{results['machine']['cpu']}, {results['when']}, {results['elapsed_s']} s\n\n{md}\n\n![comparison](compare.svg)\n")
    (out / "compare.svg").write_text(svg(rows, results))
    print(f"\nwrote {out}/results.json, summary.md, compare.svg in {results['elapsed_s']} s")


if __name__ == "__main__":
    main()
