//! Deterministic cluster simulation over a range of seeds.
//!
//! `cargo test --release -p ordo-tests --test sim` runs seeds 0..300.
//! `ORDO_SIM_SEEDS=0..5000` runs another range; a failure prints the command
//! that replays exactly that seed.

use ordo_tests::sim::{run, Mutation, SimConfig};

fn seeds() -> std::ops::Range<u64> {
    let Ok(spec) = std::env::var("ORDO_SIM_SEEDS") else {
        return 0..300;
    };
    let parsed = spec.split_once("..").and_then(|(a, b)| {
        let a = a.trim().parse().ok()?;
        let b = b.trim().parse().ok()?;
        Some(a..b)
    });
    match parsed {
        Some(r) => r,
        None => panic!("ORDO_SIM_SEEDS must look like 0..5000, got {spec:?}"),
    }
}

#[test]
fn invariants_hold_over_the_seed_range() {
    let mut failures = Vec::new();
    let (mut published, mut acked, mut cuts) = (0, 0, 0);
    let (mut abandons, mut returns, mut acked_after_return, mut renumbered) = (0, 0, 0, 0);
    let (mut snapshots, mut installs_sent, mut installs) = (0, 0, 0);
    let (mut snapshot_restarts, mut seeds_installing) = (0, 0);
    let (mut archive_answers, mut archive_gaps, mut behind_lost) = (0, 0, 0);
    let mut stored_reports = 0;
    let range = seeds();
    for seed in range.clone() {
        match run(SimConfig::new(seed)) {
            Ok(stats) => {
                published += stats.published;
                acked += stats.acked;
                cuts += usize::from(stats.power_cut);
                abandons += usize::from(stats.abandoned);
                returns += usize::from(stats.returned);
                acked_after_return += usize::from(stats.acked_after_return > 0);
                renumbered += usize::from(stats.renumbered);
                snapshots += stats.snapshots;
                installs_sent += stats.installs_sent;
                installs += stats.installs;
                snapshot_restarts += stats.snapshot_restarts;
                seeds_installing += usize::from(stats.installs > 0);
                archive_answers += stats.archive_answers;
                archive_gaps += stats.archive_gaps;
                behind_lost += stats.behind_lost;
                stored_reports += stats.stored_reports;
            }
            Err(e) => {
                eprintln!(
                    "seed {seed} failed: {e}\n  replay: ORDO_SIM_SEEDS={seed}..{} cargo test --release -p ordo-tests --test sim -- --nocapture",
                    seed + 1
                );
                failures.push(seed);
            }
        }
    }
    eprintln!(
        "seeds {range:?}: {published} published, {acked} acked, {cuts} power cuts, \
         {abandons} abandons ({returns} returned, {acked_after_return} acked after, \
         {renumbered} renumbered above the floor), {snapshots} sync snapshots durable, \
         {installs_sent} InstallSnapshot sent, {installs} installed (on {seeds_installing} seeds), \
         {snapshot_restarts} sync restarts from a snapshot, {archive_answers} answers from \
         a sync archive, {archive_gaps} installs leaving an archive gap, {behind_lost} ndb \
         applies written behind and lost in a crash, {stored_reports} Stored reports \
         delivered, {} failed",
        failures.len()
    );
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
    assert!(
        acked > 0,
        "nothing was acked: the simulation exercised nothing"
    );
    if range.end - range.start >= 100 {
        assert!(
            acked_after_return > 0 && renumbered > 0,
            "no returning entry got an ack above the floor: the abandon scenario exercised nothing"
        );
        assert!(
            snapshots > 0 && installs > 0 && snapshot_restarts > 0,
            "snapshots, InstallSnapshot or restarts from a snapshot never happened"
        );
        assert!(
            archive_answers > 0 && archive_gaps > 0,
            "no sync shell answered from its archive, or no install left a gap"
        );
        assert!(
            stored_reports > 0,
            "no ndb reported a stored segment to the sync leader"
        );
    }
}

/// Prove the checker can fail: each mutation must be caught on some seed.
fn caught(mutation: Mutation, seeds: std::ops::Range<u64>) -> Option<(u64, String)> {
    seeds.into_iter().find_map(|seed| {
        let mut cfg = SimConfig::new(seed);
        cfg.mutation = mutation;
        run(cfg).err().map(|e| (seed, e))
    })
}

#[test]
fn checker_catches_sync_state_kept_in_memory() {
    let found = caught(Mutation::SyncInMemory, 0..200);
    eprintln!("SyncInMemory: {found:?}");
    assert!(found.is_some(), "in-memory drafts went unnoticed");
}

#[test]
fn checker_catches_ndb_bodies_written_behind() {
    let found = caught(Mutation::NdbTempBehind, 0..200);
    eprintln!("NdbTempBehind: {found:?}");
    assert!(
        found.is_some(),
        "trims of bodies not yet durable went unnoticed"
    );
}

#[test]
fn checker_catches_minority_decisions() {
    let found = caught(Mutation::MinorityCommit, 0..200);
    eprintln!("MinorityCommit: {found:?}");
    assert!(found.is_some(), "deciding on a partial view went unnoticed");
}

#[test]
fn checker_catches_abandon_applied_before_its_place_in_the_id_order() {
    let found = caught(Mutation::AbandonEarly, 0..300);
    eprintln!("AbandonEarly: {found:?}");
    assert!(
        found.is_some(),
        "dropping bodies on an early abandon went unnoticed"
    );
}

#[test]
fn checker_catches_over_on_first_trim() {
    let found = caught(Mutation::FirstTrim, 0..200);
    eprintln!("FirstTrim: {found:?}");
    assert!(found.is_some(), "closing on the first TRIM went unnoticed");
}

#[test]
fn checker_catches_evicting_resolutions_without_archiving_them() {
    let found = caught(Mutation::EvictUnarchived, 0..200);
    eprintln!("EvictUnarchived: {found:?}");
    assert!(
        found.is_some(),
        "resolutions dropped from memory unarchived went unnoticed"
    );
}
