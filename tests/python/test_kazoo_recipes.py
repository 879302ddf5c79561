"""kazoo's recipes against ringkeeper: they combine ephemeral-sequential nodes, watches
and multi the way real applications do."""

import threading
import time

import pytest
from kazoo.exceptions import LockTimeout
from kazoo.recipe.watchers import ChildrenWatch, DataWatch
from servers import wait_for


def test_lock_is_mutually_exclusive(make_client, base):
    clients = [make_client() for _ in range(3)]
    inside, max_inside, done = [0], [0], []
    guard = threading.Lock()

    def worker(c, i):
        for _ in range(5):
            with c.Lock(f"{base}/lock", f"w{i}"):
                with guard:
                    inside[0] += 1
                    max_inside[0] = max(max_inside[0], inside[0])
                time.sleep(0.005)
                with guard:
                    inside[0] -= 1
        done.append(i)

    ts = [threading.Thread(target=worker, args=(c, i)) for i, c in enumerate(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert sorted(done) == [0, 1, 2] and max_inside[0] == 1


def test_lock_passes_when_holder_session_dies(make_client, base):
    a, b = make_client(), make_client()
    la = a.Lock(f"{base}/l2", "a")
    assert la.acquire(timeout=5)
    lb = b.Lock(f"{base}/l2", "b")
    got = threading.Event()
    threading.Thread(target=lambda: lb.acquire(timeout=20) and got.set()).start()
    time.sleep(0.3)
    assert not got.is_set()
    a.stop()  # closes the session: its lock node goes
    assert got.wait(10)
    lb.release()


def test_election_picks_one_leader_and_fails_over(make_client, base):
    a, b = make_client(), make_client()
    leaders = []
    stop_a = threading.Event()

    def lead_a():
        leaders.append("a")
        stop_a.wait(20)

    ea = a.Election(f"{base}/elect", "a")
    eb = b.Election(f"{base}/elect", "b")
    ta = threading.Thread(target=ea.run, args=(lead_a,))
    ta.start()
    assert wait_for(lambda: leaders == ["a"])
    tb = threading.Thread(target=eb.run, args=(lambda: leaders.append("b"),))
    tb.start()
    time.sleep(0.3)
    assert leaders == ["a"]
    assert sorted(ea.contenders()) == ["a", "b"]
    stop_a.set()
    assert wait_for(lambda: leaders == ["a", "b"])
    ta.join(5)
    tb.join(5)


def test_barrier_and_double_barrier(make_client, base):
    c = make_client()
    bar = c.Barrier(f"{base}/barrier")
    bar.create()
    released = threading.Event()
    threading.Thread(target=lambda: bar.wait(10) and released.set()).start()
    time.sleep(0.2)
    assert not released.is_set()
    bar.remove()
    assert released.wait(5)

    clients = [make_client() for _ in range(2)]
    entered = []

    def member(cl, i):
        db = cl.DoubleBarrier(f"{base}/double", 2, identifier=f"m{i}")
        db.enter()
        entered.append(i)
        db.leave()

    ts = [threading.Thread(target=member, args=(cl, i)) for i, cl in enumerate(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(20)
    assert sorted(entered) == [0, 1]


def test_counter_is_consistent_under_concurrency(make_client, base):
    clients = [make_client() for _ in range(3)]

    def bump(c):
        counter = c.Counter(f"{base}/counter")
        for _ in range(20):
            counter += 1

    ts = [threading.Thread(target=bump, args=(c,)) for c in clients]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert clients[0].Counter(f"{base}/counter").value == 60


def test_queue_and_locking_queue(make_client, base):
    c = make_client()
    q = c.Queue(f"{base}/queue")
    for i in range(5):
        q.put(str(i).encode())
    q.put(b"urgent", priority=1)
    assert q.get() == b"urgent"
    assert [q.get() for _ in range(5)] == [b"0", b"1", b"2", b"3", b"4"]
    assert q.get() is None
    lq = c.LockingQueue(f"{base}/lq")
    lq.put(b"job")
    assert lq.get(timeout=5) == b"job"
    assert lq.consume()
    assert len(lq) == 0


def test_party_membership_follows_sessions(make_client, base):
    a, b = make_client(), make_client()
    pa = a.Party(f"{base}/party", "alice")
    pb = b.Party(f"{base}/party", "bob")
    pa.join()
    pb.join()
    assert sorted(pa) == ["alice", "bob"]
    b.stop()
    assert wait_for(lambda: sorted(pa) == ["alice"])
    sp = a.ShallowParty(f"{base}/sparty", "x")
    sp.join()
    assert list(sp) == ["x"]


def test_data_watch_and_children_watch(make_client, client, base):
    p = client.create(f"{base}/dw", b"0")
    seen, kids = [], []
    DataWatch(client, p, func=lambda data, stat: seen.append(data))
    ChildrenWatch(client, p, func=lambda children: kids.append(sorted(children)))
    w = make_client()
    w.set(p, b"1")
    w.create(f"{p}/c1")
    w.set(p, b"2")
    w.create(f"{p}/c2")
    w.delete(f"{p}/c1")
    assert wait_for(lambda: seen[-1:] == [b"2"])
    assert wait_for(lambda: kids[-1:] == [["c2"]])
    assert seen[0] == b"0" and kids[0] == []


def test_semaphore_and_read_write_lock(make_client, base):
    a, b, c = make_client(), make_client(), make_client()
    sa = a.Semaphore(f"{base}/sem", max_leases=2)
    sb = b.Semaphore(f"{base}/sem", max_leases=2)
    sc = c.Semaphore(f"{base}/sem", max_leases=2)
    assert sa.acquire(timeout=5) and sb.acquire(timeout=5)
    with pytest.raises(LockTimeout):
        sc.acquire(timeout=0.5)
    sa.release()
    assert sc.acquire(timeout=5)
    sb.release()
    sc.release()
    r1, r2 = a.ReadLock(f"{base}/rw"), b.ReadLock(f"{base}/rw")
    assert r1.acquire(timeout=5) and r2.acquire(timeout=5)
    wl = c.WriteLock(f"{base}/rw")
    with pytest.raises(LockTimeout):
        wl.acquire(timeout=0.5)
    r1.release()
    r2.release()
    assert wl.acquire(timeout=5)
    wl.release()
