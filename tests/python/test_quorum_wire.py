"""ZooKeeper's quorum protocol, byte for byte: a 3-member Apache ZooKeeper 3.8 ensemble
runs with every member-to-member connection through a recording proxy of ours, under
writes from several sessions (ephemerals, sequentials, containers, multis, a session
closed and one reconnected to another member), a kill -9 of the leader, a restart of
the old leader (which rejoins by DIFF or TRUNC) and a member that lost its data (which
rejoins by SNAP). Then every recorded election and learner connection is cut into
what was sent and each item decoded with ringkeeper's codecs and encoded back: the
bytes must be the same, and the learner packets must include what the run exercised."""

import subprocess
import time
from pathlib import Path

import pytest
from kazoo.client import KazooClient

import servers
from tcpproxy import RecordingProxy
from zk_ensemble import ZkEnsemble

WIRE_BIN = Path(servers.RINGKEEPER_BIN).parent / "ringkeeper-wire"


def writes(zk, tag, n=20):
    zk.ensure_path(f"/w/{tag}")
    for k in range(n):
        zk.create(f"/w/{tag}/seq-", str(k).encode(), sequence=True)
    zk.set(f"/w/{tag}", b"v" * 100)
    t = zk.transaction()
    t.create(f"/w/{tag}/m1", b"a")
    t.set_data(f"/w/{tag}", b"b")
    t.check(f"/w/{tag}", 99)  # fails: the multi is logged with an error txn per op
    t.commit()
    t = zk.transaction()
    t.create(f"/w/{tag}/m2", b"a")
    t.delete(f"/w/{tag}/m2")
    t.commit()
    zk.create(f"/w/{tag}/eph", ephemeral=True)


def checked(kind, files):
    out = subprocess.run([str(WIRE_BIN), "dump", kind, *map(str, files)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"{kind}: {out.stderr}\n{out.stdout[-3000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    if not WIRE_BIN.exists():
        pytest.fail(f"{WIRE_BIN} is missing: cargo build --release --workspace")
    rec = tmp_path_factory.mktemp("quorum-recordings")
    ens = ZkEnsemble(3, proxy_factory=lambda name, port, target: RecordingProxy(name, port, target, rec))
    try:
        ens.start_all()
        leader = ens.wait_serving()
        a = KazooClient(hosts=ens.hosts, timeout=10)
        a.start(timeout=30)
        writes(a, "before")
        # A session of its own that is closed (closeSession with its ephemerals).
        b = KazooClient(hosts=f"127.0.0.1:{ens.client_port[leader % 3 + 1]}", timeout=10)
        b.start(timeout=30)
        b.create("/w/b-eph", ephemeral=True)
        b.stop()
        b.close()
        # kill -9 of the leader under a live session: a new election, a new epoch.
        ens.kill(leader)
        survivors = [i for i in ens.ids if i != leader]
        new_leader = ens.wait_serving(survivors)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                a.exists("/w")
                break
            except Exception:
                time.sleep(0.2)
        writes(a, "after-kill")
        # The old leader comes back and catches up from the new one.
        ens.start(leader)
        ens.wait_serving()
        writes(a, "after-rejoin")
        # A follower that lost its data must be sent the whole tree.
        follower = next(i for i in ens.ids if i not in (new_leader,))
        ens.kill(follower)
        ens.wipe(follower)
        writes(a, "while-wiped")
        ens.start(follower)
        ens.wait_serving()
        writes(a, "end", n=5)
        a.stop()
        a.close()
    finally:
        ens.stop()
    yield rec


def files(rec, prefix, side):
    return sorted(p for p in rec.glob(f"{prefix}*-{side}.bin") if p.stat().st_size > 0)


def test_every_learner_packet_decodes_and_encodes_to_the_same_bytes(recordings):
    to_leader = checked("learner-to-leader", files(recordings, "quorum", "c2s"))
    from_leader = checked("leader-to-learner", files(recordings, "quorum", "s2c"))
    for name in ("FOLLOWERINFO", "ACKEPOCH", "ACK", "PING", "REQUEST"):
        assert f"  {name} " in to_leader, f"no {name} recorded"
    for name in ("LEADERINFO", "NEWLEADER", "UPTODATE", "PROPOSAL", "COMMIT", "PING", "SNAP"):
        assert f"  {name} " in from_leader, f"no {name} recorded"
    assert "  DIFF " in from_leader or "  TRUNC " in from_leader, "no DIFF or TRUNC recorded"
    assert "tree of" in from_leader, "no tree after SNAP recorded"
    # The txns of the workload, in ZooKeeper's serialization with 3.6+'s digest.
    for kind in ("CreateSession", "CloseSession", "Create {", "SetData", "Multi", "Error"):
        assert kind in from_leader, f"no {kind} txn recorded"
    assert "digest: Some(TxnDigest" in from_leader


def test_every_election_message_decodes_and_encodes_to_the_same_bytes(recordings):
    connecting = checked("election-connecting", files(recordings, "election", "c2s"))
    accepting = checked("election-accepting", files(recordings, "election", "s2c"))
    assert "opening Versioned" in connecting
    both = connecting + accepting
    assert "notification state=0" in both, "no LOOKING vote recorded"
    assert "notification state=1" in both or "notification state=2" in both
    assert "version=Some(2)" in both and "server.1=" in both


def test_ringkeepers_learner_follows_every_recorded_zookeeper_leader(recordings):
    """Each recorded learner connection's leader side, replayed through ringkeeper's
    learner state machine: it must take ZooKeeper's whole stream (LEADERINFO, the
    sync, NEWLEADER, UPTODATE, proposals and commits) and ACK what ZooKeeper's own
    learner ACKed on that connection."""
    syncs = []
    for c2s in files(recordings, "quorum", "c2s"):
        s2c = c2s.with_name(c2s.name.replace("-c2s.bin", "-s2c.bin"))
        if not s2c.exists() or s2c.stat().st_size == 0:
            continue  # a learner that reached a leader's port as the leader died
        out = subprocess.run([str(WIRE_BIN), "follow", str(c2s), str(s2c)],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "up to date true" in out.stdout, out.stdout
        syncs.append(out.stdout.split("sync ")[1].split(",")[0])
    assert len(syncs) >= 4, syncs
    assert "SNAP" in syncs and ("DIFF" in syncs or "TRUNC" in syncs), syncs
