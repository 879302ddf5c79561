"""The binary's start-up: the embedded default, zoo.cfg errors that name the file, line
and key, unknown keys warned about, and where the data is kept."""

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import servers


def run_bin(args, timeout=10):
    return subprocess.run([str(servers.RINGKEEPER_BIN)] + args, capture_output=True, text=True, timeout=timeout)


def test_bad_value_names_file_line_and_key():
    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "zoo.cfg"
        cfg.write_text("tickTime=2000\nclientPort=notaport\n")
        p = run_bin(["--config", str(cfg)])
        assert p.returncode == 2
        assert f"{cfg}:2" in p.stderr and "clientPort" in p.stderr and "notaport" in p.stderr


def test_malformed_line_and_missing_file_are_reported():
    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "zoo.cfg"
        cfg.write_text("tickTime 2000\n")
        p = run_bin(["--config", str(cfg)])
        assert p.returncode == 2 and "expected key=value" in p.stderr
        p = run_bin(["--config", str(Path(d) / "missing.cfg")])
        assert p.returncode == 2 and "cannot read config file" in p.stderr


def test_unknown_key_warns_and_server_starts_naming_its_storage():
    port = servers.free_port()
    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "zoo.cfg"
        cfg.write_text(f"clientPort={port}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\nfrobnicate=1\ndataDir={d}/data\n")
        proc = subprocess.Popen([str(servers.RINGKEEPER_BIN), "--config", str(cfg)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.time() + 10
            lines = []
            while time.time() < deadline and not any("serving ZooKeeper clients" in l for l in lines):
                lines.append(proc.stdout.readline())
            text = "".join(lines)
            assert 'unknown configuration key "frobnicate"' in text
            assert f"snapshots in {d}/data/ringkeeper, txn log in {d}/data/ringkeeper" in text
            # srvr is whitelisted by default, ruok is not (as ZooKeeper 3.5+)
            assert "Mode: standalone" in servers.four_letter(port, "srvr")
            assert "not in the whitelist" in servers.four_letter(port, "ruok")
        finally:
            proc.kill()
            proc.wait()


def test_port_in_use_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = run_bin(["--client-port", str(port)])
        assert p.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in p.stderr


def test_flags_override_and_bad_flag():
    p = run_bin(["--shards", "0"])
    assert p.returncode == 2 and "shards" in p.stderr
    p = run_bin(["--nonsense"])
    assert p.returncode == 2 and "unknown argument" in p.stderr


# One server per data dir and per port. Two servers on one data dir both appended to
# one txn log; two on one port split the clients between two trees (two primaries
# under Patroni). Start-up must refuse both, and must not leave the port unusable for
# the server that comes next (ZooKeeper, in a roll-back).

def refused(args, timeout=20):
    p = run_bin(args, timeout=timeout)
    assert p.returncode == 1, f"a second server started (exit {p.returncode}):\n{p.stderr}"
    return p.stderr


def serves_its_tree(server, marker):
    """Eight fresh sessions (the split seen in the field was 5 to 3) all see `marker`."""
    from kazoo.client import KazooClient
    clients = [KazooClient(hosts=server.hosts, timeout=10) for _ in range(8)]
    try:
        for c in clients:
            c.start(timeout=10)
        return all(c.exists(marker) is not None for c in clients)
    finally:
        for c in clients:
            c.stop()
            c.close()


def create_marker(server, path):
    from kazoo.client import KazooClient
    c = KazooClient(hosts=server.hosts, timeout=10)
    c.start(timeout=10)
    c.create(path, b"first")
    c.stop()
    c.close()


def test_a_second_server_on_the_same_data_dir_refuses_naming_the_dir_and_pid():
    first = servers.start_ringkeeper()
    try:
        create_marker(first, "/first")
        data = str(first.data_dir)
        err = refused(["--data-dir", data, "--client-port", str(servers.free_port())])
        assert f"dataDir {data}/ringkeeper is in use" in err, err
        assert f"held by process {first.proc.pid}" in err, err
        # A separate dataDir with the first one's dataDir as its dataLogDir: the log is
        # what both would append to.
        with tempfile.TemporaryDirectory() as d:
            err = refused(["--data-dir", d, "--set", f"dataLogDir={data}",
                           "--client-port", str(servers.free_port())])
            assert f"dataLogDir {data}/ringkeeper is in use" in err and str(first.proc.pid) in err, err
        assert serves_its_tree(first, "/first")
        # A killed server leaves no stale lock: the restart takes the dir at once.
        first.restart()
        servers._wait_ready(first.proc, first.port, Path(first.tmp.name) / "server.log", "ringkeeper")
        assert serves_its_tree(first, "/first")
        assert (first.data_dir / "ringkeeper" / "LOCK").read_text().strip() == str(first.proc.pid)
    finally:
        first.stop()


def test_a_second_ringkeeper_on_the_same_port_refuses_and_clients_see_one_tree():
    first = servers.start_ringkeeper()
    try:
        create_marker(first, "/only-tree")
        with tempfile.TemporaryDirectory() as d:
            err = refused(["--data-dir", d, "--client-port", str(first.port),
                           "--client-port-address", "127.0.0.1"])
            assert f"cannot listen on 127.0.0.1:{first.port}" in err, err
            # On every address of the port, too (0.0.0.0 covers 127.0.0.1).
            err = refused(["--data-dir", d, "--client-port", str(first.port),
                           "--client-port-address", "0.0.0.0"])
            assert f"cannot listen on 0.0.0.0:{first.port}" in err, err
        assert serves_its_tree(first, "/only-tree")
    finally:
        first.stop()


def test_ringkeeper_refuses_a_port_zookeeper_serves():
    zk = servers.start_zookeeper()
    try:
        with tempfile.TemporaryDirectory() as d:
            err = refused(["--data-dir", d, "--client-port", str(zk.port)])
            assert f"cannot listen on 127.0.0.1:{zk.port}" in err, err
        assert "Mode: standalone" in zk.four("srvr")
    finally:
        zk.stop()


def test_zookeeper_cannot_take_a_port_ringkeeper_serves():
    rk = servers.start_ringkeeper()
    try:
        create_marker(rk, "/rk-tree")
        zk = servers.start_zookeeper({"clientPort": str(rk.port)}, wait=False)
        try:
            assert zk.proc.wait(timeout=60) != 0, "ZooKeeper started on ringkeeper's port"
        finally:
            zk.stop()
        assert serves_its_tree(rk, "/rk-tree")
    finally:
        rk.stop()


def time_wait_on_port(port):
    """Sockets in TIME_WAIT whose local port is `port` (/proc/net/tcp, state 06)."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "06" and int(f[1].split(":")[1], 16) == port:
                n += 1
    return n


def test_zookeeper_takes_the_port_right_after_ringkeeper_stops():
    """A roll-back: ringkeeper stops with clients connected, and Apache ZooKeeper
    starts on the same port at once. The server side of each closed connection sits
    in TIME_WAIT for a minute; ZooKeeper binds with SO_REUSEADDR, which Linux honours
    over TIME_WAIT sockets only if they were made with it too."""
    import rawzk
    rk = servers.start_ringkeeper()
    port = rk.port
    try:
        clients = [rawzk.RawClient(port) for _ in range(4)]
        for i, c in enumerate(clients):
            assert c.create(f"/c{i}")[0] == 0
        rk.proc.terminate()
        rk.proc.wait(timeout=30)
        # Each client sees the server's close (its io_uring rings may release the
        # sockets a moment after the process is gone), then closes its end: the
        # server's side of each connection is left in TIME_WAIT.
        for c in clients:
            c.sock.settimeout(10)
            assert c.sock.recv(1) == b"", "the server did not close the connection"
            c.close()
        assert servers.wait_for(lambda: time_wait_on_port(port) >= 4, 10), \
            "the stop left no TIME_WAIT connections: this test would prove nothing"
        zk = servers.start_zookeeper({"clientPort": str(port)}, wait=False)
        try:
            servers._wait_ready(zk.proc, port, Path(zk.tmp.name) / "stdout.log", "zookeeper", timeout=30)
            assert time_wait_on_port(port) >= 1, "TIME_WAIT ended before ZooKeeper bound"
        finally:
            zk.stop()
    finally:
        rk.stop()


def test_an_ensemble_config_is_read_as_zookeeper_reads_it():
    """server.N lines describe an ensemble: myid must be in dataDir, as ZooKeeper
    requires, and name one of the lines. A member whose peers are down looks for a
    leader and serves no client meanwhile (a tree of its own would not be the
    ensemble's): srvr says "looking" and handshakes are refused."""
    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "zoo.cfg"
        port = servers.free_port()
        cfg.write_text(f"clientPort={port}\ndataDir={d}\nadmin.enableServer=false\n4lw.commands.whitelist=srvr,isro\n"
                       "server.1=127.0.0.1:2888:3888\nserver.2=127.0.0.2:2888:3888\n"
                       "server.3=127.0.0.3:2888:3888:observer\n")
        p = run_bin(["--config", str(cfg)])
        assert p.returncode == 2 and f"{d}/myid file is missing" in p.stderr, p.stderr
        (Path(d) / "myid").write_text("two\n")
        p = run_bin(["--config", str(cfg)])
        assert p.returncode == 2 and 'serverid "two" is not a number' in p.stderr, p.stderr
        (Path(d) / "myid").write_text("7\n")
        p = run_bin(["--config", str(cfg)])
        assert p.returncode == 2 and "my id 7" in p.stderr and "not among the server.N lines" in p.stderr
        (Path(d) / "myid").write_text("2\n")
        member = subprocess.Popen([str(servers.RINGKEEPER_BIN), "--config", str(cfg)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert servers.wait_for(lambda: _srvr_mode(port) == "looking", 10), _srvr_mode(port)
            import rawzk
            with pytest.raises(Exception):
                rawzk.RawClient(port).create("/mine")
            assert member.poll() is None, "a member without peers must keep looking"
            # No server runs behind a looking member: isro says so, as ZooKeeper's does.
            assert servers.four_letter(port, "isro") == "null"
        finally:
            member.kill()
            member.wait()
        # A malformed line is named by file and line, as any bad value.
        cfg.write_text(f"clientPort={port}\ndataDir={d}\nserver.1=127.0.0.1:2888\n")
        p = run_bin(["--config", str(cfg)])
        assert p.returncode == 2 and f"{cfg}:3" in p.stderr and "host:port:port" in p.stderr, p.stderr
        # One line with standaloneEnabled (the default) is standalone, as in ZooKeeper.
        cfg.write_text(f"clientPort={port}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\ndataDir={d}\nserver.1=127.0.0.1:2888:3888\n")
        proc = subprocess.Popen([str(servers.RINGKEEPER_BIN), "--config", str(cfg)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert servers.wait_for(lambda: _answers_srvr(port), 10), "one server line did not run standalone"
        finally:
            proc.kill()
            proc.wait()


def _srvr_mode(port):
    try:
        for line in servers.four_letter(port, "srvr", timeout=1).splitlines():
            if line.startswith("Mode: "):
                return line[6:]
    except OSError:
        return None
    return None


def _answers_srvr(port):
    try:
        return "Mode: standalone" in servers.four_letter(port, "srvr", timeout=1)
    except OSError:
        return False


def test_logs_as_json_lines_with_a_level_per_module():
    """logFormat=json: every line is one JSON object; logLevel takes tracing's
    directives, so one module can be quieter than the rest."""
    import json
    admin = servers.free_port()
    srv = servers.start_ringkeeper({"logFormat": "json", "logLevel": "info,ringkeeper::server=warn",
                                    "admin.enableServer": "true", "admin.serverAddress": "127.0.0.1",
                                    "admin.serverPort": str(admin)})
    try:
        from kazoo.client import KazooClient
        zk = KazooClient(hosts=srv.hosts)
        zk.start()
        zk.create("/j", b"")
        zk.stop()
        srv.kill()
        lines = [json.loads(line) for line in srv.log_text.splitlines() if line.strip()]
    finally:
        srv.stop()
    assert any("serving ZooKeeper clients" in l["fields"]["message"] for l in lines), lines
    assert all({"timestamp", "level", "target"} <= set(l) for l in lines)
    # ringkeeper::server's info line (the admin endpoint's address) is filtered out.
    assert not any(l["target"] == "ringkeeper::server" and l["level"] == "INFO" for l in lines)
    # No line per request at the default level.
    assert not any("/j" in json.dumps(l) for l in lines)


def test_a_bad_log_setting_names_the_key():
    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "zoo.cfg"
        for line, key in [("logFormat=xml", "logFormat"), ("logLevel=info,[", "logLevel")]:
            cfg.write_text(f"dataDir={d}\n{line}\n")
            p = run_bin(["--config", str(cfg)])
            assert p.returncode == 2 and f"{cfg}:2" in p.stderr and key in p.stderr, p.stderr
