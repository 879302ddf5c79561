"""A minimal jute client for what kazoo cannot send: container and TTL creates,
persistent watches, getEphemerals, whoAmI, getAllChildrenNumber, and deliberately
malformed frames. Synchronous, one request at a time, events collected on the side."""

import socket
import struct


def s_str(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">i", len(b)) + b


def s_buf(b):
    return struct.pack(">i", len(b)) + b


OPEN_ACL = struct.pack(">i", 1) + struct.pack(">i", 31) + s_str("world") + s_str("anyone")


class Reader:
    def __init__(self, b):
        self.b, self.o = b, 0

    def i32(self):
        v = struct.unpack_from(">i", self.b, self.o)[0]
        self.o += 4
        return v

    def i64(self):
        v = struct.unpack_from(">q", self.b, self.o)[0]
        self.o += 8
        return v

    def buf(self):
        n = self.i32()
        if n < 0:
            return None
        v = self.b[self.o:self.o + n]
        self.o += n
        return v

    def str(self):
        v = self.buf()
        return None if v is None else v.decode()

    def strs(self):
        return [self.str() for _ in range(self.i32())]

    def stat(self):
        keys = ["czxid", "mzxid", "ctime", "mtime", "version", "cversion", "aversion",
                "ephemeralOwner", "dataLength", "numChildren", "pzxid"]
        fmt = [self.i64, self.i64, self.i64, self.i64, self.i32, self.i32, self.i32,
               self.i64, self.i32, self.i32, self.i64]
        return {k: f() for k, f in zip(keys, fmt)}


class RawClient:
    def __init__(self, port, timeout_ms=10000, session_id=0, passwd=b"\0" * 16, last_zxid=0,
                 socket_timeout_s=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=socket_timeout_s)
        self.xid = 0
        self.events = []
        body = struct.pack(">iqiq", 0, last_zxid, timeout_ms, session_id) + s_buf(passwd) + b"\0"
        self.send_frame(body)
        r = Reader(self.read_frame())
        self.protocol, self.timeout_ms, self.session_id = r.i32(), r.i32(), r.i64()
        self.passwd = r.buf()

    def send_frame(self, body):
        self.sock.sendall(struct.pack(">i", len(body)) + body)

    def read_frame(self):
        head = self._exact(4)
        (n,) = struct.unpack(">i", head)
        return self._exact(n)

    def _exact(self, n):
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("server closed the connection")
            out += chunk
        return out

    def call(self, op, body=b""):
        """Sends one request; returns (err, zxid, Reader over the body)."""
        self.xid += 1
        self.send_frame(struct.pack(">ii", self.xid, op) + body)
        while True:
            r = Reader(self.read_frame())
            xid, zxid, err = r.i32(), r.i64(), r.i32()
            if xid == -1:
                self.events.append((r.i32(), r.i32(), r.str()))
                continue
            if xid == self.xid:
                return err, zxid, r

    def ping(self):
        """A ping (xid -2, as clients send it); returns the reply's (xid, err)."""
        self.send_frame(struct.pack(">ii", -2, 11))
        while True:
            r = Reader(self.read_frame())
            xid, _, err = r.i32(), r.i64(), r.i32()
            if xid == -1:
                self.events.append((r.i32(), r.i32(), r.str()))
                continue
            return xid, err

    def pipeline(self, requests):
        """Sends [(op, body), ...] in one write, then reads the replies in order;
        returns [(err, zxid, Reader)]."""
        xids, frames = [], b""
        for op, body in requests:
            self.xid += 1
            xids.append(self.xid)
            msg = struct.pack(">ii", self.xid, op) + body
            frames += struct.pack(">i", len(msg)) + msg
        self.sock.sendall(frames)
        out = []
        while len(out) < len(xids):
            r = Reader(self.read_frame())
            xid, zxid, err = r.i32(), r.i64(), r.i32()
            if xid == -1:
                self.events.append((r.i32(), r.i32(), r.str()))
                continue
            assert xid == xids[len(out)], (xid, xids)
            out.append((err, zxid, r))
        return out

    def wait_event(self):
        r = Reader(self.read_frame())
        xid, _, _ = r.i32(), r.i64(), r.i32()
        assert xid == -1, xid
        ev = (r.i32(), r.i32(), r.str())
        self.events.append(ev)
        return ev

    def create(self, path, data=b"", flags=0, ttl=None):
        op = 21 if ttl is not None else (19 if flags == 4 else 15)
        body = s_str(path) + s_buf(data) + OPEN_ACL + struct.pack(">i", flags)
        if ttl is not None:
            body += struct.pack(">q", ttl)
        err, _, r = self.call(op, body)
        return err, (r.str() if err == 0 else None)

    def create2(self, path, data=b"", flags=0, ttl=None):
        """create2, createContainer (flags 4) or createTTL (ttl given): returns
        (err, (path, stat) or None)."""
        op = 21 if ttl is not None else (19 if flags == 4 else 15)
        body = s_str(path) + s_buf(data) + OPEN_ACL + struct.pack(">i", flags)
        if ttl is not None:
            body += struct.pack(">q", ttl)
        err, _, r = self.call(op, body)
        return err, ((r.str(), r.stat()) if err == 0 else None)

    def exists(self, path, watch=False):
        err, _, r = self.call(3, s_str(path) + (b"\1" if watch else b"\0"))
        return err, (r.stat() if err == 0 else None)

    def get_data(self, path):
        err, _, r = self.call(4, s_str(path) + b"\0")
        return err, (r.buf() if err == 0 else None)

    def children(self, path):
        err, _, r = self.call(8, s_str(path) + b"\0")
        return err, (sorted(r.strs()) if err == 0 else None)

    def set_data(self, path, data, version=-1):
        err, _, _ = self.call(5, s_str(path) + s_buf(data) + struct.pack(">i", version))
        return err

    def delete(self, path, version=-1):
        err, _, _ = self.call(2, s_str(path) + struct.pack(">i", version))
        return err

    def add_watch(self, path, mode):
        err, _, _ = self.call(106, s_str(path) + struct.pack(">i", mode))
        return err

    def remove_watches(self, path, wtype):
        err, _, _ = self.call(18, s_str(path) + struct.pack(">i", wtype))
        return err

    def check_watches(self, path, wtype):
        err, _, _ = self.call(17, s_str(path) + struct.pack(">i", wtype))
        return err

    def get_ephemerals(self, prefix):
        err, _, r = self.call(103, s_str(prefix))
        return err, (sorted(r.strs()) if err == 0 else None)

    def all_children_number(self, path):
        err, _, r = self.call(104, s_str(path))
        return err, (r.i32() if err == 0 else None)

    def who_am_i(self):
        err, _, r = self.call(107)
        n = r.i32()
        return [(r.str(), r.str()) for _ in range(n)]

    def close_session(self):
        self.call(-11)
        self.sock.close()

    def close(self):
        self.sock.close()
