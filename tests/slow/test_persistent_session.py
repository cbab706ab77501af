"""MQTT persistent sessions: a QoS1 subscriber that was away gets what it missed, in order."""

from harness import duplicates, ident_bytes, key_from_mqtt

TOPIC = "ordo/slow/session"
CLIENT_ID = "ordo-slow-persistent"
MISSED = 50


def test_persistent_session_gets_missed_messages_in_order(ordo, clients):
    first = clients.mqtt(ordo, client_id=CLIENT_ID, clean_session=False)
    first.subscribe(TOPIC, qos=1)
    pub = clients.mqtt(ordo)
    mid = pub.publish(TOPIC, ident_bytes("pub", 0), qos=1)
    assert pub.wait_acked([mid], 10)
    assert first.wait_messages(1, 10), "subscriber got nothing while connected"
    first.close()  # clean DISCONNECT; the session (subscription + queue) stays on the server

    mids = [pub.publish(TOPIC, ident_bytes("pub", i), qos=1) for i in range(1, MISSED + 1)]
    assert pub.wait_acked(mids, 30), "publishes made while the subscriber was away were not all PUBACKed"

    again = clients.mqtt(ordo, client_id=CLIENT_ID, clean_session=False)  # no new SUBSCRIBE
    assert again.session_present, "CONNACK session present flag not set for a persistent session"
    again.wait_messages(MISSED, 15)
    again.wait_messages(MISSED + 1, 0.5)
    keys = [key_from_mqtt(m.payload) for m in again.messages]
    assert not duplicates(keys), f"missed messages delivered twice: {duplicates(keys)[:10]}"
    assert keys == [("pub", i) for i in range(1, MISSED + 1)], (
        f"after reconnect got {len(keys)} messages: {keys[:5]}...; expected seq 1..{MISSED} in order"
    )
    assert all(m.qos == 1 for m in again.messages)

    # the stored subscription keeps working for live messages
    mid = pub.publish(TOPIC, ident_bytes("pub", MISSED + 1), qos=1)
    assert pub.wait_acked([mid], 10)
    assert again.wait_messages(MISSED + 1, 10), "restored subscription does not deliver live messages"
    assert key_from_mqtt(again.messages[-1].payload) == ("pub", MISSED + 1)
    again.close()

    # a clean session throws the old one away: nothing queued, no session present
    pub.wait_acked([pub.publish(TOPIC, ident_bytes("pub", MISSED + 2), qos=1)], 10)
    clean = clients.mqtt(ordo, client_id=CLIENT_ID, clean_session=True)
    assert not clean.session_present, "clean_session=True connect reported a present session"
    clean.wait_messages(1, 1.0)
    assert clean.messages == [], "a clean session received messages queued for the old session"
