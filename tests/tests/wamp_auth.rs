//! WAMP ticket and WAMP-CRA authentication and per-prefix permissions from
//! the `users` section of the configuration.

use anyhow::{bail, ensure};
use ordo_common::wamp::{code, Dict, Message, Serializer, Value};
use ordo_entry::wamp::auth::{cra_signature, Permission, User};
use ordo_tests::wamp_client::{dict, WampClient, REALM};
use ordo_tests::TestNode;
use std::time::Duration;

type Result = anyhow::Result<()>;

fn users() -> Vec<User> {
    vec![
        bob(),
        carol(),
        User {
            authid: "alice".into(),
            role: "writer".into(),
            ticket: Some("t0k".into()),
            secret: Some("s3cret".into()),
            permissions: vec![
                Permission {
                    realm: REALM.into(),
                    prefix: "com.".into(),
                    publish: true,
                    subscribe: true,
                    call: true,
                    register: true,
                },
                Permission {
                    realm: REALM.into(),
                    prefix: "com.ro.".into(),
                    subscribe: true,
                    ..Permission::default()
                },
            ],
            ..User::default()
        },
    ]
}

/// Salted WAMP-CRA: secret `s4lty`, salt `pepper`, 100 iterations, a 16-byte key.
fn carol() -> User {
    User {
        authid: "carol".into(),
        role: "writer".into(),
        secret: Some("s4lty".into()),
        salt: Some("pepper".into()),
        iterations: Some(100),
        keylen: Some(16),
        permissions: vec![Permission {
            realm: REALM.into(),
            prefix: "com.".into(),
            publish: true,
            ..Permission::default()
        }],
        ..User::default()
    }
}

/// base64(PBKDF2-HMAC-SHA256("s4lty", "pepper", 100, 16)), computed apart from Ordo with
/// Python's `hashlib.pbkdf2_hmac`: what autobahn's `auth.derive_key` gives a client.
const CAROL_KEY: &str = "n0Jyq3L3dQMcmFNxu8Rykw==";

/// May subscribe under `com.` but not under `com.secret.`.
fn bob() -> User {
    User {
        authid: "bob".into(),
        role: "writer".into(),
        ticket: Some("b0b".into()),
        secret: None,
        permissions: vec![
            Permission {
                realm: REALM.into(),
                prefix: "com.".into(),
                subscribe: true,
                ..Permission::default()
            },
            Permission {
                realm: REALM.into(),
                prefix: "com.secret.".into(),
                ..Permission::default()
            },
        ],
        ..User::default()
    }
}

async fn start(allow_anonymous: bool) -> anyhow::Result<TestNode> {
    TestNode::start_with(|c| {
        c.users = users();
        c.allow_anonymous = allow_anonymous;
    })
    .await
}

/// HELLO as `authid` offering `method`; answer the CHALLENGE with `answer(extra)`.
/// Returns the joined client, or the ABORT reason.
async fn login(
    node: &TestNode,
    raw: bool,
    authid: &str,
    method: &str,
    answer: impl Fn(&Dict) -> String,
) -> anyhow::Result<std::result::Result<WampClient, String>> {
    let mut c = if raw {
        WampClient::unjoined_rawsocket(node.wamp_rawsocket, Serializer::Cbor).await?
    } else {
        WampClient::unjoined(node.wamp, Serializer::Json).await?
    };
    let details = dict([
        ("authid", Value::from(authid)),
        ("authmethods", Value::Array(vec![Value::from(method)])),
        (
            "roles",
            Value::Map(vec![(Value::from("caller"), Value::Map(vec![]))]),
        ),
    ]);
    c.send(&Message::Hello {
        realm: REALM.into(),
        details,
    })
    .await?;
    loop {
        match c.recv().await? {
            Message::Challenge { authmethod, extra } => {
                ensure!(authmethod == method, "challenge for {authmethod}");
                c.send(&Message::Authenticate {
                    signature: answer(&extra),
                    extra: Dict::new(),
                })
                .await?;
            }
            Message::Welcome { session, details } => {
                ensure!(details.get("authid") == Some(&Value::from(authid)));
                ensure!(details.get("authrole") == Some(&Value::from("writer")));
                ensure!(details.get("authmethod") == Some(&Value::from(method)));
                c.session = session;
                return Ok(Ok(c));
            }
            Message::Abort { reason, .. } => return Ok(Err(reason)),
            other => bail!("unexpected {other:?}"),
        }
    }
}

fn cra(extra: &Dict) -> String {
    let challenge = extra.get("challenge").and_then(Value::as_str).unwrap_or("");
    cra_signature("s3cret", challenge)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticket_and_wampcra_authenticate_and_wrong_secrets_abort() -> Result {
    let node = start(true).await?;
    for raw in [false, true] {
        let ok = login(&node, raw, "alice", "ticket", |_| "t0k".into()).await?;
        ensure!(ok.is_ok(), "{:?}", ok.err());
        let bad = login(&node, raw, "alice", "ticket", |_| "nope".into()).await?;
        assert_eq!(
            bad.err().as_deref(),
            Some("wamp.error.authentication_failed")
        );
        let ok = login(&node, raw, "alice", "wampcra", cra).await?;
        ensure!(ok.is_ok(), "{:?}", ok.err());
        let bad = login(&node, raw, "alice", "wampcra", |e| {
            cra_signature(
                "guess",
                e.get("challenge").and_then(Value::as_str).unwrap_or(""),
            )
        })
        .await?;
        assert_eq!(
            bad.err().as_deref(),
            Some("wamp.error.authentication_failed")
        );
        let unknown = login(&node, raw, "mallory", "ticket", |_| "t0k".into()).await?;
        assert_eq!(
            unknown.err().as_deref(),
            Some("wamp.error.authentication_failed")
        );
    }
    // Anonymous is allowed on this node.
    WampClient::join(node.wamp, Serializer::Json, REALM).await?;
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salted_wampcra_challenges_with_salt_and_checks_the_derived_key() -> Result {
    let node = start(false).await?;
    for raw in [false, true] {
        let seen = std::sync::Mutex::new(Dict::new());
        let ok = login(&node, raw, "carol", "wampcra", |extra| {
            if let Ok(mut seen) = seen.lock() {
                *seen = extra.clone();
            }
            let challenge = extra.get("challenge").and_then(Value::as_str).unwrap_or("");
            cra_signature(CAROL_KEY, challenge)
        })
        .await?;
        ensure!(ok.is_ok(), "{:?}", ok.err());
        let extra = seen.lock().map(|e| e.clone()).unwrap_or_default();
        assert_eq!(extra.get("salt"), Some(&Value::from("pepper")));
        assert_eq!(extra.get("iterations"), Some(&Value::from(100u64)));
        assert_eq!(extra.get("keylen"), Some(&Value::from(16u64)));
        // Signing with the plain secret, as an unsalted client would, fails.
        let plain = login(&node, raw, "carol", "wampcra", |e| {
            cra_signature(
                "s4lty",
                e.get("challenge").and_then(Value::as_str).unwrap_or(""),
            )
        })
        .await?;
        assert_eq!(
            plain.err().as_deref(),
            Some("wamp.error.authentication_failed")
        );
    }
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_salted_user_with_zero_iterations_stops_the_start() -> Result {
    let start = TestNode::start_with(|c| {
        let mut bad = carol();
        bad.iterations = Some(0);
        c.users = vec![bad];
    })
    .await;
    let Err(e) = start else {
        bail!("a node started with iterations = 0");
    };
    ensure!(format!("{e:#}").contains("iterations"), "{e:#}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_follow_the_longest_prefix_and_anonymous_can_be_off() -> Result {
    let node = start(false).await?;
    let mut anon = WampClient::unjoined(node.wamp, Serializer::Json).await?;
    anon.send(&Message::Hello {
        realm: REALM.into(),
        details: Dict::new(),
    })
    .await?;
    let seen = anon.expect_closed(Duration::from_secs(5)).await?;
    ensure!(
        matches!(seen.last(), Some(Message::Abort { reason, .. }) if reason == "wamp.error.no_auth_method"),
        "{seen:?}"
    );
    let Ok(mut alice) = login(&node, false, "alice", "ticket", |_| "t0k".into()).await? else {
        bail!("login failed");
    };
    alice.subscribe("com.ro.feed", Dict::new()).await?;
    alice
        .publish_acked("com.rw.x", vec![Value::from(1)])
        .await?;
    let denied = [
        (
            Message::Publish {
                request: 901,
                options: dict([("acknowledge", Value::Boolean(true))]),
                topic: "com.ro.feed".into(),
                args: vec![],
                kwargs: Dict::new(),
            },
            code::PUBLISH,
        ),
        (
            Message::Subscribe {
                request: 902,
                options: Dict::new(),
                topic: "org.other".into(),
            },
            code::SUBSCRIBE,
        ),
        (
            Message::Register {
                request: 903,
                options: Dict::new(),
                procedure: "com.ro.proc".into(),
            },
            code::REGISTER,
        ),
        (
            Message::Call {
                request: 904,
                options: Dict::new(),
                procedure: "wamp.session.count".into(),
                args: vec![],
                kwargs: Dict::new(),
            },
            code::CALL,
        ),
    ];
    for (message, request_type) in denied {
        alice.send(&message).await?;
        let request = match &message {
            Message::Publish { request, .. }
            | Message::Subscribe { request, .. }
            | Message::Register { request, .. }
            | Message::Call { request, .. } => *request,
            other => bail!("not a request: {other:?}"),
        };
        let reply = alice
            .recv_matching(|m| matches!(m, Message::Error { request: r, .. } if *r == request))
            .await?;
        ensure!(
            matches!(&reply, Message::Error { error, request_type: t, .. } if error == "wamp.error.not_authorized" && *t == request_type),
            "{reply:?}"
        );
    }
    // Still joined and allowed where permitted.
    alice.publish_acked("com.rw.y", vec![]).await?;
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_subscription_gets_no_event_from_a_forbidden_prefix() -> Result {
    let node = start(false).await?;
    let Ok(mut bob) = login(&node, false, "bob", "ticket", |_| "b0b".into()).await? else {
        bail!("bob's login failed");
    };
    let Ok(mut alice) = login(&node, false, "alice", "ticket", |_| "t0k".into()).await? else {
        bail!("alice's login failed");
    };
    // The pattern's string is under `com.`, so SUBSCRIBE is allowed; it also matches `com.secret.x`.
    bob.subscribe("com..x", dict([("match", Value::from("wildcard"))]))
        .await?;
    alice
        .publish_acked("com.secret.x", vec![Value::from("secret")])
        .await?;
    alice
        .publish_acked("com.open.x", vec![Value::from("open")])
        .await?;
    let event = bob
        .recv_matching(|m| matches!(m, Message::Event { .. }))
        .await?;
    let Message::Event { args, .. } = event else {
        bail!("not an event");
    };
    ensure!(
        args == vec![Value::from("open")],
        "bob got {args:?}: an event under com.secret. leaked through a pattern"
    );
    node.shutdown().await;
    Ok(())
}
