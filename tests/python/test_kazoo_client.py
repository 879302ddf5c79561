"""kazoo, an unmodified real client, against ringkeeper: sessions, ephemerals,
sequential nodes, watches, transactions, ACLs and auth, containers and TTL nodes."""

import struct
import threading
import time

import pytest
from kazoo.client import KazooState
from kazoo.exceptions import (
    BadArgumentsError, BadVersionError, NoAuthError, NodeExistsError, NoNodeError,
    NotEmptyError, NoChildrenForEphemeralsError, RolledBackError, InvalidACLError,
    AuthFailedError, SessionExpiredError,
)
from kazoo.protocol.states import EventType
import rawzk
from rawzk import RawClient
from kazoo.security import make_digest_acl, make_acl, OPEN_ACL_UNSAFE
from servers import wait_for


def test_create_get_set_delete_with_versions(client, base):
    p = client.create(f"{base}/n", b"v0")
    assert p == f"{base}/n"
    data, stat = client.get(p)
    assert data == b"v0" and stat.version == 0 and stat.dataLength == 2
    stat2 = client.set(p, b"v1", version=0)
    assert stat2.version == 1 and stat2.mzxid > stat.mzxid and stat2.czxid == stat.czxid
    with pytest.raises(BadVersionError):
        client.set(p, b"v2", version=0)
    with pytest.raises(BadVersionError):
        client.delete(p, version=7)
    client.delete(p, version=1)
    assert client.exists(p) is None


def test_error_codes(client, base):
    with pytest.raises(NoNodeError):
        client.create(f"{base}/missing/child")
    client.create(f"{base}/x")
    with pytest.raises(NodeExistsError):
        client.create(f"{base}/x")
    client.create(f"{base}/x/y")
    with pytest.raises(NotEmptyError):
        client.delete(f"{base}/x")
    with pytest.raises(NoNodeError):
        client.get(f"{base}/nope")
    with pytest.raises(BadArgumentsError):
        client.delete("/zookeeper")


def test_stat_tracks_children(client, base):
    client.create(f"{base}/c1")
    client.create(f"{base}/c2")
    client.delete(f"{base}/c1")
    _, stat = client.get(base)
    assert stat.numChildren == 1 and stat.cversion == 3
    assert sorted(client.get_children(base)) == ["c2"]
    children, st = client.get_children(base, include_data=True)
    assert children == ["c2"] and st.pzxid >= st.czxid


def test_sequential_nodes_count_from_parent_cversion(client, base):
    a = client.create(f"{base}/q-", sequence=True)
    b = client.create(f"{base}/q-", sequence=True)
    assert a == f"{base}/q-0000000000" and b == f"{base}/q-0000000001"
    client.create(f"{base}/other")
    c = client.create(f"{base}/q-", sequence=True)
    assert c.endswith("0000000003")


def test_ephemerals_vanish_with_their_session(make_client, client, base):
    other = make_client()
    other.create(f"{base}/e", ephemeral=True)
    assert client.exists(f"{base}/e").ephemeralOwner == other.client_id[0]
    with pytest.raises(NoChildrenForEphemeralsError):
        other.create(f"{base}/e/child")
    gone = threading.Event()
    client.exists(f"{base}/e", watch=lambda ev: gone.set())
    other.stop()
    assert gone.wait(10)
    assert client.exists(f"{base}/e") is None


def test_session_survives_reconnect_with_its_ephemerals(rk, client, base):
    from kazoo.client import KazooClient
    raw = RawClient(rk.port)
    assert raw.create(f"{base}/mine", flags=1)[0] == 0
    raw.close()  # connection gone, session alive
    b = KazooClient(hosts=rk.hosts, client_id=(raw.session_id, raw.passwd))
    b.start(timeout=10)
    try:
        assert b.client_id[0] == raw.session_id
        assert b.exists(f"{base}/mine").ephemeralOwner == raw.session_id
    finally:
        b.stop()  # closes the session
    assert wait_for(lambda: client.exists(f"{base}/mine") is None)


def test_reconnect_with_wrong_password_is_expired(rk, client):
    from kazoo.client import KazooClient
    sid, _ = client.client_id
    bad = KazooClient(hosts=rk.hosts, client_id=(sid, b"\0" * 16))
    bad.start(timeout=10)  # kazoo starts over with a new session after the refusal
    try:
        assert bad.client_id[0] != sid
    finally:
        bad.stop()
        bad.close()
    assert client.exists("/") is not None, "the real owner keeps its session"


def test_session_expiry_removes_ephemerals_and_fires_watches(rk, client, base):
    victim = RawClient(rk.port, timeout_ms=4000)
    assert victim.create(f"{base}/eph", flags=1)[0] == 0
    fired = []
    client.exists(f"{base}/eph", watch=fired.append)
    victim.close()  # the connection goes, the session stays until it expires
    time.sleep(1)
    assert client.exists(f"{base}/eph") is not None, "the session outlives its connection"
    assert wait_for(lambda: client.exists(f"{base}/eph") is None, timeout=15)
    # kazoo runs watch callbacks on a thread of its own: the event reached the client
    # before the reply above, but its callback may still be on its way.
    assert wait_for(lambda: fired, timeout=5)
    assert fired[0].type == EventType.DELETED
    assert f"0x{victim.session_id:x}" not in rk.four("dump")


def test_data_watch_fires_once_before_the_read_that_sees_the_change(make_client, client, base):
    p = client.create(f"{base}/w", b"0")
    events = []
    client.get(p, watch=events.append)
    writer = make_client()
    writer.set(p, b"1")
    writer.set(p, b"2")
    assert wait_for(lambda: len(events) == 1)
    time.sleep(0.2)
    assert len(events) == 1 and events[0].type == EventType.CHANGED


def test_watch_event_precedes_reply_reflecting_change(rk, client, base):
    """ZooKeeper's guarantee: a client sees the event before any read showing the change.
    Checked on the wire, where the order is what the server sent (kazoo runs watch
    callbacks on a thread of their own, so its callbacks cannot show it): the reader's
    frames up to the reply that shows the new value must include the event."""
    p = client.create(f"{base}/order", b"0")
    reader, writer = RawClient(rk.port), RawClient(rk.port)
    try:
        for i in range(1, 51):
            value = str(i).encode()
            err, _, _ = reader.call(4, rawzk.s_str(p) + b"\1")  # getData with a watch
            assert err == 0
            reader.events.clear()
            # The write goes out without waiting, so the reads race it.
            writer.xid += 1
            writer.send_frame(struct.pack(">ii", writer.xid, 5) + rawzk.s_str(p) + rawzk.s_buf(value)
                              + struct.pack(">i", -1))
            reads = 0
            while True:
                err, data = reader.get_data(p)
                reads += 1
                assert err == 0 and reads < 100_000
                if data == value:
                    break
            # NodeDataChanged (3) for p, received before the reply that showed `value`.
            assert (3, 3, p) in reader.events, (i, reader.events)
            xid, _, err = struct.unpack(">iqi", writer.read_frame()[:16])
            assert (xid, err) == (writer.xid, 0)
    finally:
        reader.close()
        writer.close()


def test_child_and_exist_watches(make_client, client, base):
    kids, created = [], []
    client.get_children(base, watch=kids.append)
    client.exists(f"{base}/later", watch=created.append)
    make_client().create(f"{base}/later")
    assert wait_for(lambda: kids and created)
    assert kids[0].type == EventType.CHILD and kids[0].path == base
    assert created[0].type == EventType.CREATED


def test_delete_fires_data_and_child_watchers(make_client, client, base):
    p = client.create(f"{base}/d")
    data_ev, child_ev = [], []
    client.get(p, watch=data_ev.append)
    client.get_children(p, watch=child_ev.append)
    make_client().delete(p)
    assert wait_for(lambda: data_ev and child_ev)
    assert data_ev[0].type == EventType.DELETED and child_ev[0].type == EventType.DELETED


def test_transaction_commits_atomically(client, base):
    t = client.transaction()
    t.create(f"{base}/a", b"1")
    t.create(f"{base}/b", b"2")
    t.set_data(f"{base}/a", b"3")
    t.check(f"{base}/a", 1)
    t.delete(f"{base}/b")
    res = t.commit()
    assert res[0] == f"{base}/a" and res[1] == f"{base}/b"
    assert res[2].version == 1 and res[3] is True and res[4] is True
    assert client.get(f"{base}/a")[0] == b"3"


def test_transaction_rolls_back_on_failure(client, base):
    t = client.transaction()
    t.create(f"{base}/x")
    t.check(f"{base}/nope", 0)
    t.create(f"{base}/y")
    res = t.commit()
    assert isinstance(res[0], RolledBackError)
    assert isinstance(res[1], NoNodeError)
    assert client.exists(f"{base}/x") is None and client.exists(f"{base}/y") is None


def test_digest_acl_and_auth(make_client, client, base):
    owner = make_client(auth_data=[("digest", "alice:secret")])
    acl = [make_digest_acl("alice", "secret", all=True)]
    p = owner.create(f"{base}/private", b"s", acl=acl)
    with pytest.raises(NoAuthError):
        client.get(p)
    with pytest.raises(NoAuthError):
        client.set(p, b"x")
    assert owner.get(p)[0] == b"s"
    with pytest.raises(NoAuthError):
        client.get_acls(p)  # needs READ or ADMIN
    acls, _ = owner.get_acls(p)
    assert acls[0].id.id.startswith("alice:")
    client.add_auth("digest", "alice:secret")
    assert client.get(p)[0] == b"s"


def test_getacl_without_admin_hides_digest(make_client, client, base):
    owner = make_client(auth_data=[("digest", "bob:pw")])
    acl = [make_digest_acl("bob", "pw", all=True), make_acl("world", "anyone", read=True)]
    p = owner.create(f"{base}/semi", acl=acl)
    acls, _ = client.get_acls(p)
    digests = [a for a in acls if a.id.scheme == "digest"]
    assert digests[0].id.id == "bob:x"


def test_auth_scheme_acl_and_invalid_acl(make_client, client, base):
    owner = make_client(auth_data=[("digest", "carol:pw")])
    p = owner.create(f"{base}/authacl", acl=[make_acl("auth", "", all=True)])
    acls, _ = owner.get_acls(p)
    assert acls[0].id.scheme == "digest" and acls[0].id.id.startswith("carol:")
    with pytest.raises(InvalidACLError):
        client.create(f"{base}/noauth", acl=[make_acl("auth", "", all=True)])
    with pytest.raises(InvalidACLError):
        client.create(f"{base}/bad", acl=[make_acl("nosuchscheme", "x", all=True)])


def test_super_digest_bypasses_acls(make_client, base):
    owner = make_client(auth_data=[("digest", "dave:pw")])
    p = owner.create(f"{base}/locked", acl=[make_digest_acl("dave", "pw", all=True)])
    root = make_client(auth_data=[("digest", "super:test")])
    assert root.get(p)[0] == b""
    root.delete(p)


def test_unknown_auth_scheme_fails(rk):
    from kazoo.client import KazooClient
    c = KazooClient(hosts=rk.hosts, connection_retry={"max_tries": 0})
    c.start(timeout=10)
    try:
        with pytest.raises(AuthFailedError):
            c.add_auth("nosuch", "x")
    finally:
        c.stop()
        c.close()


def test_ip_acl(client, base):
    p = client.create(f"{base}/iponly", acl=[make_acl("ip", "127.0.0.1", all=True)])
    assert client.get(p)[0] == b""
    q = client.create(f"{base}/otherip", acl=[make_acl("ip", "10.0.0.0/8", all=True)])
    with pytest.raises(NoAuthError):
        client.get(q)


def test_sync_and_server_version(client, base):
    assert client.sync(base) == base
    assert client.server_version()[:2] == (3, 8)


def test_closed_session_cannot_be_used(rk):
    from kazoo.client import KazooClient
    c = KazooClient(hosts=rk.hosts)
    c.start(timeout=10)
    sid, pw = c.client_id
    c.stop()
    c.close()
    again = KazooClient(hosts=rk.hosts, client_id=(sid, pw))
    again.start(timeout=10)  # refused: kazoo starts over with a new session
    try:
        assert again.client_id[0] != sid
    finally:
        again.stop()
        again.close()


def test_null_data_reads_back_as_null_and_empty_as_empty(client, base):
    client.create(f"{base}/null", None)
    client.create(f"{base}/empty", b"")
    assert client.get(f"{base}/null")[0] is None
    assert client.get(f"{base}/empty")[0] == b""
    client.set(f"{base}/empty", None)
    assert client.get(f"{base}/empty")[0] is None
    assert client.exists(f"{base}/empty").dataLength == 0


def test_watch_events_need_read_permission_on_the_node(make_client, client, base):
    """As ZooKeeper (CVE-2024-23944): a watcher that cannot READ the node gets no event,
    and the one-shot watch is used up."""
    owner = make_client(auth_data=[("digest", "erin:pw")])
    hidden, visible = [], []
    client.exists(f"{base}/secret", watch=hidden.append)
    client.exists(f"{base}/public", watch=visible.append)
    owner.create(f"{base}/secret", acl=[make_digest_acl("erin", "pw", all=True)])
    owner.create(f"{base}/public")
    assert wait_for(lambda: visible)
    # The secret's event would have been queued before the public one's: once the
    # callback queue is drained past a marker, nothing more can arrive.
    from kazoo.protocol.states import Callback
    done = threading.Event()
    client.handler.dispatch_callback(Callback("watch", done.set, ()))
    assert done.wait(5)
    assert hidden == []
