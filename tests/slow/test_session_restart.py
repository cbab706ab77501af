"""MQTT persistent sessions and delayed wills survive a restart of the node, kill -9 included.

Sessions are saved in the ordered log (docs/mqtt.md, "Persistent sessions"): at a clean disconnect
the whole session, and while connected a checkpoint of its resume point every second.
"""

from __future__ import annotations

import socket
import struct
import time

from harness import HOST, duplicates, ident_bytes, key_from_mqtt, wait_until

TOPIC = "ordo/slow/session-restart"


def contiguous_suffix(got: list, sent: list) -> bool:
    """Whether `got` is `sent` with some prefix cut off: no gap, no reorder, no repeat."""
    return len(got) <= len(sent) and got == sent[len(sent) - len(got):]


def test_persistent_session_survives_graceful_restart_and_kill9(ordo, clients):
    sub = clients.mqtt(ordo, client_id="restart-sess", clean_session=False)
    sub.subscribe(TOPIC, qos=1)
    pub = clients.mqtt(ordo)
    assert pub.wait_acked([pub.publish(TOPIC, ident_bytes("p", 0), qos=1)], 10)
    assert sub.wait_messages(1, 10), "subscriber got nothing while connected"
    sub.close()  # clean DISCONNECT: the session is written to the log

    sent = [("p", i) for i in range(1, 31)]
    mids = [pub.publish(TOPIC, ident_bytes(*k), qos=1) for k in sent]
    assert pub.wait_acked(mids, 30), "publishes while the subscriber was away were not all PUBACKed"
    pub.close()

    # 1. graceful restart: the session and the 30 messages it missed are all there
    assert ordo.stop() == 0, "ordo-entry did not stop gracefully on SIGTERM"
    ordo.start()
    again = clients.mqtt(ordo, client_id="restart-sess", clean_session=False)
    assert again.session_present, "the persistent session did not survive a graceful restart"
    again.wait_messages(len(sent), 15)
    again.wait_messages(len(sent) + 1, 0.5)
    got = [key_from_mqtt(m.payload) for m in again.messages]
    assert got == sent, f"after restart got {len(got)} messages {got[:5]}..., expected p1..p30 in order"

    # 2. kill -9 while connected: the checkpoint brings the session back; the client gets every
    # message from its last checkpoint on, once each and in order, then the new ones live
    pub = clients.mqtt(ordo)
    more = [("q", i) for i in range(20)]
    assert pub.wait_acked([pub.publish(TOPIC, ident_bytes(*k), qos=1) for k in more], 30)
    assert again.wait_messages(len(sent) + len(more), 15), "live messages not delivered before the kill"
    time.sleep(1.5)  # one checkpoint period: the resume point is written
    tail = [("r", i) for i in range(10)]
    assert pub.wait_acked([pub.publish(TOPIC, ident_bytes(*k), qos=1) for k in tail], 30)
    assert again.wait_messages(len(sent) + len(more) + len(tail), 15)
    ordo.kill9()
    again.close()
    pub.close()
    ordo.start()

    resumed = clients.mqtt(ordo, client_id="restart-sess", clean_session=False)
    assert resumed.session_present, "the persistent session did not survive kill -9"
    pub = clients.mqtt(ordo)
    new = [("s", i) for i in range(5)]
    assert pub.wait_acked([pub.publish(TOPIC, ident_bytes(*k), qos=1) for k in new], 30)
    everything = sent + more + tail + new
    assert wait_until(lambda: [key_from_mqtt(m.payload) for m in resumed.messages][-5:] == new, 15), (
        f"resumed session did not get the new messages: {[key_from_mqtt(m.payload) for m in resumed.messages][-8:]}"
    )
    got = [key_from_mqtt(m.payload) for m in resumed.messages]
    assert not duplicates(got), f"resumed session got duplicates: {duplicates(got)[:5]}"
    assert contiguous_suffix(got, everything), f"resumed session has a gap or reorder: {got[:12]}..."
    # the checkpoint was taken after q0..q19 were acked: at most the r's come again
    assert len(got) <= len(tail) + len(new), (
        f"{len(got)} messages replayed after kill -9; the checkpoint should have limited it to "
        f"{len(tail) + len(new)}"
    )

    # 3. a clean session still throws the stored one away, for good
    resumed.close()
    clean = clients.mqtt(ordo, client_id="restart-sess", clean_session=True)
    clean.close()
    assert ordo.stop() == 0
    ordo.start()
    last = clients.mqtt(ordo, client_id="restart-sess", clean_session=False)
    assert not last.session_present, "a discarded session came back after a restart"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def connect_with_delayed_will(port: int, client_id: str, will_topic: str, payload: bytes,
                              delay: int) -> socket.socket:
    """Open a raw MQTT 5 connection whose will waits `delay` seconds; session expiry 60 s."""
    props = b"\x11" + struct.pack(">I", 60)  # Session Expiry Interval
    variable = _utf8("MQTT") + bytes([5, 0x02 | 0x04]) + struct.pack(">H", 60) + _varint(len(props)) + props
    will_props = b"\x18" + struct.pack(">I", delay)  # Will Delay Interval
    body = (variable + _utf8(client_id) + _varint(len(will_props)) + will_props + _utf8(will_topic)
            + struct.pack(">H", len(payload)) + payload)
    sock = socket.create_connection((HOST, port), timeout=10)
    sock.sendall(b"\x10" + _varint(len(body)) + body)
    connack = sock.recv(64)
    assert connack[:1] == b"\x20" and connack[3] == 0, f"CONNECT refused: {connack!r}"
    return sock


def drop(sock: socket.socket) -> None:
    """Close without DISCONNECT (RST): an abnormal end, so the will applies."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_delayed_will_survives_kill9(ordo, clients):
    doomed = connect_with_delayed_will(ordo.mqtt_port, "will-after-crash", "ordo/slow/wills", b"gone", 3)
    saved = connect_with_delayed_will(ordo.mqtt_port, "will-cancelled", "ordo/slow/wills", b"back", 3)
    drop(doomed)
    drop(saved)
    time.sleep(0.5)  # the sessions, with their pending wills, reach the log
    ordo.kill9()
    ordo.start()

    watcher = clients.mqtt(ordo)
    watcher.subscribe("ordo/slow/wills", qos=1)
    # the second client comes back within its delay: its will must not be published
    returned = connect_with_delayed_will(ordo.mqtt_port, "will-cancelled", "ordo/slow/other", b"x", 60)
    assert watcher.wait_messages(1, 15), "the delayed will was lost in the crash"
    watcher.wait_messages(2, 4.0)
    got = [m.payload for m in watcher.messages]
    assert got == [b"gone"], f"expected only the crashed client's will, got {got}"
    returned.sendall(b"\xe0\x00")  # DISCONNECT
    returned.close()
