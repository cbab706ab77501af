"""The cluster as separate processes: 3 sync, 3 ndb, 3 entries on loopback, real clients.

Every subscriber on every entry sees one sequence; kill -9 of one ndb, one sync (the leader) and
one entry, one at a time under QoS1 load, loses no PUBACKed message, duplicates none and
reorders nothing; the killed nodes come back and catch up.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

from harness import (
    HOST,
    MqttClient,
    duplicates,
    ident_bytes,
    key_from_mqtt,
    key_from_wamp,
    per_publisher_order_violations,
    wait_quiet,
    wait_until,
)

TOPIC = "ordo/cluster/t"
WAMP_TOPIC = "ordo.cluster.t"
WINDOW = 100



class Publisher(threading.Thread):
    """Publish QoS1 through one entry, at most WINDOW unacknowledged, until stopped or cut off."""

    def __init__(self, port: int, name: str, limit: int = 1_000_000, pace: float = 0.0):
        super().__init__(daemon=True)
        self.client = MqttClient(port, inflight=WINDOW).connect()
        self.name, self.limit, self.pace = name, limit, pace
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
                self.mid_seq[c.publish(TOPIC, ident_bytes(self.name, seq), qos=1)] = seq
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


def test_three_entries_deliver_one_order(cluster, clients):
    subs = [subscriber(e.mqtt_port) for e in cluster.entry]
    wamp = clients.wamp(cluster.entry[2])
    wamp.subscribe(WAMP_TOPIC)
    pubs = [Publisher(e.mqtt_port, f"e{i}p{j}", limit=300) for i, e in enumerate(cluster.entry) for j in range(2)]
    for p in pubs:
        p.start()
    for p in pubs:
        p.join(90)
        assert not p.is_alive() and p.error is None, f"{p.name}: {p.error!r}"
    wait_until(lambda: all(len(p.client.acked_mids) >= 300 for p in pubs), 60)
    acked = set().union(*(p.acked() for p in pubs))
    assert len(acked) == 6 * 300, f"only {len(acked)} of {6 * 300} publishes acknowledged"
    for s in subs:
        assert s.wait_messages(len(acked), 60), f"subscriber got {len(s.messages)} of {len(acked)}"
    assert wamp.wait_events(len(acked), 60), f"WAMP subscriber got {len(wamp.events)} of {len(acked)}"
    first = keys(subs[0])
    assert not duplicates(first)
    assert not per_publisher_order_violations(first)
    assert set(first) == acked
    for s in subs[1:]:
        assert keys(s) == first, "two MQTT subscribers on different entries saw different orders"
    events = list(wamp.events)
    assert [key_from_wamp(e.args, e.kwargs) for e in events] == first, "WAMP order differs"
    ids = [e.publication for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), "publication ids not strictly increasing"


def test_kill9_of_each_role_under_load_loses_nothing_acked(cluster, clients):
    subs = [subscriber(cluster.entry[0].mqtt_port), subscriber(cluster.entry[1].mqtt_port)]
    pubs: list[Publisher] = []

    def start_publishers(entries, tag):
        for i, e in enumerate(entries):
            for j in range(2):
                p = Publisher(e.mqtt_port, f"{tag}-e{i}p{j}", pace=0.0005)
                p.start()
                pubs.append(p)

    def acks() -> int:
        return sum(len(p.client.acked_mids) for p in pubs)

    def progress(more: int, what: str):
        target = acks() + more
        assert wait_until(lambda: acks() >= target, 60), (
            f"{what}: acks stalled at {acks()} (wanted {target})\n{cluster.log_tails()}"
        )

    start_publishers(cluster.entry, "a")
    progress(300, "warm-up")

    # one ndb: a quorum of two keeps storing; the restarted one catches up
    cluster.ndb[1].kill9()
    progress(300, "ndb2 down")
    cluster.ndb[1].start()
    progress(200, "ndb2 back")

    # the sync leader: the other two elect a new one and keep ordering
    leader = cluster.sync_leader()
    assert leader is not None, "no sync node logged becoming leader"
    leader.kill9()
    progress(300, f"{leader.name} (leader) down")
    leader.start()
    progress(200, f"{leader.name} back")

    # one entry: its publishers are cut off and reconnect to another entry
    victim = cluster.entry[2]
    victim.kill9()
    cut = [p for p in pubs if p.client.port == victim.mqtt_port]
    for p in cut:
        assert p.client.disconnected.wait(10), f"{p.name} did not notice its entry die"
        p.client.client.loop_stop()
    start_publishers([cluster.entry[0]], "b")
    progress(300, "entry3 down")
    victim.start()

    for p in pubs:
        if p in cut:
            p.join(15)
        else:
            p.finish()
    acked = set().union(*(p.acked() for p in pubs))
    total = wait_quiet(lambda: min(len(s.messages) for s in subs), quiet=1.5, timeout=60)
    seqs = [keys(s) for s in subs]
    assert seqs[0] == seqs[1], "subscribers on two entries saw different sequences"
    seen = seqs[0]
    assert not duplicates(seen), f"duplicates delivered: {duplicates(seen)[:5]}"
    assert not per_publisher_order_violations(seen), per_publisher_order_violations(seen)[:5]
    missing = acked - set(seen)
    assert not missing, f"{len(missing)} PUBACKed messages missing, e.g. {sorted(missing)[:5]}"
    assert total >= len(acked)

    # the restarted ndb and sync caught up: every node reports the same next id, no lag
    def caught_up():
        ndb = [n.metric("ordo_ndb_next_id") for n in cluster.ndb]
        lag = [n.metric("ordo_ndb_lag_ids") for n in cluster.ndb]
        sync = [n.metric("ordo_sync_next_id") for n in cluster.sync]
        return (None not in ndb + sync and len(set(ndb)) == 1 and set(lag) == {0}
                and set(sync) == set(ndb) and ndb[0] > len(seen))

    assert wait_until(caught_up, 30, interval=0.2), (
        "nodes did not converge: ndb next ids "
        f"{[n.metric('ordo_ndb_next_id') for n in cluster.ndb]}, sync next ids "
        f"{[n.metric('ordo_sync_next_id') for n in cluster.sync]}"
    )

    # the restarted entry catches up: replay from id 0 there equals what the others saw
    late = clients.wamp(victim)
    late.subscribe(WAMP_TOPIC, after=0)
    assert late.wait_events(len(seen), 60), f"restarted entry replayed {len(late.events)} of {len(seen)}"
    assert [key_from_wamp(e.args, e.kwargs) for e in list(late.events)] == seen



def subscribe_and_disconnect_when_saved(port: int, client_id: str, topic: str) -> None:
    """A raw MQTT 3.1.1 client with a persistent session: CONNECT, SUBSCRIBE at QoS 1, DISCONNECT,
    then wait for the server to close the socket (it does once the session is in the log)."""
    with socket.create_connection((HOST, port), timeout=10) as sock:
        cid = client_id.encode()
        body = b"\x00\x04MQTT\x04\x00\x00\x3c" + struct.pack(">H", len(cid)) + cid
        sock.sendall(bytes([0x10, len(body)]) + body)
        assert sock.recv(4)[:1] == b"\x20", "no CONNACK"
        t = topic.encode()
        body = b"\x00\x01" + struct.pack(">H", len(t)) + t + b"\x01"
        sock.sendall(bytes([0x82, len(body)]) + body)
        assert sock.recv(5)[:1] == b"\x90", "no SUBACK"
        sock.sendall(b"\xe0\x00")  # DISCONNECT
        while sock.recv(64):
            pass

def test_persistent_session_follows_its_client_to_another_entry(cluster, clients):
    """Sessions live in the ordered log: a client resumes on any entry, also after its entry dies."""
    roam = "ordo/cluster/roam"
    # Entry 1 closes the socket only after the session record is durable in the log, so every
    # publish below is ordered after it, and the watcher on entry 3 proves entry 3 applied it.
    subscribe_and_disconnect_when_saved(cluster.entry[0].mqtt_port, "roamer", roam)
    watcher = MqttClient(cluster.entry[2].mqtt_port).connect()  # proves entry 3 applied the log this far
    watcher.subscribe(roam, qos=1)
    pub = MqttClient(cluster.entry[1].mqtt_port).connect()
    sent = [("m", i) for i in range(20)]
    assert pub.wait_acked([pub.publish(roam, ident_bytes(*k), qos=1) for k in sent], 30)
    assert watcher.wait_messages(len(sent), 30)

    moved = MqttClient(cluster.entry[2].mqtt_port, client_id="roamer", clean_session=False).connect()
    assert moved.session_present, "entry 3 did not find the session saved through entry 1"
    moved.wait_messages(len(sent), 15)
    moved.wait_messages(len(sent) + 1, 0.5)
    assert keys(moved) == sent, f"resumed on entry 3: {keys(moved)[:5]}..., expected m0..m19 in order"

    # entry 3 dies under the client: it comes back on entry 1 from its last checkpoint
    time.sleep(1.5)  # one checkpoint period
    cluster.entry[2].kill9()
    assert moved.disconnected.wait(10)
    moved.client.loop_stop()
    back = MqttClient(cluster.entry[0].mqtt_port, client_id="roamer", clean_session=False).connect()
    assert back.session_present, "the session was lost with the entry that served it"
    more = [("n", i) for i in range(5)]
    assert pub.wait_acked([pub.publish(roam, ident_bytes(*k), qos=1) for k in more], 30)
    assert wait_until(lambda: keys(back)[-5:] == more, 15), f"no live delivery after the move: {keys(back)}"
    assert keys(back) == more, f"messages already acknowledged came again: {keys(back)}"
    for c in (back, pub, watcher):
        c.close()
    cluster.entry[2].start()
