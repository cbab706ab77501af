"""MQTT 5 conformance, driven by paho-mqtt (MQTTv5) and a raw socket for packets clients won't send.

Each test names the normative statements of OASIS MQTT Version 5.0 it checks, as [MQTT-x.y.z-n],
or the section when the rule is stated without a number.
"""

from __future__ import annotations

import socket
import threading
import time

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from harness import HOST, wait_until

WAIT = 10


class V5:
    """A paho-mqtt MQTTv5 client with its network loop in a thread."""

    def __init__(self, port, client_id="", clean_start=True, props=None, will=None):
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        self.lock = threading.Lock()
        self.messages: list[paho.MQTTMessage] = []
        self.connack = None
        self.subacks: dict[int, list] = {}
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.__setitem__(mid, rcs)
        if will is not None:
            topic, payload, will_props = will
            self.c.will_set(topic, payload, qos=0, retain=False, properties=will_props)
        self.c.connect(HOST, port, keepalive=30, clean_start=clean_start, properties=props)
        self.c.loop_start()
        assert wait_until(lambda: self.connack is not None, WAIT), "no CONNACK"

    def _on_connect(self, c, u, flags, rc, props):
        self.connack = (flags, rc, props)

    def _on_message(self, c, u, msg):
        with self.lock:
            self.messages.append(msg)

    @property
    def session_present(self) -> bool:
        return bool(self.connack[0].session_present)

    def subscribe(self, topic, qos=1, props=None, **options):
        _, mid = self.c.subscribe(topic, options=SubscribeOptions(qos=qos, **options), properties=props)
        assert wait_until(lambda: mid in self.subacks, WAIT), f"no SUBACK for {topic}"
        return [rc.value for rc in self.subacks[mid]]

    def publish(self, topic, payload, qos=1, retain=False, props=None):
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=props)
        info.wait_for_publish(WAIT)
        assert info.is_published(), f"publish to {topic} not acknowledged"

    def wait(self, n, timeout=WAIT) -> bool:
        return wait_until(lambda: len(self.messages) >= n, timeout)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def publish_props(**values) -> Properties:
    p = Properties(PacketTypes.PUBLISH)
    for k, v in values.items():
        setattr(p, k, v)
    return p


def connect_props(**values) -> Properties:
    p = Properties(PacketTypes.CONNECT)
    for k, v in values.items():
        setattr(p, k, v)
    return p


# --------------------------------------------------------------------------- raw socket


def raw_connect(port, client_id=b"raw") -> socket.socket:
    """Open a socket, send an MQTT 5 CONNECT without properties, read the CONNACK."""
    s = socket.create_connection((HOST, port), timeout=WAIT)
    body = b"\x00\x04MQTT\x05\x02\x00\x00\x00" + len(client_id).to_bytes(2, "big") + client_id
    s.sendall(bytes([0x10, len(body)]) + body)
    head = s.recv(2)
    assert head[0] == 0x20, f"expected CONNACK, got {head!r}"
    rest = s.recv(head[1])
    assert rest[1] == 0x00, f"CONNACK reason {rest[1]:#x}"
    return s


def read_until_closed(s: socket.socket) -> bytes:
    data = b""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        chunk = s.recv(4096)
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"connection still open, received {data!r}")


def disconnect_reason(data: bytes) -> int:
    """Return the reason code of the DISCONNECT ending `data`."""
    assert data[:1] == b"\xe0", f"expected DISCONNECT, got {data!r}"
    return data[2] if data[1] > 0 else 0


# --------------------------------------------------------------------------- tests


def test_zero_length_client_id_gets_an_assigned_identifier(ordo):
    # [MQTT-3.1.3-6] [MQTT-3.1.3-7]
    c = V5(ordo.mqtt_port, client_id="")
    props = c.connack[2]
    assigned = getattr(props, "AssignedClientIdentifier", "")
    assert assigned, "CONNACK lacks the Assigned Client Identifier"
    # Section 3.2.2.3: the limits the server announces.
    assert props.ReceiveMaximum >= 1 and props.MaximumPacketSize > 0 and props.TopicAliasMaximum > 0
    assert props.SharedSubscriptionAvailable == 1 and props.SubscriptionIdentifierAvailable == 1
    c.close()


def test_request_response_and_user_properties_are_forwarded_unaltered(ordo):
    # [MQTT-3.3.2-4] [MQTT-3.3.2-15] [MQTT-3.3.2-16] [MQTT-3.3.2-17] [MQTT-3.3.2-18] [MQTT-3.3.2-20]
    sub = V5(ordo.mqtt_port, "rr-sub")
    sub.subscribe("rr/req", qos=1)
    pub = V5(ordo.mqtt_port, "rr-pub")
    props = publish_props(
        ResponseTopic="rr/resp",
        CorrelationData=b"\x00\x01corr",
        ContentType="application/json",
        PayloadFormatIndicator=1,
        UserProperty=[("z", "1"), ("a", "2"), ("z", "3")],
    )
    pub.publish("rr/req", b'{"q": 1}', qos=1, props=props)
    assert sub.wait(1)
    got = sub.messages[0].properties
    assert got.ResponseTopic == "rr/resp"
    assert got.CorrelationData == b"\x00\x01corr"
    assert got.ContentType == "application/json"
    assert got.PayloadFormatIndicator == 1
    assert got.UserProperty[:3] == [("z", "1"), ("a", "2"), ("z", "3")]
    # Ordo adds the permanent id last.
    key, value = got.UserProperty[3]
    assert key == "ordo-id" and int(value) > 0
    sub.close()
    pub.close()


def test_expired_message_is_not_delivered_and_remaining_interval_is_sent(ordo):
    # [MQTT-3.3.2-5] [MQTT-3.3.2-6]
    pub = V5(ordo.mqtt_port, "exp-pub")
    pub.publish("exp/a", b"short", retain=True, props=publish_props(MessageExpiryInterval=1))
    pub.publish("exp/b", b"long", retain=True, props=publish_props(MessageExpiryInterval=60))
    time.sleep(2.2)
    sub = V5(ordo.mqtt_port, "exp-sub")
    sub.subscribe("exp/#", qos=1)
    assert sub.wait(1)
    assert not sub.wait(2, 0.5), "an expired retained message was delivered"
    msg = sub.messages[0]
    assert msg.payload == b"long"
    assert 55 <= msg.properties.MessageExpiryInterval <= 58
    sub.close()
    pub.close()


def test_no_local_skips_own_publications(ordo):
    # [MQTT-3.8.3-3]
    c = V5(ordo.mqtt_port, "nl")
    c.subscribe("nl/t", qos=1, noLocal=True)
    other = V5(ordo.mqtt_port, "nl-other")
    c.publish("nl/t", b"own")
    other.publish("nl/t", b"other")
    assert c.wait(1)
    assert not c.wait(2, 0.5)
    assert c.messages[0].payload == b"other"
    c.close()
    other.close()


def test_retain_as_published(ordo):
    # [MQTT-3.3.1-12] [MQTT-3.3.1-13]
    keep = V5(ordo.mqtt_port, "rap-1")
    keep.subscribe("rap/t", qos=1, retainAsPublished=True)
    clear = V5(ordo.mqtt_port, "rap-0")
    clear.subscribe("rap/t", qos=1, retainAsPublished=False)
    pub = V5(ordo.mqtt_port, "rap-pub")
    pub.publish("rap/t", b"r", retain=True)
    assert keep.wait(1) and clear.wait(1)
    assert keep.messages[0].retain is True
    assert clear.messages[0].retain is False
    for c in (keep, clear, pub):
        c.close()


def test_retain_handling_0_1_2(ordo):
    # [MQTT-3.3.1-9] [MQTT-3.3.1-10] [MQTT-3.3.1-11]
    pub = V5(ordo.mqtt_port, "rh-pub")
    pub.publish("rh/t", b"kept", retain=True)
    never = V5(ordo.mqtt_port, "rh-2")
    never.subscribe("rh/t", qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)
    assert not never.wait(1, 0.5), "retain handling 2 sent a retained message"
    if_new = V5(ordo.mqtt_port, "rh-1")
    if_new.subscribe("rh/t", qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
    assert if_new.wait(1)
    if_new.subscribe("rh/t", qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
    assert not if_new.wait(2, 0.5), "retain handling 1 resent on an existing subscription"
    always = V5(ordo.mqtt_port, "rh-0")
    always.subscribe("rh/t", qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_ON_SUBSCRIBE)
    always.subscribe("rh/t", qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_ON_SUBSCRIBE)
    assert always.wait(2), "retain handling 0 must send at every subscribe"
    assert all(m.retain for m in always.messages)
    for c in (pub, never, if_new, always):
        c.close()


def test_subscription_identifiers_of_every_matching_subscription(ordo):
    # [MQTT-3.3.4-3]
    c = V5(ordo.mqtt_port, "sid")
    for ident, flt in ((11, "sid/+"), (22, "sid/#")):
        p = Properties(PacketTypes.SUBSCRIBE)
        p.SubscriptionIdentifier = ident
        c.subscribe(flt, qos=0, props=p)
    c.publish("sid/x", b"1", qos=0)
    assert c.wait(1)
    ids = c.messages[0].properties.SubscriptionIdentifier
    assert sorted(ids) == [11, 22]
    c.close()


def test_shared_subscription_delivers_each_message_to_one_member(ordo):
    # Section 4.8.2: each message of a shared subscription goes to one session of the group.
    members = [V5(ordo.mqtt_port, f"sh-{i}") for i in range(3)]
    for m in members:
        m.subscribe("$share/grp/sh/t", qos=1)
    pub = V5(ordo.mqtt_port, "sh-pub")
    for i in range(9):
        pub.publish("sh/t", str(i).encode())
    assert wait_until(lambda: sum(len(m.messages) for m in members) >= 9, WAIT)
    time.sleep(0.3)
    got = sorted(int(msg.payload) for m in members for msg in m.messages)
    assert got == list(range(9)), "each message exactly once across the group"
    assert all(len(m.messages) == 3 for m in members), "round robin over three members"
    for m in members:
        seq = [int(msg.payload) for msg in m.messages]
        assert seq == sorted(seq), "a member receives its share in publication order"
    for c in (*members, pub):
        c.close()


def test_no_local_on_a_shared_subscription_is_a_protocol_error(ordo):
    # [MQTT-3.8.3-4]
    s = raw_connect(ordo.mqtt_port, b"nl-shared")
    flt = b"$share/g/a"
    body = b"\x00\x01\x00" + len(flt).to_bytes(2, "big") + flt + b"\x05"
    s.sendall(bytes([0x82, len(body)]) + body)
    assert disconnect_reason(read_until_closed(s)) == 0x82


def test_wildcards_do_not_match_dollar_topics(ordo):
    # [MQTT-4.7.2-1]
    c = V5(ordo.mqtt_port, "dollar")
    c.subscribe("#", qos=0)
    c.subscribe("+/info", qos=0)
    c.publish("$SYS/info", b"hidden", qos=1)
    c.publish("plain/info", b"seen", qos=1)
    # Overlapping subscriptions: one copy (section 4.7.2 allows one message for both).
    assert c.wait(1)
    assert not c.wait(2, 0.5)
    assert {m.topic for m in c.messages} == {"plain/info"}
    c.close()


def test_session_expiry_interval(ordo):
    # [MQTT-3.1.2-23] [MQTT-3.2.2-3]
    props = connect_props(SessionExpiryInterval=2)
    c = V5(ordo.mqtt_port, "sess", clean_start=False, props=props)
    assert not c.session_present
    c.subscribe("sess/t", qos=1)
    c.close()
    again = V5(ordo.mqtt_port, "sess", clean_start=False, props=props)
    assert again.session_present, "session dropped before its expiry"
    again.close()
    time.sleep(2.5)
    late = V5(ordo.mqtt_port, "sess", clean_start=False, props=props)
    assert not late.session_present, "session kept after its expiry"
    late.close()


def test_will_delay_and_reconnect_before_it_elapses(ordo):
    # [MQTT-3.1.3-9] and section 3.1.3.2.2 (Will Delay Interval)
    watch = V5(ordo.mqtt_port, "wd-watch")
    watch.subscribe("wd/#", qos=0)
    will_props = Properties(PacketTypes.WILLMESSAGE)
    will_props.WillDelayInterval = 1
    conn = connect_props(SessionExpiryInterval=30)
    gone = V5(ordo.mqtt_port, "wd-gone", props=conn, will=("wd/gone", b"bye", will_props))
    back = V5(ordo.mqtt_port, "wd-back", props=conn, will=("wd/back", b"bye", will_props))
    closed_at = {}
    for c in (gone, back):
        c.c.loop_stop()
        c.c.socket().close()  # no DISCONNECT: the will is due
        closed_at[c] = time.monotonic()
    t0 = closed_at[gone]
    time.sleep(0.2)
    returned = V5(ordo.mqtt_port, "wd-back", clean_start=False, props=conn)
    assert watch.wait(1, 5)
    assert time.monotonic() - t0 >= 0.8, "will published before its delay"
    assert not watch.wait(2, 1.5), "the will of a client that came back was published"
    assert watch.messages[0].topic == "wd/gone"
    returned.close()
    watch.close()


def test_qos2_delivery_to_a_qos2_subscriber(ordo):
    # Section 4.3.3: QoS 2 delivery with PUBREC/PUBREL/PUBCOMP, at min(published, granted) QoS.
    sub = V5(ordo.mqtt_port, "q2-sub")
    assert sub.subscribe("q2/t", qos=2) == [2]
    pub = V5(ordo.mqtt_port, "q2-pub")
    pub.publish("q2/t", b"once", qos=2)
    assert sub.wait(1)
    assert not sub.wait(2, 0.5)
    assert sub.messages[0].qos == 2
    sub.close()
    pub.close()


def test_duplicate_property_is_a_protocol_error_with_disconnect(ordo):
    # Section 2.2.2.2 (a property that may appear once, twice) and section 4.13 (DISCONNECT with
    # the reason code before closing).
    s = raw_connect(ordo.mqtt_port, b"dup")
    props = b"\x02\x00\x00\x00\x01" * 2
    body = b"\x00\x01t" + bytes([len(props)]) + props
    s.sendall(bytes([0x30, len(body)]) + body)
    assert disconnect_reason(read_until_closed(s)) == 0x82


def test_property_not_allowed_on_the_packet_is_malformed(ordo):
    # Section 2.2.2.2: an identifier not valid for the packet type is a Malformed Packet.
    s = raw_connect(ordo.mqtt_port, b"notallowed")
    props = b"\x11\x00\x00\x00\x01"  # Session Expiry Interval on PUBLISH
    body = b"\x00\x01t" + bytes([len(props)]) + props
    s.sendall(bytes([0x30, len(body)]) + body)
    assert disconnect_reason(read_until_closed(s)) == 0x81


def test_subscription_identifier_from_a_client_is_a_protocol_error(ordo):
    # [MQTT-3.3.4-6]
    s = raw_connect(ordo.mqtt_port, b"sid-client")
    props = b"\x0b\x01"
    body = b"\x00\x01t" + bytes([len(props)]) + props
    s.sendall(bytes([0x30, len(body)]) + body)
    assert disconnect_reason(read_until_closed(s)) == 0x82


def test_topic_alias_is_accepted_up_to_the_announced_maximum(ordo):
    # [MQTT-3.3.2-12] and section 3.3.2.3.4 (an alias above the maximum: DISCONNECT 0x94)
    sub = V5(ordo.mqtt_port, "ta-sub")
    sub.subscribe("ta/t", qos=0)
    s = raw_connect(ordo.mqtt_port, b"ta-pub")
    first = b"\x00\x04ta/t\x03\x23\x00\x01" + b"one"
    second = b"\x00\x00\x03\x23\x00\x01" + b"two"
    s.sendall(bytes([0x30, len(first)]) + first + bytes([0x30, len(second)]) + second)
    assert sub.wait(2)
    assert [(m.topic, m.payload) for m in sub.messages] == [("ta/t", b"one"), ("ta/t", b"two")]
    too_high = b"\x00\x04ta/t\x03\x23\xff\xff" + b"x"
    s.sendall(bytes([0x30, len(too_high)]) + too_high)
    assert disconnect_reason(read_until_closed(s)) == 0x94
    sub.close()


# --------------------------------------------------------------------------- raw packet reading


def read_packet(s: socket.socket, timeout: float = WAIT) -> tuple[int, bytes] | None:
    """Read one packet: (first byte, body); None if nothing arrives within `timeout`."""
    s.settimeout(timeout)
    try:
        first = s.recv(1)
    except socket.timeout:
        return None
    finally:
        s.settimeout(WAIT)
    assert first, "connection closed"
    length, shift = 0, 0
    while True:
        b = s.recv(1)[0]
        length |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            break
    body = b""
    while len(body) < length:
        chunk = s.recv(length - len(body))
        assert chunk, "connection closed mid-packet"
        body += chunk
    return first[0], body


def raw_connect_with(port, client_id: bytes, props: bytes) -> socket.socket:
    """Like `raw_connect`, with raw CONNECT property bytes."""
    s = socket.create_connection((HOST, port), timeout=WAIT)
    body = b"\x00\x04MQTT\x05\x02\x00\x00" + bytes([len(props)]) + props
    body += len(client_id).to_bytes(2, "big") + client_id
    s.sendall(bytes([0x10, len(body)]) + body)
    first, rest = read_packet(s)
    assert first == 0x20 and rest[1] == 0, f"CONNACK {rest!r}"
    return s


def raw_subscribe(s: socket.socket, topic: bytes, qos: int) -> None:
    body = b"\x00\x01\x00" + len(topic).to_bytes(2, "big") + topic + bytes([qos])
    s.sendall(bytes([0x82, len(body)]) + body)
    first, _ = read_packet(s)
    assert first == 0x90, "expected SUBACK"


def publish_payload(body: bytes, qos: int) -> tuple[int, bytes]:
    """Return (packet id, payload) of a PUBLISH body received at `qos`."""
    tlen = int.from_bytes(body[:2], "big")
    pos = 2 + tlen
    pkid = 0
    if qos:
        pkid = int.from_bytes(body[pos : pos + 2], "big")
        pos += 2
    plen, shift = 0, 0
    while True:
        b = body[pos]
        pos += 1
        plen |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            break
    return pkid, body[pos + plen :]


def test_client_receive_maximum_bounds_unacknowledged_deliveries(ordo):
    # Section 3.3.4 (Receive Maximum): no more than the client's Receive Maximum QoS 1 and 2
    # PUBLISH packets without PUBACK.
    s = raw_connect_with(ordo.mqtt_port, b"rm-client", b"\x21\x00\x01")
    raw_subscribe(s, b"rm/t", 1)
    pub = V5(ordo.mqtt_port, "rm-pub")
    pub.publish("rm/t", b"one")
    pub.publish("rm/t", b"two")
    first, body = read_packet(s)
    assert first >> 4 == 3
    pkid, payload = publish_payload(body, 1)
    assert payload == b"one"
    assert read_packet(s, 0.5) is None, "a second delivery before the first PUBACK"
    s.sendall(b"\x40\x02" + pkid.to_bytes(2, "big"))
    first, body = read_packet(s)
    assert publish_payload(body, 1)[1] == b"two"
    pub.close()


def test_packet_over_the_client_maximum_is_not_sent(ordo):
    # [MQTT-3.1.2-25]
    s = raw_connect_with(ordo.mqtt_port, b"mps-client", b"\x27\x00\x00\x00\x40")
    raw_subscribe(s, b"mps/t", 0)
    pub = V5(ordo.mqtt_port, "mps-pub")
    pub.publish("mps/t", b"x" * 200)
    pub.publish("mps/t", b"small")
    first, body = read_packet(s)
    assert first >> 4 == 3
    assert publish_payload(body, 0)[1] == b"small"
    pub.close()


def test_pubrel_for_an_unknown_packet_id_gets_pubcomp_0x92(ordo):
    # Section 3.7.2.1: PUBCOMP reason 0x92 Packet Identifier not found.
    s = raw_connect(ordo.mqtt_port, b"pubrel-unknown")
    s.sendall(b"\x62\x02\x00\x09")
    first, body = read_packet(s)
    assert first == 0x70 and body[:2] == b"\x00\x09" and body[2] == 0x92


def test_unsubscribe_reason_codes(ordo):
    # Section 3.11.3: one reason code per filter, 0x11 when no subscription existed.
    s = raw_connect(ordo.mqtt_port, b"unsub-codes")
    raw_subscribe(s, b"u/a", 0)
    body = b"\x00\x02\x00" + b"\x00\x03u/a" + b"\x00\x03u/b"
    s.sendall(bytes([0xA2, len(body)]) + body)
    first, body = read_packet(s)
    assert first == 0xB0 and body == b"\x00\x02\x00\x00\x11"
