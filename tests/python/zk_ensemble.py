"""An Apache ZooKeeper 3.8 ensemble on loopback (Debian package `zookeeper`), each
member started as its operators do (log4j at INFO, fixed heap, forceSync on), with
every member-to-member connection optionally routed through a proxy of ours.

Each member's zoo.cfg names its own quorum and election ports as they are, and the
other members' as the ports of the proxies in front of them, so every connection a
member opens to another goes through a proxy (ZooKeeper may still answer an election
connection by calling back the address the caller announced, which is the caller's
own: those call-backs are not recorded)."""

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import servers


class ZkEnsemble:
    def __init__(self, size=3, proxy_factory=None, props=None, tick_ms=500, heap="256m", cfg=None):
        self.size = size
        self.tmp = tempfile.TemporaryDirectory(prefix="zk-ensemble-")
        self.root = Path(self.tmp.name)
        self.ids = list(range(1, size + 1))
        ports = lambda: {i: servers.free_port() for i in self.ids}  # noqa: E731
        self.client_port, self.quorum_port, self.election_port = ports(), ports(), ports()
        self.proxies = []
        # What the others dial to reach member i: its own ports, or its proxies'.
        self.dial_quorum, self.dial_election = dict(self.quorum_port), dict(self.election_port)
        if proxy_factory:
            for i in self.ids:
                q = proxy_factory(f"quorum{i}", servers.free_port(), self.quorum_port[i])
                e = proxy_factory(f"election{i}", servers.free_port(), self.election_port[i])
                self.proxies += [q, e]
                self.dial_quorum[i], self.dial_election[i] = q.port, e.port
        self.props = props or {}
        self.tick_ms = tick_ms
        self.heap = heap
        self.cfg = cfg or {}
        self.procs = {}
        for i in self.ids:
            self._write_config(i)

    def data_dir(self, i):
        return self.root / f"m{i}" / "data"

    def _write_config(self, i):
        conf = self.root / f"m{i}" / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        self.data_dir(i).mkdir(parents=True, exist_ok=True)
        (self.data_dir(i) / "myid").write_text(f"{i}\n")
        lines = [f"tickTime={self.tick_ms}", "initLimit=10", "syncLimit=5",
                 f"dataDir={self.data_dir(i)}", f"clientPort={self.client_port[i]}",
                 "clientPortAddress=127.0.0.1", "admin.enableServer=false", "forceSync=yes",
                 "4lw.commands.whitelist=*"]
        lines += [f"{k}={v}" for k, v in self.cfg.items()]
        for j in self.ids:
            q = self.quorum_port[j] if j == i else self.dial_quorum[j]
            e = self.election_port[j] if j == i else self.dial_election[j]
            lines.append(f"server.{j}=127.0.0.1:{q}:{e}")
        (conf / "zoo.cfg").write_text("\n".join(lines) + "\n")
        log = self.root / f"m{i}" / "zookeeper.log"
        (conf / "log4j.properties").write_text(servers.LOG4J_INFO.format(log=log))

    def start(self, i):
        conf = self.root / f"m{i}" / "conf"
        props = [f"-D{k}={v}" for k, v in self.props.items()]
        out = open(self.root / f"m{i}" / "stdout.log", "ab")
        self.procs[i] = subprocess.Popen(
            ["java", f"-Xms{self.heap}", f"-Xmx{self.heap}", "-Dlog4j.configuration=file:" + str(conf / "log4j.properties"),
             "-Dzookeeper.4lw.commands.whitelist=*", *props,
             "-cp", servers.zookeeper_classpath(conf), "org.apache.zookeeper.server.quorum.QuorumPeerMain",
             str(conf / "zoo.cfg")],
            stdout=out, stderr=subprocess.STDOUT)

    def start_all(self):
        for i in self.ids:
            self.start(i)

    def mode(self, i):
        """leader / follower / None (not serving)."""
        try:
            out = servers.four_letter(self.client_port[i], "srvr", timeout=1.0)
        except OSError:
            return None
        for line in out.splitlines():
            if line.startswith("Mode: "):
                return line.split(": ", 1)[1]
        return None

    def wait_serving(self, members=None, timeout=60):
        """Waits until `members` (default: all running) serve, one of them the leader;
        returns the leader's id."""
        members = members or [i for i, p in self.procs.items() if p.poll() is None]
        deadline = time.time() + timeout
        while time.time() < deadline:
            modes = {i: self.mode(i) for i in members}
            if all(m in ("leader", "follower") for m in modes.values()):
                leaders = [i for i, m in modes.items() if m == "leader"]
                if len(leaders) == 1:
                    return leaders[0]
            time.sleep(0.1)
        raise RuntimeError(f"ensemble not serving within {timeout}s: {modes}")

    def kill(self, i):
        p = self.procs.get(i)
        if p and p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout=30)

    def wipe(self, i):
        """Deletes member i's data (it must be stopped), keeping its myid."""
        shutil.rmtree(self.data_dir(i))
        self.data_dir(i).mkdir(parents=True)
        (self.data_dir(i) / "myid").write_text(f"{i}\n")

    @property
    def hosts(self):
        return ",".join(f"127.0.0.1:{self.client_port[i]}" for i in self.ids)

    def stop(self):
        for i in self.ids:
            self.kill(i)
        for p in self.proxies:
            p.stop()
        keep = os.environ.get("RK_TEST_LOG_DIR")
        if keep:
            shutil.copytree(self.root, Path(keep) / self.root.name, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("version-2"))
        self.tmp.cleanup()


def start_ringkeeper_members(zk, ids, tick_ms=500):
    """ringkeeper members `ids` of ZooKeeper ensemble `zk`'s configuration (its ports,
    its other members Apache ZooKeeper's), started and serving; by id."""
    rk = {}
    try:
        for i in ids:
            cfg = {"clientPort": str(zk.client_port[i]), "tickTime": str(tick_ms), "initLimit": "10",
                   "syncLimit": "5"}
            for j in zk.ids:
                cfg[f"server.{j}"] = f"127.0.0.1:{zk.quorum_port[j]}:{zk.election_port[j]}"
            rk[i] = servers.start_ringkeeper(cfg, wait=False, myid=i)
        for s in rk.values():
            servers._wait_ready(s.proc, s.port, s.data_dir.parent / "server.log", "ringkeeper")
        return rk
    except BaseException:
        for s in rk.values():
            s.stop()
        raise
