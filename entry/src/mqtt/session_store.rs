//! Persistent MQTT sessions kept in the ordered log.
//!
//! A session that outlives its connection is written as a retained message in
//! the internal realm [`SESSION_REALM`], topic `mqtt/session/<client id>`. It
//! thereby takes the path every message takes: it is durable on the store (on
//! a cluster, on a quorum of ndbs) before it counts as saved, every entry's
//! router holds the newest one in its retained index, and a restarted node
//! loads it with the other retained messages. So a session survives a restart
//! of its node and follows a client that reconnects to another entry.
//!
//! Writes go through one [`SessionWriter`] task that coalesces the writes of a
//! client id and publishes them one round at a time, so a client's records
//! reach the log in the order they were made. A live session is checkpointed
//! when its subscriptions change and periodically while its resume point moves;
//! a node that dies loses at most the progress since the last checkpoint, and
//! the client then gets those messages again (at least once, as QoS 1 allows).

use super::PersistedSession;
use crate::router::Router;
use crate::sequencer::Sequencer;
use bytes::Bytes;
use ordo_common::message::{Payload, StoredMessage};
use ordo_common::PermanentId;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tokio::sync::{mpsc, oneshot};

/// The realm that holds the node's own records; clients cannot join it.
pub const SESSION_REALM: &str = "$ordo";
const TOPIC_PREFIX: &str = "mqtt/session/";

/// What the log keeps of one persistent session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Wall-clock time of the save, in Unix milliseconds: the newer record wins.
    pub saved_at_ms: u64,
    /// When the session ends unless a client resumes it (`None`: never).
    pub expires_at_ms: Option<u64>,
    /// The entry that wrote the record; it alone re-arms the record's will after a restart.
    pub owner: u64,
    /// Subscriptions and resume point.
    pub session: PersistedSession,
    /// A will waiting for its delay to pass.
    pub will: Option<PendingWill>,
}

/// A delayed will that has not been published yet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingWill {
    /// The will as it will be published.
    pub message: StoredMessage,
    /// When to publish it, in Unix milliseconds.
    pub publish_at_ms: u64,
}

impl SessionRecord {
    /// Whether the session has expired at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }
}

/// The topic of a client's session record.
pub fn topic_of(client_id: &str) -> String {
    format!("{TOPIC_PREFIX}{client_id}")
}

/// Read a client's session record from the router's retained index.
pub fn load(router: &Router, client_id: &str) -> Option<SessionRecord> {
    let (_, message) = router.retained_of(SESSION_REALM, &topic_of(client_id))?;
    decode(client_id, &message)
}

/// Every session record the router holds, by client id.
pub fn load_all(router: &Router) -> Vec<(String, SessionRecord)> {
    load_all_at(router)
        .into_iter()
        .map(|(client_id, _, record)| (client_id, record))
        .collect()
}

/// Every session record the router holds, by client id, with the id it was saved at.
pub fn load_all_at(router: &Router) -> Vec<(String, PermanentId, SessionRecord)> {
    router
        .retained_under(SESSION_REALM, TOPIC_PREFIX)
        .into_iter()
        .filter_map(|(topic, id, message)| {
            let client_id = topic.strip_prefix(TOPIC_PREFIX)?.to_owned();
            let record = decode(&client_id, &message)?;
            Some((client_id, id, record))
        })
        .collect()
}

fn decode(client_id: &str, message: &StoredMessage) -> Option<SessionRecord> {
    decode_record("session", client_id, message)
}

/// Read one of the node's records (`kind`: session, will) kept as a retained message; an
/// unreadable one is logged and skipped, never fatal.
pub(super) fn decode_record<T: serde::de::DeserializeOwned>(
    kind: &'static str,
    key: &str,
    message: &StoredMessage,
) -> Option<T> {
    let Payload::Raw(bytes) = &message.payload else {
        return None;
    };
    match ordo_common::record::decode(bytes) {
        Ok(record) => Some(record),
        Err(e) => {
            tracing::warn!(kind, key, error = %e, "unreadable record ignored");
            None
        }
    }
}

/// The retained message that saves `record`, or deletes the session when `None`.
pub fn to_message(client_id: &str, record: Option<&SessionRecord>) -> StoredMessage {
    record_message(topic_of(client_id), record)
}

/// The retained message at `topic` of the node's realm that saves one of its records (session,
/// will), or deletes it when `None`.
pub(crate) fn record_message<T: Serialize>(topic: String, record: Option<&T>) -> StoredMessage {
    let payload = record.map_or_else(Bytes::new, |r| Bytes::from(ordo_common::record::encode(r)));
    StoredMessage {
        realm: SESSION_REALM.to_owned(),
        topic,
        payload: Payload::Raw(payload),
        qos: 1,
        retain: true,
        publisher: 0,
        exclude_publisher: false,
        mqtt: None,
        wamp: None,
    }
}

/// One retained record to publish, keyed by its topic, with whoever waits for it.
type Write = (StoredMessage, Option<oneshot::Sender<()>>);

/// Publishes the node's records (sessions, live wills) in the order they are written.
#[derive(Clone)]
pub struct SessionWriter {
    tx: mpsc::UnboundedSender<Write>,
}

impl SessionWriter {
    /// Start the writer task; it ends when every handle is dropped.
    pub fn start(sequencer: Sequencer) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx, sequencer));
        Self { tx }
    }

    /// Save `record` for `client_id`, or delete the client's session when `None`.
    pub fn write(&self, client_id: &str, record: Option<SessionRecord>) {
        let _ = self.tx.send((to_message(client_id, record.as_ref()), None));
    }

    /// Like [`write`](Self::write); the receiver fires once the record (or a
    /// newer one of the same client) is durable, or is dropped if it failed.
    pub fn write_durable(
        &self,
        client_id: &str,
        record: Option<SessionRecord>,
    ) -> oneshot::Receiver<()> {
        self.write_message_durable(to_message(client_id, record.as_ref()))
    }

    /// Publish a retained record of the node's own realm; the receiver fires
    /// once it (or a newer one on its topic) is durable, or is dropped if it failed.
    pub fn write_message_durable(&self, message: StoredMessage) -> oneshot::Receiver<()> {
        let (done, rx) = oneshot::channel();
        let _ = self.tx.send((message, Some(done)));
        rx
    }

    /// Publish a retained record of the node's own realm without waiting for it.
    pub fn write_message(&self, message: StoredMessage) {
        let _ = self.tx.send((message, None));
    }
}

/// One round: take every write waiting (the newest per topic wins),
/// publish them, and wait for all their acks before the next round, so two
/// records of one topic are never in flight at once.
async fn run(mut rx: mpsc::UnboundedReceiver<Write>, sequencer: Sequencer) {
    while let Some(first) = rx.recv().await {
        let mut round: HashMap<String, (StoredMessage, Vec<oneshot::Sender<()>>)> = HashMap::new();
        let mut next = Some(first);
        while let Some((message, done)) = next {
            let mut waiting = round
                .remove(&message.topic)
                .map(|(_, d)| d)
                .unwrap_or_default();
            waiting.extend(done);
            round.insert(message.topic.clone(), (message, waiting));
            next = rx.try_recv().ok();
        }
        let mut acks = Vec::with_capacity(round.len());
        for (topic, (message, done)) in round {
            match sequencer.publish(message, true).await {
                Ok(Some(ack)) => acks.push((topic, ack, done)),
                Ok(None) => {}
                Err(e) => tracing::warn!(topic, error = %e, "node record not saved"),
            }
        }
        for (topic, ack, done) in acks {
            match ack.await {
                Ok(Ok(id)) => {
                    tracing::trace!(topic, id = id.0, "node record saved");
                    for d in done {
                        let _ = d.send(());
                    }
                }
                Ok(Err(e)) => tracing::warn!(topic, error = %e, "node record not saved"),
                Err(_) => tracing::warn!(topic, "node record not saved: node stopping"),
            }
        }
    }
}
