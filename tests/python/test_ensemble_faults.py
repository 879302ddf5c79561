"""Faults in a ringkeeper ensemble of real processes on loopback: a leader that hangs
(SIGSTOP) rather than dies, a leader cut off from the rest, a one-way cut, a rolling
restart of every member under load, and five members losing two, then a third. Member
links run through fault-injecting proxies of ours (tcpproxy.MemberNetwork) where a test
cuts them. Every test writes through kazoo while the fault happens and checks at the
end that no acknowledged write is missing on any member, and that every member holds
the same nodes with the same Stats."""

import os
import signal
import threading
import time

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import KazooException

import servers
from tcpproxy import MemberNetwork

# The ensembles here run tickTime=200, syncLimit=5: a member unheard for 1 s is let go.
SYNC_MS = 200 * 5


def client(hosts, timeout=6.0):
    c = KazooClient(hosts=hosts, timeout=timeout, connection_retry={"max_tries": -1, "delay": 0.05, "max_delay": 0.2})
    c.start(timeout=30)
    return c


def all_hosts(members):
    return ",".join(m.hosts for m in members)


def modes(members):
    return [servers.member_mode(m) for m in members]


def leader_of(members):
    leaders = [m for m in members if servers.member_mode(m) == "leader"]
    assert len(leaders) == 1, modes(members)
    return leaders[0]


class WriteLoad:
    """One kazoo client creating /<prefix>NNNNNN, one after another, from a thread.
    `acked` holds the names whose create was acknowledged; a create that ends in an
    error (connection loss while the fault happens) has an unknown outcome and is not
    counted either way."""

    def __init__(self, hosts, prefix):
        self.client = client(hosts)
        self.prefix = prefix
        self.acked = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        i = 0
        while not self._stop.is_set():
            name = f"{self.prefix}{i:06d}"
            try:
                self.client.create("/" + name, b"v")
                self.acked.append(name)
            except KazooException:
                self.errors += 1
                time.sleep(0.01)
            i += 1

    def resumes(self, more=30, timeout=30):
        """Waits until `more` creates past this moment are acknowledged."""
        before = len(self.acked)
        return servers.wait_for(lambda: len(self.acked) >= before + more, timeout)

    def stop(self):
        self._stop.set()
        self._thread.join(30)
        self.client.stop()
        self.client.close()


def assert_one_history(members, *loads):
    """Every member, once synced, holds every acknowledged create, and all of them hold
    the same nodes with the same Stats."""
    acked = [name for load in loads for name in load.acked]
    assert acked, "nothing was acknowledged"
    views = {}
    for m in members:
        k = client(m.hosts)
        try:
            k.sync("/")
            kids = sorted(n for n in k.get_children("/") if n != "zookeeper")
            views[m.port] = {n: k.exists("/" + n) for n in kids}
        finally:
            k.stop()
            k.close()
        missing = sorted(set(acked) - set(views[m.port]))
        assert not missing, f"member on port {m.port} lost acknowledged creates {missing[:10]} (of {len(missing)})"
    first, *rest = views.values()
    for port, view in zip(list(views)[1:], rest):
        assert view == first, f"member on port {port} differs: " + str(
            sorted(set(view.items()) ^ set(first.items()))[:6])


@pytest.fixture
def ensemble():
    members = servers.start_ringkeeper_ensemble(3)
    yield members
    members.stop()


@pytest.fixture
def linked():
    """Three members whose links to each other run through FaultProxies."""
    members = servers.start_ringkeeper_ensemble(3, network=MemberNetwork)
    yield members
    members.stop()


def test_a_hung_leader_is_replaced_and_rejoins_as_a_follower(ensemble):
    load = WriteLoad(all_hosts(ensemble), "k")
    try:
        assert load.resumes(50)
        old = leader_of(ensemble)
        rest = [m for m in ensemble if m is not old]
        os.kill(old.proc.pid, signal.SIGSTOP)
        try:
            assert servers.wait_for(lambda: any(servers.member_mode(m) == "leader" for m in rest), 30), modes(rest)
            assert load.resumes(50), "writes did not resume with a new leader"
        finally:
            os.kill(old.proc.pid, signal.SIGCONT)
        # The old leader wakes up to a later epoch: it must not lead again beside the new
        # leader, and it rejoins as a follower.
        assert servers.wait_for(lambda: servers.member_mode(old) == "follower", 30), modes(ensemble)
        assert load.resumes(50)
    finally:
        load.stop()
    assert_one_history(ensemble, load)


def test_a_leader_cut_off_stops_taking_writes_and_the_majority_goes_on(linked):
    old = leader_of(linked)
    rest = [m for m in linked if m is not old]
    # One client only ever speaks to the old leader: what it is told is acknowledged
    # must survive, whatever the old leader does once it is cut off.
    lonely = WriteLoad(old.hosts, "a")
    load = WriteLoad(all_hosts(rest), "b")
    try:
        assert lonely.resumes(30) and load.resumes(30)
        cut_at = time.monotonic()
        linked.network.isolate(linked.index(old) + 1)
        # The cut-off leader gives up within syncLimit (plus a tick or two), and the
        # majority elects a leader of its own.
        assert servers.wait_for(lambda: servers.member_mode(old) != "leader", 10), modes(linked)
        gave_up_s = time.monotonic() - cut_at
        assert gave_up_s < SYNC_MS / 1000 + 2.0, gave_up_s
        assert servers.wait_for(lambda: any(servers.member_mode(m) == "leader" for m in rest), 30), modes(rest)
        assert load.resumes(50), "the majority took no writes"
        # Nothing the cut-off member was asked to write is acknowledged while it is cut off.
        during = len(lonely.acked)
        time.sleep(1.0)
        assert len(lonely.acked) == during, "a member without a quorum acknowledged writes"
        linked.network.heal()
        assert servers.wait_for(lambda: servers.member_mode(old) == "follower", 30), modes(linked)
        assert lonely.resumes(20), "the client of the old leader did not get going again"
    finally:
        lonely.stop()
        load.stop()
    assert_one_history(linked, lonely, load)


def test_a_follower_that_hears_nothing_from_the_leader_steps_out_and_comes_back(linked):
    old = leader_of(linked)
    deaf = next(m for m in linked if m is not old)
    load = WriteLoad(all_hosts(linked), "k")
    try:
        assert load.resumes(30)
        # One way only: the leader hears the follower, the follower hears nothing from it.
        linked.network.cut(linked.index(old) + 1, linked.index(deaf) + 1)
        assert servers.wait_for(lambda: servers.member_mode(deaf) != "follower", 10), modes(linked)
        # The leader keeps its quorum with the other follower; writes go on.
        assert load.resumes(50)
        assert servers.member_mode(old) == "leader"
        linked.network.heal()
        assert servers.wait_for(lambda: servers.member_mode(deaf) == "follower", 30), modes(linked)
        assert load.resumes(30)
    finally:
        load.stop()
    assert_one_history(linked, load)


def test_a_rolling_restart_of_every_member_under_load_loses_nothing(ensemble):
    load = WriteLoad(all_hosts(ensemble), "k")
    try:
        assert load.resumes(30)
        # Followers first, then the leader, as operators roll an ensemble.
        order = sorted(ensemble, key=lambda m: servers.member_mode(m) == "leader")
        for m in order:
            m.kill()
            assert load.resumes(30), f"writes stopped while the member on {m.port} was down: {modes(ensemble)}"
            m.proc = m.launch()
            assert servers.wait_for(lambda: servers.settled(ensemble), 30), modes(ensemble)
            assert load.resumes(30)
    finally:
        load.stop()
    assert load.errors < len(load.acked)
    assert_one_history(ensemble, load)


def test_five_members_lose_two_and_go_on_and_a_third_stops_writes():
    members = servers.start_ringkeeper_ensemble(5)
    load = None
    try:
        load = WriteLoad(all_hosts(members), "k")
        assert load.resumes(30)
        leader = leader_of(members)
        down = [leader, next(m for m in members if m is not leader)]
        for m in down:
            m.kill()
        up = [m for m in members if m not in down]
        assert servers.wait_for(lambda: servers.settled(up), 30), modes(up)
        assert load.resumes(50), "three of five members took no writes"
        # Two of five are not a quorum: nothing is acknowledged until a third is back.
        third = up.pop()
        third.kill()
        down.append(third)
        assert servers.wait_for(lambda: all(servers.member_mode(m) in ("looking", None) for m in up), 10), modes(up)
        stalled = len(load.acked)
        time.sleep(2.0)
        assert len(load.acked) == stalled, "two of five members acknowledged writes"
        for m in down:
            m.proc = m.launch()
        assert servers.wait_for(lambda: servers.settled(members), 30), modes(members)
        assert load.resumes(50)
    finally:
        if load:
            load.stop()
    try:
        assert_one_history(members, load)
    finally:
        members.stop()
