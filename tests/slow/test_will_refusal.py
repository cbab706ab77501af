"""A CONNECT with a will is refused with 0x88 Server unavailable (MQTT 3.1.1: return code 3) when
its live-will record is not durable within 5 s (docs/mqtt.md, "Wills after a crash";
`ARM_WAIT` in entry/src/mqtt/live_wills.rs).

In a cluster, two of the three ndbs are killed -9: an entry's segments then reach one ndb only,
never the quorum of two that makes them durable, so nothing is ordered until they are back. The
refused CONNECTs touch no client without a will on the same entry, and a refused will is never
published: not at the refusal, and not after the entry is later killed -9 and restarted, though
a refused record may still reach the log once the ndbs are back (the entry deletes it after).
"""

from __future__ import annotations

import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor

import paho.mqtt.client as paho

from harness import HOST, wait_until
from test_session_restart import _utf8, _varint

# How long an entry waits for a will record before it refuses the CONNECT (live_wills::ARM_WAIT).
ARM_WAIT = 5.0
# A refusal must come after ARM_WAIT, not much later (the margin is for a loaded machine).
LATE = ARM_WAIT + 5.0
WILLS = "ordo/slow/refused-wills"
BYSTANDER = "ordo/slow/refusal-bystander"


def raw_connect_with_will(port: int, client_id: str, v5: bool) -> socket.socket:
    """Send a clean-start CONNECT (MQTT 5 or 3.1.1) whose QoS 1 will is `client_id` on WILLS."""
    level = 5 if v5 else 4
    flags = 0x02 | 0x04 | 0x08  # clean start, will, will QoS 1
    variable = _utf8("MQTT") + bytes([level, flags]) + struct.pack(">H", 60)
    if v5:
        variable += _varint(0)  # no CONNECT properties
    will = _utf8(WILLS) + _utf8(client_id)
    if v5:
        will = _varint(0) + will  # no will properties
    body = variable + _utf8(client_id) + will
    sock = socket.create_connection((HOST, port), timeout=LATE + 2)
    sock.sendall(b"\x10" + _varint(len(body)) + body)
    return sock


def raw_refusal(port: int, client_id: str, v5: bool) -> tuple[bytes, float, bool]:
    """CONNECT with a will on a raw socket; return the CONNACK, the seconds it took, and whether
    the server then closed the connection (EOF within 2 s)."""
    start = time.monotonic()
    sock = raw_connect_with_will(port, client_id, v5)
    try:
        head = sock.recv(2)
        elapsed = time.monotonic() - start
        body = sock.recv(head[1]) if len(head) == 2 else b""
        sock.settimeout(2.0)
        try:
            closed = sock.recv(64) == b""
        except (socket.timeout, ConnectionResetError):
            closed = False
        return head + body, elapsed, closed
    except socket.timeout:
        return b"", time.monotonic() - start, False
    finally:
        sock.close()


def paho_refusal(port: int, client_id: str, protocol: int) -> tuple[paho.ReasonCode | None, float]:
    """CONNECT with a will through paho-mqtt; return on_connect's reason code and the seconds it
    took. The network loop is run here, by hand, so paho never reconnects on its own."""
    got = []
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
    c.will_set(WILLS, client_id.encode(), qos=1)
    c.on_connect = lambda _c, _u, _flags, reason, _props: got.append(reason)
    start = time.monotonic()
    c.connect(HOST, port, keepalive=60)
    while not got and time.monotonic() - start < LATE:
        if c.loop(0.1) != paho.MQTT_ERR_SUCCESS:
            break
    elapsed = time.monotonic() - start
    if not got:
        c.disconnect()
    return (got[0] if got else None), elapsed


def with_will(port: int, client_id: str, payload: bytes) -> paho.Client:
    """A paho MQTT 5 client with a QoS 1 will, connected; its loop runs on a thread."""
    reasons = []
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    c.will_set(WILLS, payload, qos=1)
    c.on_connect = lambda _c, _u, _flags, reason, _props: reasons.append(reason)
    c.connect(HOST, port, keepalive=60)
    c.loop_start()
    assert wait_until(lambda: reasons, 15), f"{client_id}: no CONNACK once the ndbs were back"
    assert not reasons[0].is_failure, f"{client_id} refused once the ndbs were back: {reasons[0]}"
    return c


def test_connect_with_a_will_is_refused_while_the_log_cannot_store_it(cluster, clients):
    entry = cluster.entry[0]
    watcher = clients.mqtt(cluster.entry[2])
    watcher.subscribe(WILLS, qos=1)
    bystander = clients.mqtt(entry, client_id="refusal-bystander")
    bystander.subscribe(BYSTANDER, qos=1)

    for ndb in cluster.ndb[1:]:
        ndb.kill9()

    # four CONNECTs with a will at once, each waits out ARM_WAIT: paho and raw, MQTT 5 and 3.1.1
    with ThreadPoolExecutor(4) as pool:
        paho5 = pool.submit(paho_refusal, entry.mqtt_port, "refused-paho-v5", paho.MQTTv5)
        paho3 = pool.submit(paho_refusal, entry.mqtt_port, "refused-paho-v311", paho.MQTTv311)
        raw5 = pool.submit(raw_refusal, entry.mqtt_port, "refused-raw-v5", True)
        raw3 = pool.submit(raw_refusal, entry.mqtt_port, "refused-raw-v311", False)
        attempts = (paho5, paho3, raw5, raw3)
        time.sleep(0.5)  # the four CONNECTs are in, waiting on their records
        # meanwhile a client without a will connects and is served: it has no record to wait for
        newcomer = clients.mqtt(entry, client_id="refusal-newcomer")
        newcomer.subscribe(BYSTANDER, qos=1)
        pending = bystander.publish(BYSTANDER, b"during the outage", qos=1)
        served_meanwhile = not any(a.done() for a in attempts)
        paho5, paho3, raw5, raw3 = (a.result() for a in attempts)

    for name, (reason, took) in (("paho MQTT 5", paho5), ("paho MQTT 3.1.1", paho3)):
        assert reason is not None, f"{name}: no CONNACK within {took:.1f}s"
        assert reason.is_failure and reason.getName() == "Server unavailable", (
            f"{name}: CONNACK {reason} after {took:.1f}s while the log could not store the will"
        )
        assert ARM_WAIT - 0.3 <= took <= LATE, f"{name}: refused after {took:.1f}s, expected ~{ARM_WAIT}s"
    assert paho5[0].value == 0x88
    for name, (connack, took, closed), expected in (
        ("raw MQTT 5", raw5, b"\x20\x03\x00\x88\x00"),  # reason 0x88, no properties
        ("raw MQTT 3.1.1", raw3, b"\x20\x02\x00\x03"),  # return code 3
    ):
        assert connack == expected, f"{name}: CONNACK {connack!r} after {took:.1f}s, expected {expected!r}"
        assert ARM_WAIT - 0.3 <= took <= LATE, f"{name}: refused after {took:.1f}s, expected ~{ARM_WAIT}s"
        assert closed, f"{name}: the connection stayed open after the refusing CONNACK"

    # the clients without a will were never touched: connected, served, and not waiting on the log
    assert served_meanwhile, "a CONNECT without a will waited for the refusals of the CONNECTs with one"
    assert not bystander.disconnected.is_set() and not newcomer.disconnected.is_set(), (
        "a client without a will lost its connection while CONNECTs with a will were refused"
    )
    assert pending not in bystander.acked_mids, "a publish was acked while two of three ndbs were down"

    for ndb in cluster.ndb[1:]:
        ndb.start()
    # the very connections that lived through the outage get their PUBACK and the message
    assert bystander.wait_acked([pending], 30), "the bystander's publish was not acked once the ndbs were back"
    for c in (bystander, newcomer):
        assert wait_until(lambda: [m.payload for m in c.messages] == [b"during the outage"], 10), (
            f"a client without a will did not get the message published during the outage: {c.messages}"
        )
    assert not bystander.disconnected.is_set(), "the bystander was disconnected"
    assert watcher.messages == [], f"a refused CONNECT's will was published: {watcher.messages}"

    # the same client id connects again with a will and is accepted; entry 1 is then killed -9 and
    # restarted: it publishes the will of that connection, once, and none of a refused CONNECT
    back = with_will(entry.mqtt_port, "refused-paho-v5", b"accepted")
    entry.kill9()
    back.loop_stop()  # no automatic reconnect: the client must stay gone
    for c in (bystander, newcomer):
        c.client.loop_stop()
    entry.start()
    assert watcher.wait_messages(1, 30), "the restarted entry did not publish the accepted will"
    watcher.wait_messages(2, 3.0)  # a refused will or a duplicate would show up by now
    got = sorted(m.payload for m in watcher.messages)
    assert got == [b"accepted"], f"expected only the accepted will, once; got {got}"
