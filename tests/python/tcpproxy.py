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
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", listen_port))
        self.sock.listen(64)
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
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
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
