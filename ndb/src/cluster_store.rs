//! The RocksDB shell of a cluster ndb's disk state: makes [`NdbWrite`]s durable
//! and rebuilds [`NdbDisk`] on open.
//!
//! Key layout (all integers big-endian, so key order is numeric order):
//!
//! | column family | key | value |
//! | --- | --- | --- |
//! | `temp_seg` | `owner u64, segment u64` | version byte + rmp `Option<u32>` (the count) |
//! | `temp_body` | `owner u64, segment u64, offset u32` | the body's raw bytes |
//! | `perm` | `id u64` | the body's raw bytes |
//! | `applied` | `owner u64, segment u64` | version byte + rmp [`Resolution`] |
//! | `abandoned` | `seq u64` | version byte + rmp [`AbandonNotice`] |
//!
//! Every temporary segment has a `temp_seg` row, even one without count or
//! bodies, so an `Apply` can tell "not held" from "held and empty" as
//! [`NdbDisk::apply`] does. `last` and `next` are not stored: on open they are
//! derived from the applied resolution with the highest `base` (overall, and per
//! owner). That equals "the most recent Apply" because the core applies strictly
//! in id order (`base == next`, `count > 0`). `floor` and `abandons` are derived
//! from the applied abandon notices.
//!
//! [`NdbClusterStore::persist`] turns each write into one `WriteBatch` written
//! without sync, in order, so a later write in the same call reads what earlier
//! ones wrote; then one `flush_wal(true)` fsyncs the WAL, which covers every one
//! of them. After a crash RocksDB recovers a prefix of the writes, each whole or
//! absent. Any failure poisons the store.
//!
//! [`NdbClusterStore::open`] loads the whole disk; a running node uses
//! [`NdbClusterStore::open_with_cache`], which loads the temporary history, the
//! applied resolutions and only the newest permanent records, and answers older
//! reads with [`NdbClusterStore::read_permanent`].

use crate::cluster::{NdbDisk, NdbWrite, TempSegment};
use crate::store::StoreError;
use bytes::Bytes;
use ordo_common::proto::{AbandonNotice, Body, Resolution};
use ordo_common::PermanentId;
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, IteratorMode, ReadOptions, WriteBatch, WriteOptions, DB,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

const CF_TEMP_SEG: &str = "temp_seg";
const CF_TEMP_BODY: &str = "temp_body";
const CF_PERM: &str = "perm";
const CF_APPLIED: &str = "applied";
const CF_ABANDONED: &str = "abandoned";

/// Durable store of one cluster ndb; cheap to clone (clones share the database).
#[derive(Clone)]
pub struct NdbClusterStore {
    db: Arc<DB>,
    poisoned: Arc<AtomicBool>,
    /// Serialises `persist` calls (a write reads what earlier writes left), and holds each
    /// owner's lowest segment that may still have temporary rows.
    writing: Arc<Mutex<Floors>>,
}

/// Per owner, a segment below which no temporary rows exist: applying a segment deletes every
/// lower one (the floor moves above it), and a temporary write below the floor lowers it. An
/// apply starts its scan there instead of at segment 0; without it each apply walks every
/// delete tombstone the owner's earlier segments left in the memtable.
type Floors = std::collections::HashMap<u64, u64>;

impl std::fmt::Debug for NdbClusterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NdbClusterStore")
            .field("path", &self.db.path())
            .field("poisoned", &self.is_poisoned())
            .finish()
    }
}

impl NdbClusterStore {
    /// Open (creating if needed) the database in `dir` and return it with the disk it holds.
    pub fn open(dir: &Path) -> Result<(Self, NdbDisk), StoreError> {
        Self::open_with_cache(dir, usize::MAX)
    }

    /// Open like [`NdbClusterStore::open`], loading only the newest `keep` permanent records
    /// (the rest stay on disk: [`NdbClusterStore::read_permanent`]).
    pub fn open_with_cache(dir: &Path, keep: usize) -> Result<(Self, NdbDisk), StoreError> {
        let opts = ordo_common::rocks::paced_db_options();
        let cfs = [CF_TEMP_SEG, CF_TEMP_BODY, CF_PERM, CF_APPLIED, CF_ABANDONED]
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, ordo_common::rocks::cf_options()));
        let db = DB::open_cf_descriptors(&opts, dir, cfs)?;
        let store = NdbClusterStore {
            db: Arc::new(db),
            poisoned: Arc::new(AtomicBool::new(false)),
            writing: Arc::new(Mutex::new(Floors::new())),
        };
        let disk = store.load(keep)?;
        Ok((store, disk))
    }

    /// Read up to `max` permanent records with consecutive ids from `from`.
    pub fn read_permanent(&self, from: PermanentId, max: usize) -> Result<Vec<Body>, StoreError> {
        let mut out = Vec::new();
        let start = from.0.to_be_bytes();
        let iter = self.db.iterator_cf(
            self.cf(CF_PERM),
            IteratorMode::From(&start, rocksdb::Direction::Forward),
        );
        for item in iter {
            if out.len() >= max {
                break;
            }
            let (key, value) = item?;
            if decode_u64(&key)? != from.0 + out.len() as u64 {
                break;
            }
            out.push(Bytes::from(value.into_vec()));
        }
        Ok(out)
    }

    /// Make `writes` durable in order; return after one WAL fsync covering all of them.
    ///
    /// After any failure the store is poisoned and refuses every later call.
    pub fn persist(&self, writes: &[NdbWrite]) -> Result<(), StoreError> {
        self.commit(writes, true)
    }

    /// Write `writes` in order; with `sync`, return after one WAL fsync covering them and
    /// every earlier write. Without it they reach the WAL (and survive a process kill) but
    /// a power cut may lose them, with every later write: a prefix is what survives.
    pub fn commit(&self, writes: &[NdbWrite], sync: bool) -> Result<(), StoreError> {
        let mut floors = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        if self.is_poisoned() {
            return Err(StoreError::Poisoned);
        }
        let result = self.persist_all(writes, &mut floors, sync);
        if let Err(e) = &result {
            tracing::error!(error = %e, "ndb store write failed; store poisoned");
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
        writes: &[NdbWrite],
        floors: &mut Floors,
        sync: bool,
    ) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let wo = WriteOptions::default();
        for w in writes {
            let batch = match w {
                NdbWrite::Temp {
                    owner,
                    segment,
                    count,
                    offset,
                    bodies,
                } => self.temp_batch(*owner, *segment, *count, *offset, bodies)?,
                NdbWrite::Apply(r) => {
                    let floor = floors.get(&r.owner).copied().unwrap_or(0);
                    self.apply_batch(r, floor)?
                }
                NdbWrite::Abandon(n) => {
                    let floor = floors.get(&n.owner).copied().unwrap_or(0);
                    self.abandon_batch(n, floor)?
                }
            };
            if batch.is_empty() {
                continue;
            }
            self.db.write_opt(batch, &wo)?;
            match w {
                NdbWrite::Apply(r) => {
                    floors.insert(r.owner, r.segment.saturating_add(1));
                }
                NdbWrite::Abandon(n) => {
                    let f = floors.entry(n.owner).or_insert(0);
                    *f = (*f).max(n.below);
                }
                NdbWrite::Temp { owner, segment, .. } => {
                    // The core never does this, but the floor must stay a true lower bound.
                    if let Some(f) = floors.get_mut(owner) {
                        *f = (*f).min(*segment);
                    }
                }
            }
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

    /// Keep the count if none is known yet, and the bodies of offsets not held yet.
    fn temp_batch(
        &self,
        owner: u64,
        segment: u64,
        count: Option<u32>,
        offset: u32,
        bodies: &[Body],
    ) -> Result<WriteBatch, StoreError> {
        let mut batch = WriteBatch::default();
        let seg = seg_key(owner, segment);
        let known = match self.db.get_cf(self.cf(CF_TEMP_SEG), seg)? {
            Some(v) => Some(decode_value::<Option<u32>>(&v, &seg)?),
            None => None,
        };
        if known.is_none() || known.is_some_and(|c| c.is_none() && count.is_some()) {
            batch.put_cf(self.cf(CF_TEMP_SEG), seg, encode_value(&count));
        }
        // A segment's bodies are written and dropped in the same batch as its row, so a segment
        // without a row holds none: the common first Begin needs no scan.
        let held = match known {
            Some(_) => self.held_offsets(owner, segment, offset, bodies.len())?,
            None => BTreeSet::new(),
        };
        let mut put = BTreeSet::new();
        for (k, body) in bodies.iter().enumerate() {
            // Same arithmetic as `NdbDisk::apply`.
            let o = offset.wrapping_add(k as u32);
            if !held.contains(&o) && put.insert(o) {
                batch.put_cf(self.cf(CF_TEMP_BODY), body_key(owner, segment, o), body);
            }
        }
        Ok(batch)
    }

    /// Return which offsets the write `offset..offset+n` would touch are already held.
    fn held_offsets(
        &self,
        owner: u64,
        segment: u64,
        offset: u32,
        n: usize,
    ) -> Result<BTreeSet<u32>, StoreError> {
        let mut ro = ReadOptions::default();
        let end = u64::from(offset) + n as u64;
        match u32::try_from(end) {
            Ok(end) => {
                ro.set_iterate_lower_bound(body_key(owner, segment, offset).to_vec());
                ro.set_iterate_upper_bound(body_key(owner, segment, end).to_vec());
            }
            // The offsets wrap (or reach the last one): look at the whole segment.
            Err(_) => {
                ro.set_iterate_lower_bound(body_key(owner, segment, 0).to_vec());
                ro.set_iterate_upper_bound(seg_bodies_end(owner, segment));
            }
        }
        let mut held = BTreeSet::new();
        for item in self
            .db
            .iterator_cf_opt(self.cf(CF_TEMP_BODY), ro, IteratorMode::Start)
        {
            let (key, _) = item?;
            held.insert(decode_body_key(&key)?.2);
        }
        Ok(held)
    }

    /// Move a held segment to `base + offset`, record it, drop it and lower segments of its owner.
    fn apply_batch(&self, r: &Resolution, floor: u64) -> Result<WriteBatch, StoreError> {
        let mut batch = WriteBatch::default();
        let seg = seg_key(r.owner, r.segment);
        if self.db.get_cf(self.cf(CF_TEMP_SEG), seg)?.is_none() {
            return Ok(batch);
        }
        // One scan moves this segment's bodies: each offset below the count to its id, and
        // every one out of the temporary history.
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(body_key(r.owner, r.segment, 0).to_vec());
        ro.set_iterate_upper_bound(seg_bodies_end(r.owner, r.segment));
        for item in self
            .db
            .iterator_cf_opt(self.cf(CF_TEMP_BODY), ro, IteratorMode::Start)
        {
            let (key, body) = item?;
            let (_, _, o) = decode_body_key(&key)?;
            if o < r.count {
                let id = r.base.0.wrapping_add(u64::from(o));
                batch.put_cf(self.cf(CF_PERM), id.to_be_bytes(), body);
            }
            batch.delete_cf(self.cf(CF_TEMP_BODY), &key);
        }
        batch.delete_cf(self.cf(CF_TEMP_SEG), seg);
        // And every earlier segment of this owner that is still held (never to be ordered).
        if floor < r.segment {
            self.drop_temp_segments(
                &mut batch,
                seg_key(r.owner, floor).to_vec(),
                seg_key(r.owner, r.segment).to_vec(),
            )?;
        }
        batch.put_cf(self.cf(CF_APPLIED), seg, encode_value(r));
        Ok(batch)
    }

    /// Delete, by point deletes, every temporary segment with a key in `from..to` and its bodies:
    /// range tombstones would pile up in the memtable and slow every later read of these families.
    fn drop_temp_segments(
        &self,
        batch: &mut WriteBatch,
        from: Vec<u8>,
        to: Vec<u8>,
    ) -> Result<(), StoreError> {
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(from);
        ro.set_iterate_upper_bound(to);
        for item in self
            .db
            .iterator_cf_opt(self.cf(CF_TEMP_SEG), ro, IteratorMode::Start)
        {
            let (key, _) = item?;
            let (owner, segment) = decode_seg_key(&key)?;
            batch.delete_cf(self.cf(CF_TEMP_SEG), &key);
            let mut ro = ReadOptions::default();
            ro.set_iterate_lower_bound(body_key(owner, segment, 0).to_vec());
            ro.set_iterate_upper_bound(seg_bodies_end(owner, segment));
            for body in self
                .db
                .iterator_cf_opt(self.cf(CF_TEMP_BODY), ro, IteratorMode::Start)
            {
                let (body_key, _) = body?;
                batch.delete_cf(self.cf(CF_TEMP_BODY), &body_key);
            }
        }
        Ok(())
    }

    /// Record an abandon notice and drop the owner's temporary segments below its floor.
    fn abandon_batch(&self, n: &AbandonNotice, floor: u64) -> Result<WriteBatch, StoreError> {
        let mut batch = WriteBatch::default();
        self.drop_temp_segments(
            &mut batch,
            seg_key(n.owner, floor.min(n.below)).to_vec(),
            seg_key(n.owner, n.below).to_vec(),
        )?;
        batch.put_cf(self.cf(CF_ABANDONED), n.seq.to_be_bytes(), encode_value(n));
        Ok(batch)
    }

    /// Read the disk back, the permanent log only from its newest `keep` records.
    fn load(&self, keep: usize) -> Result<NdbDisk, StoreError> {
        let mut disk = NdbDisk::default();
        for item in self
            .db
            .iterator_cf(self.cf(CF_TEMP_SEG), IteratorMode::Start)
        {
            let (key, value) = item?;
            let (owner, segment) = decode_seg_key(&key)?;
            let count = decode_value::<Option<u32>>(&value, &key)?;
            disk.temp.insert(
                (owner, segment),
                TempSegment {
                    count,
                    ..TempSegment::default()
                },
            );
        }
        for item in self
            .db
            .iterator_cf(self.cf(CF_TEMP_BODY), IteratorMode::Start)
        {
            let (key, value) = item?;
            let (owner, segment, offset) = decode_body_key(&key)?;
            let seg = disk
                .temp
                .get_mut(&(owner, segment))
                .ok_or_else(|| corrupt(&key, "temporary body without its segment row"))?;
            seg.bodies.insert(offset, Bytes::from(value.into_vec()));
        }
        for item in self
            .db
            .iterator_cf(self.cf(CF_APPLIED), IteratorMode::Start)
        {
            let (key, value) = item?;
            let (owner, segment) = decode_seg_key(&key)?;
            let r = decode_value::<Resolution>(&value, &key)?;
            if (r.owner, r.segment) != (owner, segment) {
                return Err(corrupt(&key, "resolution does not match its key"));
            }
            disk.applied.insert((owner, segment), r);
        }
        for item in self
            .db
            .iterator_cf(self.cf(CF_ABANDONED), IteratorMode::Start)
        {
            let (key, value) = item?;
            let n = decode_value::<AbandonNotice>(&value, &key)?;
            if n.seq != decode_u64(&key)? {
                return Err(corrupt(&key, "notice does not match its key"));
            }
            let floor = disk.floor.entry(n.owner).or_insert(0);
            *floor = (*floor).max(n.below);
            disk.abandons = disk.abandons.max(n.seq + 1);
        }
        // Applies happen in id order, so the most recent one (overall and per owner)
        // is the one with the highest base.
        let mut by_base: Vec<&Resolution> = disk.applied.values().collect();
        by_base.sort_by_key(|r| r.base);
        for r in &by_base {
            disk.last.insert(r.owner, r.segment);
        }
        if let Some(r) = by_base.last() {
            disk.next = r.end();
        }
        let first = disk.next.0.saturating_sub(keep as u64).to_be_bytes();
        let iter = self.db.iterator_cf(
            self.cf(CF_PERM),
            IteratorMode::From(&first, rocksdb::Direction::Forward),
        );
        for item in iter {
            let (key, value) = item?;
            let id = decode_u64(&key)?;
            disk.perm
                .insert(PermanentId(id), Bytes::from(value.into_vec()));
        }
        Ok(disk)
    }
}

fn seg_key(owner: u64, segment: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&owner.to_be_bytes());
    k[8..].copy_from_slice(&segment.to_be_bytes());
    k
}

fn body_key(owner: u64, segment: u64, offset: u32) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..16].copy_from_slice(&seg_key(owner, segment));
    k[16..].copy_from_slice(&offset.to_be_bytes());
    k
}

/// Exclusive end of every body key of `(owner, ..=segment)`: sorts just after offset `u32::MAX`.
fn seg_bodies_end(owner: u64, segment: u64) -> Vec<u8> {
    let mut k = body_key(owner, segment, u32::MAX).to_vec();
    k.push(0);
    k
}

fn corrupt(key: &[u8], reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        key: format!("{key:02x?}"),
        reason: reason.into(),
    }
}

fn decode_u64(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| corrupt(key, "key is not 8 bytes"))?;
    Ok(u64::from_be_bytes(bytes))
}

fn decode_seg_key(key: &[u8]) -> Result<(u64, u64), StoreError> {
    if key.len() != 16 {
        return Err(corrupt(key, "key is not 16 bytes"));
    }
    Ok((decode_u64(&key[..8])?, decode_u64(&key[8..])?))
}

fn decode_body_key(key: &[u8]) -> Result<(u64, u64, u32), StoreError> {
    if key.len() != 20 {
        return Err(corrupt(key, "key is not 20 bytes"));
    }
    let (owner, segment) = decode_seg_key(&key[..16])?;
    let offset: [u8; 4] = key[16..]
        .try_into()
        .map_err(|_| corrupt(key, "offset is not 4 bytes"))?;
    Ok((owner, segment, u32::from_be_bytes(offset)))
}

fn encode_value<T: Serialize>(value: &T) -> Vec<u8> {
    ordo_common::record::encode(value)
}

fn decode_value<T: DeserializeOwned>(value: &[u8], key: &[u8]) -> Result<T, StoreError> {
    ordo_common::record::decode(value).map_err(|e| corrupt(key, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// xorshift64*: a seeded generator, so a failing seed replays exactly.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
        }

        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }

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
        let count = rng.chance(50).then(|| 1 + rng.below(8) as u32);
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

    fn temp(
        owner: u64,
        segment: u64,
        count: Option<u32>,
        offset: u32,
        bodies: &[&str],
    ) -> NdbWrite {
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
}
