"""Restart with a warm and with a cold page cache, both servers in one run.

    cargo build --release --workspace && python3 bench/restart_cold.py [--znodes 1000000] [--rounds 2]
        [--servers zookeeper,ringkeeper]

Each server gets `--znodes` znodes of 100 bytes, then restarts (kill -9 to the first
getData answered) `--rounds` times with the page cache as the kill left it (warm) and
`--rounds` times with it dropped after the kill (`sync; echo 3 >
/proc/sys/vm/drop_caches`, as after a reboot: root only). Before the measured
restarts, each server is restarted once and its first restart discarded, so that all
measured ones start from the same files (ringkeeper: its current snapshot, nothing
left to replay). For ringkeeper the restart is split by its own recovery log line
into the snapshot's load (mapping and checking it), the log's replay, and the rest
(process start, executors, listening). Also reported: the bytes of the files read at
start-up and how fast this disk reads them cold (`dd` of the snapshot, caches
dropped), the floor of any restart that checks every byte before serving. Writes
bench/results/restart-cold-<time>.json.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import time
from pathlib import Path

from harness import REPO, machine, populate, raise_nofile, restart_seconds, start

RECOVERED = re.compile(r"recovered (\d+) znodes from (\S+) \(zxid \S+\) in (\d+) ms, then (\d+) logged txns "
                       r"up to zxid \S+, in (\d+) ms in all")


def drop_caches():
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


RECOVERED_FROM_LOG = re.compile(r"recovered (\d+) znodes from (\d+) logged txns \(no snapshot\) in (\d+) ms")


def last_recovery(server):
    """The parts of the last start-up's recovery, from its log line (with a snapshot,
    or from the log alone when none was taken yet)."""
    text = server.log_text
    lines = [(m.start(), m) for m in RECOVERED.finditer(text)] + [(m.start(), m) for m in RECOVERED_FROM_LOG.finditer(text)]
    if not lines:
        return None
    m = max(lines, key=lambda x: x[0])[1]
    if m.re is RECOVERED:
        n, snap, load_ms, replayed, total_ms = m.groups()
    else:
        (n, replayed, total_ms), snap, load_ms = m.groups(), None, 0
    return {"znodes": int(n), "snapshot": snap, "snapshot_load_ms": int(load_ms),
            "replayed_txns": int(replayed), "recovery_ms": int(total_ms)}


def cold_read_mb_s(path):
    """Reads `path` once with the caches dropped: MB/s of this disk for it."""
    drop_caches()
    t = time.perf_counter()
    with open(path, "rb") as f:
        while f.read(1 << 20):
            pass
    return os.path.getsize(path) / 1e6 / (time.perf_counter() - t)


def one_restart(server, probe, cold):
    if cold:
        server.kill()
        drop_caches()
        # restart_seconds kills again (a no-op on a dead process) and starts the clock.
    s = restart_seconds(server, probe)
    r = {"restart_s": round(s, 3), "cold": cold}
    if server.kind == "ringkeeper":
        rec = last_recovery(server)
        if rec:
            r.update(rec)
            r["outside_recovery_ms"] = round(s * 1000 - rec["recovery_ms"])
    return r


def run(kind, znodes, rounds):
    server = start(kind, heap="2g")
    try:
        populate(server, znodes, 100, prefix="/bench-restart")
        probe = f"/bench-restart/k{znodes - 1:010}"
        # Once and discarded: a snapshot taken at start-up covers the load, so that
        # the measured restarts read the same files and replay the same (nothing).
        restart_seconds(server, probe)
        time.sleep(2)
        restart_seconds(server, probe)
        out = []
        for i in range(rounds):
            for cold in (False, True):
                r = one_restart(server, probe, cold)
                out.append(r)
                print(f"  {kind:10} {'cold' if cold else 'warm'} #{i + 1}: {r}", flush=True)
        files = sorted((p for p in Path(server.tmp.name).rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
        biggest = files[-1] if files else None
        disk = {"largest_file": str(biggest.relative_to(server.tmp.name)) if biggest else None,
                "largest_file_bytes": biggest.stat().st_size if biggest else 0,
                "data_bytes": sum(p.stat().st_size for p in files)}
        if biggest:
            disk["cold_read_mb_s"] = round(cold_read_mb_s(biggest), 1)
        return {"restarts": out, "disk": disk}
    finally:
        server.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--znodes", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--servers", default="zookeeper,ringkeeper", help="which of the two, comma-separated")
    args = ap.parse_args()
    kinds = [k for k in ("zookeeper", "ringkeeper") if k in args.servers.split(",")]
    if os.geteuid() != 0:
        raise SystemExit("restart_cold: dropping the page cache needs root")
    raise_nofile()
    res = {"machine": machine(), "znodes": args.znodes}
    for kind in kinds:
        res[kind] = run(kind, args.znodes, args.rounds)
    summary = {}
    for kind in kinds:
        for cold in (False, True):
            v = [r["restart_s"] for r in res[kind]["restarts"] if r["cold"] == cold]
            summary[f"{kind}_{'cold' if cold else 'warm'}_s"] = {"min": min(v), "median": statistics.median(v)}
    res["summary"] = summary
    out = REPO / "bench" / "results" / time.strftime("restart-cold-%Y%m%d-%H%M%S.json")
    out.write_text(json.dumps(res, indent=1))
    print(json.dumps(summary, indent=1))
    print(json.dumps({k: res[k]["disk"] for k in kinds}, indent=1))
    print(f"restart_cold: {out}")


if __name__ == "__main__":
    main()
