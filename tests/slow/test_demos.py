"""The demos run as a user would run them, against a real node."""

from __future__ import annotations

import re
import subprocess
import sys

from harness import REPO

DEMO = REPO / "demos" / "resource_lock.py"


def test_resource_lock_demo_never_grants_the_lock_twice(ordo):
    names = ["alice", "bob", "carol"]
    procs = [
        subprocess.Popen([sys.executable, str(DEMO), "--url", ordo.wamp_url, "--name", n, "--resource", "t1",
                          "--hold", "0.5", "--rounds", "2"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for n in names
    ]
    outs = {}
    for n, p in zip(names, procs):
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0, f"{n} failed:\n{out}"
        outs[n] = out
    spans = []
    for n, out in outs.items():
        locked = [float(t) for t in re.findall(r": LOCKED at ([\d.]+)", out)]
        unlocked = [float(t) for t in re.findall(r"UNLOCKED at ([\d.]+)", out)]
        assert len(locked) == 2 and len(unlocked) == 2, f"{n} did not get the lock twice:\n{out}"
        spans += [(a, b, n) for a, b in zip(locked, unlocked)]
    spans.sort()
    for (a1, b1, n1), (a2, b2, n2) in zip(spans, spans[1:]):
        assert b1 <= a2, f"{n1} held until {b1} but {n2} locked at {a2}"
    # every client saw the same requests in the same permanent-id order
    views = {n: re.findall(r": (id \d+: \w+ \w+)", out) for n, out in outs.items()}
    longest = max(views.values(), key=len)
    for n, v in views.items():
        assert v == longest[: len(v)], f"{n} saw another order"
    assert len(longest) == 12, f"expected 6 acquires and 6 releases, saw {longest}"
