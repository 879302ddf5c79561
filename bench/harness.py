"""Helpers shared by the benchmark scripts: starting either server the same way,
running ringkeeper-bench, restart timing and RSS."""

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "python"))
import rawzk  # noqa: E402
import servers  # noqa: E402

BENCH = REPO / "target" / "release" / "ringkeeper-bench"


def raise_nofile():
    """Lifts this process's descriptor limit as far as allowed; servers started from
    here inherit it (Java's ZooKeeper has no way to raise its own)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
        resource.setrlimit(resource.RLIMIT_NOFILE, (nr_open, nr_open))
    except (OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def start(kind, extra=None, heap="2g"):
    """ZooKeeper as its operators run it (log4j INFO, fixed heap, forceSync on) or
    ringkeeper with the same settings; no per-IP connection cap for the benchmark."""
    extra = dict(extra or {}, maxClientCnxns="0")
    if kind == "zookeeper":
        return servers.start_zookeeper(extra, heap=heap)
    return servers.start_ringkeeper(extra)


def run_bench(command, args, timeout=900):
    """Runs `ringkeeper-bench <command> ... --json --quiet`; returns its JSON, with the
    load generator's own CPU time (user + system) and wall time over the whole run:
    on the same cores as the server, they say how much of the machine the client took."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    p = subprocess.run([str(BENCH), command, "--json", "--quiet"] + args,
                       capture_output=True, text=True, timeout=timeout)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode:
        raise SystemExit(f"ringkeeper-bench {command} {' '.join(args)} failed:\n{p.stderr}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r["client_cpu_s"] = round((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), 3)
    r["wall_s"] = round(time.monotonic() - started, 3)
    return r


class Hosts:
    """What ringkeeper-bench's --addr takes, for a list of client ports."""

    def __init__(self, ports):
        self.hosts = ",".join(f"127.0.0.1:{p}" for p in ports)


def bench(command, server, args, timeout=900):
    """`ringkeeper-bench <command> --addr <server> ...` (see run_bench)."""
    return run_bench(command, ["--addr", server.hosts] + args, timeout)


def fanout_floor(sessions, duration="5", warmup="1"):
    """`ringkeeper-bench fanout-floor`: the fan-out's time on this machine with no
    server (one thread sends the event frame to sessions-1 loopback sockets)."""
    return run_bench("fanout-floor", ["--sessions", str(sessions), "--duration", duration,
                                      "--warmup", warmup], timeout=300)


def populate(server, keys, value_size=100, prefix="/bench"):
    t = time.time()
    bench("populate", server, ["--keys", str(keys), "--value-size", str(value_size), "--prefix", prefix],
          timeout=3600)
    return time.time() - t


def get_data_raw(port, path):
    """One getData over a fresh connection; raises OSError until the server answers."""
    c = rawzk.RawClient(port, timeout_ms=30000, socket_timeout_s=2)
    try:
        err, _ = c.get_data(path)
    finally:
        c.close()
    if err != 0:
        raise OSError(f"getData {path}: error {err}")


def restart_seconds(server, probe_path):
    """kill -9, start again, time until a getData of `probe_path` is answered."""
    server.kill()
    t = time.perf_counter()
    server.proc = server.launch(wait=False)
    deadline = t + 600
    while time.perf_counter() < deadline:
        if server.proc.poll() is not None:
            raise SystemExit(f"{server.kind} exited during restart:\n{server.log_text[-3000:]}")
        try:
            get_data_raw(server.port, probe_path)
            return time.perf_counter() - t
        except OSError:
            time.sleep(0.005)
    raise SystemExit(f"{server.kind} did not come back")


def rss(pid):
    """VmRSS, RssAnon and RssFile of a process, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "RssAnon", "RssFile"):
            out[k] = int(v.split()[0]) * 1024
    return out


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine():
    model = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                  if l.startswith("model name")), "?")
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    return {"host": os.uname().nodename, "cpus": os.cpu_count(), "cpu": model, "mem_mib": mem,
            "kernel": os.uname().release}
