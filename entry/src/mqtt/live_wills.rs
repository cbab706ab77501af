//! Wills of live connections, recorded in the ordered log, so the wills of the
//! clients a killed node was serving are published when it starts again.
//!
//! ```text
//!  CONNECT with a will ─► record `mqtt/will/<client id>/<owner>` durable ─► CONNACK
//!  connection ends ─► will published (ack) or handed to the session record,
//!                     or not due (DISCONNECT) ─► record deleted
//!  start after a kill ─► (cluster: barrier, so the log is caught up) ─► records of
//!                        this owner from an earlier run ─► will published ─► record deleted
//! ```
//!
//! The record is a retained message of the node's realm, like the session
//! records ([`super::session_store`]). Its topic names the owner, so an entry
//! writes live records only on its own topics: another entry only ever deletes
//! them (its client came back there), and a delete never hides a live record.
//! Clients without a will pay one lookup in the router's retained index per
//! CONNECT, and a write only when a stale record of theirs is found.

use super::connection::{stored_properties, unix_ms};
use super::{session_store, SessionRegistry};
use crate::router::Router;
use crate::sequencer::Sequencer;
use crate::Shared;
use bytes::Bytes;
use ordo_common::mqtt::v5;
use ordo_common::{Payload, PermanentId, StoredMessage};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

const TOPIC_PREFIX: &str = "mqtt/will/";
/// A non-retained record whose ack, once applied here, shows the router has caught up.
const BARRIER_TOPIC: &str = "mqtt/will-barrier";
/// How long a CONNECT waits for its will record to be durable before it is refused.
const ARM_WAIT: Duration = Duration::from_secs(5);
/// Meta key of the local store: the incarnation that stopped cleanly (its wills are not due).
pub const META_CLEAN_STOP: &str = "mqtt/wills_disarmed";

/// What the log keeps of one live connection's will.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LiveWill {
    /// When the connection was accepted, in Unix milliseconds.
    pub connected_at_ms: u64,
    /// The run of the owning entry that accepted it (its store incarnation).
    pub incarnation: u64,
    /// The will as it will be published (message expiry not yet applied).
    pub message: StoredMessage,
    /// Message Expiry Interval of the will, counted from its publication.
    pub message_expiry_secs: Option<u32>,
    /// Will Delay Interval, already capped by the session expiry.
    pub delay_secs: u32,
}

impl LiveWill {
    /// The will to publish now, its message expiry counted from now.
    fn due_message(&self, now_ms: u64) -> StoredMessage {
        let mut message = self.message.clone();
        if let (Some(secs), Some(props)) = (self.message_expiry_secs, message.mqtt.as_mut()) {
            props.expires_at_ms = Some(now_ms.saturating_add(u64::from(secs) * 1000));
        }
        message
    }
}

/// The topic of `owner`'s live-will record for `client_id`.
fn topic_of(client_id: &str, owner: u64) -> String {
    format!("{TOPIC_PREFIX}{client_id}/{owner}")
}

/// The retained message that saves `record`, or deletes the record when `None`.
fn to_message(client_id: &str, owner: u64, record: Option<&LiveWill>) -> StoredMessage {
    session_store::record_message(topic_of(client_id, owner), record)
}

fn decode(topic: &str, message: &StoredMessage) -> Option<LiveWill> {
    session_store::decode_record("will", topic, message)
}

/// Every live-will record of `client_id`, by owner.
fn load_of_client(router: &Router, client_id: &str) -> Vec<(u64, LiveWill)> {
    let prefix = format!("{TOPIC_PREFIX}{client_id}/");
    router
        .retained_under(session_store::SESSION_REALM, &prefix)
        .into_iter()
        .filter_map(|(topic, _, message)| {
            // `a/1` under client `a` may be client `a/1`'s record: the rest must be the owner alone.
            let owner = topic.strip_prefix(&prefix)?.parse().ok()?;
            Some((owner, decode(&topic, &message)?))
        })
        .collect()
}

/// `owner`'s live-will record of `client_id`, if the router holds one.
fn load(router: &Router, client_id: &str, owner: u64) -> Option<LiveWill> {
    let topic = topic_of(client_id, owner);
    let (_, message) = router.retained_of(session_store::SESSION_REALM, &topic)?;
    decode(&topic, &message)
}

/// Every live-will record written by `owner`, by client id, with the id it was written at.
fn load_owned(router: &Router, owner: u64) -> Vec<(String, PermanentId, LiveWill)> {
    let suffix = format!("/{owner}");
    router
        .retained_under(session_store::SESSION_REALM, TOPIC_PREFIX)
        .into_iter()
        .filter_map(|(topic, id, message)| {
            let client_id = topic.strip_prefix(TOPIC_PREFIX)?.strip_suffix(&suffix)?;
            Some((client_id.to_owned(), id, decode(&topic, &message)?))
        })
        .collect()
}

/// The will of a CONNECT as a stored message; its message expiry starts now.
pub(super) fn will_message(realm: &str, will: &v5::Will, publisher: u64) -> StoredMessage {
    StoredMessage {
        realm: realm.to_owned(),
        topic: will.topic.clone(),
        payload: Payload::Raw(will.payload.clone()),
        qos: will.qos as u8,
        retain: will.retain,
        publisher,
        exclude_publisher: false,
        mqtt: stored_properties(&will.properties),
        wamp: None,
    }
}

/// Why a CONNECT with a will is refused.
#[derive(Debug, thiserror::Error)]
#[error("will record not durable in time")]
pub(super) struct ArmError;

/// Record, before CONNACK, that `client_id` is connected here with `will`
/// (delay already capped), and delete the records other entries (or earlier
/// runs) hold for it: the client is back, their wills are stale. Without a
/// will only stale records are deleted. Returns whether a record was written;
/// on `ArmError` the record is withdrawn (a delete queued after it).
pub(super) async fn arm(
    shared: &Shared,
    client_id: &str,
    will: Option<(&v5::Will, u32)>,
) -> Result<bool, ArmError> {
    let registry = &shared.mqtt_sessions;
    let Some(writer) = registry.writer.as_ref() else {
        return Ok(false);
    };
    let owner = registry.owner;
    let mut stale: Vec<u64> = load_of_client(&shared.router, client_id)
        .into_iter()
        .map(|(o, _)| o)
        .collect();
    if will.is_none() && stale.is_empty() {
        // While this entry recovers, its own stale record may not be applied yet.
        if registry.recovering() {
            writer.write_message(to_message(client_id, owner, None));
        }
        return Ok(false);
    }
    let mut waits = Vec::new();
    if let Some((will, delay_secs)) = will {
        stale.retain(|o| *o != owner);
        let mut message = will_message(&shared.config.mqtt_realm, will, 0);
        if let Some(props) = message.mqtt.as_mut() {
            props.expires_at_ms = None;
        }
        let record = LiveWill {
            connected_at_ms: unix_ms(),
            incarnation: registry.incarnation,
            message,
            message_expiry_secs: will.properties.message_expiry_interval,
            delay_secs,
        };
        waits.push(writer.write_message_durable(to_message(client_id, owner, Some(&record))));
    }
    for other in stale {
        waits.push(writer.write_message_durable(to_message(client_id, other, None)));
    }
    let all = futures_util::future::join_all(waits);
    match tokio::time::timeout(ARM_WAIT, all).await {
        Ok(results) if results.iter().all(Result::is_ok) => Ok(will.is_some()),
        _ => {
            // The refused connection's record stays queued and is written once the log is back:
            // delete it after it, or a later start would publish a will that was never accepted.
            // The caller still holds the client id's claim, so no live connection owns the record.
            if will.is_some() {
                writer.write_message(to_message(client_id, owner, None));
            }
            Err(ArmError)
        }
    }
}

/// Delete this entry's live-will record of `client_id`: its connection ended
/// and the will was published, handed to the session record, or not due.
pub(super) fn disarm(registry: &SessionRegistry, client_id: &str) {
    if let Some(writer) = &registry.writer {
        writer.write_message(to_message(client_id, registry.owner, None));
    }
}

/// After a start: publish the wills of the connections this entry held when
/// it died, unless the client came back or its run stopped cleanly
/// (`clean_stop`, that run's incarnation). `barrier`: first make sure the
/// router has applied the whole log (a cluster entry's local copy may lag).
pub fn recover(
    registry: Arc<SessionRegistry>,
    router: Arc<Router>,
    sequencer: Sequencer,
    shutdown: tokio::sync::watch::Receiver<bool>,
    clean_stop: Option<u64>,
    barrier: bool,
) {
    if registry.writer.is_none() {
        return;
    }
    registry.begin_recovery();
    tokio::spawn(async move {
        if barrier && !wait_caught_up(&router, &sequencer, shutdown.clone()).await {
            return;
        }
        for (client_id, _, record) in load_owned(&router, registry.owner) {
            if record.incarnation == registry.incarnation {
                continue;
            }
            let due = clean_stop != Some(record.incarnation)
                && !handed_to_session(&router, &client_id, &record);
            if !due {
                clear_unless_back(&registry, &client_id, None);
                continue;
            }
            let Some(cancel) = arm_recovered(&registry, &client_id) else {
                continue;
            };
            tracing::info!(
                client_id,
                delay = record.delay_secs,
                "will of a connection lost in a crash armed"
            );
            tokio::spawn(publish_when_due(
                registry.clone(),
                router.clone(),
                sequencer.clone(),
                shutdown.clone(),
                client_id,
                record,
                cancel,
            ));
        }
        registry.end_recovery();
    });
}

/// Whether `client_id` connected to this entry in this run: its connection
/// then owns the record (overwrote or deleted it).
fn came_back(state: &super::RegistryState, client_id: &str) -> bool {
    state.live.contains_key(client_id)
        || state
            .recovering
            .as_ref()
            .is_some_and(|seen| seen.contains(client_id))
}

/// Register a recovered will as a delayed one, so a connection of its client
/// id cancels it; `None` if the client is back already.
fn arm_recovered(registry: &SessionRegistry, client_id: &str) -> Option<oneshot::Receiver<()>> {
    let mut state = registry.lock();
    if came_back(&state, client_id) {
        return None;
    }
    let (tx, rx) = oneshot::channel();
    state.delayed_wills.insert(client_id.to_owned(), tx);
    Some(rx)
}

/// Delete this entry's record of `client_id` unless the client came back
/// (`cancel` fired): decided and queued under the registry lock, so a
/// returning connection's own record is always written after the delete.
pub(super) fn clear_unless_back(
    registry: &SessionRegistry,
    client_id: &str,
    cancel: Option<&mut oneshot::Receiver<()>>,
) {
    let mut state = registry.lock();
    if came_back(&state, client_id) {
        return;
    }
    if let Some(cancel) = cancel {
        if !matches!(cancel.try_recv(), Err(oneshot::error::TryRecvError::Empty)) {
            return;
        }
        state.delayed_wills.remove(client_id);
    }
    disarm(registry, client_id);
}

/// Whether the client's session record carries this will already (the connection
/// ended and the delayed-will path took it, but the node died before the delete).
fn handed_to_session(router: &Router, client_id: &str, record: &LiveWill) -> bool {
    session_store::load(router, client_id)
        .is_some_and(|s| s.will.is_some() && s.saved_at_ms >= record.connected_at_ms)
}

async fn publish_when_due(
    registry: Arc<SessionRegistry>,
    router: Arc<Router>,
    sequencer: Sequencer,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    client_id: String,
    record: LiveWill,
    mut cancel: oneshot::Receiver<()>,
) {
    // The end of the connection is known now: the delay counts from here.
    let delay = Duration::from_secs(u64::from(record.delay_secs));
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = &mut cancel => return,
        // Stopping leaves the record in the log, armed again at the next start.
        _ = shutdown.changed() => return,
    }
    // A client that came back on another entry deleted the record there.
    if load(&router, &client_id, registry.owner).as_ref() != Some(&record) {
        return;
    }
    if sequencer.publish_acked(record.due_message(unix_ms())).await {
        tracing::info!(client_id, "will of a connection lost in a crash published");
        clear_unless_back(&registry, &client_id, Some(&mut cancel));
    } else {
        tracing::warn!(
            client_id,
            "will not published; it stays armed for the next start"
        );
    }
}

/// Publish a barrier record and wait until the router has applied it, so it
/// holds every record ordered before this start. `false` if the node stops first.
async fn wait_caught_up(
    router: &Router,
    sequencer: &Sequencer,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> bool {
    let barrier = StoredMessage {
        realm: session_store::SESSION_REALM.to_owned(),
        topic: BARRIER_TOPIC.to_owned(),
        payload: Payload::Raw(Bytes::new()),
        qos: 1,
        retain: false,
        publisher: 0,
        exclude_publisher: false,
        mqtt: None,
        wamp: None,
    };
    publish_applied(router, sequencer, barrier, shutdown)
        .await
        .is_some()
}

/// Publish `message` until it is acked (retrying each second), then wait until the router has
/// applied it: the router then holds every record ordered before it. Its id, or `None` if the
/// node stops first.
pub(crate) async fn publish_applied(
    router: &Router,
    sequencer: &Sequencer,
    message: StoredMessage,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Option<PermanentId> {
    let at: PermanentId = loop {
        let Ok(Some(ack)) = sequencer.publish(message.clone(), true).await else {
            return None;
        };
        tokio::select! {
            result = ack => match result {
                Ok(Ok(id)) => break id,
                Ok(Err(e)) => tracing::warn!(error = %e, topic = message.topic, "record not ordered; retrying"),
                Err(_) => return None,
            },
            _ = shutdown.changed() => return None,
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    while router.last_dispatched() < at {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = shutdown.changed() => return None,
        }
    }
    Some(at)
}

/// Publish the wills of the live connections of `owner`, an abandoned entry, recorded before
/// `before` (where its abandon stands in the log; a later record would be a returned run's),
/// each after its delay unless its client came back; then delete the record. The caller
/// won the adoption ([`crate::adopt`]). Returns how many wills are armed.
pub(crate) fn adopt(shared: &Shared, owner: u64, before: PermanentId) -> usize {
    let Some(writer) = shared.mqtt_sessions.writer.as_ref() else {
        return 0;
    };
    let mut armed = 0;
    for (client_id, id, record) in load_owned(&shared.router, owner) {
        if id >= before {
            continue;
        }
        if handed_to_session(&shared.router, &client_id, &record) {
            // The session record holds this will now; it is adopted from there.
            writer.write_message(to_message(&client_id, owner, None));
            continue;
        }
        armed += 1;
        tokio::spawn(publish_adopted(shared.clone(), owner, client_id, record));
    }
    armed
}

async fn publish_adopted(shared: Shared, owner: u64, client_id: String, record: LiveWill) {
    let mut shutdown = shared.shutdown.clone();
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(u64::from(record.delay_secs))) => {}
        // Stopping leaves the record in the log: the adoption resumes at the next start.
        _ = shutdown.changed() => return,
    }
    // A client that came back (here or on another entry) deleted the record.
    if load(&shared.router, &client_id, owner).as_ref() != Some(&record) {
        return;
    }
    if !shared
        .sequencer
        .publish_acked(record.due_message(unix_ms()))
        .await
    {
        tracing::warn!(
            client_id,
            owner,
            "adopted will not published; it stays for the next start"
        );
        return;
    }
    tracing::info!(
        client_id,
        owner,
        "will of a connection of an abandoned entry published"
    );
    if let Some(writer) = shared.mqtt_sessions.writer.as_ref() {
        writer.write_message(to_message(&client_id, owner, None));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(incarnation: u64) -> LiveWill {
        LiveWill {
            connected_at_ms: 5,
            incarnation,
            message: to_message("x", 0, None),
            message_expiry_secs: Some(10),
            delay_secs: 0,
        }
    }

    #[test]
    fn records_are_found_by_client_and_by_owner_only() {
        let messages = vec![
            (PermanentId(1), to_message("a", 1, Some(&record(1)))),
            (PermanentId(2), to_message("a", 2, Some(&record(2)))),
            // Client `a/1`: not a record of client `a`, though its topic starts alike.
            (PermanentId(3), to_message("a/1", 3, Some(&record(3)))),
            (PermanentId(4), to_message("b", 1, Some(&record(4)))),
            // A delete removes the record.
            (PermanentId(5), to_message("b", 1, None)),
        ];
        let router = Router::new(PermanentId(0), messages, 16, 0);
        let owners: Vec<u64> = load_of_client(&router, "a")
            .iter()
            .map(|(o, _)| *o)
            .collect();
        assert_eq!(owners, vec![1, 2]);
        let of_one: Vec<(String, PermanentId)> = load_owned(&router, 1)
            .into_iter()
            .map(|(c, id, _)| (c, id))
            .collect();
        assert_eq!(of_one, vec![("a".to_owned(), PermanentId(1))]);
        let of_three: Vec<String> = load_owned(&router, 3)
            .into_iter()
            .map(|(c, _, _)| c)
            .collect();
        assert_eq!(of_three, vec!["a/1".to_owned()]);
        assert_eq!(load(&router, "a", 2), Some(record(2)));
        assert_eq!(load(&router, "b", 1), None);
    }

    #[tokio::test]
    async fn a_client_back_in_this_run_cancels_its_recovered_will() {
        let registry = SessionRegistry::default();
        registry.begin_recovery();
        // Connected and gone again before the scan reached it: its connection owned the record.
        let (claim, _kick) = registry.claim("early").await;
        registry.release(claim);
        assert!(arm_recovered(&registry, "early").is_none());
        let mut cancel = arm_recovered(&registry, "late").expect("not back yet");
        registry.end_recovery();
        assert!(matches!(
            cancel.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ));
        let (_claim, _kick) = registry.claim("late").await;
        assert!(
            cancel.try_recv().is_ok(),
            "a new connection must cancel the will"
        );
    }

    #[test]
    fn message_expiry_counts_from_publication() {
        let mut r = record(1);
        r.message.mqtt = Some(Box::default());
        let message = r.due_message(1_000);
        assert_eq!(message.mqtt.and_then(|m| m.expires_at_ms), Some(11_000));
    }
}
