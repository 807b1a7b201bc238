//! The one RocksDB database a node keeps under its data directory, and the
//! column families the Raft log and the state machine share it as.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, Options, DB};

/// Raft log entries, keyed by big-endian index.
pub const CF_LOG: &str = "log";
/// Raft log metadata: vote, last purged log id, committed log id.
pub const CF_LOG_META: &str = "log_meta";
/// Values: encoded location -> 8-byte big-endian deadline followed by the value.
pub const CF_DATA: &str = "data";
/// Expiry index: 8-byte big-endian deadline + encoded location -> empty.
pub const CF_EXPIRY: &str = "expiry";
/// State-machine metadata: last applied log id, membership, clock.
pub const CF_SM_META: &str = "sm_meta";

const ALL: [&str; 5] = [CF_LOG, CF_LOG_META, CF_DATA, CF_EXPIRY, CF_SM_META];

/// The database options every node uses.
pub fn options() -> Options {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    // Every write the Raft log acknowledges is synced, so the only damage a
    // crash can leave is an incomplete last record (a write never
    // acknowledged). RocksDB's default recovery would also stop quietly at
    // damage in the middle of the log and drop every write after it:
    // acknowledged entries and votes. Refuse to open instead.
    opts.set_wal_recovery_mode(rocksdb::DBRecoveryMode::TolerateCorruptedTailRecords);
    // Memtables of all column families together stay within 64 MiB: a
    // flood of large values is flushed to disk instead of piling up in
    // memory (RocksDB's default is 64 MiB per memtable, two per family).
    opts.set_db_write_buffer_size(64 << 20);
    opts
}

/// Opens (creating if needed) the node's database at `path`.
pub fn open(path: &Path) -> Result<Arc<DB>, rocksdb::Error> {
    open_with(path, &options())
}

/// Opens the database at `path` with `opts` (from [`options`], perhaps
/// with statistics turned on).
pub fn open_with(path: &Path, opts: &Options) -> Result<Arc<DB>, rocksdb::Error> {
    let cfs = ALL
        .iter()
        .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
    Ok(Arc::new(DB::open_cf_descriptors(opts, path, cfs)?))
}

/// Looks up a column family this module created.
pub fn cf<'a>(db: &'a DB, name: &str) -> &'a rocksdb::ColumnFamily {
    // Every name in ALL is created by `open`; a missing one is a programming error.
    db.cf_handle(name)
        .unwrap_or_else(|| panic!("column family {name} is created by store::db::open"))
}
