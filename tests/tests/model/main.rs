//! Stateright model of the voting protocol: the real cores as actors.
//!
//! 3 sync, 3 ndb and 2 entries; entry 1 publishes `ORDO_MODEL_MSGS` messages
//! (default 1, one segment each, chained), entry 2 one. The sync cluster starts
//! from a reachable state in which sync 0 won term 1 and committed its no-op;
//! sync 1 (and sync 2 with `ORDO_MODEL_CHALLENGERS=2`) keeps an election timer,
//! so a challenger can depose the leader at any point. Three checks start elsewhere:
//! with no leader (every sync node at term 0, syncs 1 and 2 challengers), with
//! two challengers that may each win a term after sync 0's, and past entry 1's store
//! stage (its OVER in flight), so that an ack by a crashed leader's successor is in reach.
//!
//! Retries: with a retry budget (`ORDO_MODEL_RETRIES`), entries and ndbs run their
//! retry timers and a sync node without an election timer its heartbeat while it
//! leads, as the shells do: time jumps to the core's `poll_timeout` and it ticks. A
//! timer fires only while its core has work to retry (`props::wants_retry`), at most
//! the budget's times on a path. With a loss budget (`ORDO_MODEL_LOSSES`) the network
//! may lose a message to or from a sync node when it is first sent (`Step::Lose`), so
//! that only a retry can make it good; a loss adds no actor state (below), only the
//! `sometimes` goals that need a retry.
//!
//! Network: unordered and duplicating. A message, once sent, may be delivered
//! any number of times, in any order, or never; that also stands for a retry that
//! re-sends the same message. For the `always`
//! properties this subsumes loss: the properties read actor states only, and a
//! run with a lost message reaches exactly the actor states of the run in which
//! that message is never delivered, at the same depth or less (a Drop costs a
//! step). `ORDO_MODEL_LOSSY=1` adds the explicit Drop action anyway.
//!
//! Crashes: with a crash budget (`ORDO_MODEL_CRASHES`, default 1 in the crash
//! test, 2 in the two-crash test), any actor may lose power in any state while the
//! budget lasts: its memory is thrown away and its core is rebuilt by `recover` from
//! the disk its own `Persist` actions built. Crash and restart are one step; the time
//! a node is down is a stretch in which nothing is delivered to it, which the network
//! already allows, and messages sent to it stay deliverable after the restart (so two
//! crashes in a row are two nodes down at once). A restarted entry gets a new
//! publisher session that publishes one message.
//!
//! The unsynced window: a step runs the core's actions in order, as a shell obeying
//! the Persist rule does (a write is durable before any action behind it runs). A
//! crash may also cut a step short just before its first, second or third write
//! (`Step::CrashBefore`): the actions before that write ran, the write and all behind
//! it (queued behind its fsync) are lost. A write queued behind an earlier unsynced
//! one in a later step changes nothing: all its actions wait for the earlier fsync,
//! so the crash loses them too, which is the crash in the earlier step (the network
//! duplicates, so the later step's message is still deliverable).
//!
//! Elections: `ORDO_MODEL_MAX_TERM` bounds the terms a candidate may stand in (a
//! candidate that times out stands again in the next term, without end).
//!
//! Bound: BFS to `ORDO_MODEL_DEPTH` (states at depth d have d-1 steps, and the
//! properties are checked on states with at most d-2 steps). See
//! docs/testing.md for the configurations, their state counts and times.

mod actor;
mod mutations;
mod props;
mod steps;

use actor::{Node, Opts, Role, Skip, Timer};
use ordo_common::proto::{Abandon, Msg, NodeId};
use stateright::actor::{ActorModel, ActorModelAction, Envelope, Id, LossyNetwork, Network};
use stateright::{Checker, Expectation, HasDiscoveries, Model, Property};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use steps::{forget_last_delivery, lose, new_sends, target, with_cut, State, Step, CUTS};

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
    /// With a crash budget, crashes may also cut a step short before one of its writes.
    cuts: bool,
    /// Start with every sync node a follower at term 0 (no leader, empty logs).
    leaderless: bool,
    /// The `sometimes` properties of the configuration.
    goal: Goal,
    /// No election beyond this term (`None`: unbounded; a candidate may stand again
    /// and again, each time in a new term).
    max_term: Option<u64>,
    /// Retry timers that may fire on one path, all actors together (0: none run).
    retries: u8,
    /// Messages the network may lose on one path, each when first sent.
    losses: u8,
    /// Start past entry 1's store stage: its BEGIN delivered to ndbs 0 and 1 and their TRIMs
    /// back, so its OVER is in flight to every sync node (a deep goal within a BFS bound).
    stored: bool,
}

/// What a configuration must reach at least once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Goal {
    /// A segment resolved, a publish acked (and the crash goals with a crash budget).
    Usual,
    /// From a leaderless start: a leader elected, its entries committed, a publish acked.
    FirstElection,
    /// From sync 0's term 1: entries of terms 2 and 3 committed (two new leaders).
    TwoElections,
    /// Two crashes on one path, a restarted ndb or sync holding protocol state (a segment
    /// takes 8 steps to resolve, past the two-crash bound).
    TwoCrashes,
    /// With losses: an OVER and a RESOLVED lost, and still acked and applied (by retries).
    Retries,
    /// A leader crashed and a leader of term 2 committed.
    CrashThenElection,
    /// A leader crashed and its successor acked a publish.
    SuccessorAcks,
}

/// A deliberate bug, to show that the properties can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mutation {
    None,
    /// The shell drops one kind of durable write.
    Skip(Skip),
    /// Entries send OVER on the first TRIM (fox-wamp's entry), and the leader takes one
    /// ndb's STORED for a quorum.
    FirstTrim,
    /// The sync leader commits on its own (quorum 1).
    MinorityCommit,
    /// Entries send every OVER with `prev: None` (segments not chained).
    Unchained,
    /// An abandon moves the owner's `last` to `below - 1` (the one-line plan).
    AbandonMovesLast,
    /// The shell runs a step's sends before its writes (breaks the Persist rule).
    SendsFirst,
    /// An entry's retried OVERs go out with `prev: None` (first sends are chained).
    RetryUnchained,
}

const AGREEMENT: &str = "agreement, order, integrity";
const FINAL: &str = "acked ids are final";
const DURABLE: &str = "acked only when durable on a quorum of ndbs";
const ELECTED: &str = "acked only when elected on a quorum of sync logs";
const FIFO: &str = "fifo per publisher";
const RAFT: &str = "committed sync logs agree";
const LOST_OVER: &str = "acked though the first OVER to the leader was lost";
const LOST_RESOLVED: &str = "applied on an ndb whose RESOLVED was lost";
const SUCCESSOR_ACKS: &str = "a leader crashed, its successor of term 2 acked a publish";

/// The actor model with a global crash budget, and without the network's memory of
/// the last delivered message (which only tells apart states with equal actors).
struct Ordo {
    inner: ActorModel<Node>,
    cfg: Config,
    /// Past this instant no state gets successors (stateright's own timeout is not
    /// checked by a single checker thread).
    deadline: Option<Instant>,
}

impl Model for Ordo {
    type State = State;
    type Action = Step;

    fn init_states(&self) -> Vec<State> {
        let mut v = self.inner.init_states();
        v.iter_mut().for_each(forget_last_delivery);
        if self.cfg.stored {
            v = v
                .into_iter()
                .map(|s| self.past_the_store_stage(s))
                .collect();
        }
        v
    }

    fn actions(&self, s: &State, actions: &mut Vec<Step>) {
        let mut inner = Vec::new();
        self.inner.actions(s, &mut inner);
        let budget = props::crashes(s) < self.cfg.crashes;
        let may_lose = props::losses(s) < usize::from(self.cfg.losses);
        for a in inner {
            if let (ActorModelAction::Timeout(id, Timer::Tick), Some(max)) = (&a, self.cfg.max_term)
            {
                if props::would_stand_beyond(s, usize::from(*id), max) {
                    continue;
                }
            }
            if let ActorModelAction::Timeout(id, Timer::Retry) = &a {
                // Finite: a bounded number of retries, each by a core with work to retry.
                if props::retries(s) >= self.cfg.retries || !props::wants_retry(s, usize::from(*id))
                {
                    continue;
                }
            }
            let crash_timer = matches!(a, ActorModelAction::Timeout(_, Timer::Crash));
            if budget && self.cfg.cuts && !crash_timer && target(&a).is_some() {
                actions.extend((0..CUTS).map(|k| Step::CrashBefore(a.clone(), k)));
            }
            if may_lose && !crash_timer && target(&a).is_some() {
                // One variant per message the step puts in flight (trying a fixed number
                // of variants instead costs twice the time).
                let sent = self
                    .inner
                    .next_state(s, a.clone())
                    .map_or(0, |next| new_sends(s, &next).len());
                actions.extend((0..sent as u8).map(|k| Step::Lose(a.clone(), k)));
            }
            if budget || !crash_timer {
                actions.push(Step::Run(a));
            }
        }
    }

    fn next_state(&self, s: &State, step: Step) -> Option<State> {
        let (crashed, mut next) = match step {
            Step::Run(a) => {
                let crashed = match &a {
                    ActorModelAction::Timeout(id, Timer::Crash) => Some(usize::from(*id)),
                    _ => None,
                };
                (crashed, self.inner.next_state(s, a)?)
            }
            Step::CrashBefore(a, k) => {
                let i = target(&a)?;
                let next = self.inner.next_state(&with_cut(s, i, k), a)?;
                if next.actor_states[i].cut.is_some() {
                    // The step has no write number k.
                    return None;
                }
                (Some(i), next)
            }
            Step::Lose(a, k) => {
                let mut next = self.inner.next_state(s, a)?;
                let e = new_sends(s, &next).into_iter().nth(usize::from(k))?;
                lose(&mut next, &e);
                (None, next)
            }
        };
        forget_last_delivery(&mut next);
        if let Some(i) = crashed {
            if next.actor_states[i].core == s.actor_states[i].core && next.network == s.network {
                // Nothing in memory that the disk does not hold, nothing sent: no crash.
                return None;
            }
            if self.cfg.goal == Goal::TwoCrashes && props::some_segment_resolved(s) {
                // Ghost state for the goal "two crashes, then resolved" (it splits states).
                let mut a = (*next.actor_states[i]).clone();
                a.crashed_after_resolution = true;
                next.actor_states[i] = std::sync::Arc::new(a);
            }
        }
        Some(next)
    }

    fn within_boundary(&self, _: &State) -> bool {
        // Not in `actions`: stateright replays `actions` to rebuild a counterexample's path.
        self.deadline.is_none_or(|d| Instant::now() < d)
    }

    fn format_action(&self, step: &Step) -> String {
        match step {
            Step::Run(a) => self.inner.format_action(a),
            Step::CrashBefore(a, k) => {
                format!("{} CRASHING BEFORE WRITE {k}", self.inner.format_action(a))
            }
            Step::Lose(a, k) => format!("{} LOSING NEW MESSAGE {k}", self.inner.format_action(a)),
        }
    }

    fn format_step(&self, s: &State, step: Step) -> Option<String> {
        match step {
            Step::Run(a) | Step::Lose(a, _) => self.inner.format_step(s, a),
            Step::CrashBefore(a, k) => self.inner.format_step(&with_cut(s, target(&a)?, k), a),
        }
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
        if self.cfg.mutation == Mutation::None && self.cfg.goal == Goal::Usual {
            v.push(Property::sometimes("some segment is resolved", |_, s| {
                props::some_segment_resolved(s)
            }));
            v.push(Property::sometimes("some publish is acked", |_, s| {
                props::some_publish_acked(s)
            }));
        }
        if self.cfg.mutation == Mutation::None {
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
            if self.cfg.goal == Goal::FirstElection {
                v.push(Property::sometimes("a leader is elected", |_, s| {
                    props::some_leader(s)
                }));
                v.push(Property::sometimes("an entry is committed", |_, s| {
                    !props::committed_terms(s).is_empty()
                }));
                if self.cfg.depth >= 15 {
                    // An election (3 steps), the no-op and the segment (10 more).
                    v.push(Property::sometimes(
                        "a publish acked after the first election",
                        |_, s| props::some_publish_acked(s),
                    ));
                }
            }
            if self.cfg.goal == Goal::TwoCrashes {
                v.push(Property::sometimes(
                    "two crashes, a restarted ndb or sync holds protocol state",
                    |_, s| props::crashes(s) == 2 && props::restarted_node_holds_state(s),
                ));
                if self.cfg.depth >= 12 {
                    v.push(Property::sometimes(
                        "two crashes, one of a node holding state, then a segment resolved",
                        |_, s| {
                            props::crashes(s) == 2
                                && props::restarted_node_holds_state(s)
                                && props::some_segment_resolved(s)
                                && s.actor_states.iter().all(|a| !a.crashed_after_resolution)
                        },
                    ));
                }
            }
            if self.cfg.goal == Goal::TwoElections {
                v.push(Property::sometimes(
                    "leaders of terms 2 and 3 both commit",
                    |_, s| {
                        let t = props::committed_terms(s);
                        t.contains(&2) && t.contains(&3)
                    },
                ));
            }
            if self.cfg.goal == Goal::Retries {
                v.push(Property::sometimes(LOST_OVER, |_, s| {
                    props::acked_after_a_lost_over(s)
                }));
                v.push(Property::sometimes(LOST_RESOLVED, |_, s| {
                    props::applied_after_a_lost_resolved(s)
                }));
            }
            if self.cfg.goal == Goal::SuccessorAcks {
                v.push(Property::sometimes(SUCCESSOR_ACKS, |_, s| {
                    props::leader_crashed(s)
                        && props::committed_terms(s).contains(&2)
                        && props::some_publish_acked(s)
                }));
            }
            if self.cfg.goal == Goal::CrashThenElection {
                v.push(Property::sometimes(
                    "a leader crashed, a leader of term 2 committed",
                    |_, s| props::leader_crashed(s) && props::committed_terms(s).contains(&2),
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

impl Ordo {
    /// `s` after entry 1's first segment is stored on ndbs 0 and 1: the steps a BFS would
    /// spend before anything reaches the sync cluster, taken once, by the real cores.
    fn past_the_store_stage(&self, mut s: State) -> State {
        let entry = actor::to_id(NodeId::Entry(1));
        for ndb in [0, 1] {
            let ndb = actor::to_id(NodeId::Ndb(ndb));
            s = self.deliver(s, entry, ndb, |m| matches!(m, Msg::Begin { owner: 1, .. }));
            s = self.deliver(s, ndb, entry, |m| matches!(m, Msg::Trim { owner: 1, .. }));
        }
        s
    }

    /// `s` after the delivery from `src` to `dst` of the in-flight message `pick` names.
    fn deliver(&self, s: State, src: Id, dst: Id, pick: impl Fn(&Msg) -> bool) -> State {
        let mut actions = Vec::new();
        self.inner.actions(&s, &mut actions);
        let step = actions
            .into_iter()
            .find(|a| {
                matches!(a, ActorModelAction::Deliver { src: f, dst: t, msg }
                    if *f == src && *t == dst && pick(msg))
            })
            .expect("the prelude's message is in flight");
        let mut next = self
            .inner
            .next_state(&s, step)
            .expect("a delivery has a next state");
        forget_last_delivery(&mut next);
        next
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
        sends_first: cfg.mutation == Mutation::SendsFirst,
        retries: cfg.retries > 0,
        retry_unchain: cfg.mutation == Mutation::RetryUnchained,
        note_leader_crash: matches!(cfg.goal, Goal::CrashThenElection | Goal::SuccessorAcks),
    };
    let mutate = |r: &mut Role| match (cfg.mutation, r) {
        (Mutation::FirstTrim, Role::Entry(c, _)) => c.trim_quorum_override = Some(1),
        (Mutation::FirstTrim, Role::Sync(c, ..)) => c.stored_quorum_override = Some(1),
        (Mutation::MinorityCommit, Role::Sync(c, ..)) => c.commit_quorum_override = Some(1),
        (Mutation::AbandonMovesLast, Role::Sync(c, ..)) => c.abandon_moves_last = true,
        _ => {}
    };
    let abandon = cfg.abandon.then_some(Abandon { owner: 2, below: 2 });
    let (actors, in_flight) = actor::actors(
        opts,
        cfg.msgs,
        cfg.challengers,
        abandon,
        cfg.leaderless,
        &mutate,
    );
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
        cuts: env("ORDO_MODEL_CUTS", 1u8) == 1,
        leaderless: false,
        goal: Goal::Usual,
        max_term: None,
        retries: env("ORDO_MODEL_RETRIES", 0),
        losses: env("ORDO_MODEL_LOSSES", 0),
        stored: false,
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

/// Two crashes, of any nodes or the same one twice, each between steps or inside a
/// step before one of its writes. Two crashes in a row are two nodes down at once: the
/// time a node is down is a stretch in which nothing is delivered to it.
#[test]
fn model_holds_with_two_crashes() {
    let mut cfg = config(8, 2);
    cfg.msgs[1] = env("ORDO_MODEL_MSGS2", 1);
    cfg.goal = Goal::TwoCrashes;
    check(cfg).assert_properties();
}

/// The first election: every sync node a follower at term 0, syncs 1 and 2 with an
/// election timer, so either (or both, in rival terms) may stand.
#[test]
fn model_holds_from_a_leaderless_start() {
    let mut cfg = config(0, 0);
    cfg.depth = env("ORDO_MODEL_ELECTION_DEPTH", 11);
    cfg.challengers = env("ORDO_MODEL_CHALLENGERS", 2);
    cfg.msgs = [env("ORDO_MODEL_MSGS", 1), env("ORDO_MODEL_MSGS2", 0)];
    cfg.leaderless = true;
    cfg.goal = Goal::FirstElection;
    cfg.max_term = Some(env("ORDO_MODEL_MAX_TERM", 2));
    check(cfg).assert_properties();
}

/// Two elections in one run: sync 0 leads term 1; syncs 1 and 2 may each stand.
#[test]
fn model_holds_across_two_elections() {
    let mut cfg = config(0, 0);
    cfg.depth = env("ORDO_MODEL_ELECTIONS_DEPTH", 11);
    cfg.challengers = 2;
    cfg.msgs = [env("ORDO_MODEL_MSGS", 1), env("ORDO_MODEL_MSGS2", 0)];
    cfg.goal = Goal::TwoElections;
    cfg.max_term = Some(env("ORDO_MODEL_MAX_TERM", 3));
    check(cfg).assert_properties();
}

/// Retries: the entries' and ndbs' retry timers and sync 0's heartbeats fire (at most
/// `ORDO_MODEL_RETRIES` on a path, each by a core with work to retry), and the network
/// may lose one message when it is first sent. Entry 1 publishes one message, entry 2
/// none, no challenger: a lost OVER or RESOLVED can only be made good by a retry.
#[test]
fn model_holds_with_retries_and_a_lost_message() {
    let mut cfg = config(0, 0);
    cfg.depth = env("ORDO_MODEL_RETRY_DEPTH", 12);
    cfg.msgs = [env("ORDO_MODEL_MSGS", 1), env("ORDO_MODEL_MSGS2", 0)];
    cfg.challengers = env("ORDO_MODEL_CHALLENGERS", 0);
    cfg.retries = env("ORDO_MODEL_RETRIES", 1);
    cfg.losses = env("ORDO_MODEL_LOSSES", 1);
    cfg.goal = Goal::Retries;
    check(cfg).assert_properties();
    // The same search without retry timers: the lost message is never made good.
    let checker = check(Config { retries: 0, ..cfg });
    for goal in [LOST_OVER, LOST_RESOLVED] {
        assert!(
            checker.discovery(goal).is_none(),
            "{goal:?} without retries"
        );
    }
}

/// A crash (with cuts) and an election on one path, with retries: sync 0 may crash while
/// leading (or any other node), sync 1 may stand in term 2, entries and ndbs retry.
#[test]
fn model_holds_with_a_crash_and_an_election() {
    let mut cfg = config(0, 1);
    cfg.depth = env("ORDO_MODEL_CRASH_ELECTION_DEPTH", 9);
    cfg.msgs = [env("ORDO_MODEL_MSGS", 1), env("ORDO_MODEL_MSGS2", 0)];
    cfg.retries = env("ORDO_MODEL_RETRIES", 1);
    cfg.max_term = Some(env("ORDO_MODEL_MAX_TERM", 2));
    cfg.goal = Goal::CrashThenElection;
    check(cfg).assert_properties();
}

/// The leader crashes and its successor acks: from entry 1's segment stored on two ndbs (its
/// OVER in flight), sync 0 may crash (or any other node, with cuts), sync 1 may stand in
/// term 2, and the segment must be able to reach an ack through sync 1's log.
#[test]
fn model_holds_when_the_leader_crashes_and_its_successor_acks() {
    let mut cfg = config(0, 1);
    cfg.depth = env("ORDO_MODEL_SUCCESSOR_DEPTH", 11);
    cfg.msgs = [env("ORDO_MODEL_MSGS", 1), env("ORDO_MODEL_MSGS2", 0)];
    cfg.max_term = Some(env("ORDO_MODEL_MAX_TERM", 2));
    cfg.stored = true;
    cfg.goal = Goal::SuccessorAcks;
    check(cfg).assert_properties();
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
