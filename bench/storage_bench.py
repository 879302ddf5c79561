"""Storage benchmarks, ringkeeper and Apache ZooKeeper 3.8 side by side in one run, both
with their data on the same file system and forceSync on:

1. group commit: txns/s and fsyncs/s with 1, 16, 64, 256 concurrent writers (setData,
   closed loop, one request in flight per session); the batching factor is txns per
   fsync. Compared with 1/(fdatasync latency) of this disk, measured here first, and
   with what the same server does for reads on the same connections: a getData round
   trip with one session, and getData/s with 64 sessions. A write needs a read's round
   trip plus its sync, and at least a read's CPU, so these bound what group commit can
   reach on this machine: a single writer cannot beat (sync + read round trip) / sync,
   and 64 writers cannot beat reads/s x sync.
2. restart: time from starting the process to answering a getData, after kill -9, with
   N znodes of 100 bytes (ringkeeper: 100k, 1M, 5M; ZooKeeper: 100k, 1M by default).
3. memory: RSS of the server holding N znodes after a fresh load and after a restart
   (ringkeeper's node data after a restart lives in the page cache via the snapshot
   map: RssFile; its heap is RssAnon).

    cargo build --release --workspace && python3 bench/storage_bench.py [--quick]

--quick uses smaller sizes and shorter runs (a smoke test of the script itself).
Prints a table and writes bench/results/storage-<time>.json.
"""

import argparse
import json
import os
import re
import signal
import statistics
import tempfile
import time
from pathlib import Path

from harness import REPO, bench, populate, restart_seconds, rss, start


def fdatasync_latency_ms(directory, n=400):
    """Median and p90 of (4 KiB pwrite + fdatasync) into a preallocated file."""
    path = Path(directory) / "fsync-probe.bin"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        os.posix_fallocate(fd, 0, 16 << 20)
        os.fsync(fd)
        block = b"x" * 4096
        ts = []
        for i in range(n):
            t = time.perf_counter()
            os.pwrite(fd, block, (i % 4000) * 4096)
            os.fdatasync(fd)
            ts.append((time.perf_counter() - t) * 1e3)
        ts.sort()
        return ts[len(ts) // 2], ts[int(len(ts) * 0.9)]
    finally:
        os.close(fd)
        path.unlink()


def mntr(server):
    return dict(l.split("\t", 1) for l in server.four("mntr").splitlines() if "\t" in l)


def settle_snapshot(server, timeout=900):
    """ringkeeper only: asks for snapshots (SIGUSR1) until one holds the last txn, so a
    restart has no log to replay (the state before a planned restart)."""
    last = int(re.search(r"Zxid: 0x([0-9a-f]+)", server.four("srvr")).group(1), 16)
    snap_dir = server.data_dir / "ringkeeper"
    deadline = time.time() + timeout
    while time.time() < deadline:
        zxids = [int(p.name.split(".")[1], 16) for p in snap_dir.glob("snapshot.*")
                 if not p.name.endswith(".tmp")]
        if zxids and max(zxids) >= last:
            return
        os.kill(server.proc.pid, signal.SIGUSR1)
        time.sleep(1)
    raise SystemExit(f"no snapshot reached zxid {last:#x} in {timeout} s")


def replayed_txns(server):
    """ringkeeper only: how many logged txns the last start replayed (its recovery line),
    which is what a restart right after a load spends its time on."""
    found = re.findall(r"(?:then|znodes from) (\d+) logged txns", server.log_text)
    return int(found[-1]) if found else 0


def restarts(server, probe_path, n):
    """n restarts: their times and, for ringkeeper, the txns each replayed."""
    times, replayed = [], []
    for _ in range(n):
        times.append(restart_seconds(server, probe_path))
        if server.kind == "ringkeeper":
            replayed.append(replayed_txns(server))
    return times, replayed


def log_counters(server):
    m = mntr(server)
    if server.kind == "ringkeeper":
        return int(m["rk_log_fsyncs"]), int(m["rk_log_txns"])
    return int(m["zk_cnt_fsynctime"]), int(m["zk_sum_sync_processor_batch_size"])


def group_commit(server, writers, duration, warmup):
    f0, t0 = log_counters(server)
    r = bench("run", server, ["--sessions", str(writers), "--depth", "1", "--mix", "set=100",
                           "--keys", "1000", "--value-size", "100",
                           "--duration", str(duration), "--warmup", str(warmup)])
    f1, t1 = log_counters(server)
    per_fsync = (t1 - t0) / max(f1 - f0, 1)
    return {
        "writers": writers,
        "txns_per_s": r["ops_per_s"],
        "fsyncs_per_s": r["ops_per_s"] / per_fsync,
        "txns_per_fsync": per_fsync,
        "p50_us": r["latency_us"]["p50"],
        "p99_us": r["latency_us"]["p99"],
    }


def read_bounds(server, fsync_ms):
    """What the same server does for getData on the same kind of connections: the
    floor of a single writer's latency and the ceiling of 64 writers' throughput, as
    multiples of one fdatasync."""
    args = ["--depth", "1", "--mix", "get=100", "--keys", "1000", "--value-size", "100",
            "--duration", "4", "--warmup", "1"]
    one = bench("run", server, ["--sessions", "1"] + args)
    many = bench("run", server, ["--sessions", "64"] + args)
    rtt_us = one["latency_us"]["p50"]
    return {
        "read_p50_us_1_session": rtt_us,
        "reads_per_s_64_sessions": many["ops_per_s"],
        "single_writer_floor_x_fsync": (fsync_ms * 1e3 + rtt_us) / (fsync_ms * 1e3),
        "writers_64_ceiling_x_fsync_rate": many["ops_per_s"] * fsync_ms / 1e3,
    }


def fmt_ms(x):
    return f"{x * 1e3:.0f} ms" if x < 10 else f"{x:.1f} s"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rk-sizes", default="100000,1000000,5000000")
    ap.add_argument("--zk-sizes", default="100000,1000000")
    ap.add_argument("--restarts", type=int, default=3)
    ap.add_argument("--out", default=str(REPO / "bench" / "results"), help="where the JSON goes")
    a = ap.parse_args()
    if a.quick:
        a.rk_sizes, a.zk_sizes, a.restarts = "20000", "20000", 2
    duration, warmup = (3, 1) if a.quick else (8, 2)
    writers_list = [1, 16, 64] if a.quick else [1, 16, 64, 256]
    results = {"machine": os.uname().nodename, "cpus": os.cpu_count(),
               "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    tmp = tempfile.gettempdir()
    med, p90 = fdatasync_latency_ms(tmp)
    results["fdatasync_ms"] = {"p50": med, "p90": p90, "dir": tmp}
    print(f"fdatasync of this disk ({tmp}): p50 {med:.3f} ms, p90 {p90:.3f} ms "
          f"-> 1/fdatasync = {1e3 / med:.0f}/s", flush=True)

    results["group_commit"] = {}
    for kind in ["zookeeper", "ringkeeper"]:
        s = start(kind, {})
        try:
            bench("run", s, ["--sessions", "16", "--depth", "1", "--mix", "set=100", "--keys", "1000",
                          "--duration", "2", "--warmup", "1"])  # discarded warm-up (JIT)
            rows = []
            for w in writers_list:
                r = group_commit(s, w, duration, warmup)
                rows.append(r)
                print(f"{kind:10} {w:4} writers: {r['txns_per_s']:9.0f} txns/s  {r['fsyncs_per_s']:7.0f} fsyncs/s  "
                      f"{r['txns_per_fsync']:6.1f} txns/fsync  p50 {r['p50_us']} us  p99 {r['p99_us']} us", flush=True)
            results["group_commit"][kind] = rows
            b = read_bounds(s, med)
            results.setdefault("read_bounds", {})[kind] = b
            print(f"{kind:10} bounds from reads: 1 session getData p50 {b['read_p50_us_1_session']} us "
                  f"-> a single writer cannot beat {b['single_writer_floor_x_fsync']:.2f}x one fdatasync; "
                  f"64 sessions {b['reads_per_s_64_sessions']:.0f} getData/s "
                  f"= {b['writers_64_ceiling_x_fsync_rate']:.1f}x 1/fdatasync", flush=True)
        finally:
            s.stop()

    results["restart"] = {}
    for kind, sizes in [("ringkeeper", a.rk_sizes), ("zookeeper", a.zk_sizes)]:
        for n in [int(x) for x in sizes.split(",") if x]:
            s = start(kind, {}, heap="4g" if n > 1_500_000 else "2g")
            try:
                load_s = populate(s, n)
                fresh = rss(s.proc.pid)
                times, replayed = restarts(s, f"/bench/k{n - 1:010}", a.restarts)
                after = rss(s.proc.pid)
                settled = []
                if kind == "ringkeeper":
                    settle_snapshot(s)
                    settled, _ = restarts(s, f"/bench/k{n - 1:010}", a.restarts)
                disk = sum(f.stat().st_size for f in s.data_dir.rglob("*") if f.is_file())
                row = {"znodes": n, "load_s": load_s, "restart_s": times, "replayed_txns": replayed,
                       "restart_no_log_s": settled,
                       "rss_fresh": fresh, "rss_after_restart": after, "data_dir_bytes": disk}
                results["restart"].setdefault(kind, []).append(row)
                no_log = (f" (replaying {'/'.join(str(r) for r in replayed)} txns; "
                          f"with a current snapshot: min {fmt_ms(min(settled))} "
                          f"median {fmt_ms(statistics.median(settled))})") if settled else ""
                print(f"{kind:10} {n:8} znodes: load {load_s:6.1f} s; restart min {fmt_ms(min(times))} "
                      f"median {fmt_ms(statistics.median(times))}{no_log}; RSS fresh {fresh['VmRSS'] / 2**20:7.1f} MiB "
                      f"(anon {fresh['RssAnon'] / 2**20:.1f}), after restart {after['VmRSS'] / 2**20:7.1f} MiB "
                      f"(anon {after['RssAnon'] / 2**20:.1f}, file {after['RssFile'] / 2**20:.1f})", flush=True)
            finally:
                s.stop()

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"storage-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=1))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
