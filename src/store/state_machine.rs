//! The Raft state machine: applies committed entries to the [`Keyspace`],
//! records the last applied log id and membership in the same atomic write,
//! and builds and installs snapshots.
//!
//! It knows nothing of gRPC: it sees [`Command`]s and returns [`Applied`]s.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use rocksdb::{WriteBatch, WriteOptions};

use super::cluster_id::{format_id, Adopted, ClusterId};
use super::command::{Applied, Command};
use super::db::{cf, CF_SM_META};
use super::keyspace::{Keyspace, META_CLOCK};
use super::snapshot::{
    self, bincode_decode, bincode_encode, SnapshotDir, META_APPLIED, META_INSTALLING,
    META_MEMBERSHIP,
};
use super::types::{LogId, SnapshotMeta, StoredMembership, TypeConfig};
use crate::metrics;

type Snapshot = openraft::alias::SnapshotOf<TypeConfig, File>;

/// The replicated clock moved: reported after an entry that carried a
/// stamp was applied and advanced the clock. Not part of the replicated
/// state; a node uses it to predict the cluster time from its monotonic
/// clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockSeen {
    /// The entry's log index.
    pub index: u64,
    /// The replicated clock after the entry, ms since the Unix epoch.
    pub clock_ms: u64,
    /// The node that stamped the entry.
    pub stamped_by: u64,
}

/// Called with every [`ClockSeen`], right after the entry was applied.
pub type ClockObserver = std::sync::Arc<dyn Fn(ClockSeen) + Send + Sync>;

/// The replicated state machine of one node.
pub struct StateMachine {
    keyspace: Keyspace,
    snapshots: Arc<SnapshotDir>,
    clock: u64,
    on_clock: Option<ClockObserver>,
    cluster_id: Option<ClusterId>,
}

impl StateMachine {
    /// Opens the state machine over `keyspace`, keeping snapshots in
    /// `snapshot_dir`. A snapshot install that a crash cut short is rolled
    /// back to an empty state machine, which openraft then restores from the
    /// current snapshot and the log.
    pub fn open(keyspace: Keyspace, snapshot_dir: PathBuf) -> io::Result<Self> {
        let snapshots = Arc::new(SnapshotDir::open(snapshot_dir)?);
        let db = keyspace.db().clone();
        let meta = cf(&db, CF_SM_META);
        if db
            .get_cf(meta, META_INSTALLING)
            .map_err(io::Error::other)?
            .is_some()
        {
            tracing::warn!(
                "an interrupted snapshot install was found; resetting the state machine"
            );
            let mut batch = WriteBatch::default();
            keyspace.clear(&mut batch)?;
            batch.delete_cf(meta, META_APPLIED);
            batch.delete_cf(meta, META_MEMBERSHIP);
            batch.delete_cf(meta, META_INSTALLING);
            db.write_opt(batch, &synced()).map_err(io::Error::other)?;
        }
        let clock = keyspace.clock()?;
        Ok(StateMachine {
            keyspace,
            snapshots,
            clock,
            on_clock: None,
            cluster_id: None,
        })
    }

    /// Keeps `cluster_id` (this node's) in step with the replicated one: a
    /// node that has none adopts the id the cluster recorded, now if it is
    /// already applied, otherwise when it applies or installs it.
    pub fn with_cluster_id(mut self, cluster_id: ClusterId) -> io::Result<Self> {
        self.cluster_id = Some(cluster_id);
        self.adopt_replicated_cluster_id()?;
        Ok(self)
    }

    /// Adopts the cluster id recorded in the replicated state, if any, as
    /// this node's own when it has none.
    fn adopt_replicated_cluster_id(&self) -> io::Result<()> {
        let Some(local) = &self.cluster_id else {
            return Ok(());
        };
        let Some(recorded) = self.keyspace.cluster_id()? else {
            return Ok(());
        };
        match local.adopt(recorded)? {
            Adopted::Same => {}
            Adopted::New => tracing::info!(
                cluster_id = %format_id(recorded),
                "adopted the cluster id recorded in the replicated state"
            ),
            Adopted::Other(ours) => tracing::error!(
                "the cluster's replicated state records cluster id {} but this data directory \
                 belongs to cluster {}; this node keeps its own id",
                format_id(recorded),
                format_id(ours)
            ),
        }
        Ok(())
    }

    /// Reports every move of the replicated clock to `observer`.
    pub fn observe_clock(mut self, observer: ClockObserver) -> Self {
        self.on_clock = Some(observer);
        self
    }

    /// The keyspace this state machine applies to (for reads).
    pub fn keyspace(&self) -> &Keyspace {
        &self.keyspace
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        let db = self.keyspace.db();
        db.get_cf(cf(db, CF_SM_META), key)
            .map_err(io::Error::other)?
            .map(|b| bincode_decode(&b))
            .transpose()
    }
}

impl StateMachine {
    /// Whether `node` is in the last membership this state machine applied.
    fn is_member(&self, node: u64) -> io::Result<bool> {
        let membership: Option<StoredMembership> = self.read_meta(META_MEMBERSHIP)?;
        Ok(membership.is_some_and(|m| m.membership().get_node(&node).is_some()))
    }
}

fn synced() -> WriteOptions {
    let mut o = WriteOptions::default();
    o.set_sync(true);
    o
}

/// Builds snapshots from a consistent view of the database.
pub struct SnapshotBuilder {
    keyspace: Keyspace,
    snapshots: Arc<SnapshotDir>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = File;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let db = self.keyspace.db().clone();
        let snapshots = self.snapshots.clone();
        let timer = metrics::SNAPSHOT_BUILD_SECONDS.start_timer();
        let (meta, file) = tokio::task::spawn_blocking(move || {
            // Everything the snapshot covers must be durable before openraft
            // purges the log behind it.
            db.flush_wal(true).map_err(io::Error::other)?;
            snapshots.build(&db)
        })
        .await
        .map_err(io::Error::other)??;
        timer.observe_duration();
        metrics::SNAPSHOT_BUILDS.inc();
        record_snapshot_size(&file);
        tracing::info!(last_log_id = ?meta.last_log_id, "snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: file,
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = File;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let applied = self.read_meta(META_APPLIED)?;
        let membership = self.read_meta(META_MEMBERSHIP)?.unwrap_or_default();
        Ok((applied, membership))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let db = self.keyspace.db().clone();
        let meta = cf(&db, CF_SM_META);
        // State-machine writes need no fsync: the log is durable, and the
        // last applied id is written atomically with the data, so after a
        // crash openraft re-applies whatever did not reach the disk.
        let mut opts = WriteOptions::default();
        opts.set_sync(false);
        while let Some((entry, responder)) = entries.try_next().await? {
            let mut batch = WriteBatch::default();
            let mut seen = None;
            let sets_cluster_id = matches!(
                &entry.payload,
                EntryPayload::Normal(Command::SetClusterId { .. })
            );
            let result = match &entry.payload {
                EntryPayload::Blank => Applied::Nothing,
                // An incarnation is recorded only for a current member: a
                // Register proposed just before its member was removed
                // must not block the id for good.
                EntryPayload::Normal(Command::Register { node, .. })
                    if !self.is_member(*node)? =>
                {
                    Applied::Registered { recorded: false }
                }
                EntryPayload::Normal(cmd) => {
                    let (result, clock) = self.keyspace.apply(&mut batch, cmd, self.clock)?;
                    if let Applied::Purged { count, .. } = result {
                        metrics::PURGED_VALUES.inc_by(u64::from(count));
                    }
                    if let (true, Some(stamp)) = (clock > self.clock, cmd.stamp()) {
                        seen = Some(ClockSeen {
                            index: entry.log_id.index,
                            clock_ms: clock,
                            stamped_by: stamp.node,
                        });
                    }
                    self.clock = clock;
                    result
                }
                EntryPayload::Membership(m) => {
                    let stored = StoredMembership::new(Some(entry.log_id), m.clone());
                    batch.put_cf(meta, META_MEMBERSHIP, bincode_encode(&stored)?);
                    // Members this configuration drops lose their recorded
                    // incarnation in the same write, so their ids can be
                    // given to new, empty nodes.
                    let members: BTreeSet<u64> = m.nodes().map(|(id, _)| *id).collect();
                    self.keyspace.forget_members_except(&mut batch, &members)?;
                    Applied::Nothing
                }
            };
            batch.put_cf(meta, META_APPLIED, bincode_encode(&entry.log_id)?);
            db.write_opt(batch, &opts).map_err(io::Error::other)?;
            if sets_cluster_id {
                self.adopt_replicated_cluster_id()?;
            }
            if let (Some(seen), Some(observer)) = (seen, &self.on_clock) {
                observer(seen);
            }
            if let Some(responder) = responder {
                responder.send(result);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            keyspace: self.keyspace.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        mut snapshot: File,
    ) -> Result<(), io::Error> {
        let ks = self.keyspace.clone();
        let snapshots = self.snapshots.clone();
        let expected = meta.clone();
        let timer = metrics::SNAPSHOT_INSTALL_SECONDS.start_timer();
        record_snapshot_size(&snapshot);
        let clock = tokio::task::spawn_blocking(move || -> io::Result<u64> {
            // Verified whole before anything changes; the adopted copy is
            // kept first, so that a crash mid-load can be recovered from it.
            snapshots.install(&mut snapshot, &expected, |file, verified| {
                tracing::info!(
                    last_log_id = ?expected.last_log_id,
                    records = verified.records,
                    bytes = verified.bytes,
                    "snapshot verified; loading it"
                );
                load(&ks, file, &expected)
            })
        })
        .await
        .map_err(io::Error::other)??;
        self.clock = clock;
        self.adopt_replicated_cluster_id()?;
        timer.observe_duration();
        metrics::SNAPSHOT_INSTALLS.inc();
        tracing::info!(last_log_id = ?meta.last_log_id, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let snapshots = self.snapshots.clone();
        let db = self.keyspace.db().clone();
        let current = tokio::task::spawn_blocking(move || snapshots.current(&db))
            .await
            .map_err(io::Error::other)??;
        Ok(current.map(|(meta, file)| Snapshot {
            meta,
            snapshot: file,
        }))
    }
}

/// Replaces the keyspace with the records of a verified snapshot file and
/// records its metadata; returns its clock. A marker brackets the load, so a
/// crash in the middle is recognised at the next start.
fn load(ks: &Keyspace, file: &mut File, expected: &SnapshotMeta) -> io::Result<u64> {
    let db = ks.db().clone();
    let meta_cf = cf(&db, CF_SM_META);
    db.put_cf_opt(meta_cf, META_INSTALLING, [], &synced())
        .map_err(io::Error::other)?;
    let mut batch = WriteBatch::default();
    ks.clear(&mut batch)?;
    db.write(batch).map_err(io::Error::other)?;

    let mut batch = WriteBatch::default();
    let (found, clock) = snapshot::read(file, |k, v| {
        ks.put_raw(&mut batch, k, v)?;
        if batch.len() >= 4096 {
            db.write(std::mem::take(&mut batch))
                .map_err(io::Error::other)?;
        }
        Ok(())
    })?;
    if &found != expected {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "snapshot metadata does not match the file",
        ));
    }
    if let Some(applied) = &expected.last_log_id {
        batch.put_cf(meta_cf, META_APPLIED, bincode_encode(applied)?);
    } else {
        batch.delete_cf(meta_cf, META_APPLIED);
    }
    batch.put_cf(
        meta_cf,
        META_MEMBERSHIP,
        bincode_encode(&expected.last_membership)?,
    );
    batch.put_cf(meta_cf, META_CLOCK, clock.to_be_bytes());
    batch.delete_cf(meta_cf, META_INSTALLING);
    db.write_opt(batch, &synced()).map_err(io::Error::other)?;
    Ok(clock)
}

/// Reads every state-machine record a node reads when it starts (the last
/// applied log id, the membership, the clock, the cluster id and the
/// member records) and fails, naming the record, on the first that does
/// not decode: a node must not start on garbage it would misread.
pub fn verify(keyspace: &Keyspace) -> io::Result<()> {
    let db = keyspace.db();
    let meta = cf(db, CF_SM_META);
    let read = |key: &[u8]| db.get_cf(meta, key).map_err(io::Error::other);
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the {what} record (column family {CF_SM_META}) is not valid: {e}"),
        )
    };
    if let Some(b) = read(META_APPLIED)? {
        snapshot::bincode_decode_whole::<LogId>(&b).map_err(|e| bad("last applied log id", &e))?;
    }
    if let Some(b) = read(META_MEMBERSHIP)? {
        snapshot::bincode_decode_whole::<StoredMembership>(&b)
            .map_err(|e| bad("membership", &e))?;
    }
    keyspace.verify_system_records().map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a record of the replicated state is not valid: {e}"),
        )
    })?;
    Ok(())
}

/// The index of the last entry applied to `keyspace`, read from storage.
pub fn applied_index(keyspace: &Keyspace) -> Option<u64> {
    let db = keyspace.db();
    db.get_cf(cf(db, CF_SM_META), META_APPLIED)
        .ok()
        .flatten()
        .and_then(|b| bincode_decode::<LogId>(&b).ok())
        .map(|l| l.index)
}

/// Records the size of a snapshot file this node now serves.
fn record_snapshot_size(file: &File) {
    if let Ok(m) = file.metadata() {
        metrics::SNAPSHOT_BYTES.set(i64::try_from(m.len()).unwrap_or(i64::MAX));
    }
}
