"""kill -9 under QoS1 load: nothing PUBACKed is lost, nothing is stored twice."""

from harness import (
    QosPublisher,
    duplicates,
    ident_bytes,
    key_from_wamp,
    not_increasing,
    per_publisher_order_violations,
    wait_quiet,
    wait_until,
)

TOPIC = "ordo/slow/crash"
WAMP_TOPIC = "ordo.slow.crash"
PUBLISHERS = 4
MAX_EACH = 20_000  # upper bound per publisher and cycle; the kill comes long before
WINDOW = 200  # unacknowledged publishes per client (well below the 65,535 packet ids)
KILL_AFTER_ACKS = 1_500  # total PUBACKs seen before the kill
CYCLES = 2


def test_kill9_during_qos1_load_loses_no_acked_message(ordo, clients):
    sent: set = set()
    acked: set = set()
    for cycle in range(CYCLES):
        pubs = [
            QosPublisher(clients.mqtt(ordo, inflight=WINDOW), f"c{cycle}-p{i}", TOPIC, WINDOW, limit=MAX_EACH, deadline=60)
            for i in range(PUBLISHERS)
        ]
        for p in pubs:
            p.start()
        assert wait_until(lambda: sum(len(p.client.acked_mids) for p in pubs) >= KILL_AFTER_ACKS, 60), (
            f"cycle {cycle}: only {sum(len(p.client.acked_mids) for p in pubs)} PUBACKs in 60s"
        )
        ordo.kill9()
        for p in pubs:
            p.stop.set()
        for p in pubs:
            p.join(10)
            assert not p.is_alive(), "publisher thread did not stop"
            assert p.error is None, f"{p.name}: {p.error!r}"
            # the dropped connection must be noticed before the loop stops, so that paho never
            # re-sends an unacknowledged publish to the restarted server (that would be a
            # legitimate duplicate under at-least-once)
            assert p.client.disconnected.wait(10), f"{p.name} did not notice the kill"
            p.client.client.loop_stop()
            sent |= p.sent()
            acked |= p.acked()
        in_flight = len(sent) - len(acked)
        assert in_flight > 0, f"cycle {cycle}: every publish was acked before the kill; nothing was in flight"

        ordo.start()

        replay = clients.wamp(ordo, "msgpack")
        replay.subscribe(WAMP_TOPIC, after=0)
        # all acked messages must come; then wait for the stream to go quiet (in-flight ones may
        # or may not have been stored)
        wait_until(lambda: len(replay.events) >= len(acked), 30)
        wait_quiet(lambda: len(replay.events), quiet=1.0, timeout=20)
        events = list(replay.events)
        keys = [key_from_wamp(e.args, e.kwargs) for e in events]
        dups = duplicates(keys)
        assert not dups, f"cycle {cycle}: stored twice after kill -9: {dups[:10]} ({len(dups)} in all)"
        lost = acked - set(keys)
        assert not lost, (
            f"cycle {cycle}: {len(lost)} of {len(acked)} PUBACKed messages lost after kill -9, e.g. {sorted(lost)[:10]}"
        )
        strays = set(keys) - sent
        assert not strays, f"cycle {cycle}: replay has messages nobody sent: {sorted(strays, key=repr)[:5]}"
        bad = per_publisher_order_violations(keys)
        assert not bad, f"cycle {cycle}: per-publisher order broken after recovery: {bad[:5]}"
        print(
            f"cycle {cycle}: sent {len(sent)}, PUBACKed {len(acked)}, stored after kill -9 {len(keys)} "
            f"({len(set(keys) - acked)} stored without a PUBACK)"
        )
        ids = [e.publication for e in events]
        assert not not_increasing(ids), f"cycle {cycle}: replayed ids not increasing: {not_increasing(ids)[:5]}"
        replay.close()

        # the recovered server takes new publications, with ids above everything stored
        probe_sub = clients.wamp(ordo, "json")
        probe_sub.subscribe(WAMP_TOPIC)
        probe = clients.mqtt(ordo)
        name = f"c{cycle}-probe"
        mid = probe.publish(TOPIC, ident_bytes(name, 0), qos=1)
        assert probe.wait_acked([mid], 10), f"cycle {cycle}: no PUBACK from the restarted server"
        sent.add((name, 0))
        acked.add((name, 0))
        assert probe_sub.wait_events(1, 10), f"cycle {cycle}: live subscriber got nothing after restart"
        assert key_from_wamp(probe_sub.events[0].args, probe_sub.events[0].kwargs) == (name, 0)
        assert probe_sub.events[0].publication > max(ids), "new id not above the recovered history"
        probe.close()
        probe_sub.close()
