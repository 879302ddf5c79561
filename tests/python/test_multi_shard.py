"""Two shards (two executors, each with its own SO_REUSEPORT listener): sessions land on
either, and watches, ephemerals, reconnects and ordering must work across them."""

import struct
import threading
import time

import pytest
from kazoo.client import KazooClient
from kazoo.protocol.states import EventType

import servers
from rawzk import RawClient, s_buf, s_str
from servers import wait_for


@pytest.fixture(scope="module")
def two_shards():
    s = servers.start_ringkeeper(shards=2)
    yield s
    s.stop()


def clients(server, n):
    out = []
    for _ in range(n):
        c = KazooClient(hosts=server.hosts, timeout=10)
        c.start(timeout=10)
        out.append(c)
    return out


def test_watches_fire_across_shards(two_shards):
    cs = clients(two_shards, 8)  # with two listeners, both shards get some
    try:
        mntr = dict(l.split("\t", 1) for l in two_shards.four("mntr").splitlines())
        assert int(mntr["rk_shard_0_connections"]) > 0 and int(mntr["rk_shard_1_connections"]) > 0, mntr
        cs[0].create("/xs", b"0")
        events = [[] for _ in cs]
        for i, c in enumerate(cs):
            c.get("/xs", watch=events[i].append)
        cs[-1].set("/xs", b"1")
        assert wait_for(lambda: all(len(e) == 1 for e in events))
        assert all(e[0].type == EventType.CHANGED for e in events)
    finally:
        for c in cs:
            c.stop()
            c.close()


def test_every_session_sees_writes_in_order(two_shards):
    cs = clients(two_shards, 6)
    try:
        cs[0].create("/order", b"")
        seen = [[] for _ in cs]

        backwards = []

        def follow(i, c):
            last = -1
            deadline = time.time() + 15
            while last < 99 and time.time() < deadline:
                data, _ = c.get("/order")
                v = int(data) if data else -1
                if v < last:
                    backwards.append((i, last, v))
                last = v
                seen[i].append(v)

        ts = [threading.Thread(target=follow, args=(i, c)) for i, c in enumerate(cs[1:], 1)]
        for t in ts:
            t.start()
        for v in range(100):
            cs[0].set("/order", str(v).encode())
        for t in ts:
            t.join(20)
            assert not t.is_alive()
        assert backwards == [], "a session must never see the counter go back: (session, seen, then)"
        assert all(s and s[-1] == 99 for s in seen[1:])
    finally:
        for c in cs:
            c.stop()
            c.close()


def test_reconnect_from_the_other_shard_keeps_session(two_shards):
    first = RawClient(two_shards.port)
    first.create("/moving", flags=1)
    sid, pw = first.session_id, first.passwd
    first.close()
    # Reconnect several times: SO_REUSEPORT spreads connections over both shards.
    for _ in range(6):
        c = RawClient(two_shards.port, session_id=sid, passwd=pw)
        assert c.session_id == sid
        assert c.exists("/moving")[1]["ephemeralOwner"] == sid
        c.close()
    c = RawClient(two_shards.port, session_id=sid, passwd=pw)
    c.close_session()
    probe = RawClient(two_shards.port)
    assert probe.exists("/moving")[0] == -101
    probe.close()


def test_ephemeral_deleted_on_one_shard_notifies_the_other(two_shards):
    cs = clients(two_shards, 6)
    try:
        owner, watchers = cs[0], cs[1:]
        owner.create("/eph-x", ephemeral=True)
        fired = [[] for _ in watchers]
        for i, w in enumerate(watchers):
            w.exists("/eph-x", watch=fired[i].append)
        owner.stop()
        assert wait_for(lambda: all(f for f in fired))
        assert all(f[0].type == EventType.DELETED for f in fired)
    finally:
        for c in cs:
            c.stop()
            c.close()


def raw_client_on_shard(server, shard, tries=50):
    """A raw connection that landed on `shard` (SO_REUSEPORT picks by address hash;
    mntr's per-shard connection counts tell where each new one went)."""
    def counts():
        m = dict(l.split("\t", 1) for l in server.four("mntr").splitlines())
        return [int(m[f"rk_shard_{i}_connections"]) for i in range(2)]
    spare = []
    try:
        for _ in range(tries):
            before = counts()
            c = RawClient(server.port)
            after = counts()
            if after[shard] == before[shard] + 1 and sum(after) == sum(before) + 1:
                return c
            spare.append(c)
        raise AssertionError(f"no connection landed on shard {shard}")
    finally:
        for c in spare:
            c.close()


def test_a_read_sees_every_write_acknowledged_before_it_on_any_shard(two_shards):
    """A's write is acknowledged by A's shard; B's read right after, on the other
    shard, must see it even if B's shard has not received that batch yet."""
    a = raw_client_on_shard(two_shards, 0)
    b = raw_client_on_shard(two_shards, 1)
    try:
        a.create("/rw", b"-1")
        for i in range(2000):
            v = str(i).encode()
            assert a.set_data("/rw", v) == 0
            assert b.get_data("/rw") == (0, v), f"read {i} on the other shard missed an acknowledged write"
    finally:
        a.close()
        b.close()


def set_data_req(path, data):
    return 5, s_str(path) + s_buf(data) + struct.pack(">i", -1)


def get_data_req(path):
    return 4, s_str(path) + b"\0"


class Churn:
    """Four sessions pipelining setData of `path` in the background, 8 at a time, until
    stop(); stop() fails the test if one got an error reply or died, or if none wrote
    (the load the test relies on was not there)."""

    def __init__(self, port, path, sessions=4):
        self._stop = threading.Event()
        self.failures, self.batches = [], 0
        self._clients = [RawClient(port) for _ in range(sessions)]
        self._threads = [threading.Thread(target=self._run, args=(c,), daemon=True) for c in self._clients]
        self.path = path
        for t in self._threads:
            t.start()

    def _run(self, c):
        try:
            while not self._stop.is_set():
                errs = [r[0] for r in c.pipeline([set_data_req(self.path, b"x")] * 8)]
                if any(errs):
                    self.failures.append(f"setData {self.path}: errors {errs}")
                    return
                self.batches += 1
        except Exception as e:  # reported by stop()
            self.failures.append(repr(e))

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(30)
            assert not t.is_alive(), "a background writer hung"
        for c in self._clients:
            c.close()
        assert self.failures == [], self.failures
        assert self.batches > 0, "the background writers wrote nothing"


def test_a_read_between_a_sessions_writes_sees_the_first_and_not_the_second(two_shards):
    """Pipelined setData, getData, setData from one session: the read answers between
    the two writes (ZooKeeper's per-session order), even when both writes commit in
    one batch while other sessions write too."""
    c = RawClient(two_shards.port)
    assert c.create("/sandwich", b"")[0] == 0
    assert c.create("/sandwich-noise", b"")[0] == 0
    noise = Churn(two_shards.port, "/sandwich-noise")
    try:
        for i in range(300):
            first, second = f"a{i}".encode(), f"b{i}".encode()
            replies = c.pipeline([set_data_req("/sandwich", first), get_data_req("/sandwich"),
                                  set_data_req("/sandwich", second)])
            assert [r[0] for r in replies] == [0, 0, 0]
            assert replies[1][2].buf() == first, f"round {i}: the read saw the later write"
    finally:
        noise.stop()


def test_a_read_waiting_for_its_shard_does_not_see_its_own_later_write(two_shards):
    """B's read waits for B's shard to reach A's acknowledged write; B's setData sent
    right after it must not be visible to that read."""
    a = raw_client_on_shard(two_shards, 0)
    b = raw_client_on_shard(two_shards, 1)
    assert a.create("/caught", b"")[0] == 0
    for i in range(300):
        mine, later = f"a{i}".encode(), f"b{i}".encode()
        assert a.set_data("/caught", mine) == 0
        replies = b.pipeline([get_data_req("/caught"), set_data_req("/caught", later)])
        assert replies[0][0] == 0 and replies[1][0] == 0
        seen = replies[0][2].buf()
        assert seen == mine, f"round {i}: the read saw {seen!r}"


def test_a_read_behind_a_write_is_answered_when_the_write_is(two_shards):
    """Pipelined setData + getData while other sessions keep the core busy: the write
    often commits in the middle of a batch, and the read behind it must be answered
    with it (not left waiting for the session's next request)."""
    c = RawClient(two_shards.port)
    c.sock.settimeout(5)
    assert c.create("/behind", b"")[0] == 0
    assert c.create("/behind-noise", b"")[0] == 0
    noise = Churn(two_shards.port, "/behind-noise")
    try:
        for i in range(300):
            v = f"v{i}".encode()
            replies = c.pipeline([set_data_req("/behind", v), get_data_req("/behind")])
            assert replies[0][0] == 0 and replies[1][2].buf() == v
    finally:
        noise.stop()
