"""Scaling with cores: the same loads against ringkeeper with 1..N shards.

    python3 bench/scaling.py [--max-shards N] [--client-cpus K] [--seconds 5] [--rounds 3]
                             [--allow-shared-cores]

For each shard count S the server runs confined (its affinity mask) to the first
CPUs this process may use, one per executor (the broadcast core on shard 0's when
S <= 2, else on a CPU of its own: S + 1 CPUs), and the load generator on the next K
CPUs (`taskset`), its threads as many as its CPUs. A point where the two would share a
CPU is refused (not measured, reported as refused) unless --allow-shared-cores, and
then flagged `shared`: such a figure says nothing about scaling. Loads: getData
(32 sessions per shard x 16 in flight) and 90% getData / 10% setData; per point,
ops/s, ops/s per shard, and the server's CPU per op (/proc, all threads), median and
range of the rounds. Results go to bench/results/scaling-<time>.json.

The goal (issue: per-shard read throughput at 8 shards >= 0.9x that at 1 shard) needs
a machine with at least 8 + 1 + K CPUs.
"""

import argparse
import json
import os
import statistics
import subprocess
import time

import harness
from harness import BENCH, REPO, cpu_seconds, machine, populate

LOADS = {
    "get": ["--depth", "16", "--mix", "get=100"],
    "get90-set10": ["--depth", "16", "--mix", "get=90,set=10"],
}


def server_cpus_needed(shards):
    """The executors of a server with `shards` shards (ringkeeper's default placement
    with --shards: the core shares shard 0's executor only on up to 2 CPUs)."""
    return shards if shards <= 2 else shards + 1


def run_point(shards, cpus, client_cpus, load, seconds):
    server_cpus = cpus[:server_cpus_needed(shards)]
    # The server inherits this process's affinity at start: its threads stay there.
    all_cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, server_cpus)
    try:
        extra = {"ringkeeper.shards": str(shards), "ringkeeper.coreOnShard": str(shards <= 2).lower()}
        server = harness.start("ringkeeper", extra)
    finally:
        os.sched_setaffinity(0, all_cpus)
    try:
        populate(server, 10_000)
        args = [str(BENCH), "run", "--addr", server.hosts, "--json", "--quiet",
                "--sessions", str(32 * shards), "--keys", "10000", "--value-size", "100",
                "--threads", str(len(client_cpus)), "--warmup", "1"] + LOADS[load]
        pin = ["taskset", "-c", ",".join(map(str, client_cpus))]
        subprocess.run(pin + args + ["--duration", "1"], capture_output=True, check=True, timeout=120)
        before = cpu_seconds(server.proc.pid)
        p = subprocess.run(pin + args + ["--duration", str(seconds)], capture_output=True, text=True,
                           check=True, timeout=300)
        cpu = cpu_seconds(server.proc.pid) - before
        r = json.loads(p.stdout.strip().splitlines()[-1])
        ops = r["ops_per_s"] * (r["window_s"] + 1)
        return {"ops_per_s": r["ops_per_s"], "ops_per_s_per_shard": r["ops_per_s"] / shards,
                "server_cpu_us_per_op": cpu * 1e6 / ops, "p99_us": r["latency_us"]["p99"]}
    finally:
        server.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-shards", type=int)
    ap.add_argument("--client-cpus", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--allow-shared-cores", action="store_true")
    args = ap.parse_args()
    harness.raise_nofile()
    cpus = sorted(os.sched_getaffinity(0))
    max_shards = args.max_shards or max(1, len(cpus) - args.client_cpus)
    points = []
    for shards in range(1, max_shards + 1):
        need = server_cpus_needed(shards)
        shared = need + args.client_cpus > len(cpus)
        if shared and not args.allow_shared_cores:
            points.append({"shards": shards, "refused": f"needs {need} server CPUs + {args.client_cpus} "
                                                        f"client CPUs, this process may use {len(cpus)}"})
            print(f"shards {shards}: refused (client and server would share a CPU)", flush=True)
            continue
        client = cpus[-args.client_cpus:] if shared else cpus[need:need + args.client_cpus]
        for load in LOADS:
            runs = [run_point(shards, cpus, client, load, args.seconds) for _ in range(args.rounds)]
            point = {"shards": shards, "load": load, "shared": shared, "server_cpus": cpus[:need],
                     "client_cpus": client}
            for k in runs[0]:
                vals = [r[k] for r in runs]
                point[k] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}
            points.append(point)
            print(f"shards {shards} {load:12} {point['ops_per_s']['median']:>10,.0f} ops/s "
                  f"({point['ops_per_s_per_shard']['median']:,.0f} per shard), "
                  f"server CPU {point['server_cpu_us_per_op']['median']:.2f} us/op"
                  f"{'  [SHARED CPUs: not a scaling figure]' if shared else ''}", flush=True)
    base = {p["load"]: p["ops_per_s_per_shard"]["median"] for p in points
            if p.get("shards") == 1 and "load" in p and not p["shared"]}
    for p in points:
        if "load" in p and p["load"] in base and not p["shared"]:
            p["per_shard_vs_1_shard"] = round(p["ops_per_s_per_shard"]["median"] / base[p["load"]], 3)
    out = REPO / "bench" / "results" / time.strftime("scaling-%Y%m%d-%H%M%S.json")
    out.write_text(json.dumps({"machine": machine(), "rounds": args.rounds, "points": points}, indent=1))
    print(f"scaling: {out}")


if __name__ == "__main__":
    main()
