//! Bad input closes only the offending connection: a healthy MQTT client and a
//! healthy WAMP client on the same node keep publishing and receiving throughout.

use anyhow::{bail, ensure, Context};
use ordo_common::mqtt::{ConnectReturnCode, Packet, QoS as RawQoS};
use ordo_common::wamp::{Dict, Message, Serializer, Value};
use ordo_tests::mqtt_raw::{publish_packet, RawMqtt};
use ordo_tests::wamp_client::{dict, frame, WampClient, REALM};
use ordo_tests::TestNode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as WsMessage;

type Result = anyhow::Result<()>;

const CLOSE_WITHIN: Duration = Duration::from_secs(5);

/// Two well-behaved clients that publish to themselves in a loop and count round trips.
struct Healthy {
    counts: [watch::Receiver<u64>; 2],
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<Result>>,
}

impl Healthy {
    async fn start(node: &TestNode) -> anyhow::Result<Healthy> {
        let stop = Arc::new(AtomicBool::new(false));
        let (mqtt_tx, mqtt_rx) = watch::channel(0u64);
        let (wamp_tx, wamp_rx) = watch::channel(0u64);

        let (mut client, _) = RawMqtt::connect(node.mqtt, "healthy", true, 30).await?;
        client
            .subscribe(1, &[("healthy/t", RawQoS::AtLeastOnce)])
            .await?;
        let flag = stop.clone();
        let mqtt_task = tokio::spawn(async move {
            let mut n = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let pkid = (n % 60_000) as u16 + 1;
                let payload = n.to_be_bytes();
                client
                    .send(&publish_packet(
                        "healthy/t",
                        &payload,
                        RawQoS::AtLeastOnce,
                        pkid,
                        false,
                    ))
                    .await?;
                // The PUBACK and our own delivery may come in either order.
                let (mut acked, mut delivered) = (false, false);
                while !(acked && delivered) {
                    match client.recv().await? {
                        Packet::PubAck(id) if id == pkid => acked = true,
                        Packet::Publish(p) if p.payload[..] == payload => {
                            client.send(&Packet::PubAck(p.pkid)).await?;
                            delivered = true;
                        }
                        other => bail!("healthy MQTT client got {other:?}"),
                    }
                }
                n += 1;
                let _ = mqtt_tx.send(n);
            }
            client.disconnect().await
        });

        let mut wamp = WampClient::join(node.wamp, Serializer::Json, REALM).await?;
        wamp.subscribe("healthy.w", Dict::new()).await?;
        let flag = stop.clone();
        let wamp_task = tokio::spawn(async move {
            let mut n = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let id = wamp
                    .publish_acked_with(
                        "healthy.w",
                        dict([("exclude_me", Value::Boolean(false))]),
                        vec![Value::from(n)],
                    )
                    .await?;
                let e = wamp.next_event().await?;
                ensure!(
                    e.publication == id,
                    "healthy WAMP client: event {e:?} for {id}"
                );
                n += 1;
                let _ = wamp_tx.send(n);
            }
            wamp.leave().await
        });
        Ok(Healthy {
            counts: [mqtt_rx, wamp_rx],
            stop,
            tasks: vec![mqtt_task, wamp_task],
        })
    }

    /// Wait until both clients complete three more round trips.
    async fn assert_alive(&mut self) -> Result {
        for (name, count) in ["mqtt", "wamp"].iter().zip(self.counts.iter_mut()) {
            let target = *count.borrow() + 3;
            tokio::time::timeout(Duration::from_secs(15), count.wait_for(|n| *n >= target))
                .await
                .with_context(|| format!("healthy {name} client stalled"))?
                .with_context(|| format!("healthy {name} client failed"))?;
        }
        Ok(())
    }

    async fn stop(self) -> Result {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .context("healthy client did not stop")???;
        }
        Ok(())
    }
}

/// Run `bad` between two liveness checks of the healthy clients.
async fn around_healthy<F, Fut>(node: &TestNode, bad: F) -> Result
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result>,
{
    let mut healthy = Healthy::start(node).await?;
    healthy.assert_alive().await?;
    bad().await?;
    healthy.assert_alive().await?;
    healthy.stop().await
}

/// A subscriber to `filter` whose next message must be the marker on `marker_topic`.
async fn assert_nothing_before_marker(
    node: &TestNode,
    sub: &mut RawMqtt,
    marker_topic: &str,
) -> Result {
    let (mut publisher, _) = RawMqtt::connect(node.mqtt, "marker-pub", true, 0).await?;
    publisher
        .publish_acked(marker_topic, b"marker", 1, false)
        .await?;
    let p = sub.recv_publish().await?;
    ensure!(
        p.topic == marker_topic && &p.payload[..] == b"marker",
        "the bad publish got through: {p:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_garbage_bytes_close_the_connection() -> Result {
    let owned = TestNode::start().await?;
    let node = &owned;
    let result = around_healthy(node, move || async move {
        // Before CONNECT: a reserved packet type.
        let mut raw = RawMqtt::tcp(node.mqtt).await?;
        raw.send_bytes(b"\x00\x05garbage\xff\xff").await?;
        let seen = raw.expect_closed(CLOSE_WITHIN).await?;
        ensure!(
            seen.is_empty(),
            "no reply expected to garbage, got {seen:?}"
        );
        // Before CONNECT: a valid packet that is not CONNECT.
        let mut raw = RawMqtt::tcp(node.mqtt).await?;
        raw.send(&Packet::PingReq).await?;
        raw.expect_closed(CLOSE_WITHIN).await?;
        // After CONNECT: a reserved packet type, then a malformed remaining length.
        let (mut raw, _) = RawMqtt::connect(node.mqtt, "garbage-1", true, 0).await?;
        raw.send_bytes(&[0xf0, 0x00]).await?;
        raw.expect_closed(CLOSE_WITHIN).await?;
        let (mut raw, _) = RawMqtt::connect(node.mqtt, "garbage-2", true, 0).await?;
        raw.send_bytes(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01])
            .await?;
        raw.expect_closed(CLOSE_WITHIN).await?;
        Ok(())
    })
    .await;
    owned.shutdown().await;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_oversized_packet_closes_the_connection() -> Result {
    let owned = TestNode::start_with(|c| c.max_packet_size = 64 * 1024).await?;
    let node = &owned;
    let result = around_healthy(node, move || async move {
        let (mut sub, _) = RawMqtt::connect(node.mqtt, "big-sub", true, 0).await?;
        sub.subscribe(1, &[("big/t", RawQoS::AtLeastOnce)]).await?;
        // Just under the limit is fine.
        let (mut ok, _) = RawMqtt::connect(node.mqtt, "big-ok", true, 0).await?;
        let fits = vec![7u8; 60 * 1024];
        ok.publish_acked("big/t", &fits, 1, false).await?;
        ensure!(sub.recv_publish().await?.payload.len() == fits.len());
        // Over the limit: closed, not stored, not delivered.
        let (mut big, _) = RawMqtt::connect(node.mqtt, "big-bad", true, 0).await?;
        let packet = publish_packet(
            "big/t",
            &vec![9u8; 100 * 1024],
            RawQoS::AtLeastOnce,
            1,
            false,
        );
        // The server may close while we are still writing.
        let _ = big.send(&packet).await;
        let seen = big.expect_closed(CLOSE_WITHIN).await?;
        ensure!(
            !seen.contains(&Packet::PubAck(1)),
            "oversized publish acknowledged"
        );
        assert_nothing_before_marker(node, &mut sub, "big/t").await
    })
    .await;
    owned.shutdown().await;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_publish_to_wildcard_topic_closes_the_connection() -> Result {
    let owned = TestNode::start().await?;
    let node = &owned;
    let result = around_healthy(node, move || async move {
        let (mut sub, _) = RawMqtt::connect(node.mqtt, "wild-sub", true, 0).await?;
        sub.subscribe(1, &[("wt/#", RawQoS::AtLeastOnce)]).await?;
        for (i, topic) in ["wt/+", "wt/#", "wt/+/x"].iter().enumerate() {
            let (mut bad, _) =
                RawMqtt::connect(node.mqtt, &format!("wild-bad-{i}"), true, 0).await?;
            // The codec refuses to encode this, so write it by hand: QoS 1, pkid 1, payload "x".
            let mut bytes = vec![0x32, (2 + topic.len() + 2 + 1) as u8];
            bytes.extend_from_slice(&(topic.len() as u16).to_be_bytes());
            bytes.extend_from_slice(topic.as_bytes());
            bytes.extend_from_slice(&[0x00, 0x01, b'x']);
            bad.send_bytes(&bytes).await?;
            let seen = bad.expect_closed(CLOSE_WITHIN).await?;
            ensure!(seen.is_empty(), "{topic}: expected no reply, got {seen:?}");
        }
        assert_nothing_before_marker(node, &mut sub, "wt/marker").await
    })
    .await;
    owned.shutdown().await;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_protocol_level_6_gets_connack_return_code_1() -> Result {
    let owned = TestNode::start().await?;
    let node = &owned;
    let result = around_healthy(node, move || async move {
        let mut raw = RawMqtt::tcp(node.mqtt).await?;
        // A CONNECT for a future level 6 (levels 3, 4 and 5 are served).
        let body: &[u8] = &[
            0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06, 0x02, 0x00, 0x3c, 0x00, 0x00, 0x02, b'v',
            b'6',
        ];
        let mut bytes = vec![0x10, body.len() as u8];
        bytes.extend_from_slice(body);
        raw.send_bytes(&bytes).await?;
        match raw.recv().await? {
            Packet::ConnAck(ack) => {
                ensure!(
                    ack.code == ConnectReturnCode::UnacceptableProtocolVersion,
                    "{ack:?}"
                );
                ensure!(!ack.session_present);
            }
            other => bail!("expected CONNACK, got {other:?}"),
        }
        raw.expect_closed(CLOSE_WITHIN).await?;
        Ok(())
    })
    .await;
    owned.shutdown().await;
    result
}

/// Assert the router answered with ABORT (reason `reason`) and closed the connection.
async fn expect_abort(client: &mut WampClient, reason: &str) -> Result {
    let seen = client.expect_closed(CLOSE_WITHIN).await?;
    match seen.last() {
        Some(Message::Abort { reason: r, .. }) if r == reason => Ok(()),
        _ => bail!("expected ABORT {reason} before the close, got {seen:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wamp_bad_json_is_aborted() -> Result {
    let owned = TestNode::start().await?;
    let node = &owned;
    let result = around_healthy(node, move || async move {
        // Before HELLO.
        let mut c = WampClient::unjoined(node.wamp, Serializer::Json).await?;
        c.send_frame(WsMessage::Text("[1, \"realm1\", {".into()))
            .await?;
        expect_abort(&mut c, "wamp.error.protocol_violation").await?;
        // After WELCOME.
        let mut c = WampClient::join(node.wamp, Serializer::Json, REALM).await?;
        c.send_frame(WsMessage::Text("this is not json".into()))
            .await?;
        expect_abort(&mut c, "wamp.error.protocol_violation").await?;
        // Not an array.
        let mut c = WampClient::join(node.wamp, Serializer::Json, REALM).await?;
        c.send_frame(WsMessage::Text("{\"16\": 1}".into())).await?;
        expect_abort(&mut c, "wamp.error.protocol_violation").await?;
        // msgpack garbage.
        let mut c = WampClient::join(node.wamp, Serializer::MsgPack, REALM).await?;
        c.send_frame(WsMessage::Binary(vec![0xc1, 0xff, 0x00].into()))
            .await?;
        expect_abort(&mut c, "wamp.error.protocol_violation").await
    })
    .await;
    owned.shutdown().await;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wamp_unknown_message_code_is_aborted() -> Result {
    let owned = TestNode::start().await?;
    let node = &owned;
    let result = around_healthy(node, move || async move {
        for ser in [Serializer::Json, Serializer::MsgPack, Serializer::Cbor] {
            let mut c = WampClient::join(node.wamp, ser, REALM).await?;
            let bytes = match ser {
                Serializer::Json => b"[999, 1, {}]".to_vec(),
                Serializer::MsgPack => vec![0x93, 0xcd, 0x03, 0xe7, 0x01, 0x80],
                Serializer::Cbor => vec![0x83, 0x19, 0x03, 0xe7, 0x01, 0xa0],
            };
            c.send_frame(frame(ser, bytes)?).await?;
            expect_abort(&mut c, "wamp.error.protocol_violation").await?;
        }
        // A message only a router may send (EVENT) is a protocol violation too.
        let mut c = WampClient::join(node.wamp, Serializer::Json, REALM).await?;
        c.send(&Message::Event {
            subscription: 1,
            publication: 1,
            details: Dict::new(),
            args: vec![],
            kwargs: Dict::new(),
        })
        .await?;
        expect_abort(&mut c, "wamp.error.protocol_violation").await
    })
    .await;
    owned.shutdown().await;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wamp_two_megabyte_frame_closes_the_connection() -> Result {
    let owned = TestNode::start().await?;
    let node = &owned;
    let result = around_healthy(node, move || async move {
        let mut sub = WampClient::join(node.wamp, Serializer::Json, REALM).await?;
        sub.subscribe("huge.t", Dict::new()).await?;
        let mut c = WampClient::join(node.wamp, Serializer::Json, REALM).await?;
        let huge = "x".repeat(2 << 20);
        let text = format!("[16, 1, {{\"acknowledge\": true}}, \"huge.t\", [\"{huge}\"]]");
        // The router may close while the frame is still being written.
        let _ = c.send_frame(WsMessage::Text(text.into())).await;
        let seen = c.expect_closed(CLOSE_WITHIN).await?;
        ensure!(
            !seen.iter().any(|m| matches!(m, Message::Published { .. })),
            "a 2 MB publish was accepted: {seen:?}"
        );
        // Nothing reached the subscriber: the next event is the marker.
        let mut publisher = WampClient::join(node.wamp, Serializer::Json, REALM).await?;
        let marker = publisher
            .publish_acked("huge.t", vec![Value::from("m")])
            .await?;
        let e = sub.next_event().await?;
        ensure!(e.publication == marker, "the huge publish got through");
        Ok(())
    })
    .await;
    owned.shutdown().await;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wamp_invalid_request_gets_error_and_session_survives() -> Result {
    let owned = TestNode::start().await?;
    let node = &owned;
    let mut c = WampClient::join(node.wamp, Serializer::Json, REALM).await?;
    // SUBSCRIBE with a bad `match` value: ERROR for request 7, not ABORT.
    c.send_frame(WsMessage::Text(
        "[32, 7, {\"match\": \"regex\"}, \"a.b\"]".into(),
    ))
    .await?;
    match c.recv().await? {
        Message::Error { request: 7, .. } => {}
        other => bail!("expected ERROR for request 7, got {other:?}"),
    }
    // The session still works.
    c.subscribe("ok.t", Dict::new()).await?;
    let id = c
        .publish_acked_with(
            "ok.t",
            dict([("exclude_me", Value::Boolean(false))]),
            vec![Value::from(1)],
        )
        .await?;
    assert_eq!(c.next_event().await?.publication, id);
    owned.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_before_connect_and_hello() -> Result {
    let owned = TestNode::start().await?;
    let node = &owned;
    let result = around_healthy(node, move || async move {
        // Neither CONNECT nor HELLO: the router gives up after its 10 s handshake timeout.
        let wait = Duration::from_secs(20);
        let mut mqtt = RawMqtt::tcp(node.mqtt).await?;
        let mut wamp = WampClient::unjoined(node.wamp, Serializer::Json).await?;
        let (m, w) = tokio::join!(mqtt.expect_closed(wait), wamp.expect_closed(wait));
        ensure!(m?.is_empty(), "MQTT: nothing expected before the close");
        w?;
        Ok(())
    })
    .await;
    owned.shutdown().await;
    result
}
