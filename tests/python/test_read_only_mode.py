"""ZooKeeper's read-only mode on a ringkeeper member (`readonlymode.enabled=true`): cut
off from its quorum, the member serves reads to clients that asked for read-only mode
(kazoo's read_only=True) after max(2 s, tickTime), refuses writes and syncs with
NOTREADONLY, refuses clients that did not ask for it, and says `ro` to isro and
`Mode: read-only` to srvr, as Apache ZooKeeper 3.8 does. With its quorum back, the
read-only sessions end and clients find a member that takes writes. Without the key,
a member without a quorum serves no one."""

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NotReadOnlyCallError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import KeeperState

import servers


def alone(members):
    """Kills every member but the first; returns it once it says it has no leader."""
    for m in members[1:]:
        m.kill()
    return members[0]


def test_a_member_without_its_quorum_serves_read_only_clients():
    members = servers.start_ringkeeper_ensemble(3, extra={"readonlymode.enabled": "true"})
    try:
        w = KazooClient(hosts=",".join(m.hosts for m in members), timeout=10.0)
        w.start(timeout=30)
        w.create("/kept", b"before the cut")
        w.sync("/")
        w.stop()
        w.close()
        lone = alone(members)
        assert servers.wait_for(lambda: servers.member_mode(lone) == "read-only", 15), servers.member_mode(lone)
        assert servers.four_letter(lone.port, "isro") == "ro"
        # A client that accepts read-only mode reads what the member holds.
        states = []
        ro = KazooClient(hosts=lone.hosts, timeout=6.0, read_only=True)
        ro.add_listener(states.append)
        ro.start(timeout=15)
        try:
            assert ro.client_state == KeeperState.CONNECTED_RO, ro.client_state
            assert ro.get("/kept")[0] == b"before the cut"
            with pytest.raises(NotReadOnlyCallError):
                ro.create("/new", b"")
            with pytest.raises(NotReadOnlyCallError):
                ro.set("/kept", b"x")
            with pytest.raises(NotReadOnlyCallError):
                ro.sync("/")
            # A client that does not accept read-only mode is refused.
            rw = KazooClient(hosts=lone.hosts, timeout=4.0, connection_retry={"max_tries": 2})
            with pytest.raises(KazooTimeoutError):
                rw.start(timeout=4)
            rw.stop()
            rw.close()
            # The quorum comes back: the member takes writes again, the read-only
            # session ends and kazoo moves on to a read-write session.
            for m in members[1:]:
                m.proc = m.launch()
            assert servers.wait_for(lambda: servers.settled(members), 60), [servers.member_mode(m) for m in members]
            assert servers.four_letter(lone.port, "isro") == "rw"
            assert servers.wait_for(lambda: ro.client_state == KeeperState.CONNECTED, 30), ro.client_state
            ro.create("/after", b"writes again")
        finally:
            ro.stop()
            ro.close()
    finally:
        members.stop()


def test_without_read_only_mode_a_member_without_its_quorum_serves_no_one():
    members = servers.start_ringkeeper_ensemble(3)
    try:
        lone = alone(members)
        assert servers.wait_for(lambda: servers.member_mode(lone) == "looking", 15)
        servers.wait_for(lambda: False, 3)  # longer than read-only mode would wait
        assert servers.member_mode(lone) == "looking"
        assert servers.four_letter(lone.port, "isro") == "null"
        ro = KazooClient(hosts=lone.hosts, timeout=4.0, read_only=True, connection_retry={"max_tries": 2})
        with pytest.raises(KazooTimeoutError):
            ro.start(timeout=4)
        ro.stop()
        ro.close()
    finally:
        members.stop()
