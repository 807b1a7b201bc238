//! The replicated keyspace against a simple model: random sequences of
//! Save, Delete and Purge with stamped times (an injected clock, with and
//! without the leader's timeline) and request ids must give the same reads,
//! deadlines, purge counts and request-id answers as a `BTreeMap`, and two
//! replicas applying the same sequence must end with the same digest. A
//! replica that joins through a snapshot of another, taken and installed
//! through the state machine's openraft interface, must stay identical to it
//! and to the model from then on.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Seek, SeekFrom};

use eventstore::raft::types::{Entry, LogId, TypeConfig};
use eventstore::store::{
    db, snapshot, Applied, Command, Keyspace, SessionPolicy, Stamp, StateMachine, MAX_CLOCK_SKEW_MS,
};
use openraft::entry::RaftEntry;
use openraft::storage::RaftStateMachine;
use openraft::RaftSnapshotBuilder;
use proptest::prelude::*;
use rocksdb::WriteBatch;

/// The request-id policy of the property test: short enough that records
/// expire and the table fills up within a run.
const POLICY: SessionPolicy = SessionPolicy {
    window_ms: 300,
    max_records: 3,
};

/// The model: key -> (deadline, value), the logical clock, and the
/// request-id table: id -> (expiry, first result).
#[derive(Default)]
struct Model {
    values: BTreeMap<Vec<u8>, (u64, Vec<u8>)>,
    members: BTreeMap<u64, u64>,
    /// The cluster id on record: the first one applied.
    cluster_id: Option<u64>,
    sessions: BTreeMap<String, (u64, Applied)>,
    clock: u64,
    /// The voters of the last membership entry (state-machine level only).
    config: BTreeSet<u64>,
}

impl Model {
    /// Applies a log entry as the state machine does: a membership entry
    /// drops the records of nodes it leaves out, and a Register of a node
    /// that is not a member records nothing. `None` for entries that
    /// answer no client.
    fn apply_step(&mut self, step: &Step) -> Option<Applied> {
        match step {
            Step::Blank => None,
            Step::Membership(voters) => {
                self.members.retain(|node, _| voters.contains(node));
                self.config = voters.clone();
                None
            }
            Step::Normal(Command::Register { node, .. }) if !self.config.contains(node) => {
                Some(Applied::Registered { recorded: false })
            }
            Step::Normal(cmd) => Some(self.apply(cmd)),
        }
    }

    fn apply(&mut self, cmd: &Command) -> Applied {
        let request = match cmd {
            Command::Save { request, .. } | Command::Delete { request, .. } => request.clone(),
            _ => None,
        };
        if let Some(id) = &request {
            if let Some((_, first)) = self.sessions.get(id) {
                return first.clone();
            }
        }
        if let Some(stamp) = cmd.stamp() {
            self.clock = self.clock.max(stamp.time_ms());
        }
        let result = self.apply_now(cmd);
        if let Some(id) = request {
            // Full: the oldest record goes first (never the new one).
            if self.sessions.len() as u64 >= POLICY.max_records {
                let oldest = self.oldest_session().unwrap();
                self.sessions.remove(&oldest);
            }
            self.sessions
                .insert(id, (self.clock + POLICY.window_ms, result.clone()));
        }
        result
    }

    /// The id of the request-id record that expires first (ties: by id).
    fn oldest_session(&self) -> Option<String> {
        self.sessions
            .iter()
            .map(|(id, (e, _))| (*e, id.clone()))
            .min()
            .map(|(_, id)| id)
    }

    fn apply_now(&mut self, cmd: &Command) -> Applied {
        match cmd {
            Command::Save {
                key, value, ttl_ms, ..
            } => {
                let deadline_ms = self.clock.saturating_add(*ttl_ms);
                self.values
                    .insert(key.clone(), (deadline_ms, value.clone()));
                Applied::Saved { deadline_ms }
            }
            Command::Register { node, incarnation } => {
                // The first record stays.
                let recorded = !self.members.contains_key(node);
                if recorded {
                    self.members.insert(*node, *incarnation);
                }
                Applied::Registered { recorded }
            }
            Command::Forget { node } => Applied::Forgotten {
                existed: self.members.remove(node).is_some(),
            },
            Command::SetClusterId { id } => {
                let recorded = self.cluster_id.is_none();
                if recorded {
                    self.cluster_id = Some(*id);
                }
                Applied::ClusterId { recorded }
            }
            Command::Delete { key, .. } => Applied::Deleted {
                existed: self.values.remove(key).is_some(),
            },
            Command::Purge { limit, .. } => {
                let mut expired: Vec<(u64, Vec<u8>)> = self
                    .values
                    .iter()
                    .filter(|(_, (d, _))| *d <= self.clock)
                    .map(|(k, (d, _))| (*d, k.clone()))
                    .collect();
                expired.sort();
                let n = expired.len().min(*limit as usize);
                for (_, k) in &expired[..n] {
                    self.values.remove(k);
                }
                let mut sessions = 0u32;
                while sessions < *limit {
                    match self.oldest_session() {
                        Some(id) if self.sessions[&id].0 <= self.clock => {
                            self.sessions.remove(&id);
                            sessions += 1;
                        }
                        _ => break,
                    }
                }
                Applied::Purged {
                    count: n as u32,
                    sessions,
                }
            }
        }
    }

    fn get(&self, key: &[u8], now: u64) -> Option<Vec<u8>> {
        let now = now.max(self.clock);
        self.values
            .get(key)
            .filter(|(d, _)| now < *d)
            .map(|(_, v)| v.clone())
    }
}

struct Replica {
    _dir: tempfile::TempDir,
    ks: Keyspace,
    clock: u64,
}

impl Replica {
    fn new() -> Self {
        Self::with_policy(SessionPolicy::default())
    }

    fn with_policy(policy: SessionPolicy) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ks = Keyspace::new(db::open(dir.path()).unwrap()).with_session_policy(policy);
        Replica {
            _dir: dir,
            ks,
            clock: 0,
        }
    }

    fn apply(&mut self, cmd: &Command) -> Applied {
        let mut batch = WriteBatch::default();
        let (result, clock) = self.ks.apply(&mut batch, cmd, self.clock).unwrap();
        self.ks.db().write(batch).unwrap();
        self.clock = clock;
        result
    }
}

fn key_strategy() -> impl Strategy<Value = Vec<u8>> {
    (0u8..6).prop_map(|k| vec![b'k', k])
}

/// A stamp: a wall clock, and sometimes a timeline it may be far from.
fn stamp_strategy() -> impl Strategy<Value = Stamp> {
    (0u64..1000, prop::option::of(0u64..3000), 0u64..3).prop_map(|(wall_ms, timeline, node)| {
        Stamp {
            wall_ms,
            // Timelines up to 2 s away from the wall clock, past the 1 s allowance.
            timeline_ms: timeline.map(|t| (wall_ms + t).saturating_sub(1500)),
            node,
        }
    })
}

/// No request id, or one of a few (so that some repeat).
fn request_strategy() -> impl Strategy<Value = Option<String>> {
    prop::option::of((0u8..5).prop_map(|i| format!("c-{i}")))
}

fn command_strategy() -> impl Strategy<Value = Command> {
    prop_oneof![
        4 => (key_strategy(), prop::collection::vec(any::<u8>(), 0..8), 1u64..200, stamp_strategy(), request_strategy())
            .prop_map(|(key, value, ttl_ms, stamp, request)| Command::Save { key, value, ttl_ms, stamp, request }),
        2 => (key_strategy(), stamp_strategy(), request_strategy())
            .prop_map(|(key, stamp, request)| Command::Delete { key, stamp, request }),
        1 => (0u64..3, 1u64..4).prop_map(|(node, incarnation)| Command::Register { node, incarnation }),
        1 => (0u64..3).prop_map(|node| Command::Forget { node }),
        1 => (1u64..4).prop_map(|id| Command::SetClusterId { id }),
        2 => (stamp_strategy(), 1u32..4).prop_map(|(stamp, limit)| Command::Purge { stamp, limit }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn keyspace_matches_model(
        cmds in prop::collection::vec(command_strategy(), 1..60),
        reads in prop::collection::vec((key_strategy(), 0u64..1300), 1..10),
    ) {
        let mut model = Model::default();
        let mut a = Replica::with_policy(POLICY);
        let mut b = Replica::with_policy(POLICY);
        for cmd in &cmds {
            let expected = model.apply(cmd);
            prop_assert_eq!(a.apply(cmd), expected.clone(), "command {}", cmd);
            prop_assert_eq!(b.apply(cmd), expected);
            for (key, now) in &reads {
                prop_assert_eq!(a.ks.get(key, *now).unwrap(), model.get(key, *now));
            }
        }
        prop_assert_eq!(a.ks.clock().unwrap(), model.clock);
        prop_assert_eq!(a.ks.session_count().unwrap(), model.sessions.len() as u64);
        for i in 0..5 {
            let id = format!("c-{i}");
            prop_assert_eq!(a.ks.session(&id).unwrap(), model.sessions.get(&id).map(|s| s.1.clone()));
        }
        for node in 0..3 {
            prop_assert_eq!(a.ks.member_incarnation(node).unwrap(), model.members.get(&node).copied());
        }
        prop_assert_eq!(a.ks.cluster_id().unwrap(), model.cluster_id);
        prop_assert_eq!(a.ks.digest().unwrap(), b.ks.digest().unwrap());
        prop_assert_eq!(a.ks.digest().unwrap().1, model.values.len() as u64);
    }
}

/// A log entry as openraft hands it to the state machine.
#[derive(Clone, Debug)]
enum Step {
    Normal(Command),
    /// The entry a new leader appends.
    Blank,
    /// A membership change to these voters.
    Membership(BTreeSet<u64>),
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => command_strategy().prop_map(Step::Normal),
        1 => Just(Step::Blank),
        1 => prop::collection::btree_set(0u64..3, 1..=3).prop_map(Step::Membership),
    ]
}

fn log_id(index: u64) -> LogId {
    openraft::testing::log_id::<TypeConfig>(1, 0, index)
}

fn entry(index: u64, step: &Step) -> Entry {
    match step {
        Step::Normal(cmd) => Entry::new_normal(log_id(index), cmd.clone()),
        Step::Blank => Entry::new_blank(log_id(index)),
        Step::Membership(voters) => Entry::new_membership(
            log_id(index),
            openraft::Membership::new_with_defaults(vec![voters.clone()], Vec::<u64>::new()),
        ),
    }
}

/// One node's state machine and its storage, driven through openraft's
/// `RaftStateMachine` interface.
struct Node {
    dir: tempfile::TempDir,
    ks: Keyspace,
    sm: StateMachine,
}

impl Node {
    fn new() -> Self {
        Self::open(tempfile::tempdir().unwrap())
    }

    fn open(dir: tempfile::TempDir) -> Self {
        let database = db::open(&dir.path().join("db")).unwrap();
        let ks = Keyspace::new(database).with_session_policy(POLICY);
        let sm = StateMachine::open(ks.clone(), dir.path().join("snapshots")).unwrap();
        Node { dir, ks, sm }
    }

    /// Closes the database and opens it again, as a restart does.
    fn reopen(self) -> Self {
        let Node { dir, ks, sm } = self;
        drop(sm);
        drop(ks);
        Self::open(dir)
    }

    /// Applies the entry at `index`, alone, as openraft does on a follower
    /// (no client waits for its answer).
    async fn apply(&mut self, index: u64, step: &Step) {
        let e = entry(index, step);
        self.sm
            .apply(futures::stream::iter([Ok((e, None))]))
            .await
            .unwrap();
    }

    /// Everything a client or a purge can observe, and the digest.
    fn observe(&self) -> Observed {
        let ks = &self.ks;
        let (digest, values) = ks.digest().unwrap();
        Observed {
            stored: (0u8..6)
                .map(|k| {
                    ks.get_raw(&[b'k', k])
                        .unwrap()
                        .map(|s| (s.deadline_ms, s.value))
                })
                .collect(),
            members: (0..3).map(|n| ks.member_incarnation(n).unwrap()).collect(),
            cluster_id: ks.cluster_id().unwrap(),
            sessions: (0..5)
                .map(|i| ks.session(&format!("c-{i}")).unwrap())
                .collect(),
            session_count: ks.session_count().unwrap(),
            values,
            clock: ks.clock().unwrap(),
            digest: Some(digest),
        }
    }

    fn reads(&self, reads: &[(Vec<u8>, u64)]) -> Vec<Option<Vec<u8>>> {
        reads
            .iter()
            .map(|(k, now)| self.ks.get(k, *now).unwrap())
            .collect()
    }
}

/// What [`Node::observe`] sees (the model has no digest).
#[derive(Debug, PartialEq, Eq)]
struct Observed {
    stored: Vec<Option<(u64, Vec<u8>)>>,
    members: Vec<Option<u64>>,
    cluster_id: Option<u64>,
    sessions: Vec<Option<Applied>>,
    session_count: u64,
    values: u64,
    clock: u64,
    digest: Option<String>,
}

impl Model {
    fn observe(&self) -> Observed {
        Observed {
            stored: (0u8..6)
                .map(|k| self.values.get([b'k', k].as_slice()).cloned())
                .collect(),
            members: (0..3).map(|n| self.members.get(&n).copied()).collect(),
            cluster_id: self.cluster_id,
            sessions: (0..5)
                .map(|i| self.sessions.get(&format!("c-{i}")).map(|s| s.1.clone()))
                .collect(),
            session_count: self.sessions.len() as u64,
            values: self.values.len() as u64,
            clock: self.clock,
            digest: None,
        }
    }

    fn reads(&self, reads: &[(Vec<u8>, u64)]) -> Vec<Option<Vec<u8>>> {
        reads.iter().map(|(k, now)| self.get(k, *now)).collect()
    }
}

/// Values and request ids a node purged with its last entry: the state
/// machine answers no one on a follower, so a purge's count is what it
/// removed.
fn purged(before: &Observed, after: &Observed) -> Applied {
    Applied::Purged {
        count: (before.values - after.values) as u32,
        sessions: (before.session_count - after.session_count) as u32,
    }
}

/// Hands A's current snapshot to C the way the peer service does: the
/// bytes land in a file of C's own, then openraft installs it.
async fn send_snapshot(a: &mut Node, c: &mut Node) -> Result<LogId, TestCaseError> {
    let mut current =
        a.sm.get_current_snapshot()
            .await
            .unwrap()
            .expect("a current snapshot");
    let path = snapshot::incoming_path(&c.dir.path().join("snapshots"));
    let mut received = std::fs::OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    std::io::copy(&mut current.snapshot, &mut received).unwrap();
    received.seek(SeekFrom::Start(0)).unwrap();
    std::fs::remove_file(&path).unwrap();
    c.sm.install_snapshot(&current.meta, received)
        .await
        .unwrap();
    let installed = c.sm.get_current_snapshot().await.unwrap();
    prop_assert_eq!(
        installed.map(|s| s.meta),
        Some(current.meta.clone()),
        "C's current snapshot is not the one it installed"
    );
    Ok(current
        .meta
        .last_log_id
        .expect("a snapshot of applied entries"))
}

/// Checks A and C against each other (everything, digest included) and
/// against the model (everything but the digest).
fn check_same(
    a: &Node,
    c: &Node,
    model: &Model,
    reads: &[(Vec<u8>, u64)],
    what: &str,
) -> Result<(), TestCaseError> {
    let seen_a = a.observe();
    prop_assert_eq!(&c.observe(), &seen_a, "C differs from A {}", what);
    let mut expected = model.observe();
    expected.digest = seen_a.digest.clone();
    prop_assert_eq!(&seen_a, &expected, "A differs from the model {}", what);
    let expected = model.reads(reads);
    prop_assert_eq!(a.reads(reads), expected.clone(), "reads on A {}", what);
    prop_assert_eq!(c.reads(reads), expected, "reads on C {}", what);
    Ok(())
}

async fn snapshot_case(
    steps: Vec<Step>,
    snap_at: prop::sample::Index,
    lag: prop::sample::Index,
    reopen: bool,
    reads: Vec<(Vec<u8>, u64)>,
) -> Result<(), TestCaseError> {
    // The log: a membership of all three nodes, then the steps.
    let mut log = vec![Step::Membership((0..3).collect())];
    log.extend(steps);
    let mut model = Model::default();
    let mut a = Node::new();
    let mut c = Node::new();
    // A has applied `taken` entries when its snapshot is built; C, a node
    // that is fresh or behind, has applied fewer.
    let taken = 1 + snap_at.index(log.len());
    let behind = lag.index(taken);
    for (i, step) in log[..taken].iter().enumerate() {
        let index = i as u64 + 1;
        let expected = model.apply_step(step);
        let before = a.observe();
        a.apply(index, step).await;
        if i < behind {
            c.apply(index, step).await;
        }
        if let (Step::Normal(Command::Purge { .. }), Some(expected)) = (step, expected) {
            prop_assert_eq!(purged(&before, &a.observe()), expected, "entry {}", index);
        }
        let mut seen = model.observe();
        seen.digest = a.observe().digest;
        prop_assert_eq!(
            a.observe(),
            seen,
            "A differs from the model after entry {}",
            index
        );
    }

    // openraft builds A's snapshot, then sends it to C.
    let built = {
        let mut builder = a.sm.get_snapshot_builder().await;
        builder.build_snapshot().await.unwrap()
    };
    prop_assert_eq!(built.meta.last_log_id, Some(log_id(taken as u64)));
    let sent = send_snapshot(&mut a, &mut c).await?;
    prop_assert_eq!(sent, log_id(taken as u64));
    if reopen {
        c = c.reopen();
    }
    prop_assert_eq!(
        c.sm.applied_state().await.unwrap(),
        a.sm.applied_state().await.unwrap(),
        "C's applied log id and membership after the install"
    );
    check_same(&a, &c, &model, &reads, "after the install")?;

    // Both go on with the same entries.
    for (i, step) in log.iter().enumerate().skip(taken) {
        let index = i as u64 + 1;
        let expected = model.apply_step(step);
        let (before_a, before_c) = (a.observe(), c.observe());
        a.apply(index, step).await;
        c.apply(index, step).await;
        if let (Step::Normal(Command::Purge { .. }), Some(expected)) = (step, expected) {
            prop_assert_eq!(
                purged(&before_a, &a.observe()),
                expected.clone(),
                "A, entry {}",
                index
            );
            prop_assert_eq!(
                purged(&before_c, &c.observe()),
                expected,
                "C, entry {}",
                index
            );
        }
        check_same(&a, &c, &model, &reads, &format!("after entry {index}"))?;
    }
    prop_assert_eq!(
        c.sm.applied_state().await.unwrap(),
        a.sm.applied_state().await.unwrap()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Issue item 8: replicas stay identical through a snapshot. A applies
    /// a random log; at a random point openraft builds A's snapshot and
    /// installs it into C (fresh, or behind A), which may restart; then
    /// both apply the rest of the log. After every entry A and C agree on
    /// the digest, every stored value and deadline, member and request-id
    /// record, the clock, reads at random times and what each purge
    /// removed, and so does the model.
    #[test]
    fn a_replica_installed_from_a_snapshot_stays_identical(
        steps in prop::collection::vec(step_strategy(), 1..60),
        snap_at in any::<prop::sample::Index>(),
        lag in any::<prop::sample::Index>(),
        reopen in any::<bool>(),
        reads in prop::collection::vec((key_strategy(), 0u64..1300), 1..10),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(snapshot_case(steps, snap_at, lag, reopen, reads))?;
    }
}

#[test]
fn purge_removes_oldest_deadlines_first_in_bounded_batches() {
    let mut r = Replica::new();
    for i in 0..10u64 {
        r.apply(&save(&[i as u8], b"", 100 - i, 1000));
    }
    // All ten expire by t=1100; a purge removes at most `limit`.
    assert_eq!(
        r.apply(&purge(1100, 4)),
        Applied::Purged {
            count: 4,
            sessions: 0
        }
    );
    // The four with the earliest deadlines (keys 9, 8, 7, 6) went first.
    for i in 6..10u8 {
        assert_eq!(r.ks.get_raw(&[i]).unwrap(), None);
    }
    assert!(r.ks.get_raw(&[5]).unwrap().is_some());
    assert_eq!(
        r.apply(&purge(1100, 100)),
        Applied::Purged {
            count: 6,
            sessions: 0
        }
    );
    assert!(!r.ks.has_expired(u64::MAX).unwrap());
}

#[test]
fn expired_value_is_hidden_before_its_purge() {
    let mut r = Replica::new();
    r.apply(&save(b"k", b"v", 50, 1000));
    assert_eq!(r.ks.get(b"k", 1049).unwrap(), Some(b"v".to_vec()));
    assert_eq!(r.ks.get(b"k", 1050).unwrap(), None);
    // Still stored until a purge entry is applied.
    assert!(r.ks.get_raw(b"k").unwrap().is_some());
}

#[test]
fn a_lagging_leader_clock_never_moves_deadlines_backwards() {
    let mut r = Replica::new();
    r.apply(&save(b"a", b"", 10, 5000));
    // A new leader whose clock is behind stamps 4000: the write's time is
    // still 5000, the highest stamp seen.
    let applied = r.apply(&save(b"b", b"", 10, 4000));
    assert_eq!(applied, Applied::Saved { deadline_ms: 5010 });
}

#[test]
fn resave_replaces_the_deadline_in_the_index() {
    let mut r = Replica::new();
    r.apply(&save(b"k", b"v", 10, 1000));
    r.apply(&save(b"k", b"v", 1000, 1005));
    // The old deadline (1010) no longer purges the key.
    assert_eq!(
        r.apply(&purge(1500, 10)),
        Applied::Purged {
            count: 0,
            sessions: 0
        }
    );
    assert_eq!(r.ks.get(b"k", 1500).unwrap(), Some(b"v".to_vec()));
    assert_eq!(r.ks.earliest_deadlines(10).unwrap(), vec![2005]);
}

/// A Save stamped with a bare wall clock, without a request id.
fn save(key: &[u8], value: &[u8], ttl_ms: u64, wall_ms: u64) -> Command {
    Command::Save {
        key: key.to_vec(),
        value: value.to_vec(),
        ttl_ms,
        stamp: Stamp::wall(wall_ms),
        request: None,
    }
}

/// A Purge stamped with a bare wall clock.
fn purge(wall_ms: u64, limit: u32) -> Command {
    Command::Purge {
        stamp: Stamp::wall(wall_ms),
        limit,
    }
}

const DAY_MS: u64 = 86_400_000;
const MINUTE_MS: u64 = 60_000;

/// Issue item 3: a leader whose wall clock jumped a day ahead stamps a Save
/// and a Purge 4 s after the clock was last seen moving. The replicated
/// clock moves by the elapsed time plus the allowance, not by a day, so
/// values with ten minutes left survive and a new TTL counts down from the
/// cluster's time.
#[test]
fn a_stamp_a_day_ahead_does_not_expire_values_with_ten_minutes_left() {
    let mut r = Replica::new();
    let t0 = 1_700_000_000_000u64;
    for i in 0..10u8 {
        r.apply(&save(&[b'v', i], b"x", 10 * MINUTE_MS, t0));
    }
    let ahead = Stamp {
        wall_ms: t0 + DAY_MS,
        timeline_ms: Some(t0 + 4_000),
        node: 2,
    };
    assert_eq!(
        r.apply(&Command::Purge {
            stamp: ahead,
            limit: 100
        }),
        Applied::Purged {
            count: 0,
            sessions: 0
        }
    );
    let saved = r.apply(&Command::Save {
        key: b"new".to_vec(),
        value: b"y".to_vec(),
        ttl_ms: 10 * MINUTE_MS,
        stamp: ahead,
        request: None,
    });
    let now = t0 + 4_000 + MAX_CLOCK_SKEW_MS;
    assert_eq!(r.ks.clock().unwrap(), now);
    assert_eq!(
        saved,
        Applied::Saved {
            deadline_ms: now + 10 * MINUTE_MS
        }
    );
    for i in 0..10u8 {
        assert_eq!(
            r.ks.get(&[b'v', i], r.ks.clock().unwrap()).unwrap(),
            Some(b"x".to_vec())
        );
    }
    // A wall clock a day behind is held the same way: time still moves.
    let behind = Stamp {
        wall_ms: t0 - DAY_MS,
        timeline_ms: Some(t0 + 20_000),
        node: 1,
    };
    r.apply(&Command::Purge {
        stamp: behind,
        limit: 100,
    });
    assert_eq!(r.ks.clock().unwrap(), t0 + 20_000 - MAX_CLOCK_SKEW_MS);
}

/// Issue item 4: a write sent again with the id of one that was applied,
/// after other clients' writes to the same key, has no effect and gets the
/// first result.
#[test]
fn a_replayed_request_id_has_no_effect() {
    let mut r = Replica::new();
    let with_id = |mut cmd: Command, id: &str| {
        match &mut cmd {
            Command::Save { request, .. } | Command::Delete { request, .. } => {
                *request = Some(id.to_string())
            }
            _ => unreachable!(),
        }
        cmd
    };
    let delete = |key: &[u8], wall_ms| Command::Delete {
        key: key.to_vec(),
        stamp: Stamp::wall(wall_ms),
        request: None,
    };
    // A Save, overwritten by another client, then retried.
    let first = with_id(save(b"k", b"first", 60_000, 1000), "a-1");
    let first_result = r.apply(&first);
    r.apply(&with_id(save(b"k", b"second", 60_000, 1001), "b-1"));
    let before = r.ks.digest().unwrap();
    assert_eq!(r.apply(&first), first_result);
    assert_eq!(r.ks.get(b"k", 1002).unwrap(), Some(b"second".to_vec()));
    // A Delete, followed by another client's Save, then retried.
    let del = with_id(delete(b"k", 1003), "a-2");
    assert_eq!(r.apply(&del), Applied::Deleted { existed: true });
    r.apply(&with_id(save(b"k", b"third", 60_000, 1004), "b-2"));
    assert_eq!(r.apply(&del), Applied::Deleted { existed: true });
    assert_eq!(r.ks.get(b"k", 1005).unwrap(), Some(b"third".to_vec()));
    assert_ne!(r.ks.digest().unwrap(), before);
    let settled = r.ks.digest().unwrap();
    assert_eq!(r.apply(&del), Applied::Deleted { existed: true });
    assert_eq!(r.apply(&first), first_result);
    assert_eq!(
        r.ks.digest().unwrap(),
        settled,
        "a replay changed the state"
    );
    // Without an id, a write is applied every time.
    r.apply(&save(b"k", b"first", 60_000, 1006));
    assert_eq!(r.ks.get(b"k", 1007).unwrap(), Some(b"first".to_vec()));
}

#[test]
fn request_ids_expire_by_the_replicated_clock_and_the_table_is_bounded() {
    let policy = SessionPolicy {
        window_ms: 1000,
        max_records: 2,
    };
    let mut r = Replica::with_policy(policy);
    let save_id = |id: &str, wall_ms| Command::Save {
        key: b"k".to_vec(),
        value: id.as_bytes().to_vec(),
        ttl_ms: 60_000,
        stamp: Stamp::wall(wall_ms),
        request: Some(id.to_string()),
    };
    r.apply(&save_id("a", 100));
    r.apply(&save_id("b", 200));
    r.apply(&save_id("c", 300));
    // Full at two: the oldest ("a") was forgotten.
    assert_eq!(r.ks.session_count().unwrap(), 2);
    assert_eq!(r.ks.session("a").unwrap(), None);
    assert!(r.ks.session("b").unwrap().is_some());
    // "b" expires at 1200 by the replicated clock, "c" at 1300.
    assert!(!r.ks.has_expired(1199).unwrap());
    assert!(r.ks.has_expired(1200).unwrap());
    assert_eq!(
        r.apply(&purge(1250, 10)),
        Applied::Purged {
            count: 0,
            sessions: 1
        }
    );
    assert_eq!(r.ks.session("b").unwrap(), None);
    assert_eq!(r.ks.session_count().unwrap(), 1);
    // A forgotten id is a new request again.
    r.apply(&save_id("a", 1260));
    assert_eq!(r.ks.get(b"k", 1261).unwrap(), Some(b"a".to_vec()));
}

#[test]
fn request_ids_travel_in_snapshots() {
    let mut r = Replica::new();
    let cmd = Command::Delete {
        key: b"k".to_vec(),
        stamp: Stamp::wall(1000),
        request: Some("a-1".into()),
    };
    r.apply(&cmd);
    let dir = tempfile::tempdir().unwrap();
    let snaps = snapshot::SnapshotDir::open(dir.path().to_path_buf()).unwrap();
    let (_, mut file) = snaps.build(r.ks.db()).unwrap();
    let copy = Replica::new();
    let mut batch = WriteBatch::default();
    snapshot::read(&mut file, |k, v| {
        copy.ks
            .put_raw(&mut batch, k, v)
            .map_err(std::io::Error::other)
    })
    .unwrap();
    copy.ks.db().write(batch).unwrap();
    assert_eq!(
        copy.ks.session("a-1").unwrap(),
        Some(Applied::Deleted { existed: false })
    );
    assert_eq!(copy.ks.session_count().unwrap(), 1);
}

/// The cluster id through the state machine: a data directory without one
/// (an empty node, or one written by a version without cluster ids)
/// adopts the first id the log records, durably, and never a later one;
/// a node that applied the record but lost its own copy takes it back
/// from the replicated state when it opens.
#[tokio::test]
async fn a_node_without_a_cluster_id_adopts_the_first_one_it_applies() {
    use eventstore::store::ClusterId;
    let dir = tempfile::tempdir().unwrap();
    let open = |dir: &std::path::Path| {
        let database = db::open(&dir.join("db")).unwrap();
        let id = ClusterId::load(database.clone()).unwrap();
        let ks = Keyspace::new(database);
        let sm = StateMachine::open(ks.clone(), dir.join("snapshots"))
            .unwrap()
            .with_cluster_id(id.clone())
            .unwrap();
        (ks, sm, id)
    };
    {
        let (ks, mut sm, id) = open(dir.path());
        assert_eq!(id.get(), None);
        let steps = [
            Step::Membership(BTreeSet::from([0])),
            Step::Normal(Command::SetClusterId { id: 0xc1 }),
            Step::Normal(Command::SetClusterId { id: 0xc2 }),
        ];
        for (i, step) in steps.iter().enumerate() {
            let e = entry(i as u64 + 1, step);
            sm.apply(futures::stream::iter([Ok((e, None))]))
                .await
                .unwrap();
        }
        assert_eq!(id.get(), Some(0xc1), "the first recorded id is adopted");
        assert_eq!(
            ks.cluster_id().unwrap(),
            Some(0xc1),
            "the first one stays on record"
        );
    }
    let (ks, _sm, id) = open(dir.path());
    assert_eq!(
        id.get(),
        Some(0xc1),
        "the adopted id is kept across a restart"
    );
    drop((ks, _sm, id));
    // The node's own copy lost (only the replicated record left).
    {
        let database = db::open(&dir.path().join("db")).unwrap();
        database
            .delete_cf(database.cf_handle(db::CF_LOG_META).unwrap(), b"cluster_id")
            .unwrap();
    }
    let (_ks, _sm, id) = open(dir.path());
    assert_eq!(
        id.get(),
        Some(0xc1),
        "not taken back from the replicated state"
    );
}

/// RocksDB entries deleted but not yet compacted away that the commands in
/// `f` stepped over (its perf counter for this thread).
fn deleted_entries_skipped(f: impl FnOnce()) -> u64 {
    use rocksdb::perf::{set_perf_stats, PerfContext, PerfMetric, PerfStatsLevel};
    set_perf_stats(PerfStatsLevel::EnableCount);
    let mut ctx = PerfContext::default();
    ctx.reset();
    f();
    let skipped = ctx.metric(PerfMetric::InternalDeleteSkippedCount);
    set_perf_stats(PerfStatsLevel::Disable);
    skipped
}

/// Request-id records are forgotten oldest first, and values purged
/// earliest deadline first, so what was removed lies at the front of each
/// index until RocksDB compacts it away. A command must not step over all
/// of it again: once the request-id table is full every write forgets one
/// record, and each purge starts where the last one stopped, so rescanning
/// would make every write slower than the one before.
#[test]
fn forgetting_request_ids_and_purging_values_do_not_rescan_what_was_removed() {
    let mut r = Replica::with_policy(SessionPolicy {
        window_ms: 1_000_000,
        max_records: 10,
    });
    let write = |i: u64, ttl_ms: u64| Command::Save {
        key: format!("k{i}").into_bytes(),
        value: b"v".to_vec(),
        ttl_ms,
        stamp: Stamp::wall(1000 + i),
        request: Some(format!("writer:{i}")),
    };
    // 2,000 writes with request ids: every one past the tenth forgets one.
    for i in 0..2000 {
        r.apply(&write(i, 100));
    }
    let skipped = deleted_entries_skipped(|| {
        r.apply(&write(2000, 100));
    });
    assert!(
        skipped < 50,
        "one write stepped over {skipped} forgotten request-id records"
    );
    // Every value expires by 3,200; purge them all in batches of 100.
    loop {
        match r.apply(&purge(5000, 100)) {
            Applied::Purged { count: 0, .. } => break,
            Applied::Purged { .. } => {}
            other => panic!("purge: {other:?}"),
        }
    }
    assert!(!r.ks.has_expired(5000).unwrap());
    let skipped = deleted_entries_skipped(|| {
        r.apply(&write(5000, 100));
        assert_eq!(
            r.apply(&purge(7000, 100)),
            Applied::Purged {
                count: 1,
                sessions: 0
            }
        );
        assert!(!r.ks.has_expired(8000).unwrap());
    });
    assert!(
        skipped < 50,
        "a purge stepped over {skipped} values removed before"
    );
}
