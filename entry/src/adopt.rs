//! Adopting an abandoned entry's wills: one surviving entry publishes the wills
//! of the connections and sessions the dead entry held.
//!
//! ```text
//!  ordo-sync abandon --owner X ─► notice {seq, X, at} ─► every entry (polled from sync)
//!  each entry: claim `adopt/X/<seq>/claim/<me>` in `$ordo` ─► acked, applied here
//!  the first claim in the log wins; every entry sees the same order, so one winner:
//!    winner ─► MQTT live wills of X recorded before `at` ─► published after their delay,
//!              record deleted (unless the client came back)
//!           ─► MQTT delayed wills in X's session records ─► published when due
//!           ─► WAMP sessions of X ─► ended as their connections would have: their wills
//!              ─► `adopt/X/<seq>/done` (a resumed adoption ends no session again)
//! ```
//!
//! Everything is decided from the log, so a restarted entry re-learns the notices and
//! resumes an adoption it won and did not finish, or skips it. Records ordered at or
//! after `at` belong to a run of X that came back after the abandon, which handles them.

use crate::mqtt::session_store::{self, SESSION_REALM};
use crate::mqtt::{self, live_wills};
use crate::router::Router;
use crate::Shared;
use ordo_common::proto::AbandonNotice;
use ordo_common::StoredMessage;
use tokio::sync::mpsc;

const TOPIC_PREFIX: &str = "adopt/";

/// Adopt the wills of every owner the operator abandons, as notices arrive.
pub(crate) fn start(shared: Shared, mut notices: mpsc::UnboundedReceiver<AbandonNotice>) {
    tokio::spawn(async move {
        while let Some(notice) = notices.recv().await {
            tokio::spawn(adopt(shared.clone(), notice));
        }
    });
}

/// `adopt/<owner>/<seq>/`: the topics of one abandon's adoption.
fn prefix_of(notice: &AbandonNotice) -> String {
    format!("{TOPIC_PREFIX}{}/{}/", notice.owner, notice.seq)
}

/// A record of the adoption of `notice`: it holds where the abandon stands in the log.
fn record(topic: String, notice: &AbandonNotice) -> StoredMessage {
    session_store::record_message(topic, Some(&notice.at))
}

/// The entry whose claim stands first in the log, among the claims applied here.
///
/// Once one's own claim is applied, every claim ordered before it is too, so the answer
/// is final: the same on every entry.
fn first_claimant(router: &Router, prefix: &str) -> Option<u64> {
    let claims = format!("{prefix}claim/");
    router
        .retained_under(SESSION_REALM, &claims)
        .into_iter()
        .min_by_key(|(_, id, _)| *id)
        .and_then(|(topic, _, _)| topic.strip_prefix(&claims)?.parse().ok())
}

async fn adopt(shared: Shared, notice: AbandonNotice) {
    let (me, owner) = (shared.config.owner, notice.owner);
    let prefix = prefix_of(&notice);
    let done = format!("{prefix}done");
    let (winner, decided_now) = match first_claimant(&shared.router, &prefix) {
        // Decided before (a restart re-learns every notice).
        Some(winner) => (winner, false),
        None => {
            let claim = record(format!("{prefix}claim/{me}"), &notice);
            let applied = live_wills::publish_applied(
                &shared.router,
                &shared.sequencer,
                claim,
                shared.shutdown.clone(),
            )
            .await;
            match applied.and_then(|_| first_claimant(&shared.router, &prefix)) {
                Some(winner) => (winner, true),
                None => return,
            }
        }
    };
    if winner != me {
        if decided_now {
            tracing::info!(
                owner,
                winner,
                "another entry adopts the abandoned entry's wills"
            );
        }
        return;
    }
    // The claim is applied here, and it stands after the abandon: so does every record of X
    // ordered before `at`, which this router now holds. MQTT records are deleted as their
    // wills are published, so a resumed adoption finds only those still due.
    let live = live_wills::adopt(&shared, owner, notice.at);
    let delayed = mqtt::adopt_delayed_wills(&shared, owner, notice.at);
    // X's WAMP sessions carry no position in the log: a resumed adoption must not end the
    // sessions of a run of X that came back, so they are ended once, then marked done.
    let sessions = if shared.router.retained_of(SESSION_REALM, &done).is_some() {
        Vec::new()
    } else {
        shared.router.fox_sessions_of(owner)
    };
    if !decided_now && live + delayed + sessions.len() == 0 {
        return;
    }
    tracing::info!(
        owner,
        mqtt_wills = live,
        mqtt_delayed_wills = delayed,
        wamp_sessions = sessions.len(),
        "adopting the wills of an abandoned entry"
    );
    if sessions.is_empty() {
        return;
    }
    for (session, realm) in sessions {
        crate::wamp::fox::end_session_of(&shared, owner, session, &realm).await;
    }
    let _ = shared.sequencer.publish(record(done, &notice), false).await;
}
