//! The operator's commands to a running sync cluster (`ordo-sync abandon`).
//!
//! ```text
//!  ordo-sync abandon ──(QUIC, certificate "operator" from the cluster CA)──► every sync node
//!                     Abandon {owner, below}, `rounds` times; the leader commits it once
//! ```
//!
//! There is no answer: the command is idempotent, so it is simply sent to every sync node
//! a few times (a leader change between rounds is covered by the next round). The sync
//! nodes log `abandon applied` and count it in the `abandons` gauge once it is committed.

use ordo_common::cluster::ClusterSpec;
use ordo_common::proto::{Abandon, Msg, NodeId};
use ordo_common::quic::{load_identity, send_once, QuicError};
use std::time::Duration;

/// The certificate name (in the cluster's `cert_dir`) the operator's tools present.
pub const OPERATOR_CERT: &str = "operator";

/// Why `abandon` failed.
#[derive(Debug, thiserror::Error)]
pub enum AbandonError {
    /// The operator certificate could not be loaded.
    #[error("operator certificate in {dir}: {source}")]
    Identity {
        /// The cluster's certificate folder.
        dir: String,
        /// What went wrong.
        source: QuicError,
    },
    /// `below` must be at least 1 (0 abandons nothing).
    #[error("--below must be at least 1")]
    NothingBelow,
    /// No sync node took the command in any round.
    #[error("no sync node was reachable: {0}")]
    Unreachable(String),
}

/// Send `Abandon {owner, below}` to every sync node of `spec`, `rounds` times, `pause` apart.
///
/// Returns how many deliveries succeeded; fails only if none did.
pub async fn abandon(
    spec: &ClusterSpec,
    owner: u64,
    below: u64,
    rounds: u32,
    pause: Duration,
) -> Result<usize, AbandonError> {
    if below == 0 {
        return Err(AbandonError::NothingBelow);
    }
    let identity =
        load_identity(&spec.cert_dir, OPERATOR_CERT).map_err(|source| AbandonError::Identity {
            dir: spec.cert_dir.display().to_string(),
            source,
        })?;
    if !spec.entry_ids().contains(&owner) {
        // Allowed (the entry may have left the file), but more often a typo.
        tracing::warn!(owner, "owner is not an entry of the cluster file");
    }
    let msg = Msg::Abandon(Abandon { owner, below });
    let mut delivered = 0;
    let mut last_error = String::from("no sync node in the cluster file");
    for round in 0..rounds.max(1) {
        if round > 0 {
            tokio::time::sleep(pause).await;
        }
        for id in spec.sync_ids() {
            let node = NodeId::Sync(id);
            let Some(addr) = spec.addr_of(node) else {
                continue;
            };
            let sent = tokio::time::timeout(
                Duration::from_secs(5),
                send_once(
                    NodeId::Operator,
                    &identity,
                    node,
                    addr,
                    std::slice::from_ref(&msg),
                ),
            )
            .await;
            match sent {
                Ok(Ok(())) => {
                    delivered += 1;
                    tracing::info!(%node, %addr, owner, below, "abandon delivered");
                }
                Ok(Err(e)) => {
                    last_error = format!("{node} at {addr}: {e}");
                    tracing::warn!(%node, %addr, error = %e, "abandon not delivered");
                }
                Err(_) => {
                    last_error = format!("{node} at {addr}: timed out");
                    tracing::warn!(%node, %addr, "abandon not delivered: timed out");
                }
            }
        }
    }
    if delivered == 0 {
        return Err(AbandonError::Unreachable(last_error));
    }
    Ok(delivered)
}
