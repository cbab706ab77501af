use super::*;
use std::collections::BTreeMap;

/// Seeded, so a failing seed replays exactly.
use ordo_common::rng::XorShift64Star as Rng;

fn body(s: String) -> Body {
    Bytes::from(s.into_bytes())
}

/// One write the core could emit next given the oracle `disk` (and a few it would not).
fn random_write(rng: &mut Rng, disk: &NdbDisk, serial: &mut u64) -> NdbWrite {
    let owner = 1 + rng.below(3);
    let segment = 1 + rng.below(8);
    let roll = rng.below(100);
    let applicable: Vec<(&(u64, u64), u32)> = disk
        .temp
        .iter()
        .map(|(k, s)| (k, s.held()))
        .filter(|(_, held)| *held > 0)
        .collect();
    if roll < 30 && !applicable.is_empty() {
        // Apply a held segment at the next id; lower segments of its owner are abandoned.
        let (&(owner, segment), held) = applicable[rng.below(applicable.len() as u64) as usize];
        let count = 1 + rng.below(u64::from(held)) as u32;
        return NdbWrite::Apply(Resolution {
            owner,
            segment,
            count,
            base: disk.next,
        });
    }
    if roll < 33 {
        // A resolution for a segment not held here: a no-op.
        if !disk.temp.contains_key(&(owner, segment)) {
            return NdbWrite::Apply(Resolution {
                owner,
                segment,
                count: 1 + rng.below(3) as u32,
                base: disk.next,
            });
        }
    }
    if roll < 38 {
        // An operator floor: the owner's temporary segments below it go.
        return NdbWrite::Abandon(AbandonNotice {
            seq: disk.abandons,
            owner,
            below: segment,
            at: disk.next,
        });
    }
    // Overlapping offsets; a repeated offset carries a different body, which must lose.
    let offset = rng.below(6) as u32;
    let bodies = (0..rng.below(5))
        .map(|k| {
            *serial += 1;
            body(format!("{owner}/{segment}/{}#{serial}", offset + k as u32))
        })
        .collect();
    let count = (rng.below(100) < 50).then(|| 1 + rng.below(8) as u32);
    NdbWrite::Temp {
        owner,
        segment,
        count,
        offset,
        bodies,
    }
}

#[test]
fn random_writes_survive_reopen_in_a_loop() {
    for seed in 1..=8u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut oracle = NdbDisk::default();
        let mut serial = 0;
        let (mut store, disk) = NdbClusterStore::open(dir.path()).expect("open");
        assert_eq!(disk, oracle);
        for reopen in 0..10 {
            for _ in 0..=rng.below(4) {
                let group: Vec<NdbWrite> = (0..rng.below(9))
                    .map(|_| {
                        let w = random_write(&mut rng, &oracle, &mut serial);
                        oracle.apply(&w);
                        w
                    })
                    .collect();
                store.persist(&group).expect("persist");
            }
            drop(store);
            let (again, disk) = NdbClusterStore::open(dir.path()).expect("reopen");
            assert_eq!(disk, oracle, "seed {seed}, reopen {reopen}");
            store = again;
        }
        assert!(
            !oracle.perm.is_empty(),
            "seed {seed} never applied anything"
        );
    }
}

fn temp(owner: u64, segment: u64, count: Option<u32>, offset: u32, bodies: &[&str]) -> NdbWrite {
    NdbWrite::Temp {
        owner,
        segment,
        count,
        offset,
        bodies: bodies.iter().map(|b| body(b.to_string())).collect(),
    }
}

fn res(owner: u64, segment: u64, count: u32, base: u64) -> Resolution {
    Resolution {
        owner,
        segment,
        count,
        base: PermanentId(base),
    }
}

#[test]
fn applied_segment_survives_reopen_and_its_temp_bodies_are_gone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = NdbClusterStore::open(dir.path()).expect("open");
    // Temp and Apply in one call: the Apply reads bodies written just before it.
    store
        .persist(&[
            temp(7, 2, None, 0, &["old"]),
            temp(7, 5, Some(2), 0, &["a", "b"]),
            temp(8, 1, Some(1), 0, &["other"]),
            NdbWrite::Apply(res(7, 5, 2, 1)),
        ])
        .expect("persist");
    drop(store);
    let (_store, disk) = NdbClusterStore::open(dir.path()).expect("reopen");
    assert_eq!(disk.permanent(PermanentId(1)), Some(&body("a".into())));
    assert_eq!(disk.permanent(PermanentId(2)), Some(&body("b".into())));
    assert_eq!(disk.temporary(7, 5, 0), None);
    assert_eq!(disk.temporary(7, 2, 0), None, "lower segment abandoned");
    assert_eq!(disk.temporary(8, 1, 0), Some(&body("other".into())));
    assert_eq!(disk.applied.get(&(7, 5)), Some(&res(7, 5, 2, 1)));
    assert_eq!(disk.last, BTreeMap::from([(7, 5)]));
    assert_eq!(disk.next, PermanentId(3));
}

#[test]
fn first_body_at_an_offset_wins_and_count_is_set_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = NdbClusterStore::open(dir.path()).expect("open");
    let writes = [
        temp(1, 1, None, 1, &["b1", "c1"]),
        temp(1, 1, Some(3), 0, &["a2", "b2"]),
        temp(1, 1, Some(9), 2, &["c3", "d3"]),
        temp(1, 2, None, 0, &[]),
    ];
    store.persist(&writes).expect("persist");
    drop(store);
    let (_store, disk) = NdbClusterStore::open(dir.path()).expect("reopen");
    let mut oracle = NdbDisk::default();
    writes.iter().for_each(|w| oracle.apply(w));
    assert_eq!(disk, oracle);
    assert_eq!(disk.temp[&(1, 1)].count, Some(3));
    assert_eq!(disk.temporary(1, 1, 1), Some(&body("b1".into())));
    assert_eq!(disk.temp[&(1, 2)], TempSegment::default());
}

#[test]
fn reads_cross_segments_from_any_id_and_stop_at_max_or_the_tip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = NdbClusterStore::open(dir.path()).expect("open");
    // Segment (1, 1) arrives in two frames, so its bodies sit in two runs.
    store
        .persist(&[
            temp(1, 1, Some(3), 0, &["a0", "a1"]),
            temp(2, 4, Some(2), 0, &["b0", "b1"]),
            temp(1, 1, None, 1, &["x1", "a2"]),
            NdbWrite::Apply(res(1, 1, 3, 1)),
            NdbWrite::Apply(res(2, 4, 2, 4)),
        ])
        .expect("persist");
    let read = |from: u64, max: usize| -> Vec<String> {
        store
            .read_permanent(PermanentId(from), max)
            .expect("read")
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    };
    assert_eq!(read(1, 10), ["a0", "a1", "a2", "b0", "b1"]);
    assert_eq!(read(2, 3), ["a1", "a2", "b0"]);
    assert_eq!(read(3, 1), ["a2"]);
    assert_eq!(read(5, 10), ["b1"]);
    assert!(read(6, 10).is_empty());
    assert!(read(0, 10).is_empty(), "no id 0");
    // A write to an applied segment changes nothing, as in `NdbDisk::apply`.
    store
        .persist(&[temp(1, 1, Some(3), 0, &["late"])])
        .expect("persist");
    assert_eq!(read(1, 1), ["a0"]);
    drop(store);
    let (_store, disk) = NdbClusterStore::open(dir.path()).expect("reopen");
    assert!(disk.temp.is_empty(), "{:?}", disk.temp);
    assert_eq!(disk.perm.len(), 5);
}

#[test]
fn a_run_decodes_to_its_bodies_and_a_damaged_one_is_refused() {
    let bodies = [body("one".into()), Bytes::new(), body("three".into())];
    let run = encode_run(bodies.iter());
    assert_eq!(decode_run(Bytes::from(run.clone())), Some(bodies.to_vec()));
    for cut in 0..run.len() {
        assert_eq!(
            decode_run(Bytes::copy_from_slice(&run[..cut])),
            None,
            "cut {cut}"
        );
    }
    let mut longer = run;
    longer.push(0);
    assert_eq!(decode_run(Bytes::from(longer)), None);
}

#[test]
fn a_folder_of_the_old_layout_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let _old = DB::open_cf(&opts, dir.path(), ["temp_body", "perm"]).expect("old layout");
    }
    let err = NdbClusterStore::open(dir.path())
        .map(|_| ())
        .expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("earlier ndb layout"), "{text}");
}

#[test]
fn a_failed_write_poisons_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = NdbClusterStore::open(dir.path()).expect("open");
    store
        .db
        .put_cf(store.cf(CF_TEMP_SEG), seg_key(1, 1), b"\x09junk")
        .expect("raw put");
    let err = store.persist(&[temp(1, 1, Some(1), 0, &["a"])]);
    assert!(matches!(err, Err(StoreError::Corrupt { .. })), "{err:?}");
    assert!(store.is_poisoned());
    let err = store.persist(&[temp(2, 1, Some(1), 0, &["a"])]);
    assert!(matches!(err, Err(StoreError::Poisoned)), "{err:?}");
    drop(store);
    let err = NdbClusterStore::open(dir.path()).map(|_| ());
    assert!(matches!(err, Err(StoreError::Corrupt { .. })), "{err:?}");
}

#[test]
fn a_cached_open_loads_only_the_newest_records_and_reads_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (store, _) = NdbClusterStore::open(dir.path()).expect("open");
        let bodies: Vec<Body> = (0..10u8).map(|i| Bytes::from(vec![i])).collect();
        store
            .persist(&[
                NdbWrite::Temp {
                    owner: 1,
                    segment: 1,
                    count: Some(10),
                    offset: 0,
                    bodies,
                },
                NdbWrite::Apply(Resolution {
                    owner: 1,
                    segment: 1,
                    count: 10,
                    base: PermanentId(1),
                }),
            ])
            .expect("persist");
    }
    let (store, disk) = NdbClusterStore::open_with_cache(dir.path(), 3).expect("open");
    assert_eq!(disk.next, PermanentId(11));
    assert_eq!(
        disk.perm.keys().map(|id| id.0).collect::<Vec<_>>(),
        vec![8, 9, 10]
    );
    let old = store.read_permanent(PermanentId(2), 4).expect("read");
    assert_eq!(
        old,
        (1..5u8).map(|i| Bytes::from(vec![i])).collect::<Vec<_>>()
    );
    assert_eq!(
        store
            .read_permanent(PermanentId(10), 5)
            .expect("read")
            .len(),
        1
    );
    assert!(store
        .read_permanent(PermanentId(11), 5)
        .expect("read")
        .is_empty());
}
