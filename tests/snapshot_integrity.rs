//! Snapshot integrity through the state machine's openraft interface: a
//! truncated or corrupt snapshot is refused before it touches the keyspace
//! or replaces the current snapshot, the node reopens with its previous
//! state, and a snapshot build that finishes after a newer install never
//! puts the older snapshot back.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use eventstore::raft::types::{Entry, LogId, SnapshotMeta, TypeConfig};
use eventstore::store::command::Stamp;
use eventstore::store::{db, Command, Keyspace, StateMachine};
use openraft::entry::RaftEntry;
use openraft::storage::RaftStateMachine;
use openraft::RaftSnapshotBuilder;

const LIMIT: Duration = Duration::from_secs(120);

fn log_id(index: u64) -> LogId {
    openraft::testing::log_id::<TypeConfig>(1, 0, index)
}

fn open(dir: &Path) -> (Keyspace, StateMachine) {
    let database = db::open(&dir.join("db")).expect("open db");
    let ks = Keyspace::new(database);
    let sm = StateMachine::open(ks.clone(), dir.join("snapshots")).expect("open state machine");
    (ks, sm)
}

/// Applies `n` Saves at log indexes 1..=n, key `{prefix}{i}`, with values
/// of `value_len` bytes.
async fn fill(sm: &mut StateMachine, prefix: &str, n: u64, value_len: usize) {
    let mut entries = Vec::new();
    for i in 1..=n {
        let mut value = format!("value-of-{prefix}{i:08}-").into_bytes();
        value.resize(value_len.max(value.len()), b'.');
        entries.push(Entry::new_normal(
            log_id(i),
            Command::Save {
                key: format!("{prefix}{i}").into_bytes(),
                value,
                ttl_ms: 3_600_000,
                stamp: Stamp::wall(1_000_000),
                request: None,
            },
        ));
        if entries.len() == 500 || i == n {
            let batch = std::mem::take(&mut entries);
            sm.apply(futures::stream::iter(
                batch.into_iter().map(|e| Ok((e, None))),
            ))
            .await
            .expect("apply");
        }
    }
}

async fn build(sm: &mut StateMachine) -> (SnapshotMeta, File) {
    let mut builder = sm.get_snapshot_builder().await;
    let snap = builder.build_snapshot().await.expect("build snapshot");
    (snap.meta, snap.snapshot)
}

/// A copy of `src` at `path`, changed by `damage`.
fn damaged_copy(src: &mut File, path: &Path, damage: impl FnOnce(&mut Vec<u8>)) -> File {
    let mut bytes = Vec::new();
    src.seek(SeekFrom::Start(0)).unwrap();
    src.read_to_end(&mut bytes).unwrap();
    damage(&mut bytes);
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    f.write_all(&bytes).unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    f
}

struct Before {
    digest: (String, u64),
    applied: Option<LogId>,
    snapshot: Option<LogId>,
}

async fn state(ks: &Keyspace, sm: &mut StateMachine) -> Before {
    Before {
        digest: ks.digest().unwrap(),
        applied: sm.applied_state().await.unwrap().0,
        snapshot: sm
            .get_current_snapshot()
            .await
            .unwrap()
            .and_then(|s| s.meta.last_log_id),
    }
}

/// Installs a damaged copy of a leader's snapshot into a follower that
/// holds a snapshot and data of its own; the install must fail and leave
/// the follower exactly as it was, before and after reopening.
async fn damaged_install_is_refused(damage: impl FnOnce(&mut Vec<u8>)) {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let (_lks, mut leader) = open(leader_dir.path());
    fill(&mut leader, "leader-", 2000, 64).await;
    let (meta, mut file) = build(&mut leader).await;

    let (fks, mut follower) = open(follower_dir.path());
    fill(&mut follower, "follower-", 20, 64).await;
    build(&mut follower).await;
    let before = state(&fks, &mut follower).await;
    assert_eq!(before.digest.1, 20);

    let incoming = damaged_copy(&mut file, &leader_dir.path().join("incoming"), damage);
    let res = follower.install_snapshot(&meta, incoming).await;
    assert!(res.is_err(), "a damaged snapshot was installed");

    let after = state(&fks, &mut follower).await;
    assert_eq!(
        after.digest, before.digest,
        "the refused install changed the keyspace"
    );
    assert_eq!(after.applied, before.applied);
    assert_eq!(
        after.snapshot, before.snapshot,
        "the refused install replaced the current snapshot"
    );

    drop(follower);
    drop(fks);
    let (fks, mut follower) = open(follower_dir.path());
    let reopened = state(&fks, &mut follower).await;
    assert_eq!(reopened.digest, before.digest, "data lost on reopening");
    assert_eq!(reopened.applied, before.applied);
    assert_eq!(reopened.snapshot, before.snapshot);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_snapshot_is_refused_and_the_node_keeps_its_state() {
    tokio::time::timeout(
        LIMIT,
        damaged_install_is_refused(|b| b.truncate(b.len() - 40)),
    )
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_with_a_flipped_byte_is_refused_and_the_node_keeps_its_state() {
    tokio::time::timeout(
        LIMIT,
        damaged_install_is_refused(|b| {
            // Flip a byte inside a value, so the framing stays intact.
            let at = find(b, b"value-of-leader-00001000-").expect("a value in the file") + 20;
            b[at] ^= 0x01;
        }),
    )
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_cut_at_a_record_boundary_is_refused() {
    // The file loses its tail exactly after the 10th record: the end marker
    // and everything after it are missing, but every record is whole.
    tokio::time::timeout(
        LIMIT,
        damaged_install_is_refused(|b| {
            let at = find(b, b"value-of-leader-00000011-").expect("a value in the file");
            // Back up over the 11th record's value length, key and key length.
            let key = b"leader-11";
            let cut = at - 4 - key.len() - 4;
            b.truncate(cut);
        }),
    )
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_that_finishes_after_a_newer_install_does_not_replace_it() {
    tokio::time::timeout(LIMIT, async {
        let leader_dir = tempfile::tempdir().unwrap();
        let follower_dir = tempfile::tempdir().unwrap();
        // The leader's snapshot is newer (higher index) and small.
        let (lks, mut leader) = open(leader_dir.path());
        fill(&mut leader, "leader-", 3200, 16).await;
        let (meta, file) = build(&mut leader).await;
        // The follower holds many large values, so its build is slow.
        let (fks, mut follower) = open(follower_dir.path());
        fill(&mut follower, "follower-", 3000, 32 * 1024).await;
        let mut builder = follower.get_snapshot_builder().await;
        let building = tokio::spawn(async move { builder.build_snapshot().await });
        tokio::time::sleep(Duration::from_millis(5)).await;
        follower
            .install_snapshot(&meta, file)
            .await
            .expect("install");
        let built = building.await.unwrap().expect("build");
        eprintln!(
            "built {:?}, installed {:?}",
            built.meta.last_log_id, meta.last_log_id
        );

        let current = follower.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(
            current.meta, meta,
            "an older snapshot built before the install became current"
        );
        assert_eq!(fks.digest().unwrap(), lks.digest().unwrap());
        // And it survives a reopen.
        drop(follower);
        drop(fks);
        let (fks, mut follower) = open(follower_dir.path());
        let current = follower.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, meta);
        assert_eq!(fks.digest().unwrap(), lks.digest().unwrap());
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_current_snapshot_is_rebuilt_not_sent() {
    tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let (ks, mut sm) = open(dir.path());
        fill(&mut sm, "k-", 500, 64).await;
        let (meta, _) = build(&mut sm).await;
        // Disk corruption: eight bytes of one value change in place.
        let path = dir.path().join("snapshots").join("current.snap");
        let mut bytes = std::fs::read(&path).unwrap();
        let at = find(&bytes, b"value-of-k-00000250-").unwrap();
        bytes[at..at + 8].copy_from_slice(b"CORRUPT!");
        std::fs::write(&path, &bytes).unwrap();

        // What would be sent to a follower is whole and matches the data.
        let current = sm
            .get_current_snapshot()
            .await
            .unwrap()
            .expect("a snapshot");
        assert_eq!(current.meta.last_log_id, meta.last_log_id);
        let follower_dir = tempfile::tempdir().unwrap();
        let (fks, mut follower) = open(follower_dir.path());
        follower
            .install_snapshot(&current.meta, current.snapshot)
            .await
            .expect("the rebuilt snapshot installs");
        assert_eq!(fks.digest().unwrap(), ks.digest().unwrap());
        assert!(dir.path().join("snapshots").join("corrupt.snap").exists());
    })
    .await
    .expect("bounded");
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
