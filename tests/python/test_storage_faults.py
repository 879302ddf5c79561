"""Damaged and full disks: a corrupted or torn txn log, a damaged snapshot, and a data
directory that runs out of space. Each must end the way the storage contract says:
a torn tail is dropped with one log line; damage elsewhere stops start-up naming the
file and offset; a full disk refuses writes (NOTREADONLY) while reads go on, and no
acknowledged write is lost."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import struct

from rawzk import OPEN_ACL, RawClient, s_buf, s_str
import servers
from servers import start_ringkeeper, wait_for

NOT_READ_ONLY = -119
NO_NODE = -101


def segments(srv):
    return sorted((srv.data_dir / "ringkeeper").glob("log.*"))


def snapshots(srv):
    """Published snapshots (not the temp file of one being written)."""
    return sorted(p for p in (srv.data_dir / "ringkeeper").glob("snapshot.*") if not p.name.endswith(".tmp"))


def write_nodes(port, prefix, n, data=b"x" * 50):
    c = RawClient(port)
    for i in range(n):
        err, _ = c.create(f"{prefix}{i}", data)
        assert err == 0, err
    c.close()


def assert_nodes(port, prefix, n, data=b"x" * 50):
    c = RawClient(port)
    for i in range(n):
        assert c.get_data(f"{prefix}{i}") == (0, data), f"{prefix}{i}"
    c.close()


def write_then_snapshot(srv, prefix, snapshots_after):
    """Writes 20 nodes under `prefix`, asks for a snapshot (SIGUSR1) and waits until
    `snapshots_after` snapshots are published."""
    write_nodes(srv.port, prefix, 20)
    os.kill(srv.proc.pid, signal.SIGUSR1)
    assert wait_for(lambda: len(snapshots(srv)) == snapshots_after, 10)


def restart_expecting_failure(srv):
    """Restarts and expects start-up to stop; returns the server's log of that attempt."""
    srv.kill()
    before = len(srv.log_text)
    proc = srv.launch(wait=False)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("the server started on damaged data")
    srv.proc = proc
    assert proc.returncode != 0
    return srv.log_text[before:]


def valid_end(seg):
    """Offset after the last non-zero byte of a segment."""
    b = seg.read_bytes()
    return len(b.rstrip(b"\0"))


def test_torn_tail_is_dropped_and_the_log_goes_on():
    srv = start_ringkeeper()
    try:
        write_nodes(srv.port, "/t", 30)
        srv.kill()
        seg = segments(srv)[-1]
        end = valid_end(seg)
        # A crash mid-write: half a record (a plausible header, then nothing).
        with open(seg, "r+b") as f:
            f.seek(end)
            f.write(b"\0\0\0\x40" + b"\xab" * 20)
        srv.restart()
        assert "discarding a torn write" in srv.log_text
        assert_nodes(srv.port, "/t", 30)
        write_nodes(srv.port, "/u", 5)
        srv.restart()
        assert_nodes(srv.port, "/t", 30)
        assert_nodes(srv.port, "/u", 5)
    finally:
        srv.stop()


def test_damage_inside_the_log_stops_start_up_naming_file_and_offset():
    srv = start_ringkeeper()
    try:
        write_nodes(srv.port, "/c", 30)
        srv.kill()
        seg = segments(srv)[-1]
        with open(seg, "r+b") as f:
            f.seek(200)
            b = f.read(1)
            f.seek(200)
            f.write(bytes([b[0] ^ 0x01]))
        log = restart_expecting_failure(srv)
        assert seg.name in log and "offset" in log, log[-2000:]
    finally:
        srv.stop()


def test_damaged_snapshot_stops_start_up_unless_told_to_fall_back():
    srv = start_ringkeeper()
    try:
        write_then_snapshot(srv, "/a", 1)
        write_then_snapshot(srv, "/b", 2)
        write_nodes(srv.port, "/c", 20)
        newest = snapshots(srv)[-1]
        srv.kill()
        data = bytearray(newest.read_bytes())
        data[len(data) // 2] ^= 0x20
        newest.write_bytes(bytes(data))
        log = restart_expecting_failure(srv)
        assert newest.name in log and "offset" in log, log[-2000:]
        assert "--recover-from-older-snapshot" in log
        # The operator's way out: the previous snapshot plus the log.
        cfg = Path(srv.tmp.name) / "zoo.cfg"
        cfg.write_text(cfg.read_text() + "recovery.fallbackToOlderSnapshot=true\n")
        srv.restart()
        for prefix in ("/a", "/b", "/c"):
            assert_nodes(srv.port, prefix, 20)
    finally:
        srv.stop()


def test_truncated_snapshot_is_reported():
    srv = start_ringkeeper()
    try:
        write_then_snapshot(srv, "/a", 1)
        srv.kill()
        snap = snapshots(srv)[-1]
        snap.write_bytes(snap.read_bytes()[:-7])
        log = restart_expecting_failure(srv)
        assert snap.name in log and "truncated" in log, log[-2000:]
    finally:
        srv.stop()


def test_half_made_files_of_a_crash_are_removed_and_never_read():
    srv = start_ringkeeper()
    try:
        write_then_snapshot(srv, "/a", 1)
        write_nodes(srv.port, "/b", 20)
        srv.kill()
        d = srv.data_dir / "ringkeeper"
        # What a kill leaves mid-snapshot and mid-roll-over (zxids newer than anything
        # on disk, so reading either would change the outcome), and a file an earlier
        # start set aside but did not get to remove.
        leftovers = [d / "snapshot.00000000000fffff.tmp", d / "log.00000000000fffff.tmp",
                     d / "snapshot.0000000000000002.discard-1.tmp"]
        for p in leftovers:
            p.write_bytes(os.urandom(1 << 20))
        srv.restart()
        assert_nodes(srv.port, "/a", 20)
        assert_nodes(srv.port, "/b", 20)
        # Removed after start-up, each with a log line once it is gone.
        assert wait_for(lambda: srv.log_text.count("removed unfinished") == 3, 10), srv.log_text[-2000:]
        assert not any(p.name.endswith(".tmp") for p in d.iterdir()), sorted(p.name for p in d.iterdir())
        write_nodes(srv.port, "/c", 5)
        srv.restart()
        assert_nodes(srv.port, "/c", 5)
    finally:
        srv.stop()


def mount_small_tmpfs(size_mib):
    d = tempfile.mkdtemp(prefix="rk-full-")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", d], capture_output=True, text=True)
    assert r.returncode == 0, f"cannot mount a small tmpfs (the test needs root): {r.stderr}"

    def unmount():
        subprocess.run(["umount", "-l", d], check=True)
        os.rmdir(d)
    return Path(d), unmount


def mount_small_ext4(size_mib):
    """ext4 on a loop device: the txn log takes its O_DIRECT path there (tmpfs has
    none), and the file system fills up for real (no reserved blocks: the server runs
    as root, which could use them)."""
    root = Path(tempfile.mkdtemp(prefix="rk-ext4-"))
    image, mnt = root / "image", root / "mnt"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(size_mib << 20)
    r = subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(image)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], capture_output=True, text=True)
    assert r.returncode == 0, f"cannot mount ext4 on a loop device (the test needs root): {r.stderr}"
    shutil.rmtree(mnt / "lost+found", ignore_errors=True)

    def unmount():
        subprocess.run(["umount", str(mnt)], check=True)
        shutil.rmtree(root)
    return mnt, unmount


@pytest.fixture
def small_tmpfs():
    d, unmount = mount_small_tmpfs(3)
    try:
        yield d
    finally:
        unmount()


@pytest.fixture(params=["tmpfs", "ext4-loop"])
def small_fs(request):
    """A small file system that fills up: a tmpfs (buffered log writes) or ext4 on a
    loop device (direct I/O)."""
    d, unmount = mount_small_tmpfs(3) if request.param == "tmpfs" else mount_small_ext4(8)
    try:
        yield d
    finally:
        unmount()


def write_until_the_log_fails(port, value, c=None):
    """Creates nodes (through client `c`, or a new session) until the server stops
    taking writes. Returns the acknowledged paths, the path whose outcome is unknown
    (its connection was closed; None if the first refused write was answered
    NOTREADONLY because the log had already failed on another txn), and a client on
    the same session."""
    c = c or RawClient(port)
    sid, pw = c.session_id, c.passwd
    acked = []
    for i in range(100000):
        try:
            err, _ = c.create(f"/big{i}", value)
        except ConnectionError:
            # The write's batch failed: outcome unknown, as after a crash. The session
            # lives on: reconnect to it.
            return acked, f"/big{i}", RawClient(port, session_id=sid, passwd=pw, timeout_ms=c.timeout_ms)
        if err == NOT_READ_ONLY:
            return acked, None, c
        assert err == 0, f"create answered {err}"
        acked.append(f"/big{i}")
    raise AssertionError("the log never failed")


def assert_refuses_writes_serves_reads(port, c, acked, value):
    assert c.get_data(acked[0]) == (0, value)
    assert c.set_data(acked[0], b"y") == NOT_READ_ONLY
    assert c.create("/after", b"")[0] == NOT_READ_ONLY
    assert c.get_data(acked[-1]) == (0, value)
    # No new session: it could not be made durable (a restart would forget it).
    with pytest.raises((ConnectionError, OSError)):
        RawClient(port, socket_timeout_s=5)


def assert_survived(srv, acked, value, unknown=None):
    c = RawClient(srv.port)
    for p in acked:
        assert c.get_data(p) == (0, value), p
    assert c.exists("/after")[0] != 0, "a refused write appeared"
    if unknown is not None:
        # Its outcome was unknown to the client, but it is all or nothing.
        err, data = c.get_data(unknown)
        assert (err, data) in ((0, value), (NO_NODE, None)), (unknown, err, len(data or b""))
    c.close()


def fill(d, leave_bytes=0):
    """Fills the file system at `d` with a file, leaving `leave_bytes` free; returns it."""
    filler = d / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    os.truncate(filler, max(0, os.path.getsize(filler) - leave_bytes))
    return filler


def test_full_disk_refuses_writes_keeps_reads_and_loses_nothing(small_fs):
    srv = start_ringkeeper({"dataDir": str(small_fs), "preAllocSize": "512", "snapCount": "1000000"})
    try:
        value = os.urandom(20000)
        acked, unknown, c = write_until_the_log_fails(srv.port, value)
        assert len(acked) > 10
        assert "No space left on device" in srv.log_text
        assert "refusing writes" in srv.log_text
        assert_refuses_writes_serves_reads(srv.port, c, acked, value)
        c.close()
        srv.restart()
        assert_survived(srv, acked, value, unknown)
    finally:
        srv.stop()


def test_replies_while_the_disk_is_full_carry_only_zxids_on_disk(small_tmpfs):
    """A refusal and a sync answered while the log cannot take writes carry the zxid
    of the last txn on disk, not that of a txn that failed: after a restart the client
    reconnects with the last zxid it saw (a server refuses a client that has seen more
    than it holds)."""
    srv = start_ringkeeper({"dataDir": str(small_tmpfs), "preAllocSize": "512", "snapCount": "1000000"})
    try:
        value = os.urandom(20000)
        _acked, _unknown, c = write_until_the_log_fails(srv.port, value)
        seen = []
        err, zxid, _ = c.call(15, s_str("/refused") + s_buf(b"") + OPEN_ACL + struct.pack(">i", 0))
        assert err == NOT_READ_ONLY
        seen.append(zxid)
        err, zxid, _ = c.call(9, s_str("/"))
        assert err == 0
        seen.append(zxid)
        sid, pw = c.session_id, c.passwd
        c.close()
        srv.restart()
        on_disk = int(srv.four("srvr").split("Zxid: ")[1].split()[0], 16)
        assert max(seen) <= on_disk, (hex(on_disk), [hex(z) for z in seen])
        # The session lives on across the restart, and the client is not refused.
        again = RawClient(srv.port, session_id=sid, passwd=pw, last_zxid=max(seen))
        assert again.session_id == sid
        assert again.exists("/")[0] == 0
        again.close()
    finally:
        srv.stop()


def test_a_full_disk_with_room_again_takes_writes_and_expires_sessions(small_fs):
    """Once space is freed the log takes writes again (a segment roll that found the
    disk full wrote nothing, so nothing is in doubt), from the state on disk: a
    session whose client left while the disk was full expires then, its ephemeral
    goes, and the container that held it is cleaned up. Every acknowledged write
    survives a restart after that."""
    d = small_fs
    filler = d / "room"
    filler.write_bytes(b"\0" * (1 << 20))
    srv = start_ringkeeper({"dataDir": str(d / "data"), "preAllocSize": "256", "snapCount": "1000000",
                            "znode.container.checkIntervalMs": "300"})
    try:
        leaver = RawClient(srv.port, timeout_ms=4000)
        assert leaver.create("/box", b"", flags=4)[0] == 0
        assert leaver.create("/box/e", b"", flags=1)[0] == 0
        value = os.urandom(20000)
        acked, unknown, c = write_until_the_log_fails(srv.port, value)
        assert "refusing writes until the disk has room" in srv.log_text
        assert_refuses_writes_serves_reads(srv.port, c, acked, value)
        # The client goes without closing its session, while no expiry can be logged.
        leaver.close()
        assert c.get_data("/box/e")[0] == 0
        filler.unlink()
        assert wait_for(lambda: c.create("/after-room", b"")[0] == 0, 20), srv.log_text[-2000:]
        assert "the txn log has room again" in srv.log_text
        # The leaver's session expires now, and the emptied container goes.
        assert wait_for(lambda: c.exists("/box/e")[0] == NO_NODE, 15), srv.log_text[-2000:]
        assert wait_for(lambda: c.exists("/box")[0] == NO_NODE, 15), srv.log_text[-2000:]
        # New sessions are granted again.
        fresh = RawClient(srv.port)
        assert fresh.create("/fresh", b"f")[0] == 0
        fresh.close()
        c.close()
        srv.restart()
        assert_survived(srv, acked, value, unknown)
        c = RawClient(srv.port)
        assert c.get_data("/after-room") == (0, b"")
        assert c.get_data("/fresh") == (0, b"f")
        assert c.exists("/box")[0] == NO_NODE
        c.close()
    finally:
        srv.stop()


@pytest.fixture
def faulty_disk():
    """A FUSE mount of ours that fails writes or fsyncs on command."""
    root = Path(tempfile.mkdtemp(prefix="rk-faultfs-"))
    backing, mnt, ctl = root / "backing", root / "mnt", root / "ctl"
    for d in (backing, mnt, ctl):
        d.mkdir()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("faultfs.py")), str(backing), str(mnt), str(ctl)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: os.path.ismount(mnt), 10), "faultfs did not mount (needs /dev/fuse, libfuse2, fusepy)"
        yield mnt, ctl
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("fault", ["fsync_eio", "write_eio"])
def test_eio_refuses_writes_without_retrying_and_loses_nothing(faulty_disk, fault):
    """The log's writes are O_DSYNC: a failing sync surfaces as a failed write."""
    mnt, ctl = faulty_disk
    message = "writing"
    srv = start_ringkeeper({"dataDir": str(mnt), "preAllocSize": "256"})
    try:
        value = b"v" * 300
        write_nodes(srv.port, "/ok", 20, value)
        # The session first: once the disk fails, no new one can be made durable.
        c = RawClient(srv.port)
        (ctl / fault).touch()
        acked, _unknown, c = write_until_the_log_fails(srv.port, value, c)
        log = srv.log_text
        assert message in log and "Input/output error" in log, log[-2000:]
        assert "refusing writes" in log
        assert_refuses_writes_serves_reads(srv.port, c, [f"/ok{i}" for i in range(20)] + acked, value)
        # The disk is fine again, but the server does not retry: after a failed fsync
        # the kernel may have dropped the pages, so a retry could "succeed" falsely.
        (ctl / fault).unlink()
        assert c.create("/after", b"")[0] == NOT_READ_ONLY
        c.close()
        srv.restart()
        assert_nodes(srv.port, "/ok", 20, value)
        assert_survived(srv, acked, value)
        write_nodes(srv.port, "/again", 5)
    finally:
        srv.stop()


def test_a_slow_log_write_is_warned_of_and_counted(faulty_disk):
    """fsync.warningthresholdms, as ZooKeeper reads it: a txn log write slower than the
    threshold gets ZooKeeper's warning and counts in mntr's
    zk_fsync_threshold_exceed_count; the write itself succeeds. The request that
    waited for it is slower than slowRequestThresholdMs: warned of and counted too."""
    mnt, ctl = faulty_disk
    srv = start_ringkeeper({"dataDir": str(mnt), "preAllocSize": "256", "fsync.warningthresholdms": "200",
                            "slowRequestThresholdMs": "300"})
    try:
        c = RawClient(srv.port)
        assert c.create("/fast", b"")[0] == 0

        def counts():
            mntr = dict(line.split("\t", 1) for line in srv.four("mntr").splitlines() if "\t" in line)
            return int(mntr["zk_fsync_threshold_exceed_count"]), int(mntr["rk_slow_requests"])

        before = counts()
        assert before[1] == 0 and "slow request" not in srv.log_text
        (ctl / "write_slow").touch()
        try:
            assert c.create("/slow", b"x")[0] == 0
        finally:
            (ctl / "write_slow").unlink()
        after = counts()
        assert after[0] > before[0] and after[1] >= 1
        assert "fsync-ing the write ahead log took" in srv.log_text
        assert "which will adversely effect operation latency" in srv.log_text
        assert "slow request: create from session" in srv.log_text
        c.close()
    finally:
        srv.stop()


def test_a_txn_log_that_cannot_be_made_stops_start_up_before_any_client_is_served(small_tmpfs):
    """dataLogDir on a tmpfs with 64 KiB left: recovery finds an empty log, and the new
    log's preallocated 1 MiB segment does not fit. Start-up must end there with the reason, before
    the server says it serves clients, and never accept a session."""
    log_dir = small_tmpfs / "log"
    # Room for the lock file (the server writes its pid in it), not for a segment.
    fill(small_tmpfs, leave_bytes=65536)
    port = servers.free_port()
    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "zoo.cfg"
        cfg.write_text(f"clientPort={port}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\ndataDir={d}/data\n"
                       f"dataLogDir={log_dir}\npreAllocSize=1024\n")
        proc = subprocess.Popen([str(servers.RINGKEEPER_BIN), "--config", str(cfg)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            out, _ = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 1, out
    assert f"cannot open the txn log in {log_dir}" in out, out
    assert "serving ZooKeeper clients" not in out, out
