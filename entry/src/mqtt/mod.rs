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

mod connection;
mod inbound;
mod outbound;

use crate::Shared;
use ordo_common::PermanentId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// What a persistent session keeps while its client is away.
#[derive(Clone, Debug, Default)]
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
    /// Saved sessions with the instant they expire (`None`: never).
    persisted: HashMap<String, (PersistedSession, Option<Instant>)>,
    /// Delayed wills waiting to be published; a new connection cancels them.
    delayed_wills: HashMap<String, oneshot::Sender<()>>,
}

/// Client ids in use and persistent sessions, shared by all MQTT connections.
#[derive(Default)]
pub struct SessionRegistry {
    state: Mutex<RegistryState>,
}

/// A connection's claim on a client id; held for the connection's lifetime.
pub struct Claim {
    client_id: String,
    generation: u64,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl SessionRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, RegistryState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
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

    /// Take a persistent session's saved state, if any and not expired.
    pub fn take_persisted(&self, client_id: &str) -> Option<PersistedSession> {
        let (session, expires) = self.lock().persisted.remove(client_id)?;
        match expires {
            Some(at) if at <= Instant::now() => None,
            _ => Some(session),
        }
    }

    /// Save a session's state for its next connection, kept for `expiry`
    /// (`None`: forever); expired sessions of other clients are dropped.
    pub fn save_persisted(
        &self,
        client_id: &str,
        session: PersistedSession,
        expiry: Option<Duration>,
    ) {
        let now = Instant::now();
        let mut state = self.lock();
        state
            .persisted
            .retain(|_, (_, expires)| expires.is_none_or(|at| at > now));
        let expires = expiry.and_then(|d| now.checked_add(d));
        let never = expiry.is_none() || expires.is_none();
        state.persisted.insert(
            client_id.to_owned(),
            (session, if never { None } else { expires }),
        );
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
}

/// Accept MQTT connections until the listener fails or the task is aborted.
pub async fn serve(listener: TcpListener, shared: Shared) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection::run(stream, shared).await {
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
