//! The cluster id: a random number chosen once, when a cluster is
//! initialized, that tells one cluster's nodes from another's.
//!
//! Every node keeps the id of its cluster in its data directory (the
//! `cluster_id` record of the `log_meta` column family, written with an
//! fsync), so that it knows its cluster before it applies anything. The
//! cluster also keeps the id in its replicated state (a system record in
//! `data`, written by [`Command::SetClusterId`](crate::store::Command)), so
//! that it is in every snapshot and every member can learn it from the log.
//!
//! A node learns its cluster id in one of three ways:
//! - the node that initializes a cluster chooses it;
//! - a node with an empty data directory adopts the id of the leader that
//!   first replicates to it, before it acknowledges anything;
//! - a data directory written by an older version, which has no id, adopts
//!   the replicated id when it applies (or installs) it.
//!
//! Once known, the id never changes. Peer messages carry the sender's id,
//! and a node refuses those that name another cluster ([`admits`]).

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rocksdb::{WriteBatch, WriteOptions, DB};

use super::db::{cf, CF_LOG_META};

/// Key of this data directory's cluster id in `log_meta`.
pub const META_CLUSTER_ID: &[u8] = b"cluster_id";

/// Whether a node whose own cluster id is `local` (`None`: it knows none
/// yet) accepts a message from a node of cluster `remote` (0: the sender
/// knows none). Only two known, different ids are a mismatch: a node that
/// knows no id yet can tell no stranger apart.
pub fn admits(local: Option<u64>, remote: u64) -> bool {
    match local {
        Some(ours) => remote == 0 || remote == ours,
        None => true,
    }
}

/// How a cluster id is shown: 16 lower-case hex digits.
pub fn format_id(id: u64) -> String {
    format!("{id:016x}")
}

/// Parses an id as [`format_id`] shows it (1 to 16 hex digits, not 0).
pub fn parse_id(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    u64::from_str_radix(s, 16).ok().filter(|id| *id != 0)
}

/// What [`ClusterId::adopt`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Adopted {
    /// The node knew no id; it now has this one, durably.
    New,
    /// The node already had this id.
    Same,
    /// The node already belongs to another cluster, whose id this is.
    Other(u64),
}

/// This node's cluster id, as known in memory and kept in its data
/// directory. Cheap to clone: clones share it.
#[derive(Clone, Default)]
pub struct ClusterId {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Where the id is kept; `None` keeps it in memory only (tests).
    db: Option<Arc<DB>>,
    /// The id, 0 while unknown.
    current: AtomicU64,
    /// Serialises adoptions, so two can never store different ids.
    adopting: Mutex<()>,
}

impl ClusterId {
    /// Reads the id kept in `db`, if any.
    pub fn load(db: Arc<DB>) -> io::Result<ClusterId> {
        let current = read(&db)?.unwrap_or(0);
        Ok(ClusterId {
            inner: Arc::new(Inner {
                db: Some(db),
                current: AtomicU64::new(current),
                adopting: Mutex::new(()),
            }),
        })
    }

    /// The id, if this node knows one.
    pub fn get(&self) -> Option<u64> {
        match self.inner.current.load(Ordering::Acquire) {
            0 => None,
            id => Some(id),
        }
    }

    /// The id for a message: 0 while unknown.
    pub fn wire(&self) -> u64 {
        self.inner.current.load(Ordering::Acquire)
    }

    /// Takes `id` as this node's cluster id if it has none: kept durably
    /// (fsynced) before this returns. An id already known is never
    /// replaced.
    pub fn adopt(&self, id: u64) -> io::Result<Adopted> {
        if id == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "0 is not a cluster id",
            ));
        }
        let _guard = self
            .inner
            .adopting
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match self.get() {
            Some(ours) if ours == id => return Ok(Adopted::Same),
            Some(ours) => return Ok(Adopted::Other(ours)),
            None => {}
        }
        if let Some(db) = &self.inner.db {
            let mut batch = WriteBatch::default();
            batch.put_cf(cf(db, CF_LOG_META), META_CLUSTER_ID, id.to_be_bytes());
            let mut opts = WriteOptions::default();
            opts.set_sync(true);
            db.write_opt(batch, &opts).map_err(|e| {
                io::Error::other(format!(
                    "storing cluster id {} in the data directory: {e}",
                    format_id(id)
                ))
            })?;
        }
        self.inner.current.store(id, Ordering::Release);
        Ok(Adopted::New)
    }
}

/// The cluster id kept in `db`, if any; an error if the record is not one.
pub fn read(db: &DB) -> io::Result<Option<u64>> {
    let Some(raw) = db
        .get_cf(cf(db, CF_LOG_META), META_CLUSTER_ID)
        .map_err(io::Error::other)?
    else {
        return Ok(None);
    };
    let bytes: [u8; 8] = raw.as_slice().try_into().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the cluster id record holds {} bytes, not 8",
                raw.as_slice().len()
            ),
        )
    })?;
    match u64::from_be_bytes(bytes) {
        0 => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the cluster id record holds 0",
        )),
        id => Ok(Some(id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_two_known_different_ids_are_a_mismatch() {
        assert!(admits(Some(7), 7));
        assert!(!admits(Some(7), 8));
        // The sender knows no id yet (an empty node, an older version).
        assert!(admits(Some(7), 0));
        // This node knows none yet: it cannot tell.
        assert!(admits(None, 8));
        assert!(admits(None, 0));
    }

    #[test]
    fn ids_are_shown_and_parsed_as_hex() {
        assert_eq!(format_id(0xab), "00000000000000ab");
        assert_eq!(parse_id("00000000000000ab"), Some(0xab));
        assert_eq!(parse_id("AB"), Some(0xab));
        assert_eq!(parse_id(""), None);
        assert_eq!(parse_id("0"), None);
        assert_eq!(parse_id("xyz"), None);
        assert_eq!(parse_id("10000000000000000"), None);
    }

    #[test]
    fn an_id_is_adopted_once_durably_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let id = ClusterId::load(crate::store::db::open(&path).unwrap()).unwrap();
            assert_eq!(id.get(), None);
            assert_eq!(id.wire(), 0);
            assert_eq!(id.adopt(5).unwrap(), Adopted::New);
            assert_eq!(id.adopt(5).unwrap(), Adopted::Same);
            assert_eq!(id.adopt(6).unwrap(), Adopted::Other(5));
            assert!(id.adopt(0).is_err());
            assert_eq!(id.get(), Some(5));
        }
        let id = ClusterId::load(crate::store::db::open(&path).unwrap()).unwrap();
        assert_eq!(id.get(), Some(5), "the id did not survive a restart");
    }
}
