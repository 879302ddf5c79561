"""Writes the seed inputs of the `handle_requests` and `recover_log` fuzz targets:
`python3 tests/fuzz/make_seeds.py` (the recover_log seeds need a built server:
RINGKEEPER_BIN, default target/release/ringkeeper). Seeds are inputs a real client
would send, so that the fuzzer starts from requests that reach deep into the core."""

import os
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))

from rawzk import OPEN_ACL, RawClient, s_buf, s_str  # noqa: E402

DIGEST_ACL = struct.pack(">i", 1) + struct.pack(">i", 31) + s_str("digest") + s_str("alice:VrYvv0a5Tx5X5i4iBHXqT0Cd5L8=")
AUTH_ACL = struct.pack(">i", 2) + struct.pack(">i", 1) + s_str("auth") + s_str("") + struct.pack(">i", 31) + s_str("world") + s_str("anyone")


def create(path, data=b"", flags=0, acl=OPEN_ACL, op=1, ttl=None):
    body = s_str(path) + s_buf(data) + acl + struct.pack(">i", flags)
    if ttl is not None:
        body += struct.pack(">q", ttl)
    return op, body


def multi(ops):
    body = b""
    for op, rec in ops:
        body += struct.pack(">i?i", op, False, -1) + rec
    return 14, body + struct.pack(">i?i", -1, True, -1)


def requests():
    """(control, opcode, body): control bit 0 = the second session, bits 2.. = clock steps."""
    yield 0, *create("/app", b"config")
    yield 0, *create("/app/seq-", b"", 2)
    yield 1, *create("/app/eph", b"e", 1)
    yield 0, *create("/box", b"", 4, op=19)
    yield 0, *create("/box/kid", b"k", 1)
    yield 0, *create("/ttl", b"t", 5, op=21, ttl=1000)
    yield 1, *create("/secret", b"s", 0, DIGEST_ACL, op=15)
    yield 1, *create("/mine", b"m", 0, AUTH_ACL)
    yield 0, 4, s_str("/app") + b"\1"
    yield 0, 3, s_str("/none") + b"\1"
    yield 0, 12, s_str("/app") + b"\1"
    yield 1, 106, s_str("/app") + struct.pack(">i", 1)
    yield 0, 5, s_str("/app") + s_buf(b"v2") + struct.pack(">i", 0)
    yield 0, 5, s_str("/app") + s_buf(b"stale") + struct.pack(">i", 0)
    yield 0, 7, s_str("/app") + DIGEST_ACL + struct.pack(">i", -1)
    yield 0, 6, s_str("/app")
    yield 1, 4, s_str("/secret") + b"\0"
    yield 0, 4, s_str("/secret") + b"\0"
    yield 0, *multi([create("/m1", b"1"), (13, s_str("/m1") + struct.pack(">i", 0)),
                     (5, s_str("/m1") + s_buf(b"2") + struct.pack(">i", 0)), (2, s_str("/m1") + struct.pack(">i", -1))])
    yield 0, *multi([create("/m2"), (2, s_str("/nothere") + struct.pack(">i", -1))])
    yield 0, 22, struct.pack(">i?i", 4, False, -1) + s_str("/app") + b"\0" + struct.pack(">i?i", -1, True, -1)
    yield 0, 104, s_str("/")
    yield 1, 103, s_str("/")
    yield 0, 9, s_str("/")
    yield 0, 18, s_str("/app") + struct.pack(">i", 3)
    yield 0, 17, s_str("/app") + struct.pack(">i", 3)
    yield 1, 107, b""
    yield 0, 2, s_str("/box/kid") + struct.pack(">i", -1)
    yield 8 << 2, 11, b""
    yield 0, 2, s_str("/app") + struct.pack(">i", -1)
    yield 1, -11, b""
    yield 20 << 2, 11, b""


def handle_requests_seed(items):
    out = b""
    for xid, (control, op, body) in enumerate(items, 1):
        frame = struct.pack(">ii", xid, op) + body
        out += struct.pack(">BH", control, len(frame)) + frame
    return out


def write_handle_requests_seeds():
    d = HERE / "seeds" / "handle_requests"
    d.mkdir(parents=True, exist_ok=True)
    items = list(requests())
    (d / "all-ops").write_bytes(handle_requests_seed(items))
    # One seed per request, for the fuzzer to splice.
    for i, item in enumerate(items):
        (d / f"op-{i:02}").write_bytes(handle_requests_seed([item]))


def write_recover_log_seeds():
    import servers
    srv = servers.start_ringkeeper({"preAllocSize": "64", "snapCount": "1000000"})
    try:
        a = RawClient(srv.port)
        b = RawClient(srv.port, timeout_ms=4000)
        for _, op, body in requests():
            if op in (1, 2, 5, 7, 14, 15, 19, 21):
                (b if b"eph" in body else a).call(op, body)
        b.close_session()
        a.close()
        srv.kill()
        seg = sorted((srv.data_dir / "ringkeeper").glob("log.*"))[0].read_bytes()
        body = seg[32:].rstrip(b"\0")
        d = HERE / "seeds" / "recover_log"
        d.mkdir(parents=True, exist_ok=True)
        # First byte odd: the target reseals checksums; even: the bytes as they are.
        (d / "real-log-resealed").write_bytes(b"\1" + body)
        (d / "real-log-raw").write_bytes(b"\0" + body)
    finally:
        srv.stop()


if __name__ == "__main__":
    os.environ.setdefault("RINGKEEPER_BIN", str(HERE.parent.parent / "target/release/ringkeeper"))
    write_handle_requests_seeds()
    write_recover_log_seeds()
