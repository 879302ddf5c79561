"""Differential test of ensembles: the seeded random operation sequences of
test_differential.py, run against a 3-member Apache ZooKeeper 3.8 ensemble and a
3-member ringkeeper ensemble. On each side the anonymous session is on a follower,
alice's on the leader and the raw creates go through the other follower, so every
write is forwarded or ordered across members. Results, error codes, children, every
Stat field (zxids included: both ensembles run their first epoch), watch events and
the whole tree at the end must agree. A session that acts after another syncs first:
a follower's reads may lag by design, and the comparison is of results, not timing."""

import collections
import os

import pytest

import servers
from test_differential import EXTRA, Side, same_sequence
from zk_ensemble import ZkEnsemble

SEEDS = int(os.environ.get("RK_DIFF_ENSEMBLE_SEEDS", "6"))

Member = collections.namedtuple("Member", "hosts port")


def member(port):
    return Member(f"127.0.0.1:{port}", port)


@pytest.fixture(scope="module")
def ensembles():
    zk = ZkEnsemble(3, tick_ms=500, props={"zookeeper.extendedTypesEnabled": "true",
                                           "znode.container.checkIntervalMs": "3600000"})
    rk = None
    try:
        zk.start_all()
        zk_leader = zk.wait_serving(timeout=120)
        rk = servers.start_ringkeeper_ensemble(3, extra=EXTRA)
        rk_modes = [servers.member_mode(m) for m in rk]
        zk_members = {i: member(zk.client_port[i]) for i in zk.ids}
        zk_roles = [zk_members[zk_leader]] + [m for i, m in zk_members.items() if i != zk_leader]
        rk_roles = [rk[rk_modes.index("leader")]] + [m for m, mode in zip(rk, rk_modes) if mode != "leader"]
        yield zk_roles, rk_roles
    finally:
        if rk:
            rk.stop()
        zk.stop()


def sides(roles):
    """(leader, follower, follower): alice on the leader, anon on a follower, raw
    creates through the other follower."""
    leader, f1, f2 = roles
    return Side(f2, anon_hosts=f1.hosts, alice_hosts=leader.hosts)


@pytest.mark.parametrize("seed", range(SEEDS))
def test_same_results_as_a_zookeeper_ensemble(ensembles, seed):
    zk_roles, rk_roles = ensembles
    a, b = sides(zk_roles), sides(rk_roles)
    last = []

    def sync_on_takeover(who, op):
        # Reads on a follower may lag writes another member took (ZooKeeper's
        # sequential consistency): a session that takes over from another first
        # syncs, so neither side's answer depends on replication timing.
        actor = "raw" if op[0] in ("create_container", "create_ttl") else who
        if actor != "raw" and last != [actor]:
            for side in (a, b):
                (side.anon if who == "anon" else side.alice).sync("/")
        last[:] = [actor]

    try:
        same_sequence(a, b, seed, f"/ens{seed}", before_op=sync_on_takeover)
    finally:
        a.stop()
        b.stop()


def mntr(port):
    out = {}
    for line in servers.four_letter(port, "mntr").splitlines():
        k, _, v = line.partition("\t")
        out[k] = v
    return out


def test_leaders_and_followers_report_their_role_as_zookeepers_do(ensembles):
    zk_roles, rk_roles = ensembles
    keys = ["zk_server_state", "zk_learners", "zk_synced_followers", "zk_synced_non_voting_followers",
            "zk_synced_observers", "zk_pending_syncs"]
    views = []
    for roles in (zk_roles, rk_roles):
        leader, *followers = roles
        m = mntr(leader.port)
        views.append({k: m.get(k) for k in keys})
        for f in followers:
            fm = mntr(f.port)
            assert fm["zk_server_state"] == "follower"
            assert not any(k in fm for k in keys[1:]), "a follower reports a leader's figures"
            assert servers.four_letter(f.port, "isro") == "rw"
        assert servers.four_letter(leader.port, "isro") == "rw"
    zk_view, rk_view = views
    assert zk_view["zk_server_state"] == "leader" and zk_view["zk_learners"] == "2", zk_view
    assert rk_view == zk_view
