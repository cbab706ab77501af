//! The RocksDB options every Ordo store opens with.
//!
//! All of a cluster's nodes on one machine share its disk, and their stores fill their
//! memtables at the same pace (the three ndbs hold the same records, the entries cache the
//! same log). With RocksDB's defaults each wrote a 64 MB memtable out in one burst at about
//! the same moment: over 300 MB in under a second, behind which every node's WAL fsync
//! waited. The 3-entry cluster's p99 ack at half of peak was 97-132 ms in four of eight runs
//! (median 73 ms), against a median of 25.8 ms with these options (docs/performance.md,
//! seventh day). So flushes are smaller and written out as they
//! go, and a cluster node's are paced too. The embedded broker's store is not paced: it
//! takes several times a cluster node's write rate, and pacing cost it 14% of its peak.

use rocksdb::Options;

/// Bytes a store writes to a file before asking the kernel to start writing them out, so
/// a flush or compaction never leaves a file's worth of dirty pages for its final fsync.
pub const BYTES_PER_SYNC: u64 = 1 << 20;

/// Memtable size per column family (RocksDB's default is 64 MB).
pub const WRITE_BUFFER_SIZE: usize = 16 << 20;

/// Most bytes per second a cluster node's flushes and compactions write (WAL writes are not
/// limited): above what one node's flushes need at the cluster's peak.
pub const BACKGROUND_WRITE_RATE: i64 = 32 << 20;

/// Options of the database itself: created if missing, two background threads, file
/// writes spread out.
pub fn db_options() -> Options {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.increase_parallelism(2);
    opts.set_bytes_per_sync(BYTES_PER_SYNC);
    opts.set_wal_bytes_per_sync(BYTES_PER_SYNC);
    opts
}

/// [`db_options`] with flushes and compactions paced to [`BACKGROUND_WRITE_RATE`]: for a
/// cluster node, which shares the disk with the other nodes' fsyncs.
pub fn paced_db_options() -> Options {
    let mut opts = db_options();
    // Refill every 100 ms; fairness 10 is RocksDB's default share for low-priority writes.
    opts.set_ratelimiter(BACKGROUND_WRITE_RATE, 100_000, 10);
    opts
}

/// Options of each column family: a smaller memtable, so each flush is a smaller burst.
pub fn cf_options() -> Options {
    let mut opts = Options::default();
    opts.set_write_buffer_size(WRITE_BUFFER_SIZE);
    opts
}
