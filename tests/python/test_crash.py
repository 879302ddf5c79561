"""Crash tests: sessions write (creates and setData, each recorded when acknowledged)
while the server is killed with SIGKILL at a random moment; after a restart on the same
data every acknowledged write must be there, and nothing appears that was never sent.

RK_CRASH_ROUNDS sets the number of kill/restart rounds (default 20); RK_CRASH_SEED the
random seed. Small snapCount and preAllocSize make snapshots, segment roll-over and
purging happen during the rounds too."""

import os
import random
import threading
import time
import traceback

from rawzk import RawClient
from servers import start_ringkeeper

ROUNDS = int(os.environ.get("RK_CRASH_ROUNDS", "20"))
WRITERS = 8


class Writer(threading.Thread):
    """One session writing until the server goes away. `acked` holds what the server
    confirmed; `inflight` the one request sent without an answer when it died."""

    def __init__(self, port, rnd, t, seed):
        super().__init__(daemon=True)
        self.port, self.rnd, self.t = port, rnd, t
        self.rng = random.Random(seed)
        self.acked_creates = {}
        self.acked_value = None
        self.inflight = None
        self.key = f"/crash/k{t}"
        self.stop = threading.Event()

    def run(self):
        # How the writer ended: "stopped", "connection lost" (the server went away),
        # or a failure (an error reply, anything unexpected) that the test thread
        # reports: an assertion here would only end this thread.
        self.ended = None
        try:
            self._write()
            self.ended = "stopped"
        except (OSError, ConnectionError):
            self.ended = "connection lost"
        except BaseException:  # reported by check()
            self.ended = "failed: " + traceback.format_exc()

    def _write(self):
        c = RawClient(self.port, timeout_ms=4000)
        i = 0
        while not self.stop.is_set():
            i += 1
            if self.rng.random() < 0.5:
                path = f"/crash/r{self.rnd}/w{self.t}-{i}"
                data = f"{self.rnd}:{self.t}:{i}:".encode() * self.rng.randint(1, 40)
                self.inflight = ("create", path, data)
                err, _ = c.create(path, data)
                if err != 0:
                    raise AssertionError(f"create {path}: error {err}")
                self.acked_creates[path] = data
            else:
                value = f"{self.rnd}:{i}".encode()
                self.inflight = ("set", self.key, value)
                err = c.set_data(self.key, value)
                if err != 0:
                    raise AssertionError(f"setData {self.key}: error {err}")
                self.acked_value = value
            self.inflight = None
        c.close()

    def check(self, *allowed):
        """After join: the writer ended one of the `allowed` ways."""
        assert not self.is_alive(), f"writer {self.t} still running"
        assert self.ended in allowed, f"writer {self.t}: {self.ended}"


def test_acknowledged_writes_survive_kill_9():
    seed = int(os.environ.get("RK_CRASH_SEED", str(int(time.time()))))
    rng = random.Random(seed)
    srv = start_ringkeeper({
        "snapCount": "300",
        "preAllocSize": "64",
        "autopurge.purgeInterval": "1",
        "autopurge.snapRetainCount": "3",
    })
    try:
        c = RawClient(srv.port)
        assert c.create("/crash")[0] == 0
        for t in range(WRITERS):
            assert c.create(f"/crash/k{t}", b"initial")[0] == 0
        c.close()
        all_acked = {}
        key_values = {f"/crash/k{t}": {b"initial"} for t in range(WRITERS)}
        last_acked = {f"/crash/k{t}": b"initial" for t in range(WRITERS)}
        total_acked = 0
        for rnd in range(ROUNDS):
            c = RawClient(srv.port)
            assert c.create(f"/crash/r{rnd}")[0] == 0, f"seed {seed} round {rnd}"
            c.close()
            writers = [Writer(srv.port, rnd, t, rng.random()) for t in range(WRITERS)]
            for w in writers:
                w.start()
            time.sleep(rng.uniform(0.05, 0.8))
            srv.kill()
            for w in writers:
                w.join(timeout=30)
                w.check("connection lost")
            srv.restart()
            c = RawClient(srv.port)
            inflight_creates = {w.inflight[1]: w.inflight[2] for w in writers
                                if w.inflight and w.inflight[0] == "create"}
            round_acked = {}
            for w in writers:
                round_acked.update(w.acked_creates)
                if w.acked_value is not None:
                    last_acked[w.key] = w.acked_value
                    key_values[w.key] = {w.acked_value}
                else:
                    key_values[w.key] = {last_acked[w.key]}
                if w.inflight and w.inflight[0] == "set":
                    key_values[w.key].add(w.inflight[2])
            all_acked.update(round_acked)
            total_acked += len(round_acked)
            # Every acknowledged create of this round is there, intact, and so is a
            # sample of the earlier rounds' (all of them in the last round).
            earlier = [p for p in all_acked if p not in round_acked]
            if rnd < ROUNDS - 1 and len(earlier) > 500:
                earlier = rng.sample(earlier, 500)
            for path in list(round_acked) + earlier:
                data = all_acked[path]
                err, got = c.get_data(path)
                assert err == 0, f"seed {seed} round {rnd}: acknowledged {path} lost ({err})"
                assert got == data, f"seed {seed} round {rnd}: {path} has other data"
            # Nothing that was never acknowledged or in flight appears.
            err, kids = c.children(f"/crash/r{rnd}")
            assert err == 0
            for k in kids:
                p = f"/crash/r{rnd}/{k}"
                assert p in round_acked or p in inflight_creates, f"seed {seed} round {rnd}: phantom {p}"
                if p in inflight_creates:
                    all_acked[p] = inflight_creates[p]  # it made it: it must stay
            # Each key holds its last acknowledged value or the one in flight.
            for key, allowed in key_values.items():
                err, got = c.get_data(key)
                assert err == 0 and got in allowed, f"seed {seed} round {rnd}: {key}={got!r}, allowed {allowed}"
                last_acked[key] = got
            c.close()
        assert total_acked > ROUNDS * 10, f"too few writes were acknowledged ({total_acked}): the test did not test"
        log = srv.log_text
        assert "snapshot" in log and "written" in log, "no snapshot was taken during the rounds"
    finally:
        srv.stop()


def test_the_tree_rebased_under_load_keeps_every_acknowledged_write():
    """With a snapshot every 200 txns and eight sessions writing, the server rebuilds its
    tree on each snapshot while writes go on and swaps it in once caught up (the last
    txns applied by the core itself). The live server must then hold every
    acknowledged create with its data and each key's last acknowledged value; every
    rebuilt tree must have matched the core's."""
    srv = start_ringkeeper({"snapCount": "200"})
    try:
        c = RawClient(srv.port)
        assert c.create("/crash")[0] == 0
        assert c.create("/crash/r0")[0] == 0
        for t in range(WRITERS):
            assert c.create(f"/crash/k{t}", b"initial")[0] == 0
        writers = [Writer(srv.port, 0, t, t) for t in range(WRITERS)]
        for w in writers:
            w.start()
        time.sleep(4)
        for w in writers:
            w.stop.set()
        for w in writers:
            w.join(timeout=30)
            w.check("stopped")
            assert w.inflight is None
        acked = {p: d for w in writers for p, d in w.acked_creates.items()}
        for path, data in acked.items():
            err, got = c.get_data(path)
            assert err == 0 and got == data, f"acknowledged {path}: error {err}"
        err, kids = c.children("/crash/r0")
        assert err == 0 and len(kids) == len(acked)
        for w in writers:
            err, got = c.get_data(w.key)
            assert err == 0 and got == (w.acked_value or b"initial"), w.key
        c.close()
        log = srv.log_text
        assert "not rebasing" not in log, log[-3000:]
        rebases = log.count("tree rebased")
        assert rebases >= 10 and len(acked) > 2000, f"{rebases} rebases, {len(acked)} creates: the test did not test"
    finally:
        srv.stop()
