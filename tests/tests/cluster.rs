//! The cluster in one test process: 3 sync and 3 ndb nodes (their real RocksDB stores) and two
//! entries, all talking QUIC with mutual TLS on loopback, driven by rumqttc.
//!
//! The slow suite runs the same roles as separate processes and kills them with SIGKILL; here a
//! node is stopped and started again through its shutdown signal, which is enough to check that
//! the survivors keep ordering and that a restarted node serves again.

use anyhow::Context;
use ordo_tests::cluster::{spawn_ndb, spawn_sync, Cluster, InProcess};
use ordo_tests::Rumqtt;
use rumqttc::QoS;
use std::net::SocketAddr;

type Result = anyhow::Result<()>;

/// Publish `n` QoS1 messages named `name/0..n` and wait for every PUBACK.
async fn publish(addr: SocketAddr, name: &str, n: u32) -> Result {
    let mut client = Rumqtt::connect(addr, &format!("pub-{name}")).await?;
    for seq in 0..n {
        client
            .client
            .publish("c/t", QoS::AtLeastOnce, false, format!("{name}/{seq}"))
            .await?;
    }
    for _ in 0..n {
        client
            .wait_for(|p| matches!(p, rumqttc::Packet::PubAck(_)).then_some(()))
            .await
            .with_context(|| format!("{name}: waiting for PUBACKs"))?;
    }
    Ok(())
}

async fn receive(sub: &mut Rumqtt, n: usize) -> anyhow::Result<Vec<String>> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let p = sub
            .next_publish()
            .await
            .with_context(|| format!("after {} of {n} messages", got.len()))?;
        got.push(String::from_utf8_lossy(&p.payload).into_owned());
    }
    Ok(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_entries_deliver_one_order_and_survive_an_ndb_and_a_sync_restart() -> Result {
    let c = Cluster::new(2)?;
    let root = c.root.path().to_path_buf();
    let mut syncs: Vec<Option<InProcess>> = (1..=3)
        .map(|id| Some(spawn_sync(&c.spec, id, &root)))
        .collect();
    let mut ndbs: Vec<Option<InProcess>> = (1..=3)
        .map(|id| Some(spawn_ndb(&c.spec, id, &root)))
        .collect();
    let e1 = c.entry(1).await?;
    let e2 = c.entry(2).await?;
    let mut s1 = Rumqtt::connect(e1.mqtt, "sub1").await?;
    s1.subscribe("c/#", QoS::AtLeastOnce).await?;
    let mut s2 = Rumqtt::connect(e2.mqtt, "sub2").await?;
    s2.subscribe("c/#", QoS::AtLeastOnce).await?;

    // Both entries publish at once; both subscribers see one sequence.
    let (a, b) = tokio::join!(publish(e1.mqtt, "a", 200), publish(e2.mqtt, "b", 200));
    a?;
    b?;
    let seen1 = receive(&mut s1, 400).await?;
    let seen2 = receive(&mut s2, 400).await?;
    assert_eq!(seen1, seen2, "the two entries delivered different orders");
    for name in ["a", "b"] {
        let mine: Vec<&String> = seen1.iter().filter(|m| m.starts_with(name)).collect();
        let want: Vec<String> = (0..200).map(|s| format!("{name}/{s}")).collect();
        assert_eq!(mine, want.iter().collect::<Vec<_>>(), "{name}: FIFO broken");
    }

    // One ndb down: the other two are a quorum. Then it comes back and another goes.
    if let Some(n) = ndbs[2].take() {
        n.stop(c.spec.ndb[2].addr).await;
    }
    publish(e1.mqtt, "c", 50).await?;
    ndbs[2] = Some(spawn_ndb(&c.spec, 3, &root));
    if let Some(n) = ndbs[0].take() {
        n.stop(c.spec.ndb[0].addr).await;
    }
    publish(e2.mqtt, "d", 50).await?;

    // One sync down (whichever leads or not): two keep ordering; it restarts from its log.
    if let Some(s) = syncs[0].take() {
        s.stop(c.spec.sync[0].addr).await;
    }
    publish(e1.mqtt, "e", 50).await?;
    syncs[0] = Some(spawn_sync(&c.spec, 1, &root));
    if let Some(s) = syncs[1].take() {
        s.stop(c.spec.sync[1].addr).await;
    }
    publish(e2.mqtt, "f", 50).await?;

    let tail1 = receive(&mut s1, 200).await?;
    let tail2 = receive(&mut s2, 200).await?;
    assert_eq!(tail1, tail2);
    let want: Vec<String> = ["c", "d", "e", "f"]
        .iter()
        .flat_map(|n| (0..50).map(move |s| format!("{n}/{s}")))
        .collect();
    assert_eq!(tail1, want, "sequential publishes arrive in publish order");

    e1.shutdown().await;
    e2.shutdown().await;
    let addrs = c.spec.ndb.iter().chain(&c.spec.sync).map(|m| m.addr);
    for (n, addr) in ndbs.into_iter().chain(syncs).zip(addrs) {
        if let Some(n) = n {
            n.stop(addr).await;
        }
    }
    Ok(())
}

/// An ndb whose data folder is gone (a lost disk, or the old store layout moved away) starts
/// empty, fetches every resolution from the syncs and every body from its peers, and ends with
/// the same permanent log as a peer, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ndb_that_lost_its_disk_refetches_the_whole_log_from_its_peers() -> Result {
    let c = Cluster::new(1)?;
    let root = c.root.path().to_path_buf();
    let syncs: Vec<InProcess> = (1..=3).map(|id| spawn_sync(&c.spec, id, &root)).collect();
    let mut ndbs: Vec<Option<InProcess>> = (1..=3)
        .map(|id| Some(spawn_ndb(&c.spec, id, &root)))
        .collect();
    let e1 = c.entry(1).await?;
    // More than the nodes' 64 cached records, so peers answer from their stores.
    publish(e1.mqtt, "a", 300).await?;

    if let Some(n) = ndbs[2].take() {
        n.stop(c.spec.ndb[2].addr).await;
    }
    std::fs::remove_dir_all(root.join("ndb3")).context("remove ndb3's data folder")?;
    ndbs[2] = Some(spawn_ndb(&c.spec, 3, &root));
    // With ndb1 down, every new segment needs ndb3's TRIM, and ndb3 applies in id order only.
    if let Some(n) = ndbs[0].take() {
        n.stop(c.spec.ndb[0].addr).await;
    }
    publish(e1.mqtt, "b", 50).await?;

    // Both stopped, so their stores can be read: done once ndb3 holds what ndb2 holds.
    let mut logs = None;
    for _ in 0..30 {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        for i in [1, 2] {
            if let Some(n) = ndbs[i].take() {
                n.stop(c.spec.ndb[i].addr).await;
            }
        }
        let read = |dir: &str| -> anyhow::Result<(u64, Vec<bytes::Bytes>)> {
            let (store, disk) = ordo_ndb::NdbClusterStore::open(&root.join(dir).join("ndb"))?;
            Ok((
                disk.next.0,
                store.read_permanent(ordo_common::PermanentId(1), 1000)?,
            ))
        };
        let (next2, log2) = read("ndb2")?;
        let (next3, log3) = read("ndb3")?;
        if next3 > 350 && next3 == next2 {
            logs = Some((log2, log3));
            break;
        }
        for i in [1, 2] {
            ndbs[i] = Some(spawn_ndb(&c.spec, i as u32 + 1, &root));
        }
    }
    let (reference, rebuilt) = logs.context("ndb3 never caught up with ndb2")?;
    e1.shutdown().await;
    assert!(
        reference.len() > 350,
        "ndb2 holds {} records",
        reference.len()
    );
    assert_eq!(rebuilt.len(), reference.len());
    assert!(rebuilt == reference, "ndb3 rebuilt a different log");
    for (s, addr) in syncs.into_iter().zip(c.spec.sync.iter().map(|m| m.addr)) {
        s.stop(addr).await;
    }
    Ok(())
}

/// The operator's `Abandon` over QUIC: taken from the `operator` certificate, committed to
/// the sync log and applied by every ndb; the same command from another certificate, or
/// from a node, is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_abandon_is_committed_and_a_forged_one_is_not() -> Result {
    use ordo_common::proto::{Abandon, Msg, NodeId};
    let c = Cluster::new(1)?;
    let root = c.root.path().to_path_buf();
    let nodes = c.spawn_storage();
    // A node's certificate cannot speak as the operator, and a node's Abandon is ignored.
    let entry_cert = ordo_common::quic::load_identity(&c.spec.cert_dir, "entry1")?;
    let forged = Msg::Abandon(Abandon {
        owner: 1,
        below: 50,
    });
    for as_who in [NodeId::Operator, NodeId::Entry(1)] {
        for m in &c.spec.sync {
            let to = NodeId::Sync(m.id as u32);
            let _ = ordo_common::quic::send_once(
                as_who,
                &entry_cert,
                to,
                m.addr,
                std::slice::from_ref(&forged),
            )
            .await;
        }
    }
    let sent =
        ordo_sync::operator::abandon(&c.spec, 7, 42, 3, std::time::Duration::from_millis(500))
            .await?;
    assert!(sent >= 3, "delivered {sent} times");
    // Let the ndbs poll for the notice, then stop everything and read the disks.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let addrs: Vec<SocketAddr> = c
        .spec
        .sync
        .iter()
        .zip(&c.spec.ndb)
        .flat_map(|(s, n)| [s.addr, n.addr])
        .collect();
    for (n, addr) in nodes.into_iter().zip(addrs) {
        n.stop(addr).await;
    }
    let mut holders = 0;
    for id in 1..=3 {
        let (_, disk) = ordo_sync::SyncStore::open(&root.join(format!("sync{id}/sync")))?;
        let abandons: Vec<Abandon> = disk.log.iter().flat_map(|e| e.abandons.clone()).collect();
        assert!(
            abandons.iter().all(|a| a.owner == 7),
            "sync{id}: {abandons:?}"
        );
        holders += usize::from(abandons.contains(&Abandon {
            owner: 7,
            below: 42,
        }));
    }
    assert!(holders >= 2, "the abandon is on {holders} sync logs");
    for id in 1..=3 {
        let (_, disk) = ordo_ndb::NdbClusterStore::open(&root.join(format!("ndb{id}/ndb")))?;
        assert_eq!(disk.floor.get(&7), Some(&42), "ndb{id} applied the notice");
        assert_eq!(disk.floor.get(&1), None);
    }
    Ok(())
}
