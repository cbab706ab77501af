"""A full disk stops acknowledgements, says so, and loses nothing that was acknowledged.

The data dir lives on a tmpfs of 8 MiB (needs root to mount; skipped otherwise). QoS 1 publishes
of ~150 KB fill it; RocksDB's WAL append then fails, the store refuses further writes and the
publisher gets no PUBACK. Every PUBACKed message must still be there, readable while the disk is
full and after a restart on a larger disk, where publishing works again.
"""

import json
import os
import subprocess

import pytest

from harness import OrdoServer, mount_tmpfs, wait_until

TOPIC = "ordo/slow/full"
URI = "ordo.slow.full"
PAD = "x" * 150_000


def _seqs(events):
    return [e.args[0]["seq"] for e in events if e.args and isinstance(e.args[0], dict)]


def test_full_disk_stops_acks_and_keeps_every_acked_message(ordo_binary, tmp_path, clients):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    small = tmp_path / "small"
    mounted, why = mount_tmpfs(small, "8m")
    if not mounted:
        pytest.skip(f"cannot mount tmpfs here: {why}")
    server = OrdoServer(ordo_binary, small / "data", tmp_path)
    try:
        server.start()
        pub = clients.mqtt(server, inflight=1)
        acked = []
        refused_at = None
        for seq in range(100):
            payload = json.dumps({"pub": "full", "seq": seq, "pad": PAD}).encode()
            mid = pub.publish(TOPIC, payload, qos=1)
            if pub.wait_acked([mid], 5):
                acked.append(seq)
            else:
                refused_at = seq
                break
        assert acked, "nothing was acknowledged before the disk filled"
        assert refused_at is not None, "100 publishes of 150 KB fit on an 8 MiB disk?"
        assert wait_until(lambda: "commit failed" in server.log_tail(200), 5), (
            "no log line says the commit failed:\n" + server.log_tail(20))
        assert server.alive(), "the process died on a full disk"

        # Reads still work: everything acknowledged replays while the disk is full.
        reader = clients.wamp(server, "msgpack")
        reader.subscribe(URI, after=0)
        reader.wait_events(len(acked), 20)
        got = _seqs(reader.events)
        assert got[: len(acked)] == acked, f"replay on a full disk: {got} vs acked {acked}"
        reader.close()
        pub.close()

        # Restart on a larger disk: every acked message once, in order, and publishing works.
        server.kill9()
        r = subprocess.run(["mount", "-o", "remount,size=64m", str(small)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        server.start()
        after = clients.wamp(server, "json")
        after.subscribe(URI, after=0)
        after.wait_events(len(acked), 20)
        after.wait_events(len(acked) + 2, 1.0)
        got = _seqs(after.events)
        assert got[: len(acked)] == acked, f"acked messages after restart: {got[:len(acked)]} vs {acked}"
        assert len(got) == len(set(got)), f"a message is stored twice: {got}"
        assert set(got) - set(acked) <= {refused_at}, f"unexpected messages stored: {set(got) - set(acked)}"
        again = clients.mqtt(server)
        payload = json.dumps({"pub": "full", "seq": 1000, "pad": ""}).encode()
        assert again.wait_acked([again.publish(TOPIC, payload, qos=1)], 10), "no PUBACK after the disk grew"
    finally:
        server.kill9()
        subprocess.run(["umount", "-l", str(small)], capture_output=True)
