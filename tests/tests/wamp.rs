//! WAMP front door over real WebSockets, with both serializers.

use anyhow::{bail, ensure, Context};
use ordo_common::wamp::{code, Dict, Message, Serializer, Value};
use ordo_tests::wamp_client::{dict, Event, WampClient, REALM};
use ordo_tests::TestNode;
use std::time::Duration;

type Result = anyhow::Result<()>;

const SERIALIZERS: [Serializer; 2] = [Serializer::Json, Serializer::MsgPack];

fn int(v: &Value) -> anyhow::Result<u64> {
    v.as_u64()
        .with_context(|| format!("expected an integer, got {v:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_gets_welcome_with_broker_and_dealer_roles() -> Result {
    let node = TestNode::start().await?;
    for ser in SERIALIZERS {
        let a = WampClient::join(node.wamp, ser, REALM).await?;
        let b = WampClient::join(node.wamp, ser, REALM).await?;
        assert!(a.session > 0 && b.session > 0 && a.session != b.session);
        let roles = a.welcome.get("roles").context("WELCOME without roles")?;
        let roles = ordo_common::wamp::value_to_dict(roles.clone()).context("roles not a dict")?;
        assert!(
            roles.contains_key("broker") && roles.contains_key("dealer"),
            "{roles:?}"
        );
        a.leave().await?;
        b.leave().await?;
    }
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_prefix_and_wildcard_subscriptions() -> Result {
    let node = TestNode::start().await?;
    for ser in SERIALIZERS {
        let mut sub = WampClient::join(node.wamp, ser, REALM).await?;
        let exact = sub.subscribe("com.x.a", Dict::new()).await?;
        let prefix = sub
            .subscribe("com.x", dict([("match", Value::from("prefix"))]))
            .await?;
        let wild = sub
            .subscribe("com..a", dict([("match", Value::from("wildcard"))]))
            .await?;
        let mut publisher = WampClient::join(node.wamp, ser, REALM).await?;
        let mut ids = Vec::new();
        for topic in ["com.x.a", "com.x.b", "com.y.a", "com.z.z", "com.x.a"] {
            ids.push(
                publisher
                    .publish_acked(topic, vec![Value::from(topic)])
                    .await?,
            );
        }
        // (publication, subscription, topic detail) in delivery order.
        let want = [
            (ids[0], exact, None),
            (ids[0], prefix, Some("com.x.a")),
            (ids[0], wild, Some("com.x.a")),
            (ids[1], prefix, Some("com.x.b")),
            (ids[2], wild, Some("com.y.a")),
            (ids[4], exact, None),
            (ids[4], prefix, Some("com.x.a")),
            (ids[4], wild, Some("com.x.a")),
        ];
        let mut got = Vec::new();
        for _ in 0..want.len() {
            let e = sub.next_event().await?;
            let topic = e
                .details
                .get("topic")
                .and_then(|t| t.as_str())
                .map(str::to_owned);
            got.push((e.publication, e.subscription, topic));
        }
        // Events of one publication may come in any subscription order; publications in order.
        let normalize = |v: &mut Vec<(u64, u64, Option<String>)>| v.sort();
        let mut want: Vec<_> = want
            .iter()
            .map(|(p, s, t)| (*p, *s, t.map(str::to_owned)))
            .collect();
        normalize(&mut want);
        let pubs: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert!(
            pubs.windows(2).all(|w| w[0] <= w[1]),
            "publication order: {pubs:?}"
        );
        normalize(&mut got);
        assert_eq!(got, want, "{ser:?}");
        assert!(
            sub.event_within(Duration::from_millis(200))
                .await?
                .is_none(),
            "com.z.z matched nothing"
        );
    }
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_ids_equal_event_ids_and_strictly_increase() -> Result {
    let node = TestNode::start().await?;
    for ser in SERIALIZERS {
        let mut sub = WampClient::join(node.wamp, ser, REALM).await?;
        let sid = sub.subscribe("ids.t", Dict::new()).await?;
        let mut publisher = WampClient::join(node.wamp, ser, REALM).await?;
        // Pipeline 200 acknowledged publishes, then collect PUBLISHED in order.
        let mut requests = Vec::new();
        for i in 0..200u64 {
            let options = dict([("acknowledge", Value::Boolean(true))]);
            requests.push(
                publisher
                    .publish("ids.t", options, vec![Value::from(i)], Dict::new())
                    .await?,
            );
        }
        let mut published = Vec::new();
        for r in requests {
            published.push(publisher.published(r).await?);
        }
        assert!(published.windows(2).all(|w| w[0] < w[1]), "{published:?}");
        for (i, id) in published.iter().enumerate() {
            let e = sub.next_event().await?;
            assert_eq!(e.subscription, sid);
            assert_eq!(e.publication, *id, "event {i}");
            assert_eq!(int(&e.args[0])?, i as u64);
        }
    }
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_exclusion_is_on_by_default() -> Result {
    let node = TestNode::start().await?;
    for ser in SERIALIZERS {
        let mut me = WampClient::join(node.wamp, ser, REALM).await?;
        let mut other = WampClient::join(node.wamp, ser, REALM).await?;
        me.subscribe("excl.t", Dict::new()).await?;
        other.subscribe("excl.t", Dict::new()).await?;
        let excluded = me
            .publish_acked("excl.t", vec![Value::from("default")])
            .await?;
        let included = me
            .publish_acked_with(
                "excl.t",
                dict([("exclude_me", Value::Boolean(false))]),
                vec![Value::from("mine")],
            )
            .await?;
        let explicit = me
            .publish_acked_with(
                "excl.t",
                dict([("exclude_me", Value::Boolean(true))]),
                vec![Value::from("explicit")],
            )
            .await?;
        let e = me.next_event().await?;
        assert_eq!(
            e.publication, included,
            "only the exclude_me=false event reaches me"
        );
        assert!(me.event_within(Duration::from_millis(200)).await?.is_none());
        let others: Vec<u64> = [
            other.next_event().await?,
            other.next_event().await?,
            other.next_event().await?,
        ]
        .iter()
        .map(|e| e.publication)
        .collect();
        assert_eq!(others, [excluded, included, explicit]);
    }
    node.shutdown().await;
    Ok(())
}

/// `after: 0` replays everything stored, then continues live, with no gap or
/// duplicate at the seam while a publisher keeps publishing: the publisher runs
/// before the SUBSCRIBE is sent and goes on for 1,000 more after SUBSCRIBED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_zero_replays_history_then_live_without_gap_or_duplicate() -> Result {
    const BEFORE: u64 = 1_500;
    const AFTER_SUBSCRIBED: u64 = 1_000;
    let node = TestNode::start().await?;
    for ser in SERIALIZERS {
        let topic = format!("seam.{}", ser.subprotocol().replace('.', "_"));
        let mut publisher = WampClient::join(node.wamp, ser, REALM).await?;
        for i in 0..BEFORE {
            publisher
                .publish(&topic, Dict::new(), vec![Value::from(i)], Dict::new())
                .await?;
        }
        let last_before = publisher
            .publish_acked(&topic, vec![Value::from(BEFORE)])
            .await?;
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let (subscribed_tx, mut subscribed_rx) = tokio::sync::oneshot::channel::<()>();
        let live_topic = topic.clone();
        let live = tokio::spawn(async move {
            let mut started = Some(started_tx);
            let mut stop_at = u64::MAX;
            let mut i = BEFORE + 1;
            while i < stop_at {
                // Bursts of 50 acknowledged publishes keep the log moving during the subscribe.
                let mut requests = Vec::new();
                for _ in 0..50 {
                    let options = dict([("acknowledge", Value::Boolean(true))]);
                    requests.push(
                        publisher
                            .publish(&live_topic, options, vec![Value::from(i)], Dict::new())
                            .await?,
                    );
                    i += 1;
                }
                for r in requests {
                    publisher.published(r).await?;
                }
                if let Some(tx) = started.take() {
                    let _ = tx.send(());
                }
                if stop_at == u64::MAX && subscribed_rx.try_recv().is_ok() {
                    stop_at = i + AFTER_SUBSCRIBED;
                }
                ensure!(i < 1_000_000, "the subscriber never subscribed");
            }
            anyhow::Ok(i)
        });
        tokio::time::timeout(Duration::from_secs(30), started_rx)
            .await
            .context("live publisher did not start")??;
        let mut sub = WampClient::join(node.wamp, ser, REALM).await?;
        let sid = sub
            .subscribe(&topic, dict([("after", Value::from(0u64))]))
            .await?;
        let _ = subscribed_tx.send(());
        let total = tokio::time::timeout(Duration::from_secs(60), live).await???;
        let mut last_id = 0u64;
        for want in 0..total {
            let e = sub.next_event().await?;
            let got = int(&e.args[0])?;
            ensure!(
                got == want,
                "{ser:?}: expected seq {want}, got {got} (id {})",
                e.publication
            );
            ensure!(e.publication > last_id, "ids must strictly increase");
            ensure!(e.subscription == sid);
            last_id = e.publication;
        }
        assert!(last_id > last_before);
        assert!(
            sub.event_within(Duration::from_millis(200))
                .await?
                .is_none(),
            "no duplicates"
        );
    }
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_replay_filters_by_topic_and_starts_after_the_given_id() -> Result {
    let node = TestNode::start().await?;
    let ser = Serializer::MsgPack;
    let mut publisher = WampClient::join(node.wamp, ser, REALM).await?;
    let mut ids = Vec::new();
    for i in 0..10u64 {
        ids.push(
            publisher
                .publish_acked("hist.a", vec![Value::from(i)])
                .await?,
        );
        publisher
            .publish_acked("hist.b", vec![Value::from(i)])
            .await?;
    }
    let mut sub = WampClient::join(node.wamp, ser, REALM).await?;
    sub.subscribe("hist.a", dict([("after", Value::from(ids[4]))]))
        .await?;
    for (i, id) in ids.iter().enumerate().skip(5) {
        let e = sub.next_event().await?;
        assert_eq!((e.publication, int(&e.args[0])?), (*id, i as u64));
    }
    assert!(sub
        .event_within(Duration::from_millis(200))
        .await?
        .is_none());
    node.shutdown().await;
    Ok(())
}

async fn call(caller: &mut WampClient, procedure: &str, args: Vec<Value>) -> anyhow::Result<u64> {
    let request = caller.request_id();
    caller
        .send(&Message::Call {
            request,
            options: Dict::new(),
            procedure: procedure.to_owned(),
            args,
            kwargs: Dict::new(),
        })
        .await?;
    Ok(request)
}

async fn register(callee: &mut WampClient, procedure: &str) -> anyhow::Result<u64> {
    let request = callee.request_id();
    callee
        .send(&Message::Register {
            request,
            options: Dict::new(),
            procedure: procedure.to_owned(),
        })
        .await?;
    match callee.reply_to(request).await? {
        Message::Registered { registration, .. } => Ok(registration),
        other => bail!("expected REGISTERED, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_register_call_yield_result() -> Result {
    let node = TestNode::start().await?;
    for ser in SERIALIZERS {
        let procedure = format!("com.math.add_{}", if ser.is_binary() { "mp" } else { "js" });
        let mut callee = WampClient::join(node.wamp, ser, REALM).await?;
        let registration = register(&mut callee, &procedure).await?;
        let mut caller = WampClient::join(node.wamp, ser, REALM).await?;
        let request = call(
            &mut caller,
            &procedure,
            vec![Value::from(2), Value::from(3)],
        )
        .await?;
        let (invocation, args) = match callee.recv().await? {
            Message::Invocation {
                request,
                registration: r,
                args,
                ..
            } => {
                assert_eq!(r, registration);
                (request, args)
            }
            other => bail!("expected INVOCATION, got {other:?}"),
        };
        let sum = int(&args[0])? + int(&args[1])?;
        callee
            .send(&Message::Yield {
                request: invocation,
                options: Dict::new(),
                args: vec![Value::from(sum)],
                kwargs: Dict::new(),
            })
            .await?;
        match caller.reply_to(request).await? {
            Message::Result { args, .. } => assert_eq!(int(&args[0])?, 5),
            other => bail!("expected RESULT, got {other:?}"),
        }
        // A second registration of the same procedure is refused.
        let mut rival = WampClient::join(node.wamp, ser, REALM).await?;
        let err = register(&mut rival, &procedure)
            .await
            .expect_err("duplicate");
        assert!(
            err.to_string()
                .contains("wamp.error.procedure_already_exists"),
            "{err}"
        );
    }
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_to_unknown_procedure_is_no_such_procedure() -> Result {
    let node = TestNode::start().await?;
    for ser in SERIALIZERS {
        let mut caller = WampClient::join(node.wamp, ser, REALM).await?;
        let request = call(&mut caller, "com.nobody.home", vec![]).await?;
        match caller.recv().await? {
            Message::Error {
                request_type,
                request: r,
                error,
                ..
            } => {
                assert_eq!((request_type, r), (code::CALL, request));
                assert_eq!(error, "wamp.error.no_such_procedure");
            }
            other => bail!("expected ERROR, got {other:?}"),
        }
    }
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callee_leaving_fails_the_pending_call() -> Result {
    let node = TestNode::start().await?;
    for ser in SERIALIZERS {
        let mut callee = WampClient::join(node.wamp, ser, REALM).await?;
        register(&mut callee, "com.flaky.proc").await?;
        let mut caller = WampClient::join(node.wamp, ser, REALM).await?;
        let request = call(&mut caller, "com.flaky.proc", vec![Value::from(1)]).await?;
        match callee.recv().await? {
            Message::Invocation { .. } => {}
            other => bail!("expected INVOCATION, got {other:?}"),
        }
        drop(callee); // the socket closes without YIELD or GOODBYE
        match caller.recv().await? {
            Message::Error {
                request_type,
                request: r,
                error,
                ..
            } => {
                assert_eq!((request_type, r), (code::CALL, request));
                assert_eq!(error, "wamp.error.canceled");
            }
            other => bail!("expected ERROR for the call, got {other:?}"),
        }
        // The registration went with the callee.
        let request = call(&mut caller, "com.flaky.proc", vec![]).await?;
        let err = caller.reply_to(request).await.expect_err("no callee");
        assert!(err.to_string().contains("no_such_procedure"), "{err}");
    }
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_events() -> Result {
    let node = TestNode::start().await?;
    for ser in SERIALIZERS {
        let mut sub = WampClient::join(node.wamp, ser, REALM).await?;
        let a = sub.subscribe("uns.a", Dict::new()).await?;
        let b = sub.subscribe("uns.b", Dict::new()).await?;
        let request = sub.request_id();
        sub.send(&Message::Unsubscribe {
            request,
            subscription: a,
        })
        .await?;
        assert!(matches!(
            sub.reply_to(request).await?,
            Message::Unsubscribed { .. }
        ));
        let mut publisher = WampClient::join(node.wamp, ser, REALM).await?;
        publisher
            .publish_acked("uns.a", vec![Value::from(1)])
            .await?;
        let marker = publisher
            .publish_acked("uns.b", vec![Value::from(2)])
            .await?;
        let e: Event = sub.next_event().await?;
        assert_eq!((e.subscription, e.publication), (b, marker));
        // Unknown subscription: ERROR no_such_subscription.
        let request = sub.request_id();
        sub.send(&Message::Unsubscribe {
            request,
            subscription: a,
        })
        .await?;
        let err = sub.reply_to(request).await.expect_err("already gone");
        assert!(err.to_string().contains("no_such_subscription"), "{err}");
    }
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nodes_internal_realm_cannot_be_joined() -> Result {
    let node = TestNode::start().await?;
    // `$ordo` holds the MQTT session records (docs/mqtt.md); no client may read or write it.
    let client = WampClient::unjoined(node.wamp, Serializer::Json).await?;
    let err = client
        .hello("$ordo", Dict::new())
        .await
        .err()
        .context("HELLO to realm $ordo was welcomed")?;
    assert!(
        format!("{err:#}").contains("wamp.error.invalid_uri"),
        "{err:#}"
    );
    node.shutdown().await;
    Ok(())
}
