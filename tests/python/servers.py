"""Starting and stopping real servers for the Python tests: ringkeeper (the binary this
checkout builds) and Apache ZooKeeper 3.8 (Debian package `zookeeper`). Each server gets
a free loopback port and its own temp dir, and is stopped by PID."""

import os
import random
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RINGKEEPER_BIN = Path(os.environ.get("RINGKEEPER_BIN", REPO / "target" / "release" / "ringkeeper"))
ZOOKEEPER_JAR = Path("/usr/share/java/zookeeper.jar")
# ZooKeeper logs through SLF4J, and Debian's zookeeper.jar names no binding in its
# class path: without one, SLF4J falls back to a no-op logger and ZooKeeper logs
# nothing at all, which is not how its operators run it. The log4j 1.2 binding and
# log4j itself come with the package (libzookeeper-java depends on both).
LOG_JARS = [Path("/usr/share/java/slf4j-log4j12.jar"), Path("/usr/share/java/log4j-1.2.jar")]


# What ZooKeeper's AdminServer needs on the class path (Jetty, the servlet API and
# Jackson: Debian packages that libzookeeper-java depends on).
ADMIN_JARS = [Path("/usr/share/java") / j for j in (
    "jetty9-server.jar", "jetty9-servlet.jar", "jetty9-http.jar", "jetty9-io.jar", "jetty9-util.jar",
    "jetty9-security.jar", "jetty9-util-ajax.jar", "servlet-api.jar", "jackson-databind.jar",
    "jackson-core.jar", "jackson-annotations.jar")]


def zookeeper_classpath(conf_dir, admin=False):
    """conf dir (log4j.properties) : ZooKeeper : the log4j binding, as present; with
    `admin`, what its AdminServer needs too."""
    jars = [ZOOKEEPER_JAR] + [j for j in LOG_JARS if j.exists()] + (ADMIN_JARS if admin else [])
    return ":".join([str(conf_dir)] + [str(j) for j in jars])


def wait_for(pred, timeout=10.0):
    """Polls `pred` until it holds or `timeout` seconds pass; returns whether it held."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


def _ephemeral_range():
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


_handed_out = set()


def free_port():
    """A port for a server to listen on, from below the kernel's ephemeral range. A
    port the kernel hands out for bind(0) comes from that range, and so do the source
    ports of outgoing connections: between this call and the server's bind, any client
    connection (kazoo's, another test's) could take it. Outside the range nothing is
    assigned behind our back; each port is handed out once per process."""
    lo, _ = _ephemeral_range()
    floor = 10000 if lo > 12000 else 1024
    while True:
        port = random.randrange(floor, lo)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port


def four_letter(port, word, timeout=5.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(word.encode())
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    return b"".join(chunks).decode()


def _wait_ready(proc, port, log_path, what, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}; log:\n{Path(log_path).read_text()[-4000:]}")
        try:
            if four_letter(port, "ruok", timeout=1.0) == "imok" and "Mode:" in four_letter(port, "srvr", timeout=1.0):
                return
        except OSError:
            pass
        time.sleep(0.05)
    # Not left running: it would hold the port (and a core) for every later test.
    proc.kill()
    proc.wait(timeout=30)
    raise RuntimeError(f"{what} did not answer ruok on port {port} within {timeout}s; log:\n"
                       f"{Path(log_path).read_text(errors='replace')[-4000:] if Path(log_path).exists() else ''}")


class Server:
    def __init__(self, proc, port, tmp, kind, restart=None):
        self.proc, self.port, self.tmp, self.kind = proc, port, tmp, kind
        self._restart = restart

    @property
    def data_dir(self):
        return Path(self.tmp.name) / "data"

    @property
    def log_text(self):
        return "".join(p.read_text(errors="replace") for p in sorted(Path(self.tmp.name).glob("*.log")))

    def kill(self):
        """SIGKILL, keeping the data dir for a restart."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def restart(self):
        """Starts the server again on the same port and data; waits until it serves."""
        self.kill()
        self.proc = self._restart()

    @property
    def hosts(self):
        return f"127.0.0.1:{self.port}"

    def four(self, word):
        return four_letter(self.port, word)

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        keep = os.environ.get("RK_TEST_LOG_DIR")
        if keep:
            import shutil
            Path(keep).mkdir(parents=True, exist_ok=True)
            for log in Path(self.tmp.name).glob("*.log"):
                shutil.copy(log, Path(keep) / f"{self.kind}-{self.port}-{self.proc.pid}-{log.name}")
        self.tmp.cleanup()


COMMON_CFG = {
    "tickTime": "2000",
    "4lw.commands.whitelist": "*",
}


def start_ringkeeper(extra=None, shards=None, wait=True, myid=None):
    """ringkeeper with its own temp dir (and port, unless `extra` names one); with
    wait=False, returns at once, without waiting for it to serve. `myid`: the member
    id written to dataDir/myid (an ensemble's server lines come in `extra`)."""
    if not RINGKEEPER_BIN.exists():
        raise RuntimeError(f"{RINGKEEPER_BIN} is missing: build it with cargo build --release")
    tmp = tempfile.TemporaryDirectory(prefix="rk-test-")
    port = int((extra or {}).get("clientPort") or free_port())
    cfg = dict(COMMON_CFG)
    # The AdminServer is on by default with a zoo.cfg, as in ZooKeeper: off here, so
    # that servers running side by side do not contend for port 8080.
    cfg.update({"dataDir": f"{tmp.name}/data", "clientPort": str(port), "clientPortAddress": "127.0.0.1",
                "admin.enableServer": "false"})
    if shards:
        cfg["shards"] = str(shards)
    cfg.update(extra or {})
    cfg_path = Path(tmp.name) / "zoo.cfg"
    cfg_path.write_text("".join(f"{k}={v}\n" for k, v in cfg.items()))
    if myid is not None:
        (Path(tmp.name) / "data").mkdir(parents=True, exist_ok=True)
        (Path(tmp.name) / "data" / "myid").write_text(f"{myid}\n")
    log_path = Path(tmp.name) / "server.log"

    def launch(wait=True):
        proc = subprocess.Popen(
            [str(RINGKEEPER_BIN), "--config", str(cfg_path)],
            stdout=open(log_path, "ab"), stderr=subprocess.STDOUT,
            env=dict(os.environ),
        )
        if wait:
            _wait_ready(proc, port, log_path, "ringkeeper")
        return proc

    server = Server(launch(wait), port, tmp, "ringkeeper", restart=launch)
    server.launch = launch
    return server


LOG4J_INFO = """log4j.rootLogger=INFO, FILE
log4j.appender.FILE=org.apache.log4j.FileAppender
log4j.appender.FILE.File={log}
log4j.appender.FILE.layout=org.apache.log4j.PatternLayout
log4j.appender.FILE.layout.ConversionPattern=%d{{ISO8601}} - %-5p [%t:%C{{1}}@%L] - %m%n
"""


def start_zookeeper(extra=None, heap="512m", wait=True):
    """Apache ZooKeeper standalone, started as its operators do: log4j at INFO, a
    fixed heap, forceSync on. With wait=False, returns at once."""
    if not ZOOKEEPER_JAR.exists():
        raise RuntimeError("Apache ZooKeeper is not installed: apt-get install -y zookeeper")
    tmp = tempfile.TemporaryDirectory(prefix="zk-test-")
    port = int((extra or {}).get("clientPort") or free_port())
    cfg = dict(COMMON_CFG)
    cfg.update({"dataDir": f"{tmp.name}/data", "clientPort": str(port),
                "clientPortAddress": "127.0.0.1", "admin.enableServer": "false",
                "forceSync": "yes"})
    cfg.update(extra or {})
    conf_dir = Path(tmp.name) / "conf"
    conf_dir.mkdir()
    cfg_path = conf_dir / "zoo.cfg"
    cfg_path.write_text("".join(f"{k}={v}\n" for k, v in cfg.items()))
    log_path = Path(tmp.name) / "zookeeper.log"
    (conf_dir / "log4j.properties").write_text(LOG4J_INFO.format(log=log_path))
    props = [f"-Dzookeeper.{k}={v}" for k, v in (extra or {}).items() if k in ("extendedTypesEnabled", "enforceQuota")]
    props += [f"-D{k}={v}" for k, v in (extra or {}).items() if k.startswith("znode.")]

    def launch(wait=True):
        proc = subprocess.Popen(
            ["java", f"-Xms{heap}", f"-Xmx{heap}", "-Dlog4j.configuration=file:" + str(conf_dir / "log4j.properties"),
             "-Dzookeeper.4lw.commands.whitelist=*", *props,
             "-cp", zookeeper_classpath(conf_dir, admin=cfg["admin.enableServer"] == "true"),
             "org.apache.zookeeper.server.ZooKeeperServerMain", str(cfg_path)],
            stdout=open(Path(tmp.name) / "stdout.log", "ab"), stderr=subprocess.STDOUT,
        )
        if wait:
            _wait_ready(proc, port, log_path if log_path.exists() else Path(tmp.name) / "stdout.log", "zookeeper")
        return proc

    server = Server(launch(wait), port, tmp, "zookeeper", restart=launch)
    server.launch = launch
    return server


class Ensemble(list):
    """The members of one ensemble, in id order; `network` is the MemberNetwork between
    them, when they were started behind one."""
    network = None

    def stop(self):
        for m in self:
            m.stop()
        if self.network:
            self.network.stop()


def start_ringkeeper_ensemble(n=3, extra=None, observers=(), network=None, wait=True):
    """`n` ringkeeper members of one ensemble on loopback (ids 1..n, each with its own
    client, quorum and election port and data dir); waits until one leads and the
    rest follow (or observe). `network`: a factory given the members' quorum and
    election ports by id, returning what routes them (`dial(i, j)` names the ports
    member i is to dial for member j), such as tcpproxy.MemberNetwork."""
    ids = range(1, n + 1)
    client = {i: free_port() for i in ids}
    quorum = {i: free_port() for i in ids}
    election = {i: free_port() for i in ids}
    members = Ensemble()
    if network:
        members.network = network(quorum, election)
    try:
        for i in ids:
            cfg = {"clientPort": str(client[i]), "initLimit": "10", "syncLimit": "5", "tickTime": "200"}
            for j in ids:
                q, e = (quorum[j], election[j]) if j == i or not network else members.network.dial(i, j)
                kind = ":observer" if j in observers else ""
                cfg[f"server.{j}"] = f"127.0.0.1:{q}:{e}{kind}"
            cfg.update(extra or {})
            members.append(start_ringkeeper(cfg, wait=False, myid=i))
        for s in members:
            _wait_ready(s.proc, s.port, Path(s.tmp.name) / "server.log", "ringkeeper")
        if wait and not wait_for(lambda: settled(members), 60):
            raise RuntimeError("no leader within 60 s: " + ", ".join(
                f"{s.port}: {member_mode(s)}" for s in members))
        return members
    except BaseException:
        members.stop()
        raise


def settled(members):
    """One member leads and every other follows or observes."""
    modes = [member_mode(s) for s in members]
    return all(m in ("leader", "follower", "observer") for m in modes) and modes.count("leader") == 1


def member_mode(server):
    """What `srvr` says the member is (leader, follower, observer, looking), or None."""
    try:
        for line in four_letter(server.port, "srvr", timeout=2.0).splitlines():
            if line.startswith("Mode: "):
                return line[len("Mode: "):]
    except OSError:
        return None
    return None
