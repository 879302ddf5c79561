"""What kazoo cannot exercise: containers, TTL nodes, persistent and recursive watches,
getEphemerals, getAllChildrenNumber, whoAmI, and bad input (oversize or malformed
frames, unknown opcodes, a client ahead of the server) — each must get ZooKeeper's
answer while the server keeps serving everyone else."""

import socket
import struct
import time

import pytest
from rawzk import RawClient, Reader, s_buf, s_str
from servers import wait_for

NODE_CREATED, NODE_DELETED, NODE_DATA_CHANGED, NODE_CHILDREN_CHANGED = 1, 2, 3, 4


def test_container_removed_after_last_child_goes(rk, client, base):
    c = RawClient(rk.port)
    assert c.create(f"{base}/box", flags=4) == (0, f"{base}/box")
    # ZooKeeper (3.5.3+) reports ephemeralOwner 0 for containers: clients read
    # `ephemeralOwner != 0` as "ephemeral".
    assert c.exists(f"{base}/box")[1]["ephemeralOwner"] == 0
    assert c.create(f"{base}/box/item") == (0, f"{base}/box/item")
    time.sleep(0.6)
    assert client.exists(f"{base}/box") is not None
    assert c.delete(f"{base}/box/item") == 0
    assert wait_for(lambda: client.exists(f"{base}/box") is None)
    c.close()


def test_ttl_node_expires_and_needs_a_valid_ttl(rk, client, base):
    c = RawClient(rk.port)
    assert c.create(f"{base}/ttl", flags=5, ttl=300)[0] == 0
    assert c.create(f"{base}/badttl", flags=5, ttl=0)[0] == -8  # BADARGUMENTS
    assert wait_for(lambda: client.exists(f"{base}/ttl") is None)
    c.close()


def test_ttl_disabled_without_extended_types():
    import servers
    s = servers.start_ringkeeper()
    try:
        c = RawClient(s.port)
        assert c.create("/ttl", flags=5, ttl=1000)[0] == -6  # UNIMPLEMENTED
        c.close()
    finally:
        s.stop()


def test_persistent_watch_stays_and_sees_children(rk, client, base):
    c = RawClient(rk.port)
    assert c.add_watch(base, 0) == 0
    client.set(base, b"1")
    client.set(base, b"2")
    client.create(f"{base}/kid")
    evs = [c.wait_event() for _ in range(3)]
    assert [e[0] for e in evs] == [NODE_DATA_CHANGED, NODE_DATA_CHANGED, NODE_CHILDREN_CHANGED]
    assert c.check_watches(base, 4) == 0
    assert c.remove_watches(base, 4) == 0
    assert c.remove_watches(base, 4) == -121  # NOWATCHER
    c.close()


def test_persistent_recursive_watch_sees_descendants_not_child_events(rk, client, base):
    c = RawClient(rk.port)
    assert c.add_watch(base, 1) == 0
    client.create(f"{base}/a")
    client.create(f"{base}/a/b", b"x")
    client.set(f"{base}/a/b", b"y")
    client.delete(f"{base}/a/b")
    evs = [c.wait_event() for _ in range(4)]
    assert evs == [
        (NODE_CREATED, 3, f"{base}/a"),
        (NODE_CREATED, 3, f"{base}/a/b"),
        (NODE_DATA_CHANGED, 3, f"{base}/a/b"),
        (NODE_DELETED, 3, f"{base}/a/b"),
    ]
    c.close()


def test_get_ephemerals_children_number_and_who_am_i(rk, base):
    c = RawClient(rk.port)
    c.create(f"{base}/e1", flags=1)
    c.create(f"{base}/p")
    c.create(f"{base}/p/e2", flags=1)
    assert c.get_ephemerals(base) == (0, [f"{base}/e1", f"{base}/p/e2"])
    assert c.get_ephemerals(f"{base}/p") == (0, [f"{base}/p/e2"])
    assert c.all_children_number(base) == (0, 3)
    assert c.all_children_number(f"{base}/none")[0] == -101
    assert ("ip", "127.0.0.1") in c.who_am_i()
    c.close()


def test_oversize_frame_closes_only_that_connection(rk, client):
    big = RawClient(rk.port)
    big.sock.sendall(struct.pack(">i", 5_000_000) + b"\0" * 100)
    assert big.sock.recv(10) == b"", "the server closes an oversize frame's connection"
    # A buffer inside a frame claiming more bytes than the frame holds is malformed.
    lying = RawClient(rk.port)
    lying.send_frame(struct.pack(">ii", 1, 5) + s_str("/") + struct.pack(">i", 2_000_000) + b"x" * 1000)
    assert lying.sock.recv(10) == b""
    assert client.exists("/") is not None, "everyone else keeps being served"


def test_malformed_request_closes_connection_and_unknown_opcode_is_unimplemented(rk, client):
    c = RawClient(rk.port)
    err, _, _ = c.call(999, b"")
    assert err == -6  # UNIMPLEMENTED, connection kept
    assert c.exists("/")[0] == 0
    c.send_frame(struct.pack(">ii", 77, 4) + struct.pack(">i", 1000))  # truncated path
    assert c.sock.recv(10) == b""
    assert client.exists("/") is not None


@pytest.mark.parametrize("kind", ["ringkeeper", "zookeeper"])
def test_sasl_without_a_sasl_login_answers_ok_with_no_token(kind):
    """A server with no SASL login (no JAAS section) answers a SASL request OK with a
    null token and keeps the connection, as ZooKeeper 3.8 does; but SASL packets are
    not requests and do not keep the session alive. Checked on both servers."""
    import servers
    extra = {"tickTime": "200"}
    s = servers.start_ringkeeper(extra) if kind == "ringkeeper" else servers.start_zookeeper(extra)
    try:
        c = RawClient(s.port, timeout_ms=1000)
        for token in (b"", b"not a sasl token"):
            err, zxid, r = c.call(102, s_buf(token))
            assert (err, zxid) == (0, 0)
            assert r.buf() is None and r.o == len(r.b)
        assert c.exists("/")[0] == 0, "the connection is kept and served"
        deadline = time.time() + 3 * c.timeout_ms / 1000
        expired = False
        while time.time() < deadline and not expired:
            try:
                c.call(102, s_buf(b""))
                time.sleep(0.05)
            except (ConnectionError, OSError):
                expired = True
        assert expired, "a session fed only SASL packets expires"
    finally:
        s.stop()


def test_client_ahead_of_server_is_refused(rk):
    try:
        RawClient(rk.port, last_zxid=1 << 40)
        refused = False
    except ConnectionError:
        refused = True
    assert refused


def test_four_letter_words(rk):
    assert rk.four("ruok") == "imok"
    srvr = rk.four("srvr")
    for line in ["Zookeeper version: 3.8.0", "Latency min/avg/max:", "Received:", "Sent:",
                 "Connections:", "Outstanding:", "Zxid: 0x", "Mode: standalone", "Node count:"]:
        assert line in srvr, line
    assert "Clients:" in rk.four("stat")
    mntr = dict(l.split("\t", 1) for l in rk.four("mntr").splitlines())
    assert mntr["zk_server_state"] == "standalone" and int(mntr["zk_znode_count"]) >= 5
    assert "clientPort=" in rk.four("conf")
    assert "Total watches:" in rk.four("wchs")
    assert rk.four("isro") == "rw"
    assert rk.four("srst") == "Server stats reset.\n"
    assert "datadir_size:" in rk.four("dirs")
    assert "Environment:" in rk.four("envi")
    assert "SessionTracker dump:" in rk.four("dump")


def test_four_letter_whitelist_is_honoured():
    import servers
    s = servers.start_ringkeeper({"4lw.commands.whitelist": "ruok,srvr"})
    try:
        assert s.four("ruok") == "imok"
        assert "not executed because it is not in the whitelist" in s.four("dump")
    finally:
        s.stop()


def set_watches2(c, rel_zxid, data=(), exist=(), child=(), persistent=(), recursive=()):
    def strs(v):
        return struct.pack(">i", len(v)) + b"".join(s_str(x) for x in v)
    body = struct.pack(">q", rel_zxid) + strs(data) + strs(exist) + strs(child) + strs(persistent) + strs(recursive)
    c.send_frame(struct.pack(">ii", -8, 105) + body)


def test_set_watches_on_reconnect_fires_what_was_missed(rk, client, base):
    """A reconnecting client re-registers its watches with setWatches2 and the zxid it
    last saw: changes made since then fire at once, the rest are registered."""
    client.create(f"{base}/unchanged")
    first = RawClient(rk.port)
    sid, pw = first.session_id, first.passwd
    _, stat = first.exists(f"{base}/unchanged")
    seen = stat["mzxid"]
    first.close()
    client.set(base, b"changed while away")
    c = RawClient(rk.port, session_id=sid, passwd=pw, last_zxid=seen)
    assert c.session_id == sid
    set_watches2(c, seen, data=[base, f"{base}/unchanged"], exist=[f"{base}/later"])
    assert c.wait_event() == (NODE_DATA_CHANGED, 3, base)
    r = c.read_frame()
    assert struct.unpack_from(">i", r)[0] == -8, "then the setWatches reply"
    client.set(f"{base}/unchanged", b"now")
    client.create(f"{base}/later")
    got = {c.wait_event()[2], c.wait_event()[2]}
    assert got == {f"{base}/unchanged", f"{base}/later"}
    c.close()


def test_reconnect_closes_the_old_connection(rk, base):
    a = RawClient(rk.port)
    b = RawClient(rk.port, session_id=a.session_id, passwd=a.passwd)
    assert b.session_id == a.session_id
    a.sock.settimeout(5)
    assert a.sock.recv(10) == b"", "the session's previous connection is closed"
    assert b.exists("/")[0] == 0
    b.close_session()


def test_pipelined_read_behind_a_write_sees_the_write(rk, base):
    """Replies leave in request order, and a read queued behind a write of the same
    session is answered from the state that includes the write."""
    c = RawClient(rk.port)
    c.create(f"{base}/pipe", b"old")
    frames = b""
    for i in range(50):
        set_body = struct.pack(">ii", 1000 + 2 * i, 5) + s_str(f"{base}/pipe") + struct.pack(">i", 3) + f"v{i:02d}".encode()[:3] + struct.pack(">i", -1)
        get_body = struct.pack(">ii", 1001 + 2 * i, 4) + s_str(f"{base}/pipe") + b"\0"
        frames += struct.pack(">i", len(set_body)) + set_body + struct.pack(">i", len(get_body)) + get_body
    c.sock.sendall(frames)
    for i in range(50):
        r = Reader(c.read_frame())
        assert (r.i32(), r.i64() > 0, r.i32()) == (1000 + 2 * i, True, 0)
        r = Reader(c.read_frame())
        xid, _, err = r.i32(), r.i64(), r.i32()
        assert (xid, err) == (1001 + 2 * i, 0)
        assert r.buf() == f"v{i:02d}".encode()[:3]
    c.close()


def test_a_connection_without_a_handshake_is_closed_and_others_are_served():
    """ZooKeeper closes a connection that sends neither a handshake nor a four-letter
    word within zookeeper.nio.sessionlessCnxnTimeout (10 s by default)."""
    import servers
    s = servers.start_ringkeeper({"zookeeper.nio.sessionlessCnxnTimeout": "300"})
    try:
        silent = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        started = time.time()
        assert silent.recv(1) == b"", "the server sent something to a silent connection"
        waited = time.time() - started
        assert 0.2 < waited < 5, f"closed after {waited:.2f}s, not after about 0.3 s"
        # A client that does speak is served as usual, for longer than the timeout.
        c = RawClient(s.port)
        time.sleep(0.5)
        assert c.exists("/")[0] == 0
        c.close()
    finally:
        s.stop()
