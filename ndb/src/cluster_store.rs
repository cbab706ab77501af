//! The RocksDB shell of a cluster ndb's disk state: makes [`NdbWrite`]s durable
//! and rebuilds [`NdbDisk`] on open.
//!
//! Key layout (all integers big-endian, so key order is numeric order):
//!
//! | column family | key | value |
//! | --- | --- | --- |
//! | `temp_seg` | `owner u64, segment u64` | version byte + rmp `Option<u32>` (the count) |
//! | `runs` | `owner u64, segment u64, offset u32` | a run of bodies from `offset` (below) |
//! | `by_id` | `base u64` | `owner u64, segment u64, count u32` of the segment applied at `base` |
//! | `applied` | `owner u64, segment u64` | version byte + rmp [`Resolution`] |
//! | `abandoned` | `seq u64` | version byte + rmp [`AbandonNotice`] |
//!
//! A segment's bodies are written once, as runs: each `Temp` write puts the offsets not held
//! yet as one value per stretch of consecutive offsets (`n u32`, then `n` times `len u32` +
//! bytes). Applying a segment does not move them: it deletes the `temp_seg` row and writes the
//! `by_id` row, which makes offsets `0..count` of the runs permanent ids `base..base+count`.
//! So a message costs each ndb one copy of its bytes and no key of its own (the layout before
//! this wrote every body twice and deleted it once, three key operations per message).
//!
//! A segment is temporary while it has a `temp_seg` row (every one has, even one without count
//! or bodies, so an `Apply` can tell "not held" from "held and empty" as [`NdbDisk::apply`]
//! does); it is permanent once it has a `by_id` row; otherwise its runs are gone. `last` and
//! `next` are not stored: on open they are derived from the applied resolution with the
//! highest `base` (overall, and per owner). That equals "the most recent Apply" because the
//! core applies strictly in id order (`base == next`, `count > 0`). `floor` and `abandons` are
//! derived from the applied abandon notices.
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
use bytes::{Buf, BufMut, Bytes};
use ordo_common::proto::{AbandonNotice, Body, Resolution};
use ordo_common::PermanentId;
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, Direction, IteratorMode, ReadOptions, WriteBatch,
    WriteOptions, DB,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

const CF_TEMP_SEG: &str = "temp_seg";
const CF_RUNS: &str = "runs";
const CF_BY_ID: &str = "by_id";
const CF_APPLIED: &str = "applied";
const CF_ABANDONED: &str = "abandoned";
/// Families of the layout with one key per body; a folder that has them is refused at open.
const OLD_LAYOUT: [&str; 2] = ["temp_body", "perm"];

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

/// A run as read: its key, its first offset, its value.
type RawRun = (Box<[u8]>, u32, Box<[u8]>);

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
        if let Ok(existing) = DB::list_cf(&opts, dir) {
            if let Some(old) = existing.iter().find(|cf| OLD_LAYOUT.contains(&cf.as_str())) {
                return Err(StoreError::Corrupt {
                    key: format!("column family {old}"),
                    reason: "this folder holds an earlier ndb layout (one key per body); \
                             move it away and restart: the node fetches its history from its \
                             peers"
                        .into(),
                });
            }
        }
        let cfs = [CF_TEMP_SEG, CF_RUNS, CF_BY_ID, CF_APPLIED, CF_ABANDONED]
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
        // The segment holding `from` is the last one placed at or below it.
        let Some(first) = self.placed_at_or_below(from.0)? else {
            return Ok(out);
        };
        let start = first.base.0.to_be_bytes();
        let iter = self.db.iterator_cf(
            self.cf(CF_BY_ID),
            IteratorMode::From(&start, Direction::Forward),
        );
        for item in iter {
            let (key, value) = item?;
            let placed = decode_placed(&key, &value)?;
            let want = from.0 + out.len() as u64;
            if out.len() >= max || placed.base.0 > want {
                break;
            }
            let skip = want - placed.base.0;
            if skip >= u64::from(placed.count) {
                break;
            }
            let bodies = self.permanent_bodies(&placed)?;
            let room = max - out.len();
            out.extend(bodies.into_iter().skip(skip as usize).take(room));
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

    /// Keep the count if none is known yet, and the bodies of offsets not held yet: one run per
    /// stretch of consecutive new offsets. A segment applied here keeps what it has (its runs
    /// are permanent records now; the core never writes to it).
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
        if known.is_none() && self.db.get_cf(self.cf(CF_APPLIED), seg)?.is_some() {
            return Ok(batch);
        }
        if known.is_none() || known.is_some_and(|c| c.is_none() && count.is_some()) {
            batch.put_cf(self.cf(CF_TEMP_SEG), seg, encode_value(&count));
        }
        // A temporary segment's runs are written and dropped in the same batch as its row, so
        // a segment without a row holds none: the common first Begin reads nothing.
        let held = match known {
            Some(_) => self.held_offsets(owner, segment)?,
            None => BTreeSet::new(),
        };
        let mut fresh: Vec<(u32, &Body)> = Vec::new();
        let mut seen = BTreeSet::new();
        for (k, body) in bodies.iter().enumerate() {
            // Same arithmetic as `NdbDisk::apply`.
            let o = offset.wrapping_add(k as u32);
            if !held.contains(&o) && seen.insert(o) {
                fresh.push((o, body));
            }
        }
        let mut start = 0;
        while start < fresh.len() {
            let mut end = start + 1;
            while end < fresh.len() && fresh[end - 1].0.checked_add(1) == Some(fresh[end].0) {
                end += 1;
            }
            let run = &fresh[start..end];
            batch.put_cf(
                self.cf(CF_RUNS),
                run_key(owner, segment, run[0].0),
                encode_run(run.iter().map(|(_, b)| *b)),
            );
            start = end;
        }
        Ok(batch)
    }

    /// Return every offset a segment's runs hold.
    fn held_offsets(&self, owner: u64, segment: u64) -> Result<BTreeSet<u32>, StoreError> {
        let mut held = BTreeSet::new();
        for (first, n) in self.run_spans(owner, segment)? {
            held.extend((0..n).map(|k| first.wrapping_add(k)));
        }
        Ok(held)
    }

    /// Each run of a segment as `(key, first offset, value)`, in offset order.
    fn runs(
        &self,
        owner: u64,
        segment: u64,
    ) -> impl Iterator<Item = Result<RawRun, StoreError>> + '_ {
        self.db
            .iterator_cf_opt(
                self.cf(CF_RUNS),
                run_bounds(owner, segment),
                IteratorMode::Start,
            )
            .map(|item| {
                let (key, value) = item?;
                let (_, _, first) = decode_run_key(&key)?;
                Ok((key, first, value))
            })
    }

    /// Return `(first offset, bodies)` of each run of a segment, reading only run headers.
    fn run_spans(&self, owner: u64, segment: u64) -> Result<Vec<(u32, u32)>, StoreError> {
        self.runs(owner, segment)
            .map(|run| {
                let (key, first, value) = run?;
                let n = value
                    .get(..4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    .ok_or_else(|| corrupt(&key, "run shorter than its header"))?;
                Ok((first, n))
            })
            .collect()
    }

    /// Return every body a segment's runs hold, by offset.
    fn segment_bodies(&self, owner: u64, segment: u64) -> Result<BTreeMap<u32, Body>, StoreError> {
        let mut bodies = BTreeMap::new();
        for run in self.runs(owner, segment) {
            let (key, first, value) = run?;
            let run = decode_run(Bytes::from(value.into_vec()))
                .ok_or_else(|| corrupt(&key, "run does not match its lengths"))?;
            for (k, body) in run.into_iter().enumerate() {
                bodies.entry(first.wrapping_add(k as u32)).or_insert(body);
            }
        }
        Ok(bodies)
    }

    /// Return the bodies of a placed segment: offsets `0..count`, all of them.
    fn permanent_bodies(&self, placed: &Resolution) -> Result<Vec<Body>, StoreError> {
        let mut runs = self.segment_bodies(placed.owner, placed.segment)?;
        (0..placed.count)
            .map(|o| {
                runs.remove(&o).ok_or_else(|| {
                    corrupt(
                        &run_key(placed.owner, placed.segment, o),
                        format!("permanent id {} has no body", placed.base.0 + u64::from(o)),
                    )
                })
            })
            .collect()
    }

    /// Return the segment placed at the highest base at or below `id`.
    fn placed_at_or_below(&self, id: u64) -> Result<Option<Resolution>, StoreError> {
        let key = id.to_be_bytes();
        let mut iter = self.db.iterator_cf(
            self.cf(CF_BY_ID),
            IteratorMode::From(&key, Direction::Reverse),
        );
        match iter.next() {
            Some(item) => {
                let (key, value) = item?;
                Ok(Some(decode_placed(&key, &value)?))
            }
            None => Ok(None),
        }
    }

    /// Make a held segment's offsets `0..count` ids `base..`, record it, and drop its owner's
    /// lower temporary segments (never to be ordered). Its runs stay where they are.
    fn apply_batch(&self, r: &Resolution, floor: u64) -> Result<WriteBatch, StoreError> {
        let mut batch = WriteBatch::default();
        let seg = seg_key(r.owner, r.segment);
        if self.db.get_cf(self.cf(CF_TEMP_SEG), seg)?.is_none() {
            return Ok(batch);
        }
        batch.delete_cf(self.cf(CF_TEMP_SEG), seg);
        batch.put_cf(self.cf(CF_BY_ID), r.base.0.to_be_bytes(), encode_placed(r));
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

    /// Delete, by point deletes, every temporary segment with a key in `from..to` and its runs:
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
            for (first, _) in self.run_spans(owner, segment)? {
                batch.delete_cf(self.cf(CF_RUNS), run_key(owner, segment, first));
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
            let bodies = self.segment_bodies(owner, segment)?;
            disk.temp
                .insert((owner, segment), TempSegment { count, bodies });
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
        let first = disk.next.0.saturating_sub(keep as u64).max(1);
        if first < disk.next.0 {
            let records =
                self.read_permanent(PermanentId(first), (disk.next.0 - first) as usize)?;
            for (k, body) in records.into_iter().enumerate() {
                disk.perm.insert(PermanentId(first + k as u64), body);
            }
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

fn run_key(owner: u64, segment: u64, offset: u32) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..16].copy_from_slice(&seg_key(owner, segment));
    k[16..].copy_from_slice(&offset.to_be_bytes());
    k
}

/// Read options bounding an iterator to one segment's runs.
fn run_bounds(owner: u64, segment: u64) -> ReadOptions {
    let mut ro = ReadOptions::default();
    ro.set_iterate_lower_bound(run_key(owner, segment, 0).to_vec());
    // Sorts just after offset `u32::MAX`.
    let mut end = run_key(owner, segment, u32::MAX).to_vec();
    end.push(0);
    ro.set_iterate_upper_bound(end);
    ro
}

/// `n u32`, then each body as `len u32` + bytes.
fn encode_run<'a>(bodies: impl ExactSizeIterator<Item = &'a Body> + Clone) -> Vec<u8> {
    let size: usize = bodies.clone().map(|b| 4 + b.len()).sum();
    let mut out = Vec::with_capacity(4 + size);
    out.put_u32(bodies.len() as u32);
    for b in bodies {
        out.put_u32(b.len() as u32);
        out.extend_from_slice(b);
    }
    out
}

/// Split a run into its bodies (slices of `value`, no copies); `None` if it is malformed.
fn decode_run(mut value: Bytes) -> Option<Vec<Body>> {
    if value.len() < 4 {
        return None;
    }
    let n = value.get_u32() as usize;
    let mut out = Vec::with_capacity(n.min(value.len() / 4));
    for _ in 0..n {
        if value.len() < 4 {
            return None;
        }
        let len = value.get_u32() as usize;
        if value.len() < len {
            return None;
        }
        out.push(value.split_to(len));
    }
    value.is_empty().then_some(out)
}

/// A `by_id` value: the resolution keyed by its `base`, without the base.
fn encode_placed(p: &Resolution) -> [u8; 20] {
    let mut v = [0u8; 20];
    v[..16].copy_from_slice(&seg_key(p.owner, p.segment));
    v[16..].copy_from_slice(&p.count.to_be_bytes());
    v
}

fn decode_placed(key: &[u8], value: &[u8]) -> Result<Resolution, StoreError> {
    let base = PermanentId(decode_u64(key)?);
    let (owner, segment, count) = decode_run_key(value)?;
    Ok(Resolution {
        owner,
        segment,
        count,
        base,
    })
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

/// Decode `owner u64, segment u64, u32` (a run key, or a `by_id` value).
fn decode_run_key(key: &[u8]) -> Result<(u64, u64, u32), StoreError> {
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
#[path = "cluster_store_tests.rs"]
mod tests;
