"""QoS 1 load on a running cluster and the checks every cluster test makes of what it delivered.

A `publisher` publishes numbered messages through one entry in its own thread; subscribers on
other entries collect what they deliver. `check_delivered` asserts the total order and that no
PUBACKed message is missing; `wait_caught_up` that every ndb and sync node reached the same id.
"""

from __future__ import annotations

from harness import (
    MqttClient,
    QosPublisher,
    duplicates,
    key_from_mqtt,
    per_publisher_order_violations,
    wait_quiet,
    wait_until,
)

TOPIC = "ordo/cluster/t"
WAMP_TOPIC = "ordo.cluster.t"
WINDOW = 100


def publisher(port: int, name: str, limit: int = 1_000_000, pace: float = 0.0, payload: int = 0) -> QosPublisher:
    """A QoS 1 publisher thread on its own connection to the entry at `port` (not started)."""
    client = MqttClient(port, inflight=WINDOW).connect()
    return QosPublisher(client, name, TOPIC, WINDOW, limit=limit, pace=pace, payload=payload)


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
        self.pubs: list[QosPublisher] = []

    def start(self, entries, tag: str, per_entry: int = 2) -> None:
        for i, e in enumerate(entries):
            for j in range(per_entry):
                p = publisher(e.mqtt_port, f"{tag}-e{i}p{j}", pace=self.pace, payload=self.payload)
                p.start()
                self.pubs.append(p)

    def acks(self) -> int:
        return sum(len(p.client.acked_mids) for p in self.pubs)

    def progress(self, more: int, what: str, timeout: float = 60) -> None:
        target = self.acks() + more
        assert wait_until(lambda: self.acks() >= target, timeout), (
            f"{what}: acks stalled at {self.acks()} (wanted {target})\n{self.cluster.log_tails()}"
        )

    def cut_off(self, entry) -> list[QosPublisher]:
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
