"""Linearizability of a ringkeeper ensemble under faults: client processes record every
invocation and answer (setData with a version as compare-and-set, a read after sync,
sequential creates) while the leader is killed, hung with SIGSTOP and cut off, and a
follower is cut off; `ringkeeper-lincheck` (a Wing–Gong search, tools/src/lincheck.rs)
then checks the history key by key. The checker's own power is shown on a history with a
known violation."""

import json
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError

import servers
from tcpproxy import MemberNetwork

LINCHECK = Path(os.environ.get("RINGKEEPER_LINCHECK", servers.REPO / "target" / "release" / "ringkeeper-lincheck"))
REGISTERS = ["/reg-0", "/reg-1"]
SEQUENCE = "/seq"


def lincheck(history_path):
    if not LINCHECK.exists():
        raise RuntimeError(f"{LINCHECK} is missing: build it with cargo build --release --workspace")
    return subprocess.run([str(LINCHECK), str(history_path)], capture_output=True, text=True, timeout=60)


class Recorder:
    """Client threads, each a sequence of logical processes: a process invokes one
    operation at a time, and one that lost an answer (connection loss, expiry) is
    retired, its operation left with an unknown outcome; the thread goes on as a new
    process (with a new session if the old one expired)."""

    def __init__(self, hosts, threads, seed):
        self.hosts = hosts
        self.entries = []
        self._lock = threading.Lock()
        self._next_process = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(random.Random(seed + t),), daemon=True)
                         for t in range(threads)]

    def start(self):
        for t in self._threads:
            t.start()

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def _process(self):
        with self._lock:
            self._next_process += 1
            return self._next_process

    def _record(self, entry):
        with self._lock:
            self.entries.append(entry)

    def _run(self, rng):
        c = KazooClient(hosts=self.hosts, timeout=6.0,
                        connection_retry={"max_tries": -1, "delay": 0.05, "max_delay": 0.2})
        c.start(timeout=30)
        process, n = self._process(), 0
        known = {k: 0 for k in REGISTERS}  # the version this process last saw
        try:
            while not self._stop.is_set():
                n += 1
                key = rng.choice(REGISTERS + [SEQUENCE])
                e = {"process": process, "key": key}
                try:
                    if key == SEQUENCE:
                        e.update(op="create", invoked=time.monotonic())
                        name = c.create(SEQUENCE + "/n-", b"", sequence=True)
                        e.update(returned=time.monotonic(), seq=int(name.rsplit("-", 1)[1]))
                    elif rng.random() < 0.5:
                        e.update(op="read", invoked=time.monotonic())
                        c.sync(key)
                        data, stat = c.get(key)
                        e.update(returned=time.monotonic(), value=data.decode(), version=stat.version)
                        known[key] = stat.version
                    else:
                        value = f"p{process}-{n}"
                        e.update(op="cas", expect=known[key], value=value, invoked=time.monotonic())
                        try:
                            stat = c.set(key, value.encode(), version=known[key])
                            e.update(returned=time.monotonic(), ok=True, version=stat.version)
                            known[key] = stat.version
                        except BadVersionError:
                            e.update(returned=time.monotonic(), ok=False)
                    self._record(e)
                except Exception:  # no answer: the outcome is unknown, the process retires
                    e["returned"] = None
                    self._record(e)
                    process = self._process()
                    if not c.connected and c.state == "LOST":
                        c.stop()
                        c.close()
                        c = KazooClient(hosts=self.hosts, timeout=6.0)
                        c.start(timeout=30)
                    time.sleep(0.02)
        finally:
            c.stop()
            c.close()

    def write(self, path):
        with open(path, "w") as f:
            for e in sorted(self.entries, key=lambda e: e["invoked"]):
                f.write(json.dumps(e) + "\n")


@pytest.fixture
def linked():
    members = servers.start_ringkeeper_ensemble(3, network=MemberNetwork)
    yield members
    members.stop()


def leader_of(members, timeout=30):
    found = []
    servers.wait_for(lambda: found.append([m for m in members if servers.member_mode(m) == "leader"])
                     or len(found[-1]) == 1, timeout)
    assert len(found[-1]) == 1, [servers.member_mode(m) for m in members]
    return found[-1][0]


def test_histories_under_leader_kill_hang_and_partitions_are_linearizable(linked, tmp_path):
    setup = KazooClient(hosts=linked[0].hosts, timeout=10.0)
    setup.start(timeout=30)
    for k in REGISTERS + [SEQUENCE]:
        setup.create(k, b"")
    setup.stop()
    setup.close()
    rec = Recorder(",".join(m.hosts for m in linked), threads=6, seed=int(os.environ.get("RK_LIN_SEED", "7")))
    rec.start()
    net = linked.network
    try:
        time.sleep(2.0)
        # kill -9 of the leader, and its return.
        old = leader_of(linked)
        old.kill()
        leader_of([m for m in linked if m is not old])
        time.sleep(1.0)
        old.proc = old.launch()
        assert servers.wait_for(lambda: servers.settled(linked), 30)
        time.sleep(1.0)
        # The leader hung for longer than syncLimit, then woken.
        hung = leader_of(linked)
        os.kill(hung.proc.pid, signal.SIGSTOP)
        time.sleep(3.0)
        os.kill(hung.proc.pid, signal.SIGCONT)
        assert servers.wait_for(lambda: servers.settled(linked), 30)
        time.sleep(1.0)
        # The leader cut off from both followers, then a follower cut off.
        cut = leader_of(linked)
        net.isolate(linked.index(cut) + 1)
        time.sleep(3.0)
        net.heal()
        assert servers.wait_for(lambda: servers.settled(linked), 30)
        time.sleep(1.0)
        follower = next(m for m in linked if servers.member_mode(m) == "follower")
        net.isolate(linked.index(follower) + 1)
        time.sleep(2.0)
        net.heal()
        assert servers.wait_for(lambda: servers.settled(linked), 30)
        time.sleep(1.0)
    finally:
        rec.stop()
    history = tmp_path / "history.jsonl"
    rec.write(history)
    kinds = {(e["op"], e.get("ok", True)) for e in rec.entries if e["returned"] is not None}
    assert {("read", True), ("cas", True), ("cas", False), ("create", True)} <= kinds, kinds
    done = sum(e["returned"] is not None for e in rec.entries)
    assert done > 300, f"only {done} operations answered"
    r = lincheck(history)
    keep = os.environ.get("RK_TEST_LOG_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        (Path(keep) / "history.jsonl").write_text(history.read_text())
    if r.returncode != 0:
        # pytest keeps only its last few temp dirs: a failing history (and the members'
        # logs) go where a later run leaves them, to be read and replayed with
        # ringkeeper-lincheck.
        failed = servers.REPO / "target" / "lincheck-failures" / time.strftime("%Y%m%d-%H%M%S")
        failed.mkdir(parents=True, exist_ok=True)
        (failed / "history.jsonl").write_text(history.read_text())
        for m in linked:
            (failed / f"member-{m.port}.log").write_text(m.log_text)
        pytest.fail(f"{r.stdout}{r.stderr}\nhistory and member logs kept in {failed}")
    assert r.stdout.count(": linearizable") == 3, r.stdout


def test_the_checker_catches_a_stale_read_and_a_lost_acknowledged_write(tmp_path):
    def run(entries):
        p = tmp_path / "h.jsonl"
        p.write_text("".join(json.dumps(e) + "\n" for e in entries))
        return lincheck(p)

    write = {"process": 1, "key": "/r", "op": "cas", "expect": 0, "value": "a",
             "invoked": 1.0, "returned": 2.0, "ok": True, "version": 1}
    fresh = {"process": 2, "key": "/r", "op": "read", "invoked": 3.0, "returned": 4.0, "value": "a", "version": 1}
    stale = dict(fresh, value="", version=0)
    assert run([write, fresh]).returncode == 0
    r = run([write, stale])
    assert r.returncode == 1 and "/r: NOT linearizable" in r.stdout, r.stdout
    # An acknowledged write that a later writer does not see: both won version 1.
    lost = {"process": 3, "key": "/r", "op": "cas", "expect": 0, "value": "b",
            "invoked": 5.0, "returned": 6.0, "ok": True, "version": 1}
    assert run([write, lost]).returncode == 1
    bad = run([{"process": 1, "key": "/r", "op": "fly", "invoked": 1.0, "returned": None}])
    assert bad.returncode == 2 and "unknown op" in bad.stderr
