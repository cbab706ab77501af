//! The RocksDB store: the permanent log and small metadata.
//!
//! Every commit is one `WriteBatch` written with `sync = true`, so a batch is
//! either wholly on disk or absent after a crash, and whoever waits on
//! [`Store::commit`] may acknowledge what it contains once it returns `Ok`.
//!
//! An entry also keeps snapshots of its router here ([`Store::commit_snapshot`]),
//! in a family of their own, keyed by the id they were taken at.

use ordo_common::{PermanentId, StoredMessage};
use rocksdb::{ColumnFamilyDescriptor, Direction, IteratorMode, WriteBatch, WriteOptions, DB};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const CF_PERM: &str = "perm";
/// No longer written (the entry rebuilds retained values from its router snapshot and the log);
/// still opened, because RocksDB refuses to open a store without all its families.
const CF_RETAINED: &str = "retained";
const CF_META: &str = "meta";
/// The entry's router snapshots, by the big-endian id they were taken at.
const CF_SNAPSHOT: &str = "router_snapshot";

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// RocksDB reported an error (I/O, full disk, corruption).
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// A stored record could not be decoded.
    #[error("corrupt record at {key}: {reason}")]
    Corrupt {
        /// Which record.
        key: String,
        /// What was wrong.
        reason: String,
    },
    /// An earlier write failed; the store refuses writes so nothing is acked past a lost write.
    #[error("store is poisoned by an earlier failed write; restart after fixing the disk")]
    Poisoned,
}

/// One group commit: messages under their permanent ids plus metadata changes.
#[derive(Debug, Default)]
pub struct CommitBatch {
    /// Messages to add to the permanent log.
    pub messages: Vec<(PermanentId, Arc<StoredMessage>)>,
    /// Metadata key/value pairs to write.
    pub meta: Vec<(String, Vec<u8>)>,
}

/// Handle to the RocksDB database of one node; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<DB>,
    poisoned: Arc<AtomicBool>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.db.path())
            .finish()
    }
}

impl Store {
    /// Open (creating if needed) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_with(dir, ordo_common::rocks::db_options())
    }

    /// Open like [`Store::open`], with flushes and compactions paced: for a cluster entry's
    /// cache, which shares the disk with the ndb and sync nodes' fsyncs.
    pub fn open_paced(dir: &Path) -> Result<Store, StoreError> {
        Store::open_with(dir, ordo_common::rocks::paced_db_options())
    }

    fn open_with(dir: &Path, opts: rocksdb::Options) -> Result<Store, StoreError> {
        let cfs = [CF_PERM, CF_RETAINED, CF_META, CF_SNAPSHOT]
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, ordo_common::rocks::cf_options()));
        let db = DB::open_cf_descriptors(&opts, dir, cfs)?;
        Ok(Store {
            db: Arc::new(db),
            poisoned: Arc::new(AtomicBool::new(false)),
        })
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        // The families are created in `open`, so the handle always exists.
        #[allow(clippy::expect_used)]
        self.db
            .cf_handle(name)
            .expect("column family created at open")
    }

    /// Return the highest permanent id in the log (`PermanentId::ZERO` when empty).
    pub fn last_id(&self) -> Result<PermanentId, StoreError> {
        let mut iter = self.db.iterator_cf(self.cf(CF_PERM), IteratorMode::End);
        match iter.next() {
            Some(item) => {
                let (key, _) = item?;
                Ok(PermanentId(decode_key(&key)?))
            }
            None => Ok(PermanentId::ZERO),
        }
    }

    /// Write a batch durably (one fsync of the WAL) and return once it is on disk.
    ///
    /// After any failure the store is poisoned and refuses every later commit.
    pub fn commit(&self, batch: &CommitBatch) -> Result<(), StoreError> {
        let mut wb = WriteBatch::default();
        for (id, message) in &batch.messages {
            wb.put_cf(self.cf(CF_PERM), id.0.to_be_bytes(), encode_record(message));
        }
        for (key, value) in &batch.meta {
            wb.put_cf(self.cf(CF_META), key.as_bytes(), value);
        }
        self.write_batch(wb, true)
    }

    /// Write messages given as their msgpack encoding (the bytes a `StoredMessage` travels
    /// as between nodes) atomically, without waiting for an fsync: for data another node
    /// holds durably (an entry's cache of the permanent log). The caller has decoded each
    /// body once already; they are stored as they are, not encoded again.
    pub fn cache_encoded<'a>(
        &self,
        records: impl IntoIterator<Item = (PermanentId, &'a [u8])>,
    ) -> Result<(), StoreError> {
        let mut wb = WriteBatch::default();
        let mut value = Vec::new();
        for (id, body) in records {
            value.clear();
            value.push(ordo_common::record::VERSION);
            value.extend_from_slice(body);
            wb.put_cf(self.cf(CF_PERM), id.0.to_be_bytes(), &value);
        }
        self.write_batch(wb, false)
    }

    /// Tell whether an earlier write failed.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Read up to `limit` messages with ids in `(after, upto]`, in id order.
    pub fn read_range(
        &self,
        after: PermanentId,
        upto: PermanentId,
        limit: usize,
    ) -> Result<Vec<(PermanentId, StoredMessage)>, StoreError> {
        let start = after.0.saturating_add(1).to_be_bytes();
        let iter = self.db.iterator_cf(
            self.cf(CF_PERM),
            IteratorMode::From(&start, Direction::Forward),
        );
        let mut out = Vec::new();
        for item in iter {
            let (key, value) = item?;
            let id = decode_key(&key)?;
            if id > upto.0 || out.len() >= limit {
                break;
            }
            out.push((PermanentId(id), decode_record(id, &value)?));
        }
        Ok(out)
    }

    /// Read one message by id.
    pub fn get(&self, id: PermanentId) -> Result<Option<StoredMessage>, StoreError> {
        match self.db.get_cf(self.cf(CF_PERM), id.0.to_be_bytes())? {
            Some(value) => Ok(Some(decode_record(id.0, &value)?)),
            None => Ok(None),
        }
    }

    /// Read a metadata value.
    pub fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(CF_META), key.as_bytes())?)
    }

    /// Write a router snapshot taken at `at` durably, in one batch that also
    /// drops all but the `keep` newest snapshots (at least this one).
    ///
    /// Correctness: the write is synced, and syncing RocksDB's WAL makes every
    /// earlier write durable too, the unsynced ones of [`Store::cache_encoded`]
    /// included. So once this returns, every message written before it, which
    /// covers every id up to `at` for a caller that dispatches only what it
    /// wrote, survives a crash, and the snapshot never names lost messages.
    /// Like every write, a failure poisons the store.
    pub fn commit_snapshot(
        &self,
        at: PermanentId,
        snapshot: &[u8],
        keep: usize,
    ) -> Result<(), StoreError> {
        let cf = self.cf(CF_SNAPSHOT);
        let mut wb = WriteBatch::default();
        wb.put_cf(cf, at.0.to_be_bytes(), snapshot);
        let older = self.snapshot_ids()?.into_iter().filter(|id| *id != at);
        for id in older.skip(keep.saturating_sub(1)) {
            wb.delete_cf(cf, id.0.to_be_bytes());
        }
        self.write_batch(wb, true)
    }

    /// Write one batch, unless an earlier write failed: after a failure the store refuses
    /// every later write (poisoned).
    fn write_batch(&self, wb: WriteBatch, sync: bool) -> Result<(), StoreError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(StoreError::Poisoned);
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        if let Err(e) = self.db.write_opt(wb, &wo) {
            self.poisoned.store(true, Ordering::Release);
            return Err(e.into());
        }
        Ok(())
    }

    /// Return the ids of the stored router snapshots, newest first.
    pub fn snapshot_ids(&self) -> Result<Vec<PermanentId>, StoreError> {
        // A raw iterator reads keys only; snapshots can be large.
        let mut iter = self.db.raw_iterator_cf(self.cf(CF_SNAPSHOT));
        iter.seek_to_last();
        let mut out = Vec::new();
        while let Some(key) = iter.key() {
            out.push(PermanentId(decode_key(key)?));
            iter.prev();
        }
        iter.status()?;
        Ok(out)
    }

    /// Read the router snapshot taken at `at`, as written.
    pub fn get_snapshot(&self, at: PermanentId) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(CF_SNAPSHOT), at.0.to_be_bytes())?)
    }
}

fn decode_key(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| StoreError::Corrupt {
        key: format!("{key:?}"),
        reason: "key is not 8 bytes".into(),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

fn encode_record(message: &StoredMessage) -> Vec<u8> {
    ordo_common::record::encode(message)
}

fn decode_record(id: u64, value: &[u8]) -> Result<StoredMessage, StoreError> {
    ordo_common::record::decode(value).map_err(|e| StoreError::Corrupt {
        key: id.to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordo_common::Payload;

    fn msg(topic: &str, body: &[u8]) -> Arc<StoredMessage> {
        Arc::new(StoredMessage {
            realm: "realm1".into(),
            topic: topic.into(),
            payload: Payload::Raw(body.to_vec().into()),
            qos: 1,
            retain: false,
            publisher: 3,
            exclude_publisher: false,
            mqtt: None,
            wamp: None,
        })
    }

    #[test]
    fn commit_survives_reopen_in_a_loop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut next = 1u64;
        for round in 0..5 {
            let store = Store::open(dir.path()).expect("open");
            assert_eq!(
                store.last_id().expect("last"),
                PermanentId(next - 1),
                "round {round}"
            );
            let batch = CommitBatch {
                messages: (0..10)
                    .map(|i| (PermanentId(next + i), msg("a/b", &[round as u8, i as u8])))
                    .collect(),
                ..Default::default()
            };
            store.commit(&batch).expect("commit");
            next += 10;
        }
        let store = Store::open(dir.path()).expect("open");
        let all = store
            .read_range(PermanentId::ZERO, PermanentId(u64::MAX), 1000)
            .expect("read");
        assert_eq!(all.len(), 50);
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
        let tail = store
            .read_range(PermanentId(45), PermanentId(48), 10)
            .expect("read");
        assert_eq!(
            tail.iter().map(|(id, _)| id.0).collect::<Vec<_>>(),
            vec![46, 47, 48]
        );
    }

    #[test]
    fn encoded_bodies_read_back_as_the_messages_they_encode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let messages = [msg("a/b", b"one"), msg("c", b"two")];
        let bodies: Vec<Vec<u8>> = messages
            .iter()
            // What travels between nodes: the record without its version byte.
            .map(|m| ordo_common::record::encode(m.as_ref())[1..].to_vec())
            .collect();
        let records: Vec<(PermanentId, &[u8])> = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| (PermanentId(7 + i as u64), b.as_slice()))
            .collect();
        store.cache_encoded(records).expect("cache");
        let read = store
            .read_range(PermanentId(6), PermanentId(8), 10)
            .expect("read");
        assert_eq!(read.len(), 2);
        for ((id, got), (want_id, want)) in read.iter().zip([7u64, 8].iter().zip(&messages)) {
            assert_eq!(id.0, *want_id);
            assert_eq!(got, want.as_ref());
        }
        assert_eq!(store.last_id().expect("last"), PermanentId(8));
    }

    #[test]
    fn snapshots_keep_the_newest_across_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        for at in [10u64, 20, 30, 40] {
            let store = Store::open(dir.path()).expect("open");
            store
                .commit_snapshot(PermanentId(at), &at.to_be_bytes(), 2)
                .expect("snapshot");
        }
        let store = Store::open(dir.path()).expect("open");
        assert_eq!(
            store.snapshot_ids().expect("ids"),
            vec![PermanentId(40), PermanentId(30)]
        );
        assert_eq!(
            store.get_snapshot(PermanentId(30)).expect("get"),
            Some(30u64.to_be_bytes().to_vec())
        );
        assert_eq!(store.get_snapshot(PermanentId(20)).expect("get"), None);
        // Rewriting the newest keeps the one before it.
        store
            .commit_snapshot(PermanentId(40), b"again", 2)
            .expect("snapshot");
        assert_eq!(
            store.snapshot_ids().expect("ids"),
            vec![PermanentId(40), PermanentId(30)]
        );
        assert_eq!(
            store.get_snapshot(PermanentId(40)).expect("get"),
            Some(b"again".to_vec())
        );
        store
            .commit_snapshot(PermanentId(50), b"one", 1)
            .expect("snapshot");
        assert_eq!(store.snapshot_ids().expect("ids"), vec![PermanentId(50)]);
    }
}
