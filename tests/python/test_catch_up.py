"""How a leader brings a member that fell behind back in line, on real processes.

- A leader that restarted still has its log's last txns for DIFFs (its history is
  rebuilt from the log at start, as ZooKeeper's is): a member a few txns behind gets a
  DIFF, not the whole tree. Checked with ringkeeper learners and with an Apache
  ZooKeeper 3.8 learner, which must take the txns read back from our log (headers with
  the session and cxid they were ordered for) exactly as its own leader's.
- A ringkeeper member that needs a SNAP from a ringkeeper leader gets the leader's
  snapshot file and the log after it (negotiated through LearnerInfo's protocol
  version), maps the file in place, and serves the same tree."""

import time

from kazoo.client import KazooClient

import servers
from zk_ensemble import ZkEnsemble


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
        for i in (2, 3):
            cfg = {"clientPort": str(zk.client_port[i]), "tickTime": "500", "initLimit": "10",
                   "syncLimit": "5"}
            for j in zk.ids:
                cfg[f"server.{j}"] = f"127.0.0.1:{zk.quorum_port[j]}:{zk.election_port[j]}"
            rk[i] = servers.start_ringkeeper(cfg, wait=False, myid=i)
        for s in rk.values():
            servers._wait_ready(s.proc, s.port, s.data_dir.parent / "server.log", "ringkeeper")
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
