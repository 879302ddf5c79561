"""The binary's start-up: the embedded default, zoo.cfg errors that name the file, line
and key, unknown keys warned about, and where the data is kept."""

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

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
        cfg.write_text(f"clientPort={port}\nclientPortAddress=127.0.0.1\nfrobnicate=1\ndataDir={d}/data\n")
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
