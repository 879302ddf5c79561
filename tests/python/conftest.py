import itertools
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import servers  # noqa: E402
from kazoo.client import KazooClient  # noqa: E402


RK_EXTRA = {
    "extendedTypesEnabled": "true",
    "znode.container.checkIntervalMs": "200",
    "DigestAuthenticationProvider.superDigest": "super:D/InIHSb7yEEbrWz8b9l71RjZJU=",
}


@pytest.fixture(scope="session")
def rk():
    """One ringkeeper for the session, with TTL nodes and a fast container sweep. With
    RK_TEST_TARGET=follower, a follower of a 3-member ringkeeper ensemble instead: the
    real-client suites then run through a member that forwards every write. Its members
    have two shards each, as on a machine of their own (three members sharing these
    cores would take one each), so a follower's reads and writes cross shards."""
    if os.environ.get("RK_TEST_TARGET") == "follower":
        members = servers.start_ringkeeper_ensemble(3, extra=dict(RK_EXTRA, shards="2"))
        yield next(m for m in members if servers.member_mode(m) == "follower")
        members.stop()
        return
    s = servers.start_ringkeeper(RK_EXTRA)
    yield s
    s.stop()


_ids = itertools.count()


@pytest.fixture
def base(client):
    """A fresh path per test."""
    p = f"/t{next(_ids)}"
    client.create(p)
    return p


@pytest.fixture
def client(rk):
    c = KazooClient(hosts=rk.hosts, timeout=10)
    c.start(timeout=10)
    yield c
    c.stop()
    c.close()


@pytest.fixture
def make_client(rk):
    made = []

    def make(**kw):
        c = KazooClient(hosts=rk.hosts, timeout=kw.pop("timeout", 10), **kw)
        c.start(timeout=10)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()
        c.close()
