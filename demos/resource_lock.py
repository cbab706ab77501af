"""A resource lock with no lock server: the total order decides.

Every client publishes `acquire` and `release` requests for a resource to one WAMP topic and
replays that topic from the start of history (`after: 0`). Because Ordo delivers every event to
every subscriber in the same permanent-id order, all clients compute the same queue of waiters
and agree on who holds the lock (the first waiter), without asking anyone. A client that joins
late replays the history and reaches the same answer. (A holder that dies keeps the lock: a
release on the holder's disconnect needs fox-wamp's `will` option: see docs/wamp.md and the
lock on `when`/`watch`/`will` in tests/slow/test_wamp_foxwamp.py.)

    .venv/bin/python demos/resource_lock.py --name alice            # against ordo-entry --standalone
    .venv/bin/python demos/resource_lock.py --name bob --hold 5 --rounds 2

supervisord/resource-lock.supervisord.ini starts three of them against one node.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from autobahn.asyncio.wamp import ApplicationRunner, ApplicationSession
from autobahn.wamp import message
from autobahn.wamp.types import PublishOptions, SubscribeOptions


def with_after(subscribe: message.Subscribe, after: int) -> message.Subscribe:
    """Add Ordo's `after` option (fox-wamp's name for replay) to a SUBSCRIBE.

    autobahn's SubscribeOptions has no field for it, so the marshalled options get one more key.
    """
    base = type(subscribe)

    def marshal_options(self):
        return {**base.marshal_options(self), "after": after}

    subscribe.__class__ = type(base.__name__, (base,), {"__slots__": (), "marshal_options": marshal_options})
    return subscribe


class Locker(ApplicationSession):
    async def onJoin(self, details):
        cfg = self.config.extra
        me, topic = cfg["name"], f"demo.lock.{cfg['resource']}"
        waiters: list[str] = []  # in permanent-id order; waiters[0] holds the lock
        my_turn = asyncio.Event()

        def on_request(request, details=None):
            who, op = request["client"], request["op"]
            if op == "acquire" and who not in waiters:
                waiters.append(who)
            elif op == "release" and who in waiters:
                waiters.remove(who)
            holder = waiters[0] if waiters else "nobody"
            print(f"{me}: id {details.publication}: {who} {op}s; holder {holder}", flush=True)
            if holder == me:
                my_turn.set()

        send = self._transport.send  # replay the whole history of the topic, then go live
        self._transport.send = lambda m: send(with_after(m, 0) if isinstance(m, message.Subscribe) else m)
        await self.subscribe(on_request, topic, options=SubscribeOptions(details=True))
        self._transport.send = send

        for _ in range(cfg["rounds"]):
            my_turn.clear()
            # exclude_me=False: a client must see its own requests to know its place in the order
            await self.publish(topic, {"client": me, "op": "acquire"}, options=PublishOptions(acknowledge=True, exclude_me=False))
            await my_turn.wait()
            start = time.time()
            print(f"{me}: LOCKED at {start:.3f}", flush=True)
            await asyncio.sleep(cfg["hold"])
            print(f"{me}: UNLOCKED at {time.time():.3f} (held {time.time() - start:.2f}s)", flush=True)
            await self.publish(topic, {"client": me, "op": "release"}, options=PublishOptions(acknowledge=True, exclude_me=False))
        self.leave()

    def onLeave(self, details):
        self.disconnect()

    def onDisconnect(self):
        asyncio.get_event_loop().stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="ws://127.0.0.1:9000/", help="Ordo WAMP WebSocket URL")
    p.add_argument("--realm", default="realm1")
    p.add_argument("--name", required=True, help="this client's name (unique among the lockers)")
    p.add_argument("--resource", default="printer", help="what to lock")
    p.add_argument("--hold", type=float, default=5.0, help="seconds to hold the lock each round")
    p.add_argument("--rounds", type=int, default=1, help="how many times to take the lock")
    a = p.parse_args()
    extra = {"name": a.name, "resource": a.resource, "hold": a.hold, "rounds": a.rounds}
    ApplicationRunner(a.url, a.realm, extra=extra).run(Locker)


if __name__ == "__main__":
    main()
