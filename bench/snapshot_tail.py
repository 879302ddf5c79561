"""Tail latency while snapshots of a large tree are written.

    cargo build --release --workspace && python3 bench/snapshot_tail.py [--znodes 5000000]
        [--rate 30000] [--seconds 30] [--rounds 2]

One ringkeeper server gets `--znodes` znodes of 100 bytes, then an open-loop 90/10
getData/setData load at `--rate` ops/s (latency counted from each request's intended
send time, so a stall cannot hide by slowing the client) runs twice per round, in
turn: once with snapshots taken as often as the load allows (`snapCount` low enough
that the next snapshot is due while the last is still being written, so the window is
covered by snapshot writes), once with none due in the window (`snapCount` above the
window's writes). Each run restarts the server on the loaded data directory, so both
start alike. Reported per run: p50, p99, p99.9 and max of all requests, the snapshots
written inside the window (from the server's log), and the server's CPU. Writes
bench/results/snapshot-tail-<time>.json.

ZooKeeper is not run beside it: at ~3 KB of heap per znode (compare.py's memory
scenario) 5M znodes need a ~15 GiB heap, where the harness runs it with 2 GiB.
"""

import argparse
import json
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from harness import REPO, bench, cpu_seconds, machine, populate, raise_nofile
import servers  # noqa: E402 (on the path once harness is imported)

WRITTEN = re.compile(r"snapshot \S+ written: (\d+) znodes, \d+ sessions, in (\d+) ms")


def one_run(data_dir, snap_count, args):
    server = servers.start_ringkeeper({"snapCount": str(snap_count), "maxClientCnxns": "0",
                                       "dataDir": str(data_dir)})
    try:
        load = ["--sessions", "64", "--depth", "16", "--mix", "get=90,set=10",
                "--keys", str(args.znodes), "--value-size", "100", "--threads", "1",
                "--rate", str(args.rate), "--warmup", "2", "--duration", str(args.seconds)]
        before_log = len(server.log_text)
        before_cpu = cpu_seconds(server.proc.pid)
        r = bench("run", server, load, timeout=args.seconds * 10 + 600)
        cpu = cpu_seconds(server.proc.pid) - before_cpu
        snaps = [(int(n), int(ms)) for n, ms in WRITTEN.findall(server.log_text[before_log:])]
    finally:
        server.stop()
    lat = r["latency_us"]
    return {"snap_count": snap_count, "ops_per_s": r["ops_per_s"],
            "p50_us": lat["p50"], "p99_us": lat["p99"], "p999_us": lat["p999"], "max_us": lat["max"],
            "errors": r.get("errors", 0),
            "snapshots_written": len(snaps), "snapshot_ms": [ms for _, ms in snaps],
            "server_cpu_us_per_op": round(cpu * 1e6 / max(1, r["ops"]), 2)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--znodes", type=int, default=5_000_000)
    ap.add_argument("--rate", type=int, default=30_000)
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    raise_nofile()
    work = Path(tempfile.mkdtemp(prefix="rk-snaptail-"))
    data = work / "data"
    try:
        t = time.time()
        loader = servers.start_ringkeeper({"maxClientCnxns": "0", "dataDir": str(data)})
        try:
            populate(loader, args.znodes)
        finally:
            loader.stop()
        print(f"loaded {args.znodes} znodes in {time.time() - t:.1f} s", flush=True)
        writes = args.rate * (args.seconds + 2) // 10
        # ZooKeeper's rule: a snapshot after snapCount/2 + rand(snapCount/2) txns.
        variants = {"snapshots": 2_000, "none": 4 * writes}
        runs = {k: [] for k in variants}
        for i in range(args.rounds):
            order = list(variants) if i % 2 == 0 else list(variants)[::-1]
            for name in order:
                r = one_run(data, variants[name], args)
                runs[name].append(r)
                print(f"round {i + 1} {name}: {r}", flush=True)
        summary = {"machine": machine(), "znodes": args.znodes, "rate": args.rate,
                   "seconds": args.seconds, "rounds": args.rounds}
        for name, rs in runs.items():
            summary[name] = {k: {"min": min(r[k] for r in rs), "median": statistics.median(r[k] for r in rs),
                                 "max": max(r[k] for r in rs)}
                             for k in ("ops_per_s", "p50_us", "p99_us", "p999_us", "max_us",
                                       "snapshots_written")}
        out = REPO / "bench" / "results" / time.strftime("snapshot-tail-%Y%m%d-%H%M%S.json")
        out.write_text(json.dumps({"summary": summary, "runs": runs}, indent=1))
        print(json.dumps(summary, indent=2))
        print(f"snapshot_tail: {out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
