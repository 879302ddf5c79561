"""How a leader brings a member that fell behind back in line, on real processes.

- A leader that restarted still has its log's last txns for DIFFs (its history is
  rebuilt from the log at start, as ZooKeeper's is): a member a few txns behind gets a
  DIFF, not the whole tree. Checked with ringkeeper learners and with an Apache
  ZooKeeper 3.8 learner, which must take the txns read back from our log (headers with
  the session and cxid they were ordered for) exactly as its own leader's.
- A ringkeeper member that needs a SNAP from a ringkeeper leader gets the leader's
  snapshot file and the log after it (negotiated through LearnerInfo's protocol
  version), maps the file in place, and serves the same tree."""

import re

from kazoo.client import KazooClient

import servers
from zk_ensemble import ZkEnsemble, start_ringkeeper_members


def client(hosts):
    c = KazooClient(hosts=hosts, timeout=10.0)
    c.start(timeout=30)
    return c


def stop(c):
    c.stop()
    c.close()


def tree(c, path="/"):
    """Every node under `path` (ZooKeeper's own /zookeeper aside): data and Stat."""
    out = {}
    for child in c.get_children(path):
        p = (path.rstrip("/") + "/" + child)
        if p == "/zookeeper":
            continue
        data, stat = c.get(p)
        out[p] = (data, stat)
        out.update(tree(c, p))
    return out


def leader_of(members):
    return next(m for m in members if servers.member_mode(m) == "leader")


def write_history(hosts, tag, n=40):
    """Writes of every kind a DIFF carries through sessions on `hosts`: creates
    (persistent, sequential, ephemeral), setData, a multi, a delete, and sessions that
    close with ephemerals (ZooKeeper's closeSession record lists the ephemerals it
    deletes); one ephemeral stays, its session open. Returns that session's client."""
    c = client(hosts)
    c.ensure_path(f"/{tag}")
    for i in range(n):
        c.create(f"/{tag}/n{i}", b"v%d" % i)
    c.create(f"/{tag}/seq-", b"s", sequence=True)
    c.create(f"/{tag}/eph", b"e", ephemeral=True)
    for i in range(0, n, 3):
        c.set(f"/{tag}/n{i}", b"changed")
    t = c.transaction()
    t.create(f"/{tag}/m1", b"m")
    t.set_data(f"/{tag}/n1", b"in-multi")
    t.delete(f"/{tag}/n2")
    t.commit()
    stop(c)
    live = client(hosts)
    live.create(f"/{tag}/live-eph", b"l", ephemeral=True)
    return live


def test_a_restarted_leader_syncs_a_member_behind_it_by_diff():
    members = servers.start_ringkeeper_ensemble(3)
    try:
        leader = leader_of(members)
        behind = next(m for m in members if m is not leader)
        others = [m for m in members if m is not behind]
        c = client(leader.hosts)
        c.create("/before", b"x")
        c.sync("/")
        behind.kill()
        live = write_history(leader.hosts, "while-down")
        expected = tree(c)
        stop(c)
        # The two members holding the writes restart (kill -9: the log is all they
        # have); the one behind comes back once they lead again.
        for m in others:
            m.kill()
        for m in others:
            m.proc = m.launch(wait=True)
        assert servers.wait_for(lambda: sorted(servers.member_mode(m) for m in others)
                                == ["follower", "leader"], 60)
        mark = len(behind.log_text)
        behind.proc = behind.launch(wait=True)
        assert servers.wait_for(lambda: servers.settled(members), 60)
        log = behind.log_text[mark:]
        assert "syncs us by DIFF" in log, log[-3000:]
        assert "syncs us by SNAP" not in log
        b = client(behind.hosts)
        b.sync("/")
        assert tree(b) == expected
        stop(b)
        live.stop()
    finally:
        members.stop()


def test_a_zookeeper_member_takes_a_diff_from_a_restarted_ringkeeper_leader():
    """Apache ZooKeeper member 1 is down while ringkeeper members 2 and 3 take writes
    and restart; it comes back behind them, and ringkeeper's leader (3) syncs it by
    DIFF from the txns read back from its log."""
    zk = ZkEnsemble(3, tick_ms=500)
    rk = {}
    try:
        zk.start(1)
        rk = start_ringkeeper_members(zk, (2, 3))
        assert servers.wait_for(lambda: servers.member_mode(rk[3]) == "leader"
                                and zk.mode(1) == "follower", 60)
        c = client(rk[3].hosts)
        c.create("/before", b"x")
        c.sync("/")
        zk.kill(1)
        live = write_history(rk[3].hosts, "while-down")
        expected = tree(c)
        stop(c)
        for s in rk.values():
            s.kill()
        for s in rk.values():
            s.proc = s.launch(wait=False)
        for s in rk.values():
            servers._wait_ready(s.proc, s.port, s.data_dir.parent / "server.log", "ringkeeper")
        assert servers.wait_for(lambda: servers.member_mode(rk[3]) == "leader", 60)
        zk_log = zk.root / "m1" / "zookeeper.log"
        mark = len(zk_log.read_text(errors="replace"))
        zk.start(1)
        assert servers.wait_for(lambda: zk.mode(1) == "follower", 60)
        assert "syncing learner 1 by DIFF" in rk[3].log_text
        log = zk_log.read_text(errors="replace")[mark:]
        assert "Getting a diff from the leader" in log, log[-3000:]
        z = client(f"127.0.0.1:{zk.client_port[1]}")
        z.sync("/")
        assert tree(z) == expected
        # The same kinds of write, now proposed to the ZooKeeper member as they are
        # ordered (ZooKeeper 3.8.0 drops a whole multi holding a create2, which our
        # leaders once sent).
        write_history(rk[3].hosts, "live").stop()
        z.sync("/")
        r = client(rk[3].hosts)
        r.sync("/")
        assert tree(z) == tree(r)
        stop(r)
        # The live ephemeral's session came to ZooKeeper's member in the DIFF; its
        # close, ordered now, removes the ephemeral there too.
        live.stop()
        z.sync("/")
        assert z.exists("/while-down/live-eph") is None
        stop(z)
    finally:
        for s in rk.values():
            s.stop()
        zk.stop()


def wipe(member):
    """Empties a member's data dir but for its myid (a replaced disk)."""
    import shutil
    for p in member.data_dir.iterdir():
        if p.name != "myid":
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def fill(hosts, tag, n):
    c = client(hosts)
    c.ensure_path(f"/{tag}")
    for r in [c.create_async(f"/{tag}/n{i}", b"x" * (i % 300)) for i in range(n)]:
        r.get(timeout=30)
    stop(c)


def rejoin_wiped(extra, n):
    """A 3-member ensemble takes `n` creates (more than a leader keeps for DIFFs), a
    follower's disk is wiped, and it rejoins; returns its log since it restarted,
    the leader's, whether its tree matches the leader's, and the zxids of the
    leader's snapshot files."""
    members = servers.start_ringkeeper_ensemble(3, extra=extra)
    try:
        leader = leader_of(members)
        fill(leader.hosts, "bulk", n)
        wiped = next(m for m in members if m is not leader)
        wiped.kill()
        # More writes while it is away: what follows the leader's snapshot in its log.
        fill(leader.hosts, "later", 50)
        wipe(wiped)
        mark = len(wiped.log_text)
        leader_mark = len(leader.log_text)
        wiped.proc = wiped.launch(wait=True)
        assert servers.wait_for(lambda: servers.settled(members), 60)
        a, b = client(leader.hosts), client(wiped.hosts)
        b.sync("/")
        same = tree(a) == tree(b)
        stop(a)
        stop(b)
        snapshots = [int(p.name.split(".")[1], 16) for p in leader.data_dir.rglob("snapshot.*")
                     if not p.name.endswith(".tmp")]
        return wiped.log_text[mark:], leader.log_text[leader_mark:], same, snapshots
    finally:
        members.stop()


def test_a_wiped_member_gets_the_leaders_snapshot_file_and_log():
    log, leader_log, same, snapshots = rejoin_wiped({"snapCount": "200"}, 800)
    assert "by SNAP: snapshot file" in leader_log, leader_log[-3000:]
    # The leader's newest snapshot at or below the SNAP's zxid, and the log after it.
    snap_at = int(re.search(r"syncs us by SNAP \((0x[0-9a-f]+)\)", log).group(1), 16)
    m = re.search(r"SNAP \(snapshot file (0x[0-9a-f]+), (\d+) bytes, and (\d+) bytes of log\)", log)
    assert m, log[-3000:]
    assert int(m.group(1), 16) == max(z for z in snapshots if z <= snap_at) > 0, (m.group(0), snapshots)
    assert int(m.group(2)) > 0 and int(m.group(3)) > 0
    assert same


def test_without_a_snapshot_the_leaders_whole_log_is_sent():
    log, leader_log, same, snapshots = rejoin_wiped({}, 600)
    assert snapshots == []
    installed = [line for line in log.splitlines() if "SNAP (snapshot file" in line]
    assert installed and "SNAP (snapshot file 0x0, 0 bytes" in installed[0], installed
    assert same
