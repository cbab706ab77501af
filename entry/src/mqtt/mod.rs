//! The MQTT front door: 3.1.1 and 5 on the same port.
//!
//! One task per connection ([`connection`]); the version is fixed by the
//! protocol level of CONNECT, and the state machine works in MQTT 5 terms
//! (3.1.1 packets are converted in and out by `ordo_common::mqtt::v5::compat`).
//! Inbound packets are handled in [`inbound`], deliveries in [`outbound`]. Client ids are registered in a
//! [`SessionRegistry`] so a second connection with the same id takes the first
//! one over, and persistent sessions (clean session = 0) keep their
//! subscriptions and a resume point: on reconnect, every message after that
//! point is replayed from the store in id order, then delivery goes live.
//! Sessions are saved in the ordered log itself ([`session_store`]), so they
//! survive a restart and can be resumed on another entry of a cluster.
//! The same connection task serves MQTT over WebSocket ([`ws`]); CONNECT
//! username/password are checked against the `users` section ([`auth`]).

pub mod auth;
mod connection;
mod inbound;
pub mod live_wills;
mod outbound;
pub mod session_store;
pub mod ws;

use crate::router::Router;
use crate::sequencer::Sequencer;
use crate::Shared;
use connection::unix_ms;
use ordo_common::PermanentId;
use serde::{Deserialize, Serialize};
pub use session_store::{PendingWill, SessionRecord, SessionWriter};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// How long a node remembers deleting a session (the log applies the delete well before).
const DISCARD_MEMORY_MS: u64 = 60_000;

/// What a persistent session keeps while its client is away.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PersistedSession {
    /// Topic filters with their granted QoS.
    pub subscriptions: Vec<(String, u8)>,
    /// Every message up to this id was delivered and acknowledged.
    pub resume_after: PermanentId,
    /// QoS 1 deliveries sent but not acknowledged, with their packet ids:
    /// resent with the same packet id and DUP set ([MQTT-4.4.0-1]).
    pub unacked: Vec<(u16, PermanentId)>,
    /// QoS 2 deliveries whose PUBREC arrived: PUBREL is sent again on reconnect.
    pub released: Vec<u16>,
    /// Subscription options by filter (MQTT 5; default for 3.1.1).
    pub options: HashMap<String, connection::SubOptions>,
}

struct Live {
    generation: u64,
    kick: Option<oneshot::Sender<()>>,
    lock: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Default)]
struct RegistryState {
    next_generation: u64,
    live: HashMap<String, Live>,
    /// Sessions saved by this node's connections, newest first in line:
    /// the log has them too, but may not have applied them yet.
    persisted: HashMap<String, SessionRecord>,
    /// Sessions this node deleted, with when: the log may still hold the record.
    discarded: HashMap<String, u64>,
    /// Delayed wills waiting to be published; a new connection cancels them.
    delayed_wills: HashMap<String, oneshot::Sender<()>>,
    /// While the wills of the last run are recovered: client ids claimed since the start.
    recovering: Option<HashSet<String>>,
}

/// Client ids in use and persistent sessions, shared by all MQTT connections.
pub struct SessionRegistry {
    state: Mutex<RegistryState>,
    /// Where sessions are made durable; `None` keeps them in memory only.
    writer: Option<SessionWriter>,
    /// This entry's owner id, written into its session records.
    owner: u64,
    /// This run of the entry (the store's incarnation), written into live-will records.
    incarnation: u64,
}

impl Default for SessionRegistry {
    fn default() -> Self {
        Self::new(None, 0, 0)
    }
}

/// A connection's claim on a client id; held for the connection's lifetime.
pub struct Claim {
    client_id: String,
    generation: u64,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl SessionRegistry {
    /// A registry that saves sessions through `writer` as entry `owner`, in
    /// the run `incarnation` of that entry.
    pub fn new(writer: Option<SessionWriter>, owner: u64, incarnation: u64) -> Self {
        Self {
            state: Mutex::new(RegistryState::default()),
            writer,
            owner,
            incarnation,
        }
    }

    /// Start noting the client ids that connect while the last run's wills are recovered.
    fn begin_recovery(&self) {
        self.lock().recovering = Some(HashSet::new());
    }

    /// Every will of the last run is armed: stop noting client ids.
    fn end_recovery(&self) {
        self.lock().recovering = None;
    }

    /// Whether the last run's wills are still being recovered.
    fn recovering(&self) -> bool {
        self.lock().recovering.is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RegistryState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self, client_id: &str, record: Option<SessionRecord>) {
        if let Some(writer) = &self.writer {
            writer.write(client_id, record);
        }
    }

    /// Claim a client id, disconnecting any connection that holds it, and wait
    /// until that connection has saved its session. Returns the claim and a
    /// receiver that fires if a later connection takes this one over.
    pub async fn claim(&self, client_id: &str) -> (Claim, oneshot::Receiver<()>) {
        let (kick_tx, kick_rx) = oneshot::channel();
        let lock = {
            let mut state = self.lock();
            state.next_generation += 1;
            if let Some(cancel) = state.delayed_wills.remove(client_id) {
                // [MQTT-3.1.3-9] a new connection before the will delay elapses: no will.
                let _ = cancel.send(());
            }
            if let Some(seen) = state.recovering.as_mut() {
                seen.insert(client_id.to_owned());
            }
            let generation = state.next_generation;
            let lock = match state.live.get_mut(client_id) {
                Some(old) => {
                    if let Some(kick) = old.kick.take() {
                        let _ = kick.send(());
                    }
                    old.lock.clone()
                }
                None => Arc::new(tokio::sync::Mutex::new(())),
            };
            state.live.insert(
                client_id.to_owned(),
                Live {
                    generation,
                    kick: Some(kick_tx),
                    lock: lock.clone(),
                },
            );
            (lock, generation)
        };
        let guard = lock.0.lock_owned().await;
        (
            Claim {
                client_id: client_id.to_owned(),
                generation: lock.1,
                _guard: guard,
            },
            kick_rx,
        )
    }

    /// Release a claim when its connection ends.
    pub fn release(&self, claim: Claim) {
        let mut state = self.lock();
        if state
            .live
            .get(&claim.client_id)
            .is_some_and(|l| l.generation == claim.generation)
        {
            state.live.remove(&claim.client_id);
        }
    }

    /// Take a persistent session's saved state: the newer of this node's copy
    /// and the log's (`stored`), unless it has expired.
    pub fn take_persisted(
        &self,
        client_id: &str,
        stored: Option<SessionRecord>,
    ) -> Option<PersistedSession> {
        let (mine, discarded) = {
            let mut state = self.lock();
            (
                state.persisted.remove(client_id),
                state.discarded.remove(client_id),
            )
        };
        let stored = stored.filter(|r| discarded.is_none_or(|at| at < r.saved_at_ms));
        let newest = match (mine, stored) {
            (Some(a), Some(b)) => Some(if a.saved_at_ms >= b.saved_at_ms { a } else { b }),
            (a, b) => a.or(b),
        }?;
        if newest.expired(unix_ms()) {
            self.write(client_id, None);
            return None;
        }
        Some(newest.session)
    }

    /// Throw a client's session away (clean start, or a session that ends with
    /// its connection); `stored` says whether the log holds one to delete.
    pub fn discard(&self, client_id: &str, stored: bool) {
        let now = unix_ms();
        {
            let mut state = self.lock();
            state.persisted.remove(client_id);
            if stored {
                // Long enough for the log to apply the delete.
                state
                    .discarded
                    .retain(|_, at| now.saturating_sub(*at) < DISCARD_MEMORY_MS);
                state.discarded.insert(client_id.to_owned(), now);
            }
        }
        if stored {
            self.write(client_id, None);
        }
    }

    fn record(
        &self,
        session: PersistedSession,
        expiry: Option<Duration>,
        will: Option<PendingWill>,
    ) -> SessionRecord {
        let now = unix_ms();
        SessionRecord {
            saved_at_ms: now,
            expires_at_ms: expiry.map(|d| now.saturating_add(d.as_millis() as u64)),
            owner: self.owner,
            session,
            will,
        }
    }

    /// Save a session's state for its next connection, kept for `expiry`
    /// (`None`: forever) with the will still waiting for its delay, if any;
    /// expired sessions of other clients are dropped from memory. Returns the
    /// record's save time and a receiver that fires once it is durable.
    pub fn save_persisted(
        &self,
        client_id: &str,
        session: PersistedSession,
        expiry: Option<Duration>,
        will: Option<PendingWill>,
    ) -> (u64, Option<oneshot::Receiver<()>>) {
        let record = self.record(session, expiry, will);
        let saved_at = record.saved_at_ms;
        let now = unix_ms();
        {
            let mut state = self.lock();
            state.persisted.retain(|_, r| !r.expired(now));
            state.discarded.remove(client_id);
            state.persisted.insert(client_id.to_owned(), record.clone());
        }
        let durable = self
            .writer
            .as_ref()
            .map(|w| w.write_durable(client_id, Some(record)));
        (saved_at, durable)
    }

    /// Make a live session's state durable without ending it.
    pub fn checkpoint(&self, client_id: &str, session: PersistedSession, expiry: Option<Duration>) {
        let record = self.record(session, expiry, None);
        self.lock().discarded.remove(client_id);
        self.write(client_id, Some(record));
    }

    /// A delayed will of the session saved at `saved_at` was published: save
    /// the session without it, unless a newer save replaced that one.
    pub fn will_published(&self, client_id: &str, saved_at: u64) {
        let record = {
            let mut state = self.lock();
            match state.persisted.get_mut(client_id) {
                Some(r) if r.saved_at_ms == saved_at => {
                    r.will = None;
                    Some(r.clone())
                }
                _ => None,
            }
        };
        if let Some(record) = record {
            let expired = record.expired(unix_ms());
            self.write(client_id, (!expired).then_some(record));
        }
    }

    /// Register a delayed will for the claim's client id; the receiver fires if
    /// a new connection claims the client id first. Return `None` if one
    /// already has (the will is then not published).
    pub fn delay_will(&self, claim: &Claim) -> Option<oneshot::Receiver<()>> {
        let (tx, rx) = oneshot::channel();
        let mut state = self.lock();
        if state
            .live
            .get(&claim.client_id)
            .is_some_and(|l| l.generation != claim.generation)
        {
            return None;
        }
        state.delayed_wills.retain(|_, tx| !tx.is_closed());
        state.delayed_wills.insert(claim.client_id.clone(), tx);
        Some(rx)
    }

    /// After a restart: arm again the delayed wills of the sessions this entry
    /// saved, and drop its expired sessions from the log.
    pub fn rearm(
        self: &Arc<Self>,
        router: &Arc<Router>,
        sequencer: &Sequencer,
        shutdown: &tokio::sync::watch::Receiver<bool>,
    ) {
        let now = unix_ms();
        for (client_id, record) in session_store::load_all(router) {
            if record.owner != self.owner {
                continue;
            }
            let Some(will) = record.will.clone() else {
                if record.expired(now) {
                    self.write(&client_id, None);
                }
                continue;
            };
            let (tx, cancel) = oneshot::channel();
            {
                let mut state = self.lock();
                if state.live.contains_key(&client_id) {
                    continue;
                }
                state.delayed_wills.insert(client_id.clone(), tx);
                state.persisted.insert(client_id.clone(), record.clone());
            }
            tracing::info!(client_id, "delayed will armed again after restart");
            let delay = Duration::from_millis(will.publish_at_ms.saturating_sub(now));
            let (registry, router, sequencer) = (self.clone(), router.clone(), sequencer.clone());
            let mut shutdown = shutdown.clone();
            tokio::spawn(async move {
                // Stopping leaves the will in the log, armed again at the next start.
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = cancel => return,
                    _ = shutdown.changed() => return,
                }
                // A client that resumed its session on another entry saved a newer record.
                let current = session_store::load(&router, &client_id).map(|r| r.saved_at_ms);
                if current.is_some_and(|at| at > record.saved_at_ms) {
                    return;
                }
                let _ = sequencer.publish(will.message, false).await;
                registry.will_published(&client_id, record.saved_at_ms);
            });
        }
    }
}

/// Publish the delayed wills waiting in the session records of `owner`, an abandoned entry,
/// saved before `before` (where its abandon stands in the log), each when due unless its client
/// resumed the session since; then save the record without it. The caller won the adoption
/// ([`crate::adopt`]). Returns how many wills are armed.
pub(crate) fn adopt_delayed_wills(shared: &Shared, owner: u64, before: PermanentId) -> usize {
    let Some(writer) = shared.mqtt_sessions.writer.clone() else {
        return 0;
    };
    let now = unix_ms();
    let mut armed = 0;
    for (client_id, id, record) in session_store::load_all_at(&shared.router) {
        if record.owner != owner || id >= before {
            continue;
        }
        let Some(will) = record.will.clone() else {
            continue;
        };
        armed += 1;
        let delay = Duration::from_millis(will.publish_at_ms.saturating_sub(now));
        let (router, sequencer) = (shared.router.clone(), shared.sequencer.clone());
        let (writer, mut shutdown) = (writer.clone(), shared.shutdown.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                // Stopping leaves the will in the log: the adoption resumes at the next start.
                _ = shutdown.changed() => return,
            }
            // A client that resumed its session saved a newer record.
            let current = session_store::load(&router, &client_id).map(|r| r.saved_at_ms);
            if current != Some(record.saved_at_ms) {
                return;
            }
            if !sequencer.publish_acked(will.message).await {
                tracing::warn!(client_id, owner, "adopted delayed will not published");
                return;
            }
            tracing::info!(
                client_id,
                owner,
                "delayed will of an abandoned entry's session published"
            );
            let mut rest = record;
            rest.will = None;
            let expired = rest.expired(unix_ms());
            writer.write(&client_id, (!expired).then_some(rest));
        });
    }
    armed
}

/// Accept MQTT connections until the listener fails or the task is aborted.
pub async fn serve(listener: TcpListener, shared: Shared) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                tokio::spawn(async move {
                    let (reader, writer) = stream.into_split();
                    if let Err(e) =
                        connection::run(Box::new(reader), Box::new(writer), shared).await
                    {
                        tracing::info!(%peer, error = %e, "mqtt connection closed");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "mqtt accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serve one MQTT connection over any byte stream (the `mqtt_tls` listener's
/// TLS streams) until it closes.
pub async fn run_stream<S>(stream: S, peer: std::net::SocketAddr, shared: Shared)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (reader, writer) = tokio::io::split(stream);
    if let Err(e) = connection::run(Box::new(reader), Box::new(writer), shared).await {
        tracing::info!(%peer, error = %e, "mqtt connection closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(saved_at_ms: u64, resume: u64, expires_at_ms: Option<u64>) -> SessionRecord {
        SessionRecord {
            saved_at_ms,
            expires_at_ms,
            owner: 1,
            session: PersistedSession {
                resume_after: PermanentId(resume),
                ..PersistedSession::default()
            },
            will: None,
        }
    }

    #[test]
    fn the_newer_of_memory_and_log_wins() {
        let registry = SessionRegistry::default();
        let (saved_at, _) = registry.save_persisted("c", PersistedSession::default(), None, None);
        // The log holds an older save: this node's copy wins.
        let old = record(saved_at - 1, 7, None);
        let taken = registry.take_persisted("c", Some(old));
        assert_eq!(taken.map(|s| s.resume_after), Some(PermanentId(0)));
        // A newer save made on another entry wins over this node's copy.
        registry.save_persisted("c", PersistedSession::default(), None, None);
        let newer = record(unix_ms() + 1_000, 9, None);
        let taken = registry.take_persisted("c", Some(newer));
        assert_eq!(taken.map(|s| s.resume_after), Some(PermanentId(9)));
        // Taken means gone from memory; the log's copy alone is then used.
        assert!(registry.take_persisted("c", None).is_none());
    }

    #[test]
    fn a_discarded_session_hides_the_logs_older_copy() {
        let registry = SessionRegistry::default();
        let before = record(unix_ms() - 10, 3, None);
        registry.discard("c", true);
        assert!(registry.take_persisted("c", Some(before)).is_none());
        // A save after the delete is not hidden.
        let after = record(unix_ms() + 10, 4, None);
        assert!(registry.take_persisted("c", Some(after)).is_some());
    }

    #[test]
    fn expired_sessions_are_not_resumed() {
        let registry = SessionRegistry::default();
        let now = unix_ms();
        assert!(registry
            .take_persisted("c", Some(record(now - 5_000, 1, Some(now - 1))))
            .is_none());
        assert!(registry
            .take_persisted("c", Some(record(now - 5_000, 1, Some(now + 60_000))))
            .is_some());
        registry.save_persisted("d", PersistedSession::default(), Some(Duration::ZERO), None);
        assert!(registry.take_persisted("d", None).is_none());
    }

    #[test]
    fn records_round_trip_through_the_log_format() {
        let mut r = record(5, 6, Some(7));
        r.session.subscriptions = vec![("a/+".into(), 1)];
        r.session.unacked = vec![(3, PermanentId(5))];
        r.session
            .options
            .insert("a/+".into(), connection::SubOptions::default());
        let message = session_store::to_message("client/1", Some(&r));
        assert_eq!(message.realm, session_store::SESSION_REALM);
        assert!(message.retain);
        let router = Router::new(PermanentId(0), vec![(PermanentId(1), message)], 16, 0);
        assert_eq!(session_store::load(&router, "client/1"), Some(r.clone()));
        assert_eq!(
            session_store::load_all(&router),
            vec![("client/1".to_owned(), r)]
        );
        assert_eq!(session_store::load(&router, "client/2"), None);
    }
}
