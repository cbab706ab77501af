"""Interop with the mosquitto command-line clients, retained messages, and binary payloads."""

import json

from harness import MosquittoSub, mosquitto_pub, wait_until


def pub_ok(port, topic, *args):
    r = mosquitto_pub(port, topic, *args)
    assert r.returncode == 0, f"mosquitto_pub {' '.join(args)} failed ({r.returncode}): {r.stdout!r} {r.stderr!r}"


def test_mosquitto_sub_receives_what_mosquitto_pub_sent(ordo):
    count = 20
    sub = MosquittoSub(ordo.mqtt_port, ["ordo/slow/cli"], extra=["-C", str(count), "-W", "30"])
    try:
        sub.wait_ready()
        sent = [f"message {i} from mosquitto_pub".encode() for i in range(count)]
        for payload in sent:
            pub_ok(ordo.mqtt_port, "ordo/slow/cli", "-q", "1", "-m", payload.decode())
        rc = sub.wait_exit(30)
        assert rc == 0, f"mosquitto_sub -C {count} did not finish cleanly (rc {rc}); output: {sub.lines[-10:]}"
        got = sub.messages()
        assert [p for _, _, p in got] == sent
        assert all(t == "ordo/slow/cli" and not r for r, t, _ in got)
    finally:
        sub.close()


def test_retained_message_delivered_to_later_subscriber_and_cleared_by_empty_payload(ordo):
    port = ordo.mqtt_port
    pub_ok(port, "ordo/slow/retained", "-q", "1", "-r", "-m", "first")
    pub_ok(port, "ordo/slow/retained", "-q", "1", "-r", "-m", "kept value")

    late = MosquittoSub(port, ["ordo/slow/retained"], extra=["-C", "1", "-W", "15"])
    try:
        rc = late.wait_exit(20)
        assert rc == 0, f"later subscriber did not receive the retained message (rc {rc}): {late.lines[-10:]}"
        assert late.messages() == [(True, "ordo/slow/retained", b"kept value")], (
            "a new subscriber must get the last retained message with the retain flag set"
        )
    finally:
        late.close()

    # an empty retained publish clears it: a new subscriber gets nothing for that topic. A marker
    # published on a second topic after its SUBACK shows the subscription is live.
    pub_ok(port, "ordo/slow/retained", "-q", "1", "-r", "-n")
    after = MosquittoSub(port, ["ordo/slow/retained", "ordo/slow/marker"], extra=["-W", "15"])
    try:
        after.wait_ready()
        pub_ok(port, "ordo/slow/marker", "-q", "1", "-m", "marker")
        assert wait_until(lambda: any(t == "ordo/slow/marker" for _, t, _ in after.messages()), 10), (
            f"marker not delivered: {after.lines[-10:]}"
        )
        wait_until(lambda: len(after.messages()) > 1, 0.5)
        assert after.messages() == [(False, "ordo/slow/marker", b"marker")], (
            "retained message still delivered after an empty retained publish cleared it"
        )
    finally:
        after.close()


def test_binary_payload_reaches_wamp_intact_and_server_keeps_serving(ordo, clients, tmp_path):
    blob = bytes([0xFF, 0xFE, 0x00, 0x80, 0xC3, 0x28]) + b"not json \x00\x01\x02" + bytes(range(256))
    path = tmp_path / "blob.bin"
    path.write_bytes(blob)

    packed = clients.wamp(ordo, "msgpack")
    packed.subscribe("ordo.slow.binary")
    as_json = clients.wamp(ordo, "json")
    as_json.subscribe("ordo.slow.binary")
    mqtt_sub = clients.mqtt(ordo)
    mqtt_sub.subscribe("ordo/slow/binary", qos=1)

    pub_ok(ordo.mqtt_port, "ordo/slow/binary", "-q", "1", "-f", str(path))
    assert packed.wait_events(1, 10), "msgpack subscriber got no event for the binary payload"
    ev = packed.events[0]
    assert ev.args == [blob] and isinstance(ev.args[0], bytes) and not ev.kwargs, (
        f"msgpack subscriber got {ev.args!r} {ev.kwargs!r}, expected one binary argument with the exact bytes"
    )
    assert as_json.wait_events(1, 10), "JSON subscriber got no event for the binary payload"
    assert as_json.events[0].args == [blob], "JSON subscriber (\\0+base64 binary) did not get the exact bytes"
    assert mqtt_sub.wait_messages(1, 10) and mqtt_sub.messages[0].payload == blob

    # a binary WAMP argument reaches MQTT as the raw bytes
    packed.publish("ordo.slow.binary", blob[::-1])
    assert mqtt_sub.wait_messages(2, 10), "MQTT subscriber did not get the WAMP binary publication"
    assert mqtt_sub.messages[1].payload == blob[::-1]

    # and everybody is still served: a JSON publish after the binary ones reaches all three
    assert ordo.alive(), "ordo-entry died after a binary payload"
    pub_ok(ordo.mqtt_port, "ordo/slow/binary", "-q", "1", "-m", json.dumps({"after": "binary"}))
    # (the publishing session does not get its own event: WAMP's exclude_me defaults to true)
    assert as_json.wait_events(2, 10) and as_json.events[1].args == [blob[::-1]]
    assert packed.wait_events(2, 10) and packed.events[1].args == [{"after": "binary"}]
    assert as_json.wait_events(3, 10) and as_json.events[2].args == [{"after": "binary"}]
    assert mqtt_sub.wait_messages(3, 10) and json.loads(mqtt_sub.messages[2].payload) == {"after": "binary"}
    other = MosquittoSub(ordo.mqtt_port, ["ordo/slow/other"], extra=["-C", "1", "-W", "15"])
    try:
        other.wait_ready()
        pub_ok(ordo.mqtt_port, "ordo/slow/other", "-q", "1", "-m", "still here")
        assert other.wait_exit(15) == 0 and other.messages() == [(False, "ordo/slow/other", b"still here")]
    finally:
        other.close()
