"""Differential test: the same seeded random operation sequences, failing ones included
(bad versions, missing parents, ACL denials, ephemeral parents, multi rollbacks), run
against Apache ZooKeeper 3.8 and ringkeeper through kazoo, plus container and TTL
creates on a raw jute connection (kazoo cannot send them). Results, error codes, sorted
children lists and every Stat field of every reply must agree (the two times, which
differ by nature, must be plausible: within the run and mtime >= ctime); so must the
whole tree at the end of each sequence."""

import os
import random
import signal
import threading
import time

import pytest
from kazoo.client import KazooClient
from kazoo.protocol.states import Callback
from kazoo.security import make_acl, make_digest_acl, OPEN_ACL_UNSAFE

import rawzk
import servers

SEEDS = int(os.environ.get("RK_DIFF_SEEDS", "16"))
OPS_PER_SEED = int(os.environ.get("RK_DIFF_OPS", "300"))


# TTL nodes need extended types; no container or TTL sweep may run during a sequence
# (the two servers would sweep at different moments).
EXTRA = {"extendedTypesEnabled": "true", "znode.container.checkIntervalMs": "3600000"}
TTL_MS = 3_600_000
EPOCH_2020_MS = 1_577_836_800_000


def start_pair(rk_extra=None):
    return servers.start_zookeeper(EXTRA), servers.start_ringkeeper({**EXTRA, **(rk_extra or {})})


@pytest.fixture(scope="module")
def pair():
    zk, rk = start_pair()
    yield zk, rk
    zk.stop()
    rk.stop()


class Side:
    """One server with two sessions: an anonymous one and one authenticated as alice."""

    def __init__(self, server, anon_hosts=None, alice_hosts=None):
        """`server` takes the raw creates; the sessions connect to it too, unless
        given hosts of their own (members of an ensemble)."""
        self.server = server
        self.anon = KazooClient(hosts=anon_hosts or server.hosts, timeout=15)
        self.anon.start(timeout=15)
        self.alice = KazooClient(hosts=alice_hosts or server.hosts, timeout=15, auth_data=[("digest", "alice:pw")])
        self.alice.start(timeout=15)
        self.sessions = {self.anon.client_id[0]: "anon", self.alice.client_id[0]: "alice"}
        self.events = {"anon": [], "alice": []}

    def raw_create(self, path, data, flags, ttl=None):
        """A create kazoo cannot send, on a raw connection of its own that closes its
        session right after: a session left open without pings would expire at a
        moment of its own on each server, and its closing txn would shift every zxid
        after it on one side only."""
        c = rawzk.RawClient(self.server.port, timeout_ms=15000)
        try:
            return c.create2(path, data, flags=flags, ttl=ttl)
        finally:
            c.close_session()

    def watcher(self, who, kind):
        return lambda ev: self.events[who].append((kind, ev.type, ev.path))

    def drained_events(self):
        """The events each session received so far. Watch callbacks run on kazoo's
        callback thread in arrival order; a sentinel queued behind them marks the end."""
        for who, c in (("anon", self.anon), ("alice", self.alice)):
            # An event for this session may still be on its way on its own connection:
            # a sync answered on that connection comes after every event of the writes
            # committed before it.
            c.sync("/")
            done = threading.Event()
            c.handler.dispatch_callback(Callback("watch", done.set, ()))
            assert done.wait(10), f"{who}: callback queue did not drain"
        # kazoo hands one server event to each watcher registered on the path, in an
        # order of its own: compare what each watcher got (a multiset) and the order of
        # server events (consecutive repeats collapsed).
        out = {}
        for who, evs in self.events.items():
            order = []
            for _, t, p in evs:
                if not order or order[-1] != (t, p):
                    order.append((t, p))
            out[who] = (sorted(evs), order)
        return out

    def stat(self, st):
        """Every field of a Stat, with the owner session named by its role and the two
        times (which differ by nature) replaced by whether they are plausible."""
        if st is None:
            return None
        if isinstance(st, dict):
            d = dict(st)
        else:
            d = st._asdict() if hasattr(st, "_asdict") else dict(zip(st._fields, st))
        ctime, mtime = d.pop("ctime"), d.pop("mtime")
        now_ms = int(time.time() * 1000)
        if ctime == mtime == 0:
            d["times"] = "zero"  # the system nodes
        elif EPOCH_2020_MS <= ctime <= mtime <= now_ms + 1000:
            d["times"] = "plausible"
        else:
            d["times"] = (ctime, mtime)
        owner = d["ephemeralOwner"]
        d["ephemeralOwner"] = self.sessions.get(owner, owner if owner == 0 else f"other 0x{owner & (2**64 - 1):x}")
        return d

    def stop(self):
        self.anon.stop()
        self.alice.stop()
        self.anon.close()
        self.alice.close()


ACLS = {
    "open": OPEN_ACL_UNSAFE,
    "read_only": [make_acl("world", "anyone", read=True)],
    "alice": [make_digest_acl("alice", "pw", all=True)],
    "alice_rw_world_r": [make_digest_acl("alice", "pw", all=True), make_acl("world", "anyone", read=True)],
}


def gen_ops(seed, root):
    rnd = random.Random(seed)
    names = ["a", "b", "c"]

    def path():
        depth = rnd.choice([1, 1, 2, 2, 3])
        return root + "".join("/" + rnd.choice(names) for _ in range(depth))

    def version():
        return rnd.choice([-1, -1, 0, 1, 2])

    def sub_op():
        k = rnd.choice(["create", "delete", "set", "check"])
        if k == "create":
            return ("create", path(), rnd.choice([b"", b"x", b"yy"]), rnd.choice([False, False, True]))
        if k == "delete":
            return ("delete", path(), version())
        if k == "set":
            return ("set", path(), bytes([rnd.randrange(256)]), version())
        return ("check", path(), version())

    ops = []
    for _ in range(OPS_PER_SEED):
        who = rnd.choice(["anon", "anon", "alice"])
        k = rnd.choices(
            ["create", "delete", "set", "get", "exists", "children", "get_acl", "set_acl", "multi", "sync",
             "get_w", "exists_w", "children_w", "create_container", "create_ttl"],
            weights=[30, 12, 14, 8, 6, 8, 4, 4, 12, 2, 4, 4, 4, 5, 5])[0]
        if k == "create_container":
            op = (k, path(), rnd.choice([b"", b"c"]))
        elif k == "create_ttl":
            op = (k, path(), rnd.choice([b"", b"t"]), rnd.random() < 0.3)
        elif k == "create":
            op = (k, path(), rnd.choice([b"", b"v", b"value"]), rnd.random() < 0.2, rnd.random() < 0.3,
                  rnd.choice(list(ACLS)) if rnd.random() < 0.3 else "open")
        elif k == "delete":
            op = (k, path(), version())
        elif k == "set":
            op = (k, path(), bytes(rnd.randrange(256) for _ in range(rnd.randrange(4))), version())
        elif k == "set_acl":
            op = (k, path(), rnd.choice(list(ACLS)), version())
        elif k == "multi":
            op = (k, [sub_op() for _ in range(rnd.randrange(1, 5))])
        else:
            op = (k, path())
        ops.append((who, op))
    return ops


def run_op(side, who, op):
    c = side.anon if who == "anon" else side.alice
    k = op[0]
    if k in ("create_container", "create_ttl"):
        # On a raw connection, whose errors are codes, not exceptions.
        if k == "create_container":
            err, res = side.raw_create(op[1], op[2], flags=4)
        else:
            err, res = side.raw_create(op[1], op[2], flags=6 if op[3] else 5, ttl=TTL_MS)
        return ("raw", err, None if res is None else (res[0], side.stat(res[1])))
    try:
        if k == "create":
            _, p, data, eph, seq, acl = op
            return ("ok", c.create(p, data, acl=ACLS[acl], ephemeral=eph, sequence=seq))
        if k == "delete":
            return ("ok", c.delete(op[1], version=op[2]))
        if k == "set":
            return ("ok", side.stat(c.set(op[1], op[2], version=op[3])))
        if k in ("get", "get_w"):
            w = side.watcher(who, "data") if k == "get_w" else None
            data, st = c.get(op[1], watch=w)
            return ("ok", data, side.stat(st))
        if k in ("exists", "exists_w"):
            w = side.watcher(who, "exists") if k == "exists_w" else None
            return ("ok", side.stat(c.exists(op[1], watch=w)))
        if k in ("children", "children_w"):
            w = side.watcher(who, "child") if k == "children_w" else None
            kids, st = c.get_children(op[1], watch=w, include_data=True)
            return ("ok", sorted(kids), side.stat(st))
        if k == "get_acl":
            acl, st = c.get_acls(op[1])
            return ("ok", [(a.perms, a.id.scheme, a.id.id) for a in acl], side.stat(st))
        if k == "set_acl":
            return ("ok", side.stat(c.set_acls(op[1], ACLS[op[2]], version=op[3])))
        if k == "sync":
            return ("ok", c.sync(op[1]))
        if k == "multi":
            t = c.transaction()
            for s in op[1]:
                if s[0] == "create":
                    t.create(s[1], s[2], sequence=s[3])
                elif s[0] == "delete":
                    t.delete(s[1], version=s[2])
                elif s[0] == "set":
                    t.set_data(s[1], s[2], version=s[3])
                else:
                    t.check(s[1], s[2])
            out = []
            for r in t.commit():
                if isinstance(r, Exception):
                    out.append(("err", type(r).__name__))
                elif hasattr(r, "_fields"):
                    out.append(side.stat(r))
                else:
                    out.append(r)
            return ("ok", out)
    except Exception as e:  # a KazooException: compare its class (the error code)
        return ("err", type(e).__name__)
    raise AssertionError(f"unknown op {op}")


def dump_tree(side, root):
    out = {}
    stack = [root]
    while stack:
        p = stack.pop()
        try:
            data, st = side.alice.get(p)
            acl, _ = side.alice.get_acls(p)
            kids = side.alice.get_children(p)
        except Exception as e:
            out[p] = ("err", type(e).__name__)
            continue
        out[p] = (data, side.stat(st), sorted((a.perms, a.id.scheme, a.id.id) for a in acl), sorted(kids))
        stack.extend(f"{p}/{k}" for k in kids)
    return out


def test_system_nodes_agree(pair):
    zk, rk = pair
    a, b = Side(zk), Side(rk)
    try:
        for p in ["/", "/zookeeper", "/zookeeper/quota", "/zookeeper/config"]:
            ra = run_op(a, "anon", ("get_acl", p))
            rb = run_op(b, "anon", ("get_acl", p))
            assert ra == rb, p
            ca = run_op(a, "anon", ("children", p))
            cb = run_op(b, "anon", ("children", p))
            # the root's children differ only by what earlier tests created
            if p != "/":
                assert ca == cb, p
    finally:
        a.stop()
        b.stop()


def same_result(a, b, seed, i, who, op):
    """Runs step `i` of a sequence on both servers; their answers must be the same."""
    ra, rb = run_op(a, who, op), run_op(b, who, op)
    assert rb == ra, f"seed {seed} step {i}: {who} {op}\n zookeeper:  {ra}\n ringkeeper: {rb}"


def same_sequence(a, b, seed, root, before_op=None):
    """Runs seed's sequence under `root` on ZooKeeper's side `a` and ringkeeper's side
    `b` (`before_op(who, op)` first, if given, on each step): every answer, the watch
    events every 25 steps and at the end, and the final trees must agree. Returns the
    watch events."""
    for side in (a, b):
        side.anon.create(root)
    for i, (who, op) in enumerate(gen_ops(seed, root)):
        if before_op:
            before_op(who, op)
        same_result(a, b, seed, i, who, op)
        if i % 25 == 24:
            ea, eb = a.drained_events(), b.drained_events()
            assert eb == ea, f"seed {seed} by step {i}: watch events differ\n zookeeper:  {ea}\n ringkeeper: {eb}"
    for side in (a, b):
        side.alice.sync("/")
    assert dump_tree(b, root) == dump_tree(a, root), f"seed {seed}: trees differ"
    ea, eb = a.drained_events(), b.drained_events()
    assert eb == ea, f"seed {seed}: watch events differ"
    return ea


@pytest.mark.parametrize("seed", range(SEEDS))
def test_same_results_as_zookeeper(pair, seed):
    zk, rk = pair
    a, b = Side(zk), Side(rk)
    try:
        events = same_sequence(a, b, seed, f"/diff{seed}")
        assert sum(len(v) for v in events.values()) > 0 or OPS_PER_SEED < 100, "the sequence fired no watch"
    finally:
        a.stop()
        b.stop()


def test_empty_multi_consumes_a_zxid_like_zookeeper(pair):
    zk, rk = pair
    a, b = Side(zk), Side(rk)
    try:
        out = []
        for side in (a, b):
            assert side.anon.transaction().commit() == []
            p = side.anon.create("/after-empty-multi")
            out.append((side.anon.exists(p).czxid - side.anon.exists("/zookeeper").mzxid,
                        side.anon.transaction().commit()))
            side.anon.delete(p)
        # Both servers have had the same history in this module: same zxids.
        assert out[0] == out[1]
    finally:
        a.stop()
        b.stop()


def snapshot_now(rk):
    """Asks ringkeeper for a snapshot (SIGUSR1) and waits until one holds its last txn."""
    last = int(rk.four("srvr").split("Zxid: 0x")[1].split()[0], 16)
    snap_dir = rk.data_dir / "ringkeeper"

    def current():
        zxids = [int(p.name.split(".")[1], 16) for p in snap_dir.glob("snapshot.*") if not p.name.endswith(".tmp")]
        return zxids and max(zxids) >= last

    os.kill(rk.proc.pid, signal.SIGUSR1)
    assert servers.wait_for(current, 30), "no snapshot of the last txn"


def answers(client):
    try:
        client.exists("/")
        return True
    except Exception:  # ConnectionLoss and the like while kazoo reconnects
        return False


@pytest.mark.parametrize("seed", range(100, 100 + max(2, SEEDS // 4)))
def test_same_results_as_zookeeper_across_restarts(seed):
    """The same sequences, with ringkeeper killed (-9) and restarted twice along the way,
    each time from a snapshot plus a log tail: the second half runs on the snapshot read
    in place under the overlay of later changes (deletes and re-creates of snapshot
    nodes, ACLs, multis, sequential and ephemeral nodes of restored sessions), and must
    still answer exactly as ZooKeeper does, which was never restarted."""
    zk, rk = start_pair()
    a, b = Side(zk), Side(rk)
    try:
        root = f"/restart{seed}"
        for side in (a, b):
            side.anon.create(root)
        ops = gen_ops(seed, root)
        restarts = {len(ops) // 3, 2 * len(ops) // 3}
        for i, (who, op) in enumerate(ops):
            if i in restarts:
                snapshot_now(rk)
                # A few txns after the snapshot: the restart replays them onto it.
                for j in range(5):
                    b.anon.create(f"{root}-tail-{i}-{j}")
                    a.anon.create(f"{root}-tail-{i}-{j}")
                rk.restart()
                for c in (b.anon, b.alice):
                    # A round trip, not kazoo's state flag: that can still read
                    # "connected" before kazoo has seen the old connection close.
                    assert servers.wait_for(lambda: answers(c), 20), "kazoo did not reconnect"
            same_result(a, b, seed, i, who, op)
        assert dump_tree(b, root) == dump_tree(a, root), f"seed {seed}: trees differ"
    finally:
        a.stop()
        b.stop()
        zk.stop()
        rk.stop()


@pytest.mark.parametrize("seed", range(200, 200 + max(2, SEEDS // 4)))
def test_same_results_as_zookeeper_with_the_tree_rebased_on_each_snapshot(seed):
    """The same sequences with a snapshot every 7 txns: after each one the server
    rebuilds its tree on the snapshot and swaps it in (the overlay then holds only what
    changed since). The answers must stay ZooKeeper's throughout, the rebuilt tree must
    match the core's every time, and a snapshot written from a rebased tree must bring
    back the same tree after a kill -9."""
    zk, rk = start_pair({"snapCount": "7"})
    a, b = Side(zk), Side(rk)
    try:
        root = f"/rebase{seed}"
        for side in (a, b):
            side.anon.create(root)
        for i, (who, op) in enumerate(gen_ops(seed, root)):
            same_result(a, b, seed, i, who, op)
        assert dump_tree(b, root) == dump_tree(a, root), f"seed {seed}: trees differ"
        log = rk.log_text
        assert "not rebasing" not in log, log[-3000:]
        assert log.count("tree rebased") >= 5, f"too few rebases:\n{log[-3000:]}"
        snapshot_now(rk)
        rk.restart()
        for c in (b.anon, b.alice):
            assert servers.wait_for(lambda: answers(c), 20), "kazoo did not reconnect"
        assert dump_tree(b, root) == dump_tree(a, root), f"seed {seed}: trees differ after the restart"
    finally:
        a.stop()
        b.stop()
        zk.stop()
        rk.stop()
