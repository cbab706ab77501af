"""The cluster as separate processes: 3 sync, 3 ndb, 3 entries on loopback, real clients.

Every subscriber on every entry sees one sequence; kill -9 of one ndb, one sync (the leader) and
one entry, one at a time under QoS1 load, loses no PUBACKed message, duplicates none and
reorders nothing; the killed nodes come back and catch up.
"""

from __future__ import annotations

import socket
import struct
import time

from cluster_load import (
    WAMP_TOPIC,
    Load,
    check_delivered,
    keys,
    publisher,
    subscriber,
    wait_caught_up,
)
from harness import (
    HOST,
    MqttClient,
    duplicates,
    ident_bytes,
    key_from_wamp,
    per_publisher_order_violations,
    wait_until,
)


def test_three_entries_deliver_one_order(cluster, clients):
    subs = [subscriber(e.mqtt_port) for e in cluster.entry]
    wamp = clients.wamp(cluster.entry[2])
    wamp.subscribe(WAMP_TOPIC)
    pubs = [publisher(e.mqtt_port, f"e{i}p{j}", limit=300) for i, e in enumerate(cluster.entry) for j in range(2)]
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
    load = Load(cluster)
    load.start(cluster.entry, "a")
    load.progress(300, "warm-up")

    # one ndb: a quorum of two keeps storing; the restarted one catches up
    cluster.ndb[1].kill9()
    load.progress(300, "ndb2 down")
    cluster.ndb[1].start()
    load.progress(200, "ndb2 back")

    # the sync leader: the other two elect a new one and keep ordering
    leader = cluster.sync_leader()
    assert leader is not None, "no sync node logged becoming leader"
    leader.kill9()
    load.progress(300, f"{leader.name} (leader) down")
    leader.start()
    load.progress(200, f"{leader.name} back")

    # one entry: its publishers are cut off and reconnect to another entry
    victim = cluster.entry[2]
    victim.kill9()
    cut = load.cut_off(victim)
    load.start([cluster.entry[0]], "b")
    load.progress(300, "entry3 down")
    victim.start()

    acked = load.finish(cut)
    seen = check_delivered(subs, acked)
    # the restarted ndb and sync caught up: every node reports the same next id, no lag
    wait_caught_up(cluster, len(seen))

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
