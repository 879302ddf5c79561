"""The operator tools on real files: `ringkeeper-dump` reads the txn logs and snapshots
Apache ZooKeeper 3.8 and ringkeeper write (plain, gzip and snappy snapshots), and
names the offset of damage; `ringkeeper-export` turns a ringkeeper data directory into
one Apache ZooKeeper 3.8 starts from and serves identically."""

import json
import subprocess
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from kazoo.security import make_digest_acl

import rawzk
import servers

TOOLS = servers.RINGKEEPER_BIN.parent


def tool(name, *args):
    return subprocess.run([str(TOOLS / name), *map(str, args)], capture_output=True, text=True, timeout=120)


def client(hosts):
    c = KazooClient(hosts=hosts, timeout=10.0)
    c.start(timeout=30)
    return c


def write_everything(c, port, n=60):
    """Nodes of every kind: persistent, sequential, ephemeral, container, digest ACLs,
    empty and near-1 MB values, set and deleted ones. The client authenticates as the
    digest ACL's user (ZooKeeper 3.8 wants READ or ADMIN for getACL too)."""
    c.add_auth("digest", "alice:secret")
    c.create("/tools", b"root")
    for i in range(n):
        c.create(f"/tools/p{i}", b"v%d" % i)
    for i in range(5):
        c.create("/tools/seq-", b"s", sequence=True)
    c.create("/tools/eph", b"e", ephemeral=True)
    raw = rawzk.RawClient(port)  # kazoo cannot create containers
    err, _ = raw.create("/tools/container", b"", flags=4)
    raw.close()
    assert err == 0, err
    c.create("/tools/container/child", b"c")
    acl = make_digest_acl("alice", "secret", all=True)
    c.create("/tools/locked", b"private", acl=[acl])
    c.create("/tools/empty", b"")
    c.create("/tools/big", b"x" * 1_000_000)
    for i in range(0, n, 4):
        c.set(f"/tools/p{i}", b"changed")
    c.delete("/tools/p1")
    t = c.transaction()
    t.create("/tools/m", b"m")
    t.set_data("/tools/p2", b"multi")
    t.commit()


def walk(c, path="/"):
    """Every node (ZooKeeper's own /zookeeper aside): data, Stat and ACLs."""
    out = {}
    for child in c.get_children(path):
        p = path.rstrip("/") + "/" + child
        if p == "/zookeeper":
            continue
        data, stat = c.get(p)
        acls, _ = c.get_acls(p)
        out[p] = (data, stat, [(a.perms, a.id.scheme, a.id.id) for a in acls])
        out.update(walk(c, p))
    return out


def version2(server):
    return server.data_dir / "version-2"


@pytest.fixture(scope="module")
def zk_files():
    """A ZooKeeper data directory with snapshots and logs, its server killed with -9,
    then started again (ZooKeeper snapshots what it loaded) and killed again."""
    zk = servers.start_zookeeper({"snapCount": "40"})
    try:
        c = client(zk.hosts)
        write_everything(c, zk.port)
        expected = walk(c)
        zk.kill()
        c.stop()
        zk.restart()
        zk.kill()
        yield zk, expected
    finally:
        zk.stop()


def test_dump_lists_every_txn_of_zookeepers_logs(zk_files):
    zk, expected = zk_files
    logs = sorted(version2(zk).glob("log.*"))
    assert logs
    created = set()
    for log in logs:
        r = tool("ringkeeper-dump", "log", log, "--json")
        assert r.returncode == 0, r.stderr
        for line in r.stdout.splitlines():
            rec = json.loads(line)
            if rec.get("type") in ("create", "create2", "createContainer"):
                created.add(rec["path"])
            if rec.get("type") == "multi":
                assert "create /tools/m" in rec["summary"], rec
                created.add("/tools/m")
    assert set(expected) - created == set(), sorted(set(expected) - created)
    assert "/tools/p1" in created, "a node created, then deleted, is in the log"
    text = tool("ringkeeper-dump", "log", logs[0]).stdout
    assert "createSession" in text and "create" in text and "session 0x" in text


def test_dump_reads_zookeepers_snapshot_with_its_stats(zk_files):
    zk, expected = zk_files
    snaps = sorted(version2(zk).glob("snapshot.*"), key=lambda p: int(p.name.split(".")[1], 16))
    assert len(snaps) >= 2
    r = tool("ringkeeper-dump", "snapshot", snaps[-1], "--json")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert lines[0]["format"] == "zookeeper"
    nodes = {x["path"]: x for x in lines if "path" in x}
    assert set(expected) <= set(nodes), sorted(set(expected) - set(nodes))
    for p, (data, stat, _) in expected.items():
        n = nodes[p]
        assert (int(n["czxid"], 16), int(n["mzxid"], 16), n["version"], n["dataLength"]) == \
            (stat.czxid, stat.mzxid, stat.version, len(data)), p
        if p != "/tools/container":
            assert n["ephemeralOwner"] == hex(stat.ephemeralOwner), p
    # The snapshot holds the container's marker owner, which clients are shown as 0.
    assert nodes["/tools/container"]["ephemeralOwner"] == "0x8000000000000000"
    assert nodes["/tools/locked"]["acl"].startswith("digest:alice:")
    assert "/tools/big" in nodes and nodes["/tools/big"]["dataLength"] == 1_000_000


def test_dump_names_the_offset_of_damage(zk_files, tmp_path):
    zk, _ = zk_files
    log = sorted(version2(zk).glob("log.*"))[0]
    bad = tmp_path / log.name
    b = bytearray(log.read_bytes())
    b[200] ^= 0x10
    bad.write_bytes(bytes(b))
    r = tool("ringkeeper-dump", "log", bad)
    assert r.returncode == 1
    assert f"{bad} at offset" in r.stderr and "checksum" in r.stderr, r.stderr
    snap = sorted(version2(zk).glob("snapshot.*"))[-1]
    cut = tmp_path / snap.name
    cut.write_bytes(snap.read_bytes()[:-30])
    r = tool("ringkeeper-dump", "snapshot", cut)
    assert r.returncode == 1 and "at offset" in r.stderr, r.stderr


@pytest.mark.parametrize("method", ["gz", "snappy"])
def test_dump_reads_compressed_zookeeper_snapshots(method):
    zk = servers.start_zookeeper({"snapCount": "20", "snapshot.compression.method": method})
    try:
        c = client(zk.hosts)
        for i in range(60):
            c.create(f"/c{i}", b"%d" % i)
        expected = walk(c)
        c.stop()
        snaps = sorted(version2(zk).glob(f"snapshot.*.{method}"), key=lambda p: int(p.name.split(".")[1], 16))
        assert snaps, list(version2(zk).iterdir())
        r = tool("ringkeeper-dump", "snapshot", snaps[-1], "--json")
        assert r.returncode == 0, r.stderr
        paths = {json.loads(x).get("path") for x in r.stdout.splitlines()}
        assert len(paths & set(expected)) >= 40
    finally:
        zk.stop()


def test_dump_reads_ringkeepers_log_and_snapshot():
    rk = servers.start_ringkeeper({"snapCount": "40"})
    try:
        c = client(rk.hosts)
        write_everything(c, rk.port)
        session = c.client_id[0]
        expected = walk(c)
        rk.kill()
        store = rk.data_dir / "ringkeeper"
        created, origins = set(), set()
        for log in sorted(store.glob("log.*")):
            r = tool("ringkeeper-dump", "log", log, "--json")
            assert r.returncode == 0, r.stderr
            for line in r.stdout.splitlines():
                rec = json.loads(line)
                if rec.get("type") in ("create2", "createContainer"):
                    created.add(rec["path"])
                    origins.add(int(rec["session"], 16))
        assert "/tools/big" in created and session in origins
        snap = sorted(store.glob("snapshot.*"))[-1]
        r = tool("ringkeeper-dump", "snapshot", snap)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("ringkeeper snapshot of zxid 0x")
        assert f"session {hex(session)}" in r.stdout
        assert expected
    finally:
        rk.stop()


def test_export_gives_zookeeper_the_same_tree():
    rk = servers.start_ringkeeper({"snapCount": "40"})
    zk = None
    try:
        c = client(rk.hosts)
        write_everything(c, rk.port)
        expected = walk(c)
        rk.kill()  # the ephemeral's session is alive in the data
        out = Path(rk.tmp.name) / "zk-data"
        r = tool("ringkeeper-export", rk.data_dir, out)
        assert r.returncode == 0, r.stderr
        assert "exported" in r.stdout
        # A second export into the same place is refused: nothing is overwritten.
        again = tool("ringkeeper-export", rk.data_dir, out)
        assert again.returncode == 1 and "already holds files" in again.stderr
        zk = servers.start_zookeeper({"dataDir": str(out)})
        z = client(zk.hosts)
        z.add_auth("digest", "alice:secret")
        assert walk(z) == expected
        assert z.get("/tools/locked")[0] == b"private"
        # ZooKeeper serves it as its own: writes go on from the exported zxid.
        stat = z.set("/tools/p0", b"after")
        assert stat.mzxid > expected["/tools/p0"][1].mzxid
        z.stop()
    finally:
        rk.stop()
        if zk:
            zk.stop()


def test_export_refuses_a_running_server_and_a_non_ringkeeper_dir(tmp_path):
    rk = servers.start_ringkeeper()
    try:
        r = tool("ringkeeper-export", rk.data_dir, tmp_path / "out")
        assert r.returncode == 1 and "stop the server" in r.stderr, r.stderr
    finally:
        rk.stop()
    r = tool("ringkeeper-export", tmp_path, tmp_path / "out")
    assert r.returncode == 1 and "holds no ringkeeper data" in r.stderr


TTL_MS = 3_600_000
EXTENDED = {"extendedTypesEnabled": "true", "znode.container.checkIntervalMs": "3600000"}


@pytest.fixture
def zk_killed():
    """A ZooKeeper 3.8 data directory as a kill -9 leaves it: a snapshot (ZooKeeper
    takes one at start: it was restarted halfway) and a log tail past it, holding
    nodes of every kind and a session still alive; with the tree ZooKeeper served."""
    zk = servers.start_zookeeper(dict(EXTENDED, snapCount="1000000"))
    try:
        c = client(zk.hosts)
        c.add_auth("digest", "alice:secret")
        c.create("/half", b"before the restart")
        for i in range(30):
            c.create(f"/half/n{i}", b"%d" % i, sequence=i % 2 == 0)
        # A few thousand more, half before the restart's snapshot, half after it.
        c.ensure_path("/bulk")
        for r in [c.create_async(f"/bulk/a{i}", b"x" * (i % 200)) for i in range(1500)]:
            r.get(timeout=30)
        c.stop()
        zk.restart()  # its snapshot at start holds the first half
        write_everything(c := client(zk.hosts), zk.port)
        for r in [c.create_async(f"/bulk/b{i}", b"y" * (i % 300), ephemeral=i % 10 == 0)
                  for i in range(1500)]:
            r.get(timeout=30)
        for r in [c.set_async(f"/bulk/a{i}", b"changed") for i in range(0, 1500, 7)]:
            r.get(timeout=30)
        raw = rawzk.RawClient(zk.port)
        err, _ = raw.create("/tools/ttl", b"t", flags=5, ttl=TTL_MS)
        assert err == 0, err
        raw.close()
        expected = walk(c)
        zk.kill()
        yield zk, expected
        c.stop()
    finally:
        zk.stop()


def newest(paths):
    return max(paths, key=lambda p: int(p.name.split(".")[1], 16))


def test_import_serves_what_zookeeper_served(zk_killed, tmp_path):
    zk, expected = zk_killed
    v2 = version2(zk)
    snap = newest(v2.glob("snapshot.*"))
    tail = [json.loads(x) for log in sorted(v2.glob("log.*"))
            for x in tool("ringkeeper-dump", "log", log, "--json").stdout.splitlines()]
    assert any(int(r["zxid"], 16) > int(snap.name.split(".")[1], 16) for r in tail if "zxid" in r), \
        "the log has a tail past the newest snapshot"
    rk_dir = tmp_path / "rk"
    r = tool("ringkeeper-import", zk.data_dir, rk_dir)
    assert r.returncode == 0, r.stderr
    assert "imported" in r.stdout and "logged txns after it" in r.stdout
    rk = servers.start_ringkeeper(dict(EXTENDED, dataDir=str(rk_dir)))
    try:
        c = client(rk.hosts)
        c.add_auth("digest", "alice:secret")
        assert walk(c) == expected
        # ringkeeper goes on from ZooKeeper's last zxid.
        assert c.set("/tools/p0", b"next").mzxid > max(s.mzxid for _, s, _ in expected.values())
        c.stop()
        # A second import into the same place is refused.
        again = tool("ringkeeper-import", zk.data_dir, rk_dir)
        assert again.returncode == 1 and "already holds ringkeeper data" in again.stderr
    finally:
        rk.stop()


def test_zookeeper_to_ringkeeper_and_back_keeps_everything(zk_killed, tmp_path):
    zk, _ = zk_killed
    rk_dir = tmp_path / "rk"
    assert tool("ringkeeper-import", zk.data_dir, rk_dir).returncode == 0
    rk = servers.start_ringkeeper(dict(EXTENDED, dataDir=str(rk_dir)))
    back = None
    try:
        c = client(rk.hosts)
        c.add_auth("digest", "alice:secret")
        c.create("/on-ringkeeper", b"written after the import")
        c.set("/half", b"changed on ringkeeper")
        c.delete("/tools/p3")
        served = walk(c)
        c.stop()
        rk.kill()
        out = tmp_path / "zk-again"
        r = tool("ringkeeper-export", rk_dir, out)
        assert r.returncode == 0, r.stderr
        back = servers.start_zookeeper(dict(EXTENDED, dataDir=str(out)))
        z = client(back.hosts)
        z.add_auth("digest", "alice:secret")
        assert walk(z) == served
        z.stop()
    finally:
        rk.stop()
        if back:
            back.stop()


def test_damaged_zookeeper_data_is_refused_with_file_and_offset(zk_killed, tmp_path):
    zk, _ = zk_killed
    src = version2(zk)

    def copy_with(change):
        d = tmp_path / f"zk{len(list(tmp_path.iterdir()))}"
        (d / "version-2").mkdir(parents=True)
        for f in src.iterdir():
            (d / "version-2" / f.name).write_bytes(f.read_bytes())
        change(d / "version-2")
        return d

    def refused(zk_dir, *words):
        out = tmp_path / "rk-out"
        r = tool("ringkeeper-import", zk_dir, out)
        assert r.returncode == 1, r.stdout
        for w in words:
            assert w in r.stderr, r.stderr
        assert not out.exists(), "nothing is written for a damaged input"

    def flip(path, at):
        b = bytearray(path.read_bytes())
        b[at] ^= 0x20
        path.write_bytes(bytes(b))

    snap = newest(src.glob("snapshot.*")).name
    log = newest(src.glob("log.*")).name
    refused(copy_with(lambda d: flip(d / snap, 100)), snap, "at offset")
    refused(copy_with(lambda d: flip(d / log, 60)), log, "at offset", "checksum")
    # The newest snapshot missing, with the logs before it (as a purge leaves them):
    # the log that is left does not follow the older snapshot.
    def lose_snapshot(d):
        z = int(snap.split(".")[1], 16)
        (d / snap).unlink()
        for f in d.glob("log.*"):
            if int(f.name.split(".")[1], 16) <= z:
                f.unlink()
    refused(copy_with(lose_snapshot), log, "does not follow")
    # A truncated snapshot.
    refused(copy_with(lambda d: (d / snap).write_bytes((d / snap).read_bytes()[:-40])), snap, "at offset")


def test_export_refuses_a_damaged_ringkeeper_dir_and_writes_nothing(tmp_path):
    rk = servers.start_ringkeeper({"snapCount": "40"})
    try:
        c = client(rk.hosts)
        write_everything(c, rk.port)
        c.stop()
        rk.kill()
        store = rk.data_dir / "ringkeeper"
        snap = sorted(store.glob("snapshot.*"))[-1]
        b = bytearray(snap.read_bytes())
        b[len(b) // 2] ^= 0x08
        snap.write_bytes(bytes(b))
        out = tmp_path / "zk"
        r = tool("ringkeeper-export", rk.data_dir, out)
        assert r.returncode == 1 and str(snap) in r.stderr and "offset" in r.stderr, r.stderr
        assert not (out / "version-2").exists()
    finally:
        rk.stop()
