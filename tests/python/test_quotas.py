"""Quotas as ZooKeeper 3.7+ has them: zkCli's setquota, listquota and delquota (plain
creates, reads and deletes of /zookeeper/quota nodes; the server keeps the usage) and
hard limits failing writes with QUOTAEXCEEDED under zookeeper.enforceQuota. The same
zkCli script runs against Apache ZooKeeper 3.8 and ringkeeper; their outputs must be
the same."""

import subprocess

from kazoo.client import KazooClient

import rawzk
import servers

ZKCLI = "/usr/share/zookeeper/bin/zkCli.sh"
QUOTA_EXCEEDED = -125

SCRIPT = [
    "listquota /q", "delquota /q",        # no quota yet
    "create /q", "create /q/a 12345",
    "setquota /q",                        # no limit given
    "setquota -n 0 /q", "setquota -b x /q", "setquota -N 2 /nothere",
    "setquota -N 1 /zookeeper/quota/q",
    "setquota -N 4 /q", "listquota /q",
    "create /q/b x", "create /q/c y",
    "create /q/d z",                      # a fifth node: over countHardLimit=4
    "setquota -B 7 /q", "listquota /q",
    "set /q/a 1234567",                   # 7 + 2 bytes: over byteHardLimit=7
    "setquota -n 100 /q", "listquota /q",
    "setquota -n 3 /q/a",                 # refused by zkCli: /q has a quota
    "setquota -n 1 /q",                   # below the usage: a warning
    "delquota -N /q", "listquota /q",
    "delquota /q", "listquota /q",
    "create /q/d z",                      # no quota any more
    "quit",
]


def zkcli(server, lines):
    p = subprocess.run([ZKCLI, "-server", server.hosts], input="\n".join(lines) + "\n", capture_output=True,
                       text=True, timeout=120)
    out = p.stdout + p.stderr
    # The session's own chatter (log lines, the address, SLF4J) is not the commands'.
    return [l for l in out.splitlines() if l.strip() and "INFO" not in l and "SLF4J" not in l
            and "WATCHER" not in l and "WatchedEvent" not in l and not l.startswith("Connecting to")]


def rkcli(server, lines):
    """The same commands through ringkeeper-cli, one command-mode run each (a script
    on its stdin stops at the first failure, zkCli's goes on); its output joined as
    zkcli joins zkCli's: everything printed on stdout, then everything on stderr."""
    out, err = [], []
    for line in lines:
        if line == "quit":
            continue
        p = subprocess.run([str(servers.RINGKEEPER_BIN.parent / "ringkeeper-cli"), "--server", server.hosts,
                            "-c", line], capture_output=True, text=True, timeout=60)
        out += [l for l in p.stdout.splitlines() if l.strip()]
        err += [l for l in p.stderr.splitlines() if l.strip()]
    return out + err


def test_zkcli_quota_commands_give_zookeepers_answers():
    zk = servers.start_zookeeper({"enforceQuota": "true"})
    rk = servers.start_ringkeeper({"enforceQuota": "true"})
    try:
        want, got = zkcli(zk, SCRIPT), zkcli(rk, SCRIPT)
        # ringkeeper-cli's setquota, listquota and delquota, against ringkeeper: the
        # same lines as zkCli's against ZooKeeper, in the same order.
        rkcli(rk, ["deleteall /q", "deleteall /zookeeper/quota/q"])
        ours = rkcli(rk, SCRIPT)
    finally:
        zk.stop()
        rk.stop()
    assert got == want
    banners = ("Welcome to ZooKeeper!", "JLine support is disabled")
    theirs = [l for l in want if l not in banners]
    assert ours == theirs, "\n".join(f"{a!r:80} {b!r}" for a, b in zip(ours, theirs))
    # What the script went through, so that an empty run cannot pass.
    assert "Quota has exceeded : /q/d" in want and "Quota has exceeded : /q/a" in want
    assert "Output stat for /q count=4,bytes=7" in want
    assert "/q/a has a parent /q which has a quota" in want
    assert "[Warning]: the count quota you create is less than the existing count:4" in want
    assert "Quota does not exist for /q" in want and "quota for /q does not exist." in want
    assert want[-1] == "Created /q/d"


def set_quota(zk, path, limits):
    zk.ensure_path(f"/zookeeper/quota{path}")
    zk.create(f"/zookeeper/quota{path}/zookeeper_stats", b"count=0,bytes=0")
    zk.create(f"/zookeeper/quota{path}/zookeeper_limits", limits.encode())


def usage(zk, path):
    return zk.get(f"/zookeeper/quota{path}/zookeeper_stats")[0].decode()


def test_the_usage_survives_a_restart_and_hard_limits_answer_quota_exceeded():
    rk = servers.start_ringkeeper({"enforceQuota": "true"})
    try:
        zk = KazooClient(hosts=rk.hosts)
        zk.start()
        zk.create("/app/x", b"12", makepath=True)
        set_quota(zk, "/app", "count=-1,bytes=-1=;byteHardLimit=-1;countHardLimit=3")
        assert usage(zk, "/app") == "count=2,bytes=2"
        zk.stop()
        rk.kill()
        rk.restart()
        c = rawzk.RawClient(rk.port)
        assert c.get_data("/zookeeper/quota/app/zookeeper_stats")[1] == b"count=2,bytes=2"
        assert c.create("/app/y", b"345")[0] == 0
        # The wire error ZooKeeper sends: QUOTAEXCEEDED (-125); nothing was created.
        assert c.create("/app/z", b"")[0] == QUOTA_EXCEEDED
        assert c.exists("/app/z")[0] == -101
        assert c.get_data("/zookeeper/quota/app/zookeeper_stats")[1] == b"count=3,bytes=5"
    finally:
        rk.stop()


def test_without_enforce_quota_a_soft_limit_only_warns():
    rk = servers.start_ringkeeper()
    try:
        zk = KazooClient(hosts=rk.hosts)
        zk.start()
        zk.create("/soft")
        set_quota(zk, "/soft", "count=2,bytes=-1=;byteHardLimit=-1;countHardLimit=2")
        for i in range(3):
            zk.create(f"/soft/{i}")
        assert usage(zk, "/soft") == "count=4,bytes=0"
        assert "Quota exceeded: /soft count=3 limit=2" in rk.log_text
        zk.stop()
    finally:
        rk.stop()


def test_quotas_hold_through_a_follower():
    """The leader checks the limit; every member keeps the usage in its own tree."""
    members = servers.start_ringkeeper_ensemble(3, extra={"enforceQuota": "true"})
    try:
        follower = next(m for m in members if servers.member_mode(m) == "follower")
        zk = KazooClient(hosts=follower.hosts)
        zk.start()
        zk.create("/ens")
        set_quota(zk, "/ens", "count=-1,bytes=-1=;byteHardLimit=4;countHardLimit=-1")
        zk.create("/ens/a", b"1234")
        c = rawzk.RawClient(follower.port)
        assert c.set_data("/ens/a", b"12345") == QUOTA_EXCEEDED
        zk.sync("/ens")
        for m in members:
            mc = rawzk.RawClient(m.port)
            assert mc.get_data("/zookeeper/quota/ens/zookeeper_stats")[1] == b"count=2,bytes=4", m.port
        zk.stop()
    finally:
        members.stop()
