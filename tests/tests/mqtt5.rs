//! MQTT 5 front door, driven by rumqttc's v5 client and by the raw client.

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use ordo_common::mqtt::v5::{
    self, Ack, Disconnect, Packet, Properties, RetainHandling, SubscriptionOptions,
};
use ordo_common::mqtt::{QoS, ReasonCode};
use ordo_tests::mqtt_raw::{connect5_packet, publish5, RawMqtt};
use ordo_tests::rumqtt5::{filter, Rumqtt5};
use ordo_tests::{Rumqtt, TestNode};
use rumqttc::v5 as r5;
use std::time::Duration;
use tokio::time::Instant;

type Result = anyhow::Result<()>;

const CLOSE_WITHIN: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connack_assigns_a_client_id_and_announces_limits() -> Result {
    let node = TestNode::start().await?;
    let (_raw, ack) = RawMqtt::connect5(node.mqtt, connect5_packet("", true, 30)).await?;
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    let p = &ack.properties;
    let assigned = p
        .assigned_client_identifier
        .clone()
        .context("no assigned id")?;
    ensure!(assigned.starts_with("ordo-"), "{assigned}");
    assert_eq!(p.receive_maximum, Some(1024));
    assert_eq!(p.maximum_packet_size, Some(1 << 20));
    assert_eq!(p.topic_alias_maximum, Some(64));
    assert_eq!(
        (
            p.retain_available,
            p.wildcard_subscription_available,
            p.subscription_identifier_available,
            p.shared_subscription_available
        ),
        (Some(1), Some(1), Some(1), Some(1))
    );
    // rumqttc sees the same through its own decoder.
    let (_c, ack) = Rumqtt5::connect(&node, "r5-connack").await?;
    assert_eq!(ack.code, r5::mqttbytes::v5::ConnectReturnCode::Success);
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_properties_reach_v5_subscribers_unchanged_with_ordo_id() -> Result {
    let node = TestNode::start().await?;
    let (mut sub5, _) = Rumqtt5::connect(&node, "props-sub5").await?;
    sub5.subscribe(filter("props/t", r5::mqttbytes::QoS::AtLeastOnce))
        .await?;
    let mut sub3 = Rumqtt::connect(node.mqtt, "props-sub3").await?;
    sub3.subscribe("props/t", rumqttc::QoS::AtLeastOnce).await?;

    let (publisher, _) = Rumqtt5::connect(&node, "props-pub").await?;
    let properties = r5::mqttbytes::v5::PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(3600),
        response_topic: Some("props/reply".into()),
        correlation_data: Some(Bytes::from_static(b"\x01\x02")),
        user_properties: vec![("b".into(), "2".into()), ("a".into(), "1".into())],
        content_type: Some("text/plain".into()),
        ..Default::default()
    };
    publisher
        .client
        .publish_with_properties(
            "props/t",
            r5::mqttbytes::QoS::AtLeastOnce,
            false,
            "hi",
            properties,
        )
        .await?;
    let got = sub5.next_publish().await?;
    assert_eq!(&got.payload[..], b"hi");
    let p = got.properties.context("no properties")?;
    assert_eq!(p.payload_format_indicator, Some(1));
    assert_eq!(p.response_topic.as_deref(), Some("props/reply"));
    assert_eq!(p.correlation_data.as_deref(), Some(&b"\x01\x02"[..]));
    assert_eq!(p.content_type.as_deref(), Some("text/plain"));
    let expiry = p.message_expiry_interval.context("no expiry")?;
    ensure!((3598..=3600).contains(&expiry), "remaining expiry {expiry}");
    // User properties in order, then the permanent id.
    assert_eq!(
        &p.user_properties[..2],
        &[("b".into(), "2".into()), ("a".into(), "1".into())]
    );
    let (key, id) = p.user_properties.get(2).context("no ordo-id")?;
    assert_eq!(key, "ordo-id");
    ensure!(id.parse::<u64>()? > 0, "{id}");
    // A 3.1.1 subscriber gets the same bytes.
    assert_eq!(&sub3.next_publish().await?.payload[..], b"hi");
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_options_no_local_retain_as_published_and_retain_handling() -> Result {
    let node = TestNode::start().await?;
    let (mut publisher, _) =
        RawMqtt::connect5(node.mqtt, connect5_packet("opt-pub", true, 0)).await?;
    publisher
        .send5(&Packet::Publish(publish5(
            "opt/r",
            b"kept",
            QoS::AtLeastOnce,
            1,
            true,
        )))
        .await?;
    assert_eq!(publisher.recv5().await?, Packet::PubAck(Ack::success(1)));

    let (mut c, _) = RawMqtt::connect5(node.mqtt, connect5_packet("opt-sub", true, 0)).await?;
    let opts = |rap: bool, rh: RetainHandling, no_local: bool| SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        no_local,
        retain_as_published: rap,
        retain_handling: rh,
    };
    // Retain handling 2: no retained message at subscribe.
    c.subscribe5(
        1,
        Properties::default(),
        &[("opt/+", opts(true, RetainHandling::DoNotSend, true))],
    )
    .await?;
    ensure!(c.recv5_within(Duration::from_millis(300)).await?.is_none());
    // Retain handling 1 on an existing subscription: still nothing.
    c.subscribe5(
        2,
        Properties::default(),
        &[("opt/+", opts(true, RetainHandling::SendIfNew, true))],
    )
    .await?;
    ensure!(c.recv5_within(Duration::from_millis(300)).await?.is_none());
    // Retain handling 1 on a new one, then 0: the retained message each time.
    for (pkid, f, rh) in [
        (3, "opt/#", RetainHandling::SendIfNew),
        (4, "opt/#", RetainHandling::SendAtSubscribe),
    ] {
        c.subscribe5(pkid, Properties::default(), &[(f, opts(false, rh, false))])
            .await?;
        let p = c.recv_publish5().await?;
        assert_eq!((&p.payload[..], p.retain), (&b"kept"[..], true));
    }
    c.send5(&Packet::Unsubscribe(v5::Unsubscribe {
        pkid: 5,
        properties: Properties::default(),
        filters: vec!["opt/#".into(), "none".into()],
    }))
    .await?;
    match c.recv5().await? {
        Packet::UnsubAck(u) => assert_eq!(
            u.reasons,
            [ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED]
        ),
        other => bail!("{other:?}"),
    }
    // Live retained publish: retain as published keeps RETAIN.
    publisher
        .send5(&Packet::Publish(publish5(
            "opt/r",
            b"live",
            QoS::AtLeastOnce,
            2,
            true,
        )))
        .await?;
    let p = c.recv_publish5().await?;
    assert_eq!((&p.payload[..], p.retain), (&b"live"[..], true));
    // No local: the subscriber's own publish does not come back.
    c.send5(&Packet::Publish(publish5(
        "opt/own",
        b"mine",
        QoS::AtMostOnce,
        0,
        false,
    )))
    .await?;
    publisher
        .send5(&Packet::Publish(publish5(
            "opt/x",
            b"other",
            QoS::AtMostOnce,
            0,
            false,
        )))
        .await?;
    let p = c.recv_publish5().await?;
    assert_eq!(&p.payload[..], b"other");
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_identifiers_are_echoed() -> Result {
    let node = TestNode::start().await?;
    let (mut c, _) = RawMqtt::connect5(node.mqtt, connect5_packet("subid", true, 0)).await?;
    let with_id = |id| Properties {
        subscription_identifiers: vec![id],
        ..Properties::default()
    };
    c.subscribe5(
        1,
        with_id(7),
        &[("sid/+", SubscriptionOptions::qos(QoS::AtMostOnce))],
    )
    .await?;
    c.subscribe5(
        2,
        with_id(300_000),
        &[("sid/#", SubscriptionOptions::qos(QoS::AtMostOnce))],
    )
    .await?;
    c.send5(&Packet::Publish(publish5(
        "sid/a",
        b"x",
        QoS::AtMostOnce,
        0,
        false,
    )))
    .await?;
    let p = c.recv_publish5().await?;
    assert_eq!(p.properties.subscription_identifiers, [7, 300_000]);
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_hands_each_message_to_one_member_round_robin() -> Result {
    let node = TestNode::start().await?;
    let mut members = Vec::new();
    for i in 0..2 {
        let (mut m, _) =
            RawMqtt::connect5(node.mqtt, connect5_packet(&format!("share-{i}"), true, 0)).await?;
        m.subscribe5(
            1,
            Properties::default(),
            &[("$share/g/sh/#", SubscriptionOptions::qos(QoS::AtLeastOnce))],
        )
        .await?;
        members.push(m);
    }
    let (mut all, _) = RawMqtt::connect5(node.mqtt, connect5_packet("share-all", true, 0)).await?;
    all.subscribe5(
        1,
        Properties::default(),
        &[("sh/#", SubscriptionOptions::qos(QoS::AtMostOnce))],
    )
    .await?;
    let (mut publisher, _) =
        RawMqtt::connect5(node.mqtt, connect5_packet("share-pub", true, 0)).await?;
    for i in 0..6u16 {
        publisher
            .send5(&Packet::Publish(publish5(
                "sh/t",
                format!("{i}").as_bytes(),
                QoS::AtLeastOnce,
                i + 1,
                false,
            )))
            .await?;
        assert_eq!(
            publisher.recv5().await?,
            Packet::PubAck(Ack::success(i + 1))
        );
    }
    let mut seen = Vec::new();
    for m in &mut members {
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(String::from_utf8(
                m.recv_publish5().await?.payload.to_vec(),
            )?);
        }
        ensure!(
            m.recv5_within(Duration::from_millis(200)).await?.is_none(),
            "a fourth message"
        );
        seen.push(got);
    }
    // Alternating, in id order within each member.
    assert_eq!(seen, [["0", "2", "4"], ["1", "3", "5"]]);
    for i in 0..6 {
        assert_eq!(
            all.recv_publish5().await?.payload,
            format!("{i}").into_bytes()
        );
    }
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_messages_are_not_delivered() -> Result {
    let node = TestNode::start().await?;
    let (mut publisher, _) =
        RawMqtt::connect5(node.mqtt, connect5_packet("exp-pub", true, 0)).await?;
    let mut p = publish5("exp/t", b"short", QoS::AtLeastOnce, 1, true);
    p.properties.message_expiry_interval = Some(1);
    publisher.send5(&Packet::Publish(p)).await?;
    assert_eq!(publisher.recv5().await?, Packet::PubAck(Ack::success(1)));
    let mut p = publish5("exp/u", b"long", QoS::AtLeastOnce, 2, true);
    p.properties.message_expiry_interval = Some(100);
    publisher.send5(&Packet::Publish(p)).await?;
    assert_eq!(publisher.recv5().await?, Packet::PubAck(Ack::success(2)));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (mut c, _) = RawMqtt::connect5(node.mqtt, connect5_packet("exp-sub", true, 0)).await?;
    c.subscribe5(
        1,
        Properties::default(),
        &[("exp/#", SubscriptionOptions::qos(QoS::AtLeastOnce))],
    )
    .await?;
    let got = c.recv_publish5().await?;
    assert_eq!(&got.payload[..], b"long");
    let left = got
        .properties
        .message_expiry_interval
        .context("no expiry")?;
    ensure!((97..=98).contains(&left), "remaining {left}");
    ensure!(
        c.recv5_within(Duration::from_millis(300)).await?.is_none(),
        "expired message delivered"
    );
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_aliases_both_directions() -> Result {
    let node = TestNode::start().await?;
    let mut connect = connect5_packet("alias-sub", true, 0);
    connect.properties.topic_alias_maximum = Some(2);
    let (mut sub, _) = RawMqtt::connect5(node.mqtt, connect).await?;
    sub.subscribe5(
        1,
        Properties::default(),
        &[("al/#", SubscriptionOptions::qos(QoS::AtMostOnce))],
    )
    .await?;
    let (mut publisher, _) =
        RawMqtt::connect5(node.mqtt, connect5_packet("alias-pub", true, 0)).await?;
    let mut first = publish5("al/long/topic", b"1", QoS::AtMostOnce, 0, false);
    first.properties.topic_alias = Some(5);
    publisher.send5(&Packet::Publish(first)).await?;
    let mut second = publish5("", b"2", QoS::AtMostOnce, 0, false);
    second.properties.topic_alias = Some(5);
    publisher.send5(&Packet::Publish(second)).await?;
    // Outbound: the topic with alias 1 once, then the alias alone.
    let p = sub.recv_publish5().await?;
    assert_eq!(
        (p.topic.as_str(), p.properties.topic_alias, &p.payload[..]),
        ("al/long/topic", Some(1), &b"1"[..])
    );
    let p = sub.recv_publish5().await?;
    assert_eq!(
        (p.topic.as_str(), p.properties.topic_alias, &p.payload[..]),
        ("", Some(1), &b"2"[..])
    );
    // An unknown alias is a protocol error; one above the maximum is 0x94.
    for (alias, reason) in [
        (6, ReasonCode::PROTOCOL_ERROR),
        (65, ReasonCode::TOPIC_ALIAS_INVALID),
    ] {
        let (mut bad, _) =
            RawMqtt::connect5(node.mqtt, connect5_packet("alias-bad", true, 0)).await?;
        let mut p = publish5("", b"x", QoS::AtMostOnce, 0, false);
        p.properties.topic_alias = Some(alias);
        bad.send5(&Packet::Publish(p)).await?;
        let seen = bad.expect_closed5(CLOSE_WITHIN).await?;
        assert_eq!(seen, [Packet::Disconnect(Disconnect::reason(reason))]);
    }
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_maximum_both_directions() -> Result {
    let node = TestNode::start_with(|c| c.mqtt_inflight = 2).await?;
    // Ours: a third unacknowledged QoS 1 publish closes with 0x93.
    let (mut c, ack) = RawMqtt::connect5(node.mqtt, connect5_packet("rm-in", true, 0)).await?;
    assert_eq!(ack.properties.receive_maximum, Some(2));
    let mut bytes = bytes::BytesMut::new();
    for i in 1..=3 {
        v5::encode(
            &Packet::Publish(publish5("rm/t", b"x", QoS::AtLeastOnce, i, false)),
            &mut bytes,
        )?;
    }
    c.send_bytes(&bytes).await?;
    let seen = c.expect_closed5(CLOSE_WITHIN).await?;
    assert_eq!(
        seen.last(),
        Some(&Packet::Disconnect(Disconnect::reason(
            ReasonCode::RECEIVE_MAXIMUM_EXCEEDED
        ))),
        "{seen:?}"
    );

    // The client's: receive maximum 1 means one unacknowledged delivery at a time.
    let node = TestNode::start().await?;
    let mut connect = connect5_packet("rm-out", true, 0);
    connect.properties.receive_maximum = Some(1);
    let (mut sub, _) = RawMqtt::connect5(node.mqtt, connect).await?;
    sub.subscribe5(
        1,
        Properties::default(),
        &[("rm/t", SubscriptionOptions::qos(QoS::AtLeastOnce))],
    )
    .await?;
    let (mut publisher, _) =
        RawMqtt::connect5(node.mqtt, connect5_packet("rm-pub", true, 0)).await?;
    for i in 1..=2 {
        publisher
            .send5(&Packet::Publish(publish5(
                "rm/t",
                b"x",
                QoS::AtLeastOnce,
                i,
                false,
            )))
            .await?;
        assert_eq!(publisher.recv5().await?, Packet::PubAck(Ack::success(i)));
    }
    let first = match sub.recv5().await? {
        Packet::Publish(p) => p,
        other => bail!("{other:?}"),
    };
    ensure!(
        sub.recv5_within(Duration::from_millis(300))
            .await?
            .is_none(),
        "second delivery before PUBACK"
    );
    sub.send5(&Packet::PubAck(Ack::success(first.pkid))).await?;
    sub.recv_publish5().await?;
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_maximum_packet_size_drops_larger_deliveries() -> Result {
    let node = TestNode::start().await?;
    let mut connect = connect5_packet("mps-sub", true, 0);
    connect.properties.maximum_packet_size = Some(100);
    let (mut sub, _) = RawMqtt::connect5(node.mqtt, connect).await?;
    sub.subscribe5(
        1,
        Properties::default(),
        &[("mps/t", SubscriptionOptions::qos(QoS::AtLeastOnce))],
    )
    .await?;
    let (mut publisher, _) =
        RawMqtt::connect5(node.mqtt, connect5_packet("mps-pub", true, 0)).await?;
    publisher
        .send5(&Packet::Publish(publish5(
            "mps/t",
            &[b'x'; 200],
            QoS::AtMostOnce,
            0,
            false,
        )))
        .await?;
    publisher
        .send5(&Packet::Publish(publish5(
            "mps/t",
            b"small",
            QoS::AtMostOnce,
            0,
            false,
        )))
        .await?;
    assert_eq!(&sub.recv_publish5().await?.payload[..], b"small");
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_packets_get_disconnect_with_reason_code() -> Result {
    let node = TestNode::start().await?;
    // (bytes after CONNECT, expected reason): duplicate property; property not
    // allowed on PUBLISH; PUBACK reason code of PUBREL; retain handling 3.
    let cases: [(&[u8], ReasonCode); 4] = [
        (
            &[0x30, 14, 0, 1, b't', 10, 2, 0, 0, 0, 1, 2, 0, 0, 0, 1],
            ReasonCode::PROTOCOL_ERROR,
        ),
        (
            &[0x30, 9, 0, 1, b't', 5, 0x11, 0, 0, 0, 1],
            ReasonCode::MALFORMED_PACKET,
        ),
        (&[0x40, 3, 0, 1, 0x92], ReasonCode::PROTOCOL_ERROR),
        (
            &[0x82, 7, 0, 1, 0, 0, 1, b'a', 0x30],
            ReasonCode::PROTOCOL_ERROR,
        ),
    ];
    for (i, (bytes, reason)) in cases.iter().enumerate() {
        let (mut c, _) =
            RawMqtt::connect5(node.mqtt, connect5_packet(&format!("bad-{i}"), true, 0)).await?;
        c.send_bytes(bytes).await?;
        let seen = c.expect_closed5(CLOSE_WITHIN).await?;
        assert_eq!(
            seen,
            [Packet::Disconnect(Disconnect::reason(*reason))],
            "case {i}"
        );
    }
    // A malformed level-5 CONNECT gets a CONNACK with the reason code.
    let mut c = RawMqtt::tcp(node.mqtt).await?;
    c.send_bytes(&[
        0x10, 17, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 0, 3, 0x21, 0, 0, 0, 1, b'c',
    ])
    .await?;
    let seen = c.expect_closed5(CLOSE_WITHIN).await?;
    match seen.as_slice() {
        [Packet::ConnAck(a)] => assert_eq!(a.reason, ReasonCode::PROTOCOL_ERROR),
        other => bail!("{other:?}"),
    }
    // Session expiry on DISCONNECT after 0 on CONNECT (section 3.14.2.2.2).
    let (mut c, _) = RawMqtt::connect5(node.mqtt, connect5_packet("bad-exp", true, 0)).await?;
    c.send5(&Packet::Disconnect(Disconnect {
        reason: ReasonCode::SUCCESS,
        properties: Properties {
            session_expiry_interval: Some(5),
            ..Properties::default()
        },
    }))
    .await?;
    let seen = c.expect_closed5(CLOSE_WITHIN).await?;
    assert_eq!(
        seen,
        [Packet::Disconnect(Disconnect::reason(
            ReasonCode::PROTOCOL_ERROR
        ))]
    );
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_keeps_then_drops_the_session() -> Result {
    let node = TestNode::start().await?;
    let mut connect = connect5_packet("sess", false, 0);
    connect.properties.session_expiry_interval = Some(1);
    let (mut c, ack) = RawMqtt::connect5(node.mqtt, connect.clone()).await?;
    ensure!(!ack.session_present);
    c.subscribe5(
        1,
        Properties::default(),
        &[("sess/t", SubscriptionOptions::qos(QoS::AtLeastOnce))],
    )
    .await?;
    c.send5(&Packet::Disconnect(Disconnect::default())).await?;
    drop(c);
    let (mut publisher, _) =
        RawMqtt::connect5(node.mqtt, connect5_packet("sess-pub", true, 0)).await?;
    publisher
        .send5(&Packet::Publish(publish5(
            "sess/t",
            b"missed",
            QoS::AtLeastOnce,
            1,
            false,
        )))
        .await?;
    assert_eq!(publisher.recv5().await?, Packet::PubAck(Ack::success(1)));
    let (mut c, ack) = RawMqtt::connect5(node.mqtt, connect.clone()).await?;
    ensure!(ack.session_present, "session gone within its expiry");
    assert_eq!(&c.recv_publish5().await?.payload[..], b"missed");
    c.send5(&Packet::Disconnect(Disconnect::default())).await?;
    drop(c);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_c, ack) = RawMqtt::connect5(node.mqtt, connect).await?;
    ensure!(!ack.session_present, "session kept past its expiry");
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_delay_waits_and_a_reconnect_cancels_it() -> Result {
    let node = TestNode::start().await?;
    let (mut watcher, _) =
        RawMqtt::connect5(node.mqtt, connect5_packet("wd-watch", true, 0)).await?;
    watcher
        .subscribe5(
            1,
            Properties::default(),
            &[("wd/#", SubscriptionOptions::qos(QoS::AtMostOnce))],
        )
        .await?;
    let with_will = |id: &str, topic: &str| {
        let mut c = connect5_packet(id, true, 0);
        c.properties.session_expiry_interval = Some(60);
        c.will = Some(v5::Will {
            topic: topic.into(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Properties {
                will_delay_interval: Some(1),
                ..Properties::default()
            },
        });
        c
    };
    // Dropped, not reconnected: the will arrives after about a second.
    let (c, _) = RawMqtt::connect5(node.mqtt, with_will("wd-a", "wd/a")).await?;
    let dropped = Instant::now();
    drop(c);
    // Dropped, then back within the delay: no will.
    let (c, _) = RawMqtt::connect5(node.mqtt, with_will("wd-b", "wd/b")).await?;
    drop(c);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_back, _) = RawMqtt::connect5(node.mqtt, with_will("wd-b", "wd/b")).await?;
    let p = watcher.recv_publish5().await?;
    assert_eq!(p.topic, "wd/a");
    ensure!(
        dropped.elapsed() >= Duration::from_millis(900),
        "will came early"
    );
    ensure!(
        watcher
            .recv5_within(Duration::from_millis(1500))
            .await?
            .is_none(),
        "cancelled will published"
    );
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_qos2_both_ways_and_dollar_topics_skip_wildcards() -> Result {
    let node = TestNode::start().await?;
    let (mut sub, _) = Rumqtt5::connect(&node, "r5-q2-sub").await?;
    sub.subscribe(filter("#", r5::mqttbytes::QoS::ExactlyOnce))
        .await?;
    sub.subscribe(filter("+/sys", r5::mqttbytes::QoS::ExactlyOnce))
        .await?;
    let (mut publisher, _) = Rumqtt5::connect(&node, "r5-q2-pub").await?;
    publisher
        .client
        .publish("$SYS/sys", r5::mqttbytes::QoS::ExactlyOnce, false, "hidden")
        .await?;
    publisher
        .client
        .publish("q2/t", r5::mqttbytes::QoS::ExactlyOnce, false, "exact")
        .await?;
    publisher
        .wait_for(|p| matches!(p, r5::mqttbytes::v5::Packet::PubComp(_)).then_some(()))
        .await?;
    let got = sub.next_publish().await?;
    assert_eq!(
        (&got.topic[..], &got.payload[..], got.qos),
        (&b"q2/t"[..], &b"exact"[..], r5::mqttbytes::QoS::ExactlyOnce)
    );
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_configuration_for_interoperability_suites() -> Result {
    let node = TestNode::start_with(|c| {
        c.mqtt_max_keep_alive = 60;
        c.mqtt_deny_subscribe = vec!["test/nosubscribe".into()];
        c.mqtt_ordo_id = false;
        c.mqtt_default_session_expiry = 60;
    })
    .await?;
    // No Session Expiry Interval on CONNECT: the configured default keeps the session.
    let (mut s, _) = RawMqtt::connect5(node.mqtt, connect5_packet("cfg-sess", true, 0)).await?;
    s.subscribe5(
        1,
        Properties::default(),
        &[("cfg/t", SubscriptionOptions::qos(QoS::AtLeastOnce))],
    )
    .await?;
    s.send5(&Packet::Publish(publish5(
        "cfg/t",
        b"x",
        QoS::AtMostOnce,
        0,
        false,
    )))
    .await?;
    let p = s.recv_publish5().await?;
    ensure!(p.properties.user_properties.is_empty(), "{p:?}");
    s.send5(&Packet::Disconnect(Disconnect::default())).await?;
    drop(s);
    let (_s, ack) = RawMqtt::connect5(node.mqtt, connect5_packet("cfg-sess", false, 0)).await?;
    ensure!(ack.session_present, "default session expiry not applied");
    let (mut c, ack) = RawMqtt::connect5(node.mqtt, connect5_packet("ska", true, 120)).await?;
    assert_eq!(ack.properties.server_keep_alive, Some(60));
    let (_ok, ack) = RawMqtt::connect5(node.mqtt, connect5_packet("ska-ok", true, 30)).await?;
    assert_eq!(ack.properties.server_keep_alive, None);
    let reasons = c
        .subscribe5(
            1,
            Properties::default(),
            &[
                (
                    "test/nosubscribe",
                    SubscriptionOptions::qos(QoS::AtLeastOnce),
                ),
                ("test/ok", SubscriptionOptions::qos(QoS::AtLeastOnce)),
            ],
        )
        .await?;
    assert_eq!(
        reasons,
        [ReasonCode::UNSPECIFIED_ERROR, ReasonCode::GRANTED_QOS_1]
    );
    // 3.1.1: the refusal is 0x80.
    let (mut old, _) = RawMqtt::connect(node.mqtt, "ska-v3", true, 0).await?;
    let codes = old
        .subscribe(1, &[("test/nosubscribe", QoS::AtMostOnce)])
        .await?;
    assert_eq!(codes, [ordo_common::mqtt::SubAckCode::Failure]);
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_delivery_resumes_on_reconnect_with_publish_or_pubrel() -> Result {
    let node = TestNode::start().await?;
    let mut connect = connect5_packet("q2-resume", false, 0);
    connect.properties.session_expiry_interval = Some(60);
    let (mut sub, _) = RawMqtt::connect5(node.mqtt, connect.clone()).await?;
    let opts = SubscriptionOptions::qos(QoS::ExactlyOnce);
    sub.subscribe5(1, Properties::default(), &[("q2r/t", opts)])
        .await?;
    let (mut publisher, _) =
        RawMqtt::connect5(node.mqtt, connect5_packet("q2r-pub", true, 0)).await?;
    for (i, body) in [(1u16, &b"released"[..]), (2, b"unreceived")] {
        publisher
            .send5(&Packet::Publish(publish5(
                "q2r/t",
                body,
                QoS::ExactlyOnce,
                i,
                false,
            )))
            .await?;
        assert_eq!(publisher.recv5().await?, Packet::PubRec(Ack::success(i)));
        publisher.send5(&Packet::PubRel(Ack::success(i))).await?;
        assert_eq!(publisher.recv5().await?, Packet::PubComp(Ack::success(i)));
    }
    // PUBREC the first delivery only, then vanish before PUBCOMP.
    let first = match sub.recv5().await? {
        Packet::Publish(p) => p,
        other => bail!("{other:?}"),
    };
    let second = match sub.recv5().await? {
        Packet::Publish(p) => p,
        other => bail!("{other:?}"),
    };
    sub.send5(&Packet::PubRec(Ack::success(first.pkid))).await?;
    assert_eq!(sub.recv5().await?, Packet::PubRel(Ack::success(first.pkid)));
    drop(sub);
    // [MQTT-4.4.0-1]: PUBREL again for the first, PUBLISH with DUP for the second.
    let (mut sub, ack) = RawMqtt::connect5(node.mqtt, connect).await?;
    ensure!(ack.session_present);
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(sub.recv5().await?);
    }
    ensure!(
        seen.contains(&Packet::PubRel(Ack::success(first.pkid))),
        "no PUBREL resent: {seen:?}"
    );
    let again = seen
        .iter()
        .find_map(|p| match p {
            Packet::Publish(p) => Some(p.clone()),
            _ => None,
        })
        .context("no PUBLISH resent")?;
    assert_eq!(
        (again.pkid, again.dup, &again.payload[..]),
        (second.pkid, true, &b"unreceived"[..])
    );
    node.shutdown().await;
    Ok(())
}
