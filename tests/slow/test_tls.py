"""TLS on the client-facing listeners with the clients people use: paho-mqtt with
`tls_set(ca_certs=...)` over `--mqtt-tls` and over `wss://` (`--mqtt-ws-tls`, `--wamp-tls`), and
autobahn-python over `wss://` for WAMP. The certificate is `ordo-entry dev-cert`'s, trusted as the
clients' CA file. Bytes that are not a TLS handshake close only their own connection.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading

import paho.mqtt.client as paho
import pytest

from harness import HOST, OrdoServer, WampClient, free_port, wait_until

WAIT = 10


class TlsOrdo(OrdoServer):
    """ordo-entry with the three TLS listeners and a dev certificate."""

    def __init__(self, binary, data_dir, log_dir, cert_dir):
        super().__init__(binary, data_dir, log_dir)
        taken = [self.mqtt_port, self.wamp_port, self.rawsocket_port]
        self.mqtt_tls_port = free_port(avoid=taken)
        self.wamp_tls_port = free_port(avoid=taken + [self.mqtt_tls_port])
        self.mqtt_ws_tls_port = free_port(avoid=taken + [self.mqtt_tls_port, self.wamp_tls_port])
        self.tcp_ports += [self.mqtt_tls_port, self.wamp_tls_port, self.mqtt_ws_tls_port]
        self.cert = cert_dir / "cert.pem"
        self.key = cert_dir / "key.pem"

    def command(self):
        return super().command() + [
            "--mqtt-tls", f"{HOST}:{self.mqtt_tls_port}",
            "--wamp-tls", f"{HOST}:{self.wamp_tls_port}",
            "--mqtt-ws-tls", f"{HOST}:{self.mqtt_ws_tls_port}",
            "--tls-cert", str(self.cert),
            "--tls-key", str(self.key),
        ]  # fmt: skip


@pytest.fixture
def ordo_tls(ordo_binary, tmp_path):
    certs = tmp_path / "certs"
    subprocess.run([str(ordo_binary), "dev-cert", "--out", str(certs)], check=True, timeout=30, capture_output=True)
    server = TlsOrdo(ordo_binary, tmp_path / "data", tmp_path, certs)
    server.start()
    yield server
    server.kill9()


class TlsClient:
    """A paho-mqtt client over TLS (`transport="tcp"`) or wss (`"websockets"`), trusting `ca`."""

    def __init__(self, port, ca, transport="tcp", protocol=paho.MQTTv311, client_id=""):
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, transport=transport)
        if transport == "websockets":
            self.c.ws_set_options(path="/mqtt")
        self.c.tls_set(ca_certs=str(ca))
        self.lock = threading.Lock()
        self.messages: list[tuple[str, bytes]] = []
        self.acks: dict[int, object] = {}
        self.subacks: dict[int, list] = {}
        self.connack = None
        self.c.on_connect = lambda c, u, flags, rc, props: setattr(self, "connack", rc)
        self.c.on_message = self._on_message
        self.c.on_publish = lambda c, u, mid, rc, props: self.acks.__setitem__(mid, rc)
        self.c.on_subscribe = lambda c, u, mid, rcs, props: self.subacks.__setitem__(mid, list(rcs))
        # "localhost": the name the dev certificate is for (it also holds 127.0.0.1).
        self.c.connect("localhost", port, keepalive=30)
        self.c.loop_start()
        assert wait_until(lambda: self.connack is not None, WAIT), f"no CONNACK over TLS on {port}"
        assert not self.connack.is_failure, self.connack

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


def exchange(a: TlsClient, tcp, name: str) -> None:
    """`a` publishes to the plain TCP client and receives a 256 kB publish from it."""
    a.subscribe("tls/down", qos=1)
    rc = a.publish("tls/up", f"from {name}".encode())
    assert not rc.is_failure, f"{name}: {rc}"
    assert wait_until(lambda: any(m.payload == f"from {name}".encode() for m in tcp.messages), WAIT), name
    big = bytes(range(256)) * 1000  # many TLS records
    assert tcp.wait_acked([tcp.publish("tls/down", big)], WAIT)
    assert wait_until(lambda: a.received("tls/down"), WAIT), f"{name}: nothing received"
    assert a.received("tls/down") == [big], f"{name}: payload changed"


@pytest.mark.parametrize("protocol", [paho.MQTTv311, paho.MQTTv5], ids=["3.1.1", "5"])
def test_paho_over_tls(ordo_tls, clients, protocol):
    tcp = clients.mqtt(ordo_tls)
    tcp.subscribe("tls/up", qos=1)
    client = TlsClient(ordo_tls.mqtt_tls_port, ordo_tls.cert, protocol=protocol)
    try:
        exchange(client, tcp, "mqtt_tls")
    finally:
        client.close()


def test_paho_over_wss_on_both_ports(ordo_tls, clients):
    tcp = clients.mqtt(ordo_tls)
    tcp.subscribe("tls/up", qos=1)
    for name, port in [("mqtt_ws_tls", ordo_tls.mqtt_ws_tls_port), ("wamp_tls", ordo_tls.wamp_tls_port)]:
        client = TlsClient(port, ordo_tls.cert, transport="websockets", protocol=paho.MQTTv5)
        try:
            exchange(client, tcp, name)
        finally:
            client.close()
        tcp.messages.clear()


def test_autobahn_over_wss(ordo_tls, aio):
    ctx = ssl.create_default_context(cafile=str(ordo_tls.cert))
    url = f"wss://localhost:{ordo_tls.wamp_tls_port}/"
    sub = WampClient(aio, url, serializer="json", ssl=ctx).connect()
    pub = WampClient(aio, url, serializer="msgpack", ssl=ctx).connect()
    mqtt = TlsClient(ordo_tls.mqtt_tls_port, ordo_tls.cert)
    try:
        sub.subscribe("wss.t")
        mqtt.subscribe("wss/t")
        ids = [pub.publish("wss.t", {"seq": i}) for i in range(20)]
        assert ids == sorted(ids) and len(set(ids)) == 20, ids
        assert sub.wait_events(20, WAIT), f"got {len(sub.events)} events over wss"
        assert [e.publication for e in sub.events] == ids
        assert [e.args for e in sub.events] == [[{"seq": i}] for i in range(20)]
        assert wait_until(lambda: len(mqtt.received("wss/t")) == 20, WAIT), "MQTT over TLS got too little"
    finally:
        mqtt.close()
        for c in (sub, pub):
            c.close()


def client_hello() -> bytes:
    """The first flight of a real TLS client (Python's ssl), without a socket."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def closed_by_server(sock: socket.socket) -> bytes:
    """Read until the server closes (an alert may come first); fail if it stays open."""
    sock.settimeout(WAIT)
    got = b""
    try:
        while chunk := sock.recv(4096):
            got += chunk
    except ConnectionResetError:
        pass
    except socket.timeout:
        pytest.fail(f"server kept the connection open; got {got!r}")
    return got


def test_bad_bytes_close_only_their_connection(ordo_tls):
    good = TlsClient(ordo_tls.mqtt_tls_port, ordo_tls.cert, client_id="good")
    try:
        good.subscribe("bad/t")
        # Plain MQTT 3.1.1 CONNECT (client id "p") to the TLS port: no CONNACK (0x20), a close.
        connect = bytes([0x10, 13, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 30, 0, 1]) + b"p"
        with socket.create_connection((HOST, ordo_tls.mqtt_tls_port), timeout=WAIT) as s:
            s.sendall(connect)
            reply = closed_by_server(s)
            assert not reply.startswith(b"\x20"), reply
            assert reply[:1] in (b"", b"\x15"), f"expected a TLS alert or nothing: {reply!r}"
        # Half a ClientHello, held open while another TLS client connects and works.
        hello = client_hello()
        with socket.create_connection((HOST, ordo_tls.mqtt_tls_port), timeout=WAIT) as stalled:
            stalled.sendall(hello[: len(hello) // 2])
            late = TlsClient(ordo_tls.mqtt_tls_port, ordo_tls.cert, client_id="late")
            try:
                assert not late.publish("bad/t", b"past a stalled handshake").is_failure
                assert wait_until(lambda: good.received("bad/t") == [b"past a stalled handshake"], WAIT)
            finally:
                late.close()
            # Then the truncated hello ends: the server closes that connection.
            stalled.shutdown(socket.SHUT_WR)
            closed_by_server(stalled)
        # Garbage after a TLS record header, on each TLS port.
        for port in (ordo_tls.mqtt_tls_port, ordo_tls.wamp_tls_port, ordo_tls.mqtt_ws_tls_port):
            with socket.create_connection((HOST, port), timeout=WAIT) as s:
                s.sendall(b"\x16\x03\x01\xff\xff" + b"\xa5" * 4096)
                closed_by_server(s)
        # The first client never noticed.
        assert not good.publish("bad/t", b"still here").is_failure
        assert wait_until(lambda: good.received("bad/t")[-1:] == [b"still here"], WAIT)
    finally:
        good.close()
    assert ordo_tls.alive()
    assert "tls handshake failed" in ordo_tls.log_text()


def test_tls_listener_without_certificate_refuses_to_start(ordo_binary, tmp_path):
    port = free_port()
    run = subprocess.run(
        [str(ordo_binary), "--standalone", "--mqtt-tls", f"{HOST}:{port}", "--data-dir", str(tmp_path / "d"),
         "--mqtt", f"{HOST}:0", "--wamp", f"{HOST}:0", "--wamp-rawsocket", f"{HOST}:0"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert run.returncode != 0
    assert "mqtt_tls needs tls_cert and tls_key" in run.stderr + run.stdout
