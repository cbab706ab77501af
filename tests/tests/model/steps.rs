//! The model's steps beyond the actor model's: a crash that cuts a step short, and a
//! step whose new message the network loses.

use crate::actor::Node;
use crate::actor::Timer;
use ordo_common::proto::Msg;
use stateright::actor::{ActorModelAction, Envelope, Network};
use std::hash::{Hash, Hasher};

pub type State = stateright::actor::ActorModelState<Node>;
pub type Inner = ActorModelAction<Msg, Timer, ()>;

/// A crash may cut a step short before its first, second or third write.
pub const CUTS: u8 = 3;

/// The messages a step put in flight that were not in flight before, in a fixed order.
pub fn new_sends(before: &State, after: &State) -> Vec<Envelope<Msg>> {
    let (Network::UnorderedDuplicating(old, _), Network::UnorderedDuplicating(now, _)) =
        (&before.network, &after.network)
    else {
        return Vec::new();
    };
    let mut new: Vec<&Envelope<Msg>> = now
        .iter()
        .filter(|e| !old.contains(*e) && losable(e))
        .collect();
    // Destinations first; one step rarely sends two messages to one actor.
    new.sort_by_cached_key(|e| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        e.msg.hash(&mut h);
        (e.dst, h.finish())
    });
    new.into_iter().cloned().collect()
}

/// `s` without the in-flight message `e`, recorded as lost by its destination.
pub fn lose(s: &mut State, e: &Envelope<Msg>) {
    if let Network::UnorderedDuplicating(set, _) = &mut s.network {
        set.remove(e);
    }
    let i = usize::from(e.dst);
    let mut a = (*s.actor_states[i]).clone();
    a.lost.push(e.msg.clone());
    s.actor_states[i] = std::sync::Arc::new(a);
}

/// One step of the model.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// A step of the actor model: a delivery, a timeout (a crash between steps), a drop.
    Run(Inner),
    /// A delivery or tick during which the node crashes just before its write number
    /// `.1` (from 0) is durable: that write and every action behind it are lost.
    CrashBefore(Inner, u8),
    /// A delivery or tick whose new message number `.1` (from 0, in `new_sends` order) the
    /// network loses: no copy of it was in flight, so it is never delivered unless re-sent.
    Lose(Inner, u8),
}

/// The actor a delivery or timeout runs on.
pub fn target(a: &Inner) -> Option<usize> {
    match a {
        ActorModelAction::Deliver { dst, .. } => Some(usize::from(*dst)),
        ActorModelAction::Timeout(id, _) => Some(usize::from(*id)),
        _ => None,
    }
}

/// `s` with actor `i` told to crash before its write number `k` in its next step.
pub fn with_cut(s: &State, i: usize, k: u8) -> State {
    let mut s = s.clone();
    let mut a = (*s.actor_states[i]).clone();
    a.cut = Some(k);
    s.actor_states[i] = std::sync::Arc::new(a);
    s
}

pub fn forget_last_delivery(s: &mut State) {
    if let Network::UnorderedDuplicating(_, last) = &mut s.network {
        *last = None;
    }
}

/// Whether the network may lose `e`: a message to or from the sync cluster (OVER, RESOLVED,
/// `FetchResolved`, the sync nodes' own). A lost BEGIN or TRIM is made good by the other
/// ndbs of the quorum, and no goal reads a lost `FetchPermanent`; leaving them out keeps the
/// search small.
fn losable(e: &Envelope<Msg>) -> bool {
    let sync = |id: stateright::actor::Id| usize::from(id) < crate::actor::SYNCS;
    sync(e.src) || sync(e.dst)
}
