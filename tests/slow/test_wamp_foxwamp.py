"""fox-wamp's key-value publish options driven by autobahn-python: a resource lock built on
`when: null` + `watch` + `will: null` (fox-wamp's democli/resource-lock.js), against a real
ordo-entry.

autobahn's PublishOptions has no keywords for these options, so a transport hook adds them to the
lock requests (PUBLISH with a payload on the lock topic); the release is a plain retained PUBLISH
with no payload.
"""

from __future__ import annotations

import asyncio

from autobahn.wamp import message as wamp_message
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions

from harness import _with_extra_options
from test_wamp_autobahn import close, connect, run

LOCK = "demo.foxlock"
LOCK_OPTIONS = {"when": None, "watch": True, "will": None}


def lock_requests_ask_when_watch_will(session) -> None:
    send = session._transport.send

    def hooked(msg):
        if isinstance(msg, wamp_message.Publish) and msg.topic == LOCK and msg.args:
            _with_extra_options(msg, LOCK_OPTIONS)
        return send(msg)

    session._transport.send = hooked


async def locker(ordo):
    s = await connect(ordo, "websocket", "json")
    lock_requests_ask_when_watch_will(s)
    return s


async def acquire(s, name):
    return await s.publish(LOCK, {"owner": name}, options=PublishOptions(acknowledge=True, retain=True))


async def release(s):
    return await s.publish(LOCK, options=PublishOptions(acknowledge=True, retain=True))


async def held_with_a_waiter(holder_at, waiter_at, settle=0.5):
    """A lock holder on server `holder_at` and a waiter on `waiter_at` whose request is still
    parked after `settle` seconds; return both sessions and the waiter's pending acquire."""
    holder = await locker(holder_at)
    waiter = await locker(waiter_at)
    await acquire(holder, "holder")
    waiting = asyncio.ensure_future(acquire(waiter, "waiter"))
    await asyncio.sleep(settle)
    assert not waiting.done(), "the lock was granted twice"
    return holder, waiter, waiting


def test_lock_on_when_watch_is_exclusive_and_fair(ordo):
    async def go():
        names = ["a", "b", "c"]
        sessions = {n: await locker(ordo) for n in names}
        holding: set[str] = set()
        order: list[str] = []
        overlaps: list[set[str]] = []

        async def work(name, start_after):
            await asyncio.sleep(start_after)
            pub = await acquire(sessions[name], name)
            holding.add(name)
            order.append(name)
            if len(holding) > 1:
                overlaps.append(set(holding))
            await asyncio.sleep(0.3)
            holding.discard(name)
            await release(sessions[name])
            return pub.id

        # Requests 0.1 s apart: the waiters are served in the order they asked.
        ids = await asyncio.gather(*(work(n, 0.1 * i) for i, n in enumerate(names)))
        assert overlaps == []
        assert order == names
        assert ids == sorted(ids)
        await close(*sessions.values())

    run(go())


def test_a_refused_compare_and_set_is_an_error(ordo):
    async def go():
        a = await connect(ordo, "rawsocket", "msgpack")
        b = await connect(ordo, "websocket", "cbor")
        for s in (a, b):
            send = s._transport.send

            def hooked(msg, send=send):
                if isinstance(msg, wamp_message.Publish) and msg.topic == "demo.cas":
                    _with_extra_options(msg, {"when": None})
                return send(msg)

            s._transport.send = hooked
        await a.publish("demo.cas", "mine", options=PublishOptions(acknowledge=True, retain=True))
        try:
            await b.publish("demo.cas", "mine too", options=PublishOptions(acknowledge=True, retain=True))
        except ApplicationError as e:
            assert e.error == "wamp.error.condition_failed"
        else:
            raise AssertionError("the second `when: null` publish was accepted")
        await close(a, b)

    run(go())


def test_a_holder_that_dies_hands_the_lock_on_through_its_will(ordo):
    async def go():
        holder, waiter, waiting = await held_with_a_waiter(ordo, ordo)
        holder._transport.close()  # no GOODBYE
        pub = await asyncio.wait_for(waiting, 10)
        assert pub.id > 0
        await close(waiter)

    run(go())


def test_merged_values_and_a_dead_nodes_lock_survive_kill9(ordo):
    """After kill -9 the node rebuilds the conditional state from the log: the merged retained
    value is whole, and the lock held by a session of the killed run is handed on by its will
    (the restarted node ends the sessions it lost)."""
    from autobahn.wamp.types import SubscribeOptions

    async def before():
        s = await locker(ordo)
        opts = PublishOptions(acknowledge=True, retain=True)
        await s.publish("demo.merge", {"a": 1, "b": {"c": 2}}, options=opts)
        await s.publish("demo.merge", {"b": {"d": 3}}, options=opts)
        await acquire(s, "doomed")

    async def after():
        seen = asyncio.get_running_loop().create_future()
        s = await connect(ordo, "websocket", "json")
        await s.subscribe(lambda v, **_: seen.done() or seen.set_result(v), "demo.merge",
                          options=SubscribeOptions(get_retained=True))
        value = await asyncio.wait_for(seen, 10)
        assert value == {"a": 1, "b": {"c": 2, "d": 3}}, f"retained after restart: {value}"
        waiter = await locker(ordo)
        pub = await asyncio.wait_for(acquire(waiter, "next"), 10)
        assert pub.id > 0
        await close(s, waiter)

    run(before())
    ordo.kill9()
    ordo.start()
    run(after())
