//! The one RocksDB database a node keeps under its data directory, and the
//! column families the Raft log and the state machine share it as.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{BlockBasedOptions, Cache, ColumnFamilyDescriptor, Options, DB};

/// Raft log entries, keyed by big-endian index.
pub const CF_LOG: &str = "log";
/// Raft log metadata: vote, last purged log id, committed log id, and this
/// data directory's own records: its identity (node id and incarnation)
/// and its cluster id.
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

/// The block cache a node gives RocksDB unless told otherwise
/// (`--cache-mib`), in MiB.
pub const DEFAULT_CACHE_MIB: usize = 64;

/// Opens (creating if needed) the node's database at `path`, with the
/// default block cache.
pub fn open(path: &Path) -> Result<Arc<DB>, rocksdb::Error> {
    open_sized(path, DEFAULT_CACHE_MIB << 20)
}

/// Opens (creating if needed) the node's database at `path` with a block
/// cache of `cache_bytes`.
pub fn open_sized(path: &Path, cache_bytes: usize) -> Result<Arc<DB>, rocksdb::Error> {
    open_inner(path, &options(), cache_bytes)
}

/// Opens the database at `path` with `opts` (from [`options`], perhaps
/// with statistics turned on) and the default block cache.
pub fn open_with(path: &Path, opts: &Options) -> Result<Arc<DB>, rocksdb::Error> {
    open_inner(path, opts, DEFAULT_CACHE_MIB << 20)
}

/// Every column family reads through one LRU block cache of `cache_bytes`
/// that also holds the tables' index and filter blocks, so the memory
/// RocksDB uses for reading stays within it however many keys are stored.
/// With the memtables' bound (see [`options`]) this sizes the database's
/// memory explicitly.
fn open_inner(path: &Path, opts: &Options, cache_bytes: usize) -> Result<Arc<DB>, rocksdb::Error> {
    let cache = Cache::new_lru_cache(cache_bytes);
    let cfs = ALL.iter().map(|name| {
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        let mut cf_opts = Options::default();
        cf_opts.set_block_based_table_factory(&table);
        ColumnFamilyDescriptor::new(*name, cf_opts)
    });
    Ok(Arc::new(DB::open_cf_descriptors(opts, path, cfs)?))
}

/// Why an existing database could not be opened, or was found damaged.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// RocksDB refused it.
    #[error("{0}")]
    Rocks(#[from] rocksdb::Error),
    /// Its files or records are not what this node wrote.
    #[error("{0}")]
    Damaged(String),
}

impl OpenError {
    /// Whether the database is damaged (as opposed to, say, locked or
    /// unreadable for lack of permission).
    pub fn is_corruption(&self) -> bool {
        match self {
            OpenError::Rocks(e) => e.kind() == rocksdb::ErrorKind::Corruption,
            OpenError::Damaged(_) => true,
        }
    }
}

/// Opens the database at `path` read-only and hands it to `check`, if
/// there is one: `None` when `path` does not exist or is an empty
/// directory (a new node). Nothing in `path` is written, renamed or
/// created: RocksDB's own diagnostic log goes to a temporary directory,
/// removed afterwards. A directory that holds files but no `CURRENT` file
/// is damaged: opening it for writing would create a new, empty database
/// next to the old files.
///
/// Opening replays the write-ahead log in memory, checks the files the
/// `MANIFEST` lists (each SST file must be there, at its recorded size) and
/// applies the same recovery rule as [`options`]: damage anywhere but at the
/// very end of the log is an error.
pub fn inspect<T>(
    path: &Path,
    check: impl FnOnce(&Arc<DB>) -> Result<T, OpenError>,
) -> Result<Option<T>, OpenError> {
    let entries: Vec<String> = match std::fs::read_dir(path) {
        Ok(dir) => dir
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(OpenError::Damaged(format!(
                "cannot list {}: {e}",
                path.display()
            )))
        }
    };
    if entries.is_empty() {
        return Ok(None);
    }
    if !entries.iter().any(|n| n == "CURRENT") {
        return Err(OpenError::Damaged(format!(
            "{} holds {} files but no CURRENT file, which names the database's MANIFEST",
            path.display(),
            entries.len()
        )));
    }
    let log_dir = std::env::temp_dir().join(format!(
        "eventstore-inspect-{}-{:x}",
        std::process::id(),
        crate::random::nonzero_u64()
    ));
    std::fs::create_dir_all(&log_dir).map_err(|e| {
        OpenError::Damaged(format!(
            "creating a temporary directory {} for RocksDB's log: {e}",
            log_dir.display()
        ))
    })?;
    let mut opts = options();
    opts.create_if_missing(false);
    opts.create_missing_column_families(false);
    opts.set_paranoid_checks(true);
    opts.set_db_log_dir(&log_dir);
    let result = DB::open_cf_for_read_only(&opts, path, ALL, false)
        .map_err(|e| {
            // A file that CURRENT or the MANIFEST names is not there.
            if e.kind() == rocksdb::ErrorKind::IOError
                && e.to_string().contains("No such file or directory")
            {
                OpenError::Damaged(format!("a file the database needs is missing: {e}"))
            } else {
                OpenError::from(e)
            }
        })
        .and_then(|db| {
            let db = Arc::new(db);
            check(&db)
        });
    let _ = std::fs::remove_dir_all(&log_dir);
    result.map(Some)
}

/// The number of SST (table) files in the database directory `path`.
pub fn table_files(path: &Path) -> usize {
    std::fs::read_dir(path)
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "sst"))
                .count()
        })
        .unwrap_or(0)
}

/// Looks up a column family this module created.
pub fn cf<'a>(db: &'a DB, name: &str) -> &'a rocksdb::ColumnFamily {
    // Every name in ALL is created by `open`; a missing one is a programming error.
    db.cf_handle(name)
        .unwrap_or_else(|| panic!("column family {name} is created by store::db::open"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--cache-mib` reaches RocksDB: every column family reads through
    /// one cache of exactly that size, which also holds index and filter
    /// blocks.
    #[test]
    fn every_column_family_reads_through_one_cache_of_the_given_size() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_sized(&dir.path().join("db"), 8 << 20).unwrap();
        for name in ALL {
            let capacity = db
                .property_int_value_cf(cf(&db, name), "rocksdb.block-cache-capacity")
                .unwrap();
            assert_eq!(capacity, Some(8 << 20), "column family {name}");
        }
    }
}
