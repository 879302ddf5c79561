"""ACLs on every operation: each request type, against a znode whose ACL grants one
permission (or none, or all) to one identity of each scheme (world, auth, digest,
ip), asked by a client that holds that identity or does not. The same matrix runs
against Apache ZooKeeper 3.8 and ringkeeper; every answer must be the same error code.
Mutating cells run in one order on both servers, so their states stay equal."""

import base64
import hashlib
import struct

import pytest

import servers
from rawzk import RawClient, Reader, s_buf, s_str

SUPER = "super:D/InIHSb7yEEbrWz8b9l71RjZJU="  # super:test
EXTRA = {"DigestAuthenticationProvider.superDigest": SUPER, "extendedTypesEnabled": "true"}
PERMS = {"r": 1, "w": 2, "c": 4, "d": 8, "a": 16}


def digest(user, password):
    h = hashlib.sha1(f"{user}:{password}".encode()).digest()
    return f"{user}:{base64.b64encode(h).decode()}"


def acl_bytes(entries):
    out = struct.pack(">i", len(entries))
    for perms, scheme, ident in entries:
        out += struct.pack(">i", perms) + s_str(scheme) + s_str(ident)
    return out


OPEN = acl_bytes([(31, "world", "anyone")])


class Client(RawClient):
    def add_auth(self, scheme, auth):
        self.send_frame(struct.pack(">ii", -4, 100) + struct.pack(">i", 0) + s_str(scheme) + s_buf(auth.encode()))
        while True:
            r = Reader(self.read_frame())
            xid, _, err = r.i32(), r.i64(), r.i32()
            if xid == -4:
                return err

    def op(self, code, body=b""):
        return self.call(code, body)[0]

    def multi(self, code, ops):
        """A multi (14) or multiRead (22): the reply's error and each op's result type
        and error."""
        body = b""
        for t, b in ops:
            body += struct.pack(">i?i", t, False, -1) + b
        body += struct.pack(">i?i", -1, True, -1)
        err, _, r = self.call(code, body)
        results = []
        while err == 0:
            t, done = r.i32(), r.b[r.o] != 0
            r.o += 1
            e = r.i32()
            if done:
                break
            if t == -1:
                results.append(("error", r.i32()))
            elif t == 4:
                r.buf()
                r.stat()
                results.append(("getData", 0))
            elif t == 8:
                results.append(("getChildren", len(r.strs())))
            elif t == 1:
                results.append(("create", r.str()))
            elif t == 13:
                results.append(("check", 0))
            else:
                raise AssertionError(f"unexpected multi result type {t}")
        return err, results


def ops(path):
    """(name, how) for every request type, reads first; `how` takes a client."""
    p = s_str(path)
    create = lambda name, flags=0, op=1, ttl=b"": (  # noqa: E731
        lambda c: c.op(op, s_str(f"{path}/{name}") + s_buf(b"x") + OPEN + struct.pack(">i", flags) + ttl))
    return [
        ("getData", lambda c: c.op(4, p + b"\0")),
        ("getData+watch", lambda c: c.op(4, p + b"\1")),
        ("exists", lambda c: c.op(3, p + b"\0")),
        ("exists+watch", lambda c: c.op(3, p + b"\1")),
        ("getChildren", lambda c: c.op(8, p + b"\0")),
        ("getChildren2", lambda c: c.op(12, p + b"\1")),
        ("getACL", lambda c: c.op(6, p)),
        ("getAllChildrenNumber", lambda c: c.op(104, p)),
        ("getEphemerals", lambda c: c.op(103, p)),
        ("addWatch", lambda c: c.op(106, p + struct.pack(">i", 0))),
        ("sync", lambda c: c.op(9, p)),
        ("multiRead", lambda c: c.multi(22, [(4, p + b"\0"), (8, p + b"\0")])),
        ("multi-check", lambda c: c.multi(14, [(13, p + struct.pack(">i", -1))])),
        ("setData", lambda c: c.op(5, p + s_buf(b"new") + struct.pack(">i", -1))),
        ("create", create("made")),
        ("create2", create("made2", op=15)),
        ("createContainer", create("box", flags=4, op=19)),
        ("createTTL", create("ttl", flags=5, op=21, ttl=struct.pack(">q", 60000))),
        ("multi-create", lambda c: c.multi(14, [(1, s_str(f"{path}/m") + s_buf(b"") + OPEN + struct.pack(">i", 0))])),
        ("delete-child", lambda c: c.op(2, s_str(f"{path}/kid") + struct.pack(">i", -1))),
        ("setACL", lambda c: c.op(7, p + OPEN + struct.pack(">i", -1))),
    ]


# (scheme, the ACL entry granting `perms`, how the asking client identifies itself)
SUBJECTS = [
    ("world", lambda perms: [(perms, "world", "anyone")], []),
    ("auth", lambda perms: [(perms, "auth", "")], [("digest", "user1:pw1")]),
    ("digest", lambda perms: [(perms, "digest", digest("user2", "pw2"))], [("digest", "user2:pw2")]),
    ("digest-other-user", lambda perms: [(perms, "digest", digest("user2", "pw2"))], [("digest", "user3:pw3")]),
    ("ip", lambda perms: [(perms, "ip", "127.0.0.1")], []),
    ("ip-cidr", lambda perms: [(perms, "ip", "127.0.0.0/8")], []),
    ("ip-other", lambda perms: [(perms, "ip", "192.0.2.7")], []),
    ("super", lambda perms: [(perms, "digest", digest("user2", "pw2"))], [("digest", "super:test")]),
]
GRANTS = {"none": 0, **PERMS, "all": 31}


def run_matrix(server):
    """Every (subject, grant, op) cell's answer, run on `server`."""
    admin = Client(server.port)
    assert admin.add_auth("digest", "super:test") == 0
    # The auth scheme stands for the creating client's identity: user1's.
    creator = Client(server.port)
    assert creator.add_auth("digest", "user1:pw1") == 0
    assert admin.create("/m", b"")[0] == 0
    answers = {}
    for subject, entry, identity in SUBJECTS:
        for grant, perms in GRANTS.items():
            node = f"/m/{subject}-{grant}"
            assert admin.create(node, b"d")[0] == 0
            assert admin.create(f"{node}/kid", b"")[0] == 0
            setter = creator if subject == "auth" else admin
            acl = acl_bytes(entry(perms)) if perms else acl_bytes(entry(1))
            if not perms:
                # No permission at all: an ACL for someone else.
                acl = acl_bytes([(31, "digest", digest("nobody", "x"))])
            assert setter.op(7, s_str(node) + acl + struct.pack(">i", -1)) == 0, (subject, grant)
            asker = Client(server.port)
            for scheme, cred in identity:
                assert asker.add_auth(scheme, cred) == 0
            for name, how in ops(node):
                answers[(subject, grant, name)] = how(asker)
            asker.close_session()
    return answers


@pytest.fixture(scope="module")
def matrices():
    zk = servers.start_zookeeper(EXTRA)
    rk = servers.start_ringkeeper(EXTRA)
    try:
        yield run_matrix(zk), run_matrix(rk)
    finally:
        zk.stop()
        rk.stop()


@pytest.mark.parametrize("subject", [s for s, _, _ in SUBJECTS])
def test_every_op_answers_as_zookeeper_does(matrices, subject):
    zk, rk = matrices
    cells = [k for k in zk if k[0] == subject]
    assert len(cells) == len(GRANTS) * len(ops("/x"))
    differ = {k[1:]: (zk[k], rk[k]) for k in cells if zk[k] != rk[k]}
    assert not differ, differ


def test_the_matrix_checks_what_it_should(matrices):
    """The cells that say the ACL is enforced at all: a cell that cannot fail on
    both servers would make the comparison above empty."""
    zk, rk = matrices
    NOAUTH = -102
    for m in (zk, rk):
        assert m[("world", "r", "getData")] == 0 and m[("world", "r", "setData")] == NOAUTH
        assert m[("world", "w", "setData")] == 0 and m[("world", "w", "getData")] == NOAUTH
        assert m[("digest", "c", "create")] == 0 and m[("digest-other-user", "c", "create")] == NOAUTH
        assert m[("auth", "d", "delete-child")] == 0 and m[("ip-other", "all", "delete-child")] == NOAUTH
        assert m[("ip-cidr", "a", "setACL")] == 0 and m[("ip", "r", "setACL")] == NOAUTH
        assert m[("super", "none", "setData")] == 0
