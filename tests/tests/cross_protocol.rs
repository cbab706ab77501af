//! One total order across MQTT and WAMP, and how payloads cross between them.

use anyhow::{bail, ensure, Context};
use ordo_common::mqtt::{Packet, QoS as RawQoS};
use ordo_common::wamp::value::{from_json, to_json};
use ordo_common::wamp::{Dict, Serializer, Value};
use ordo_tests::mqtt_raw::{publish_packet, RawMqtt};
use ordo_tests::wamp_client::{dict, WampClient, REALM};
use ordo_tests::{Rumqtt, TestNode};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

type Result = anyhow::Result<()>;

const PER_PUBLISHER: u64 = 300;
const PUBLISHERS: [&str; 4] = ["m1", "m2", "w1", "w2"];
const TOTAL: usize = PER_PUBLISHER as usize * PUBLISHERS.len();

/// A message's identity: (publisher name, sequence number).
type Key = (String, u64);

fn key_of(json: &serde_json::Value) -> anyhow::Result<Key> {
    let p = json["p"]
        .as_str()
        .with_context(|| format!("no p in {json}"))?;
    let s = json["s"]
        .as_u64()
        .with_context(|| format!("no s in {json}"))?;
    Ok((p.to_owned(), s))
}

fn key_of_bytes(bytes: &[u8]) -> anyhow::Result<Key> {
    key_of(&serde_json::from_slice(bytes).context("MQTT payload is not JSON")?)
}

fn body(publisher: &str, seq: u64) -> serde_json::Value {
    json!({"p": publisher, "s": seq})
}

async fn raw_mqtt_publisher(node_mqtt: std::net::SocketAddr, name: &'static str) -> Result {
    let (mut client, _) = RawMqtt::connect(node_mqtt, &format!("order-{name}"), true, 0).await?;
    let topic = format!("order/{name}");
    let mut acked = 0u64;
    for seq in 0..PER_PUBLISHER {
        let payload = body(name, seq).to_string();
        let pkid = seq as u16 + 1;
        client.queue(&publish_packet(
            &topic,
            payload.as_bytes(),
            RawQoS::AtLeastOnce,
            pkid,
            false,
        ))?;
        // Keep up to 32 in flight.
        if seq % 32 == 31 {
            client.flush().await?;
        }
        while seq + 1 - acked > 32 {
            client.flush().await?;
            match client.recv().await? {
                Packet::PubAck(id) if u64::from(id) == acked + 1 => acked += 1,
                other => bail!("{name}: expected PUBACK {}, got {other:?}", acked + 1),
            }
        }
    }
    client.flush().await?;
    while acked < PER_PUBLISHER {
        match client.recv().await? {
            Packet::PubAck(id) if u64::from(id) == acked + 1 => acked += 1,
            other => bail!("{name}: expected PUBACK {}, got {other:?}", acked + 1),
        }
    }
    client.disconnect().await
}

async fn rumqttc_publisher(node_mqtt: std::net::SocketAddr, name: &'static str) -> Result {
    let mut client = Rumqtt::connect(node_mqtt, &format!("order-{name}")).await?;
    let topic = format!("order/{name}");
    for seq in 0..PER_PUBLISHER {
        client
            .client
            .publish(
                &topic,
                rumqttc::QoS::AtLeastOnce,
                false,
                body(name, seq).to_string(),
            )
            .await?;
    }
    for _ in 0..PER_PUBLISHER {
        client
            .wait_for(|p| matches!(p, rumqttc::Packet::PubAck(_)).then_some(()))
            .await?;
    }
    Ok(())
}

async fn wamp_publisher(
    node_wamp: std::net::SocketAddr,
    ser: Serializer,
    name: &'static str,
) -> Result {
    let mut client = WampClient::join(node_wamp, ser, REALM).await?;
    let topic = format!("order.{name}");
    let mut requests = Vec::new();
    for seq in 0..PER_PUBLISHER {
        let options = dict([("acknowledge", Value::Boolean(true))]);
        requests.push(
            client
                .publish(
                    &topic,
                    options,
                    vec![from_json(body(name, seq))],
                    Dict::new(),
                )
                .await?,
        );
    }
    let mut last = 0;
    for r in requests {
        let id = client.published(r).await?;
        ensure!(id > last, "{name}: PUBLISHED ids must increase");
        last = id;
    }
    client.leave().await
}

/// 2 MQTT + 2 WAMP publishers at once; 2 MQTT + 1 WAMP subscribers see all 1,200
/// messages exactly once, in one identical order that keeps each publisher's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_subscribers_see_one_identical_total_order() -> Result {
    let node = TestNode::start().await?;

    let mut rumqtt_sub = Rumqtt::connect(node.mqtt, "order-sub-rumqttc").await?;
    rumqtt_sub
        .subscribe("order/#", rumqttc::QoS::AtLeastOnce)
        .await?;
    let (mut raw_sub, _) = RawMqtt::connect(node.mqtt, "order-sub-raw", true, 0).await?;
    raw_sub
        .subscribe(1, &[("order/+", RawQoS::AtLeastOnce)])
        .await?;
    let mut wamp_sub = WampClient::join(node.wamp, Serializer::MsgPack, REALM).await?;
    wamp_sub
        .subscribe("order.", dict([("match", Value::from("wildcard"))]))
        .await?;

    let rumqtt_task = tokio::spawn(async move {
        let mut seen = Vec::with_capacity(TOTAL);
        while seen.len() < TOTAL {
            let p = rumqtt_sub.next_publish().await?;
            seen.push(key_of_bytes(&p.payload)?);
        }
        anyhow::Ok(seen)
    });
    let raw_task = tokio::spawn(async move {
        let mut seen = Vec::with_capacity(TOTAL);
        while seen.len() < TOTAL {
            let p = raw_sub.recv_publish().await?;
            seen.push(key_of_bytes(&p.payload)?);
        }
        anyhow::Ok(seen)
    });
    let wamp_task = tokio::spawn(async move {
        let mut seen = Vec::with_capacity(TOTAL);
        let mut last = 0;
        while seen.len() < TOTAL {
            let e = wamp_sub.next_event().await?;
            ensure!(
                e.publication > last,
                "WAMP publication ids must strictly increase"
            );
            last = e.publication;
            ensure!(e.args.len() == 1 && e.kwargs.is_empty(), "{e:?}");
            seen.push(key_of(&to_json(&e.args[0]))?);
        }
        anyhow::Ok(seen)
    });

    let publishers = vec![
        tokio::spawn(raw_mqtt_publisher(node.mqtt, "m1")),
        tokio::spawn(rumqttc_publisher(node.mqtt, "m2")),
        tokio::spawn(wamp_publisher(node.wamp, Serializer::Json, "w1")),
        tokio::spawn(wamp_publisher(node.wamp, Serializer::MsgPack, "w2")),
    ];
    for p in publishers {
        tokio::time::timeout(Duration::from_secs(60), p).await???;
    }
    let wait = |t| tokio::time::timeout(Duration::from_secs(60), t);
    let a: Vec<Key> = wait(rumqtt_task).await???;
    let b: Vec<Key> = wait(raw_task).await???;
    let c: Vec<Key> = wait(wamp_task).await???;

    let unique: BTreeSet<&Key> = a.iter().collect();
    assert_eq!(unique.len(), TOTAL, "every message exactly once");
    let expected: BTreeSet<Key> = PUBLISHERS
        .iter()
        .flat_map(|p| (0..PER_PUBLISHER).map(move |s| ((*p).to_owned(), s)))
        .collect();
    assert_eq!(unique, expected.iter().collect::<BTreeSet<_>>());
    assert!(
        a == b,
        "rumqttc and raw MQTT subscribers disagree on the order"
    );
    assert!(a == c, "MQTT and WAMP subscribers disagree on the order");
    let mut next: BTreeMap<&str, u64> = BTreeMap::new();
    for (p, s) in &a {
        let want = next.entry(p.as_str()).or_insert(0);
        assert_eq!(*s, *want, "publisher {p} out of order");
        *want += 1;
    }
    // The publishers really interleaved: the order is not four blocks of 300.
    let switches = a.windows(2).filter(|w| w[0].0 != w[1].0).count();
    assert!(
        switches > 3,
        "publishers never interleaved ({switches} switches)"
    );
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_mqtt_payload_reaches_wamp_intact() -> Result {
    let node = TestNode::start().await?;
    let bytes: &[u8] = &[0xff, 0x00, 0x10, 0x80];
    let mut msgpack = WampClient::join(node.wamp, Serializer::MsgPack, REALM).await?;
    msgpack.subscribe("bin.t", Dict::new()).await?;
    let mut json_sub = WampClient::join(node.wamp, Serializer::Json, REALM).await?;
    json_sub.subscribe("bin.t", Dict::new()).await?;
    let (mut publisher, _) = RawMqtt::connect(node.mqtt, "bin-pub", true, 0).await?;
    publisher.publish_acked("bin/t", bytes, 1, false).await?;

    let e = msgpack.next_event().await?;
    assert_eq!(e.args, vec![Value::Binary(bytes.to_vec())]);
    assert!(e.kwargs.is_empty());

    // The JSON wire form: the WAMP "\0" + base64 convention.
    let frame = json_sub
        .next_frame(tokio::time::Instant::now() + Duration::from_secs(15))
        .await?
        .context("closed")?;
    let wire: serde_json::Value = serde_json::from_slice(&frame)?;
    assert_eq!(wire[0], json!(36), "EVENT expected: {wire}");
    assert_eq!(wire[4], json!(["\u{0}/wAQgA=="]), "{wire}");

    // JSON payloads become the JSON value.
    publisher
        .publish_acked("bin/t", br#"{"a":[1,2.5,"x"],"b":null}"#, 2, false)
        .await?;
    let e = msgpack.next_event().await?;
    assert_eq!(e.args.len(), 1);
    assert_eq!(to_json(&e.args[0]), json!({"a": [1, 2.5, "x"], "b": null}));
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wamp_arguments_reach_mqtt_as_json_bytes() -> Result {
    let node = TestNode::start().await?;
    let (mut sub, _) = RawMqtt::connect(node.mqtt, "json-sub", true, 0).await?;
    sub.subscribe(1, &[("fromwamp/t", RawQoS::AtLeastOnce)])
        .await?;
    let mut publisher = WampClient::join(node.wamp, Serializer::Json, REALM).await?;
    let cases: Vec<(Vec<Value>, Dict, &[u8])> = vec![
        (vec![Value::from("x")], Dict::new(), br#""x""#),
        (
            vec![Value::from(1), Value::from("a")],
            Dict::new(),
            br#"[1,"a"]"#,
        ),
        (vec![], dict([("k", Value::from(1))]), br#"{"k":1}"#),
        (vec![Value::Binary(vec![1, 2, 3])], Dict::new(), &[1, 2, 3]),
    ];
    for (args, kwargs, want) in cases {
        let options = dict([("acknowledge", Value::Boolean(true))]);
        let request = publisher
            .publish("fromwamp.t", options, args, kwargs)
            .await?;
        publisher.published(request).await?;
        let p = sub.recv_publish().await?;
        assert_eq!(p.topic, "fromwamp/t");
        assert_eq!(
            &p.payload[..],
            want,
            "got {:?}",
            String::from_utf8_lossy(&p.payload)
        );
        assert_eq!(p.qos, RawQoS::AtLeastOnce);
    }
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realms_are_isolated_and_mqtt_lives_in_the_configured_realm() -> Result {
    let node = TestNode::start().await?;
    let mut realm1 = WampClient::join(node.wamp, Serializer::MsgPack, REALM).await?;
    realm1.subscribe("iso.t", Dict::new()).await?;
    let mut realm2 = WampClient::join(node.wamp, Serializer::MsgPack, "realm2").await?;
    realm2.subscribe("iso.t", Dict::new()).await?;
    let (mut mqtt_sub, _) = RawMqtt::connect(node.mqtt, "iso-sub", true, 0).await?;
    mqtt_sub
        .subscribe(1, &[("iso/t", RawQoS::AtLeastOnce)])
        .await?;

    let mut publisher2 = WampClient::join(node.wamp, Serializer::Json, "realm2").await?;
    let in_realm2 = publisher2
        .publish_acked("iso.t", vec![Value::from("realm2")])
        .await?;
    let (mut mqtt_pub, _) = RawMqtt::connect(node.mqtt, "iso-pub", true, 0).await?;
    mqtt_pub
        .publish_acked("iso/t", b"\"mqtt\"", 1, false)
        .await?;

    let e = realm2.next_event().await?;
    assert_eq!(
        (e.publication, e.args),
        (in_realm2, vec![Value::from("realm2")])
    );
    let e = realm1.next_event().await?;
    assert_eq!(
        e.args,
        vec![Value::from("mqtt")],
        "realm1 sees MQTT, not realm2"
    );
    let p = mqtt_sub.recv_publish().await?;
    assert_eq!(&p.payload[..], b"\"mqtt\"", "MQTT sees realm1 only");
    assert!(realm2
        .event_within(Duration::from_millis(200))
        .await?
        .is_none());
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wamp_retained_publish_reaches_a_later_mqtt_subscriber() -> Result {
    let node = TestNode::start().await?;
    let mut publisher = WampClient::join(node.wamp, Serializer::Json, REALM).await?;
    publisher
        .publish_acked_with(
            "wret.t",
            dict([("retain", Value::Boolean(true))]),
            vec![Value::from("kept")],
        )
        .await?;
    let (mut sub, _) = RawMqtt::connect(node.mqtt, "wret-sub", true, 0).await?;
    sub.subscribe(1, &[("wret/#", RawQoS::AtLeastOnce)]).await?;
    let p = sub.recv_publish().await?;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.retain),
        ("wret/t", &b"\"kept\""[..], true)
    );
    node.shutdown().await;
    Ok(())
}
