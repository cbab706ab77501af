//! Mutations the checker must catch: each breaks one rule of the protocol (or of a shell)
//! and must break the property that rule protects, found depth-first.

use super::*;

/// Run a mutation depth-first until `target` fails; tell whether it did.
fn caught(mutation: Mutation, target: &'static str, depth: usize, crashes: u8) -> bool {
    caught_in(mutation_config(mutation, target, depth, crashes, 0))
}

/// Run a mutation's configuration until its target fails; tell whether it did.
fn caught_in(cfg: Config) -> bool {
    let checker = check(cfg);
    let steps = checker
        .discovery(cfg.target)
        .map(|p| p.into_actions().len());
    eprintln!(
        "{:?} breaks {:?} after {steps:?} steps",
        cfg.mutation, cfg.target
    );
    steps.is_some()
}

/// The configuration a mutation is hunted in (depth-first), with a budget of retry timers.
fn mutation_config(
    mutation: Mutation,
    target: &'static str,
    depth: usize,
    crashes: u8,
    retries: u8,
) -> Config {
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
        cuts: env("ORDO_MODEL_CUTS", 1u8) == 1,
        leaderless: false,
        goal: Goal::Usual,
        max_term: None,
        retries,
        losses: 0,
        stored: false,
    };
    if matches!(
        mutation,
        Mutation::FirstTrim | Mutation::Skip(Skip::NdbTemp | Skip::SyncLog)
    ) {
        // These need no election: without a challenger the search reaches an ack at once.
        cfg.challengers = 0;
    }
    if mutation == Mutation::Unchained {
        cfg.msgs = [2, 0];
        cfg.challengers = 0;
    }
    if mutation == Mutation::RetryUnchained {
        // Segments 1 and 2 of entry 1, chained; the retry of 2's OVER drops the chain.
        cfg.msgs = [2, 0];
        cfg.challengers = 0;
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
    cfg
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

/// A shell that sends before the write a message depends on is durable: a crash in
/// the window loses the write after the message went out (sync: `DraftAck ok` without
/// the log entries; ndb: `Trim` without the bodies).
#[test]
fn checker_catches_sends_before_their_write_is_durable() {
    assert!(caught(Mutation::SendsFirst, ELECTED, 10, 1));
    assert!(caught(Mutation::SendsFirst, DURABLE, 12, 1));
}

/// A retried OVER without its chain breaks FIFO (the leader elects segment 2 before 1), and
/// only a retry sends one: with no retry timers the same search finds nothing.
#[test]
fn checker_catches_an_unchained_retry_only_with_retries() {
    let with = mutation_config(Mutation::RetryUnchained, FIFO, 12, 0, 1);
    assert!(caught_in(with));
    // Breadth-first, so that every state within the bound is checked.
    let without = Config {
        retries: 0,
        dfs: false,
        ..with
    };
    assert!(!caught_in(without));
}
