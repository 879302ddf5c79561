"""Damaged and full disks: a corrupted or torn txn log, a damaged snapshot, and a data
directory that runs out of space. Each must end the way the storage contract says:
a torn tail is dropped with one log line; damage elsewhere stops start-up naming the
file and offset; a full disk refuses writes (NOTREADONLY) while reads go on, and no
acknowledged write is lost."""

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from rawzk import RawClient
from servers import start_ringkeeper, wait_for

NOT_READ_ONLY = -119


def segments(srv):
    return sorted((srv.data_dir / "ringkeeper").glob("log.*"))


def snapshots(srv):
    return sorted((srv.data_dir / "ringkeeper").glob("snapshot.*"))


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
        write_nodes(srv.port, "/a", 20)
        os.kill(srv.proc.pid, signal.SIGUSR1)
        assert wait_for(lambda: len(snapshots(srv)) == 1, 10)
        write_nodes(srv.port, "/b", 20)
        os.kill(srv.proc.pid, signal.SIGUSR1)
        assert wait_for(lambda: len(snapshots(srv)) == 2, 10)
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
        write_nodes(srv.port, "/a", 20)
        os.kill(srv.proc.pid, signal.SIGUSR1)
        assert wait_for(lambda: len(snapshots(srv)) == 1, 10)
        srv.kill()
        snap = snapshots(srv)[-1]
        snap.write_bytes(snap.read_bytes()[:-7])
        log = restart_expecting_failure(srv)
        assert snap.name in log and "truncated" in log, log[-2000:]
    finally:
        srv.stop()


@pytest.fixture
def small_tmpfs():
    d = tempfile.mkdtemp(prefix="rk-full-")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", d], capture_output=True, text=True)
    assert r.returncode == 0, f"cannot mount a small tmpfs (the test needs root): {r.stderr}"
    try:
        yield Path(d)
    finally:
        subprocess.run(["umount", "-l", d], check=True)
        os.rmdir(d)


def test_full_disk_refuses_writes_keeps_reads_and_loses_nothing(small_tmpfs):
    srv = start_ringkeeper({"dataDir": str(small_tmpfs), "preAllocSize": "512", "snapCount": "1000000"})
    try:
        c = RawClient(srv.port)
        acked = []
        value = os.urandom(20000)
        err = 0
        for i in range(1000):
            err, _ = c.create(f"/big{i}", value)
            if err != 0:
                break
            acked.append(f"/big{i}")
        assert err == NOT_READ_ONLY, f"writes on a full disk answered {err}"
        assert len(acked) > 10
        assert "No space left on device" in srv.log_text
        # Reads keep working, writes stay refused, on this and on new sessions.
        assert c.get_data(acked[0]) == (0, value)
        assert c.set_data(acked[0], b"y") == NOT_READ_ONLY
        d = RawClient(srv.port)
        assert d.get_data(acked[-1]) == (0, value)
        assert d.create("/after", b"")[0] == NOT_READ_ONLY
        d.close()
        c.close()
        srv.restart()
        c = RawClient(srv.port)
        for p in acked:
            assert c.get_data(p) == (0, value), p
        assert c.exists("/after")[0] != 0
        c.close()
    finally:
        srv.stop()
