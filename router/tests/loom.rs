//! loom: the replay seam between `Router::dispatch` and `Router::subscribe`.
//!
//! A subscriber that joins while messages are being dispatched replays ids up to
//! `last_dispatched` from the store and takes the rest from its live queue. loom runs every
//! interleaving of the dispatcher (store write, then dispatch) and the subscriber (subscribe,
//! then read the store up to the seam, then drain the queue) and checks that the subscriber sees
//! every id exactly once, in order: no gap and no duplicate at the seam.
//!
//! ```sh
//! RUSTFLAGS="--cfg ordo_loom" cargo test --release -p ordo-router --test loom
//! ```
#![cfg(ordo_loom)]

use loom::sync::{Arc, Mutex};
use loom::thread;
use ordo_common::topic::Filter;
use ordo_common::{Payload, PermanentId, StoredMessage};
use ordo_router::{Router, SubscriptionSpec};

fn message(n: u8) -> std::sync::Arc<StoredMessage> {
    std::sync::Arc::new(StoredMessage {
        realm: "realm1".into(),
        topic: "t".into(),
        payload: Payload::Raw(vec![n].into()),
        qos: 1,
        retain: false,
        publisher: 0,
        exclude_publisher: false,
        mqtt: None,
        wamp: None,
    })
}

#[test]
fn a_subscriber_joining_mid_dispatch_sees_every_id_once_in_order() {
    loom::model(|| {
        let router = Router::new(PermanentId::ZERO, Vec::new(), 16, 1);
        // The durable log: the sequencer writes a segment before it dispatches it.
        let store: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::new()));

        let dispatcher = {
            let (router, store) = (router.clone(), store.clone());
            thread::spawn(move || {
                for id in 1..=2u64 {
                    store.lock().expect("store").push(id);
                    router.dispatch(&[(PermanentId(id), message(id as u8))]);
                }
            })
        };

        let (session, mut queue) = router.open_session();
        let subscribed = router.subscribe(
            session,
            vec![SubscriptionSpec {
                realm: "realm1".into(),
                filter: Filter::mqtt("t"),
                qos: 1,
                exclude_own: false,
            }],
        );
        let seam = subscribed.last_dispatched;
        // Replay: everything stored up to the seam (what a connection reads from RocksDB).
        let mut seen: Vec<u64> = store
            .lock()
            .expect("store")
            .iter()
            .copied()
            .filter(|id| *id <= seam.0)
            .collect();
        dispatcher.join().expect("dispatcher");
        // Live: what the router queued for this session after it subscribed.
        while let Ok(delivery) = queue.try_recv() {
            seen.push(delivery.id.0);
        }
        assert_eq!(seen, vec![1, 2], "seam at {seam:?}");
    });
}
