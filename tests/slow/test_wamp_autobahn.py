"""The WAMP Advanced profile, driven by autobahn-python (asyncio) against a real ordo-entry.

Every feature Ordo announces in WELCOME is exercised here, over WebSocket and RawSocket and
with the JSON, msgpack and CBOR serializers. Options autobahn has no keyword for
(`disclose_me`, `disclose_caller`) are added to the outgoing message by a transport hook.
"""

from __future__ import annotations

import asyncio
import socket

import pytest
import txaio

from autobahn.asyncio.rawsocket import WampRawSocketClientFactory
from autobahn.asyncio.wamp import ApplicationSession
from autobahn.asyncio.websocket import WampWebSocketClientFactory
from autobahn.wamp import auth
from autobahn.wamp import message as wamp_message
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.serializer import CBORSerializer, JsonSerializer, MsgPackSerializer
from autobahn.wamp.types import (
    CallOptions,
    ComponentConfig,
    PublishOptions,
    RegisterOptions,
    SubscribeOptions,
)

from harness import HOST, REALM, MqttClient, OrdoServer, _with_extra_options

SERIALIZERS = {"json": JsonSerializer, "msgpack": MsgPackSerializer, "cbor": CBORSerializer}
TRANSPORTS = ["websocket", "rawsocket"]


class _Session(ApplicationSession):
    def __init__(self, config, joined, authid):
        super().__init__(config)
        self._joined = joined
        self._authid = authid

    def onConnect(self):
        self.join(self.config.realm, authid=self._authid)

    def onJoin(self, details):
        if not self._joined.done():
            self._joined.set_result(details)

    def onDisconnect(self):
        if not self._joined.done():
            self._joined.set_exception(ConnectionError("transport closed before the session joined"))


async def connect(ordo, transport="websocket", serializer="json", authid=None) -> _Session:
    """Open a transport to `ordo` and join realm1; return the joined autobahn session."""
    loop = asyncio.get_running_loop()
    txaio.config.loop = loop
    joined = loop.create_future()
    session = _Session(ComponentConfig(realm=REALM), joined, authid)
    ser = SERIALIZERS[serializer]()
    if transport == "websocket":
        factory = WampWebSocketClientFactory(lambda: session, url=ordo.wamp_url, serializers=[ser])
        port = ordo.wamp_port
    else:
        factory = WampRawSocketClientFactory(lambda: session, serializer=ser)
        port = ordo.rawsocket_port
    await asyncio.wait_for(loop.create_connection(factory, HOST, port), 10)
    await asyncio.wait_for(joined, 10)
    return session


def extra_options(session, msg_type, extra: dict) -> None:
    """Add `extra` to the options of every outgoing message of `msg_type`."""
    send = session._transport.send

    def hooked(msg):
        if isinstance(msg, msg_type):
            _with_extra_options(msg, extra)
        return send(msg)

    session._transport.send = hooked


async def close(*sessions) -> None:
    for s in sessions:
        try:
            if s.is_attached():
                await asyncio.wait_for(s.leave(), 3)
        except Exception:
            pass
        if s._transport is not None:
            s._transport.close()


async def until(pred, timeout=10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def run(coro, timeout=60):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


# --------------------------------------------------------------------------- transports


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("serializer", list(SERIALIZERS))
def test_pubsub_over_every_transport_and_serializer(ordo, transport, serializer):
    async def go():
        sub = await connect(ordo, transport, serializer)
        pub = await connect(ordo, transport, serializer)
        got = []
        await sub.subscribe(lambda *a, **kw: got.append((a, kw)), "t.basic")
        p = await pub.publish("t.basic", "x", b"\x00\xff", 2.5, k={"n": [1, 2]}, options=PublishOptions(acknowledge=True))
        await until(lambda: got)
        assert got == [(("x", b"\x00\xff", 2.5), {"k": {"n": [1, 2]}})]
        assert p.id > 0
        # RPC too, across the two sessions.
        await sub.register(lambda a, b: a + b, "t.add")
        assert await pub.call("t.add", 2, 3) == 5
        await close(sub, pub)

    run(go())


@pytest.mark.parametrize("request_bytes, reply", [
    (b"\x7f\xf4\x00\x00", b"\x7f\x10\x00\x00"),  # UBJSON: serializer unsupported
    (b"\x7f\xf1\x00\x01", b"\x7f\x30\x00\x00"),  # reserved octets set
    (b"\x7f\x03\x00\x00", b"\x7f\xb3\x00\x00"),  # CBOR accepted, router announces 2^20
])
def test_rawsocket_handshake_replies(ordo, request_bytes, reply):
    with socket.create_connection((HOST, ordo.rawsocket_port), timeout=5) as s:
        s.sendall(request_bytes)
        got = b""
        while len(got) < 4:
            chunk = s.recv(4 - len(got))
            if not chunk:
                break
            got += chunk
        assert got == reply


def test_welcome_announces_the_advanced_features(ordo):
    async def go():
        s = await connect(ordo, "rawsocket", "cbor")
        broker = s._router_roles["broker"]
        dealer = s._router_roles["dealer"]
        for f in ("publisher_identification", "subscriber_blackwhite_listing", "event_retention",
                  "event_history", "session_meta_api", "subscription_meta_api", "pattern_based_subscription"):
            assert getattr(broker, f), f
        for f in ("progressive_call_results", "call_canceling", "call_timeout", "caller_identification",
                  "shared_registration", "pattern_based_registration", "registration_meta_api"):
            assert getattr(dealer, f), f
        await close(s)

    run(go())


# --------------------------------------------------------------------------- broker


def test_publisher_identification_and_subscriber_lists(ordo):
    async def go():
        subs = {name: await connect(ordo, "websocket", "msgpack", authid=name) for name in ("alice", "bob", "carol")}
        got = {name: [] for name in subs}
        for name, s in subs.items():
            await s.subscribe(lambda *a, details=None, name=name: got[name].append((a, details)),
                              "t.bw", options=SubscribeOptions(details=True))
        pub = await connect(ordo, "rawsocket", "json", authid="publisher")
        extra_options(pub, wamp_message.Publish, {"disclose_me": True})
        await pub.publish("t.bw", "disclosed", options=PublishOptions(acknowledge=True))
        await until(lambda: all(got.values()))
        for name in subs:
            args, details = got[name].pop()
            assert args == ("disclosed",)
            assert details.publisher == pub.session_id
            assert details.publisher_authid == "publisher"
        bob = subs["bob"].session_id
        cases = [
            (PublishOptions(acknowledge=True, exclude=[bob]), {"alice", "carol"}),
            (PublishOptions(acknowledge=True, eligible=[bob]), {"bob"}),
            (PublishOptions(acknowledge=True, exclude_authid=["carol"]), {"alice", "bob"}),
            (PublishOptions(acknowledge=True, eligible_authid=["alice", "carol"]), {"alice", "carol"}),
        ]
        for i, (options, want) in enumerate(cases):
            await pub.publish("t.bw", i, options=options)
            await until(lambda: all(got[n] for n in want))
            await asyncio.sleep(0.2)
            assert {n for n in subs if got[n]} == want, (i, got)
            for n in subs:
                got[n].clear()
        # A wrong option type is answered with invalid_argument.
        extra_options(pub, wamp_message.Publish, {"eligible": "not-a-list"})
        with pytest.raises(ApplicationError) as e:
            await pub.publish("t.bw", options=PublishOptions(acknowledge=True))
        assert e.value.error == "wamp.error.invalid_argument"
        await close(pub, *subs.values())

    run(go())


def test_event_retention_crosses_to_mqtt_and_back(ordo):
    mqtt = MqttClient(ordo.mqtt_port, client_id="ret-mqtt").connect()
    try:
        mid = mqtt.publish("ret/from-mqtt", b'{"m": 1}', qos=1, retain=True)
        assert mqtt.wait_acked([mid], 10)

        async def go():
            pub = await connect(ordo, "rawsocket", "cbor")
            await pub.publish("ret.from-wamp", "kept", options=PublishOptions(acknowledge=True, retain=True))
            sub = await connect(ordo, "websocket", "json")
            got = []
            await sub.subscribe(lambda *a, details=None: got.append((a, details.topic, details.retained)), "ret",
                                options=SubscribeOptions(match="prefix", get_retained=True, details=True))
            await until(lambda: len(got) == 2)
            by_topic = {topic: (args, retained) for args, topic, retained in got}
            assert by_topic == {"ret.from-wamp": (("kept",), True), "ret.from-mqtt": (({"m": 1},), True)}
            await close(pub, sub)

        run(go())
        later = MqttClient(ordo.mqtt_port, client_id="ret-later").connect()
        try:
            later.subscribe("ret/from-wamp", qos=1)
            assert later.wait_messages(1, 10)
            m = later.messages[0]
            assert (m.payload, m.retain) == (b'"kept"', True)
        finally:
            later.close()
    finally:
        mqtt.close()


def test_event_history(ordo):
    async def go():
        s = await connect(ordo, "rawsocket", "msgpack")
        seen = []
        sub = await s.subscribe(lambda *a: seen.append(a), "hist.t")
        ids = [(await s.publish("hist.t", i, options=PublishOptions(acknowledge=True, exclude_me=False))).id for i in range(6)]
        await until(lambda: len(seen) == 6)
        events = await s.call("wamp.subscription.get_events", sub.id, 4)
        assert [e["publication"] for e in events] == ids[2:]
        assert [e["args"] for e in events] == [[i] for i in range(2, 6)]
        with pytest.raises(ApplicationError) as e:
            await s.call("wamp.subscription.get_events", 987654321)
        assert e.value.error == "wamp.error.no_such_subscription"
        await close(s)

    run(go())


def test_session_meta_api(ordo):
    async def go():
        watcher = await connect(ordo, "websocket", "cbor")
        joins, leaves = [], []
        await watcher.subscribe(lambda info: joins.append(info), "wamp.session.on_join")
        await watcher.subscribe(lambda sid, authid, authrole: leaves.append(sid), "wamp.session.on_leave")
        other = await connect(ordo, "rawsocket", "json", authid="visitor")
        await until(lambda: any(j["session"] == other.session_id for j in joins))
        assert await watcher.call("wamp.session.count") == 2
        assert sorted(await watcher.call("wamp.session.list")) == sorted([watcher.session_id, other.session_id])
        info = await watcher.call("wamp.session.get", other.session_id)
        assert (info["authid"], info["transport"]["type"]) == ("visitor", "rawsocket")
        with pytest.raises(ApplicationError) as e:
            await watcher.call("wamp.session.get", 1)
        assert e.value.error == "wamp.error.no_such_session"
        gone = other.session_id
        await close(other)
        await until(lambda: gone in leaves)
        assert await watcher.call("wamp.session.count") == 1
        await close(watcher)

    run(go())


def test_subscription_meta_api(ordo):
    async def go():
        a = await connect(ordo, "websocket", "json")
        b = await connect(ordo, "rawsocket", "cbor")
        s1 = await a.subscribe(lambda *x: None, "meta.t")
        s2 = await b.subscribe(lambda *x: None, "meta.t")
        p = await b.subscribe(lambda *x: None, "meta", options=SubscribeOptions(match="prefix"))
        assert s1.id == s2.id
        assert await a.call("wamp.subscription.lookup", "meta.t") == s1.id
        assert await a.call("wamp.subscription.lookup", "meta", {"match": "prefix"}) == p.id
        assert sorted(await a.call("wamp.subscription.match", "meta.t")) == sorted([s1.id, p.id])
        assert sorted(await a.call("wamp.subscription.list_subscribers", s1.id)) == sorted([a.session_id, b.session_id])
        assert await a.call("wamp.subscription.count_subscribers", s1.id) == 2
        got = await a.call("wamp.subscription.get", p.id)
        assert (got["uri"], got["match"]) == ("meta", "prefix")
        listing = await a.call("wamp.subscription.list")
        assert s1.id in listing["exact"] and p.id in listing["prefix"]
        await close(a, b)

    run(go())


# --------------------------------------------------------------------------- dealer


def test_progressive_call_results(ordo):
    async def go():
        callee = await connect(ordo, "rawsocket", "cbor")
        caller = await connect(ordo, "websocket", "msgpack")

        async def count(n, details=None):
            for i in range(n):
                details.progress(i)
            return "done"

        await callee.register(count, "rpc.count", options=RegisterOptions(details_arg="details"))
        progress = []
        result = await caller.call("rpc.count", 3, options=CallOptions(on_progress=progress.append))
        assert (progress, result) == ([0, 1, 2], "done")
        await close(callee, caller)

    run(go())


@pytest.mark.parametrize("mode", ["skip", "kill", "killnowait"])
def test_call_cancelling(ordo, mode):
    async def go():
        callee = await connect(ordo, "websocket", "json")
        caller = await connect(ordo, "rawsocket", "json")
        started, interrupted = asyncio.Event(), asyncio.Event()

        async def slow():
            started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                interrupted.set()
                raise
            return "finished"

        await callee.register(slow, "rpc.slow")
        send = caller._transport.send

        def with_mode(msg):
            if isinstance(msg, wamp_message.Cancel):
                msg._mode = mode  # autobahn's asyncio canceller sends no mode
            return send(msg)

        caller._transport.send = with_mode
        call = asyncio.ensure_future(caller.call("rpc.slow"))
        await asyncio.wait_for(started.wait(), 10)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        if mode == "skip":
            await asyncio.sleep(0.3)
            assert not interrupted.is_set(), "skip must not interrupt the callee"
        else:
            await asyncio.wait_for(interrupted.wait(), 10)
        # The session is still usable afterwards.
        await callee.register(lambda: "ok", "rpc.after")
        assert await caller.call("rpc.after") == "ok"
        await close(callee, caller)

    run(go())


def test_call_timeout(ordo):
    async def go():
        callee = await connect(ordo, "websocket", "cbor")
        caller = await connect(ordo, "websocket", "cbor")
        interrupted = asyncio.Event()

        async def slow():
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                interrupted.set()
                raise

        await callee.register(slow, "rpc.timeout")
        with pytest.raises(ApplicationError) as e:
            await caller.call("rpc.timeout", options=CallOptions(timeout=200))
        assert e.value.error == "wamp.error.timeout"
        await asyncio.wait_for(interrupted.wait(), 10)
        await close(callee, caller)

    run(go())


@pytest.mark.parametrize("invoke", ["roundrobin", "random", "first", "last"])
def test_shared_registrations(ordo, invoke):
    async def go():
        callees = [await connect(ordo, "rawsocket", "msgpack") for _ in range(3)]
        for i, c in enumerate(callees):
            await c.register(lambda i=i: i, "rpc.shared", options=RegisterOptions(invoke=invoke))
        caller = await connect(ordo, "websocket", "json")
        got = [await caller.call("rpc.shared") for _ in range(6)]
        want = {"roundrobin": [0, 1, 2, 0, 1, 2], "first": [0] * 6, "last": [2] * 6}
        if invoke in want:
            assert got == want[invoke]
        else:
            assert set(got) <= {0, 1, 2}
        registration = await caller.call("wamp.registration.lookup", "rpc.shared")
        assert await caller.call("wamp.registration.count_callees", registration) == 3
        assert sorted(await caller.call("wamp.registration.list_callees", registration)) == sorted(
            c.session_id for c in callees)
        assert (await caller.call("wamp.registration.get", registration))["invoke"] == invoke
        # A callee with another policy, or a single registration, is refused.
        other = await connect(ordo, "websocket", "json")
        with pytest.raises(ApplicationError) as e:
            await other.register(lambda: None, "rpc.shared", options=RegisterOptions(invoke="single"))
        assert e.value.error == "wamp.error.procedure_already_exists"
        await close(caller, other, *callees)

    run(go())


def test_pattern_based_registration_and_caller_identification(ordo):
    async def go():
        callee = await connect(ordo, "websocket", "msgpack", authid="callee")
        caller = await connect(ordo, "rawsocket", "cbor", authid="caller-1")

        def which(tag):
            return lambda details=None: (tag, details.procedure, details.caller, details.caller_authid)

        await callee.register(which("exact"), "pat.a.b", options=RegisterOptions(details_arg="details"))
        await callee.register(which("prefix"), "pat.a", options=RegisterOptions(match="prefix", details_arg="details"))
        await callee.register(which("wildcard"), "pat..z", options=RegisterOptions(match="wildcard", details_arg="details"))
        assert (await caller.call("pat.a.b"))[0] == "exact"
        tag, procedure, who, _ = await caller.call("pat.a.c")
        assert (tag, procedure, who) == ("prefix", "pat.a.c", None)
        assert (await caller.call("pat.q.z"))[:2] == ["wildcard", "pat.q.z"]
        with pytest.raises(ApplicationError) as e:
            await caller.call("nothing.here")
        assert e.value.error == "wamp.error.no_such_procedure"
        assert await caller.call("wamp.registration.match", "pat.q.z") == await caller.call(
            "wamp.registration.lookup", "pat..z", {"match": "wildcard"})
        extra_options(caller, wamp_message.Call, {"disclose_me": True})
        _, _, who, authid = await caller.call("pat.a.x")
        assert (who, authid) == (caller.session_id, "caller-1")
        await close(callee, caller)

    run(go())


def test_reserved_namespace_and_bad_options(ordo):
    async def go():
        s = await connect(ordo, "rawsocket", "json")
        with pytest.raises(ApplicationError) as e:
            await s.register(lambda: None, "wamp.mine")
        assert e.value.error == "wamp.error.invalid_uri"
        extra_options(s, wamp_message.Register, {"invoke": 7})
        with pytest.raises(ApplicationError) as e:
            await s.register(lambda: None, "rpc.bad")
        assert e.value.error == "wamp.error.invalid_argument"
        with pytest.raises(ApplicationError) as e:
            await s.call("wamp.session.get", "not-an-id")
        assert e.value.error == "wamp.error.invalid_argument"
        await close(s)

    run(go())


# --------------------------------------------------------------------------- authentication


AUTH_CONFIG = """
allow_anonymous = false

[[users]]
authid = "alice"
role = "writer"
ticket = "t0k"
secret = "s3cret"

[[users.permissions]]
realm = "realm1"
prefix = "com."
publish = true
subscribe = true
call = true
register = true

[[users.permissions]]
realm = "realm1"
prefix = "com.ro."
subscribe = true
"""


class _AuthSession(_Session):
    def __init__(self, config, joined, authid, method, secret):
        super().__init__(config, joined, authid)
        self._method = method
        self._secret = secret

    def onConnect(self):
        self.join(self.config.realm, authmethods=[self._method], authid=self._authid)

    def onChallenge(self, challenge):
        if challenge.method == "ticket":
            return self._secret
        return auth.compute_wcs(self._secret, challenge.extra["challenge"])

    def onLeave(self, details):
        if not self._joined.done():
            self._joined.set_exception(ApplicationError(details.reason))
        super().onLeave(details)


async def connect_auth(server, transport, serializer, authid, method, secret, session_class=None):
    loop = asyncio.get_running_loop()
    txaio.config.loop = loop
    joined = loop.create_future()
    session = (session_class or _AuthSession)(ComponentConfig(realm=REALM), joined, authid, method, secret)
    ser = SERIALIZERS[serializer]()
    if transport == "websocket":
        factory = WampWebSocketClientFactory(lambda: session, url=server.wamp_url, serializers=[ser])
        port = server.wamp_port
    else:
        factory = WampRawSocketClientFactory(lambda: session, serializer=ser)
        port = server.rawsocket_port
    await asyncio.wait_for(loop.create_connection(factory, HOST, port), 10)
    details = await asyncio.wait_for(joined, 10)
    return session, details


@pytest.fixture
def ordo_auth(ordo_binary, tmp_path):
    config = tmp_path / "ordo.toml"
    config.write_text(AUTH_CONFIG)

    class Configured(OrdoServer):
        def command(self):
            return super().command() + ["--config", str(config)]

    server = Configured(ordo_binary, tmp_path / "data", tmp_path)
    server.start()
    yield server
    server.kill9()


@pytest.mark.parametrize("transport, serializer", [("websocket", "json"), ("rawsocket", "cbor")])
@pytest.mark.parametrize("method, secret", [("ticket", "t0k"), ("wampcra", "s3cret")])
def test_ticket_and_wampcra_with_permissions(ordo_auth, transport, serializer, method, secret):
    async def go():
        s, details = await connect_auth(ordo_auth, transport, serializer, "alice", method, secret)
        assert (details.authid, details.authrole, details.authmethod) == ("alice", "writer", method)
        got = []
        await s.subscribe(lambda x: got.append(x), "com.ro.feed")
        await s.publish("com.rw.t", 1, options=PublishOptions(acknowledge=True))
        with pytest.raises(ApplicationError) as e:
            await s.publish("com.ro.feed", 1, options=PublishOptions(acknowledge=True))
        assert e.value.error == "wamp.error.not_authorized"
        with pytest.raises(ApplicationError) as e:
            await s.register(lambda: None, "org.elsewhere")
        assert e.value.error == "wamp.error.not_authorized"
        await close(s)
        with pytest.raises(ApplicationError) as e:
            await connect_auth(ordo_auth, transport, serializer, "alice", method, "wrong")
        assert e.value.error == "wamp.error.authentication_failed"
        # Anonymous is switched off in this config.
        with pytest.raises(Exception):
            await connect(ordo_auth, transport, serializer)

    run(go())
