//! fox-wamp's publish and subscribe options over real sockets: `when`
//! (compare-and-set), `watch` (parked until the condition holds, released in
//! id order), `will`, deep-merged `retain`, and `after`, `snapshot`, `filter`
//! on SUBSCRIBE; on the embedded node and across two cluster entries.

use anyhow::{bail, ensure, Context};
use ordo_common::wamp::value::{from_json, to_json};
use ordo_common::wamp::{Dict, Message, Serializer, Value};
use ordo_tests::cluster::Cluster;
use ordo_tests::wamp_client::{dict, Event, WampClient, REALM};
use ordo_tests::TestNode;
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;

type Result = anyhow::Result<()>;

const QUIET: Duration = Duration::from_millis(300);
const CONDITION_FAILED: &str = "wamp.error.condition_failed";

fn v(j: serde_json::Value) -> Value {
    from_json(j)
}

fn t() -> Value {
    Value::Boolean(true)
}

async fn join(addr: SocketAddr) -> anyhow::Result<WampClient> {
    WampClient::join(addr, Serializer::Json, REALM).await
}

/// The options of a lock request: take it when free, wait if not, free it on leaving.
fn lock_options() -> Dict {
    dict([
        ("retain", t()),
        ("when", Value::Nil),
        ("watch", t()),
        ("will", Value::Nil),
    ])
}

/// Send an acknowledged PUBLISH; return its request id.
async fn send_acked(
    c: &mut WampClient,
    topic: &str,
    mut options: Dict,
    args: Vec<Value>,
) -> anyhow::Result<u64> {
    options.insert("acknowledge".into(), t());
    c.publish(topic, options, args, Dict::new()).await
}

/// Wait for the reply to `request`: the publication id, or the ERROR's URI.
async fn outcome(
    c: &mut WampClient,
    request: u64,
) -> anyhow::Result<std::result::Result<u64, String>> {
    let m = c
        .recv_matching(|m| ordo_tests::wamp_client::reply_request(m) == Some(request))
        .await?;
    Ok(match m {
        Message::Published { publication, .. } => Ok(publication),
        Message::Error { error, .. } => Err(error),
        other => bail!("expected PUBLISHED or ERROR, got {other:?}"),
    })
}

/// Publish (acknowledged) and wait for the outcome.
async fn try_publish(
    c: &mut WampClient,
    topic: &str,
    options: Dict,
    args: Vec<Value>,
) -> anyhow::Result<std::result::Result<u64, String>> {
    let request = send_acked(c, topic, options, args).await?;
    outcome(c, request).await
}

/// Tell whether a reply to `request` arrives within [`QUIET`].
async fn answered_soon(c: &mut WampClient, request: u64) -> anyhow::Result<bool> {
    Ok(c.recv_matching_within(QUIET, |m| {
        ordo_tests::wamp_client::reply_request(m) == Some(request)
    })
    .await?
    .is_some())
}

fn value(e: &Event) -> serde_json::Value {
    match e.args.as_slice() {
        [] => serde_json::Value::Null,
        [one] => to_json(one),
        many => serde_json::Value::Array(many.iter().map(to_json).collect()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_set_succeeds_fails_and_null_means_absent() -> Result {
    let node = TestNode::start().await?;
    let mut a = join(node.wamp).await?;
    let mut b = join(node.wamp).await?;
    let mut sub = join(node.wamp).await?;
    sub.subscribe("cas.k", Dict::new()).await?;

    let when = |w: serde_json::Value| dict([("retain", t()), ("when", v(w))]);
    // `when: null`: only while the topic has no retained value.
    let first = try_publish(
        &mut a,
        "cas.k",
        when(json!(null)),
        vec![v(json!({"owner": "a"}))],
    )
    .await?;
    let first = first.map_err(anyhow::Error::msg)?;
    let refused = try_publish(
        &mut b,
        "cas.k",
        when(json!(null)),
        vec![v(json!({"owner": "b"}))],
    )
    .await?;
    assert_eq!(refused, Err(CONDITION_FAILED.to_owned()));
    // A pattern on the current value: members present and equal.
    let wrong = try_publish(
        &mut b,
        "cas.k",
        when(json!({"owner": "x"})),
        vec![v(json!({"owner": "b"}))],
    )
    .await?;
    assert_eq!(wrong, Err(CONDITION_FAILED.to_owned()));
    let second = try_publish(
        &mut b,
        "cas.k",
        when(json!({"owner": "a"})),
        vec![v(json!({"owner": "b"}))],
    )
    .await?;
    let second = second.map_err(anyhow::Error::msg)?;
    ensure!(second > first);

    // Subscribers see exactly the publishes that took effect, live and replayed.
    for want in [(first, "a"), (second, "b")] {
        let e = sub.next_event().await?;
        assert_eq!(
            (e.publication, value(&e)),
            (want.0, json!({"owner": want.1}))
        );
    }
    assert!(
        sub.event_within(QUIET).await?.is_none(),
        "a refused publish was delivered"
    );
    let mut late = join(node.wamp).await?;
    late.subscribe("cas.k", dict([("after", Value::from(0))]))
        .await?;
    let replayed = [late.next_event().await?, late.next_event().await?];
    assert_eq!(replayed.map(|e| e.publication), [first, second]);
    assert!(
        late.event_within(QUIET).await?.is_none(),
        "a refused publish was replayed"
    );

    // Deleting (empty retained payload) makes `null` hold again; unacknowledged
    // publishes are decided the same way, silently.
    try_publish(&mut a, "cas.k", dict([("retain", t())]), vec![])
        .await?
        .map_err(anyhow::Error::msg)?;
    let again = try_publish(
        &mut a,
        "cas.k",
        when(json!(null)),
        vec![v(json!({"owner": "a"}))],
    )
    .await?;
    ensure!(again.is_ok(), "{again:?}");
    a.publish("cas.k", when(json!(null)), vec![v(json!(1))], Dict::new())
        .await?;
    let ok = try_publish(
        &mut a,
        "cas.k",
        when(json!({"owner": "a"})),
        vec![v(json!({"n": 1}))],
    )
    .await?;
    ensure!(
        ok.is_ok(),
        "the silent refused publish changed the value: {ok:?}"
    );
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_deep_merges_and_snapshot_after_filter_select_events() -> Result {
    let node = TestNode::start().await?;
    let mut p = join(node.wamp).await?;
    let retain = || dict([("retain", t())]);
    let first = p
        .publish_acked_with("doc.1", retain(), vec![v(json!({"a": 1, "n": {"x": 1}}))])
        .await?;
    let merged = p
        .publish_acked_with("doc.1", retain(), vec![v(json!({"b": 2, "n": {"y": 2}}))])
        .await?;
    p.publish_acked_with("doc.2", retain(), vec![v(json!({"c": 3}))])
        .await?;
    p.publish_acked_with("doc.2", retain(), vec![]).await?; // empty: deleted

    // snapshot: the current (merged) retained values first, flagged `retained`.
    let mut s = join(node.wamp).await?;
    s.subscribe(
        "doc",
        dict([("match", Value::from("prefix")), ("snapshot", t())]),
    )
    .await?;
    let e = s.next_event().await?;
    assert_eq!(e.publication, merged);
    assert_eq!(e.details.get("retained"), Some(&t()));
    assert_eq!(value(&e), json!({"a": 1, "b": 2, "n": {"x": 1, "y": 2}}));
    assert!(s.event_within(QUIET).await?.is_none(), "doc.2 was deleted");

    // filter: only events whose value fits the pattern, live and replayed.
    let mut f = join(node.wamp).await?;
    f.subscribe(
        "alarm",
        dict([
            ("filter", v(json!({"kind": "fire"}))),
            ("after", Value::from(first)),
        ]),
    )
    .await?;
    let mut sent = Vec::new();
    for (kind, n) in [("fire", 1), ("info", 2), ("fire", 3)] {
        sent.push(
            p.publish_acked("alarm", vec![v(json!({"kind": kind, "n": n}))])
                .await?,
        );
    }
    let got = [f.next_event().await?, f.next_event().await?];
    assert_eq!(got.clone().map(|e| e.publication), [sent[0], sent[2]]);
    assert_eq!(got.map(|e| value(&e)["n"].clone()), [json!(1), json!(3)]);
    assert!(f.event_within(QUIET).await?.is_none());
    // The same filter on a replay (`after`) of what was published.
    let mut r = join(node.wamp).await?;
    r.subscribe(
        "alarm",
        dict([
            ("filter", v(json!({"kind": "info"}))),
            ("after", Value::from(first)),
        ]),
    )
    .await?;
    assert_eq!(r.next_event().await?.publication, sent[1]);
    assert!(r.event_within(QUIET).await?.is_none());
    node.shutdown().await;
    Ok(())
}

/// fox-wamp's `retained` on SUBSCRIBE: the retained values first, then only retained writes
/// (plain publications to the same topics are left out); `retainedState` is `snapshot`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_subscribe_sends_the_state_then_only_retained_writes() -> Result {
    let node = TestNode::start().await?;
    let mut p = join(node.wamp).await?;
    let retain = || dict([("retain", t())]);
    let kept = p
        .publish_acked_with("st.a", retain(), vec![v(json!({"on": true}))])
        .await?;
    p.publish_acked("st.b", vec![v(json!("plain"))]).await?;

    let mut s = join(node.wamp).await?;
    s.subscribe(
        "st",
        dict([("match", Value::from("prefix")), ("retained", t())]),
    )
    .await?;
    let e = s.next_event().await?;
    assert_eq!(e.publication, kept);
    assert_eq!(e.details.get("retained"), Some(&t()));
    assert_eq!(value(&e), json!({"on": true}));
    // A plain publish is not delivered to it; a retained write is.
    p.publish_acked("st.a", vec![v(json!("not a state change"))])
        .await?;
    let change = p
        .publish_acked_with("st.b", retain(), vec![v(json!({"on": false}))])
        .await?;
    let e = s.next_event().await?;
    assert_eq!(e.publication, change, "only the retained write");
    assert_eq!(e.details.get("retained"), None, "a live event");
    assert!(s.event_within(QUIET).await?.is_none());

    // `retainedState`: the same state first, then every event.
    let mut all = join(node.wamp).await?;
    all.subscribe(
        "st",
        dict([("match", Value::from("prefix")), ("retainedState", t())]),
    )
    .await?;
    let state: Vec<u64> = [all.next_event().await?, all.next_event().await?]
        .iter()
        .map(|e| e.publication)
        .collect();
    assert_eq!(state, vec![kept, change]);
    let plain = p.publish_acked("st.a", vec![v(json!(1))]).await?;
    assert_eq!(all.next_event().await?.publication, plain);
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_parks_and_releases_waiters_fairly_in_id_order() -> Result {
    let node = TestNode::start().await?;
    let mut sub = join(node.wamp).await?;
    sub.subscribe("res.lock", Dict::new()).await?;
    let mut a = join(node.wamp).await?;
    let mut b = join(node.wamp).await?;
    let mut c = join(node.wamp).await?;
    let held_a = try_publish(
        &mut a,
        "res.lock",
        lock_options(),
        vec![v(json!({"owner": "a"}))],
    )
    .await?;
    let held_a = held_a.map_err(anyhow::Error::msg)?;
    // c asks after b: b is first in line, whatever their session ids.
    let wait_b = send_acked(
        &mut b,
        "res.lock",
        lock_options(),
        vec![v(json!({"owner": "b"}))],
    )
    .await?;
    assert!(
        !answered_soon(&mut b, wait_b).await?,
        "b got the lock while a holds it"
    );
    let wait_c = send_acked(
        &mut c,
        "res.lock",
        lock_options(),
        vec![v(json!({"owner": "c"}))],
    )
    .await?;
    assert!(
        !answered_soon(&mut c, wait_c).await?,
        "c got the lock while a holds it"
    );

    let unlock_a = a
        .publish_acked_with("res.lock", dict([("retain", t())]), vec![])
        .await?;
    let held_b = outcome(&mut b, wait_b).await?.map_err(anyhow::Error::msg)?;
    ensure!(
        held_b > unlock_a,
        "b's event is delivered after the unlock that released it"
    );
    assert!(
        !answered_soon(&mut c, wait_c).await?,
        "c got the lock together with b"
    );
    let unlock_b = b
        .publish_acked_with("res.lock", dict([("retain", t())]), vec![])
        .await?;
    let held_c = outcome(&mut c, wait_c).await?.map_err(anyhow::Error::msg)?;
    ensure!(held_c > unlock_b);

    // The subscriber sees every change in strictly increasing id order.
    let mut seen = Vec::new();
    for _ in 0..5 {
        let e = sub.next_event().await?;
        seen.push((e.publication, value(&e)));
    }
    assert_eq!(
        seen,
        vec![
            (held_a, json!({"owner": "a"})),
            (unlock_a, json!(null)),
            (held_b, json!({"owner": "b"})),
            (unlock_b, json!(null)),
            (held_c, json!({"owner": "c"})),
        ]
    );
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_is_written_when_a_session_drops_and_parked_waiters_die_with_theirs() -> Result {
    let node = TestNode::start().await?;
    let mut sub = join(node.wamp).await?;
    sub.subscribe("fw.", dict([("match", Value::from("prefix"))]))
        .await?;
    let mut a = join(node.wamp).await?;
    try_publish(
        &mut a,
        "fw.lock",
        lock_options(),
        vec![v(json!({"owner": "a"}))],
    )
    .await?
    .map_err(anyhow::Error::msg)?;
    let presence = dict([("retain", t()), ("will", v(json!({"state": "off"})))]);
    try_publish(
        &mut a,
        "fw.presence",
        presence,
        vec![v(json!({"state": "on", "name": "a"}))],
    )
    .await?
    .map_err(anyhow::Error::msg)?;
    // b waits for the lock, then drops; c waits after it.
    let mut b = join(node.wamp).await?;
    let wait_b = send_acked(
        &mut b,
        "fw.lock",
        lock_options(),
        vec![v(json!({"owner": "b"}))],
    )
    .await?;
    assert!(!answered_soon(&mut b, wait_b).await?);
    drop(b);
    let mut c = join(node.wamp).await?;
    let wait_c = send_acked(
        &mut c,
        "fw.lock",
        lock_options(),
        vec![v(json!({"owner": "c"}))],
    )
    .await?;
    assert!(!answered_soon(&mut c, wait_c).await?);

    // a's connection breaks without GOODBYE: its wills free the lock (null) and
    // merge `off` into its presence; c, not the departed b, gets the lock.
    drop(a);
    let held_c = outcome(&mut c, wait_c).await?.map_err(anyhow::Error::msg)?;
    let mut seen = Vec::new();
    for _ in 0..5 {
        let e = sub.next_event().await?;
        let topic = e
            .details
            .get("topic")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        seen.push((e.publication, topic, value(&e)));
    }
    let ids: Vec<u64> = seen.iter().map(|s| s.0).collect();
    ensure!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids not increasing: {ids:?}"
    );
    let changes: Vec<(&str, &serde_json::Value)> =
        seen.iter().map(|s| (s.1.as_str(), &s.2)).collect();
    assert_eq!(
        changes[..2],
        [
            ("fw.lock", &json!({"owner": "a"})),
            ("fw.presence", &json!({"state": "on", "name": "a"}))
        ]
    );
    assert!(changes.contains(&("fw.lock", &json!(null))), "{changes:?}");
    assert!(
        changes.contains(&("fw.presence", &json!({"state": "off"}))),
        "{changes:?}"
    );
    let freed = changes.iter().position(|c| *c == ("fw.lock", &json!(null)));
    let taken = seen.iter().position(|s| s.0 == held_c);
    ensure!(
        freed < taken,
        "c's lock event before the will that freed it: {seen:?}"
    );
    assert_eq!(
        changes[taken.unwrap_or(0)],
        ("fw.lock", &json!({"owner": "c"}))
    );
    // The retained presence is the merge of a's value and its will.
    let mut s = join(node.wamp).await?;
    s.subscribe("fw.presence", dict([("snapshot", t())]))
        .await?;
    assert_eq!(
        value(&s.next_event().await?),
        json!({"state": "off", "name": "a"})
    );
    node.shutdown().await;
    Ok(())
}

// ---- the same on the in-process cluster (3 sync, 3 ndb, 2 entries) ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_one_entry_is_released_by_a_publish_on_another() -> Result {
    let cluster = Cluster::new(2)?;
    let nodes = cluster.spawn_storage();
    let e1 = cluster.entry(1).await?;
    let e2 = cluster.entry(2).await?;
    let mut s1 = join(e1.wamp).await?;
    let mut s2 = join(e2.wamp).await?;
    s1.subscribe("job.state", Dict::new())
        .await
        .context("subscribe on entry 1")?;
    s2.subscribe("job.state", Dict::new())
        .await
        .context("subscribe on entry 2")?;

    // On entry 2 the job is busy; on entry 1 a worker waits for it to be free.
    let mut owner = join(e2.wamp).await?;
    let busy = owner
        .publish_acked_with(
            "job.state",
            dict([("retain", t())]),
            vec![v(json!({"state": "busy"}))],
        )
        .await?;
    let mut worker = join(e1.wamp).await?;
    let refused = try_publish(
        &mut worker,
        "job.state",
        dict([("when", v(json!({"state": "free"})))]),
        vec![v(json!({"state": "busy", "by": "worker"}))],
    )
    .await?;
    assert_eq!(
        refused,
        Err(CONDITION_FAILED.to_owned()),
        "entry 1 saw the busy state"
    );
    let wait = send_acked(
        &mut worker,
        "job.state",
        dict([("when", v(json!({"state": "free"}))), ("watch", t())]),
        vec![v(json!({"state": "busy", "by": "worker"}))],
    )
    .await?;
    assert!(
        !answered_soon(&mut worker, wait).await?,
        "released while busy"
    );
    let free = owner
        .publish_acked_with(
            "job.state",
            dict([("retain", t())]),
            vec![v(json!({"state": "free"}))],
        )
        .await?;
    let taken = outcome(&mut worker, wait)
        .await?
        .map_err(anyhow::Error::msg)?;
    ensure!(busy < free && free < taken, "{busy} {free} {taken}");
    // Both entries deliver the same events under the same ids, in id order.
    for s in [&mut s1, &mut s2] {
        let mut seen = Vec::new();
        for _ in 0..3 {
            let e = s.next_event().await?;
            seen.push((e.publication, value(&e)));
        }
        assert_eq!(
            seen,
            vec![
                (busy, json!({"state": "busy"})),
                (free, json!({"state": "free"})),
                (taken, json!({"state": "busy", "by": "worker"})),
            ]
        );
    }
    // The merged value is the same retained state on both entries: a CAS on
    // entry 2 sees the worker's claim.
    let claim = try_publish(
        &mut owner,
        "job.state",
        dict([("when", v(json!({"by": "worker"})))]),
        vec![v(json!({"state": "done"}))],
    )
    .await?;
    ensure!(claim.is_ok(), "{claim:?}");

    e1.shutdown().await;
    e2.shutdown().await;
    let addrs = cluster.spec.sync.iter().zip(&cluster.spec.ndb);
    for (node, addr) in nodes
        .into_iter()
        .zip(addrs.flat_map(|(s, n)| [s.addr, n.addr]))
    {
        node.stop(addr).await;
    }
    Ok(())
}
