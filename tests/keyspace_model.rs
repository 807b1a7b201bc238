//! The replicated keyspace against a simple model: random sequences of
//! Save, Delete and Purge with stamped times (an injected clock) must give
//! the same reads, deadlines and purge counts as a `BTreeMap`, and two
//! replicas applying the same sequence must end with the same digest.

use std::collections::BTreeMap;

use eventstore::store::{db, Applied, Command, Keyspace};
use proptest::prelude::*;
use rocksdb::WriteBatch;

/// The model: key -> (deadline, value), plus the logical clock.
#[derive(Default)]
struct Model {
    values: BTreeMap<Vec<u8>, (u64, Vec<u8>)>,
    members: BTreeMap<u64, u64>,
    clock: u64,
}

impl Model {
    fn apply(&mut self, cmd: &Command) -> Applied {
        match cmd {
            Command::Save {
                key,
                value,
                ttl_ms,
                stamp_ms,
            } => {
                self.clock = self.clock.max(*stamp_ms);
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
            Command::Delete { key } => Applied::Deleted {
                existed: self.values.remove(key).is_some(),
            },
            Command::Purge { now_ms, limit } => {
                self.clock = self.clock.max(*now_ms);
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
                Applied::Purged { count: n as u32 }
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
        let dir = tempfile::tempdir().unwrap();
        let ks = Keyspace::new(db::open(dir.path()).unwrap());
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

fn command_strategy() -> impl Strategy<Value = Command> {
    prop_oneof![
        4 => (key_strategy(), prop::collection::vec(any::<u8>(), 0..8), 1u64..200, 0u64..1000)
            .prop_map(|(key, value, ttl_ms, stamp_ms)| Command::Save { key, value, ttl_ms, stamp_ms }),
        2 => key_strategy().prop_map(|key| Command::Delete { key }),
        1 => (0u64..3, 1u64..4).prop_map(|(node, incarnation)| Command::Register { node, incarnation }),
        1 => (0u64..3).prop_map(|node| Command::Forget { node }),
        2 => (0u64..1200, 1u32..4).prop_map(|(now_ms, limit)| Command::Purge { now_ms, limit }),
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
        let mut a = Replica::new();
        let mut b = Replica::new();
        for cmd in &cmds {
            let expected = model.apply(cmd);
            prop_assert_eq!(a.apply(cmd), expected.clone(), "command {}", cmd);
            prop_assert_eq!(b.apply(cmd), expected);
            for (key, now) in &reads {
                prop_assert_eq!(a.ks.get(key, *now).unwrap(), model.get(key, *now));
            }
        }
        prop_assert_eq!(a.ks.clock().unwrap(), model.clock);
        for node in 0..3 {
            prop_assert_eq!(a.ks.member_incarnation(node).unwrap(), model.members.get(&node).copied());
        }
        prop_assert_eq!(a.ks.digest().unwrap(), b.ks.digest().unwrap());
        prop_assert_eq!(a.ks.digest().unwrap().1, model.values.len() as u64);
    }
}

#[test]
fn purge_removes_oldest_deadlines_first_in_bounded_batches() {
    let mut r = Replica::new();
    for i in 0..10u64 {
        r.apply(&Command::Save {
            key: vec![i as u8],
            value: vec![],
            ttl_ms: 100 - i,
            stamp_ms: 1000,
        });
    }
    // All ten expire by t=1100; a purge removes at most `limit`.
    assert_eq!(
        r.apply(&Command::Purge {
            now_ms: 1100,
            limit: 4
        }),
        Applied::Purged { count: 4 }
    );
    // The four with the earliest deadlines (keys 9, 8, 7, 6) went first.
    for i in 6..10u8 {
        assert_eq!(r.ks.get_raw(&[i]).unwrap(), None);
    }
    assert!(r.ks.get_raw(&[5]).unwrap().is_some());
    assert_eq!(
        r.apply(&Command::Purge {
            now_ms: 1100,
            limit: 100
        }),
        Applied::Purged { count: 6 }
    );
    assert!(!r.ks.has_expired(u64::MAX).unwrap());
}

#[test]
fn expired_value_is_hidden_before_its_purge() {
    let mut r = Replica::new();
    r.apply(&Command::Save {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        ttl_ms: 50,
        stamp_ms: 1000,
    });
    assert_eq!(r.ks.get(b"k", 1049).unwrap(), Some(b"v".to_vec()));
    assert_eq!(r.ks.get(b"k", 1050).unwrap(), None);
    // Still stored until a purge entry is applied.
    assert!(r.ks.get_raw(b"k").unwrap().is_some());
}

#[test]
fn a_lagging_leader_clock_never_moves_deadlines_backwards() {
    let mut r = Replica::new();
    r.apply(&Command::Save {
        key: b"a".to_vec(),
        value: vec![],
        ttl_ms: 10,
        stamp_ms: 5000,
    });
    // A new leader whose clock is behind stamps 4000: the write's time is
    // still 5000, the highest stamp seen.
    let applied = r.apply(&Command::Save {
        key: b"b".to_vec(),
        value: vec![],
        ttl_ms: 10,
        stamp_ms: 4000,
    });
    assert_eq!(applied, Applied::Saved { deadline_ms: 5010 });
}

#[test]
fn resave_replaces_the_deadline_in_the_index() {
    let mut r = Replica::new();
    let save = |ttl_ms, stamp_ms| Command::Save {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        ttl_ms,
        stamp_ms,
    };
    r.apply(&save(10, 1000));
    r.apply(&save(1000, 1005));
    // The old deadline (1010) no longer purges the key.
    assert_eq!(
        r.apply(&Command::Purge {
            now_ms: 1500,
            limit: 10
        }),
        Applied::Purged { count: 0 }
    );
    assert_eq!(r.ks.get(b"k", 1500).unwrap(), Some(b"v".to_vec()));
    assert_eq!(r.ks.earliest_deadlines(10).unwrap(), vec![2005]);
}
