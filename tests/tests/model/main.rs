//! Stateright model of the voting protocol: the real cores as actors.
//!
//! 3 sync, 3 ndb and 2 entries; entry 1 publishes `ORDO_MODEL_MSGS` messages
//! (default 1, one segment each, chained), entry 2 one. The sync cluster starts
//! from a reachable state in which sync 0 won term 1 and committed its no-op;
//! sync 1 (and sync 2 with `ORDO_MODEL_CHALLENGERS=2`) keeps an election timer,
//! so a challenger can depose the leader at any point.
//!
//! Network: unordered and duplicating. A message, once sent, may be delivered
//! any number of times, in any order, or never; that also stands for the
//! retransmissions of the entries' and ndbs' retry timers (which the model does
//! not run) whenever the retry re-sends the same message. For the `always`
//! properties this subsumes loss: the properties read actor states only, and a
//! run with a lost message reaches exactly the actor states of the run in which
//! that message is never delivered, at the same depth or less (a Drop costs a
//! step). `ORDO_MODEL_LOSSY=1` adds the explicit Drop action anyway.
//!
//! Crashes: with a crash budget (`ORDO_MODEL_CRASHES`, default 1 in the crash
//! test), any actor may lose power in any state while the budget lasts: its
//! memory is thrown away and its core is rebuilt by `recover` from the disk its
//! own `Persist` actions built. Crash and restart are one step; the time a node
//! is down is a stretch in which nothing is delivered to it, which the network
//! already allows, and messages sent to it stay deliverable after the restart.
//! A restarted entry gets a new publisher session that publishes one message.
//!
//! Steps are atomic, so a `Persist` is durable within its step; the simulator
//! covers the window between a write and its fsync.
//!
//! Bound: BFS to `ORDO_MODEL_DEPTH` (states at depth d have d-1 steps, and the
//! properties are checked on states with at most d-2 steps). See
//! docs/testing.md for the configurations, their state counts and times.

mod actor;
mod props;

use actor::{Node, Opts, Role, Skip, Timer};
use ordo_common::proto::{Abandon, Msg};
use stateright::actor::{ActorModel, ActorModelAction, Envelope, LossyNetwork, Network};
use stateright::{Checker, Expectation, HasDiscoveries, Model, Property};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One configuration of the model.
#[derive(Clone, Copy, Debug)]
struct Config {
    depth: usize,
    crashes: u8,
    /// Messages each entry's first publisher session sends.
    msgs: [u64; 2],
    challengers: usize,
    lossy: bool,
    mutation: Mutation,
    /// With a mutation: the one `always` property it must break.
    target: &'static str,
    /// Explore depth-first (finds deep bugs with little memory; may miss states).
    dfs: bool,
    /// Stop after this many seconds (0: no limit).
    timeout: u64,
    /// Start with the operator's `Abandon {owner: 2, below: 2}` committed: entry 2's first
    /// segment (1, its high-water mark) is below the floor, as for an entry that comes back.
    abandon: bool,
}

/// A deliberate bug, to show that the properties can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mutation {
    None,
    /// The shell drops one kind of durable write.
    Skip(Skip),
    /// Entries send OVER on the first TRIM (fox-wamp's entry).
    FirstTrim,
    /// The sync leader commits on its own (quorum 1).
    MinorityCommit,
    /// Entries send every OVER with `prev: None` (segments not chained).
    Unchained,
    /// An abandon moves the owner's `last` to `below - 1` (the one-line plan).
    AbandonMovesLast,
}

const AGREEMENT: &str = "agreement, order, integrity";
const FINAL: &str = "acked ids are final";
const DURABLE: &str = "acked only when durable on a quorum of ndbs";
const ELECTED: &str = "acked only when elected on a quorum of sync logs";
const FIFO: &str = "fifo per publisher";
const RAFT: &str = "committed sync logs agree";

/// The actor model with a global crash budget, and without the network's memory of
/// the last delivered message (which only tells apart states with equal actors).
struct Ordo {
    inner: ActorModel<Node>,
    cfg: Config,
    /// Past this instant no state gets successors (stateright's own timeout is not
    /// checked by a single checker thread).
    deadline: Option<Instant>,
}

type State = stateright::actor::ActorModelState<Node>;

fn forget_last_delivery(s: &mut State) {
    if let Network::UnorderedDuplicating(_, last) = &mut s.network {
        *last = None;
    }
}

impl Model for Ordo {
    type State = State;
    type Action = ActorModelAction<Msg, Timer, ()>;

    fn init_states(&self) -> Vec<State> {
        let mut v = self.inner.init_states();
        v.iter_mut().for_each(forget_last_delivery);
        v
    }

    fn actions(&self, s: &State, actions: &mut Vec<Self::Action>) {
        self.inner.actions(s, actions);
        if props::crashes(s) >= self.cfg.crashes {
            actions.retain(|a| !matches!(a, ActorModelAction::Timeout(_, Timer::Crash)));
        }
    }

    fn next_state(&self, s: &State, action: Self::Action) -> Option<State> {
        let crashed = match &action {
            ActorModelAction::Timeout(id, Timer::Crash) => Some(usize::from(*id)),
            _ => None,
        };
        let mut next = self.inner.next_state(s, action)?;
        if let Some(i) = crashed {
            if next.actor_states[i].core == s.actor_states[i].core {
                // Nothing in memory that the disk does not hold: the same as no crash.
                return None;
            }
        }
        forget_last_delivery(&mut next);
        Some(next)
    }

    fn within_boundary(&self, _: &State) -> bool {
        // Not in `actions`: stateright replays `actions` to rebuild a counterexample's path.
        self.deadline.is_none_or(|d| Instant::now() < d)
    }

    fn format_action(&self, action: &Self::Action) -> String {
        self.inner.format_action(action)
    }

    fn format_step(&self, s: &State, action: Self::Action) -> Option<String> {
        self.inner.format_step(s, action)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut v = vec![
            Property::always(AGREEMENT, |_, s| props::agreement_order_integrity(s)),
            Property::always(FINAL, |_, s| props::acked_ids_final(s)),
            Property::always(DURABLE, |_, s| props::acked_durable_on_ndb_quorum(s)),
            Property::always(ELECTED, |_, s| props::acked_elected_on_sync_quorum(s)),
            Property::always(FIFO, |_, s| props::fifo(s)),
            Property::always(RAFT, |_, s| props::committed_logs_agree(s)),
        ];
        if self.cfg.mutation != Mutation::None {
            v.retain(|p| p.name == self.cfg.target);
        }
        if self.cfg.mutation == Mutation::None {
            v.push(Property::sometimes("some segment is resolved", |_, s| {
                props::some_segment_resolved(s)
            }));
            v.push(Property::sometimes("some publish is acked", |_, s| {
                props::some_publish_acked(s)
            }));
            if self.cfg.crashes > 0 {
                v.push(Property::sometimes(
                    "a restarted ndb or sync holds protocol state",
                    |_, s| props::restarted_node_holds_state(s),
                ));
            }
            if self.cfg.abandon {
                v.push(Property::sometimes(
                    "entry 2 renumbered above the floor and acked",
                    |_, s| props::acked_above_the_floor(s),
                ));
            }
            if self.cfg.crashes > 0 && self.cfg.depth >= 11 {
                // A crash plus the 8 steps that resolve a segment.
                v.push(Property::sometimes(
                    "resolved with a crash on the path",
                    |_, s| props::resolved_after_a_crash(s),
                ));
            }
        }
        v
    }
}

fn build(cfg: Config) -> Ordo {
    let opts = Opts {
        crash: cfg.crashes > 0,
        skip: match cfg.mutation {
            Mutation::Skip(k) => k,
            _ => Skip::Nothing,
        },
        unchain: cfg.mutation == Mutation::Unchained,
    };
    let mutate = |r: &mut Role| match (cfg.mutation, r) {
        (Mutation::FirstTrim, Role::Entry(c, _)) => c.trim_quorum_override = Some(1),
        (Mutation::MinorityCommit, Role::Sync(c, ..)) => c.commit_quorum_override = Some(1),
        (Mutation::AbandonMovesLast, Role::Sync(c, ..)) => c.abandon_moves_last = true,
        _ => {}
    };
    let abandon = cfg.abandon.then_some(Abandon { owner: 2, below: 2 });
    let (actors, in_flight) = actor::actors(opts, cfg.msgs, cfg.challengers, abandon, &mutate);
    let envelopes = in_flight.into_iter().map(|(src, dst, msg)| Envelope {
        src: actor::to_id(src),
        dst: actor::to_id(dst),
        msg,
    });
    let inner = ActorModel::new((), ())
        .actors(actors)
        .init_network(Network::new_unordered_duplicating(envelopes))
        .lossy_network(if cfg.lossy {
            LossyNetwork::Yes
        } else {
            LossyNetwork::No
        });
    Ordo {
        inner,
        cfg,
        deadline: None,
    }
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The configuration from the environment, over the given defaults.
fn config(depth: usize, crashes: u8) -> Config {
    Config {
        depth: env("ORDO_MODEL_DEPTH", depth),
        crashes: env("ORDO_MODEL_CRASHES", crashes),
        msgs: [env("ORDO_MODEL_MSGS", 1), 1],
        challengers: env("ORDO_MODEL_CHALLENGERS", 1),
        lossy: env("ORDO_MODEL_LOSSY", 0u8) == 1,
        mutation: Mutation::None,
        target: "",
        dfs: env("ORDO_MODEL_DFS", 0u8) == 1,
        timeout: env("ORDO_MODEL_TIMEOUT", 0),
        abandon: false,
    }
}

/// One checker at a time: they are memory-hungry and the machine has few cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Run the checker to the configured depth; print what was explored.
///
/// BFS, which checks every state within the bound. A mutation run uses DFS and
/// stops at the first counterexample: it only needs to find one, and DFS reaches a
/// deep one with little memory (a depth-bounded DFS can miss states, so it is not
/// used to claim that the properties hold).
fn check(cfg: Config) -> Box<dyn Checker<Ordo>> {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let mut model = build(cfg);
    if cfg.timeout > 0 {
        model.deadline = Some(started + Duration::from_secs(cfg.timeout));
    }
    let mut builder = model.checker().target_max_depth(cfg.depth);
    if cfg.mutation != Mutation::None {
        builder = builder.finish_when(HasDiscoveries::AnyFailures);
    }
    let checker: Box<dyn Checker<Ordo>> = if cfg.dfs {
        Box::new(builder.spawn_dfs().join())
    } else {
        Box::new(builder.spawn_bfs().join())
    };
    eprintln!(
        "{cfg:?}: {} states ({} unique), depth {}, {:.1} s",
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth(),
        started.elapsed().as_secs_f64()
    );
    for p in checker.model().properties() {
        if let Some(path) = checker.discovery(p.name) {
            let kind = match p.expectation {
                Expectation::Always => "COUNTEREXAMPLE",
                _ => "example",
            };
            eprintln!("  {kind} for {:?}: {:?}", p.name, path.into_actions());
        }
    }
    checker
}

#[test]
fn model_holds_without_crashes() {
    check(config(11, 0)).assert_properties();
}

#[test]
fn model_holds_with_one_crash() {
    check(config(10, 1)).assert_properties();
}

/// An operator abandoned entry 2's segments below 2 before it (re)started at its mark, 1:
/// it must learn the floor (from an ndb's answer to its BEGIN or a sync's to its OVER),
/// renumber, and never ack under the abandoned segment.
#[test]
fn model_holds_with_an_abandoned_owner_coming_back() {
    let mut cfg = config(14, 0);
    cfg.depth = env("ORDO_MODEL_ABANDON_DEPTH", 14);
    cfg.msgs = [env("ORDO_MODEL_MSGS", 0), env("ORDO_MODEL_MSGS2", 1)];
    cfg.challengers = env("ORDO_MODEL_CHALLENGERS", 0);
    cfg.abandon = true;
    check(cfg).assert_properties();
}

/// Run a mutation depth-first until `target` fails; tell whether it did.
fn caught(mutation: Mutation, target: &'static str, depth: usize, crashes: u8) -> bool {
    let mut cfg = Config {
        depth,
        crashes,
        msgs: [1, 1],
        challengers: 1,
        lossy: false,
        mutation,
        target,
        dfs: true,
        timeout: 0,
        abandon: false,
    };
    if mutation == Mutation::Unchained {
        cfg.msgs = [2, 0];
    }
    if mutation == Mutation::AbandonMovesLast {
        // Entry 2's segments 1 and 2 (chained); the floor 2 abandons 1.
        cfg.msgs = [0, 2];
        cfg.challengers = 0;
        cfg.abandon = true;
    }
    if crashes > 0 {
        // A crashed entry's leftovers: one entry and no challenger keep the search short.
        cfg.msgs = [1, 0];
        cfg.challengers = 0;
    }
    let checker = check(cfg);
    let steps = checker.discovery(target).map(|p| p.into_actions().len());
    eprintln!("{mutation:?} breaks {target:?} after {steps:?} steps");
    steps.is_some()
}

#[test]
fn checker_catches_over_on_first_trim() {
    assert!(caught(Mutation::FirstTrim, DURABLE, 10, 0));
}

#[test]
fn checker_catches_minority_commit() {
    assert!(caught(Mutation::MinorityCommit, ELECTED, 10, 0));
    assert!(caught(Mutation::MinorityCommit, RAFT, 10, 0));
}

#[test]
fn checker_catches_trim_before_durable_bodies() {
    assert!(caught(Mutation::Skip(Skip::NdbTemp), DURABLE, 10, 0));
}

#[test]
fn checker_catches_draft_ack_before_durable_log() {
    assert!(caught(Mutation::Skip(Skip::SyncLog), ELECTED, 10, 0));
}

#[test]
fn checker_catches_unchained_segments() {
    assert!(caught(Mutation::Unchained, FIFO, 10, 0));
}

#[test]
fn checker_catches_an_abandon_that_moves_last() {
    assert!(caught(Mutation::AbandonMovesLast, FIFO, 12, 0));
}

#[test]
fn checker_catches_entry_reusing_segments_after_restart() {
    let reuse = Mutation::Skip(Skip::EntryReserve);
    assert!(caught(reuse, FINAL, 13, 1));
    assert!(caught(reuse, AGREEMENT, 13, 1));
}

#[test]
fn initial_sync_cluster_has_a_leader_with_a_committed_noop() {
    let mut cfg = config(1, 0);
    cfg.abandon = true;
    let m = build(cfg);
    let s = &m.init_states()[0];
    let floors: Vec<u64> = s
        .actor_states
        .iter()
        .filter_map(|a| match &a.core {
            actor::Core::Sync { node, .. } => Some(node.machine().operator_floor(2)),
            _ => None,
        })
        .collect();
    assert_eq!(
        floors,
        vec![2, 2, 2],
        "the abandon is applied on every sync node"
    );
    let notices = s.network.iter_all().count();
    assert!(
        notices >= 3,
        "the leader's notices are in flight to the ndbs"
    );
    let m = build(config(1, 0));
    let s = &m.init_states()[0];
    let leader = s.actor_states.iter().find_map(|a| match &a.core {
        actor::Core::Sync { node, .. } if node.is_leader() => Some(node.commit_index()),
        _ => None,
    });
    assert_eq!(leader, Some(1));
}
