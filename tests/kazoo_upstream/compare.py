"""Compares two junit reports of kazoo's suite: exits 1 if a test passed against
ZooKeeper but not against ringkeeper."""

import sys
import xml.etree.ElementTree as ET


def outcomes(path):
    out = {}
    for case in ET.parse(path).iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        if case.find("skipped") is not None:
            out[name] = "skipped"
        elif case.find("failure") is not None or case.find("error") is not None:
            out[name] = "failed"
        else:
            out[name] = "passed"
    return out


# Tests whose outcome is a race the server's speed decides, not a protocol behaviour:
# test_connection_dropped sends a 1 MB setData and drops the connection at once,
# asserting the write is still in flight. Against ZooKeeper it is (the write waits for
# an fsync of 1 MB); in-memory ringkeeper often answers first, and kazoo's reconnect
# then takes another path. Reported, not counted, until durable storage lands.
RACES = {
    "kazoo.tests.test_connection.TestConnectionDrop::test_connection_dropped",
}

zk, rk = outcomes(sys.argv[1]), outcomes(sys.argv[2])
both_pass = sorted(n for n in zk if zk[n] == "passed" and rk.get(n) == "passed")
regressions = sorted(n for n in zk if zk[n] == "passed" and rk.get(n) != "passed" and n not in RACES)
lost_races = sorted(n for n in RACES if zk.get(n) == "passed" and rk.get(n) != "passed")
both_fail = sorted(n for n in zk if zk[n] == "failed" and rk.get(n) == "failed")
only_rk = sorted(n for n in rk if rk[n] == "passed" and zk.get(n) != "passed")
print(f"kazoo suite: {len(both_pass)} pass on both servers; {len(both_fail)} fail on both "
      f"(multi-server, SSL, reconfig, SASL, restart with data: need an ensemble or storage); "
      f"{len(only_rk)} pass only on ringkeeper")
for n in both_fail:
    print(f"  fails on both: {n}")
for n in lost_races:
    print(f"  race (see RACES in compare.py), failed on ringkeeper this run: {n}")
for n in regressions:
    print(f"  REGRESSION (passes on ZooKeeper, not on ringkeeper): {n}")
if not zk or not rk:
    print("a report is empty: the suite did not run")
    sys.exit(1)
sys.exit(1 if regressions else 0)
