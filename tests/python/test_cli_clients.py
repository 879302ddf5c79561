"""ZooKeeper's own command-line clients against ringkeeper: a scripted zkCli.sh session
(the Java client) and the C client shell in batch mode (Debian's zookeeper-bin ships it
as cli_mt; cli_st is the same program single-threaded)."""

import re
import subprocess
from pathlib import Path

ZKCLI = "/usr/share/zookeeper/bin/zkCli.sh"
CLI_MT = "/usr/lib/zookeeper/bin/cli_mt"


def test_zkcli_scripted_session(rk):
    assert Path(ZKCLI).exists(), "zkCli.sh missing: apt-get install -y zookeeper"
    script = "\n".join([
        "create /zkcli hello",
        "get /zkcli",
        "set /zkcli world",
        "get -s /zkcli",
        "create -e -s /zkcli/e- x",
        "ls /zkcli",
        "delete /zkcli",
        "setAcl /zkcli world:anyone:r",
        "getAcl /zkcli",
        "set /zkcli denied",
        "quit",
    ]) + "\n"
    p = subprocess.run([ZKCLI, "-server", rk.hosts], input=script, capture_output=True, text=True, timeout=120)
    out = p.stdout + p.stderr
    assert "Created /zkcli" in out
    assert "\nhello\n" in p.stdout and "\nworld\n" in p.stdout
    assert re.search(r"dataVersion = 1", p.stdout)
    assert "Created /zkcli/e-0000000000" in out
    assert "[e-0000000000]" in p.stdout
    assert "Node not empty: /zkcli" in out
    assert "'world,'anyone\n: r" in p.stdout
    assert "Insufficient permission : /zkcli" in out


def cli(rk, cmd):
    p = subprocess.run([CLI_MT, rk.hosts, "cmd:" + cmd], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stderr + p.stdout


def test_c_client_batch_mode(rk):
    assert Path(CLI_MT).exists(), "the C client shell is missing: apt-get install -y zookeeper-bin"
    assert "[/cbatch]: rc = 0" in cli(rk, "create /cbatch")
    out = cli(rk, "set /cbatch fromc")
    assert "/cbatch: rc = 0" in out and "version=1" in out
    out = cli(rk, "get /cbatch")
    assert "value_len = 5" in out and "fromc" in out
    assert "\tcbatch\n" in cli(rk, "ls /")
    assert "rc = 0" in cli(rk, "create +e /cbatch/eph")
    # the ephemeral went with that batch session
    assert "/cbatch: rc = 0" in cli(rk, "ls2 /cbatch")
    assert "rc = -101" in cli(rk, "get /cbatch/missing")
    assert "rc = 0" in cli(rk, "delete /cbatch")
