"""Limits that keep one client from taking the server down: maxClientCnxns per IP,
the global limit of requests in flight (globalOutstandingLimit,
zookeeper.request_throttle_max_requests), and clients that do not read their replies.
Under each flood the server's memory stays bounded and it keeps answering others."""

import socket
import struct
import threading
import time

import pytest
from kazoo.client import KazooClient

import rawzk
import servers


def rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def mntr(server, source="127.0.0.1"):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5, source_address=(source, 0)) as s:
        s.sendall(b"mntr")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return dict(l.split("\t", 1) for l in out.decode().splitlines() if "\t" in l)


def handshake(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    body = struct.pack(">iqiq", 0, 0, 10000, 0) + rawzk.s_buf(b"\0" * 16) + b"\0"
    s.sendall(struct.pack(">i", len(body)) + body)
    r = rawzk.RawClient.__new__(rawzk.RawClient)
    r.sock = s
    r.read_frame()
    return s


def test_max_client_cnxns_per_ip():
    srv = servers.start_ringkeeper({"maxClientCnxns": "5"})
    try:
        held = [rawzk.RawClient(srv.port) for _ in range(5)]
        # The sixth from the same IP is closed without an answer, and counted; another
        # IP (127.0.0.2, asking mntr) is not held to 127.0.0.1's count.
        with pytest.raises((ConnectionError, OSError)):
            rawzk.RawClient(srv.port, socket_timeout_s=5)
        assert mntr(srv, "127.0.0.2")["zk_connection_rejected"] == "1"
        assert "Too many connections from /127.0.0.1 - max is 5" in srv.log_text
        # The five keep working; one closing makes room for another.
        assert all(c.create(f"/c{i}", b"")[0] == 0 for i, c in enumerate(held))
        held.pop().sock.close()
        assert servers.wait_for(lambda: int(mntr(srv, "127.0.0.2")["zk_num_alive_connections"]) == 4 + 1, 5)
        again = rawzk.RawClient(srv.port)
        assert again.get_data("/c0")[0] == 0
    finally:
        srv.stop()


class Flood(threading.Thread):
    """Pipelines `count` copies of one request on its own connection as fast as the
    server takes them, never reading a reply."""

    def __init__(self, port, op, body, count, first=b""):
        super().__init__(daemon=True)
        self.sock = handshake(port)
        self.frame = struct.pack(">i", len(body) + 8) + struct.pack(">ii", 1, op) + body
        self.count, self.sent, self.error = count, 0, None
        self.first = first

    def run(self):
        try:
            if self.first:
                self.sock.sendall(self.first)
            batch = self.frame * 16
            while self.sent < self.count:
                self.sock.sendall(batch)
                self.sent += 16
        except OSError as e:
            self.error = e


def answered_promptly(port, seconds, path):
    """A separate client's reads and writes during `seconds`: their worst latency."""
    zk = KazooClient(hosts=f"127.0.0.1:{port}", timeout=20)
    zk.start()
    worst = 0.0
    end = time.time() + seconds
    n = 0
    while time.time() < end:
        t0 = time.time()
        zk.set(path, b"other %d" % n)
        zk.get(path)
        worst = max(worst, time.time() - t0)
        n += 1
    zk.stop()
    return worst, n


def sent_frames(srv, floods):
    """The frames the server has sent each flood connection (`cons`)."""
    import re
    ports = {f.sock.getsockname()[1] for f in floods}
    return [int(m.group(2)) for m in re.finditer(r"/127\.0\.0\.1:(\d+)\[1\]\(queued=\d+,recved=\d+,sent=(\d+)",
                                                 srv.four("cons")) if int(m.group(1)) in ports]


def test_a_client_that_does_not_read_its_replies_is_held_back_not_buffered():
    """getData of a 512 KiB znode pipelined without reading: without a bound the
    replies would pile up in the server (10,000 x 512 KiB = 5 GiB)."""
    srv = servers.start_ringkeeper({"jute.maxbuffer": str(1 << 21)})
    try:
        c = rawzk.RawClient(srv.port)
        assert c.create("/big", b"b" * (512 << 10))[0] == 0
        assert c.create("/other", b"")[0] == 0
        base = rss_mb(srv.proc.pid)
        floods = [Flood(srv.port, 4, rawzk.s_str("/big") + b"\0", 10_000) for _ in range(4)]
        for f in floods:
            f.start()
        worst, n = answered_promptly(srv.port, 4, "/other")
        peak = rss_mb(srv.proc.pid)
        # Each flooder got no more replies than its bounds allow (1 MiB unsent in the
        # server, then what the sockets' buffers hold): far from its 10,000.
        sent = sent_frames(srv, floods)
        assert len(sent) == 4 and max(sent) < 200, sent
        assert peak - base < 150, (base, peak)
        assert n > 20 and worst < 2.0, (n, worst)
        for f in floods:
            f.sock.close()
        assert c.get_data("/other")[0] == 0
    finally:
        srv.stop()


def test_reads_queued_behind_a_write_are_held_back_too():
    """Each flooder opens with a setData, so its getData requests queue behind that
    write (up to the session's 1,000 outstanding) and are answered together when it
    commits: that answer must stop at the same bound as the read loop (1 MiB unsent),
    not put 1,000 replies of 512 KiB in the server's memory."""
    srv = servers.start_ringkeeper({"jute.maxbuffer": str(1 << 21)})
    try:
        c = rawzk.RawClient(srv.port)
        assert c.create("/big", b"b" * (512 << 10))[0] == 0
        assert c.create("/w", b"")[0] == 0
        base = rss_mb(srv.proc.pid)
        body = rawzk.s_str("/w") + rawzk.s_buf(b"x") + struct.pack(">i", -1)
        first = struct.pack(">i", len(body) + 8) + struct.pack(">ii", 0, 5) + body
        floods = [Flood(srv.port, 4, rawzk.s_str("/big") + b"\0", 1_000, first) for _ in range(4)]
        for f in floods:
            f.start()
        # Every flooder's write is answered (its reads behind it are then due).
        assert servers.wait_for(lambda: len(sent_frames(srv, floods)) == 4 and min(sent_frames(srv, floods)) > 1, 10)
        time.sleep(1)
        peak = rss_mb(srv.proc.pid)
        sent = sent_frames(srv, floods)
        assert len(sent) == 4 and max(sent) < 200, sent
        assert peak - base < 150, (base, peak)
        # Reading resumes the held reads: one flooder reads everything it asked for.
        f = floods[0]
        f.sock.settimeout(20)
        want = 1 + f.count
        got = 0
        buf = bytearray()
        while got < want:
            chunk = f.sock.recv(1 << 20)
            assert chunk, "connection closed"
            buf += chunk
            at = 0
            while len(buf) - at >= 4 and len(buf) - at >= 4 + struct.unpack_from(">i", buf, at)[0]:
                n = struct.unpack_from(">i", buf, at)[0]
                xid, _zxid, err = struct.unpack_from(">iqi", buf, at + 4)
                assert err == 0 and xid == (0 if got == 0 else 1), (got, xid, err)
                at += 4 + n
                got += 1
            del buf[:at]
        for f in floods:
            f.sock.close()
        assert c.get_data("/big")[0] == 0
    finally:
        srv.stop()


def test_a_write_flood_is_held_at_the_outstanding_limit():
    """16 connections pipeline setData of 64 KiB without reading: the requests in
    flight stop at globalOutstandingLimit (the shards stop reading), memory stays
    bounded, and another client's writes still get through."""
    srv = servers.start_ringkeeper({"globalOutstandingLimit": "200", "jute.maxbuffer": str(1 << 20)})
    try:
        c = rawzk.RawClient(srv.port)
        for i in range(16):
            assert c.create(f"/f{i}", b"")[0] == 0
        assert c.create("/other", b"")[0] == 0
        base = rss_mb(srv.proc.pid)
        value = b"v" * (64 << 10)
        floods = [Flood(srv.port, 5, rawzk.s_str(f"/f{i}") + rawzk.s_buf(value) + struct.pack(">i", -1), 3_000)
                  for i in range(16)]
        for f in floods:
            f.start()
        samples = []
        sampler_stop = threading.Event()

        def sample():
            while not sampler_stop.is_set():
                samples.append(int(mntr(srv)["zk_outstanding_requests"]))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        worst, n = answered_promptly(srv.port, 6, "/other")
        sampler_stop.set()
        sampler.join()
        peak = rss_mb(srv.proc.pid)
        assert max(samples) <= 200 + 16, max(samples)  # each connection may have one frame in decode
        assert int(mntr(srv)["zk_request_throttle_wait_count"]) > 0
        assert peak - base < 400, (base, peak)
        assert n > 5 and worst < 5.0, (n, worst)
        for f in floods:
            f.sock.close()
        assert c.get_data("/other")[0] == 0
    finally:
        srv.stop()
