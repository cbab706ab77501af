"""Wills of an entry that never comes back: once the operator abandons it (`ordo-sync abandon`),
one surviving entry adopts its wills and publishes them (docs/mqtt.md, "Wills of an abandoned
entry").

Entry 1 dies holding MQTT clients with wills (one without delay, one with a 2 s delay, one whose
session already ended and waits out its will delay in the session record, one that comes back on
entry 2) and a WAMP session holding a fox-wamp lock (`when: null` + `watch` + `will: null`) that a
session on entry 2 waits for. Nothing is published while entry 1 may still come back; after the
abandon, exactly one entry adopts, the three due wills arrive once each (the delayed one after
the other), the stale one never, and the lock is handed on through the dead holder's will.
"""

from __future__ import annotations

import asyncio
import time

from harness import MqttClient, wait_until
from test_crash_wills import WILLS, forget, payloads, with_will
from test_session_restart import connect_with_delayed_will, drop
from test_wamp_foxwamp import held_with_a_waiter
from test_wamp_autobahn import close, run

ADOPTED = "adopting the wills of an abandoned entry"


def test_an_abandoned_entrys_wills_are_published_by_one_other_entry(cluster):
    dead, other, third = cluster.entry
    watcher = MqttClient(third.mqtt_port).connect()
    watcher.subscribe(WILLS, qos=1)
    lost = with_will(dead.mqtt_port, "abandoned-lost", b"lost")
    moved = with_will(dead.mqtt_port, "abandoned-moved", b"moved-stale")
    delayed = connect_with_delayed_will(dead.mqtt_port, "abandoned-delayed", WILLS, b"delayed", 2)
    dropped = connect_with_delayed_will(dead.mqtt_port, "abandoned-dropped", WILLS, b"dropped", 4)
    drop(dropped)  # its will now waits in its session record, owned by entry 1

    async def go():
        _, waiter, waiting = await held_with_a_waiter(dead, other, settle=1.0)

        dead.kill9()
        for c in (lost, moved):
            forget(c)
        delayed.close()
        # back on entry 2 without a will: its will on entry 1 is stale
        again = await asyncio.to_thread(lambda: MqttClient(other.mqtt_port, client_id="abandoned-moved").connect())
        await asyncio.sleep(5.0)  # past every will delay: nothing is due while entry 1 may return
        assert not waiting.done(), "the dead entry's lock was handed on before it was abandoned"
        assert watcher.messages == [], f"a will was published before the abandon: {payloads(watcher)}"

        output = await asyncio.to_thread(cluster.abandon, 1)
        pub = await asyncio.wait_for(waiting, 30)
        assert pub.id > 0, output
        await close(waiter)
        return again

    again = run(go(), timeout=120)
    assert watcher.wait_messages(3, 30), f"wills of the abandoned entry missing: {payloads(watcher)}"
    watcher.wait_messages(4, 4.0)  # a duplicate or the stale will would show up by now
    assert payloads(watcher) == [b"delayed", b"dropped", b"lost"], payloads(watcher)
    arrived = [m.payload for m in watcher.messages]
    assert arrived.index(b"lost") < arrived.index(b"delayed"), f"the will delay was not honoured: {arrived}"

    adopters = [e.name for e in (other, third) if ADOPTED in e.log_text()]
    assert len(adopters) == 1, f"expected one adopting entry, got {adopters}"
    for c in (again, watcher):
        c.close()


def test_an_adopter_killed_mid_adoption_resumes_it_after_its_restart(cluster):
    """The adopting entry is killed -9 while a will waits out its 8 s delay: restarted, it
    re-learns the abandon, finds its own claim first in the log, and publishes that will (the
    delay counted again from the restart); the will already published is not published again."""
    dead, second, third = cluster.entry
    watchers = {}
    for e in (second, third):
        w = MqttClient(e.mqtt_port).connect()
        w.subscribe(WILLS, qos=1)
        watchers[e.name] = w
    fast = with_will(dead.mqtt_port, "adopted-fast", b"fast")
    slow = connect_with_delayed_will(dead.mqtt_port, "adopted-slow", WILLS, b"slow", 8)
    time.sleep(0.5)
    dead.kill9()
    forget(fast)
    slow.close()

    cluster.abandon(1)
    assert wait_until(lambda: any(ADOPTED in e.log_text() for e in (second, third)), 30), "nobody adopted"
    adopter = next(e for e in (second, third) if ADOPTED in e.log_text())
    other = third if adopter is second else second
    watcher = watchers[other.name]
    assert watcher.wait_messages(1, 15), "the undelayed will was not published"
    time.sleep(1.5)  # the published will's record is deleted in the log
    assert payloads(watcher) == [b"fast"], payloads(watcher)

    adopter.kill9()
    forget(watchers[adopter.name])
    restarted = time.monotonic()
    adopter.start()
    assert watcher.wait_messages(2, 40), "the restarted adopter did not resume the adoption"
    waited = time.monotonic() - restarted
    watcher.wait_messages(3, 3.0)
    assert payloads(watcher) == [b"fast", b"slow"], f"expected each will once: {payloads(watcher)}"
    assert waited >= 6.0, f"the resumed will skipped its delay: published {waited:.1f}s after the restart"
    watcher.close()
