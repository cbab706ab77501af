"""QoS 1 load on a running cluster and the checks every cluster test makes of what it delivered.

A `Publisher` publishes numbered messages through one entry in its own thread; subscribers on
other entries collect what they deliver. `check_delivered` asserts the total order and that no
PUBACKed message is missing; `wait_caught_up` that every ndb and sync node reached the same id.
"""

from __future__ import annotations

import threading
import time

from harness import (
    MqttClient,
    duplicates,
    ident_bytes,
    key_from_mqtt,
    per_publisher_order_violations,
    wait_quiet,
    wait_until,
)

TOPIC = "ordo/cluster/t"
WAMP_TOPIC = "ordo.cluster.t"
WINDOW = 100


class Publisher(threading.Thread):
    """Publish QoS1 through one entry, at most WINDOW unacknowledged, until stopped or cut off."""

    def __init__(self, port: int, name: str, limit: int = 1_000_000, pace: float = 0.0, payload: int = 0):
        super().__init__(daemon=True)
        self.client = MqttClient(port, inflight=WINDOW).connect()
        self.name, self.limit, self.pace = name, limit, pace
        self.pad = b" " * payload  # JSON allows trailing blanks: the payload still parses
        self.mid_seq: dict[int, int] = {}
        self.stop = threading.Event()
        self.error = None

    def run(self):
        c = self.client
        try:
            deadline = time.monotonic() + 120
            for seq in range(self.limit):
                while len(self.mid_seq) - len(c.acked_mids) >= WINDOW and not self.stop.is_set():
                    if time.monotonic() > deadline or c.disconnected.is_set():
                        return
                    time.sleep(0.001)
                if self.stop.is_set() or c.disconnected.is_set() or time.monotonic() > deadline:
                    return
                self.mid_seq[c.publish(TOPIC, ident_bytes(self.name, seq) + self.pad, qos=1)] = seq
                if self.pace:
                    time.sleep(self.pace)
        except BaseException as e:  # reported by the test
            self.error = e

    def acked(self) -> set:
        return {(self.name, self.mid_seq[m]) for m in set(self.client.acked_mids) if m in self.mid_seq}

    def finish(self) -> None:
        self.stop.set()
        self.join(15)
        assert not self.is_alive(), f"{self.name} did not stop"
        assert self.error is None, f"{self.name}: {self.error!r}"


def subscriber(port: int) -> MqttClient:
    c = MqttClient(port).connect()
    c.subscribe(TOPIC, qos=1)
    return c


def keys(client: MqttClient) -> list:
    return [key_from_mqtt(m.payload) for m in list(client.messages)]


class Load:
    """Publishers started on entries, and progress measured in PUBACKs."""

    def __init__(self, cluster, pace: float = 0.0005, payload: int = 0):
        self.cluster, self.pace, self.payload = cluster, pace, payload
        self.pubs: list[Publisher] = []

    def start(self, entries, tag: str, per_entry: int = 2) -> None:
        for i, e in enumerate(entries):
            for j in range(per_entry):
                p = Publisher(e.mqtt_port, f"{tag}-e{i}p{j}", pace=self.pace, payload=self.payload)
                p.start()
                self.pubs.append(p)

    def acks(self) -> int:
        return sum(len(p.client.acked_mids) for p in self.pubs)

    def progress(self, more: int, what: str, timeout: float = 60) -> None:
        target = self.acks() + more
        assert wait_until(lambda: self.acks() >= target, timeout), (
            f"{what}: acks stalled at {self.acks()} (wanted {target})\n{self.cluster.log_tails()}"
        )

    def cut_off(self, entry) -> list[Publisher]:
        """Wait until the publishers of a dead entry notice; return them."""
        cut = [p for p in self.pubs if p.client.port == entry.mqtt_port]
        for p in cut:
            assert p.client.disconnected.wait(10), f"{p.name} did not notice its entry die"
            p.client.client.loop_stop()
        return cut

    def finish(self, cut=()) -> set:
        """Stop every publisher; return what was PUBACKed."""
        for p in self.pubs:
            if p in cut:
                p.join(15)
            else:
                p.finish()
        return set().union(*(p.acked() for p in self.pubs))


def check_delivered(subs: list[MqttClient], acked: set) -> list:
    """Every subscriber saw the same sequence: no duplicate, no reorder, nothing PUBACKed
    missing. Returns that sequence."""
    total = wait_quiet(lambda: min(len(s.messages) for s in subs), quiet=1.5, timeout=60)
    seqs = [keys(s) for s in subs]
    for other in seqs[1:]:
        assert other == seqs[0], "subscribers on two entries saw different sequences"
    seen = seqs[0]
    assert not duplicates(seen), f"duplicates delivered: {duplicates(seen)[:5]}"
    assert not per_publisher_order_violations(seen), per_publisher_order_violations(seen)[:5]
    missing = acked - set(seen)
    assert not missing, f"{len(missing)} PUBACKed messages missing, e.g. {sorted(missing)[:5]}"
    assert total >= len(acked)
    return seen


def wait_caught_up(cluster, delivered: int) -> None:
    """Every ndb and sync node reports the same next id, past what was delivered; no ndb lags."""

    def caught_up():
        ndb = [n.metric("ordo_ndb_next_id") for n in cluster.ndb]
        lag = [n.metric("ordo_ndb_lag_ids") for n in cluster.ndb]
        sync = [n.metric("ordo_sync_next_id") for n in cluster.sync]
        return (None not in ndb + sync and len(set(ndb)) == 1 and set(lag) == {0}
                and set(sync) == set(ndb) and ndb[0] > delivered)

    assert wait_until(caught_up, 30, interval=0.2), (
        "nodes did not converge: ndb next ids "
        f"{[n.metric('ordo_ndb_next_id') for n in cluster.ndb]}, sync next ids "
        f"{[n.metric('ordo_sync_next_id') for n in cluster.sync]}"
    )
