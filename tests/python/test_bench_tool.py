"""ringkeeper-bench checked against a real server: its counts add up with what the server
holds afterwards, its latency accounting is right when replies are delayed by a known
amount (a delaying proxy), the open loop charges a stall to the requests it delayed,
and the scenarios do what they say. Also a smoke run of bench/compare.py."""

import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import servers

BENCH = Path(servers.RINGKEEPER_BIN).parent / "ringkeeper-bench"


def bench(*args, ok=True):
    p = subprocess.run([str(BENCH), *args], capture_output=True, text=True, timeout=180)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def bench_json(*args):
    return json.loads(bench(*args, "--json", "--quiet").stdout.strip().splitlines()[-1])


def mntr(server):
    return dict(l.split("\t", 1) for l in server.four("mntr").splitlines() if "\t" in l)


@pytest.fixture(scope="module")
def big():
    """A server without the per-IP connection cap, for scenarios with many sessions."""
    s = servers.start_ringkeeper({"maxClientCnxns": "0"})
    yield s
    s.stop()


def test_counts_add_up_against_a_real_server(rk):
    bench("populate", "--addr", rk.hosts, "--keys", "200", "--value-size", "10")
    before = int(mntr(rk)["zk_packets_received"])
    r = bench_json("run", "--addr", rk.hosts, "--sessions", "2", "--depth", "4", "--mix", "get=80,set=20",
                   "--keys", "200", "--value-size", "10", "--duration", "1.5", "--warmup", "0.5")
    after = int(mntr(rk)["zk_packets_received"])
    assert r["errors"] == {} and r["ops"] > 100
    assert abs(r["ops_per_s"] * r["window_s"] - r["ops"]) <= max(1, r["ops"] / 1000)  # rounding of window_s
    assert r["by_op"]["get"]["ops"] + r["by_op"]["set"]["ops"] == r["ops"]
    # Everything the bench measured reached the server; the server also saw the warm-up,
    # the drain and each session's closeSession.
    assert after - before >= r["ops"]
    lat = r["latency_us"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["max"]


def test_populate_makes_exactly_the_key_space_and_is_idempotent(rk, client):
    r = bench_json("populate", "--addr", rk.hosts, "--keys", "301", "--value-size", "7",
                   "--sessions", "3", "--prefix", "/pop/a")
    assert r["ops"] == 301 and r["errors"] == {} and r["existed"] == 0
    kids = client.get_children("/pop/a")
    assert len(kids) == 301 and "k0000000300" in kids
    assert client.get("/pop/a/k0000000123")[0] == b"v" * 7
    again = bench_json("populate", "--addr", rk.hosts, "--keys", "301", "--value-size", "7", "--prefix", "/pop/a")
    assert again["existed"] == 301 and again["failed"] == 0


def test_creates_and_deletes_leave_what_the_counts_say(rk, client):
    """With no warm-up every request counts: persistent nodes left = creates - deletes."""
    r = bench_json("run", "--addr", rk.hosts, "--sessions", "3", "--depth", "8", "--mix", "create=3,delete=2",
                   "--duration", "1", "--warmup", "0")
    assert r["errors"] == {}
    made, gone = r["by_op"]["create"]["ops"], r["by_op"]["delete"]["ops"]
    assert made > gone > 50
    # Names carry the run's id: other runs' nodes are not counted.
    ours = [c for c in client.get_children("/bench-tmp") if c.startswith(f"r{r['run_id']}-")]
    assert len(ours) == made - gone, (made, gone, len(ours))


def test_every_op_of_the_mix_runs_without_error(rk):
    bench("populate", "--addr", rk.hosts, "--keys", "100", "--value-size", "10")
    r = bench_json("run", "--addr", rk.hosts, "--sessions", "2", "--depth", "4", "--keys", "100",
                   "--mix", "get=1,exists=1,children=1,set=1,create=1,ephemeral=1,sequential=1,delete=1,multi=1",
                   "--dist", "zipf", "--duration", "1", "--warmup", "0.2")
    assert r["errors"] == {}
    assert set(r["by_op"]) == {"get", "exists", "children", "set", "create", "ephemeral", "sequential",
                               "delete", "multi"}


def test_an_op_budget_is_met_exactly(rk):
    bench("populate", "--addr", rk.hosts, "--keys", "100", "--value-size", "10")
    r = bench_json("run", "--addr", rk.hosts, "--sessions", "4", "--depth", "4", "--keys", "100",
                   "--ops", "5000", "--duration", "60", "--warmup", "0")
    assert r["ops"] == 5000 and r["window_s"] < 30


def test_bad_arguments_are_named():
    p = bench("run", "--mix", "get=1,fly=2", ok=False)
    assert p.returncode != 0 and "unknown op \"fly\"" in p.stderr
    p = bench("run", "--sesions", "3", ok=False)
    assert p.returncode != 0 and "--sesions" in p.stderr
    p = bench("run", "--addr", "127.0.0.1:1", "--duration", "0.1", "--warmup", "0", ok=False)
    assert p.returncode != 0 and "could not connect" in p.stderr


class DelayProxy:
    """Forwards one port to another, holding every server->client chunk for delay_s."""

    def __init__(self, target_port, delay_s):
        self.delay_s = delay_s
        self.target = target_port
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pipe, args=(client, upstream, 0), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, self.delay_s), daemon=True).start()

    def _pipe(self, src, dst, delay):
        """Copies src to dst; with a delay, each chunk leaves delay seconds after it
        arrived, in order (a sender thread drains a queue of timestamped chunks)."""
        q = queue.Queue()

        def sender():
            while True:
                item = q.get()
                if item is None:
                    return
                due, data = item
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                try:
                    dst.sendall(data)
                except OSError:
                    return

        threading.Thread(target=sender, daemon=True).start()
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                q.put((time.monotonic() + delay, data))
        except OSError:
            pass
        q.put(None)

    def close(self):
        self.sock.close()


def test_latency_includes_a_known_reply_delay(rk):
    bench("populate", "--addr", rk.hosts, "--keys", "50", "--value-size", "10")
    proxy = DelayProxy(rk.port, 0.030)
    try:
        r = bench_json("run", "--addr", f"127.0.0.1:{proxy.port}", "--sessions", "1", "--depth", "1",
                       "--mix", "get=100", "--keys", "50", "--duration", "1.5", "--warmup", "0.3")
    finally:
        proxy.close()
    lat, ops, window = r["latency_us"], r["ops"], r["window_s"]
    # Bounds that follow from the setup, however loaded the machine: every reply is
    # held 30 ms, so no latency is shorter; with one request in flight the latencies
    # add up to at most the window (plus the one that straddles its end), and at
    # most one request completes per 30 ms.
    assert ops >= 5, r
    assert lat["p50"] >= 30_000 * 0.99 and lat["mean"] >= 30_000 * 0.99, lat
    assert ops * lat["mean"] / 1e6 <= window + lat["max"] / 1e6, (ops, lat, window)
    assert ops <= window / 0.030 + 1, r


def test_open_loop_paces_and_charges_a_stall_to_the_requests_it_delayed(rk):
    bench("populate", "--addr", rk.hosts, "--keys", "50", "--value-size", "10")
    # A fast server: the offered rate is what gets done.
    r = bench_json("run", "--addr", rk.hosts, "--sessions", "2", "--depth", "4", "--mix", "get=100",
                   "--keys", "50", "--rate", "400", "--duration", "2", "--warmup", "0.2")
    # 400/s offered for the window: no more is sent than that (plus what 8 slots
    # can hold at its edges), and everything sent before the window's end less the
    # slowest answer was answered within it.
    ops, window, slowest = r["ops"], r["window_s"], r["latency_us"]["max"] / 1e6
    assert ops <= 400 * window + 8, r
    assert ops >= 400 * (window - slowest) - 8, r
    # Replies delayed 30 ms with one request in flight: at most 33/s can be done of
    # 100/s offered, so requests wait for their turn, and that wait is latency (a
    # closed loop would report ~30 ms and hide it).
    proxy = DelayProxy(rk.port, 0.030)
    try:
        r = bench_json("run", "--addr", f"127.0.0.1:{proxy.port}", "--sessions", "1", "--depth", "1",
                       "--mix", "get=100", "--keys", "50", "--rate", "100", "--duration", "2", "--warmup", "0")
    finally:
        proxy.close()
    # The k-th request is due at k x 10 ms and answered no sooner than k x 30 ms: it
    # waited at least k x 20 ms, which the open loop must count.
    lat, ops = r["latency_us"], r["ops"]
    assert ops >= 10, r
    assert lat["max"] >= 20_000 * (ops - 1) * 0.99, (ops, lat)
    assert lat["p50"] >= 20_000 * (ops // 2 - 1) * 0.99, (ops, lat)


def test_locks_every_acquisition_is_released_and_nothing_is_left(big):
    r = bench_json("locks", "--addr", big.hosts, "--sessions", "12", "--locks", "3",
                   "--duration", "1.5", "--warmup", "0")
    # The only error: a predecessor gone before its exists (the recipe lists again).
    assert set(r["errors"]) <= {"-101"}
    assert r["errors"] == r["by_op"]["exists"]["errors"]
    acq = r["by_op"]["acquire"]["ops"]
    assert acq > 50 and r["acquisitions"] == acq
    # Each acquisition is followed by its delete; creates never outnumber them by more
    # than the contenders waiting when the run stopped.
    assert acq - 12 <= r["by_op"]["delete"]["ops"] <= acq
    assert acq <= r["by_op"]["create"]["ops"] <= acq + 12
    from kazoo.client import KazooClient
    c = KazooClient(hosts=big.hosts)
    c.start(timeout=10)
    try:
        for j in range(3):
            assert c.get_children(f"/bench-locks/lock-{j:04}") == []
    finally:
        c.stop()


def test_fanout_every_watcher_is_notified_each_round(big):
    r = bench_json("fanout", "--addr", big.hosts, "--sessions", "101", "--duration", "1.5", "--warmup", "0")
    rounds = r["rounds"]
    assert rounds >= 3 and r["watchers"] == 100
    assert r["by_op"]["last_notify"]["ops"] == rounds
    assert r["by_op"]["notify"]["ops"] == 100 * rounds
    # The round in progress when the window closed has its setData counted, not
    # its notifications.
    assert r["by_op"]["set"]["ops"] in (rounds, rounds + 1)
    assert r["by_op"]["last_notify"]["latency_us"]["p50"] >= r["by_op"]["notify"]["latency_us"]["p50"]


def test_fanout_floor_delivers_every_frame_each_round():
    """The machine's floor for the fan-out: every connection gets its one frame each
    measured round, and the last arrival is the round's slowest."""
    r = bench_json("fanout-floor", "--sessions", "101", "--duration", "1", "--warmup", "0.2")
    rounds = r["rounds"]
    assert rounds >= 10
    assert r["by_op"]["last_notify"]["ops"] == rounds
    assert r["by_op"]["notify"]["ops"] == 100 * rounds
    last, each = r["by_op"]["last_notify"]["latency_us"], r["by_op"]["notify"]["latency_us"]
    assert last["p50"] >= each["p50"] and last["max"] == each["max"]


def test_discovery_readers_see_churn(big):
    r = bench_json("discovery", "--addr", big.hosts, "--sessions", "24", "--services", "5", "--instances", "4",
                   "--registrars", "2", "--churn", "40", "--duration", "2", "--warmup", "0.5")
    # A reader may pick an instance deregistered before its getData: NONODE, nothing else.
    assert set(r["errors"]) <= {"-101"}
    assert r["by_op"]["children"]["ops"] > 100 and r["by_op"]["get"]["ops"] > 100
    # The registrars churned. How often is the machine's speed, not the tool's
    # behaviour: the nominal 40/s gave 38 in 2 s in a CI run on a loaded 2-core VM,
    # where this asked for 40 (a rate asserted in a functional test).
    assert r["by_op"]["deregister"]["ops"] >= 2
    assert r["notifications"] > 0


def test_storm_connects_and_closes_every_session(big):
    before = int(mntr(big)["zk_num_alive_connections"])
    r = bench_json("storm", "--addr", big.hosts, "--sessions", "600", "--connect-concurrency", "64")
    assert r["errors"] == {} and r["ops"] == 600 and r["sessions_ready"] == 600
    assert r["by_op"]["close"]["ops"] == 600
    assert servers.wait_for(lambda: int(mntr(big)["zk_num_alive_connections"]) <= before)


def test_storage_bench_runs_end_to_end(tmp_path):
    """The storage benchmark, cut down: group commit and restart on both servers."""
    repo = Path(__file__).resolve().parents[2]
    p = subprocess.run([sys.executable, str(repo / "bench" / "storage_bench.py"), "--quick",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    (out,) = tmp_path.glob("storage-*.json")
    res = json.loads(out.read_text())
    for kind in ("zookeeper", "ringkeeper"):
        rows = res["group_commit"][kind]
        assert [r["writers"] for r in rows] == [1, 16, 64]
        assert all(r["txns_per_s"] > 0 and r["fsyncs_per_s"] > 0 for r in rows)
        (restart,) = res["restart"][kind]
        assert restart["znodes"] == 20000 and len(restart["restart_s"]) == 2
        assert len(restart["restart_no_log_s"]) == (2 if kind == "ringkeeper" else 0)


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping the page cache needs root (CI runs as root)")
def test_restart_cold_splits_a_restart_by_the_recovery_line():
    """The cold-cache restart script, cut down: ringkeeper only, one warm and one cold
    restart, each with its recovery line's parts."""
    repo = Path(__file__).resolve().parents[2]
    p = subprocess.run([sys.executable, str(repo / "bench" / "restart_cold.py"), "--znodes", "20000",
                        "--rounds", "1", "--servers", "ringkeeper"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    out = Path(p.stdout.strip().splitlines()[-1].split(": ", 1)[1])
    try:
        res = json.loads(out.read_text())
    finally:
        out.unlink()
    rs = res["ringkeeper"]["restarts"]
    assert [r["cold"] for r in rs] == [False, True]
    for r in rs:
        assert r["znodes"] >= 20000
        assert 0 <= r["snapshot_load_ms"] <= r["recovery_ms"] <= r["restart_s"] * 1000


def test_compare_runs_end_to_end(tmp_path):
    """The comparison command itself, cut down: both servers, a few scenarios, the
    table, JSON and picture written."""
    repo = Path(__file__).resolve().parents[2]
    p = subprocess.run([sys.executable, str(repo / "bench" / "compare.py"), "--quick", "--no-build",
                        "--scenarios", "read,locks,memory,restart", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    res = json.loads((tmp_path / "results.json").read_text())
    metrics = {(r["scenario"], r["metric"]) for r in res["ratios"]}
    assert ("read", "reads/s") in metrics and ("restart", "restart s") in metrics
    assert ("locks", "acquires/s") in metrics and ("memory", "RSS bytes/znode") in metrics
    for r in res["ratios"]:
        assert r["zookeeper"] > 0 and r["ringkeeper"] > 0
    assert (tmp_path / "compare.svg").read_text().startswith("<svg")
    assert "| read | reads/s" in (tmp_path / "summary.md").read_text()
