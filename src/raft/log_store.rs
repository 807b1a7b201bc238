//! The Raft log on RocksDB: entries keyed by big-endian index in the `log`
//! column family; the vote, the last purged log id and the committed log id
//! in `log_meta`.
//!
//! Every append and vote is fsynced before openraft is told it is durable.
//! Appends are group-committed: written at once (so replication can send
//! them), then synced by one thread for every batch that arrived meanwhile,
//! which then tells openraft through its `IOFlushed` callbacks. Votes,
//! truncations and purges are synced before they return.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader};
use rocksdb::{IteratorMode, WriteBatch, WriteOptions, DB};

use super::types::{Entry, LogId, TypeConfig, Vote};
use crate::metrics;
use crate::store::db::{cf, CF_LOG, CF_LOG_META};
use crate::store::snapshot::{bincode_decode, bincode_decode_whole, bincode_encode};

const META_VOTE: &[u8] = b"vote";
const META_PURGED: &[u8] = b"last_purged";
const META_COMMITTED: &[u8] = b"committed";
const META_IDENTITY: &[u8] = b"identity";

/// The most entry bytes (as stored) one AppendEntries message carries, on
/// top of openraft's bound on the number of entries.
pub const MAX_PAYLOAD_BYTES: usize = 4 * 1024 * 1024;

/// The Raft log store. Cheap to clone: clones share the database and the
/// flusher.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    flusher: std::sync::mpsc::Sender<IOFlushed<TypeConfig>>,
}

impl LogStore {
    /// Wraps the database opened by [`crate::store::db::open`], and starts
    /// the thread that fsyncs appended entries (see [`flush_appends`]); it
    /// ends once every clone of the store is dropped. It holds the
    /// database only while it syncs, so dropping the last clone of the
    /// store and of the database closes it at once.
    pub fn new(db: Arc<DB>) -> Self {
        let (flusher, appended) = std::sync::mpsc::channel();
        let flushed_db = Arc::downgrade(&db);
        std::thread::Builder::new()
            .name("log-fsync".into())
            .spawn(move || flush_appends(&flushed_db, appended))
            .expect("starting the log's fsync thread");
        LogStore { db, flusher }
    }

    /// Whether this node has ever stored a vote or a log entry, i.e. whether
    /// it has been part of a cluster before.
    pub fn has_state(&self) -> io::Result<bool> {
        let vote = self.get_meta::<Vote>(META_VOTE)?;
        let any_log = self
            .db
            .iterator_cf(cf(&self.db, CF_LOG), IteratorMode::Start)
            .next()
            .is_some();
        let purged = self.get_meta::<LogId>(META_PURGED)?;
        Ok(vote.is_some() || any_log || purged.is_some())
    }

    /// This data directory's identity: the node id it belongs to and its
    /// incarnation, a random number chosen when the directory was created.
    /// Creates it on first use; fails if the directory belongs to another
    /// node id.
    pub fn identity(&self, node_id: u64) -> io::Result<u64> {
        if let Some((id, incarnation)) = self.get_meta::<(u64, u64)>(META_IDENTITY)? {
            if id != node_id {
                return Err(io::Error::other(format!(
                    "this data directory belongs to node {id}, not node {node_id}"
                )));
            }
            return Ok(incarnation);
        }
        let incarnation = crate::random::nonzero_u64();
        self.put_meta(META_IDENTITY, &(node_id, incarnation), true)?;
        Ok(incarnation)
    }

    /// Reads every record of the log store that a node reads when it
    /// starts (the vote, the purge point, the committed log id, the data
    /// directory's identity and cluster id, the first and the last log
    /// entry) and fails, naming the record, on the first that is not
    /// exactly what this node writes there.
    pub fn verify(&self) -> io::Result<()> {
        let meta = |key: &[u8]| {
            self.db
                .get_cf(cf(&self.db, CF_LOG_META), key)
                .map_err(io::Error::other)
        };
        let bad = |what: &str, e: &dyn std::fmt::Display| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the {what} record (column family {CF_LOG_META}) is not valid: {e}"),
            )
        };
        if let Some(b) = meta(META_VOTE)? {
            bincode_decode_whole::<Vote>(&b).map_err(|e| bad("vote", &e))?;
        }
        if let Some(b) = meta(META_PURGED)? {
            bincode_decode_whole::<LogId>(&b).map_err(|e| bad("last purged log id", &e))?;
        }
        if let Some(b) = meta(META_COMMITTED)? {
            bincode_decode_whole::<LogId>(&b).map_err(|e| bad("committed log id", &e))?;
        }
        if let Some(b) = meta(META_IDENTITY)? {
            bincode_decode_whole::<(u64, u64)>(&b).map_err(|e| bad("identity", &e))?;
        }
        crate::store::cluster_id::read(&self.db).map_err(|e| bad("cluster id", &e))?;
        for mode in [IteratorMode::Start, IteratorMode::End] {
            if let Some(item) = self.db.iterator_cf(cf(&self.db, CF_LOG), mode).next() {
                let (k, v) = item.map_err(io::Error::other)?;
                let index = <[u8; 8]>::try_from(k.as_ref()).map(u64::from_be_bytes);
                let entry = bincode_decode_whole::<Entry>(&v);
                match (index, entry) {
                    (Ok(index), Ok(e)) if e.index() == index => {}
                    (Ok(index), Ok(e)) => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "the log entry at index {index} says it is entry {}",
                                e.index()
                            ),
                        ))
                    }
                    (Ok(index), Err(e)) => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("the log entry at index {index} is not valid: {e}"),
                        ))
                    }
                    (Err(_), _) => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("a log entry has a {}-byte key, not 8", k.len()),
                        ))
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether this data directory's identity is on record: it is written
    /// on the node's very first start, before anything else.
    pub fn has_identity(&self) -> io::Result<bool> {
        Ok(self
            .db
            .get_cf(cf(&self.db, CF_LOG_META), META_IDENTITY)
            .map_err(io::Error::other)?
            .is_some())
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        self.db
            .get_cf(cf(&self.db, CF_LOG_META), key)
            .map_err(io::Error::other)?
            .map(|b| bincode_decode(&b))
            .transpose()
    }

    fn put_meta<T: serde::Serialize>(&self, key: &[u8], v: &T, sync: bool) -> io::Result<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(cf(&self.db, CF_LOG_META), key, bincode_encode(v)?);
        if sync {
            return self.write_synced(batch);
        }
        self.db
            .write_opt(batch, &WriteOptions::default())
            .map_err(io::Error::other)
    }

    /// Writes `batch` and fsyncs the WAL before returning; the time it
    /// took is the node's fsync latency metric.
    fn write_synced(&self, batch: WriteBatch) -> io::Result<()> {
        let _timer = metrics::FSYNC_SECONDS.start_timer();
        self.db
            .write_opt(batch, &synced())
            .map_err(io::Error::other)
    }

    fn last_entry(&self) -> io::Result<Option<Entry>> {
        match self
            .db
            .iterator_cf(cf(&self.db, CF_LOG), IteratorMode::End)
            .next()
        {
            None => Ok(None),
            Some(item) => {
                let (_, v) = item.map_err(io::Error::other)?;
                Ok(Some(bincode_decode(&v)?))
            }
        }
    }
}

/// Group commit: waits for appended (written, not yet synced) batches,
/// fsyncs the write-ahead log once for all that arrived meanwhile, then
/// tells openraft each of them is durable. Appends go on while a sync
/// runs, and a leader replicates its entries while it syncs them.
fn flush_appends(
    db: &std::sync::Weak<DB>,
    appended: std::sync::mpsc::Receiver<IOFlushed<TypeConfig>>,
) {
    while let Ok(first) = appended.recv() {
        let mut done = vec![first];
        done.extend(appended.try_iter());
        let synced = match db.upgrade() {
            Some(db) => {
                let _timer = metrics::FSYNC_SECONDS.start_timer();
                db.flush_wal(true)
                    .map_err(|e| io::Error::other(format!("syncing the log: {e}")))
            }
            None => Err(io::Error::other(
                "the database was closed before the log was synced",
            )),
        };
        for callback in done {
            callback.io_completed(match &synced {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            });
        }
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn synced() -> WriteOptions {
    let mut o = WriteOptions::default();
    o.set_sync(true);
    o
}

impl LogStore {
    /// Reads the entries whose index is in `range`, in order, stopping
    /// before the entry that would take the encoded total past
    /// `byte_budget` (the first entry is always read, whatever its size).
    fn read_entries<RB: RangeBounds<u64>>(
        &self,
        range: RB,
        byte_budget: usize,
    ) -> io::Result<Vec<Entry>> {
        let start = match range.start_bound() {
            Bound::Included(&x) => x,
            Bound::Excluded(&x) => x + 1,
            Bound::Unbounded => 0,
        };
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let it = self.db.iterator_cf(
            cf(&self.db, CF_LOG),
            IteratorMode::From(&index_key(start), rocksdb::Direction::Forward),
        );
        for item in it {
            let (k, v) = item.map_err(io::Error::other)?;
            let index = u64::from_be_bytes(
                k.as_ref()
                    .try_into()
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "log key"))?,
            );
            if !range.contains(&index) {
                break;
            }
            bytes = bytes.saturating_add(v.len());
            if !out.is_empty() && bytes > byte_budget {
                break;
            }
            out.push(bincode_decode(&v)?);
        }
        Ok(out)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        self.read_entries(range, usize::MAX)
    }

    /// What replication sends in one AppendEntries message: at most
    /// openraft's entry count (`max_payload_entries`, which sets `end`) and
    /// at most [`MAX_PAYLOAD_BYTES`] of entries, so a run of large values
    /// never builds a message of hundreds of megabytes. An entry larger
    /// than the budget goes alone.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, io::Error> {
        self.read_entries(start..end, MAX_PAYLOAD_BYTES)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.get_meta(META_VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id: Option<LogId> = self.get_meta(META_PURGED)?;
        // Never below the purge point: entries a purge did not get to delete
        // (a data directory written before purges were atomic) are behind it.
        let last_log_id = self
            .last_entry()?
            .map(|e| e.log_id())
            .max(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.put_meta(META_VOTE, vote, true)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not fsynced: a committed id lost in an OS crash only means
        // re-applying from an older point, which openraft handles.
        match committed {
            Some(c) => self.put_meta(META_COMMITTED, &c, false),
            None => Ok(()),
        }
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        self.get_meta(META_COMMITTED)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        let log = cf(&self.db, CF_LOG);
        for entry in entries {
            batch.put_cf(log, index_key(entry.index()), bincode_encode(&entry)?);
        }
        // Written now (visible to replication at once), durable once the
        // flusher has synced the log: only then is openraft told.
        if let Err(e) = self
            .db
            .write_opt(batch, &WriteOptions::default())
            .map_err(io::Error::other)
        {
            callback.io_completed(Err(io::Error::new(e.kind(), e.to_string())));
            return Err(e);
        }
        self.flusher
            .send(callback)
            .map_err(|_| io::Error::other("the log's fsync thread stopped"))
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map(|l| l.index() + 1).unwrap_or(0);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf(&self.db, CF_LOG), index_key(from), index_key(u64::MAX));
        // u64::MAX itself is never a real index.
        self.write_synced(batch)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // The purge point and the deletion of the entries behind it are one
        // synced write: a crash leaves either both or neither.
        let mut batch = WriteBatch::default();
        batch.put_cf(
            cf(&self.db, CF_LOG_META),
            META_PURGED,
            bincode_encode(&log_id)?,
        );
        batch.delete_range_cf(
            cf(&self.db, CF_LOG),
            index_key(0),
            index_key(log_id.index().saturating_add(1)),
        );
        self.write_synced(batch)
    }
}

#[cfg(test)]
mod tests {
    use openraft::entry::RaftEntry;
    use openraft::storage::RaftLogStorage;

    use super::*;
    use crate::store::Command;

    fn log_id(index: u64) -> LogId {
        openraft::testing::log_id::<TypeConfig>(1, 0, index)
    }

    fn store(dir: &std::path::Path) -> LogStore {
        LogStore::new(crate::store::db::open(&dir.join("db")).expect("open db"))
    }

    /// Writes entries 1..=`last` straight into the log, synced.
    fn write_entries(s: &LogStore, last: u64) {
        let mut batch = WriteBatch::default();
        for i in 1..=last {
            let e = Entry::new_normal(
                log_id(i),
                Command::Delete {
                    key: vec![i as u8],
                    stamp: crate::store::command::Stamp::wall(0),
                    request: None,
                },
            );
            batch.put_cf(cf(&s.db, CF_LOG), index_key(i), bincode_encode(&e).unwrap());
        }
        s.db.write_opt(batch, &synced()).unwrap();
    }

    /// A crash between recording a purge point and deleting the entries
    /// behind it leaves the purge point ahead of the last entry (openraft
    /// purges up to a snapshot it installed, which may be past the log).
    /// The reported state must still be one openraft accepts.
    #[tokio::test]
    async fn purge_point_ahead_of_the_log_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = store(dir.path());
            write_entries(&s, 3);
            // What the first of the two writes of a purge to index 10 leaves.
            s.put_meta(META_PURGED, &log_id(10), true).unwrap();
        }
        let mut s = store(dir.path());
        let state = s.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(10)));
        assert!(
            state.last_log_id >= state.last_purged_log_id,
            "last log id {:?} is below the purge point {:?}",
            state.last_log_id,
            state.last_purged_log_id
        );
        drop(s);

        // And Raft starts on it and keeps running.
        let db = crate::store::db::open(&dir.path().join("db")).unwrap();
        let keyspace = crate::store::Keyspace::new(db.clone());
        let sm = crate::store::StateMachine::open(keyspace.clone(), dir.path().join("snapshots"))
            .unwrap();
        let network =
            crate::raft::network::Network::new(Default::default(), keyspace, Default::default());
        let config = std::sync::Arc::new(openraft::Config::default().validate().unwrap());
        let raft = crate::raft::types::Raft::new(0, config, network, LogStore::new(db), sm)
            .await
            .expect("Raft starts");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let m = openraft::async_runtime::WatchReceiver::borrow_watched(&raft.metrics()).clone();
        assert!(
            m.running_state.is_ok(),
            "Raft stopped: {:?}",
            m.running_state
        );
        assert!(m.last_log_index >= Some(10), "{m:?}");
        raft.shutdown().await.unwrap();
    }

    /// Every append, vote, truncation and purge is fsynced (the WAL is
    /// synced) before openraft hears that it is done: a node that
    /// acknowledged an entry or promised a vote still holds it after a
    /// power loss. Counted from RocksDB's own statistics.
    #[tokio::test]
    async fn appends_votes_truncations_and_purges_are_fsynced() {
        use rocksdb::statistics::Ticker;
        let dir = tempfile::tempdir().unwrap();
        let mut opts = crate::store::db::options();
        opts.enable_statistics();
        let mut s =
            LogStore::new(crate::store::db::open_with(&dir.path().join("db"), &opts).unwrap());
        let syncs = || opts.get_ticker_count(Ticker::WalFileSynced);
        let entry = |i: u64| {
            Entry::new_normal(
                log_id(i),
                Command::Delete {
                    key: vec![i as u8],
                    stamp: crate::store::command::Stamp::wall(0),
                    request: None,
                },
            )
        };

        let before = syncs();
        let (tx, rx) = <TypeConfig as openraft::type_config::TypeConfigExt>::oneshot();
        let callback = IOFlushed::<TypeConfig>::signal(tx);
        s.append([entry(1), entry(2), entry(3)], callback)
            .await
            .unwrap();
        rx.await.unwrap().unwrap();
        assert_eq!(
            syncs(),
            before + 1,
            "an append was not fsynced before openraft heard of it"
        );

        let before = syncs();
        s.save_vote(&Vote::new(2, 0)).await.unwrap();
        assert_eq!(syncs(), before + 1, "a vote was not fsynced");

        let before = syncs();
        s.truncate_after(Some(log_id(2))).await.unwrap();
        assert_eq!(syncs(), before + 1, "a truncation was not fsynced");

        let before = syncs();
        s.purge(log_id(1)).await.unwrap();
        assert_eq!(syncs(), before + 1, "a purge was not fsynced");

        // The committed index is not synced (see save_committed): the
        // counter does move for a write that is.
        let before = syncs();
        s.save_committed(Some(log_id(2))).await.unwrap();
        assert_eq!(syncs(), before, "save_committed is documented as unsynced");
    }

    /// A purge records its point and deletes the entries in one synced write.
    #[tokio::test]
    async fn purge_removes_entries_and_records_the_point_together() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path());
        write_entries(&s, 5);
        s.purge(log_id(3)).await.unwrap();
        drop(s);
        let mut s = store(dir.path());
        let state = s.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(3)));
        assert_eq!(state.last_log_id, Some(log_id(5)));
        let entries = s.try_get_log_entries(0..20).await.unwrap();
        let indexes: Vec<u64> = entries.iter().map(|e| e.index()).collect();
        assert_eq!(indexes, vec![4, 5]);
    }

    /// A replication message is bounded by bytes as well as by entries:
    /// ten Saves of 1 MiB each come out three at a time (four and their
    /// headers would pass 4 MiB), and
    /// an entry larger than the budget still goes out on its own.
    #[tokio::test]
    async fn replication_reads_are_bounded_by_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path());
        let big = |i: u64| {
            Entry::new_normal(
                log_id(i),
                Command::Save {
                    key: vec![i as u8],
                    value: vec![7u8; 1024 * 1024],
                    ttl_ms: 1000,
                    stamp: crate::store::command::Stamp::wall(0),
                    request: None,
                },
            )
        };
        s.append((1..=10).map(big), IOFlushed::noop())
            .await
            .unwrap();

        let sent = s.limited_get_log_entries(1, 11).await.unwrap();
        let indexes: Vec<u64> = sent.iter().map(|e| e.index()).collect();
        assert_eq!(indexes, vec![1, 2, 3]);
        let next = s.limited_get_log_entries(4, 11).await.unwrap();
        assert_eq!(next.first().map(|e| e.index()), Some(4));
        assert_eq!(next.len(), 3);
        let tail = s.limited_get_log_entries(10, 11).await.unwrap();
        assert_eq!(tail.len(), 1, "the range's last entry is read");

        // Without a budget (openraft's own reads), the whole range.
        assert_eq!(s.try_get_log_entries(1..11).await.unwrap().len(), 10);
        // One entry over the budget is read alone, never skipped.
        let alone = s.read_entries(2..11, 1000).unwrap();
        assert_eq!(alone.iter().map(|e| e.index()).collect::<Vec<_>>(), vec![2]);
    }
}
