"""pytest plugin: runs kazoo's own test suite against one server, by replacing the
cluster kazoo's harness would start with it: a standalone ringkeeper or Apache
ZooKeeper 3.8 (RK_BACKEND=ringkeeper|zookeeper), or a follower of a 3-member
ringkeeper ensemble (RK_BACKEND=ringkeeper-follower: every write the tests make is
forwarded to the leader). kazoo's default harness is a 3-server ensemble; tests that
need more than one address fail on every backend alike."""

import atexit
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
import servers  # noqa: E402
import kazoo.testing.harness as harness  # noqa: E402

BACKEND = os.environ.get("RK_BACKEND", "ringkeeper")
SUPER = {"DigestAuthenticationProvider.superDigest": "super:D/InIHSb7yEEbrWz8b9l71RjZJU="}


class OneServer:
    """What kazoo's tests use of a ManagedZooKeeper."""

    def __init__(self):
        self.server = None
        self.ensemble = None
        self.port = servers.free_port()

    def _start(self):
        extra = dict(SUPER, clientPort=str(self.port))
        if BACKEND == "zookeeper":
            self.server = servers.start_zookeeper(extra)
        elif BACKEND == "ringkeeper-follower":
            # A fresh ensemble each time; the tests reach it through a follower's port.
            # Two shards per member, as on a machine of their own, so the follower's
            # sessions and its writes' replies cross shards.
            self.ensemble = servers.start_ringkeeper_ensemble(3, extra=dict(SUPER, shards="2"))
            self.server = next(m for m in self.ensemble if servers.member_mode(m) == "follower")
            self.port = self.server.port
        else:
            self.server = servers.start_ringkeeper(extra)

    @property
    def running(self):
        return self.server is not None and self.server.proc.poll() is None

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    secure_address = address

    def run(self):
        if not self.running:
            self._start()

    def stop(self):
        if self.ensemble is not None:
            self.ensemble.stop()
            self.ensemble = None
        elif self.server is not None:
            self.server.stop()
        self.server = None

    def get_logs(self, num_lines=100):
        return []


class OneServerCluster(list):
    def start(self):
        for s in self:
            s.run()

    def stop(self):
        for s in self:
            s.stop()

    terminate = stop

    def get_logs(self):
        return []


CLUSTER = OneServerCluster([OneServer()])
atexit.register(CLUSTER.terminate)
harness.get_global_cluster = lambda: CLUSTER
# KazooTestCase.tearDownClass terminates the cluster after every class; the next
# setup_zookeeper starts it again.
