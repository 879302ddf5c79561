"""A mixed ensemble of real processes: two ringkeeper members (ids 2 and 3) and one
Apache ZooKeeper 3.8 member (id 1), as a user replacing servers one at a time runs it.
ringkeeper's member 3 leads (the highest id, every history empty); ZooKeeper follows
it. Clients of either kind of member see one history, and a kazoo session moves from a
ringkeeper member to the ZooKeeper member with its id and password: ZooKeeper's
follower checks it with the leader (REVALIDATE), and the session keeps its ephemeral."""

import pytest
from kazoo.client import KazooClient

import servers
from zk_ensemble import ZkEnsemble, start_ringkeeper_members


@pytest.fixture
def mixed():
    zk = ZkEnsemble(3, tick_ms=500)
    rk = {}
    try:
        zk.start(1)
        rk = start_ringkeeper_members(zk, (2, 3))
        ok = servers.wait_for(lambda: servers.member_mode(rk[3]) == "leader"
                              and servers.member_mode(rk[2]) == "follower" and zk.mode(1) == "follower", 60)
        assert ok, (servers.member_mode(rk[3]), servers.member_mode(rk[2]), zk.mode(1))
        yield zk, rk
    finally:
        for s in rk.values():
            s.stop()
        zk.stop()


def test_a_session_moves_from_a_ringkeeper_member_to_a_zookeeper_member(mixed):
    zk, rk = mixed
    zk_host = f"127.0.0.1:{zk.client_port[1]}"
    a = KazooClient(hosts=rk[2].hosts, timeout=10.0)
    a.start(timeout=30)
    b = None
    try:
        a.create("/mine", b"eph", ephemeral=True)
        a.create("/shared", b"v1")
        session = a.client_id
        # Writes through ZooKeeper's follower are ordered by ringkeeper's leader.
        z = KazooClient(hosts=zk_host, timeout=10.0)
        z.start(timeout=30)
        z.set("/shared", b"v2")
        z.stop()
        z.close()
        # The same session, reconnected to the ZooKeeper member: valid, with its
        # ephemeral; its lastZxidSeen is no further than that member has seen.
        b = KazooClient(hosts=zk_host, timeout=10.0, client_id=session)
        b.start(timeout=30)
        assert b.client_id[0] == session[0]
        b.sync("/")
        assert b.exists("/mine").ephemeralOwner == session[0]
        assert b.get("/shared")[0] == b"v2"
        b.set("/shared", b"v3")
        a.sync("/")
        assert a.get("/shared")[0] == b"v3"
        # Once the session is closed, ZooKeeper's member (whose own check of the
        # password passes) is told by the leader that it is gone: the client is expired.
        a.stop()
        a.close()
        b.stop()
        b.close()
        a = b = None
        revived = KazooClient(hosts=zk_host, timeout=4.0, client_id=session)
        states = []
        revived.add_listener(states.append)
        revived.start(timeout=30)
        # Told the session expired, kazoo gives it up (LOST) and starts a new one.
        assert "LOST" in states or revived.client_id[0] != session[0], states
        assert revived.client_id[0] != session[0]
        assert revived.exists("/mine") is None
        revived.stop()
        revived.close()
    finally:
        for c in (a, b):
            if c:
                c.stop()
                c.close()
    # ZooKeeper's member stays in the ensemble after revalidating.
    assert zk.mode(1) == "follower", zk.mode(1)
