"""The operator endpoints over HTTP: the Prometheus endpoint (ZooKeeper's
metricsProvider keys and metric names, request latency per operation type merged over
the shards) and the AdminServer (ZooKeeper's commands, in the JSON shapes Apache
ZooKeeper 3.8's own AdminServer gives them: compared key by key with a real one)."""

import json
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from prometheus_client.parser import text_string_to_metric_families

import rawzk
import servers

PROMETHEUS = "org.apache.zookeeper.metrics.prometheus.PrometheusMetricsProvider"


def get(port, path, headers=None, method="GET"):
    """(status, headers, body) of one request."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def scrape(port):
    status, headers, body = get(port, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    families = {}
    for fam in text_string_to_metric_families(body.decode()):
        families[fam.name] = fam.type
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return families, samples


def value(samples, name, **labels):
    """A sample's value; a counter by its name as exported (ZooKeeper's, no _total)
    or as the parser reads it (with _total)."""
    key = tuple(sorted((k, str(v)) for k, v in labels.items()))
    return samples.get((name, key), samples.get((name + "_total", key)))


def mntr(port):
    out = {}
    for line in servers.four_letter(port, "mntr").splitlines():
        k, v = line.split("\t", 1)
        out[k] = v
    return out


@pytest.fixture
def metered():
    port = servers.free_port()
    s = servers.start_ringkeeper({"metricsProvider.className": PROMETHEUS, "metricsProvider.httpHost": "127.0.0.1",
                                  "metricsProvider.httpPort": str(port)}, shards=2)
    s.metrics_port = port
    yield s
    s.stop()


def test_prometheus_counts_each_request_by_type_over_all_shards(metered):
    clients = [rawzk.RawClient(metered.port) for _ in range(8)]
    for i, c in enumerate(clients):
        assert c.create(f"/m{i}", b"x")[0] == 0
        for _ in range(5):
            assert c.get_data(f"/m{i}")[0] == 0
        for _ in range(3):
            assert c.set_data(f"/m{i}", b"y") == 0
        c.ping()
    # Connections land on both shards (SO_REUSEPORT); each shard publishes what it
    # recorded every 100 ms, so the figures settle within a few publishes.
    want = {"getData": 40, "setData": 24, "create": 8}
    assert servers.wait_for(lambda: all(
        value(scrape(metered.metrics_port)[1], "rk_request_duration_seconds_count", op=op) == n
        for op, n in want.items()), 5), scrape(metered.metrics_port)[1]
    families, samples = scrape(metered.metrics_port)
    # ZooKeeper's names, as its PrometheusMetricsProvider exports them.
    for name, kind in [("znode_count", "gauge"), ("watch_count", "gauge"), ("ephemerals_count", "gauge"),
                       ("approximate_data_size", "gauge"), ("outstanding_requests", "gauge"),
                       ("num_alive_connections", "gauge"), ("packets_received", "counter"),
                       ("packets_sent", "counter"), ("readlatency", "summary"), ("updatelatency", "summary"),
                       ("fsynctime", "summary"), ("snapshottime", "summary"), ("global_sessions", "gauge"),
                       ("rk_request_duration_seconds", "histogram")]:
        assert families.get(name) == kind, (name, families.get(name))
    # Pings are not requests of a type: reads are the 40 getData, updates the writes.
    assert value(samples, "readlatency_count") == 40
    assert value(samples, "updatelatency_count") == 32
    assert value(samples, "num_alive_connections") == 8
    assert value(samples, "global_sessions") == 8
    assert sum(value(samples, "rk_shard_connections", shard=i) for i in (0, 1)) == 8
    assert (sum(value(samples, "rk_shard_packets_received", shard=i) for i in (0, 1))
            == value(samples, "packets_received"))
    m = mntr(metered.port)
    assert int(m["zk_znode_count"]) == value(samples, "znode_count")
    # A write waits for its fsync: its quantiles and sum are not zero, and no larger
    # than the largest write seen.
    for q in ("0.5", "0.9", "0.99"):
        v = value(samples, "updatelatency", quantile=q)
        assert 0 < v <= int(m["zk_max_updatelatency"]) + 1, (q, v)
    assert value(samples, "fsynctime_count") >= 32
    # Buckets count up to the total, which is the count.
    for op, n in want.items():
        buckets = sorted((float(dict(lab)["le"]), v) for (name, lab), v in samples.items()
                         if name == "rk_request_duration_seconds_bucket" and dict(lab)["op"] == op)
        counts = [v for _, v in buckets]
        assert counts == sorted(counts) and buckets[-1] == (float("inf"), n), (op, buckets)
    # mntr shows the same figures, ZooKeeper's in ms and ringkeeper's per op in µs.
    assert m["zk_cnt_readlatency"] == "40" and m["zk_cnt_updatelatency"] == "32"
    assert m["rk_getData_count"] == "40" and int(m["rk_setData_latency_us_p99"]) > 0
    for c in clients:
        c.sock.close()


def test_the_metrics_endpoint_answers_only_what_it_serves(metered):
    assert get(metered.metrics_port, "/nothing")[0] == 404
    status, headers, _ = get(metered.metrics_port, "/metrics", method="POST")
    assert status == 405 and "GET" in headers["Allow"]
    # A request that never ends its head is answered (408) within the deadline, and
    # the server keeps serving everyone else meanwhile.
    import socket
    s = socket.create_connection(("127.0.0.1", metered.metrics_port))
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    assert scrape(metered.metrics_port)[0]["znode_count"] == "gauge"
    s.settimeout(15)
    assert s.recv(100).startswith(b"HTTP/1.1 408")
    # Garbage is a 400, not a hang.
    with socket.create_connection(("127.0.0.1", metered.metrics_port), timeout=5) as g:
        g.sendall(b"\x16\x03\x01 not http\r\n\r\n")
        assert g.recv(100).startswith(b"HTTP/1.1 400")


def test_bad_metrics_and_admin_settings_stop_start_up_with_the_key():
    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "zoo.cfg"
        port = servers.free_port()
        cfg.write_text(f"clientPort={port}\ndataDir={d}\nmetricsProvider.className=com.example.Nope\n")
        p = subprocess.run([str(servers.RINGKEEPER_BIN), "--config", str(cfg)], capture_output=True, text=True,
                           timeout=10)
        assert p.returncode == 2 and "metricsProvider.className" in p.stderr, p.stderr
        # An admin port that is taken: the error names the keys that set it.
        import socket
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cfg.write_text(f"clientPort={port}\nclientPortAddress=127.0.0.1\ndataDir={d}\n"
                       f"admin.serverAddress=127.0.0.1\nadmin.serverPort={taken.getsockname()[1]}\n")
        p = subprocess.run([str(servers.RINGKEEPER_BIN), "--config", str(cfg)], capture_output=True, text=True,
                           timeout=10)
        taken.close()
        assert p.returncode != 0 and "admin.serverPort" in p.stderr, p.stderr


def admin_json(port, command):
    status, headers, body = get(port, f"/commands/{command}")
    assert headers.get("Content-Type", "").startswith("application/json"), (command, headers)
    return status, json.loads(body)


def shape(v):
    """The keys of a JSON value, recursively (a list by its first element); keys that
    are data (session ids, times, paths) stand for their kind."""
    def key(k):
        return "<number>" if k.isdigit() else "<path>" if k.startswith("/") else k
    if isinstance(v, dict):
        return {key(k): shape(x) for k, x in v.items()}
    if isinstance(v, list):
        return [shape(v[0])] if v else []
    return type(v).__name__ if not isinstance(v, (int, float)) or isinstance(v, bool) else "number"


def workload(port):
    zk = KazooClient(hosts=f"127.0.0.1:{port}")
    zk.start()
    zk.create("/eph", b"x", ephemeral=True)
    zk.create("/watched", b"y")
    zk.get("/watched", watch=lambda e: None)
    zk.exists("/other", watch=lambda e: None)
    return zk


# Commands whose values say what is there in the same JSON shape on both servers.
SAME_SHAPE = ["ruok", "stats", "stat", "server_stats", "srvr", "configuration", "conf", "connections", "cons",
              "watch_summary", "wchs", "watches", "wchc", "watches_by_path", "wchp", "dump", "dirs",
              "is_read_only", "isro", "last_snapshot", "initial_configuration", "no_such_command"]


def test_admin_commands_answer_in_zookeepers_json_shapes():
    zk_admin, rk_admin = servers.free_port(), servers.free_port()
    admin = {"admin.enableServer": "true", "admin.serverAddress": "127.0.0.1"}
    zk = servers.start_zookeeper(dict(admin, **{"admin.serverPort": str(zk_admin)}))
    rk = servers.start_ringkeeper(dict(admin, **{"admin.serverPort": str(rk_admin)}))
    clients = []
    try:
        clients = [workload(zk.port), workload(rk.port)]
        for command in SAME_SHAPE:
            zs, zj = admin_json(zk_admin, command)
            rs, rj = admin_json(rk_admin, command)
            assert rs == zs, (command, rs, zs)
            assert shape(rj) == shape(zj), (command, rj, zj)
            assert rj["command"] == zj["command"]
        # What the answers say, beside their shape.
        _, s = admin_json(rk_admin, "stats")
        assert s["server_stats"]["server_state"] == "standalone" and s["node_count"] == 7
        _, d = admin_json(rk_admin, "dump")
        assert list(d["session_id_to_ephemeral_paths"].values()) == [["/eph"]]
        _, w = admin_json(rk_admin, "watches_by_path")
        assert set(w["path_to_session_ids"]) == {"/watched", "/other"}
        _, c = admin_json(rk_admin, "connections")
        assert c["connections"][0]["session_id"] == clients[1]._session_id
        # monitor: ZooKeeper's keys (a subset of its 500), ringkeeper's own as rk_*.
        _, zm = admin_json(zk_admin, "monitor")
        _, rm = admin_json(rk_admin, "monitor")
        # fsync_threshold_exceed_count is the mntr key of ZooKeeper 3.4 and 3.5 that
        # monitoring scripts still read (3.8 shows it in stats only).
        ours = {k for k in rm if not k.startswith("rk_")} - {"fsync_threshold_exceed_count"}
        assert ours <= set(zm), ours - set(zm)
        for k in ("znode_count", "watch_count", "ephemerals_count", "approximate_data_size", "num_alive_connections",
                  "outstanding_requests", "avg_latency", "p99_readlatency", "cnt_updatelatency", "avg_fsynctime"):
            assert k in rm and type(rm[k]) in (int, float), k
        assert rm["ephemerals_count"] == zm["ephemerals_count"] == 1
        assert rm["znode_count"] == zm["znode_count"]
        # environment: the keys that mean something for a native server.
        _, e = admin_json(rk_admin, "environment")
        assert {"zookeeper.version", "host.name", "os.name", "os.arch", "user.name", "user.dir"} <= set(e)
        # The index and a path outside the commands.
        status, _, body = get(rk_admin, "/commands")
        assert status == 200 and b'href="/commands/monitor"' in body
        assert get(rk_admin, "/elsewhere")[0] == get(zk_admin, "/elsewhere")[0] == 404
        # The resets, as ZooKeeper's.
        assert admin_json(rk_admin, "stat_reset")[1] == {"command": "stat_reset", "error": None}
        assert admin_json(rk_admin, "srvr")[1]["server_stats"]["packets_received"] == 0
    finally:
        for c in clients:
            c.stop()
        zk.stop()
        rk.stop()


def test_a_snapshot_on_demand_needs_all_on_the_root_and_is_rate_limited():
    admin = servers.free_port()
    rk = servers.start_ringkeeper({"admin.enableServer": "true", "admin.serverAddress": "127.0.0.1",
                                   "admin.serverPort": str(admin), "admin.rateLimiterIntervalInMS": "600000"})
    zk = KazooClient(hosts=rk.hosts)
    zk.start()
    try:
        for i in range(50):
            zk.create(f"/s{i}", b"v" * 100)
        last = zk.get("/s49")[1].mzxid
        status, _, body = get(admin, "/commands/snapshot?streaming=false")
        snap = json.loads(body)
        assert status == 200 and snap["error"] is None, snap
        assert int(snap["last_zxid"], 16) >= last
        assert Path(snap["file"]).is_file() and Path(snap["file"]).stat().st_size == snap["bytes"]
        _, lsnp = admin_json(admin, "last_snapshot")
        assert int(lsnp["zxid"], 16) == int(snap["last_zxid"], 16)
        # Once per admin.rateLimiterIntervalInMS.
        status, _, body = get(admin, "/commands/snapshot?streaming=false")
        assert status == 429 and "rateLimiterIntervalInMS" in json.loads(body)["error"]
    finally:
        zk.stop()
        rk.stop()
    # Only a client with every permission on / may take one: with / open to a digest
    # user alone, a request without the credentials is refused.
    rk = servers.start_ringkeeper({"admin.enableServer": "true", "admin.serverAddress": "127.0.0.1",
                                   "admin.serverPort": str(admin), "admin.rateLimiterIntervalInMS": "0"})
    zk = KazooClient(hosts=rk.hosts)
    zk.start()
    try:
        from kazoo.security import make_digest_acl
        zk.add_auth("digest", "ops:secret")
        zk.create("/data", b"d")
        zk.set_acls("/", [make_digest_acl("ops", "secret", all=True)])
        status, _, body = get(admin, "/commands/snapshot?streaming=false")
        assert status == 403 and "ALL permission" in json.loads(body)["error"]
        status, _, body = get(admin, "/commands/snapshot?streaming=false",
                              headers={"Authorization": "digest ops:wrong"})
        assert status in (401, 403), (status, body)
        # Streaming (ZooKeeper 3.9's default): the file itself, its zxid in a header.
        status, headers, body = get(admin, "/commands/snapshot", headers={"Authorization": "digest ops:secret"})
        assert status == 200 and headers["Content-Type"] == "application/octet-stream"
        _, lsnp = admin_json(admin, "last_snapshot")
        assert int(headers["last_zxid"], 16) == int(lsnp["zxid"], 16)
        files = sorted((rk.data_dir / "ringkeeper").glob("snap*"), key=lambda p: p.stat().st_mtime)
        assert files and files[-1].read_bytes() == body
    finally:
        zk.stop()
        rk.stop()
