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


zk, rk = outcomes(sys.argv[1]), outcomes(sys.argv[2])
both_pass = sorted(n for n in zk if zk[n] == "passed" and rk.get(n) == "passed")
regressions = sorted(n for n in zk if zk[n] == "passed" and rk.get(n) != "passed")
both_fail = sorted(n for n in zk if zk[n] == "failed" and rk.get(n) == "failed")
only_rk = sorted(n for n in rk if rk[n] == "passed" and zk.get(n) != "passed")
print(f"kazoo suite: {len(both_pass)} pass on both servers; {len(both_fail)} fail on both "
      f"(multi-server, SSL, reconfig, read-only mode, SASL: need an ensemble or what a standalone server lacks); "
      f"{len(only_rk)} pass only on ringkeeper")
for n in both_fail:
    print(f"  fails on both: {n}")
for n in regressions:
    print(f"  REGRESSION (passes on ZooKeeper, not on ringkeeper): {n}")
if not zk or not rk:
    print("a report is empty: the suite did not run")
    sys.exit(1)
sys.exit(1 if regressions else 0)
