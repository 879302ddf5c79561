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
    "create /q", "create /q/a 12345",
    "setquota -N 4 /q", "listquota /q",
    "create /q/b x", "create /q/c y",
    "create /q/d z",                      # a fifth node: over countHardLimit=4
    "setquota -B 7 /q", "listquota /q",
    "set /q/a 1234567",                   # 7 + 2 bytes: over byteHardLimit=7
    "setquota -n 100 /q", "listquota /q",
    "setquota -n 3 /q/a",                 # refused by zkCli: /q has a quota
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


def test_zkcli_quota_commands_give_zookeepers_answers():
    zk = servers.start_zookeeper({"enforceQuota": "true"})
    rk = servers.start_ringkeeper({"enforceQuota": "true"})
    try:
        want, got = zkcli(zk, SCRIPT), zkcli(rk, SCRIPT)
    finally:
        zk.stop()
        rk.stop()
    assert got == want
    # What the script went through, so that an empty run cannot pass.
    assert "Quota has exceeded : /q/d" in want and "Quota has exceeded : /q/a" in want
    assert "Output stat for /q count=4,bytes=7" in want
    assert "/q/a has a parent /q which has a quota" in want
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
