"""Subscription and registration meta events and salted WAMP-CRA, driven by autobahn-python.

The meta events are checked in the order a watcher receives them (the order of the log), with a
session that drops its transport without UNSUBSCRIBE / UNREGISTER / GOODBYE. Salted WAMP-CRA is
answered the way autobahn documents it: `auth.derive_key` on the CHALLENGE's salt, iterations and
keylen, then `auth.compute_wcs`.
"""

from __future__ import annotations

import pytest
from autobahn.wamp import auth
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions, RegisterOptions, SubscribeOptions

from harness import OrdoServer
from test_wamp_autobahn import _AuthSession, close, connect, connect_auth, run, until


async def watch(session, api: str, names: list[str]) -> list[tuple]:
    """Subscribe `session` to `wamp.<api>.<name>` for each name; return the list events land in."""
    seen: list[tuple] = []
    for name in names:
        await session.subscribe(lambda *args, name=name: seen.append((name, *args)), f"wamp.{api}.{name}")
    return seen


def drop(session) -> None:
    """Close the transport under a session without a WAMP goodbye."""
    session._transport.close()


def test_subscription_meta_events(ordo):
    async def go():
        watcher = await connect(ordo, "websocket", "cbor")
        seen = await watch(watcher, "subscription", ["on_create", "on_subscribe", "on_unsubscribe", "on_delete"])
        a = await connect(ordo, "rawsocket", "json")
        b = await connect(ordo, "websocket", "msgpack")
        sa = await a.subscribe(lambda *x: None, "meta.py.t")
        sb = await b.subscribe(lambda *x: None, "meta.py.t")
        sp = await b.subscribe(lambda *x: None, "meta.py", options=SubscribeOptions(match="prefix"))
        assert sa.id == sb.id
        await until(lambda: len(seen) == 5)
        (create, a_id, created), *rest = seen
        assert (create, a_id) == ("on_create", a.session_id)
        assert (created["id"], created["uri"], created["match"]) == (sa.id, "meta.py.t", "exact")
        assert created["created"].endswith("Z")
        assert rest[0] == ("on_subscribe", a.session_id, sa.id)
        assert rest[1] == ("on_subscribe", b.session_id, sa.id)
        assert rest[2][:2] == ("on_create", b.session_id) and rest[2][2]["match"] == "prefix"
        assert rest[3] == ("on_subscribe", b.session_id, sp.id)
        assert (await watcher.call("wamp.subscription.get", sa.id)) == created

        del seen[:]
        await sa.unsubscribe()
        await until(lambda: len(seen) == 1)
        assert seen == [("on_unsubscribe", a.session_id, sa.id)]
        gone = b.session_id
        drop(b)
        await until(lambda: len(seen) == 5)
        assert seen[1:] == [
            ("on_unsubscribe", gone, sa.id),
            ("on_delete", gone, sa.id),
            ("on_unsubscribe", gone, sp.id),
            ("on_delete", gone, sp.id),
        ]
        assert await watcher.call("wamp.subscription.lookup", "meta.py.t") is None
        await close(watcher, a)

    run(go())


def test_registration_meta_events(ordo):
    async def go():
        watcher = await connect(ordo, "rawsocket", "msgpack")
        seen = await watch(watcher, "registration", ["on_create", "on_register", "on_unregister", "on_delete"])
        c = await connect(ordo, "websocket", "json")
        d = await connect(ordo, "rawsocket", "cbor")
        shared = RegisterOptions(invoke="roundrobin")
        rc = await c.register(lambda: "c", "meta.py.proc", options=shared)
        rd = await d.register(lambda: "d", "meta.py.proc", options=shared)
        assert rc.id == rd.id
        await until(lambda: len(seen) == 3)
        (create, c_id, created), *rest = seen
        assert (create, c_id) == ("on_create", c.session_id)
        assert (created["id"], created["uri"], created["match"], created["invoke"]) == (
            rc.id,
            "meta.py.proc",
            "exact",
            "roundrobin",
        )
        assert rest == [("on_register", c.session_id, rc.id), ("on_register", d.session_id, rc.id)]

        del seen[:]
        await rc.unregister()
        gone = d.session_id
        drop(d)
        await until(lambda: len(seen) == 3)
        assert seen == [
            ("on_unregister", c.session_id, rc.id),
            ("on_unregister", gone, rc.id),
            ("on_delete", gone, rc.id),
        ]
        with pytest.raises(ApplicationError) as e:
            await watcher.call("meta.py.proc")
        assert e.value.error == "wamp.error.no_such_procedure"
        await close(watcher, c)

    run(go())


SALTED_CONFIG = """
allow_anonymous = false

[[users]]
authid = "carol"
role = "writer"
secret = "s4lty"
salt = "pepper"
iterations = 100
keylen = 16

[[users.permissions]]
realm = "realm1"
prefix = "com."
publish = true
"""


class _SaltedSession(_AuthSession):
    """Answers WAMP-CRA as autobahn documents it for salted secrets."""

    def onChallenge(self, challenge):
        self.challenge_extra = dict(challenge.extra)
        extra = challenge.extra
        key = self._secret
        if "salt" in extra:
            key = auth.derive_key(self._secret, extra["salt"], extra.get("iterations"), extra.get("keylen"))
        return auth.compute_wcs(key, extra["challenge"]).decode("ascii")


@pytest.fixture
def ordo_salted(ordo_binary, tmp_path):
    config = tmp_path / "ordo.toml"
    config.write_text(SALTED_CONFIG)

    class Configured(OrdoServer):
        def command(self):
            return super().command() + ["--config", str(config)]

    server = Configured(ordo_binary, tmp_path / "data", tmp_path)
    server.start()
    yield server
    server.kill9()


@pytest.mark.parametrize("transport, serializer", [("websocket", "json"), ("rawsocket", "msgpack")])
def test_salted_wampcra(ordo_salted, transport, serializer):
    async def go():
        s, details = await connect_auth(ordo_salted, transport, serializer, "carol", "wampcra", "s4lty", _SaltedSession)
        assert (details.authid, details.authrole, details.authmethod) == ("carol", "writer", "wampcra")
        assert (s.challenge_extra["salt"], s.challenge_extra["iterations"], s.challenge_extra["keylen"]) == (
            "pepper",
            100,
            16,
        )
        await s.publish("com.salted", 1, options=PublishOptions(acknowledge=True))
        await close(s)
        with pytest.raises(ApplicationError) as e:
            await connect_auth(ordo_salted, transport, serializer, "carol", "wampcra", "wrong", _SaltedSession)
        assert e.value.error == "wamp.error.authentication_failed"

    run(go())
