//! The segment owner: batches publishes into advance segments, has them
//! elected and stored, then hands them to the router in id order.
//!
//! ```text
//!  front doors ──PublishRequest──► [sequencer thread]
//!                                    BEGIN_ADVANCE_SEGMENT (one per batch)
//!                                    KEEP_ADVANCE_HISTORY  ──► NdbCore
//!                                    ADVANCE_SEGMENT_OVER  ──► Elector ──► base id
//!                                    ADVANCE_SEGMENT_RESOLVED ► NdbCore ──► permanent records
//!                                    Store::commit (one synced WriteBatch)
//!                                         │
//!                                         ▼
//!                                 [dispatcher task] ──► Router::dispatch ──► acks
//! ```
//!
//! In the embedded mode the three roles share one disk, so the temporary
//! history and the permanent move collapse into a single group commit: one
//! fsync per segment, and the ack waits for it. Requests that arrive while a
//! commit is in flight form the next segment, so batches grow with load.

use crate::router::Router;
use ordo_common::quic::metrics::Metrics;
use ordo_common::{AdvanceId, PermanentId, StoredMessage};
use ordo_ndb::{CommitBatch, NdbCore, Store};
use ordo_sync::{Elector, SegmentOver};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Why a publish was not acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    /// The store failed to write; nothing in this segment was acknowledged.
    #[error("storage failed: {0}")]
    Storage(String),
    /// The sequencer has stopped (shutdown).
    #[error("sequencer stopped")]
    Stopped,
}

/// A message waiting for its permanent id.
pub struct PublishRequest {
    /// The message.
    pub message: StoredMessage,
    /// Receives the permanent id once the message is durable; `None` for fire-and-forget.
    pub reply: Option<oneshot::Sender<Result<PermanentId, PublishError>>>,
}

/// Handle used by the front doors to publish.
#[derive(Clone)]
pub struct Sequencer {
    tx: mpsc::Sender<PublishRequest>,
}

impl Sequencer {
    /// Wrap the sending half of a publish queue (the embedded thread's or the cluster shell's).
    pub(crate) fn from_sender(tx: mpsc::Sender<PublishRequest>) -> Self {
        Sequencer { tx }
    }

    /// Queue a message; wait for a slot if the sequencer is saturated.
    ///
    /// Returns a receiver for the permanent id when `want_reply` is set.
    pub async fn publish(
        &self,
        message: StoredMessage,
        want_reply: bool,
    ) -> Result<Option<oneshot::Receiver<Result<PermanentId, PublishError>>>, PublishError> {
        let (reply, rx) = if want_reply {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        self.tx
            .send(PublishRequest { message, reply })
            .await
            .map_err(|_| PublishError::Stopped)?;
        Ok(rx)
    }

    /// Publish `message` and wait until it is ordered and durable; whether it was.
    pub async fn publish_acked(&self, message: StoredMessage) -> bool {
        match self.publish(message, true).await {
            Ok(Some(ack)) => matches!(ack.await, Ok(Ok(_))),
            _ => false,
        }
    }
}

struct Committed {
    messages: Vec<(PermanentId, Arc<StoredMessage>)>,
    replies: Vec<Option<oneshot::Sender<Result<PermanentId, PublishError>>>>,
}

pub(crate) const META_NEXT_SEGMENT: &str = "entry/next_segment";

/// Start the sequencer thread and the dispatcher task; return the publish handle,
/// the thread, which ends (closing its store handle) once every [`Sequencer`]
/// handle is dropped, and the dispatcher, which ends after routing the thread's
/// last commit.
///
/// `max_batch` bounds messages per segment.
pub fn start(
    store: Store,
    router: Arc<Router>,
    owner: u64,
    max_batch: usize,
    metrics: Metrics,
) -> Result<
    (
        Sequencer,
        std::thread::JoinHandle<()>,
        tokio::task::JoinHandle<()>,
    ),
    ordo_ndb::StoreError,
> {
    let last = store.last_id()?;
    let next_segment = store
        .get_meta(META_NEXT_SEGMENT)?
        .and_then(|v| v.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(1);
    let (tx, rx) = mpsc::channel::<PublishRequest>(max_batch * 4);
    let (done_tx, done_rx) = mpsc::unbounded_channel::<Committed>();
    let core = Cores {
        owner,
        next_segment,
        ndb: NdbCore::new(),
        elector: Elector::new(last),
    };
    let thread = std::thread::Builder::new()
        .name("ordo-sequencer".into())
        .spawn(move || run_sequencer(rx, done_tx, store, core, max_batch, metrics))
        .map_err(|e| ordo_ndb::StoreError::Corrupt {
            key: "thread".into(),
            reason: e.to_string(),
        })?;
    let dispatcher = tokio::spawn(run_dispatcher(done_rx, router));
    Ok((Sequencer { tx }, thread, dispatcher))
}

struct Cores {
    owner: u64,
    next_segment: u64,
    ndb: NdbCore,
    elector: Elector,
}

fn run_sequencer(
    mut rx: mpsc::Receiver<PublishRequest>,
    done: mpsc::UnboundedSender<Committed>,
    store: Store,
    mut cores: Cores,
    max_batch: usize,
    metrics: Metrics,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(req) => batch.push(req),
                Err(_) => break,
            }
        }
        let (messages, replies): (Vec<_>, Vec<_>) =
            batch.drain(..).map(|r| (r.message, r.reply)).unzip();
        let started = std::time::Instant::now();
        match commit_segment(&store, &mut cores, messages) {
            Ok(messages) => {
                metrics.observe_persist(started.elapsed());
                if done.send(Committed { messages, replies }).is_err() {
                    return;
                }
            }
            Err(e) => {
                metrics.storage_errors.inc();
                tracing::error!(error = %e, "commit failed; not acknowledging this segment");
                for reply in replies.into_iter().flatten() {
                    let _ = reply.send(Err(PublishError::Storage(e.to_string())));
                }
            }
        }
    }
}

/// Run one segment through BEGIN/KEEP/OVER/ELECT/RESOLVED and commit it.
fn commit_segment(
    store: &Store,
    cores: &mut Cores,
    messages: Vec<StoredMessage>,
) -> Result<Vec<(PermanentId, Arc<StoredMessage>)>, ordo_ndb::StoreError> {
    let segment = cores.next_segment;
    let count = messages.len() as u32;
    for (offset, message) in messages.into_iter().enumerate() {
        let id = AdvanceId {
            owner: cores.owner,
            segment,
            offset: offset as u32,
        };
        cores.ndb.handle_keep(id, message);
    }
    let elected = cores.elector.handle_segment_over(SegmentOver {
        owner: cores.owner,
        segment,
        count,
    });
    let resolved = cores
        .ndb
        .handle_resolved(cores.owner, segment, count, elected.base)
        .map_err(|e| ordo_ndb::StoreError::Corrupt {
            key: format!("segment {segment}"),
            reason: e.to_string(),
        })?;
    let messages: Vec<(PermanentId, Arc<StoredMessage>)> = resolved
        .into_iter()
        .map(|(id, m)| (id, Arc::new(m)))
        .collect();
    let batch = CommitBatch {
        messages,
        meta: vec![(
            META_NEXT_SEGMENT.into(),
            (segment + 1).to_be_bytes().to_vec(),
        )],
    };
    store.commit(&batch)?;
    cores.next_segment = segment + 1;
    cores.elector.handle_applied(cores.owner, segment);
    Ok(batch.messages)
}

async fn run_dispatcher(mut rx: mpsc::UnboundedReceiver<Committed>, router: Arc<Router>) {
    while let Some(committed) = rx.recv().await {
        router.dispatch(&committed.messages);
        for ((id, _), reply) in committed.messages.iter().zip(committed.replies) {
            if let Some(reply) = reply {
                let _ = reply.send(Ok(*id));
            }
        }
    }
}
