//! MQTT 3.1.1 front door, driven by rumqttc and by a raw client over real sockets.

use anyhow::{bail, ensure, Context};
use ordo_common::mqtt::{Packet, QoS as RawQoS, SubAckCode};
use ordo_tests::mqtt_raw::{self, publish_packet, RawMqtt};
use ordo_tests::{Rumqtt, TestNode};
use rumqttc::QoS;
use std::time::{Duration, Instant};

type Result = anyhow::Result<()>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_publish_is_acked_and_delivered() -> Result {
    let node = TestNode::start().await?;
    let mut sub = Rumqtt::connect(node.mqtt, "q1-sub").await?;
    sub.subscribe("q1/t", QoS::AtLeastOnce).await?;

    // rumqttc publisher: PUBACK arrives and the subscriber gets the message at QoS 1.
    let mut publisher = Rumqtt::connect(node.mqtt, "q1-pub").await?;
    publisher
        .publish_acked("q1/t", b"hello".to_vec(), false)
        .await?;
    let got = sub.next_publish().await?;
    assert_eq!(got.topic, "q1/t");
    assert_eq!(&got.payload[..], b"hello");
    assert_eq!(got.qos, QoS::AtLeastOnce);
    assert!(!got.retain, "a live delivery must not carry RETAIN");

    // Raw publisher: the PUBACK echoes the exact packet id.
    let (mut raw, _) = RawMqtt::connect(node.mqtt, "q1-raw", true, 0).await?;
    raw.publish_acked("q1/t", b"raw", 4242, false).await?;
    let got = sub.next_publish().await?;
    assert_eq!(&got.payload[..], b"raw");
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plus_and_hash_filters_match_mqtt_rules() -> Result {
    let node = TestNode::start().await?;
    let filters = ["w/+/c", "w/#", "w/b", "+"];
    let mut subs = Vec::new();
    for (i, filter) in filters.iter().enumerate() {
        let mut s = Rumqtt::connect(node.mqtt, &format!("wild-{i}")).await?;
        s.subscribe(filter, QoS::AtLeastOnce).await?;
        s.subscribe("marker/end", QoS::AtLeastOnce).await?;
        subs.push(s);
    }
    let mut publisher = Rumqtt::connect(node.mqtt, "wild-pub").await?;
    let topics = [
        "w/b/c", "w/b", "w/x/y/c", "w", "x/b/c", "w/b/c/d", "w//c", "solo",
    ];
    for topic in topics {
        publisher
            .publish_acked(topic, topic.as_bytes(), false)
            .await?;
    }
    publisher.publish_acked("marker/end", "end", false).await?;
    let expected: [&[&str]; 4] = [
        &["w/b/c", "w//c"],
        &["w/b/c", "w/b", "w/x/y/c", "w", "w/b/c/d", "w//c"],
        &["w/b"],
        &["w", "solo"],
    ];
    for ((sub, filter), want) in subs.iter_mut().zip(filters).zip(expected) {
        let mut got = Vec::new();
        loop {
            let p = sub.next_publish().await?;
            if p.topic == "marker/end" {
                break;
            }
            assert_eq!(p.payload, p.topic.as_bytes(), "payload follows topic");
            got.push(p.topic);
        }
        assert_eq!(got, want, "filter {filter}");
    }
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_message_reaches_later_subscriber_and_empty_payload_clears_it() -> Result {
    let node = TestNode::start().await?;
    let mut publisher = Rumqtt::connect(node.mqtt, "ret-pub").await?;
    publisher.publish_acked("r/a", "one", true).await?;
    publisher.publish_acked("r/b", "two", true).await?;
    publisher.publish_acked("r/b", "three", true).await?; // replaces "two"

    let mut s1 = Rumqtt::connect(node.mqtt, "ret-s1").await?;
    s1.subscribe("r/#", QoS::AtLeastOnce).await?;
    let mut retained = Vec::new();
    for _ in 0..2 {
        let p = s1.next_publish().await?;
        assert!(p.retain, "a retained copy must carry RETAIN: {p:?}");
        retained.push((p.topic, String::from_utf8(p.payload.to_vec())?));
    }
    assert_eq!(
        retained,
        [
            ("r/a".to_owned(), "one".to_owned()),
            ("r/b".to_owned(), "three".to_owned())
        ]
    );

    // Clear r/a: the existing subscriber gets the empty message live, without RETAIN.
    publisher.publish_acked("r/a", "", true).await?;
    let p = s1.next_publish().await?;
    assert_eq!(
        (p.topic.as_str(), p.payload.len(), p.retain),
        ("r/a", 0, false)
    );

    // A later subscriber gets only r/b; the marker proves nothing else is queued before it.
    let mut s2 = Rumqtt::connect(node.mqtt, "ret-s2").await?;
    s2.subscribe("r/#", QoS::AtLeastOnce).await?;
    let p = s2.next_publish().await?;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.retain),
        ("r/b", &b"three"[..], true)
    );
    publisher.publish_acked("r/marker", "m", false).await?;
    let p = s2.next_publish().await?;
    assert_eq!(
        (p.topic.as_str(), p.retain),
        ("r/marker", false),
        "r/a was cleared"
    );
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_is_delivered_at_min_of_publish_and_subscription() -> Result {
    let node = TestNode::start().await?;
    let mut s1 = Rumqtt::connect(node.mqtt, "q0-s1").await?;
    s1.subscribe("q0/t", QoS::AtLeastOnce).await?;
    let mut s0 = Rumqtt::connect(node.mqtt, "q0-s0").await?;
    s0.subscribe("q0/t", QoS::AtMostOnce).await?;
    let publisher = Rumqtt::connect(node.mqtt, "q0-pub").await?;
    publisher
        .client
        .publish("q0/t", QoS::AtMostOnce, false, b"zero".to_vec())
        .await?;
    let p = s1.next_publish().await?;
    assert_eq!((&p.payload[..], p.qos), (&b"zero"[..], QoS::AtMostOnce));
    let p = s0.next_publish().await?;
    assert_eq!((&p.payload[..], p.qos), (&b"zero"[..], QoS::AtMostOnce));
    // QoS 1 publish to a QoS 0 subscription arrives at QoS 0.
    publisher
        .client
        .publish("q0/t", QoS::AtLeastOnce, false, b"one".to_vec())
        .await?;
    let p = s0.next_publish().await?;
    assert_eq!((&p.payload[..], p.qos), (&b"one"[..], QoS::AtMostOnce));
    let p = s1.next_publish().await?;
    assert_eq!((&p.payload[..], p.qos), (&b"one"[..], QoS::AtLeastOnce));
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_delivery() -> Result {
    let node = TestNode::start().await?;
    let (mut sub, _) = RawMqtt::connect(node.mqtt, "unsub-s", true, 0).await?;
    sub.subscribe(
        1,
        &[
            ("u/a", RawQoS::AtLeastOnce),
            ("u/marker", RawQoS::AtLeastOnce),
        ],
    )
    .await?;
    let (mut publisher, _) = RawMqtt::connect(node.mqtt, "unsub-p", true, 0).await?;
    publisher.publish_acked("u/a", b"before", 1, false).await?;
    assert_eq!(&sub.recv_publish().await?.payload[..], b"before");
    sub.unsubscribe(2, &["u/a"]).await?;
    publisher.publish_acked("u/a", b"after", 2, false).await?;
    publisher
        .publish_acked("u/marker", b"marker", 3, false)
        .await?;
    let p = sub.recv_publish().await?;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("u/marker", &b"marker"[..]),
        "nothing from u/a after UNSUBACK"
    );
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_will_is_published_on_abnormal_disconnect_only() -> Result {
    let node = TestNode::start().await?;
    let mut watcher = Rumqtt::connect(node.mqtt, "will-watch").await?;
    watcher.subscribe("will/#", QoS::AtLeastOnce).await?;

    // Graceful DISCONNECT: the will is discarded.
    let mut graceful = mqtt_raw::connect_packet("will-graceful", true, 0);
    graceful.will = Some(mqtt_raw::will(
        "will/graceful",
        b"bye",
        RawQoS::AtLeastOnce,
        false,
    ));
    let (client, _) = RawMqtt::connect_with(node.mqtt, graceful).await?;
    client.disconnect().await?;

    // Dropped TCP connection without DISCONNECT: the will is published.
    let mut abrupt = mqtt_raw::connect_packet("will-abrupt", true, 0);
    abrupt.will = Some(mqtt_raw::will(
        "will/abrupt",
        b"gone",
        RawQoS::AtLeastOnce,
        true,
    ));
    let (client, _) = RawMqtt::connect_with(node.mqtt, abrupt).await?;
    drop(client);

    let p = watcher.next_publish().await?;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("will/abrupt", &b"gone"[..]),
        "the graceful client's will must not be published"
    );
    // The will was retained: a later subscriber gets it with RETAIN set.
    let mut later = Rumqtt::connect(node.mqtt, "will-later").await?;
    later.subscribe("will/abrupt", QoS::AtLeastOnce).await?;
    let p = later.next_publish().await?;
    assert_eq!((&p.payload[..], p.retain), (&b"gone"[..], true));
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_expiry_closes_a_silent_connection() -> Result {
    let node = TestNode::start().await?;
    let mut watcher = Rumqtt::connect(node.mqtt, "ka-watch").await?;
    watcher.subscribe("ka/#", QoS::AtLeastOnce).await?;

    // A client that pings every 400 ms stays connected all along.
    let (mut pinger, _) = RawMqtt::connect(node.mqtt, "ka-pinger", true, 1).await?;
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let pinging = tokio::spawn(async move {
        let mut pings = 0u32;
        loop {
            pinger.send(&Packet::PingReq).await?;
            match pinger.recv().await? {
                Packet::PingResp => pings += 1,
                other => bail!("expected PINGRESP, got {other:?}"),
            }
            tokio::select! {
                _ = &mut stop_rx => return anyhow::Ok(pings),
                _ = tokio::time::sleep(Duration::from_millis(400)) => {}
            }
        }
    });

    // A silent client with keepalive 1 s is closed after 1.5 s, and its will goes out.
    let mut silent = mqtt_raw::connect_packet("ka-silent", true, 1);
    silent.will = Some(mqtt_raw::will(
        "ka/will",
        b"expired",
        RawQoS::AtLeastOnce,
        false,
    ));
    let (mut client, _) = RawMqtt::connect_with(node.mqtt, silent).await?;
    let started = Instant::now();
    client.expect_closed(Duration::from_secs(6)).await?;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1200),
        "closed after {elapsed:?}; the server must allow 1.5 keepalive periods"
    );
    let p = watcher.next_publish().await?;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("ka/will", &b"expired"[..])
    );

    // The pinger outlived the silent client by pinging.
    let _ = stop_tx.send(());
    let pings = tokio::time::timeout(Duration::from_secs(10), pinging).await???;
    assert!(pings >= 3, "only {pings} pings");
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_gets_missed_messages_in_order() -> Result {
    let node = TestNode::start().await?;
    let (mut sub, ack) = RawMqtt::connect(node.mqtt, "persist", false, 0).await?;
    assert!(!ack.session_present, "a new client id has no session");
    let codes = sub.subscribe(1, &[("ps/t", RawQoS::AtLeastOnce)]).await?;
    assert_eq!(codes, [SubAckCode::Granted(RawQoS::AtLeastOnce)]);
    sub.disconnect().await?;

    let (mut publisher, _) = RawMqtt::connect(node.mqtt, "persist-pub", true, 0).await?;
    for i in 1..=10u16 {
        publisher
            .publish_acked("ps/t", format!("m{i}").as_bytes(), i, false)
            .await?;
    }

    let (mut sub, ack) = RawMqtt::connect(node.mqtt, "persist", false, 0).await?;
    assert!(ack.session_present, "the session must be resumed");
    for i in 1..=10 {
        let p = sub.recv_publish().await?;
        assert_eq!(p.qos, RawQoS::AtLeastOnce);
        assert_eq!(p.topic, "ps/t");
        assert_eq!(String::from_utf8(p.payload.to_vec())?, format!("m{i}"));
    }
    // Live delivery continues after the replay, still without re-subscribing.
    publisher.publish_acked("ps/t", b"live", 11, false).await?;
    assert_eq!(&sub.recv_publish().await?.payload[..], b"live");
    sub.disconnect().await?;

    // clean_session=1 discards the stored session.
    let (sub, ack) = RawMqtt::connect(node.mqtt, "persist", true, 0).await?;
    assert!(!ack.session_present);
    sub.disconnect().await?;
    let (_sub, ack) = RawMqtt::connect(node.mqtt, "persist", false, 0).await?;
    assert!(
        !ack.session_present,
        "clean session must have discarded the old one"
    );
    node.shutdown().await;
    Ok(())
}

/// Subscribe persistently, receive m1..m6, acknowledge only m1..m3, drop the socket,
/// reconnect; return the reconnected client with the packet ids m4..m6 first had.
async fn reconnect_with_three_unacked(
    node: &TestNode,
    client_id: &str,
    topic: &str,
) -> anyhow::Result<(RawMqtt, Vec<u16>)> {
    let (mut sub, _) = RawMqtt::connect(node.mqtt, client_id, false, 0).await?;
    sub.subscribe(1, &[(topic, RawQoS::AtLeastOnce)]).await?;
    let (mut publisher, _) =
        RawMqtt::connect(node.mqtt, &format!("{client_id}-pub"), true, 0).await?;
    for i in 1..=6u16 {
        publisher
            .publish_acked(topic, format!("m{i}").as_bytes(), i, false)
            .await?;
    }
    let mut unacked = Vec::new();
    for i in 1..=6 {
        let p = match sub.recv().await? {
            Packet::Publish(p) => p,
            other => bail!("expected PUBLISH, got {other:?}"),
        };
        assert_eq!(String::from_utf8(p.payload.to_vec())?, format!("m{i}"));
        if i <= 3 {
            sub.send(&Packet::PubAck(p.pkid)).await?;
        } else {
            unacked.push(p.pkid);
        }
    }
    // Make sure the server processed the three PUBACKs before the socket drops.
    sub.send(&Packet::PingReq).await?;
    assert_eq!(sub.recv().await?, Packet::PingResp);
    drop(sub);
    let (sub, ack) = RawMqtt::connect(node.mqtt, client_id, false, 0).await?;
    assert!(ack.session_present);
    Ok((sub, unacked))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_redelivers_unacknowledged_messages() -> Result {
    let node = TestNode::start().await?;
    let (mut sub, _) = reconnect_with_three_unacked(&node, "redeliver", "rd/t").await?;
    for i in 4..=6 {
        let p = sub.recv_publish().await?;
        assert_eq!(String::from_utf8(p.payload.to_vec())?, format!("m{i}"));
    }
    let (mut publisher, _) = RawMqtt::connect(node.mqtt, "redeliver-pub2", true, 0).await?;
    publisher.publish_acked("rd/t", b"m7", 7, false).await?;
    assert_eq!(&sub.recv_publish().await?.payload[..], b"m7");
    node.shutdown().await;
    Ok(())
}

/// [MQTT-4.4.0-1]: on reconnect the server re-sends unacknowledged PUBLISH packets
/// with their original packet ids; [MQTT-3.3.1-1]: with DUP set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivery_keeps_original_packet_ids_and_sets_dup() -> Result {
    let node = TestNode::start().await?;
    let (mut sub, unacked) = reconnect_with_three_unacked(&node, "redeliver-dup", "rdd/t").await?;
    for (i, pkid) in (4..=6).zip(unacked) {
        let p = sub.recv_publish().await?;
        assert_eq!(String::from_utf8(p.payload.to_vec())?, format!("m{i}"));
        assert_eq!((p.pkid, p.dup), (pkid, true), "m{i}");
    }
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_connect_with_same_client_id_takes_the_session_over() -> Result {
    let node = TestNode::start().await?;
    let (mut first, _) = RawMqtt::connect(node.mqtt, "takeover", true, 0).await?;
    first.subscribe(1, &[("tk/t", RawQoS::AtLeastOnce)]).await?;
    let (mut second, _) = RawMqtt::connect(node.mqtt, "takeover", true, 0).await?;
    first
        .expect_closed(Duration::from_secs(5))
        .await
        .context("the first connection must be closed")?;
    second
        .subscribe(1, &[("tk/t", RawQoS::AtLeastOnce)])
        .await?;
    let (mut publisher, _) = RawMqtt::connect(node.mqtt, "takeover-pub", true, 0).await?;
    publisher.publish_acked("tk/t", b"x", 1, false).await?;
    assert_eq!(&second.recv_publish().await?.payload[..], b"x");
    node.shutdown().await;
    Ok(())
}

/// 70,000 QoS 1 deliveries: packet ids run 1..=65535, then wrap to 1, never 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packet_ids_wrap_from_65535_to_1_over_70000_deliveries() -> Result {
    const N: u32 = 70_000;
    const WINDOW: u32 = 2_000; // publishes awaiting PUBACK
    const MAX_LAG: u32 = 20_000; // published but not yet received (stay below session_queue)
    let node = TestNode::start().await?;
    let (mut sub, _) = RawMqtt::connect(node.mqtt, "wrap-sub", true, 0).await?;
    sub.subscribe(1, &[("wrap/t", RawQoS::AtLeastOnce)]).await?;
    let (progress_tx, mut progress) = tokio::sync::watch::channel(0u32);

    let subscriber = tokio::spawn(async move {
        let mut received = 0u32;
        let mut saw_wrap = false;
        while received < N {
            sub.fill().await?;
            while let Some(packet) = sub.try_next()? {
                let Packet::Publish(p) = packet else {
                    bail!("expected PUBLISH, got {packet:?}");
                };
                ensure!(p.pkid != 0, "packet id 0 on delivery {received}");
                let want = (received % 65_535) as u16 + 1;
                ensure!(
                    p.pkid == want,
                    "delivery {received}: pkid {} != {want}",
                    p.pkid
                );
                saw_wrap |= received == 65_535 && p.pkid == 1;
                let seq = u32::from_be_bytes(p.payload[..].try_into()?);
                ensure!(seq == received, "delivery {received} carries seq {seq}");
                sub.queue(&Packet::PubAck(p.pkid))?;
                received += 1;
            }
            sub.flush().await?;
            let _ = progress_tx.send(received);
        }
        anyhow::Ok(saw_wrap)
    });

    let (mut publisher, _) = RawMqtt::connect(node.mqtt, "wrap-pub", true, 0).await?;
    let (mut sent, mut acked) = (0u32, 0u32);
    while acked < N {
        let received = *progress.borrow();
        while sent < N && sent - acked < WINDOW && sent - received < MAX_LAG {
            let pkid = (sent % 65_535) as u16 + 1;
            publisher.queue(&publish_packet(
                "wrap/t",
                &sent.to_be_bytes(),
                RawQoS::AtLeastOnce,
                pkid,
                false,
            ))?;
            sent += 1;
        }
        publisher.flush().await?;
        if sent == acked {
            // Nothing to acknowledge: wait for the subscriber to catch up.
            tokio::time::timeout(mqtt_raw::RECV_TIMEOUT, progress.changed())
                .await
                .context("subscriber made no progress")??;
            continue;
        }
        publisher.fill().await?;
        while let Some(packet) = publisher.try_next()? {
            let want = (acked % 65_535) as u16 + 1;
            ensure!(
                packet == Packet::PubAck(want),
                "expected PUBACK {want}, got {packet:?}"
            );
            acked += 1;
        }
    }
    let saw_wrap = tokio::time::timeout(Duration::from_secs(60), subscriber)
        .await
        .context("subscriber did not finish")???;
    assert!(saw_wrap, "delivery 65,535 must carry packet id 1");
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_publish_is_stored_once_and_completes() -> Result {
    let node = TestNode::start().await?;
    let (mut sub, _) = RawMqtt::connect(node.mqtt, "q2-sub", true, 0).await?;
    sub.subscribe(1, &[("q2/t", RawQoS::ExactlyOnce)]).await?;
    let (mut publisher, _) = RawMqtt::connect(node.mqtt, "q2-pub", true, 0).await?;
    let first = publish_packet("q2/t", b"once", RawQoS::ExactlyOnce, 5, false);
    publisher.send(&first).await?;
    assert_eq!(publisher.recv().await?, Packet::PubRec(5));
    // A resend with DUP before PUBREL must not be stored again.
    let Packet::Publish(mut resend) = first else {
        bail!("not a publish")
    };
    resend.dup = true;
    publisher.send(&Packet::Publish(resend)).await?;
    assert_eq!(publisher.recv().await?, Packet::PubRec(5));
    publisher.send(&Packet::PubRel(5)).await?;
    assert_eq!(publisher.recv().await?, Packet::PubComp(5));
    // The same packet id is free again for a new message.
    publisher
        .send(&publish_packet(
            "q2/t",
            b"twice",
            RawQoS::ExactlyOnce,
            5,
            false,
        ))
        .await?;
    assert_eq!(publisher.recv().await?, Packet::PubRec(5));
    publisher.send(&Packet::PubRel(5)).await?;
    assert_eq!(publisher.recv().await?, Packet::PubComp(5));

    // Deliveries go out at QoS 2 with PUBREC/PUBREL/PUBCOMP; "once" arrives exactly once.
    let mut pkids = Vec::new();
    for want in [&b"once"[..], b"twice"] {
        let p = match sub.recv().await? {
            Packet::Publish(p) => p,
            other => bail!("expected PUBLISH, got {other:?}"),
        };
        assert_eq!((&p.payload[..], p.qos), (want, RawQoS::ExactlyOnce));
        pkids.push(p.pkid);
    }
    for pkid in pkids {
        sub.send(&Packet::PubRec(pkid)).await?;
        assert_eq!(sub.recv().await?, Packet::PubRel(pkid));
        sub.send(&Packet::PubComp(pkid)).await?;
    }
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_grants_the_requested_qos_and_invalid_filters_close_the_connection() -> Result {
    let node = TestNode::start().await?;
    let (mut sub, _) = RawMqtt::connect(node.mqtt, "suback", true, 0).await?;
    let codes = sub
        .subscribe(
            1,
            &[
                ("ok/t", RawQoS::AtLeastOnce),
                ("q0/t", RawQoS::AtMostOnce),
                ("q2/t", RawQoS::ExactlyOnce),
            ],
        )
        .await?;
    assert_eq!(
        codes,
        [
            SubAckCode::Granted(RawQoS::AtLeastOnce),
            SubAckCode::Granted(RawQoS::AtMostOnce),
            SubAckCode::Granted(RawQoS::ExactlyOnce),
        ]
    );
    // A malformed filter is a protocol violation [MQTT-4.7.1-2], [MQTT-4.8.0-1]. The codec
    // refuses to encode one, so write the SUBSCRIBE by hand.
    for (i, filter) in ["a/#/b", "a+", "#a"].iter().enumerate() {
        let (mut bad, _) = RawMqtt::connect(node.mqtt, &format!("suback-bad-{i}"), true, 0).await?;
        let mut body = vec![0x00, 0x07]; // packet id 7
        body.extend_from_slice(&(filter.len() as u16).to_be_bytes());
        body.extend_from_slice(filter.as_bytes());
        body.push(1);
        let mut bytes = vec![0x82, body.len() as u8];
        bytes.extend_from_slice(&body);
        bad.send_bytes(&bytes).await?;
        let seen = bad.expect_closed(Duration::from_secs(5)).await?;
        assert!(
            seen.is_empty(),
            "{filter}: expected no SUBACK, got {seen:?}"
        );
    }
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_client_id_requires_clean_session() -> Result {
    let node = TestNode::start().await?;
    let (anon, ack) = RawMqtt::connect(node.mqtt, "", true, 0).await?;
    assert!(!ack.session_present);
    anon.disconnect().await?;
    let mut raw = RawMqtt::tcp(node.mqtt).await?;
    raw.send(&Packet::Connect(mqtt_raw::connect_packet("", false, 0)))
        .await?;
    match raw.recv().await? {
        Packet::ConnAck(ack) => assert_eq!(
            ack.code,
            ordo_common::mqtt::ConnectReturnCode::IdentifierRejected
        ),
        other => bail!("expected CONNACK, got {other:?}"),
    }
    raw.expect_closed(Duration::from_secs(5)).await?;
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_hands_a_persistent_session_to_the_new_connection() -> Result {
    let node = TestNode::start().await?;
    let (mut first, _) = RawMqtt::connect(node.mqtt, "tk-persist", false, 0).await?;
    first
        .subscribe(1, &[("tkp/t", RawQoS::AtLeastOnce)])
        .await?;
    let (mut second, ack) = RawMqtt::connect(node.mqtt, "tk-persist", false, 0).await?;
    assert!(ack.session_present, "the live session must be handed over");
    first.expect_closed(Duration::from_secs(5)).await?;
    let (mut publisher, _) = RawMqtt::connect(node.mqtt, "tk-persist-pub", true, 0).await?;
    publisher.publish_acked("tkp/t", b"after", 1, false).await?;
    assert_eq!(&second.recv_publish().await?.payload[..], b"after");
    node.shutdown().await;
    Ok(())
}

/// A client whose old connection is stuck (not reading, socket buffers full)
/// reconnects with the same client id: the takeover must not wait for the
/// stuck write to time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_of_a_stuck_connection_is_prompt() -> Result {
    let node = TestNode::start().await?;
    let (mut stuck, _) = RawMqtt::connect(node.mqtt, "stuck", true, 0).await?;
    stuck
        .subscribe(1, &[("stuck/t", RawQoS::AtMostOnce)])
        .await?;
    // 32 MiB towards a reader that never reads: more than loopback socket buffers hold.
    let (mut publisher, _) = RawMqtt::connect(node.mqtt, "stuck-pub", true, 0).await?;
    let chunk = vec![0x5a; 64 * 1024];
    for i in 0..512u16 {
        publisher.queue(&publish_packet(
            "stuck/t",
            &chunk,
            RawQoS::AtLeastOnce,
            i + 1,
            false,
        ))?;
    }
    publisher.flush().await?;
    for i in 0..512u16 {
        assert_eq!(publisher.recv().await?, Packet::PubAck(i + 1));
    }
    let started = Instant::now();
    let mut again = RawMqtt::tcp(node.mqtt).await?;
    again
        .send(&Packet::Connect(mqtt_raw::connect_packet("stuck", true, 0)))
        .await?;
    let connack = again.recv_within(Duration::from_secs(40)).await?;
    let elapsed = started.elapsed();
    assert!(
        matches!(connack, Some(Packet::ConnAck(_))),
        "expected CONNACK, got {connack:?}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "CONNACK for the takeover took {elapsed:?}"
    );
    drop(stuck);
    node.shutdown().await;
    Ok(())
}

/// A persistent subscriber that falls further behind than `session_queue`
/// is disconnected, and loses nothing: on reconnect it gets every message in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_persistent_subscriber_loses_nothing() -> Result {
    const N: u32 = 2_000;
    let node = TestNode::start_with(|c| {
        c.session_queue = 64;
        c.mqtt_inflight = 16;
    })
    .await?;
    let (mut sub, _) = RawMqtt::connect(node.mqtt, "slow", false, 0).await?;
    sub.subscribe(1, &[("slow/t", RawQoS::AtLeastOnce)]).await?;
    let (mut publisher, _) = RawMqtt::connect(node.mqtt, "slow-pub", true, 0).await?;
    for seq in 0..N {
        let pkid = (seq % 1000) as u16 + 1;
        publisher.queue(&publish_packet(
            "slow/t",
            &seq.to_be_bytes(),
            RawQoS::AtLeastOnce,
            pkid,
            false,
        ))?;
        if pkid == 1000 {
            publisher.flush().await?;
            for want in 1..=1000u16 {
                assert_eq!(publisher.recv().await?, Packet::PubAck(want));
            }
        }
    }
    // Now read: every message arrives in order; only redeliveries may repeat.
    let mut next = 0u32;
    let mut reconnects = 0;
    while next < N {
        let step: anyhow::Result<()> = async {
            let p = match sub.recv().await? {
                Packet::Publish(p) => p,
                other => bail!("unexpected {other:?}"),
            };
            let seq = u32::from_be_bytes(p.payload[..].try_into()?);
            ensure!(seq <= next, "gap: expected {next}, got {seq}");
            if seq == next {
                next += 1;
            }
            sub.send(&Packet::PubAck(p.pkid)).await
        }
        .await;
        if let Err(e) = step {
            // The only acceptable failure is the server closing the lagging connection.
            let closed = e.to_string().contains("closed by the server")
                || e.chain()
                    .any(|c| c.downcast_ref::<std::io::Error>().is_some());
            ensure!(closed, "{e:#}");
            reconnects += 1;
            ensure!(reconnects <= 3, "too many reconnects (last: {e:#})");
            let (again, ack) = RawMqtt::connect(node.mqtt, "slow", false, 0).await?;
            ensure!(ack.session_present, "session lost on reconnect");
            sub = again;
        }
    }
    eprintln!("reconnects: {reconnects}");
    node.shutdown().await;
    Ok(())
}
