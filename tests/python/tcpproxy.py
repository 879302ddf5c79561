"""A TCP proxy of ours on loopback that records what passes: one file per connection
and direction, in the order the bytes went. Quorum members are pointed at it instead
of at each other, so the test sees their traffic as they sent it."""

import itertools
import socket
import threading
from pathlib import Path


class RecordingProxy:
    """Listens on 127.0.0.1:`listen_port` and forwards each connection to
    127.0.0.1:`target_port`. Each accepted connection's two directions are written to
    `<dir>/<name>-<n>-<side>.bin`: side "c2s" is what the connecting side sent, "s2c"
    what the listening side answered."""

    def __init__(self, name, listen_port, target_port, record_dir):
        self.name, self.target_port = name, target_port
        self.dir = Path(record_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sock = _listen(listen_port)
        self.port = listen_port
        self._ids = itertools.count()
        self._stopped = False
        self._conns = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._stopped:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = _dial(self.target_port)
            if upstream is None:
                client.close()  # the member is down: as if it refused the connection
                continue
            n = next(self._ids)
            with self._lock:
                self._conns += [client, upstream]
            for src, dst, side in ((client, upstream, "c2s"), (upstream, client, "s2c")):
                path = self.dir / f"{self.name}-{n:04d}-{side}.bin"
                threading.Thread(target=self._pump, args=(src, dst, path), daemon=True).start()

    @staticmethod
    def _pump(src, dst, path):
        """Copies src to dst, recording it. An orderly close is passed on as one (the
        other direction goes on until its own close); a reset or a failed send ends
        both directions, as a broken connection would."""
        broken = False
        with open(path, "wb") as rec:
            while True:
                try:
                    data = src.recv(65536)
                except OSError:
                    broken = True
                    break
                if not data:
                    break
                rec.write(data)
                rec.flush()
                try:
                    dst.sendall(data)
                except OSError:
                    broken = True
                    break
        for s, how in ((dst, socket.SHUT_WR),) if not broken else ((src, socket.SHUT_RDWR), (dst, socket.SHUT_RDWR)):
            try:
                s.shutdown(how)
            except OSError:
                pass

    def stop(self):
        self._stopped = True
        self.sock.close()
        with self._lock:
            for s in self._conns:
                try:
                    s.close()
                except OSError:
                    pass


class FaultProxy:
    """Forwards connections to 127.0.0.1:`listen_port` on to 127.0.0.1:`target_port`,
    and can make either direction's bytes vanish, as a partition does. Side "c2s" is
    what the connecting side sends, "s2c" what the listening side answers.

    While a side drops, the bytes sent that way are read and thrown away (the sender
    sees its writes go out, nothing arrives); a connection opened while both sides drop
    is accepted and held without reaching the target, as a SYN into a partition would
    hang. When the cut heals, every connection that lost bytes is closed, as TCP gives
    up on a connection whose segments were never acknowledged: a stream that lost part
    of itself is never resumed."""

    def __init__(self, listen_port, target_port):
        self.target_port = target_port
        self.sock = _listen(listen_port)
        self.port = listen_port
        self.dropping = {"c2s": False, "s2c": False}
        self._lock = threading.Lock()
        self._conns = []  # [sockets, lost-bytes flag]
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def set(self, c2s=None, s2c=None):
        """Starts or stops dropping each side (None leaves it as it is); a side that
        stops dropping closes the connections that lost bytes."""
        with self._lock:
            for side, drop in (("c2s", c2s), ("s2c", s2c)):
                if drop is not None:
                    self.dropping[side] = drop
            if self.dropping["c2s"] or self.dropping["s2c"]:
                return
            broken = [c for c in self._conns if c[1]]
            self._conns = [c for c in self._conns if not c[1]]
        for socks, _ in broken:
            _close(socks)

    def _accept(self):
        while not self._stopped:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                held = self.dropping["c2s"] and self.dropping["s2c"]
            upstream = None
            if not held:
                upstream = _dial(self.target_port)
                if upstream is None:
                    client.close()  # the member is down: as if it refused the connection
                    continue
            conn = [[client] + ([upstream] if upstream else []), held]
            with self._lock:
                self._conns.append(conn)
            threading.Thread(target=self._pump, args=(conn, client, upstream, "c2s"), daemon=True).start()
            if upstream:
                threading.Thread(target=self._pump, args=(conn, upstream, client, "s2c"), daemon=True).start()

    def _pump(self, conn, src, dst, side):
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                break
            if not data:
                break
            with self._lock:
                drop = self.dropping[side] or dst is None
                if drop:
                    conn[1] = True
            if drop:
                continue
            try:
                dst.sendall(data)
            except OSError:
                break
        _close(conn[0])
        with self._lock:
            if conn in self._conns:
                self._conns.remove(conn)

    def stop(self):
        self._stopped = True
        self.sock.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for socks, _ in conns:
            _close(socks)


def _listen(port):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    return sock


def _dial(port):
    """A connection to 127.0.0.1:`port`, or None if nothing takes it."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError:
        return None
    s.settimeout(None)
    return s


def _close(socks):
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            s.close()
        except OSError:
            pass


class MemberNetwork:
    """The links between ensemble members, each through FaultProxies of its own: member
    i reaches member j's quorum and election ports through the proxies (i, j), so any
    direction between any two members can be cut on its own."""

    def __init__(self, quorum_ports, election_ports):
        self.ids = sorted(quorum_ports)
        self.proxies = {}
        for i in self.ids:
            for j in self.ids:
                if i != j:
                    self.proxies[(i, j)] = [FaultProxy(_free_port(), quorum_ports[j]),
                                            FaultProxy(_free_port(), election_ports[j])]

    def dial(self, i, j):
        """The (quorum, election) ports member i is to dial for member j."""
        q, e = self.proxies[(i, j)]
        return q.port, e.port

    def cut(self, frm, to, drop=True):
        """Bytes from member `frm` to member `to` vanish (or flow again): on the
        connections frm opened to `to` and on those `to` opened to frm."""
        for p in self.proxies[(frm, to)]:
            p.set(c2s=drop)
        for p in self.proxies[(to, frm)]:
            p.set(s2c=drop)

    def isolate(self, i):
        """Member i hears nobody and nobody hears it."""
        for j in self.ids:
            if j != i:
                self.cut(i, j)
                self.cut(j, i)

    def heal(self):
        for i, j in self.proxies:
            self.cut(i, j, drop=False)

    def stop(self):
        for ps in self.proxies.values():
            for p in ps:
                p.stop()


def _free_port():
    import servers
    return servers.free_port()
