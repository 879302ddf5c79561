"""A quick side-by-side of ringkeeper and Apache ZooKeeper 3.8 with ringkeeper-bench:
closed-loop reads and writes, 16 sessions x 16 in flight and 1 x 1, two runs each after
a discarded warm-up run (JIT), reporting ops/s, latency and the server's CPU time per
operation (from /proc/PID/stat). The full comparison with scenarios is issue 4's.

    python3 bench/quick_compare.py       (after cargo build --release --workspace)
"""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "python"))
import servers  # noqa: E402

BENCH = REPO / "target" / "release" / "ringkeeper-bench"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def run(server, args):
    before = cpu_seconds(server.proc.pid)
    p = subprocess.run([str(BENCH), "run", "--addr", server.hosts, "--json"] + args,
                       capture_output=True, text=True, timeout=300)
    if p.returncode:
        raise SystemExit(p.stderr)
    r = json.loads(p.stdout.strip().splitlines()[-1])
    # The bench's window excludes warm-up, the CPU delta includes it: scale by time.
    total_s = float(args[args.index("--duration") + 1]) + float(args[args.index("--warmup") + 1])
    cpu = cpu_seconds(server.proc.pid) - before
    r["server_cpu_us_per_op"] = cpu * 1e6 / (r["ops_per_s"] * total_s) if r["ops_per_s"] else 0
    return r


def main():
    common = ["--keys", "10000", "--value-size", "100", "--duration", "8", "--warmup", "2"]
    cases = [
        ("getData 16x16", ["--sessions", "16", "--depth", "16", "--mix", "get=100"]),
        ("setData 16x16", ["--sessions", "16", "--depth", "16", "--mix", "set=100"]),
        ("getData 1x1", ["--sessions", "1", "--depth", "1", "--mix", "get=100"]),
        ("setData 1x1", ["--sessions", "1", "--depth", "1", "--mix", "set=100"]),
    ]
    results = {}
    for kind in ["zookeeper", "ringkeeper"]:
        s = servers.start_zookeeper(heap="2g") if kind == "zookeeper" else servers.start_ringkeeper()
        try:
            subprocess.run([str(BENCH), "populate", "--addr", s.hosts, "--keys", "10000",
                            "--value-size", "100"], check=True, capture_output=True)
            run(s, cases[0][1] + common)  # discarded: warm-up
            for name, args in cases:
                rs = [run(s, args + common) for _ in range(2)]
                results[(kind, name)] = rs
                print(f"{kind:10} {name:14} ops/s {[round(r['ops_per_s']) for r in rs]} "
                      f"p50 {[r['latency_us']['p50'] for r in rs]}us "
                      f"p99 {[r['latency_us']['p99'] for r in rs]}us "
                      f"cpu/op {[round(r['server_cpu_us_per_op'], 1) for r in rs]}us", flush=True)
        finally:
            s.stop()
    print("\nratio ringkeeper/zookeeper (median of two runs each: ops/s, p50 latency, server CPU per op)")
    for name, _ in cases:
        def med(kind, f):
            v = sorted(f(r) for r in results[(kind, name)])
            return (v[0] + v[-1]) / 2
        ops = med("ringkeeper", lambda r: r["ops_per_s"]) / med("zookeeper", lambda r: r["ops_per_s"])
        p50 = med("ringkeeper", lambda r: r["latency_us"]["p50"]) / med("zookeeper", lambda r: r["latency_us"]["p50"])
        cpu = med("ringkeeper", lambda r: r["server_cpu_us_per_op"]) / med("zookeeper", lambda r: r["server_cpu_us_per_op"])
        print(f"  {name:14} ops/s x{ops:.2f}   p50 x{p50:.2f}   cpu/op x{cpu:.2f}")


if __name__ == "__main__":
    main()
