"""Total order across protocols: every subscriber, MQTT or WAMP, sees the same sequence."""

import threading

from harness import (
    duplicates,
    ident,
    ident_bytes,
    key_from_mqtt,
    key_from_wamp,
    not_increasing,
    per_publisher_order_violations,
    wait_until,
)

PER_PUBLISHER = 500
MQTT_TOPIC = "ordo/slow/order"
WAMP_TOPIC = "ordo.slow.order"


def test_total_order_mqtt_and_wamp(ordo, clients):
    # three subscribers, all in place before anything is published
    mqtt_subs = [clients.mqtt(ordo) for _ in range(2)]
    for s in mqtt_subs:
        s.subscribe(MQTT_TOPIC, qos=1)
    wamp_sub = clients.wamp(ordo, "json")
    wamp_sub.subscribe(WAMP_TOPIC)

    mqtt_pubs = {name: clients.mqtt(ordo) for name in ("mqtt-a", "mqtt-b")}
    wamp_pubs = {name: clients.wamp(ordo, "json") for name in ("wamp-a", "wamp-b")}

    mqtt_mids: dict[str, list[int]] = {}
    wamp_ids: dict[str, list[int]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(4, timeout=30)

    def run_mqtt(name, c):
        try:
            start.wait()
            mqtt_mids[name] = [c.publish(MQTT_TOPIC, ident_bytes(name, i), qos=1) for i in range(PER_PUBLISHER)]
        except BaseException as e:  # reported below
            errors.append(e)

    def run_wamp(name, c):
        try:
            start.wait()
            wamp_ids[name] = c.publish_many(WAMP_TOPIC, [[ident(name, i)] for i in range(PER_PUBLISHER)], window=50)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run_mqtt, args=kv) for kv in mqtt_pubs.items()]
    threads += [threading.Thread(target=run_wamp, args=kv) for kv in wamp_pubs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not any(t.is_alive() for t in threads), "a publisher did not finish within 90s"
    assert not errors, f"publisher failed: {errors!r}"

    for name, c in mqtt_pubs.items():
        assert c.wait_acked(mqtt_mids[name], 30), (
            f"{name}: {len(set(mqtt_mids[name]) - c.acked_mids)} of {PER_PUBLISHER} QoS1 publishes never PUBACKed"
        )

    total = PER_PUBLISHER * 4
    expected = {(name, i) for name in [*mqtt_pubs, *wamp_pubs] for i in range(PER_PUBLISHER)}

    counts = lambda: [len(s.messages) for s in mqtt_subs] + [len(wamp_sub.events)]  # noqa: E731
    wait_until(lambda: min(counts()) >= total, 30)
    # a little longer, so that duplicates or strays have a chance to show up
    wait_until(lambda: max(counts()) > total, 0.5)

    sequences = {f"mqtt-sub-{i}": [key_from_mqtt(m.payload) for m in s.messages] for i, s in enumerate(mqtt_subs)}
    sequences["wamp-sub"] = [key_from_wamp(e.args, e.kwargs) for e in wamp_sub.events]

    for who, seq in sequences.items():
        assert not duplicates(seq), f"{who} received duplicates: {duplicates(seq)[:10]}"
        missing = expected - set(seq)
        extra = set(seq) - expected
        assert not missing, f"{who} received {len(seq)}/{total}; missing e.g. {sorted(missing)[:10]}"
        assert not extra, f"{who} received unexpected messages, e.g. {sorted(extra, key=repr)[:5]}"
        bad = per_publisher_order_violations(seq)
        assert not bad, f"{who}: per-publisher order broken, e.g. {bad[:5]}"

    reference = sequences["wamp-sub"]
    for who, seq in sequences.items():
        if seq != reference:
            first = next(i for i, (a, b) in enumerate(zip(seq, reference)) if a != b)
            raise AssertionError(
                f"{who} and wamp-sub disagree on the order first at position {first}: "
                f"{seq[first:first + 3]} vs {reference[first:first + 3]}"
            )

    for s in mqtt_subs:
        assert all(m.topic == MQTT_TOPIC for m in s.messages)
        assert all(m.qos == 1 for m in s.messages), "QoS1 subscription to QoS1 publications delivered at QoS0"

    # publication ids: strictly increasing in delivery order, and the PUBLISHED id a WAMP
    # publisher got is the id its event carries
    ids = [e.publication for e in wamp_sub.events]
    assert not not_increasing(ids), f"EVENT publication ids not strictly increasing: {not_increasing(ids)[:5]}"
    event_id = {key: e.publication for key, e in zip(reference, wamp_sub.events)}
    for name, pub_ids in wamp_ids.items():
        assert not not_increasing(pub_ids), f"{name}: PUBLISHED ids not increasing: {not_increasing(pub_ids)[:5]}"
        mismatched = [(i, pid, event_id[(name, i)]) for i, pid in enumerate(pub_ids) if pid != event_id[(name, i)]]
        assert not mismatched, f"{name}: PUBLISHED id differs from the EVENT's (seq, published, event): {mismatched[:5]}"

    # all four publishers really ran at once: the publishers' messages interleave
    owners = [pub for pub, _ in reference]
    switches = sum(1 for a, b in zip(owners, owners[1:]) if a != b)
    assert switches >= 4, f"publishers did not overlap (only {switches} switches): the test proved little"
