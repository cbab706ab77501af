//! WAMP subscription and registration meta events over real sockets:
//! `on_create`, `on_subscribe` / `on_register`, `on_unsubscribe` /
//! `on_unregister`, `on_delete`, including a session that disconnects without
//! unsubscribing or unregistering.

use anyhow::{ensure, Context};
use ordo_common::wamp::{value_to_dict, Dict, Message, Serializer, Value};
use ordo_tests::wamp_client::{dict, WampClient, REALM};
use ordo_tests::TestNode;
use std::collections::BTreeMap;
use std::time::Duration;

type Result = anyhow::Result<()>;

const QUIET: Duration = Duration::from_millis(300);

/// A client watching the four lifecycle events of `api` (`subscription` or `registration`).
struct Watcher {
    client: WampClient,
    /// Subscription id -> the meta event's short name (`on_create`, ...).
    names: BTreeMap<u64, &'static str>,
}

impl Watcher {
    async fn start(node: &TestNode, api: &str) -> anyhow::Result<Watcher> {
        let mut client = WampClient::join(node.wamp, Serializer::Json, REALM).await?;
        let second = if api == "subscription" {
            ["on_subscribe", "on_unsubscribe"]
        } else {
            ["on_register", "on_unregister"]
        };
        let mut names = BTreeMap::new();
        for name in ["on_create", second[0], second[1], "on_delete"] {
            let id = client
                .subscribe(&format!("wamp.{api}.{name}"), Dict::new())
                .await?;
            names.insert(id, name);
        }
        Ok(Watcher { client, names })
    }

    /// Return the next meta event as (name, args, publication id).
    async fn next(&mut self) -> anyhow::Result<(&'static str, Vec<Value>, u64)> {
        let e = self.client.next_event().await?;
        let name = self
            .names
            .get(&e.subscription)
            .context("unknown subscription")?;
        Ok((name, e.args, e.publication))
    }

    /// Expect exactly these events next, in this order, with (session, id) arguments.
    async fn expect(&mut self, want: &[(&str, u64, u64)]) -> Result {
        let mut last = 0;
        for (name, session, id) in want {
            let (got, args, publication) = self.next().await?;
            ensure!(
                got == *name && args == vec![Value::from(*session), Value::from(*id)],
                "expected {name}({session}, {id}), got {got}{args:?}"
            );
            ensure!(publication > last, "meta events out of order");
            last = publication;
        }
        Ok(())
    }

    /// Expect `on_create(session, details)` next; return the details.
    async fn expect_create(&mut self, session: u64) -> anyhow::Result<Dict> {
        let (name, args, _) = self.next().await?;
        ensure!(
            name == "on_create",
            "expected on_create, got {name}{args:?}"
        );
        ensure!(args.first() == Some(&Value::from(session)), "{args:?}");
        value_to_dict(args.get(1).cloned().context("details")?).context("details dict")
    }

    async fn expect_quiet(&mut self) -> Result {
        let extra = self.client.event_within(QUIET).await?;
        ensure!(extra.is_none(), "unexpected meta event {extra:?}");
        Ok(())
    }
}

fn created_is_iso8601(details: &Dict) -> Result {
    let created = details
        .get("created")
        .and_then(Value::as_str)
        .context("created")?;
    ensure!(
        created.len() == 24 && created.ends_with('Z') && created.as_bytes()[10] == b'T',
        "created {created:?} is not ISO 8601"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_meta_events_follow_the_lifecycle() -> Result {
    let node = TestNode::start().await?;
    let mut w = Watcher::start(&node, "subscription").await?;
    // The watcher's own subscriptions are to the meta API: nothing announced.
    w.expect_quiet().await?;

    let mut a = WampClient::join(node.wamp, Serializer::MsgPack, REALM).await?;
    let mut b = WampClient::join_rawsocket(node.wamp_rawsocket, Serializer::Cbor, REALM).await?;
    let id = a.subscribe("meta.ev", Dict::new()).await?;
    let details = w.expect_create(a.session).await?;
    assert_eq!(details.get("id"), Some(&Value::from(id)));
    assert_eq!(details.get("uri"), Some(&Value::from("meta.ev")));
    assert_eq!(details.get("match"), Some(&Value::from("exact")));
    created_is_iso8601(&details)?;
    w.expect(&[("on_subscribe", a.session, id)]).await?;

    // A second subscriber joins the same subscription: no on_create; a repeated
    // SUBSCRIBE changes nothing and announces nothing.
    assert_eq!(b.subscribe("meta.ev", Dict::new()).await?, id);
    w.expect(&[("on_subscribe", b.session, id)]).await?;
    assert_eq!(b.subscribe("meta.ev", Dict::new()).await?, id);
    let p = b
        .subscribe("meta", dict([("match", Value::from("prefix"))]))
        .await?;
    let pd = w.expect_create(b.session).await?;
    assert_eq!(pd.get("match"), Some(&Value::from("prefix")));
    w.expect(&[("on_subscribe", b.session, p)]).await?;

    // The procedure answers with the same details.
    let request = a.request_id();
    a.send(&Message::Call {
        request,
        options: Dict::new(),
        procedure: "wamp.subscription.get".into(),
        args: vec![Value::from(id)],
        kwargs: Dict::new(),
    })
    .await?;
    let Message::Result { args, .. } = a.reply_to(request).await? else {
        anyhow::bail!("no RESULT");
    };
    let got = value_to_dict(args.first().cloned().context("get")?).context("dict")?;
    assert_eq!(got, details);

    // Unsubscribing the first of two: on_unsubscribe only.
    let request = a.request_id();
    a.send(&Message::Unsubscribe {
        request,
        subscription: id,
    })
    .await?;
    a.reply_to(request).await?;
    w.expect(&[("on_unsubscribe", a.session, id)]).await?;

    // The last subscriber drops its connection without UNSUBSCRIBE or GOODBYE:
    // it leaves both subscriptions, and both are deleted.
    let gone = b.session;
    drop(b);
    w.expect(&[
        ("on_unsubscribe", gone, id),
        ("on_delete", gone, id),
        ("on_unsubscribe", gone, p),
        ("on_delete", gone, p),
    ])
    .await?;
    w.expect_quiet().await?;
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_meta_events_follow_the_lifecycle() -> Result {
    let node = TestNode::start().await?;
    let mut w = Watcher::start(&node, "registration").await?;
    let mut c = WampClient::join(node.wamp, Serializer::Json, REALM).await?;
    let mut d = WampClient::join_rawsocket(node.wamp_rawsocket, Serializer::MsgPack, REALM).await?;
    let shared = dict([("invoke", Value::from("roundrobin"))]);
    let register = |client: &mut WampClient, options: Dict| {
        let request = client.request_id();
        (
            request,
            Message::Register {
                request,
                options,
                procedure: "meta.proc".into(),
            },
        )
    };
    let (r, m) = register(&mut c, shared.clone());
    c.send(&m).await?;
    let Message::Registered {
        registration: id, ..
    } = c.reply_to(r).await?
    else {
        anyhow::bail!("no REGISTERED");
    };
    let details = w.expect_create(c.session).await?;
    assert_eq!(details.get("id"), Some(&Value::from(id)));
    assert_eq!(details.get("uri"), Some(&Value::from("meta.proc")));
    assert_eq!(details.get("match"), Some(&Value::from("exact")));
    assert_eq!(details.get("invoke"), Some(&Value::from("roundrobin")));
    created_is_iso8601(&details)?;
    w.expect(&[("on_register", c.session, id)]).await?;

    let (r, m) = register(&mut d, shared.clone());
    d.send(&m).await?;
    d.reply_to(r).await?;
    w.expect(&[("on_register", d.session, id)]).await?;
    // A refused REGISTER announces nothing.
    let (r, m) = register(&mut d, shared);
    d.send(&m).await?;
    ensure!(
        d.reply_to(r).await.is_err(),
        "a second REGISTER by the same callee"
    );
    w.expect_quiet().await?;

    let request = c.request_id();
    c.send(&Message::Unregister {
        request,
        registration: id,
    })
    .await?;
    c.reply_to(request).await?;
    w.expect(&[("on_unregister", c.session, id)]).await?;

    let gone = d.session;
    drop(d);
    w.expect(&[("on_unregister", gone, id), ("on_delete", gone, id)])
        .await?;
    w.expect_quiet().await?;
    node.shutdown().await;
    Ok(())
}
