"""A full disk on one node of any role loses nothing acknowledged, and the node comes back.

Each watched node's data folder is its own 64 MiB tmpfs (mounting needs root; skipped
otherwise). Under QoS 1 load a ballast file takes all of its free space: the node's next write
fails, it logs why and exits (`storage failed, stopping`), and the rest of the cluster goes on:
two ndbs still make a quorum, two sync nodes still elect and commit, and an entry's clients
reconnect to another entry. Then the ballast goes, the node is started again on the same data
and catches up. Every subscriber sees one sequence with every PUBACKed message in it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cluster import OrdoCluster
from cluster_load import WAMP_TOPIC, Load, check_delivered, subscriber, wait_caught_up
from harness import key_from_wamp, mount_tmpfs, wait_until

# Big enough that a node fills its last free pages within a few segments.
PAYLOAD = 2_000


def _fill(path: Path) -> Path:
    """Take every free byte of the file system under `path`; return the ballast file."""
    ballast = path / "ballast"
    chunk = b"\0" * (1 << 20)
    with open(ballast, "wb", buffering=0) as f:
        while True:
            st = os.statvfs(path)
            try:
                f.write(chunk if st.f_bavail * st.f_frsize >= len(chunk) else chunk[:4096])
            except OSError:
                return ballast


@pytest.fixture
def small_disks(ordo_binary, tmp_path, request):
    """A cluster whose nodes named in the test's parameter keep their data on a tmpfs each."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    c = OrdoCluster(tmp_path / "cluster")
    mounted = []
    try:
        for name in request.param:
            path = c.root / "data" / name
            ok, why = mount_tmpfs(path, "64m")
            if not ok:
                pytest.skip(f"cannot mount tmpfs here: {why}")
            mounted.append(path)
        c.start()
        yield c
    finally:
        rep = getattr(request.node, "rep_call", None)
        c.kill_all()
        if rep is not None and rep.failed:
            print("\n" + c.log_tails())
        for path in mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _fails_on_full_disk(node, path: Path) -> Path:
    """Fill `path`; wait until `node` exits for it, saying why; return the ballast."""
    ballast = _fill(path)
    assert wait_until(lambda: not node.alive(), 30), f"{node.name} still running on a full disk\n{node.log_tail(20)}"
    rc = node.proc.returncode
    node.kill9()  # reap it
    assert rc not in (0, None), f"{node.name} exited with {rc} on a full disk"
    log = node.log_text()
    assert "No space left on device" in log and "storage failed, stopping" in log, node.log_tail(20)
    return ballast


@pytest.mark.parametrize("small_disks", [("ndb1", "sync1", "sync2", "sync3")], indirect=True)
def test_full_disks_on_an_ndb_and_the_sync_leader_lose_nothing_acked(small_disks):
    cluster = small_disks
    subs = [subscriber(cluster.entry[0].mqtt_port), subscriber(cluster.entry[2].mqtt_port)]
    load = Load(cluster, payload=PAYLOAD)
    load.start(cluster.entry[:2], "a")
    load.progress(300, "warm-up")

    ndb = cluster.ndb[0]
    ndb_ballast = _fails_on_full_disk(ndb, cluster.root / "data" / "ndb1")
    load.progress(300, "ndb1's disk full")

    leader = cluster.sync_leader()
    assert leader is not None, "no sync node logged becoming leader"
    sync_ballast = _fails_on_full_disk(leader, cluster.root / "data" / leader.name)
    load.progress(300, f"{leader.name}'s (the leader's) disk full")

    # Space again: both start on the data they kept and catch up.
    ndb_ballast.unlink()
    sync_ballast.unlink()
    ndb.start()
    leader.start()
    load.progress(300, "both back")

    seen = check_delivered(subs, load.finish())
    wait_caught_up(cluster, len(seen))


@pytest.mark.parametrize("small_disks", [("entry3",)], indirect=True)
def test_a_full_disk_stops_an_entry_and_its_clients_move_on(small_disks, clients):
    cluster = small_disks
    victim = cluster.entry[2]
    subs = [subscriber(cluster.entry[0].mqtt_port), subscriber(cluster.entry[1].mqtt_port)]
    on_victim = subscriber(victim.mqtt_port)
    load = Load(cluster, payload=PAYLOAD)
    load.start(cluster.entry, "a")
    load.progress(300, "warm-up")

    # The entry cannot cache what it delivers: it stops rather than starve its subscribers.
    ballast = _fails_on_full_disk(victim, cluster.root / "data" / "entry3")
    assert on_victim.disconnected.wait(10), "a subscriber of the stopped entry was not disconnected"
    cut = load.cut_off(victim)
    load.start([cluster.entry[0]], "b")
    load.progress(300, "entry3 stopped")

    ballast.unlink()
    victim.start()
    load.progress(200, "entry3 back")
    seen = check_delivered(subs, load.finish(cut))
    wait_caught_up(cluster, len(seen))

    # The restarted entry has the whole log: replay from id 0 there equals what the others saw.
    late = clients.wamp(victim)
    late.subscribe(WAMP_TOPIC, after=0)
    assert late.wait_events(len(seen), 60), f"restarted entry replayed {len(late.events)} of {len(seen)}"
    assert [key_from_wamp(e.args, e.kwargs) for e in list(late.events)] == seen
