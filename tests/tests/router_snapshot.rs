//! The entry's router snapshot across restarts of an embedded node on one data folder: a clean
//! stop writes a snapshot, the next start restores it and replays only the log after it, and
//! the state clients see afterwards (MQTT retained values, WAMP deep-merged objects, a
//! persistent MQTT session with the messages it missed) is the state before.

use anyhow::{ensure, Context};
use ordo_common::mqtt::QoS as RawQoS;
use ordo_common::wamp::value::{from_json, to_json};
use ordo_common::wamp::{Dict, Serializer, Value};
use ordo_common::PermanentId;
use ordo_entry::router::{Router, RouterSnapshot};
use ordo_tests::mqtt_raw::RawMqtt;
use ordo_tests::wamp_client::{dict, WampClient, REALM};
use ordo_tests::TestNode;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

type Result = anyhow::Result<()>;

fn retain() -> Dict {
    dict([("retain", Value::Boolean(true))])
}

async fn merge_into_doc(addr: SocketAddr, value: serde_json::Value) -> anyhow::Result<u64> {
    let mut p = WampClient::join(addr, Serializer::Json, REALM).await?;
    p.publish_acked_with("doc.1", retain(), vec![from_json(value)])
        .await
}

/// MQTT retained publishes `r/{i % 4}` = `v{i}` for `i` in `range`.
async fn publish_retained(addr: SocketAddr, range: std::ops::Range<u16>) -> Result {
    let (mut p, _) = RawMqtt::connect(addr, "retainer", true, 0).await?;
    for i in range {
        p.publish_acked(
            &format!("r/{}", i % 4),
            format!("v{i}").as_bytes(),
            i + 1,
            true,
        )
        .await?;
    }
    p.disconnect().await
}

async fn publish_to_session(addr: SocketAddr, range: std::ops::RangeInclusive<u16>) -> Result {
    let (mut p, _) = RawMqtt::connect(addr, "session-feeder", true, 0).await?;
    for i in range {
        p.publish_acked("ps/t", format!("m{i}").as_bytes(), i, false)
            .await?;
    }
    p.disconnect().await
}

/// What a new subscriber to `r/#` is given: topic -> payload.
async fn retained_values(addr: SocketAddr) -> anyhow::Result<BTreeMap<String, String>> {
    let (mut s, _) = RawMqtt::connect(addr, "reader", true, 0).await?;
    s.subscribe(1, &[("r/#", RawQoS::AtLeastOnce)]).await?;
    let mut got = BTreeMap::new();
    while got.len() < 4 {
        let p = s.recv_publish().await.context("retained r/#")?;
        ensure!(p.retain, "{} is not flagged retained", p.topic);
        got.insert(p.topic, String::from_utf8(p.payload.to_vec())?);
    }
    ensure!(
        s.recv_within(Duration::from_millis(300)).await?.is_none(),
        "more than four retained topics"
    );
    s.disconnect().await?;
    Ok(got)
}

/// The WAMP `snapshot` of `doc.1`: its merged retained value.
async fn doc(addr: SocketAddr) -> anyhow::Result<serde_json::Value> {
    let mut s = WampClient::join(addr, Serializer::Json, REALM).await?;
    s.subscribe("doc.1", dict([("snapshot", Value::Boolean(true))]))
        .await?;
    let e = s.next_event().await?;
    Ok(e.args.first().map(to_json).unwrap_or_default())
}

fn expected_retained(range: std::ops::Range<u16>) -> BTreeMap<String, String> {
    range
        .map(|i| (format!("r/{}", i % 4), format!("v{i}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_restores_the_snapshot_and_replays_only_the_log_after_it() -> Result {
    let node = TestNode::start_with(|c| c.router_snapshot_every = 10).await?;
    assert_eq!(
        node.restored.snapshot_at, None,
        "a new store has no snapshot"
    );

    // A persistent session that stays offline, missing m1..m3 now and m4..m5 later.
    let (mut sub, _) = RawMqtt::connect(node.mqtt, "persist", false, 0).await?;
    sub.subscribe(1, &[("ps/t", RawQoS::AtLeastOnce)]).await?;
    sub.disconnect().await?;
    publish_to_session(node.mqtt, 1..=3).await?;
    merge_into_doc(node.wamp, json!({"a": 1, "n": {"x": 1}})).await?;
    publish_retained(node.mqtt, 0..30).await?;
    merge_into_doc(node.wamp, json!({"b": 2, "n": {"y": 2}})).await?;

    // Snapshots off for this run, so the next start has only the one of this clean stop.
    let node = node.restart(|c| c.router_snapshot_every = 0).await?;
    let first = node.restored;
    let at = first
        .snapshot_at
        .context("a clean stop wrote no snapshot")?;
    assert_eq!(at, first.last, "the stop's snapshot is at the last id");
    assert_eq!(first.replayed, 0);
    assert!(at.0 >= 36, "{at} is below the 36 publishes made");
    assert_eq!(retained_values(node.mqtt).await?, expected_retained(0..30));
    assert_eq!(
        doc(node.wamp).await?,
        json!({"a": 1, "b": 2, "n": {"x": 1, "y": 2}})
    );

    // The tail: written after the snapshot and, with snapshots off, not in any.
    publish_to_session(node.mqtt, 4..=5).await?;
    publish_retained(node.mqtt, 30..33).await?;
    let last_doc = merge_into_doc(node.wamp, json!({"n": {"x": 3}, "c": 3})).await?;

    let node = node.restart(|c| c.router_snapshot_every = 10).await?;
    let second = node.restored;
    assert_eq!(second.snapshot_at, Some(at), "restored {second:?}");
    assert!(
        second.last.0 >= last_doc,
        "{second:?} ends before {last_doc}"
    );
    assert_eq!(
        second.replayed,
        second.last.0 - at.0,
        "replayed exactly the log after the snapshot: {second:?}"
    );
    assert!(
        (6..second.last.0 / 2).contains(&second.replayed),
        "the six tail publishes, not the whole log: {second:?}"
    );
    assert_eq!(retained_values(node.mqtt).await?, expected_retained(0..33));
    assert_eq!(
        doc(node.wamp).await?,
        json!({"a": 1, "b": 2, "c": 3, "n": {"x": 3, "y": 2}})
    );
    let (mut sub, ack) = RawMqtt::connect(node.mqtt, "persist", false, 0).await?;
    assert!(ack.session_present, "the persistent session was lost");
    for i in 1..=5 {
        let p = sub.recv_publish().await?;
        assert_eq!(String::from_utf8(p.payload.to_vec())?, format!("m{i}"));
    }
    sub.disconnect().await?;

    // What the last stop left: its snapshot restored plus the log after it is the state the
    // whole log gives.
    let dir = node.shutdown_keeping_data().await?;
    let store = ordo_ndb::Store::open(&dir.path().join("data").join("db"))?;
    let last = store.last_id()?;
    let newest = *store.snapshot_ids()?.first().context("no snapshot")?;
    assert!(newest > at, "the last stop wrote a newer snapshot");
    let bytes = store.get_snapshot(newest)?.context("snapshot bytes")?;
    let restored = Router::restore(RouterSnapshot::decode(&bytes)?, 16, 1);
    let whole = Router::new(PermanentId::ZERO, Vec::new(), 16, 1);
    for (router, after) in [(&restored, newest), (&whole, PermanentId::ZERO)] {
        let log = store.read_range(after, last, usize::MAX)?;
        let log: Vec<_> = log.into_iter().map(|(id, m)| (id, Arc::new(m))).collect();
        router.dispatch(&log);
    }
    assert_eq!(restored.snapshot(), whole.snapshot());
    Ok(())
}

/// Poll `check` until it returns `true`, for at most [`ordo_tests::TIMEOUT`].
async fn until<F, Fut>(what: &str, mut check: F) -> Result
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + ordo_tests::TIMEOUT;
    while !check().await? {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{what}: not reached"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// A cluster entry's store is a cache of the permanent log, written without fsync; its
/// snapshot's synced write makes the cache up to the snapshot durable, so a restarted entry
/// restores it, replays the cache after it and catches up from the ndbs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_entry_restores_its_snapshot_and_catches_up() -> Result {
    let c = ordo_tests::cluster::Cluster::new(2)?;
    let _storage = c.spawn_storage();
    let start = |owner: u64| {
        let file = c.file.clone();
        TestNode::start_with(move |cfg| {
            cfg.cluster = Some(file);
            cfg.owner = owner;
            cfg.router_snapshot_every = 5;
        })
    };
    let e1 = start(1).await?;
    let e2 = start(2).await?;
    publish_retained(e2.mqtt, 0..20).await?;
    merge_into_doc(e2.wamp, json!({"a": 1})).await?;
    until("entry 1 delivered entry 2's publishes", || async {
        Ok(doc(e1.wamp).await? == json!({"a": 1}))
    })
    .await?;

    let e1 = e1.restart(|_| {}).await?;
    let restored = e1.restored;
    let at = restored
        .snapshot_at
        .context("a clean stop wrote no snapshot")?;
    assert!(at.0 >= 21, "{restored:?} misses the 21 publishes");
    assert_eq!(
        restored.replayed,
        restored.last.0 - at.0,
        "replayed only the cache after the snapshot: {restored:?}"
    );
    assert_eq!(retained_values(e1.mqtt).await?, expected_retained(0..20));
    assert_eq!(doc(e1.wamp).await?, json!({"a": 1}));

    // It goes on from there: later writes through entry 2 reach its router.
    publish_retained(e2.mqtt, 20..24).await?;
    merge_into_doc(e2.wamp, json!({"b": 2})).await?;
    until("entry 1 merged entry 2's later write", || async {
        Ok(doc(e1.wamp).await? == json!({"a": 1, "b": 2}))
    })
    .await?;
    assert_eq!(retained_values(e1.mqtt).await?, expected_retained(0..24));
    e1.shutdown().await;
    e2.shutdown().await;
    Ok(())
}
