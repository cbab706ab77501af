"""Durability across a graceful restart, and WAMP history replay with `after`."""

from harness import (
    duplicates,
    ident,
    ident_bytes,
    key_from_wamp,
    not_increasing,
    per_publisher_order_violations,
)

MQTT_TOPIC = "ordo/slow/restart"
WAMP_TOPIC = "ordo.slow.restart"
MQTT_PUBLISHERS = ("mqtt-a", "mqtt-b")
MQTT_EACH = 200
WAMP_EACH = 100


def test_restart_keeps_every_acked_message_and_its_id(ordo, clients):
    live = clients.wamp(ordo, "json")
    live.subscribe(WAMP_TOPIC)

    # N QoS1 publications, every one PUBACKed, plus acknowledged WAMP publications
    for name in MQTT_PUBLISHERS:
        c = clients.mqtt(ordo)
        mids = [c.publish(MQTT_TOPIC, ident_bytes(name, i), qos=1) for i in range(MQTT_EACH)]
        assert c.wait_acked(mids, 30), f"{name}: {len(set(mids) - c.acked_mids)} publishes never PUBACKed"
        c.close()
    wamp_pub = clients.wamp(ordo, "json")
    published_ids = wamp_pub.publish_many(WAMP_TOPIC, [[ident("wamp-a", i)] for i in range(WAMP_EACH)])
    wamp_pub.close()

    n = len(MQTT_PUBLISHERS) * MQTT_EACH + WAMP_EACH
    assert live.wait_events(n, 30), f"live subscriber got {len(live.events)}/{n} before the restart"
    before = [(key_from_wamp(e.args, e.kwargs), e.publication) for e in live.events]
    assert not duplicates(k for k, _ in before), "live subscriber got duplicates before the restart"
    live.close()

    rc = ordo.stop()
    assert rc is not None, "ordo-entry did not exit within 15s of SIGTERM (had to be killed)"
    ordo.start()

    # replay everything from the start: same messages, same order, same ids, once each
    replay = clients.wamp(ordo, "json")
    replay.subscribe(WAMP_TOPIC, after=0)
    replay.wait_events(n, 30)
    replay.wait_events(n + 1, 1.0)  # give duplicates a chance to show
    after_restart = [(key_from_wamp(e.args, e.kwargs), e.publication) for e in replay.events]
    keys = [k for k, _ in after_restart]
    assert not duplicates(keys), f"replay repeats messages: {duplicates(keys)[:10]}"
    assert len(after_restart) == n, f"replay after restart returned {len(after_restart)} of {n} messages"
    assert not per_publisher_order_violations(keys), per_publisher_order_violations(keys)[:5]
    assert after_restart == before, "replay after restart differs from what was delivered live (order or ids)"
    wamp_event_ids = [pid for (pub, _), pid in after_restart if pub == "wamp-a"]
    assert wamp_event_ids == published_ids, "stored ids of WAMP publications differ from their PUBLISHED ids"

    # `after: <id>` replays exactly the suffix behind that id
    old_ids = [pid for _, pid in before]
    cut = n // 3
    suffix = clients.wamp(ordo, "msgpack")
    suffix.subscribe(WAMP_TOPIC, after=old_ids[cut])
    suffix.wait_events(n - cut - 1, 30)
    suffix.wait_events(n - cut, 1.0)
    got = [(key_from_wamp(e.args, e.kwargs), e.publication) for e in suffix.events]
    assert got == before[cut + 1:], (
        f"after={old_ids[cut]} replayed {len(got)} messages, expected the {n - cut - 1} behind it"
    )

    # new publications get ids above every old one, and follow the replay live
    top = max(old_ids)
    new_ids = clients.wamp(ordo, "json").publish_many(WAMP_TOPIC, [[ident("wamp-new", i)] for i in range(5)])
    assert min(new_ids) > top, f"ids after restart {new_ids} not above the old maximum {top}"
    m = clients.mqtt(ordo)
    assert m.wait_acked([m.publish(MQTT_TOPIC, ident_bytes("mqtt-new", 0), qos=1)], 10), "no PUBACK after restart"

    assert replay.wait_events(n + 6, 10), f"replaying subscriber did not get the new messages live ({len(replay.events)})"
    tail = replay.events[n:]
    assert [key_from_wamp(e.args, e.kwargs) for e in tail] == [("wamp-new", i) for i in range(5)] + [("mqtt-new", 0)]
    assert [e.publication for e in tail[:5]] == new_ids
    all_ids = [e.publication for e in replay.events]
    assert not not_increasing(all_ids), f"ids not strictly increasing across replay and live: {not_increasing(all_ids)[:5]}"

    assert rc == 0, f"ordo-entry exited with {rc} on SIGTERM, expected a graceful exit (0)"
