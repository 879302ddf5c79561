"""A 3-member ringkeeper ensemble against a 3-member Apache ZooKeeper 3.8 ensemble,
side by side in one run, on this machine.

    python3 bench/ensemble.py [--quick] [--repeats N] [--join-znodes N] [--scenarios NAMES] [--out DIR]

Both ensembles run on loopback with the same zoo.cfg settings (tickTime=2000,
initLimit=10, syncLimit=5, forceSync on, no per-IP connection cap); ZooKeeper's
members as its operators start them (log4j at INFO, -Xms2g -Xmx2g each). For each
ensemble in turn: 10,000 keys of 100 bytes, a discarded 30 s warm-up of reads and
writes (ZooKeeper's JIT: its write rate climbs for that long), then
`--repeats` runs of
- write: setData, 64 sessions x 16 in flight, sessions spread over the members;
- read: getData, 64 x 16, spread over the members;
- one writer: setData, 1 session, 1 in flight (its p50 is the latency of a quorum write);
- failover after kill -9 of the leader: from the kill to the first setData a member
  acknowledges (one prober per surviving member, each connecting and writing in a loop);
  the killed member is started again and rejoins;
- failover after SIGSTOP of the leader (hung, not dead: noticed after syncLimit x tickTime);
then one member is stopped, its data wiped, and the time it takes to join and serve
with `--join-znodes` znodes (default 1,000,000) in the tree is measured. `--scenarios` runs
some of these (comma-separated: write, read, one-writer, failover-kill, failover-stop,
join), e.g. `--scenarios write --repeats 7` to see where ZooKeeper's write rate settles.

Prints medians and ringkeeper/ZooKeeper ratios and writes results.json and summary.md
to bench/results/ensemble-<time>/.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from harness import REPO, Hosts, bench, get_data_raw, machine, populate, raise_nofile

sys.path.insert(0, str(REPO / "tests" / "python"))
import rawzk  # noqa: E402
import servers  # noqa: E402
from zk_ensemble import ZkEnsemble  # noqa: E402

KEYS = 10_000
SETTINGS = {"tickTime": "2000", "initLimit": "10", "syncLimit": "5", "maxClientCnxns": "0"}
PROBE = "/bench-probe"


class RingkeeperEnsemble:
    kind = "ringkeeper"

    def __init__(self):
        self.members = servers.start_ringkeeper_ensemble(3, extra=dict(SETTINGS, forceSync="yes"))
        self.ports = [m.port for m in self.members]

    def pid(self, i):
        return self.members[i].proc.pid

    def mode(self, i):
        return servers.member_mode(self.members[i])

    def kill(self, i):
        self.members[i].kill()

    def start(self, i):
        self.members[i].proc = self.members[i].launch(wait=False)

    def wipe(self, i):
        d = self.members[i].data_dir
        myid = (d / "myid").read_text()
        shutil.rmtree(d)
        d.mkdir()
        (d / "myid").write_text(myid)

    def stop(self):
        self.members.stop()


class ZookeeperEnsemble:
    kind = "zookeeper"

    def __init__(self):
        cfg = {k: v for k, v in SETTINGS.items() if k not in ("tickTime", "initLimit", "syncLimit")}
        self.ens = ZkEnsemble(3, tick_ms=int(SETTINGS["tickTime"]), heap="2g", cfg=cfg)
        self.ens.start_all()
        self.ens.wait_serving(timeout=120)
        self.ports = [self.ens.client_port[i] for i in self.ens.ids]

    def pid(self, i):
        return self.ens.procs[i + 1].pid

    def mode(self, i):
        return self.ens.mode(i + 1)

    def kill(self, i):
        self.ens.kill(i + 1)

    def start(self, i):
        self.ens.start(i + 1)

    def wipe(self, i):
        self.ens.wipe(i + 1)

    def stop(self):
        self.ens.stop()


def leader_index(ens, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        modes = [ens.mode(i) for i in range(3)]
        if modes.count("leader") == 1 and all(m in ("leader", "follower") for m in modes):
            return modes.index("leader")
        time.sleep(0.05)
    raise SystemExit(f"{ens.kind}: no settled ensemble within {timeout}s: {modes}")


def raw_set(port, path, timeout):
    """Connects, starts a session, sets `path`; raises OSError unless acknowledged."""
    c = rawzk.RawClient(port, timeout_ms=30000, socket_timeout_s=timeout)
    try:
        err = c.set_data(path, b"x")
    finally:
        c.close()
    if err != 0:
        raise OSError(f"setData {path}: error {err}")


def failover_seconds(ens, fault):
    """Applies `fault` ("kill" or "stop") to the leader; seconds until a surviving
    member acknowledges a setData. The leader is then brought back and the ensemble
    settles again."""
    leader = leader_index(ens)
    rest = [i for i in range(3) if i != leader]
    done = threading.Event()
    first = []

    def probe(i):
        while not done.is_set():
            try:
                raw_set(ens.ports[i], PROBE, timeout=2.0)
                first.append(time.perf_counter())
                done.set()
            except OSError:
                time.sleep(0.002)

    pid = ens.pid(leader)
    t0 = time.perf_counter()
    if fault == "kill":
        ens.kill(leader)
    else:
        os.kill(pid, signal.SIGSTOP)
    threads = [threading.Thread(target=probe, args=(i,), daemon=True) for i in rest]
    for t in threads:
        t.start()
    done.wait(120)
    for t in threads:
        t.join(5)
    if fault == "kill":
        ens.start(leader)
    else:
        os.kill(pid, signal.SIGCONT)
    if not first:
        raise SystemExit(f"{ens.kind}: no write acknowledged within 120 s after the leader's {fault}")
    leader_index(ens)
    return min(first) - t0


def join_seconds(ens, znodes):
    """Stops a follower, wipes its data, starts it: seconds until it follows and
    answers a read of the newest znode."""
    leader = leader_index(ens)
    f = next(i for i in range(3) if i != leader)
    ens.kill(f)
    ens.wipe(f)
    last = f"/bench-join/k{znodes - 1:010d}"
    t0 = time.perf_counter()
    ens.start(f)
    while time.perf_counter() - t0 < 900:
        if ens.mode(f) == "follower":
            try:
                if read_ok(ens.ports[f], last):
                    return time.perf_counter() - t0
            except OSError:
                pass
        time.sleep(0.01)
    raise SystemExit(f"{ens.kind}: the wiped member did not serve within 900 s")


def read_ok(port, path):
    get_data_raw(port, path)
    return True


SCENARIOS = ("write", "read", "one-writer", "failover-kill", "failover-stop", "join")


def run(ens_class, repeats, quick, join_znodes, only=SCENARIOS):
    d = ["--duration", "2" if quick else "5", "--warmup", "0.5" if quick else "1"]
    common = ["--keys", str(KEYS), "--value-size", "100", "--threads", "1"] + d
    print(f"{ens_class.kind}: starting the ensemble", flush=True)
    ens = ens_class()
    out = {}
    try:
        leader = leader_index(ens)
        everyone = Hosts(ens.ports)
        populate(Hosts([ens.ports[leader]]), KEYS)
        raw_set_create(ens.ports[leader])
        # Warm-up, discarded (ZooKeeper's JIT): reads and writes through every member.
        # ZooKeeper's write rate here climbs for about half a minute of writes (7 runs
        # after a 6 s warm-up: 10,023 14,863 26,000 23,521 30,486 34,953 35,788/s),
        # so the warm-up lasts that long.
        warm = ["--duration", "2" if quick else "30", "--warmup", "0"]
        bench("run", everyone, ["--sessions", "64", "--depth", "16", "--mix", "get=20,set=80"]
              + common[:6] + warm)
        table = {
            "write": ["--sessions", "64", "--depth", "16", "--mix", "set=100"],
            "read": ["--sessions", "64", "--depth", "16", "--mix", "get=100"],
            "one-writer": ["--sessions", "1", "--depth", "1", "--mix", "set=100"],
        }
        for name, args in table.items():
            if name not in only:
                continue
            out[name] = [bench("run", everyone, args + common) for _ in range(repeats)]
            tp = [r["ops_per_s"] for r in out[name]]
            print(f"  {name}: {statistics.median(tp):,.0f} ops/s (runs {', '.join(f'{x:,.0f}' for x in tp)}),"
                  f" p50 {statistics.median(r['latency_us']['p50'] for r in out[name]):.0f} us", flush=True)
        for fault in ("kill", "stop"):
            if f"failover-{fault}" not in only:
                continue
            secs = [failover_seconds(ens, fault) for _ in range(repeats)]
            out[f"failover-{fault}"] = secs
            print(f"  writes resume after {fault} of the leader: {', '.join(f'{s:.3f}' for s in secs)} s", flush=True)
        if "join" not in only:
            return out
        leader = leader_index(ens)
        t = time.time()
        bench("populate", Hosts([ens.ports[leader]]),
              ["--keys", str(join_znodes), "--value-size", "100", "--prefix", "/bench-join"], timeout=3600)
        print(f"  {join_znodes:,} znodes loaded in {time.time() - t:.0f} s", flush=True)
        out["join"] = [join_seconds(ens, join_znodes)]
        print(f"  a wiped member joins and serves in {out['join'][0]:.2f} s", flush=True)
    finally:
        ens.stop()
    return out


def raw_set_create(port):
    """Creates the probe node the failover probes write to."""
    c = rawzk.RawClient(port, timeout_ms=30000, socket_timeout_s=5)
    try:
        err, _ = c.create(PROBE, b"")
    finally:
        c.close()
    if err != 0:
        raise SystemExit(f"cannot create {PROBE}: error {err}")


def med(xs):
    return statistics.median(xs)


def summary(results):
    rk, zk = results["ringkeeper"], results["zookeeper"]
    rows = []
    for name, goal in (("write", "3x"), ("read", "")):
        if name not in rk:
            continue
        a, b = med([r["ops_per_s"] for r in rk[name]]), med([r["ops_per_s"] for r in zk[name]])
        rows.append((f"{name} (ops/s, 64 x 16 over 3 members)", f"{a:,.0f}", f"{b:,.0f}", f"{a / b:.2f}x", goal))
    if "one-writer" in rk:
        a = med([r["latency_us"]["p50"] for r in rk["one-writer"]])
        b = med([r["latency_us"]["p50"] for r in zk["one-writer"]])
        rows.append(("one writer's setData p50 (us)", f"{a:.0f}", f"{b:.0f}", f"{b / a:.2f}x faster", ""))
    for fault, goal in (("kill", "< 0.45 s"), ("stop", "")):
        if f"failover-{fault}" not in rk:
            continue
        a, b = med(rk[f"failover-{fault}"]), med(zk[f"failover-{fault}"])
        rows.append((f"writes resume after {'kill -9' if fault == 'kill' else 'SIGSTOP'} of the leader (s)",
                     f"{a:.3f}", f"{b:.3f}", f"{b / a:.2f}x faster", goal))
    if "join" not in rk:
        return "\n".join(md_rows(rows))
    a, b = rk["join"][0], zk["join"][0]
    rows.append((f"a wiped member joins and serves at {results['join_znodes']:,} znodes (s)",
                 f"{a:.2f}", f"{b:.2f}", f"{b / a:.2f}x faster", ""))
    return "\n".join(md_rows(rows))


def md_rows(rows):
    md = ["| | ringkeeper | ZooKeeper | ratio | goal |", "|---|---:|---:|---:|---|"]
    return md + [f"| {' | '.join(r)} |" for r in rows]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short runs, one repeat, a small join")
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--join-znodes", type=int)
    ap.add_argument("--scenarios", help="comma-separated scenarios: " + ", ".join(SCENARIOS))
    ap.add_argument("--out")
    ap.add_argument("--no-build", action="store_true")
    a = ap.parse_args()
    only = tuple(x.strip() for x in a.scenarios.split(",")) if a.scenarios else SCENARIOS
    unknown = [x for x in only if x not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario(s) {', '.join(unknown)}: choose from {', '.join(SCENARIOS)}")
    t0 = time.time()
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "--workspace", "--quiet"], cwd=REPO, check=True)
    raise_nofile()
    repeats = a.repeats or (1 if a.quick else 3)
    join_znodes = a.join_znodes or (20_000 if a.quick else 1_000_000)
    results = {"machine": machine(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "command": " ".join(["python3", "bench/ensemble.py"] + sys.argv[1:]), "repeats": repeats,
               "scenarios": list(only), "settings": SETTINGS, "join_znodes": join_znodes}
    print(f"machine: {results['machine']}", flush=True)
    for cls in (ZookeeperEnsemble, RingkeeperEnsemble):
        results[cls.kind] = run(cls, repeats, a.quick, join_znodes, only)
    results["elapsed_s"] = round(time.time() - t0, 1)
    md = summary(results)
    print("\n" + md)
    out = Path(a.out) if a.out else REPO / "bench" / "results" / f"ensemble-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "summary.md").write_text(
        f"# 3-member ringkeeper vs 3-member Apache ZooKeeper 3.8\n\n`{results['command']}` on "
        f"{results['machine']['cpus']} x {results['machine']['cpu']}, {results['when']}, "
        f"{results['elapsed_s']} s; medians of {repeats} runs\n\n{md}\n")
    print(f"\nwrote {out}/results.json and summary.md in {results['elapsed_s']} s")


if __name__ == "__main__":
    main()
