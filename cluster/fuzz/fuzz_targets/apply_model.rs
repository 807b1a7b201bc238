//! Fuzz target `apply_model`: arbitrary sequences of commands applied to
//! the real keyspace (`store::keyspace`, the state machine's apply path,
//! on RocksDB) and to a `BTreeMap` model, with an injected clock.
//!
//! Steps are Saves and Deletes (with or without a request id), Purges,
//! member Registers and Forgets, and cluster-id records; Saves, Deletes and
//! Purges are stamped by a leader whose wall clock may be off and which may
//! or may not have a timeline, and further steps move the reader's clock.
//! After every step the result of the command, the replicated clock, every
//! key's read at the reader's time, the number of values and of remembered
//! request ids, the cluster id on record, the members' incarnations and
//! whether anything has expired must agree with the model.
//!
//! Every input starts from an empty keyspace in a database kept in memory
//! (RocksDB's in-memory environment), emptied between inputs and
//! replaced by a fresh one every 512 inputs.

#![no_main]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use eventstore::store::{db, Applied, Command, Keyspace, Location, Scope, SessionPolicy, Stamp};
use libfuzzer_sys::fuzz_target;
use rocksdb::WriteBatch;

/// Short enough that request ids expire and the table fills within an input.
const POLICY: SessionPolicy = SessionPolicy {
    window_ms: 300,
    max_records: 3,
};

/// How far a stamp's time may be from its timeline (the product's constant
/// is `MAX_CLOCK_SKEW_MS`; the model states the rule on its own).
const SKEW_MS: u64 = 1000;

/// The locations the fuzzer writes to: a few in each scope.
fn key(k: u8) -> Vec<u8> {
    let scope = match k % 3 {
        0 => Scope::Global,
        1 => Scope::Bridge { bridge: "b".into() },
        _ => Scope::Instance {
            bridge: "b".into(),
            instance: "i".into(),
        },
    };
    Location::new(scope, format!("k{}", (k / 3) % 3)).encode()
}
const KEYS: u8 = 9;
const NODES: u8 = 4;

/// A leader's stamp, relative to the reader's clock.
#[derive(Arbitrary, Debug, Clone, Copy)]
struct AnyStamp {
    /// The wall clock's offset from the reader's clock, ms.
    wall_offset: i16,
    /// The timeline's offset from the wall clock, ms, if there is one.
    timeline_offset: Option<i16>,
    node: u8,
}

#[derive(Arbitrary, Debug)]
enum Step {
    Save {
        key: u8,
        value: Vec<u8>,
        ttl_ms: u16,
        stamp: AnyStamp,
        request: Option<u8>,
    },
    Delete {
        key: u8,
        stamp: AnyStamp,
        request: Option<u8>,
    },
    Purge {
        stamp: AnyStamp,
        limit: u8,
    },
    Register {
        node: u8,
        incarnation: u64,
    },
    Forget {
        node: u8,
    },
    /// Records a cluster id (never 0); the first one applied wins.
    SetClusterId {
        id: u64,
    },
    /// Moves the reader's clock forward.
    Advance {
        ms: u16,
    },
}

/// The model: key -> (deadline, value), members, request ids -> (expiry,
/// first result), the replicated clock.
#[derive(Default)]
struct Model {
    values: BTreeMap<Vec<u8>, (u64, Vec<u8>)>,
    members: BTreeMap<u64, u64>,
    sessions: BTreeMap<String, (u64, Applied)>,
    clock: u64,
    cluster_id: Option<u64>,
}

fn stamp_time(s: &Stamp) -> u64 {
    match s.timeline_ms {
        None => s.wall_ms,
        Some(t) => s
            .wall_ms
            .max(t.saturating_sub(SKEW_MS))
            .min(t.saturating_add(SKEW_MS)),
    }
}

impl Model {
    fn apply(&mut self, cmd: &Command) -> Applied {
        let request = match cmd {
            Command::Save { request, .. } | Command::Delete { request, .. } => request.clone(),
            _ => None,
        };
        if let Some(first) = request.as_ref().and_then(|id| self.sessions.get(id)) {
            return first.1.clone();
        }
        if let Some(stamp) = cmd.stamp() {
            self.clock = self.clock.max(stamp_time(stamp));
        }
        let result = self.apply_now(cmd);
        if let Some(id) = request {
            if self.sessions.len() as u64 >= POLICY.max_records {
                let oldest = self.oldest_session().expect("a full table has an oldest");
                self.sessions.remove(&oldest);
            }
            self.sessions
                .insert(id, (self.clock + POLICY.window_ms, result.clone()));
        }
        result
    }

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
            Command::Delete { key, .. } => Applied::Deleted {
                existed: self.values.remove(key).is_some(),
            },
            Command::Register { node, incarnation } => {
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

    fn has_expired(&self, now: u64) -> bool {
        self.values.values().any(|(d, _)| *d <= now)
            || self.sessions.values().any(|(e, _)| *e <= now)
    }
}

/// The database options of every input: the node's own, over an in-memory
/// file system, so an input costs no disk I/O and leaves nothing behind.
fn options() -> &'static rocksdb::Options {
    static OPTS: OnceLock<rocksdb::Options> = OnceLock::new();
    OPTS.get_or_init(|| {
        let mut opts = db::options();
        opts.set_env(&rocksdb::Env::mem_env().expect("an in-memory environment"));
        opts
    })
}

/// Inputs run on one in-memory database at a time, opened fresh every
/// this many inputs: emptying it leaves range tombstones behind, which
/// slow reads down as they pile up, and a fresh open costs more than
/// emptying.
const INPUTS_PER_DATABASE: u64 = 512;

/// The database inputs run on now: its path and how many inputs used it.
struct Current {
    path: String,
    inputs: u64,
    ks: Keyspace,
}

thread_local! {
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
}

/// Runs `f` on an empty keyspace.
fn with_keyspace(f: impl FnOnce(&Keyspace)) {
    static DATABASES: AtomicU64 = AtomicU64::new(0);
    CURRENT.with_borrow_mut(|current| {
        if current
            .as_ref()
            .is_some_and(|c| c.inputs >= INPUTS_PER_DATABASE)
        {
            let old = current.take().expect("checked");
            drop(old.ks);
            rocksdb::DB::destroy(options(), &old.path).expect("destroy the database");
        }
        let c = current.get_or_insert_with(|| {
            let path = format!("/apply_model/{}", DATABASES.fetch_add(1, Ordering::Relaxed));
            let database = db::open_with(Path::new(&path), options()).expect("open the database");
            Current {
                path,
                inputs: 0,
                ks: Keyspace::new(database).with_session_policy(POLICY),
            }
        });
        let mut batch = WriteBatch::default();
        c.ks.clear(&mut batch).expect("empty the keyspace");
        c.ks.db().write(batch).expect("write");
        c.inputs += 1;
        f(&c.ks);
    });
}

fn stamp(s: AnyStamp, now: u64) -> Stamp {
    let wall_ms = now.saturating_add_signed(i64::from(s.wall_offset));
    Stamp {
        wall_ms,
        timeline_ms: s
            .timeline_offset
            .map(|t| wall_ms.saturating_add_signed(i64::from(t))),
        node: u64::from(s.node % 3),
    }
}

fn request(r: Option<u8>) -> Option<String> {
    r.map(|r| format!("client-{}", r % 5))
}

fuzz_target!(|steps: Vec<Step>| with_keyspace(|ks| run(ks, steps)));

fn run(ks: &Keyspace, steps: Vec<Step>) {
    let mut model = Model::default();
    // The reader's clock starts well past 0 so that negative offsets matter.
    let mut now: u64 = 10_000;
    let mut clock = 0u64;
    for step in steps.into_iter().take(64) {
        let cmd = match step {
            Step::Advance { ms } => {
                now += u64::from(ms);
                None
            }
            Step::Save {
                key: k,
                mut value,
                ttl_ms,
                stamp: s,
                request: r,
            } => {
                value.truncate(8);
                Some(Command::Save {
                    key: key(k),
                    value,
                    ttl_ms: u64::from(ttl_ms),
                    stamp: stamp(s, now),
                    request: request(r),
                })
            }
            Step::Delete {
                key: k,
                stamp: s,
                request: r,
            } => Some(Command::Delete {
                key: key(k),
                stamp: stamp(s, now),
                request: request(r),
            }),
            Step::Purge { stamp: s, limit } => Some(Command::Purge {
                stamp: stamp(s, now),
                limit: u32::from(limit % 4),
            }),
            Step::Register { node, incarnation } => Some(Command::Register {
                node: u64::from(node % NODES),
                incarnation,
            }),
            Step::Forget { node } => Some(Command::Forget {
                node: u64::from(node % NODES),
            }),
            Step::SetClusterId { id } => Some(Command::SetClusterId { id: id.max(1) }),
        };
        if let Some(cmd) = cmd {
            let mut batch = WriteBatch::default();
            let (got, after) = ks.apply(&mut batch, &cmd, clock).expect("apply");
            ks.db().write(batch).expect("write");
            clock = after;
            let want = model.apply(&cmd);
            assert_eq!(got, want, "{cmd}");
        }
        assert_eq!(clock, model.clock, "the clock returned by apply");
        assert_eq!(ks.clock().expect("clock"), model.clock, "the stored clock");
        for k in 0..KEYS {
            let key = key(k);
            assert_eq!(
                ks.get(&key, now).expect("get"),
                model.get(&key, now),
                "{} at {now}",
                Location::decode(&key).expect("a location")
            );
        }
        let (_, values) = ks.digest().expect("digest");
        assert_eq!(values, model.values.len() as u64, "number of values");
        assert_eq!(
            ks.session_count().expect("session count"),
            model.sessions.len() as u64,
            "number of request ids"
        );
        assert_eq!(
            ks.cluster_id().expect("cluster id"),
            model.cluster_id,
            "the cluster id on record"
        );
        for node in 0..u64::from(NODES) {
            assert_eq!(
                ks.member_incarnation(node).expect("member"),
                model.members.get(&node).copied(),
                "member {node}"
            );
        }
        assert_eq!(
            ks.has_expired(now).expect("has_expired"),
            model.has_expired(now),
            "has anything expired at {now}"
        );
    }
}
