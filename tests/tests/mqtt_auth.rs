//! MQTT CONNECT username/password against the `users` section (password = the
//! user's ticket), and per-prefix permissions on PUBLISH, SUBSCRIBE and deliveries.

use anyhow::{bail, ensure, Context};
use ordo_common::mqtt::{self, v5, ConnectReturnCode, Packet, QoS, ReasonCode, SubAckCode};
use ordo_entry::wamp::auth::{Permission, User};
use ordo_tests::mqtt_raw::{connect5_packet, connect_packet, publish5, publish_packet, RawMqtt};
use ordo_tests::wamp_client::REALM;
use ordo_tests::{Rumqtt, TestNode};
use std::net::SocketAddr;
use std::time::Duration;

type Result = anyhow::Result<()>;

fn permission(prefix: &str, publish: bool, subscribe: bool) -> Permission {
    Permission {
        realm: REALM.into(),
        prefix: prefix.into(),
        publish,
        subscribe,
        ..Permission::default()
    }
}

fn users() -> Vec<User> {
    vec![
        User {
            authid: "alice".into(),
            ticket: Some("t0k".into()),
            permissions: vec![
                permission("com.", true, true),
                permission("com.ro.", false, true),
            ],
            ..User::default()
        },
        User {
            authid: "admin".into(),
            ticket: Some("root".into()),
            permissions: vec![permission("", true, true)],
            ..User::default()
        },
        User {
            // May subscribe to `#`, but never see `secret/...`.
            authid: "bob".into(),
            ticket: Some("b0b".into()),
            permissions: vec![
                permission("", true, true),
                permission("secret.", false, false),
            ],
            ..User::default()
        },
    ]
}

async fn start() -> anyhow::Result<TestNode> {
    TestNode::start_with(|c| {
        c.users = users();
        c.allow_anonymous = false;
        c.mqtt_ws = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await
}

fn login(user: Option<&str>, password: Option<&str>) -> mqtt::Connect {
    mqtt::Connect {
        username: user.map(str::to_owned),
        password: password.map(|p| p.as_bytes().to_vec().into()),
        ..connect_packet("", true, 30)
    }
}

fn login5(user: Option<&str>, password: Option<&str>) -> v5::Connect {
    v5::Connect {
        username: user.map(str::to_owned),
        password: password.map(|p| p.as_bytes().to_vec().into()),
        ..connect5_packet("", true, 30)
    }
}

/// Send a 3.1.1 CONNECT and return the CONNACK's return code.
async fn connack3(node: &TestNode, connect: mqtt::Connect) -> anyhow::Result<ConnectReturnCode> {
    let mut c = RawMqtt::tcp(node.mqtt).await?;
    c.send(&Packet::Connect(connect)).await?;
    match c.recv().await? {
        Packet::ConnAck(a) => Ok(a.code),
        other => bail!("expected CONNACK, got {other:?}"),
    }
}

async fn connack5(node: &TestNode, connect: v5::Connect) -> anyhow::Result<ReasonCode> {
    Ok(RawMqtt::connect5(node.mqtt, connect).await?.1.reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_checks_username_and_password() -> Result {
    let node = start().await?;
    use ConnectReturnCode::*;
    for (user, password, v3, v5) in [
        (Some("alice"), Some("t0k"), Accepted, ReasonCode::SUCCESS),
        (
            Some("alice"),
            Some("wrong"),
            BadUsernameOrPassword,
            ReasonCode::BAD_USER_NAME_OR_PASSWORD,
        ),
        (
            Some("alice"),
            None,
            BadUsernameOrPassword,
            ReasonCode::BAD_USER_NAME_OR_PASSWORD,
        ),
        (
            Some("mallory"),
            Some("t0k"),
            BadUsernameOrPassword,
            ReasonCode::BAD_USER_NAME_OR_PASSWORD,
        ),
        (None, None, NotAuthorized, ReasonCode::NOT_AUTHORIZED),
    ] {
        let got = connack3(&node, login(user, password)).await?;
        ensure!(
            got == v3,
            "3.1.1 {user:?}/{password:?}: {got:?}, want {v3:?}"
        );
        let got = connack5(&node, login5(user, password)).await?;
        ensure!(got == v5, "5 {user:?}/{password:?}: {got}, want {v5}");
    }
    // A will the user may not publish on refuses the CONNECT.
    let mut with_will = login5(Some("alice"), Some("t0k"));
    with_will.will = Some(v5::Will {
        topic: "com/ro/will".into(),
        payload: "bye".into(),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: v5::Properties::default(),
    });
    let got = connack5(&node, with_will).await?;
    ensure!(got == ReasonCode::NOT_AUTHORIZED, "will: {got}");
    // A real client, over TCP and over both WebSocket ports.
    let ws = node.mqtt_ws.context("no mqtt_ws")?;
    for (name, addr, url) in [
        ("tcp", node.mqtt, None),
        ("mqtt_ws", ws, Some(format!("ws://{ws}/mqtt"))),
        (
            "wamp port",
            node.wamp,
            Some(format!("ws://{}/mqtt", node.wamp)),
        ),
    ] {
        let options = |password: &str| {
            let host = url.clone().unwrap_or_else(|| addr.ip().to_string());
            let mut o = rumqttc::MqttOptions::new("rumq", host, addr.port());
            if url.is_some() {
                o.set_transport(rumqttc::Transport::Ws);
            }
            o.set_credentials("alice", password);
            o
        };
        let mut c = Rumqtt::connect_with(options("t0k"))
            .await
            .with_context(|| format!("{name}: right password"))?;
        c.publish_acked("com/a", "x", false).await?;
        let refused = Rumqtt::connect_with(options("nope")).await;
        ensure!(
            refused
                .as_ref()
                .is_err_and(|e| format!("{e:#}").contains("BadUserNamePassword")),
            "{name}: wrong password: {:?}",
            refused.err()
        );
    }
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_publish_and_subscribe_permissions() -> Result {
    let node = start().await?;
    let (mut c, ack) = RawMqtt::connect5(node.mqtt, login5(Some("alice"), Some("t0k"))).await?;
    ensure!(ack.reason == ReasonCode::SUCCESS, "{ack:?}");
    let options = v5::SubscriptionOptions::qos;
    let reasons = c
        .subscribe5(
            1,
            v5::Properties::default(),
            &[
                ("com/#", options(QoS::AtLeastOnce)),
                ("org/#", options(QoS::AtLeastOnce)),
                ("#", options(QoS::AtMostOnce)),
                ("$share/g/com/ro/x", options(QoS::AtMostOnce)),
                ("$share/g/org/x", options(QoS::AtMostOnce)),
            ],
        )
        .await?;
    let denied = ReasonCode::NOT_AUTHORIZED;
    ensure!(
        reasons == [ReasonCode(1), denied, denied, ReasonCode(0), denied],
        "{reasons:?}"
    );
    // Refused QoS 1 and 2 publishes get 0x87, in PUBLISH order with the accepted ones.
    for (pkid, topic, qos) in [
        (10, "com/ro/x", QoS::AtLeastOnce),
        (11, "com/rw/x", QoS::AtLeastOnce),
        (12, "org/x", QoS::ExactlyOnce),
        (13, "com/ro/y", QoS::AtMostOnce),
    ] {
        c.send5(&v5::Packet::Publish(publish5(
            topic, b"p", qos, pkid, false,
        )))
        .await?;
    }
    let mut acks = Vec::new();
    let mut delivered = Vec::new();
    while acks.len() < 3 || delivered.is_empty() {
        match c.recv5().await? {
            v5::Packet::PubAck(a) => acks.push((a.pkid, a.reason)),
            v5::Packet::PubRec(a) => acks.push((a.pkid, a.reason)),
            v5::Packet::Publish(p) => delivered.push(p.topic),
            other => bail!("unexpected {other:?}"),
        }
    }
    ensure!(
        acks == [(10, denied), (11, ReasonCode::SUCCESS), (12, denied)],
        "{acks:?}"
    );
    // Only the allowed publish was stored and delivered.
    ensure!(
        c.recv5_within(Duration::from_millis(500)).await?.is_none(),
        "more deliveries"
    );
    ensure!(delivered == ["com/rw/x"], "{delivered:?}");
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_forbidden_publish_closes_the_connection() -> Result {
    let node = start().await?;
    let (mut admin, _) =
        RawMqtt::connect_with(node.mqtt, login(Some("admin"), Some("root"))).await?;
    admin.subscribe(1, &[("com/#", QoS::AtLeastOnce)]).await?;
    let (mut c, _) = RawMqtt::connect_with(node.mqtt, login(Some("alice"), Some("t0k"))).await?;
    let codes = c
        .subscribe(
            1,
            &[("com/ro/#", QoS::AtLeastOnce), ("org/#", QoS::AtLeastOnce)],
        )
        .await?;
    ensure!(
        codes == [SubAckCode::Granted(QoS::AtLeastOnce), SubAckCode::Failure],
        "{codes:?}"
    );
    // QoS 0 has no ack to lie with: dropped, the connection stays.
    c.send(&publish_packet(
        "com/ro/q0",
        b"x",
        QoS::AtMostOnce,
        0,
        false,
    ))
    .await?;
    c.publish_acked("com/rw/ok", b"y", 2, false).await?;
    // QoS 1 outside the permissions: no PUBACK, the connection closes.
    c.send(&publish_packet(
        "com/ro/q1",
        b"z",
        QoS::AtLeastOnce,
        3,
        false,
    ))
    .await?;
    let seen = c.expect_closed(Duration::from_secs(10)).await?;
    ensure!(seen.is_empty(), "{seen:?}");
    // Neither refused publish reached a subscriber.
    admin
        .send(&publish_packet(
            "com/marker",
            b"m",
            QoS::AtMostOnce,
            0,
            false,
        ))
        .await?;
    let mut topics = Vec::new();
    while topics.len() < 2 {
        match admin.recv().await? {
            Packet::Publish(p) => {
                if p.qos == QoS::AtLeastOnce {
                    admin.send(&Packet::PubAck(p.pkid)).await?;
                }
                topics.push(p.topic);
            }
            other => bail!("admin got {other:?}"),
        }
    }
    ensure!(topics == ["com/rw/ok", "com/marker"], "{topics:?}");
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_delivers_only_permitted_topics() -> Result {
    let node = start().await?;
    let (mut bob, _) = RawMqtt::connect_with(node.mqtt, login(Some("bob"), Some("b0b"))).await?;
    let codes = bob
        .subscribe(
            1,
            &[("#", QoS::AtLeastOnce), ("secret/#", QoS::AtLeastOnce)],
        )
        .await?;
    ensure!(
        codes == [SubAckCode::Granted(QoS::AtLeastOnce), SubAckCode::Failure],
        "{codes:?}"
    );
    let (mut admin, _) =
        RawMqtt::connect_with(node.mqtt, login(Some("admin"), Some("root"))).await?;
    admin.publish_acked("secret/plan", b"s", 1, false).await?;
    admin.publish_acked("open/news", b"n", 2, false).await?;
    let got = bob.recv_publish().await?;
    ensure!(got.topic == "open/news", "bob got {got:?}");
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_users_and_anonymous_keeps_the_old_behaviour() -> Result {
    let node = TestNode::start().await?;
    let got = connack3(&node, login(Some("anyone"), Some("anything"))).await?;
    ensure!(got == ConnectReturnCode::Accepted, "{got:?}");
    let (mut c, ack) = RawMqtt::connect5(node.mqtt, login5(None, None)).await?;
    ensure!(ack.reason == ReasonCode::SUCCESS, "{ack:?}");
    c.send5(&v5::Packet::Publish(publish5(
        "any/topic",
        b"x",
        QoS::AtLeastOnce,
        1,
        false,
    )))
    .await?;
    match c.recv5().await? {
        v5::Packet::PubAck(a) => ensure!(a.reason == ReasonCode::SUCCESS, "{a:?}"),
        other => bail!("{other:?}"),
    }
    node.shutdown().await;
    Ok(())
}
