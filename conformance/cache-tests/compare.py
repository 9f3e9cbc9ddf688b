#!/usr/bin/env python3
"""Summarizes a cache-tests run of Shoal, beside the published results of other caches that ship
with the suite, and checks it against expected-failures.json.

usage: compare.py RESULTS.json KINDS.json PACKAGE_DIR EXPECTED.json

Exit status 1 when a required or optimal test fails that expected-failures.json does not list
(a regression, or a new test), 0 otherwise. Tests whose dependencies failed are reported but
not counted as failures of their own, as on cache-tests.fyi. "check" tests describe behaviour
the specifications leave open and are informational only.
"""
import json
import sys
from pathlib import Path

PEERS = ["nginx", "squid", "trafficserver", "varnish", "apache", "fastly"]


def outcome(test_id, results, kinds, seen=None):
    """pass, fail, or dependency (a test it depends on did not pass)."""
    seen = seen or set()
    for dependency in kinds[test_id]["depends_on"]:
        if dependency in kinds and dependency not in seen:
            if outcome(dependency, results, kinds, seen | {test_id}) != "pass":
                return "dependency"
    return "pass" if results.get(test_id) is True else "fail"


def main():
    results_path, kinds_path, package, expected_path = sys.argv[1:5]
    results = json.loads(Path(results_path).read_text())
    kinds = json.loads(Path(kinds_path).read_text())
    expected = json.loads(Path(expected_path).read_text())

    print(f"{'':14}" + "".join(f"{kind:>18}" for kind in ("required", "optimal", "check")))
    rows = [("shoal", results)]
    for peer in PEERS:
        path = Path(package) / "results" / f"{peer}.json"
        if path.exists():
            rows.append((peer, json.loads(path.read_text())))
    for name, run in rows:
        cells = []
        for kind in ("required", "optimal", "check"):
            ids = [i for i, t in kinds.items() if t["kind"] == kind]
            passed = sum(1 for i in ids if run.get(i) is True)
            cells.append(f"{passed:>4} of {len(ids):<4}")
        print(f"{name:14}" + "".join(f"{cell:>18}" for cell in cells))
    print()

    regressions, fixed = [], []
    for test_id, test in sorted(kinds.items()):
        if test["kind"] == "check":
            continue
        state = outcome(test_id, results, kinds)
        detail = results.get(test_id)
        listed = test_id in expected
        if state == "fail":
            reason = expected.get(test_id, "NOT EXPECTED")
            print(f"{test['kind']:8} {test_id}: {detail}\n         why: {reason}")
            if not listed:
                regressions.append(test_id)
        elif state == "dependency":
            print(f"{test['kind']:8} {test_id}: not run (a test it depends on failed)")
        elif listed:
            fixed.append(test_id)
    for test_id in fixed:
        print(f"now passes, remove from expected-failures.json: {test_id}")
    if regressions:
        print(f"\n{len(regressions)} unexpected failures: {', '.join(regressions)}")
        return 1
    print("\nno unexpected failures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
