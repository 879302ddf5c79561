"""Soak: one server holds many sessions under mixed load for a long time while
clients connect and disconnect around them. Memory must stay flat, no held session
may be lost, and latency must stay put.

    python3 bench/soak.py [--minutes 30] [--sessions 20000] [--rate 2000] [--server ringkeeper|zookeeper]

Three kinds of clients run at once, all on loopback:
- the holders: one `ringkeeper-bench run` with --sessions sessions, an open-loop
  mixed load at --rate ops/s (getData, exists, getChildren, setData: the tree keeps
  its size, so memory has no reason to grow), for the whole run; at the end it
  reports every session it lost;
- the churn: sessions that come and go all the time, each creating an ephemeral node
  and then either closing or vanishing (socket closed, left to expire after 4 s):
  creates, session closes and expiries all the time; afterwards no churn ephemeral
  may be left;
- the probe: a short `ringkeeper-bench run` of 8 sessions at 400 ops/s, run back to
  back, so each window has its own latency percentiles.
Every 10 s the server's RSS and its mntr figures are sampled. The result directory
(bench/results/soak-<time>) gets samples.json, summary.json and soak.png (RSS and
probe p99 over time; needs matplotlib).
"""

import argparse
import json
import random
import threading
import time
from pathlib import Path

import harness
from harness import REPO, bench, machine, rss

CHURN_PARENT = "/soak-churn"


def mntr(server):
    out = {}
    for line in server.four("mntr").splitlines():
        k, _, v = line.partition("\t")
        try:
            out[k] = float(v)
        except ValueError:
            pass
    return out


class Churn(threading.Thread):
    """Sessions that come and go: each connects, creates an ephemeral, reads it back,
    then closes its session or drops its connection (the session then expires)."""

    def __init__(self, port, stop, per_s=20):
        super().__init__(daemon=True)
        self.port, self.stop, self.per_s = port, stop, per_s
        self.made = self.closed = self.dropped = 0
        self.errors = []

    def run(self):
        rng = random.Random(7)
        n = 0
        while not self.stop.is_set():
            t = time.time()
            try:
                c = harness.rawzk.RawClient(self.port, timeout_ms=4000, socket_timeout_s=10)
                path = f"{CHURN_PARENT}/e{n}"
                err, _ = c.create(path, b"x" * 64, flags=1)
                if err != 0:
                    self.errors.append(f"create {path}: {err}")
                elif c.get_data(path) != (0, b"x" * 64):
                    self.errors.append(f"getData {path} after its create")
                self.made += 1
                if rng.random() < 0.5:
                    c.close_session()
                    self.closed += 1
                else:
                    c.close()
                    self.dropped += 1
            except OSError as e:
                self.errors.append(f"session {n}: {e}")
            n += 1
            time.sleep(max(0.0, 1.0 / self.per_s - (time.time() - t)))


def probe_windows(server, stop, out):
    while not stop.is_set():
        r = bench("run", server, ["--sessions", "8", "--depth", "1", "--rate", "400", "--mix", "get=90,set=10",
                                  "--keys", "1000", "--duration", "20", "--warmup", "0", "--threads", "1"],
                  timeout=300)
        lat = r["latency_us"]
        out.append({"t": time.time(), "p50_us": lat["p50"], "p99_us": lat["p99"], "p999_us": lat["p999"],
                    "max_us": lat["max"], "ops": r["ops"], "errors": r["errors"]})


def plot(samples, probes, t0, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("soak: no matplotlib (pip install matplotlib): no plot")
        return
    fig, (a, b) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    a.plot([(s["t"] - t0) / 60 for s in samples], [s["rss"] / 2**20 for s in samples])
    a.set_ylabel("server RSS (MiB)")
    a.set_ylim(bottom=0)
    a2 = a.twinx()
    a2.plot([(s["t"] - t0) / 60 for s in samples], [s.get("zk_num_alive_connections", 0) for s in samples],
            color="tab:gray", linestyle=":")
    a2.set_ylabel("connections")
    a2.set_ylim(bottom=0)
    xs = [(p["t"] - t0) / 60 for p in probes]
    b.plot(xs, [p["p99_us"] / 1000 for p in probes], label="probe p99")
    b.plot(xs, [p["p999_us"] / 1000 for p in probes], label="probe p99.9", alpha=0.6)
    # The server's own view (ZooKeeper's mntr key, over its last minute), where it has it.
    sx = [(s["t"] - t0) / 60 for s in samples if "zk_p99_updatelatency" in s]
    if sx:
        b.plot(sx, [s["zk_p99_updatelatency"] for s in samples if "zk_p99_updatelatency" in s],
               label="server update p99 (mntr)", linestyle="--")
    b.set_ylabel("latency (ms)")
    b.set_xlabel("minutes")
    b.set_ylim(bottom=0)
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--sessions", type=int, default=20000)
    ap.add_argument("--rate", type=float, default=2000)
    ap.add_argument("--server", default="ringkeeper", choices=["ringkeeper", "zookeeper"])
    args = ap.parse_args()
    nofile = harness.raise_nofile()
    if nofile < args.sessions + 300:
        raise SystemExit(f"soak: descriptor limit {nofile} is below {args.sessions} sessions")
    out_dir = REPO / "bench" / "results" / time.strftime("soak-%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True)
    server = harness.start(args.server, {"snapCount": "100000"})
    try:
        harness.populate(server, 1000)
        c = harness.rawzk.RawClient(server.port)
        assert c.create(CHURN_PARENT)[0] == 0
        c.close()
        stop = threading.Event()
        duration = args.minutes * 60
        holders = {}

        def hold():
            holders["report"] = bench(
                "run", server,
                ["--sessions", str(args.sessions), "--depth", "1", "--rate", str(args.rate),
                 "--mix", "get=80,exists=4,children=2,set=14", "--keys", "1000",
                 "--duration", str(duration), "--warmup", "5", "--timeout", "30000",
                 "--connect-concurrency", "64"],
                timeout=duration + 900)

        holder = threading.Thread(target=hold, daemon=True)
        holder.start()
        # Wait for the holders to be connected before the clock starts.
        deadline = time.time() + 600
        while time.time() < deadline and mntr(server).get("zk_num_alive_connections", 0) < args.sessions:
            time.sleep(1)
        t0 = time.time()
        churn = Churn(server.port, stop)
        churn.start()
        probes = []
        prober = threading.Thread(target=probe_windows, args=(server, stop, probes), daemon=True)
        prober.start()
        samples = []
        while time.time() - t0 < duration and holder.is_alive():
            m = mntr(server)
            samples.append({"t": time.time(), "rss": rss(server.proc.pid)["VmRSS"], **m})
            time.sleep(10)
        stop.set()
        holder.join()
        churn.join()
        prober.join()
        # Dropped churn sessions expire 4 s after their last ping.
        time.sleep(8)
        c = harness.rawzk.RawClient(server.port)
        err, left = c.children(CHURN_PARENT)
        c.close()
        report = holders["report"]
        # Windows that ended after the steady load: the last one overlaps the holders
        # closing their sessions all at once (one closeSession txn each).
        steady = [p for p in probes if p["t"] <= t0 + duration]
        rs = [s["rss"] for s in samples]
        first_min = [s["rss"] for s in samples if s["t"] - t0 <= 120]
        last_min = [s["rss"] for s in samples if s["t"] - t0 >= duration - 120]
        p99s = sorted(p["p99_us"] for p in steady)
        summary = {
            "machine": machine(),
            "server": args.server,
            "minutes": args.minutes,
            "held_sessions": args.sessions,
            "rate": args.rate,
            "holders": {k: report[k] for k in ("sessions_ready", "sessions_lost", "sessions_failed", "ops",
                                               "ops_per_s", "errors", "latency_us")},
            "churn": {"sessions": churn.made, "closed": churn.closed, "dropped": churn.dropped,
                      "errors": churn.errors[:20], "error_count": len(churn.errors),
                      "ephemerals_left": len(left) if err == 0 else f"error {err}"},
            "rss_mib": {"first_2_min_max": max(first_min) / 2**20, "last_2_min_max": max(last_min) / 2**20,
                        "min": min(rs) / 2**20, "max": max(rs) / 2**20},
            "probe_p99_us": {"windows": len(p99s), "min": p99s[0], "median": p99s[len(p99s) // 2], "max": p99s[-1],
                             "first_3": [p["p99_us"] for p in steady[:3]], "last_3": [p["p99_us"] for p in steady[-3:]]},
            "probe_p999_us_max": max(p["p999_us"] for p in steady),
            "after_the_steady_load": [{k: p[k] for k in ("p99_us", "p999_us", "max_us")} for p in probes
                                      if p not in steady],
        }
        (out_dir / "samples.json").write_text(json.dumps({"t0": t0, "samples": samples, "probes": probes}, indent=1))
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        plot(samples, steady, t0, out_dir / "soak.png")
        print(json.dumps(summary, indent=2))
        print(f"soak: results in {out_dir}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
