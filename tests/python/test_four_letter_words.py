"""Differential test of the four-letter words: the same workload against Apache
ZooKeeper 3.8 and ringkeeper, then every word of the whitelist against both, their
outputs compared field by field. Session ids, addresses, times, latencies, paths on
disk and the JVM's own facts differ by nature: those are checked for shape (and, for
times, for plausibility), everything else must be equal.

The workload runs on raw jute connections, so no client library adds pings or
requests of its own, and each client reads every reply and watch event it is owed
before a word is asked: a packet is counted by ZooKeeper when it is written, and a
client that has read it knows it was."""

import re
import time
from datetime import datetime

import pytest

import rawzk
import servers

WORDS = ["ruok", "isro", "srvr", "stat", "cons", "wchs", "wchc", "wchp", "dump", "mntr",
         "conf", "envi", "dirs", "crst", "srst"]

# mntr keys both servers report and whose values must agree after the same workload.
MNTR_EQUAL = ["zk_server_state", "zk_packets_received", "zk_packets_sent", "zk_num_alive_connections",
              "zk_outstanding_requests", "zk_znode_count", "zk_watch_count", "zk_ephemerals_count",
              "zk_approximate_data_size", "zk_global_sessions"]
MNTR_NUMERIC = ["zk_avg_latency", "zk_max_latency", "zk_min_latency", "zk_open_file_descriptor_count",
                "zk_uptime"]


def workload(port):
    """Two sessions, a and b. a creates nodes and leaves data, exists, child,
    persistent and persistent-recursive watches; b changes what a watches, makes an
    ephemeral, a container and a TTL node, leaves a child watch of its own, pings, and
    sends requests that fail. Returns the session ids by role."""
    a, b = rawzk.RawClient(port), rawzk.RawClient(port)
    a.create("/w")
    a.create("/w/x", b"1")
    a.get_data("/w/x")
    a.call(4, rawzk.s_str("/w/x") + b"\1")  # getData with a watch
    a.call(8, rawzk.s_str("/w") + b"\1")  # getChildren with a watch
    assert a.exists("/w/none", watch=True)[0] == -101
    assert a.add_watch("/w", 0) == 0  # persistent
    assert a.add_watch("/p", 1) == 0  # persistent recursive
    assert b.set_data("/w/x", b"2") == 0
    assert b.create("/w/y", b"", flags=1)[0] == 0  # ephemeral
    b.call(8, rawzk.s_str("/w") + b"\1")
    assert b.create("/w/c", flags=4)[0] == 0  # container
    assert b.create("/w/t", ttl=3_600_000, flags=5)[0] == 0
    b.call(8, rawzk.s_str("/w") + b"\1")  # a child watch that stays
    assert b.exists("/w/c")[0] == 0
    assert b.create("/w/x")[0] == -110  # NODEEXISTS
    assert b.delete("/w/x", version=7) == -103  # BADVERSION
    assert b.get_data("/nowhere")[0] == -101
    assert b.ping() == (-2, 0)
    # a is owed: NodeDataChanged /w/x (its data watch), then NodeChildrenChanged /w
    # for /w/y, /w/c and /w/t (its child watch, then its persistent one).
    for _ in range(4):
        a.wait_event()
    assert a.events == [(3, 3, "/w/x"), (4, 3, "/w"), (4, 3, "/w"), (4, 3, "/w")], a.events
    # b's first child watch fired for /w/c.
    assert b.events == [(4, 3, "/w")], b.events
    return {a.session_id: "a", b.session_id: "b"}, (a, b)


def run_words(server):
    """srst, the workload, then every word in order; the raw outputs by word."""
    assert server.four("srst") == "Server stats reset.\n"
    roles, clients = workload(server.port)
    out = {"roles": roles, "started_ms": int(time.time() * 1000)}
    for w in WORDS:
        out[w] = server.four(w)
    # After crst, the connections' figures start again.
    out["cons_after_crst"] = server.four("cons")
    for c in clients:
        c.close()
    return out


@pytest.fixture(scope="module")
def outputs():
    extra = {"extendedTypesEnabled": "true", "znode.container.checkIntervalMs": "3600000"}
    zk = servers.start_zookeeper(extra)
    rk = servers.start_ringkeeper(extra)
    try:
        yield run_words(zk), run_words(rk)
    finally:
        zk.stop()
        rk.stop()


def role(roles, sid_hex):
    sid = int(sid_hex, 16)
    if sid == 0:
        return "none"
    return roles.get(sid, f"unknown 0x{sid:x}")


def key_values(text, sep):
    out = {}
    for line in text.splitlines():
        if sep in line:
            k, v = line.split(sep, 1)
            out[k.strip()] = v.strip()
    return out


CONN_LINE = re.compile(r"^ /([\d.]+):(\d+)\[([0-9a-f]+)\]\((.*)\)$")


def connections(text, roles):
    """The connection lines of `stat` or `cons`: one dict of fields each, the session
    id replaced by its role and the address checked and dropped."""
    conns = []
    for line in text.splitlines():
        m = CONN_LINE.match(line)
        if not m:
            continue
        assert m.group(1) == "127.0.0.1", line
        fields = dict(kv.split("=", 1) for kv in m.group(4).split(","))
        fields["interest"] = m.group(3)
        if "sid" in fields:
            fields["sid"] = role(roles, fields["sid"])
        conns.append(fields)
    return conns


def by_nature(conn, started_ms):
    """Checks and drops the fields that differ by nature: the connection's start
    (a wall-clock time in ms), its last response (a monotonic clock in ms) and its
    latencies (ms)."""
    c = dict(conn)
    if "est" in c:
        est = int(c.pop("est"))
        assert started_ms - 60_000 < est <= started_ms + 60_000, conn
        assert int(c.pop("lresp")) >= 0
        for k in ("llat", "minlat", "avglat", "maxlat"):
            assert int(c.pop(k)) >= 0, conn
    return c


def sorted_conns(conns):
    return sorted(conns, key=lambda c: sorted(c.items()))


def test_ruok_and_isro_are_the_same(outputs):
    zk, rk = outputs
    assert rk["ruok"] == zk["ruok"] == "imok"
    assert rk["isro"] == zk["isro"] == "rw"


@pytest.mark.parametrize("word", ["srvr", "stat"])
def test_server_figures_are_the_same(outputs, word):
    zk, rk = outputs
    a, b = key_values(zk[word], ": "), key_values(rk[word], ": ")
    assert a.keys() == b.keys()
    for k in a:
        if k == "Zookeeper version":
            assert b[k].startswith("3.8.") and a[k].startswith("3.8."), (a[k], b[k])
        elif k == "Latency min/avg/max":
            assert re.fullmatch(r"\d+/[\d.]+/\d+", b[k]), b[k]
        else:
            assert b[k] == a[k], f"{word} {k}: zookeeper {a[k]!r}, ringkeeper {b[k]!r}"
    # Received counts the handshakes, the requests, pings included, and the words
    # asked since srst; Sent counts the handshakes' answers, the replies, the watch
    # events and the words' answers.
    assert int(b["Received"]) > 0 and int(b["Sent"]) > int(b["Received"]) - 2
    if word == "stat":
        ca = sorted_conns(connections(zk[word], zk["roles"]))
        cb = sorted_conns(connections(rk[word], rk["roles"]))
        assert cb == ca


def test_cons_is_the_same(outputs):
    zk, rk = outputs
    for after in ("cons", "cons_after_crst"):
        ca = sorted_conns(by_nature(c, zk["started_ms"]) for c in connections(zk[after], zk["roles"]))
        cb = sorted_conns(by_nature(c, rk["started_ms"]) for c in connections(rk[after], rk["roles"]))
        assert cb == ca, f"{after}:\n zookeeper:  {ca}\n ringkeeper: {cb}"
    cons = {c.get("sid"): c for c in connections(rk["cons"], rk["roles"])}
    # b's last request was a ping: its last real request's xid is shown, not the ping's.
    assert cons["b"]["lop"] == "PING" and cons["b"]["lcxid"] == "0xa"
    assert cons[None] == {"interest": "0", "queued": "0", "recved": "1", "sent": "0"}
    assert zk["cons"].endswith(")\n\n") and rk["cons"].endswith(")\n\n")


def test_watch_summary_is_the_same(outputs):
    zk, rk = outputs
    assert rk["wchs"] == zk["wchs"]
    assert rk["wchs"] == "1 connections watching 3 paths\nTotal watches:3\n"


def watch_lists(text, roles, by_path):
    """wchc (session -> paths) or wchp (path -> sessions), as sets (ZooKeeper lists
    them in hash order)."""
    out = {}
    key = None
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("\t"):
            item = line[1:]
            out[key].add(role(roles, item[2:]) if by_path else item)
        else:
            key = line if by_path else role(roles, line[2:])
            out[key] = set()
    return out


@pytest.mark.parametrize("word", ["wchc", "wchp"])
def test_watch_lists_are_the_same(outputs, word):
    zk, rk = outputs
    by_path = word == "wchp"
    a = watch_lists(zk[word], zk["roles"], by_path)
    b = watch_lists(rk[word], rk["roles"], by_path)
    assert b == a
    # Data watches only: b's getChildren watch on /w is not listed.
    expect = {"a": {"/w", "/w/none", "/p"}} if not by_path else {"/w": {"a"}, "/w/none": {"a"}, "/p": {"a"}}
    assert b == expect
    assert zk[word].endswith("\n\n") and rk[word].endswith("\n\n")


JAVA_DATE = "%a %b %d %H:%M:%S %Z %Y"


def expiry_sets(lines, roles, elem):
    """An ExpiryQueue dump: "Sets (K)/(N):", then "n expire at DATE:" and n elements.
    Returns N and the elements (each passed through `elem`), after checking that the
    counts add up and every date parses."""
    head = re.fullmatch(r"Sets \((\d+)\)/\((\d+)\):", lines.pop(0))
    assert head, head
    sets, total = int(head.group(1)), int(head.group(2))
    elems = []
    for _ in range(sets):
        m = re.fullmatch(r"(\d+) expire at (.+):", lines.pop(0))
        assert m
        datetime.strptime(m.group(2), JAVA_DATE)
        for _ in range(int(m.group(1))):
            elems.append(elem(lines.pop(0)[1:]))
    assert len(elems) == total
    return total, sorted(elems)


def parse_dump(text, roles):
    lines = text.splitlines()
    assert lines.pop(0) == "SessionTracker dump:"
    assert lines[0].startswith("Session Sets")
    lines[0] = lines[0][len("Session "):]
    sessions = expiry_sets(lines, roles, lambda e: role(roles, e[2:]))
    assert lines.pop(0) == "ephemeral nodes dump:"
    m = re.fullmatch(r"Sessions with Ephemerals \((\d+)\):", lines.pop(0))
    ephemerals = {}
    for _ in range(int(m.group(1))):
        who = role(roles, lines.pop(0).rstrip(":")[2:])
        ephemerals[who] = set()
        while lines and lines[0].startswith("\t"):
            ephemerals[who].add(lines.pop(0)[1:])
    assert lines.pop(0) == "Connections dump:"
    lines[0] = lines[0][len("Connections "):]
    conns = expiry_sets(lines, roles, lambda e: role(roles, re.fullmatch(r"ip: /127\.0\.0\.1:\d+ sessionId: 0x([0-9a-f]+)", e).group(1)))
    assert lines == []
    return sessions, ephemerals, conns


def test_dump_is_the_same(outputs):
    zk, rk = outputs
    a, b = parse_dump(zk["dump"], zk["roles"]), parse_dump(rk["dump"], rk["roles"])
    assert b == a
    assert b == ((2, ["a", "b"]), {"b": {"/w/y"}}, (3, ["a", "b", "none"]))


def test_mntr_is_the_same(outputs):
    zk, rk = outputs
    a, b = key_values(zk["mntr"], "\t"), key_values(rk["mntr"], "\t")
    for k in MNTR_EQUAL:
        assert b.get(k) == a.get(k), f"{k}: zookeeper {a.get(k)!r}, ringkeeper {b.get(k)!r}"
    for k in MNTR_NUMERIC:
        assert re.fullmatch(r"[\d.]+", b[k]) and re.fullmatch(r"[\d.]+", a[k]), k


def test_conf_is_the_same(outputs):
    zk, rk = outputs
    a, b = key_values(zk["conf"], "="), key_values(rk["conf"], "=")
    assert a.keys() == b.keys()
    for k in a:
        if k in ("clientPort",):
            continue  # each server's own free port
        if k in ("dataDir", "dataLogDir"):
            # Where each keeps its files: ZooKeeper's version-2, ringkeeper's ringkeeper.
            assert a[k].endswith("/data/version-2") and b[k].endswith("/data/ringkeeper"), (a[k], b[k])
        elif k in ("dataDirSize", "dataLogSize"):
            assert int(b[k]) > 0 and int(a[k]) > 0, (k, a[k], b[k])
        elif k == "clientPortListenBacklog":
            # ZooKeeper: -1 for its default (50); ringkeeper says what it uses.
            assert int(b[k]) > 0
        else:
            assert b[k] == a[k], f"conf {k}: zookeeper {a[k]!r}, ringkeeper {b[k]!r}"


def test_envi_shares_the_keys_that_describe_the_machine(outputs):
    zk, rk = outputs
    a, b = key_values(zk["envi"], "="), key_values(rk["envi"], "=")
    assert zk["envi"].startswith("Environment:\n") and rk["envi"].startswith("Environment:\n")
    for k in ("os.name", "os.arch", "os.version", "user.name", "user.home", "user.dir"):
        assert b.get(k) == a.get(k), f"envi {k}: zookeeper {a.get(k)!r}, ringkeeper {b.get(k)!r}"
    assert "zookeeper.version" in b and "host.name" in b and "java.version" in b


def test_dirs_reports_the_sizes_of_the_data_files(outputs):
    zk, rk = outputs
    for out in (zk["dirs"], rk["dirs"]):
        kv = key_values(out, ": ")
        assert kv.keys() == {"datadir_size", "logdir_size"}
        assert int(kv["datadir_size"]) > 0 and int(kv["logdir_size"]) > 0


def test_resets_answer_the_same(outputs):
    zk, rk = outputs
    assert rk["crst"] == zk["crst"] == "Connection stats reset.\n"
    assert rk["srst"] == zk["srst"] == "Server stats reset.\n"
