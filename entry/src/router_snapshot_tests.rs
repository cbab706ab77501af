use super::*;
use bytes::Bytes;
use ordo_common::{Payload, StoredMessage};
use ordo_ndb::CommitBatch;

/// Message `i`: retained on one of 7 topics, every third one not retained, every 11th deletes.
fn message(i: u64) -> Arc<StoredMessage> {
    let body = if i.is_multiple_of(11) {
        Bytes::new()
    } else {
        Bytes::from(format!("{{\"i\":{i}}}"))
    };
    Arc::new(StoredMessage {
        realm: "realm1".into(),
        topic: format!("t/{}", i % 7),
        payload: Payload::Raw(body),
        qos: 1,
        retain: !i.is_multiple_of(3),
        publisher: 0,
        exclude_publisher: false,
        mqtt: None,
        wamp: None,
    })
}

/// Store and dispatch messages `from..=to`, as the sequencer does: written, then dispatched.
fn append(store: &Store, router: &Router, from: u64, to: u64) {
    let messages: Vec<_> = (from..=to).map(|i| (PermanentId(i), message(i))).collect();
    store
        .commit(&CommitBatch {
            messages: messages.clone(),
            meta: Vec::new(),
        })
        .expect("commit");
    router.dispatch(&messages);
}

fn fresh() -> Arc<Router> {
    Router::new(PermanentId::ZERO, Vec::new(), 16, 1)
}

#[test]
fn a_start_replays_only_the_log_after_the_newest_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let live = fresh();
    let snapshots = Snapshotter::new(store.clone(), live.clone(), 10, None);
    append(&store, &live, 1, 60);
    assert_eq!(snapshots.write_now().expect("write"), Some(PermanentId(60)));
    assert_eq!(snapshots.write_now().expect("write"), None, "nothing new");
    append(&store, &live, 61, 100);

    let (router, restored) = restore_router(&store, PermanentId(100), 16, 1).expect("restore");
    assert_eq!(
        restored,
        Restored {
            snapshot_at: Some(PermanentId(60)),
            replayed: 40,
            last: PermanentId(100),
        }
    );
    assert_eq!(router.snapshot(), live.snapshot());
    assert!(router.retained_count() > 0);
}

#[test]
fn bad_snapshots_fall_back_to_an_older_one_or_the_whole_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let live = fresh();
    let snapshots = Snapshotter::new(store.clone(), live.clone(), 10, None);
    append(&store, &live, 1, 50);
    snapshots.write_now().expect("write");
    append(&store, &live, 51, 100);
    let valid_at_90 = {
        let router = fresh();
        let messages: Vec<_> = (1..=90).map(|i| (PermanentId(i), message(i))).collect();
        router.dispatch(&messages);
        router.snapshot().encode()
    };
    // Newest first: ahead of the log, undecodable, unknown format, then a valid one at 50.
    store
        .commit_snapshot(PermanentId(70), b"\x01garbage", 5)
        .expect("write");
    let mut unknown = valid_at_90.clone();
    unknown[0] = 200;
    store
        .commit_snapshot(PermanentId(90), &unknown, 5)
        .expect("write");
    store
        .commit_snapshot(PermanentId(150), &valid_at_90, 5)
        .expect("write");

    let (router, restored) = restore_router(&store, PermanentId(100), 16, 1).expect("restore");
    assert_eq!(restored.snapshot_at, Some(PermanentId(50)));
    assert_eq!(restored.replayed, 50);
    assert_eq!(router.snapshot(), live.snapshot());

    // A snapshot whose bytes claim another id than its key is not trusted either.
    store
        .commit_snapshot(PermanentId(50), &valid_at_90, 5)
        .expect("write");
    let (router, restored) = restore_router(&store, PermanentId(100), 16, 1).expect("restore");
    assert_eq!(
        restored,
        Restored {
            snapshot_at: None,
            replayed: 100,
            last: PermanentId(100),
        }
    );
    assert_eq!(router.snapshot(), live.snapshot());
}

#[tokio::test]
async fn the_task_writes_a_snapshot_once_enough_was_dispatched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let live = fresh();
    let snapshots = Snapshotter::new(store.clone(), live.clone(), 25, None);
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(snapshots.clone().run(shutdown));
    append(&store, &live, 1, 20);
    tokio::time::sleep(POLL * 3).await;
    assert!(store.snapshot_ids().expect("ids").is_empty(), "20 < 25");
    append(&store, &live, 21, 30);
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.snapshot_ids().expect("ids").is_empty() {
        assert!(Instant::now() < deadline, "no snapshot after 30 messages");
        tokio::time::sleep(POLL / 4).await;
    }
    assert_eq!(store.snapshot_ids().expect("ids"), vec![PermanentId(30)]);
    let _ = stop.send(true);
    task.await.expect("task");
}
