//! The WAMP Advanced profile: RawSocket and CBOR, the broker's advanced
//! features and the meta API, over real sockets.
//!
//! RPC features (cancel, timeout, shared and pattern registrations) are in
//! `wamp_advanced_rpc.rs`.

use anyhow::{bail, ensure, Context};
use ordo_common::wamp::{code, value_to_dict, Dict, Message, Serializer, Value};
use ordo_tests::mqtt_raw::RawMqtt;
use ordo_tests::wamp_client::{dict, rawsocket_handshake, Event, WampClient, REALM};
use ordo_tests::TestNode;
use std::time::Duration;
use tokio::io::AsyncReadExt;

type Result = anyhow::Result<()>;

const SERIALIZERS: [Serializer; 3] = [Serializer::Json, Serializer::MsgPack, Serializer::Cbor];
const QUIET: Duration = Duration::from_millis(200);

/// Join over WebSocket or RawSocket.
async fn join(node: &TestNode, raw: bool, ser: Serializer) -> anyhow::Result<WampClient> {
    if raw {
        WampClient::join_rawsocket(node.wamp_rawsocket, ser, REALM).await
    } else {
        WampClient::join(node.wamp, ser, REALM).await
    }
}

/// Join with an announced authid.
async fn join_as(node: &TestNode, authid: &str) -> anyhow::Result<WampClient> {
    WampClient::unjoined(node.wamp, Serializer::Json)
        .await?
        .hello(REALM, dict([("authid", Value::from(authid))]))
        .await
}

/// CALL and return the RESULT's args; an ERROR is an `Err` naming its URI.
async fn call(c: &mut WampClient, procedure: &str, args: Vec<Value>) -> anyhow::Result<Vec<Value>> {
    let request = c.request_id();
    c.send(&Message::Call {
        request,
        options: Dict::new(),
        procedure: procedure.into(),
        args,
        kwargs: Dict::new(),
    })
    .await?;
    match c.reply_to(request).await? {
        Message::Result { args, .. } => Ok(args),
        other => bail!("expected RESULT, got {other:?}"),
    }
}

fn ids(v: Option<&Value>) -> anyhow::Result<Vec<u64>> {
    v.and_then(Value::as_array)
        .context("expected a list")?
        .iter()
        .map(|x| x.as_u64().context("expected an id"))
        .collect()
}

fn detail<'a>(e: &'a Event, key: &str) -> Option<&'a Value> {
    e.details.get(key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rawsocket_and_websocket_share_pubsub_in_every_serializer() -> Result {
    let node = TestNode::start().await?;
    for ser in SERIALIZERS {
        let mut raw_sub = join(&node, true, ser).await?;
        let mut ws_sub = join(&node, false, ser).await?;
        let topic = format!("rs.{}", ser.subprotocol().replace('.', "_"));
        let a = raw_sub.subscribe(&topic, Dict::new()).await?;
        let b = ws_sub.subscribe(&topic, Dict::new()).await?;
        ensure!(a == b, "one subscription id per topic: {a} vs {b}");
        let mut publisher = join(&node, true, ser).await?;
        let payload = vec![
            Value::from("x"),
            Value::Binary(vec![0, 1, 255]),
            Value::F64(2.5),
        ];
        let id = publisher.publish_acked(&topic, payload.clone()).await?;
        for c in [&mut raw_sub, &mut ws_sub] {
            let e = c.next_event().await?;
            assert_eq!((e.publication, e.subscription, &e.args), (id, a, &payload));
        }
        assert_eq!(raw_sub.ping(b"hi").await?, b"hi".to_vec());
        raw_sub.leave().await?;
        ws_sub.leave().await?;
        publisher.leave().await?;
    }
    node.shutdown().await;
    Ok(())
}

/// Assert the router closed the stream without sending anything more (a reset,
/// when our unread bytes were still in its buffer, counts as closed).
async fn assert_closed(s: &mut tokio::net::TcpStream) -> Result {
    let mut rest = Vec::new();
    match tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await? {
        Ok(_) => ensure!(rest.is_empty(), "unexpected bytes {rest:?}"),
        Err(e) => ensure!(e.kind() == std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rawsocket_handshake_errors() -> Result {
    let node = TestNode::start().await?;
    // Serializer 4 (UBJSON) and 0 are not spoken: error 1, then close.
    for request in [[0x7f, 0xf4, 0, 0], [0x7f, 0xf0, 0, 0]] {
        let (mut s, reply) = rawsocket_handshake(node.wamp_rawsocket, request).await?;
        assert_eq!(reply, [0x7f, 0x10, 0, 0]);
        assert_closed(&mut s).await?;
    }
    // Reserved octets set: error 3.
    let (_, reply) = rawsocket_handshake(node.wamp_rawsocket, [0x7f, 0xf1, 0, 7]).await?;
    assert_eq!(reply, [0x7f, 0x30, 0, 0]);
    // The router announces its limit (1 MiB = 2^(9+11)) and echoes the serializer.
    let (_, reply) = rawsocket_handshake(node.wamp_rawsocket, [0x7f, 0x03, 0, 0]).await?;
    assert_eq!(reply, [0x7f, 0xb3, 0, 0]);
    // Not RawSocket at all: closed without a reply.
    let mut s = tokio::net::TcpStream::connect(node.wamp_rawsocket).await?;
    tokio::io::AsyncWriteExt::write_all(&mut s, b"GET / HTTP/1.1\r\n\r\n").await?;
    assert_closed(&mut s).await?;
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rawsocket_oversized_or_bad_frames_abort() -> Result {
    let node = TestNode::start().await?;
    // A frame header claiming 2 MiB, over the 1 MiB limit: ABORT, then close.
    let mut c = join(&node, true, Serializer::Json).await?;
    c.send_raw_frame(0, &[]).await.ok();
    let mut c2 = join(&node, true, Serializer::Json).await?;
    let big = vec![b' '; (1 << 20) + 1];
    // The router may close before the whole frame is written.
    c2.send_raw_frame(0, &big).await.ok();
    let seen = c2.expect_closed(Duration::from_secs(5)).await?;
    ensure!(
        matches!(seen.last(), Some(Message::Abort { reason, .. }) if reason == "wamp.error.protocol_violation"),
        "{seen:?}"
    );
    // Frame type 5 is reserved.
    let mut c3 = join(&node, true, Serializer::MsgPack).await?;
    c3.send_raw_frame(5, b"x").await?;
    c3.expect_closed(Duration::from_secs(5)).await?;
    // The empty frame on `c` is not a message: protocol violation too.
    c.expect_closed(Duration::from_secs(5)).await?;
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcome_announces_advanced_features() -> Result {
    let node = TestNode::start().await?;
    let c = join(&node, true, Serializer::Cbor).await?;
    let roles = value_to_dict(c.welcome.get("roles").cloned().context("roles")?).context("dict")?;
    for (role, feature) in [
        ("broker", "publisher_identification"),
        ("broker", "subscriber_blackwhite_listing"),
        ("broker", "event_retention"),
        ("broker", "event_history"),
        ("broker", "session_meta_api"),
        ("broker", "subscription_meta_api"),
        ("dealer", "call_canceling"),
        ("dealer", "call_timeout"),
        ("dealer", "shared_registration"),
        ("dealer", "pattern_based_registration"),
        ("dealer", "registration_meta_api"),
        ("dealer", "caller_identification"),
    ] {
        let r = value_to_dict(roles.get(role).cloned().context("role")?).context("dict")?;
        let f = value_to_dict(r.get("features").cloned().context("features")?).context("dict")?;
        assert_eq!(
            f.get(feature),
            Some(&Value::Boolean(true)),
            "{role}.{feature}"
        );
    }
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_identification_and_black_white_lists() -> Result {
    let node = TestNode::start().await?;
    let mut alice = join_as(&node, "alice").await?;
    let mut bob = join_as(&node, "bob").await?;
    let mut carol = join_as(&node, "carol").await?;
    for c in [&mut alice, &mut bob, &mut carol] {
        c.subscribe("bw.t", Dict::new()).await?;
    }
    let mut publisher = join_as(&node, "pub").await?;
    let disclosed = publisher
        .publish_acked_with(
            "bw.t",
            dict([("disclose_me", Value::Boolean(true))]),
            vec![],
        )
        .await?;
    for c in [&mut alice, &mut bob, &mut carol] {
        let e = c.next_event().await?;
        assert_eq!(e.publication, disclosed);
        assert_eq!(
            detail(&e, "publisher"),
            Some(&Value::from(publisher.session))
        );
        assert_eq!(detail(&e, "publisher_authid"), Some(&Value::from("pub")));
    }
    let cases = [
        (
            "exclude",
            Value::Array(vec![Value::from(bob.session)]),
            [true, false, true],
        ),
        (
            "eligible",
            Value::Array(vec![Value::from(bob.session)]),
            [false, true, false],
        ),
        (
            "exclude_authid",
            Value::Array(vec![Value::from("carol")]),
            [true, true, false],
        ),
        (
            "eligible_authid",
            Value::Array(vec![Value::from("alice"), Value::from("carol")]),
            [true, false, true],
        ),
    ];
    for (key, list, expect) in cases {
        let id = publisher
            .publish_acked_with("bw.t", dict([(key, list)]), vec![Value::from(key)])
            .await?;
        for (c, want) in [&mut alice, &mut bob, &mut carol].into_iter().zip(expect) {
            let got = c.event_within(QUIET).await?;
            assert!(
                got.as_ref().map(|e| e.publication == id) == Some(true) || (!want && got.is_none()),
                "{key}: {got:?}"
            );
            if let Some(e) = &got {
                assert!(want, "{key}: unexpected {e:?}");
                assert!(detail(e, "publisher").is_none(), "not disclosed");
            }
        }
    }
    // A wrong option type is an ERROR, and the session lives on.
    let r = publisher
        .publish(
            "bw.t",
            dict([
                ("acknowledge", Value::Boolean(true)),
                ("exclude", Value::from("x")),
            ]),
            vec![],
            Dict::new(),
        )
        .await?;
    let m = publisher
        .recv_matching(|m| matches!(m, Message::Error { request, .. } if *request == r))
        .await?;
    ensure!(
        matches!(&m, Message::Error { error, request_type: code::PUBLISH, .. } if error == "wamp.error.invalid_argument"),
        "{m:?}"
    );
    publisher.publish_acked("bw.t", vec![]).await?;
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_events_cross_protocols_and_history_is_served() -> Result {
    let node = TestNode::start().await?;
    let mut publisher = join(&node, true, Serializer::Cbor).await?;
    let kept = publisher
        .publish_acked_with(
            "ret.wamp",
            dict([("retain", Value::Boolean(true))]),
            vec![Value::from("w")],
        )
        .await?;
    // MQTT publishes a retained message; a WAMP subscriber asking get_retained gets both.
    let (mut mqtt, _) = RawMqtt::connect(node.mqtt, "ret-pub", true, 0).await?;
    mqtt.publish_acked("ret/mqtt", b"{\"m\":1}", 1, true)
        .await?;
    let mut sub = join(&node, false, Serializer::MsgPack).await?;
    sub.subscribe(
        "ret",
        dict([
            ("match", Value::from("prefix")),
            ("get_retained", Value::Boolean(true)),
        ]),
    )
    .await?;
    let a = sub.next_event().await?;
    let b = sub.next_event().await?;
    assert_eq!(a.publication, kept);
    assert_eq!(detail(&a, "retained"), Some(&Value::Boolean(true)));
    assert_eq!(detail(&b, "topic"), Some(&Value::from("ret.mqtt")));
    // Without get_retained nothing is replayed.
    let mut plain = join(&node, false, Serializer::Json).await?;
    plain.subscribe("ret.wamp", Dict::new()).await?;
    assert!(plain.event_within(QUIET).await?.is_none());
    // History: the last N events of a subscription, oldest first.
    let sid = plain.subscribe("hist.t", Dict::new()).await?;
    let mut sent = Vec::new();
    for i in 0..5u64 {
        sent.push(
            publisher
                .publish_acked("hist.t", vec![Value::from(i)])
                .await?,
        );
    }
    for _ in 0..5 {
        plain.next_event().await?;
    }
    let events = call(
        &mut plain,
        "wamp.subscription.get_events",
        vec![Value::from(sid), Value::from(3)],
    )
    .await?;
    let list = events
        .first()
        .and_then(Value::as_array)
        .context("event list")?;
    let pubs: Vec<u64> = list
        .iter()
        .filter_map(|e| value_to_dict(e.clone()))
        .filter_map(|d| d.get("publication").and_then(Value::as_u64))
        .collect();
    assert_eq!(pubs, sent[2..].to_vec());
    let err = call(
        &mut plain,
        "wamp.subscription.get_events",
        vec![Value::from("x")],
    )
    .await;
    ensure!(
        format!("{err:?}").contains("wamp.error.invalid_argument"),
        "{err:?}"
    );
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_and_subscription_meta_api() -> Result {
    let node = TestNode::start().await?;
    let mut watcher = join(&node, false, Serializer::Json).await?;
    watcher
        .subscribe("wamp.session.on_join", Dict::new())
        .await?;
    watcher
        .subscribe("wamp.session.on_leave", Dict::new())
        .await?;
    let mut other = join(&node, true, Serializer::Cbor).await?;
    // The watcher's own on_join may come first (it is ordered with the SUBSCRIBE).
    let info = loop {
        let joined = watcher.next_event().await?;
        let info =
            value_to_dict(joined.args.first().cloned().context("on_join arg")?).context("dict")?;
        if info.get("session") == Some(&Value::from(other.session)) {
            break info;
        }
    };
    assert_eq!(info.get("authrole"), Some(&Value::from("anonymous")));
    let count = call(&mut watcher, "wamp.session.count", vec![]).await?;
    assert_eq!(count, vec![Value::from(2u64)]);
    let list = call(&mut watcher, "wamp.session.list", vec![]).await?;
    let mut want = vec![watcher.session, other.session];
    want.sort();
    assert_eq!(ids(list.first())?, want);
    let got = call(
        &mut watcher,
        "wamp.session.get",
        vec![Value::from(other.session)],
    )
    .await?;
    let got = value_to_dict(got.first().cloned().context("get")?).context("dict")?;
    let transport =
        value_to_dict(got.get("transport").cloned().context("transport")?).context("dict")?;
    assert_eq!(transport.get("type"), Some(&Value::from("rawsocket")));
    let missing = call(&mut watcher, "wamp.session.get", vec![Value::from(1u64)]).await;
    ensure!(
        format!("{missing:?}").contains("wamp.error.no_such_session"),
        "{missing:?}"
    );

    let sid = other.subscribe("meta.t", Dict::new()).await?;
    let pid = other
        .subscribe("meta", dict([("match", Value::from("prefix"))]))
        .await?;
    let lookup = call(
        &mut watcher,
        "wamp.subscription.lookup",
        vec![Value::from("meta.t")],
    )
    .await?;
    assert_eq!(lookup, vec![Value::from(sid)]);
    let matched = call(
        &mut watcher,
        "wamp.subscription.match",
        vec![Value::from("meta.t")],
    )
    .await?;
    assert_eq!(ids(matched.first())?, vec![sid, pid]);
    let subs = call(
        &mut watcher,
        "wamp.subscription.list_subscribers",
        vec![Value::from(sid)],
    )
    .await?;
    assert_eq!(ids(subs.first())?, vec![other.session]);
    let n = call(
        &mut watcher,
        "wamp.subscription.count_subscribers",
        vec![Value::from(pid)],
    )
    .await?;
    assert_eq!(n, vec![Value::from(1u64)]);
    let g = call(
        &mut watcher,
        "wamp.subscription.get",
        vec![Value::from(pid)],
    )
    .await?;
    let g = value_to_dict(g.first().cloned().context("get")?).context("dict")?;
    assert_eq!(g.get("match"), Some(&Value::from("prefix")));
    let all = call(&mut watcher, "wamp.subscription.list", vec![]).await?;
    let all = value_to_dict(all.first().cloned().context("list")?).context("dict")?;
    ensure!(ids(all.get("prefix"))?.contains(&pid), "{all:?}");

    let gone = other.session;
    other.leave().await?;
    let left = watcher
        .recv_matching(|m| matches!(m, Message::Event { args, .. } if args.first() == Some(&Value::from(gone))))
        .await?;
    ensure!(matches!(left, Message::Event { .. }));
    let after = call(
        &mut watcher,
        "wamp.subscription.lookup",
        vec![Value::from("meta.t")],
    )
    .await?;
    assert_eq!(
        after,
        vec![Value::Nil],
        "the subscription died with its last subscriber"
    );
    // Publishing into the router's own namespace is refused.
    let r = watcher
        .publish(
            "wamp.session.on_join",
            dict([("acknowledge", Value::Boolean(true))]),
            vec![],
            Dict::new(),
        )
        .await?;
    let m = watcher
        .recv_matching(|m| matches!(m, Message::Error { request, .. } if *request == r))
        .await?;
    ensure!(
        matches!(&m, Message::Error { error, .. } if error == "wamp.error.invalid_uri"),
        "{m:?}"
    );
    node.shutdown().await;
    Ok(())
}
