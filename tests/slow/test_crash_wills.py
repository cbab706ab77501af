"""Wills of clients whose node was killed: published when the node starts again (docs/mqtt.md,
"Wills after a crash").

A connection with a will is recorded in the ordered log before its CONNACK; a node that starts
after a kill -9 publishes the wills of the connections it held, unless the client came back.
The wills are watched through a persistent session that misses nothing while the node is down.
"""

from __future__ import annotations

import time

from harness import MqttClient, wait_until
from test_session_restart import connect_with_delayed_will

WILLS = "ordo/slow/crash-wills"


def with_will(port: int, client_id: str, payload: bytes) -> MqttClient:
    """A paho client whose will (QoS 1, no delay) is `payload` on WILLS."""
    c = MqttClient(port, client_id=client_id)
    c.client.will_set(WILLS, payload, qos=1)
    return c.connect()


def forget(c: MqttClient) -> None:
    """Stop a client's network loop without DISCONNECT, so paho never reconnects it."""
    c.client.loop_stop()


def payloads(c: MqttClient) -> list[bytes]:
    return sorted(m.payload for m in c.messages)


def test_wills_of_a_killed_node_are_published_after_restart(ordo):
    watcher = MqttClient(ordo.mqtt_port, client_id="crash-wills-watcher", clean_session=False).connect()
    watcher.subscribe(WILLS, qos=1)

    lost = with_will(ordo.mqtt_port, "lost", b"lost")
    clean = with_will(ordo.mqtt_port, "clean", b"clean")
    clean.close()  # DISCONNECT: its will is never due
    # the same client id connects again with another will: the first connection's will is due
    # at the takeover (delay 0) and published then, once; the second is live at the kill
    first = with_will(ordo.mqtt_port, "again", b"again-1")
    forget(first)
    second = with_will(ordo.mqtt_port, "again", b"again-2")
    assert watcher.wait_messages(1, 10), "the taken-over connection's will was not published"
    assert payloads(watcher) == [b"again-1"], f"before the kill: {payloads(watcher)}"
    time.sleep(1.5)  # the watcher's resume point is checkpointed past again-1

    ordo.kill9()
    for c in (watcher, lost, second, first):
        forget(c)
    ordo.start()

    back = MqttClient(ordo.mqtt_port, client_id="crash-wills-watcher", clean_session=False).connect()
    assert back.session_present, "the watcher's session was lost"
    assert back.wait_messages(2, 15), f"wills lost in the crash: got {payloads(back)}"
    back.wait_messages(3, 3.0)  # anything more (clean, again-1, a duplicate) would show up by now
    assert payloads(back) == [b"again-2", b"lost"], (
        f"expected the wills of the two connections alive at the kill, once each; got {payloads(back)}"
    )

    # the wills are cleared once published: another kill publishes nothing
    time.sleep(1.5)
    ordo.kill9()
    forget(back)
    ordo.start()
    last = MqttClient(ordo.mqtt_port, client_id="crash-wills-watcher", clean_session=False).connect()
    last.wait_messages(1, 3.0)
    assert payloads(last) == [], f"a will was published twice: {payloads(last)}"


def test_a_clean_stop_publishes_no_will(ordo):
    watcher = MqttClient(ordo.mqtt_port, client_id="stop-watcher", clean_session=False).connect()
    watcher.subscribe(WILLS, qos=1)
    alive = with_will(ordo.mqtt_port, "alive-at-stop", b"stopped")
    time.sleep(1.0)
    assert ordo.stop() == 0, "ordo-entry did not stop gracefully on SIGTERM"
    for c in (watcher, alive):
        forget(c)
    ordo.start()
    back = MqttClient(ordo.mqtt_port, client_id="stop-watcher", clean_session=False).connect()
    assert back.session_present
    back.wait_messages(1, 3.0)
    assert payloads(back) == [], f"the node stopping published a will: {payloads(back)}"
    # and the record of that stop is gone for good: a kill now publishes nothing either
    ordo.kill9()
    forget(back)
    ordo.start()
    again = MqttClient(ordo.mqtt_port, client_id="stop-watcher", clean_session=False).connect()
    again.wait_messages(1, 3.0)
    assert payloads(again) == [], f"a will of the stopped run came back: {payloads(again)}"


def test_delayed_wills_of_live_connections_wait_after_a_kill(ordo):
    """MQTT 5 wills with a delay, connected at the kill: the delay counts from the restart, and
    the client coming back within it cancels the will."""
    watcher = MqttClient(ordo.mqtt_port, client_id="delay-watcher", clean_session=False).connect()
    watcher.subscribe(WILLS, qos=1)
    gone = connect_with_delayed_will(ordo.mqtt_port, "delayed-gone", WILLS, b"gone", 2)
    returns = connect_with_delayed_will(ordo.mqtt_port, "delayed-back", WILLS, b"back", 5)
    time.sleep(1.0)
    ordo.kill9()
    forget(watcher)
    gone.close()
    returns.close()
    ordo.start()
    restarted = time.monotonic()

    returned = connect_with_delayed_will(ordo.mqtt_port, "delayed-back", "ordo/slow/other", b"x", 60)
    back = MqttClient(ordo.mqtt_port, client_id="delay-watcher", clean_session=False).connect()
    assert wait_until(lambda: back.messages, 15), "the delayed will of the killed connection was lost"
    waited = time.monotonic() - restarted
    assert waited >= 1.5, f"the will delay was not honoured: published {waited:.1f}s after the restart"
    back.wait_messages(2, 6.0)  # past the returned client's delay
    assert payloads(back) == [b"gone"], f"expected only the client that did not return: {payloads(back)}"
    returned.sendall(b"\xe0\x00")  # DISCONNECT
    returned.close()



def test_killed_entry_publishes_its_wills_when_restarted(cluster):
    """Entry 1 dies with two will clients; one comes back on entry 2 meanwhile. Restarted, entry 1
    publishes the will of the other one only, and a subscriber on entry 3 gets it once."""
    watcher = MqttClient(cluster.entry[2].mqtt_port).connect()
    watcher.subscribe(WILLS, qos=1)
    lost = with_will(cluster.entry[0].mqtt_port, "cluster-lost", b"lost")
    moved = with_will(cluster.entry[0].mqtt_port, "cluster-moved", b"moved-stale")

    cluster.entry[0].kill9()
    for c in (lost, moved):
        forget(c)
    # the client is back, on another entry and without a will: its old will is stale
    again = MqttClient(cluster.entry[1].mqtt_port, client_id="cluster-moved").connect()
    time.sleep(1.0)
    assert watcher.messages == [], f"a will was published while its entry was down: {payloads(watcher)}"

    cluster.entry[0].start()
    assert watcher.wait_messages(1, 30), "the killed entry did not publish the will after its restart"
    watcher.wait_messages(2, 4.0)
    assert payloads(watcher) == [b"lost"], f"expected the lost client's will once: {payloads(watcher)}"
    for c in (again, watcher):
        c.close()
