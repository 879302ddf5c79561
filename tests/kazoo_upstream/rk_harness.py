"""pytest plugin: runs kazoo's own test suite against one standalone server, ringkeeper
or Apache ZooKeeper 3.8 (RK_BACKEND=ringkeeper|zookeeper), by replacing the cluster
kazoo's harness would start with that server. kazoo's default harness is a 3-server
ensemble; tests that need more than one server fail on both backends alike."""

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
        self.port = servers.free_port()

    def _start(self):
        extra = dict(SUPER, clientPort=str(self.port))
        if BACKEND == "zookeeper":
            self.server = servers.start_zookeeper(extra)
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
        if self.server is not None:
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
