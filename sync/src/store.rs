//! The RocksDB shell of a sync node's disk state: makes [`SyncWrite`]s durable
//! and rebuilds [`SyncDisk`] on open.
//!
//! Key layout (integers big-endian, so key order is index order):
//!
//! | column family | key | value |
//! | --- | --- | --- |
//! | `hard` | `b"hard"` | version byte + rmp `{term, voted_for}` |
//! | `snapshot` | `b"snapshot"` | version byte + rmp [`SyncSnapshot`] |
//! | `log` | `index u64` (from 1) | version byte + rmp [`LogEntry`] |
//! | `archive` | `base u64` | version byte + rmp [`Resolution`] |
//! | `archive_segment` | `owner u64, segment u64` | `base u64` |
//! | `hard` | `b"archive_gap"` | version byte + rmp `Option<(from, to)>` |
//!
//! A `SyncWrite::Log {from, entries}` lands where [`SyncDisk::apply`] puts it
//! ([`log_write_position`]): at `min(max(from, 1, snap + 1), last + 1)`, after a
//! range delete of every index from there on when that is not the end; entries
//! at or below the snapshot are skipped. A `SyncWrite::Snapshot` puts the
//! snapshot and range-deletes every log index it covers in the same batch, so
//! the covered entries are never gone before the snapshot is on disk. The store
//! keeps the snapshot's index and the last index in memory for this. On open the
//! log keys must be exactly `snap + 1 ..= last`.
//!
//! [`SyncStore::persist`] turns each write into one `WriteBatch` written
//! without sync, in order, then one `flush_wal(true)` fsyncs the WAL, which
//! covers every one of them. After a crash RocksDB recovers a prefix of the
//! writes, each whole or absent. Any failure poisons the store.
//!
//! [`SyncStore::open`] loads the snapshot and the log after it (at most about
//! `snapshot_threshold` entries plus what was not yet committed) and the archive's
//! gap, not the archive: the snapshot holds the machine's window of recent
//! resolutions (`resolution_window`), and the shell reads older ones from the
//! archive ([`ArchiveRead`]) when asked. A `SyncWrite::Archive` puts each
//! resolution under both keys and the gap in one batch.

use crate::log::{log_write_position, ArchiveRead, SyncDisk, SyncWrite};
use ordo_common::proto::{LogEntry, Resolution, SyncSnapshot};
use ordo_common::PermanentId;
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, IteratorMode, WriteBatch, WriteOptions, DB};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

const CF_HARD: &str = "hard";
const CF_LOG: &str = "log";
const CF_SNAPSHOT: &str = "snapshot";
const CF_ARCHIVE: &str = "archive";
const CF_ARCHIVE_SEGMENT: &str = "archive_segment";
const HARD_KEY: &[u8] = b"hard";
const GAP_KEY: &[u8] = b"archive_gap";
const SNAPSHOT_KEY: &[u8] = b"snapshot";
/// A snapshot larger than this is logged as a warning: it must cross the mesh in one
/// frame (512 MiB limit) when a follower needs it.
const SNAPSHOT_WARN_BYTES: usize = 256 << 20;

/// Why a sync store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncStoreError {
    /// RocksDB reported an error (I/O, full disk, corruption).
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// A stored record could not be decoded, or the log has a gap.
    #[error("corrupt record at {key}: {reason}")]
    Corrupt {
        /// Which record.
        key: String,
        /// What was wrong.
        reason: String,
    },
    /// An earlier write failed; the store refuses writes so nothing is answered past a lost write.
    #[error("store is poisoned by an earlier failed write; restart after fixing the disk")]
    Poisoned,
}

#[derive(Serialize, Deserialize)]
struct Hard {
    term: u64,
    voted_for: Option<u32>,
}

/// Durable store of one sync node; cheap to clone (clones share the database).
#[derive(Clone)]
pub struct SyncStore {
    db: Arc<DB>,
    poisoned: Arc<AtomicBool>,
    /// Where the durable (or being written) log lies; held across a whole `persist`.
    bounds: Arc<Mutex<Bounds>>,
}

/// The log holds indices `snap + 1 ..= last`.
#[derive(Clone, Copy, Debug, Default)]
struct Bounds {
    snap: u64,
    last: u64,
}

impl std::fmt::Debug for SyncStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncStore")
            .field("path", &self.db.path())
            .field("poisoned", &self.is_poisoned())
            .finish()
    }
}

impl SyncStore {
    /// Open (creating if needed) the database in `dir` and return it with the disk it holds.
    pub fn open(dir: &Path) -> Result<(Self, SyncDisk), SyncStoreError> {
        let opts = ordo_common::rocks::paced_db_options();
        let cfs = [CF_HARD, CF_LOG, CF_SNAPSHOT, CF_ARCHIVE, CF_ARCHIVE_SEGMENT]
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, ordo_common::rocks::cf_options()));
        let db = DB::open_cf_descriptors(&opts, dir, cfs)?;
        let mut store = SyncStore {
            db: Arc::new(db),
            poisoned: Arc::new(AtomicBool::new(false)),
            bounds: Arc::new(Mutex::new(Bounds::default())),
        };
        let disk = store.load()?;
        store.bounds = Arc::new(Mutex::new(Bounds {
            snap: disk.snapshot_index(),
            last: disk.last_index(),
        }));
        Ok((store, disk))
    }

    /// Make `writes` durable in order; return after one WAL fsync covering all of them.
    ///
    /// After any failure the store is poisoned and refuses every later call.
    pub fn persist(&self, writes: &[SyncWrite]) -> Result<(), SyncStoreError> {
        self.commit(writes, true)
    }

    /// Write `writes` in order; with `sync`, return after one WAL fsync covering them and
    /// every earlier write. Without it they reach the WAL (and survive a process kill) but
    /// a power cut may lose them, with every later write: a prefix is what survives.
    pub fn commit(&self, writes: &[SyncWrite], sync: bool) -> Result<(), SyncStoreError> {
        let mut bounds = self.bounds.lock().unwrap_or_else(PoisonError::into_inner);
        if self.is_poisoned() {
            return Err(SyncStoreError::Poisoned);
        }
        let result = self.persist_all(writes, &mut bounds, sync);
        if let Err(e) = &result {
            tracing::error!(error = %e, "sync store write failed; store poisoned");
            self.poisoned.store(true, Ordering::Release);
        }
        result
    }

    /// Tell whether an earlier write failed.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    fn persist_all(
        &self,
        writes: &[SyncWrite],
        b: &mut Bounds,
        sync: bool,
    ) -> Result<(), SyncStoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let wo = WriteOptions::default();
        for w in writes {
            let mut batch = WriteBatch::default();
            let new = match w {
                SyncWrite::Hard { term, voted_for } => {
                    let hard = Hard {
                        term: *term,
                        voted_for: *voted_for,
                    };
                    batch.put_cf(self.cf(CF_HARD), HARD_KEY, encode_value(&hard));
                    *b
                }
                SyncWrite::Log { from, entries } => {
                    // Where `SyncDisk::apply` puts them: truncate at `at`, then append.
                    let (at, skip) = log_write_position(*from, b.snap, b.last);
                    if at <= b.last {
                        batch.delete_range_cf(
                            self.cf(CF_LOG),
                            at.to_be_bytes().to_vec(),
                            past_end(),
                        );
                    }
                    let kept = entries.get(skip..).unwrap_or_default();
                    for (k, e) in kept.iter().enumerate() {
                        let index = at + k as u64;
                        batch.put_cf(self.cf(CF_LOG), index.to_be_bytes(), encode_value(e));
                    }
                    Bounds {
                        snap: b.snap,
                        last: at - 1 + kept.len() as u64,
                    }
                }
                SyncWrite::Archive { resolutions, gap } => {
                    for r in resolutions {
                        batch.put_cf(self.cf(CF_ARCHIVE), r.base.0.to_be_bytes(), encode_value(r));
                        batch.put_cf(
                            self.cf(CF_ARCHIVE_SEGMENT),
                            segment_key(r.owner, r.segment),
                            r.base.0.to_be_bytes(),
                        );
                    }
                    batch.put_cf(self.cf(CF_HARD), GAP_KEY, encode_value(gap));
                    *b
                }
                SyncWrite::Snapshot(s) if s.last_index <= b.snap => *b,
                SyncWrite::Snapshot(s) => {
                    let value = encode_value(s);
                    tracing::info!(
                        index = s.last_index,
                        bytes = value.len(),
                        "snapshot written"
                    );
                    if value.len() > SNAPSHOT_WARN_BYTES {
                        tracing::warn!(
                            bytes = value.len(),
                            "snapshot is over half the 512 MiB frame limit"
                        );
                    }
                    batch.put_cf(self.cf(CF_SNAPSHOT), SNAPSHOT_KEY, value);
                    // Every index up to `last_index`, in the same atomic batch.
                    let end = match s.last_index.checked_add(1) {
                        Some(e) => e.to_be_bytes().to_vec(),
                        None => past_end(),
                    };
                    batch.delete_range_cf(self.cf(CF_LOG), 0u64.to_be_bytes().to_vec(), end);
                    Bounds {
                        snap: s.last_index,
                        last: b.last.max(s.last_index),
                    }
                }
            };
            self.db.write_opt(batch, &wo)?;
            *b = new;
        }
        if sync {
            self.db.flush_wal(true)?;
        }
        Ok(())
    }

    fn cf(&self, name: &str) -> &ColumnFamily {
        // The families are created in `open`, so the handle always exists.
        #[allow(clippy::expect_used)]
        self.db
            .cf_handle(name)
            .expect("column family created at open")
    }

    /// Read the whole disk back.
    fn load(&self) -> Result<SyncDisk, SyncStoreError> {
        let mut disk = SyncDisk::default();
        if let Some(v) = self.db.get_cf(self.cf(CF_HARD), HARD_KEY)? {
            let hard: Hard = decode_value(&v, HARD_KEY)?;
            disk.term = hard.term;
            disk.voted_for = hard.voted_for;
        }
        if let Some(v) = self.db.get_cf(self.cf(CF_HARD), GAP_KEY)? {
            disk.archive_gap = decode_value(&v, GAP_KEY)?;
        }
        if let Some(v) = self.db.get_cf(self.cf(CF_SNAPSHOT), SNAPSHOT_KEY)? {
            disk.snapshot = Some(Box::new(decode_value::<SyncSnapshot>(&v, SNAPSHOT_KEY)?));
        }
        for item in self.db.iterator_cf(self.cf(CF_LOG), IteratorMode::Start) {
            let (key, value) = item?;
            let bytes: [u8; 8] = key
                .as_ref()
                .try_into()
                .map_err(|_| corrupt(&key, "key is not 8 bytes"))?;
            let index = u64::from_be_bytes(bytes);
            let expected = disk.last_index() + 1;
            if index != expected {
                return Err(corrupt(
                    &key,
                    format!("log index {index}, expected {expected}"),
                ));
            }
            disk.log.push(decode_value::<LogEntry>(&value, &key)?);
        }
        Ok(disk)
    }
}

impl ArchiveRead for SyncStore {
    type Error = SyncStoreError;

    fn archived(&self, owner: u64, segment: u64) -> Result<Option<Resolution>, SyncStoreError> {
        let key = segment_key(owner, segment);
        let Some(base) = self.db.get_cf(self.cf(CF_ARCHIVE_SEGMENT), key)? else {
            return Ok(None);
        };
        let base: [u8; 8] = base
            .as_slice()
            .try_into()
            .map_err(|_| corrupt(&key, "base is not 8 bytes"))?;
        let Some(v) = self.db.get_cf(self.cf(CF_ARCHIVE), base)? else {
            return Err(corrupt(&key, "segment names a base the archive lacks"));
        };
        let r: Resolution = decode_value(&v, &base)?;
        Ok(Some(r).filter(|r| (r.owner, r.segment) == (owner, segment)))
    }

    fn archived_from(
        &self,
        from: PermanentId,
        max: usize,
    ) -> Result<Vec<Resolution>, SyncStoreError> {
        let cf = self.cf(CF_ARCHIVE);
        // The resolution holding `from` starts at or below it: the last key <= from.
        let mut it = self.db.raw_iterator_cf(cf);
        it.seek_for_prev(from.0.to_be_bytes());
        let mut out: Vec<Resolution> = Vec::new();
        while it.valid() && out.len() < max.max(1) {
            let (Some(key), Some(value)) = (it.key(), it.value()) else {
                break;
            };
            let r: Resolution = decode_value(value, key)?;
            let continues = match out.last() {
                None => r.end() > from,
                Some(l) => l.end() == r.base,
            };
            if !continues {
                break;
            }
            out.push(r);
            it.next();
        }
        it.status()?;
        Ok(out)
    }
}

fn segment_key(owner: u64, segment: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&owner.to_be_bytes());
    key[8..].copy_from_slice(&segment.to_be_bytes());
    key
}

/// A key after every log index.
fn past_end() -> Vec<u8> {
    let mut end = u64::MAX.to_be_bytes().to_vec();
    end.push(0);
    end
}

fn corrupt(key: &[u8], reason: impl Into<String>) -> SyncStoreError {
    SyncStoreError::Corrupt {
        key: format!("{key:02x?}"),
        reason: reason.into(),
    }
}

fn encode_value<T: Serialize>(value: &T) -> Vec<u8> {
    ordo_common::record::encode(value)
}

fn decode_value<T: DeserializeOwned>(value: &[u8], key: &[u8]) -> Result<T, SyncStoreError> {
    ordo_common::record::decode(value).map_err(|e| corrupt(key, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordo_common::proto::Elect;

    /// Seeded, so a failing seed replays exactly.
    use ordo_common::rng::XorShift64Star as Rng;

    fn entry(term: u64, segment: u64) -> LogEntry {
        LogEntry {
            term,
            elects: vec![Elect {
                owner: 1,
                segment,
                count: 3,
                prev: segment.checked_sub(1),
            }],
            abandons: if segment.is_multiple_of(4) {
                vec![ordo_common::proto::Abandon {
                    owner: 2,
                    below: segment,
                }]
            } else {
                vec![]
            },
        }
    }

    fn snapshot(last_index: u64, serial: u64) -> SyncSnapshot {
        SyncSnapshot {
            last_index,
            last_term: serial % 5,
            next: ordo_common::PermanentId(serial),
            last: [(1, serial)].into(),
            resolutions: vec![ordo_common::proto::Resolution {
                owner: 1,
                segment: serial,
                count: 3,
                base: ordo_common::PermanentId(serial),
            }],
            ..SyncSnapshot::default()
        }
    }

    /// A Hard, Log or Snapshot write; Log starts anywhere from 0 to past the end (truncating,
    /// appending, or partly under the snapshot); a snapshot anywhere from stale to past the end.
    fn random_write(rng: &mut Rng, disk: &SyncDisk, serial: &mut u64) -> SyncWrite {
        if rng.below(4) == 0 {
            return SyncWrite::Hard {
                term: disk.term + rng.below(3),
                voted_for: (rng.below(3) > 0).then(|| rng.below(5) as u32),
            };
        }
        let (snap, last) = (disk.snapshot_index(), disk.last_index());
        if rng.below(6) == 0 {
            *serial += 1;
            let at = (snap + rng.below(last - snap + 3)).saturating_sub(1);
            return SyncWrite::Snapshot(snapshot(at, *serial));
        }
        let from = match rng.below(11) {
            0 => 0,
            1 => last + 2 + rng.below(3),
            2..=4 => 1 + snap + rng.below(last - snap + 1),
            5 => snap.saturating_sub(rng.below(3)),
            _ => last + 1,
        };
        let entries = (0..rng.below(5))
            .map(|_| {
                *serial += 1;
                entry(disk.term, *serial)
            })
            .collect();
        SyncWrite::Log { from, entries }
    }

    #[test]
    fn random_writes_survive_reopen_in_a_loop() {
        for seed in 1..=8u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let dir = tempfile::tempdir().expect("tempdir");
            let mut oracle = SyncDisk::default();
            let mut serial = 0;
            let (mut store, disk) = SyncStore::open(dir.path()).expect("open");
            assert_eq!(disk, oracle);
            let mut truncated = 0;
            for reopen in 0..10 {
                for _ in 0..=rng.below(4) {
                    let group: Vec<SyncWrite> = (0..rng.below(9))
                        .map(|_| {
                            let w = random_write(&mut rng, &oracle, &mut serial);
                            if matches!(w, SyncWrite::Log { from, .. } if from <= oracle.last_index())
                            {
                                truncated += 1;
                            }
                            oracle.apply(&w);
                            w
                        })
                        .collect();
                    store.persist(&group).expect("persist");
                }
                drop(store);
                let (again, disk) = SyncStore::open(dir.path()).expect("reopen");
                assert_eq!(disk, oracle, "seed {seed}, reopen {reopen}");
                store = again;
            }
            assert!(truncated > 0, "seed {seed} never truncated");
            assert!(oracle.snapshot_index() > 0, "seed {seed} never snapshotted");
        }
    }

    #[test]
    fn a_snapshot_and_its_log_prefix_delete_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = SyncStore::open(dir.path()).expect("open");
        let log: Vec<LogEntry> = (1..=6).map(|s| entry(1, s)).collect();
        store
            .persist(&[
                SyncWrite::Log {
                    from: 1,
                    entries: log.clone(),
                },
                SyncWrite::Snapshot(snapshot(4, 9)),
            ])
            .expect("persist");
        drop(store);
        let (store, disk) = SyncStore::open(dir.path()).expect("reopen");
        assert_eq!(disk.snapshot.as_deref(), Some(&snapshot(4, 9)));
        assert_eq!(disk.log, log[4..], "indices 1..=4 are gone, 5 and 6 stay");
        let keys = store
            .db
            .iterator_cf(store.cf(CF_LOG), IteratorMode::Start)
            .count();
        assert_eq!(
            keys, 2,
            "the covered entries are deleted on disk, not only skipped"
        );
        // Appending after it, a stale snapshot, and one past the log's end.
        store
            .persist(&[
                SyncWrite::Log {
                    from: 7,
                    entries: vec![entry(2, 7)],
                },
                SyncWrite::Snapshot(snapshot(3, 10)),
            ])
            .expect("persist");
        drop(store);
        let (store, disk) = SyncStore::open(dir.path()).expect("reopen");
        assert_eq!((disk.snapshot_index(), disk.last_index()), (4, 7));
        store
            .persist(&[SyncWrite::Snapshot(snapshot(9, 11))])
            .expect("persist");
        drop(store);
        let (_store, disk) = SyncStore::open(dir.path()).expect("reopen");
        assert_eq!(disk.snapshot.as_deref(), Some(&snapshot(9, 11)));
        assert!(disk.log.is_empty());
    }

    #[test]
    fn truncation_in_one_call_then_append() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = SyncStore::open(dir.path()).expect("open");
        let writes = [
            SyncWrite::Hard {
                term: 2,
                voted_for: Some(1),
            },
            SyncWrite::Log {
                from: 1,
                entries: vec![entry(1, 1), entry(1, 2), entry(1, 3)],
            },
            SyncWrite::Log {
                from: 2,
                entries: vec![entry(2, 9)],
            },
            SyncWrite::Log {
                from: 3,
                entries: vec![entry(2, 10)],
            },
        ];
        store.persist(&writes).expect("persist");
        drop(store);
        let (_store, disk) = SyncStore::open(dir.path()).expect("reopen");
        assert_eq!(disk.term, 2);
        assert_eq!(disk.voted_for, Some(1));
        assert_eq!(disk.log, vec![entry(1, 1), entry(2, 9), entry(2, 10)]);
    }

    #[test]
    fn a_failed_write_poisons_the_store_and_a_gap_is_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = SyncStore::open(dir.path()).expect("open");
        store.poisoned.store(true, Ordering::Release);
        let err = store.persist(&[SyncWrite::Hard {
            term: 1,
            voted_for: None,
        }]);
        assert!(matches!(err, Err(SyncStoreError::Poisoned)), "{err:?}");
        store
            .db
            .put_cf(
                store.cf(CF_LOG),
                2u64.to_be_bytes(),
                encode_value(&entry(1, 1)),
            )
            .expect("raw put");
        drop(store);
        let err = SyncStore::open(dir.path()).map(|_| ());
        assert!(
            matches!(err, Err(SyncStoreError::Corrupt { .. })),
            "{err:?}"
        );
    }

    fn res(owner: u64, segment: u64, base: u64) -> Resolution {
        Resolution {
            owner,
            segment,
            count: 2,
            base: PermanentId(base),
        }
    }

    #[test]
    fn the_archive_and_its_gap_survive_reopen_and_are_read_not_loaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = SyncStore::open(dir.path()).expect("open");
        // Ids 1..7 archived, 7..11 in a gap an install left, 11..13 archived after it.
        let (a, b, c, d) = (res(1, 1, 1), res(2, 4, 3), res(1, 2, 5), res(1, 9, 11));
        let gap = Some((PermanentId(7), PermanentId(11)));
        store
            .persist(&[
                SyncWrite::Archive {
                    resolutions: vec![a, b],
                    gap: None,
                },
                SyncWrite::Archive {
                    resolutions: vec![c, d],
                    gap,
                },
            ])
            .expect("persist");
        drop(store);
        let (store, disk) = SyncStore::open(dir.path()).expect("reopen");
        assert_eq!(disk.archive_gap, gap);
        assert!(disk.archive.is_empty(), "the archive stays on disk");
        assert_eq!(store.archived(2, 4).expect("read"), Some(b));
        assert_eq!(store.archived(1, 9).expect("read"), Some(d));
        assert_eq!(store.archived(1, 3).expect("read"), None);
        let from = |id, max| store.archived_from(PermanentId(id), max).expect("read");
        assert_eq!(from(1, 10), vec![a, b, c], "stops at the gap");
        assert_eq!(from(4, 10), vec![b, c], "from inside a range");
        assert_eq!(from(1, 2), vec![a, b]);
        assert!(from(7, 10).is_empty(), "inside the gap");
        assert_eq!(from(12, 10), vec![d]);
        assert!(from(13, 10).is_empty(), "past the end");
        // Filling the gap (a peer's answer) closes it; the reads run through.
        store
            .persist(&[SyncWrite::Archive {
                resolutions: vec![res(2, 5, 7), res(2, 6, 9)],
                gap: None,
            }])
            .expect("persist");
        drop(store);
        let (store, disk) = SyncStore::open(dir.path()).expect("reopen");
        assert_eq!(disk.archive_gap, None);
        let all = store.archived_from(PermanentId(1), 100).expect("read");
        assert_eq!(all.len(), 6);
        assert_eq!(all.last(), Some(&d));
    }
}
