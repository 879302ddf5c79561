"""ringkeeper-bench checked against a real server: its counts add up, and its latency
accounting is right when replies are delayed by a known amount (a delaying proxy)."""

import json
import socket
import subprocess
import threading
import time
from pathlib import Path

import servers

BENCH = Path(servers.RINGKEEPER_BIN).parent / "ringkeeper-bench"


def bench(*args):
    p = subprocess.run([str(BENCH), *args], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p


def test_counts_add_up_against_a_real_server(rk):
    bench("populate", "--addr", rk.hosts, "--keys", "200", "--value-size", "10")
    before = int(dict(l.split("\t", 1) for l in rk.four("mntr").splitlines())["zk_packets_received"])
    r = json.loads(bench("run", "--addr", rk.hosts, "--sessions", "2", "--depth", "4", "--mix",
                         "get=80,set=20", "--keys", "200", "--value-size", "10", "--duration", "1.5",
                         "--warmup", "0.5", "--json").stdout.strip().splitlines()[-1])
    after = int(dict(l.split("\t", 1) for l in rk.four("mntr").splitlines())["zk_packets_received"])
    assert r["errors"] == {} and r["ops"] > 100
    assert abs(r["ops_per_s"] * r["window_s"] - r["ops"]) <= max(1, r["ops"] / 1000)  # rounding of window_s
    # Everything the bench measured reached the server; the server also saw the warm-up,
    # the drain and each session's closeSession.
    assert after - before >= r["ops"]
    lat = r["latency_us"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["max"]


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
        import queue
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

        t = threading.Thread(target=sender, daemon=True)
        t.start()
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
        r = json.loads(bench("run", "--addr", f"127.0.0.1:{proxy.port}", "--sessions", "1", "--depth",
                             "1", "--mix", "get=100", "--keys", "50", "--duration", "1.5", "--warmup",
                             "0.3", "--json").stdout.strip().splitlines()[-1])
    finally:
        proxy.close()
    lat = r["latency_us"]
    assert 30_000 <= lat["p50"] <= 45_000, lat
    # one request in flight, ~30 ms each: about 33 per second
    assert 20 <= r["ops_per_s"] <= 34, r
