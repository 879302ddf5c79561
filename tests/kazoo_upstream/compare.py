"""Compares two junit reports of kazoo's suite: exits 1 if a test passed against
ZooKeeper but not against ringkeeper."""

import sys
import xml.etree.ElementTree as ET


def outcomes(path):
    """Each test's outcome, and the message of each one that failed."""
    out, why = {}, {}
    for case in ET.parse(path).iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        failed = [e for e in (case.find("failure"), case.find("error")) if e is not None]
        if case.find("skipped") is not None:
            out[name] = "skipped"
        elif failed:
            out[name] = "failed"
            why[name] = failed[0].get("message") or ""
        else:
            out[name] = "passed"
    return out, why


(zk, _), (rk, rk_why) = outcomes(sys.argv[1]), outcomes(sys.argv[2])
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
    print(f"    ringkeeper: {rk_why.get(n, 'not run')[:500]}")
if not zk or not rk:
    print("a report is empty: the suite did not run")
    sys.exit(1)
sys.exit(1 if regressions else 0)
