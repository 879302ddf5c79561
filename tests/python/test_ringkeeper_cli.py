"""`ringkeeper-cli` against ringkeeper and against Apache ZooKeeper 3.8: a script of
zkCli commands (watch events included) prints the same on both servers and reads
like zkCli's own output for the same script; `-c` and `--json` modes; and an
interactive session through a pseudo-terminal (prompt, path completion from the
server, history, redo)."""

import json
import os
from collections import Counter
import pty
import re
import select
import subprocess
import time

import pytest
from kazoo.security import make_digest_acl_credential

import servers

CLI = servers.RINGKEEPER_BIN.parent / "ringkeeper-cli"
ZKCLI = "/usr/share/zookeeper/bin/zkCli.sh"
EXTENDED = {"extendedTypesEnabled": "true"}

DIGEST = make_digest_acl_credential("alice", "secret")  # alice:<base64 sha1>

SCRIPT = """create ROOT a
create ROOT/x "hello world"
create -e ROOT/eph e
create -s ROOT/seq- s
create -c ROOT/cont
create -t 600000 ROOT/ttl t
create ROOT/locked secret digest:DIGEST:r
ls ROOT
ls -s ROOT
get ROOT/x
get -s ROOT/x
stat ROOT
get -w ROOT/x
set ROOT/x changed
set -s ROOT/x again
getAcl -s ROOT
getAllChildrenNumber ROOT
getEphemerals ROOT
sync ROOT
whoami
addauth digest alice:secret
whoami
getAcl ROOT/locked
get ROOT/locked
LS_R
setAcl ROOT/x world:anyone:cdrwa
delete ROOT/seq-0000000002
deleteall ROOT/cont
ls ROOT
"""


def script(root, ls_r=True):
    """SCRIPT under `root` (with `ls -R`, whose order zkCli takes from the server)."""
    text = SCRIPT.replace("DIGEST", DIGEST).replace("LS_R\n", f"ls -R {root}\n" if ls_r else "")
    return text.replace("ROOT", root)


@pytest.fixture(scope="module")
def both():
    rk = servers.start_ringkeeper(EXTENDED)
    zk = servers.start_zookeeper(EXTENDED)
    try:
        yield rk, zk
    finally:
        rk.stop()
        zk.stop()


def run(server, *args, stdin=None):
    return subprocess.run([str(CLI), "--server", server.hosts, *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


def normalize(text):
    """Times and session ids differ between two servers by nature."""
    text = re.sub(r"(ctime|mtime) = .*", r"\1 = T", text)
    text = re.sub(r"ephemeralOwner = 0x[0-9a-f]+", lambda m: "ephemeralOwner = " + ("0x0" if m.group(0).endswith(" 0x0") else "S"), text)
    return text


def test_a_script_prints_the_same_on_ringkeeper_and_on_zookeeper(both):
    rk, zk = both
    text = script("/t")
    a, b = run(rk, stdin=text), run(zk, stdin=text)
    assert a.returncode == 0 and b.returncode == 0, (a.stderr, b.stderr)
    assert normalize(a.stdout) == normalize(b.stdout)
    assert a.stderr == b.stderr
    out = a.stdout
    assert "[cont, eph, locked, seq-0000000002, ttl, x]\n" in out
    assert "hello world\n" in out and "dataVersion = 2" in out
    # The session's own setData fires its data watch, printed as zkCli prints it.
    assert "\nWATCHER::\n\nWatchedEvent state:SyncConnected type:NodeDataChanged path:/t/x\n" in out
    # Without ADMIN on the node, both servers hide the digest's hash (CVE-2019-0201).
    assert "'digest,'alice:x\n: r\n" in out
    assert "/t\n/t/cont\n/t/eph\n/t/locked\n/t/seq-0000000002\n/t/ttl\n/t/x\n" in out
    assert "Sync is OK\n" in out and "Auth scheme: User\nip: 127.0.0.1\n" in out
    assert "digest: alice\n" in out
    assert "Created /t/seq-0000000002\n" in a.stderr


def test_it_reads_like_zkcli(both):
    """The same script through zkCli.sh and through ringkeeper-cli, each against the
    same ZooKeeper under its own root: the same lines, zxids and times aside."""
    assert os.path.exists(ZKCLI), "zkCli.sh missing: apt-get install -y zookeeper"
    _, zk = both
    # (zkCli's ls -R lists children in the server's order, which is not ours.)
    z = subprocess.run([ZKCLI, "-server", zk.hosts], input=script("/zkcli-t", ls_r=False) + "quit\n",
                       capture_output=True, text=True, timeout=120)
    r = run(zk, stdin=script("/rk-t", ls_r=False))
    assert r.returncode == 0, r.stderr

    def lines(text, root):
        keep = []
        for line in text.replace(root, "ROOT").splitlines():
            line = re.sub(r"0x[0-9a-f]+", "0xN", normalize(line))
            if line.strip():
                keep.append(line)
        return keep

    def event(line):
        return line == "WATCHER::" or line.startswith("WatchedEvent ")

    theirs = lines(z.stdout + z.stderr, "/zkcli-t")
    ours = lines(r.stdout + r.stderr, "/rk-t")
    assert len(ours) > 60, ours
    # zkCli prints watch events (the connection's first among them) from its event
    # thread, so where they land among its commands' output depends on timing (a CI
    # run under load had the connection event after the first commands' output): they
    # are compared as a multiset, every other line in order.
    assert not Counter(filter(event, ours)) - Counter(filter(event, theirs)), (ours, theirs)
    assert any(event(line) for line in ours), ours
    # zkCli's own lines (its logging, banners) aside, every line of ours is one of
    # zkCli's, in the same order.
    it = iter([t for t in theirs if not event(t)])
    missing = [line for line in ours if not event(line) and not any(line == t for t in it)]
    assert missing == [], (missing, theirs)


def test_command_mode_exits_with_zkclis_error(both):
    rk, zk = both
    for s in both:
        r = run(s, "create", "/cm", "x")
        assert r.returncode == 0 and r.stderr == "Created /cm\n", r.stderr
        r = run(s, "get", "/no/such")
        assert r.returncode == 1 and r.stderr == "Node does not exist: /no/such\n", r.stderr
        r = run(s, "-c", "create /cm again")
        assert r.returncode == 1 and r.stderr == "Node already exists: /cm\n"
        r = run(s, "set", "-v", "99", "/cm", "v")
        assert r.returncode == 1 and r.stderr == "version No is not valid : /cm\n"
        r = run(s, "-c", "create /cm/child c")
        assert run(s, "delete", "/cm").stderr == "Node not empty: /cm\n"
        r = run(s, "ls", "t")
        assert r.returncode == 1 and r.stderr == "Path must start with / character\n"
        r = run(s, "frobnicate")
        assert r.returncode == 1 and "Command not found frobnicate" in r.stderr
    # A script stops at its first failing line, with status 1.
    r = run(rk, stdin="create /stop1 a\nget /missing\ncreate /stop2 b\n")
    assert r.returncode == 1 and "Node does not exist: /missing" in r.stderr
    assert run(rk, "stat", "/stop2").returncode == 1


def test_json_output(both):
    rk, _ = both
    assert run(rk, "create", "/js", "j").returncode == 0
    assert run(rk, "create", "/js/a", "j").returncode == 0
    r = run(rk, "--json", "ls", "-s", "/js")
    v = json.loads(r.stdout)
    assert v["children"] == ["a"] and v["stat"]["numChildren"] == 1
    assert json.loads(run(rk, "--json", "get", "/js/a").stdout)["data"] == "j"
    r = run(rk, "--json", "get", "/no/such")
    assert r.returncode == 1
    assert json.loads(r.stdout) == {"error": "Node does not exist: /no/such", "code": -101}


def read_until(fd, pattern, timeout=10):
    """Reads the pty until `pattern` shows (DOTALL); returns what was read."""
    buf = b""
    end = time.time() + timeout
    while time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            if re.search(pattern, buf.decode(errors="replace"), re.S):
                return buf.decode(errors="replace")
    raise AssertionError(f"no {pattern!r} in {buf.decode(errors='replace')!r}")


def interactive_session(server):
    """Drives ringkeeper-cli through a pseudo-terminal; returns what it showed."""
    for cmd in ("create /it i", "create /it/locked l", "create /it/x x"):
        assert run(server, "-c", cmd).returncode == 0
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(str(CLI), [str(CLI), "--server", server.hosts])
    shown = ""
    try:
        shown += read_until(fd, r"\[zk: 127\.0\.0\.1:\d+\(CONNECTED\) 0\] ")
        # "/it/lo" + TAB completes to the only child that starts so: /it/locked.
        os.write(fd, b"stat /it/lo\t\r")
        shown += read_until(fd, r"numChildren = 0")
        os.write(fd, b"get -w /it/x\r")
        shown += read_until(fd, r"\(CONNECTED\) 2\] ")
        # The watch fires: the event is printed as it arrives.
        os.write(fd, b"set /it/x changed\r")
        shown += read_until(fd, r"type:NodeDataChanged path:/it/x\s+.*\(CONNECTED\) 3\] ")
        os.write(fd, b"history\r")
        shown += read_until(fd, r"3 - history")
        os.write(fd, b"redo 1\r")
        shown += read_until(fd, r"\(CONNECTED\) 5\] ")
        os.write(fd, b"quit\r")
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        return shown
    finally:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        os.close(fd)


def test_an_interactive_session_is_the_same_on_both_servers(both):
    """Prompt, TAB completion of a path fetched from the server, a watch event printed
    as it arrives, history and redo, through a pseudo-terminal."""
    rk, zk = both
    seen = [interactive_session(s) for s in (rk, zk)]
    for shown, s in zip(seen, (rk, zk)):
        assert "stat /it/locked" in shown
        assert "WATCHER::" in shown and "type:NodeDataChanged path:/it/x" in shown
        assert "0 - stat /it/locked" in shown and "1 - get -w /it/x" in shown
    # What the commands printed, in order (the terminal's echo and redraws aside,
    # which depend on how the reads fell), times and zxids aside (the servers took
    # other writes before).
    output = re.compile(r"^([cmp]Zxid|ctime|mtime|cversion|dataVersion|aclVersion|ephemeralOwner"
                        r"|dataLength|numChildren|WATCHER::|WatchedEvent|\d+ - |x$|changed$)")

    def printed(text):
        text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
        lines = [line.strip() for line in re.split(r"[\r\n]+", text)]
        return [re.sub(r"0x[0-9a-f]+", "0xN", normalize(line)) for line in lines if output.match(line)]

    a, b = printed(seen[0]), printed(seen[1])
    assert len(a) > 20 and a == b, (a, b)
