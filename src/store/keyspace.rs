//! The replicated keyspace: values with absolute deadlines, an expiry index
//! ordered by deadline, and the logical clock (the highest time stamp any
//! applied entry carried).
//!
//! [`Keyspace::apply`] turns one [`Command`] into writes on a RocksDB
//! [`WriteBatch`]; it is deterministic and never reads the local clock, so
//! every replica that applies the same log holds the same bytes. Reads take
//! the caller's clock and hide anything at or past its deadline, whether or
//! not the purge that removes it has been applied yet.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rocksdb::{DBIteratorWithThreadMode, Direction, IteratorMode, ReadOptions, WriteBatch, DB};
use sha2::{Digest, Sha256};

use super::command::{Applied, Command};
use super::db::{cf, CF_DATA, CF_EXPIRY, CF_SM_META};
use super::snapshot::{bincode_decode, bincode_encode};

/// Key of the logical clock in the state-machine metadata.
pub(crate) const META_CLOCK: &[u8] = b"clock";

/// Errors from the keyspace: storage failures or corrupt bytes.
#[derive(Debug, thiserror::Error)]
pub enum KeyspaceError {
    /// RocksDB failed.
    #[error("storage error: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// Stored bytes did not have the expected shape.
    #[error("corrupt stored record: {0}")]
    Corrupt(&'static str),
}

impl From<KeyspaceError> for std::io::Error {
    fn from(e: KeyspaceError) -> Self {
        std::io::Error::other(e)
    }
}

/// A value as stored: its deadline and its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// Absolute deadline, ms since the Unix epoch. Visible while `now < deadline_ms`.
    pub deadline_ms: u64,
    /// The value bytes.
    pub value: Vec<u8>,
}

/// How long, and how many, request ids the state machine remembers. Every
/// replica must use the same policy (it shapes the replicated state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionPolicy {
    /// A request id is remembered for this long of replicated time after
    /// the write it named: 5 minutes.
    pub window_ms: u64,
    /// At most this many request ids are remembered (the oldest is
    /// forgotten first): 100,000.
    pub max_records: u64,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        SessionPolicy {
            window_ms: 5 * 60 * 1000,
            max_records: 100_000,
        }
    }
}

/// Handle to the replicated keyspace inside the node's database.
#[derive(Clone)]
pub struct Keyspace {
    db: Arc<DB>,
    sessions: SessionPolicy,
    marks: Arc<Marks>,
}

/// Where the removed front of each time-ordered index ends.
///
/// Purges remove values earliest deadline first and request-id records
/// oldest first, so what they removed lies at the front of each index as
/// deleted entries until RocksDB compacts them away; a scan from the start
/// would step over all of them every time (once the request-id table is
/// full, on every write). Scans start at the mark instead. Nothing is ever
/// added below a mark: new deadlines and record expiries are at least the
/// replicated clock, which is at least anything purged. The marks live in
/// memory only: after a restart or a snapshot install they start at zero,
/// so they change how far a scan reads, never what it finds.
#[derive(Debug, Default)]
struct Marks {
    /// No expiry index entry has a deadline below this.
    expiry_from: AtomicU64,
    /// No request-id record expires before this.
    sessions_from: AtomicU64,
}

impl Keyspace {
    /// Wraps the database opened by [`crate::store::db::open`].
    pub fn new(db: Arc<DB>) -> Self {
        Keyspace {
            db,
            sessions: SessionPolicy::default(),
            marks: Arc::default(),
        }
    }

    /// The same keyspace with another request-id policy (for tests).
    pub fn with_session_policy(mut self, policy: SessionPolicy) -> Self {
        self.sessions = policy;
        self
    }

    /// The database this keyspace lives in.
    pub fn db(&self) -> &Arc<DB> {
        &self.db
    }

    /// The highest time stamp any applied entry carried (0 before any).
    pub fn clock(&self) -> Result<u64, KeyspaceError> {
        match self.db.get_cf(cf(&self.db, CF_SM_META), META_CLOCK)? {
            None => Ok(0),
            Some(b) if b.len() == 8 => decode_u64(&b).ok_or(KeyspaceError::Corrupt("clock")),
            Some(_) => Err(KeyspaceError::Corrupt("clock")),
        }
    }

    /// The stored record for `key`, expired or not.
    pub fn get_raw(&self, key: &[u8]) -> Result<Option<Stored>, KeyspaceError> {
        match self.db.get_cf(cf(&self.db, CF_DATA), key)? {
            None => Ok(None),
            Some(b) => decode_stored(&b).map(Some),
        }
    }

    /// The live value for `key` at time `now_ms`: `None` if absent or if its
    /// deadline is at or before `max(now_ms, clock)`.
    pub fn get(&self, key: &[u8], now_ms: u64) -> Result<Option<Vec<u8>>, KeyspaceError> {
        let now = now_ms.max(self.clock()?);
        Ok(self
            .get_raw(key)?
            .filter(|s| now < s.deadline_ms)
            .map(|s| s.value))
    }

    /// Whether any value's deadline, or any request-id record's expiry, is
    /// at or before `now_ms` (cheap: reads the first entry of each index).
    pub fn has_expired(&self, now_ms: u64) -> Result<bool, KeyspaceError> {
        if let Some(item) = self.expiry_due(now_ms).next() {
            let (k, _) = item?;
            let deadline = decode_u64(&k).ok_or(KeyspaceError::Corrupt("expiry key"))?;
            if deadline <= now_ms {
                return Ok(true);
            }
        }
        Ok(self
            .oldest_session()?
            .is_some_and(|expires| expires <= now_ms))
    }

    /// The expiry index from its mark up to deadline `now_ms`, earliest
    /// first: neither the removed front nor the deleted entries of
    /// overwritten values due later are stepped over.
    fn expiry_due(&self, now_ms: u64) -> DBIteratorWithThreadMode<'_, DB> {
        let from = self.marks.expiry_from.load(Ordering::Relaxed).to_be_bytes();
        let mut opts = ReadOptions::default();
        if let Some(end) = now_ms.checked_add(1) {
            opts.set_iterate_upper_bound(end.to_be_bytes().to_vec());
        }
        self.db.iterator_cf_opt(
            cf(&self.db, CF_EXPIRY),
            opts,
            IteratorMode::From(&from, Direction::Forward),
        )
    }

    /// The request-id records' index from its mark, oldest first.
    fn session_index(&self) -> DBIteratorWithThreadMode<'_, DB> {
        let from = session_index_key(self.marks.sessions_from.load(Ordering::Relaxed), "");
        let mut end = SESSION_INDEX.to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(end);
        self.db.iterator_cf_opt(
            cf(&self.db, CF_DATA),
            opts,
            IteratorMode::From(&from, Direction::Forward),
        )
    }

    /// The number of request ids remembered.
    pub fn session_count(&self) -> Result<u64, KeyspaceError> {
        match self.get_raw(SESSION_COUNT)? {
            None => Ok(0),
            Some(s) => decode_u64(&s.value).ok_or(KeyspaceError::Corrupt("session count")),
        }
    }

    /// The result remembered for request id `id`, if any.
    pub fn session(&self, id: &str) -> Result<Option<Applied>, KeyspaceError> {
        match self.get_raw(&session_key(id))? {
            None => Ok(None),
            Some(s) => bincode_decode(&s.value)
                .map(Some)
                .map_err(|_| KeyspaceError::Corrupt("session record")),
        }
    }

    /// When the request-id record that expires first expires.
    fn oldest_session(&self) -> Result<Option<u64>, KeyspaceError> {
        match self.session_index().next() {
            Some(item) => {
                let (k, _) = item?;
                if !k.starts_with(SESSION_INDEX) {
                    return Ok(None);
                }
                let expires = decode_u64(&k[SESSION_INDEX.len()..])
                    .ok_or(KeyspaceError::Corrupt("session index key"))?;
                Ok(Some(expires))
            }
            None => Ok(None),
        }
    }

    /// Adds the writes that apply `cmd` to `batch`, given the clock before
    /// this entry; returns the result and the clock after it.
    ///
    /// `batch` must be written before the next call: reads here see only the
    /// database, not earlier unwritten batches.
    pub fn apply(
        &self,
        batch: &mut WriteBatch,
        cmd: &Command,
        clock: u64,
    ) -> Result<(Applied, u64), KeyspaceError> {
        let request = match cmd {
            Command::Save { request, .. } | Command::Delete { request, .. } => request.as_deref(),
            _ => None,
        };
        if let Some(id) = request {
            if let Some(first) = self.session(id)? {
                // A retry of a write that was applied: answer as the first
                // time, change nothing.
                return Ok((first, clock));
            }
        }
        let now = match cmd.stamp() {
            Some(stamp) => clock.max(stamp.time_ms()),
            None => clock,
        };
        if now != clock {
            batch.put_cf(cf(&self.db, CF_SM_META), META_CLOCK, now.to_be_bytes());
        }
        let result = self.apply_at(batch, cmd, now)?;
        if let Some(id) = request {
            self.remember(batch, id, &result, now)?;
        }
        Ok((result, now))
    }

    /// Applies `cmd` at replicated time `now` (the clock is already written).
    fn apply_at(
        &self,
        batch: &mut WriteBatch,
        cmd: &Command,
        now: u64,
    ) -> Result<Applied, KeyspaceError> {
        let data = cf(&self.db, CF_DATA);
        let expiry = cf(&self.db, CF_EXPIRY);
        match cmd {
            Command::Save {
                key, value, ttl_ms, ..
            } => {
                let deadline_ms = now.saturating_add(*ttl_ms);
                if let Some(old) = self.get_raw(key)? {
                    batch.delete_cf(expiry, expiry_key(old.deadline_ms, key));
                }
                batch.put_cf(data, key, encode_stored(deadline_ms, value));
                batch.put_cf(expiry, expiry_key(deadline_ms, key), []);
                Ok(Applied::Saved { deadline_ms })
            }
            Command::Delete { key, .. } => {
                let existed = match self.get_raw(key)? {
                    Some(old) => {
                        batch.delete_cf(expiry, expiry_key(old.deadline_ms, key));
                        batch.delete_cf(data, key);
                        true
                    }
                    None => false,
                };
                Ok(Applied::Deleted { existed })
            }
            Command::Register { node, incarnation } => {
                let key = member_key(*node);
                if self.get_raw(&key)?.is_some() {
                    return Ok(Applied::Registered { recorded: false });
                }
                batch.put_cf(
                    data,
                    key,
                    encode_stored(u64::MAX, &incarnation.to_be_bytes()),
                );
                Ok(Applied::Registered { recorded: true })
            }
            Command::Forget { node } => {
                let key = member_key(*node);
                let existed = self.get_raw(&key)?.is_some();
                batch.delete_cf(data, key);
                Ok(Applied::Forgotten { existed })
            }
            Command::SetClusterId { id } => {
                if self.get_raw(CLUSTER_ID_KEY)?.is_some() {
                    return Ok(Applied::ClusterId { recorded: false });
                }
                batch.put_cf(
                    data,
                    CLUSTER_ID_KEY,
                    encode_stored(u64::MAX, &id.to_be_bytes()),
                );
                Ok(Applied::ClusterId { recorded: true })
            }
            Command::Purge { limit, .. } => {
                let mut count = 0u32;
                let mut last = None;
                for item in self.expiry_due(now) {
                    if count >= *limit {
                        break;
                    }
                    let (k, _) = item?;
                    let deadline = decode_u64(&k).ok_or(KeyspaceError::Corrupt("expiry key"))?;
                    if deadline > now {
                        break;
                    }
                    batch.delete_cf(expiry, &k);
                    batch.delete_cf(data, &k[8..]);
                    last = Some(deadline);
                    count += 1;
                }
                if let Some(deadline) = last {
                    self.marks
                        .expiry_from
                        .fetch_max(deadline, Ordering::Relaxed);
                }
                let sessions = self.forget_sessions(batch, *limit, |expires| expires <= now)?;
                if sessions > 0 {
                    let left = self.session_count()?.saturating_sub(u64::from(sessions));
                    put_session_count(batch, data, left);
                }
                Ok(Applied::Purged { count, sessions })
            }
        }
    }

    /// Records that request `id` had `result`, until `now` plus the
    /// window, and evicts the oldest record if the table is full.
    fn remember(
        &self,
        batch: &mut WriteBatch,
        id: &str,
        result: &Applied,
        now: u64,
    ) -> Result<(), KeyspaceError> {
        let data = cf(&self.db, CF_DATA);
        let expires = now.saturating_add(self.sessions.window_ms);
        let encoded =
            bincode_encode(result).map_err(|_| KeyspaceError::Corrupt("session result"))?;
        batch.put_cf(data, session_key(id), encode_stored(expires, &encoded));
        batch.put_cf(
            data,
            session_index_key(expires, id),
            encode_stored(u64::MAX, &[]),
        );
        let mut count = self.session_count()? + 1;
        if count > self.sessions.max_records {
            // The oldest record in the database (the new one is only in the
            // batch, and expires last anyway).
            count -= u64::from(self.forget_sessions(batch, 1, |_| true)?);
        }
        put_session_count(batch, data, count);
        Ok(())
    }

    /// Removes up to `limit` request-id records, oldest first, while
    /// `expired(expiry)` holds; returns how many (the caller updates the
    /// count).
    fn forget_sessions(
        &self,
        batch: &mut WriteBatch,
        limit: u32,
        expired: impl Fn(u64) -> bool,
    ) -> Result<u32, KeyspaceError> {
        let data = cf(&self.db, CF_DATA);
        let mut removed = 0u32;
        let mut last = None;
        for item in self.session_index() {
            if removed >= limit {
                break;
            }
            let (k, _) = item?;
            if !k.starts_with(SESSION_INDEX) {
                break;
            }
            let rest = &k[SESSION_INDEX.len()..];
            let expires = decode_u64(rest).ok_or(KeyspaceError::Corrupt("session index key"))?;
            if !expired(expires) {
                break;
            }
            let id = std::str::from_utf8(&rest[8..])
                .map_err(|_| KeyspaceError::Corrupt("session index key"))?;
            batch.delete_cf(data, &k);
            batch.delete_cf(data, session_key(id));
            last = Some(expires);
            removed += 1;
        }
        if let Some(expires) = last {
            self.marks
                .sessions_from
                .fetch_max(expires, Ordering::Relaxed);
        }
        Ok(removed)
    }

    /// The incarnation on record for member `node`, if any.
    pub fn member_incarnation(&self, node: u64) -> Result<Option<u64>, KeyspaceError> {
        match self.get_raw(&member_key(node))? {
            None => Ok(None),
            Some(s) => decode_u64(&s.value)
                .map(Some)
                .ok_or(KeyspaceError::Corrupt("member record")),
        }
    }

    /// The cluster id on record in the replicated state, if any.
    pub fn cluster_id(&self) -> Result<Option<u64>, KeyspaceError> {
        match self.get_raw(CLUSTER_ID_KEY)? {
            None => Ok(None),
            Some(s) => match decode_u64(&s.value) {
                Some(id) if id != 0 && s.value.len() == 8 => Ok(Some(id)),
                _ => Err(KeyspaceError::Corrupt("cluster id record")),
            },
        }
    }

    /// Reads every system record the node reads at start or on every
    /// message (the cluster id, member incarnations, the request-id count)
    /// and the clock, and fails on the first that does not have its shape.
    pub fn verify_system_records(&self) -> Result<(), KeyspaceError> {
        self.clock()?;
        self.cluster_id()?;
        self.session_count()?;
        let data = cf(&self.db, CF_DATA);
        let prefix = member_key_prefix();
        for item in self
            .db
            .iterator_cf(data, IteratorMode::From(&prefix, Direction::Forward))
        {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            if k.len() != prefix.len() + 8 || v.len() != 16 {
                return Err(KeyspaceError::Corrupt("member record"));
            }
        }
        Ok(())
    }

    /// Adds writes that drop the incarnation record of every member not in
    /// `members`; returns how many records it drops. Applied with each
    /// membership change, so removing a member and forgetting its
    /// incarnation are one log entry.
    pub fn forget_members_except(
        &self,
        batch: &mut WriteBatch,
        members: &std::collections::BTreeSet<u64>,
    ) -> Result<u32, KeyspaceError> {
        let data = cf(&self.db, CF_DATA);
        let prefix = member_key_prefix();
        let mut dropped = 0;
        for item in self
            .db
            .iterator_cf(data, IteratorMode::From(&prefix, Direction::Forward))
        {
            let (k, _) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            let node =
                decode_u64(&k[prefix.len()..]).ok_or(KeyspaceError::Corrupt("member key"))?;
            if !members.contains(&node) {
                batch.delete_cf(data, &k);
                dropped += 1;
            }
        }
        Ok(dropped)
    }

    /// Visits every stored record (expired ones included) in key order, from
    /// a consistent point-in-time view.
    pub fn for_each(
        &self,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<(), KeyspaceError>,
    ) -> Result<(), KeyspaceError> {
        let snap = self.db.snapshot();
        for item in snap.iterator_cf(cf(&self.db, CF_DATA), IteratorMode::Start) {
            let (k, v) = item?;
            f(&k, &v)?;
        }
        Ok(())
    }

    /// A digest of every record and the clock, and the number of client
    /// values (member records are digested but not counted): equal on
    /// replicas that applied the same entries.
    pub fn digest(&self) -> Result<(String, u64), KeyspaceError> {
        let mut h = Sha256::new();
        let mut n = 0u64;
        h.update(self.clock()?.to_be_bytes());
        self.for_each(|k, v| {
            h.update((k.len() as u64).to_be_bytes());
            h.update(k);
            h.update((v.len() as u64).to_be_bytes());
            h.update(v);
            if k.first() != Some(&SYSTEM_TAG) {
                n += 1;
            }
            Ok(())
        })?;
        let hex = h
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        Ok((hex, n))
    }

    /// Adds writes that remove every record, index entry and the clock.
    pub fn clear(&self, batch: &mut WriteBatch) -> Result<(), KeyspaceError> {
        for name in [CF_DATA, CF_EXPIRY] {
            let handle = cf(&self.db, name);
            let mut it = self.db.iterator_cf(handle, IteratorMode::End);
            if let Some(item) = it.next() {
                let (last, _) = item?;
                let mut end = last.to_vec();
                end.push(0);
                batch.delete_range_cf(handle, Vec::<u8>::new(), end);
            }
        }
        batch.delete_cf(cf(&self.db, CF_SM_META), META_CLOCK);
        self.marks.expiry_from.store(0, Ordering::Relaxed);
        self.marks.sessions_from.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// Adds writes that store one raw record (as produced by [`Keyspace::for_each`]).
    pub fn put_raw(
        &self,
        batch: &mut WriteBatch,
        key: &[u8],
        raw: &[u8],
    ) -> Result<(), KeyspaceError> {
        let stored = decode_stored(raw)?;
        batch.put_cf(cf(&self.db, CF_DATA), key, raw);
        if key.first() == Some(&SYSTEM_TAG) {
            return Ok(());
        }
        batch.put_cf(
            cf(&self.db, CF_EXPIRY),
            expiry_key(stored.deadline_ms, key),
            [],
        );
        Ok(())
    }

    /// The deadlines of the first `limit` index entries, oldest first (for tests and status).
    pub fn earliest_deadlines(&self, limit: usize) -> Result<Vec<u64>, KeyspaceError> {
        let mut out = Vec::new();
        let from = self.marks.expiry_from.load(Ordering::Relaxed).to_be_bytes();
        for item in self.db.iterator_cf(
            cf(&self.db, CF_EXPIRY),
            IteratorMode::From(&from, Direction::Forward),
        ) {
            if out.len() >= limit {
                break;
            }
            let (k, _) = item?;
            out.push(decode_u64(&k).ok_or(KeyspaceError::Corrupt("expiry key"))?);
        }
        Ok(out)
    }
}

/// First byte of system records in the data column family (member
/// incarnations, request-id records and their index); client locations
/// start with 1, 2 or 3 (see [`crate::store::Location::encode`]).
const SYSTEM_TAG: u8 = 0;

/// The record of a member's incarnation. It never expires, so it is not in
/// the expiry index.
fn member_key(node: u64) -> Vec<u8> {
    let mut k = member_key_prefix();
    k.extend_from_slice(&node.to_be_bytes());
    k
}

fn member_key_prefix() -> Vec<u8> {
    vec![SYSTEM_TAG, b'm']
}

/// Where the result of request `id` is kept: its expiry and the encoded
/// [`Applied`].
fn session_key(id: &str) -> Vec<u8> {
    let mut k = vec![SYSTEM_TAG, b's'];
    k.extend_from_slice(id.as_bytes());
    k
}

/// The cluster id (a big-endian u64 value). It never expires.
const CLUSTER_ID_KEY: &[u8] = &[SYSTEM_TAG, b'i'];

/// Prefix of the request-id records' index, ordered by expiry.
const SESSION_INDEX: &[u8] = &[SYSTEM_TAG, b't'];

/// The number of request-id records (a big-endian u64 value).
const SESSION_COUNT: &[u8] = &[SYSTEM_TAG, b'c'];

fn session_index_key(expires: u64, id: &str) -> Vec<u8> {
    let mut k = SESSION_INDEX.to_vec();
    k.extend_from_slice(&expires.to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

fn put_session_count(batch: &mut WriteBatch, data: &rocksdb::ColumnFamily, count: u64) {
    batch.put_cf(
        data,
        SESSION_COUNT,
        encode_stored(u64::MAX, &count.to_be_bytes()),
    );
}

fn expiry_key(deadline_ms: u64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&deadline_ms.to_be_bytes());
    k.extend_from_slice(key);
    k
}

fn encode_stored(deadline_ms: u64, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + value.len());
    v.extend_from_slice(&deadline_ms.to_be_bytes());
    v.extend_from_slice(value);
    v
}

fn decode_stored(raw: &[u8]) -> Result<Stored, KeyspaceError> {
    let deadline_ms = decode_u64(raw).ok_or(KeyspaceError::Corrupt("stored value"))?;
    Ok(Stored {
        deadline_ms,
        value: raw[8..].to_vec(),
    })
}

fn decode_u64(b: &[u8]) -> Option<u64> {
    let head: [u8; 8] = b.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(head))
}
