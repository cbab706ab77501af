"""MQTT over WebSocket with paho-mqtt (`transport="websockets"`), on the WAMP WebSocket port and
on the `--mqtt-ws` listener, and MQTT username/password from the `[[users]]` section.

MQTT 5 section 6 / 3.1.1 section 6: subprotocol `mqtt`, binary frames. Users: the MQTT password
is the user's `ticket`; topics meet permission prefixes in WAMP form (`com/rw/x` is `com.rw.x`).
"""

from __future__ import annotations

import threading

import paho.mqtt.client as paho
import pytest

from harness import HOST, MqttClient, OrdoServer, free_port, wait_until

WAIT = 10

CONFIG = """
allow_anonymous = true

[[users]]
authid = "alice"
ticket = "t0k"

[[users.permissions]]
realm = "realm1"
prefix = "com."
publish = true
subscribe = true

[[users.permissions]]
realm = "realm1"
prefix = "com.ro."
subscribe = true
"""


class WsOrdo(OrdoServer):
    """ordo-entry with an MQTT-over-WebSocket listener of its own and the users above."""

    def __init__(self, binary, data_dir, log_dir, config):
        super().__init__(binary, data_dir, log_dir)
        self.mqtt_ws_port = free_port(avoid=[self.mqtt_port, self.wamp_port, self.rawsocket_port])
        self.tcp_ports.append(self.mqtt_ws_port)
        self.config = config

    def command(self):
        return super().command() + ["--mqtt-ws", f"{HOST}:{self.mqtt_ws_port}", "--config", str(self.config)]


@pytest.fixture
def ordo_ws(ordo_binary, tmp_path):
    config = tmp_path / "ordo.toml"
    config.write_text(CONFIG)
    server = WsOrdo(ordo_binary, tmp_path / "data", tmp_path, config)
    server.start()
    yield server
    server.kill9()


class WsClient:
    """A paho-mqtt client over WebSocket with its loop on a thread; records what it gets."""

    def __init__(self, port, protocol=paho.MQTTv311, username=None, password=None, client_id=""):
        self.c = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, transport="websockets"
        )
        self.c.ws_set_options(path="/mqtt")
        if username is not None:
            self.c.username_pw_set(username, password)
        self.lock = threading.Lock()
        self.messages: list[tuple[str, bytes]] = []
        self.acks: dict[int, object] = {}
        self.subacks: dict[int, list] = {}
        self.connack = None
        self.disconnected = threading.Event()
        self.c.on_connect = lambda c, u, flags, rc, props: setattr(self, "connack", rc)
        self.c.on_message = self._on_message
        self.c.on_publish = lambda c, u, mid, rc, props: self.acks.__setitem__(mid, rc)
        self.c.on_subscribe = lambda c, u, mid, rcs, props: self.subacks.__setitem__(mid, list(rcs))
        self.c.on_disconnect = lambda c, u, flags, rc, props: self.disconnected.set()
        self.c.connect(HOST, port, keepalive=30)
        self.c.loop_start()
        assert wait_until(lambda: self.connack is not None, WAIT), f"no CONNACK over WebSocket on {port}"

    def _on_message(self, c, u, msg):
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def subscribe(self, topic, qos=1):
        _, mid = self.c.subscribe(topic, qos)
        assert wait_until(lambda: mid in self.subacks, WAIT), f"no SUBACK for {topic}"
        return self.subacks[mid]

    def publish(self, topic, payload, qos=1):
        """Publish and wait for the acknowledgement; return its reason code."""
        mid = self.c.publish(topic, payload, qos=qos).mid
        assert wait_until(lambda: mid in self.acks, WAIT), f"no ack for {topic}"
        return self.acks[mid]

    def received(self, topic):
        with self.lock:
            return [p for t, p in self.messages if t == topic]

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


@pytest.mark.parametrize("protocol", [paho.MQTTv311, paho.MQTTv5], ids=["3.1.1", "5"])
def test_websocket_on_wamp_port_and_own_listener(ordo_ws, clients, protocol):
    tcp = clients.mqtt(ordo_ws)
    tcp.subscribe("ws/up", qos=1)
    big = bytes(range(256)) * 1000  # 256 kB: many frames and TCP segments
    for name, port in [("wamp port", ordo_ws.wamp_port), ("mqtt_ws", ordo_ws.mqtt_ws_port)]:
        ws = WsClient(port, protocol)
        try:
            assert not ws.connack.is_failure, f"{name}: {ws.connack}"
            codes = ws.subscribe("ws/down", qos=1)
            assert [c.value for c in codes] == [1], f"{name}: {codes}"
            # WebSocket -> TCP.
            rc = ws.publish("ws/up", f"from {name}".encode())
            assert not rc.is_failure, f"{name}: {rc}"
            assert wait_until(lambda: any(m.payload == f"from {name}".encode() for m in tcp.messages), WAIT)
            # TCP -> WebSocket, large.
            assert tcp.wait_acked([tcp.publish("ws/down", big)], WAIT)
            assert wait_until(lambda: ws.received("ws/down"), WAIT), f"{name}: nothing received"
            assert ws.received("ws/down") == [big], f"{name}: payload changed"
        finally:
            ws.close()


def test_wamp_still_served_beside_mqtt(ordo_ws, clients):
    wamp = clients.wamp(ordo_ws)
    wamp.subscribe("ws.cross")
    ws = WsClient(ordo_ws.wamp_port)
    try:
        ws.publish("ws/cross", b'{"n": 1}')
        assert wamp.wait_events(1, WAIT), "WAMP subscriber got nothing from MQTT over WebSocket"
        assert wamp.events[0].args == [{"n": 1}]
    finally:
        ws.close()


@pytest.mark.parametrize("port_name", ["wamp_port", "mqtt_ws_port"])
def test_username_password_and_permissions(ordo_ws, port_name):
    port = getattr(ordo_ws, port_name)
    # Wrong password: CONNACK 0x86 (MQTT 5) / 4 (3.1.1, which paho reports as 0x86 too).
    for protocol in [paho.MQTTv5, paho.MQTTv311]:
        bad = WsClient(port, protocol, username="alice", password="wrong")
        try:
            assert bad.connack.is_failure and bad.connack.value == 0x86, bad.connack
        finally:
            bad.close()
    # Right password: allowed and forbidden publishes, subscriptions.
    alice = WsClient(port, paho.MQTTv5, username="alice", password="t0k")
    try:
        assert not alice.connack.is_failure, alice.connack
        codes = alice.subscribe("com/ro/#", qos=1) + alice.subscribe("org/#", qos=1)
        assert [c.value for c in codes] == [1, 0x87], codes
        assert not alice.publish("com/rw/x", b"ok").is_failure
        refused = alice.publish("com/ro/x", b"no")
        assert refused.value == 0x87, refused
    finally:
        alice.close()
    # 3.1.1 has no negative PUBACK: a forbidden QoS 1 publish closes the connection.
    alice3 = WsClient(port, paho.MQTTv311, username="alice", password="t0k")
    try:
        alice3.c.publish("org/x", b"no", qos=1)
        assert alice3.disconnected.wait(WAIT), "3.1.1 connection not closed after a forbidden publish"
    finally:
        alice3.c.loop_stop()


def test_tcp_uses_the_same_users(ordo_ws):
    c = MqttClient(ordo_ws.mqtt_port)
    c.client.username_pw_set("alice", "wrong")
    c.client.connect(HOST, ordo_ws.mqtt_port, keepalive=30)
    c.client.loop_start()
    try:
        assert c.connected.wait(WAIT), "no CONNACK"
        assert c.connect_rc.is_failure and c.connect_rc.value == 0x86, c.connect_rc  # 3.1.1 code 4
    finally:
        c.client.loop_stop()
